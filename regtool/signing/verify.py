"""Verify cosign simple-signing signatures against a policy (offline).

Trust sources, exactly one per policy (:class:`VerifyPolicy`):

* **public keys**: the payload signature must verify under one of them;
* **Fulcio (keyless)**: the signature's certificate must chain to the Fulcio
  roots *at the time Rekor says it logged the signature* (the SET's
  ``integratedTime``), carry code-signing usage, and name the expected
  identity and OIDC issuer; a Rekor SET is mandatory;
* **PKI**: the certificate must chain to the given roots (via the given
  intermediates and the signature's chain annotation) now (or at
  ``at_time``) and name the expected identity; no transparency log needed.

Checks run in a fixed order and the first failure raises VerificationError
with a one-line reason: payload MIME type, payload signature, strict payload
parse, manifest digest, signed identity, Rekor SET (when present and Rekor
keys are configured, or when required: ``require_tlog`` or keyless),
certificate trust and identity, then requested annotations.

These are containers/image's ``sigstoreSigned`` semantics (including its
``signedIdentity`` rules), with cosign's regexp identity options.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store
from cryptography.x509.verification import VerificationError as X509VerificationError

from regtool.errors import InvalidReference, RegtoolError, UsageError, VerificationError
from regtool.signing.keys import (
    PublicKey,
    check_public_key,
    key_fingerprint,
    public_key_pem,
    verify_raw,
)
from regtool.signing.models import (
    SIMPLESIGNING_MEDIA_TYPE,
    Signature,
    b64decode_std,
    parse_sigstore_json,
)
from regtool.signing.payload import Payload, check_digest, parse_payload
from regtool.signing.rekor import RekorEntry, RekorKey, verify_rekor_bundle

if TYPE_CHECKING:
    from regtool.reference import Reference

IdentityMatch = Literal["exact", "repo-digest-or-exact", "repository"]
IDENTITY_MATCHES: tuple[IdentityMatch, ...] = ("exact", "repo-digest-or-exact", "repository")

OID_FULCIO_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
OID_FULCIO_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
OID_FULCIO_OTHERNAME = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.7")
_ANY_EKU = x509.ObjectIdentifier("2.5.29.37.0")


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class VerifyPolicy:
    """What a signature must satisfy.  Construct with keyword arguments; validated on creation.

    ``signed_identity`` is the image name the caller expects (the reference
    being verified); ``identity_match`` is containers-policy.json's
    ``matchExact`` / ``matchRepoDigestOrExact`` (default) / ``matchRepository``.
    ``annotations`` are cosign ``-a k=v`` requirements on the payload's
    ``optional`` map.  Identity regexps use search semantics, as cosign's Go
    ``MatchString`` does: anchor them (``^...$``) to match a whole value.
    """

    public_keys: tuple[PublicKey, ...] = ()
    fulcio_roots: tuple[x509.Certificate, ...] = ()
    fulcio_intermediates: tuple[x509.Certificate, ...] = ()
    pki_roots: tuple[x509.Certificate, ...] = ()
    pki_intermediates: tuple[x509.Certificate, ...] = ()
    rekor_keys: tuple[RekorKey, ...] = ()
    cert_identity: str | None = None
    cert_identity_regexp: str | None = None
    cert_oidc_issuer: str | None = None
    cert_oidc_issuer_regexp: str | None = None
    require_tlog: bool = False
    signed_identity: str | None = None
    identity_match: IdentityMatch = "repo-digest-or-exact"
    annotations: Mapping[str, str] = field(default_factory=dict)
    at_time: datetime | None = None

    def __post_init__(self) -> None:
        sources = [bool(self.public_keys), bool(self.fulcio_roots), bool(self.pki_roots)]
        if sum(sources) != 1:
            raise UsageError(
                "a verification policy needs exactly one of: public keys, Fulcio roots, PKI roots"
            )
        for key in self.public_keys:
            check_public_key(key)
        if self.identity_match not in IDENTITY_MATCHES:
            raise UsageError(f"unknown identity match {self.identity_match!r}")
        for pattern in (self.cert_identity_regexp, self.cert_oidc_issuer_regexp):
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise UsageError(f"invalid regular expression {pattern!r}: {exc}") from None
        has_identity = self.cert_identity is not None or self.cert_identity_regexp is not None
        has_issuer = self.cert_oidc_issuer is not None or self.cert_oidc_issuer_regexp is not None
        if self.mode == "keyless":
            if not self.rekor_keys:
                raise UsageError("keyless verification needs Rekor public keys")
            if not (has_identity and has_issuer):
                raise UsageError("keyless verification needs a certificate identity and an OIDC issuer")
        elif self.mode == "pki":
            if not has_identity:
                raise UsageError("PKI verification needs a certificate identity")
        elif has_identity or has_issuer:
            raise UsageError("certificate identity options need Fulcio or PKI roots, not public keys")
        if self.require_tlog and not self.rekor_keys:
            raise UsageError("require_tlog needs Rekor public keys")
        if self.signed_identity is not None:
            _parse_ref(self.signed_identity, usage=True)
        if self.at_time is not None and self.at_time.tzinfo is None:
            raise UsageError("at_time must be timezone-aware")

    @property
    def mode(self) -> Literal["key", "keyless", "pki"]:
        if self.public_keys:
            return "key"
        return "keyless" if self.fulcio_roots else "pki"


@dataclass(frozen=True)
class VerifiedSignature:
    """A signature that passed every check, and what it vouches for."""

    source_format: str
    signer: str
    key_fingerprint: str
    cert_identity: str | None
    cert_issuer: str | None
    docker_reference: str
    manifest_digest: str
    integrated_time: int | None
    log_index: int | None
    optional: Mapping[str, Any] | None


@dataclass(frozen=True)
class Rejection:
    """A signature that did not verify; ``source`` names it (e.g. ``signature-1``)."""

    source: str
    reason: str


# --------------------------------------------------------------------------- certificates


def load_certificates(pem: bytes | str) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (UsageError when there is none or one is malformed)."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise UsageError("malformed PEM certificate data") from None
    return certs


def fulcio_material_from_trusted_root(data: bytes) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """(roots, intermediates) of the ``certificateAuthorities`` of a Sigstore trusted-root JSON."""
    try:
        doc = json.loads(data)
    except ValueError:
        raise UsageError("trusted root is not JSON") from None
    cas = doc.get("certificateAuthorities") if isinstance(doc, dict) else None
    if not isinstance(cas, list) or not cas:
        raise UsageError("trusted root has no certificateAuthorities")
    roots: list[x509.Certificate] = []
    intermediates: list[x509.Certificate] = []
    for i, ca in enumerate(cas):
        chain = ca.get("certChain", {}).get("certificates") if isinstance(ca, dict) else None
        if not isinstance(chain, list) or not chain:
            raise UsageError(f"trusted root: certificateAuthorities[{i}] has no certificates")
        try:
            certs = [
                x509.load_der_x509_certificate(b64decode_std(c["rawBytes"], "certificate")) for c in chain
            ]
        except (KeyError, TypeError, ValueError, VerificationError):
            raise UsageError(f"trusted root: certificateAuthorities[{i}] has a bad certificate") from None
        roots.append(certs[-1])
        intermediates.extend(certs[:-1])
    return roots, intermediates


def _der_utf8string(data: bytes, what: str) -> str:
    """Decode a DER UTF8String with nothing after it."""
    if len(data) < 2 or data[0] != 0x0C:
        raise VerificationError(f"invalid ASN.1 in {what}")
    length, pos = data[1], 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or len(data) < 2 + n:
            raise VerificationError(f"invalid ASN.1 in {what}")
        length, pos = int.from_bytes(data[2 : 2 + n], "big"), 2 + n
    if pos + length != len(data):
        raise VerificationError(f"invalid ASN.1 in {what}, trailing data")
    try:
        return data[pos:].decode("utf-8")
    except UnicodeDecodeError:
        raise VerificationError(f"invalid UTF-8 in {what}") from None


def certificate_oidc_issuer(cert: x509.Certificate) -> str | None:
    """The Fulcio OIDC issuer (v1 raw or v2 DER extension); both present must agree."""
    v1: str | None = None
    v2: str | None = None
    for ext in cert.extensions:
        if ext.oid == OID_FULCIO_ISSUER_V1 and isinstance(ext.value, x509.UnrecognizedExtension):
            try:
                v1 = ext.value.value.decode("utf-8")
            except UnicodeDecodeError:
                raise VerificationError("invalid UTF-8 in OIDC issuer extension") from None
        elif ext.oid == OID_FULCIO_ISSUER_V2 and isinstance(ext.value, x509.UnrecognizedExtension):
            v2 = _der_utf8string(ext.value.value, "OIDC issuer v2 extension")
    if v1 is not None and v2 is not None and v1 != v2:
        raise VerificationError(f"inconsistent OIDC issuer extension values: v1 {v1!r}, v2 {v2!r}")
    return v1 if v1 is not None else v2


def certificate_identities(cert: x509.Certificate, *, include_dns: bool = False) -> list[str]:
    """SAN identities cosign matches: emails, URIs, Fulcio username other-names (and DNS names for PKI)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    out: list[str] = list(san.get_values_for_type(x509.RFC822Name))
    out.extend(san.get_values_for_type(x509.UniformResourceIdentifier))
    for other in san.get_values_for_type(x509.OtherName):
        if other.type_id == OID_FULCIO_OTHERNAME:
            out.append(_der_utf8string(other.value, "SAN other name"))
    if include_dns:
        out.extend(san.get_values_for_type(x509.DNSName))
    return out


