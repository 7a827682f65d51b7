"""Local servers standing in for FCM and APNs in the push tests: real TLS (a test CA),
HTTP/2 where the client offers it (hypercorn), and the checks the providers make of a
request's shape and credentials. A request that fails a check is refused as the provider
would and noted in ``violations`` (tests assert there are none)."""

from __future__ import annotations

import datetime
import ipaddress
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

import jwt
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from protocol.push import APNS_MAX_PAYLOAD, FCM_SCOPE, JWT_BEARER_GRANT

#: The ids a notice may carry, and nothing else.
NOTICE_KEYS = {"event", "id", "tenant"}


def _pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class Credentials:
    """A test CA with a certificate for 127.0.0.1, a service account key (RSA) and an APNs
    signing key (P-256), as files where the configuration names files."""

    directory: Path
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    fcm_key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    fcm_key_id: str = field(default_factory=lambda: secrets.token_hex(20))
    apns_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    apns_key_file: str = ""

    def __post_init__(self) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rtserver test CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                           data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                           crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                            x509.DNSName("localhost")]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        files = {"ca.pem": ca.public_bytes(serialization.Encoding.PEM),
                 "cert.pem": cert.public_bytes(serialization.Encoding.PEM), "key.pem": _pem(key),
                 "AuthKey.p8": _pem(self.apns_key)}
        for name, content in files.items():
            (self.directory / name).write_bytes(content)
        self.ca_file, self.cert_file, self.key_file, self.apns_key_file = (
            str(self.directory / n) for n in ("ca.pem", "cert.pem", "key.pem", "AuthKey.p8"))

    def service_account_file(self, token_uri: str, project: str, client_email: str) -> str:
        path = self.directory / "service-account.json"
        path.write_text(json.dumps({
            "type": "service_account", "project_id": project, "private_key_id": self.fcm_key_id,
            "private_key": _pem(self.fcm_key).decode(), "client_email": client_email, "token_uri": token_uri}))
        return str(path)


@dataclass
class Request:
    method: str
    path: str
    http_version: str
    headers: dict[str, str]
    body: bytes


