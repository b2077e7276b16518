"""Sigstore bundles (cosign v3 / sigstore-python), via the optional ``sigstore`` package.

``sigstore`` is imported inside the functions that need it, so regtool works
(and imports fast) without it; a missing package is a UsageError naming the
extra to install (``regtool[keyless]``).

* :func:`verify_bundle` verifies a bundle (media types v0.1 to v0.3) offline
  against a trusted root: a message-signature bundle against the artifact
  bytes or its ``sha256:`` digest, a DSSE bundle against an in-toto subject
  digest.  Identity and issuer (exact or regexp) are mandatory, as in cosign.
* :func:`bundle_to_legacy_annotations` turns a (keyless, Rekor v1) bundle into
  the ``.sig``-layer annotations cosign's legacy storage uses, so keyless
  signing can feed registries that only understand ``sha256-<hex>.sig`` tags.
* :func:`make_cosign_v3_statement` builds the in-toto statement cosign v3
  signs for an image.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from regtool.errors import UsageError, VerificationError
from regtool.signing.models import (
    BUNDLE_ANNOTATION,
    BUNDLE_MEDIA_TYPES,
    CERTIFICATE_ANNOTATION,
    CHAIN_ANNOTATION,
    SIGNATURE_ANNOTATION,
    b64decode_std,
    b64encode_std,
    expect_object,
    go_json_dumps,
    strict_json_loads,
)
from regtool.signing.payload import check_digest
from regtool.signing.verify import (
    certificate_identities,
    certificate_oidc_issuer,
    fulcio_material_from_trusted_root,
)

if TYPE_CHECKING:
    from sigstore.models import Bundle, TrustedRoot

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
IN_TOTO_STATEMENT_V1 = "https://in-toto.io/Statement/v1"
IN_TOTO_STATEMENTS = (IN_TOTO_STATEMENT_V1, "https://in-toto.io/Statement/v0.1")
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"

Instance = Literal["production", "staging"]


@dataclass(frozen=True)
class BundleVerification:
    """What a verified bundle vouches for."""

    media_type: str
    kind: Literal["message-signature", "dsse"]
    identity: str
    issuer: str
    artifact_digest: str
    integrated_time: int | None
    log_index: int | None
    payload_type: str | None = None
    statement: Mapping[str, Any] | None = None


def _oneline(text: str) -> str:
    return " ".join(text.split())


def _require_sigstore() -> None:
    try:
        import sigstore  # noqa: F401
    except ImportError:
        raise UsageError(
            "Sigstore bundle support needs the 'sigstore' package (pip install 'regtool[keyless]')"
        ) from None


def _digest_of(artifact: bytes | str) -> str:
    if isinstance(artifact, bytes):
        return "sha256:" + hashlib.sha256(artifact).hexdigest()
    problem = check_digest(artifact)
    if problem or not artifact.startswith("sha256:"):
        raise UsageError(f"artifact digest must be sha256:<64 hex>, got {artifact!r}")
    return artifact


def _load_trusted_root(
    trusted_root: str | os.PathLike[str] | None, instance: Instance, offline: bool
) -> TrustedRoot:
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import ClientTrustConfig, TrustedRoot

    try:
        if trusted_root is not None:
            return TrustedRoot.from_file(os.fspath(trusted_root))
        if instance == "staging":
            return ClientTrustConfig.staging(offline=offline).trusted_root
        if instance == "production":
            return ClientTrustConfig.production(offline=offline).trusted_root
    except (SigstoreError, OSError, ValueError) as exc:
        raise UsageError(f"cannot load Sigstore trusted root: {_oneline(str(exc))}") from None
    raise UsageError(f"unknown Sigstore instance {instance!r}")


class _IdentityPolicy:
    """A sigstore ``VerificationPolicy``: SAN identity and OIDC issuer, exact or regexp (search)."""

    def __init__(
        self,
        identity: str | None,
        identity_regexp: str | None,
        issuer: str | None,
        issuer_regexp: str | None,
    ) -> None:
        self.identity, self.identity_regexp = identity, identity_regexp
        self.issuer, self.issuer_regexp = issuer, issuer_regexp
        self.matched_identity: str | None = None
        self.matched_issuer: str | None = None

    @staticmethod
    def _ok(value: str, exact: str | None, pattern: str | None) -> bool:
        if exact is not None and value != exact:
            return False
        return pattern is None or re.search(pattern, value) is not None

    def verify(self, cert: x509.Certificate) -> None:
        from sigstore.errors import VerificationError as SigstoreVerificationError

        try:
            issuer = certificate_oidc_issuer(cert)
            sans = certificate_identities(cert)
        except VerificationError as exc:
            raise SigstoreVerificationError(str(exc)) from None
        if issuer is None or not self._ok(issuer, self.issuer, self.issuer_regexp):
            raise SigstoreVerificationError(f"unexpected certificate OIDC issuer {issuer!r}")
        for san in sans:
            if self._ok(san, self.identity, self.identity_regexp):
                self.matched_identity, self.matched_issuer = san, issuer
                return
        raise SigstoreVerificationError(f"certificate identity mismatch: certificate names {sans!r}")


def _tlog_numbers(doc: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(integrated time, log index) of the first tlog entry; time only when an inclusion promise signs it."""
    try:
        entry = doc["verificationMaterial"]["tlogEntries"][0]
    except (KeyError, IndexError, TypeError):
        return None, None
    index = int(entry["logIndex"]) if "logIndex" in entry else None
    when = (
        int(entry["integratedTime"])
        if entry.get("integratedTime") and entry.get("inclusionPromise")
        else None
    )
    return when, index


