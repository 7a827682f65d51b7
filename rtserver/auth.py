"""JWT verification (once, at the handshake) and authorization against claims (SPEC §4).

Keys: an HS256 secret, a PEM public key (RS256/ES256) and/or a JWKS file. The algorithm
is taken from the token header only if configuration accepts it *and* a key of that
family exists, so ``alg: none``, unknown algorithms and HS/RS key confusion are refused.
"""

from __future__ import annotations

import collections
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from protocol.catalog import Namespace
from protocol.errors import CloseCode, Disconnect, ReplyCode, ReplyError
from protocol.rooms import RoomKind, parse_room
from rtserver.config import AuthConfig

STAFF_ROLES = frozenset({"attendant", "nurse", "admin", "professional", "staff", "doctor"})
PATIENT_ROLE = "patient"
SERVICE_ROLE = "service"
DEFAULT_PRESENCE_GROUPS = ("attendants",)
#: Verified tokens remembered (until their ``exp``) to skip re-checking signatures.
VERIFIED_TOKENS_KEPT = 4096
_HMAC = {"HS256"}
_ASYMMETRIC = {"RS256", "ES256"}


class AuthError(Exception):
    """The handshake is refused: ``disconnect`` says with which code (and HTTP status)."""

    def __init__(self, disconnect: Disconnect, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.disconnect = disconnect
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class Claims:
    """The claims rtserver acts on, typed."""

    user: str
    tenant: str
    roles: frozenset[str]
    exp: int | None = None
    professional: str | None = None
    specialities: tuple[str, ...] = ()
    patient: str | None = None
    threads: frozenset[str] = frozenset()
    presence_groups: tuple[str, ...] = ()

    @property
    def is_staff(self) -> bool:
        return bool(self.roles & STAFF_ROLES)

    @property
    def is_patient(self) -> bool:
        return PATIENT_ROLE in self.roles and self.patient is not None

    @property
    def is_service(self) -> bool:
        return SERVICE_ROLE in self.roles

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Claims:
        def strings(name: str) -> tuple[str, ...]:
            value = payload.get(name) or []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise AuthError(CloseCode.UNAUTHENTICATED, f"claim {name!r} must be a list of strings")
            return tuple(value)

        user, tenant = payload.get("sub"), payload.get("healthUnitTaxId")
        roles = frozenset(strings("roles"))
        if not isinstance(user, str) or not user:
            raise AuthError(CloseCode.UNAUTHENTICATED, "token has no 'sub'")
        if SERVICE_ROLE not in roles and (not isinstance(tenant, str) or not tenant):
            raise AuthError(CloseCode.UNAUTHENTICATED, "token has no 'healthUnitTaxId'")
        groups = strings("presenceGroups")
        if not groups and roles & STAFF_ROLES:
            groups = DEFAULT_PRESENCE_GROUPS
        return cls(
            user=user,
            tenant=tenant or "",
            roles=roles,
            exp=payload.get("exp"),
            professional=payload.get("professionalTaxId"),
            specialities=strings("specialityIds"),
            patient=payload.get("patientTaxId"),
            threads=frozenset(strings("threadIds")),
            presence_groups=groups,
        )


class TokenVerifier:
    """Checks tokens against the configured keys. Construction reads key files once."""

    def __init__(self, config: AuthConfig) -> None:
        self._config = config
        self._verified: collections.OrderedDict[str, Claims] = collections.OrderedDict()
        self._public_key: Any = None
        self._jwks: jwt.PyJWKSet | None = None
        if config.public_key_file:
            self._public_key = Path(config.public_key_file).read_bytes()
        if config.jwks_file:
            self._jwks = jwt.PyJWKSet.from_dict(json.loads(Path(config.jwks_file).read_text()))
        if not (config.hs256_secret or self._public_key or self._jwks):
            raise ValueError("auth: configure hs256_secret, public_key_file or jwks_file")

    def _key_for(self, header: dict[str, Any]) -> Any:
        alg = header.get("alg")
        if alg not in self._config.algorithms or alg not in _HMAC | _ASYMMETRIC:
            raise AuthError(CloseCode.UNAUTHENTICATED, f"algorithm {alg!r} is not accepted")
        if alg in _HMAC:
            if not self._config.hs256_secret:
                raise AuthError(CloseCode.UNAUTHENTICATED, "HS256 tokens are not accepted")
            return self._config.hs256_secret
        if self._jwks is not None and header.get("kid"):
            try:
                return self._jwks[header["kid"]].key
            except KeyError:
                raise AuthError(CloseCode.UNAUTHENTICATED, "unknown key id") from None
        if self._public_key is not None:
            return self._public_key
        raise AuthError(CloseCode.UNAUTHENTICATED, f"no key for {alg} tokens")

    def verify(self, token: str) -> Claims:
        """Verified claims, or ``AuthError`` (expired tokens get ``TOKEN_EXPIRED``).

        Verified tokens are remembered until they expire (a service publishing with the
        same token does not pay a signature check per request).
        """
        claims = self._verified.get(token)
        if claims is not None and (claims.exp is None or claims.exp + self._config.leeway_s > time.time()):
            return claims
        claims = self._verify(token)
        self._verified[token] = claims
        if len(self._verified) > VERIFIED_TOKENS_KEPT:
            self._verified.popitem(last=False)
        return claims

    def _verify(self, token: str) -> Claims:
        try:
            header = jwt.get_unverified_header(token)
            key = self._key_for(header)
            payload = jwt.decode(
                token,
                key,
                algorithms=[header["alg"]],
                leeway=self._config.leeway_s,
                issuer=self._config.issuer or None,
                audience=self._config.audience or None,
                options={"require": ["exp", "sub"], "verify_aud": bool(self._config.audience)},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(CloseCode.TOKEN_EXPIRED, "token expired") from None
        except jwt.PyJWTError as exc:
            raise AuthError(CloseCode.UNAUTHENTICATED, f"invalid token: {exc}") from None
        return Claims.from_payload(payload)


def mint_token(secret: str, claims: dict[str, Any], ttl_s: int = 3600) -> str:
    """An HS256 token with ``exp = now + ttl_s`` (development, tests, benchmarks)."""
    payload = {"iat": int(time.time()), "exp": int(time.time()) + ttl_s, **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


def admit(claims: Claims, ns: Namespace) -> None:
    """Whether the token may use namespace ``ns`` (hub: staff; portal: patients)."""
    if ns is Namespace.HUB and not claims.is_staff:
        raise AuthError(CloseCode.FORBIDDEN, "the hub namespace admits staff tokens only", 403)
    if ns is Namespace.PORTAL and not claims.is_patient:
        raise AuthError(CloseCode.FORBIDDEN, "the portal namespace admits patient tokens only", 403)


def auto_rooms(claims: Claims, ns: Namespace) -> list[str]:
    """The rooms a connection joins on connect, from its claims."""
    rooms = [f"user:{claims.user}"]
    if ns is Namespace.PORTAL:
        rooms.append(f"patient:{claims.patient}")
        return rooms
    rooms.insert(0, f"tenant:{claims.tenant}")
    if claims.professional:
        rooms.append(f"professional:{claims.professional}")
    rooms.extend(f"speciality:{s}" for s in claims.specialities)
    return rooms


#: The rooms of one person: what a device of theirs is pushed for.
PERSONAL_KINDS = frozenset({RoomKind.USER, RoomKind.PATIENT, RoomKind.PROFESSIONAL})


def personal_rooms(claims: Claims, ns: Namespace) -> list[str]:
    """The token's own rooms that belong to its user alone (``user:`` first)."""
    return [room for room in auto_rooms(claims, ns) if parse_room(room)[0] in PERSONAL_KINDS]


_STAFF_ONLY = frozenset(
    {RoomKind.TENANT, RoomKind.SPECIALITY, RoomKind.SCHEDULE, RoomKind.PROFESSIONAL, RoomKind.PRESENCE}
)


def authorize_room(claims: Claims, ns: Namespace, name: str) -> RoomKind:
    """Raise ``ReplyError(FORBIDDEN)`` unless the connection may subscribe to ``name``.

    Rooms are always within the token's tenant (the caller scopes the key), so naming
    another tenant's room can only ever reach the caller's own tenant's room of that name.
    """
    kind, ident = parse_room(name)
    allowed = True
    if kind is RoomKind.PROBE:
        allowed = True
    elif kind is RoomKind.SESSION:
        allowed = False
    elif kind is RoomKind.TENANT:
        allowed = ns is Namespace.HUB and ident == claims.tenant
    elif kind is RoomKind.USER:
        allowed = ident == claims.user
    elif kind in _STAFF_ONLY:
        allowed = ns is Namespace.HUB
    elif kind is RoomKind.PATIENT:
        allowed = ns is Namespace.HUB or ident == claims.patient
    elif kind is RoomKind.THREAD:
        allowed = ns is Namespace.HUB or ident in claims.threads
    if not allowed:
        raise ReplyError(ReplyCode.FORBIDDEN, f"not allowed to subscribe to {name!r}")
    return kind


def bearer_token(headers: dict[str, str], query: dict[str, str], subprotocols: list[str]) -> str | None:
    """The token from ``Authorization: Bearer``, ``access_token`` or a ``bearer.`` subprotocol."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    if query.get("access_token"):
        return query["access_token"]
    for proto in subprotocols:
        if proto.startswith("bearer."):
            return proto[7:]
    return None
