"""The server's WebSocket frame reader (protocol/wsreader.py): RFC 6455 as wsproto reads it,
in any split, with the size bound checked before a payload is buffered; permessage-deflate
(RFC 7692) as wsproto's extension reads it."""

import os
import struct
import zlib

import wsproto.connection
import wsproto.events as ev
import wsproto.utilities
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType
from wsproto.extensions import PerMessageDeflate

from protocol.errors import CloseCode
from protocol.wsframes import DEFLATE_TAIL
from protocol.wsreader import CloseFrame, FrameReader, Message, PingFrame, Violation


def frame(opcode: int, payload: bytes, *, fin=True, rsv=0, masked=True, long_form: int = 0,
          key: bytes = b"\x01\x02\x03\x04") -> bytes:
    """A client frame as raw bytes; ``long_form`` 2 or 8 writes its length in that many
    bytes even when fewer would do."""
    n = len(payload)
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    mask_bit = 0x80 if masked else 0
    if long_form == 8 or n >= 65536:
        head = struct.pack("!BBQ", first, mask_bit | 127, n)
    elif long_form == 2 or n >= 126:
        head = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        head = bytes((first, mask_bit | n))
    if not masked:
        return head + payload
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def read_all(reader: FrameReader, chunks: list[bytes]) -> list:
    """What ``reader`` makes of ``chunks``: its events, then ``("error", code)`` if it refused."""
    out = []
    for chunk in chunks:
        for event in reader.receive(chunk):
            if type(event) is Violation:
                return [*out, ("error", event.disconnect.code)]
            out.append(event)
            if type(event) is CloseFrame:
                return out
    return out


def read_with_wsproto(chunks: list[bytes], extensions=None) -> list:
    """The same, as wsproto reads it (its partial messages joined). wsproto reports a
    violation as a close with its code (1002, 1007): the clients here never send those."""
    ws = wsproto.connection.Connection(ConnectionType.SERVER, extensions=extensions)
    out, parts = [], []
    try:
        for chunk in chunks:
            ws.receive_data(chunk)
            for event in ws.events():
                if isinstance(event, ev.Message):
                    parts.append(event.data.encode() if isinstance(event.data, str) else event.data)
                    if event.message_finished:
                        out.append(Message(b"".join(parts), isinstance(event, ev.BytesMessage)))
                        parts = []
                elif isinstance(event, ev.Ping):
                    out.append(PingFrame(bytes(event.payload)))
                elif isinstance(event, ev.CloseConnection):
                    if event.code in (1002, 1007):
                        out.append(("error", int(event.code)))
                    else:
                        out.append(CloseFrame(None if event.code == 1005 else event.code, event.reason or ""))
                    return out
    except wsproto.utilities.RemoteProtocolError:
        out.append(("error", None))
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


TEXTS = st.text(max_size=40).map(str.encode)
client_frames = st.one_of(
    st.builds(lambda p, fin: (0x1, p, fin, 0, True, 0), TEXTS, st.booleans()),
    st.builds(lambda p, fin: (0x2, p, fin, 0, True, 0), st.binary(max_size=300), st.booleans()),
    st.builds(lambda p, fin: (0x0, p, fin, 0, True, 0), TEXTS | st.binary(max_size=8), st.booleans()),
    st.builds(lambda p: (0x9, p, True, 0, True, 0), st.binary(max_size=20)),
    st.builds(lambda p: (0xA, p, True, 0, True, 0), st.binary(max_size=20)),
    st.builds(lambda code, reason: (0x8, struct.pack("!H", code) + reason, True, 0, True, 0),
              st.sampled_from([1000, 1001, 1003, 1004, 1005, 1006, 1011, 1013, 1015, 2000, 2999, 3000,
                               4999, 5000, 999]), TEXTS | st.binary(max_size=4)),
    st.builds(lambda p: (0x8, p, True, 0, True, 0), st.binary(max_size=1)),
    # one defect each
    st.builds(lambda op, p, rsv: (op, p, True, rsv, True, 0), st.sampled_from([0x1, 0x2, 0x9]), st.binary(max_size=5),
              st.integers(1, 7)),
    st.builds(lambda op, p: (op, p, True, 0, False, 0), st.sampled_from([0x1, 0x2, 0x9]), st.binary(max_size=5)),
    st.builds(lambda op, p, fin: (op, p, fin, 0, True, 0), st.sampled_from([0x3, 0x7, 0xB, 0xF]),
              st.binary(max_size=5), st.booleans()),
    st.builds(lambda op, p, lf: (op, p, True, 0, True, lf), st.sampled_from([0x1, 0x2, 0x9]), TEXTS,
              st.sampled_from([2, 8])),
    st.builds(lambda op, p: (op, p, True, 0, True, 0), st.sampled_from([0x8, 0x9, 0xA]), st.binary(min_size=126,
                                                                                                    max_size=130)),
    st.builds(lambda op, p: (op, p, False, 0, True, 0), st.sampled_from([0x8, 0x9, 0xA]), st.binary(max_size=5)),
    st.builds(lambda p, fin: (0x1, p, fin, 0, True, 0), st.binary(max_size=6), st.booleans()),
)


