"""Real-browser tests: Debian's Chromium (headless) driven by Playwright with ``executable_path``
(no browser download), a real ``rtserver serve`` process, and a TCP proxy between page and
server that the test controls (cutting it closes open WebSockets too, which Chromium's
offline emulation does not)."""

from __future__ import annotations

import pytest
from tests.support.browser import RunningServer, start_rtserver
from tests.support.net import TcpProxy


@pytest.fixture(scope="module")
def rtserver_process(tmp_path_factory):
    process, server = start_rtserver(tmp_path_factory.mktemp("browser"), ["*"])
    yield server
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def server(rtserver_process) -> RunningServer:
    return rtserver_process


@pytest.fixture
def proxy(server) -> TcpProxy:
    return TcpProxy(server.port)


