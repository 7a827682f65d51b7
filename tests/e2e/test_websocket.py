
import httpx
import pytest
import structlog
import trio
from trio_websocket import open_websocket_url

from rtserver.client import CommandError, open_client
from tests.support.events import appointment
from tests.support.metrics import scraped
from tests.support.tokens import unsigned_token


async def test_a_subscriber_receives_what_is_published(server):
    async with open_client(server.ws(), server.token()) as client:
        assert client.hello["rooms"] == ["tenant:t1", "user:u1"]
        ack = await client.subscribe("professional:1")
        assert ack["room"] == "professional:1"
        response = await server.publish(appointment(1))
        assert response.status_code == 200 and response.json()["cursor"]
        with trio.fail_after(5):
            evt = await client.next_event()
        assert (evt["event"], evt["room"], evt["data"]) == ("appointment.created", "professional:1", {"appointmentId": "1"})
        assert evt["cursor"] == response.json()["cursor"]


async def test_every_delivered_event_is_timed_in_the_delivery_latency_histogram(server):
    """One sample per event per room, in every writer pass (not only the node's first)."""
    async with open_client(server.ws(), server.token()) as client:
        await client.subscribe("professional:1")
        before = await scraped(server.http, "rt_delivery_latency_seconds_count")
        for i in range(3):
            await server.publish(appointment(i))
            with trio.fail_after(5):
                await client.next_event()
        # At least: the node's own presence events may be timed too, in the user's rooms.
        assert await scraped(server.http, "rt_delivery_latency_seconds_count") >= before + 3


@pytest.mark.parametrize("token_in", ["header", "query", "subprotocol"])
async def test_the_token_is_accepted_in_each_documented_place(server, token_in):
    async with open_client(server.ws(), server.token(), token_in=token_in) as client:
        assert client.hello["user"] == "u1"


@pytest.mark.parametrize("make_token, ns, code", [
    (lambda s: None, "hub", 4401),
    (lambda s: s.token().rsplit(".", 1)[0] + ".c2lnbmF0dXJl", "hub", 4401),
    (lambda s: s.token(ttl_s=-60), "hub", 4100),
    (lambda s: s.token(roles=("patient",), patientTaxId="p1"), "hub", 4403),
    (lambda s: s.token(), "portal", 4403),
    (lambda s: unsigned_token({"sub": "u1", "healthUnitTaxId": "t1", "roles": ["attendant"]}), "hub", 4401),
], ids=["no-token", "bad-signature", "expired", "patient-on-hub", "staff-on-portal", "alg-none"])
async def test_handshakes_are_refused_with_a_close_code(server, make_token, ns, code):
    token = make_token(server)
    url = server.ws(ns) + (f"?access_token={token}" if token else "")
    async with open_websocket_url(url) as ws:
        with pytest.raises(Exception):
            await ws.get_message()
        assert ws.closed.code == code


async def test_origins_outside_the_allow_list_are_refused(server):
    with pytest.raises(Exception, match="403"):
        async with open_client(server.ws(), server.token(), origin="http://evil.example"):
            pass
    async with open_client(server.ws(), server.token(), origin="http://good.example") as client:
        assert client.hello


async def test_a_client_of_one_tenant_never_sees_another_tenant(server):
    async with open_client(server.ws(), server.token("a", tenant="t1")) as a:
        await a.subscribe("professional:1")
        with pytest.raises(CommandError, match="not allowed"):
            await a.subscribe("tenant:t2")
        assert (await server.publish(appointment("b", tenant="t2", rooms=("professional:1", "tenant:t2")))).status_code == 200
        assert (await server.publish(appointment("a", tenant="t1"))).status_code == 200
        with trio.fail_after(5):
            evt = await a.next_event()
        assert evt["data"]["appointmentId"] == "a"
        await server.expect_sentinel_next(a)


