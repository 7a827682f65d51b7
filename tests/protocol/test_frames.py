import msgspec
import pytest
import wsproto.connection
import wsproto.events
from wsproto import ConnectionType

from protocol.errors import ReplyCode, ReplyError
from protocol.frames import JSON, MSGPACK, Ack, Emit, Evt, Hello, Ping, Sub, Unsub
from protocol.wsframes import close_frame, data_frame


def test_client_frames_of_the_wire_contract_decode():
    assert JSON.decode(b'{"op":"sub","room":"schedule:42","since":"7.e.1-0","ref":1}') == Sub(
        room="schedule:42", since="7.e.1-0", ref=1)
    assert JSON.decode(b'{"op":"unsub","room":"schedule:42","ref":2}') == Unsub(room="schedule:42", ref=2)
    assert JSON.decode(b'{"op":"emit","event":"typing:start","room":"thread:7","data":{},"ref":3}') == Emit(
        event="typing:start", room="thread:7", data={}, ref=3)
    assert JSON.decode(b'{"op":"ping"}') == Ping()


@pytest.mark.parametrize("raw, fragment", [
    (b'{"op":"nope"}', "op"),
    (b'{"op":"sub"}', "room"),
    (b'{"op":"sub","room":1}', "str"),
    (b'{"op":"sub","room":"a:b","extra":1}', "extra"),
    (b"not json", "JSON"),
])
def test_malformed_client_frames_are_reply_errors_that_say_why(raw, fragment):
    with pytest.raises(ReplyError) as info:
        JSON.decode(raw)
    assert info.value.code is ReplyCode.BAD_FRAME
    assert fragment.lower() in info.value.message.lower()


def test_server_frames_use_the_contract_keys_and_omit_absent_ones():
    evt = Evt(event="appointment.created", room="schedule:42", id="i1", ts=5, data={"a": 1}, cursor="c")
    assert msgspec.json.decode(JSON.encode(evt)) == {
        "op": "evt", "event": "appointment.created", "room": "schedule:42", "id": "i1", "ts": 5,
        "data": {"a": 1}, "cursor": "c"}
    ephemeral = Evt(event="thread:typing", room="thread:7", id="i2", ts=5, data={})
    assert "cursor" not in msgspec.json.decode(JSON.encode(ephemeral))
    assert msgspec.json.decode(JSON.encode(Ack(ref=1, room="r", recovered=True))) == {
        "op": "ack", "ref": 1, "room": "r", "recovered": True}
    hello = Hello(session="s", rooms=["tenant:t1"], heartbeat_s=30, ns="hub", user="u")
    assert msgspec.json.decode(JSON.encode(hello))["op"] == "hello"


def test_msgpack_carries_the_same_keys():
    evt = Evt(event="e", room="r", id="i", ts=1, data={"k": "v"}, cursor="c")
    assert msgspec.msgpack.decode(MSGPACK.encode(evt)) == msgspec.json.decode(JSON.encode(evt))
    assert MSGPACK.decode(msgspec.msgpack.encode({"op": "sub", "room": "schedule:1"})) == Sub(room="schedule:1")


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 200_000])
def test_shared_data_frames_parse_as_websocket_messages(size):
    client = wsproto.connection.Connection(ConnectionType.CLIENT)
    payload = b"x" * size
    client.receive_data(data_frame(payload) + data_frame(payload, binary=True))
    events = list(client.events())
    assert [type(e) for e in events] == [wsproto.events.TextMessage, wsproto.events.BytesMessage]
    assert events[0].data == payload.decode() and events[1].data == payload


def test_close_frames_carry_code_and_reason():
    client = wsproto.connection.Connection(ConnectionType.CLIENT)
    client.receive_data(close_frame(4001, "slow consumer"))
    (event,) = client.events()
    assert isinstance(event, wsproto.events.CloseConnection)
    assert (event.code, event.reason) == (4001, "slow consumer")
