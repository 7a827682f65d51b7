"""OpenTelemetry traces end to end: real ``rtserver`` processes (relay, nodes, the CLI) export
OTLP/HTTP protobuf to a local collector that decodes it (``tests.support.otlp``); the
producer's ``traceparent`` (an outbox column, the CLI's ``--traceparent``) is the root. A
producer's ``traceparent`` is untrusted input: a property test feeds it anything."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from contextlib import asynccontextmanager

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from rtserver.backends.auth import mint_token
from rtserver.backends.config import TracingConfig
from rtserver.backends.tracing import Tracing
from rtserver.client import open_client
from tests.support.net import free_port, wait_port
from tests.support.nodes import SECRET
from tests.support.otlp import Collector, Span

#: The producer's span: its trace is the one every process continues.
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PRODUCER_SPAN = "b7ad6b7169203331"
PRODUCER = f"00-{TRACE_ID}-{PRODUCER_SPAN}-01"
ROOM = "schedule:zq9931"


def staff_token() -> str:
    return mint_token(SECRET, {"sub": "u1", "healthUnitTaxId": "t1", "roles": ["attendant"]})


def exporting_to(collector: Collector, service: str, **more: str) -> dict[str, str]:
    """The environment of a process that traces to ``collector`` as ``service``."""
    return {**os.environ, "RTSERVER_TRACING__ENABLED": "true", "OTEL_SERVICE_NAME": service,
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.traces_url, "OTEL_BSP_SCHEDULE_DELAY": "50", **more}


@asynccontextmanager
async def processes(*commands: tuple[list[str], dict[str, str], int | None]):
    """``rtserver`` processes (arguments, environment, port to wait for), stopped with SIGTERM."""
    started = []
    try:
        for args, env, port in commands:
            started.append(await trio.lowlevel.open_process(
                [sys.executable, "-m", "rtserver", *args], env=env, stdout=subprocess.DEVNULL))
            if port:
                await wait_port(port)
        yield
    finally:
        for proc in started:
            proc.terminate()
        with trio.fail_after(25):
            for proc in started:
                await proc.wait()


def only(spans: list[Span], **match) -> Span:
    [span] = [s for s in spans if all(getattr(s, key) == value for key, value in match.items())]
    return span


async def test_an_outbox_row_through_the_relay_and_two_nodes_is_one_trace(outbox, nursery, tmp_path):
    collector = Collector()
    await nursery.start(collector.serve)
    config = tmp_path / "rt.toml"
    config.write_text(f'[auth]\nhs256_secret = "{SECRET}"\n[bus]\nredis_url = "{outbox.redis_url}"\n'
                      f'[outbox]\npostgres_dsn = "{outbox.dsn}"\npoll_interval_s = 0.2\n')
    ports = {"node-a": free_port(), "node-b": free_port()}
    nodes = [(["serve", "--config", str(config), "--port", str(port)], exporting_to(collector, name), port)
             for name, port in ports.items()]
    relay = (["relay", "--config", str(config)], exporting_to(collector, "relay"), None)
    async with processes(*nodes, relay), trio.open_nursery() as subscribers:
        clients = [await subscribers.start(_subscriber, port) for port in ports.values()]
        conn = await outbox.connect()
        event_id = await outbox.write(conn, rooms=[ROOM], traceparent=PRODUCER, appointmentId="a1")
        for client in clients:
            with trio.fail_after(20):
                evt = await client.receive()
            assert evt["id"] == event_id
        spans = await collector.wait_for(lambda spans: len(
            [s for s in spans if s.name == "rt.socket.write" and s.trace_id == TRACE_ID]) == 2)
        subscribers.cancel_scope.cancel()

    # Other traces are the nodes' own events (presence), read with tracing on: roots of their own.
    spans = [span for span in spans if span.trace_id == TRACE_ID]
    relayed = only(spans, name="rt.outbox.relay")
    assert (relayed.service, relayed.kind, relayed.parent_id) == ("relay", "producer", PRODUCER_SPAN)
    assert relayed.attributes["rt.event_id"] == event_id
    for node in ports:
        read = only(spans, name="rt.bus.read", service=node)
        fanout = only(spans, name="rt.room.fanout", service=node)
        write = only(spans, name="rt.socket.write", service=node)
        assert (read.kind, read.parent_id) == ("consumer", relayed.span_id)
        assert (fanout.parent_id, write.parent_id) == (read.span_id, read.span_id)
        assert fanout.attributes == {"rt.room_kind": "schedule", "rt.event_type": "appointment.created",
                                     "rt.recipients": 1}
        assert write.attributes == {"rt.recipients": 1}
    assert len(spans) == 7, [span.name for span in spans]
    assert not any(ROOM.partition(":")[2] in str(value) for span in spans for value in span.attributes.values()), \
        "a room's id never goes into a span"


async def _subscriber(port: int, *, task_status=trio.TASK_STATUS_IGNORED):
    """A client of ``ROOM`` on the node at ``port``, past its snapshot; its events go
    into the channel handed back."""
    send, receive = trio.open_memory_channel(16)
    async with open_client(f"ws://127.0.0.1:{port}/hub/ws", staff_token()) as client:
        await client.subscribe(ROOM)
        assert (await client.next_event())["event"] == "schedule.snapshot"
        task_status.started(receive)
        while True:
            await send.send(await client.next_event())


async def test_a_cli_publish_is_one_trace_with_the_node_and_a_sampled_parent_wins_at_ratio_zero(nursery, tmp_path):
    """At ``sample_ratio`` 0 nothing the processes start is recorded, but a producer's sampled
    ``traceparent`` is: its trace has the CLI's span, the node's publish, read, fan-out and write."""
    collector = Collector()
    await nursery.start(collector.serve)
    config = tmp_path / "rt.toml"
    config.write_text(f'[auth]\nhs256_secret = "{SECRET}"\n[tracing]\nsample_ratio = 0.0\n')
    port = free_port()
    node = (["serve", "--config", str(config), "--port", str(port)], exporting_to(collector, "node"), port)
    async with processes(node), open_client(f"ws://127.0.0.1:{port}/hub/ws", staff_token()) as client:
        for data, traceparent in (('{"appointmentId":"a1"}', []), ('{"appointmentId":"a2"}', ["--traceparent", PRODUCER])):
            await trio.to_thread.run_sync(lambda: subprocess.run(
                [sys.executable, "-m", "rtserver", "publish", "--config", str(config), "--port", str(port),
                 "--event", "appointment.created", "--tenant", "t1", "--rooms", "tenant:t1", "--data", data,
                 *traceparent], env=exporting_to(collector, "cli"), check=True, capture_output=True))
            with trio.fail_after(10):
                assert (await client.next_event())["data"] == json.loads(data)
        # The sampled trace's last span is the sentinel: the first event's spans, had any been
        # recorded, were ended and exported before it.
        spans = await collector.wait_for(lambda spans: any(s.name == "rt.socket.write" for s in spans))

    assert {span.trace_id for span in spans} == {TRACE_ID}, [(s.service, s.name, s.trace_id) for s in spans]
    sent = only(spans, name="rt.publish.send")
    published = only(spans, name="rt.publish")
    read = only(spans, name="rt.bus.read")
    assert (sent.service, sent.kind, sent.parent_id) == ("cli", "client", PRODUCER_SPAN)
    assert (published.service, published.kind, published.parent_id) == ("node", "server", sent.span_id)
    assert read.parent_id == published.span_id
    assert only(spans, name="rt.room.fanout").parent_id == read.span_id
    assert only(spans, name="rt.socket.write").parent_id == read.span_id


def test_tracing_is_off_by_default_and_otel_sdk_disabled_turns_it_off(monkeypatch):
    assert not Tracing.for_config(TracingConfig(), "rtserver").enabled
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not Tracing.for_config(TracingConfig(enabled=True), "rtserver").enabled


TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")  # flags: sampled, random (W3C level 2)


@given(parent=st.one_of(
    st.text(max_size=300),
    st.from_regex(r"\A[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-00\Z"),  # well formed (not sampled: nothing exported)
))
@settings(max_examples=300, deadline=None)
def test_any_producer_traceparent_gives_a_well_formed_span_and_a_valid_one_is_continued(parent):
    """A producer's ``traceparent`` is untrusted input: malformed, it starts a new trace;
    well formed, its trace goes on. Never an exception."""
    tracing = Tracing(TracingConfig(enabled=True, sample_ratio=0.0, endpoint="http://127.0.0.1:9/v1/traces"), "test")
    span = tracing.start("rt.publish", parent, "server")
    ours = tracing.traceparent(span)
    span.end()
    assert TRACEPARENT.fullmatch(ours)
    trace_id = parent.split("-")[1] if re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-00", parent) else None
    if trace_id and trace_id != "0" * 32 and parent.split("-")[2] != "0" * 16:
        assert ours.split("-")[1] == trace_id
    tracing.shutdown()
