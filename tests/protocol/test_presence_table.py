"""This node's presence table, without Trio: the view of each user as connections come,
beat, switch, go and come back."""

from protocol.presence import PresenceKey, PresenceState, View
from protocol.presence_table import PresenceTable

ONLINE, AWAY, OFFLINE = PresenceState.ONLINE, PresenceState.AWAY, PresenceState.OFFLINE
ANA = PresenceKey("t1", "attendants", "ana")


def table() -> PresenceTable:
    return PresenceTable(away_after_s=10, grace_s=60)


def put_changes(presence: PresenceTable, keys, now) -> list[View]:
    """What the actor does: put the views that changed (and so record them)."""
    views = presence.changed_views(keys, now)
    presence.put(views)
    return views


def test_a_connection_is_online_then_away_without_heartbeats_and_online_again_with_one():
    presence = table()
    keys = presence.connected("c1", "t1", "ana", ["attendants"], None, now=0)
    assert put_changes(presence, keys, 0) == [View(ANA, ONLINE, 1)]
    assert presence.next_due() == 10
    assert put_changes(presence, presence.expire(now=10), 10) == [View(ANA, AWAY, 1)]
    assert put_changes(presence, presence.heartbeat("c1", now=11), 11) == [View(ANA, ONLINE, 1)]


def test_a_switch_to_away_holds_while_heartbeats_continue():
    presence = table()
    put_changes(presence, presence.connected("c1", "t1", "ana", ["attendants"], None, now=0), 0)
    assert put_changes(presence, presence.switch("c1", AWAY, now=1), 1) == [View(ANA, AWAY, 1)]
    assert put_changes(presence, presence.heartbeat("c1", now=5), 5) == []


def test_a_closed_connection_is_held_for_the_grace_period_and_taken_back_within_it():
    presence = table()
    put_changes(presence, presence.connected("s1", "t1", "ana", ["attendants"], None, now=0), 0)
    keys = presence.disconnected("s1", now=1)
    assert put_changes(presence, keys, 1) == [View(ANA, ONLINE, 0)]  # still online, no open stream
    keys = presence.connected("s1", "t1", "ana", ["attendants"], None, now=30)  # the next poll
    assert put_changes(presence, keys, 30) == [View(ANA, ONLINE, 1)]
    assert put_changes(presence, presence.heartbeat("s1", now=55), 55) == []
    assert presence.expire(now=61) == {ANA}  # the first grace timer is stale: nothing changes
    assert put_changes(presence, {ANA}, 61) == [] and len(presence) == 1


def test_after_the_grace_period_the_user_goes_offline_and_is_forgotten():
    presence = table()
    put_changes(presence, presence.connected("c1", "t1", "ana", ["attendants"], None, now=0), 0)
    presence.disconnected("c1", now=1)
    presence.expire(now=11)  # the away timer of a closed connection changes nothing
    assert put_changes(presence, presence.expire(now=61), 61) == [View(ANA, OFFLINE, 0)]
    assert len(presence) == 0 and presence.views(presence.held_keys(), 61) == []


def test_two_connections_of_one_user_combine_into_one_view():
    presence = table()
    put_changes(presence, presence.connected("c1", "t1", "ana", ["attendants"], None, now=0), 0)
    keys = presence.connected("c2", "t1", "ana", ["attendants"], AWAY, now=1)
    assert put_changes(presence, keys, 1) == [View(ANA, ONLINE, 2)]  # the best state of the two
    assert presence.views(presence.held_keys(), 2) == [View(ANA, ONLINE, 2)]


def test_messages_for_unknown_or_closed_connections_change_nothing():
    presence = table()
    assert presence.heartbeat("nobody", now=0) == set()
    assert presence.disconnected("nobody", now=0) == set()
    presence.connected("c1", "t1", "ana", ["attendants"], None, now=0)
    presence.disconnected("c1", now=1)
    assert presence.switch("c1", AWAY, now=2) == set()
