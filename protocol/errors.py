"""Everything a client can be told went wrong: reply errors and disconnects (close codes).

Two kinds, as in centrifuge's ``disconnect.go``:

* a *reply error* answers one command (``{"op":"error","ref":…,"code":…}``); the
  connection stays open. ``temporary`` says whether the same command may succeed later.
* a *disconnect* ends the connection with a WebSocket close code (an SSE ``close``
  event, a ``"close"`` member in a poll answer). Each code carries the client's action.

Code ranges: reply errors are 1xx (client mistakes) and 2xx (temporary conditions);
close codes are 4000–4099 (reconnect and resume), 4100–4199 (refresh the token, then
reconnect) and 4400–4499 (stop: reconnecting with the same credentials cannot help).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ReplyCode(enum.IntEnum):
    BAD_FRAME = 100
    BAD_ROOM = 101
    FORBIDDEN = 103
    UNKNOWN_EVENT = 104
    BAD_PAYLOAD = 105
    NOT_SUBSCRIBED = 106
    TOO_MANY_ROOMS = 108
    RATE_LIMITED = 200
    UNAVAILABLE = 201


#: Codes whose command may succeed if retried later.
TEMPORARY_CODES = frozenset({ReplyCode.RATE_LIMITED, ReplyCode.UNAVAILABLE})


class ReplyError(Exception):
    """A command failed; the connection goes on. Raised by validators, rendered as ``error``."""

    def __init__(self, code: ReplyCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def temporary(self) -> bool:
        return self.code in TEMPORARY_CODES


class ClientAction(enum.StrEnum):
    """What a client must do after a close."""

    RESUME = "resume"  # reconnect (with backoff) and resume from the last cursor
    REFRESH_TOKEN = "refresh_token"  # get a fresh token, then reconnect and resume
    STOP = "stop"  # do not reconnect with the same credentials


@dataclass(frozen=True, slots=True)
class Disconnect:
    code: int
    reason: str
    action: ClientAction


class CloseCode:
    """The close codes of the wire contract (docs/protocol.md, Close codes), with the action of each."""

    NORMAL = Disconnect(1000, "normal", ClientAction.STOP)
    GOING_AWAY = Disconnect(1001, "going away", ClientAction.RESUME)
    PROTOCOL_ERROR = Disconnect(1002, "protocol error", ClientAction.STOP)
    INVALID_PAYLOAD = Disconnect(1007, "invalid payload", ClientAction.STOP)
    MESSAGE_TOO_BIG = Disconnect(1009, "message too big", ClientAction.STOP)
    INTERNAL_ERROR = Disconnect(1011, "internal error", ClientAction.RESUME)
    TRY_AGAIN_LATER = Disconnect(1013, "try again later", ClientAction.RESUME)
    SERVER_DRAINING = Disconnect(4000, "server draining", ClientAction.RESUME)
    SLOW_CONSUMER = Disconnect(4001, "slow consumer", ClientAction.RESUME)
    RATE_LIMITED = Disconnect(4002, "rate limited", ClientAction.RESUME)
    IDLE_TIMEOUT = Disconnect(4003, "idle timeout", ClientAction.RESUME)
    SERVED_ELSEWHERE = Disconnect(4004, "tenant served elsewhere", ClientAction.RESUME)
    TOKEN_EXPIRED = Disconnect(4100, "token expired", ClientAction.REFRESH_TOKEN)
    UNAUTHENTICATED = Disconnect(4401, "unauthenticated", ClientAction.STOP)
    FORBIDDEN = Disconnect(4403, "forbidden", ClientAction.STOP)

    @classmethod
    def all(cls) -> list[Disconnect]:
        return [v for v in vars(cls).values() if isinstance(v, Disconnect)]

    @classmethod
    def by_code(cls, code: int) -> Disconnect:
        """The disconnect for ``code``; unknown codes in the 4000-range resume, others stop."""
        for d in cls.all():
            if d.code == code:
                return d
        action = ClientAction.RESUME if 4000 <= code < 4100 else ClientAction.STOP
        return Disconnect(code, "unknown", action)


def action_for_code(code: int) -> ClientAction:
    """The client action for any close code, by range."""
    return CloseCode.by_code(code).action
