"""Manifests, descriptors, digests and platforms.

Manifests come from registries and files nobody here controls. Parsing is strict wherever a lax
reading could make two tools disagree about what an image is (CVE-2021-41190), and digests are
computed exactly as containers/image computes them, so they match ``skopeo manifest-digest``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from regtool.errors import InvalidReference, ManifestError, NotFound, UsageError

__all__ = [
    "ACCEPT_MANIFESTS",
    "COSIGN_SIMPLESIGNING",
    "DOCKER_CONFIG",
    "DOCKER_FOREIGN_LAYER",
    "DOCKER_FOREIGN_LAYER_GZIP",
    "DOCKER_LAYER",
    "DOCKER_LAYER_GZIP",
    "DOCKER_LAYER_ZSTD",
    "DOCKER_LIST",
    "DOCKER_V2S1",
    "DOCKER_V2S1_SIGNED",
    "DOCKER_V2S2",
    "IMAGE_MEDIA_TYPES",
    "INDEX_MEDIA_TYPES",
    "MANIFEST_MEDIA_TYPES",
    "MAX_DESCRIPTOR_SIZE",
    "MAX_MANIFEST_SIZE",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_NONDISTRIBUTABLE",
    "OCI_LAYER_NONDISTRIBUTABLE_GZIP",
    "OCI_LAYER_NONDISTRIBUTABLE_ZSTD",
    "OCI_LAYER_ZSTD",
    "OCI_MANIFEST",
    "SCHEMA1_MEDIA_TYPES",
    "Descriptor",
    "InvalidDigest",
    "Manifest",
    "Platform",
    "PlatformNotFound",
    "detect_media_type",
    "is_nondistributable",
    "manifest_digest",
    "parse_manifest",
    "select_platform",
    "sha256_digest",
    "validate_digest",
]

# --- media types -----------------------------------------------------------------------------------

DOCKER_V2S2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_V2S1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_V2S1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar"
DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDISTRIBUTABLE_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDISTRIBUTABLE_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

COSIGN_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"

SCHEMA1_MEDIA_TYPES = frozenset({DOCKER_V2S1, DOCKER_V2S1_SIGNED})
IMAGE_MEDIA_TYPES = frozenset({DOCKER_V2S2, OCI_MANIFEST})
INDEX_MEDIA_TYPES = frozenset({DOCKER_LIST, OCI_INDEX})
MANIFEST_MEDIA_TYPES = SCHEMA1_MEDIA_TYPES | IMAGE_MEDIA_TYPES | INDEX_MEDIA_TYPES

ACCEPT_MANIFESTS: tuple[str, ...] = (
    OCI_INDEX,
    OCI_MANIFEST,
    DOCKER_LIST,
    DOCKER_V2S2,
    DOCKER_V2S1_SIGNED,
    DOCKER_V2S1,
)

MAX_MANIFEST_SIZE = 4 * 1024 * 1024
MAX_DESCRIPTOR_SIZE = 2**53  # beyond this JSON numbers stop being exact in most implementations

_OCI_LAYER_PREFIX = "application/vnd.oci.image.layer."
_DOCKER_LAYER_PREFIX = "application/vnd.docker.image.rootfs."
_OCI_LAYER_TYPES = frozenset(
    base + compression + encryption
    for base in (OCI_LAYER, OCI_LAYER_NONDISTRIBUTABLE)
    for compression in ("", "+gzip", "+zstd")
    for encryption in ("", "+encrypted")
)
_DOCKER_LAYER_TYPES = frozenset(
    {DOCKER_LAYER, DOCKER_LAYER_GZIP, DOCKER_LAYER_ZSTD, DOCKER_FOREIGN_LAYER, DOCKER_FOREIGN_LAYER_GZIP}
)
# RFC 6838 as the OCI descriptor schema spells it.
_MEDIA_TYPE_RE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}", re.ASCII
)


def is_nondistributable(media_type: str) -> bool:
    """Foreign/non-distributable layers are normally not copied between registries."""
    return media_type.startswith(
        ("application/vnd.oci.image.layer.nondistributable.", "application/vnd.docker.image.rootfs.foreign.")
    )


# --- errors ------------------------------------------------------------------------------------------


class InvalidDigest(InvalidReference, ManifestError):
    """A digest string with bad syntax: a usage error on the command line, a bad manifest otherwise."""


class PlatformNotFound(ManifestError, NotFound):
    """An index without an instance for the wanted platform (catchable as NotFound too)."""


def _q(text: str) -> str:
    return json.dumps(text)


def _short(value: Any) -> str:
    """Render an untrusted JSON value for a one-line message, however large or odd it is."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = "<value>"
    return text if len(text) <= 80 else text[:77] + "..."


