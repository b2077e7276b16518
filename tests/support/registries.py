"""Real CNCF distribution registries, started as subprocesses for the test session.

Three kinds (see ``tests/support/README.md``):

``plain``  HTTP, no auth.
``token``  HTTPS (test CA) + token auth served by :class:`tests.support.tokenserver.TokenServer`.
``basic``  HTTPS (test CA) + htpasswd (bcrypt) Basic auth.

:class:`RegistryBed` owns everything (temp dirs, CA, token server, processes); the pytest
fixtures in ``tests/conftest.py`` hand out its :class:`Registry` objects. The same config
builder also writes the files ``docker-compose.test.yml`` mounts::

    python -m tests.support.registries compose-setup [DIR]     # default .testbed-compose
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
import trustme
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.tokenserver import DEFAULT_ISSUER, DEFAULT_SERVICE, TokenServer

Kind = Literal["plain", "token", "basic"]
KINDS: tuple[Kind, ...] = ("plain", "token", "basic")

USERNAME = "tester"
PASSWORD = "s3cret-pass"
HTPASSWD_REALM = "regtool-test-basic"
TOKEN_ISSUER = DEFAULT_ISSUER
TOKEN_SERVICE = DEFAULT_SERVICE
START_TIMEOUT = 30.0


class TestbedError(RuntimeError):
    """A registry of the test bed could not be started."""


# ----------------------------------------------------------------------------------------------------
# bcrypt for the htpasswd file (distribution only accepts bcrypt). Uses the ``bcrypt`` package when
# it is installed, else a small pure-Python implementation (cost 4 takes ~0.2 s) so the test bed
# needs no extra dependency and no ``htpasswd`` binary.
# ----------------------------------------------------------------------------------------------------

_BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_pi_words_cache: list[int] = []


def _pi_words(count: int) -> list[int]:
    """The first ``count`` 32-bit words of the fractional hex digits of pi (Blowfish's constants)."""
    if len(_pi_words_cache) >= count:
        return _pi_words_cache[:count]
    bits = count * 32 + 64
    one = 1 << bits

    def arctan_inv(x: int) -> int:  # arctan(1/x) scaled by 2**bits
        total = term = one // x
        x2, k, sign = x * x, 1, -1
        while term:
            term //= x2
            total += sign * (term // (2 * k + 1))
            sign, k = -sign, k + 1
        return total

    pi = 4 * (4 * arctan_inv(5) - arctan_inv(239))  # Machin's formula
    frac = (pi - (3 << bits)) >> 64
    words = [(frac >> (32 * (count - 1 - i))) & 0xFFFFFFFF for i in range(count)]
    _pi_words_cache[:] = words
    return words


def _bcrypt_b64encode(data: bytes) -> str:
    out = []
    bits = int.from_bytes(data, "big") << ((-len(data) * 8) % 6)
    nchars = (len(data) * 8 + 5) // 6
    for i in range(nchars):
        out.append(_BCRYPT_ALPHABET[(bits >> (6 * (nchars - 1 - i))) & 63])
    return "".join(out)


def _bcrypt_b64decode(text: str, nbytes: int) -> bytes:
    value = 0
    for ch in text:
        value = (value << 6) | _BCRYPT_ALPHABET.index(ch)
    value >>= len(text) * 6 - nbytes * 8
    return value.to_bytes(nbytes, "big")


def _bcrypt_pure(password: bytes, salt: bytes, cost: int) -> bytes:
    """The 23 raw bytes of bcrypt($2b$) for ``password`` (NUL added here) and a 16-byte salt."""
    key = (password + b"\x00")[:72]
    words = _pi_words(18 + 1024)
    p = list(words[:18])
    s0, s1, s2, s3 = (list(words[18 + 256 * i : 18 + 256 * (i + 1)]) for i in range(4))
    mask = 0xFFFFFFFF

    def encipher(left: int, right: int) -> tuple[int, int]:
        for i in range(0, 16, 2):
            left ^= p[i]
            right ^= (
                (((s0[left >> 24] + s1[(left >> 16) & 0xFF]) & mask) ^ s2[(left >> 8) & 0xFF])
                + s3[left & 0xFF]
            ) & mask
            right ^= p[i + 1]
            left ^= (
                (((s0[right >> 24] + s1[(right >> 16) & 0xFF]) & mask) ^ s2[(right >> 8) & 0xFF])
                + s3[right & 0xFF]
            ) & mask
        left ^= p[16]
        right ^= p[17]
        return right, left

    def stream_words(data: bytes) -> Iterator[int]:
        pos = 0
        while True:
            word = 0
            for _ in range(4):
                word = (word << 8) | data[pos]
                pos = (pos + 1) % len(data)
            yield word

    def expand(data: bytes, salt_bytes: bytes | None) -> None:
        kw = stream_words(data)
        for i in range(18):
            p[i] ^= next(kw)
        sw = stream_words(salt_bytes) if salt_bytes is not None else None
        left = right = 0
        for i in range(0, 18, 2):
            if sw is not None:
                left ^= next(sw)
                right ^= next(sw)
            left, right = encipher(left, right)
            p[i], p[i + 1] = left, right
        for box in (s0, s1, s2, s3):
            for k in range(0, 256, 2):
                if sw is not None:
                    left ^= next(sw)
                    right ^= next(sw)
                left, right = encipher(left, right)
                box[k], box[k + 1] = left, right

    expand(key, salt)
    for _ in range(1 << cost):
        expand(key, None)
        expand(salt, None)
    ctext = [int.from_bytes(b"OrpheanBeholderScryDoubt"[i : i + 4], "big") for i in range(0, 24, 4)]
    for _ in range(64):
        for j in range(0, 6, 2):
            ctext[j], ctext[j + 1] = encipher(ctext[j], ctext[j + 1])
    return b"".join(w.to_bytes(4, "big") for w in ctext)[:23]


def bcrypt_hash(password: str, *, cost: int = 4, salt: bytes | None = None) -> str:
    """A ``$2b$`` bcrypt hash as htpasswd files hold it."""
    if salt is None:
        salt = secrets.token_bytes(16)
    try:
        import bcrypt as _bcrypt  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        _bcrypt = None
    if _bcrypt is not None and len(password.encode()) < 72:
        salt_text = f"$2b${cost:02d}${_bcrypt_b64encode(salt)}".encode()
        hashed: bytes = _bcrypt.hashpw(password.encode(), salt_text)
        return hashed.decode()
    raw = _bcrypt_pure(password.encode(), salt, cost)
    return f"$2b${cost:02d}${_bcrypt_b64encode(salt)}{_bcrypt_b64encode(raw)}"


def bcrypt_check(password: str, hashed: str) -> bool:
    """Check ``password`` against a ``$2a$``/``$2b$``/``$2y$`` hash (used to test :func:`bcrypt_hash`)."""
    m = re.fullmatch(r"\$2[aby]?\$(\d\d)\$([./A-Za-z0-9]{22})([./A-Za-z0-9]{31})", hashed)
    if not m:
        return False
    salt = _bcrypt_b64decode(m.group(2), 16)
    raw = _bcrypt_pure(password.encode(), salt, int(m.group(1)))
    return secrets.compare_digest(_bcrypt_b64encode(raw), m.group(3))


def htpasswd_line(username: str, password: str) -> str:
    return f"{username}:{bcrypt_hash(password)}\n"


# ----------------------------------------------------------------------------------------------------
# Certificates
# ----------------------------------------------------------------------------------------------------


@dataclass
class TestPKI:
    """One CA for the session: TLS for registries and the token server, plus a token signing key.

    Files (under ``root``): ``certs/ca.crt`` (the ``cert_dir``), ``server.crt``/``server.key``
    (127.0.0.1 and localhost plus ``extra_names``), ``token-signing.key``/``token-signing.crt``
    (self-signed EC P-256; the registry's ``rootcertbundle``).
    """

    __test__ = False  # not a pytest test class despite the name

    root: Path
    ca: trustme.CA
    server_cert_file: Path
    server_key_file: Path
    ca_file: Path
    cert_dir: Path
    signing_key: ec.EllipticCurvePrivateKey
    signing_cert: x509.Certificate
    signing_key_file: Path
    signing_cert_file: Path

    @classmethod
    def create(cls, root: Path, extra_names: tuple[str, ...] = ()) -> TestPKI:
        root.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="regtool test CA")
        server = ca.issue_cert("127.0.0.1", "localhost", "::1", *extra_names)
        cert_dir = root / "certs"
        cert_dir.mkdir(exist_ok=True)
        ca_file = cert_dir / "ca.crt"
        ca.cert_pem.write_to_path(str(ca_file))
        server_cert_file = root / "server.crt"
        server_key_file = root / "server.key"
        server_cert_file.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
        server.private_key_pem.write_to_path(str(server_key_file))
        server_key_file.chmod(0o600)

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "regtool test token signer")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        signing_key_file = root / "token-signing.key"
        signing_cert_file = root / "token-signing.crt"
        signing_key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        signing_key_file.chmod(0o600)
        signing_cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(
            root=root,
            ca=ca,
            server_cert_file=server_cert_file,
            server_key_file=server_key_file,
            ca_file=ca_file,
            cert_dir=cert_dir,
            signing_key=key,
            signing_cert=cert,
            signing_key_file=signing_key_file,
            signing_cert_file=signing_cert_file,
        )

    def client_ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def server_ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.server_cert_file), str(self.server_key_file))
        return ctx


