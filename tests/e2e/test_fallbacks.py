"""The HTTP fallbacks on a real node: SSE streams, long-polls and commands by POST."""

import httpx
import pytest
import trio

from rtserver.backends.auth import mint_token
from rtserver.client import open_client
from rtserver.node import Node
from tests.support.events import appointment
from tests.support.http_clients import command, open_sse, poll
from tests.support.nodes import SECRET, Server, server_config

FAST = {"poll_timeout_s": 1.0, "sse_keepalive_s": 0.5}


@pytest.fixture
async def server(nursery) -> Server:
    node = Node(server_config(connection=FAST))
    return Server(node, await nursery.start(node.run))


async def test_an_sse_stream_says_hello_then_delivers_with_cursor_ids_and_keeps_alive(server):
    async with open_sse(server.http, server.token(), rooms="professional:1,professional:2") as sse:
        assert sse.response.status_code == 200
        assert sse.response.headers["content-type"].startswith("text/event-stream")
        hello = await sse.next()
        assert hello.data["op"] == "hello" and hello.id == hello.data["cursor"]
        assert hello.data["rooms"] == ["tenant:t1", "user:u1", "professional:1", "professional:2"]
        assert sse.retry_ms == 2000
        await server.publish(appointment(1))
        await server.publish(appointment(2, rooms=["professional:2"]))
        got = [await sse.next_event() for _ in range(2)]
        assert [(m.data["room"], m.data["data"]["appointmentId"]) for m in got] == \
            [("professional:1", "1"), ("professional:2", "2")]
        assert all(m.id == m.data["cursor"] for m in got)
        with trio.fail_after(5):
            await sse.wait_comment()  # idle: a keep-alive comment arrives


async def test_last_event_id_resumes_every_room_of_the_stream_exactly_once(server):
    async with open_sse(server.http, server.token(), rooms="professional:1,professional:2") as sse:
        await sse.next()
        await server.publish(appointment(1))
        last = await sse.next_event()
    await server.publish_all([appointment(2, rooms=["professional:2"]), appointment(3),
                              appointment(4, rooms=["professional:1", "professional:2"])])
    async with open_sse(server.http, server.token(), rooms="professional:1,professional:2",
                        headers={"last-event-id": last.id}) as sse:
        hello = await sse.next()
        assert hello.data["recovered"] is True
        got = []
        with trio.fail_after(5):
            while len(got) < 4:
                got.append((await sse.next_event()).data)
    assert [(e["room"], e["data"]["appointmentId"]) for e in got] == [
        ("professional:2", "2"), ("professional:1", "3"), ("professional:1", "4"), ("professional:2", "4")]


async def test_a_stream_refused_says_why_before_anything_starts(server):
    async with open_sse(server.http, None) as sse:
        assert sse.response.status_code == 401
        assert (await sse.response.aread()) and (await sse.response.aread()).startswith(b'{"error":4401')
    async with open_sse(server.http, server.token(roles=["patient"], patientTaxId="p1")) as sse:
        assert sse.response.status_code == 403
    async with open_sse(server.http, server.token(), rooms="user:someone-else") as sse:
        assert sse.response.status_code == 403
    async with open_sse(server.http, server.token(), rooms="nonsense") as sse:
        assert sse.response.status_code == 422
    async with open_sse(server.http, server.token(), since="garbage") as sse:
        assert sse.response.status_code == 400


async def test_token_expiry_and_draining_arrive_as_close_events(nursery):
    node = Node(server_config(connection=FAST))
    server = Server(node, await nursery.start(node.run))
    # exp is whole seconds: 2 s ahead leaves at least 1 s, so hello comes before the expiry
    async with open_sse(server.http, server.token(ttl_s=2)) as sse:
        await sse.next()
        with trio.fail_after(5):
            close = await sse.next()
        assert close.event == "close" and close.data == {"code": 4100, "reason": "token expired",
                                                          "action": "refresh_token"}
        with pytest.raises(EOFError):
            await sse.next()
    async with open_sse(server.http, server.token()) as sse, \
            httpx.AsyncClient(base_url=server.http) as http:
        await sse.next()
        waiting = []

        async def poll_until_drained():
            waiting.append((await poll(http, server.token())).json())

        nursery.start_soon(poll_until_drained)
        with trio.fail_after(5):
            while len(node.connections) < 2:  # the stream and the poll are both being served
                await trio.sleep(0.01)
        nursery.start_soon(node.drain)
        with trio.fail_after(5):
            close = await sse.next()
        assert close.event == "close" and close.data["code"] == 4000 and close.data["action"] == "resume"
        while not waiting:
            await trio.sleep(0.05)
    assert waiting[0]["close"] == {"code": 4000, "reason": "server draining", "action": "resume"}


