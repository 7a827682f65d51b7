"""Webhook deliveries, sans-IO: the body of an event's delivery, and its signature.

A delivery is ``POST`` ed with the JSON body of ``delivery_body`` and these headers:

* ``Webhook-Id``: the event's id (the same on every retry and replay: deduplicate on it);
* ``Webhook-Timestamp``: seconds since the epoch when this attempt was signed;
* ``Webhook-Signature``: ``v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``.

A receiver recomputes the HMAC over the timestamp header, a dot and the raw body bytes,
compares in constant time, and refuses timestamps too far from its clock (replays);
``verify`` is that check (docs/webhooks.md has it for other languages).
"""

from __future__ import annotations

import hashlib
import hmac

import msgspec

from protocol.envelope import StoredEvent

#: Seconds a receiver should accept between the signature's timestamp and its clock.
DEFAULT_TOLERANCE_S = 300

_encode = msgspec.json.Encoder().encode


def delivery_body(event: StoredEvent) -> bytes:
    """What a subscriber receives: the event as published, with its id and time."""
    envelope = event.envelope
    return _encode({"id": event.id, "event": envelope.event, "tenant": envelope.tenant, "rooms": envelope.rooms,
                    "ts": event.ts, "data": envelope.data})


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def signed_headers(secret: str, event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {"content-type": "application/json", "webhook-id": event_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(secret, timestamp, body)}


def verify(secret: str, headers: dict[str, str], body: bytes, now: float,
           tolerance_s: float = DEFAULT_TOLERANCE_S) -> bool:
    """Whether ``headers`` (lower-case names) sign ``body`` with ``secret``, recently."""
    try:
        timestamp = int(headers["webhook-timestamp"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, given.strip())
               for given in headers.get("webhook-signature", "").split(","))