async def test_a_thousand_events_missed_while_away_arrive_once_in_order_on_resume(server):
    cursor = await server.cursor_after("professional:1", server, appointment(0))
    await server.publish_all(appointment(i, rooms=("professional:1", "tenant:t1")) for i in range(1, 1001))
    # Resume both ways: ?since= for the auto-joined tenant room, sub+since for professional:1.
    # Each event went to both rooms; the client drops the repeated id (docs/protocol.md, Frames).
    async with open_client(server.ws(), server.token(), since=cursor) as client:
        assert client.hello["recovered"] is True
        ack = await client.subscribe("professional:1", since=cursor)
        assert ack["recovered"] is True
        with trio.fail_after(20):
            got = [int((await client.next_event())["data"]["appointmentId"]) for _ in range(1000)]
        assert got == list(range(1, 1001))
        await server.expect_sentinel_next(client)


async def test_a_cursor_the_history_cannot_reach_gets_recovered_false(server):
    stale = "7.deadbeef.1-0"
    async with open_client(server.ws(), server.token(), since=stale) as client:
        assert client.hello["recovered"] is False
        ack = await client.subscribe("professional:1", since=stale)
        assert ack["recovered"] is False and ack["cursor"]


async def test_a_repeated_id_is_delivered_once(server):
    async with open_client(server.ws(), server.token()) as client:
        await client.subscribe("professional:1")
        first = await server.publish(appointment(1, id="evt-42"))
        again = await server.publish(appointment(1, id="evt-42"))
        assert again.json() == {**first.json(), "duplicate": True}
        await server.publish(appointment(2))
        with trio.fail_after(5):
            ids = [(await client.next_event())["id"] for _ in range(2)]
        assert ids[0] == "evt-42" and ids[1] != "evt-42"


async def test_msgpack_clients_get_binary_frames_with_the_same_keys(server):
    async with open_client(server.ws(), server.token(), binary=True) as client:
        await client.subscribe("professional:1")
        await server.publish(appointment(7))
        with trio.fail_after(5):
            evt = await client.next_event()
        assert evt["data"] == {"appointmentId": "7"} and evt["op"] == "evt"


@pytest.mark.parametrize("body, status, fragment", [
    ({"event": "nope", "tenant": "t1", "rooms": ["professional:1"], "data": {}}, 422, "unknown event type"),
    ({"event": "appointment.created", "tenant": "t1", "rooms": ["professional:1"], "data": {"name": "Ana"}}, 422, "name"),
    ({"event": "appointment.created", "tenant": "t1", "rooms": ["thread:1"], "data": {}}, 422, "thread"),
    ({"event": "appointment.created", "rooms": ["professional:1"], "data": {}}, 400, "tenant"),
    ({"event": "appointment.created", "tenant": "t1", "rooms": ["professional:1"], "extra": 1}, 400, "extra"),
    ({"event": "appointment.created", "tenant": "t1", "rooms": ["professional:1"], "id": "x" * 201}, 400, "$.id"),
    ({"event": "appointment.created", "tenant": "t1", "rooms": ["professional:1"], "id": ""}, 400, "$.id"),
])
async def test_invalid_publishes_are_refused_clearly_and_nothing_is_delivered(server, body, status, fragment):
    async with open_client(server.ws(), server.token()) as client:
        await client.subscribe("professional:1")
        await client.subscribe("thread:1")
        response = await server.publish(body)
        assert response.status_code == status
        assert fragment in response.json()["message"]
        await server.expect_sentinel_next(client)


async def test_publishing_needs_a_service_token(server):
    assert (await server.publish(appointment(1), token=server.token())).status_code == 403
    async with httpx.AsyncClient(base_url=server.http) as http:
        assert (await http.post("/v1/publish", json=appointment(1))).status_code == 401


