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
    def __init__(self, port: int, tls=None) -> None:
        self.port = port
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        self._verify = tls.client_context() if tls else True

    def token(self, user: str, **claims) -> str:
        return mint_token(SECRET, {"sub": user, "healthUnitTaxId": "t1", "roles": ["attendant"], **claims}, 3600)

    @property
    def service_token(self) -> str:
        return mint_token(SECRET, {"sub": "backbone", "roles": ["service"]}, 3600)

    def publish(self, event: str, rooms: list[str], **data) -> dict:
        token = self.service_token
        answer = httpx.post(f"{self.url}/v1/publish", json={"event": event, "tenant": "t1", "rooms": rooms,
                                                             "data": data},
                            headers={"authorization": f"Bearer {token}"}, verify=self._verify)
        assert answer.status_code == 200, answer.text
        return answer.json()


def start_rtserver(folder, allowed_origins: list[str], tls=None, deflate: bool = False,
                   ) -> tuple[subprocess.Popen, RunningServer]:
    """``rtserver serve`` on a free port (fast presence timers for the pages); ``tls``: its
    ``tests.support.tls.TlsFiles`` (then on https); ``deflate``: permessage-deflate on."""
    config = folder / "rtserver.toml"
    tls_keys = f'tls_cert_file = "{tls.cert_file}"\ntls_key_file = "{tls.key_file}"' if tls else ""
    tls_keys += f"\npermessage_deflate = {str(deflate).lower()}"
    config.write_text(f"""
[server]
host = "127.0.0.1"
port = 0
allowed_origins = {json.dumps(allowed_origins)}
{tls_keys}
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
        if match := re.search(r"listening on https?://127.0.0.1:(\d+)", line):
            port = int(match.group(1))
    assert port, "rtserver did not start"
    threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
    return process, RunningServer(port, tls)


def run_in_browser(body, env: dict[str, str] | None = None) -> None:
    """Run ``body(page)`` in a thread of its own with a fresh headless Chromium page;
    ``env``: more of Chromium's environment (its ``HOME``: the CAs it trusts).

    Playwright's sync API keeps an event loop on the thread that starts it; on pytest's
    own thread that loop would outlive the test and break every Trio test after it."""
    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium is missing: scripts/install-test-deps installs Debian's chromium")
    outcome: list[BaseException] = []

    def in_thread() -> None:
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
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"],
                                                     env={**os.environ, **(env or {})})
                try:
                    body(browser.new_context(viewport={"width": 1280, "height": 800}).new_page())
                finally:
                    browser.close()
            finally:
                playwright.stop()
        except BaseException as exc:  # re-raised on pytest's thread
            outcome.append(exc)

    worker = threading.Thread(target=in_thread)
    worker.start()
    worker.join()
    if outcome:
        raise outcome[0]


def in_browser(test):
    """Run ``test(page, ...)`` with a fresh headless Chromium page (``run_in_browser``)."""
    import functools
    import inspect

    @functools.wraps(test)
    def run(*args, **kwargs):
        run_in_browser(lambda page: test(page, *args, **kwargs))

    # pytest must not see ``page`` as a fixture
    signature = inspect.signature(test)
    run.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
    return run
