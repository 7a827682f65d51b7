"""Joining rooms with resumption, sans-IO: the session protocol's decisions, without sockets or Trio.

A connection joins rooms at its start (answered by ``hello``) and on each ``sub``
(answered by ``ack``), optionally from a cursor. ``Join`` decides, from what the actor
reads for it (the shard's head, pages of the rooms' history, the rooms' snapshots), what
the client is told and when it goes live; the actor (``actors.connection``) only carries
out the step it is given and reports what came of it::

    join = Join(rooms, since, fresh)
    step = join.step
    while not step.final:
        step = <carry out step, then call the method it names with the result>

The promises (docs/protocol.md, Cursors and resumption), each a test in tests/protocol/test_session.py:

* the answer comes before any event of the rooms; it says whether the history reached
  back to the cursor (``recovered``; None without a cursor) and carries the cursor to
  resume from if the client is cut off now;
* then each room's snapshot (a kind with one: presence, schedules), then the missed
  events of every room in stream order — one route for one room or many, so no cursor a
  client receives passes an event it has not received;
* a snapshot that carries a cursor reflects every event up to it (and says which later
  ones it reflects): the history is read from the oldest such cursor, without what a
  snapshot already covers, so snapshots, missed events and live events join with no gap
  and no duplicate;
* the history is replayed a page at a time, the next page read once the client took the
  previous one (any backlog within the retained history catches up within a bounded
  budget); trimmed away meanwhile, the join is lost (the client resumes from what it got);
* then the rooms hand the member over to live delivery (``hand_over``): the live events
  buffered while it read, without those its history already had.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from protocol.cursors import Cursor, Offset
from protocol.envelope import StoredEvent
from protocol.frames import Evt
from protocol.rooms import RoomKind, parse_room
from protocol.states import IllegalTransition, advance

#: Room kinds whose subscribers get a snapshot frame first.
SNAPSHOT_KINDS = frozenset({RoomKind.PRESENCE, RoomKind.SCHEDULE})


@dataclass(frozen=True, slots=True)
class RoomHistory:
    """A tenant's rooms after a cursor: (event, room) pairs in stream order, one per room
    an event went to."""

    events: list[tuple[StoredEvent, str]]
    #: False when the history cannot reach back (trimmed, another epoch, another shard).
    recovered: bool
    #: Where the pairs end (the shard's head when not recovered).
    cursor: Cursor
    #: True when ``limit`` was reached before the end of the history.
    more: bool


def _covers_nothing(event: StoredEvent) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class RoomSnapshot:
    """What a room hands a new subscriber first: a frame, and for a record of durable
    events the cursor up to which it reflects every event and which later events it
    already reflects."""

    frame: Evt
    cursor: Cursor | None = None
    covers: Callable[[StoredEvent], bool] = _covers_nothing


@dataclass(frozen=True, slots=True)
class Answer:
    """What the ``hello`` or ``ack`` of a join says."""

    #: Whether the history reached back to the cursor; None when the join had none.
    recovered: bool | None
    #: Where the client resumes from if it is cut off after this answer.
    cursor: Cursor


# -- the steps the actor carries out ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReadHead:
    """Read the shard's head, then call ``Join.head_read``."""

    final = False


@dataclass(frozen=True, slots=True)
class Hold:
    """Have every room hold its live events for this member from now on (its history
    read next), then call ``Join.holding``."""

    final = False


@dataclass(frozen=True, slots=True)
class ReadHistory:
    """Read a page of the rooms' history after ``since`` (None when it does not reach
    back), once the client took what was sent when ``flushed_first``; then call
    ``Join.history_read``."""

    since: Cursor
    flushed_first: bool = False
    final = False


@dataclass(frozen=True, slots=True)
class ReadSnapshots:
    """Read the snapshot of each of ``rooms`` (room, and whether the client's cursor was
    resumed for it: a schedule then needs none), then call ``Join.snapshots_read`` with
    those there are."""

    rooms: tuple[tuple[str, bool], ...]
    final = False