def _bc_validator(policy: Any, cert: x509.Certificate, ext: x509.BasicConstraints | None) -> None:
    if ext is None or not ext.ca:
        raise ValueError("issuer is not a CA")


def _ku_validator(policy: Any, cert: x509.Certificate, ext: x509.KeyUsage | None) -> None:
    if ext is not None and not ext.key_cert_sign:
        raise ValueError("issuer key usage lacks keyCertSign")


def _verify_chain(
    leaf: x509.Certificate,
    roots: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    when: datetime,
) -> list[x509.Certificate]:
    """Path-validate ``leaf`` to ``roots`` at ``when`` (Go crypto/x509 level of strictness for CAs)."""
    # Issuers must be CAs (basicConstraints cA) and, if they restrict key usage, allow keyCertSign;
    # private PKIs often omit keyUsage on roots, which Go accepts, so WebPKI defaults are too strict.
    ca_policy = (
        ExtensionPolicy.permit_all()
        .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, _bc_validator)
        .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _ku_validator)
    )
    try:
        verifier = (
            PolicyBuilder()
            .store(Store(list(roots)))
            .time(when)
            .extension_policies(ca_policy=ca_policy, ee_policy=ExtensionPolicy.permit_all())
            .build_client_verifier()
        )
        return list(verifier.verify(leaf, list(intermediates)).chain)
    except X509VerificationError as exc:
        raise VerificationError(f"certificate chain verification failed: {_oneline(str(exc))}") from None