# --- digests -----------------------------------------------------------------------------------------

_DIGEST_RE = re.compile(r"([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)", re.ASCII)
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_LOWER_HEX_RE = re.compile(r"[a-f0-9]+", re.ASCII)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def validate_digest(d: str) -> str:
    """Check OCI digest syntax; registered algorithms must also have the right hex length."""
    if not isinstance(d, str):
        raise InvalidDigest(f"invalid digest {_short(d)}: not a string")
    match = _DIGEST_RE.fullmatch(d)
    if match is None:
        raise InvalidDigest(f"invalid digest {_q(d)}: expected algorithm:hex, e.g. sha256:<64 hex digits>")
    algorithm, encoded = match.groups()
    want = _DIGEST_HEX_LENGTHS.get(algorithm)
    if want is not None and (len(encoded) != want or not _LOWER_HEX_RE.fullmatch(encoded)):
        raise InvalidDigest(f"invalid digest {_q(d)}: {algorithm} needs {want} lowercase hex digits")
    return d


# --- Go encoding/json emulation (only what manifest_digest needs) -------------------------------------
#
# skopeo decides whether to strip JWS signatures, and what the signed payload is, by decoding the
# manifest with Go's encoding/json: struct fields match keys case-insensitively, null leaves a field
# alone, numbers are only converted where a typed field needs them, and any type mismatch is an error.
# Reproducing those rules is what makes manifest_digest agree with skopeo on hostile input too.


class _GoError(Exception):
    """Go's json.Unmarshal (or libtrust) would have returned an error."""


class _Obj:
    """A JSON object as its ordered key/value pairs (duplicates kept, as Go sees them)."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        self.pairs = pairs


class _Num:
    """A JSON number kept as text: Go converts numbers only when a typed field asks."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _go_loads(data: bytes) -> Any:
    # Go replaces invalid UTF-8 inside strings with U+FFFD; outside strings it is a syntax error either way.
    text = data.decode("utf-8", errors="replace")
    try:
        return json.loads(
            text, object_pairs_hook=_Obj, parse_int=_Num, parse_float=_Num, parse_constant=_reject_constant
        )
    except (ValueError, RecursionError) as exc:
        raise _GoError(f"invalid JSON: {exc}") from None


_GO_FOLD_EXTRA = {"s": "\u017f", "k": "\u212a"}  # ſ and the Kelvin sign fold to s and k in Go


def _fold_equal(key: str, name: str) -> bool:
    """Go's bytes.EqualFold for an ASCII field name."""
    if len(key) != len(name):
        return False
    for a, b in zip(key, name, strict=True):
        if a == b:
            continue
        if not b.isalpha():
            return False
        lower = b.lower()
        if a not in (lower, b.upper()) and a != _GO_FOLD_EXTRA.get(lower):
            return False
    return True


def _go_fields(obj: _Obj, names: tuple[str, ...]) -> dict[str, list[Any]]:
    """Which values Go assigns to each struct field, in order (exact name first, else case-folded)."""
    found: dict[str, list[Any]] = {name: [] for name in names}
    for key, value in obj.pairs:
        if key in found:
            found[key].append(value)
            continue
        for name in names:
            if _fold_equal(key, name):
                found[name].append(value)
                break
    return found


def _go_float64(num: _Num) -> float:
    value = float(num.text)
    if math.isinf(value):
        raise _GoError(f"number {num.text[:40]} out of range")
    return value


def _go_int64(num: _Num) -> int:
    if not re.fullmatch(r"-?[0-9]+", num.text):
        raise _GoError("not an integer")
    try:
        value = int(num.text)
    except ValueError:  # more digits than Python converts; far outside int64 anyway
        raise _GoError("integer out of range") from None
    if not -(2**63) <= value < 2**63:
        raise _GoError("integer out of range")
    return value