def verify_bundle(
    bundle_json: bytes,
    artifact: bytes | str,
    *,
    trusted_root: str | os.PathLike[str] | None = None,
    instance: Instance = "production",
    identity: str | None = None,
    identity_regexp: str | None = None,
    issuer: str | None = None,
    issuer_regexp: str | None = None,
    predicate_type: str | None = None,
    offline: bool = True,
) -> BundleVerification:
    """Verify a Sigstore bundle for ``artifact`` (its bytes, or its ``sha256:<hex>`` digest).

    ``trusted_root`` is a trusted-root JSON file; without it the embedded (or
    TUF-cached) root of ``instance`` is used, refreshed over the network only
    when ``offline`` is false.  For DSSE bundles the payload must be an in-toto
    statement with a subject whose sha256 equals the artifact digest (and
    ``predicate_type`` when given).  Raises VerificationError with a reason.
    """
    if identity is None and identity_regexp is None:
        raise UsageError("bundle verification needs a certificate identity (or identity regexp)")
    if issuer is None and issuer_regexp is None:
        raise UsageError("bundle verification needs an OIDC issuer (or issuer regexp)")
    for pattern in (identity_regexp, issuer_regexp):
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise UsageError(f"invalid regular expression {pattern!r}: {exc}") from None
    digest = _digest_of(artifact)
    doc = expect_object(strict_json_loads(bundle_json, "Sigstore bundle"), "Sigstore bundle")
    media_type = doc.get("mediaType")
    if media_type not in BUNDLE_MEDIA_TYPES:
        raise VerificationError(f"unsupported Sigstore bundle media type {media_type!r}")

    _require_sigstore()
    from sigstore.errors import Error as SigstoreError
    from sigstore.hashes import Hashed
    from sigstore.models import Bundle
    from sigstore.verify import Verifier
    from sigstore_models.common.v1 import HashAlgorithm

    try:
        bundle = Bundle.from_json(bundle_json)
    except (SigstoreError, ValueError) as exc:
        raise VerificationError(f"invalid Sigstore bundle: {_oneline(str(exc))}") from None
    root = _load_trusted_root(trusted_root, instance, offline)
    policy = _IdentityPolicy(identity, identity_regexp, issuer, issuer_regexp)
    is_dsse = isinstance(doc.get("dsseEnvelope"), dict)
    statement: dict[str, Any] | None = None
    payload_type: str | None = None
    try:
        verifier = Verifier(trusted_root=root)
        if is_dsse:
            payload_type, payload = verifier.verify_dsse(bundle, policy)
        else:
            hashed = Hashed(algorithm=HashAlgorithm.SHA2_256, digest=bytes.fromhex(digest.split(":", 1)[1]))
            verifier.verify_artifact(hashed, bundle, policy)
    except SigstoreError as exc:
        raise VerificationError(f"Sigstore bundle verification failed: {_oneline(str(exc))}") from None

    if is_dsse:
        statement = _check_statement(payload_type, payload, digest, predicate_type)
    elif predicate_type is not None:
        raise VerificationError("a predicate type was required, but the bundle signs a plain message")

    when, index = _tlog_numbers(doc)
    if policy.matched_identity is None or policy.matched_issuer is None:  # sigstore always calls the policy
        raise VerificationError("Sigstore verification did not check the certificate identity")
    return BundleVerification(
        media_type=str(media_type),
        kind="dsse" if is_dsse else "message-signature",
        identity=policy.matched_identity,
        issuer=policy.matched_issuer,
        artifact_digest=digest,
        integrated_time=when,
        log_index=index,
        payload_type=payload_type,
        statement=statement,
    )


