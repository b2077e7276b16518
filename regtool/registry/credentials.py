"""Registry credentials: ``--creds`` parsing and the containers-auth.json(5) files.

Lookup follows containers-auth.json(5) (what podman and skopeo do), with the
Docker extensions that show up in ``~/.docker/config.json``:

* Files are searched in order (:func:`auth_file_candidates`); the first file
  holding a usable entry for the registry wins.
* Inside one file: ``credHelpers[registry]`` first, then ``auths`` with the
  most specific namespace key (``reg/ns1/ns2`` beats ``reg/ns1`` beats
  ``reg``), then the file's ``credsStore``.
* Keys are compared after normalisation: a ``http(s)://`` scheme and, for
  URL-style or legacy ``~/.dockercfg`` keys, the trailing path (``/v1/``) are
  dropped; ``docker.io``, ``index.docker.io`` and ``registry-1.docker.io`` are
  one registry, so Docker's ``https://index.docker.io/v1/`` key matches.
* Empty entries (``"auths": {"ghcr.io": {}}``, what ``docker login`` leaves
  behind when it stores the secret in a ``credsStore``) are not matches.

Writes (:func:`login`, :func:`logout`) only ever touch one file: ``--authfile``
/ ``$REGISTRY_AUTH_FILE`` if given, else ``$XDG_RUNTIME_DIR/containers/auth.json``,
the same target as ``podman login``. The file is replaced atomically and is
never readable by anyone but its owner, not even for an instant.

Not supported: ``credential-helpers`` in registries.conf(5), and the
``list`` verb of credential helpers.

No secret (password, token, ``auth`` value) ever goes into a ``repr()``, an
exception message or a log record.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regtool.errors import RegtoolError, UsageError

__all__ = [
    "Credential",
    "auth_file_candidates",
    "get_login",
    "login",
    "logout",
    "lookup",
    "parse_creds",
]

log = logging.getLogger(__name__)

_DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
#: The server URL Docker uses for Docker Hub with credential helpers.
_DOCKER_HUB_LEGACY_URL = "https://index.docker.io/v1/"
#: What a credential helper prints when it has nothing for a server URL.
_HELPER_NOT_FOUND = "credentials not found"
#: The username a credential helper returns for an identity (refresh) token.
_TOKEN_USERNAME = "<token>"
_HELPER_TIMEOUT = 120.0
_MASK = "'***'"


# --------------------------------------------------------------------------- credential


@dataclass(frozen=True, repr=False)
class Credential:
    """Login material for one registry.

    ``identity_token`` is an OAuth2 refresh token (Docker's ``identitytoken``);
    ``registry_token`` is a bearer token sent as is (``--registry-token``).
    ``repr()``/``str()`` never show the password or the tokens.
    """

    username: str | None = None
    password: str | None = None
    identity_token: str | None = None
    registry_token: str | None = None

    def __repr__(self) -> str:
        def mask(value: str | None) -> str:
            return "None" if value is None else _MASK

        return (
            f"Credential(username={self.username!r}, password={mask(self.password)}, "
            f"identity_token={mask(self.identity_token)}, registry_token={mask(self.registry_token)})"
        )

    __str__ = __repr__

    def basic_auth(self) -> tuple[str, str] | None:
        """``(username, password)`` for HTTP Basic / the token endpoint, or None.

        None when there is no username, or when an identity token is present
        (that one goes to the OAuth2 token endpoint as a refresh token
        instead). A missing password counts as empty, as skopeo's
        ``--creds user`` does.
        """
        if self.identity_token or self.username is None:
            return None
        return (self.username, self.password or "")

    @property
    def is_empty(self) -> bool:
        """True when the credential carries nothing usable."""
        return not (self.username or self.password or self.identity_token or self.registry_token)


def parse_creds(text: str) -> Credential:
    """Parse ``--creds USER[:PASSWORD]``; the password may itself contain ``:``.

    Without a ``:`` the password is None (a CLI may prompt for it;
    :meth:`Credential.basic_auth` treats it as empty).
    """
    if not text:
        raise UsageError("--creds: credentials must not be empty")
    username, sep, password = text.partition(":")
    if not username:
        # Never quote ``text``: it holds the password.
        raise UsageError("--creds: username must not be empty")
    return Credential(username=username, password=password if sep else None)


# --------------------------------------------------------------------------- file search


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None


def _home() -> Path:
    return Path(os.path.expanduser("~"))


def _runtime_auth_file() -> Path:
    """The primary (read-write) auth.json path, as containers/image computes it."""
    if sys.platform == "darwin":
        # containers/image uses this path on every non-Linux system.
        return _home() / ".config" / "containers" / "auth.json"
    runtime_dir = _env("XDG_RUNTIME_DIR")
    if runtime_dir is not None:
        return Path(runtime_dir) / "containers" / "auth.json"
    return Path(f"/run/containers/{os.getuid()}/auth.json")


def auth_file_candidates(authfile: str | None = None, *, for_write: bool = False) -> list[Path]:
    """The auth files to read, in containers-auth.json(5) order.

    ``authfile`` (``--authfile``) or else ``$REGISTRY_AUTH_FILE`` replaces the
    whole list. Otherwise: ``$XDG_RUNTIME_DIR/containers/auth.json`` (or
    ``/run/containers/$UID/auth.json``), ``$XDG_CONFIG_HOME/containers/auth.json``
    (default ``~/.config``), ``$DOCKER_CONFIG/config.json`` (default
    ``~/.docker/config.json``), and the legacy ``~/.dockercfg``.

    With ``for_write`` the result is the single file ``login``/``logout``
    modify: the first candidate.
    """
    explicit = authfile if authfile else _env("REGISTRY_AUTH_FILE")
    if explicit is not None:
        return [Path(explicit)]
    primary = _runtime_auth_file()
    if for_write:
        return [primary]
    home = _home()
    config_home = _env("XDG_CONFIG_HOME")
    xdg = Path(config_home) if config_home is not None else home / ".config"
    docker_config = _env("DOCKER_CONFIG")
    docker_dir = Path(docker_config) if docker_config is not None else home / ".docker"
    docker = docker_dir / "config.json"
    paths: list[Path] = []
    for p in (primary, xdg / "containers" / "auth.json", docker, home / ".dockercfg"):
        if p not in paths:
            paths.append(p)
    return paths


def _is_legacy(path: Path) -> bool:
    return path.name == ".dockercfg"


# --------------------------------------------------------------------------- key handling


def _canonical_host(host: str) -> str:
    host = host.lower()
    return _DOCKER_HUB if host in _DOCKER_HUB_ALIASES else host


def _split_key(key: str, *, legacy: bool = False) -> tuple[str, str, bool] | None:
    """``(canonical host, namespace path, is_url_form)`` for an auth-file key."""
    stripped = key.strip()
    had_scheme = False
    for scheme in ("https://", "http://"):
        if stripped.lower().startswith(scheme):
            stripped = stripped[len(scheme) :]
            had_scheme = True
            break
    host, _, path = stripped.partition("/")
    if not host:
        return None
    if legacy or had_scheme:
        path = ""  # "https://index.docker.io/v1/" names a registry, not a namespace
    return _canonical_host(host), path.strip("/"), legacy or had_scheme


@dataclass(frozen=True)
class _Target:
    """What a lookup/login is about: a registry, maybe narrowed to a namespace."""

    raw_host: str
    host: str  # canonical
    path: str  # "" or "ns1/ns2/repo"

    @classmethod
    def parse(cls, registry: str, repository: str | None = None) -> _Target:
        parsed = _split_key(registry)
        if parsed is None or not registry.strip():
            raise UsageError(f"invalid registry name {registry!r}")
        host, path, _ = parsed
        raw = registry.strip()
        for scheme in ("https://", "http://"):
            if raw.lower().startswith(scheme):
                raw = raw[len(scheme) :]
        raw_host = raw.partition("/")[0]
        if repository:
            path = f"{path}/{repository.strip('/')}" if path else repository.strip("/")
        return cls(raw_host=raw_host, host=host, path=path)

    @property
    def key(self) -> str:
        """The key ``login`` writes: the registry as given, ``docker.io`` for Hub."""
        host = _DOCKER_HUB if self.host == _DOCKER_HUB else self.raw_host
        return f"{host}/{self.path}" if self.path else host

    def helper_urls(self) -> list[str]:
        """Server URLs to ask a credential helper about, preferred first."""
        if self.host == _DOCKER_HUB:
            return [_DOCKER_HUB_LEGACY_URL, _DOCKER_HUB]
        return [self.raw_host]

    def matches_host_key(self, key: str, *, legacy: bool = False) -> bool:
        parsed = _split_key(key, legacy=legacy)
        return parsed is not None and parsed[0] == self.host and not parsed[1]


# --------------------------------------------------------------------------- file parsing


def _read_auth_file(path: Path, *, explicit: bool) -> dict[str, Any] | None:
    """The parsed file, or None if it does not exist (or, implicitly, is unreadable)."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError as exc:
        if explicit:
            raise UsageError(f"cannot read auth file {path}: permission denied") from exc
        log.debug("skipping unreadable auth file %s", path)
        return None
    except OSError as exc:  # a directory in its place, an I/O error: a configuration problem (exit 2)
        raise UsageError(f"cannot read auth file {path}: {exc.strerror or exc}") from exc
    if not data.strip():
        return {}
    try:
        content = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        # The message of a JSON error quotes no content, only a position.
        detail = f" (line {exc.lineno} column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise UsageError(f"invalid JSON in auth file {path}{detail}") from None
    if not isinstance(content, dict):
        raise UsageError(f"invalid auth file {path}: top level is not a JSON object")
    return content


def _section(content: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    value = content.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsageError(f"invalid auth file {path}: {name!r} is not a JSON object")
    return value


def _auth_entries(content: dict[str, Any], path: Path) -> dict[str, Any]:
    if _is_legacy(path):
        # ~/.dockercfg: the top level *is* the auths map.
        return content
    return _section(content, "auths", path)


def _str_field(entry: dict[str, Any], name: str, path: Path, key: str) -> str | None:
    value = entry.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise UsageError(f"invalid auth file {path}: field {name!r} of entry {key!r} is not a string")
    return value


def _decode_entry(entry: Any, path: Path, key: str) -> Credential | None:
    """The credential in one ``auths`` entry, or None for an empty entry."""
    if not isinstance(entry, dict):
        raise UsageError(f"invalid auth file {path}: entry {key!r} is not a JSON object")
    username = _str_field(entry, "username", path, key)
    password = _str_field(entry, "password", path, key)
    encoded = _str_field(entry, "auth", path, key)
    if encoded is not None:
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise UsageError(
                f"invalid auth file {path}: cannot decode the 'auth' field of entry {key!r}"
            ) from None
        user, sep, pw = decoded.partition(":")
        if sep:
            username, password = user, pw.strip("\x00")
        else:
            # Docker skips such entries too; never log the decoded text.
            log.warning("ignoring the 'auth' field of entry %r in %s: it has no ':' separator", key, path)
    identity_token = _str_field(entry, "identitytoken", path, key)
    registry_token = _str_field(entry, "registrytoken", path, key)
    cred = Credential(
        username=username,
        password=password,
        identity_token=identity_token,
        registry_token=registry_token,
    )
    return None if cred.is_empty else cred


def _match_auths(entries: dict[str, Any], target: _Target, path: Path) -> Credential | None:
    """The most specific non-empty entry of ``auths`` for ``target``."""
    legacy = _is_legacy(path)
    want = target.path.split("/") if target.path else []
    ranked: list[tuple[int, int, int, str]] = []
    for index, key in enumerate(entries):
        parsed = _split_key(key, legacy=legacy)
        if parsed is None:
            continue
        host, kpath, url_form = parsed
        if host != target.host:
            continue
        parts = kpath.split("/") if kpath else []
        if len(parts) > len(want) or want[: len(parts)] != parts:
            continue
        exact = f"{target.raw_host}/{kpath}" if kpath else target.raw_host
        # Most specific namespace first; then the key spelled exactly as asked,
        # then plain host keys over URL-style ones; then file order.
        form = 2 if key == exact else (0 if url_form else 1)
        ranked.append((-len(parts), -form, index, key))
    for _, _, _, key in sorted(ranked):
        cred = _decode_entry(entries[key], path, key)
        if cred is not None:
            log.debug("using credentials for %s from entry %r of %s", target.key, key, path)
            return cred
    return None


# --------------------------------------------------------------------------- credential helpers


def _helper_command(name: str, path: Path) -> str:
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise UsageError(f"invalid credential helper name {name!r} in {path}")
    program = f"docker-credential-{name}"
    found = shutil.which(program)
    if found is None:
        raise RegtoolError(f"credential helper {program} (configured in {path}) was not found in $PATH")
    return found


def _run_helper(name: str, path: Path, verb: str, stdin: str) -> subprocess.CompletedProcess[str]:
    command = _helper_command(name, path)
    program = f"docker-credential-{name}"
    try:
        return subprocess.run(
            [command, verb],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=_HELPER_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RegtoolError(f"credential helper {program} {verb} timed out") from None
    except OSError as exc:
        raise RegtoolError(f"cannot run credential helper {program}: {exc.strerror or exc}") from None


def _helper_failure(proc: subprocess.CompletedProcess[str]) -> str:
    """One line of a failed helper's output (its error message, never a secret)."""
    for stream in (proc.stdout, proc.stderr):
        for line in (stream or "").splitlines():
            if line.strip():
                return line.strip()[:200]
    return f"exit status {proc.returncode}"


def _is_not_found(proc: subprocess.CompletedProcess[str]) -> bool:
    return _HELPER_NOT_FOUND in (proc.stdout or "") + (proc.stderr or "")


def _helper_get(name: str, path: Path, target: _Target) -> Credential | None:
    program = f"docker-credential-{name}"
    for url in target.helper_urls():
        proc = _run_helper(name, path, "get", url)
        if proc.returncode != 0:
            if _is_not_found(proc):
                continue
            raise RegtoolError(f"credential helper {program} get failed: {_helper_failure(proc)}")
        try:
            payload = json.loads(proc.stdout)
        except ValueError:
            raise RegtoolError(f"credential helper {program} returned invalid JSON") from None
        if not isinstance(payload, dict):
            raise RegtoolError(f"credential helper {program} returned invalid JSON")
        username = payload.get("Username")
        secret = payload.get("Secret")
        if not isinstance(username, str) or not isinstance(secret, str):
            raise RegtoolError(f"credential helper {program} returned no Username/Secret strings")
        if not username and not secret:
            continue
        log.debug("using credentials for %s from credential helper %s (%s)", target.key, program, path)
        if username == _TOKEN_USERNAME:
            return Credential(identity_token=secret)
        return Credential(username=username or None, password=secret)
    return None


def _helper_store(name: str, path: Path, target: _Target, credential: Credential) -> None:
    program = f"docker-credential-{name}"
    if credential.identity_token:
        username, secret = _TOKEN_USERNAME, credential.identity_token
    elif credential.username is not None and credential.password is not None:
        username, secret = credential.username, credential.password
    else:
        raise UsageError(f"credential helper {program} needs a username and password or an identity token")
    payload = json.dumps({"ServerURL": target.helper_urls()[0], "Username": username, "Secret": secret})
    proc = _run_helper(name, path, "store", payload)
    if proc.returncode != 0:
        raise RegtoolError(f"credential helper {program} store failed: {_helper_failure(proc)}")


def _helper_erase(name: str, path: Path, target: _Target) -> bool:
    """Erase every server URL form; True if the helper had something."""
    program = f"docker-credential-{name}"
    erased = False
    for url in target.helper_urls():
        proc = _run_helper(name, path, "erase", url)
        if proc.returncode == 0:
            erased = True
        elif not _is_not_found(proc):
            raise RegtoolError(f"credential helper {program} erase failed: {_helper_failure(proc)}")
    return erased


def _str_value(section: dict[str, Any], key: str, path: Path, what: str) -> str:
    value = section[key]
    if not isinstance(value, str):
        raise UsageError(f"invalid auth file {path}: {what} for {key!r} is not a string")
    return value


def _cred_helper_for(content: dict[str, Any], target: _Target, path: Path) -> str | None:
    """``credHelpers[registry]`` (exact key first, then equivalent spellings)."""
    helpers = _section(content, "credHelpers", path)
    if target.raw_host in helpers:
        return _str_value(helpers, target.raw_host, path, "credHelpers entry")
    for key in helpers:
        if target.matches_host_key(key):
            return _str_value(helpers, key, path, "credHelpers entry")
    return None


def _creds_store(content: dict[str, Any], path: Path) -> str | None:
    store = content.get("credsStore")
    if store is None or store == "":
        return None
    if not isinstance(store, str):
        raise UsageError(f"invalid auth file {path}: 'credsStore' is not a string")
    return store


# --------------------------------------------------------------------------- lookup


def _lookup_in_file(content: dict[str, Any], target: _Target, path: Path) -> Credential | None:
    if not _is_legacy(path):
        helper = _cred_helper_for(content, target, path)
        if helper is not None:
            cred = _helper_get(helper, path, target)
            if cred is not None:
                return cred
    cred = _match_auths(_auth_entries(content, path), target, path)
    if cred is not None:
        return cred
    if not _is_legacy(path):
        store = _creds_store(content, path)
        if store is not None:
            return _helper_get(store, path, target)
    return None


def _iter_files(authfile: str | None) -> Iterator[tuple[Path, dict[str, Any]]]:
    explicit = bool(authfile) or _env("REGISTRY_AUTH_FILE") is not None
    for path in auth_file_candidates(authfile):
        content = _read_auth_file(path, explicit=explicit)
        if content is not None:
            yield path, content


def lookup(
    registry: str,
    repository: str | None = None,
    *,
    authfile: str | None = None,
) -> Credential | None:
    """Find stored credentials for ``registry`` (optionally ``repository`` on it).

    ``registry`` is a host[:port] (``docker.io``, ``localhost:5000``); a URL or
    a ``host/namespace`` form is accepted too. ``repository`` is the path on
    the registry (``library/alpine``) and enables namespace-specific keys.
    Returns None when no file has anything for it.
    """
    target = _Target.parse(registry, repository)
    for path, content in _iter_files(authfile):
        cred = _lookup_in_file(content, target, path)
        if cred is not None:
            return cred
    log.debug("no stored credentials for %s", target.key)
    return None


def get_login(registry: str, authfile: str | None = None) -> str | None:
    """The username stored for ``registry`` (``regtool login --get-login``), or None."""
    cred = lookup(registry, authfile=authfile)
    return None if cred is None else cred.username


# --------------------------------------------------------------------------- writing


def _make_private_dirs(directory: Path) -> None:
    """``mkdir -p`` where every directory created gets mode 0700."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=0o700)


def _atomic_write_json(path: Path, content: dict[str, Any]) -> None:
    """Replace ``path`` with ``content``: 0600 temp file in the same dir, fsync, rename."""
    real = Path(os.path.realpath(path))  # keep a symlinked auth file a symlink
    directory = real.parent
    payload = (json.dumps(content, indent="\t") + "\n").encode("utf-8")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        _make_private_dirs(directory)
        while True:
            tmp = directory / f".{real.name}.{secrets.token_hex(8)}.tmp"
            try:
                fd = os.open(tmp, flags, 0o600)
            except FileExistsError:
                continue
            break
    except OSError as exc:
        denied = exc.errno in (errno.EPERM, errno.EACCES, errno.EROFS)
        hint = " (use --authfile to write elsewhere)" if denied else ""
        raise RegtoolError(f"cannot write auth file {path}: {exc.strerror or exc}{hint}") from None
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o600)  # exact mode whatever the umask
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, real)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise RegtoolError(f"cannot write auth file {path}: {exc.strerror or exc}") from None
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _write_target(authfile: str | None) -> tuple[Path, dict[str, Any]]:
    path = auth_file_candidates(authfile, for_write=True)[0]
    explicit = bool(authfile) or _env("REGISTRY_AUTH_FILE") is not None
    if not explicit:
        runtime_dir = _env("XDG_RUNTIME_DIR")
        if runtime_dir is not None and sys.platform != "darwin" and not Path(runtime_dir).is_dir():
            raise UsageError(
                f"{runtime_dir!r} set by $XDG_RUNTIME_DIR does not exist; "
                "create the directory or unset $XDG_RUNTIME_DIR"
            )
    content = _read_auth_file(path, explicit=True)
    return path, {} if content is None else content


def _helper_for_write(content: dict[str, Any], target: _Target, path: Path) -> str | None:
    """The helper that owns ``target`` in this file; namespaced keys never use one."""
    if target.path:
        return None
    helper = _cred_helper_for(content, target, path)
    return helper if helper is not None else _creds_store(content, path)


def _encode_entry(credential: Credential) -> dict[str, str]:
    entry: dict[str, str] = {}
    if credential.username is not None or credential.password is not None:
        raw = f"{credential.username or ''}:{credential.password or ''}".encode()
        entry["auth"] = base64.b64encode(raw).decode("ascii")
    if credential.identity_token:
        entry["identitytoken"] = credential.identity_token
    if credential.registry_token:
        entry["registrytoken"] = credential.registry_token
    return entry


def login(registry: str, credential: Credential, *, authfile: str | None = None) -> Path:
    """Store ``credential`` for ``registry`` and return the auth file involved.

    ``registry`` may carry a namespace (``quay.io/team``) for a narrower login.
    The write target is :func:`auth_file_candidates` with ``for_write``; if
    that file routes the registry to a ``credHelpers`` entry or a
    ``credsStore``, the helper's ``store`` is used and the file is left alone.
    Otherwise ``auths[registry] = {"auth": base64("user:pass")}`` is written,
    keeping every other key of the file.
    """
    if not (credential.password or credential.identity_token or credential.registry_token):
        raise UsageError("login needs a password or a token")
    if credential.password and not credential.username:
        raise UsageError("login needs a username with a password")
    target = _Target.parse(registry)
    path, content = _write_target(authfile)
    helper = _helper_for_write(content, target, path)
    if helper is not None:
        _helper_store(helper, path, target, credential)
        return path
    auths = _auth_entries(content, path)
    if not _is_legacy(path):
        content["auths"] = auths
    auths[target.key] = _encode_entry(credential)
    _atomic_write_json(path, content)
    log.debug("stored credentials for %s in %s", target.key, path)
    return path


def logout(
    registry: str | None,
    *,
    authfile: str | None = None,
    all: bool = False,
) -> list[Path]:
    """Remove stored credentials from the write target; return the files changed.

    Only the file ``login`` writes is modified (as ``podman logout`` does);
    an empty result means nothing was stored there. For a registry-wide key,
    equivalent spellings (``https://index.docker.io/v1/`` for ``docker.io``)
    are removed too, and a helper configured for the registry is asked to
    ``erase``. With ``all`` every ``auths`` entry goes (``registry`` is then
    ignored) and each configured helper erases the registries it serves.
    """
    if registry is None and not all:
        raise UsageError("logout needs a registry, or --all")
    path, content = _write_target(authfile)
    if not path.exists():
        return []
    auths = _auth_entries(content, path)
    changed = False
    if all:
        helper_targets: list[tuple[str, _Target]] = []
        if not _is_legacy(path):
            store = _creds_store(content, path)
            for key, helper in _section(content, "credHelpers", path).items():
                if isinstance(helper, str) and helper:
                    helper_targets.append((helper, _Target.parse(key)))
            if store is not None:
                served = {t.host for _, t in helper_targets}
                for key in auths:
                    parsed = _split_key(key)
                    if parsed is not None and not parsed[1] and parsed[0] not in served:
                        helper_targets.append((store, _Target.parse(key)))
        for helper, target in helper_targets:
            changed = _helper_erase(helper, path, target) or changed
        if auths:
            auths.clear()
            _atomic_write_json(path, content)
            changed = True
        return [path] if changed else []
    assert registry is not None
    target = _Target.parse(registry)
    helper = _helper_for_write(content, target, path)
    if helper is not None:
        changed = _helper_erase(helper, path, target)
    legacy = _is_legacy(path)
    doomed = [
        key
        for key in auths
        if key == target.key
        or key == (f"{target.raw_host}/{target.path}" if target.path else target.raw_host)
        or (not target.path and target.matches_host_key(key, legacy=legacy))
    ]
    if doomed:
        for key in doomed:
            del auths[key]
        _atomic_write_json(path, content)
        changed = True
    return [path] if changed else []
