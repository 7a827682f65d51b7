"""What counting connected users costs a node on the memory bus with push on, in a connect storm.

With ``push.enabled``, the liveness actor (``actors/liveness.py``) holds each user it serves
in the node's ``LiveUsers`` store: in a connect storm, the opens waiting together at each
turn in one ``hold``, then all of them every ``push.live_renew_s``. This runs the memory
store (``rtserver.backends.push_store.MemoryLiveUsers``) through the same calls:
``--users`` users held ``--batch`` at a time, then one renewal of all of them, and prints
the CPU time of each.

``--tree DIR`` runs the store of another checkout (an A/B against an older commit).

    .venv/bin/python bench/live_users.py [--users 15000] [--batch 50] [--tree DIR]
"""

from __future__ import annotations

import argparse
import time

from checkouts import add_tree_option, import_from


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=15_000)
    parser.add_argument("--batch", type=int, default=50, help="opens held in one call during the storm")
    add_tree_option(parser)
    args = parser.parse_args()
    import_from(args.tree)

    import trio

    from rtserver.backends.config import load_config
    from rtserver.backends.push_store import MemoryLiveUsers

    push = load_config(environ={}, overrides={"auth": {"hs256_secret": "x" * 32}}).push
    lease = {"lease_s": 3 * push.live_renew_s, "grace_s": push.live_grace_s}

    async def run() -> tuple[float, float]:
        store = MemoryLiveUsers()
        users = [("t1", f"user-{i}") for i in range(args.users)]
        began = time.process_time()
        for start in range(0, len(users), args.batch):
            await store.hold("node-a", users[start:start + args.batch], [], **lease)
        storm = time.process_time() - began
        began = time.process_time()
        await store.hold("node-a", users, [], **lease)
        return storm, time.process_time() - began

    storm, renewal = trio.run(run)
    print(f"{args.users} users: connecting {args.batch} at a time took {storm * 1e3:.1f} ms of CPU; "
          f"one renewal of all of them {renewal * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
