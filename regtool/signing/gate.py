"""Verify an image's stored signatures, and the gate copy and sync put in front of a transfer.

:func:`verify_image` finds every signature stored for a manifest (legacy
``.sig`` layers and ``dir:`` ``signature-N`` files, Sigstore bundle
referrers; see :mod:`regtool.signing.storage`) and verifies each against a
:class:`~regtool.signing.verify.VerifyPolicy`, reporting accepted ones
and the reason each other one was rejected.  :func:`require_signed` turns
that into a yes/no: it returns the accepted signatures or raises
:class:`~regtool.errors.VerificationError` naming every rejection.

Legacy signatures are verified by :func:`regtool.signing.verify.verify_signature`.
Bundles: keyless ones through sigstore-python (:func:`regtool.signing.bundle.verify_bundle`,
against a Sigstore trusted root); key-signed ones (cosign v3 ``sign --key``
writes a bundle with a public-key hint, which sigstore-python cannot load)
by :func:`verify_key_bundle`: the DSSE signature under the policy's keys,
the in-toto statement's subject digest and predicate, and the Rekor entry's
signed timestamp when there is one (or when the policy requires one).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from cryptography import x509

from regtool.errors import RegtoolError, UsageError, VerificationError
from regtool.manifest import Manifest
from regtool.signing.bundle import COSIGN_SIGN_PREDICATE, IN_TOTO_PAYLOAD_TYPE, IN_TOTO_STATEMENTS
from regtool.signing.keys import check_public_key, key_fingerprint, verify_raw
from regtool.signing.models import (
    BUNDLE_MEDIA_TYPES,
    b64decode_std,
    expect_int,
    expect_object,
    expect_str,
    strict_json_loads,
)
from regtool.signing.rekor import RekorKey, rekor_keys_from_trusted_root
from regtool.signing.sign import dsse_pae
from regtool.signing.storage import FoundSignature, find_signatures
from regtool.signing.verify import Rejection, VerifiedSignature, VerifyPolicy, verify_signature
from regtool.transports.base import ImageSource

log = logging.getLogger("regtool.signing")

MAX_INDEX_DEPTH = 4

__all__ = [
    "ManifestVerification",
    "SigstoreTrust",
    "public_good_trusted_root",
    "require_signed",
    "verify_found",
    "verify_image",
    "verify_key_bundle",
    "verify_manifest",
]


@dataclass(frozen=True)
class SigstoreTrust:
    """Where Sigstore trust comes from, beyond what the :class:`VerifyPolicy` holds.

    ``trusted_root``: a trusted-root JSON file for keyless bundles (private
    deployments, offline use); ``public_good``: otherwise use the public-good
    root embedded in sigstore-python (also the default source of Rekor keys
    for key-signed signatures that carry a log entry); ``ignore_tlog``:
    cosign's ``--insecure-ignore-tlog``, log entries of key-signed
    signatures are not checked.
    """

    trusted_root: str | None = None
    public_good: bool = True
    ignore_tlog: bool = False


@dataclass
class ManifestVerification:
    """The verdicts for one manifest: accepted ``(source, signature)`` pairs and rejections."""

    digest: str
    accepted: list[tuple[str, VerifiedSignature]] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.accepted)

    def reason(self) -> str:
        """Why nothing was accepted, in one line."""
        if not self.rejected:
            return f"no signatures found for {self.digest}"
        parts = "; ".join(f"{r.source}: {r.reason}" for r in self.rejected)
        return f"no accepted signature for {self.digest} ({len(self.rejected)} rejected: {parts})"


# --------------------------------------------------------------------------- Sigstore roots


_PUBLIC_GOOD: list[bytes] = []


def public_good_trusted_root() -> bytes:
    """The public-good trusted-root JSON as sigstore-python has it (embedded or TUF-cached; no network)."""
    if _PUBLIC_GOOD:
        return _PUBLIC_GOOD[0]
    try:
        from sigstore.models import ClientTrustConfig
    except ImportError:
        raise UsageError(
            "no Sigstore trusted root: pass --trusted-root FILE (or install 'regtool[keyless]' for the "
            "public-good root)"
        ) from None
    sigstore_log = logging.getLogger("sigstore")
    level = sigstore_log.level
    sigstore_log.setLevel(logging.ERROR)  # "loaded in offline mode" is expected here
    try:
        root = ClientTrustConfig.production(offline=True).trusted_root
        inner = getattr(root, "_inner", None)
        data = str(inner.to_json()).encode() if inner is not None else b""
    except Exception as exc:  # sigstore's TUF and model errors
        raise UsageError(f"cannot load the public-good Sigstore trusted root: {' '.join(str(exc).split())}") from None
    finally:
        sigstore_log.setLevel(level)
    if not data:
        raise UsageError("cannot load the public-good Sigstore trusted root; pass --trusted-root FILE")
    _PUBLIC_GOOD.append(data)
    return data


def _default_rekor_keys(trust: SigstoreTrust) -> tuple[RekorKey, ...]:
    if trust.trusted_root is not None:
        with open(trust.trusted_root, "rb") as fh:
            return tuple(rekor_keys_from_trusted_root(fh.read()))
    if trust.public_good:
        return tuple(rekor_keys_from_trusted_root(public_good_trusted_root()))
    return ()


# --------------------------------------------------------------------------- key-signed bundles


def _statement_check(payload: bytes, digest: str) -> dict[str, Any]:
    statement = expect_object(strict_json_loads(payload, "in-toto statement"), "in-toto statement")
    if statement.get("_type") not in IN_TOTO_STATEMENTS:
        raise VerificationError(f"unknown in-toto statement type {statement.get('_type')!r}")
    if statement.get("predicateType") != COSIGN_SIGN_PREDICATE:
        raise VerificationError(
            f"in-toto predicate type {statement.get('predicateType')!r} is not {COSIGN_SIGN_PREDICATE!r}"
        )
    subjects = statement.get("subject")
    want = digest.split(":", 1)[1]
    if not isinstance(subjects, list) or not any(
        isinstance(s, dict) and isinstance(s.get("digest"), dict) and s["digest"].get("sha256") == want
        for s in subjects
    ):
        raise VerificationError(f"no in-toto subject has digest {digest}")
    return statement


def _subject_name(statement: Mapping[str, Any], digest: str) -> str:
    want = digest.split(":", 1)[1]
    for s in statement.get("subject") or []:
        if isinstance(s, dict) and isinstance(s.get("digest"), dict) and s["digest"].get("sha256") == want:
            name = s.get("name")
            return name if isinstance(name, str) else ""
    return ""


def _check_bundle_identity(policy: VerifyPolicy, name: str) -> None:
    """Bundles name a repository only: ``--signed-identity`` is matched by repository."""
    if policy.signed_identity is None:
        return
    from regtool.reference import parse_reference

    if policy.identity_match == "exact":
        raise VerificationError("a Sigstore bundle names no tag, so it cannot match an exact signed identity")
    want = parse_reference(policy.signed_identity).name
    got = ""
    if name:
        try:
            got = parse_reference(name).name
        except RegtoolError:
            raise VerificationError(f"invalid subject name {name!r} in the in-toto statement") from None
    if got != want:
        raise VerificationError(f"bundle for repository {name!r} is not accepted for {policy.signed_identity!r}")


def _int64(value: Any, what: str) -> int:
    """A protobuf-JSON int64: a decimal string (or, leniently, a JSON integer)."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return expect_int(value, what)


