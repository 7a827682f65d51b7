"""What socket.io-client frontends emit and receive, as rt.v1 frames (docs/socketio.md), sans-IO.

Client events become rt.v1 commands: the seeds' names (``subscribe_patient {patientId}``,
``join:thread {threadId}``, ``typing:start {threadId}``, ``mark_alert_read {alertId}``...)
and a generic ``subscribe {room, since?}`` / ``unsubscribe {room}``. Each is answered
through the client's ack callback, when it gave one: ``{status, room, ...}`` or
``{error: {code, message}}``.

Server events arrive as ``socket.on(<event>, data, meta)``: ``data`` is the payload the
rt.v1 ``evt`` carries, ``meta`` its ``{room, id, ts, cursor?, merged?}``; a durable event's
cursor also ends the arguments, where socket.io-client's connection state recovery reads
the offset to resume from.
"""

from __future__ import annotations

from typing import Any

from protocol.errors import ReplyCode, ReplyError
from protocol.frames import ClientFrame, Emit, Evt, Ping, Sub, Unsub
from protocol.rooms import RoomKind, parse_room

#: Client events that join a room, by name: the room kind and the payload field naming it.
_JOINS = {"subscribe_patient": (RoomKind.PATIENT, "patientId"), "join:thread": (RoomKind.THREAD, "threadId")}
_LEAVES = {"unsubscribe_patient": _JOINS["subscribe_patient"], "leave:thread": _JOINS["join:thread"]}
#: Client events carried as rt.v1 ``emit``s with no room.
_EMITS = frozenset({"heartbeat", "presence:online", "presence:away", "mark_alert_read"})
#: Client events carried as rt.v1 ``emit``s to the thread their ``threadId`` names.
_THREAD_EMITS = frozenset({"typing:start", "typing:stop"})
#: The payload field an ack names a room by, per room kind (the seeds' answers).
_ID_FIELDS = {RoomKind.PATIENT: "patientId", RoomKind.THREAD: "threadId"}
#: Every client event name this module maps.
CLIENT_EVENTS = frozenset({"subscribe", "unsubscribe", "ping", *_JOINS, *_LEAVES, *_EMITS, *_THREAD_EMITS})


def _body(args: list[Any]) -> dict[str, Any]:
    if not args:
        return {}
    if not isinstance(args[0], dict):
        raise ReplyError(ReplyCode.BAD_FRAME, "the event's argument is an object")
    return args[0]


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if type(value) is int:
        value = str(value)
    if not isinstance(value, str) or not value:
        raise ReplyError(ReplyCode.BAD_FRAME, f"{name!r} is a non-empty string")
    return value


def client_frame(event: str, args: list[Any], ref: int | None) -> ClientFrame:
    """The rt.v1 command a client event stands for (``ref``: its ack id); raises
    ``ReplyError`` naming what is wrong."""
    body = _body(args)
    if event == "subscribe":
        since = body.get("since")
        if since is not None and not isinstance(since, str):
            raise ReplyError(ReplyCode.BAD_FRAME, "'since' is a cursor")
        return Sub(room=_text(body, "room"), since=since, ref=ref)
    if event == "unsubscribe":
        return Unsub(room=_text(body, "room"), ref=ref)
    if event in _JOINS:
        kind, field = _JOINS[event]
        return Sub(room=f"{kind.value}:{_text(body, field)}", ref=ref)
    if event in _LEAVES:
        kind, field = _LEAVES[event]
        return Unsub(room=f"{kind.value}:{_text(body, field)}", ref=ref)
    if event in _THREAD_EMITS:
        return Emit(event=event, room=f"{RoomKind.THREAD.value}:{_text(body, 'threadId')}", ref=ref)
    if event in _EMITS:
        return Emit(event=event, data=body, ref=ref)
    if event == "ping":
        return Ping(ref=ref)
    raise ReplyError(ReplyCode.UNKNOWN_EVENT, f"unknown event {event[:64]!r}")


def ack_answer(frame: ClientFrame, recovered: bool | None = None, cursor: str | None = None) -> dict[str, Any]:
    """What the client's ack callback receives for a command carried out."""
    if isinstance(frame, Sub | Unsub):
        answer: dict[str, Any] = {"status": "subscribed" if isinstance(frame, Sub) else "unsubscribed",
                                  "room": frame.room}
        kind, ident = parse_room(frame.room)
        if kind in _ID_FIELDS:
            answer[_ID_FIELDS[kind]] = ident
        if recovered is not None:
            answer["recovered"] = recovered
        if cursor is not None:
            answer["cursor"] = cursor
        return answer
    return {"status": "ok"}


def error_answer(err: ReplyError) -> dict[str, Any]:
    return {"error": {"code": int(err.code), "message": err.message}}


def event_args(evt: Evt) -> list[Any]:
    """The arguments of the Socket.IO ``EVENT`` an ``evt`` frame becomes."""
    meta: dict[str, Any] = {"room": evt.room, "id": evt.id, "ts": evt.ts}
    if evt.cursor is not None:
        meta["cursor"] = evt.cursor
    if evt.merged is not None:
        meta["merged"] = evt.merged
    args = [evt.event, evt.data, meta]
    if evt.cursor is not None:
        args.append(evt.cursor)
    return args
