"""The cosign "simple signing" payload, parsed with containers/image's strict rules.

What cosign signs for an image::

    {"critical":{"identity":{"docker-reference":"<name>"},
                 "image":{"docker-manifest-digest":"sha256:..."},
                 "type":"cosign container image signature"},
     "optional":null}

cosign writes ``"optional": null`` when no annotations were given (its Go
struct field is a map without ``omitempty``); skopeo writes an object with
``creator`` and ``timestamp``.  containers/image requires both top-level keys
to be present, exactly those keys in ``critical``, ``identity`` and ``image``,
accepts ``null`` or any object for ``optional`` (only checking the types of
``creator``: string and ``timestamp``: integral number), and rejects
duplicate keys and trailing data.  :func:`parse_payload` applies the same
rules; :func:`make_payload` emits the exact bytes cosign/skopeo would.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from regtool.errors import UsageError, VerificationError
from regtool.signing.models import exact_keys, expect_object, expect_str, go_json_dumps, strict_json_loads

SIMPLESIGNING_TYPE = "cosign container image signature"

_DIGEST_RE = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")
_DIGEST_HEX_LEN = {"sha256": 64, "sha384": 96, "sha512": 128}
_HEX_RE = re.compile(r"^[a-f0-9]+$")


@dataclass(frozen=True)
class Payload:
    """A parsed (not yet trusted unless returned by verification) simple-signing payload."""

    docker_reference: str
    manifest_digest: str
    optional: Mapping[str, Any] | None
    creator: str | None = None
    timestamp: int | None = None


def check_digest(value: str) -> str | None:
    """Why ``value`` is not a valid ``algo:hex`` digest (as opencontainers/go-digest parses it), or None."""
    m = _DIGEST_RE.match(value)
    if not m:
        return "invalid digest format"
    algo, enc = m.groups()
    if algo not in _DIGEST_HEX_LEN:
        return f"unsupported digest algorithm {algo!r}"
    if len(enc) != _DIGEST_HEX_LEN[algo] or not _HEX_RE.match(enc):
        return "invalid digest length or characters"
    return None


def make_payload(
    docker_reference: str, manifest_digest: str, optional: Mapping[str, Any] | None = None
) -> bytes:
    """Serialise a payload byte-for-byte as cosign (``optional=None``) or skopeo (a dict) would.

    ``optional`` keys are sorted like a Go map; ``None`` gives ``"optional":null``.
    """
    if not docker_reference:
        raise UsageError("simple-signing payload needs a docker reference")
    problem = check_digest(manifest_digest)
    if problem:
        raise UsageError(f"invalid manifest digest {manifest_digest!r}: {problem}")
    opt: dict[str, Any] | None = None
    if optional is not None:
        opt = {}
        for key in sorted(optional):
            if not isinstance(key, str):
                raise UsageError("payload optional keys must be strings")
            opt[key] = optional[key]
        if "creator" in opt and not isinstance(opt["creator"], str):
            raise UsageError("payload optional.creator must be a string")
        if "timestamp" in opt and (
            isinstance(opt["timestamp"], bool) or not isinstance(opt["timestamp"], int)
        ):
            raise UsageError("payload optional.timestamp must be an integer")
    doc = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": manifest_digest},
            "type": SIMPLESIGNING_TYPE,
        },
        "optional": opt,
    }
    try:
        return go_json_dumps(doc).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise UsageError(f"payload optional values must be JSON-serialisable: {exc}") from None


def parse_payload(data: bytes) -> Payload:
    """Parse a payload with containers/image's strict rules; VerificationError names the first problem."""
    doc = expect_object(strict_json_loads(data, "signature payload"), "signature payload")
    exact_keys(doc, {"critical", "optional"}, "signature payload")

    optional_raw = doc["optional"]
    optional: dict[str, Any] | None = None
    creator: str | None = None
    timestamp: int | None = None
    if optional_raw is not None:
        optional = expect_object(optional_raw, "payload optional")
        if "creator" in optional:
            creator = expect_str(optional["creator"], "payload optional.creator")
        if "timestamp" in optional:
            ts = optional["timestamp"]
            if isinstance(ts, bool) or not isinstance(ts, (int, float)):
                raise VerificationError("payload optional.timestamp is not a number")
            if isinstance(ts, float):
                if not ts.is_integer():
                    raise VerificationError("payload optional.timestamp is not an integer")
                ts = int(ts)
            if not -(2**63) <= ts < 2**63:
                raise VerificationError("payload optional.timestamp is out of range")
            timestamp = ts

    critical = expect_object(doc["critical"], "payload critical")
    exact_keys(critical, {"type", "image", "identity"}, "payload critical")
    sig_type = expect_str(critical["type"], "payload critical.type")
    if sig_type != SIMPLESIGNING_TYPE:
        raise VerificationError(f"unrecognized signature type {sig_type!r}")

    image = expect_object(critical["image"], "payload critical.image")
    exact_keys(image, {"docker-manifest-digest"}, "payload critical.image")
    digest = expect_str(image["docker-manifest-digest"], "payload docker-manifest-digest")
    problem = check_digest(digest)
    if problem:
        raise VerificationError(f"invalid docker-manifest-digest value {digest!r}: {problem}")

    identity = expect_object(critical["identity"], "payload critical.identity")
    exact_keys(identity, {"docker-reference"}, "payload critical.identity")
    reference = expect_str(identity["docker-reference"], "payload docker-reference")

    return Payload(
        docker_reference=reference,
        manifest_digest=digest,
        optional=optional,
        creator=creator,
        timestamp=timestamp,
    )