def _go_check_interface(value: Any) -> None:
    """Decoding into interface{} turns every number into a float64, which can overflow."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Num):
            _go_float64(item)
        elif isinstance(item, _Obj):
            stack.extend(v for _, v in item.pairs)
        elif isinstance(item, list):
            stack.extend(item)


def _go_string_field(values: list[Any]) -> str:
    result = ""
    for value in values:
        if value is None:
            continue
        if not isinstance(value, str):
            raise _GoError("expected a string")
        result = value
    return result


def _signed_schema1(data: bytes) -> _Obj | None:
    """containers/image's GuessMIMEType == DockerV2Schema1SignedMediaType, returning the parsed document."""
    try:
        doc = _go_loads(data)
        if not isinstance(doc, _Obj):
            return None
        fields = _go_fields(doc, ("mediaType", "schemaVersion", "signatures"))
        media_type = _go_string_field(fields["mediaType"])
        schema_version = 0
        for value in fields["schemaVersion"]:
            if value is None:
                continue
            if not isinstance(value, _Num):
                return None
            schema_version = _go_int64(value)
        signatures: Any = None
        for value in fields["signatures"]:
            _go_check_interface(value)
            signatures = value
    except _GoError:
        return None
    if media_type in (DOCKER_V2S2, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX):
        return None
    return doc if schema_version == 1 and signatures is not None else None


# Only signed schema1 manifests need it: a pattern, compiled (and cached by re) on first use.
_B64URL = rb"(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}==|[A-Za-z0-9_-]{3}=)?"


def _jose_b64decode(text: str) -> bytes:
    """libtrust's joseBase64UrlDecode over Go's base64.URLEncoding."""
    raw = text.encode("utf-8", "surrogatepass").replace(b"\n", b"").replace(b" ", b"")
    remainder = len(raw) % 4
    if remainder == 1:
        raise _GoError("illegal base64url string")
    raw += b"=" * ((4 - remainder) % 4)
    raw = raw.replace(b"\r", b"")  # Go's decoder skips CR and LF
    if not re.fullmatch(_B64URL, raw):
        raise _GoError("illegal base64 data")
    return base64.urlsafe_b64decode(raw)


def _signature_protected(block: Any) -> str:
    """Decode one element of "signatures" into libtrust's jsParsedSignature, returning Protected."""
    if block is None:
        return ""
    if not isinstance(block, _Obj):
        raise _GoError("a signature is not an object")
    fields = _go_fields(block, ("header", "signature", "protected"))
    for header in fields["header"]:
        if header is None:
            continue
        if not isinstance(header, _Obj):
            raise _GoError("a signature header is not an object")
        header_fields = _go_fields(header, ("jwk", "alg", "x5c"))
        _go_string_field(header_fields["alg"])
        for chain in header_fields["x5c"]:
            if chain is None:
                continue
            if not isinstance(chain, list):
                raise _GoError("x5c is not a list")
            _go_string_field(chain)
    _go_string_field(fields["signature"])
    return _go_string_field(fields["protected"])


def _go_float_to_int(value: float) -> int:
    truncated = math.trunc(value)
    # Out-of-range conversions give the minimum int64 on amd64; any negative length fails later anyway.
    return truncated if -(2**63) <= truncated < 2**63 else -(2**63)