def _check_tlog_entry(
    entry: Mapping[str, Any], keys: Sequence[RekorKey], payload: bytes, signatures: Sequence[str]
) -> tuple[int, int]:
    """Verify a bundle tlog entry's signed entry timestamp and that its body logs this envelope."""
    promise = entry.get("inclusionPromise")
    if not isinstance(promise, dict):
        raise VerificationError("transparency log entry has no inclusion promise (signed entry timestamp)")
    body_b64 = expect_str(entry.get("canonicalizedBody"), "tlog canonicalizedBody")
    integrated = _int64(entry.get("integratedTime"), "tlog integratedTime")
    index = _int64(entry.get("logIndex"), "tlog logIndex")
    log_id_obj = expect_object(entry.get("logId"), "tlog logId")
    log_id = b64decode_std(expect_str(log_id_obj.get("keyId"), "tlog logId.keyId"), "tlog log ID").hex()
    canonical = json.dumps(
        {"body": body_b64, "integratedTime": integrated, "logID": log_id, "logIndex": index},
        separators=(",", ":"),
    ).encode()
    candidates = [k for k in keys if k.log_id == log_id]
    if not candidates:
        raise VerificationError(f"Rekor log ID {log_id[:16]}... does not match any trusted Rekor key")
    when = datetime.fromtimestamp(integrated, tz=timezone.utc)
    candidates = [k for k in candidates if k.valid_at(when)]
    set_sig = b64decode_std(expect_str(promise.get("signedEntryTimestamp"), "tlog SET"), "tlog SET")
    if not any(verify_raw(k.public_key, set_sig, canonical) for k in candidates):
        raise VerificationError("cryptographic signature verification of Rekor SET failed")
    body = expect_object(strict_json_loads(b64decode_std(body_b64, "tlog body"), "Rekor entry body"), "Rekor body")
    if body.get("kind") != "dsse":
        raise VerificationError(f"unexpected Rekor entry kind {body.get('kind')!r} for a DSSE bundle")
    spec = expect_object(body.get("spec"), "dsse spec")
    payload_hash = expect_object(spec.get("payloadHash"), "dsse payloadHash")
    if payload_hash.get("value") != hashlib.sha256(payload).hexdigest():
        raise VerificationError("payload in Rekor entry does not match")
    logged = [s.get("signature") for s in spec.get("signatures") or [] if isinstance(s, dict)]
    if not any(s in logged for s in signatures):
        raise VerificationError("signature in Rekor entry does not match")
    return integrated, index