# ----------------------------------------------------------------------------------------------------
# Registry configuration (shared by the fixtures and docker-compose.test.yml)
# ----------------------------------------------------------------------------------------------------


def registry_config(
    kind: Kind,
    *,
    addr: str,
    storage_dir: str,
    secret: str,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    token_realm: str | None = None,
    token_rootcertbundle: str | None = None,
    htpasswd_path: str | None = None,
) -> dict[str, Any]:
    """The distribution config (as a dict) for one test-bed registry."""
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {
            "level": "info",
            "formatter": "text",
            "fields": {"service": "registry", "testbed": kind},
        },
        "storage": {
            "filesystem": {"rootdirectory": storage_dir},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {
            "addr": addr,
            "secret": secret,
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
        # Allow foreign-layer URLs so tests can push non-distributable layers.
        "validation": {"manifests": {"urls": {"allow": ["^https?://"]}}},
    }
    if kind in ("token", "basic"):
        if not (tls_cert and tls_key):
            raise ValueError(f"{kind} registry needs tls_cert and tls_key")
        config["http"]["tls"] = {"certificate": tls_cert, "key": tls_key}
    if kind == "token":
        if not (token_realm and token_rootcertbundle):
            raise ValueError("token registry needs token_realm and token_rootcertbundle")
        config["auth"] = {
            "token": {
                "realm": token_realm,
                "service": TOKEN_SERVICE,
                "issuer": TOKEN_ISSUER,
                "rootcertbundle": token_rootcertbundle,
            }
        }
    elif kind == "basic":
        if not htpasswd_path:
            raise ValueError("basic registry needs htpasswd_path")
        config["auth"] = {"htpasswd": {"realm": HTPASSWD_REALM, "path": htpasswd_path}}
    return config


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind to 0, read it, close)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def registry_binary() -> str:
    """Path of the distribution binary: $REGTOOL_REGISTRY_BIN, docker-registry (Debian) or registry."""
    explicit = os.environ.get("REGTOOL_REGISTRY_BIN")
    if explicit:
        return explicit
    for name in ("docker-registry", "registry"):
        found = shutil.which(name)
        if found:
            return found
    raise TestbedError(
        "no distribution registry binary found: install Debian's docker-registry "
        "(scripts/lib/setup.sh does) or set REGTOOL_REGISTRY_BIN"
    )


