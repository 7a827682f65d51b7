"""Engine.IO v4 and Socket.IO v5 packets (protocol/engineio.py, protocol/socketio.py): the
examples of the protocol documents, the bounds, the placeholder rules that the parser CVEs
broke, and properties over any input (a clean refusal, never another exception)."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import engineio, socketio
from protocol.engineio import EngineIOError
from protocol.socketio import MAX_ATTACHMENTS, PacketType, SocketIOError


# -- Engine.IO --------------------------------------------------------------------------
def test_engineio_packets_as_websocket_frames_carry_them():
    assert engineio.decode_packet("4hello") == engineio.Packet(engineio.PacketType.MESSAGE, "hello")
    assert engineio.decode_packet("2probe") == engineio.Packet(engineio.PacketType.PING, "probe")
    assert engineio.decode_packet(b"\x01\x02") == engineio.Packet(engineio.PacketType.MESSAGE, b"\x01\x02")
    assert engineio.encode_text(engineio.PacketType.PONG, "probe") == b"3probe"
    for bad in ("", "9", "x"):
        with pytest.raises(EngineIOError):
            engineio.decode_packet(bad)


def test_a_polling_payload_splits_on_the_record_separator_with_binary_as_base64():
    packets = engineio.decode_payload(b"4hello\x1e2\x1ebAQIDBA==", max_payload=1000)
    assert packets == [engineio.Packet(engineio.PacketType.MESSAGE, "hello"), engineio.Packet(engineio.PacketType.PING),
                       engineio.Packet(engineio.PacketType.MESSAGE, b"\x01\x02\x03\x04")]
    assert engineio.encode_payload([b"4hello", b"2"]) == b"4hello\x1e2"
    with pytest.raises(EngineIOError, match="over 10 bytes"):
        engineio.decode_payload(b"4" * 11, max_payload=10)
    with pytest.raises(EngineIOError, match="b<base64>"):
        engineio.decode_payload(b"b!!", max_payload=1000)
    with pytest.raises(EngineIOError, match="more than"):
        engineio.decode_payload(b"\x1e".join([b"3"] * (engineio.MAX_PACKETS_PER_PAYLOAD + 1)), max_payload=10**6)


def test_the_open_packet_carries_the_handshake():
    handshake = engineio.Handshake("abc", ["websocket"], 25000, 20000, 1000000)
    raw = engineio.open_packet(handshake)
    assert raw[:1] == b"0"
    assert json.loads(raw[1:]) == {"sid": "abc", "upgrades": ["websocket"], "pingInterval": 25000,
                                   "pingTimeout": 20000, "maxPayload": 1000000}


# -- Socket.IO --------------------------------------------------------------------------
def test_the_protocol_documents_examples_decode():
    assert socketio.decode("0") == socketio.Packet(PacketType.CONNECT)
    packet = socketio.decode('0/admin,{"token":"123"}')
    assert (packet.type, packet.namespace, packet.data) == (PacketType.CONNECT, "/admin", {"token": "123"})
    packet = socketio.decode('2/admin,12["bar"]')
    assert (packet.type, packet.namespace, packet.id, packet.data) == (PacketType.EVENT, "/admin", 12, ["bar"])
    assert socketio.decode("1/admin,") == socketio.Packet(PacketType.DISCONNECT, "/admin")
    packet = socketio.decode('3/admin,13["bar"]')
    assert (packet.type, packet.id, packet.data) == (PacketType.ACK, 13, ["bar"])
    packet = socketio.decode('51-["baz",{"_placeholder":true,"num":0}]')
    assert (packet.type, packet.attachments, packet.complete) == (PacketType.BINARY_EVENT, 1, False)
    socketio.attach(packet, b"\x01\x02\x03\x04")
    assert packet.complete and packet.data == ["baz", b"\x01\x02\x03\x04"]


def test_server_packets_encode_as_the_documents_show():
    assert socketio.encode(PacketType.CONNECT, "/admin", {"sid": "oSO0"}) == b'0/admin,{"sid":"oSO0"}'
    assert socketio.encode(PacketType.CONNECT_ERROR, "/", {"message": "Not authorized"}) == b'4{"message":"Not authorized"}'
    assert socketio.encode(PacketType.EVENT, "/", ["foo"]) == b'2["foo"]'
    assert socketio.encode(PacketType.ACK, "/admin", [], 13) == b"3/admin,13[]"
    assert socketio.encode(PacketType.DISCONNECT, "/admin") == b"1/admin,"


@pytest.mark.parametrize("text, fault", [
    ("", "type"), ("7", "type"), ('4{"message":"x"}', "servers only"),
    ('2{"a":1}', "non-empty array"), ("2[]", "non-empty array"), ("2[1]", "non-empty array"),
    ('0["x"]', "object"), ('1{"x":1}', "no payload"), ("3[]", "an id"), ('31{"a":1}', "array"),
    ("2" + "9" * 16 + '["x"]', "15 digits"), ('2/ad min,["x"]', "namespace"), ("2/" + "a" * 200 + ',["x"]', "namespace"),
    ('2["x"', "JSON"), ("2" + "[" * 40 + '"x"' + "]" * 40, "JSON"),
    ('5["x"]', "attachments"), ('50-["x"]', "1 to"), ('511-["x"]', "1 to"), ('5a-["x"]', "attachments"),
])
def test_malformed_packets_are_refused_by_name(text, fault):
    with pytest.raises(SocketIOError, match=fault):
        socketio.decode(text)


@pytest.mark.parametrize("placeholder", [
    '{"_placeholder":true,"num":"0"}',  # a string index
    '{"_placeholder":true,"num":0.5}',
    '{"_placeholder":true,"num":true}',  # a boolean is no index
    '{"_placeholder":true,"num":{"toString":"x"}}',  # the 2022 type confusion
    '{"_placeholder":true,"num":1}',  # out of range
    '{"_placeholder":true,"num":-1}',
    '{"_placeholder":"yes","num":0}',
    '{"_placeholder":true,"num":0,"extra":1}',
    '{"_placeholder":true}',
])
def test_a_placeholder_is_exactly_an_index_of_an_announced_attachment(placeholder):
    packet = socketio.decode(f'51-["x",{placeholder}]')
    with pytest.raises(SocketIOError, match="placeholder"):
        socketio.attach(packet, b"\x00")


def test_attachments_are_capped_each_used_once_and_never_more_than_announced():
    with pytest.raises(SocketIOError, match=f"1 to {MAX_ATTACHMENTS}"):
        socketio.decode(f'5{MAX_ATTACHMENTS + 1}-["x"]')
    reused = socketio.decode('52-["x",{"_placeholder":true,"num":0},{"_placeholder":true,"num":0}]')
    socketio.attach(reused, b"a")
    with pytest.raises(SocketIOError, match="used once"):
        socketio.attach(reused, b"b")
    unused = socketio.decode('52-["x",{"_placeholder":true,"num":0}]')
    socketio.attach(unused, b"a")
    with pytest.raises(SocketIOError, match="no placeholder uses"):
        socketio.attach(unused, b"b")
    done = socketio.decode('51-["x",{"_placeholder":true,"num":0}]')
    socketio.attach(done, b"a")
    with pytest.raises(SocketIOError, match="no packet announced"):
        socketio.attach(done, b"b")


@given(st.text(max_size=300))
def test_any_text_decodes_or_is_refused_cleanly(text):
    try:
        socketio.decode(text)
    except SocketIOError:
        pass


@given(st.binary(max_size=300), st.integers(1, 2000))
def test_any_polling_body_decodes_or_is_refused_cleanly(body, max_payload):
    try:
        engineio.decode_payload(body, max_payload)
    except EngineIOError:
        pass


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                    lambda children: st.lists(children, max_size=3) | st.dictionaries(
                        st.sampled_from(["_placeholder", "num", "a"]), children, max_size=3), max_leaves=12),
       st.integers(1, 3))
def test_any_payload_with_attachments_fills_only_exact_placeholders(payload, count):
    try:
        packet = socketio.decode(f"5{count}-" + json.dumps(["x", payload]))
        for i in range(count):
            socketio.attach(packet, bytes([i]))
    except SocketIOError:
        return
    def no_placeholder_left(value) -> bool:
        if isinstance(value, dict):
            return "_placeholder" not in value and all(map(no_placeholder_left, value.values()))
        if isinstance(value, list):
            return all(map(no_placeholder_left, value))
        return True
    assert no_placeholder_left(packet.data)
