"""Slot generation burst (seeds 002/003 load case): frames per event, time to final state, memory.

Starts a redis-server and one ``rtserver serve`` on it. ``--single`` dashboards each
subscribe to one schedule and ``--multi`` dashboards each watch ``--per-multi`` schedules.
Then a backbone appends ``--schedules × --days`` ``schedule.slots.generated`` events in
one burst with plain pipelined ``XADD`` (schedule by schedule, day by day). Each dashboard
applies what it receives (snapshot, events, digests) to its model of its schedules; it
holds the final state when every one of its schedules has all its days at the burst's
version. Reported: event frames received per event a dashboard would otherwise get (the
coalescing ratio), the time from the first XADD until every dashboard holds the final
state, and the node's peak memory and CPU.

    .venv/bin/python bench/slot_burst.py            # 500 x 90 = 45,000 events, 550 dashboards
"""

from __future__ import annotations

import argparse
import json
import time

import redis
import trio
from stack import SECRET, cpu_seconds, peak_rss_mb, stack

from protocol.cursors import shard_of
from rtserver.backends.auth import mint_token
from rtserver.backends.bus.redis import stream_key
from rtserver.client import open_client


class Dashboard:
    """A wall screen's model: per schedule, the version of each day it holds."""

    def __init__(self, schedules: list[int], days: int, version: int) -> None:
        self.days: dict[str, dict[str, int]] = {str(s): {} for s in schedules}
        self.want, self.version = days, version
        self.frames = 0
        self.done_at: float | None = None

    def apply(self, evt: dict) -> None:
        data = evt["data"]
        if evt["event"] == "schedule.snapshot":
            self.days[data["scheduleId"]] = {d: v["data"]["version"] for d, v in data["days"].items()}
            return
        self.frames += 1
        changes = data["changes"] if evt["event"] == "schedule.digest" else [evt]
        for change in changes:
            day = change["data"]
            self.days[day["scheduleId"]][day["date"]] = day["version"]

    @property
    def final(self) -> bool:
        return all(len(d) == self.want and all(v == self.version for v in d.values()) for d in self.days.values())


async def watch(url: str, token: str, dashboard: Dashboard, task_status=trio.TASK_STATUS_IGNORED) -> None:
    async with open_client(url, token) as ws:
        for schedule in dashboard.days:
            await ws.subscribe(f"schedule:{schedule}")
        task_status.started()
        while True:
            evt = await ws.next_event()
            if evt["room"].startswith("schedule:"):
                dashboard.apply(evt)
                if dashboard.done_at is None and dashboard.final:
                    dashboard.done_at = time.perf_counter()


def burst(redis_url: str, schedules: int, days: int, version: int) -> None:
    """The backbone: every schedule's days, appended with plain pipelined XADD."""
    client = redis.Redis.from_url(redis_url)
    key = stream_key(shard_of("t1", 16))
    pipe = client.pipeline(transaction=False)
    for s in range(schedules):
        for d in range(days):
            date = f"2027-{1 + d // 30:02d}-{1 + d % 30:02d}"
            pipe.xadd(key, {"event": "schedule.slots.generated", "tenant": "t1", "rooms": json.dumps([f"schedule:{s}"]),
                            "data": json.dumps({"scheduleId": str(s), "date": date, "version": version,
                                                "slots": [f"{h:02d}:00" for h in range(8, 18)]})})
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()


async def main(args) -> None:
    events = args.schedules * args.days
    async with stack([True]) as processes:
        url = f"ws://127.0.0.1:{processes.ports[0]}/hub/ws"
        pid = processes.pids[0]
        token = mint_token(SECRET, {"sub": "wall", "healthUnitTaxId": "t1", "roles": ["attendant"]}, ttl_s=86400)
        dashboards = [Dashboard([i % args.schedules], args.days, 1) for i in range(args.single)]
        dashboards += [Dashboard([(j * args.per_multi + k) % args.schedules for k in range(args.per_multi)],
                                 args.days, 1) for j in range(args.multi)]
        watchers = sum(len(d.days) for d in dashboards)
        async with trio.open_nursery() as nursery:
            for dashboard in dashboards:
                await nursery.start(watch, url, token, dashboard)
            rss_before, cpu_before = peak_rss_mb(pid), cpu_seconds(pid)
            start = time.perf_counter()
            await trio.to_thread.run_sync(burst, processes.redis_url, args.schedules, args.days, 1)
            appended = time.perf_counter() - start
            with trio.move_on_after(args.timeout):
                while not all(d.done_at for d in dashboards):
                    await trio.sleep(0.05)
            cpu, rss_peak = cpu_seconds(pid) - cpu_before, peak_rss_mb(pid)
            nursery.cancel_scope.cancel()
    done = sorted(d.done_at - start for d in dashboards if d.done_at)
    frames = sum(d.frames for d in dashboards)
    print(f"{events} events appended in {appended:.2f} s; {len(dashboards)} dashboards watching "
          f"{watchers} schedule subscriptions ({events * watchers // args.schedules} deliveries uncoalesced)")
    print(f"frames received {frames}: {frames / (events * watchers / args.schedules):.4f} per event per watcher "
          f"({events * watchers / args.schedules / max(frames, 1):.1f} events per frame)")
    if len(done) == len(dashboards):
        print(f"final state: p50 {done[len(done) // 2]:.2f} s, every dashboard {done[-1]:.2f} s after the first XADD")
    else:
        print(f"final state NOT reached by {len(dashboards) - len(done)} dashboards within {args.timeout} s")
    print(f"node: peak RSS {rss_peak:.0f} MiB (before the burst {rss_before:.0f} MiB), "
          f"CPU {cpu:.2f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=500)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--single", type=int, default=500, help="dashboards on one schedule each")
    parser.add_argument("--multi", type=int, default=50, help="dashboards on --per-multi schedules each")
    parser.add_argument("--per-multi", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=120.0)
    trio.run(main, parser.parse_args())