def _check_leaf_eku(leaf: x509.Certificate, *, required: bool) -> None:
    """Code-signing usage (unless ``required``, Go's rule: no EKU means any); no unknown critical ext."""
    for ext in leaf.extensions:
        if ext.critical and isinstance(ext.value, x509.UnrecognizedExtension):
            raise VerificationError(
                f"signing certificate has unhandled critical extension {ext.oid.dotted_string}"
            )
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        if required:
            raise VerificationError(
                "signing certificate has no extended key usage (code signing needed)"
            ) from None
        return
    if ExtendedKeyUsageOID.CODE_SIGNING not in eku and (required or _ANY_EKU not in eku):
        raise VerificationError("signing certificate is not valid for code signing")


def _match_value(value: str | None, exact: str | None, pattern: str | None) -> bool:
    if value is None:
        return False
    if exact is not None and value != exact:
        return False
    return not (pattern is not None and re.search(pattern, value) is None)


# --------------------------------------------------------------------------- identity


def _parse_ref(text: str, *, usage: bool) -> Reference:
    from regtool.reference import parse_reference

    try:
        return parse_reference(text)
    except InvalidReference as exc:
        if usage:
            raise UsageError(f"invalid signed identity {text!r}: {exc}") from None
        raise VerificationError(f"invalid docker-reference {text!r} in signature") from None


