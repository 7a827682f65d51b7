"""A page of another origin uses the HTTP transports with native browser APIs: a native
``EventSource`` and ``fetch`` (with a preflight) work from an origin ``server.allowed_origins``
names, and a page of any other origin gets no access."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from tests.support.browser import in_browser, start_rtserver

TIMEOUT_MS = 15_000

PAGE = """<!doctype html><meta charset="utf-8"><pre id="log"></pre><script>
const log = (line) => document.getElementById("log").textContent += line + "\\n";
const source = new EventSource(SERVER + "/hub/sse?rooms=professional:1&access_token=" + TOKEN);
source.onmessage = (message) => log("sse " + JSON.parse(message.data).op);
source.onerror = () => log("sse error");
fetch(SERVER + "/hub/commands", {method: "POST", body: JSON.stringify({op: "ping", ref: 7}),
      headers: {"authorization": "Bearer " + TOKEN, "content-type": "application/json"}})
  .then((answer) => answer.json()).then((frame) => log("commands " + frame.op), () => log("commands error"));
</script>"""


class PageServer:
    """A plain HTTP server of its own origin (another port) that serves ``html``."""

    def __init__(self) -> None:
        self.html = ""
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                body = owner.html.encode()
                self.send_response(200)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """The node (it allows the first page server's origin only) and the two pages' origins."""
    allowed, refused = PageServer(), PageServer()
    process, server = start_rtserver(tmp_path_factory.mktemp("cors"), [allowed.origin])
    allowed.html = refused.html = PAGE.replace("SERVER", json.dumps(server.url)).replace(
        "TOKEN", json.dumps(server.token("ana")))
    yield server, allowed.origin, refused.origin
    for page_server in (allowed, refused):
        page_server.close()
    process.terminate()
    process.wait(timeout=30)


@in_browser
def test_a_native_event_source_and_fetch_work_from_an_allowed_origin(page, pages):
    server, allowed, _ = pages
    page.goto(allowed)
    page.wait_for_function("document.getElementById('log').textContent.includes('commands pong')", timeout=TIMEOUT_MS)
    page.wait_for_function("document.getElementById('log').textContent.includes('sse hello')", timeout=TIMEOUT_MS)
    server.publish("appointment.created", ["professional:1"], appointmentId="a1")
    page.wait_for_function("document.getElementById('log').textContent.includes('sse evt')", timeout=TIMEOUT_MS)


@in_browser
def test_a_page_of_another_origin_gets_no_access(page, pages):
    _, _, refused = pages
    page.goto(refused)
    page.wait_for_function("document.getElementById('log').textContent.includes('commands error')",
                           timeout=TIMEOUT_MS)
    page.wait_for_function("document.getElementById('log').textContent.includes('sse error')", timeout=TIMEOUT_MS)
    assert "sse hello" not in page.inner_text("#log")
