"""Commands over HTTP: ``POST /{ns}/commands`` from SSE and long-poll clients (docs/protocol.md, Commands by HTTP).

The body is one client frame or a JSON array of them. ``emit`` and ``ping`` are the
commands here: rooms are chosen by reopening the stream or the poll with new ``rooms``
and the last cursor, so ``sub`` / ``unsub`` are refused. Each emit is checked as on a
WebSocket (the catalog, the namespace, the payload; its room must be one the token may
use) and answered as a WebSocket would, with its ``ack`` or ``error`` frame (an array of
them for an array). Any node serves any command:

* ``typing:*`` and ``mark_alert_read`` are carried out on the node that got them (the
  typing actor publishes through the bus; the backbone's inbound stream is shared);
* ``heartbeat`` and ``presence:*`` belong to wherever the session is served: they are
  forwarded, as the internal ``session.command`` event to the room ``session:{id}`` of
  ``?session=`` (the id the stream's ``hello`` or the poll's answer gave), through the
  bus to every node, and the session's SSE stream or poll applies them (for its own
  user only). Acknowledged once forwarded; a session served nowhere ignores them.
"""

from __future__ import annotations

import msgspec

from actors.connection import SESSION_COMMANDS, ConnectionServices, emit_anywhere, session_room
from protocol.catalog import Namespace
from protocol.envelope import Envelope
from protocol.errors import ReplyCode, ReplyError
from protocol.frames import JSON, Ack, ClientFrame, Emit, Ping, Pong, ServerFrame, error_frame
from protocol.limits import decode_bounded
from protocol.rooms import is_identifier
from rtserver.backends.auth import Claims, authorize_room

#: Most frames one request may carry.
MAX_COMMANDS = 64

_decode_many = msgspec.json.Decoder(list[ClientFrame]).decode


def decode_commands(body: bytes) -> tuple[list[ClientFrame], bool]:
    """The frames of a body, and whether it was an array; raises ``ReplyError(BAD_FRAME)``."""
    if body.lstrip()[:1] != b"[":
        return [JSON.decode(body)], False
    try:
        frames = decode_bounded(_decode_many, body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ReplyError(ReplyCode.BAD_FRAME, str(exc)) from None
    if len(frames) > MAX_COMMANDS:
        raise ReplyError(ReplyCode.BAD_FRAME, f"more than {MAX_COMMANDS} commands in one request")
    return frames, True


async def run_command(
    services: ConnectionServices, claims: Claims, ns: Namespace, session: str | None, frame: ClientFrame,
) -> ServerFrame:
    """Carry out one command; its ``ack`` (``pong``) or ``error`` frame."""
    try:
        if isinstance(frame, Ping):
            return Pong(ref=frame.ref)
        if not isinstance(frame, Emit):
            raise ReplyError(ReplyCode.BAD_FRAME, "only emit and ping go by HTTP: to change rooms, "
                                                  "reopen the stream or poll with the new rooms and your cursor")
        services.catalog.check_emit(ns, frame.event, frame.data, frame.room,
                                    lambda room: authorize_room(claims, ns, room))
        if frame.event in SESSION_COMMANDS:
            if not (session and is_identifier(session)):
                raise ReplyError(ReplyCode.BAD_FRAME, f"{frame.event!r} needs ?session=<the session of your stream>")
            if claims.presence_groups and ns is Namespace.HUB:
                await services.bus.publish_ephemeral(Envelope(
                    event="session.command", tenant=claims.tenant, rooms=[session_room(session)],
                    data={"event": frame.event, "user": claims.user}))
        else:
            await emit_anywhere(services, claims, session or "", frame)
        return Ack(ref=frame.ref, room=frame.room, event=frame.event)
    except ReplyError as err:
        return error_frame(err, frame.ref)
