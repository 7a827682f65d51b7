"""Every parser entry point of a live node fed with generated malformed and adversarial
input (hypothesis): each answer is a documented one, never a 500 or a 1011, and after
each input the node still serves its sentinel client (``LiveNode.assert_serving``)."""

from __future__ import annotations

import base64
import json
import socket
import time
from urllib.parse import quote, urlencode

import jwt
import msgspec
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import ReplyCode
from tests.support.live_node import (
    DOCUMENTED_CLOSES, REFUSALS, WebSocket, assert_documented_refusal, exchange, masked_frame, read_answer,
)
from tests.support.live_node import SECRET

#: Statuses of an accepted request (the pages redirect, the static files may be cached).
SUCCESSES = {101, 200, 201, 204, 301, 302, 303, 304, 307, 308}
PATHS = ["/", "/hub/ws", "/portal/ws", "/hub/sse", "/portal/sse", "/hub/poll", "/hub/events", "/hub/presence",
         "/hub/commands", "/portal/commands", "/v1/publish", "/metrics", "/healthz", "/readyz", "/hub/push/devices",
         "/hub/push/devices/x", "/web/console.js", "/console/", "/wall", "/rtclient.js", "/nope", "/hub/../etc"]
PARAMS = ["access_token", "rooms", "fresh", "since", "limit", "session", "presence", "group"]
HEADERS = ["authorization", "content-length", "transfer-encoding", "expect", "connection", "upgrade",
           "sec-websocket-key", "sec-websocket-version", "sec-websocket-protocol", "origin", "last-event-id",
           "content-type", "traceparent", "x-rt-session", "host", "access-control-request-method",
           "access-control-request-headers"]
#: Text as a client may send it in a URL or a header: anything Latin-1, control characters included.
latin1 = st.text(st.characters(max_codepoint=255, exclude_characters="\r\n"), max_size=60)
json_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
                | st.text(max_size=30))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=20)


def _is_json(payload: bytes) -> bool:
    try:
        json.loads(payload)
    except (ValueError, RecursionError):
        return False
    return True


def nested(depth: int) -> bytes:
    return b'{"a":' + b"[" * depth + b"]" * depth + b"}"


def assert_documented(answer, *, head: bool = False) -> None:
    """Any answer but a failure: a success, or a documented refusal (JSON, or an empty 400
    for HTTP that cannot be parsed; ``head``: the answer to a HEAD, without a body);
    closing without an answer is allowed only for input that never made a whole request."""
    if answer.status is None or answer.status in SUCCESSES:
        return
    if (answer.status == 400 or head) and not answer.body:
        return  # not HTTP: h11 refused the head or the body's framing
    assert_documented_refusal(answer)


# -- request heads ------------------------------------------------------------------------
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "CONNECT"]) | latin1,
       path=st.sampled_from(PATHS) | latin1, query=st.dictionaries(st.sampled_from(PARAMS) | latin1, latin1),
       version=st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2", "HTTP/1.1 x", ""]),
       headers=st.lists(st.tuples(st.sampled_from(HEADERS) | latin1, latin1), max_size=8),
       body=st.binary(max_size=200))
def test_any_request_head_gets_a_documented_answer(live_node, method, path, query, version, headers, body):
    head = f"{method} {path}{'?' + urlencode(query) if query else ''} {version}\r\nhost: 127.0.0.1\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers)
    answer = exchange(live_node.port, head.encode("latin-1") + b"\r\n" + body)
    assert_documented(answer, head=method == "HEAD")
    live_node.assert_serving()


@given(length=st.sampled_from(["-1", "abc", "1e3", "10000000000", "99999999999999999999999", "1, 2"]),
       path=st.sampled_from(["/v1/publish", "/hub/commands", "/hub/push/devices", "/healthz"]))
def test_declared_lengths_are_refused_before_any_body_is_read(live_node, length, path):
    answer = exchange(live_node.port, f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {length}\r\n\r\n".encode(),
                      half_close=False, timeout=5)
    assert answer.status in (400, 413), answer  # at once: no body is awaited
    live_node.assert_serving()


@given(chunks=st.lists(st.binary(min_size=1, max_size=50), max_size=6), garbage=st.binary(max_size=20),
       expect=st.booleans())
