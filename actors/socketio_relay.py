"""Relay of an Engine.IO long-polling request to the node holding its session
(``protocol.polling_relay``): the asking side, one request at a time.

Contract
--------
Mailbox
    Its reply room (``session:{reply id}`` under ``RELAY_TENANT``), joined before the
    request is published; the first reply is kept (never blocks).
Owns
    That room's membership, for the request's life.
Replies
    The holder's ``RelayReply``, or None when none came within the deadline (no node
    holds the session, the bus failed, or the holder was too slow): the caller answers
    as for an unknown session, and the client starts a new one (and recovers).
Failure
    A bus error or a reply that does not decode is None, logged; never raised.
Blocking
    On the bus's publish and on the reply, both within the deadline.
"""

from __future__ import annotations

import secrets

import msgspec
import structlog
import trio

from actors.connection import ConnectionServices, session_room
from protocol.envelope import Envelope
from protocol.errors import ReplyError
from protocol.frames import Evt
from protocol.polling_relay import RELAY_TENANT, REPLY_EVENT, REQUEST_EVENT, Method, Relayed, RelayReply
from protocol.rooms import room_key
from protocol.wires import FRAMES

log = structlog.get_logger("rtserver.socketio")


def relay_room(services: ConnectionServices, room_id: str):
    """The room a relayed request (the session's id) or its reply (the reply's id) goes to."""
    return services.registry.open_room(room_key(RELAY_TENANT, session_room(room_id)))


async def relay(services: ConnectionServices, sid: str, method: Method, body: str = "", *,
                timeout_s: float) -> RelayReply | None:
    """Relay ``method`` (and a POST's ``body``) to the node holding session ``sid``; its
    reply, or None when none came within ``timeout_s``."""
    reply_id = secrets.token_urlsafe(12)
    replies: list[dict] = []
    arrived = trio.Event()

    def on_reply(evt: Evt) -> None:
        replies.append(evt.data)
        arrived.set()

    room = relay_room(services, reply_id)
    room.add(reply_id, FRAMES, on_reply)
    services.metrics.socketio_relayed.labels(method.value).inc()
    try:
        with trio.move_on_after(timeout_s):
            await services.bus.publish_ephemeral(Envelope(
                event=REQUEST_EVENT, tenant=RELAY_TENANT, rooms=[session_room(sid)],
                data=msgspec.to_builtins(Relayed(method, reply_id, body))))
            await arrived.wait()
    except ReplyError as err:
        log.info("socketio_relay_failed", sid=sid, method=method.value, error=err.message)
    finally:
        room.remove(reply_id)
    if not replies:
        return None
    try:
        return msgspec.convert(replies[0], RelayReply)
    except msgspec.ValidationError as exc:
        log.warning("socketio_relay_reply_malformed", sid=sid, error=str(exc)[:200])
        return None


async def reply_to(services: ConnectionServices, sid: str, request: Relayed, reply: RelayReply) -> None:
    """Answer a relayed request of session ``sid`` (the holder's side); a bus error is
    logged (the asking node then answers as for an unknown session)."""
    try:
        await services.bus.publish_ephemeral(Envelope(
            event=REPLY_EVENT, tenant=RELAY_TENANT, rooms=[session_room(request.reply)],
            data=msgspec.to_builtins(reply)))
    except ReplyError as err:
        log.info("socketio_relay_reply_failed", sid=sid, error=err.message)


def relayed_request(sid: str, evt: Evt) -> Relayed | None:
    """The request a relay room's event carries (None, logged, when it does not decode)."""
    try:
        return msgspec.convert(evt.data, Relayed)
    except msgspec.ValidationError as exc:
        log.warning("socketio_relay_request_malformed", sid=sid, error=str(exc)[:200])
        return None
