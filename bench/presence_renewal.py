"""What renewing presence costs a node: CPU per user per ``presence.sweep_interval_s``.

Runs the presence actor (``actors/presence.py``) of a node on the memory bus and store,
in this process, on Trio's mock clock: ``--users`` staff connect through its mailbox (each
a user of their own in one presence group), their views are put, then the actor runs one
whole sweep interval of virtual time, in which its only work is the renewal (every view
put again, a tenth at a time) and the sweep. The figure is this process's CPU time over
that interval, per user.

``--tree DIR`` runs the actor of another checkout (an A/B against an older commit).

    .venv/bin/python bench/presence_renewal.py [--users 15000] [--cycles 3] [--tree DIR]
"""

from __future__ import annotations

import argparse
import time

from checkouts import add_tree_option, import_from


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=15_000)
    parser.add_argument("--cycles", type=int, default=3, help="sweep intervals measured; the best is kept")
    add_tree_option(parser)
    args = parser.parse_args()
    import_from(args.tree)

    import trio
    import trio.testing

    from actors.presence import Presence
    from rtserver.backends.bus.memory import MemoryBus
    from rtserver.backends.config import load_config
    from rtserver.backends.metrics import Metrics
    from rtserver.backends.presence import MemoryPresence

    config = load_config(environ={}, overrides={"auth": {"hs256_secret": "x" * 32}})
    interval = config.presence.sweep_interval_s

    async def run() -> list[float]:
        presence = Presence(MemoryPresence(), MemoryBus(config.bus), config.presence,
                            heartbeat_s=config.connection.heartbeat_s, holder="node-a", metrics=Metrics())
        async with trio.open_nursery() as nursery:
            await nursery.start(presence.run)
            for i in range(args.users):
                await presence.connected(("connection", i), "t1", f"user-{i}", ("attendants",))
            await trio.sleep(interval)  # the first views put, and a first cycle
            costs = []
            for _ in range(args.cycles):
                began = time.process_time()
                await trio.sleep(interval)
                costs.append(time.process_time() - began)
            nursery.cancel_scope.cancel()
        return costs

    costs = trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))
    best = min(costs)
    print(f"{args.users} users: one renewal cycle ({interval:g} s) took {best * 1e3:.1f} ms of CPU "
          f"({best / args.users * 1e6:.2f} µs per user; {best / interval * 1e3:.1f} ms per second)")


if __name__ == "__main__":
    main()