def test_chunked_bodies_are_framed_or_refused(live_node, chunks, garbage, expect):
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + garbage + b"0\r\n\r\n"
    head = (b"POST /v1/publish HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n"
            b"authorization: Bearer " + live_node.service_token.encode() + b"\r\n"
            + (b"expect: 100-continue\r\n" if expect else b"") + b"\r\n")
    assert_documented(exchange(live_node.port, head + body))
    live_node.assert_serving()


# -- upgrades -----------------------------------------------------------------------------
@given(upgrade=st.sampled_from([None, "websocket", "WebSocket", "h2c", ""]) | latin1,
       connection=st.sampled_from([None, "Upgrade", "keep-alive, Upgrade", "close", ""]) | latin1,
       key=st.sampled_from([None, "dGhlIHNhbXBsZSBub25jZQ==", "x", "", "dGhlIHNhbXBsZSBub25jZQ"]) | latin1,
       version=st.sampled_from([None, "13", "8", "", "13, 8"]) | latin1,
       origin=st.sampled_from([None, "http://evil.example", "null"]) | latin1,
       protocols=st.sampled_from([None, "rt.v1.json", "rt.v1.msgpack", "bearer.x", "a,,b"]) | latin1,
       authorized=st.booleans(), method=st.sampled_from(["GET", "POST", "HEAD"]))
def test_every_upgrade_is_accepted_or_refused_as_documented(live_node, upgrade, connection, key, version, origin,
                                                            protocols, authorized, method):
    fields = {"upgrade": upgrade, "connection": connection, "sec-websocket-key": key,
              "sec-websocket-version": version, "origin": origin, "sec-websocket-protocol": protocols,
              "authorization": f"Bearer {live_node.token()}" if authorized else None}
    head = f"{method} /hub/ws HTTP/1.1\r\nhost: 127.0.0.1\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in fields.items() if value is not None)
    answer = exchange(live_node.port, head.encode("latin-1") + b"\r\n")
    assert_documented(answer)
    if answer.status == 101:  # a real upgrade: then hello, or a documented close
        assert (key or "").strip() and method == "GET"
    live_node.assert_serving()


# -- WebSocket frames ---------------------------------------------------------------------
frames = st.fixed_dictionaries(
    {"op": st.sampled_from(["sub", "unsub", "emit", "ping", "nope"])},
    optional={"room": json_scalars | st.text(max_size=80), "event": json_scalars | st.text(max_size=40),
              "data": json_values, "ref": json_scalars, "since": json_scalars})
frame_payloads = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    frames.map(lambda v: json.dumps(v).encode()),
    frames.map(msgspec.msgpack.encode),
    st.binary(max_size=300),
    st.integers(2000, 20000).map(nested),
)
OPCODES = [0x1, 0x2, 0x0, 0x9, 0xA, 0x3, 0xF]  # text, binary, continuation, ping, pong, reserved


@given(payloads=st.lists(st.tuples(st.sampled_from(OPCODES), frame_payloads, st.booleans()), min_size=1, max_size=4),
       wire=st.sampled_from(["rt.v1.json", "rt.v1.msgpack"]))
def test_websocket_frames_get_a_reply_error_or_a_documented_close(live_node, payloads, wire):
    client = WebSocket(live_node.port, f"/hub/ws?access_token={live_node.token()}", subprotocols=[wire])
    ping = {"op": "ping", "ref": 424242}
    try:
        assert client.next_message()["op"] == "hello"
        for opcode, payload, fin in payloads:
            client.send_raw(masked_frame(opcode, payload, fin))
        client.send_raw(masked_frame(0x1, json.dumps(ping).encode()) if wire == "rt.v1.json"
                        else masked_frame(0x2, msgspec.msgpack.encode(ping)))
        while (message := client.next_message()) is not None:
            assert message["op"] in ("ack", "error", "evt", "pong"), message
            if message["op"] == "error":
                assert message["code"] in {int(c) for c in ReplyCode}, message
            if message == {"op": "pong", "ref": 424242}:
                break
        assert client.close_code is None or client.close_code in DOCUMENTED_CLOSES, client.close_code
    finally:
        client.close()
    live_node.assert_serving()


def test_a_deeply_nested_frame_is_a_bad_frame_and_the_connection_stays(live_node):
    client = WebSocket(live_node.port, f"/hub/ws?access_token={live_node.token()}")
    try:
        assert client.next_message()["op"] == "hello"
        client.send_text('{"op":"emit","event":"heartbeat","data":' + nested(12000).decode() + "}")
        assert client.next_message() == {"op": "error", "code": 100,
                                         "message": "document nested deeper than 32 levels"}
        client.send_text('{"op":"ping","ref":1}')
        assert client.next_message() == {"op": "pong", "ref": 1}
    finally:
        client.close()


