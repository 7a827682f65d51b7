"""The console over TLS in headless Chromium, trusting the test's CA as a user's browser
trusts a CA of its own (an NSS database in its ``HOME``), not by ignoring certificate errors."""

from __future__ import annotations

import pytest

from tests.support.browser import run_in_browser, start_rtserver
from tests.support.tls import TlsFiles

TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    files = TlsFiles(folder)
    process, server = start_rtserver(folder, [], tls=files)
    yield files, server, folder
    process.terminate()
    process.wait(timeout=30)


def test_the_console_runs_on_wss_in_a_browser_that_trusts_the_ca(tls_server):
    files, server, folder = tls_server
    token = server.token("ana", presenceGroups=["attendants"])

    def console(page) -> None:
        page.goto(f"{server.url}/console/#token={token}&thread=100")
        page.wait_for_selector("#state.open", timeout=TIMEOUT_MS)
        assert page.inner_text("#transport") == "websocket"
        assert page.evaluate("location.protocol") == "https:"
        server.publish("thread:message", ["thread:100"], threadId="100", messageId="m-tls", senderId="bea",
                       text="over wss")
        page.wait_for_selector('#messages li:has-text("over wss")', timeout=TIMEOUT_MS)

    run_in_browser(console, env=files.trusted_by_chromium(folder / "home"))


def test_a_browser_without_the_ca_refuses_the_page(tls_server):
    files, server, folder = tls_server

    def refused(page) -> None:
        with pytest.raises(Exception, match="ERR_CERT_AUTHORITY_INVALID"):
            page.goto(f"{server.url}/console/")

    run_in_browser(refused, env={"HOME": str(folder / "empty-home")})
