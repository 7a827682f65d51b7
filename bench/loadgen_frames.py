"""What peerbench's subscriber process spends on each server's frames, the server taken out.

peerbench measures a big room's latency with one Node process that reads every
subscriber's socket. At 5,000 subscribers that process is the slowest part: the servers
write the 5,000 frames of an event faster than it reads them, so a recipient's latency is
mostly how long the load generator takes to reach its frame, and frames that cost it more
to read score a higher latency whoever sends them. This benchmark sends the same events,
at the same pace, from one replay server (``bench/loadgen_frames_server.js``, Node, pinned
to CPU 0 as peerbench pins servers) to peerbench's own subscriber process
(``loadgen/sub.js``, pinned to CPU 1), in the frame shapes of nchan and of rtserver, and
records what the load generator reports: latency percentiles, and its CPU per frame.

Shapes (the protocol names are peerbench's subscriber modes):

- ``nchan``: the payload alone, nothing before the first event (``raw``);
- ``nchan-env``: the payload in rtserver's ``evt`` envelope, nchan's handshake (``raw``);
- ``rtserver``: rtserver's ``hello``, the client's ``sub`` answered by ``ack``, ``evt``
  frames (``json-sub``: how ``bench/peerbench/rtserver.py`` connects);
- ``rtserver-url``: rtserver's ``hello`` with the room joined in the URL, ``evt`` frames
  (``raw-welcome``).

rtserver's frames are captured from a node started here (one subscriber of each kind, one
publish), so they are what a node sends, byte for byte but for the ids.

    .venv/bin/python bench/loadgen_frames.py --shapes nchan,rtserver --reps 8
    (needs peerbench set up: PEERBENCH, default ../shared/peerbench, and its setup.sh run)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile

import httpx
import trio
from stack import ROOT, SECRET, stack
from trio_websocket import open_websocket_url

from rtserver.backends.auth import mint_token

SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "loadgen_frames_server.js")
PEERBENCH = os.environ.get("PEERBENCH", os.path.join(ROOT, "..", "shared", "peerbench"))
NODE = os.environ.get("PEERBENCH_NODE", "node")
SUB_FRAME = '{"op":"sub","room":"probe:bench","ref":1}'
#: The payload the node is asked to publish while its frames are captured: found again in
#: the ``evt`` frame, it splits the envelope into what goes before and after a payload.
MARKER = {"t": 0, "s": 0, "p": "marker"}
PROTOCOL = {"nchan": "raw", "nchan-env": "raw", "rtserver": "json-sub", "rtserver-url": "raw-welcome"}


async def capture() -> dict[str, str]:
    """rtserver's frames for a subscriber of ``probe:bench``: ``hello_sub`` and ``ack`` (one
    that sends ``sub``), ``hello_url`` (one that names the room in its URL), and the ``evt``
    envelope around a payload (``prefix``, ``suffix``)."""
    async with stack([False]) as nodes:
        port = nodes.ports[0]
        staff = mint_token(SECRET, {"sub": "bench-sub-0", "healthUnitTaxId": "t1", "roles": ["attendant"]})
        service = mint_token(SECRET, {"sub": "bench-pub", "roles": ["service"]})
        url = f"ws://127.0.0.1:{port}/hub/ws?access_token={staff}"
        async with open_websocket_url(url) as by_sub, open_websocket_url(url + "&rooms=probe:bench") as by_url:
            frames = {"hello_sub": await by_sub.get_message()}
            await by_sub.send_message(SUB_FRAME)
            frames["ack"] = await by_sub.get_message()
            frames["hello_url"] = await by_url.get_message()
            async with httpx.AsyncClient() as http:
                answer = await http.post(
                    f"http://127.0.0.1:{port}/v1/publish", headers={"authorization": f"Bearer {service}"},
                    json={"event": "rt.probe", "tenant": "t1", "rooms": ["probe:bench"], "data": MARKER})
                answer.raise_for_status()
            evt = await by_sub.get_message()
            if await by_url.get_message() != evt:
                raise RuntimeError("the two subscribers got different frames")
    frames["prefix"], frames["suffix"] = evt.split(json.dumps(MARKER, separators=(",", ":")))
    return frames


def shape_file(folder: str, shape: str, frames: dict[str, str], size: int) -> str:
    """The replay server's description of ``shape`` (see its header), written to ``folder``."""
    envelope = shape != "nchan"
    description = {
        "hello": {"rtserver": frames["hello_sub"], "rtserver-url": frames["hello_url"]}.get(shape),
        "ack": frames["ack"] if shape == "rtserver" else None,
        "prefix": frames["prefix"] if envelope else "",
        "suffix": frames["suffix"] if envelope else "",
        "size": size,
    }
    path = os.path.join(folder, f"{shape}.json")
    with open(path, "w") as f:
        json.dump(description, f)
    return path