def test_a_text_message_over_the_limit_in_bytes_closes_with_1009(live_node):
    client = WebSocket(live_node.port, f"/hub/ws?access_token={live_node.token()}")
    try:
        assert client.next_message()["op"] == "hello"
        client.send_text("é" * 40_000)  # 40,000 characters, 80,000 bytes: over 65,536
        assert client.next_message() is None and client.close_code == 1009
    finally:
        client.close()


# -- JSON bodies ----------------------------------------------------------------------------
envelopes = st.fixed_dictionaries(
    {}, optional={"event": st.sampled_from(["appointment.created", "schedule.slots.generated", "rt.probe",
                                            "heartbeat", "schedule.snapshot"]) | json_scalars,
                  "tenant": st.sampled_from(["t1", "t1:x", "t1,t2", " t1 ", "t1\u0000"]) | json_scalars,
                  "rooms": st.lists(st.sampled_from(["schedule:1", "user:u1", "tenant:t2", "x"]) | json_scalars,
                                    max_size=40) | json_scalars,
                  "data": st.dictionaries(st.sampled_from(["appointmentId", "slots", "scheduleId", "date",
                                                           "patientName"]) | st.text(max_size=10), json_values)
                  | json_values,
                  "id": json_scalars | st.text(min_size=190, max_size=210),
                  "ts": json_scalars, "traceparent": json_scalars, "extra": json_scalars})
bodies = st.one_of(envelopes.map(lambda v: json.dumps(v).encode()), json_values.map(lambda v: json.dumps(v).encode()),
                   st.binary(max_size=300), st.integers(40, 20000).map(nested),
                   frame_payloads, st.lists(frame_payloads, max_size=70).map(lambda fs: b"[" + b",".join(
                       f for f in fs if _is_json(f)) + b"]"))


@given(body=bodies, target=st.sampled_from(["/v1/publish", "/hub/commands", "/portal/commands",
                                            "/hub/push/devices"]),
       token=st.sampled_from(["service", "staff", "patient", "none", "garbage"]))
def test_json_bodies_are_answered_or_refused_as_documented(live_node, body, target, token):
    tokens = {"service": live_node.service_token, "staff": live_node.token(),
              "patient": live_node.token(sub="p1", roles=("patient",), patientTaxId="p1"),
              "garbage": "x.y.z", "none": None}
    headers = {"content-type": "application/json"}
    if tokens[token]:
        headers["authorization"] = f"Bearer {tokens[token]}"
    answer = live_node.request("POST", target, body, headers)
    assert answer.status in SUCCESSES | REFUSALS, (answer.status, answer.body[:300])
    if answer.status in REFUSALS and not answer.json().get("op"):
        assert_documented_refusal(answer)  # commands refuse a frame with the error frame itself
    live_node.assert_serving()


# -- query parameters -------------------------------------------------------------------------
cursor_like = st.one_of(latin1, st.from_regex(r"[0-9]{1,6}\.[A-Za-z0-9]{1,33}\.[0-9]{1,21}-[0-9]{1,21}", fullmatch=True))


@given(path=st.sampled_from(["/hub/events", "/hub/presence", "/hub/poll", "/portal/poll", "/hub/sse", "/hub/ws"]),
       params=st.dictionaries(st.sampled_from(PARAMS[1:]), cursor_like | latin1, max_size=5),
       last_event_id=st.none() | cursor_like)