@dataclass(frozen=True, slots=True)
class Send:
    """Send the ``answer`` (when there is one) then ``frames``, in this order and with
    nothing between; then call ``Join.sent``."""

    answer: Answer | None
    frames: tuple[Evt, ...]
    final = False


@dataclass(frozen=True, slots=True)
class GoLive:
    """Hand the member over to the rooms' live delivery: the rooms held its events
    (``held``) up to its history's end ``after``; or, not held, it is live at once."""

    held: bool
    after: Offset | None
    final = True


@dataclass(frozen=True, slots=True)
class Lost:
    """The history was trimmed while replaying it: the client must resume from the last
    event it got (the connection ends as a slow consumer)."""

    final = True


Step = ReadHead | Hold | ReadHistory | ReadSnapshots | Send | GoLive | Lost


class JoinState(enum.Enum):
    READING_HEAD = enum.auto()
    HOLDING = enum.auto()
    READING_HISTORY = enum.auto()
    READING_SNAPSHOTS = enum.auto()
    READING_SNAPSHOT_HISTORY = enum.auto()
    SENDING = enum.auto()
    REPLAYING = enum.auto()
    LIVE = enum.auto()
    LOST = enum.auto()


_S = JoinState
TRANSITIONS: Mapping[JoinState, frozenset[JoinState]] = {
    _S.READING_HEAD: frozenset({_S.SENDING}),
    _S.HOLDING: frozenset({_S.READING_HISTORY, _S.READING_SNAPSHOTS}),
    _S.READING_HISTORY: frozenset({_S.READING_SNAPSHOTS, _S.READING_HEAD, _S.SENDING}),
    _S.READING_SNAPSHOTS: frozenset({_S.READING_SNAPSHOT_HISTORY, _S.READING_HEAD, _S.SENDING}),
    _S.READING_SNAPSHOT_HISTORY: frozenset({_S.READING_HEAD, _S.SENDING}),
    _S.SENDING: frozenset({_S.REPLAYING, _S.LIVE}),
    _S.REPLAYING: frozenset({_S.SENDING, _S.LOST}),
    _S.LIVE: frozenset(),
    _S.LOST: frozenset(),
}