async def test_a_poll_answers_at_once_when_behind_else_waits_for_the_next_event_or_the_bound(server):
    async with httpx.AsyncClient(base_url=server.http) as http:
        started = trio.current_time()
        first = (await poll(http, server.token(), rooms="professional:1")).json()
        assert first["events"] == [] and trio.current_time() - started >= 0.9  # waited the bound
        cursor, session = first["cursor"], first["session"]
        await server.publish_all([appointment(1), appointment(2)])
        behind = (await poll(http, server.token(), rooms="professional:1", since=cursor, session=session)).json()
        assert [e["data"]["appointmentId"] for e in behind["events"]] == ["1", "2"]
        assert behind["recovered"] is True and behind["session"] == session
        assert behind["cursor"] == behind["events"][-1]["cursor"]

        async def publish_soon():
            await trio.sleep(0.3)
            await server.publish(appointment(3))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_soon)
            started = trio.current_time()
            waited = (await poll(http, server.token(), rooms="professional:1", since=behind["cursor"])).json()
        # answered with the event (a poll that reached its bound would be empty), not before it
        assert [e["data"]["appointmentId"] for e in waited["events"]] == ["3"]
        assert trio.current_time() - started > 0.25
        lost = (await poll(http, server.token(), rooms="professional:1", since="7.unknownepoch.1-0")).json()
        assert lost["recovered"] is False and lost["events"] == []


async def test_commands_by_post_are_checked_and_answered_as_on_a_websocket(server):
    token = server.token()
    async with open_client(server.ws(), server.token("bea")) as bea:
        await bea.subscribe("thread:7")
        answer = await command(server.http, token, {"op": "emit", "event": "typing:start", "room": "thread:7",
                                                    "ref": 1})
        assert answer.status_code == 200 and answer.json() == {"op": "ack", "ref": 1, "room": "thread:7",
                                                                "event": "typing:start"}
        with trio.fail_after(5):
            typing = await bea.next_event()
        assert typing["event"] == "thread:typing" and typing["data"] == {"threadId": "7", "userId": "u1",
                                                                         "typing": True}
    replies = (await command(server.http, token, [
        {"op": "emit", "event": "mark_alert_read", "data": {"alertId": "a1"}, "ref": 1},
        {"op": "emit", "event": "mark_alert_read", "data": {}, "ref": 2},
        {"op": "emit", "event": "heartbeat", "ref": 3},
        {"op": "sub", "room": "professional:1", "ref": 4},
        {"op": "emit", "event": "critical_alert", "ref": 5},
        {"op": "ping", "ref": 6},
    ])).json()
    assert [(r["op"], r.get("code")) for r in replies] == [
        ("ack", None), ("error", 105), ("error", 100), ("error", 100), ("error", 103), ("pong", None)]
    assert server.node.bus.inbound(7)[-1][1].data == {"alertId": "a1"}
    assert (await command(server.http, token, {"op": "emit", "event": "heartbeat"}, session="s1")).status_code == 200
    patient = server.token("p", roles=["patient"], patientTaxId="p")
    refused = await command(server.http, patient, {"op": "emit", "event": "typing:start", "room": "thread:9"},
                            ns="portal")
    assert refused.status_code == 403 and refused.json()["code"] == 103
    assert (await command(server.http, "bad", {"op": "ping"})).status_code == 401
    expired = mint_token(SECRET, {"sub": "u1", "healthUnitTaxId": "t1", "roles": ["attendant"]}, -60)
    assert (await command(server.http, expired, {"op": "ping"})).json()["error"] == 4100