async def test_the_traceparent_of_an_event_appears_in_the_logs_of_its_delivery(server):
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    async with open_client(server.ws(), server.token()) as client:
        await client.subscribe("professional:1")
        with structlog.testing.capture_logs() as logs:
            await server.publish(appointment(1), headers={"traceparent": trace})
            with trio.fail_after(5):
                await client.next_event()
    delivered = [entry for entry in logs if entry.get("traceparent") == trace and entry["event"] == "deliver"]
    assert delivered and delivered[0]["recipients"] == 1


async def test_catch_up_over_http_and_410_when_history_is_gone(server):
    first = (await server.publish(appointment(0))).json()["cursor"]
    for i in range(1, 4):
        await server.publish(appointment(i))
    headers = {"authorization": f"Bearer {server.token()}"}
    async with httpx.AsyncClient(base_url=server.http, headers=headers) as http:
        r = await http.get("/hub/events", params={"since": first, "rooms": "professional:1"})
        assert r.status_code == 200 and r.json()["recovered"] is True
        assert [e["data"]["appointmentId"] for e in r.json()["events"]] == ["1", "2", "3"]
        gone = await http.get("/hub/events", params={"since": "7.deadbeef.1-0", "rooms": "professional:1"})
        assert gone.status_code == 410 and gone.json()["recovered"] is False
        forbidden = await http.get("/hub/events", params={"since": first, "rooms": "user:other"})
        assert forbidden.status_code == 403


async def test_health_readiness_and_metrics(server):
    async with open_client(server.ws(), server.token()) as client:
        await client.subscribe("professional:1")
        await server.publish(appointment(1))
        with trio.fail_after(5):
            await client.next_event()
        async with httpx.AsyncClient(base_url=server.http) as http:
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            assert (await http.get("/readyz")).status_code == 200
            metrics = (await http.get("/metrics")).text
    assert 'rt_connections{ns="hub",transport="websocket"} 1.0' in metrics
    assert 'rt_messages_out_total{event="appointment.created"} 1.0' in metrics
    assert "rt_delivery_latency_seconds_count" in metrics and "rt_rooms " in metrics


async def test_unknown_paths_are_404_and_plain_http_to_the_ws_path_is_426_upgrade_required(server):
    async with httpx.AsyncClient(base_url=server.http) as http:
        unknown = await http.get("/nope")
        assert unknown.status_code == 404 and unknown.json()["error"] == 404
        plain = await http.get("/hub/ws")
        assert plain.status_code == 426 and plain.headers["upgrade"] == "websocket"
        assert plain.json() == {"error": 426, "message": "this path serves WebSocket upgrades only"}


async def test_catch_up_with_a_cursor_of_a_shard_that_does_not_exist_is_410(server):
    async with httpx.AsyncClient(base_url=server.http, headers={"authorization": f"Bearer {server.token()}"}) as http:
        gone = await http.get("/hub/events", params={"since": "99.deadbeef.1-0", "rooms": "professional:1"})
    assert gone.status_code == 410 and gone.json()["recovered"] is False


async def test_a_room_of_300_sockets_gets_every_event_once_in_order_while_each_also_gets_replies(server):
    """Past 256 sockets a room's events are broadcast by the writer (actors/writer.py):
    each client still gets every event once, in order, with its own command replies (an
    ack pushed while a broadcast is pending) among them."""
    clients = 300
    got: list[list[int]] = [[] for _ in range(clients)]
    acked = trio.Semaphore(0)

    async def member(i: int, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with open_client(server.ws(), server.token(f"user-{i}")) as client:
            await client.subscribe("professional:1")
            task_status.started()
            while len(got[i]) < 40:
                got[i].append(int((await client.next_event())["data"]["appointmentId"]))
                if len(got[i]) == 20:
                    await client.subscribe("professional:2")
                    acked.release()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i in range(clients):
                await nursery.start(member, i)
            await server.publish_all(appointment(i) for i in range(20))
            for _ in range(clients):
                await acked.acquire()
            await server.publish_all(appointment(i, rooms=("professional:1", "professional:2")) for i in range(20, 40))
    assert got == [list(range(40))] * clients
