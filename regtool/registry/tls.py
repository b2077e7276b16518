"""Per-registry TLS settings from containers-certs.d(5) directories.

A registry's directory (``certs.d/HOST[:PORT]/``) may hold:

* ``*.crt``  -- extra CA certificates, trusted on top of the system store;
* ``X.cert`` + ``X.key`` -- a client certificate and its key (a ``.cert``
  without its ``.key``, or the reverse, is an error, as in containers/image).

Directories searched, first existing one wins (as containers/image does):
``$HOME/.config/containers/certs.d/HOST`` (only when not running as root),
``/etc/containers/certs.d/HOST``, ``/etc/docker/certs.d/HOST``. An explicit
``--cert-dir`` replaces the search.

Python's ``ssl`` module presents a single client certificate, so when a
directory has several ``.cert``/``.key`` pairs the first by name is used
(Go picks one per handshake; a debug line notes the others).

Contexts are cached per (verify, directory): building one loads the whole
system trust store. Treat returned contexts as read-only.
"""

from __future__ import annotations

import functools
import logging
import os
import ssl
from pathlib import Path
from typing import NoReturn

from regtool.errors import UsageError

__all__ = ["build_ssl_context", "cert_dirs_for", "clear_ssl_context_cache"]

log = logging.getLogger(__name__)

#: System-wide per-host certificate directories, in search order.
SYSTEM_CERT_DIRS: tuple[Path, ...] = (Path("/etc/containers/certs.d"), Path("/etc/docker/certs.d"))


_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


def _is_rootless() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() != 0


def _user_cert_dir() -> Path:
    return Path(os.path.expanduser("~")) / ".config" / "containers" / "certs.d"


def _check_host(host: str) -> None:
    if not host or "/" in host or "\\" in host or host in (".", "..") or "\x00" in host:
        raise UsageError(f"invalid registry host {host!r} for a certificate directory")


def cert_dirs_for(host: str, cert_dir: str | None = None) -> list[Path]:
    """Candidate certificate directories for ``host`` (``host[:port]``), in order.

    With ``cert_dir`` only that directory. ``host`` is the registry name as
    written in references (``docker.io``, ``localhost:5000``).
    """
    if cert_dir is not None:
        return [Path(cert_dir)]
    _check_host(host)
    roots = list(SYSTEM_CERT_DIRS)
    if _is_rootless():
        roots.insert(0, _user_cert_dir())
    names = [host]
    if host.lower() in _DOCKER_HUB_ALIASES and host.lower() != "docker.io":
        names.append("docker.io")  # containers/image names Docker Hub's directory docker.io
    return [root / name for root in roots for name in names]


def _first_existing(candidates: list[Path]) -> Path | None:
    for candidate in candidates:
        try:
            if candidate.is_dir():
                return candidate
        except PermissionError:
            log.debug("cannot access certificate directory %s: permission denied", candidate)
    return None


def _add_certifi_if_no_system_store(ctx: ssl.SSLContext) -> None:
    """Trust certifi's CAs when the system has no CA store at all (some minimal images)."""
    paths = ssl.get_default_verify_paths()
    has_file = paths.cafile is not None and os.path.isfile(paths.cafile)
    has_dir = paths.capath is not None and os.path.isdir(paths.capath)
    if has_file or has_dir or ctx.cert_store_stats().get("x509_ca", 0):
        return
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi comes with httpx
        return
    log.debug("no system CA store found; using certifi's")
    ctx.load_verify_locations(cafile=certifi.where())


def _refuse_password() -> NoReturn:
    raise _EncryptedKey


class _EncryptedKey(Exception):
    pass


def _scan(directory: Path) -> tuple[list[Path], list[tuple[Path, Path]]]:
    """CA files and (cert, key) pairs in ``directory``, validated as containers does."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise UsageError(f"cannot read certificate directory {directory}: {exc.strerror or exc}") from None
    cas: list[Path] = []
    pairs: list[tuple[Path, Path]] = []
    for name in names:
        path = directory / name
        if name.endswith(".crt"):
            if path.is_file():
                cas.append(path)
        elif name.endswith(".cert"):
            key = directory / (name[: -len(".cert")] + ".key")
            if not key.exists():
                raise UsageError(
                    f"missing key {key.name} for client certificate {path}; "
                    "CA certificates should use the extension .crt"
                )
            pairs.append((path, key))
        elif name.endswith(".key"):
            cert = directory / (name[: -len(".key")] + ".cert")
            if not cert.exists():
                raise UsageError(f"missing client certificate {cert.name} for key {path}")
    return cas, pairs


@functools.lru_cache(maxsize=64)
def _context(verify: bool, directory: str | None) -> ssl.SSLContext:
    if verify:
        ctx = ssl.create_default_context()
        _add_certifi_if_no_system_store(ctx)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if directory is None:
        return ctx
    cas, pairs = _scan(Path(directory))
    if verify and cas:
        # Python 3.13 turns on VERIFY_X509_STRICT, which rejects many private CAs
        # that Go clients (podman, skopeo, docker) accept; match them here.
        ctx.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
        for ca in cas:
            try:
                ctx.load_verify_locations(cafile=str(ca))
            except (ssl.SSLError, OSError, ValueError):
                raise UsageError(f"cannot load CA certificate {ca}") from None
    if pairs:
        cert, key = pairs[0]
        for other, _ in pairs[1:]:
            log.debug("only one client certificate per registry is supported; ignoring %s", other)
        try:
            ctx.load_cert_chain(certfile=str(cert), keyfile=str(key), password=_refuse_password)
        except _EncryptedKey:
            raise UsageError(f"client key {key} is encrypted; use an unencrypted key") from None
        except (ssl.SSLError, OSError, ValueError):
            raise UsageError(f"cannot load client certificate {cert} with key {key}") from None
    return ctx


def build_ssl_context(
    host: str, *, verify: bool = True, cert_dir: str | None = None
) -> ssl.SSLContext | bool:
    """The TLS context for connections to ``host``.

    System trust store plus the certificate directory's ``*.crt`` files, and
    its client certificate if any. ``verify=False`` disables certificate and
    hostname checks but still presents the client certificate. An explicit
    ``cert_dir`` that does not exist is a :class:`UsageError`. Currently
    always returns an :class:`ssl.SSLContext` (the ``bool`` in the signature
    is kept for callers that pass the result straight to httpx's ``verify``).
    """
    candidates = cert_dirs_for(host, cert_dir)
    directory = _first_existing(candidates)
    if cert_dir is not None and directory is None:
        raise UsageError(f"certificate directory {cert_dir} does not exist")
    return _context(verify, None if directory is None else str(directory))


def clear_ssl_context_cache() -> None:
    """Forget cached contexts (after certificate files changed, and in tests)."""
    _context.cache_clear()
