"""Headless Chromium against a real rtserver process, through a TCP proxy that can cut the network."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
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