def verify_key_bundle(
    bundle_json: bytes, digest: str, policy: VerifyPolicy, *, check_tlog: bool = True
) -> VerifiedSignature:
    """Verify a key-signed Sigstore bundle (cosign v3 ``sign --key``) for manifest ``digest``."""
    if policy.mode != "key":
        raise UsageError("verify_key_bundle needs a public-key policy")
    doc = expect_object(strict_json_loads(bundle_json, "Sigstore bundle"), "Sigstore bundle")
    if doc.get("mediaType") not in BUNDLE_MEDIA_TYPES:
        raise VerificationError(f"unsupported Sigstore bundle media type {doc.get('mediaType')!r}")
    material = expect_object(doc.get("verificationMaterial"), "bundle verificationMaterial")
    if "certificate" in material or "x509CertificateChain" in material:
        raise VerificationError("bundle is signed with a certificate, the policy trusts public keys")
    env = doc.get("dsseEnvelope")
    if not isinstance(env, dict):
        raise VerificationError("key-signed bundle has no DSSE envelope")
    payload_type = expect_str(env.get("payloadType"), "DSSE payloadType")
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise VerificationError(f"DSSE payload type {payload_type!r} is not an in-toto statement")
    payload = b64decode_std(expect_str(env.get("payload"), "DSSE payload"), "DSSE payload")
    pae = dsse_pae(payload_type, payload)
    sigs = [s for s in env.get("signatures") or [] if isinstance(s, dict) and isinstance(s.get("sig"), str)]
    if not sigs:
        raise VerificationError("DSSE envelope has no signatures")
    signer = None
    for key in policy.public_keys:
        if any(verify_raw(key, b64decode_std(s["sig"], "DSSE signature"), pae) for s in sigs):
            signer = key
            break
    if signer is None:
        raise VerificationError(
            f"cryptographic signature verification failed ({len(policy.public_keys)} trusted key(s) tried)"
        )
    statement = _statement_check(payload, digest)
    name = _subject_name(statement, digest)
    _check_bundle_identity(policy, name)
    entries = material.get("tlogEntries") or []
    if not isinstance(entries, list):
        raise VerificationError("bundle tlogEntries is not a list")
    when: int | None = None
    index: int | None = None
    if entries and check_tlog:
        if not policy.rekor_keys:
            raise VerificationError(
                "bundle carries a Rekor entry but no Rekor public key is configured "
                "(--rekor-public-key, --trusted-root, or --insecure-ignore-tlog)"
            )
        when, index = _check_tlog_entry(
            expect_object(entries[0], "tlog entry"), policy.rekor_keys, payload, [s["sig"] for s in sigs]
        )
    elif policy.require_tlog:
        raise VerificationError("bundle has no transparency log entry, but the policy requires one")
    if policy.annotations:
        raise VerificationError("Sigstore bundles carry no annotations to check (-a applies to legacy signatures)")
    fingerprint = key_fingerprint(signer)
    return VerifiedSignature(
        source_format="bundle",
        signer=f"key {fingerprint}",
        key_fingerprint=fingerprint,
        cert_identity=None,
        cert_issuer=None,
        docker_reference=name,
        manifest_digest=digest,
        integrated_time=when,
        log_index=index,
        optional=None,
    )