def _ref_string(ref: Reference) -> str:
    out = ref.name
    if ref.tag:
        out += ":" + ref.tag
    if ref.digest:
        out += "@" + ref.digest
    return out


def identity_matches(mode: IdentityMatch, intended: str, signed: str) -> bool:
    """containers-policy.json ``signedIdentity`` semantics for (image name, name in the signature)."""
    want = _parse_ref(intended, usage=True)
    got = _parse_ref(signed, usage=False)
    if mode == "repository":
        return want.name == got.name
    got_name_only = not got.tag and not got.digest
    if mode == "exact":
        want_name_only = not want.tag and not want.digest
        return not (want_name_only or got_name_only) and _ref_string(want) == _ref_string(got)
    # repo-digest-or-exact
    if got_name_only:
        return False
    if want.tag:
        return _ref_string(want) == _ref_string(got)
    if want.digest:
        return want.name == got.name
    return False


# --------------------------------------------------------------------------- verification


def _oneline(text: str) -> str:
    return " ".join(text.split())


def verify_signature(sig: Signature, manifest_digest: str, policy: VerifyPolicy) -> VerifiedSignature:
    """Verify one simple-signing signature for the manifest with digest ``manifest_digest``.

    Raises VerificationError with a precise one-line reason on the first failed check.
    """
    if check_digest(manifest_digest):
        raise UsageError(f"invalid manifest digest {manifest_digest!r}")
    if sig.source_format != "simplesigning":
        raise VerificationError("Sigstore bundles are verified with regtool.signing.bundle.verify_bundle")
    if sig.media_type != SIMPLESIGNING_MEDIA_TYPE:
        raise VerificationError(f"unexpected MIME type for sigstore payload {sig.media_type!r}")
    raw_sig = b64decode_std(sig.signature, "signature annotation")

    # == who may have signed
    cert: x509.Certificate | None = None
    if policy.mode == "key":
        candidates: list[PublicKey] = list(policy.public_keys)
    else:
        if sig.certificate is None:
            raise VerificationError(
                "signature has no certificate annotation, the policy requires a certificate"
            )
        try:
            leaf_certs = x509.load_pem_x509_certificates(sig.certificate.encode())
        except ValueError:
            raise VerificationError("certificate annotation is not a valid PEM certificate") from None
        if len(leaf_certs) != 1:
            raise VerificationError("certificate annotation must hold exactly one certificate")
        cert = leaf_certs[0]
        try:
            candidates = [check_public_key(cert.public_key())]
        except (UsageError, ValueError) as exc:
            raise VerificationError(f"unsupported certificate key: {exc}") from None

    # == 1. the payload signature
    signer_key = next((k for k in candidates if verify_raw(k, raw_sig, sig.payload)), None)
    if signer_key is None:
        if policy.mode == "key":
            raise VerificationError(
                f"cryptographic signature verification failed ({len(candidates)} trusted key(s) tried)"
            )
        raise VerificationError("cryptographic signature verification failed against the certificate's key")

    # == 2. the payload, strictly
    payload: Payload = parse_payload(sig.payload)

    # == 3. the manifest digest
    if payload.manifest_digest != manifest_digest:
        raise VerificationError(
            f"signature is for manifest digest {payload.manifest_digest}, not {manifest_digest}"
        )

    # == 4. the signed identity
    if policy.signed_identity is not None and not identity_matches(
        policy.identity_match, policy.signed_identity, payload.docker_reference
    ):
        raise VerificationError(
            f"signature for identity {payload.docker_reference!r} is not accepted for "
            f"{policy.signed_identity!r} ({policy.identity_match})"
        )

    # == 5. the transparency log
    entry: RekorEntry | None = None
    need_tlog = policy.require_tlog or policy.mode == "keyless"
    if sig.rekor_bundle is None:
        if need_tlog:
            raise VerificationError(
                "signature has no Rekor bundle, but the policy requires a transparency log entry"
            )
    elif policy.rekor_keys:
        signer_pem = public_key_pem(signer_key) if cert is None else sig.certificate or ""
        entry = verify_rekor_bundle(
            sig.rekor_bundle,
            policy.rekor_keys,
            signature_b64=sig.signature,
            payload=sig.payload,
            signer_pem=signer_pem,
        )

    # == 6. the certificate: chain, usage, identity
    identity: str | None = None
    issuer: str | None = None
    if cert is not None:
        chain_intermediates: list[x509.Certificate] = []
        if sig.chain:
            try:
                annotated = x509.load_pem_x509_certificates(sig.chain.encode())
            except ValueError:
                raise VerificationError("chain annotation is not valid PEM certificates") from None
            # the last chain entry is the root: never trusted from the signature itself
            chain_intermediates = annotated[:-1]
        if policy.mode == "keyless":
            if entry is None:  # unreachable: keyless policies require Rekor keys and a bundle
                raise VerificationError("keyless signature without a verified Rekor entry")
            when = entry.integrated_datetime
            roots, intermediates = policy.fulcio_roots, policy.fulcio_intermediates
        else:
            when = policy.at_time or datetime.now(timezone.utc)
            roots, intermediates = policy.pki_roots, policy.pki_intermediates
        _verify_chain(cert, roots, [*intermediates, *chain_intermediates], when)
        _check_leaf_eku(cert, required=policy.mode == "keyless")

        issuer = certificate_oidc_issuer(cert)
        if policy.mode == "keyless" and issuer is None:
            raise VerificationError("Fulcio certificate is missing the OIDC issuer extension")
        if (
            policy.cert_oidc_issuer is not None or policy.cert_oidc_issuer_regexp is not None
        ) and not _match_value(issuer, policy.cert_oidc_issuer, policy.cert_oidc_issuer_regexp):
            raise VerificationError(f"unexpected certificate OIDC issuer {issuer!r}")
        sans = certificate_identities(cert, include_dns=policy.mode == "pki")
        identity = next(
            (s for s in sans if _match_value(s, policy.cert_identity, policy.cert_identity_regexp)), None
        )
        if identity is None:
            raise VerificationError(f"certificate identity mismatch: certificate names {sans!r}")

    # == 7. requested annotations
    for key in sorted(policy.annotations):
        want = policy.annotations[key]
        got = (payload.optional or {}).get(key)
        if got != want:
            raise VerificationError(f"annotation {key!r} is {got!r} in the signature, expected {want!r}")

    fingerprint = key_fingerprint(signer_key)
    if cert is None:
        signer = f"key {fingerprint}"
    elif issuer is None:
        signer = f"{identity} (PKI)"
    else:
        signer = f"{identity} (issuer {issuer})"
    return VerifiedSignature(
        source_format=sig.source_format,
        signer=signer,
        key_fingerprint=fingerprint,
        cert_identity=identity,
        cert_issuer=issuer,
        docker_reference=payload.docker_reference,
        manifest_digest=payload.manifest_digest,
        integrated_time=entry.integrated_time if entry else None,
        log_index=entry.log_index if entry else None,
        optional=payload.optional,
    )


