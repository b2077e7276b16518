"""Storage-neutral signature model and the ``sigstore-json`` blob form.

A :class:`Signature` is what a cosign-style signature *is*, independent of
where it is stored: the signed payload, the base64 signature, and the
verification material cosign attaches as annotations (certificate, chain,
Rekor bundle).  Registry ``.sig`` layers, OCI referrers and skopeo's ``dir:``
``signature-N`` files are all just encodings of it.

The ``sigstore-json`` form is containers/image's on-disk encoding (what skopeo
writes as ``signature-N``): a NUL byte, ``sigstore-json``, a newline, then
``{"mimeType": ..., "payload": <base64>, "annotations": {...}}``.

This module also holds the small strict-JSON and base64 helpers the other
signing modules share, because signature data is untrusted input and every
parser here must be equally picky.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from regtool.errors import VerificationError

SIMPLESIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
"""MIME type of a cosign simple-signing payload (``.sig`` layer, ``sigstore-json`` mimeType)."""

SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"

BUNDLE_MEDIA_TYPES: tuple[str, ...] = (
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle.v0.3+json",
)
"""Sigstore bundle media types accepted (v0.1 to v0.3, both spellings of v0.3)."""

SIGSTORE_JSON_FORMAT = "sigstore-json"
_SIGSTORE_JSON_PREFIX = b"\x00" + SIGSTORE_JSON_FORMAT.encode() + b"\n"

SourceFormat = Literal["simplesigning", "bundle"]


# --------------------------------------------------------------------------- helpers


def b64decode_std(text: str, what: str) -> bytes:
    """Decode standard padded base64 the way Go's ``base64.StdEncoding`` does.

    Go skips CR and LF inside the input (containers/image signatures can carry
    MIME-style line breaks), and nothing else: any other stray character,
    URL-safe alphabet or missing padding is an error.  ``what`` names the field
    in the error message.
    """
    cleaned = text.replace("\r", "").replace("\n", "")
    try:
        return base64.b64decode(cleaned.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise VerificationError(f"invalid base64 in {what}") from None


def b64encode_std(data: bytes) -> str:
    """Standard padded base64, as text."""
    return base64.b64encode(data).decode("ascii")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON number {name}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def strict_json_loads(data: bytes | str, what: str) -> Any:
    """Parse untrusted JSON strictly: UTF-8 only, no duplicate keys, no NaN/Infinity, no trailing data."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise VerificationError(f"invalid JSON in {what}: {_short(str(exc))}") from None


def expect_object(value: Any, what: str) -> dict[str, Any]:
    """``value`` as a JSON object, else a VerificationError naming ``what``."""
    if not isinstance(value, dict):
        raise VerificationError(f"{what} is not a JSON object")
    return value


def exact_keys(obj: Mapping[str, Any], keys: set[str], what: str) -> None:
    """Require exactly ``keys`` (containers/image's ParanoidUnmarshalJSONObjectExactFields)."""
    for key in sorted(obj):
        if key not in keys:
            raise VerificationError(f"unexpected key {key!r} in {what}")
    for key in sorted(keys):
        if key not in obj:
            raise VerificationError(f"missing key {key!r} in {what}")


def expect_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise VerificationError(f"{what} is not a string")
    return value


def expect_int(value: Any, what: str) -> int:
    # bool is an int subclass in Python; JSON true is not a number.
    if isinstance(value, bool) or not isinstance(value, int):
        raise VerificationError(f"{what} is not an integer")
    return value


_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_GO_ESCAPE_RE = re.compile("[<>&\u2028\u2029]")


