"""Sync configuration: regtool's own YAML schema, and skopeo's sync YAML / command line, as one model.

Everything here is pure: files are read and validated, nothing touches the network. Every problem
is reported before any traffic as a :class:`~regtool.errors.UsageError` whose message is one line,
``FILE:LINE: where: reason``.

The structure of regtool's format is defined once, by the JSON Schema shipped in
``regtool/schemas/sync-config.schema.json``: :func:`load_config` validates each file against it (a
small interpreter for the keywords the schema uses, so errors can name the exact line), then applies
the checks a schema cannot express (regexes compile, semver ranges parse, references are valid,
target names can be formed) and builds the frozen dataclasses below. ``docs/sync-config.md``
documents the format key by key.

skopeo's formats (``skopeo sync --src yaml|docker|dir``) are turned into the same model by
:func:`skopeo_yaml_to_config` and :func:`skopeo_cli_source_to_config`, with destination names formed
exactly as skopeo forms them.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeAlias, TypeVar

from regtool.errors import UsageError
from regtool.manifest import Platform
from regtool.reference import (
    DEFAULT_REGISTRY,
    LEGACY_DEFAULT_REGISTRY,
    ImageRef,
    Reference,
    parse_reference,
    parse_repository,
)
from regtool.sync.filters import (
    TagSelection,
    check_digest,
    check_regex,
    check_tag,
    compile_regex,
    is_signature_tag,
    parse_semver_range,
)
from regtool.sync.shard import repository_key

if TYPE_CHECKING:
    # PyYAML is imported where a file is read: skopeo's command-line form reads none.
    import yaml
    from yaml.nodes import MappingNode, Node, ScalarNode

__all__ = [
    "DEFAULT_MAX_PRUNE",
    "PLACEHOLDERS",
    "SCHEMA_PATH",
    "CredentialSource",
    "MirrorEntry",
    "Naming",
    "PlatformSpec",
    "PruneConfig",
    "RegistryConfig",
    "Source",
    "SyncConfig",
    "SyncOptions",
    "Target",
    "load_config",
    "load_config_text",
    "load_schema",
    "skopeo_cli_source_to_config",
    "skopeo_yaml_to_config",
]

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "sync-config.schema.json"
PLACEHOLDERS = ("registry", "repository", "namespace", "name")
DEFAULT_MAX_PRUNE = 10
_DOCKER_HUB_HOSTS = (DEFAULT_REGISTRY, LEGACY_DEFAULT_REGISTRY, "registry-1.docker.io")
_MAX_NODES = 1_000_000
_JOB_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*", re.ASCII)

_T = TypeVar("_T")
PlatformSpec: TypeAlias = "Literal['all', 'system'] | tuple[Platform, ...]"
SourceKind = Literal["repository", "image", "namespace", "oci", "dir"]
TargetKind = Literal["registry", "oci", "dir"]


# =========================================================================== the model


@dataclass(frozen=True)
class CredentialSource:
    """Where a registry's credentials come from.

    Nothing set means the normal lookup (containers-auth.json(5): ``authfile`` or the default auth
    files, credential helpers). ``password_env`` / ``password_file`` name a secret without holding it;
    ``anonymous`` forces no credentials. ``password`` is only ever set from skopeo's sync YAML (which
    holds passwords inline); regtool's own format refuses inline passwords.
    """

    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    authfile: str | None = None
    anonymous: bool = False
    password: str | None = field(default=None, repr=False)

    @property
    def is_default(self) -> bool:
        """True when the normal credential lookup applies."""
        return self == CredentialSource(authfile=self.authfile)

    def resolve_password(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The password (or token), read from the environment or the file; None without one.

        A file's single trailing newline is dropped (secrets written with ``echo`` have one). Errors
        name the variable or file, never the secret.
        """
        if self.password is not None:
            return self.password
        if self.password_env is not None:
            env = os.environ if environ is None else environ
            value = env.get(self.password_env)
            if value is None:
                raise UsageError(f"environment variable {self.password_env} (password-env) is not set")
            return value
        if self.password_file is not None:
            try:
                text = Path(self.password_file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
                raise UsageError(f"cannot read password-file {self.password_file}: {reason}") from None
            if text.endswith("\r\n"):
                return text[:-2]
            return text[:-1] if text.endswith("\n") else text
        return None


@dataclass(frozen=True)
class RegistryConfig:
    """How to talk to one registry host. ``None`` limits mean "the client's default"."""

    host: str
    tls_verify: bool = True
    ca_file: str | None = None
    cert_dir: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    credentials: CredentialSource = field(default_factory=CredentialSource)
    max_concurrency: int | None = None
    requests_per_second: float | None = None
    rate_limit_floor: int | None = None


@dataclass(frozen=True)
class Source:
    """Where a mirror entry reads from.

    * ``repository``: every selected tag of ``registry/repository``;
    * ``image``: one image (``tag`` or ``digest``); the entry's tag selection names it;
    * ``namespace``: every repository the registry's ``/v2/_catalog`` lists under ``namespace``
      (``""``: the whole registry) that :meth:`allows`;
    * ``oci``: every image in the OCI layout at ``path`` (entries named ``repo:tag``) whose
      repository :meth:`allows`;
    * ``dir``: one skopeo ``dir:`` image at ``path`` (skopeo's ``--src dir`` only).
    """

    kind: SourceKind
    registry: str = ""
    repository: str = ""
    tag: str | None = None
    digest: str | None = None
    namespace: str = ""
    path: str = ""
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()

    def allows(self, repository: str) -> bool:
        """Whether a discovered repository (catalog or layout) belongs to this source.

        It must be under ``namespace``, fully match an ``allow`` regex when there are any, and fully
        match no ``deny`` regex (deny wins). Regexes see the whole repository path ("org/app").
        """
        if self.kind == "namespace" and self.namespace:
            if repository != self.namespace and not repository.startswith(self.namespace + "/"):
                return False
        if any(_compiled(p).fullmatch(repository) for p in self.deny):
            return False
        return not self.allow or any(_compiled(p).fullmatch(repository) for p in self.allow)

    def shard_key(self, repository: str | None = None) -> str:
        """The key :mod:`regtool.sync.shard` hashes: ``registry/repository``, or the local path."""
        if self.kind == "dir":
            return f"dir:{self.path}"
        if self.kind == "oci":
            return f"oci:{self.path}:{repository or ''}"
        return repository_key(self.registry, repository or self.repository)

    def __str__(self) -> str:
        if self.kind == "repository":
            return f"{self.registry}/{self.repository}"
        if self.kind == "image":
            return str(Reference(self.registry, self.repository, self.tag, self.digest))
        if self.kind == "namespace":
            return f"{self.registry}/{self.namespace}/*" if self.namespace else f"{self.registry}/*"
        return f"{self.kind}:{self.path}"


@dataclass(frozen=True)
class Naming:
    """How a source repository's name becomes a target repository (or layout image) name.

    The name is ``<target path>/<prefix>/<template expanded>``, empty path segments dropped. Template
    placeholders (``str.format`` syntax, ``{{``/``}}`` for literal braces): ``{registry}`` (source
    host, e.g. ``docker.io``), ``{repository}`` (``library/alpine``), ``{namespace}`` (all but the
    last component, ``library``; may be empty), ``{name}`` (the last component, ``alpine``).
    ``tag_suffix`` is appended to every target tag (skopeo's ``--append-suffix``).
    """

    prefix: str = ""
    template: str = "{repository}"
    tag_suffix: str = ""

    def __post_init__(self) -> None:
        check_template(self.template)
        if not re.fullmatch(r"[A-Za-z0-9_.-]*", self.tag_suffix, re.ASCII):
            raise UsageError(f"invalid tag-suffix {self.tag_suffix!r}: only letters, digits, '_', '.' and '-'")

    def expand(self, *, registry: str, repository: str) -> str:
        """``prefix/template`` for a source repository (not yet joined with a target path)."""
        namespace, _, name = repository.rpartition("/")
        name_part = self.template.format(registry=registry, repository=repository, namespace=namespace, name=name)
        return _join_segments(self.prefix, name_part)


def check_template(template: str) -> str:
    """Validate a naming template: only the known placeholders, no conversions or format specs."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise UsageError(f"invalid naming template {template!r}: {exc}") from None
    for _, field_name, spec, conversion in parsed:
        if field_name is None:
            continue
        if field_name not in PLACEHOLDERS:
            known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise UsageError(f"unknown placeholder {{{field_name}}} in naming template {template!r} (known: {known})")
        if spec or conversion:
            raise UsageError(f"invalid placeholder in naming template {template!r}: no format specs or conversions")
    return template


@dataclass(frozen=True)
class Target:
    """Where a mirror entry writes to.

    * ``registry``: repositories on ``registry`` under the repository prefix ``path``;
    * ``oci``: one OCI image layout at the directory ``path``, images named ``repo:tag`` in it;
    * ``dir``: a tree of skopeo ``dir:`` images, ``path/repo:tag`` (skopeo's ``--dest dir``).

    ``naming`` overrides the entry's naming for this target only.
    """

    kind: TargetKind
    path: str = ""
    registry: str = ""
    naming: Naming | None = None

    def __str__(self) -> str:
        if self.kind == "registry":
            return f"docker://{_join_segments(self.registry, self.path)}"
        return f"{self.kind}:{self.path}"


@dataclass(frozen=True)
class PruneConfig:
    """Opt-in removal of target tags.

    Enabled, a tag present at the target but gone upstream is deleted; with ``unmatched`` also one
    that still exists upstream but is no longer selected. The executor's safety rules (never when the
    upstream listing failed or came back empty, never signature tags, never a digest a kept tag points
    at) always apply; ``max_prune`` caps deletions per entry and run, and tags fully matching a
    ``protect`` regex are never pruned.
    """

    enabled: bool = False
    max_prune: int = DEFAULT_MAX_PRUNE
    unmatched: bool = False
    protect: tuple[str, ...] = ()

    def protects(self, tag: str) -> bool:
        return any(_compiled(p).fullmatch(tag) for p in self.protect)


@dataclass(frozen=True)
class MirrorEntry:
    """One mirror entry with the file's defaults applied.

    ``platforms``: ``"all"`` (the default; indexes are copied whole), ``"system"`` (the running host's
    platform only, as a single image, which is what skopeo does without ``--all``) or a tuple of
    platforms (indexes are reduced to those). ``verify`` / ``sign`` are the validated blocks of the
    file, keys as spelled there (``certificate-identity``, ``password-env`` ...), paths resolved;
    ``None`` when absent. ``origin`` is ``FILE:LINE`` of the entry, for messages.
    """

    name: str
    source: Source
    targets: tuple[Target, ...]
    tags: TagSelection = field(default_factory=TagSelection)
    platforms: PlatformSpec = "all"
    signatures: bool = True
    referrers: bool = True
    naming: Naming = field(default_factory=Naming)
    immutable_tags: tuple[str, ...] = ()
    prune: PruneConfig = field(default_factory=PruneConfig)
    verify: Mapping[str, Any] | None = None
    sign: Mapping[str, Any] | None = None
    origin: str = ""

    def naming_for(self, target: Target) -> Naming:
        return target.naming if target.naming is not None else self.naming

    def target_repository(self, target: Target, repository: str) -> str:
        """The repository (registry target) or image name prefix (oci/dir target) for a source repository.

        ``repository`` is the source repository (for namespace and oci sources, the discovered one).
        Raises UsageError when the result is not a valid name.
        """
        naming = self.naming_for(target)
        name = _join_segments(
            target.path if target.kind == "registry" else "",
            naming.expand(registry=self.source.registry, repository=repository),
        )
        if target.kind == "registry":
            return Reference(target.registry, name).repository  # validates; docker.io adds "library/"
        if not name:
            raise UsageError(f"naming for target {target} gives an empty name")
        return name

    def destination(
        self, target: Target, repository: str, *, tag: str | None = None, digest: str | None = None
    ) -> ImageRef:
        """The image a source tag (or digest) of ``repository`` is written to at ``target``.

        The naming's ``tag_suffix`` is appended to tags, except to signature tags
        (``sha256-<hex>.sig`` ...): those name a manifest digest, which a suffix does not change.
        """
        if (tag is None) == (digest is None):
            raise ValueError("destination() needs exactly one of tag and digest")
        naming = self.naming_for(target)
        name = self.target_repository(target, repository)
        suffix = "" if tag is not None and is_signature_tag(tag) else naming.tag_suffix
        if digest is not None and suffix and target.kind != "dir":
            raise UsageError(f"tag-suffix {suffix!r} cannot be applied to the digest reference {digest}")
        if target.kind == "registry":
            ref = Reference(target.registry, name, tag + suffix if tag is not None else None, digest)
            return ImageRef("docker", reference=ref)
        if target.kind == "oci":
            layout_ref = f"{name}:{tag}{suffix}" if tag is not None else f"{name}@{digest}"
            return ImageRef("oci", path=target.path, layout_ref=layout_ref)
        leaf = f"{name}:{tag}" if tag is not None else f"{name}@{digest}"
        return ImageRef("dir", path=_go_join(target.path, leaf) + suffix)

    def is_immutable(self, tag: str) -> bool:
        """Tags that, once present at a target, are never checked again."""
        return any(_compiled(p).fullmatch(tag) for p in self.immutable_tags)

    def shard_key(self, repository: str | None = None) -> str:
        return self.source.shard_key(repository)


@dataclass(frozen=True)
class SyncOptions:
    """Run options; the command line overrides them. Durations are seconds."""

    job: str = "sync"
    lock_file: str | None = None
    report: str | None = None
    metrics_file: str | None = None
    max_retry_wait: float | None = None
    fail_fast: bool = False
    concurrency: int | None = None


@dataclass(frozen=True)
class SyncConfig:
    """A whole sync job: options, per-host registry settings and the mirror entries (in file order)."""

    options: SyncOptions
    registries: Mapping[str, RegistryConfig]
    mirrors: tuple[MirrorEntry, ...]
    files: tuple[str, ...] = ()

    def registry(self, host: str) -> RegistryConfig:
        """Settings for ``host`` (Docker Hub's aliases map to docker.io); defaults when not configured."""
        host = _normalize_host(host)
        found = self.registries.get(host)
        return found if found is not None else RegistryConfig(host)

    def mirror(self, name: str) -> MirrorEntry:
        for entry in self.mirrors:
            if entry.name == name:
                return entry
        raise KeyError(name)


# =========================================================================== small helpers


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return compile_regex(pattern)


def _join_segments(*parts: str) -> str:
    return "/".join(seg for part in parts for seg in part.split("/") if seg)


def _normalize_host(host: str) -> str:
    return DEFAULT_REGISTRY if host in _DOCKER_HUB_HOSTS else host


def _check_host(host: str) -> str:
    """A registry host[:port] (normalised for Docker Hub), or UsageError."""
    try:
        return Reference(_normalize_host(host), "x").registry
    except UsageError:
        raise UsageError(f"invalid registry host {host!r}") from None


def _check_repo_path(path: str, what: str = "repository path") -> str:
    """Validate repository path components (no Docker Hub normalisation); '' is allowed."""
    if path:
        try:
            Reference("example.invalid", path)
        except UsageError as exc:
            reason = str(exc).split(": ", 1)[-1]
            raise UsageError(f"invalid {what} {path!r}: {reason}") from None
    return path


def _go_clean(p: str) -> str:
    """Go's path.Clean."""
    if p == "":
        return "."
    rooted = p.startswith("/")
    out: list[str] = []
    for seg in p.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(seg)
    text = "/".join(out)
    if rooted:
        return "/" + text
    return text or "."


def _go_join(*elems: str) -> str:
    """Go's path.Join (== filepath.Join on Unix)."""
    parts = [e for e in elems if e]
    return _go_clean("/".join(parts)) if parts else ""


def _go_base(p: str) -> str:
    """Go's path.Base."""
    if p == "":
        return "."
    p = p.rstrip("/")
    if p == "":
        return "/"
    return p[p.rfind("/") + 1 :]


def _go_dir(p: str) -> str:
    """Go's filepath.Dir (Unix)."""
    return _go_clean(p[: p.rfind("/") + 1])


def _parse_duration(value: float | int | str) -> float:
    if isinstance(value, str):
        m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)", value)
        if m is None:
            raise UsageError(f"invalid duration {value!r}")
        return float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2)]
    return float(value)


