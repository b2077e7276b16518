"""The async distribution-API client.

One ``RegistryClient`` serves a whole run: connection pools, TLS contexts,
tokens and the HTTP-vs-HTTPS answer are kept per host and reused. Everything
that is read is checked against its digest while it streams, so callers never
act on content that does not match what they asked for.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

import anyio
import anyio.lowlevel
import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from regtool.errors import DigestMismatch, InvalidReference, ManifestError, RegtoolError, UsageError
from regtool.manifest import (
    ACCEPT_MANIFESTS,
    MAX_MANIFEST_SIZE,
    OCI_INDEX,
    Descriptor,
    Manifest,
    manifest_digest,
    parse_manifest,
    validate_digest,
)
from regtool.reference import Reference
from regtool.registry.auth import Authenticator
from regtool.registry.errors import (
    ConnectionFailed,
    RegistryError,
    RetryWaitExceeded,
    ServerError,
    TLSVerificationFailed,
    TooManyRequests,
    Unauthorized,
    error_from_response,
)
from regtool.registry.options import ClientOptions, RegistryOptions
from regtool.registry.registries_conf import RegistriesConf

log = logging.getLogger("regtool.registry")

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
UPLOAD_CHUNK = 8 << 20
MAX_TAG_PAGES = 10_000
MAX_REDIRECTS = 5
#: Bodies read whole (tag lists, catalogs, upload answers) stop here: a registry may send endless ones.
MAX_RESPONSE_SIZE = 64 << 20
#: Only the start of an error body is kept (the message is in the first JSON error).
MAX_ERROR_BODY = 64 << 10
#: Digest algorithms content is verified with (the OCI registered ones); anything else is refused.
VERIFIABLE_ALGORITHMS = frozenset({"sha256", "sha384", "sha512"})

#: Opens a blob's bytes from an offset; uploads reopen it to resume or fall back.
BlobOpener = Callable[[int], AsyncIterator[bytes]]


class ResponseTooLarge(RegistryError):
    """A body over the size regtool reads whole (not retried: the registry would send it again)."""


@dataclass
class _Host:
    registry: str
    api_host: str
    options: RegistryOptions
    http: httpx.AsyncClient
    auth: Authenticator
    blobs: anyio.CapacityLimiter
    small: anyio.CapacityLimiter
    scheme: str | None = None
    probe_lock: anyio.Lock = field(default_factory=anyio.Lock)
    referrers_api: bool | None = None
    rate_limit_remaining: int | None = None
    _next_slot: float = 0.0

    @property
    def base(self) -> str:
        return f"{self.scheme or 'https'}://{self.api_host}"


def _pull(repo: str) -> str:
    return f"repository:{repo}:pull"


def _push(repo: str) -> str:
    return f"repository:{repo}:pull,push"


def _digest_of(data: bytes, algorithm: str) -> str:
    if algorithm == "sha256":
        return manifest_digest(data)
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def _append_query(url: str, **params: str) -> str:
    """Adds query parameters by string, keeping an upload URL's ``_state`` exactly as sent."""
    extra = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    return url + ("&" if "?" in url else "?") + extra


def _next_link(response: httpx.Response) -> str | None:
    link = response.headers.get("link")
    if not link:
        return None
    for part in link.split(","):
        m = re.match(r'\s*<([^>]*)>\s*;(.*)', part)
        if m and re.search(r'rel="?next"?', m.group(2)):
            return str(response.request.url.join(m.group(1)))
    return None


