"""A small Docker-registry token server (the "token" auth scheme of distribution).

Used in-process by the test bed (``TokenServer``), and runnable on its own for
``docker-compose.test.yml``::

    python tests/support/tokenserver.py --port 5443 --key sign.key --cert sign.crt \\
        [--tls-cert server.crt --tls-key server.key] [--issuer ...] [--service ...]

It implements:

* ``GET /token?service=S&scope=A&scope=B[&account=U][&offline_token=true]`` with optional
  HTTP Basic credentials (docs: distribution ``spec/auth/token.md``). The JSON answer has both
  ``token`` and ``access_token``, ``expires_in`` and ``issued_at`` (plus ``refresh_token``
  when ``offline_token=true`` is asked for by an authenticated user).
* ``POST /token`` (``spec/auth/oauth.md``): form fields ``grant_type=password`` (with
  ``username``/``password``) or ``grant_type=refresh_token`` (with ``refresh_token``),
  ``service``, ``client_id`` (required), ``scope`` (space separated) and
  ``access_type=offline`` to be given a ``refresh_token``.

Policy: a known user with the right password is granted every action it asks for
(``pull``, ``push``, ``delete``, ``*``) on any repository, and ``registry:catalog:*``;
users may be limited to a set of actions (``reader`` can only pull). Anonymous
requests get ``pull`` on repositories under ``public/`` and nothing else (an empty
``access`` list, like Docker Hub). A wrong password is answered with 401.

Tokens are JWTs signed ES256 (EC P-256 key) or RS256 (RSA key). The header has
``x5c`` (the signing certificate chain, base64 DER: distribution 2.x and 3.x verify it
against ``rootcertbundle``) and ``kid`` (the libtrust key id distribution 2.x uses to
look a key up in the bundle).

Only the standard library and ``cryptography`` are needed, so a bare ``python``
container can run it after ``pip install cryptography``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import secrets
import ssl
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

DEFAULT_USERS: dict[str, str] = {"tester": "s3cret-pass", "reader": "reader-pass"}
"""Known users and passwords. ``tester`` may do anything; ``reader`` may only pull."""

DEFAULT_USER_ACTIONS: dict[str, frozenset[str] | None] = {"tester": None, "reader": frozenset({"pull"})}
"""Per-user allowed actions; ``None`` means every requested action is granted."""

DEFAULT_ISSUER = "regtool-test-token-issuer"
DEFAULT_SERVICE = "regtool-test-registry"
ALL_ACTIONS = frozenset({"pull", "push", "delete", "*"})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def libtrust_key_id(public_key: Any) -> str:
    """The key id libtrust (distribution 2.x) derives from a public key.

    Base32 of the first 240 bits of sha256(DER SubjectPublicKeyInfo), in groups of four
    separated by colons.
    """
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii").rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def sign_jwt(claims: Mapping[str, Any], key: Any, chain: list[x509.Certificate]) -> str:
    """Sign ``claims`` as a compact JWS (ES256 for EC P-256 keys, RS256 for RSA keys)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        alg = "ES256"
    elif isinstance(key, rsa.RSAPrivateKey):
        alg = "RS256"
    else:  # pragma: no cover - only used with keys we make
        raise TypeError(f"unsupported signing key type {type(key).__name__}")
    header = {
        "typ": "JWT",
        "alg": alg,
        "kid": libtrust_key_id(key.public_key()),
        "x5c": [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode("ascii") for c in chain],
    }
    signing_input = (
        _b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64url(json.dumps(dict(claims), separators=(",", ":")).encode())
    ).encode("ascii")
    if alg == "ES256":
        der_sig = key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der_sig)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return signing_input.decode("ascii") + "." + _b64url(signature)