def _bundle_leaf(bundle_json: bytes) -> x509.Certificate | None:
    try:
        material = json.loads(bundle_json)["verificationMaterial"]
        if "certificate" in material:
            raw = material["certificate"]["rawBytes"]
        else:
            raw = material["x509CertificateChain"]["certificates"][0]["rawBytes"]
        return x509.load_der_x509_certificate(b64decode_std(raw, "certificate"))
    except (KeyError, IndexError, TypeError, ValueError, RegtoolError):
        return None


def _verify_keyless_bundle(
    bundle_json: bytes, digest: str, policy: VerifyPolicy, trust: SigstoreTrust
) -> VerifiedSignature:
    from regtool.signing.bundle import verify_bundle

    if trust.trusted_root is None and not trust.public_good:
        raise VerificationError(
            "Sigstore bundles are verified against a trusted root: pass --trusted-root (Fulcio/Rekor PEM files "
            "cannot check the certificate transparency of a bundle)"
        )
    result = verify_bundle(
        bundle_json,
        digest,
        trusted_root=trust.trusted_root,
        instance="production",
        identity=policy.cert_identity,
        identity_regexp=policy.cert_identity_regexp,
        issuer=policy.cert_oidc_issuer,
        issuer_regexp=policy.cert_oidc_issuer_regexp,
        predicate_type=COSIGN_SIGN_PREDICATE,
    )
    name = _subject_name(result.statement or {}, digest)
    _check_bundle_identity(policy, name)
    if policy.annotations:
        raise VerificationError("Sigstore bundles carry no annotations to check (-a applies to legacy signatures)")
    leaf = _bundle_leaf(bundle_json)
    fingerprint = ""
    if leaf is not None:
        try:
            fingerprint = key_fingerprint(check_public_key(leaf.public_key()))
        except (UsageError, ValueError):
            fingerprint = ""
    return VerifiedSignature(
        source_format="bundle",
        signer=f"{result.identity} (issuer {result.issuer})",
        key_fingerprint=fingerprint,
        cert_identity=result.identity,
        cert_issuer=result.issuer,
        docker_reference=name,
        manifest_digest=digest,
        integrated_time=result.integrated_time,
        log_index=result.log_index,
        optional=None,
    )


# --------------------------------------------------------------------------- verification


def _has_tlog(bundle_json: bytes) -> bool:
    try:
        entries = json.loads(bundle_json)["verificationMaterial"].get("tlogEntries")
    except (ValueError, KeyError, TypeError, AttributeError):
        return False
    return isinstance(entries, list) and bool(entries)


