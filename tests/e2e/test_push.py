"""Mobile push end to end: devices registered through a real node, the push dispatcher
(``rtserver push`` beside nodes on Redis; the node itself on the memory bus), and local
stand-ins for FCM and APNs (TLS, HTTP/2 for APNs) that check each request's shape and
credentials as the providers do."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
import trio

from rtserver.backends.config import ConfigError
from rtserver.client import open_client
from rtserver.node import Node
from tests.support.http_clients import open_sse, poll
from tests.support.metrics import metric_value
from tests.support.nodes import Server, server_config, wait_until
from tests.support.push_rig import APNS_TOKEN, FCM_TOKEN, Rig, start_rig, wait_until_async
from tests.support.redis_servers import flush_redis

@pytest.fixture(params=["redis", "memory"])
async def rig(request, nursery, tmp_path) -> Rig:
    if request.param == "redis":
        redis_url = request.getfixturevalue("redis_url")
        flush_redis(redis_url)
        return await start_rig(nursery, tmp_path, redis_url)
    return await start_rig(nursery, tmp_path, None)


async def test_devices_register_through_an_authenticated_endpoint(rig):
    async with httpx.AsyncClient(base_url=rig.server.http) as http:
        anonymous = await http.post("/portal/push/devices", json={"platform": "fcm", "token": FCM_TOKEN})
        assert anonymous.status_code == 401
    for body, fault in (({"platform": "sms", "token": FCM_TOKEN}, "platform"),
                        ({"platform": "apns", "token": "not-hex"}, "hexadecimal"),
                        ({"platform": "fcm", "token": "short"}, "FCM registration token")):
        async with httpx.AsyncClient(base_url=rig.server.http) as http:
            refused = await http.post("/portal/push/devices", json=body,
                                      headers={"authorization": f"Bearer {rig.patient_token()}"})
        assert refused.status_code == 422 and fault in refused.json()["message"]
    staff_in_portal = await rig.register("portal", rig.professional_token(), "fcm", FCM_TOKEN)
    assert staff_in_portal.status_code == 403

    registered = await rig.register("portal", rig.patient_token(), "fcm", FCM_TOKEN)
    assert registered.status_code == 201 and registered.json()["forgotten"] == 0
    devices = rig.server.node.gateway.devices
    [(token, device)] = (await devices.devices("t1", ["patient:p-111"])).items()
    assert token == FCM_TOKEN and device.user == "pat-1" and device.rooms == ["user:pat-1", "patient:p-111"]

    async def unregister(user: str) -> int:
        async with httpx.AsyncClient(base_url=rig.server.http) as http:
            answer = await http.delete(f"/portal/push/devices/{FCM_TOKEN}",
                                       headers={"authorization": f"Bearer {rig.patient_token(user, 'p-999')}"})
        return answer.status_code

    assert await unregister("someone-else") == 404
    assert await devices.devices("t1", ["patient:p-111"])  # still there
    assert await unregister("pat-1") == 204
    assert await devices.devices("t1", ["patient:p-111", "user:pat-1"]) == {}

    # Two devices per user at most (the rig's limit): a third forgets the oldest.
    for n in range(3):
        answer = await rig.register("hub", rig.professional_token(), "apns", f"{n:02x}" * 32)
        assert answer.json()["forgotten"] == (1 if n == 2 else 0)
    assert sorted(await devices.devices("t1", ["professional:pr-222"])) == ["01" * 32, "02" * 32]


async def test_users_with_no_live_connection_get_a_discreet_notice_on_each_platform(rig):
    assert (await rig.register("portal", rig.patient_token(), "fcm", FCM_TOKEN)).status_code == 201
    assert (await rig.register("hub", rig.professional_token(), "apns", APNS_TOKEN)).status_code == 201
    await rig.appointment(rooms=("tenant:t1",))  # no personal room: nobody's phone
    await rig.appointment(rooms=("user:pat-1",), event="admin.job.progress",
                          data={"jobId": "j1", "percent": 10})  # not a pushed type
    event_id = await rig.appointment()
    await wait_until(lambda: rig.fcm.messages and rig.apns.notices)
    await wait_until(rig.settled)
    assert rig.violations() == []
    [message] = rig.fcm.messages
    assert message["token"] == FCM_TOKEN
    assert message["data"] == {"event": "appointment.created", "id": event_id, "tenant": "t1"}
    assert message["notification"] == {"title": "New activity", "body": "Open the app to see what changed."}
    [(device, headers, payload)] = rig.apns.notices
    assert device == APNS_TOKEN and headers["apns-topic"] == rig.apns.topic and headers["apns-priority"] == "10"
    assert payload == {"aps": {"alert": {"title": "New activity", "body": "Open the app to see what changed."}},
                       "event": "appointment.created", "id": event_id, "tenant": "t1"}
    # Nothing of the event's payload left in what the providers were sent (the token
    # exchange's signed assertion is random base64: not a notice, not checked).
    for request in [r for r in rig.fcm.requests if r.path != "/token"] + rig.apns.requests:
        assert not any(value.encode() in request.body for value in ("p-111", "pr-222", "booked", "sl1"))
    assert {r.http_version for r in rig.apns.requests} == {"2"}
    metrics = rig.dispatcher.metrics
    assert metric_value(metrics.sent, platform="fcm") == 1 and metric_value(metrics.sent, platform="apns") == 1


async def test_a_connected_user_gets_no_push_until_their_connection_is_gone(rig):
    await rig.register("portal", rig.patient_token(), "fcm", FCM_TOKEN)
    live = rig.live
    async with open_client(rig.server.ws("portal"), rig.patient_token()) as client:
        await wait_until_async(lambda: live.connected("t1", ["pat-1"]), {"pat-1"})
        assert b"\nrt_connected_users 1.0" in rig.server.node.metrics.render()
        event_id = await rig.appointment()
        with trio.fail_after(10):
            assert (await client.next_event())["id"] == event_id
        await wait_until(rig.settled)
        assert rig.fcm.messages == []
        assert metric_value(rig.dispatcher.metrics.skipped, reason="connected") == 1
    await wait_until_async(lambda: live.connected("t1", ["pat-1"]), set())  # after the grace period
    later = await rig.appointment()
    await wait_until(lambda: rig.fcm.messages)
    assert [m["data"]["id"] for m in rig.fcm.messages] == [later]
    assert rig.violations() == []


async def test_every_transport_on_any_node_counts_as_connected(nursery, tmp_path, redis_url):
    flush_redis(redis_url)
    rig = await start_rig(nursery, tmp_path, redis_url, live_grace_s=3)
    other = Node(rig.server.node.config)  # a second node on the same Redis
    other_server = Server(other, await nursery.start(other.run))
    await rig.register("portal", rig.patient_token(), "fcm", FCM_TOKEN)
    live = rig.live
    async with open_sse(other_server.http, rig.patient_token(), ns="portal") as sse:
        await sse.next()  # hello
        await wait_until_async(lambda: live.connected("t1", ["pat-1"]), {"pat-1"})
        streamed = await rig.appointment()
        with trio.fail_after(10):
            assert (await sse.next_event()).data["id"] == streamed
        await wait_until(rig.settled)
    await wait_until_async(lambda: live.connected("t1", ["pat-1"]), set(), timeout=15)
    async with httpx.AsyncClient(base_url=other_server.http, timeout=30) as http:
        answers = []

        async def one_poll() -> None:
            answers.append(await poll(http, rig.patient_token(), ns="portal"))

        nursery.start_soon(one_poll)  # waits for the next event
        await wait_until_async(lambda: live.connected("t1", ["pat-1"]), {"pat-1"})
        polled = await rig.appointment()
        await wait_until(lambda: answers)
        assert [e["id"] for e in answers[0].json()["events"]] == [polled]
        await wait_until(rig.settled)  # handled within the grace after the poll's answer: its next poll is near
    assert rig.fcm.messages == []
    assert metric_value(rig.dispatcher.metrics.skipped, reason="connected") == 2
    await wait_until_async(lambda: live.connected("t1", ["pat-1"]), set(), timeout=15)  # it never came back
    pushed = await rig.appointment()
    await wait_until(lambda: rig.fcm.messages)
    assert [m["data"]["id"] for m in rig.fcm.messages] == [pushed] and rig.violations() == []


async def test_devices_a_provider_calls_invalid_are_forgotten(rig):
    gone, malformed, fine = FCM_TOKEN + "-gone", FCM_TOKEN + "-malformed", FCM_TOKEN
    rig.fcm.unregistered.add(gone)
    rig.fcm.malformed.add(malformed)
    rig.apns.unregistered.add(APNS_TOKEN)
    for user, token in (("pat-1", gone), ("pat-2", malformed), ("pat-3", fine)):
        await rig.register("portal", rig.patient_token(user), "fcm", token)
    await rig.register("hub", rig.professional_token(), "apns", APNS_TOKEN)
    rooms = ("user:pat-1", "user:pat-2", "user:pat-3", "professional:pr-222")
    await rig.appointment(rooms=rooms)
    devices = rig.server.node.gateway.devices
    await wait_until(rig.settled)
    assert sorted(await devices.devices("t1", list(rooms))) == [fine]
    metrics = rig.dispatcher.metrics
    assert metric_value(metrics.forgotten, platform="fcm") == 2 and metric_value(metrics.forgotten, platform="apns") == 1
    requests = len(rig.fcm.requests), len(rig.apns.requests)
    await rig.appointment(rooms=rooms)
    await wait_until(lambda: len(rig.fcm.messages) == 2)
    await wait_until(rig.settled)
    assert (len(rig.fcm.requests), len(rig.apns.requests)) == (requests[0] + 1, requests[1])  # only the valid one
    assert rig.violations() == []


async def test_provider_failures_are_retried_and_expired_credentials_renewed(rig):
    await rig.register("portal", rig.patient_token(), "fcm", FCM_TOKEN)
    await rig.register("hub", rig.professional_token(), "apns", APNS_TOKEN)
    await rig.appointment()
    await wait_until(lambda: rig.fcm.messages and rig.apns.notices)
    assert rig.fcm.token_requests == 1  # the access token is reused until it expires
    rig.fcm.revoke()  # the next send gets 401: a new access token, then the send again
    rig.fcm.script = [503, 500]  # then two failures before it goes through
    rig.apns.expire_next = 1  # one ExpiredProviderToken: a new provider token, then the send again
    await rig.appointment()
    await wait_until(lambda: len(rig.fcm.messages) == 2 and len(rig.apns.notices) == 2)
    assert rig.fcm.token_requests == 2
    failures = rig.dispatcher.metrics.failures
    assert metric_value(failures, platform="fcm", reason="UNAVAILABLE") == 2
    assert len(rig.apns.requests) == 3 and rig.violations() == []


async def test_after_a_push_a_user_is_quiet_for_a_while(nursery, tmp_path, redis_url):
    flush_redis(redis_url)
    rig = await start_rig(nursery, tmp_path, redis_url, quiet_s=30)
    await rig.register("portal", rig.patient_token(), "fcm", FCM_TOKEN)
    ids = [await rig.appointment() for _ in range(3)]
    await wait_until(lambda: rig.fcm.messages)
    await wait_until(rig.settled)
    [message] = rig.fcm.messages  # whichever event came first to the concurrent handlers
    assert message["data"]["id"] in ids
    assert metric_value(rig.dispatcher.metrics.skipped, reason="quiet") == 2


async def test_push_is_off_by_default(nursery, redis_url, tmp_path):
    node = Node(server_config(bus={"redis_url": redis_url}))
    server = Server(node, await nursery.start(node.run))
    async with httpx.AsyncClient(base_url=server.http) as http:
        answer = await http.post("/hub/push/devices", json={"platform": "apns", "token": APNS_TOKEN},
                                 headers={"authorization": f"Bearer {server.token()}"})
    assert answer.status_code == 404 and "not enabled" in answer.json()["message"]
    with pytest.raises(ConfigError, match="needs a provider"):
        server_config(push={"enabled": True})  # on the memory bus, the node would push itself
    config = tmp_path / "push.toml"
    config.write_text(f'[bus]\nredis_url = "{redis_url}"\n[push]\nenabled = true\n')
    refused = subprocess.run([sys.executable, "-m", "rtserver", "push", "--config", str(config)],
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "no push provider configured" in refused.stderr
