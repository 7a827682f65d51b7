"""The console over TLS in headless Chromium, trusting the test's CA as a user's browser
trusts a CA of its own (an NSS database in its ``HOME``), not by ignoring certificate errors;
and Chromium's WebSocket with permessage-deflate, which it always offers."""

from __future__ import annotations

import pytest

from tests.support.browser import run_in_browser, start_rtserver
from tests.support.tls import TlsFiles

TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    files = TlsFiles(folder)
    process, server = start_rtserver(folder, [], tls=files, deflate=True)
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


#: In the page: a WebSocket of its own that publishes, once its hello came, a 2 KB event to
#: its room and resolves with what it negotiated and received.
WEBSOCKET_ROUND_TRIP = """async ([token, service]) => {
  const ws = new WebSocket(`wss://${location.host}/hub/ws?access_token=${token}&rooms=probe:1`);
  const notes = Array.from({length: 60}, (_, i) => `slot ${i} booked for patient ${i % 7}`).join('; ');
  return await new Promise((resolve, reject) => {
    ws.onerror = () => reject(new Error('websocket error'));
    ws.onmessage = async (message) => {
      const frame = JSON.parse(message.data);
      if (frame.op === 'hello') {
        await fetch('/v1/publish', {method: 'POST', headers: {authorization: `Bearer ${service}`,
          'content-type': 'application/json'}, body: JSON.stringify({event: 'rt.probe', tenant: 't1',
          rooms: ['probe:1'], data: {s: 1, p: notes}})});
      } else if (frame.op === 'evt') {
        resolve({extensions: ws.extensions, intact: frame.data.p === notes});
        ws.close();
      }
    };
  });
}"""


def test_a_browser_websocket_negotiates_deflate_and_reads_compressed_events(tls_server):
    files, server, folder = tls_server
    outcome = {}

    def round_trip(page) -> None:
        page.goto(f"{server.url}/")
        outcome.update(page.evaluate(WEBSOCKET_ROUND_TRIP, [server.token("ana"), server.service_token]))

    run_in_browser(round_trip, env=files.trusted_by_chromium(folder / "home-deflate"))
    assert outcome == {"extensions": "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
                       "intact": True}
