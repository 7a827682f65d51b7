"""JWT verification (once, at the handshake) and authorization against claims (docs/protocol.md, Room authorization).

Keys: an HS256 secret, a PEM public key (RS256/ES256) and/or a JWKS file. The algorithm
is taken from the token header only if configuration accepts it *and* a key of that
family exists, so ``alg: none``, unknown algorithms, HS/RS key confusion and an ES256
token naming an RSA key (or the reverse) are refused. Claims are checked against their
documented formats before anything uses them (ids become room names and Redis keys).
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from protocol.catalog import Namespace
from protocol.errors import CloseCode, Disconnect, ReplyCode, ReplyError
from protocol.rooms import MAX_ID_LENGTH, RoomKind, is_identifier, is_room_id, parse_room
from rtserver.backends.config import AuthConfig

log = structlog.get_logger("rtserver.auth")

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


def _refused_claim(name: str, what: str) -> AuthError:
    """A claim that breaks its documented format: 4403 / 403 naming it."""
    return AuthError(CloseCode.FORBIDDEN, f"claim {name!r} {what}", 403)


#: The format of the claims that name rooms (``protocol.rooms.is_room_id``), as told to clients.
_ROOM_ID_FORMAT = f"1-{MAX_ID_LENGTH} letters, digits or _ . @ + | : = ~ -"
#: Most items a list claim (roles, specialities, threads, presence groups) may hold.
MAX_CLAIM_ITEMS = 256
#: Longest role name, characters.
MAX_ROLE_LENGTH = 64


class _Payload:
    """Reads typed claims out of a verified payload, refusing any that breaks its format."""

    __slots__ = ("_payload",)

    def __init__(self, payload: dict[str, Any]) -> None:
        self._payload = payload

    def room_id(self, name: str) -> str | None:
        """An optional claim that names a room (``user:{sub}``, ``patient:{patientTaxId}``…)."""
        value = self._payload.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not is_room_id(value):
            raise _refused_claim(name, f"must be {_ROOM_ID_FORMAT}")
        return value

    def room_ids(self, name: str) -> tuple[str, ...]:
        """A list claim whose items name rooms."""
        values = self.strings(name)
        for value in values:
            if not is_room_id(value):
                raise _refused_claim(name, f"holds {value[:40]!r}: ids are {_ROOM_ID_FORMAT}")
        return values

    def strings(self, name: str, max_length: int = MAX_ID_LENGTH) -> tuple[str, ...]:
        value = self._payload.get(name)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and 0 < len(v) <= max_length for v in value):
            raise _refused_claim(name, f"must be a list of strings of 1-{max_length} characters")
        if len(value) > MAX_CLAIM_ITEMS:
            raise _refused_claim(name, f"holds more than {MAX_CLAIM_ITEMS} items")
        return tuple(value)


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
        """The claims of a verified payload: ``AuthError`` 4401 when ``sub`` (or, but for
        services, ``healthUnitTaxId``) is missing, 4403 naming the claim when one breaks its
        format (docs/protocol.md, Token claims)."""
        claims = _Payload(payload)
        if not payload.get("sub"):
            raise AuthError(CloseCode.UNAUTHENTICATED, "token has no 'sub'")
        user = claims.room_id("sub")
        roles = _shared(frozenset(claims.strings("roles", MAX_ROLE_LENGTH)))
        tenant = payload.get("healthUnitTaxId")
        if tenant is None or tenant == "":
            if SERVICE_ROLE not in roles:
                raise AuthError(CloseCode.UNAUTHENTICATED, "token has no 'healthUnitTaxId'")
            tenant = ""
        elif not isinstance(tenant, str) or not is_identifier(tenant):
            raise _refused_claim("healthUnitTaxId", f"must be 1-{MAX_ID_LENGTH} letters, digits or _ . @ -")
        groups = claims.room_ids("presenceGroups")
        if not groups and roles & STAFF_ROLES:
            groups = DEFAULT_PRESENCE_GROUPS
        return cls(
            user=user,
            tenant=tenant,
            roles=roles,
            exp=payload.get("exp"),
            professional=claims.room_id("professionalTaxId"),
            specialities=claims.room_ids("specialityIds"),
            patient=claims.room_id("patientTaxId"),
            threads=_shared(frozenset(claims.room_ids("threadIds"))),
            presence_groups=groups,
        )


#: Sets of claims many tokens carry alike (roles; no threads), one object each for all
#: the connections that hold them (a frozenset is ~200 bytes).
_SHARED_SETS: dict[frozenset[str], frozenset[str]] = {}
_SHARED_SETS_KEPT = 1024


def _shared(values: frozenset[str]) -> frozenset[str]:
    """The one kept object equal to ``values`` (itself when new and the table is full)."""
    shared = _SHARED_SETS.get(values)
    if shared is None:
        shared = values
        if len(_SHARED_SETS) < _SHARED_SETS_KEPT:
            _SHARED_SETS[values] = values
    return shared


def _algorithm_of(key: Any) -> str | None:
    """The JWS algorithm a public key verifies, by its type (ES256: a P-256 key only)."""
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    return None


class TokenVerifier:
    """Checks tokens against the configured keys. Construction reads key files once.

    A token is verified only with a key of its header's algorithm: the HS256 secret for
    HS256, a JWKS key (by ``kid``) whose own algorithm is the token's, or the public key
    when it is of the token's algorithm's family. Anything else, and any failure of the
    verification itself, is a 4401 with the reason; nothing a token holds raises further.
    """

    def __init__(self, config: AuthConfig) -> None:
        self._config = config
        self._verified: collections.OrderedDict[str, Claims] = collections.OrderedDict()
        self._public_key: Any = None
        self._jwks: jwt.PyJWKSet | None = None
        if config.public_key_file:
            self._public_key = serialization.load_pem_public_key(Path(config.public_key_file).read_bytes())
            if _algorithm_of(self._public_key) is None:
                raise ValueError("auth.public_key_file: an RSA or a P-256 (ES256) public key is needed")
        if config.jwks_file:
            self._jwks = jwt.PyJWKSet.from_dict(json.loads(Path(config.jwks_file).read_text()))
        if not (config.hs256_secret or self._public_key or self._jwks):
            raise ValueError("auth: configure hs256_secret, public_key_file or jwks_file")

    def _key_for(self, header: dict[str, Any]) -> Any:
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self._config.algorithms or alg not in _HMAC | _ASYMMETRIC:
            raise AuthError(CloseCode.UNAUTHENTICATED, f"algorithm {str(alg)[:20]!r} is not accepted")
        if kid is not None and not isinstance(kid, str):
            raise AuthError(CloseCode.UNAUTHENTICATED, "malformed token header: 'kid' is not a string")
        if alg in _HMAC:
            if not self._config.hs256_secret:
                raise AuthError(CloseCode.UNAUTHENTICATED, "HS256 tokens are not accepted")
            return self._config.hs256_secret
        if self._jwks is not None and kid:
            jwk = next((k for k in self._jwks.keys if k.key_id == kid), None)
            if jwk is None:
                raise AuthError(CloseCode.UNAUTHENTICATED, "unknown key id")
            if jwk.algorithm_name != alg:
                raise AuthError(CloseCode.UNAUTHENTICATED, f"key {kid[:40]!r} is not a key for {alg} tokens")
            return jwk.key
        if self._public_key is not None:
            if _algorithm_of(self._public_key) != alg:
                raise AuthError(CloseCode.UNAUTHENTICATED, f"the configured public key is not a key for {alg} tokens")
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
        except AuthError:
            raise
        except jwt.ExpiredSignatureError:
            raise AuthError(CloseCode.TOKEN_EXPIRED, "token expired") from None
        except jwt.PyJWTError as exc:
            raise AuthError(CloseCode.UNAUTHENTICATED, f"invalid token: {exc}") from None
        except Exception as exc:  # a token no check foresaw: refused, never raised further
            log.info("token_unverifiable", error=f"{type(exc).__name__}: {exc}"[:200])
            raise AuthError(CloseCode.UNAUTHENTICATED, "invalid token") from None
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


def admission(verifier: TokenVerifier, headers: dict[str, str], query: dict[str, str], subprotocols: list[str],
              ns: Namespace | None, serves: Callable[[str], bool] | None = None) -> Claims:
    """What every transport and endpoint asks first: the verified claims of the request's
    token (``bearer_token``), admitted to namespace ``ns`` (None: no namespace, as for
    ``/v1/publish``); ``AuthError`` when there is no token or it is refused. A connection
    also names ``serves`` (``Bus.serves``): a tenant this node does not read is refused
    with 4004 / 421, for the balancer to route it again."""
    token = bearer_token(headers, query, subprotocols)
    if token is None:
        raise AuthError(CloseCode.UNAUTHENTICATED, "no token")
    claims = verifier.verify(token)
    if ns is not None:
        admit(claims, ns)
    if serves is not None and not serves(claims.tenant):
        raise AuthError(CloseCode.SERVED_ELSEWHERE, "this node does not serve the token's tenant: connect through the"
                        " balancer", 421)
    return claims


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
