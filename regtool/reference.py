"""Image names: Docker references and transport-qualified image names.

Parsing and normalisation follow distribution/reference as containers/image (and so skopeo, podman
and docker) apply it, so a name means the same repository here as it does to those tools.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Literal

from regtool.errors import InvalidReference
from regtool.manifest import validate_digest

__all__ = [
    "DEFAULT_REGISTRY",
    "DOCKER_HUB_API_HOST",
    "LEGACY_DEFAULT_REGISTRY",
    "NAME_TOTAL_LENGTH_MAX",
    "TRANSPORTS",
    "ImageRef",
    "Reference",
    "Transport",
    "parse_image",
    "parse_reference",
    "parse_repository",
]

DEFAULT_REGISTRY = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
LEGACY_DEFAULT_REGISTRY = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
NAME_TOTAL_LENGTH_MAX = 255

Transport = Literal["docker", "oci", "oci-archive", "dir"]
TRANSPORTS: tuple[Transport, ...] = ("docker", "oci", "oci-archive", "dir")
_EXPECTED_TRANSPORTS = "expected docker://, oci:, oci-archive:, dir:"

# distribution/reference grammar. The separator is written "-+" rather than the grammar's "[-]*":
# the language is the same and Python's backtracking engine cannot blow up on it.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[[a-fA-F0-9:]+\]"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})"

_DOMAIN_RE = re.compile(rf"{_HOST}(?::[0-9]+)?", re.ASCII)
_PATH_RE = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*", re.ASCII)
_PATH_COMPONENT_RE = re.compile(_PATH_COMPONENT, re.ASCII)
_TAG_RE = re.compile(r"\w[\w.-]{0,127}", re.ASCII)
_REF_DIGEST_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}", re.ASCII)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}", re.ASCII)

# containers/image's rule for the image name inside an OCI layout (org.opencontainers.image.ref.name).
# A pattern, not a compiled regex: only layout references need it (re caches it on first use).
_LAYOUT_COMPONENT = r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"
_LAYOUT_REF = rf"{_LAYOUT_COMPONENT}(?:/{_LAYOUT_COMPONENT})*"


def _q(text: str) -> str:
    """Quote like Go's %q so messages stay on one line whatever the input holds."""
    return json.dumps(text)


class _Bad(Exception):
    """Why a name does not parse; the public entry points add which input it was."""