class StandIn:
    """A TLS server on a loopback port answering with ``answer``."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self.url = ""
        self.requests: list[Request] = []
        self.violations: list[str] = []

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        config = HypercornConfig()
        config.bind = ["127.0.0.1:0"]
        config.certfile, config.keyfile = self.credentials.cert_file, self.credentials.key_file
        config.accesslog = config.errorlog = None

        async def run(task_status) -> None:
            await serve(self._asgi, config, task_status=task_status)

        async with trio.open_nursery() as nursery:
            [self.url] = await nursery.start(run)
            task_status.started()

    async def _asgi(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client gave up (its timeout) before sending the whole request
            body += message.get("body", b"")
            more = message.get("more_body", False)
        request = Request(scope["method"], scope["path"], scope["http_version"],
                          {k.decode().lower(): v.decode() for k, v in scope["headers"]}, body)
        self.requests.append(request)
        status, headers, answer = self.answer(request)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), *headers]})
        await send({"type": "http.response.body", "body": json.dumps(answer).encode() if answer is not None else b""})

    def refuse(self, status: int, answer: dict, violation: str) -> tuple[int, list, dict]:
        self.violations.append(violation)
        return status, [], answer

    def answer(self, request: Request) -> tuple[int, list, dict | None]:
        raise NotImplementedError


class FcmStandIn(StandIn):
    """Google's OAuth token endpoint (``/token``) and the FCM HTTP v1 send API."""

    project = "rt-test-project"
    client_email = "rtserver-push@rt-test-project.iam.gserviceaccount.com"

    def __init__(self, credentials: Credentials) -> None:
        super().__init__(credentials)
        self.issued: set[str] = set()
        self.token_requests = 0
        #: Accepted messages (the ``message`` object of each send).
        self.messages: list[dict] = []
        #: Registration tokens answered 404 UNREGISTERED / 400 INVALID_ARGUMENT.
        self.unregistered: set[str] = set()
        self.malformed: set[str] = set()
        #: Statuses answered to the next sends, in order (then the real answer).
        self.script: list[int] = []

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def service_account_file(self) -> str:
        return self.credentials.service_account_file(self.token_uri, self.project, self.client_email)

    def revoke(self) -> None:
        """Every access token issued so far stops working (the next send gets 401)."""
        self.issued.clear()

    def answer(self, request: Request) -> tuple[int, list, dict | None]:
        if request.path == "/token":
            return self._token(request)
        if request.path == f"/v1/projects/{self.project}/messages:send" and request.method == "POST":
            return self._send(request)
        return self.refuse(404, {"error": {"code": 404, "status": "NOT_FOUND"}}, f"unknown path {request.path}")

    def _token(self, request: Request) -> tuple[int, list, dict | None]:
        self.token_requests += 1
        if request.headers.get("content-type") != "application/x-www-form-urlencoded":
            return self.refuse(400, {"error": "invalid_request"}, "token request is not a form")
        form = dict(parse_qsl(request.body.decode()))
        if form.get("grant_type") != JWT_BEARER_GRANT:
            return self.refuse(400, {"error": "unsupported_grant_type"}, f"grant {form.get('grant_type')}")
        try:
            header = jwt.get_unverified_header(form.get("assertion", ""))
            claims = jwt.decode(form["assertion"], self.credentials.fcm_key.public_key(), algorithms=["RS256"],
                                audience=self.token_uri, issuer=self.client_email,
                                options={"require": ["iat", "exp", "iss", "aud", "scope"]})
        except (jwt.PyJWTError, KeyError) as exc:
            return self.refuse(400, {"error": "invalid_grant"}, f"assertion refused: {exc}")
        if header.get("kid") != self.credentials.fcm_key_id or claims["scope"] != FCM_SCOPE:
            return self.refuse(400, {"error": "invalid_scope"}, f"assertion kid/scope: {header} {claims}")
        if claims["exp"] - claims["iat"] > 3600:
            return self.refuse(400, {"error": "invalid_grant"}, "assertion lives over an hour")
        token = secrets.token_urlsafe(24)
        self.issued.add(token)
        return 200, [], {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}

    def _send(self, request: Request) -> tuple[int, list, dict | None]:
        authorization = request.headers.get("authorization", "")
        if not authorization.startswith("Bearer ") or authorization[7:] not in self.issued:
            return 401, [], {"error": {"code": 401, "status": "UNAUTHENTICATED",
                                       "message": "Request had invalid authentication credentials."}}
        if self.script:
            status = self.script.pop(0)
            return status, [], {"error": {"code": status, "status": "UNAVAILABLE"}}
        try:
            message = json.loads(request.body)["message"]
            token, data, notification = message["token"], message["data"], message["notification"]
        except (ValueError, KeyError, TypeError) as exc:
            return self.refuse(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT"}}, f"message shape: {exc}")
        if set(message) - {"token", "data", "notification", "android", "apns", "webpush", "fcm_options"}:
            return self.refuse(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT"}}, f"fields {set(message)}")
        if not all(isinstance(v, str) for v in data.values()) or set(data) != NOTICE_KEYS:
            return self.refuse(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT"}}, f"data {data}")
        if set(notification) != {"title", "body"}:
            return self.refuse(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT"}}, f"notification {notification}")
        if token in self.unregistered:
            return 404, [], {"error": {"code": 404, "status": "NOT_FOUND", "message": "Requested entity was not found.",
                                       "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                                                    "errorCode": "UNREGISTERED"}]}}
        if token in self.malformed:
            return 400, [], {"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                       "message": "The registration token is not a valid FCM registration token",
                                       "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                                                    "errorCode": "INVALID_ARGUMENT"}]}}
        self.messages.append(message)
        return 200, [], {"name": f"projects/{self.project}/messages/{secrets.token_hex(8)}"}


class ApnsStandIn(StandIn):
    """APNs' provider API: HTTP/2 only, ES256 provider tokens, the alert push type."""

    team_id = "TEAM123456"
    key_id = "KEY1234567"
    topic = "health.example.patient"

    def __init__(self, credentials: Credentials) -> None:
        super().__init__(credentials)
        #: Accepted notices: (device token, headers, payload).
        self.notices: list[tuple[str, dict[str, str], dict]] = []
        self.unregistered: set[str] = set()
        #: Provider tokens answered ExpiredProviderToken once each (the next request's).
        self.expire_next = 0

    def answer(self, request: Request) -> tuple[int, list, dict | None]:
        if request.http_version != "2":
            return self.refuse(505, {"reason": "HTTP2Required"}, f"HTTP/{request.http_version}")
        prefix = "/3/device/"
        if request.method != "POST" or not request.path.startswith(prefix):
            return self.refuse(404, {"reason": "BadPath"}, f"{request.method} {request.path}")
        device = request.path[len(prefix):]
        authorization = request.headers.get("authorization", "")
        try:
            if not authorization.startswith("bearer "):
                raise jwt.InvalidTokenError("no bearer token")
            token = authorization[7:]
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, self.credentials.apns_key.public_key(), algorithms=["ES256"],
                                issuer=self.team_id, options={"require": ["iss", "iat"]})
            if header.get("kid") != self.key_id or not time.time() - 3600 < claims["iat"] <= time.time() + 60:
                raise jwt.InvalidTokenError(f"kid {header.get('kid')} / iat {claims['iat']}")
        except jwt.PyJWTError as exc:
            return self.refuse(403, {"reason": "InvalidProviderToken"}, f"provider token refused: {exc}")
        if self.expire_next:
            self.expire_next -= 1
            return 403, [], {"reason": "ExpiredProviderToken"}
        if request.headers.get("apns-topic") != self.topic:
            return self.refuse(400, {"reason": "TopicDisallowed"}, f"topic {request.headers.get('apns-topic')}")
        if request.headers.get("apns-push-type") != "alert":
            return self.refuse(400, {"reason": "InvalidPushType"}, "push type")
        if len(request.body) > APNS_MAX_PAYLOAD:
            return self.refuse(413, {"reason": "PayloadTooLarge"}, "payload size")
        try:
            payload = json.loads(request.body)
            alert = payload["aps"]["alert"]
        except (ValueError, KeyError, TypeError) as exc:
            return self.refuse(400, {"reason": "PayloadEmpty"}, f"payload shape: {exc}")
        if set(payload) != {"aps"} | NOTICE_KEYS or set(alert) != {"title", "body"}:
            return self.refuse(400, {"reason": "BadPayload"}, f"payload {payload}")
        if not all(c in "0123456789abcdefABCDEF" for c in device) or len(device) % 2:
            return 400, [], {"reason": "BadDeviceToken"}
        if device in self.unregistered:
            return 410, [], {"reason": "Unregistered", "timestamp": int(time.time() * 1000)}
        self.notices.append((device, request.headers, payload))
        return 200, [(b"apns-id", secrets.token_hex(16).encode())], None