def _schema1_payload(data: bytes, doc: _Obj) -> bytes:
    """libtrust.ParsePrettySignature(data, "signatures").Payload(): the manifest as it was signed."""
    sig_values = [value for key, value in doc.pairs if key == "signatures"]  # a Go map: exact key, last wins
    if not sig_values:
        raise _GoError('missing "signatures" key')
    signatures = sig_values[-1]
    if signatures is None:
        blocks: list[Any] = []
    elif isinstance(signatures, list):
        blocks = signatures
    else:
        raise _GoError(f"signatures is {_short_kind(signatures)}, not a list")
    protected_values = [_signature_protected(block) for block in blocks]
    format_length = 0
    format_tail = b""
    for protected in protected_values:
        header = _go_loads(_jose_b64decode(protected))
        if header is not None and not isinstance(header, _Obj):
            raise _GoError("protected header is not an object")
        _go_check_interface(header)
        entries: dict[str, Any] = dict(header.pairs) if header is not None else {}
        length = entries.get("formatLength")
        if not isinstance(length, _Num):
            raise _GoError("missing formatted length")
        tail_text = entries.get("formatTail")
        if not isinstance(tail_text, str):
            raise _GoError("missing formatted tail")
        tail = _jose_b64decode(tail_text)
        length_int = _go_float_to_int(_go_float64(length))
        if format_length == 0:
            format_length = length_int
        elif format_length != length_int:
            raise _GoError("conflicting format length")
        if not format_tail:
            format_tail = tail
        elif format_tail != tail:
            raise _GoError("conflicting format tail")
    if format_length > len(data) or format_length < 0:
        raise _GoError("invalid format length")
    return data[:format_length] + format_tail


def _short_kind(value: Any) -> str:
    if isinstance(value, _Obj):
        return "an object"
    if isinstance(value, _Num):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    return "null" if value is None else "a list"


def manifest_digest(data: bytes) -> str:
    """The digest registries and skopeo give a manifest: signed schema1 is hashed without its signatures."""
    doc = _signed_schema1(data)
    if doc is None:
        return sha256_digest(data)
    try:
        payload = _schema1_payload(data, doc)
    except _GoError as exc:
        raise ManifestError(f"cannot compute the digest of a signed schema1 manifest: {exc}") from None
    return sha256_digest(payload)


# --- platforms ---------------------------------------------------------------------------------------

# containers/image's variant compatibility: most capable first; wanting one accepts those after it.
_VARIANT_COMPAT: dict[str, tuple[str, ...]] = {"arm": ("v8", "v7", "v6", "v5"), "arm64": ("v8",)}

# platform.machine() -> (GOARCH, variant)
_MACHINE_ARCH: dict[str, tuple[str, str | None]] = {
    "x86_64": ("amd64", None),
    "amd64": ("amd64", None),
    "x64": ("amd64", None),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv8l": ("arm", "v8"),
    "armv7l": ("arm", "v7"),
    "armv7": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "armv6": ("arm", "v6"),
    "armv5l": ("arm", "v5"),
    "armv5tel": ("arm", "v5"),
    "armv5tejl": ("arm", "v5"),
    "i386": ("386", None),
    "i486": ("386", None),
    "i586": ("386", None),
    "i686": ("386", None),
    "x86": ("386", None),
    "ppc64le": ("ppc64le", None),
    "ppc64": ("ppc64", None),
    "s390x": ("s390x", None),
    "riscv64": ("riscv64", None),
    "mips": ("mips", None),
    "mipsel": ("mipsle", None),
    "mips64": ("mips64", None),
    "mips64el": ("mips64le", None),
    "loongarch64": ("loong64", None),
}

# Names people type that no index uses.
_ARCH_ALIASES: dict[str, tuple[str, str | None]] = {
    "x86_64": ("amd64", None),
    "x86-64": ("amd64", None),
    "aarch64": ("arm64", None),
    "armhf": ("arm", "v7"),
    "armel": ("arm", "v6"),
    "i386": ("386", None),
    "i686": ("386", None),
}

_PLATFORM_PART = r"[A-Za-z0-9._-]+"  # only --platform / --multi-arch parsing: compiled on first use


def _normalize_arch(arch: str, variant: str | None) -> tuple[str, str | None]:
    arch = arch.lower()
    alias = _ARCH_ALIASES.get(arch)
    if alias is not None:
        arch, implied = alias
        variant = variant if variant is not None else implied
    return arch, variant.lower() if variant else None


def _host_os() -> str:
    if sys.platform.startswith(("win32", "cygwin")):
        return "windows"
    if sys.platform.startswith("freebsd"):
        return "freebsd"
    # Images for macOS do not exist; Linux images are what a Mac runs (in a VM).
    return "linux"