def _check_parts(registry: str, repository: str, tag: str | None, digest: str | None) -> None:
    if not _DOMAIN_RE.fullmatch(registry):
        raise _Bad(f"invalid registry host {_q(registry)}")
    if not repository:
        raise _Bad("missing repository name")
    if repository.lower() != repository:
        raise _Bad(f"repository name {_q(repository)} must be lowercase")
    if not _PATH_RE.fullmatch(repository):
        for component in repository.split("/"):
            if not _PATH_COMPONENT_RE.fullmatch(component):
                raise _Bad(
                    f"invalid repository name component {_q(component)} (lowercase letters and digits,"
                    ' separated by ".", "_", "__" or dashes)'
                )
        raise _Bad(f"invalid repository name {_q(repository)}")  # pragma: no cover - components cover it
    if len(registry) + 1 + len(repository) > NAME_TOTAL_LENGTH_MAX:
        raise _Bad(f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")
    if tag is not None and not _TAG_RE.fullmatch(tag):
        raise _Bad(
            f"invalid tag {_q(tag)} (up to 128 letters, digits, '_', '.' and '-',"
            " not starting with '.' or '-')"
        )
    if digest is not None:
        if not _REF_DIGEST_RE.fullmatch(digest):
            raise _Bad(f"invalid digest {_q(digest)} (expected algorithm:hex, e.g. sha256:<64 hex digits>)")
        try:
            validate_digest(digest)
        except InvalidReference as exc:
            raise _Bad(str(exc)) from None


def _format(registry: str, repository: str, tag: str | None, digest: str | None) -> str:
    text = f"{registry}/{repository}"
    if tag is not None:
        text += f":{tag}"
    if digest is not None:
        text += f"@{digest}"
    return text


@dataclass(frozen=True)
class Reference:
    """A normalised Docker reference; constructing one validates it (so a Reference is always usable)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __post_init__(self) -> None:
        registry = self.registry
        if registry == LEGACY_DEFAULT_REGISTRY:
            registry = DEFAULT_REGISTRY
        repository = self.repository
        if registry == DEFAULT_REGISTRY and "/" not in repository and repository:
            repository = OFFICIAL_REPO_PREFIX + repository
        object.__setattr__(self, "registry", registry)
        object.__setattr__(self, "repository", repository)
        try:
            _check_parts(registry, repository, self.tag, self.digest)
        except _Bad as exc:
            text = _format(registry, repository, self.tag, self.digest)
            raise InvalidReference(f"invalid reference {_q(text)}: {exc}") from None

    @property
    def api_host(self) -> str:
        """Docker Hub's API does not answer on docker.io itself."""
        return DOCKER_HUB_API_HOST if self.registry == DEFAULT_REGISTRY else self.registry

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def familiar(self) -> str:
        """The short form docker prints ("alpine:3"), for messages meant for people."""
        registry, repository = self.registry, self.repository
        if registry == DEFAULT_REGISTRY:
            short = repository
            if short.startswith(OFFICIAL_REPO_PREFIX) and "/" not in short[len(OFFICIAL_REPO_PREFIX) :]:
                short = short[len(OFFICIAL_REPO_PREFIX) :]
            text = short
        else:
            text = f"{registry}/{repository}"
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    @property
    def identifier(self) -> str:
        """What goes in /v2/<name>/manifests/<identifier>: the digest wins over the tag."""
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: str) -> Reference:
        """The same repository at another tag; any digest is dropped so the tag is what gets resolved."""
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> Reference:
        """Pin to a digest, keeping the tag for display (the digest decides what is fetched)."""
        return replace(self, digest=digest)

    def repo_only(self) -> Reference:
        return replace(self, tag=None, digest=None)

    def __str__(self) -> str:
        return _format(self.registry, self.repository, self.tag, self.digest)


def _parse_docker(text: str) -> Reference:
    if not text:
        raise _Bad("empty reference")
    if _IDENTIFIER_RE.fullmatch(text):
        raise _Bad("a 64-character hexadecimal string is an image ID, not a repository name")
    slash = text.find("/")
    first = text[:slash] if slash >= 0 else ""
    if slash < 0 or ("." not in first and ":" not in first and first != "localhost"):
        registry, rest = DEFAULT_REGISTRY, text
    else:
        registry, rest = first, text[slash + 1 :]
    if registry == LEGACY_DEFAULT_REGISTRY:
        registry = DEFAULT_REGISTRY
    name_tag, at, digest = rest.partition("@")
    path, colon, tag = name_tag.partition(":")
    if registry == DEFAULT_REGISTRY and "/" not in path and path:
        path = OFFICIAL_REPO_PREFIX + path
    if colon and not tag:
        raise _Bad('empty tag after ":"')
    if at and not digest:
        raise _Bad('empty digest after "@"')
    _check_parts(registry, path, tag if colon else None, digest if at else None)
    return Reference(registry, path, tag if colon else None, digest if at else None)


def _hint(text: str) -> str:
    for transport in TRANSPORTS:
        prefix = "docker://" if transport == "docker" else f"{transport}:"
        if text.startswith(prefix):
            return f" (a transport prefix like {_q(prefix)} does not belong here)"
    return ""


def parse_reference(text: str) -> Reference:
    """Parse a bare Docker reference ("alpine", "localhost:5000/a/b:t@sha256:...") without a transport."""
    try:
        return _parse_docker(text)
    except _Bad as exc:
        raise InvalidReference(f"invalid reference {_q(text)}: {exc}{_hint(text)}") from None


