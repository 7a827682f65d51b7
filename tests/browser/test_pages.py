"""The console and the wall dashboard in headless Chromium, through a proxy the test controls."""

from __future__ import annotations

import threading

import trio

from rtserver.client import open_client
from tests.support.browser import in_browser

TIMEOUT_MS = 15_000
#: rtclient.js's longest pause between two attempts (``backoffMaxMs``, full jitter): after
#: a network cut, the page may wait that long past the cut before its next attempt.
BACKOFF_MAX_MS = 15_000


def console_url(proxy, server, user="ana", transports=None) -> str:
    token = server.token(user, presenceGroups=["attendants"])
    extra = f"&transports={transports}" if transports else ""
    return f"http://127.0.0.1:{proxy.port}/console/#token={token}&thread=100{extra}"


def wait_state(page, state: str, timeout_ms: int = TIMEOUT_MS) -> None:
    page.wait_for_selector(f"#state.{state}", timeout=timeout_ms)


class Colleague:
    """A colleague on a WebSocket (the Python client) in a thread of its own, driven by steps."""

    def __init__(self, server, user: str) -> None:
        self.steps: list = []
        self.done = threading.Event()
        self._server, self._user = server, user
        self._thread = threading.Thread(target=trio.run, args=(self._run,), daemon=True)
        self._thread.start()

    async def _run(self) -> None:
        token = self._server.token(self._user, presenceGroups=["attendants"])
        async with open_client(f"ws://127.0.0.1:{self._server.port}/hub/ws", token) as client:
            await client.subscribe("thread:100")
            while not self.done.is_set():
                if self.steps:
                    event, room = self.steps.pop(0)
                    await client.emit(event, room)
                await trio.sleep(0.05)

    def emit(self, event: str, room: str | None = None) -> None:
        self.steps.append((event, room))

    def leave(self) -> None:
        self.done.set()
        self._thread.join(10)


@in_browser
def test_the_console_shows_a_colleague_online_away_typing_and_offline(page, server, proxy):
    page.goto(console_url(proxy, server))
    wait_state(page, "open")
    assert page.inner_text("#transport") == "websocket"
    bea = Colleague(server, "bea")
    try:
        page.wait_for_selector('#presence li[data-user="bea"][data-state="online"]', timeout=TIMEOUT_MS)
        bea.emit("presence:away")
        page.wait_for_selector('#presence li[data-user="bea"][data-state="away"]', timeout=TIMEOUT_MS)
        bea.emit("typing:start", "thread:100")
        page.wait_for_function("document.querySelector('#typing').textContent.includes('bea typing')",
                               timeout=TIMEOUT_MS)
        bea.emit("typing:stop", "thread:100")
        page.wait_for_function("document.querySelector('#typing').textContent === ''", timeout=TIMEOUT_MS)
    finally:
        bea.leave()
    page.wait_for_selector('#presence li[data-user="bea"][data-state="offline"]', timeout=TIMEOUT_MS)


@in_browser
def test_the_wall_dashboard_shows_the_schedule_and_its_live_changes(page, server, proxy):
    slots = [{"slotId": f"s{i}", "start": f"0{8 + i}:00", "status": "free"} for i in range(3)]
    server.publish("schedule.slots.generated", ["schedule:77"], scheduleId="77", date="2026-12-01", slots=slots)
    token = server.token("wall", roles=["admin"])
    page.goto(f"http://127.0.0.1:{proxy.port}/wall/#token={token}&schedule=77")
    page.wait_for_selector('.slot[data-slot="s2"][data-status="free"]', timeout=TIMEOUT_MS)  # from the snapshot
    server.publish("appointment.created", ["schedule:77"], appointmentId="a1", scheduleId="77", slotId="s1",
                   status="booked")
    page.wait_for_selector('.slot[data-slot="s1"][data-status="booked"]', timeout=TIMEOUT_MS)
    for i in range(12):  # a burst: merged by the server into a digest
        server.publish("schedule.slots.changed", ["schedule:77"], scheduleId="77", date="2026-12-01",
                       slotId=f"s{i % 3}", status="blocked" if i < 11 else "held")
    page.wait_for_selector("#digest[data-count]", timeout=TIMEOUT_MS)
    page.wait_for_selector('.slot[data-slot="s2"][data-status="held"]', timeout=TIMEOUT_MS)


@in_browser
def test_with_websocket_blocked_the_client_falls_back_to_sse_and_works(page, server, proxy):
    proxy.block_websocket = True
    page.goto(console_url(proxy, server, "caio"))
    page.wait_for_function("document.querySelector('#transport').textContent === 'sse'", timeout=TIMEOUT_MS)
    wait_state(page, "open")
    server.publish("thread:message", ["thread:100"], threadId="100", messageId="m-sse", senderId="bea",
                   text="over SSE")
    page.wait_for_selector('#messages li:has-text("over SSE")', timeout=TIMEOUT_MS)
    page.evaluate("window.rt.emit('presence:away')")
    page.wait_for_selector('#presence li[data-user="caio"][data-state="away"]', timeout=TIMEOUT_MS)


@in_browser
def test_after_5_s_without_network_each_event_missed_shows_exactly_once(page, server, proxy):
    page.goto(console_url(proxy, server, "duda"))
    wait_state(page, "open")
    server.publish("thread:message", ["thread:100"], threadId="100", messageId="before", senderId="bea",
                   text="before the cut")
    page.wait_for_selector('#messages li:has-text("before the cut")', timeout=TIMEOUT_MS)
    proxy.cut(5)
    wait_state(page, "reconnecting")
    texts = [f"while away {i}" for i in range(10)]
    for i, text in enumerate(texts):
        server.publish("thread:message", ["thread:100", "user:duda"] if i % 2 else ["thread:100"],
                       threadId="100", messageId=f"away-{i}", senderId="bea", text=text)
    wait_state(page, "open", timeout_ms=5_000 + BACKOFF_MAX_MS + TIMEOUT_MS)  # the cut, then one pause at most
    # published after the reconnect: a resume's repeats would come before it
    server.publish("thread:message", ["thread:100"], threadId="100", messageId="after", senderId="bea",
                   text="after the cut")
    page.wait_for_selector('#messages li:has-text("after the cut")', timeout=TIMEOUT_MS)
    shown = page.eval_on_selector_all("#messages li", "items => items.map(li => li.textContent)")
    assert [t for t in shown if "while away" in t] == [f"bea{t}" for t in texts]
    assert page.inner_text("#transport") == "websocket"