@dataclass(frozen=True)
class Platform:
    """An image platform (GOOS/GOARCH names); as a wanted platform it also knows variant fallbacks."""

    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse "os/arch[/variant]" as typed by a user (so "linux/x86_64" means linux/amd64)."""
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(re.fullmatch(_PLATFORM_PART, part, re.ASCII) for part in parts):
            raise UsageError(f"invalid platform {_q(text)}: expected os/arch[/variant], e.g. linux/arm64/v8")
        arch, variant = _normalize_arch(parts[1], parts[2] if len(parts) == 3 else None)
        return cls(parts[0].lower(), arch, variant)

    @classmethod
    def host(cls, os: str | None = None, arch: str | None = None, variant: str | None = None) -> Platform:
        """The platform to pull for this machine, with overrides as --override-os/arch/variant give them.

        Like containers/image, the CPU variant is only auto-detected when the architecture is too.
        """
        wanted_os = os.lower() if os else _host_os()
        if arch:
            wanted_arch, wanted_variant = _normalize_arch(arch, variant)
        else:
            import platform  # here: importing it costs ~2 ms, and most runs never ask for the host's platform

            machine = platform.machine().lower()
            wanted_arch, detected = _MACHINE_ARCH.get(machine, (machine, None))
            wanted_variant = variant.lower() if variant else detected
        return cls(wanted_os, wanted_arch, wanted_variant)

    @classmethod
    def from_json(cls, d: Any, where: str = "platform") -> Platform:
        if not isinstance(d, dict):
            raise ManifestError(f"invalid {where}: not a JSON object")
        _check_spelling(d, _PLATFORM_FIELDS, where)
        os_name, arch = d.get("os"), d.get("architecture")
        if not isinstance(os_name, str) or not isinstance(arch, str):
            raise ManifestError(f"invalid {where}: os and architecture must be strings")
        variant = _optional_str(d, "variant", where)
        os_version = _optional_str(d, "os.version", where)
        features = d.get("os.features")
        if features is None:
            features = []
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise ManifestError(f"invalid {where}: os.features must be a list of strings")
        return cls(os_name, arch, variant or None, os_version or None, tuple(features))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant:
            out["variant"] = self.variant
        return out

    def variants(self) -> tuple[str, ...]:
        """Instance variants this wanted platform accepts, best first ("" = no variant)."""
        compat = _VARIANT_COMPAT.get(self.architecture, ())
        if self.variant:
            if self.variant in compat:
                return (*compat[compat.index(self.variant) :], "")
            return (self.variant, "")
        return ("", *compat)

    def matches(self, other: Platform) -> bool:
        """Whether an index entry's platform ``other`` can serve this wanted platform."""
        return (
            other.os == self.os
            and other.architecture == self.architecture
            and (other.variant or "") in self.variants()
        )

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


# --- descriptors -------------------------------------------------------------------------------------

_DESCRIPTOR_FIELDS = (
    "mediaType",
    "digest",
    "size",
    "urls",
    "annotations",
    "platform",
    "artifactType",
    "data",
)
_PLATFORM_FIELDS = ("architecture", "os", "os.version", "os.features", "variant", "features")
_MANIFEST_FIELDS = (
    "schemaVersion",
    "mediaType",
    "artifactType",
    "config",
    "layers",
    "manifests",
    "subject",
    "annotations",
    "name",
    "tag",
    "architecture",
    "fsLayers",
    "history",
    "signatures",
)