# =========================================================================== YAML with line numbers

PathItem = str | int
JPath = tuple[PathItem, ...]


def _fmt_path(path: JPath) -> str:
    out = ""
    for item in path:
        if isinstance(item, int):
            out += f"[{item}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", item):
            out += f".{item}" if out else item
        else:
            out += f"[{json.dumps(item)}]"
    return out


@dataclass
class _Doc:
    """A parsed YAML file: plain data plus the line of every value and mapping key."""

    file: str
    data: Any
    lines: dict[JPath, int]
    key_lines: dict[JPath, int]

    def line(self, path: JPath, *, key: bool = False) -> int:
        """The line of the value at ``path``; for a mapping entry, the line of its key.

        (A block mapping or list under a key starts on the next line; the key is what people look for.)
        """
        while path not in self.lines and path:
            path = path[:-1]
        if path in self.key_lines:
            return self.key_lines[path]
        return self.lines.get(path, 1)

    def where(self, path: JPath, *, key: bool = False) -> str:
        text = f"{self.file}:{self.line(path, key=key)}: "
        return text + (f"{_fmt_path(path)}: " if path else "")

    def error(self, path: JPath, reason: str, *, key: bool = False) -> UsageError:
        return UsageError(self.where(path, key=key) + reason)

    def loc(self, path: JPath, *, key: bool = False) -> _Loc:
        return _Loc(self.where(path, key=key), f"{self.file}:{self.line(path, key=key)}")


@dataclass(frozen=True)
class _Loc:
    """Where a value was set: the message prefix ("FILE:LINE: path: ") and "FILE:LINE"."""

    prefix: str
    short: str