async def test_a_resume_rejoins_every_room_at_once_and_new_rooms_get_their_snapshot(server):
    """``?rooms=`` works on every transport, so a reconnect resumes all rooms from one cursor in
    one join; ``?fresh=`` names the rooms new to the client, whose snapshots come even so."""
    async with open_client(server.ws(), server.token()) as ws:
        await ws.subscribe("professional:1")
        await server.publish(appointment(1))
        await ws.next_event()
        cursor = ws.cursor
    await server.publish_all([appointment(2, rooms=["professional:2"]), appointment(3)])
    url = server.ws() + "?rooms=professional:1,professional:2,schedule:5&fresh=schedule:5"
    async with open_client(url, server.token(), since=cursor) as ws:
        assert ws.hello["recovered"] is True
        assert ws.hello["rooms"][-3:] == ["professional:1", "professional:2", "schedule:5"]
        with trio.fail_after(5):
            got = [await ws.next_event() for _ in range(3)]
    assert [e["event"] for e in got] == ["schedule.snapshot", "appointment.created", "appointment.created"]
    assert [e["data"]["appointmentId"] for e in got[1:]] == ["2", "3"]
    async with httpx.AsyncClient(base_url=server.http) as http:
        again = (await poll(http, server.token(), since=cursor, rooms="professional:2,schedule:5")).json()
        assert [e["event"] for e in again["events"]] == ["appointment.created"]  # resumed: no snapshot
        bad = await poll(http, server.token(), rooms="professional:2", fresh="schedule:5")
        assert bad.status_code == 422


@pytest.mark.parametrize("sub", ["auth0|5f7c8ec7c33c6c004bbafe82", "google-oauth2|112233445566778899",
                                 "ana+test@example.org"])
async def test_subjects_of_identity_providers_work_on_every_transport_with_their_user_room(server, sub):
    token = server.token(user=sub)
    room = f"user:{sub}"
    async with open_client(server.ws(), token) as ws, open_sse(server.http, token) as sse:
        assert room in ws.hello["rooms"]
        hello = (await sse.next()).data
        assert room in hello["rooms"]
        async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
            first = (await poll(http, token)).json()
            assert (await server.publish(appointment(1, rooms=[room]))).status_code == 200
            polled = (await poll(http, token, since=first["cursor"])).json()
        with trio.fail_after(5):
            assert (await ws.next_event())["room"] == room
            assert (await sse.next_event()).data["room"] == room
        assert [e["room"] for e in polled["events"]] == [room]
        typing = await command(server.http, token, {"op": "emit", "event": "typing:start", "room": "thread:9",
                                                    "ref": 1})
        assert typing.status_code == 200 and typing.json()["op"] == "ack"


GOOD, EVIL = "http://good.example", "http://evil.example"  # server_config allows the good one


async def test_the_http_transports_answer_pages_of_allowed_origins_and_refuse_others(server):
    token = server.token()
    async with open_sse(server.http, token, headers={"origin": GOOD}) as sse:
        assert sse.response.headers["access-control-allow-origin"] == GOOD
    async with open_sse(server.http, token, headers={"origin": EVIL}) as sse:
        assert sse.response.status_code == 403 and "access-control-allow-origin" not in sse.response.headers
    async with httpx.AsyncClient(base_url=server.http, headers={"authorization": f"Bearer {token}"}) as http:
        for origin, status in ((GOOD, 200), (EVIL, 403)):
            polled = await http.get("/hub/poll", headers={"origin": origin})
            posted = await http.post("/hub/commands", json={"op": "ping"}, headers={"origin": origin})
            presence = await http.get("/hub/presence", params={"group": "attendants"}, headers={"origin": origin})
            for answer in (polled, posted, presence):
                assert answer.status_code == status
                assert answer.headers.get("access-control-allow-origin") == (GOOD if status == 200 else None)
        no_origin = await http.post("/hub/commands", json={"op": "ping"})  # not a browser's cross-origin call
        assert no_origin.status_code == 200 and "access-control-allow-origin" not in no_origin.headers


async def test_preflights_name_what_the_http_transports_take(server):
    asking = {"access-control-request-method": "POST", "access-control-request-headers": "Authorization, Content-Type"}
    async with httpx.AsyncClient(base_url=server.http) as http:
        allowed = await http.options("/hub/commands", headers={"origin": GOOD, **asking})
        assert allowed.status_code == 204 and allowed.headers["access-control-allow-origin"] == GOOD
        assert allowed.headers["access-control-allow-headers"] == "authorization, content-type"
        assert "POST" in allowed.headers["access-control-allow-methods"]
        evil = await http.options("/hub/events", headers={"origin": EVIL, **asking})
        odd = await http.options("/hub/commands", headers={"origin": GOOD, **asking,
                                                           "access-control-request-headers": "x-forwarded-for"})
        assert evil.status_code == odd.status_code == 403