def verify_dir_image(path: str | Path, policy: VerifyPolicy) -> list[VerifiedSignature | Rejection]:
    """Verify every ``signature-N`` of a skopeo ``dir:`` image (N = 1, 2, ... until one is missing).

    The manifest digest is computed with :func:`regtool.manifest.manifest_digest`;
    when it cannot be computed, every signature is rejected.  An image without
    signatures gives an empty list (callers decide whether that is a failure).
    """
    from regtool.manifest import manifest_digest

    root = Path(path)
    try:
        manifest = (root / "manifest.json").read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {root / 'manifest.json'}: {exc.strerror}") from None
    blobs: list[tuple[str, bytes]] = []
    n = 1
    while (root / f"signature-{n}").is_file():
        blobs.append((f"signature-{n}", (root / f"signature-{n}").read_bytes()))
        n += 1

    digest: str | None = None
    digest_error = ""
    try:
        digest = manifest_digest(manifest)
    except (RegtoolError, ValueError) as exc:
        digest_error = f"cannot compute manifest digest: {_oneline(str(exc))}"

    results: list[VerifiedSignature | Rejection] = []
    for name, blob in blobs:
        if digest is None:
            results.append(Rejection(name, digest_error))
            continue
        try:
            results.append(verify_signature(parse_sigstore_json(blob), digest, policy))
        except VerificationError as exc:
            results.append(Rejection(name, str(exc)))
    return results