class RegistryClient:
    """Async client for the OCI distribution API; use as ``async with``."""

    def __init__(self, options: ClientOptions | None = None) -> None:
        self.options = options or ClientOptions()
        self._hosts: dict[str, _Host] = {}
        self._lock = anyio.Lock()
        #: Requests sent, by method; tests and reports read it.
        self.requests: Counter[str] = Counter()
        self.retries = 0
        self._conf: RegistriesConf | None = None

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for host in self._hosts.values():
            await host.http.aclose()
        self._hosts.clear()

    # -- hosts, connections and auth -------------------------------------------------

    def _credential_for(self, registry: str, repository: str | None, opts: RegistryOptions) -> Any:
        if opts.no_creds:
            return None
        if opts.credential is not None:
            return opts.credential
        from regtool.registry.credentials import lookup

        return lookup(registry, repository, authfile=opts.authfile)

    async def _host(self, ref: Reference | str) -> _Host:
        registry = ref.registry if isinstance(ref, Reference) else ref
        host = self._hosts.get(registry)
        if host is not None:
            return host
        async with self._lock:
            host = self._hosts.get(registry)
            if host is not None:
                return host
            opts = self.options.for_host(registry)
            api_host = ref.api_host if isinstance(ref, Reference) else Reference(registry, "x").api_host
            from regtool.registry.tls import build_ssl_context

            conf = self._registries_conf()
            if conf.is_insecure(registry) and opts.tls_verify:
                log.info("%s is insecure in registries.conf: allowing unverified TLS and HTTP", registry)
                opts = replace(opts, tls_verify=False)
            verify: ssl.SSLContext | bool
            if opts.ca_file or opts.client_cert:
                verify = _file_ssl_context(opts)
            else:
                verify = build_ssl_context(registry, verify=opts.tls_verify, cert_dir=opts.cert_dir)
            # Small requests (HEADs, manifests, tag lists) get their own, larger allowance: a no-op
            # sync of a few dozen tags sends its HEADs in one wave, and blobs never starve them.
            blobs, small = max(1, opts.max_concurrency), max(8, opts.max_concurrency * 4)
            transport = self.options.transport
            if transport is None and not self.options.http2:
                from regtool.registry.http11 import Http11Transport

                transport = Http11Transport(ssl_context=verify if isinstance(verify, ssl.SSLContext) else None)
            http = httpx.AsyncClient(
                verify=verify,
                http2=self.options.http2,
                timeout=httpx.Timeout(self.options.timeout, connect=min(30.0, self.options.timeout)),
                limits=httpx.Limits(max_connections=blobs + small, max_keepalive_connections=32),
                headers={"User-Agent": self.options.user_agent},
                follow_redirects=False,
                trust_env=True,
                transport=transport,
            )
            repository = ref.repository if isinstance(ref, Reference) else None
            cred = self._credential_for(registry, repository, opts)
            host = _Host(
                registry=registry,
                api_host=api_host,
                options=opts,
                http=http,
                auth=Authenticator(api_host, cred),
                blobs=anyio.CapacityLimiter(blobs),
                small=anyio.CapacityLimiter(small),
                scheme=None if not opts.tls_verify else "https",
            )
            self._hosts[registry] = host
            return host

    async def prepare(self, ref: Reference) -> None:
        """Settles the host's connection questions (blocked? HTTPS or HTTP?) ahead of its first request.

        Lets a caller overlap the ``--tls-verify=false`` probe of one host with work on another.
        """
        self._check_blocked(ref)
        await self._resolve_scheme(await self._host(ref))

    def _registries_conf(self) -> RegistriesConf:
        if self._conf is None:
            self._conf = RegistriesConf.load()
        return self._conf

    def _check_blocked(self, ref: Reference | str) -> None:
        if isinstance(ref, Reference) and self._registries_conf().is_blocked(ref.registry, ref.repository):
            raise UsageError(f"{ref.name} is blocked in registries.conf")

    def rate_limit_remaining(self, registry: str) -> int | None:
        host = self._hosts.get(registry)
        return host.rate_limit_remaining if host else None

    async def _pace(self, host: _Host) -> None:
        rps = host.options.requests_per_second
        if not rps:
            return
        now = time.monotonic()
        slot = max(now, host._next_slot)
        host._next_slot = slot + 1.0 / rps
        if slot > now:
            await anyio.sleep(slot - now)

    async def _send_once(
        self,
        host: _Host,
        method: str,
        url: str,
        *,
        scopes: tuple[str, ...],
        headers: dict[str, str] | None,
        content: Any,
    ) -> httpx.Response:
        """One exchange, answering an auth challenge once and following redirects.

        Authorization goes only to the registry host itself; a redirect to any
        other host (object stores) is followed without it.
        """
        await self._pace(host)
        hdrs = dict(headers or {})
        # Upload Locations and pagination Links are the registry's to choose; credentials still only
        # go to the registry's own origin, and only its own challenges are answered.
        own = _same_origin(host, url)
        authz = await host.auth.header_for(host.http, scopes) if own else None
        if authz:
            hdrs["Authorization"] = authz
        resp = await self._exchange(host, method, url, hdrs, content)
        learned = own and resp.status_code == 401 and host.auth.learn(resp)
        # A request sent before a concurrent one learnt the (Basic) challenge still gets its answer.
        unanswered = own and resp.status_code == 401 and "Authorization" not in hdrs
        if (learned or unanswered) and not callable(getattr(content, "__aiter__", None)):
            if learned:
                host.auth.forget(scopes)
            authz = await host.auth.header_for(host.http, scopes)
            if authz:  # else the 401 stands (and stays readable for the error message)
                await resp.aclose()
                hdrs["Authorization"] = authz
                resp = await self._exchange(host, method, url, hdrs, content)
        redirects = 0
        while resp.status_code in (301, 302, 303, 307, 308) and method in ("GET", "HEAD"):
            redirects += 1
            if redirects > MAX_REDIRECTS:
                await resp.aclose()
                raise RegistryError(f"{method} {host.registry}: too many redirects", host=host.registry)
            target = resp.request.url.join(resp.headers.get("location", ""))
            await resp.aclose()
            if not _same_origin(host, target):
                hdrs.pop("Authorization", None)
            if target.scheme == "http" and host.options.tls_verify and resp.request.url.scheme == "https":
                raise RegistryError(
                    f"{host.registry}: refusing redirect from HTTPS to plain HTTP ({target.host})",
                    host=host.registry,
                )
            resp = await self._exchange(host, method, str(target), hdrs, None)
        _note_rate_limit(host, resp)
        return resp

    async def _exchange(
        self, host: _Host, method: str, url: str, headers: dict[str, str], content: Any
    ) -> httpx.Response:
        self.requests[method] += 1
        req = host.http.build_request(method, url, headers=headers, content=content)
        try:
            resp = await host.http.send(req, stream=True)
        except httpx.TimeoutException as exc:
            raise ConnectionFailed(f"{method} {host.registry}: timed out ({type(exc).__name__})") from exc
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s -> %s", method, req.url.copy_with(query=None), resp.status_code)
        return resp

    async def _resolve_scheme(self, host: _Host) -> None:
        """With --tls-verify=false, tries HTTPS (unverified) then plain HTTP, once per host."""
        if host.scheme is not None:
            return
        async with host.probe_lock:  # concurrent first requests share one probe
            if host.scheme is None:
                await self._probe_scheme(host)

    async def _plain_while_probing(
        self, host: _Host, method: str, path: str, headers: dict[str, str] | None, wanted: Sequence[int]
    ) -> httpx.Response | None:
        """Sends an anonymous GET/HEAD over plain HTTP while the HTTPS probe is out (``--tls-verify=false``).

        A plain-HTTP registry then costs no round trip for the probe: the answer is kept only when the
        probe settles on HTTP and its status is one the caller wants. Anything else (HTTPS after all,
        a challenge, an error) is dropped and the request goes out the normal way. The request never
        carries credentials, so nothing secret travels in the clear.
        """
        answers: list[httpx.Response] = []

        async def speculate() -> None:
            async with host.small:
                if host.scheme is not None:
                    return  # settled while waiting for a slot: the normal way is as quick
                await self._pace(host)
                plain = f"http://{host.api_host}{path}"
                # a failure (a timeout is ConnectionFailed) is left to the normal way, which retries it
                with contextlib.suppress(httpx.TransportError, ConnectionFailed):
                    answers.append(await self._exchange(host, method, plain, dict(headers or {}), None))

        async with anyio.create_task_group() as tg:
            tg.start_soon(speculate)
            await self._resolve_scheme(host)
            if host.scheme != "http":
                tg.cancel_scope.cancel()  # an HTTPS server may never answer plain text
        resp = answers[0] if answers else None
        if resp is not None and (host.scheme != "http" or resp.status_code not in wanted):
            await resp.aclose()
            return None
        if resp is not None:
            _note_rate_limit(host, resp)
        return resp

    async def _probe_scheme(self, host: _Host) -> None:
        for attempt in range(3):
            try:
                async with host.http.stream("GET", f"https://{host.api_host}/v2/"):
                    pass  # the answer's body is not needed (nor read: it may never end)
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                text = str(exc)
                log.debug("https://%s unusable: %s", host.api_host, type(exc).__name__)
                refused = isinstance(exc, httpx.ConnectError) and "refused" in text.lower()
                if "SSL" in text or "TLS" in text or "record" in text or refused or attempt == 2:
                    break  # the server does not speak TLS here: plain HTTP, as skopeo falls back
                await anyio.sleep(0.1 * (attempt + 1))  # a reset may be transient: ask again
                continue
            host.scheme = "https"
            return
        host.scheme = "http"

    def _retrying(self) -> AsyncRetrying:
        policy = self.options.retry
        backoff = wait_exponential_jitter(
            multiplier=policy.initial_backoff, max=policy.max_backoff, jitter=policy.initial_backoff
        )

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, TooManyRequests) and exc.retry_after is not None:
                return exc.retry_after
            return float(backoff(state))

        def should_retry(exc: BaseException) -> bool:
            if isinstance(exc, (RetryWaitExceeded, TLSVerificationFailed)):
                return False
            return isinstance(exc, (ServerError, TooManyRequests, ConnectionFailed))

        def before_sleep(state: RetryCallState) -> None:
            self.retries += 1
            exc = state.outcome.exception() if state.outcome else None
            log.info("retrying after %s (attempt %d)", exc, state.attempt_number)

        return AsyncRetrying(
            stop=stop_after_attempt(policy.attempts),
            wait=wait,
            retry=retry_if_exception(should_retry),
            before_sleep=before_sleep,
            reraise=True,
        )

    async def _request(
        self,
        ref: Reference | str,
        method: str,
        path: str,
        *,
        scopes: tuple[str, ...],
        what: str,
        ok: Sequence[int] = (200,),
        headers: dict[str, str] | None = None,
        content: Any = None,
        stream: bool = False,
        url: str | None = None,
        limiter: str = "small",
        allow: Sequence[int] = (),
        max_body: int = MAX_RESPONSE_SIZE,
    ) -> httpx.Response:
        """A request with retries; returns a response with status in ``ok`` or ``allow``.

        Non-streamed responses come back read; streamed ones open (caller closes).
        """
        self._check_blocked(ref)
        host = await self._host(ref)
        early: httpx.Response | None = None
        if host.scheme is None and url is None and content is None and method in ("GET", "HEAD") and not stream:
            early = await self._plain_while_probing(host, method, path, headers, (*ok, *allow))
        else:
            await self._resolve_scheme(host)
        target = url or f"{host.base}{path}"
        lim = host.small if limiter == "small" else host.blobs
        async for attempt in self._retrying():
            with attempt:
                async with lim:
                    try:
                        if early is not None:
                            resp, early = early, None
                        else:
                            resp = await self._send_once(
                                host, method, target, scopes=scopes, headers=headers, content=content
                            )
                    except httpx.TransportError as exc:
                        detail = _describe_transport_error(exc)
                        cls = TLSVerificationFailed if detail.startswith(_TLS_PROBLEMS) else ConnectionFailed
                        raise cls(f"{what}: cannot reach {host.registry}: {detail}") from exc
                    if resp.status_code in ok or resp.status_code in allow:
                        if not stream:
                            try:
                                read = await _read_capped(resp, max_body)
                            except httpx.TransportError as exc:
                                raise ConnectionFailed(
                                    f"{what}: connection to {host.registry} broke: {type(exc).__name__}"
                                ) from exc
                            if read is None:
                                raise ResponseTooLarge(
                                    f"{what}: {host.registry} answered more than {max_body} bytes "
                                    "(answer too large)",
                                    host=host.registry,
                                    status=resp.status_code,
                                )
                            resp = read
                        return resp
                    try:
                        resp = await _read_capped(resp, MAX_ERROR_BODY) or _bodiless(resp)
                    except httpx.TransportError:
                        await resp.aclose()
                        resp = _bodiless(resp)
                    err = error_from_response(resp, what)
                    too_long = self._retry_wait_exceeded(err, what)
                    if too_long is not None:
                        raise too_long
                    if isinstance(err, Unauthorized) and resp.status_code == 401:
                        host.auth.forget(scopes)
                    raise err
        raise AssertionError("unreachable")  # pragma: no cover

    # -- endpoints -------------------------------------------------------------------

    async def ping(self, registry: str) -> bool:
        """True when ``/v2/`` answers (200 or an auth challenge)."""
        resp = await self._request(registry, "GET", "/v2/", scopes=(), what=f"ping {registry}", allow=(401,))
        return resp.status_code in (200, 401)

    async def check_login(self, registry: str) -> None:
        """Proves the configured credential works: ``/v2/`` must answer 200 once authenticated."""
        await self._request(registry, "GET", "/v2/", scopes=(), what=f"login to {registry}")

    async def head_manifest(self, ref: Reference) -> Descriptor | None:
        """The manifest's descriptor from a HEAD (no pull-quota cost); None if absent."""
        resp = await self._request(
            ref,
            "HEAD",
            f"/v2/{ref.repository}/manifests/{ref.identifier}",
            scopes=(_pull(ref.repository),),
            what=f"manifest {ref}",
            headers={"Accept": ", ".join(ACCEPT_MANIFESTS)},
            allow=(404,),
        )
        if resp.status_code == 404:
            return None
        digest = resp.headers.get("docker-content-digest") or ""
        if not digest:
            if ref.digest:
                digest = ref.digest
            else:
                # No Docker-Content-Digest: only the bytes can tell (a GET, as skopeo does then).
                return (await self.get_manifest(ref)).descriptor()
        _announced_digest(digest, f"manifest {ref}", ref.registry)
        if ref.digest and digest != ref.digest:
            raise DigestMismatch(f"manifest {ref}: {ref.registry} answered digest {digest}")
        return Descriptor(
            media_type=resp.headers.get("content-type", "").split(";")[0].strip(),
            digest=digest,
            size=_int(resp, "content-length"),
        )

    async def get_manifest(self, ref: Reference, accept: Sequence[str] = ACCEPT_MANIFESTS) -> Manifest:
        """The manifest bytes as served, checked against the asked or announced digest."""
        what = f"manifest {ref}"
        try:
            # Read inside the retried request, so a connection broken mid-body is retried too.
            resp = await self._request(
                ref,
                "GET",
                f"/v2/{ref.repository}/manifests/{ref.identifier}",
                scopes=(_pull(ref.repository),),
                what=what,
                headers={"Accept": ", ".join(accept)},
                max_body=MAX_MANIFEST_SIZE,
            )
        except ResponseTooLarge:
            raise ManifestError(f"{what}: over the {MAX_MANIFEST_SIZE} byte manifest limit") from None
        body = resp.content
        data = bytes(body)
        expected = ref.digest or resp.headers.get("docker-content-digest")
        if expected:
            _announced_digest(expected, what, ref.registry)
            algorithm = expected.split(":", 1)[0]
            try:
                actual = _digest_of(data, algorithm)
            except (ManifestError, ValueError) as exc:
                raise DigestMismatch(f"{what}: cannot compute digest of what {ref.registry} served: {exc}") from exc
            if actual != expected:
                raise DigestMismatch(
                    f"{what}: {ref.registry} served content with digest {actual}, expected {expected}"
                )
        content_type = resp.headers.get("content-type")
        return parse_manifest(data, content_type)

    async def put_manifest(self, ref: Reference, data: bytes, media_type: str) -> str:
        """Pushes manifest bytes unchanged under ``ref.identifier``; returns the digest."""
        resp = await self._request(
            ref,
            "PUT",
            f"/v2/{ref.repository}/manifests/{ref.identifier}",
            scopes=(_push(ref.repository),),
            what=f"push manifest {ref}",
            ok=(200, 201, 202),
            headers={"Content-Type": media_type},
            content=data,
        )
        return resp.headers.get("docker-content-digest") or manifest_digest(data)

    async def delete_manifest(self, ref: Reference) -> None:
        """Deletes by digest (registries refuse deletion by tag)."""
        if not ref.digest:
            raise ValueError("delete_manifest needs a digest reference")
        await self._request(
            ref,
            "DELETE",
            f"/v2/{ref.repository}/manifests/{ref.digest}",
            scopes=(f"repository:{ref.repository}:delete",),
            what=f"delete manifest {ref}",
            ok=(200, 202, 204),
        )

    async def blob_exists(self, ref: Reference, digest: str) -> int | None:
        """The blob's size if the repository has it, else None."""
        resp = await self._request(
            ref,
            "HEAD",
            f"/v2/{ref.repository}/blobs/{digest}",
            scopes=(_pull(ref.repository),),
            what=f"blob {digest} in {ref.name}",
            allow=(404,),
        )
        if resp.status_code == 404:
            return None
        return _int(resp, "content-length")

    async def open_blob(self, ref: Reference, desc: Descriptor, offset: int = 0) -> AsyncIterator[bytes]:
        """Streams a blob from ``offset``, resuming with Range after a broken connection.

        From offset 0 the digest is checked while streaming and the last chunk is
        held back until it matches, so a consumer never receives a whole bad blob.
        """
        what = f"blob {desc.digest} from {ref.registry}/{ref.repository}"
        path = f"/v2/{ref.repository}/blobs/{desc.digest}"
        algorithm = desc.digest.split(":", 1)[0]
        if algorithm not in VERIFIABLE_ALGORITHMS:
            raise ManifestError(f"{what}: unsupported digest algorithm {algorithm!r}; cannot verify it")
        hasher = hashlib.new(algorithm) if offset == 0 else None
        pos = offset
        held: bytes | None = None  # the newest piece, released once the next one arrives
        resumes = 0
        while True:
            headers = {"Range": f"bytes={pos}-"} if pos else {}
            resp = await self._request(
                ref,
                "GET",
                path,
                scopes=(_pull(ref.repository),),
                what=what,
                headers=headers,
                ok=(200, 206),
                stream=True,
                limiter="blobs",
            )
            skip = pos if (pos and resp.status_code == 200) else 0
            try:
                async for piece in resp.aiter_bytes():
                    if skip:
                        if len(piece) <= skip:
                            skip -= len(piece)
                            continue
                        piece = piece[skip:]
                        skip = 0
                    pos += len(piece)
                    if desc.size >= 0 and pos > desc.size:
                        raise DigestMismatch(f"{what}: more bytes than the {desc.size} its descriptor says")
                    if hasher is not None:
                        hasher.update(piece)
                    if held is not None:
                        yield held  # pieces pass through as received: no copying into bigger buffers
                    held = piece
                break
            except httpx.TransportError as exc:
                resumes += 1
                self.retries += 1
                if resumes > self.options.retry.attempts:
                    raise ConnectionFailed(f"{what}: broke {resumes} times, last: {type(exc).__name__}") from exc
                log.info("%s: connection broke at byte %d, resuming", what, pos)
                await anyio.sleep(min(self.options.retry.max_backoff, 0.2 * resumes))
            finally:
                await resp.aclose()
        if desc.size >= 0 and pos != desc.size:  # -1: size unknown (schema 1); the digest still decides
            raise DigestMismatch(f"{what}: got {pos} bytes, descriptor says {desc.size}")
        if hasher is not None:
            actual = f"{algorithm}:{hasher.hexdigest()}"
            if actual != desc.digest:
                raise DigestMismatch(f"{what}: content hashes to {actual}")
        if held is not None:
            yield held

    async def _start_upload(
        self, ref: Reference, digest: str, mount_from: str | None
    ) -> tuple[str | None, httpx.Response]:
        """POSTs an upload (or a mount); returns the session URL, or None when mounted."""
        scopes: tuple[str, ...] = (_push(ref.repository),)
        path = f"/v2/{ref.repository}/blobs/uploads/"
        if mount_from and mount_from != ref.repository:
            scopes = (_push(ref.repository), _pull(mount_from))
            path += f"?mount={quote(digest, safe='')}&from={quote(mount_from, safe='/')}"
        resp = await self._request(
            ref, "POST", path, scopes=scopes, what=f"start upload of {digest} to {ref.name}", ok=(201, 202)
        )
        if resp.status_code == 201:
            return None, resp
        location = resp.headers.get("location")
        if not location:
            raise RegistryError(f"upload of {digest} to {ref.name}: no Location in answer", host=ref.registry)
        return str(resp.request.url.join(location)), resp

    async def mount_blob(self, ref: Reference, digest: str, from_repository: str) -> bool:
        """Cross-repository mount; True when the registry mounted it (201)."""
        location, _ = await self._start_upload(ref, digest, from_repository)
        if location is None:
            return True
        await self._cancel_upload(ref, location)
        return False

    async def _cancel_upload(self, ref: Reference, location: str) -> None:
        try:
            await self._request(
                ref,
                "DELETE",
                "",
                url=location,
                scopes=(_push(ref.repository),),
                what="cancel upload",
                ok=(200, 202, 204),
                allow=(404,),
            )
        except Exception as exc:  # best effort: the registry expires sessions anyway
            log.debug("cancelling upload failed: %s", exc)

    async def upload_blob(
        self, ref: Reference, desc: Descriptor, opener: BlobOpener, *, mount_from: str | None = None
    ) -> str:
        """Uploads a blob; returns "mounted" or "uploaded".

        Tries a cross-repository mount when ``mount_from`` is given, then one
        streaming PUT; registries that refuse that (or ask for chunks with
        ``OCI-Chunk-Min-Length``) get PATCH chunks, resumed from the server's
        ``Range`` after a failure. A failed session is cancelled.
        """
        host = await self._host(ref)
        # Shielded: a signal arriving while the POST is in flight must not leave an upload session
        # open that we never learned the URL of; it is cancelled right after instead.
        with anyio.CancelScope(shield=True, deadline=anyio.current_time() + self.options.timeout):
            location, resp = await self._start_upload(ref, desc.digest, mount_from)
        if location is None:
            return "mounted"
        try:
            await anyio.lowlevel.checkpoint()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._cancel_upload(ref, location)
            raise
        chunk_min = _int(resp, "oci-chunk-min-length")
        if host.options.chunked_upload or chunk_min > 0:
            await self._upload_chunked(ref, desc, opener, location, max(chunk_min, UPLOAD_CHUNK))
            return "uploaded"
        what = f"upload {desc.digest} to {ref.name}"
        failures = 0
        while True:
            err: RegtoolError
            try:
                async with host.blobs:
                    put = await self._send_once(
                        host,
                        "PUT",
                        _append_query(location, digest=desc.digest),
                        scopes=(_push(ref.repository),),
                        headers={"Content-Type": "application/octet-stream", "Content-Length": str(desc.size)},
                        content=opener(0),
                    )
                    put = await _read_capped(put, MAX_ERROR_BODY) or _bodiless(put)
            except httpx.TransportError as exc:
                err = ConnectionFailed(f"{what}: connection to {ref.registry} broke: {_describe_transport_error(exc)}")
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._cancel_upload(ref, location)
                raise
            else:
                if put.status_code in (201, 204):
                    return "uploaded"
                err = error_from_response(put, what)
            await self._cancel_upload(ref, location)
            if (
                isinstance(err, RegistryError)
                and err.status in (400, 405, 411, 413, 415, 416)
                and err.code not in ("DIGEST_INVALID", "SIZE_INVALID")
            ):
                log.info("%s refused a monolithic upload (%s); retrying in chunks", ref.registry, err.status)
                location, _ = await self._start_upload(ref, desc.digest, None)
                if location is None:
                    return "mounted"
                await self._upload_chunked(ref, desc, opener, location, max(chunk_min, UPLOAD_CHUNK))
                return "uploaded"
            # A streamed body cannot be replayed by tenacity: a transient failure starts a new session.
            failures += 1
            transient = isinstance(err, (ServerError, TooManyRequests, ConnectionFailed))
            if not transient or isinstance(err, RetryWaitExceeded) or failures >= self.options.retry.attempts:
                raise err
            if await self.blob_exists(ref, desc.digest) == desc.size:
                return "uploaded"  # the registry stored it; only its answer was lost
            self.retries += 1
            log.info("%s; starting the upload again (attempt %d)", err, failures + 1)
            await anyio.sleep(self._retry_delay(err, failures))
            location, _ = await self._start_upload(ref, desc.digest, None)
            if location is None:
                return "mounted"

    def _retry_wait_exceeded(self, err: RegtoolError, what: str) -> RetryWaitExceeded | None:
        """The error to end with when a registry asks for a longer wait than --max-retry-wait allows."""
        max_wait = self.options.retry.max_wait
        if isinstance(err, TooManyRequests) and err.retry_after is not None and err.retry_after > max_wait:
            return RetryWaitExceeded(
                f"{what}: {err.host} asks to retry after {err.retry_after:.0f}s, "
                f"more than --max-retry-wait {max_wait:.0f}s",
                retry_after=err.retry_after,
                host=err.host,
                status=429,
            )
        return None

    def _retry_delay(self, err: RegtoolError, failures: int) -> float:
        """How long to wait before retry number ``failures`` (Retry-After if the registry said)."""
        policy = self.options.retry
        too_long = self._retry_wait_exceeded(err, str(err))
        if too_long is not None:
            raise too_long
        if isinstance(err, TooManyRequests) and err.retry_after is not None:
            return err.retry_after
        return float(min(policy.max_backoff, policy.initial_backoff * 2 ** (failures - 1)))

    async def _upload_chunked(
        self, ref: Reference, desc: Descriptor, opener: BlobOpener, location: str, chunk_size: int
    ) -> None:
        host = await self._host(ref)
        scopes = (_push(ref.repository),)
        pos = 0
        failures = 0
        try:
            while pos < desc.size:
                try:
                    async with host.blobs:
                        async for chunk in _rechunk(opener(pos), chunk_size):
                            end = pos + len(chunk) - 1
                            resp = await self._send_once(
                                host,
                                "PATCH",
                                location,
                                scopes=scopes,
                                headers={
                                    "Content-Type": "application/octet-stream",
                                    "Content-Range": f"{pos}-{end}",
                                    "Content-Length": str(len(chunk)),
                                },
                                content=chunk,
                            )
                            resp = await _read_capped(resp, MAX_ERROR_BODY) or _bodiless(resp)
                            if resp.status_code != 202:
                                raise error_from_response(resp, f"upload chunk of {desc.digest} to {ref.name}")
                            location = str(resp.request.url.join(resp.headers.get("location", location)))
                            pos = end + 1
                except (httpx.TransportError, ServerError, TooManyRequests, ConnectionFailed) as exc:
                    failures += 1
                    if isinstance(exc, RetryWaitExceeded):
                        raise
                    if failures > self.options.retry.attempts:
                        if isinstance(exc, httpx.TransportError):
                            raise ConnectionFailed(
                                f"upload chunk of {desc.digest} to {ref.name}: connection to {ref.registry} "
                                f"broke: {_describe_transport_error(exc)}"
                            ) from exc
                        raise
                    log.info("chunk upload of %s broke (%s); asking the registry where to resume", desc.digest, exc)
                    await anyio.sleep(min(self.options.retry.max_backoff, 0.2 * failures))
                    status = await self._request(
                        ref, "GET", "", url=location, scopes=scopes, what="upload status", ok=(204,)
                    )
                    location = str(status.request.url.join(status.headers.get("location", location)))
                    rng = status.headers.get("range", "")
                    m = re.match(r"(?:bytes=)?0-(\d+)", rng)
                    pos = int(m.group(1)) + 1 if m else 0
            final = await self._request(
                ref,
                "PUT",
                "",
                url=_append_query(location, digest=desc.digest),
                scopes=scopes,
                what=f"finish upload of {desc.digest} to {ref.name}",
                ok=(201, 204),
                headers={"Content-Length": "0"},
            )
            del final
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._cancel_upload(ref, location)
            raise

    async def _paginate(
        self, ref: Reference | str, path: str, key: str, scopes: tuple[str, ...], what: str
    ) -> list[str]:
        items: list[str] = []
        seen_urls: set[str] = set()
        url: str | None = None
        for _ in range(MAX_TAG_PAGES):
            resp = await self._request(ref, "GET", path, url=url, scopes=scopes, what=what)
            try:
                body = resp.json()
            except ValueError as exc:
                raise RegistryError(f"{what}: answer is not JSON") from exc
            page = body.get(key) if isinstance(body, dict) else None
            if page is None:
                page = []
            if not isinstance(page, list) or not all(isinstance(t, str) for t in page):
                raise RegistryError(f"{what}: '{key}' is not a list of strings")
            items.extend(page)
            nxt = _next_link(resp)
            if not nxt or not page:
                return items
            if nxt in seen_urls:
                raise RegistryError(f"{what}: pagination loops back to a page already read")
            seen_urls.add(nxt)
            url = nxt
        raise RegistryError(f"{what}: more than {MAX_TAG_PAGES} pages; giving up")

    async def list_tags(self, ref: Reference, page_size: int | None = None) -> list[str]:
        """Every tag of the repository, following ``Link`` pagination."""
        path = f"/v2/{ref.repository}/tags/list" + (f"?n={page_size}" if page_size else "")
        tags = await self._paginate(ref, path, "tags", (_pull(ref.repository),), f"tags of {ref.name}")
        return list(dict.fromkeys(tags))

    async def catalog(self, registry: str, page_size: int = 1000) -> list[str]:
        """Repositories of a registry via ``_catalog`` (often restricted to admins)."""
        path = f"/v2/_catalog?n={page_size}"
        repos = await self._paginate(registry, path, "repositories", ("registry:catalog:*",), f"catalog of {registry}")
        return list(dict.fromkeys(repos))

    async def referrers(self, ref: Reference, digest: str, artifact_type: str | None = None) -> list[Descriptor]:
        """Manifests whose ``subject`` is ``digest``: the referrers API, else the fallback tag."""
        host = await self._host(ref)
        what = f"referrers of {ref.name}@{digest}"
        if host.referrers_api is not False:
            path = f"/v2/{ref.repository}/referrers/{digest}"
            if artifact_type:
                path += f"?artifactType={quote(artifact_type, safe='')}"
            resp = await self._request(
                ref,
                "GET",
                path,
                scopes=(_pull(ref.repository),),
                what=what,
                headers={"Accept": OCI_INDEX},
                allow=(400, 404, 405),
            )
            ctype = resp.headers.get("content-type", "").split(";")[0].strip()
            if resp.status_code == 200 and ctype == OCI_INDEX:
                host.referrers_api = True
                index = parse_manifest(resp.content, ctype)
                found = index.children()
                filtered = "artifactType" in resp.headers.get("oci-filters-applied", "")
                if artifact_type and not filtered:
                    found = [d for d in found if d.artifact_type == artifact_type]
                return found
            if resp.status_code in (404, 405):
                host.referrers_api = False
        fallback = ref.with_tag(digest.replace(":", "-"))
        try:
            index = await self.get_manifest(fallback, accept=(OCI_INDEX,))
        except RegistryError as exc:
            if exc.status == 404:
                return []
            raise
        if not index.is_index:
            return []
        found = index.children()
        if artifact_type:
            found = [d for d in found if d.artifact_type == artifact_type]
        return found