def _check_spelling(d: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    """Refuse keys Go would read as a known field (it matches case-insensitively) but we would ignore."""
    for key in d:
        if key in known:
            continue
        for name in known:
            if _fold_equal(key, name):
                raise ManifestError(
                    f"rejecting ambiguous manifest: {where} has field {_q(key)},"
                    f" which other tools read as {_q(name)}"
                )


def _optional_str(d: dict[str, Any], key: str, where: str) -> str | None:
    value = d.get(key)
    if value is not None and not isinstance(value, str):
        raise ManifestError(f"invalid {where}: {key} must be a string, not {_short(value)}")
    return value


def _parse_annotations(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ManifestError(f"invalid {where}: annotations must map strings to strings")
    return dict(value)


@dataclass(frozen=True)
class Descriptor:
    """A pointer to content by digest. ``size`` is -1 only for schema1 layers, whose size is unknown."""

    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict, hash=False)
    platform: Platform | None = None
    artifact_type: str | None = None
    data: str | None = None  # OCI embedded content, base64, kept verbatim

    def __post_init__(self) -> None:
        validate_digest(self.digest)
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < -1:
            raise ManifestError(f"invalid descriptor size {_short(self.size)}")

    @classmethod
    def from_json(cls, d: Any, where: str = "descriptor") -> Descriptor:
        """Validate untrusted JSON: every digest and size here later drives a fetch or a write."""
        if not isinstance(d, dict):
            raise ManifestError(f"invalid {where}: not a JSON object")
        _check_spelling(d, _DESCRIPTOR_FIELDS, where)
        media_type = d.get("mediaType")
        if not isinstance(media_type, str) or not _MEDIA_TYPE_RE.fullmatch(media_type):
            raise ManifestError(f"invalid {where}: mediaType {_short(media_type)} is not a media type")
        digest = d.get("digest")
        if not isinstance(digest, str):
            raise ManifestError(f"invalid {where}: digest {_short(digest)} is not a string")
        try:
            validate_digest(digest)
        except InvalidReference as exc:
            raise ManifestError(f"invalid {where}: {exc}") from None
        size = d.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_DESCRIPTOR_SIZE:
            raise ManifestError(f"invalid {where}: size {_short(size)} is not an integer from 0 to 2**53")
        urls = d.get("urls")
        if urls is None:
            urls = []
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ManifestError(f"invalid {where}: urls must be a list of strings")
        platform = d.get("platform")
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            urls=tuple(urls),
            annotations=_parse_annotations(d.get("annotations"), where),
            platform=None if platform is None else Platform.from_json(platform, f"{where} platform"),
            artifact_type=_optional_str(d, "artifactType", where),
            data=_optional_str(d, "data", where),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.data is not None:
            out["data"] = self.data
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out


# --- manifests ---------------------------------------------------------------------------------------


class _DuplicateKey(Exception):
    pass


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _load_json(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_MANIFEST_SIZE:
        raise ManifestError(f"manifest is {len(data)} bytes, over the {MAX_MANIFEST_SIZE}-byte limit")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError("manifest is not valid JSON: it is not UTF-8 text") from None
    try:
        doc = json.loads(text, object_pairs_hook=_unique_object, parse_constant=_reject_constant)
    except _DuplicateKey as exc:
        # Parsers disagree on which duplicate wins, so the manifest means different things to different tools.
        raise ManifestError(f"rejecting ambiguous manifest: duplicate key {_q(str(exc))}") from None
    except json.JSONDecodeError as exc:
        raise ManifestError(
            f"manifest is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ManifestError(f"manifest is not valid JSON: {reason}") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"manifest is not a JSON object but {_short(doc)}")
    return doc


def _family(media_type: str) -> str:
    return DOCKER_V2S1 if media_type in SCHEMA1_MEDIA_TYPES else media_type


def _detect(doc: dict[str, Any], content_type: str | None) -> str:
    _check_spelling(doc, _MANIFEST_FIELDS, "manifest")
    body = doc.get("mediaType")
    if body is not None and not isinstance(body, str):
        raise ManifestError(f"manifest mediaType must be a string, not {_short(body)}")
    if body and body not in MANIFEST_MEDIA_TYPES:
        raise ManifestError(f"unsupported manifest media type {_q(body)}")
    header = content_type.split(";", 1)[0].strip().lower() if content_type else ""
    served = header if header in MANIFEST_MEDIA_TYPES else None
    if body and served and _family(body) != _family(served):
        raise ManifestError(
            f"manifest media type mismatch: the manifest says {_q(body)} but was served as {_q(served)}"
            " (CVE-2021-41190)"
        )
    declared = body or served
    version = doc.get("schemaVersion")
    if version is None:
        raise ManifestError("manifest has no schemaVersion")
    if isinstance(version, bool) or version not in (1, 2):
        raise ManifestError(f"unsupported manifest schemaVersion {_short(version)}")
    if version == 1:
        if declared is not None and declared not in SCHEMA1_MEDIA_TYPES:
            raise ManifestError(f"manifest has schemaVersion 1 but media type {_q(declared)}")
        return DOCKER_V2S1_SIGNED if doc.get("signatures") is not None else DOCKER_V2S1
    if declared in SCHEMA1_MEDIA_TYPES:
        raise ManifestError(f"manifest has schemaVersion 2 but media type {_q(declared)}")
    if declared is not None:
        return declared
    if doc.get("manifests") is not None:
        return OCI_INDEX
    config = doc.get("config")
    if config is not None:
        # Docker manifests must declare a mediaType, but a Docker config gives one away (containers/image).
        if isinstance(config, dict) and config.get("mediaType") == DOCKER_CONFIG:
            return DOCKER_V2S2
        return OCI_MANIFEST
    if doc.get("layers") is not None:
        return OCI_MANIFEST
    raise ManifestError("cannot tell what kind of manifest this is: it has no mediaType, manifests or config")


_ALLOWED_FIELDS = {
    DOCKER_V2S1: frozenset({"fsLayers", "history"}),
    DOCKER_V2S1_SIGNED: frozenset({"fsLayers", "history"}),
    DOCKER_V2S2: frozenset({"config", "layers"}),
    OCI_MANIFEST: frozenset({"config", "layers"}),
    DOCKER_LIST: frozenset({"manifests"}),
    OCI_INDEX: frozenset({"manifests"}),
}


def _check_unambiguous(doc: dict[str, Any], media_type: str) -> None:
    """A document that is both an index and an image must not pass as either (CVE-2021-41190)."""
    allowed = _ALLOWED_FIELDS[media_type]
    unexpected = [
        name
        for name in ("config", "fsLayers", "history", "layers", "manifests")
        if doc.get(name) is not None and name not in allowed
    ]
    if unexpected:
        names = ", ".join(_q(name) for name in unexpected)
        raise ManifestError(
            f"rejecting ambiguous manifest: unexpected field(s) {names} in a {media_type} (CVE-2021-41190)"
        )


def detect_media_type(data: bytes, content_type: str | None = None) -> str:
    """The manifest's media type, from its body and the Content-Type it came with, refusing ambiguity.

    A missing mediaType or a generic Content-Type (application/json, text/plain, ...) is fine: the
    structure decides. A known body type contradicting a known Content-Type is refused.
    """
    doc = _load_json(data)
    media_type = _detect(doc, content_type)
    _check_unambiguous(doc, media_type)
    return media_type


def _check_layer_type(media_type: str, where: str) -> None:
    """Unknown types are fine for artifacts, but not inside the OCI and Docker layer namespaces.

    A layer claiming e.g. "application/vnd.oci.image.layer.v1.tar+unknown" cannot be unpacked by anyone.
    """
    if media_type.startswith(_OCI_LAYER_PREFIX) and media_type not in _OCI_LAYER_TYPES:
        raise ManifestError(f"unsupported OCI layer media type {_q(media_type)} in {where}")
    if media_type.startswith(_DOCKER_LAYER_PREFIX) and media_type not in _DOCKER_LAYER_TYPES:
        raise ManifestError(f"unsupported Docker layer media type {_q(media_type)} in {where}")


def _descriptor_list(value: Any, name: str) -> list[Descriptor]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ManifestError(f"invalid manifest: {name} must be a list")
    return [Descriptor.from_json(item, f"{name}[{i}]") for i, item in enumerate(value)]


def _schema1_layers(doc: dict[str, Any]) -> list[Descriptor]:
    fs_layers = doc.get("fsLayers")
    history = doc.get("history")
    if history is None:
        history = []
    if not isinstance(fs_layers, list):
        raise ManifestError("invalid schema1 manifest: fsLayers must be a list")
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise ManifestError("invalid schema1 manifest: history must be a list of objects")
    if len(history) != len(fs_layers):
        raise ManifestError(
            f"invalid schema1 manifest: {len(history)} history entries for {len(fs_layers)} fsLayers"
        )
    for key in ("name", "tag", "architecture"):
        _optional_str(doc, key, "schema1 manifest")
    layers = []
    for i, entry in enumerate(fs_layers):
        blob_sum = entry.get("blobSum") if isinstance(entry, dict) else None
        if not isinstance(blob_sum, str):
            raise ManifestError(f"invalid schema1 manifest: fsLayers[{i}] has no blobSum string")
        try:
            validate_digest(blob_sum)
        except InvalidReference as exc:
            raise ManifestError(f"invalid schema1 manifest: fsLayers[{i}].blobSum: {exc}") from None
        layers.append(Descriptor(DOCKER_LAYER_GZIP, blob_sum, -1))
    layers.reverse()  # fsLayers lists the top layer first; everything else lists the base first
    return layers


@dataclass(frozen=True, eq=False)
class Manifest:
    """A parsed, validated manifest; ``raw`` stays authoritative (it is what ``digest`` hashes)."""

    media_type: str
    raw: bytes = field(repr=False)
    digest: str
    json: dict[str, Any] = field(repr=False)
    schema_version: int
    config: Descriptor | None = None
    layers: list[Descriptor] = field(default_factory=list, repr=False)
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict, repr=False)
    manifests: list[Descriptor] = field(default_factory=list, repr=False)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES

    @property
    def is_schema1(self) -> bool:
        return self.media_type in SCHEMA1_MEDIA_TYPES

    @property
    def size(self) -> int:
        return len(self.raw)

    def children(self) -> list[Descriptor]:
        """An index's instances; empty for anything else."""
        return list(self.manifests)

    def descriptor(self) -> Descriptor:
        """How an index, referrer or tag would point at this manifest."""
        return Descriptor(self.media_type, self.digest, len(self.raw), artifact_type=self.artifact_type)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Manifest):
            return NotImplemented
        return self.media_type == other.media_type and self.raw == other.raw

    def __hash__(self) -> int:
        return hash((self.media_type, self.raw))


def parse_manifest(data: bytes, content_type: str | None = None) -> Manifest:
    """Parse and validate a manifest of any supported kind; every failure is a one-line ManifestError."""
    doc = _load_json(data)
    media_type = _detect(doc, content_type)
    _check_unambiguous(doc, media_type)
    version: int = doc["schemaVersion"]
    if media_type in SCHEMA1_MEDIA_TYPES:
        layers = _schema1_layers(doc)
        return Manifest(media_type, data, manifest_digest(data), doc, version, layers=layers)
    annotations = _parse_annotations(doc.get("annotations"), "manifest")
    artifact_type = _optional_str(doc, "artifactType", "manifest")
    subject_json = doc.get("subject")
    subject = None if subject_json is None else Descriptor.from_json(subject_json, "subject")
    config: Descriptor | None = None
    layers = []
    children = []
    if media_type in INDEX_MEDIA_TYPES:
        if doc.get("manifests") is None:
            raise ManifestError(f"invalid manifest: a {media_type} needs a manifests list")
        children = _descriptor_list(doc.get("manifests"), "manifests")
    else:
        config_json = doc.get("config")
        if config_json is None:
            raise ManifestError(f"invalid manifest: a {media_type} needs a config descriptor")
        config = Descriptor.from_json(config_json, "config")
        layers = _descriptor_list(doc.get("layers"), "layers")
        for i, layer in enumerate(layers):
            _check_layer_type(layer.media_type, f"layers[{i}]")
    return Manifest(
        media_type,
        data,
        manifest_digest(data),
        doc,
        version,
        config=config,
        layers=layers,
        subject=subject,
        artifact_type=artifact_type,
        annotations=annotations,
        manifests=children,
    )


def select_platform(index: Manifest, want: Platform) -> Descriptor:
    """Pick the instance containers/image would: exact variant first, then compatible ones in order."""
    if not index.is_index:
        raise ManifestError(f"cannot choose a platform: {index.media_type} is not an index")
    children = index.children()
    for variant in want.variants():
        for child in children:
            p = child.platform
            if (
                p is not None
                and p.os == want.os
                and p.architecture == want.architecture
                and (p.variant or "") == variant
            ):
                return child
    available: list[str] = []
    for child in children:
        if child.platform is not None and str(child.platform) not in available:
            available.append(str(child.platform))
    kind = "manifest list" if index.media_type == DOCKER_LIST else "image index"
    listed = ", ".join(available) if available else "none listed"
    raise PlatformNotFound(f"no image found in {kind} for platform {want} (available: {listed})")
