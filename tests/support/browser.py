"""Headless Chromium against a real rtserver process, through a TCP proxy that can cut the network."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
import httpx
import pytest
from rtserver.backends.auth import mint_token


SECRET = "browser-secret-0123456789abcdef0123456789abcdef0123456789abcdef"


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class TcpProxy:
    """Forwards a local port to the server; ``cut`` drops every connection and refuses new
    ones for a while; ``block_websocket`` refuses WebSocket upgrades (a proxy that breaks them)."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.block_websocket = False
        self._down_until = 0.0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self, seconds: float) -> None:
        self._down_until = time.monotonic() + seconds
        with self._lock:
            for sock in list(self._open):
                _close(sock)
            self._open.clear()

    def _accept(self) -> None:
        while True:
            client, _ = self._listener.accept()
            if time.monotonic() < self._down_until:
                _close(client)
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            first = client.recv(65536)
            if self.block_websocket and b"upgrade: websocket" in first.lower():
                _close(client)
                return
            upstream = socket.create_connection(self.target)
        except OSError:
            _close(client)
            return
        with self._lock:
            self._open.update((client, upstream))
        upstream.sendall(first)
        threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
        self._pipe(client, upstream)

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class RunningServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def token(self, user: str, **claims) -> str:
        return mint_token(SECRET, {"sub": user, "healthUnitTaxId": "t1", "roles": ["attendant"], **claims}, 3600)

    def publish(self, event: str, rooms: list[str], **data) -> dict:
        token = mint_token(SECRET, {"sub": "backbone", "roles": ["service"]}, 3600)
        answer = httpx.post(f"{self.url}/v1/publish", json={"event": event, "tenant": "t1", "rooms": rooms,
                                                             "data": data},
                            headers={"authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text
        return answer.json()


def start_rtserver(folder, allowed_origins: list[str]) -> tuple[subprocess.Popen, RunningServer]:
    """``rtserver serve`` on a free port (fast presence timers for the pages)."""
    config = folder / "rtserver.toml"
    config.write_text(f"""
[server]
host = "127.0.0.1"
port = 0
allowed_origins = {json.dumps(allowed_origins)}
[auth]
hs256_secret = "{SECRET}"
[presence]
grace_s = 1.5
sweep_interval_s = 0.5
[connection]
heartbeat_s = 5
""")
    process = subprocess.Popen([sys.executable, "-m", "rtserver", "serve", "--config", str(config)],
                               stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    port = None
    deadline = time.monotonic() + 20
    while port is None and time.monotonic() < deadline:
        line = process.stderr.readline()
        if match := re.search(r"listening on http://127.0.0.1:(\d+)", line):
            port = int(match.group(1))
    assert port, "rtserver did not start"
    threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
    return process, RunningServer(port)


def in_browser(test):
    """Run ``test(page, ...)`` in a thread of its own with a fresh headless Chromium page.

    Playwright's sync API keeps an event loop on the thread that starts it; on pytest's
    own thread that loop would outlive the test and break every Trio test after it."""
    import functools

    @functools.wraps(test)
    def run(*args, **kwargs):
        if not os.path.exists(CHROMIUM):
            pytest.fail("Chromium is missing: scripts/install-test-deps installs Debian's chromium")
        outcome: list[BaseException] = []

        def body() -> None:
            from playwright.sync_api import sync_playwright

            try:
                # trio_asyncio (imported by the other tests) replaces the process's asyncio
                # policy; Playwright needs a plain loop, made while pytest's thread waits.
                policy = asyncio.get_event_loop_policy()
                asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
                try:
                    playwright = sync_playwright().start()
                finally:
                    asyncio.set_event_loop_policy(policy)
                try:
                    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                    try:
                        page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
                        test(page, *args, **kwargs)
                    finally:
                        browser.close()
                finally:
                    playwright.stop()
            except BaseException as exc:  # re-raised on pytest's thread
                outcome.append(exc)

        worker = threading.Thread(target=body)
        worker.start()
        worker.join()
        if outcome:
            raise outcome[0]

    # pytest must not see ``page`` as a fixture
    import inspect
    signature = inspect.signature(test)
    run.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
    return run