# ----------------------------------------------------------------------------------------------------
# Client-side auth used by the test helpers (independent of regtool's own auth code)
# ----------------------------------------------------------------------------------------------------

_CHALLENGE_PARAM = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')
_REPO_PATH = re.compile(r"^/v2/(.+?)/(?:blobs|manifests|tags|referrers)/")


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
        for m in _CHALLENGE_PARAM.finditer(rest)
    }
    return scheme.lower(), params


class BearerChallengeAuth(httpx.Auth):
    """Sync httpx auth for the token registry: answer ``Bearer`` challenges, cache tokens per repository.

    Streaming request bodies cannot be resent after a 401, so callers that stream a body
    must first make a small request to the same repository with the same needs (images.py
    POSTs the upload session first).
    """

    def __init__(self, username: str | None, password: str | None, *, verify: ssl.SSLContext | bool) -> None:
        self.username = username
        self.password = password
        self._verify = verify
        self._tokens: dict[str, tuple[str, float]] = {}
        self.token_fetches = 0

    @staticmethod
    def _key(request: httpx.Request) -> str:
        m = _REPO_PATH.match(request.url.path)
        return m.group(1) if m else request.url.path

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        key = self._key(request)
        cached = self._tokens.get(key)
        if cached and cached[1] > time.monotonic():
            request.headers["Authorization"] = f"Bearer {cached[0]}"
        response = yield request
        if response.status_code != 401:
            return
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        response.read()
        if scheme == "basic" and self.username is not None:
            request.headers["Authorization"] = httpx.BasicAuth(
                self.username, self.password or ""
            )._auth_header
            yield request
            return
        if scheme != "bearer" or "realm" not in params:
            return
        query: list[tuple[str, str]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        for scope in params.get("scope", "").split(" "):
            if scope:
                query.append(("scope", scope))
        if self.username:
            query.append(("account", self.username))
        url = params["realm"] + ("&" if "?" in params["realm"] else "?") + urlencode(query)
        headers = {}
        if self.username is not None:
            headers["Authorization"] = httpx.BasicAuth(self.username, self.password or "")._auth_header
        token_response = yield httpx.Request("GET", url, headers=headers)
        token_response.read()
        self.token_fetches += 1
        if token_response.status_code != 200:
            return
        body = token_response.json()
        token = body.get("token") or body.get("access_token")
        lifetime = float(body.get("expires_in") or 60)
        self._tokens[key] = (token, time.monotonic() + max(lifetime - 30, 1))
        request.headers["Authorization"] = f"Bearer {token}"
        yield request

    async def async_auth_flow(self, request: httpx.Request) -> Any:  # pragma: no cover - sync only
        raise NotImplementedError("BearerChallengeAuth is for the synchronous test helpers only")
        yield request


# ----------------------------------------------------------------------------------------------------
# Registries
# ----------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Registry:
    """A running test-bed registry (what the ``registry_*`` fixtures yield).

    ``host`` "127.0.0.1:PORT"; ``url`` "http(s)://127.0.0.1:PORT"; ``ca_file``/``cert_dir`` for
    the TLS kinds (``cert_dir`` holds ``ca.crt``; pass it as ``--cert-dir``); ``username`` and
    ``password`` for the authenticated kinds; ``storage_dir`` is the filesystem driver root.
    """

    kind: Kind
    name: str
    host: str
    port: int
    url: str
    storage_dir: Path
    config_file: Path
    log_file: Path
    ca_file: Path | None = None
    cert_dir: Path | None = None
    username: str | None = None
    password: str | None = None
    token_server: TokenServer | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _http: httpx.Client | None = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return self.url.startswith("https://")

    @property
    def auth(self) -> Literal["none", "token", "basic"]:
        return "none" if self.kind == "plain" else self.kind

    def ssl_verify(self) -> ssl.SSLContext | bool:
        """What to pass as httpx ``verify=`` (an SSLContext trusting the test CA, or True)."""
        if self.ca_file is None:
            return True
        return ssl.create_default_context(cafile=str(self.ca_file))

    def client(self, *, authenticated: bool = True, **kwargs: Any) -> httpx.Client:
        """A new ``httpx.Client`` with ``base_url=url`` that trusts the CA and (by default) authenticates.

        ``authenticated=False`` gives an anonymous client (for the token registry it still follows
        Bearer challenges, anonymously); an ``auth=`` keyword replaces the default auth. The caller
        closes it.
        """
        verify = self.ssl_verify()
        auth: httpx.Auth | None = None
        if self.kind == "basic" and authenticated:
            auth = httpx.BasicAuth(self.username or "", self.password or "")
        elif self.kind == "token":
            auth = BearerChallengeAuth(
                self.username if authenticated else None,
                self.password if authenticated else None,
                verify=verify,
            )
        if "auth" in kwargs:  # an explicit auth (e.g. wrong credentials) wins
            auth = kwargs.pop("auth")
        kwargs.setdefault("timeout", httpx.Timeout(60.0, connect=10.0))
        return httpx.Client(base_url=self.url, verify=verify, auth=auth, **kwargs)

    @property
    def http(self) -> httpx.Client:
        """A shared authenticated client (used by ``tests.support.images``); closed with the bed."""
        if self._http is None:
            self._http = self.client()
        return self._http

    def ref(self, repository: str, tag: str | None = None, digest: str | None = None) -> str:
        """``host/repository[:tag][@digest]``."""
        text = f"{self.host}/{repository}"
        if tag:
            text += f":{tag}"
        if digest:
            text += f"@{digest}"
        return text

    def skopeo_flags(self, prefix: str = "", *, authenticated: bool = True) -> list[str]:
        """Flags for skopeo (``prefix`` "src-" / "dest-" for ``skopeo copy``)."""
        if not self.tls:
            return [f"--{prefix}tls-verify=false", f"--{prefix}no-creds"]
        flags = [f"--{prefix}cert-dir", str(self.cert_dir)]
        if authenticated and self.username:
            flags += [f"--{prefix}creds", f"{self.username}:{self.password}"]
        else:
            flags += [f"--{prefix}no-creds"]
        return flags

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


class RegistryBed:
    """Owns the session's test bed: one CA, one token server and the registries.

    ``get(kind)`` returns the shared registry of that kind; the first call starts all three at once
    (subprocesses start in parallel, then each is waited for). ``start_registry`` makes extra,
    private registries (for tests that need an empty one or stop it). ``close()`` stops everything.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.pki = TestPKI.create(root / "pki")
        self.htpasswd_file = root / "htpasswd"
        self.htpasswd_file.write_text(htpasswd_line(USERNAME, PASSWORD))
        self.token_server = TokenServer(
            self.pki.signing_key,
            [self.pki.signing_cert],
            issuer=TOKEN_ISSUER,
            service=TOKEN_SERVICE,
            ssl_context=self.pki.server_ssl_context(),
        ).start()
        self.shared: dict[Kind, Registry] = {}
        self.all: list[Registry] = []
        self._counter = 0
        self._closed = False

    # -- public ------------------------------------------------------------------------------------------

    def get(self, kind: Kind) -> Registry:
        if kind not in self.shared:
            wanted = [k for k in KINDS if k not in self.shared]
            started = self._start_many([(k, f"shared-{k}") for k in wanted])
            self.shared.update(zip(wanted, started, strict=True))
        return self.shared[kind]

    def start_registry(self, kind: Kind, name: str | None = None) -> Registry:
        self._counter += 1
        return self._start_many([(kind, name or f"{kind}-{self._counter}")])[0]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for reg in self.all:
            with contextlib.suppress(Exception):
                reg.stop()
        with contextlib.suppress(Exception):
            self.token_server.stop()

    def __enter__(self) -> RegistryBed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------------------

    def _prepare(self, kind: Kind, name: str) -> Registry:
        base = self.root / name
        storage = base / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        port = free_port()
        host = f"127.0.0.1:{port}"
        tls = kind != "plain"
        reg = Registry(
            kind=kind,
            name=name,
            host=host,
            port=port,
            url=f"{'https' if tls else 'http'}://{host}",
            storage_dir=storage,
            config_file=base / "config.yml",
            log_file=base / "registry.log",
            ca_file=self.pki.ca_file if tls else None,
            cert_dir=self.pki.cert_dir if tls else None,
            username=USERNAME if kind != "plain" else None,
            password=PASSWORD if kind != "plain" else None,
            token_server=self.token_server if kind == "token" else None,
        )
        config = registry_config(
            kind,
            addr=host,
            storage_dir=str(storage),
            secret=secrets.token_hex(16),
            tls_cert=str(self.pki.server_cert_file),
            tls_key=str(self.pki.server_key_file),
            token_realm=self.token_server.realm,
            token_rootcertbundle=str(self.pki.signing_cert_file),
            htpasswd_path=str(self.htpasswd_file),
        )
        reg.config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        return reg

    def _spawn(self, reg: Registry) -> None:
        cmd = [registry_binary(), "serve", str(reg.config_file)]
        setpriv = shutil.which("setpriv")
        if setpriv and sys.platform.startswith("linux"):
            # Dies with the test process even if pytest is killed hard (no orphaned registries).
            cmd = [setpriv, "--pdeathsig", "TERM", "--", *cmd]
        with open(reg.log_file, "ab") as log:
            reg.process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(reg.storage_dir.parent),
            )
        self.all.append(reg)

    def _start_many(self, wanted: list[tuple[Kind, str]]) -> list[Registry]:
        regs = [self._prepare(kind, name) for kind, name in wanted]
        for reg in regs:
            self._spawn(reg)
        for i, reg in enumerate(regs):
            for attempt in range(5):
                if self._wait_ready(reg):
                    break
                log = reg.log_tail(20)
                if "address already in use" not in log or attempt == 4:
                    raise TestbedError(
                        f"registry {reg.name} ({reg.kind}) did not start; log {reg.log_file}:\n{log}"
                    )
                # Lost the port race: pick a new port and try again.
                reg.stop()
                self.all.remove(reg)
                fresh = self._prepare(reg.kind, reg.name)
                self._spawn(fresh)
                regs[i] = reg = fresh
        return regs

    def _wait_ready(self, reg: Registry) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        verify = reg.ssl_verify()
        with httpx.Client(verify=verify, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if reg.process is None or reg.process.poll() is not None:
                    return False
                try:
                    r = client.get(reg.url + "/v2/")
                    if r.status_code in (200, 401):
                        return True
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        reg.stop()
        raise TestbedError(f"registry {reg.name} not ready after {START_TIMEOUT}s; log {reg.log_file}")


# ----------------------------------------------------------------------------------------------------
# Repository names
# ----------------------------------------------------------------------------------------------------


def repo_name(label: str, prefix: str = "t") -> str:
    """A valid, unique repository name: ``<prefix>/<sanitised label>-<6 hex>``."""
    clean = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:60].strip("-") or "repo"
    return f"{prefix}/{clean}-{secrets.token_hex(3)}"


# ----------------------------------------------------------------------------------------------------
# docker-compose support
# ----------------------------------------------------------------------------------------------------

COMPOSE_PORTS: dict[Kind, int] = {"plain": 5000, "token": 5001, "basic": 5002}
COMPOSE_TOKEN_PORT = 5443


def compose_setup(directory: Path) -> None:
    """Write certs, htpasswd and registry configs that ``docker-compose.test.yml`` mounts.

    Inside the containers everything is mounted at ``/testbed`` and storage lives at
    ``/var/lib/registry``. Clients on the host use ``DIR/pki/certs`` as ``--cert-dir``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    pki = TestPKI.create(directory / "pki", extra_names=("registry-token", "registry-basic", "tokenserver"))
    (directory / "htpasswd").write_text(htpasswd_line(USERNAME, PASSWORD))
    inside = "/testbed"
    for kind in KINDS:
        port = COMPOSE_PORTS[kind]
        config = registry_config(
            kind,
            addr=f"0.0.0.0:{port}",
            storage_dir="/var/lib/registry",
            secret=secrets.token_hex(16),
            tls_cert=f"{inside}/pki/server.crt",
            tls_key=f"{inside}/pki/server.key",
            token_realm=f"https://127.0.0.1:{COMPOSE_TOKEN_PORT}/token",
            token_rootcertbundle=f"{inside}/pki/token-signing.crt",
            htpasswd_path=f"{inside}/htpasswd",
        )
        (directory / f"{kind}.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    # Containers run as other users; the key files must be readable there.
    for path in (pki.server_key_file, pki.signing_key_file):
        path.chmod(0o644)
    print(f"wrote test-bed files to {directory}; use --cert-dir {pki.cert_dir}", file=sys.stderr)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.registries")
    sub = parser.add_subparsers(dest="command", required=True)
    setup = sub.add_parser("compose-setup", help="write files for docker-compose.test.yml")
    setup.add_argument("directory", nargs="?", default=".testbed-compose")
    serve = sub.add_parser("serve", help="start the three registries here and wait (Ctrl-C stops)")
    serve.add_argument("directory", nargs="?", default=None)
    args = parser.parse_args(argv)
    if args.command == "compose-setup":
        compose_setup(Path(args.directory))
        return 0
    import tempfile

    root = Path(args.directory or tempfile.mkdtemp(prefix="regtool-testbed-"))
    with RegistryBed(root) as bed:
        for kind in KINDS:
            reg = bed.get(kind)
            print(f"{kind:6} {reg.url}  storage={reg.storage_dir}  log={reg.log_file}", file=sys.stderr)
        print(f"token realm {bed.token_server.realm}; --cert-dir {bed.pki.cert_dir}", file=sys.stderr)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