async def _rechunk(source: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    buf = bytearray()
    async for piece in source:
        buf += piece
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


def _file_ssl_context(opts: RegistryOptions) -> ssl.SSLContext:
    """A TLS context from explicit files (sync configs), on top of the system trust store."""
    ctx = ssl.create_default_context()
    try:
        if opts.ca_file:
            ctx.load_verify_locations(opts.ca_file)
        if opts.client_cert:
            ctx.load_cert_chain(opts.client_cert, opts.client_key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load TLS files ({opts.ca_file or opts.client_cert}): {exc}") from None
    if not opts.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _read_capped(resp: httpx.Response, limit: int) -> httpx.Response | None:
    """``resp`` with its body read, or None (connection closed) when the body passes ``limit`` bytes."""
    if resp.request.method == "HEAD":
        await resp.aread()
        return resp
    if _int(resp, "content-length") <= limit:
        body = bytearray()
        async for piece in resp.aiter_bytes():
            body += piece
            if len(body) > limit:
                break
        else:
            await resp.aclose()
            return _bodiless(resp, bytes(body))
    await resp.aclose()
    return None


def _bodiless(resp: httpx.Response, body: bytes = b"") -> httpx.Response:
    """A read copy of ``resp`` holding ``body`` (already decoded), status and headers kept."""
    drop = ("content-encoding", "content-length", "transfer-encoding")
    headers = [(k, v) for k, v in resp.headers.multi_items() if k.lower() not in drop]
    return httpx.Response(
        resp.status_code, headers=headers, content=body, request=resp.request, extensions=resp.extensions
    )


def _announced_digest(value: str, what: str, registry: str) -> str:
    """A digest a registry sent (Docker-Content-Digest): bad syntax is its fault (exit 1), not a usage error."""
    try:
        return validate_digest(value)
    except InvalidReference as exc:
        raise ManifestError(f"{what}: {registry} answered an invalid digest: {exc}") from None


def _same_origin(host: _Host, url: httpx.URL | str) -> bool:
    """Whether ``url`` is the registry itself (scheme, host and port): the only place credentials go."""
    if isinstance(url, str):
        base = host.base
        if url.startswith(base) and url[len(base) : len(base) + 1] in ("/", "?", ""):
            return True  # the common case, without parsing: the authority ends right after the base
        url = httpx.URL(url)
    netloc = url.netloc.decode("ascii", "replace").lower()
    return url.scheme == (host.scheme or "https") and netloc == host.api_host.lower()


def _note_rate_limit(host: _Host, resp: httpx.Response) -> None:
    """Keeps the registry's ``RateLimit-Remaining`` (Docker Hub sends it on HEADs) for the sync planner."""
    remaining = resp.headers.get("ratelimit-remaining")
    if remaining:
        try:
            host.rate_limit_remaining = int(remaining.split(";")[0])
        except ValueError:
            pass


def _int(resp: httpx.Response, header: str) -> int:
    try:
        return int(resp.headers.get(header, "0"))
    except ValueError:
        return 0


_TLS_PROBLEMS = ("TLS certificate verification failed", "the server does not speak TLS")


def _describe_transport_error(exc: httpx.TransportError) -> str:
    text = re.sub(r"\s*\(_ssl\.c:\d+\)", "", str(exc)) or type(exc).__name__  # no OpenSSL source locations
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        detail = text.split("certificate verify failed:")[-1].strip(" .)") if "verify failed:" in text else ""
        return f"TLS certificate verification failed ({detail or 'untrusted'}); use --cert-dir or --tls-verify=false"
    if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text:
        return "the server does not speak TLS (plain HTTP?); use --tls-verify=false for HTTP registries"
    return text.splitlines()[0][:200]
