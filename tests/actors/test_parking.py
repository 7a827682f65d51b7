"""A quiet WebSocket connection waits in the parking without a task (actors/parking.py)."""

import trio
import trio.testing

from protocol.errors import CloseCode
from protocol.states import ConnectionState
from tests.support.actor_harness import config, staff, start_harness
from tests.support.metrics import metric_value


def task_count() -> int:
    """How many tasks this run has."""
    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(child) for nursery in task.child_nurseries for child in nursery.child_tasks)
    return count(trio.lowlevel.current_root_task())


async def test_quiet_connections_have_no_task_and_wake_when_their_client_speaks(nursery, autojump_clock):
    h = await start_harness(nursery, config(connection={"idle_timeout_s": 0}))
    await trio.testing.wait_all_tasks_blocked()
    before = task_count()
    clients = [await h.connect(staff(f"u{i}")) for i in range(5)]
    await trio.testing.wait_all_tasks_blocked()
    # Each test client is a plain socket read by this test's task: the node's side of five
    # idle connections adds no task at all.
    assert task_count() == before
    assert len(h.services.parking) == 5
    assert {c.connection.state for c in clients} == {ConnectionState.PARKED}
    for client in clients:
        await client.send({"op": "sub", "room": "professional:1", "ref": 1})
        assert (await client.recv())["op"] == "ack"
    await h.publish(["professional:1"], 1)
    assert [(await c.recv())["data"]["appointmentId"] for c in clients] == ["1"] * 5
    await trio.testing.wait_all_tasks_blocked()
    assert task_count() == before and len(h.services.parking) == 5


async def test_a_connection_told_to_close_as_the_parking_resumes_it_runs_once_and_ends(nursery, autojump_clock):
    """Its socket is readable (or its deadline came), and before its resumed task runs the
    writer finds the socket broken or full and tells it to close, which wakes it again. It
    is resumed once and ends with that reason: no second run of a connection on its way."""
    h = await start_harness(nursery, config(connection={"idle_timeout_s": 0}))
    client = await h.connect(staff("u"))
    await trio.testing.wait_all_tasks_blocked()
    connection = client.connection
    h.services.parking.wake(connection)  # what a readable socket does
    connection.slow_consumer()  # still parked: its resumed task has not run yet
    with trio.fail_after(5):
        assert await client.wait_closed() == CloseCode.SLOW_CONSUMER.code
    await trio.testing.wait_all_tasks_blocked()
    assert metric_value(h.metrics.internal_errors, where="websocket") == 0
    assert not len(h.services.parking)


async def test_a_parked_connection_whose_token_expires_is_closed_with_4100(nursery, autojump_clock):
    h = await start_harness(nursery, config(connection={"idle_timeout_s": 0}))
    expiring, staying = await h.connect(staff("expiring", exp_in=120)), await h.connect(staff("staying"))
    with trio.fail_after(200):
        assert await expiring.wait_closed() == 4100
    await staying.send({"op": "ping", "ref": 1})
    assert (await staying.recv())["op"] == "pong"


async def test_parked_connections_end_when_the_node_stops(autojump_clock):
    async with trio.open_nursery() as node_nursery:
        h = await start_harness(node_nursery)
        clients = [await h.connect(staff(f"u{i}", groups=("g",))) for i in range(3)]
        await trio.testing.wait_all_tasks_blocked()
        assert len(h.services.parking) == 3 and len(h.services.connections) == 3
        node_nursery.cancel_scope.cancel()
    # Each ended as a connection with a task does: out of the node, its socket closed (the
    # writer stopped with the node, so without a close frame).
    assert not h.services.connections
    with trio.fail_after(5):
        assert [await c.wait_closed() for c in clients] == [1006] * 3
