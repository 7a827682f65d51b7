"""Presence storm: attendants reconnecting en masse, across two nodes sharing Redis.

Starts a redis-server and two ``rtserver serve`` nodes on it. ``--attendants`` staff
clients connect (alternating nodes) and are tracked in ``presence:attendants``;
``--watchers`` supervisors (half on each node) subscribe to it. Then, every second for
``--seconds``, ``--churn`` of the attendants (picked at random) close cleanly and
reconnect on the other node — a deploy or a flaky network. Within the grace period a
reconnect must change nothing anyone sees. Reported: the reconnects achieved, the
``attendant:*`` frames the watchers received per second, and whether, after the storm,
each watcher's view (snapshot + announcements) and ``GET /hub/presence`` equal the truth
(every attendant online).

    .venv/bin/python bench/presence_storm.py       # 5,000 attendants, 10%/s for 60 s
"""

from __future__ import annotations

import argparse
import random
import time

import httpx
import trio
from stack import SECRET, cpu_seconds, peak_rss_mb, stack

from rtserver.backends.auth import mint_token
from rtserver.client import open_client


class Watcher:
    def __init__(self) -> None:
        self.online: set[str] = set()
        self.frames: list[float] = []  # arrival times of attendant:* frames

    def apply(self, evt: dict) -> None:
        data = evt["data"]
        if evt["event"] == "presence:snapshot":
            self.online = {u["userId"] for u in data["users"] if u["state"] == "online"}
        elif evt["event"].startswith("attendant:"):
            self.frames.append(time.perf_counter())
            (self.online.add if data["state"] == "online" else self.online.discard)(data["userId"])


async def watch(url: str, watcher: Watcher, task_status=trio.TASK_STATUS_IGNORED) -> None:
    token = mint_token(SECRET, {"sub": f"sup{id(watcher)}", "healthUnitTaxId": "t1", "roles": ["nurse"],
                                "presenceGroups": ["supervisors"]}, ttl_s=86400)
    async with open_client(url, token) as ws:
        await ws.subscribe("presence:attendants")
        task_status.started()
        async for evt in ws.events():
            watcher.apply(evt)


async def attend(url: str, user: str, leave: trio.Event, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """One attendant's connection, open until ``leave`` is set (then closed cleanly)."""
    token = mint_token(SECRET, {"sub": user, "healthUnitTaxId": "t1", "roles": ["attendant"]}, ttl_s=86400)
    async with open_client(url, token):
        task_status.started()
        await leave.wait()


async def main(args) -> None:
    presence = "[presence]\ngrace_s = 60.0\nsweep_interval_s = 10.0\n[connection]\nidle_timeout_s = 0\n"
    async with stack([True, True], presence) as processes:
        urls = [f"ws://127.0.0.1:{port}/hub/ws" for port in processes.ports]
        users = [f"att{i}" for i in range(args.attendants)]
        watchers = [Watcher() for _ in range(args.watchers)]
        leaving: dict[str, trio.Event] = {}
        node_of: dict[str, int] = {}
        async with trio.open_nursery() as nursery:
            for i, watcher in enumerate(watchers):
                await nursery.start(watch, urls[i % 2], watcher)
            limiter = trio.CapacityLimiter(200)

            async def connect(user: str, node: int) -> None:
                async with limiter:
                    leaving[user], node_of[user] = trio.Event(), node
                    await nursery.start(attend, urls[node], user, leaving[user])

            started = time.perf_counter()
            async with trio.open_nursery() as connecting:
                for i, user in enumerate(users):
                    connecting.start_soon(connect, user, i % 2)
            print(f"{len(users)} attendants connected in {time.perf_counter() - started:.1f} s")
            await trio.sleep(3)  # the connect announcements settle
            for watcher in watchers:
                watcher.frames.clear()
            cpu_before = [cpu_seconds(pid) for pid in processes.pids]
            storm_start, reconnects = time.perf_counter(), 0
            per_second = int(args.attendants * args.churn)
            for second in range(int(args.seconds)):
                tick = trio.current_time()
                async with trio.open_nursery() as wave:
                    for user in random.sample(users, per_second):
                        leaving[user].set()
                        wave.start_soon(connect, user, 1 - node_of[user])
                reconnects += per_second
                await trio.sleep_until(tick + 1)
            storm = time.perf_counter() - storm_start
            cpu = [cpu_seconds(pid) - before for pid, before in zip(processes.pids, cpu_before)]
            rss = [peak_rss_mb(pid) for pid in processes.pids]
            await trio.sleep(3)
            async with httpx.AsyncClient() as http:
                token = mint_token(SECRET, {"sub": "ops", "healthUnitTaxId": "t1", "roles": ["admin"]})
                listed = (await http.get(f"http://127.0.0.1:{processes.ports[0]}/hub/presence",
                                         params={"group": "attendants"},
                                         headers={"authorization": f"Bearer {token}"})).json()["users"]
            nursery.cancel_scope.cancel()
    truth = set(users)
    frames = [len(w.frames) for w in watchers]
    print(f"storm: {reconnects} reconnects in {storm:.1f} s ({reconnects / storm:.0f}/s, "
          f"{per_second}/s asked, each to the other node)")
    print(f"attendant:* frames per watcher: {sum(frames) / len(frames):.1f} in total, "
          f"{sum(frames) / len(frames) / storm:.2f}/s")
    print(f"final presence equals the truth: watchers {sum(w.online == truth for w in watchers)}/{len(watchers)}, "
          f"GET /hub/presence {len(listed)} listed, "
          f"{'equal' if {u['userId'] for u in listed if u['state'] == 'online'} == truth else 'DIFFERENT'}")
    print("nodes during the storm: CPU " + ", ".join(f"{c:.1f} s" for c in cpu)
          + "; peak RSS " + ", ".join(f"{r:.0f} MiB" for r in rss))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attendants", type=int, default=5000)
    parser.add_argument("--churn", type=float, default=0.1, help="share of attendants reconnecting each second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--watchers", type=int, default=10)
    trio.run(main, parser.parse_args())
