"""The typing table, without Trio: what is announced, when an indicator stops by itself."""

from protocol.typing_table import TypingKey, TypingTable

ANA = TypingKey("t1", "7", "ana", "s-ana")
BIA = TypingKey("t1", "7", "bia", "s-bia")


def test_a_start_is_announced_then_its_stop():
    table = TypingTable(timeout_s=5)
    table.start(ANA, now=0)
    assert table.announcements() == [(ANA, True)]
    table.stop(ANA)
    assert table.announcements() == [(ANA, False)]
    assert table.announcements() == []


def test_a_start_and_a_stop_within_one_burst_announce_nothing():
    table = TypingTable(timeout_s=5)
    table.start(ANA, now=0)
    table.stop(ANA)
    assert table.announcements() == []


def test_each_start_is_announced_again_for_late_joiners():
    table = TypingTable(timeout_s=5)
    table.start(ANA, now=0)
    table.announcements()
    table.start(ANA, now=1)
    assert table.announcements() == [(ANA, True)]


def test_an_indicator_stops_by_itself_unless_refreshed():
    table = TypingTable(timeout_s=5)
    table.start(ANA, now=0)
    table.start(BIA, now=0)
    table.announcements()
    table.start(ANA, now=3)  # refreshed (and announced again): its first deadline no longer counts
    assert table.announcements() == [(ANA, True)]
    assert table.next_due() == 5
    table.expire(now=5)
    assert table.announcements() == [(BIA, False)]
    table.expire(now=7.9)
    assert table.announcements() == []
    table.expire(now=8)
    assert table.announcements() == [(ANA, False)]
    assert table.next_due() is None


def test_a_session_that_goes_stops_its_indicators_only():
    table = TypingTable(timeout_s=5)
    other_thread = TypingKey("t1", "9", "ana", "s-ana")
    for key in (ANA, BIA, other_thread):
        table.start(key, now=0)
    table.announcements()
    table.gone("s-ana")
    assert table.announcements() == [(ANA, False), (other_thread, False)]


def test_stopping_what_does_not_type_announces_nothing():
    table = TypingTable(timeout_s=5)
    table.stop(ANA)
    table.gone("s-bia")
    assert table.announcements() == []
