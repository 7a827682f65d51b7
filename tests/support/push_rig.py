"""The push rig: a node with push on (on Redis with an ``rtserver push`` dispatcher beside
it, or on the memory bus pushing itself) and local stand-ins for FCM and APNs."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import trio

from protocol.cursors import shard_of
from rtserver.backends.bus.redis import RedisBus, stream_key
from rtserver.backends.push_store import LiveUsers
from rtserver.backends.push_store.redis import RedisLiveUsers
from rtserver.node import Node
from rtserver.push import GROUP, Dispatcher
from tests.support.nodes import Server, server_config, wait_until
from tests.support.push_providers import ApnsStandIn, Credentials, FcmStandIn
from tests.support.redis_servers import plain_redis

FCM_TOKEN = "fcm-device-0123456789:APA91b-abcdefghij"
APNS_TOKEN = "a1" * 32
APPOINTMENT = {"appointmentId": "a1", "scheduleId": "s1", "slotId": "sl1", "patientTaxId": "p-111",
               "professionalTaxId": "pr-222", "status": "booked"}


@dataclass
class Rig:
    server: Server
    fcm: FcmStandIn
    apns: ApnsStandIn
    dispatcher: Dispatcher
    #: Who is connected, as the dispatcher reads it.
    live: LiveUsers
    redis_url: str | None

    def patient_token(self, user: str = "pat-1", patient: str = "p-111") -> str:
        return self.server.token(user, roles=("patient",), patientTaxId=patient)

    def professional_token(self, user: str = "doc-1", professional: str = "pr-222") -> str:
        return self.server.token(user, roles=("professional",), professionalTaxId=professional)

    async def register(self, ns: str, token: str, platform: str, device: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.server.http) as http:
            return await http.post(f"/{ns}/push/devices", json={"platform": platform, "token": device},
                                   headers={"authorization": f"Bearer {token}"})

    async def appointment(self, rooms=("patient:p-111", "professional:pr-222", "tenant:t1"),
                          event: str = "appointment.created", data: dict | None = None) -> str:
        answer = await self.server.publish({"event": event, "tenant": "t1", "rooms": list(rooms),
                                            "data": data or APPOINTMENT})
        assert answer.status_code == 200, answer.text
        return answer.json()["id"]

    def settled(self) -> bool:
        """Whether the dispatcher read every entry of the tenant's stream and acknowledged each."""
        shard = shard_of("t1", 16)
        if self.redis_url is None:
            bus = self.server.node.bus
            group = bus.groups.get(GROUP)
            return group is not None and not group[shard].pending and group[shard].delivered == bus.last(shard)
        redis, stream = plain_redis(self.redis_url), stream_key(shard)
        groups = [g for g in redis.xinfo_groups(stream) if g["name"] == GROUP.encode()]
        return bool(groups) and not groups[0]["pending"] and (
            groups[0]["last-delivered-id"] == redis.xinfo_stream(stream)["last-generated-id"])

    def violations(self) -> list[str]:
        return self.fcm.violations + self.apns.violations


async def wait_until_async(read, wanted, timeout: float = 10) -> None:
    """Poll the coroutine function ``read`` until it returns ``wanted``."""
    with trio.fail_after(timeout):
        while await read() != wanted:
            await trio.sleep(0.02)


async def start_rig(nursery, tmp_path, redis_url: str | None, **push) -> Rig:
    """Push on a node on Redis with an ``rtserver push`` dispatcher beside it, or (without
    ``redis_url``) on a node on the memory bus that pushes itself."""
    credentials = Credentials(tmp_path)
    fcm, apns = FcmStandIn(credentials), ApnsStandIn(credentials)
    await nursery.start(fcm.serve)
    await nursery.start(apns.serve)
    config = server_config(bus={"redis_url": redis_url or ""}, push={
        "enabled": True, "quiet_s": 0, "live_grace_s": 0.2, "live_renew_s": 1, "timeout_s": 5,
        "backoff_initial_s": 0.05, "poll_s": 0.02, "max_devices_per_user": 2,
        "fcm": {"service_account_file": fcm.service_account_file(), "endpoint": fcm.url,
                "ca_file": credentials.ca_file},
        "apns": {"key_file": credentials.apns_key_file, "key_id": apns.key_id, "team_id": apns.team_id,
                 "topic": apns.topic, "endpoint": apns.url, "ca_file": credentials.ca_file},
        **push})
    node = Node(config)
    server = Server(node, await nursery.start(node.run))
    if redis_url is None:
        dispatcher, live = node.push, node.backends.live_users
    else:
        bus = RedisBus.for_config(config)
        dispatcher, live = Dispatcher.on_redis(config.push, bus), RedisLiveUsers(node.bus.link, node.bus.shards)

        async def run_dispatcher(task_status=trio.TASK_STATUS_IGNORED) -> None:
            async with bus.commands():
                await dispatcher.run(task_status=task_status)

        await nursery.start(run_dispatcher)
    rig = Rig(server, fcm, apns, dispatcher, live, redis_url)
    await rig.appointment(rooms=("tenant:t1",))  # the groups exist (created at $) once this is read
    await wait_until(rig.settled)
    return rig