class Join:
    """One join of ``rooms`` (see the module docstring); ``step`` is what to do next.

    ``since``: the client's cursor, if it resumes. ``fresh``: rooms new to the client
    (their snapshots are sent even when the cursor is resumed: it never had their state).
    """

    __slots__ = ("rooms", "since", "state", "step", "recovered", "snapshot_history_lost", "_fresh",
                 "_snapshot_rooms", "_start", "_page", "_snapshots")

    def __init__(self, rooms: Sequence[str], since: Cursor | None, fresh: frozenset[str] = frozenset()) -> None:
        self.rooms = tuple(rooms)
        self.since = since
        self._fresh = fresh
        self._snapshot_rooms = tuple(room for room in self.rooms if parse_room(room)[0] in SNAPSHOT_KINDS)
        #: Whether the history reached back to ``since`` (None without one).
        self.recovered: bool | None = None
        #: True when the history no longer reached back to a snapshot's cursor (the live
        #: events follow the snapshot; worth a log line).
        self.snapshot_history_lost = False
        self._start = since  # where the replay starts
        self._page: RoomHistory | None = None
        self._snapshots: list[RoomSnapshot] = []
        if since is None and not self._snapshot_rooms:
            self.state, self.step = _S.READING_HEAD, ReadHead()
        else:
            self.state, self.step = _S.HOLDING, Hold()

    @property
    def held(self) -> bool:
        """Whether the rooms hold live events for this member until it goes live."""
        return self.since is not None or bool(self._snapshot_rooms)

    # -- what the actor reports ----------------------------------------------------------
    def holding(self) -> Step:
        """The rooms hold this member's live events from now on."""
        self._expect(_S.HOLDING)
        if self.since is not None:
            return self._go(_S.READING_HISTORY, ReadHistory(self.since))
        return self._read_snapshots()

    def head_read(self, head: Cursor) -> Step:
        self._expect(_S.READING_HEAD)
        return self._go(_S.SENDING, Send(Answer(self.recovered, head), self._snapshot_frames()))

    def history_read(self, page: RoomHistory | None) -> Step:
        """A page after the last ``ReadHistory``'s cursor; None when it did not reach back."""
        if self.state is _S.REPLAYING:
            if page is None:
                return self._go(_S.LOST, Lost())
            self._page = page
            return self._go(_S.SENDING, Send(None, self._missed(page)))
        if self.state is _S.READING_HISTORY:
            self.recovered = page is not None
            self._page = page
            return self._read_snapshots() if self._snapshot_rooms else self._answer()
        self._expect(_S.READING_SNAPSHOT_HISTORY)
        self._page = page
        self.snapshot_history_lost = page is None
        return self._answer()

    def snapshots_read(self, snapshots: Sequence[RoomSnapshot]) -> Step:
        """The snapshots of the rooms ``ReadSnapshots`` named (those that have one)."""
        self._expect(_S.READING_SNAPSHOTS)
        self._snapshots = list(snapshots)
        oldest = min((snap.cursor for snap in snapshots if snap.cursor is not None),
                     key=lambda cursor: cursor.offset, default=None)
        if oldest is not None and (self._page is None or oldest.offset < self.since.offset):
            self._start = oldest
            return self._go(_S.READING_SNAPSHOT_HISTORY, ReadHistory(oldest))
        return self._answer()

    def sent(self) -> Step:
        """The last ``Send`` is in the client's outbound queue."""
        self._expect(_S.SENDING)
        page = self._page
        if page is not None and page.more:
            return self._go(_S.REPLAYING, ReadHistory(page.cursor, flushed_first=True))
        return self._go(_S.LIVE, GoLive(self.held, page.cursor.offset if page is not None else None))

    # -- decisions -----------------------------------------------------------------------
    def _read_snapshots(self) -> Step:
        recovered = bool(self.recovered)
        return self._go(_S.READING_SNAPSHOTS, ReadSnapshots(tuple(
            (room, recovered and room not in self._fresh) for room in self._snapshot_rooms)))

    def _answer(self) -> Step:
        page = self._page
        if page is None:
            return self._go(_S.READING_HEAD, ReadHead())
        # When frames follow, the answer's cursor is where they start: a client cut off
        # before the last of them resumes from the last event it got, or from there.
        frames = self._snapshot_frames() + self._missed(page)
        cursor = self._start if frames or page.more else page.cursor
        return self._go(_S.SENDING, Send(Answer(self.recovered, cursor), frames))

    def _snapshot_frames(self) -> tuple[Evt, ...]:
        return tuple(snap.frame for snap in self._snapshots)

    def _missed(self, page: RoomHistory) -> tuple[Evt, ...]:
        """The page's events the snapshots do not already reflect, in stream order."""
        snapshots = self._snapshots
        return tuple(event.frame(room) for event, room in page.events
                     if not any(snap.covers(event) for snap in snapshots))

    def _expect(self, state: JoinState) -> None:
        if self.state is not state:
            raise IllegalTransition(f"join: reported in {self.state.name}, expected in {state.name}")

    def _go(self, state: JoinState, step: Step) -> Step:
        self.state = advance(TRANSITIONS, self.state, state)
        self.step = step
        return step


def hand_over(buffered: Sequence[StoredEvent], after: Offset | None,
              held: Callable[[StoredEvent], bool]) -> tuple[list[StoredEvent], Offset | None]:
    """A member's hand-over to live delivery, its history read up to ``after`` (None: it
    read none): the live events the room buffered meanwhile to deliver now, and the offset
    up to which it must still skip live events (None: it is live).

    Buffered events up to ``after`` are in its history already. An event can still be on
    its way from the bus while already in the history, so a member none of whose buffered
    events was newer keeps skipping up to ``after`` until the first newer one. A buffered
    event the room is holding to coalesce (``held``) is not delivered: the merged frame
    will bring it."""
    deliver = []
    for event in buffered:
        if after is None or event.offset is None or event.offset > after:
            after = None  # buffered events are in bus order: every later one is newer
            if not held(event):
                deliver.append(event)
    return deliver, after
