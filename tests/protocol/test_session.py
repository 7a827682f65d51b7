"""The specification of joining with resumption (protocol/session.py), without sockets or Trio.

The first tests walk each kind of join step by step; the property at the end plays a whole
join against a stream that keeps growing while it runs (events appended, routed to the
room's live feed late, pages trimmed) and checks the promise: every event after the
cursor reaches the client once, in order, snapshots joined, or the join is lost and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.cursors import Cursor, Offset
from protocol.envelope import Envelope, StoredEvent
from protocol.frames import Evt
from protocol.session import (
    Answer, GoLive, Hold, Join, Lost, ReadHead, ReadHistory, ReadSnapshots, RoomHistory, RoomSnapshot, Send,
    hand_over,
)
from protocol.states import (
    CONNECTION_TRANSITIONS, MEMBER_TRANSITIONS, ConnectionState, IllegalTransition, MemberState, advance,
)

EPOCH = "e1"
ALERTS, PATIENT, SCHEDULE, PRESENCE = "tenant:t1", "patient:p1", "schedule:s1", "presence:staff"


def cursor(n: int) -> Cursor:
    return Cursor(0, EPOCH, Offset(n, 0))


def event(n: int, *rooms: str, ephemeral: bool = False) -> StoredEvent:
    envelope = Envelope(event="new_patient", tenant="t1", rooms=list(rooms), data={"n": n})
    if ephemeral:
        return StoredEvent(envelope, id=f"x{n}", ts=n)
    return StoredEvent(envelope, id=f"e{n}", ts=n, offset=Offset(n, 0), cursor=cursor(n).encode())


def page(events: list[StoredEvent], rooms: set[str], end: int, more: bool = False) -> RoomHistory:
    return RoomHistory([(e, room) for e in events for room in e.envelope.rooms if room in rooms], True,
                       cursor(end), more)


def snapshot(room: str, upto: int | None = None, covers=lambda e: False) -> RoomSnapshot:
    frame = Evt(event="schedule.snapshot", room=room, id=f"snap-{room}", ts=0, data={})
    return RoomSnapshot(frame, cursor(upto) if upto is not None else None, covers)


def ids(frames) -> list[str]:
    return [frame.id for frame in frames]


# -- each kind of join -----------------------------------------------------------------
def test_without_a_cursor_the_answer_carries_the_head_and_the_rooms_take_the_member_live_at_once():
    join = Join([ALERTS, PATIENT], None)
    assert join.step == ReadHead()
    assert join.head_read(cursor(9)) == Send(Answer(None, cursor(9)), ())
    assert join.sent() == GoLive(held=False, after=None)


def test_a_resumed_cursor_answers_recovered_then_every_missed_event_of_every_room_in_stream_order():
    join = Join([ALERTS, PATIENT], cursor(3))
    assert join.step == Hold()
    assert join.holding() == ReadHistory(cursor(3))
    missed = [event(4, PATIENT), event(5, ALERTS, PATIENT), event(6, ALERTS)]
    step = join.history_read(page(missed, {ALERTS, PATIENT}, end=6))
    # Cut off before the last missed event, the client resumes from the last one it got, or from its cursor.
    assert step.answer == Answer(True, cursor(3))
    assert [(f.id, f.room) for f in step.frames] == [
        ("e4", PATIENT), ("e5", ALERTS), ("e5", PATIENT), ("e6", ALERTS)]
    assert join.sent() == GoLive(held=True, after=Offset(6, 0))


def test_a_cursor_the_history_no_longer_reaches_answers_not_recovered_with_the_head():
    join = Join([ALERTS], cursor(3))
    join.holding()
    assert join.history_read(None) == ReadHead()
    assert join.head_read(cursor(40)) == Send(Answer(False, cursor(40)), ())
    assert join.sent() == GoLive(held=True, after=None)


def test_a_backlog_is_replayed_a_page_at_a_time_each_read_once_the_client_took_the_previous_one():
    join = Join([ALERTS], cursor(0))
    join.holding()
    first = join.history_read(page([event(1, ALERTS), event(2, ALERTS)], {ALERTS}, end=2, more=True))
    # Cut off during the replay, the client resumes from the last event it got, or from the start.
    assert first.answer == Answer(True, cursor(0)) and ids(first.frames) == ["e1", "e2"]
    assert join.sent() == ReadHistory(cursor(2), flushed_first=True)
    assert join.history_read(page([event(3, ALERTS)], {ALERTS}, end=3)) == Send(None, (event(3, ALERTS).frame(ALERTS),))
    assert join.sent() == GoLive(held=True, after=Offset(3, 0))


def test_with_nothing_to_replay_the_answer_moves_the_cursor_to_the_history_end():
    join = Join([ALERTS], cursor(3))
    join.holding()
    step = join.history_read(page([event(4, PATIENT)], {ALERTS}, end=4))  # another room's event
    assert step == Send(Answer(True, cursor(4)), ())


def test_history_trimmed_during_the_replay_loses_the_join():
    join = Join([ALERTS], cursor(0))
    join.holding()
    join.history_read(page([event(1, ALERTS)], {ALERTS}, end=1, more=True))
    join.sent()
    assert join.history_read(None) == Lost()
    assert join.step.final


def test_a_schedule_snapshot_comes_first_and_the_history_after_its_cursor_skips_what_it_covers():
    join = Join([SCHEDULE], None)
    assert join.holding() == ReadSnapshots(((SCHEDULE, False),))
    record = snapshot(SCHEDULE, upto=2, covers=lambda e: e.offset == Offset(3, 0))
    assert join.snapshots_read([record]) == ReadHistory(cursor(2))
    step = join.history_read(page([event(3, SCHEDULE), event(4, SCHEDULE)], {SCHEDULE}, end=4))
    assert step.answer == Answer(None, cursor(2))
    assert ids(step.frames) == ["snap-schedule:s1", "e4"]  # e3 is in the snapshot already
    assert join.sent() == GoLive(held=True, after=Offset(4, 0))


def test_a_snapshot_older_than_the_cursor_moves_the_replay_start_back_to_it():
    join = Join([ALERTS, SCHEDULE], cursor(5), fresh=frozenset({SCHEDULE}))
    join.holding()
    step = join.history_read(page([event(6, ALERTS)], {ALERTS, SCHEDULE}, end=6))
    assert step == ReadSnapshots(((SCHEDULE, False),))  # new to the client: not resumed for it
    assert join.snapshots_read([snapshot(SCHEDULE, upto=2)]) == ReadHistory(cursor(2))
    older = [event(3, ALERTS), event(4, SCHEDULE), event(6, ALERTS)]
    step = join.history_read(page(older, {ALERTS, SCHEDULE}, end=6))
    # Events up to the client's own cursor come again (clients drop repeated ids): no gap.
    assert step.answer == Answer(True, cursor(2))
    assert ids(step.frames) == ["snap-schedule:s1", "e3", "e4", "e6"]


def test_a_resumed_cursor_needs_no_schedule_snapshot_but_a_presence_room_still_asks():
    join = Join([SCHEDULE, PRESENCE], cursor(1))
    join.holding()
    assert join.history_read(page([], {SCHEDULE}, end=1)) == ReadSnapshots(((SCHEDULE, True), (PRESENCE, True)))


def test_history_gone_before_a_snapshot_cursor_answers_from_the_head_and_says_so():
    join = Join([SCHEDULE], None)
    join.holding()
    join.snapshots_read([snapshot(SCHEDULE, upto=2)])
    assert join.history_read(None) == ReadHead()
    assert join.snapshot_history_lost
    step = join.head_read(cursor(8))
    assert step.answer == Answer(None, cursor(8)) and ids(step.frames) == ["snap-schedule:s1"]


def test_a_report_out_of_turn_raises():
    join = Join([ALERTS], None)
    with pytest.raises(IllegalTransition):
        join.history_read(None)
    join.head_read(cursor(1))
    with pytest.raises(IllegalTransition):
        join.head_read(cursor(1))


# -- the hand-over to live delivery ------------------------------------------------------
def never(event: StoredEvent) -> bool:
    return False


def test_hand_over_drops_buffered_events_the_history_had_and_delivers_the_newer_ones():
    buffered = [event(4, ALERTS), event(5, ALERTS), event(6, ALERTS)]
    deliver, skip_to = hand_over(buffered, Offset(4, 0), never)
    assert ids(deliver) == ["e5", "e6"] and skip_to is None


def test_hand_over_with_nothing_newer_buffered_keeps_skipping_up_to_the_history_end():
    deliver, skip_to = hand_over([event(4, ALERTS)], Offset(6, 0), never)
    assert deliver == [] and skip_to == Offset(6, 0)  # e5, e6 may still be on their way


def test_hand_over_leaves_a_held_event_to_its_merged_frame():
    deliver, _ = hand_over([event(5, ALERTS), event(6, ALERTS)], Offset(4, 0), lambda e: e.id == "e5")
    assert ids(deliver) == ["e6"]


# -- lifecycles ------------------------------------------------------------------------
def test_connections_and_room_members_move_only_along_their_transitions():
    state = ConnectionState.OPENING
    for new in (ConnectionState.JOINING, ConnectionState.OPEN, ConnectionState.CLOSING, ConnectionState.CLOSED):
        state = advance(CONNECTION_TRANSITIONS, state, new)
    with pytest.raises(IllegalTransition):
        advance(CONNECTION_TRANSITIONS, ConnectionState.CLOSED, ConnectionState.OPEN)
    with pytest.raises(IllegalTransition):
        advance(CONNECTION_TRANSITIONS, ConnectionState.OPENING, ConnectionState.OPEN)  # never answered
    assert advance(MEMBER_TRANSITIONS, MemberState.RECOVERING, MemberState.CATCHING_UP) is MemberState.CATCHING_UP
    with pytest.raises(IllegalTransition):
        advance(MEMBER_TRANSITIONS, MemberState.LIVE, MemberState.RECOVERING)
    with pytest.raises(IllegalTransition):
        advance(MEMBER_TRANSITIONS, MemberState.GONE, MemberState.LIVE)


# -- the whole promise, against a stream that moves while the join runs ------------------
@dataclass
class Stream:
    """Events 1..n of two rooms; ``appended`` of them are in the history, the live feed has
    brought the first ``routed`` to the rooms, the first ``trimmed`` are gone."""

    events: list[StoredEvent]
    appended: int
    routed: int = 0
    trimmed: int = 0
    #: What each room buffered for the joining member (events routed while it was held).
    buffers: dict[str, list[StoredEvent]] = field(default_factory=dict)

    def move(self, appends: int, routes: int) -> None:
        self.appended = min(len(self.events), self.appended + appends)
        for e in self.events[self.routed:min(self.appended, self.routed + routes)]:
            for room, buffer in self.buffers.items():
                if room in e.envelope.rooms:
                    buffer.append(e)
        self.routed = min(self.appended, self.routed + routes)

    def read(self, since: Cursor, rooms: set[str], limit: int) -> RoomHistory | None:
        after = since.offset.ms
        if after < self.trimmed:
            return None
        newer = self.events[after:self.appended]
        return page(newer[:limit], rooms, end=after + len(newer[:limit]), more=len(newer) > limit)


ROOMS = [ALERTS, PATIENT]


@settings(max_examples=300, deadline=None)
@given(
    targets=st.lists(st.sampled_from([(ALERTS,), (PATIENT,), (ALERTS, PATIENT)]), min_size=1, max_size=30),
    data=st.data(),
)
def test_every_event_after_the_cursor_arrives_once_in_order_however_the_stream_moves(targets, data):
    events = [event(n, *rooms) for n, rooms in enumerate(targets, start=1)]
    n = len(events)
    since = data.draw(st.integers(0, n), label="client's cursor")
    appended = data.draw(st.integers(since, n), label="appended at the join")
    stream = Stream(events, appended, routed=data.draw(st.integers(0, appended), label="routed at the join"))
    limit = data.draw(st.integers(1, 6), label="page size")
    got: list[tuple[int, str]] = []

    def moves() -> None:
        stream.move(data.draw(st.integers(0, 3)), data.draw(st.integers(0, 3)))
        if data.draw(st.booleans(), label="trim"):
            stream.trimmed = data.draw(st.integers(0, stream.appended))

    join = Join(ROOMS, cursor(since))
    answers: list[Answer] = []
    held_cursors: list[tuple[int, int]] = []  # (frames received, the cursor the client holds then)
    step = join.step
    while not step.final:
        if isinstance(step, Hold):
            stream.buffers = {room: [] for room in ROOMS}
            step = join.holding()
        elif isinstance(step, ReadHistory):
            moves()
            step = join.history_read(stream.read(step.since, set(ROOMS), limit))
        elif isinstance(step, ReadHead):
            step = join.head_read(cursor(stream.appended))
        else:
            assert isinstance(step, Send)
            if step.answer is not None:
                answers.append(step.answer)
                held_cursors.append((len(got), step.answer.cursor.offset.ms))
            for f in step.frames:
                got.append((int(f.id[1:]), f.room))
                held_cursors.append((len(got), Cursor.parse(f.cursor).offset.ms))
            step = join.sent()
        moves()
    assert len(answers) == 1

    def pairs_after(offset: int) -> list[tuple[int, str]]:
        return [(e.offset.ms, room) for e in events[offset:] for room in e.envelope.rooms]

    if join.recovered:  # cut off at any point, the client's cursor never passes an event it lacks
        for received, held in held_cursors:
            assert {o for o, _ in pairs_after(since) if o <= held} <= {o for o, _ in got[:received]}
    if isinstance(step, Lost):  # the client got a gap-free prefix, and resumes from its end
        assert got == pairs_after(since)[:len(got)]
        return
    # The rooms hand over what they buffered, then route the rest of the stream live.
    catching_up: dict[str, Offset | None] = {}
    for room in ROOMS:
        deliver, catching_up[room] = hand_over(stream.buffers[room], step.after, never)
        got.extend((e.offset.ms, room) for e in deliver)
    for e in events[stream.routed:]:
        for room in e.envelope.rooms:
            skip_to = catching_up[room]
            if skip_to is not None and e.offset <= skip_to:
                continue
            catching_up[room] = None
            got.append((e.offset.ms, room))
    for room in ROOMS:
        received = [o for o, r in got if r == room]
        if join.recovered:  # every event after the cursor, once, in order
            assert received == [o for o, r in pairs_after(since) if r == room]
        else:  # told so, the client reloads: every event after the answer's cursor, once, in order
            assert received == sorted(set(received))
            head = answers[0].cursor.offset.ms
            assert {o for o, r in pairs_after(head) if r == room} <= set(received)