def test_query_parameters_and_cursors_are_parsed_or_refused_with_400(live_node, path, params, last_event_id):
    token = live_node.token() if path.startswith("/hub") else live_node.token(sub="p1", roles=("patient",),
                                                                             patientTaxId="p1")
    headers = {"authorization": f"Bearer {token}"}
    if last_event_id is not None:
        headers["last-event-id"] = last_event_id
    if path.endswith("/ws"):
        headers.update({"upgrade": "websocket", "connection": "Upgrade", "sec-websocket-version": "13",
                        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="})
    target = path + "?" + "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in params.items())
    head = f"GET {target} HTTP/1.1\r\nhost: 127.0.0.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    answer = exchange(live_node.port, head.encode("latin-1") + b"\r\n")
    assert answer.status != 500, answer
    if answer.status == 410:  # a catch-up whose cursor is no longer covered
        assert answer.json()["recovered"] is False
    elif answer.status not in SUCCESSES:
        assert_documented(answer)
    live_node.assert_serving()


# -- tokens ---------------------------------------------------------------------------------
claim_values = json_scalars | st.sampled_from(
    ["t1", "auth0|5f7c", "google-oauth2|1234", "ana+test@example.org", "t1:schedule:1", "t1,t2", "t1\u0000",
     " t1 ", "a/b", "x" * 200]) | st.lists(json_scalars | st.sampled_from(["s1", "a,b", "\n"]), max_size=3)
payloads = st.fixed_dictionaries(
    {"exp": st.sampled_from([4102444800, 1000, "soon", None])},
    optional={name: claim_values for name in ["sub", "healthUnitTaxId", "roles", "professionalTaxId", "patientTaxId",
                                              "specialityIds", "threadIds", "presenceGroups", "iss", "aud", "nbf"]})
headers = st.fixed_dictionaries({}, optional={
    "alg": st.sampled_from(["HS256", "RS256", "ES256", "none", "HS512", "PS256"]) | json_scalars
    | st.lists(json_scalars, max_size=2),
    "kid": st.sampled_from(["rsa1", "ec1", "nope"]) | json_scalars, "typ": json_scalars,
    "crit": st.lists(st.text(max_size=5), max_size=2) | json_scalars, "jku": json_scalars})


def _segment(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def crafted_token(header: dict, payload: dict, signer: str, keys: dict) -> str:
    """A JWT with exactly this header (whatever its ``alg`` says), signed by ``signer``'s
    key and algorithm (``garbage``: a signature of nobody)."""
    signing_input = f"{_segment(header)}.{_segment(payload)}"
    if signer == "garbage":
        signature = b"\0" * 64
    else:
        algorithm = jwt.algorithms.get_default_algorithms()[signer]
        signature = algorithm.sign(signing_input.encode(), algorithm.prepare_key(keys[signer]))
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


@given(payload=payloads, header=headers, signer=st.sampled_from(["HS256", "RS256", "ES256", "garbage"]),
       transport=st.sampled_from(["ws", "poll", "publish", "commands"]))
def test_tokens_of_any_shape_are_admitted_or_refused_with_their_code(live_node, payload, header, signer, transport):
    payload = {k: v for k, v in payload.items() if v is not None}
    token = crafted_token({"typ": "JWT", "alg": signer, **header}, payload, signer,
                          {"HS256": SECRET, "RS256": live_node.rsa_key, "ES256": live_node.ec_key})
    if transport == "ws":
        client = WebSocket(live_node.port, f"/hub/ws?access_token={token}")
        try:
            message = client.next_message()
            if message is None:
                assert client.close_code in {4401, 4403, 4100}, client.close_code
            else:
                assert message["op"] == "hello" and f"user:{payload['sub']}" in message["rooms"]
        finally:
            client.close()
    elif transport == "poll":
        answer = live_node.request("GET", "/hub/poll", headers={"authorization": f"Bearer {token}"})
        assert answer.status in (200, 401, 403), answer
        assert answer.status == 200 or answer.json()["error"] in (4100, 4401, 4403)
    else:
        target, body = (("/v1/publish", b'{"event":"rt.probe","tenant":"t1","rooms":["probe:1"]}')
                        if transport == "publish" else ("/hub/commands", b'{"op":"ping"}'))
        answer = live_node.request("POST", target, body, {"authorization": f"Bearer {token}"})
        assert answer.status in (200, 401, 403, 422), answer
        if answer.status != 200:
            assert answer.json()["error"] in (4100, 4401, 4403, int(ReplyCode.FORBIDDEN)), answer.json()
    live_node.assert_serving()


def test_a_body_trickled_slower_than_the_request_deadline_is_cut_off_with_408(live_node):
    with socket.create_connection(("127.0.0.1", live_node.port)) as sock:
        sock.sendall(b"POST /v1/publish HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
        try:
            for _ in range(40):  # one byte a chunk, every 0.2 s: 8 s if nobody cuts it off
                sock.sendall(b"1\r\n{\r\n")
                time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_answer(sock)
    assert answer.status == 408 and answer.json()["error"] == 408  # the body never ends: only a deadline answers
    live_node.assert_serving()


# -- Socket.IO ------------------------------------------------------------------------------
_SIO_NAMESPACES = ["", "/hub,", "/portal,", "/alerts,", "/nope,", "/hub", "/" + "a" * 200 + ","]
_placeholders = st.fixed_dictionaries({"_placeholder": st.sampled_from([True, False, 1, "true"]),
                                       "num": st.sampled_from([0, 1, -1, 10, "0", 0.5, True, None, {"toString": "0"}])})
socketio_texts = st.one_of(
    st.text(max_size=120),
    st.builds(lambda kind, ns, ack, payload: f"{kind}{ns}{ack}{payload}",
              st.sampled_from("0123456789"), st.sampled_from(_SIO_NAMESPACES),
              st.sampled_from(["", "7", "9" * 20]), st.just("") | json_values.map(json.dumps)),
    st.builds(lambda count, ns, payload: f"5{count}-{ns}" + json.dumps(["x", payload]),
              st.integers(0, 12), st.sampled_from(_SIO_NAMESPACES), st.lists(_placeholders, max_size=3)),
    st.builds(lambda event, payload: "2/hub," + json.dumps([event, payload]),
              st.sampled_from(["subscribe", "unsubscribe", "subscribe_patient", "join:thread", "typing:start",
                               "heartbeat", "presence:online", "mark_alert_read", "ping", "x"]), json_values),
)
#: Well-formed packets a client may send in any order (connects, disconnects, acks, probes).
_WELL_FORMED = ["41/hub,", "41/portal,", "41/nope,", "40/hub,{}", "40/portal,{}", '40/alerts,{"token":"x"}',
                '42/hub,1["subscribe",{"room":"tenant:t1"}]', '42/hub,["unsubscribe",{"room":"tenant:t1"}]',
                '42/hub,2["subscribe_patient",{"patientId":"p1"}]', "43/hub,1[]", "2", "3", "5", "6", "1", "2probe"]
engineio_messages = st.one_of(
    st.sampled_from(_WELL_FORMED),
    st.tuples(st.sampled_from(["4", "4", "4", "4", "2", "3", "1", "5", "6", "0", "9", ""]), socketio_texts).map("".join),
    st.binary(max_size=100),
)


@given(messages=st.lists(engineio_messages, min_size=1, max_size=5))
def test_socketio_packets_get_an_answer_or_a_documented_close(live_node, messages):
    client = WebSocket(live_node.port, "/socket.io/?EIO=4&transport=websocket")
    try:
        assert str(client.next_raw()).startswith("0{")
        client.send_text("40/hub," + json.dumps({"token": live_node.token()}))
        assert str(client.next_raw()).startswith("40/hub,{")
        for message in messages:
            if isinstance(message, bytes):
                client.send_raw(masked_frame(0x2, message))
            else:
                client.send_raw(masked_frame(0x1, message.encode()))
        client.send_raw(masked_frame(0x1, b"2probe"))  # answered after the others, unless closed before
        while (message := client.next_raw()) is not None:
            assert isinstance(message, str) and message[:1] in "01234", message  # Engine.IO packets
            if message == "3probe":
                break
        assert client.close_code is None or client.close_code in DOCUMENTED_CLOSES, client.close_code
    finally:
        client.close()
    live_node.assert_serving()


@given(bodies=st.lists(st.lists(engineio_messages, min_size=1, max_size=4).map(
    lambda messages: b"\x1e".join(m if isinstance(m, bytes) else m.encode() for m in messages)), min_size=1, max_size=3))
def test_socketio_polling_posts_are_answered_ok_or_400_and_the_session_ends_cleanly(live_node, bodies):
    opened = live_node.request("GET", "/socket.io/?EIO=4&transport=polling")
    assert opened.status == 200 and opened.body.startswith(b"0{"), opened
    sid = json.loads(opened.body[1:])["sid"]
    connect = ("40/hub," + json.dumps({"token": live_node.token()})).encode()
    assert live_node.request("POST", f"/socket.io/?EIO=4&transport=polling&sid={sid}", connect).status == 200
    for body in bodies:
        answer = live_node.request("POST", f"/socket.io/?EIO=4&transport=polling&sid={sid}", body)
        assert answer.status in (200, 400), answer
        if answer.status == 400:  # the session ended (or never knew the sid again)
            assert answer.body.startswith(b"{"), answer
            break
    live_node.assert_serving()
