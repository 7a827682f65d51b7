"""``rtserver serve --workers N``: one node per core, N processes on one port.

The supervisor starts N worker processes (``rtserver serve --worker-index i``). Each is a
whole node that binds its own ``SO_REUSEPORT`` listener on the same port, so the kernel
spreads new connections over N accept queues (not one queue every worker takes from),
and all share the Redis bus: an event published through any worker reaches the clients
of every one, and a client that reconnects may land on any. Worker ``i`` serves its
``/metrics`` on ``server.worker_metrics_port + i`` (the shared port answers from
whichever worker the connection landed on).

A worker that exits while the supervisor is not stopping (a crash, ``kill -9``) is
started again after ``RESTART_DELAY_S``; its clients reconnect to the others and resume
from their cursors. SIGTERM or SIGINT to the supervisor is passed to every worker, which
drains as a single node does (``server.drain_deadline_s``); one still running
``KILL_AFTER_S`` past that deadline is killed. The supervisor exits with 0 once all have.
SIGHUP is passed to every worker (each reads its TLS certificate again).
"""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Callable

import structlog
import trio

from rtserver.backends.config import Config

log = structlog.get_logger("rtserver.workers")

#: Seconds before a worker that exited on its own is started again.
RESTART_DELAY_S = 1.0
#: Seconds past the drain deadline after which a worker still running is killed.
KILL_AFTER_S = 5.0


def reserve_port(host: str) -> socket.socket:
    """A port for the workers when the configuration asks for any (port 0): a socket bound
    to it with ``SO_REUSEPORT`` and never listening, held so that no one else takes it."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    return sock


class Supervisor:
    """The process that keeps ``server.workers`` workers running on one port (see the module)."""

    def __init__(self, config: Config, command: Callable[[int, int], list[str]]) -> None:
        """``command(port, i)``: the command line of worker ``i`` serving ``port``."""
        self._config = config
        self._command = command
        self._workers: dict[int, trio.Process] = {}
        self._stopping = False

    async def run(self) -> int:
        cfg = self._config.server
        reserved = reserve_port(cfg.host) if cfg.port == 0 else None
        port = reserved.getsockname()[1] if reserved is not None else cfg.port
        try:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                async with trio.open_nursery() as nursery:
                    for i in range(cfg.workers):
                        nursery.start_soon(self._keep, port, i)
                    log.info("workers_started", workers=cfg.workers, port=port)
                    async for signum in signals:
                        if signum == signal.SIGHUP:  # each reloads its TLS certificate
                            for process in list(self._workers.values()):
                                process.send_signal(signal.SIGHUP)
                            continue
                        await self._stop()
                        break
        finally:
            if reserved is not None:
                reserved.close()
        return 0

    async def _keep(self, port: int, i: int) -> None:
        """Worker ``i``, started again whenever it exits while not stopping."""
        while not self._stopping:
            process = await trio.lowlevel.open_process(self._command(port, i), stdin=subprocess.DEVNULL)
            self._workers[i] = process
            log.info("worker_spawned", worker=i, pid=process.pid)
            code = await process.wait()
            del self._workers[i]
            if self._stopping:
                return
            log.warning("worker_exited", worker=i, pid=process.pid, code=code, restart_in_s=RESTART_DELAY_S)
            await trio.sleep(RESTART_DELAY_S)

    async def _stop(self) -> None:
        """Drain every worker; kill those that outlive the deadline."""
        self._stopping = True
        log.info("workers_draining", workers=len(self._workers))
        for process in list(self._workers.values()):
            process.send_signal(signal.SIGTERM)
        with trio.move_on_after(self._config.server.drain_deadline_s + KILL_AFTER_S):
            for process in list(self._workers.values()):
                await process.wait()
        for process in list(self._workers.values()):
            if process.returncode is None:
                log.warning("worker_killed", pid=process.pid)
                process.kill()
