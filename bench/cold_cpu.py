"""How much slower this machine runs the same code right after being idle.

Parses one WebSocket upgrade head with h11 (the first thing a node does for a
connection) ``--runs`` times back to back, then once after each of a series of idle
pauses: the median wall time per parse for each. On a machine whose CPU slows down (or
is handed to other guests) while idle, an isolated request costs several times what the
same request costs on a busy node; read the sequential figures of ``resume_cost.py``
with this in mind.

    .venv/bin/python bench/cold_cpu.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import h11

HEAD = (b"GET /hub/ws?rooms=probe:1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Authorization: Bearer " + b"x" * 300 + b"\r\n\r\n")


def parse() -> None:
    parser = h11.Connection(h11.SERVER)
    parser.receive_data(HEAD)
    parser.next_event()


def median_us(runs: int, pause_s: float) -> float:
    took = []
    for _ in range(runs):
        if pause_s:
            time.sleep(pause_s)
        started = time.perf_counter_ns()
        parse()
        took.append(time.perf_counter_ns() - started)
    return statistics.median(took) / 1000


def main(args) -> None:
    median_us(2000, 0)  # warm-up
    for pause_ms in (0, 0.2, 1, 5):
        print(json.dumps({"idle_before_each_ms": pause_ms, "median_us_per_parse": round(median_us(args.runs, pause_ms / 1000), 1)}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1500)
    main(parser.parse_args())
