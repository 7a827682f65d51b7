"""Processes for the benchmarks: a redis-server and ``rtserver serve`` nodes on free
ports, in a temporary folder, stopped (and the folder removed) on exit."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

from tests.support.net import free_port, wait_port

SECRET = "bench-secret-0123456789abcdef0123456789abcdef"


@dataclass
class Stack:
    folder: str
    redis_url: str | None = None
    redis_pid: int | None = None
    ports: list[int] = field(default_factory=list)  # the nodes', in start order
    pids: list[int] = field(default_factory=list)


@contextlib.asynccontextmanager
async def stack(nodes: list[bool], toml: str = "", root: str | None = None) -> AsyncIterator[Stack]:
    """One node per item of ``nodes`` (True: on the shared Redis, started when any is;
    False: on the memory bus); ``toml`` is added to their configuration; ``root``: the
    checkout the nodes run from (this one by default)."""
    folder = tempfile.mkdtemp(prefix="rt-bench-")
    config = os.path.join(folder, "rtserver.toml")
    with open(config, "w") as f:
        f.write(f'[auth]\nhs256_secret = "{SECRET}"\n[server]\nhost = "127.0.0.1"\n{toml}\n')
    procs: list[subprocess.Popen] = []
    result = Stack(folder)
    try:
        if any(nodes):
            redis_port = free_port()
            procs.append(subprocess.Popen(
                ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", folder], stdout=subprocess.DEVNULL))
            await wait_port(redis_port)
            result.redis_pid = procs[-1].pid
            result.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        serve = [sys.executable, "-m", "rtserver", "serve", "--config", config]
        for on_redis in nodes:
            port = free_port()
            extra = ["--redis-url", result.redis_url] if on_redis else []
            proc = subprocess.Popen(serve + ["--port", str(port), *extra], env={**os.environ, "PYTHONPATH": root or ROOT},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(proc)
            result.ports.append(port)
            result.pids.append(proc.pid)
        for port in result.ports:
            await wait_port(port)
        yield result
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
