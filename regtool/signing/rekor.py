"""Offline verification of cosign's Rekor "bundle" annotation (a signed entry timestamp).

The ``dev.sigstore.cosign/bundle`` annotation is::

    {"SignedEntryTimestamp": "<b64 signature>",
     "Payload": {"body": "<b64 entry>", "integratedTime": N, "logIndex": N, "logID": "<hex>"}}

The SET is the log's signature over the RFC 8785 canonical JSON of
``Payload``.  A valid SET proves Rekor promised to log ``body`` at
``integratedTime``; the body (a ``hashedrekord`` v0.0.1 entry) must then
describe *this* signature: same signature bytes, same payload hash, same key
or certificate.  This is containers/image's ``VerifyRekorSET`` check, plus
cosign's rule that the entry's log ID must name one of the trusted log keys.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from cryptography.hazmat.primitives import serialization

from regtool.errors import UsageError, VerificationError
from regtool.signing.keys import (
    PublicKey,
    check_public_key,
    load_public_keys,
    pem_blocks,
    public_key_der,
    verify_raw,
)
from regtool.signing.models import (
    b64decode_std,
    exact_keys,
    expect_int,
    expect_object,
    expect_str,
    strict_json_loads,
)

HASHEDREKORD_KIND = "hashedrekord"
HASHEDREKORD_VERSION = "0.0.1"


@dataclass(frozen=True)
class RekorKey:
    """A trusted transparency-log key; ``log_id`` is the hex SHA-256 of its PKIX DER."""

    public_key: PublicKey
    log_id: str
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    @classmethod
    def from_public_key(
        cls, key: PublicKey, valid_from: datetime | None = None, valid_until: datetime | None = None
    ) -> RekorKey:
        return cls(key, hashlib.sha256(public_key_der(key)).hexdigest(), valid_from, valid_until)

    def valid_at(self, when: datetime) -> bool:
        if self.valid_from is not None and when < self.valid_from:
            return False
        return not (self.valid_until is not None and when > self.valid_until)


@dataclass(frozen=True)
class RekorEntry:
    """What a verified SET vouches for."""

    integrated_time: int
    log_index: int
    log_id: str
    kind: str
    api_version: str

    @property
    def integrated_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.integrated_time, tz=timezone.utc)


def _parse_time(value: Any, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise UsageError(f"trusted root: {what} is not a timestamp string")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"trusted root: bad timestamp {value!r} in {what}") from None


def rekor_keys_from_trusted_root(data: bytes) -> list[RekorKey]:
    """The ``tlogs`` keys of a Sigstore trusted-root JSON document, with their validity windows."""
    try:
        doc = json.loads(data)
    except ValueError:
        raise UsageError("trusted root is not JSON") from None
    tlogs = doc.get("tlogs") if isinstance(doc, dict) else None
    if not isinstance(tlogs, list):
        raise UsageError("trusted root has no tlogs list")
    out: list[RekorKey] = []
    for i, tlog in enumerate(tlogs):
        pk = tlog.get("publicKey") if isinstance(tlog, dict) else None
        if not isinstance(pk, dict) or not isinstance(pk.get("rawBytes"), str):
            raise UsageError(f"trusted root: tlogs[{i}] has no publicKey.rawBytes")
        try:
            key = serialization.load_der_public_key(b64decode_std(pk["rawBytes"], "trusted root key"))
        except (VerificationError, ValueError):
            raise UsageError(f"trusted root: tlogs[{i}] public key does not parse") from None
        valid = pk.get("validFor")
        if not isinstance(valid, dict):
            valid = {}
        out.append(
            RekorKey.from_public_key(
                check_public_key(key),
                _parse_time(valid.get("start"), f"tlogs[{i}].validFor.start"),
                _parse_time(valid.get("end"), f"tlogs[{i}].validFor.end"),
            )
        )
    if not out:
        raise UsageError("trusted root lists no transparency logs")
    return out


def load_rekor_keys(data: bytes) -> list[RekorKey]:
    """Rekor keys from PEM (one or more ``PUBLIC KEY`` blocks) or a trusted-root JSON document."""
    if data.lstrip().startswith(b"{"):
        return rekor_keys_from_trusted_root(data)
    return [RekorKey.from_public_key(k) for k in load_public_keys(data)]


def _canonical_payload(body: str, integrated_time: int, log_index: int, log_id: str) -> bytes:
    # RFC 8785 for this fixed shape: keys in code-unit order, compact, raw UTF-8 strings,
    # integers in shortest form.  Both strings are base64/hex here, so no escaping applies.
    return json.dumps(
        {"body": body, "integratedTime": integrated_time, "logID": log_id, "logIndex": log_index},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")


def _der_of_pem(pem: bytes | str, what: str) -> bytes:
    try:
        blocks = pem_blocks(pem)
    except UsageError:
        raise VerificationError(f"{what} is not valid PEM") from None
    if len(blocks) != 1:
        raise VerificationError(f"{what} must contain exactly one PEM block")
    return blocks[0][1]


def verify_rekor_bundle(
    bundle: str | bytes,
    keys: Sequence[RekorKey],
    *,
    signature_b64: str,
    payload: bytes,
    signer_pem: bytes | str,
) -> RekorEntry:
    """Verify a cosign Rekor bundle annotation and that its entry describes this signature.

    ``signer_pem`` is the trusted public key (PKIX PEM) or the signing
    certificate (PEM) the entry must name.  Returns the verified entry
    (``integrated_time`` is the signing time vouched for by the log).
    Raises VerificationError with a one-line reason.
    """
    if not keys:
        raise UsageError("no Rekor public keys configured")
    doc = expect_object(strict_json_loads(bundle, "Rekor bundle"), "Rekor bundle")
    exact_keys(doc, {"SignedEntryTimestamp", "Payload"}, "Rekor bundle")
    set_sig = b64decode_std(
        expect_str(doc["SignedEntryTimestamp"], "Rekor SignedEntryTimestamp"), "Rekor SET"
    )
    pl = expect_object(doc["Payload"], "Rekor bundle Payload")
    exact_keys(pl, {"body", "integratedTime", "logIndex", "logID"}, "Rekor bundle Payload")
    body_b64 = expect_str(pl["body"], "Rekor body")
    integrated_time = expect_int(pl["integratedTime"], "Rekor integratedTime")
    log_index = expect_int(pl["logIndex"], "Rekor logIndex")
    log_id = expect_str(pl["logID"], "Rekor logID")

    # == the SET signature
    canonical = _canonical_payload(body_b64, integrated_time, log_index, log_id)
    candidates = [k for k in keys if k.log_id == log_id.lower()]
    if not candidates:
        raise VerificationError(f"Rekor log ID {log_id[:16]}... does not match any trusted Rekor key")
    when = datetime.fromtimestamp(integrated_time, tz=timezone.utc)
    candidates = [k for k in candidates if k.valid_at(when)]
    if not candidates:
        raise VerificationError("trusted Rekor key was not valid at the entry's integrated time")
    if not any(verify_raw(k.public_key, set_sig, canonical) for k in candidates):
        raise VerificationError("cryptographic signature verification of Rekor SET failed")

    # == the entry body must describe this signature
    body = expect_object(
        strict_json_loads(b64decode_std(body_b64, "Rekor body"), "Rekor entry body"), "Rekor entry body"
    )
    kind = expect_str(body.get("kind"), "Rekor entry kind")
    api_version = expect_str(body.get("apiVersion"), "Rekor entry apiVersion")
    if kind != HASHEDREKORD_KIND:
        raise VerificationError(f"unexpected Rekor entry kind {kind!r}")
    if api_version != HASHEDREKORD_VERSION:
        raise VerificationError(f"unsupported hashedrekord version {api_version!r}")
    spec = expect_object(body.get("spec"), "hashedrekord spec")
    data = expect_object(spec.get("data"), "hashedrekord spec.data")
    hash_obj = expect_object(data.get("hash"), "hashedrekord spec.data.hash")
    sig_obj = expect_object(spec.get("signature"), "hashedrekord spec.signature")
    pk_obj = expect_object(sig_obj.get("publicKey"), "hashedrekord spec.signature.publicKey")

    rekor_sig = b64decode_std(expect_str(sig_obj.get("content"), "hashedrekord signature"), "Rekor signature")
    if rekor_sig != b64decode_std(signature_b64, "signature annotation"):
        raise VerificationError("signature in Rekor SET does not match")

    rekor_key_pem = b64decode_std(
        expect_str(pk_obj.get("content"), "hashedrekord publicKey"), "Rekor publicKey"
    )
    if _der_of_pem(rekor_key_pem, "publicKey in Rekor SET") != _der_of_pem(signer_pem, "signer"):
        raise VerificationError("publicKey in Rekor SET does not match")

    if expect_str(hash_obj.get("algorithm"), "hashedrekord hash algorithm") != "sha256":
        raise VerificationError(f"unexpected hash algorithm {hash_obj.get('algorithm')!r} in Rekor SET")
    if expect_str(hash_obj.get("value"), "hashedrekord hash value") != hashlib.sha256(payload).hexdigest():
        raise VerificationError("payload in Rekor SET does not match")

    return RekorEntry(integrated_time, log_index, log_id.lower(), kind, api_version)