def parse_repository(text: str) -> Reference:
    """Parse a repository for list-tags and friends: a tag or digest there is a mistake, not a detail."""
    bare = text[len("docker://") :] if text.startswith("docker://") else text
    try:
        ref = _parse_docker(bare)
    except _Bad as exc:
        raise InvalidReference(f"invalid repository name {_q(text)}: {exc}") from None
    if ref.tag is not None or ref.digest is not None:
        raise InvalidReference(f"invalid repository name {_q(text)}: tag or digest not allowed")
    return ref


@dataclass(frozen=True)
class ImageRef:
    """A transport-qualified image name as given on the command line."""

    transport: Transport
    reference: Reference | None = None
    path: str | None = None
    layout_ref: str | None = None

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise InvalidReference(f"unknown transport {_q(str(self.transport))} ({_EXPECTED_TRANSPORTS})")
        if self.transport == "docker":
            if self.reference is None or self.path is not None or self.layout_ref is not None:
                raise InvalidReference("a docker image name needs a reference and no path")
        elif self.reference is not None or not self.path:
            raise InvalidReference(f"a {self.transport} image name needs a path and no docker reference")
        if self.layout_ref is not None and (
            self.transport == "dir" or not re.fullmatch(_LAYOUT_REF, self.layout_ref, re.ASCII)
        ):
            raise InvalidReference(
                f"invalid image reference {_q(self.layout_ref)} in {self.transport} layout"
            )

    def __str__(self) -> str:
        if self.reference is not None:
            return f"docker://{self.reference}"
        text = f"{self.transport}:{self.path}"
        if self.layout_ref is not None:
            text += f":{self.layout_ref}"
        return text


def parse_image(text: str) -> ImageRef:
    """Parse "docker://REF", "oci:PATH[:REF]", "oci-archive:FILE[:REF]" or "dir:PATH".

    Like containers/image on Unix, oci paths end at the first colon: the layout's image name may itself
    contain colons ("oci:out:alpine:3"), paths may not.
    """
    transport, sep, rest = text.partition(":")
    if not sep:
        raise InvalidReference(
            f"invalid image name {_q(text)}: missing transport ({_EXPECTED_TRANSPORTS}){_docker_hint(text)}"
        )
    if transport == "docker":
        if not rest.startswith("//"):
            raise InvalidReference(f'invalid image name {_q(text)}: docker references start with "docker://"')
        try:
            ref = _parse_docker(rest[2:])
        except _Bad as exc:
            raise InvalidReference(f"invalid image name {_q(text)}: {exc}") from None
        return ImageRef("docker", reference=ref)
    if transport in ("oci", "oci-archive"):
        path, _, layout_ref = rest.partition(":")
        if not path:
            raise InvalidReference(f"invalid image name {_q(text)}: missing path after {_q(transport + ':')}")
        if layout_ref and not re.fullmatch(_LAYOUT_REF, layout_ref, re.ASCII):
            raise InvalidReference(
                f"invalid image name {_q(text)}: invalid image reference {_q(layout_ref)}"
                f" in {transport} layout (letters and digits separated by"
                " '.', '_', '-', '--', ':', '@', '+' or '/')"
            )
        kind: Transport = "oci" if transport == "oci" else "oci-archive"
        return ImageRef(kind, path=path, layout_ref=layout_ref or None)
    if transport == "dir":
        if not rest:
            raise InvalidReference(f'invalid image name {_q(text)}: missing path after "dir:"')
        return ImageRef("dir", path=rest)
    raise InvalidReference(
        f"invalid image name {_q(text)}: unknown transport {_q(transport)} ({_EXPECTED_TRANSPORTS})"
        f"{_docker_hint(text)}"
    )


def _docker_hint(text: str) -> str:
    """People often forget "docker://"; say so when the text is a valid Docker reference."""
    try:
        guess = _parse_docker(text)
    except _Bad:
        return ""
    return f"; did you mean {_q('docker://' + guess.familiar)}?"