def _check_statement(
    payload_type: str | None, payload: bytes, digest: str, predicate_type: str | None
) -> dict[str, Any]:
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise VerificationError(f"DSSE payload type {payload_type!r} is not an in-toto statement")
    statement = expect_object(strict_json_loads(payload, "in-toto statement"), "in-toto statement")
    if statement.get("_type") not in IN_TOTO_STATEMENTS:
        raise VerificationError(f"unknown in-toto statement type {statement.get('_type')!r}")
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise VerificationError("in-toto statement has no subjects")
    want = digest.split(":", 1)[1]
    if not any(
        isinstance(s, dict) and isinstance(s.get("digest"), dict) and s["digest"].get("sha256") == want
        for s in subjects
    ):
        raise VerificationError(f"no in-toto subject has digest {digest}")
    if predicate_type is not None and statement.get("predicateType") != predicate_type:
        raise VerificationError(
            f"in-toto predicate type {statement.get('predicateType')!r} is not {predicate_type!r}"
        )
    return statement


def _certificate_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:  # InvalidSignature, mismatched key types, unsupported algorithms alike
        return False
    return True


def bundle_to_legacy_annotations(
    bundle: Bundle | bytes | str, *, trusted_root: bytes | None = None
) -> dict[str, str]:
    """The cosign ``.sig``-layer annotations equivalent to a keyless message-signature bundle.

    Gives the signature, the leaf certificate, the chain (from the bundle's
    certificate chain for v0.1/v0.2 bundles, else from the Fulcio CA of the
    ``trusted_root`` JSON document that issued the leaf; omitted when neither
    is available) and the Rekor bundle (SET).  The layer payload must be the
    bytes the bundle signed.  A DSSE bundle, or one without an inclusion
    promise (Rekor v2), has no legacy form: UsageError.
    """
    if isinstance(bundle, (bytes, str)):
        raw = bundle.encode() if isinstance(bundle, str) else bundle
    else:
        raw = bundle.to_json().encode()
    doc = expect_object(strict_json_loads(raw, "Sigstore bundle"), "Sigstore bundle")
    if doc.get("mediaType") not in BUNDLE_MEDIA_TYPES:
        raise VerificationError(f"unsupported Sigstore bundle media type {doc.get('mediaType')!r}")
    msg = doc.get("messageSignature")
    if not isinstance(msg, dict) or not isinstance(msg.get("signature"), str):
        raise UsageError("only message-signature bundles have a legacy .sig form (this one is DSSE)")
    material = expect_object(doc.get("verificationMaterial"), "bundle verificationMaterial")

    # certificates
    certs: list[x509.Certificate] = []
    try:
        if isinstance(material.get("certificate"), dict):
            certs = [
                x509.load_der_x509_certificate(b64decode_std(material["certificate"]["rawBytes"], "cert"))
            ]
        elif isinstance(material.get("x509CertificateChain"), dict):
            certs = [
                x509.load_der_x509_certificate(b64decode_std(c["rawBytes"], "cert"))
                for c in material["x509CertificateChain"]["certificates"]
            ]
    except (KeyError, TypeError, ValueError) as exc:
        raise VerificationError(f"bad certificate in bundle: {_oneline(str(exc))}") from None
    if not certs:
        raise UsageError("bundle has no signing certificate (key-signed bundles have no legacy keyless form)")
    leaf, chain = certs[0], certs[1:]
    if not chain and trusted_root is not None:
        roots, intermediates = fulcio_material_from_trusted_root(trusted_root)
        pool = intermediates + roots
        current = leaf
        while True:
            parent = next((c for c in pool if c not in chain and _issued_by(current, c)), None)
            if parent is None:
                break
            chain.append(parent)
            if parent in roots:
                break
            current = parent

    # Rekor SET
    entries = material.get("tlogEntries")
    if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict):
        raise UsageError("bundle must hold exactly one transparency log entry")
    entry = entries[0]
    promise = entry.get("inclusionPromise")
    if not isinstance(promise, dict) or not entry.get("integratedTime"):
        raise UsageError("bundle has no inclusion promise (Rekor v2 entry?): no legacy Rekor bundle possible")
    try:
        rekor_bundle = {
            "SignedEntryTimestamp": b64encode_std(b64decode_std(promise["signedEntryTimestamp"], "SET")),
            "Payload": {
                "body": b64encode_std(b64decode_std(entry["canonicalizedBody"], "Rekor body")),
                "integratedTime": int(entry["integratedTime"]),
                "logIndex": int(entry["logIndex"]),
                "logID": b64decode_std(entry["logId"]["keyId"], "log ID").hex(),
            },
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise VerificationError(f"bad transparency log entry in bundle: {_oneline(str(exc))}") from None

    out = {
        SIGNATURE_ANNOTATION: b64encode_std(b64decode_std(msg["signature"], "bundle signature")),
        CERTIFICATE_ANNOTATION: _certificate_pem(leaf),
        BUNDLE_ANNOTATION: go_json_dumps(rekor_bundle),
    }
    if chain:
        out[CHAIN_ANNOTATION] = "".join(_certificate_pem(c) for c in chain)
    return out


def make_cosign_v3_statement(manifest_digest: str, reference: str | None = None) -> bytes:
    """The in-toto statement cosign v3 signs (DSSE) for an image manifest.

    ``predicateType`` is ``https://sigstore.dev/cosign/sign/v1`` with an empty
    predicate; the subject is the manifest digest, named by the repository of
    ``reference`` (registry/repository, no tag or digest) when one is given.
    """
    problem = check_digest(manifest_digest)
    if problem or not manifest_digest.startswith("sha256:"):
        raise UsageError(f"invalid manifest digest {manifest_digest!r}")
    subject: dict[str, Any] = {}
    if reference is not None:
        from regtool.reference import parse_reference

        subject["name"] = parse_reference(reference).name
    subject["digest"] = {"sha256": manifest_digest.split(":", 1)[1]}
    statement = {
        "_type": IN_TOTO_STATEMENT_V1,
        "subject": [subject],
        "predicateType": COSIGN_SIGN_PREDICATE,
        "predicate": {},
    }
    return json.dumps(statement, separators=(",", ":")).encode()
