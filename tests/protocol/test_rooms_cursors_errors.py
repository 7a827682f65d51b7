import pytest

from protocol.cursors import Cursor, Offset, shard_of
from protocol.errors import ClientAction, CloseCode, ReplyCode, ReplyError, action_for_code
from protocol.rooms import RoomKind, parse_room, room_key, room_name


def test_shard_of_matches_the_wire_contract_examples():
    assert [shard_of(t, 16) for t in ("t1", "t2", "12345678000199")] == [7, 13, 1]


def test_cursors_round_trip_and_are_url_safe():
    cursor = Cursor(7, "ab12", Offset(1700000000000, 3))
    text = cursor.encode()
    assert Cursor.parse(text) == cursor
    assert all(c.isalnum() or c in ".-" for c in text)
    assert Offset(1, 5) < Offset(2, 0) < Offset(2, 1)


@pytest.mark.parametrize("text", ["", "x", "1.e.1", "1.e!.1-0", "1.e.1-0-0", "a.e.1-0"])
def test_malformed_cursors_are_refused(text):
    with pytest.raises(ReplyError) as info:
        Cursor.parse(text)
    assert info.value.code is ReplyCode.BAD_FRAME


def test_room_names_and_tenant_scoped_keys():
    assert parse_room("schedule:42") == (RoomKind.SCHEDULE, "42")
    assert room_key("t1", "schedule:42") != room_key("t2", "schedule:42")
    assert room_name(room_key("t1", "schedule:42")) == "schedule:42"
    for bad in ("schedule", "nope:1", "schedule:", "schedule:a/b", "schedule:" + "x" * 200):
        with pytest.raises(ReplyError):
            parse_room(bad)


def test_every_close_code_is_unique_and_says_what_the_client_does():
    codes = CloseCode.all()
    assert len({d.code for d in codes}) == len(codes)
    assert CloseCode.SLOW_CONSUMER.action is ClientAction.RESUME
    assert CloseCode.SERVER_DRAINING.action is ClientAction.RESUME
    assert CloseCode.RATE_LIMITED.action is ClientAction.RESUME
    assert CloseCode.TOKEN_EXPIRED.action is ClientAction.REFRESH_TOKEN
    assert CloseCode.UNAUTHENTICATED.action is ClientAction.STOP
    assert CloseCode.FORBIDDEN.action is ClientAction.STOP
    assert action_for_code(4050) is ClientAction.RESUME
    assert action_for_code(4450) is ClientAction.STOP


def test_reply_errors_say_whether_they_are_temporary():
    assert ReplyError(ReplyCode.RATE_LIMITED, "x").temporary
    assert not ReplyError(ReplyCode.FORBIDDEN, "x").temporary