@settings(max_examples=1000, deadline=None)
@given(st.lists(client_frames, max_size=8), st.lists(st.integers(0, 10_000), max_size=6))
def test_reads_any_frames_in_any_split_as_wsproto_does(frames, cuts):
    data = b"".join(frame(op, p, fin=fin, rsv=rsv, masked=masked, long_form=lf, key=os.urandom(4))
                    for op, p, fin, rsv, masked, lf in frames)
    assert read_all(FrameReader(max_message=1 << 20), split(data, cuts)) == read_with_wsproto(split(data, cuts))


def test_a_message_over_the_bound_is_refused_from_its_header_alone():
    reader = FrameReader(max_message=100)
    head_only = frame(0x2, b"x" * 101)[:8]  # header and mask: no payload yet
    [refused] = reader.receive(head_only)
    assert refused.disconnect is CloseCode.MESSAGE_TOO_BIG


def test_the_bound_counts_a_fragmented_message_whole():
    reader = FrameReader(max_message=100)
    assert reader.receive(frame(0x1, b"a" * 60, fin=False)) == []
    [refused] = reader.receive(frame(0x0, b"b" * 41))
    assert refused.disconnect is CloseCode.MESSAGE_TOO_BIG
    again = FrameReader(max_message=100)
    again.receive(frame(0x1, b"a" * 60, fin=False))
    assert again.receive(frame(0x0, b"b" * 40)) == [Message(b"a" * 60 + b"b" * 40, False)]


def test_bytes_that_came_with_the_upgrade_are_read_first_and_a_ping_between_fragments_passes():
    first = frame(0x1, b"hel", fin=False)
    reader = FrameReader(max_message=100, received=first + frame(0x9, b"p")[:3])
    assert reader.receive(b"") == []
    rest = frame(0x9, b"p")[3:] + frame(0x0, "lo é".encode()) + frame(0x8, struct.pack("!H", 4000) + b"bye")
    assert reader.receive(rest) == [PingFrame(b"p"), Message("hello é".encode(), False), CloseFrame(4000, "bye")]


def test_a_close_without_a_code_and_a_utf8_sequence_cut_between_fragments():
    utf8 = "é".encode()
    reader = FrameReader(max_message=100)
    events = reader.receive(frame(0x1, utf8[:1], fin=False) + frame(0x0, utf8[1:]) + frame(0x8, b""))
    assert events == [Message(utf8, False), CloseFrame(None, "")]
    [refused] = FrameReader(max_message=100).receive(frame(0x1, utf8[:1], fin=False) + frame(0x0, b"x"))
    assert refused.disconnect is CloseCode.INVALID_PAYLOAD


# -- permessage-deflate (RFC 7692), no context takeover ---------------------------------

RSV1 = 0b100  # ``frame``'s rsv: the three bits, RSV1 highest


def deflated(data: bytes) -> bytes:
    """``data`` as a client compresses a message: raw DEFLATE, sync-flushed, its empty tail cut."""
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def compressed_message(op: int, data: bytes, cuts: list[int]) -> list[tuple]:
    """One compressed message in fragments cut at ``cuts``: RSV1 on the first frame only."""
    parts = split(deflated(data), cuts)
    return [(op if i == 0 else 0x0, part, i == len(parts) - 1, RSV1 if i == 0 else 0, True, 0)
            for i, part in enumerate(parts)]