def pinned(cpu: int):
    return lambda: os.sched_setaffinity(0, {cpu})


def run(shape: str, shape_path: str, port: int, args) -> dict:
    """One run: the replay server and peerbench's subscriber process; its result line."""
    server = subprocess.Popen([NODE, SERVER, str(port), shape_path, str(args.rate), str(args.events)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=pinned(0))
    sub = None
    try:
        server.stdout.readline()
        sub = subprocess.Popen(
            [NODE, "--max-semi-space-size=32", os.path.join(PEERBENCH, "loadgen", "sub.js"),
             "--url", f"ws://127.0.0.1:{port}/hub/ws", "--n", str(args.n), "--m", str(args.events),
             "--proto", PROTOCOL[shape], "--epoch", "0", "--sub-frame", SUB_FRAME, "--sub-ack", '"op":"ack"'],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=pinned(1))
        ready = json.loads(sub.stdout.readline())
        if ready.get("subscribed") != args.n:
            raise RuntimeError(f"{shape}: not every subscriber joined: {ready}")
        sub.stdin.write("go\n")
        sub.stdin.flush()
        server.stdin.write("start\n")
        server.stdin.flush()
        for line in sub.stdout:
            result = json.loads(line)
            if result.get("event") == "result":
                return result
        raise RuntimeError(f"{shape}: the subscriber process ended without a result")
    finally:
        if sub is not None:
            sub.kill()
            sub.wait()
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="nchan,rtserver", help=f"comma-separated, of {', '.join(PROTOCOL)}")
    parser.add_argument("--reps", type=int, default=4, help="runs of each shape, interleaved")
    parser.add_argument("-n", type=int, default=5000, help="subscribers")
    parser.add_argument("--rate", type=float, default=8, help="events/s")
    parser.add_argument("--events", type=int, default=80)
    parser.add_argument("--size", type=int, default=200, help="payload bytes, as peerbench's --size")
    parser.add_argument("--port", type=int, default=19100, help="first port (one per run)")
    parser.add_argument("--out", help="a JSON line per run appended here")
    args = parser.parse_args()
    shapes = args.shapes.split(",")
    if unknown := set(shapes) - set(PROTOCOL):
        parser.error(f"unknown shapes: {', '.join(sorted(unknown))}")
    frames = trio.run(capture)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="rt-frames-") as folder:
        paths = {shape: shape_file(folder, shape, frames, args.size) for shape in shapes}
        port = args.port
        for rep in range(args.reps):
            for shape in shapes:
                result = run(shape, paths[shape], port, args)
                port += 1
                received = result["received"]
                lat = result["lat"]
                row = {"shape": shape, "rep": rep, "n": args.n, "rate": args.rate, "size": args.size,
                       "p50_ms": lat["p50_us"] / 1e3, "p95_ms": lat["p95_us"] / 1e3, "p99_ms": lat["p99_us"] / 1e3,
                       "lg_user_us_per_frame": result["cpu_user_s"] / received * 1e6,
                       "lg_sys_us_per_frame": result["cpu_sys_s"] / received * 1e6,
                       "received": received, "expected": result["expected_total"], "bad_frames": result["bad_frames"]}
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(row) + "\n")
    print(f"\n{'shape':13} runs  p50 / p95 / p99 (ms)      load generator µs per frame (user + sys)")
    for shape in shapes:
        mine = [r for r in rows if r["shape"] == shape]

        def median(key: str, rs: list[dict] = mine) -> float:
            return statistics.median(r[key] for r in rs)

        print(f"{shape:13} {len(mine):4}  {median('p50_ms'):5.1f} / {median('p95_ms'):5.1f} / {median('p99_ms'):5.1f}"
              f"     {median('lg_user_us_per_frame'):.2f} + {median('lg_sys_us_per_frame'):.2f}")


if __name__ == "__main__":
    main()
