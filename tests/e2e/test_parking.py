"""Idle clients of every socket transport wait in the parking without a task, and are
served as soon as something happens (actors/parking.py)."""

import trio
from trio_websocket import open_websocket_url

from rtserver.client import open_client
from tests.support.events import appointment
from tests.support.http_clients import open_sse
from tests.support.nodes import wait_until


async def test_idle_websocket_sse_and_socketio_clients_are_parked_and_still_served(server):
    async with (
        open_client(server.ws(), server.token("ws")) as rt,
        open_sse(server.http, server.token("sse"), rooms="professional:1") as sse,
        open_websocket_url(f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket") as sio,
    ):
        assert (await sse.next()).data["op"] == "hello"
        assert (await sio.get_message()).startswith("0{")  # open
        await sio.send_message('40/hub,{"token":"%s"}' % server.token("sio"))
        assert (await sio.get_message()).startswith("40/hub,")
        await rt.subscribe("professional:1")
        await sio.send_message('42/hub,1["subscribe",{"room":"professional:1"}]')
        assert (await sio.get_message()).startswith("43/hub,1")
        await wait_until(lambda: len(server.node.parking) == 3)
        await server.publish(appointment(7))
        with trio.fail_after(5):
            assert (await rt.next_event())["data"] == {"appointmentId": "7"}
            assert (await sse.next_event()).data["data"] == {"appointmentId": "7"}
            assert '"appointment.created"' in await sio.get_message()
        # A command wakes a parked connection, and it parks again once answered.
        assert (await rt.ping())["op"] == "pong"
        await wait_until(lambda: len(server.node.parking) == 3)
