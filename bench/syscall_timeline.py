"""Where a big-room event's time goes between processes, from their system calls.

Reads ``perf script --ns -F pid,time,event,trace`` output of ``raw_syscalls:sys_enter`` and
``sys_exit`` recorded (``perf record -k CLOCK_MONOTONIC``) on three processes of a peerbench
fan-out run at a fixed rate: the publisher (``loadgen/pub.js``), the server, and the
subscriber process (``loadgen/sub.js``). Each event starts at the publisher's write of its
request; per event it takes, in ms after that write:

- the server's wake-up (an ``epoll_wait`` returning events), its first read and first send;
- the subscriber process's first read;
- the server's send number ``n/2`` and ``n`` and the subscriber process's read number ``n/2``
  (the median recipient: who is later there is the slower side);
- how long the subscriber process was blocked in ``epoll_wait`` between its first and its
  ``n``-th read (near 0: it was busy all along, the slower side).

One run, 5,000 subscribers at 8 events/s (the pids from ``pgrep``; the server's is
``rtserver serve``, or nginx's worker for nchan)::

    perf record -q -e raw_syscalls:sys_enter,raw_syscalls:sys_exit -k CLOCK_MONOTONIC \\
        -p $PUB,$SERVER,$SUB -o run.data -- sleep 3
    perf script --ns -i run.data -F pid,time,event,trace > run.txt
    python bench/syscall_timeline.py run.txt --pub $PUB --server $SERVER --sub $SUB -n 5000

Tracing costs each system call a few µs: compare servers traced alike, not with untraced runs.
"""

from __future__ import annotations

import argparse
import re
import statistics
from dataclasses import dataclass

LINE = re.compile(r"\s*(\d+)\s+([\d.]+):\s+raw_syscalls:sys_(enter|exit): NR (\d+) (.*)")
#: x86-64 system call numbers: those that write to a socket, read one, wait in epoll.
WRITES = {1, 20, 44, 46}  # write, writev, sendto, sendmsg
READS = {0, 19, 45, 47}  # read, readv, recvfrom, recvmsg
EPOLL = {232, 281, 441}  # epoll_wait, epoll_pwait, epoll_pwait2
#: Publisher writes further apart than this start a new event.
EVENT_GAP_S = 0.05


@dataclass(frozen=True)
class Call:
    t: float
    who: str
    enter: bool
    nr: int
    rest: str


def parse(path: str, roles: dict[int, str]) -> list[Call]:
    calls = []
    with open(path) as f:
        for line in f:
            m = LINE.match(line)
            if m and int(m.group(1)) in roles:
                calls.append(Call(float(m.group(2)), roles[int(m.group(1))], m.group(3) == "enter",
                                  int(m.group(4)), m.group(5)))
    return calls


def returned_events(call: Call) -> bool:
    """Whether an ``epoll_wait`` exit returned any event."""
    return not call.enter and call.rest.strip() not in ("= 0", "") and not call.rest.strip().startswith("= -")


def event_starts(calls: list[Call]) -> list[int]:
    """Indices of the publisher's first write of each event."""
    starts: list[int] = []
    for i, call in enumerate(calls):
        if call.who == "pub" and call.enter and call.nr in WRITES:
            if not starts or call.t - calls[starts[-1]].t > EVENT_GAP_S:
                starts.append(i)
    return starts


def timeline(window: list[Call], t0: float, n: int) -> dict[str, float | None]:
    """The figures of one event (see the module docstring), ms after ``t0``."""
    def ms(call: Call | None) -> float | None:
        return None if call is None else (call.t - t0) * 1e3

    def nth(calls: list[Call], k: int) -> Call | None:
        return calls[k - 1] if len(calls) >= k else None

    sends = [c for c in window if c.who == "server" and c.enter and c.nr in WRITES]
    reads = [c for c in window if c.who == "sub" and c.enter and c.nr in READS]
    wake = next((c for c in window if c.who == "server" and c.nr in EPOLL and returned_events(c)), None)
    first_read = next((c for c in window if c.who == "server" and c.enter and c.nr in READS), None)
    blocked = None
    if reads:
        last = nth(reads, n) or reads[-1]
        blocked, entered = 0.0, None
        for c in window:
            if c.who != "sub" or c.nr not in EPOLL or not reads[0].t <= c.t <= last.t:
                continue
            if c.enter:
                entered = c.t
            elif entered is not None:
                blocked += c.t - entered
                entered = None
        blocked *= 1e3
    return {
        "server wakes": ms(wake), "server reads the request": ms(first_read),
        "server's first send": ms(nth(sends, 1)), "subscribers' first read": ms(nth(reads, 1)),
        f"server's send {n // 2}": ms(nth(sends, n // 2)), f"subscribers' read {n // 2}": ms(nth(reads, n // 2)),
        f"server's send {n}": ms(nth(sends, n)), "subscribers blocked in epoll (ms)": blocked,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("script", help="perf script output")
    parser.add_argument("--pub", type=int, required=True)
    parser.add_argument("--server", type=int, required=True)
    parser.add_argument("--sub", type=int, required=True)
    parser.add_argument("-n", type=int, default=5000, help="subscribers")
    args = parser.parse_args()
    calls = parse(args.script, {args.pub: "pub", args.server: "server", args.sub: "sub"})
    starts = event_starts(calls)
    rows = [timeline(calls[a:b], calls[a].t, args.n) for a, b in zip(starts, starts[1:])]
    print(f"{len(rows)} events; ms after the publisher's write (median, min, max)")
    for key in rows[0] if rows else ():
        values = [r[key] for r in rows if r[key] is not None]
        if values:
            print(f"  {key:36} {statistics.median(values):8.3f} {min(values):8.3f} {max(values):8.3f}")


if __name__ == "__main__":
    main()