def _effective_policy(policy: VerifyPolicy, found: Sequence[FoundSignature], trust: SigstoreTrust) -> VerifyPolicy:
    """Key policies: drop Rekor keys for ``ignore_tlog``; add the default ones when a log entry needs them."""
    if policy.mode != "key":
        return policy
    if trust.ignore_tlog:
        return replace(policy, rekor_keys=(), require_tlog=False)
    if policy.rekor_keys:
        return policy
    needs = any(
        f.signature is not None
        and (f.signature.rekor_bundle is not None or (f.format == "bundle" and _has_tlog(f.signature.payload)))
        for f in found
    )
    if not needs:
        return policy
    try:
        keys = _default_rekor_keys(trust)
    except (UsageError, OSError) as exc:
        log.debug("no default Rekor keys: %s", exc)
        return policy
    return replace(policy, rekor_keys=keys) if keys else policy


def verify_found(
    found: FoundSignature, digest: str, policy: VerifyPolicy, trust: SigstoreTrust | None = None
) -> VerifiedSignature:
    """Verify one stored signature for manifest ``digest``; VerificationError says why not."""
    trust = trust or SigstoreTrust()
    sig = found.signature
    if sig is None:
        raise VerificationError(found.error or "signature could not be read")
    if sig.source_format == "bundle":
        if policy.mode == "key":
            return verify_key_bundle(sig.payload, digest, policy, check_tlog=not trust.ignore_tlog)
        if policy.mode == "pki":
            raise VerificationError("Sigstore bundles are not verified against a private PKI (use legacy signatures)")
        return _verify_keyless_bundle(sig.payload, digest, policy, trust)
    if policy.mode == "key" and sig.rekor_bundle is not None and not policy.rekor_keys and not trust.ignore_tlog:
        raise VerificationError(
            "signature carries a Rekor bundle but no Rekor public key is configured "
            "(--rekor-public-key, --trusted-root, or --insecure-ignore-tlog)"
        )
    return verify_signature(sig, digest, policy)


async def verify_manifest(
    source: ImageSource, digest: str, policy: VerifyPolicy, *, trust: SigstoreTrust | None = None
) -> ManifestVerification:
    """Find and verify every stored signature of manifest ``digest``."""
    trust = trust or SigstoreTrust()
    found = await find_signatures(source, digest)
    effective = _effective_policy(policy, found, trust)
    result = ManifestVerification(digest)
    for item in found:
        try:
            result.accepted.append((item.source, verify_found(item, digest, effective, trust)))
        except VerificationError as exc:
            result.rejected.append(Rejection(item.source, " ".join(str(exc).split())))
    return result


async def _instances(source: ImageSource, manifest: Manifest, depth: int = 1) -> list[str]:
    if depth > MAX_INDEX_DEPTH:
        raise RegtoolError(f"index {manifest.digest} nests deeper than {MAX_INDEX_DEPTH} levels")
    out: list[str] = []
    for child in manifest.children():
        out.append(child.digest)
        sub = await source.get_manifest(child.digest)
        if sub.is_index:
            out.extend(await _instances(source, sub, depth + 1))
    return list(dict.fromkeys(out))


async def verify_image(
    source: ImageSource,
    digest: str,
    policy: VerifyPolicy,
    *,
    recursive: bool = False,
    trust: SigstoreTrust | None = None,
) -> list[ManifestVerification]:
    """Verify manifest ``digest`` and, with ``recursive`` and an index, every manifest below it."""
    results = [await verify_manifest(source, digest, policy, trust=trust)]
    if recursive:
        top = await source.get_manifest(digest)
        if top.is_index:
            for child in await _instances(source, top):
                results.append(await verify_manifest(source, child, policy, trust=trust))
    return results


async def require_signed(
    source: ImageSource,
    digest: str,
    policy: VerifyPolicy,
    recursive: bool = False,
    *,
    trust: SigstoreTrust | None = None,
) -> list[VerifiedSignature]:
    """The gate: the accepted signatures of ``digest`` (and of every instance with ``recursive``).

    Raises VerificationError (exit 1) naming, for the first manifest without
    an accepted signature, each rejected signature and its reason.
    """
    accepted: list[VerifiedSignature] = []
    for result in await verify_image(source, digest, policy, recursive=recursive, trust=trust):
        if not result.ok:
            raise VerificationError(result.reason())
        accepted.extend(v for _, v in result.accepted)
    return accepted
