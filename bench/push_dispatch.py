"""Mobile push: device registrations/s through a node, and notices/s and append-to-accept
latency of one ``rtserver push`` process.

Starts a redis-server, one ``rtserver serve`` node and one ``rtserver push`` process (each a
process of its own) and, in this process, the FCM and APNs stand-ins of the tests (TLS,
HTTP/2 for APNs, every request's credentials checked: an RS256 assertion per access token,
an ES256 provider token verified on each APNs request).

1. ``--users`` users register a device each through ``POST /portal/push/devices`` (half
   FCM, half APNs), ``--clients`` at a time.
2. One event per user is appended with plain ``XADD`` s to ``user:<id>`` (nobody
   connected, no quiet period); notices/s = users / (last accepted - first append);
   latency = the stand-in's acceptance time - the event's append time (one clock); the
   dispatcher's CPU per notice from /proc.

    .venv/bin/python bench/push_dispatch.py [--users 2000] [--clients 8] [--profile push.prof]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import redis
import trio
from stack import ROOT, SECRET, cpu_seconds, stack

from protocol.cursors import shard_of
from rtserver.backends.auth import mint_token
from rtserver.backends.bus.redis import stream_key
from rtserver.push import GROUP
from tests.support.push_providers import ApnsStandIn, Credentials, FcmStandIn

TENANT = "t1"


def push_toml(credentials: Credentials, fcm: FcmStandIn, apns: ApnsStandIn) -> str:
    return f"""
[push]
enabled = true
quiet_s = 0
max_concurrency = 64
[push.fcm]
service_account_file = "{fcm.service_account_file()}"
endpoint = "{fcm.url}"
ca_file = "{credentials.ca_file}"
[push.apns]
key_file = "{credentials.apns_key_file}"
key_id = "{apns.key_id}"
team_id = "{apns.team_id}"
topic = "{apns.topic}"
endpoint = "{apns.url}"
ca_file = "{credentials.ca_file}"
"""


def device_of(n: int) -> tuple[str, str]:
    return ("apns", f"{n:064x}") if n % 2 else ("fcm", f"fcm-bench-device-{n:08d}:APA91b")


async def register(base: str, users: int, clients: int) -> float:
    """Register every user's device; seconds taken."""
    limiter = trio.CapacityLimiter(clients)

    async def one(http: httpx.AsyncClient, n: int) -> None:
        async with limiter:
            platform, token = device_of(n)
            bearer = mint_token(SECRET, {"sub": f"u{n}", "healthUnitTaxId": TENANT, "roles": ["patient"],
                                         "patientTaxId": f"p{n}"})
            answer = await http.post("/portal/push/devices", json={"platform": platform, "token": token},
                                     headers={"authorization": f"Bearer {bearer}"})
            assert answer.status_code == 201, answer.text

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=clients)) as http:
        async with trio.open_nursery() as nursery:
            for n in range(users):
                nursery.start_soon(one, http, n)
    return time.perf_counter() - started


async def main(args) -> None:
    folder = Path(tempfile.mkdtemp(prefix="rt-push-bench-"))
    credentials = Credentials(folder)
    fcm, apns = FcmStandIn(credentials), ApnsStandIn(credentials)
    accepted: dict[str, float] = {}
    for stand_in in (fcm, apns):
        original = stand_in.answer

        def timed(request, original=original):
            answer = original(request)
            if answer[0] == 200 and request.path != "/token":
                accepted[json.loads(request.body).get("message", {}).get("data", {}).get("id")
                         or json.loads(request.body)["id"]] = time.time()
            return answer

        stand_in.answer = timed
    async with trio.open_nursery() as nursery:
        await nursery.start(fcm.serve)
        await nursery.start(apns.serve)
        async with stack([True], push_toml(credentials, fcm, apns)) as running:
            config = Path(running.folder) / "rtserver.toml"
            seconds = await register(f"http://127.0.0.1:{running.ports[0]}", args.users, args.clients)
            print(f"registrations: {args.users} in {seconds:.2f} s = {args.users / seconds:,.0f}/s "
                  f"({args.clients} clients)")
            proc = await trio.lowlevel.open_process(
                [f"{ROOT}/.venv/bin/python", *(["-m", "cProfile", "-o", args.profile] if args.profile else []),
                 "-m", "rtserver", "push", "--config", str(config),
                 "--redis-url", running.redis_url], cwd=ROOT)
            plain, stream = redis.Redis.from_url(running.redis_url), stream_key(shard_of(TENANT, 16))
            with trio.fail_after(30):  # the group exists (created at $)
                while not (plain.exists(stream) and any(g["name"] == GROUP.encode()
                                                        for g in plain.xinfo_groups(stream))):
                    plain.xadd(stream, {"event": "appointment.created", "tenant": TENANT,
                                        "rooms": json.dumps(["tenant:t1"]), "data": "{}", "id": f"warm-{time.time()}"})
                    await trio.sleep(0.2)
            cpu_before = cpu_seconds(proc.pid)
            appended: dict[str, float] = {}
            pipe = plain.pipeline(transaction=False)
            for n in range(args.users):
                event_id = f"ev-{n}"
                appended[event_id] = time.time()
                pipe.xadd(stream, {"event": "appointment.created", "tenant": TENANT,
                                   "rooms": json.dumps([f"user:u{n}"]), "data": json.dumps({"appointmentId": n}),
                                   "id": event_id})
                if len(pipe) == 500:
                    pipe.execute()
            pipe.execute()
            with trio.fail_after(300):
                while len([i for i in appended if i in accepted]) < args.users:
                    await trio.sleep(0.05)
            cpu = cpu_seconds(proc.pid) - cpu_before
            proc.terminate()
            await proc.wait()
        nursery.cancel_scope.cancel()
    latencies = sorted((accepted[i] - appended[i]) * 1000 for i in appended)
    span = max(accepted[i] for i in appended) - min(appended.values())
    assert not fcm.violations and not apns.violations, (fcm.violations, apns.violations)
    print(f"notices: {args.users} ({len(fcm.messages)} FCM, {len(apns.notices)} APNs) in {span:.2f} s = "
          f"{args.users / span:,.0f}/s; append->accepted p50 {statistics.median(latencies):.0f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99) - 1]:.0f} ms, max {latencies[-1]:.0f} ms; "
          f"dispatcher CPU {cpu:.2f} s = {cpu / args.users * 1e6:,.0f} us/notice; "
          f"requests: {len(fcm.requests) - fcm.token_requests} FCM, {len(apns.requests)} APNs; "
          f"FCM access tokens: {fcm.token_requests}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--profile", help="run the dispatcher under cProfile, writing this file")
    trio.run(main, parser.parse_args())
