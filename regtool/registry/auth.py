"""Registry authentication: the Bearer token flow and Basic auth.

Tokens are cached per (realm, service, scopes) for the whole run and reused
until they expire, so a sync of many images pays one token request per
repository, not one per HTTP request. The token endpoint is reached through
the same connection pool (and TLS settings) as the registry, as
containers/image does.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import httpx

from regtool.registry.errors import Unauthorized, error_from_response

if TYPE_CHECKING:
    from regtool.registry.credentials import Credential

log = logging.getLogger("regtool.registry")

#: One auth-param; compiled at the first challenge (re caches it), so open registries never pay for it.
_PARAM = r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?'


@dataclass(frozen=True)
class Challenge:
    """One parsed ``WWW-Authenticate`` challenge."""

    scheme: str  # "bearer" or "basic", lower case
    params: dict[str, str] = field(default_factory=dict)


def parse_challenge(header: str) -> Challenge | None:
    """Parses one ``WWW-Authenticate`` header value (the first challenge)."""
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    param = re.compile(_PARAM)
    pos = 0
    while pos < len(rest):
        m = param.match(rest, pos)
        if not m or m.end() == pos:
            break
        quoted, bare = m.group(2), m.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else (bare or "")
        params[m.group(1).lower()] = value
        pos = m.end()
    return Challenge(scheme.lower(), params)


def basic_header(username: str, password: str) -> str:
    raw = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass
class _Token:
    """A cached bearer token and when it stops being good."""

    value: str = field(repr=False)  # a bearer token: never in a repr, log or traceback
    expires_at: float = 0.0


class Authenticator:
    """Holds one credential context for one registry host.

    ``header_for(scopes)`` gives the Authorization header to send up front
    once the host's challenge is known; ``on_challenge`` learns the challenge
    from a 401 and fetches what it asks for.
    """

    def __init__(self, host: str, credential: Credential | None) -> None:
        self.host = host
        self.credential = credential
        self.challenge: Challenge | None = None
        self._tokens: dict[tuple[str, ...], _Token] = {}
        self._lock = anyio.Lock()
        self.token_requests = 0

    def _cached(self, scopes: tuple[str, ...]) -> str | None:
        tok = self._tokens.get(scopes)
        if tok and tok.expires_at > time.monotonic() + 5:
            return tok.value
        return None

    async def header_for(self, client: httpx.AsyncClient, scopes: tuple[str, ...]) -> str | None:
        cred = self.credential
        if cred is not None and cred.registry_token:
            return "Bearer " + cred.registry_token
        ch = self.challenge
        if ch is None:
            return None
        if ch.scheme == "basic":
            basic = cred.basic_auth() if cred else None
            return basic_header(*basic) if basic else None
        if ch.scheme != "bearer":
            return None
        value = self._cached(scopes)
        if value is None:
            async with self._lock:
                value = self._cached(scopes)
                if value is None:
                    value = await self._fetch_token(client, scopes)
        return "Bearer " + value if value else None

    def learn(self, response: httpx.Response) -> bool:
        """Records the challenge of a 401; False when there is nothing to answer it with."""
        header = response.headers.get("www-authenticate", "")
        ch = parse_challenge(header)
        if ch is None:
            return False
        had = self.challenge
        self.challenge = ch
        if ch.scheme == "basic":
            # A Basic challenge we already answered means the credential is wrong.
            return had is None and self.credential is not None and self.credential.basic_auth() is not None
        return ch.scheme == "bearer"

    def forget(self, scopes: tuple[str, ...]) -> None:
        self._tokens.pop(scopes, None)

    async def _fetch_token(self, client: httpx.AsyncClient, scopes: tuple[str, ...]) -> str:
        assert self.challenge is not None
        params = self.challenge.params
        realm = params.get("realm")
        if not realm:
            raise Unauthorized(f"{self.host}: Bearer challenge without a realm", host=self.host)
        service = params.get("service")
        cred = self.credential
        self.token_requests += 1
        if cred is not None and cred.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": cred.identity_token, "client_id": "regtool"}
            if service:
                form["service"] = service
            if scopes:
                form["scope"] = " ".join(scopes)
            resp = await client.post(realm, data=form)
        else:
            query: list[tuple[str, str | int | float | bool | None]] = []
            if service:
                query.append(("service", service))
            query.extend(("scope", s) for s in scopes)
            headers = {}
            basic = cred.basic_auth() if cred else None
            if basic:
                headers["Authorization"] = basic_header(*basic)
            resp = await client.get(realm, params=query, headers=headers)
        if resp.status_code != 200:
            err = error_from_response(resp, f"token for {self.host} ({' '.join(scopes) or 'no scope'})")
            raise Unauthorized(str(err), host=self.host, status=resp.status_code)
        try:
            body = resp.json()
        except ValueError as exc:
            raise Unauthorized(f"{self.host}: token server answered non-JSON", host=self.host) from exc
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise Unauthorized(f"{self.host}: token server answered without a token", host=self.host)
        try:
            expires_in = float(body.get("expires_in") or 60)
        except (TypeError, ValueError):
            expires_in = 60.0
        self._tokens[scopes] = _Token(token, time.monotonic() + max(expires_in, 10.0))
        log.debug("token for %s scopes=%s (expires in %.0fs)", self.host, " ".join(scopes), expires_in)
        return token
