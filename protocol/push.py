"""Mobile push, sans-IO: what a notice says, the two providers' request bodies and token
claims, and what their answers mean (FCM HTTP v1, APNs provider API).

A notice is discreet: a fixed title and body from configuration, and ids only (the event
type, the event id, the tenant). Nothing of the event's payload leaves for a provider; the
app opens, connects and reads the event from its cursor.
"""

from __future__ import annotations

import enum
import re

import msgspec

#: The OAuth scope of FCM's send API.
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
#: The grant of a service account's signed assertion (RFC 7523).
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: Seconds an FCM assertion is valid (Google accepts at most an hour).
ASSERTION_LIFETIME_S = 3600
#: APNs refuses provider tokens older than an hour and refreshes more often than every
#: 20 minutes; one is used for 50 minutes.
APNS_TOKEN_LIFETIME_S = 3000
#: Largest APNs payload, bytes.
APNS_MAX_PAYLOAD = 4096
#: Seconds APNs keeps a notice for a device that is off.
APNS_EXPIRATION_S = 86_400

_FCM_TOKEN = re.compile(r"^[A-Za-z0-9_:.\-]{16,4096}$")
_APNS_TOKEN = re.compile(r"^(?:[0-9a-fA-F]{2}){16,200}$")


class Platform(enum.StrEnum):
    FCM = "fcm"
    APNS = "apns"


class Registration(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The body of ``POST /{ns}/push/devices``."""

    platform: Platform
    token: str

    def __post_init__(self) -> None:
        if self.platform is Platform.APNS and not _APNS_TOKEN.match(self.token):
            raise ValueError("an APNs device token is hexadecimal (32 bytes or more)")
        if self.platform is Platform.FCM and not _FCM_TOKEN.match(self.token):
            raise ValueError("an FCM registration token is 16 or more of A-Z a-z 0-9 _ : . -")


class Device(msgspec.Struct, frozen=True):
    """A registered device: whose it is, and the personal rooms it is pushed for."""

    platform: Platform
    user: str
    rooms: list[str]
    #: Registration time, ms (the oldest is forgotten first).
    at: int


class Notice(msgspec.Struct, frozen=True):
    """What a push carries besides the fixed text: ids only."""

    event: str
    id: str
    tenant: str


class Verdict(enum.Enum):
    SENT = "sent"
    #: The provider says the device token is no longer valid: forget the device.
    INVALID_TOKEN = "invalid_token"
    #: Worth another attempt later (a timeout, 429, 5xx).
    RETRY = "retry"
    #: The provider refused our credentials as expired: renew them, then try again.
    RENEW_CREDENTIALS = "renew_credentials"
    #: Final for this device and notice (a malformed request, a configuration fault).
    FAILED = "failed"


def fcm_message(token: str, notice: Notice, title: str, body: str) -> bytes:
    """The body of ``messages:send``: a visible notification and the ids as string data."""
    return msgspec.json.encode({"message": {
        "token": token,
        "notification": {"title": title, "body": body},
        "data": {"event": notice.event, "id": notice.id, "tenant": notice.tenant},
    }})


def fcm_assertion_claims(client_email: str, token_uri: str, now: int) -> dict:
    """The claims a service account signs (RS256) to get an access token."""
    return {"iss": client_email, "scope": FCM_SCOPE, "aud": token_uri, "iat": now,
            "exp": now + ASSERTION_LIFETIME_S}


class _FcmStatus(msgspec.Struct):
    status: str = ""
    details: list[dict] = msgspec.field(default_factory=list)


class _FcmError(msgspec.Struct):
    error: _FcmStatus = msgspec.field(default_factory=_FcmStatus)


def fcm_verdict(status: int, body: bytes) -> tuple[Verdict, str]:
    """What an FCM answer means, and a short reason (its error code)."""
    if 200 <= status < 300:
        return Verdict.SENT, "sent"
    try:
        error = msgspec.json.decode(body, type=_FcmError).error
    except msgspec.MsgspecError:
        error = _FcmStatus()
    codes = [d.get("errorCode") for d in error.details if isinstance(d, dict) and d.get("errorCode")]
    reason = codes[0] if codes else error.status or str(status)
    if reason == "UNREGISTERED" or status == 404 or (status == 400 and reason == "INVALID_ARGUMENT" and codes):
        # INVALID_ARGUMENT with an FcmError detail is the token; with only a BadRequest
        # detail, a field of our message (a fault to log, not the device's).
        return Verdict.INVALID_TOKEN, reason
    if status == 401:
        return Verdict.RENEW_CREDENTIALS, reason
    if status == 429 or status >= 500:
        return Verdict.RETRY, reason
    return Verdict.FAILED, reason


def apns_payload(notice: Notice, title: str, body: str) -> bytes:
    return msgspec.json.encode({"aps": {"alert": {"title": title, "body": body}},
                                "event": notice.event, "id": notice.id, "tenant": notice.tenant})


def apns_token_claims(team_id: str, now: int) -> dict:
    """The claims of a provider token (ES256, header ``kid`` = the key id)."""
    return {"iss": team_id, "iat": now}


class _ApnsError(msgspec.Struct):
    reason: str = ""


def apns_verdict(status: int, body: bytes) -> tuple[Verdict, str]:
    """What an APNs answer means, and its ``reason``."""
    if status == 200:
        return Verdict.SENT, "sent"
    try:
        reason = msgspec.json.decode(body, type=_ApnsError).reason or str(status)
    except msgspec.MsgspecError:
        reason = str(status)
    if status == 410 or reason in ("BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered"):
        return Verdict.INVALID_TOKEN, reason
    if reason == "ExpiredProviderToken":
        return Verdict.RENEW_CREDENTIALS, reason
    if status == 429 or status >= 500:
        return Verdict.RETRY, reason
    return Verdict.FAILED, reason