def go_json_dumps(value: Any) -> str:
    """Serialise like Go's ``json.Marshal``: compact, raw UTF-8, HTML-safe escapes.

    Dict key order is preserved (Go structs marshal in field order); callers
    sort map-typed values themselves (Go sorts map keys).  The escaped
    characters can only occur inside JSON strings, so replacing them in the
    finished text is safe.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return _GO_ESCAPE_RE.sub(lambda m: _GO_ESCAPES[m.group(0)], text)


def _short(text: str, limit: int = 200) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Signature:
    """One cosign-style signature, independent of how it is stored.

    ``annotations`` holds every annotation as stored (including the ones
    exposed as fields), so re-encoding keeps unknown annotations intact.
    For ``source_format == "bundle"`` the payload is the Sigstore bundle JSON
    and ``signature`` its (message or DSSE) signature, for display only:
    bundles are verified by :func:`regtool.signing.bundle.verify_bundle`.
    """

    payload: bytes
    signature: str
    certificate: str | None = None
    chain: str | None = None
    rekor_bundle: str | None = None
    media_type: str = SIMPLESIGNING_MEDIA_TYPE
    annotations: Mapping[str, str] = field(default_factory=dict)
    source_format: SourceFormat = "simplesigning"

    @classmethod
    def from_annotations(
        cls, payload: bytes, annotations: Mapping[str, str], media_type: str = SIMPLESIGNING_MEDIA_TYPE
    ) -> Signature:
        """Build from a ``.sig``-layer style (payload, annotations) pair.

        Raises VerificationError when the signature annotation is missing.
        """
        sig = annotations.get(SIGNATURE_ANNOTATION)
        if sig is None:
            raise VerificationError(f"missing {SIGNATURE_ANNOTATION} annotation")
        return cls(
            payload=payload,
            signature=sig,
            certificate=annotations.get(CERTIFICATE_ANNOTATION),
            chain=annotations.get(CHAIN_ANNOTATION),
            rekor_bundle=annotations.get(BUNDLE_ANNOTATION),
            media_type=media_type,
            annotations=dict(annotations),
            source_format="simplesigning",
        )

    @classmethod
    def from_bundle_json(cls, bundle_json: bytes) -> Signature:
        """Wrap a Sigstore bundle (new cosign v3 storage) without verifying it."""
        doc = expect_object(strict_json_loads(bundle_json, "Sigstore bundle"), "Sigstore bundle")
        media_type = expect_str(doc.get("mediaType"), "bundle mediaType")
        if media_type not in BUNDLE_MEDIA_TYPES:
            raise VerificationError(f"unsupported Sigstore bundle media type {media_type!r}")
        sig = ""
        msg = doc.get("messageSignature")
        env = doc.get("dsseEnvelope")
        if isinstance(msg, dict) and isinstance(msg.get("signature"), str):
            sig = msg["signature"]
        elif isinstance(env, dict) and isinstance(env.get("signatures"), list) and env["signatures"]:
            first = env["signatures"][0]
            if isinstance(first, dict) and isinstance(first.get("sig"), str):
                sig = first["sig"]
        if not sig:
            raise VerificationError("Sigstore bundle has neither a message signature nor a DSSE signature")
        return cls(payload=bundle_json, signature=sig, media_type=media_type, source_format="bundle")

    def to_annotations(self) -> dict[str, str]:
        """The annotation map to store beside the payload (``.sig`` layer / ``sigstore-json``)."""
        out = dict(self.annotations)
        out[SIGNATURE_ANNOTATION] = self.signature
        for key, value in (
            (CERTIFICATE_ANNOTATION, self.certificate),
            (CHAIN_ANNOTATION, self.chain),
            (BUNDLE_ANNOTATION, self.rekor_bundle),
        ):
            if value is None:
                out.pop(key, None)
            else:
                out[key] = value
        return out


def parse_sigstore_json(data: bytes) -> Signature:
    """Parse a containers/image ``sigstore-json`` blob (skopeo ``dir:`` ``signature-N``).

    Raises VerificationError with the precise reason on any format problem.
    """
    if not data:
        raise VerificationError("empty signature blob")
    if data[0] != 0:
        raise VerificationError(
            f"not a sigstore-json signature (starts with byte {data[0]:#04x}; "
            "GPG simple signing is not supported)"
        )
    head, sep, body = data[1:].partition(b"\n")
    if not sep:
        raise VerificationError("invalid signature format, missing newline")
    if any(b < 32 or b >= 0x7F for b in head):
        raise VerificationError("invalid signature format, non-ASCII format name")
    if head != SIGSTORE_JSON_FORMAT.encode():
        raise VerificationError(f"unsupported signature format {head.decode('ascii')!r}")
    doc = expect_object(strict_json_loads(body, "sigstore-json signature"), "sigstore-json signature")
    exact_keys(doc, {"mimeType", "payload", "annotations"}, "sigstore-json signature")
    mime = expect_str(doc["mimeType"], "sigstore-json mimeType")
    payload = b64decode_std(expect_str(doc["payload"], "sigstore-json payload"), "sigstore-json payload")
    raw_ann = doc["annotations"]
    annotations: dict[str, str] = {}
    if raw_ann is not None:  # Go unmarshals null into a nil map
        for key, value in expect_object(raw_ann, "sigstore-json annotations").items():
            annotations[key] = expect_str(value, f"annotation {key!r}")
    return Signature.from_annotations(payload, annotations, media_type=mime)


def to_sigstore_json(sig: Signature) -> bytes:
    """Encode as skopeo writes ``signature-N``: byte-identical to containers/image's output."""
    if sig.source_format != "simplesigning":
        raise VerificationError("only simple-signing signatures have a sigstore-json form")
    annotations = sig.to_annotations()
    doc = {
        "mimeType": sig.media_type,
        "payload": b64encode_std(sig.payload),
        "annotations": {k: annotations[k] for k in sorted(annotations)},
    }
    return _SIGSTORE_JSON_PREFIX + go_json_dumps(doc).encode("utf-8")
