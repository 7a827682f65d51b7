"""The HTTP fallbacks are stateless: two nodes on one Redis, no sticky sessions."""

import httpx
import trio

from rtserver.client import open_client
from tests.support.events import appointment
from tests.support.http_clients import command, open_sse, poll
from tests.support.nodes import presence_events, start_node
from tests.support.redis_servers import flush_redis


async def test_a_stream_on_one_node_takes_its_presence_commands_posted_to_the_other(nursery, redis_url):
    flush_redis(redis_url)
    a = await start_node(nursery, redis_url)
    b = await start_node(nursery, redis_url)
    async with open_client(b.ws(), b.token("boss", presenceGroups=["supervisors"])) as watch:
        await watch.subscribe("presence:attendants")
        await watch.next_event()  # the snapshot
        async with open_sse(a.http, a.token("ana"), rooms="thread:7") as sse:
            hello = (await sse.next()).data
            assert await presence_events(watch, 1) == [("ana", "online")]
            session = hello["session"]
            away = await command(b.http, b.token("ana"), {"op": "emit", "event": "presence:away", "ref": 1},
                                 session=session)
            assert away.json() == {"op": "ack", "ref": 1, "event": "presence:away"}
            assert await presence_events(watch, 1) == [("ana", "away")]
            # another user naming ana's session changes nothing
            await command(b.http, b.token("eve"), {"op": "emit", "event": "presence:online"}, session=session)
            await command(b.http, b.token("ana"), {"op": "emit", "event": "presence:online"}, session=session)
            assert await presence_events(watch, 1) == [("ana", "online")]
            # typing posted to B reaches the stream on A, not echoed to its own session
            await command(b.http, b.token("boss"), {"op": "emit", "event": "typing:start", "room": "thread:7"})
            await command(b.http, b.token("ana"), {"op": "emit", "event": "typing:start", "room": "thread:7"},
                          session=session)
            with trio.fail_after(5):
                typing = await sse.next_event()
            assert typing.data["data"]["userId"] == "boss" and typing.id is None  # ephemeral: no id
        assert await presence_events(watch, 1) == [("ana", "offline")]  # after the grace period


async def test_polls_alternating_between_nodes_get_every_event_once_and_keep_the_session_presence(
        nursery, redis_url):
    flush_redis(redis_url)
    nodes = [await start_node(nursery, redis_url, connection={"poll_timeout_s": 1.0}) for _ in range(2)]
    token = nodes[0].token("ana")
    published = [appointment(i, rooms=["professional:1"] if i % 3 else ["professional:2", "professional:1"])
                 for i in range(60)]

    async def publish_slowly():
        for i, body in enumerate(published):
            await nodes[i % 2].publish(body)
            await trio.sleep(0.01)

    seen: list[tuple[str, str]] = []
    async with open_client(nodes[1].ws(), nodes[1].token("boss", presenceGroups=["supervisors"])) as watch, httpx.AsyncClient(timeout=30) as http:
        await watch.subscribe("presence:attendants")
        await watch.next_event()
        http.base_url = nodes[0].http
        first = (await poll(http, token, rooms="professional:1,professional:2")).json()
        cursor, session = first["cursor"], first["session"]
        assert await presence_events(watch, 1) == [("ana", "online")]
        # switched between two polls (nothing in flight takes it): the next polls say so
        await command(nodes[1].http, token, {"op": "emit", "event": "presence:away"}, session=session)
        async with trio.open_nursery() as inner:
            inner.start_soon(publish_slowly)
            with trio.fail_after(20):
                turn = 1
                while len(seen) < 80:  # 60 events, 20 of them in both rooms
                    http.base_url = nodes[turn % 2].http
                    answer = (await poll(http, token, rooms="professional:1,professional:2", since=cursor,
                                         session=session, presence="away")).json()
                    assert answer["recovered"] is True and answer["session"] == session
                    seen += [(e["room"], e["data"]["appointmentId"]) for e in answer["events"]]
                    cursor, turn = answer["cursor"], turn + 1
        assert await presence_events(watch, 1) == [("ana", "away")]  # and it stayed so across the polls
    expected = []
    for i, body in enumerate(published):
        expected += [(room, str(i)) for room in body["rooms"]]
    assert sorted(seen) == sorted(expected) and len(set(seen)) == len(seen)
    for room in ("professional:1", "professional:2"):  # in order per room
        ids = [int(i) for r, i in seen if r == room]
        assert ids == sorted(ids)