def read_with_deflating_wsproto(chunks: list[bytes]) -> list:
    """``read_with_wsproto``, with permessage-deflate accepted as rtserver answers it."""
    deflate = PerMessageDeflate()
    deflate.accept("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    return read_with_wsproto(chunks, extensions=[deflate])


deflate_messages = st.one_of(
    st.builds(compressed_message, st.just(0x1), TEXTS | st.text(min_size=100, max_size=400).map(str.encode),
              st.lists(st.integers(0, 500), max_size=3)),
    st.builds(compressed_message, st.just(0x2), st.binary(max_size=300) | st.just(b"x" * 2000),
              st.lists(st.integers(0, 500), max_size=3)),
    client_frames.map(lambda f: [f]),
    # one defect each: RSV1 on a continuation or a control frame, a payload that is not DEFLATE
    st.builds(lambda p: [(0x1, b"a", False, 0, True, 0), (0x0, p, True, RSV1, True, 0)], st.binary(max_size=5)),
    st.builds(lambda op: [(op, b"", True, RSV1, True, 0)], st.sampled_from([0x8, 0x9, 0xA])),
    st.builds(lambda p: [(0x2, p, True, RSV1, True, 0)], st.just(b"\xff\xff\xff")),
)


def inflates(payload: bytes) -> bool:
    try:
        zlib.decompressobj(-zlib.MAX_WBITS).decompress(payload + DEFLATE_TAIL)
    except zlib.error:
        return False
    return True


def bad_deflate_inside_a_fragmented_message(messages: list[list[tuple]]) -> bool:
    """Whether a compressed frame that does not inflate starts a new message while a
    fragmented one is open: two defects in one frame, where the two readers name different
    ones (``test_a_new_message_inside_a_fragmented_one_is_refused_before_it_is_inflated``)."""
    open_message = False
    for message in messages:
        for op, payload, fin, rsv, _masked, _long_form in message:
            if op in (0x1, 0x2):
                if open_message and rsv & RSV1 and not inflates(payload):
                    return True
                open_message = not fin
            elif op == 0x0 and fin:
                open_message = False
    return False


@settings(max_examples=500, deadline=None)
@given(st.lists(deflate_messages, max_size=6), st.lists(st.integers(0, 10_000), max_size=6))
def test_with_deflate_reads_compressed_messages_in_any_split_as_wsproto_does(messages, cuts):
    assume(not bad_deflate_inside_a_fragmented_message(messages))
    data = b"".join(frame(op, p, fin=fin, rsv=rsv, masked=masked, long_form=lf, key=os.urandom(4))
                    for message in messages for op, p, fin, rsv, masked, lf in message)
    ours = read_all(FrameReader(max_message=1 << 20, deflate=True), split(data, cuts))
    assert ours == read_with_deflating_wsproto(split(data, cuts))


def test_a_new_message_inside_a_fragmented_one_is_refused_before_it_is_inflated():
    """Its header says it all: 1002, without inflating a payload that would not inflate
    anyway (wsproto inflates it first and answers 1007)."""
    reader = FrameReader(max_message=100, deflate=True)
    data = frame(0x1, b"", fin=False) + frame(0x2, b"\xff\xff\xff", rsv=RSV1)
    assert read_all(reader, [data]) == [("error", 1002)]


def test_rsv1_without_deflate_negotiated_is_a_protocol_error():
    [refused] = FrameReader(max_message=100).receive(frame(0x1, deflated(b"hello"), rsv=RSV1))
    assert refused.disconnect is CloseCode.PROTOCOL_ERROR


def test_a_compressed_message_is_bounded_once_inflated_and_inflates_no_further():
    bomb = deflated(b"\0" * 10_000_000)  # ~10 KB that would inflate to 10 MB
    assert len(bomb) < 20_000
    [refused] = FrameReader(max_message=65536, deflate=True).receive(frame(0x2, bomb, rsv=RSV1))
    assert refused.disconnect is CloseCode.MESSAGE_TOO_BIG
    text = "é".encode() * 500
    assert FrameReader(max_message=1000, deflate=True).receive(frame(0x1, deflated(text), rsv=RSV1)) == [
        Message(text, False)]
    [invalid] = FrameReader(max_message=1000, deflate=True).receive(frame(0x1, deflated(b"\xff" * 200), rsv=RSV1))
    assert invalid.disconnect is CloseCode.INVALID_PAYLOAD