def decode_jwt_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a compact JWS, without checking the signature (for tests)."""

    def part(p: str) -> dict[str, Any]:
        raw = base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))
        value: dict[str, Any] = json.loads(raw)
        return value

    head, body, _sig = token.split(".")
    return part(head), part(body)


@dataclass(frozen=True)
class Scope:
    """One parsed scope: ``repository:team/app:pull,push`` -> type, name, actions."""

    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Scope | None:
        # The name may itself contain ':' only in the (unused) "type(class)" form; split at the
        # first and last colon so "repository:a/b:pull,push" parses as expected.
        first = text.find(":")
        last = text.rfind(":")
        if first <= 0 or last == first:
            return None
        actions = tuple(a for a in text[last + 1 :].split(",") if a)
        return cls(text[:first], text[first + 1 : last], actions)

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


@dataclass
class TokenRequest:
    """What one request to the token server asked for and what it got (for assertions)."""

    method: str
    path: str
    service: str | None
    scopes: list[str]
    account: str | None
    username: str | None  # the authenticated user, None for anonymous or failed
    grant_type: str | None  # POST only
    client_id: str | None
    offline: bool
    status: int = 0
    granted: list[dict[str, Any]] = field(default_factory=list)
    refresh_token_issued: bool = False
    time: float = field(default_factory=time.time)


class TokenServer:
    """A threaded token server; ``start()``/``stop()`` or use as a context manager.

    Knobs tests may change while it runs: ``expires_in`` (seconds, default 900),
    ``users`` / ``user_actions``, ``public_prefixes`` and :meth:`fail_next`.
    """

    def __init__(
        self,
        signing_key: Any,
        signing_chain: list[x509.Certificate],
        *,
        issuer: str = DEFAULT_ISSUER,
        service: str = DEFAULT_SERVICE,
        users: Mapping[str, str] | None = None,
        user_actions: Mapping[str, frozenset[str] | None] | None = None,
        public_prefixes: Iterable[str] = ("public/",),
        expires_in: int = 900,
        ssl_context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        require_client_id: bool = True,
    ) -> None:
        self.signing_key = signing_key
        self.signing_chain = list(signing_chain)
        self.issuer = issuer
        self.service = service
        self.users: dict[str, str] = dict(DEFAULT_USERS if users is None else users)
        self.user_actions: dict[str, frozenset[str] | None] = dict(
            DEFAULT_USER_ACTIONS if user_actions is None else user_actions
        )
        self.public_prefixes = tuple(public_prefixes)
        self.expires_in = expires_in
        self.require_client_id = require_client_id
        self.ssl_context = ssl_context
        self.requests: list[TokenRequest] = []
        self.refresh_tokens: dict[str, str] = {}  # refresh token -> username
        self._lock = threading.Lock()
        self._failures: list[int] = []
        self._host = host
        self._port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> TokenServer:
        handler = _make_handler(self)
        httpd = ThreadingHTTPServer((self._host, self._port), handler)
        httpd.daemon_threads = True
        if self.ssl_context is not None:
            # Handshake lazily in the handler thread so a stalled client cannot block accept().
            httpd.socket = self.ssl_context.wrap_socket(
                httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self._httpd = httpd
        self._port = httpd.server_address[1]
        self._thread = threading.Thread(target=httpd.serve_forever, name="token-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self._host}:{self._port}"

    @property
    def realm(self) -> str:
        return self.url + "/token"

    # -- introspection for tests ---------------------------------------------------------------------

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()

    def fail_next(self, status: int = 500, count: int = 1) -> None:
        """Answer the next ``count`` token requests with ``status`` (503, 500, 401 ...)."""
        with self._lock:
            self._failures.extend([status] * count)

    # -- token making ------------------------------------------------------------------------------------

    def make_token(
        self,
        subject: str,
        access: list[dict[str, Any]],
        *,
        audience: str | None = None,
        expires_in: int | None = None,
        issuer: str | None = None,
    ) -> str:
        """Sign a registry token (tests may craft expired or wrongly scoped ones)."""
        now = int(time.time())
        lifetime = self.expires_in if expires_in is None else expires_in
        claims = {
            "iss": issuer or self.issuer,
            "sub": subject,
            "aud": audience or self.service,
            "exp": now + lifetime,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        return sign_jwt(claims, self.signing_key, self.signing_chain)

    def grant(self, username: str | None, scopes: Iterable[str]) -> list[dict[str, Any]]:
        """The ``access`` claim the policy gives ``username`` (None: anonymous) for ``scopes``."""
        merged: dict[tuple[str, str], list[str]] = {}
        for text in scopes:
            scope = Scope.parse(text)
            if scope is None:
                continue
            allowed = self._allowed(username, scope)
            actions = [a for a in scope.actions if a in allowed]
            if not actions:
                continue
            have = merged.setdefault((scope.type, scope.name), [])
            have.extend(a for a in actions if a not in have)
        return [{"type": t, "name": n, "actions": acts} for (t, n), acts in merged.items()]

    def _allowed(self, username: str | None, scope: Scope) -> frozenset[str]:
        if username is None:
            if scope.type == "repository" and scope.name.startswith(self.public_prefixes):
                return frozenset({"pull"})
            return frozenset()
        limit = self.user_actions.get(username)
        if scope.type == "registry":
            return frozenset({"*"}) if scope.name == "catalog" and limit is None else frozenset()
        if scope.type != "repository":
            return frozenset()
        return ALL_ACTIONS if limit is None else limit

    def check_password(self, username: str, password: str) -> bool:
        expected = self.users.get(username)
        return expected is not None and secrets.compare_digest(expected.encode(), password.encode())

    def _take_failure(self) -> int | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _record(self, req: TokenRequest) -> None:
        with self._lock:
            self.requests.append(req)


def _make_handler(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "regtool-test-tokenserver/1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            if __name__ == "__main__":
                sys.stderr.write("token-server: " + (format % args) + "\n")

        # -- helpers --------------------------------------------------------------------------------

        def _send_json(self, status: int, body: dict[str, Any], extra: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, code: str, message: str, req: TokenRequest | None) -> None:
            if req is not None:
                req.status = status
                server._record(req)
            extra = {"WWW-Authenticate": 'Basic realm="regtool-test"'} if status == 401 else None
            self._send_json(
                status,
                {"errors": [{"code": code, "message": message}], "error": code.lower(), "details": message},
                extra,
            )

        def _basic_credentials(self) -> tuple[str, str] | None:
            header = self.headers.get("Authorization", "")
            if not header.lower().startswith("basic "):
                return None
            try:
                raw = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return ("", "")
            user, _, password = raw.partition(":")
            return user, password

        def _issue(self, req: TokenRequest, username: str | None, offline: bool) -> None:
            access = server.grant(username, req.scopes)
            service = req.service or server.service
            token = server.make_token(username or "", access, audience=service)
            body: dict[str, Any] = {
                "token": token,
                "access_token": token,
                "expires_in": server.expires_in,
                "issued_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "scope": " ".join(f"{a['type']}:{a['name']}:{','.join(a['actions'])}" for a in access),
            }
            if offline and username is not None:
                refresh = secrets.token_urlsafe(32)
                with server._lock:
                    server.refresh_tokens[refresh] = username
                body["refresh_token"] = refresh
                req.refresh_token_issued = True
            req.status = 200
            req.granted = access
            server._record(req)
            self._send_json(200, body, {"Cache-Control": "no-store"})

        # -- methods --------------------------------------------------------------------------------

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            parts = urlsplit(self.path)
            query = parse_qs(parts.query, keep_blank_values=True)

            def one(name: str) -> str | None:
                values = query.get(name)
                return values[0] if values else None

            scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
            req = TokenRequest(
                method="GET",
                path=parts.path,
                service=one("service"),
                scopes=scopes,
                account=one("account"),
                username=None,
                grant_type=None,
                client_id=one("client_id"),
                offline=(one("offline_token") or "").lower() == "true",
            )
            if parts.path.rstrip("/") not in ("/token", "/auth/token"):
                self._error(404, "NOT_FOUND", "no such endpoint", req)
                return
            failure = server._take_failure()
            if failure is not None:
                self._error(failure, "INJECTED_FAILURE", "failure injected by the test", req)
                return
            creds = self._basic_credentials()
            username: str | None = None
            if creds is not None:
                if not server.check_password(*creds):
                    self._error(401, "UNAUTHORIZED", "invalid username or password", req)
                    return
                username = creds[0]
            req.username = username
            self._issue(req, username, req.offline)

        def do_POST(self) -> None:  # noqa: N802 - stdlib naming
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            form = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)

            def one(name: str) -> str | None:
                values = form.get(name)
                return values[0] if values else None

            scopes = [s for value in form.get("scope", []) for s in value.split(" ") if s]
            req = TokenRequest(
                method="POST",
                path=parts.path,
                service=one("service"),
                scopes=scopes,
                account=one("username"),
                username=None,
                grant_type=one("grant_type"),
                client_id=one("client_id"),
                offline=one("access_type") == "offline",
            )
            if parts.path.rstrip("/") not in ("/token", "/auth/token"):
                self._error(404, "NOT_FOUND", "no such endpoint", req)
                return
            failure = server._take_failure()
            if failure is not None:
                self._error(failure, "INJECTED_FAILURE", "failure injected by the test", req)
                return
            if server.require_client_id and not req.client_id:
                self._error(400, "INVALID_REQUEST", "client_id is required", req)
                return
            if req.grant_type == "password":
                user, password = one("username") or "", one("password") or ""
                if not server.check_password(user, password):
                    self._error(401, "UNAUTHORIZED", "invalid username or password", req)
                    return
                req.username = user
                self._issue(req, user, req.offline)
            elif req.grant_type == "refresh_token":
                refresh = one("refresh_token") or ""
                with server._lock:
                    user_or_none = server.refresh_tokens.get(refresh)
                if user_or_none is None:
                    self._error(401, "UNAUTHORIZED", "invalid refresh token", req)
                    return
                req.username = user_or_none
                # The spec: a refresh_token grant returns the same refresh token, not a new one.
                access = server.grant(user_or_none, req.scopes)
                token = server.make_token(user_or_none, access, audience=req.service or server.service)
                req.status = 200
                req.granted = access
                server._record(req)
                self._send_json(
                    200,
                    {
                        "token": token,
                        "access_token": token,
                        "refresh_token": refresh,
                        "expires_in": server.expires_in,
                        "issued_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "scope": " ".join(
                            f"{a['type']}:{a['name']}:{','.join(a['actions'])}" for a in access
                        ),
                    },
                    {"Cache-Control": "no-store"},
                )
            else:
                self._error(400, "UNSUPPORTED_GRANT_TYPE", f"unsupported grant_type {req.grant_type!r}", req)

    return Handler


def load_key_and_chain(key_path: str | Path, cert_path: str | Path) -> tuple[Any, list[x509.Certificate]]:
    """Read a PEM private key and a PEM certificate chain (leaf first)."""
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    chain = x509.load_pem_x509_certificates(Path(cert_path).read_bytes())
    return key, chain


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="regtool test token server (Docker registry token auth)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5443)
    parser.add_argument("--key", required=True, help="PEM private key that signs tokens (EC P-256 or RSA)")
    parser.add_argument("--cert", required=True, help="PEM certificate chain of the signing key, leaf first")
    parser.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate (chain)")
    parser.add_argument("--tls-key", help="private key for --tls-cert")
    parser.add_argument("--issuer", default=DEFAULT_ISSUER)
    parser.add_argument("--service", default=DEFAULT_SERVICE)
    parser.add_argument("--expires-in", type=int, default=900)
    args = parser.parse_args(argv)

    key, chain = load_key_and_chain(args.key, args.cert)
    ctx: ssl.SSLContext | None = None
    if args.tls_cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
    server = TokenServer(
        key,
        chain,
        issuer=args.issuer,
        service=args.service,
        expires_in=args.expires_in,
        ssl_context=ctx,
        host=args.host,
        port=args.port,
    )
    server.start()
    print(f"token server listening on {server.realm}", file=sys.stderr, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