def _yaml_error(file: str, exc: yaml.YAMLError) -> UsageError:
    import yaml

    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        reason = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        return UsageError(f"{file}:{line}: invalid YAML: {' '.join(reason.split())}")
    return UsageError(f"{file}: invalid YAML: {' '.join(str(exc).split())}")


class _Composer:
    """Compose a YAML document and turn its nodes into data, keeping lines; strict about keys."""

    def __init__(self, text: str, file: str) -> None:
        import yaml

        self.file = file
        self.loader = yaml.SafeLoader(text)
        self.lines: dict[JPath, int] = {}
        self.key_lines: dict[JPath, int] = {}
        self.count = 0
        self.flattened: set[int] = set()
        self.stack: list[int] = []

    def compose(self) -> Node | None:
        import yaml

        try:
            return self.loader.get_single_node()
        except yaml.YAMLError as exc:
            raise _yaml_error(self.file, exc) from None

    def fail(self, node: Node, reason: str) -> NoReturn:
        raise UsageError(f"{self.file}:{node.start_mark.line + 1}: {reason}")

    def pairs(self, node: MappingNode, *, raw_keys: bool = False) -> list[tuple[str, Node, Node]]:
        """(key, key node, value node), merge keys applied, duplicate explicit keys refused.

        ``raw_keys``: keys are the scalars' source text (as yaml.v3 decodes keys into Go strings).
        """
        import yaml
        from yaml.nodes import ScalarNode

        if id(node) not in self.flattened:
            seen: dict[str, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                if isinstance(key_node, ScalarNode):
                    text = key_node.value
                    if text in seen:
                        self.fail(key_node, f"duplicate key {text!r} (first at line {seen[text]})")
                    seen[text] = key_node.start_mark.line + 1
            try:
                self.loader.flatten_mapping(node)
            except yaml.YAMLError as exc:
                raise _yaml_error(self.file, exc) from None
            self.flattened.add(id(node))
        out: list[tuple[str, Node, Node]] = []
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.fail(key_node, "mapping keys must be plain strings")
            if raw_keys:
                out.append((str(key_node.value), key_node, value_node))
                continue
            key = self.construct_scalar(key_node)
            if not isinstance(key, str):
                self.fail(key_node, f"mapping key {key_node.value!r} must be a string (put it in quotes)")
            out.append((key, key_node, value_node))
        return out

    def construct_scalar(self, node: ScalarNode) -> Any:
        import yaml

        try:
            return self.loader.construct_object(node)
        except yaml.YAMLError as exc:
            raise _yaml_error(self.file, exc) from None

    def data(self, node: Node, path: JPath) -> Any:
        from yaml.nodes import MappingNode, ScalarNode, SequenceNode

        self.count += 1
        if self.count > _MAX_NODES:
            self.fail(node, "document too large (alias expansion)")
        self.lines[path] = node.start_mark.line + 1
        if id(node) in self.stack:
            self.fail(node, "recursive YAML alias")
        if isinstance(node, ScalarNode):
            return self.construct_scalar(node)
        self.stack.append(id(node))
        try:
            if isinstance(node, SequenceNode):
                return [self.data(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                out: dict[str, Any] = {}
                for key, key_node, value_node in self.pairs(node):
                    self.key_lines[path + (key,)] = key_node.start_mark.line + 1
                    out[key] = self.data(value_node, (*path, key))
                return out
            self.fail(node, "unsupported YAML node")  # pragma: no cover - the composer makes only these
        finally:
            self.stack.pop()


def _read_text(path: str) -> str:
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or type(exc).__name__}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UsageError(f"{path}:{line}: not valid UTF-8") from None


def _parse_doc(text: str, file: str) -> _Doc:
    composer = _Composer(text, file)
    try:
        node = composer.compose()
        if node is None:
            raise UsageError(f"{file}:1: empty configuration")
        data = composer.data(node, ())
    finally:
        composer.loader.dispose()
    return _Doc(file, data, composer.lines, composer.key_lines)


# =========================================================================== the schema interpreter

_SUPPORTED_KEYWORDS = frozenset(
    {
        "$schema", "$id", "$defs", "$ref", "$comment", "title", "description", "default", "examples",
        "type", "enum", "const", "pattern", "minLength", "minimum", "exclusiveMinimum", "items",
        "minItems", "properties", "patternProperties", "additionalProperties", "required", "anyOf",
    }
)  # fmt: skip
_TYPE_WORDS = {
    "string": "a string", "integer": "an integer", "number": "a number", "boolean": "true or false",
    "array": "a list", "object": "a mapping", "null": "null",
}  # fmt: skip
_KEY_HINTS = {
    "password": "inline passwords are not accepted: use password-env or password-file",
}


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The shipped JSON Schema of the config format (draft 2020-12)."""
    with SCHEMA_PATH.open(encoding="utf-8") as fh:
        schema: dict[str, Any] = json.load(fh)
    return schema


def _json_type(value: Any) -> str | None:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number" if math.isfinite(value) else None
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return None


def _is_type(value: Any, want: str) -> bool:
    have = _json_type(value)
    if have == want:
        return True
    if want == "number" and have == "integer":
        return True
    return want == "integer" and have == "number" and float(value).is_integer()


def _describe(value: Any) -> str:
    have = _json_type(value)
    if have == "string":
        return f"the string {json.dumps(value)}"
    if have in ("integer", "number"):
        return f"the number {value}"
    if have == "boolean":
        return f"{'true' if value else 'false'}"
    if have is None:
        return f"a {type(value).__name__} value"
    return _TYPE_WORDS[have]


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


@dataclass
class _SchemaError:
    path: JPath
    message: str
    at_key: bool = False


class _SchemaValidator:
    """Checks an instance against the shipped schema; understands exactly ``_SUPPORTED_KEYWORDS``."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.root = schema

    def resolve(self, ref: str) -> Any:
        if not ref.startswith("#/"):
            raise ValueError(f"unsupported $ref {ref!r}")
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def errors(self, instance: Any, schema: Any = None, path: JPath = ()) -> list[_SchemaError]:
        s = self.root if schema is None else schema
        if s is True:
            return []
        if s is False:
            return [_SchemaError(path, "not allowed here", at_key=True)]
        errs: list[_SchemaError] = []
        if "$ref" in s:
            errs += self.errors(instance, self.resolve(s["$ref"]), path)
        types = s.get("type")
        if types is not None:
            wanted = [types] if isinstance(types, str) else list(types)
            if not any(_is_type(instance, t) for t in wanted):
                words = " or ".join(_TYPE_WORDS[t] for t in wanted)
                hint = ""
                if "string" in wanted and _json_type(instance) in ("integer", "number", "boolean", None):
                    hint = " (put the value in quotes)"
                return errs + [_SchemaError(path, f"expected {words}, got {_describe(instance)}{hint}")]
        if "const" in s and not _json_equal(instance, s["const"]):
            errs.append(_SchemaError(path, f"must be {json.dumps(s['const'])}, not {_describe(instance)}"))
        if "enum" in s and not any(_json_equal(instance, e) for e in s["enum"]):
            choices = ", ".join(str(e) for e in s["enum"])
            errs.append(_SchemaError(path, f"must be one of: {choices} (not {_describe(instance)})"))
        kind = _json_type(instance)
        if kind == "string":
            errs += self._string(s, instance, path)
        elif kind in ("integer", "number"):
            if "minimum" in s and instance < s["minimum"]:
                errs.append(_SchemaError(path, f"must be at least {s['minimum']}, not {instance}"))
            if "exclusiveMinimum" in s and instance <= s["exclusiveMinimum"]:
                errs.append(_SchemaError(path, f"must be greater than {s['exclusiveMinimum']}, not {instance}"))
        elif kind == "array":
            if "minItems" in s and len(instance) < s["minItems"]:
                errs.append(
                    _SchemaError(
                        path, "must not be empty" if s["minItems"] == 1 else f"needs at least {s['minItems']} items"
                    )
                )
            if "items" in s:
                for i, item in enumerate(instance):
                    errs += self.errors(item, s["items"], (*path, i))
        elif kind == "object":
            errs += self._object(s, instance, path)
        if "anyOf" in s:
            errs += self._any_of(s, instance, path)
        return errs

    def _string(self, s: Mapping[str, Any], value: str, path: JPath) -> list[_SchemaError]:
        if "minLength" in s and len(value) < s["minLength"]:
            return [_SchemaError(path, "must not be empty")]
        if "pattern" in s and re.search(s["pattern"], value) is None:
            what = s.get("description")
            reason = f"invalid value {json.dumps(value)}" + (f": expected {_lc(what)}" if what else "")
            return [_SchemaError(path, reason)]
        return []

    def _object(self, s: Mapping[str, Any], obj: Mapping[str, Any], path: JPath) -> list[_SchemaError]:
        errs: list[_SchemaError] = []
        props: Mapping[str, Any] = s.get("properties", {})
        patterns: Mapping[str, Any] = s.get("patternProperties", {})
        for name in s.get("required", ()):
            if name not in obj:
                errs.append(_SchemaError(path, f"missing required key {name!r}"))
        for key, value in obj.items():
            sub = (*path, key)
            matched = False
            if key in props:
                matched = True
                errs += self.errors(value, props[key], sub)
            for pattern, pschema in patterns.items():
                if re.search(pattern, key):
                    matched = True
                    errs += self.errors(value, pschema, sub)
            if matched:
                continue
            extra = s.get("additionalProperties", True)
            if extra is False:
                errs.append(_SchemaError(sub, self._unknown_key(key, props, path), at_key=True))
            elif extra is not True:
                errs += self.errors(value, extra, sub)
        return errs

    @staticmethod
    def _unknown_key(key: str, props: Mapping[str, Any], path: JPath) -> str:
        if key in _KEY_HINTS:
            return _KEY_HINTS[key]
        reason = f"unknown key {key!r}"
        import difflib

        close = difflib.get_close_matches(key, list(props), n=1, cutoff=0.6)
        if close:
            reason += f" (did you mean {close[0]!r}?)"
        elif props:
            reason += f" (expected one of: {', '.join(props)}; keys starting with x- are ignored)"
        if not path and ("." in key or ":" in key):
            reason += "; this looks like skopeo's sync YAML, which `regtool sync --src yaml` reads"
        return reason

    def _any_of(self, s: Mapping[str, Any], value: Any, path: JPath) -> list[_SchemaError]:
        branches = s["anyOf"]
        results = [self.errors(value, b, path) for b in branches]
        if any(not r for r in results):
            return []
        typed = [r for b, r in zip(branches, results, strict=True) if self._type_fits(b, value)]
        if len(typed) == 1:
            return typed[0]
        what = s.get("description")
        return [_SchemaError(path, f"expected {_lc(what)}" if what else "not one of the allowed forms")]

    def _type_fits(self, branch: Any, value: Any) -> bool:
        if not isinstance(branch, Mapping):
            return True
        if "$ref" in branch:
            return self._type_fits(self.resolve(branch["$ref"]), value)
        types = branch.get("type")
        if types is None:
            return True
        wanted = [types] if isinstance(types, str) else types
        return any(_is_type(value, t) for t in wanted)


def _lc(text: str) -> str:
    text = text.rstrip(".")
    return text[:1].lower() + text[1:] if text[:1].isupper() and not text[1:2].isupper() else text


def _schema_check(doc: _Doc) -> None:
    errs = _SchemaValidator(load_schema()).errors(doc.data)
    if errs:
        first = min(errs, key=lambda e: doc.line(e.path, key=e.at_key))
        raise doc.error(first.path, first.message, key=first.at_key)


# =========================================================================== ${VAR} expansion

_EXPAND_RE = re.compile(r"\$\$|\$\{([^}]*)\}|\$\{")
_EXPAND_BODY_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


def expand_env(text: str, environ: Mapping[str, str]) -> str:
    """Expand ``${NAME}``, ``${NAME:-default}`` (default when unset or empty) and ``$$`` (a ``$``).

    Raises UsageError for an unset variable without a default, or a malformed ``${``.
    """

    def sub(m: re.Match[str]) -> str:
        whole = m.group(0)
        if whole == "$$":
            return "$"
        if m.group(1) is None:
            raise UsageError("unterminated ${ (write $$ for a literal $)")
        body = _EXPAND_BODY_RE.fullmatch(m.group(1))
        if body is None:
            raise UsageError(f"invalid variable reference {whole!r} (expected ${{NAME}} or ${{NAME:-default}})")
        name, default = body.group(1), body.group(2)
        value = environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                raise UsageError(f"environment variable {name} is not set (and {whole} has no :-default)")
            return default
        return value

    return _EXPAND_RE.sub(sub, text)


# =========================================================================== native files → model


@dataclass
class _FileResult:
    doc: _Doc
    job: tuple[str, _Loc] | None
    options: dict[str, tuple[Any, _Loc]]
    registries: dict[str, tuple[RegistryConfig, _Loc]]
    mirrors: list[tuple[MirrorEntry, _Loc]]


_OPTION_FIELDS = {
    "lock-file": "lock_file",
    "report": "report",
    "metrics-file": "metrics_file",
    "max-retry-wait": "max_retry_wait",
    "fail-fast": "fail_fast",
    "concurrency": "concurrency",
}
_SETTING_KEYS = (
    "tags",
    "platforms",
    "signatures",
    "referrers",
    "targets",
    "naming",
    "immutable-tags",
    "prune",
    "verify",
    "sign",
)
_VERIFY_PATHS = ("trusted-root", "fulcio-root", "rekor-public-key", "ca-roots", "ca-intermediates")
_SIGN_PATHS = ("key", "password-file")


class _Builder:
    """Semantic checks and model construction for one schema-valid file."""

    def __init__(self, doc: _Doc, environ: Mapping[str, str]) -> None:
        self.doc = doc
        self.environ = environ
        self.base_dir = os.path.dirname(os.path.abspath(doc.file))

    # -- helpers
    def fail(self, path: JPath, reason: str, *, key: bool = False) -> NoReturn:
        raise self.doc.error(path, reason, key=key)

    def guard(self, path: JPath, func: Callable[..., _T], *args: Any, key: bool = False) -> _T:
        """``func(*args)``, its UsageError reported at ``path``."""
        try:
            return func(*args)
        except UsageError as exc:
            self.fail(path, str(exc), key=key)

    def expand(self, path: JPath, text: str, *, key: bool = False) -> str:
        return self.guard(path, expand_env, text, self.environ, key=key)

    def path_value(self, path: JPath, text: str) -> str:
        expanded = self.expand(path, text)
        if not expanded:
            self.fail(path, "must not be empty")
        return expanded if os.path.isabs(expanded) else os.path.normpath(os.path.join(self.base_dir, expanded))

    def regexes(self, path: JPath, values: Sequence[str]) -> tuple[str, ...]:
        for i, pattern in enumerate(values):
            self.guard((*path, i), check_regex, pattern)
        return tuple(values)

    # -- the file
    def build(self) -> _FileResult:
        data: dict[str, Any] = self.doc.data
        job = (data["job"], self.doc.loc(("job",))) if "job" in data else None
        options: dict[str, tuple[Any, _Loc]] = {}
        for key, value in data.get("options", {}).items():
            if key.startswith("x-"):
                continue
            path: JPath = ("options", key)
            if key in ("lock-file", "report", "metrics-file"):
                value = self.path_value(path, value)
            elif key == "max-retry-wait":
                value = self.guard(path, _parse_duration, value)
            elif key == "concurrency":
                value = int(value)
            options[key] = (value, self.doc.loc(path))
        registries: dict[str, tuple[RegistryConfig, _Loc]] = {}
        for host_text, value in data.get("registries", {}).items():
            if host_text.startswith("x-"):
                continue
            path = ("registries", host_text)
            host = self.guard(path, _check_host, self.expand(path, host_text, key=True), key=True)
            if host in registries:
                self.fail(path, f"registry {host} is configured twice", key=True)
            registries[host] = (self.registry(host, value, path), self.doc.loc(path, key=True))
        defaults: dict[str, Any] = data.get("defaults", {})
        mirrors: list[tuple[MirrorEntry, _Loc]] = []
        for i, entry in enumerate(data.get("mirrors", [])):
            path = ("mirrors", i)
            mirrors.append((self.mirror(entry, path, defaults), self.doc.loc(path)))
        return _FileResult(self.doc, job, options, registries, mirrors)

    # -- registries
    def registry(self, host: str, value: Mapping[str, Any], path: JPath) -> RegistryConfig:
        paths = {}
        for key in ("ca-file", "cert-dir", "client-cert", "client-key"):
            if key in value:
                paths[key] = self.path_value((*path, key), value[key])
        if ("client-cert" in value) != ("client-key" in value):
            missing = "client-key" if "client-cert" in value else "client-cert"
            self.fail(path, f"{missing} is needed too (a client certificate and its key go together)")
        creds = self.credentials(value.get("credentials"), (*path, "credentials"))
        rps = value.get("requests-per-second")
        return RegistryConfig(
            host=host,
            tls_verify=value.get("tls-verify", True),
            ca_file=paths.get("ca-file"),
            cert_dir=paths.get("cert-dir"),
            client_cert=paths.get("client-cert"),
            client_key=paths.get("client-key"),
            credentials=creds,
            max_concurrency=int(value["max-concurrency"]) if "max-concurrency" in value else None,
            requests_per_second=float(rps) if rps is not None else None,
            rate_limit_floor=int(value["rate-limit-floor"]) if "rate-limit-floor" in value else None,
        )

    def credentials(self, value: Mapping[str, Any] | None, path: JPath) -> CredentialSource:
        if value is None:
            return CredentialSource()
        secret_keys = [k for k in ("password-env", "password-file") if k in value]
        if len(secret_keys) > 1:
            self.fail(path, "give one of password-env and password-file, not both")
        if value.get("anonymous"):
            others = [k for k in ("username", "password-env", "password-file", "authfile") if k in value]
            if others:
                self.fail((*path, others[0]), "anonymous: true takes no credentials", key=True)
        if secret_keys and "username" not in value:
            self.fail(path, f"{secret_keys[0]} needs a username")
        if "username" in value and not secret_keys:
            self.fail(path, "username needs password-env or password-file")
        if "authfile" in value and (secret_keys or "username" in value):
            self.fail(
                (*path, "authfile"), "authfile is for the normal credential lookup: not with a username", key=True
            )
        username = self.expand((*path, "username"), value["username"]) if "username" in value else None
        return CredentialSource(
            username=username,
            password_env=value.get("password-env"),
            password_file=self.path_value((*path, "password-file"), value["password-file"])
            if "password-file" in value
            else None,
            authfile=self.path_value((*path, "authfile"), value["authfile"]) if "authfile" in value else None,
            anonymous=bool(value.get("anonymous", False)),
        )

    # -- mirrors
    def setting(
        self, entry: Mapping[str, Any], path: JPath, defaults: Mapping[str, Any], key: str
    ) -> tuple[Any, JPath] | None:
        if key in entry:
            return entry[key], (*path, key)
        if key in defaults:
            return defaults[key], ("defaults", key)
        return None

    def mirror(self, entry: Mapping[str, Any], path: JPath, defaults: Mapping[str, Any]) -> MirrorEntry:
        source = self.source(entry["source"], (*path, "source"))
        found = self.setting(entry, path, defaults, "tags")
        if source.kind == "image":
            if "tags" in entry:
                self.fail((*path, "tags"), "an image source names its tag or digest: no tags selection here", key=True)
            tags = TagSelection(exact=(source.tag,)) if source.tag else TagSelection(digests=(source.digest or "",))
        elif found is not None:
            tags = self.tags(*found)
        else:
            tags = TagSelection()
        found = self.setting(entry, path, defaults, "targets")
        if found is None:
            self.fail(path, "no targets: set targets here or in defaults")
        targets = self.targets(*found)
        found = self.setting(entry, path, defaults, "naming")
        naming = self.naming(*found) if found is not None else Naming()
        found = self.setting(entry, path, defaults, "platforms")
        platforms = self.platforms(*found) if found is not None else "all"
        found = self.setting(entry, path, defaults, "immutable-tags")
        immutable = self.regexes(found[1], found[0]) if found is not None else ()
        found = self.setting(entry, path, defaults, "prune")
        prune = self.prune(*found) if found is not None else PruneConfig()
        if prune.enabled:
            if source.kind == "image":
                self.fail(found[1] if found else path, "prune needs a repository, namespace or oci source")
            for target in targets:
                if target.kind == "dir":
                    self.fail(found[1] if found else path, f"cannot prune the dir: target {target}")
        found = self.setting(entry, path, defaults, "verify")
        verify = self.verify(*found) if found is not None else None
        found = self.setting(entry, path, defaults, "sign")
        sign = self.sign(*found) if found is not None else None
        signatures = self.setting(entry, path, defaults, "signatures")
        referrers = self.setting(entry, path, defaults, "referrers")
        name = entry.get("name") or str(source)
        mirror = MirrorEntry(
            name=name,
            source=source,
            targets=targets,
            tags=tags,
            platforms=platforms,
            signatures=signatures[0] if signatures is not None else True,
            referrers=referrers[0] if referrers is not None else True,
            naming=naming,
            immutable_tags=immutable,
            prune=prune,
            verify=verify,
            sign=sign,
            origin=f"{self.doc.file}:{self.doc.line(path)}",
        )
        self.check_names(mirror, path)
        return mirror

    def check_names(self, mirror: MirrorEntry, path: JPath) -> None:
        """Form one target name per target now, so a bad template or prefix fails before any traffic."""
        src = mirror.source
        if src.kind in ("repository", "image"):
            sample = src.repository
        elif src.kind == "namespace":
            sample = f"{src.namespace}/x" if src.namespace else "x"
        else:
            sample = "x"
        for target in mirror.targets:
            try:
                if mirror.tags.lists or mirror.tags.exact:
                    mirror.destination(target, sample, tag=mirror.tags.exact[0] if mirror.tags.exact else "latest")
                for digest in mirror.tags.digests:
                    mirror.destination(target, sample, digest=digest)
            except UsageError as exc:
                self.fail((*path, "source"), f"target {target}: {exc}")

    def source(self, value: str | Mapping[str, Any], path: JPath) -> Source:
        if isinstance(value, str):
            text = self.expand(path, value)
            ref = self.guard(path, parse_reference, text)
            return self.ref_source(ref, path)
        kinds = [k for k in ("repository", "image", "namespace", "oci") if k in value]
        if len(kinds) != 1:
            self.fail(
                path,
                "a source needs exactly one of repository, image, namespace, oci"
                + (f" (got {', '.join(kinds)})" if kinds else ""),
            )
        kind = kinds[0]
        for key in ("allow", "deny"):
            if key in value and kind not in ("namespace", "oci"):
                self.fail((*path, key), f"{key} filters repositories of a namespace or oci source", key=True)
        allow = self.regexes((*path, "allow"), value.get("allow", []))
        deny = self.regexes((*path, "deny"), value.get("deny", []))
        if kind == "oci":
            if "registry" in value:
                self.fail((*path, "registry"), "an oci source has no registry", key=True)
            return Source("oci", path=self.oci_path((*path, "oci"), value["oci"]), allow=allow, deny=deny)
        registry = None
        if "registry" in value:
            rpath = (*path, "registry")
            registry = self.guard(rpath, _check_host, self.expand(rpath, value["registry"]))
        kpath = (*path, kind)
        text = self.expand(kpath, value[kind])
        if kind == "namespace":
            if registry is None:
                self.fail(path, "a namespace source needs a registry")
            if registry == DEFAULT_REGISTRY:
                self.fail((*path, "registry"), "Docker Hub does not serve the _catalog API: list repositories instead")
            namespace = text.strip("/")
            self.guard(kpath, _check_repo_path, namespace, "namespace")
            return Source("namespace", registry=registry, namespace=namespace, allow=allow, deny=deny)
        if registry is None:
            ref = self.guard(kpath, parse_reference, text)
        else:
            name, _, digest = text.partition("@")
            name, colon, tag = name.partition(":")
            ref = self.guard(kpath, Reference, registry, name, tag if colon else None, digest or None)
        if kind == "repository" and (ref.tag or ref.digest):
            self.fail(kpath, "a repository takes no tag or digest (use image, or tags)")
        if kind == "image" and not (ref.tag or ref.digest):
            self.fail(kpath, "an image names a tag or digest (use repository for all tags)")
        return self.ref_source(ref, kpath)

    def ref_source(self, ref: Reference, path: JPath) -> Source:
        if ref.tag is None and ref.digest is None:
            return Source("repository", registry=ref.registry, repository=ref.repository)
        if ref.tag is not None and ref.digest is not None:
            self.fail(path, "give either a tag or a digest, not both")
        if ref.tag is not None:
            self.guard(path, check_tag, ref.tag)
        return Source("image", registry=ref.registry, repository=ref.repository, tag=ref.tag, digest=ref.digest)

    def oci_path(self, path: JPath, text: str) -> str:
        resolved = self.path_value(path, text)
        if ":" in resolved:
            self.fail(path, f"an OCI layout path cannot contain ':' ({resolved})")
        return resolved

    def tags(self, value: list[str] | Mapping[str, Any], path: JPath) -> TagSelection:
        if isinstance(value, list):
            for i, tag in enumerate(value):
                self.guard((*path, i), check_tag, tag)
            return self.guard(path, lambda: TagSelection(exact=tuple(value)))
        include = self.regexes((*path, "include"), value.get("include", []))
        exclude = self.regexes((*path, "exclude"), value.get("exclude", []))
        semver = value.get("semver")
        if semver is not None:
            self.guard((*path, "semver"), parse_semver_range, semver)
        for i, tag in enumerate(value.get("exact", [])):
            self.guard((*path, "exact", i), check_tag, tag)
        for i, digest in enumerate(value.get("digests", [])):
            self.guard((*path, "digests", i), check_digest, digest)
        latest = value.get("latest")
        return self.guard(
            path,
            lambda: TagSelection(
                include=include,
                exclude=exclude,
                semver=semver,
                latest=int(latest) if latest is not None else None,
                exact=tuple(value.get("exact", [])),
                digests=tuple(value.get("digests", [])),
                include_prerelease=bool(value.get("include-prerelease", False)),
            ),
        )

    def platforms(self, value: str | list[str], path: JPath) -> PlatformSpec:
        if isinstance(value, str):
            return "system" if value == "system" else "all"
        out: list[Platform] = []
        for i, text in enumerate(value):
            platform = self.guard((*path, i), Platform.parse, text)
            if platform in out:
                self.fail((*path, i), f"platform {text!r} is listed twice")
            out.append(platform)
        return tuple(out)

    def naming(self, value: str | Mapping[str, Any], path: JPath) -> Naming:
        if isinstance(value, str):
            return self.guard(path, lambda: Naming(template=value))
        if "template" in value:
            self.guard((*path, "template"), check_template, value["template"])
        prefix = value.get("prefix", "")
        self.guard((*path, "prefix"), _check_repo_path, _join_segments(prefix), "prefix")
        return self.guard(
            path,
            lambda: Naming(
                prefix=prefix, template=value.get("template", "{repository}"), tag_suffix=value.get("tag-suffix", "")
            ),
        )

    def targets(self, value: list[Any], path: JPath) -> tuple[Target, ...]:
        out: list[Target] = []
        for i, item in enumerate(value):
            target = self.target(item, (*path, i))
            if any(t.kind == target.kind and t.path == target.path and t.registry == target.registry for t in out):
                self.fail((*path, i), f"target {target} is listed twice")
            out.append(target)
        return tuple(out)

    def target(self, value: str | Mapping[str, Any], path: JPath) -> Target:
        if isinstance(value, str):
            text = self.expand(path, value)
            if text.startswith("docker://"):
                return self.registry_target(path, text[len("docker://") :])
            kind, _, rest = text.partition(":")
            if kind == "oci":
                return Target("oci", path=self.oci_path(path, rest))
            if kind == "dir":
                return Target("dir", path=self.path_value(path, rest))
            self.fail(path, f"invalid target {text!r}: expected docker://HOST[/PREFIX], oci:PATH or dir:PATH")
        kinds = [k for k in ("registry", "oci", "dir") if k in value]
        if len(kinds) != 1:
            self.fail(path, "a target needs exactly one of registry, oci, dir")
        if "path" in value and kinds[0] != "registry":
            self.fail((*path, "path"), "path is the repository prefix of a registry target", key=True)
        naming = self.naming(value["naming"], (*path, "naming")) if "naming" in value else None
        kind = kinds[0]
        if kind == "registry":
            host = self.expand((*path, "registry"), value["registry"])
            prefix = self.expand((*path, "path"), value.get("path", ""))
            target = self.registry_target(path, _join_segments(host, prefix) if prefix else host)
        elif kind == "oci":
            target = Target("oci", path=self.oci_path((*path, "oci"), value["oci"]))
        else:
            target = Target("dir", path=self.path_value((*path, "dir"), value["dir"]))
        return replace(target, naming=naming)

    def registry_target(self, path: JPath, text: str) -> Target:
        host, _, prefix = text.partition("/")
        registry = self.guard(path, _check_host, host)
        prefix = _join_segments(prefix)
        if "@" in prefix or ":" in prefix:
            self.fail(path, f"a registry target is a host and a repository prefix, not an image ({text!r})")
        self.guard(path, _check_repo_path, prefix, "repository prefix")
        return Target("registry", registry=registry, path=prefix)

    def prune(self, value: bool | Mapping[str, Any], path: JPath) -> PruneConfig:
        if isinstance(value, bool):
            return PruneConfig(enabled=value)
        return PruneConfig(
            enabled=bool(value.get("enabled", True)),
            max_prune=int(value.get("max-prune", DEFAULT_MAX_PRUNE)),
            unmatched=bool(value.get("unmatched", False)),
            protect=self.regexes((*path, "protect"), value.get("protect", [])),
        )

    def verify(self, value: Mapping[str, Any], path: JPath) -> dict[str, Any]:
        out = {k: v for k, v in value.items() if not k.startswith("x-")}
        if isinstance(out.get("key"), str):
            out["key"] = self.path_value((*path, "key"), out["key"])
        elif "key" in out:
            out["key"] = [self.path_value((*path, "key", i), k) for i, k in enumerate(out["key"])]
        for key in _VERIFY_PATHS:
            if key in out:
                out[key] = self.path_value((*path, key), out[key])
        for key in ("certificate-identity-regexp", "certificate-oidc-issuer-regexp"):
            if key in out:
                self.guard((*path, key), check_regex, out[key])
        if "signed-identity" in out:
            self.guard((*path, "signed-identity"), parse_reference, out["signed-identity"])
        has_identity = "certificate-identity" in out or "certificate-identity-regexp" in out
        has_issuer = "certificate-oidc-issuer" in out or "certificate-oidc-issuer-regexp" in out
        if "key" in out:
            for key in (
                "certificate-identity",
                "certificate-identity-regexp",
                "certificate-oidc-issuer",
                "certificate-oidc-issuer-regexp",
                "ca-roots",
                "fulcio-root",
            ):
                if key in out:
                    self.fail((*path, key), f"{key} is for keyless or PKI verification, not with key", key=True)
        elif "ca-roots" in out:
            if not has_identity:
                self.fail(path, "PKI verification (ca-roots) needs certificate-identity or certificate-identity-regexp")
        else:
            if not (has_identity and has_issuer):
                self.fail(
                    path,
                    "verify needs key, or (keyless) certificate-identity[-regexp] and "
                    "certificate-oidc-issuer[-regexp], or (PKI) ca-roots",
                )
            if "fulcio-root" in out and "rekor-public-key" not in out and "trusted-root" not in out:
                self.fail(path, "fulcio-root needs rekor-public-key (or use trusted-root)")
        if "ca-intermediates" in out and "ca-roots" not in out:
            self.fail((*path, "ca-intermediates"), "ca-intermediates needs ca-roots", key=True)
        if out.get("require-tlog") and out.get("insecure-ignore-tlog"):
            self.fail(path, "require-tlog and insecure-ignore-tlog contradict each other")
        return out

    def sign(self, value: Mapping[str, Any], path: JPath) -> dict[str, Any]:
        out = {k: v for k, v in value.items() if not k.startswith("x-")}
        keyless = bool(out.get("keyless", False))
        if keyless == ("key" in out):
            self.fail(path, "sign needs either key or keyless: true")
        for key in ("password-env", "password-file"):
            if key in out and keyless:
                self.fail((*path, key), f"{key} is the password of a key: not with keyless", key=True)
        if "password-env" in out and "password-file" in out:
            self.fail(path, "give one of password-env and password-file, not both")
        if "identity-token-env" in out and not keyless:
            self.fail((*path, "identity-token-env"), "identity-token-env is for keyless signing", key=True)
        for key in _SIGN_PATHS:
            if key in out:
                out[key] = self.path_value((*path, key), out[key])
        if "identity" in out:
            self.guard((*path, "identity"), parse_reference, out["identity"])
        return out


def _file_job_name(path: str) -> str:
    stem = Path(path).stem if os.path.isfile(path) else Path(os.path.abspath(path)).name
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-._") or "sync"
    return name if _JOB_RE.fullmatch(name) else "sync"


def _config_files(path: str) -> list[str]:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or type(exc).__name__}") from None
    if not stat.S_ISDIR(st.st_mode):
        return [path]
    names = sorted(
        name
        for name in os.listdir(path)
        if not name.startswith(".") and name.endswith((".yaml", ".yml")) and os.path.isfile(os.path.join(path, name))
    )
    if not names:
        raise UsageError(f"{path}: no *.yaml or *.yml files in this directory")
    return [os.path.join(path, name) for name in names]


def load_config(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> SyncConfig:
    """Load a config FILE, or a DIRECTORY of ``*.yaml`` / ``*.yml`` files (merged, in name order).

    Merging: mirror entries are concatenated (names must be unique across files); a registry host or
    an option set in several files must be set to the same value; ``defaults`` apply to the entries
    of their own file only. Hidden files (``.*``, e.g. Kubernetes' ``..data``) are skipped.
    """
    text_path = os.fspath(path)
    env = os.environ if environ is None else environ
    results = [_load_file(file, env) for file in _config_files(text_path)]
    return _merge(results, _file_job_name(text_path))


def load_config_text(
    text: str, filename: str = "<config>", *, environ: Mapping[str, str] | None = None, job: str = "sync"
) -> SyncConfig:
    """Load one config from a string; relative paths resolve against ``filename``'s directory."""
    env = os.environ if environ is None else environ
    return _merge([_build(_parse_doc(text, filename), env)], job)


def _load_file(file: str, environ: Mapping[str, str]) -> _FileResult:
    return _build(_parse_doc(_read_text(file), file), environ)


def _build(doc: _Doc, environ: Mapping[str, str]) -> _FileResult:
    if not isinstance(doc.data, dict):
        raise doc.error((), f"expected a mapping at the top level, got {_describe(doc.data)}")
    _schema_check(doc)
    return _Builder(doc, environ).build()


def _merge(results: Sequence[_FileResult], default_job: str) -> SyncConfig:
    job: tuple[str, _Loc] | None = None
    options: dict[str, tuple[Any, _Loc]] = {}
    registries: dict[str, tuple[RegistryConfig, _Loc]] = {}
    mirrors: list[MirrorEntry] = []
    names: dict[str, _Loc] = {}
    for result in results:
        if result.job is not None:
            if job is not None and job[0] != result.job[0]:
                raise UsageError(f"{result.job[1].prefix}conflicts with job {job[0]!r} set at {job[1].short}")
            job = job or result.job
        for key, (value, loc) in result.options.items():
            if key in options and options[key][0] != value:
                raise UsageError(f"{loc.prefix}conflicts with the value set at {options[key][1].short}")
            options.setdefault(key, (value, loc))
        for host, (config, loc) in result.registries.items():
            if host in registries and registries[host][0] != config:
                raise UsageError(f"{loc.prefix}settings for {host} conflict with those at {registries[host][1].short}")
            registries.setdefault(host, (config, loc))
        for entry, loc in result.mirrors:
            if entry.name in names:
                raise UsageError(
                    f"{loc.prefix}duplicate mirror name {entry.name!r} (first at {names[entry.name].short});"
                    " give each entry a distinct name"
                )
            names[entry.name] = loc
            mirrors.append(entry)
    files = tuple(r.doc.file for r in results)
    if not mirrors:
        raise UsageError(f"{files[0] if len(files) == 1 else ', '.join(files)}: no mirrors defined")
    kwargs: dict[str, Any] = {_OPTION_FIELDS[k]: v for k, (v, _) in options.items()}
    return SyncConfig(
        options=SyncOptions(job=job[0] if job else default_job, **kwargs),
        registries={host: cfg for host, (cfg, _) in registries.items()},
        mirrors=tuple(mirrors),
        files=files,
    )


# =========================================================================== skopeo: destinations

SkopeoDestTransport = Literal["docker", "dir"]


def _skopeo_dest_target(dest: str, dest_transport: str) -> Target:
    if not dest:
        raise UsageError("the destination must not be empty")
    if dest_transport == "dir":
        return Target("dir", path=_go_clean(dest))
    if dest_transport != "docker":
        raise UsageError(f"{dest_transport!r} is not a valid destination transport (expected docker or dir)")
    cleaned = _go_clean(dest)
    first, slash, rest = cleaned.partition("/")
    # distribution/reference: the first component is a host when it has a "." or ":", is "localhost",
    # or has upper-case letters -- decided as if a repository name followed, which it always will.
    if "." in first or ":" in first or first == "localhost" or first.lower() != first:
        host, prefix = first, rest
    else:
        host, prefix = DEFAULT_REGISTRY, cleaned
    try:
        host = _check_host(host)
        _check_repo_path(prefix, "destination")
    except UsageError as exc:
        raise UsageError(f"invalid destination {dest!r}: {exc}") from None
    if "@" in prefix or ":" in prefix:
        raise UsageError(f"invalid destination {dest!r}: a destination is a registry and repository prefix")
    return Target("registry", registry=host, path=prefix)


def _skopeo_naming(scoped: bool, append_suffix: str) -> Naming:
    # skopeo: DEST/<path.Base(ref)> or, scoped, DEST/<fully qualified ref>, then + append-suffix.
    try:
        return Naming(template="{registry}/{repository}" if scoped else "{name}", tag_suffix=append_suffix)
    except UsageError:
        raise UsageError(f"invalid --append-suffix {append_suffix!r}: only letters, digits, '_', '.' and '-'") from None


def _skopeo_platforms(all_platforms: bool) -> PlatformSpec:
    return "all" if all_platforms else "system"


def _check_skopeo_entry(entry: MirrorEntry, where: str) -> MirrorEntry:
    for target in entry.targets:
        try:
            if entry.tags.exact or entry.tags.lists:
                entry.destination(
                    target, entry.source.repository, tag=entry.tags.exact[0] if entry.tags.exact else "latest"
                )
            for digest in entry.tags.digests:
                entry.destination(target, entry.source.repository, digest=digest)
        except UsageError as exc:
            raise UsageError(f"{where}{exc}") from None
    return entry


# =========================================================================== skopeo: sync YAML

_YAML_TRUE = {"true", "True", "TRUE"}
_YAML_FALSE = {"false", "False", "FALSE"}
_YAML11_TRUE = {"y", "Y", "yes", "Yes", "YES", "on", "On", "ON"}
_YAML11_FALSE = {"n", "N", "no", "No", "NO", "off", "Off", "OFF"}
_SKOPEO_REGISTRY_KEYS = ("images", "images-by-tag-regex", "images-by-semver", "credentials", "tls-verify", "cert-dir")
_NULL_TAG = "tag:yaml.org,2002:null"


class _SkopeoReader:
    """Reads skopeo's sync YAML the way gopkg.in/yaml.v3 decodes it into skopeo's structs.

    Strings are the scalars' source text (``1.10`` stays "1.10", as yaml.v3 decodes it into a Go
    string), booleans accept YAML 1.2 and yaml.v3's YAML 1.1 compatibility words. Unknown keys are
    refused (skopeo ignores them, silently syncing nothing for a misspelt key).
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self.composer = _Composer(_read_text(file), file)

    def where(self, node: Node) -> str:
        return f"{self.file}:{node.start_mark.line + 1}: "

    def fail(self, node: Node, reason: str) -> NoReturn:
        raise UsageError(self.where(node) + reason)

    def mapping(self, node: Node, what: str) -> list[tuple[str, Node, Node]]:
        from yaml.nodes import MappingNode, ScalarNode

        if isinstance(node, ScalarNode) and node.tag == _NULL_TAG:
            return []
        if not isinstance(node, MappingNode):
            self.fail(node, f"{what} must be a mapping")
        return self.composer.pairs(node, raw_keys=True)

    def string(self, node: Node, what: str) -> str:
        from yaml.nodes import ScalarNode

        if not isinstance(node, ScalarNode):
            self.fail(node, f"{what} must be a string")
        if node.tag == _NULL_TAG and node.style is None:
            return ""
        if node.tag == "tag:yaml.org,2002:binary":
            self.fail(node, f"{what} must be a string")
        return str(node.value)

    def boolean(self, node: Node, what: str) -> bool:
        from yaml.nodes import ScalarNode

        if isinstance(node, ScalarNode):
            text = node.value
            plain = node.style is None
            if plain and text in _YAML_TRUE or text in _YAML11_TRUE:
                return True
            if plain and text in _YAML_FALSE or text in _YAML11_FALSE:
                return False
        self.fail(node, f"{what} must be true or false")

    def read(self) -> list[tuple[str, Node, Node]]:
        root = self.composer.compose()
        if root is None:
            return []
        return self.mapping(root, "the top level of a skopeo sync file")


def skopeo_yaml_to_config(
    path: str | os.PathLike[str],
    dest: str,
    *,
    scoped: bool = False,
    append_suffix: str = "",
    all_platforms: bool = False,
    dest_transport: SkopeoDestTransport = "docker",
) -> SyncConfig:
    """``skopeo sync --src yaml PATH DEST`` as a SyncConfig (one mirror entry per repository and key).

    Per registry key: ``images`` (repository → tags and/or digests; an empty list means every tag),
    ``images-by-tag-regex`` (repository → regex, unanchored search as Go's ``MatchString``),
    ``images-by-semver`` (repository → Masterminds/semver range), ``credentials`` (``username`` /
    ``password``, inline as skopeo has them), ``tls-verify`` and ``cert-dir``. The registry key may
    carry a path ("quay.io/org"): repositories are joined to it and normalised as skopeo does
    ("docker.io" + "alpine" is docker.io/library/alpine). Entries come in file order.

    Destination names are skopeo's: ``DEST/<last path component>:<tag>``, or with ``scoped``
    ``DEST/<registry>/<repository>:<tag>``; ``append_suffix`` is appended to destination tags (and to
    the digest directory names with ``--dest dir``). Without ``all_platforms`` only the host's
    platform is copied, as a single image (skopeo's default).

    Deviations, all refusals before any traffic where skopeo would log and skip (or fail later):
    unknown keys, invalid tags, digests, regexes or ranges, and a registry host configured twice with
    different settings.
    """
    file = os.fspath(path)
    target = _skopeo_dest_target(dest, dest_transport)
    naming = _skopeo_naming(scoped, append_suffix)
    platforms = _skopeo_platforms(all_platforms)
    reader = _SkopeoReader(file)
    try:
        top = reader.read()
        registries: dict[str, tuple[RegistryConfig, str]] = {}
        mirrors: list[MirrorEntry] = []
        for reg_key, key_node, value_node in top:
            entries = reader.mapping(value_node, f"registry {reg_key!r}")
            fields = {name: (knode, vnode) for name, knode, vnode in entries}
            for name, knode, _ in entries:
                if name not in _SKOPEO_REGISTRY_KEYS:
                    import difflib

                    close = difflib.get_close_matches(name, _SKOPEO_REGISTRY_KEYS, n=1, cutoff=0.6)
                    hint = (
                        f" (did you mean {close[0]!r}?)"
                        if close
                        else f" (expected one of: {', '.join(_SKOPEO_REGISTRY_KEYS)})"
                    )
                    reader.fail(knode, f"unknown key {name!r} for registry {reg_key!r}{hint}")
            tls_verify = reader.boolean(fields["tls-verify"][1], "tls-verify") if "tls-verify" in fields else None
            cert_dir = reader.string(fields["cert-dir"][1], "cert-dir") if "cert-dir" in fields else ""
            creds = CredentialSource()
            if "credentials" in fields:
                cred_fields: dict[str, str] = {}
                for cname, cknode, cvnode in reader.mapping(fields["credentials"][1], "credentials"):
                    if cname not in ("username", "password"):
                        reader.fail(cknode, f"unknown key {cname!r} in credentials (expected username, password)")
                    cred_fields[cname] = reader.string(cvnode, f"credentials.{cname}")
                if cred_fields.get("username") or cred_fields.get("password"):
                    creds = CredentialSource(
                        username=cred_fields.get("username", ""), password=cred_fields.get("password", "")
                    )
            reg_mirrors: list[MirrorEntry] = []
            for section in ("images", "images-by-tag-regex", "images-by-semver"):
                if section not in fields:
                    continue
                for repo, rknode, rvnode in reader.mapping(fields[section][1], section):
                    where = reader.where(rknode)
                    try:
                        ref = parse_repository(f"{reg_key}/{repo}")
                    except UsageError as exc:
                        reader.fail(rknode, str(exc))
                    tags = _skopeo_selection(reader, section, rvnode)
                    entry = MirrorEntry(
                        name=f"{reg_key}/{repo}" + ("" if section == "images" else f" ({section})"),
                        source=Source("repository", registry=ref.registry, repository=ref.repository),
                        targets=(target,),
                        tags=tags,
                        platforms=platforms,
                        naming=naming,
                        origin=where.rstrip(": "),
                    )
                    reg_mirrors.append(_check_skopeo_entry(entry, where))
            for entry in reg_mirrors:
                host = entry.source.registry
                config = RegistryConfig(
                    host=host,
                    tls_verify=tls_verify if tls_verify is not None else True,
                    cert_dir=cert_dir or None,
                    credentials=creds,
                )
                where = reader.where(key_node)
                if host in registries and registries[host][0] != config:
                    raise UsageError(f"{where}settings for {host} conflict with {registries[host][1].rstrip(': ')}")
                registries.setdefault(host, (config, where))
            mirrors.extend(reg_mirrors)
    finally:
        reader.composer.loader.dispose()
    names: dict[str, MirrorEntry] = {}
    for entry in mirrors:
        if entry.name in names:
            raise UsageError(f"{entry.origin}: repository {entry.name!r} is listed twice")
        names[entry.name] = entry
    return SyncConfig(
        options=SyncOptions(job=_file_job_name(file)),
        registries={host: cfg for host, (cfg, _) in registries.items()},
        mirrors=tuple(mirrors),
        files=(file,),
    )


def _skopeo_selection(reader: _SkopeoReader, section: str, node: Node) -> TagSelection:
    from yaml.nodes import ScalarNode, SequenceNode

    if section == "images":
        if isinstance(node, ScalarNode) and node.tag == _NULL_TAG:
            return TagSelection()
        if not isinstance(node, SequenceNode):
            reader.fail(node, "images: each repository takes a list of tags or digests")
        tags: list[str] = []
        digests: list[str] = []
        for item in node.value:
            text = reader.string(item, "a tag or digest")
            try:
                if ":" in text:  # go-digest first, as skopeo: an algorithm:hex string is a digest or nothing
                    algorithm = text.partition(":")[0]
                    if algorithm not in ("sha256", "sha384", "sha512"):
                        raise UsageError(f"invalid digest {text!r}: unsupported algorithm {algorithm!r}")
                    check_digest(text)
                    if text not in digests:
                        digests.append(text)
                else:
                    check_tag(text)
                    if text not in tags:
                        tags.append(text)
            except UsageError as exc:
                reader.fail(item, str(exc))
        return TagSelection(exact=tuple(tags), digests=tuple(digests))
    text = reader.string(node, section)
    try:
        if section == "images-by-tag-regex":
            check_regex(text, what="images-by-tag-regex")
            return TagSelection(include=(text,), unanchored=True)
        parse_semver_range(text)
        return TagSelection(semver=text)
    except UsageError as exc:
        reader.fail(node, str(exc))


# =========================================================================== skopeo: command line sources


def skopeo_cli_source_to_config(
    src_transport: str,
    source: str,
    dest: str,
    *,
    scoped: bool = False,
    append_suffix: str = "",
    all_platforms: bool = False,
    dest_transport: SkopeoDestTransport = "docker",
) -> SyncConfig:
    """``skopeo sync --src docker|dir SOURCE DEST`` as a SyncConfig.

    ``--src docker``: SOURCE is a repository (every tag is synced) or one image (``:tag`` or
    ``@digest``; both at once is refused, as skopeo does). ``--src dir``: SOURCE is walked as skopeo
    walks it (every directory holding a ``manifest.json`` is one image) and each image becomes an
    entry with its destination fixed now, as skopeo computes it: the path below SOURCE (its last
    component without ``scoped``), joined to DEST, plus ``append_suffix``, ``:latest`` when that names
    no tag. ``dir`` to ``dir`` is refused (skopeo: "consider using rsync").
    """
    if src_transport == "yaml":
        return skopeo_yaml_to_config(
            source,
            dest,
            scoped=scoped,
            append_suffix=append_suffix,
            all_platforms=all_platforms,
            dest_transport=dest_transport,
        )
    if src_transport not in ("docker", "dir"):
        raise UsageError(f"{src_transport!r} is not a valid source transport (expected docker, dir or yaml)")
    if dest_transport not in ("docker", "dir"):
        raise UsageError(f"{dest_transport!r} is not a valid destination transport (expected docker or dir)")
    platforms = _skopeo_platforms(all_platforms)
    if src_transport == "docker":
        target = _skopeo_dest_target(dest, dest_transport)
        naming = _skopeo_naming(scoped, append_suffix)
        try:
            ref = parse_reference(source)
        except UsageError as exc:
            raise UsageError(f"invalid source: {exc}") from None
        if ref.tag is not None and ref.digest is not None:
            raise UsageError(f"invalid source {source!r}: references with both a tag and a digest are not supported")
        if ref.tag is not None:
            tags = TagSelection(exact=(check_tag(ref.tag),))
            kind: SourceKind = "image"
        elif ref.digest is not None:
            tags = TagSelection(digests=(ref.digest,))
            kind = "image"
        else:
            tags, kind = TagSelection(), "repository"
        entry = MirrorEntry(
            name=str(ref),
            source=Source(kind, registry=ref.registry, repository=ref.repository, tag=ref.tag, digest=ref.digest),
            targets=(target,),
            tags=tags,
            platforms=platforms,
            naming=naming,
            origin="command line",
        )
        _check_skopeo_entry(entry, "")
        return SyncConfig(SyncOptions(), {}, (entry,), ())
    if dest_transport == "dir":
        raise UsageError("sync from 'dir' to 'dir' not implemented, consider using rsync instead")
    return SyncConfig(SyncOptions(), {}, tuple(_skopeo_dir_entries(source, dest, scoped, append_suffix, platforms)), ())


def _skopeo_walk(root: str) -> list[str]:
    """The image directories skopeo finds under ``root`` (filepath.WalkDir order and SkipDir rules)."""
    found: list[str] = []

    def visit(path: str, name: str, is_dir: bool) -> bool:
        """Returns True when the caller must skip the rest of its directory (fs.SkipDir from a file)."""
        if not is_dir:
            if name == "manifest.json":
                found.append(_go_dir(path))
                return True
            return False
        try:
            names = sorted(os.listdir(path), key=lambda n: n.encode("utf-8", "surrogateescape"))
        except OSError as exc:
            raise UsageError(f'Error walking the path "{root}": {exc.strerror or type(exc).__name__}') from None
        for child_name in names:
            child = _go_join(path, child_name)
            try:
                child_is_dir = stat.S_ISDIR(os.lstat(child).st_mode)
            except OSError:
                child_is_dir = False
            if visit(child, child_name, child_is_dir):
                break
        return False

    info = os.lstat(root)
    visit(root, _go_base(root), stat.S_ISDIR(info.st_mode))
    return found


def _skopeo_dir_entries(
    source: str, dest: str, scoped: bool, append_suffix: str, platforms: PlatformSpec
) -> Iterable[MirrorEntry]:
    try:
        os.stat(source)
    except OSError as exc:
        raise UsageError(f"Invalid source directory specified: {exc.strerror or type(exc).__name__}") from None
    images = _skopeo_walk(source)
    if not images:
        raise UsageError(f'No images to sync found in "{source}"')
    out: list[MirrorEntry] = []
    for image_dir in images:
        suffix = image_dir[len(source) :] if image_dir.startswith(source) else image_dir
        if suffix == "":
            suffix = _go_base(source)
        if not scoped:
            suffix = _go_base(suffix)
        text = _go_join(dest, suffix) + append_suffix
        try:
            ref = parse_reference(text)
        except UsageError as exc:
            raise UsageError(f"cannot form the destination for dir:{image_dir}: {exc}") from None
        if ref.tag is None and ref.digest is None:
            ref = ref.with_tag("latest")
        if ref.tag is not None and ref.digest is not None:
            raise UsageError(f"destination {text!r} for dir:{image_dir} has both a tag and a digest")
        literal = ref.repository.replace("{", "{{").replace("}", "}}")
        tags = TagSelection(exact=(ref.tag,)) if ref.tag is not None else TagSelection(digests=(ref.digest or "",))
        out.append(
            MirrorEntry(
                name=f"dir:{image_dir}",
                source=Source("dir", path=image_dir),
                targets=(Target("registry", registry=ref.registry),),
                tags=tags,
                platforms=platforms,
                naming=Naming(template=literal),
                origin="command line",
            )
        )
    return out
