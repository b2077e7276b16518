"""A minimal reader of containers-registries.conf(5).

Only what regtool acts on is read: ``[[registry]]`` tables with ``prefix`` /
``location``, ``insecure`` and ``blocked`` (plus the same two settings from
the old v1 ``[registries.insecure]`` / ``[registries.block]`` lists).

Files, as containers/image reads them:

* the main file: ``path`` if given, else ``$CONTAINERS_REGISTRIES_CONF``,
  else ``$HOME/.config/containers/registries.conf`` if it exists, else
  ``/etc/containers/registries.conf``;
* drop-ins, only when the main file was not chosen explicitly:
  ``/etc/containers/registries.conf.d/*.conf`` then
  ``$HOME/.config/containers/registries.conf.d/*.conf``, in file-name order
  (a user drop-in replaces the system one of the same name). A ``[[registry]]``
  with the same prefix as an earlier one replaces it.

Matching is by prefix, as containers/image does: ``example.com/ns`` matches
``example.com/ns`` and ``example.com/ns/app`` (never ``example.com/nsx``),
``*.example.com`` matches any subdomain of example.com (not example.com
itself); the longest match wins.

Not supported: mirrors (``[[registry.mirror]]``), ``location`` rewriting,
``unqualified-search-registries``, short-name aliases and
``credential-helpers``. They are read without error and ignored.

On Python 3.10 without the ``tomli`` package the configuration is treated as
empty (silently: this is an optional feature there).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regtool.errors import UsageError

__all__ = ["RegistriesConf", "RegistryEntry"]

#: System locations, module attributes so tests can point them elsewhere.
SYSTEM_REGISTRIES_CONF = Path("/etc/containers/registries.conf")
SYSTEM_REGISTRIES_CONF_D = Path("/etc/containers/registries.conf.d")

_TomlLoader = Callable[[bytes], dict[str, Any]]


def _toml_loader() -> _TomlLoader | None:
    if sys.version_info >= (3, 11):
        import tomllib as toml
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as toml  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            return None

    def load(data: bytes) -> dict[str, Any]:
        content: dict[str, Any] = toml.loads(data.decode("utf-8"))
        return content

    return load


@dataclass(frozen=True)
class RegistryEntry:
    """One ``[[registry]]`` table."""

    prefix: str
    location: str = ""
    insecure: bool = False
    blocked: bool = False
    source: Path | None = field(default=None, compare=False)

    @property
    def is_wildcard(self) -> bool:
        return self.prefix.startswith("*.")

    def match_length(self, ref: str) -> int:
        """How much of ``ref`` (``host[/path]``) this prefix matches; -1 for no match."""
        prefix = self.prefix
        if self.is_wildcard:
            host_end = len(ref)
            for i, c in enumerate(ref):
                if c in ":/@":
                    host_end = i
                    break
            host = ref[:host_end]
            suffix = prefix[1:]  # ".example.com"
            if host.endswith(suffix) and len(host) > len(suffix):
                return host_end
            return -1
        if ref == prefix:
            return len(prefix)
        if ref.startswith(prefix) and ref[len(prefix)] in ":/@":
            # containers/image lets "example.com" match "example.com:5000"
            # as well; kept for compatibility.
            return len(prefix)
        return -1


def _strip(value: str) -> str:
    return value.strip().rstrip("/")


def _validate_prefix(prefix: str, source: Path) -> None:
    if "*" not in prefix:
        return
    if not prefix.startswith("*.") or "*" in prefix[1:] or "/" in prefix or ":" in prefix or len(prefix) < 3:
        raise UsageError(
            f"invalid prefix {prefix!r} in {source}: a wildcard must be a leading '*.' "
            "followed by a domain, with no port or path"
        )


def _bool(table: dict[str, Any], key: str, source: Path) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise UsageError(f"invalid {key!r} in {source}: expected true or false")
    return value


def _str(table: dict[str, Any], key: str, source: Path) -> str:
    value = table.get(key, "")
    if not isinstance(value, str):
        raise UsageError(f"invalid {key!r} in {source}: expected a string")
    return value


def _entries_from(content: dict[str, Any], source: Path) -> list[RegistryEntry]:
    entries: list[RegistryEntry] = []
    tables = content.get("registry", [])
    if not isinstance(tables, list):
        raise UsageError(f"invalid 'registry' in {source}: expected [[registry]] tables")
    for table in tables:
        if not isinstance(table, dict):
            raise UsageError(f"invalid [[registry]] in {source}: expected a table")
        location = _strip(_str(table, "location", source))
        prefix = _strip(_str(table, "prefix", source)) or location
        if not prefix:
            raise UsageError(f"invalid [[registry]] in {source}: needs a 'prefix' or a 'location'")
        _validate_prefix(prefix, source)
        entries.append(
            RegistryEntry(
                prefix=prefix,
                location=location,
                insecure=_bool(table, "insecure", source),
                blocked=_bool(table, "blocked", source),
                source=source,
            )
        )
    v1 = content.get("registries")
    if v1 is not None:
        if tables:
            raise UsageError(f"{source} mixes v1 [registries.*] and v2 [[registry]] syntax")
        entries.extend(_v1_entries(v1, source))
    return entries


def _v1_entries(v1: Any, source: Path) -> list[RegistryEntry]:
    if not isinstance(v1, dict):
        raise UsageError(f"invalid 'registries' in {source}: expected a table")
    flags: dict[str, dict[str, bool]] = {}
    for section, flag in (("insecure", "insecure"), ("block", "blocked")):
        table = v1.get(section, {})
        hosts = table.get("registries", []) if isinstance(table, dict) else None
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            raise UsageError(f"invalid [registries.{section}] in {source}: expected a list of strings")
        for host in hosts:
            name = _strip(host)
            if name:
                _validate_prefix(name, source)
                flags.setdefault(name, {})[flag] = True
    return [
        RegistryEntry(
            prefix=name,
            location=name,
            insecure=f.get("insecure", False),
            blocked=f.get("blocked", False),
            source=source,
        )
        for name, f in flags.items()
    ]


def _home() -> Path:
    return Path(os.path.expanduser("~"))


def _dropins() -> list[Path]:
    """Drop-in files: system then user directory, by name; user wins a name clash."""
    by_name: dict[str, Path] = {}
    for directory in (SYSTEM_REGISTRIES_CONF_D, _home() / ".config" / "containers" / "registries.conf.d"):
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            if name.endswith(".conf") and (directory / name).is_file():
                by_name[name] = directory / name
    return [by_name[name] for name in sorted(by_name)]


@dataclass(frozen=True)
class RegistriesConf:
    """The ``[[registry]]`` settings in effect; empty when there is no file."""

    registries: tuple[RegistryEntry, ...] = ()
    sources: tuple[Path, ...] = ()

    @classmethod
    def load(cls, path: str | None = None) -> RegistriesConf:
        """Read the configuration (see the module docstring for which files)."""
        explicit = path if path else os.environ.get("CONTAINERS_REGISTRIES_CONF") or None
        files: list[tuple[Path, bool]] = []
        if explicit is not None:
            files.append((Path(explicit), True))
        else:
            user = _home() / ".config" / "containers" / "registries.conf"
            files.append((user if user.is_file() else SYSTEM_REGISTRIES_CONF, False))
            files.extend((p, False) for p in _dropins())
        by_prefix: dict[str, RegistryEntry] = {}
        sources: list[Path] = []
        for file, required in files:
            content = _read(file, required=required)
            if content is None:
                continue
            sources.append(file)
            for entry in _entries_from(content, file):
                by_prefix.pop(entry.prefix, None)
                by_prefix[entry.prefix] = entry
        return cls(registries=tuple(by_prefix.values()), sources=tuple(sources))

    def find(self, ref: str) -> RegistryEntry | None:
        """The entry for ``ref`` (``host[:port][/repository]``): the longest matching prefix."""
        best: RegistryEntry | None = None
        best_len = -1
        for entry in self.registries:
            length = entry.match_length(ref)
            if length < 0:
                continue
            # Longer wins; on a tie an exact prefix beats a wildcard.
            better_tie = (
                length == best_len and best is not None and best.is_wildcard and not entry.is_wildcard
            )
            if length > best_len or better_tie:
                best, best_len = entry, length
        return best

    def is_blocked(self, ref_registry: str, repository: str) -> bool:
        """Whether pulling or pushing ``ref_registry/repository`` is forbidden."""
        entry = self.find(_join(ref_registry, repository))
        return entry is not None and entry.blocked

    def is_insecure(self, registry: str, repository: str | None = None) -> bool:
        """Whether TLS verification is off (and plain HTTP allowed) for the registry.

        containers/image looks this up with the full repository name; pass
        ``repository`` to honour namespace-specific ``[[registry]]`` tables.
        """
        entry = self.find(_join(registry, repository))
        return entry is not None and entry.insecure


def _join(registry: str, repository: str | None) -> str:
    registry = registry.rstrip("/")
    repository = (repository or "").strip("/")
    return f"{registry}/{repository}" if repository else registry


def _sets_anything(data: bytes) -> bool:
    """Whether a file may set ``insecure`` or ``blocked`` (v1: ``block``) outside comments.

    Debian's registries.conf is all comments and its drop-in holds short-name aliases: neither
    needs the TOML parser (whose import and run cost ~10 ms of a no-op copy).
    """
    return any(
        (b"insecure" in line or b"block" in line) and not line.lstrip().startswith(b"#")
        for line in data.splitlines()
    )


def _read(path: Path, *, required: bool) -> dict[str, Any] | None:
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        if required:
            raise UsageError(f"registries configuration {path} does not exist") from None
        return None
    except OSError as exc:
        if not required and isinstance(exc, PermissionError):
            return None
        raise UsageError(f"cannot read registries configuration {path}: {exc.strerror or exc}") from None
    if not required and not _sets_anything(data):
        return {}
    loader = _toml_loader()
    if loader is None:
        return None
    try:
        return loader(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"invalid TOML in {path}: {exc}") from None
