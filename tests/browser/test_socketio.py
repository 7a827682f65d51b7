"""A page written like the seeds' ``useSocket`` / ``useAlerts`` hooks, on socket.io-client v4's
browser bundle (from npm), in headless Chromium, through a proxy the test cuts."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest

from tests.support.browser import in_browser

TIMEOUT_MS = 15_000
BUNDLE = Path(__file__).resolve().parents[1] / "js" / "node_modules" / "socket.io-client" / "dist" / "socket.io.esm.min.js"

#: The alerts page: ``io(URL + '/alerts', {auth: {token}})``, one list item per critical_alert,
#: the socket's state on <body>, a heartbeat every 30 s, as the seeds' hooks do.
PAGE = """<!doctype html><meta charset="utf-8"><ul id="alerts"></ul>
<script type="module">
import { io } from "./socket.io.esm.min.js";
const params = new URLSearchParams(location.hash.slice(1));
const socket = io(params.get("url") + "/alerts", {
  auth: { token: params.get("token") },
  transports: (params.get("transports") || "websocket,polling").split(","),
  withCredentials: params.get("credentials") === "1",
  reconnectionDelay: 200, reconnectionDelayMax: 1000,
});
socket.io.on("open", () => {
  socket.io.engine.on("upgrade", (transport) => { document.body.dataset.transport = transport.name; });
});
socket.on("connect", () => {
  document.body.dataset.state = "connected";
  document.body.dataset.recovered = String(socket.recovered);
  document.body.dataset.connects = String(Number(document.body.dataset.connects || 0) + 1);
});
socket.on("disconnect", () => { document.body.dataset.state = "disconnected"; });
socket.on("connect_error", (error) => { document.body.dataset.error = `${error.message} ${error.data?.code}`; });
socket.on("critical_alert", (alert) => {
  const item = document.createElement("li");
  item.textContent = alert.id;
  document.getElementById("alerts").append(item);
});
setInterval(() => socket.emit("heartbeat"), 30000);
</script>"""


@pytest.fixture(scope="module")
def app_url(tmp_path_factory) -> str:
    """The page and the bundle served by a plain HTTP server on loopback, as the app's own
    server would (Chromium keeps pages it did not load from a local address away from one)."""
    folder = tmp_path_factory.mktemp("sio-app")
    (folder / "index.html").write_text(PAGE)
    (folder / "socket.io.esm.min.js").write_bytes(BUNDLE.read_bytes())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def open_page(page, app_url: str, proxy, token: str, **options: str) -> None:
    extra = "".join(f"&{name}={value}" for name, value in options.items())
    page.goto(f"{app_url}/index.html#url=http://127.0.0.1:{proxy.port}&token={token}{extra}")


def alert_ids(page) -> list[str]:
    return page.eval_on_selector_all("#alerts li", "items => items.map(item => item.textContent)")


@in_browser
def test_a_seed_alerts_page_gets_alerts_and_after_a_network_cut_each_missed_one_once(page, app_url, server, proxy):
    open_page(page, app_url, proxy, server.token("ana"))
    page.wait_for_selector("body[data-state=connected]", state="attached", timeout=TIMEOUT_MS)
    assert page.eval_on_selector("body", "b => b.dataset.recovered") == "false"
    server.publish("critical_alert", ["tenant:t1"], id="a1", patientId="p1", severity="high")
    page.wait_for_selector('#alerts li:has-text("a1")', timeout=TIMEOUT_MS)
    proxy.cut(3)
    page.wait_for_selector("body[data-state=disconnected]", state="attached", timeout=TIMEOUT_MS)
    server.publish("critical_alert", ["tenant:t1"], id="a2", patientId="p1", severity="high")
    server.publish("appointment.created", ["tenant:t1"], appointmentId="x")  # not carried by /alerts
    server.publish("critical_alert", ["tenant:t1"], id="a3", patientId="p2", severity="low")
    page.wait_for_selector("body[data-state=connected][data-connects='2']", state="attached",
                           timeout=3_000 + TIMEOUT_MS)
    assert page.eval_on_selector("body", "b => b.dataset.recovered") == "true"
    page.wait_for_selector('#alerts li:has-text("a3")', timeout=TIMEOUT_MS)
    server.publish("critical_alert", ["tenant:t1"], id="a4", patientId="p3", severity="low")
    page.wait_for_selector('#alerts li:has-text("a4")', timeout=TIMEOUT_MS)
    assert alert_ids(page) == ["a1", "a2", "a3", "a4"]


@in_browser
def test_a_refused_token_reaches_the_page_as_connect_error_with_its_code(page, app_url, server, proxy):
    open_page(page, app_url, proxy, "not-a-token")
    page.wait_for_selector("body[data-error]", state="attached", timeout=TIMEOUT_MS)
    error = page.eval_on_selector("body", "b => b.dataset.error")
    assert error.startswith("invalid token") and error.endswith(" 4401"), error


@in_browser
def test_a_page_of_another_origin_polls_with_credentials_then_upgrades(page, app_url, server, proxy):
    """socket.io-client's default transports with ``withCredentials``, as a page of a Socket.IO
    server configured with ``cors: {credentials: true}`` connects: the browser reads the
    cross-origin polling answers only if they allow credentials."""
    open_page(page, app_url, proxy, server.token("ana"), transports="polling,websocket", credentials="1")
    page.wait_for_selector("body[data-state=connected]", state="attached", timeout=TIMEOUT_MS)
    page.wait_for_selector("body[data-transport=websocket]", state="attached", timeout=TIMEOUT_MS)
    server.publish("critical_alert", ["tenant:t1"], id="a1", patientId="p1", severity="high")
    page.wait_for_selector('#alerts li:has-text("a1")', timeout=TIMEOUT_MS)
