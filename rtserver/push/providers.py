"""The two push providers' HTTP APIs: FCM HTTP v1 (OAuth 2.0 access tokens from a service
account) and APNs (HTTP/2, ES256 provider tokens). Requests and verdicts are
``protocol.push``; this holds the credentials and the connections (httpx, HTTP/2)."""

from __future__ import annotations

import json
import ssl
import time
from pathlib import Path

import httpx
import jwt
import trio

from protocol.push import (
    APNS_EXPIRATION_S, APNS_TOKEN_LIFETIME_S, JWT_BEARER_GRANT, Notice, Platform, Verdict, apns_payload,
    apns_token_claims, apns_verdict, fcm_assertion_claims, fcm_message, fcm_verdict,
)
from rtserver.backends.config import ApnsConfig, FcmConfig, PushConfig

#: An access token is renewed this many seconds before it expires.
RENEW_BEFORE_S = 300


class CredentialsError(Exception):
    """The provider's token endpoint gave no access token; ``retry``: it may later (it
    failed, 429, 5xx), else it refused our credentials (a configuration fault)."""

    def __init__(self, reason: str, retry: bool) -> None:
        super().__init__(reason)
        self.retry = retry


class Provider:
    """One provider: ``send`` a notice to one device, within ``push.timeout_s``, renewing
    the credentials once when the provider calls them expired."""

    platform: Platform

    def __init__(self, ca_file: str, push: PushConfig) -> None:
        self._push = push
        self._verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True

    def client(self) -> httpx.AsyncClient:
        """The connections to use for ``send`` (HTTP/2 where the endpoint speaks it)."""
        return httpx.AsyncClient(http2=True, verify=self._verify, timeout=httpx.Timeout(self._push.timeout_s),
                                 limits=httpx.Limits(max_connections=self._push.max_concurrency))

    async def send(self, http: httpx.AsyncClient, token: str, notice: Notice) -> tuple[Verdict, str]:
        try:
            with trio.fail_after(self._push.timeout_s):
                verdict, reason = await self._attempt(http, token, notice, renew=False)
                if verdict is Verdict.RENEW_CREDENTIALS:
                    verdict, reason = await self._attempt(http, token, notice, renew=True)
        except trio.TooSlowError:
            return Verdict.RETRY, "timeout"
        except httpx.HTTPError as exc:
            return Verdict.RETRY, type(exc).__name__
        except CredentialsError as exc:
            return Verdict.RETRY if exc.retry else Verdict.FAILED, str(exc)
        return verdict, reason

    async def _attempt(self, http: httpx.AsyncClient, token: str, notice: Notice,
                       renew: bool) -> tuple[Verdict, str]:
        raise NotImplementedError


class Fcm(Provider):
    platform = Platform.FCM

    def __init__(self, config: FcmConfig, push: PushConfig) -> None:
        super().__init__(config.ca_file, push)
        try:
            account = json.loads(Path(config.service_account_file).read_text())
            self._email, self._key = account["client_email"], account["private_key"]
            self._key_id = account.get("private_key_id")
            project = account["project_id"]
            self._token_uri = config.token_uri or account["token_uri"]
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"push.fcm.service_account_file: not a service account key ({exc!r})") from None
        self._send_url = f"{config.endpoint.rstrip('/')}/v1/projects/{project}/messages:send"
        self._access: tuple[str, float] | None = None  # (token, renew after: time.monotonic)
        self._renewing = trio.Lock()

    async def _access_token(self, http: httpx.AsyncClient, renew: bool) -> str:
        """A valid access token: the cached one, or a new one for a signed assertion."""
        stale = self._access
        async with self._renewing:
            if self._access is not None and self._access is not stale:
                return self._access[0]  # renewed by another send meanwhile
            if self._access is not None and not renew and time.monotonic() < self._access[1]:
                return self._access[0]
            now = int(time.time())
            assertion = jwt.encode(fcm_assertion_claims(self._email, self._token_uri, now), self._key,
                                   algorithm="RS256", headers={"kid": self._key_id} if self._key_id else None)
            answer = await http.post(self._token_uri, data={"grant_type": JWT_BEARER_GRANT, "assertion": assertion})
            try:
                answer.raise_for_status()
                grant = answer.json()
                token, lifetime = grant["access_token"], float(grant.get("expires_in", 3600))
            except (httpx.HTTPStatusError, ValueError, KeyError, TypeError):
                status = answer.status_code
                raise CredentialsError(f"token endpoint answered {status}", retry=status == 429 or status >= 500) from None
            self._access = (token, time.monotonic() + max(0.0, lifetime - RENEW_BEFORE_S))
            return token

    async def _attempt(self, http: httpx.AsyncClient, token: str, notice: Notice,
                       renew: bool) -> tuple[Verdict, str]:
        access = await self._access_token(http, renew)
        answer = await http.post(self._send_url, content=fcm_message(token, notice, self._push.title, self._push.body),
                                 headers={"authorization": f"Bearer {access}", "content-type": "application/json"})
        return fcm_verdict(answer.status_code, answer.content)


class Apns(Provider):
    platform = Platform.APNS

    def __init__(self, config: ApnsConfig, push: PushConfig) -> None:
        super().__init__(config.ca_file, push)
        self._config = config
        try:
            self._key = jwt.algorithms.ECAlgorithm(jwt.algorithms.ECAlgorithm.SHA256).prepare_key(
                Path(config.key_file).read_bytes())
        except (OSError, ValueError, jwt.InvalidKeyError) as exc:
            raise ValueError(f"push.apns.key_file: not an ES256 signing key ({exc!r})") from None
        self._endpoint = config.endpoint.rstrip("/")
        self._provider_token: tuple[str, float] | None = None  # (token, renew after: time.monotonic)

    def _authorization(self, renew: bool) -> str:
        if renew or self._provider_token is None or time.monotonic() >= self._provider_token[1]:
            token = jwt.encode(apns_token_claims(self._config.team_id, int(time.time())), self._key,
                               algorithm="ES256", headers={"kid": self._config.key_id})
            self._provider_token = (token, time.monotonic() + APNS_TOKEN_LIFETIME_S)
        return f"bearer {self._provider_token[0]}"

    async def _attempt(self, http: httpx.AsyncClient, token: str, notice: Notice,
                       renew: bool) -> tuple[Verdict, str]:
        answer = await http.post(
            f"{self._endpoint}/3/device/{token}", content=apns_payload(notice, self._push.title, self._push.body),
            headers={"authorization": self._authorization(renew), "apns-topic": self._config.topic,
                     "apns-push-type": "alert", "apns-priority": "10",
                     "apns-expiration": str(int(time.time()) + APNS_EXPIRATION_S)})
        return apns_verdict(answer.status_code, answer.content)


def configured_providers(push: PushConfig) -> dict[Platform, Provider]:
    """The providers the configuration sets up (keys read and checked now)."""
    providers: dict[Platform, Provider] = {}
    if push.fcm.service_account_file:
        providers[Platform.FCM] = Fcm(push.fcm, push)
    if push.apns.key_file:
        providers[Platform.APNS] = Apns(push.apns, push)
    return providers
