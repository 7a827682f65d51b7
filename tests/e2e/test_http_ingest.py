"""One port, request by request: publishes answered by the listener, the rest by hypercorn."""

import json

import trio

from tests.support.events import appointment


async def raw_exchange(port: int, data: bytes, responses: int) -> list[bytes]:
    """Send ``data`` on one connection and read ``responses`` HTTP responses (with bodies)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(data)
    buffer, answers = b"", []
    with trio.fail_after(10):
        while len(answers) < responses:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end >= 0:
                head = buffer[:head_end].decode("latin-1").lower()
                length = int(head.split("content-length:")[1].split("\r\n")[0]) if "content-length:" in head else 0
                if len(buffer) >= head_end + 4 + length:
                    answers.append(buffer[: head_end + 4 + length])
                    buffer = buffer[head_end + 4 + length :]
                    continue
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            buffer += chunk
    await stream.aclose()
    return answers


def publish_request(server, body: dict, extra: str = "") -> bytes:
    payload = json.dumps(body).encode()
    return (f"POST /v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.service_token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n{extra}\r\n").encode() + payload


async def test_publishes_pipelined_on_one_connection_are_all_answered_in_order(server):
    data = b"".join(publish_request(server, appointment(i, id=f"p{i}")) for i in range(5))
    answers = await raw_exchange(server.port, data, 5)
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers)
    assert [json.loads(a.split(b"\r\n\r\n")[1])["id"] for a in answers] == [f"p{i}" for i in range(5)]


async def test_hypercorn_serves_one_request_and_closes_so_the_next_comes_back_to_the_fast_path(server):
    data = publish_request(server, appointment(1)) + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + \
        publish_request(server, appointment(2))
    answers = await raw_exchange(server.port, data, 3)
    assert len(answers) == 2 and all(a.startswith(b"HTTP/1.1 200") for a in answers)
    assert b"connection: close" in answers[1].lower()
    assert json.loads(answers[1].split(b"\r\n\r\n")[1]) == {"status": "ok"}


async def test_a_chunked_publish_is_served_by_the_same_rules_through_hypercorn(server):
    payload = json.dumps(appointment(3, id="chunked")).encode()
    data = (f"POST /v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.service_token}\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n{len(payload):x}\r\n").encode() + payload + b"\r\n0\r\n\r\n"
    (answer,) = await raw_exchange(server.port, data, 1)
    assert answer.startswith(b"HTTP/1.1 200")
    assert json.loads(answer.split(b"\r\n\r\n")[1])["id"] == "chunked"
    bad = publish_request(server, {"event": "nope", "tenant": "t1", "rooms": ["professional:1"]})
    bad = bad.replace(b"POST /v1/publish HTTP/1.1\r\n", b"POST /v1/publish HTTP/1.1\r\nExpect: 100-continue\r\n")
    interim, final = await raw_exchange(server.port, bad, 2)
    assert interim.startswith(b"HTTP/1.1 100") and final.startswith(b"HTTP/1.1 422")


async def test_connection_close_is_honoured_and_oversized_heads_are_refused(server):
    answers = await raw_exchange(server.port, publish_request(server, appointment(4), "Connection: close\r\n"), 2)
    assert len(answers) == 1 and answers[0].startswith(b"HTTP/1.1 200")
    huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 20000 + b"\r\n\r\n"
    (answer,) = await raw_exchange(server.port, huge, 1)
    assert answer.startswith(b"HTTP/1.1 431")


async def test_garbage_gets_400(server):
    (answer,) = await raw_exchange(server.port, b"NOT HTTP AT ALL\r\n\r\n", 1)
    assert answer.startswith(b"HTTP/1.1 400")
