"""Sign images: cosign-compatible signatures with a key file, or keyless through Sigstore.

:func:`sign_image` signs the named manifest of a :class:`~regtool.signing.storage.SignatureStore`
(and, for an index, every manifest below it unless ``recursive`` is off):

* ``legacy`` (the default): a simple-signing payload naming the image
  (``registry/repo:tag``, so containers' default ``matchRepoDigestOrExact``
  policy accepts it) and the manifest digest, signed and appended to the
  ``sha256-<hex>.sig`` manifest (or written as a ``dir:`` ``signature-N``);
  a payload already there that verifies with the same key (or certificate
  identity) is not added again;
* ``v3``: cosign v3's format, a Sigstore bundle (v0.3, DSSE over the in-toto
  statement with predicate ``https://sigstore.dev/cosign/sign/v1``) attached
  as an OCI 1.1 referrer;
* ``both``: the two.

Signers: :class:`KeySigner` (a cosign key; nothing leaves the machine unless
a :class:`RekorUploader` is given, ``--tlog-upload``) and :class:`KeylessSigner`
(a Fulcio certificate for an OIDC identity and a Rekor entry, through
sigstore-python; :func:`make_keyless_signer` wires it up and
:func:`identity_token` finds the token: ``SIGSTORE_ID_TOKEN``, then ambient CI
credentials, then the interactive browser flow).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import anyio.to_thread
from cryptography import x509

from regtool.errors import RegtoolError, UsageError
from regtool.manifest import Manifest
from regtool.signing.bundle import (
    COSIGN_SIGN_PREDICATE,
    IN_TOTO_PAYLOAD_TYPE,
    bundle_to_legacy_annotations,
    make_cosign_v3_statement,
)
from regtool.signing.keys import (
    PrivateKey,
    PublicKey,
    check_public_key,
    key_fingerprint,
    public_key_der,
    public_key_pem,
    sign_payload,
    verify_raw,
)
from regtool.signing.models import (
    BUNDLE_ANNOTATION,
    SIGNATURE_ANNOTATION,
    Signature,
    b64decode_std,
    b64encode_std,
    go_json_dumps,
)
from regtool.signing.payload import make_payload
from regtool.signing.storage import (
    BUNDLE_CONTENT_ANNOTATION,
    BUNDLE_PREDICATE_ANNOTATION,
    SignatureStore,
)
from regtool.signing.verify import certificate_identities, certificate_oidc_issuer

if TYPE_CHECKING:
    from regtool.reference import ImageRef

log = logging.getLogger("regtool.signing")

BundleFormat = Literal["legacy", "v3", "both"]
BUNDLE_FORMATS: tuple[BundleFormat, ...] = ("legacy", "v3", "both")
BUNDLE_V03_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
DEFAULT_REKOR_URL = "https://rekor.sigstore.dev"
MAX_INDEX_DEPTH = 4

__all__ = [
    "BUNDLE_FORMATS",
    "DEFAULT_REKOR_URL",
    "BundleFormat",
    "ImageSigner",
    "KeySigner",
    "KeylessSigner",
    "RekorUploader",
    "SignOptions",
    "SignResult",
    "SignedManifest",
    "ambient_identity_token",
    "dsse_pae",
    "identity_token",
    "make_key_bundle",
    "make_keyless_signer",
    "sign_image",
    "signing_identity",
]


# --------------------------------------------------------------------------- DSSE


def dsse_pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding (what a DSSE signature signs)."""
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(payload), payload)


def _key_hint(key: PublicKey) -> str:
    """cosign's ``verificationMaterial.publicKey.hint``: base64 SHA-256 of the PKIX DER key."""
    return b64encode_std(hashlib.sha256(public_key_der(key)).digest())


def make_key_bundle(
    key: PrivateKey, statement: bytes, *, tlog_entry: Mapping[str, Any] | None = None
) -> bytes:
    """A Sigstore bundle v0.3 signed with a key: DSSE over ``statement``, key hint, optional tlog entry.

    This is the shape cosign v3 writes for ``cosign sign --key``; such a
    bundle has no certificate, so sigstore-python cannot load it and
    regtool verifies it itself (:func:`regtool.signing.gate.verify_key_bundle`).
    """
    envelope = _key_envelope(key, statement)
    return _key_bundle_json(key, envelope, tlog_entry)


def _key_envelope(key: PrivateKey, statement: bytes) -> dict[str, Any]:
    sig = sign_payload(key, dsse_pae(IN_TOTO_PAYLOAD_TYPE, statement))
    return {
        "payload": b64encode_std(statement),
        "payloadType": IN_TOTO_PAYLOAD_TYPE,
        "signatures": [{"sig": b64encode_std(sig), "keyid": ""}],
    }


def _key_bundle_json(
    key: PrivateKey, envelope: Mapping[str, Any], tlog_entry: Mapping[str, Any] | None
) -> bytes:
    doc = {
        "mediaType": BUNDLE_V03_MEDIA_TYPE,
        "verificationMaterial": {
            "publicKey": {"hint": _key_hint(key.public_key())},
            "tlogEntries": [dict(tlog_entry)] if tlog_entry else [],
        },
        "dsseEnvelope": dict(envelope),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- Rekor upload


class RekorUploader:
    """Sends entries to a Rekor v1 log (``POST /api/v1/log/entries``) for key-signed signatures.

    ``hashedrekord`` entries give the legacy ``dev.sigstore.cosign/bundle``
    annotation (the signed entry timestamp); ``dsse`` entries give a bundle
    ``tlogEntries`` item.  Keyless signing does not use this: sigstore-python
    talks to Rekor itself.
    """

    def __init__(self, url: str = DEFAULT_REKOR_URL, *, timeout: float = 60.0, verify: bool | str = True) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.verify = verify

    async def _create(self, proposed: Mapping[str, Any]) -> dict[str, Any]:
        import httpx

        endpoint = f"{self.url}/api/v1/log/entries"
        try:
            async with httpx.AsyncClient(timeout=self.timeout, verify=self.verify) as client:
                resp = await client.post(endpoint, json=dict(proposed), headers={"Accept": "application/json"})
                if resp.status_code == 409 and resp.headers.get("location"):
                    resp = await client.get(httpx.URL(endpoint).join(resp.headers["location"]))
        except httpx.HTTPError as exc:
            raise RegtoolError(f"Rekor upload to {self.url} failed: {type(exc).__name__}: {exc}") from None
        if resp.status_code not in (200, 201):
            raise RegtoolError(f"Rekor {self.url} refused the entry: HTTP {resp.status_code} {resp.text[:200]}")
        try:
            doc = resp.json()
            (entry,) = doc.values()
            for name in ("body", "integratedTime", "logID", "logIndex", "verification"):
                if name not in entry:
                    raise KeyError(name)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise RegtoolError(f"Rekor {self.url} sent an unexpected answer") from None
        if not isinstance(entry, dict):
            raise RegtoolError(f"Rekor {self.url} sent an unexpected answer")
        return entry

    async def upload_hashedrekord(self, payload: bytes, signature: bytes, public_key: PublicKey) -> str:
        """Log a signature over ``payload``; returns the cosign ``bundle`` annotation (SET + entry)."""
        proposed = {
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}},
                "signature": {
                    "content": b64encode_std(signature),
                    "publicKey": {"content": b64encode_std(public_key_pem(public_key))},
                },
            },
        }
        entry = await self._create(proposed)
        try:
            set_b64 = entry["verification"]["signedEntryTimestamp"]
            bundle = {
                "SignedEntryTimestamp": str(set_b64),
                "Payload": {
                    "body": str(entry["body"]),
                    "integratedTime": int(entry["integratedTime"]),
                    "logIndex": int(entry["logIndex"]),
                    "logID": str(entry["logID"]),
                },
            }
        except (KeyError, TypeError, ValueError):
            raise RegtoolError(f"Rekor {self.url} sent no signed entry timestamp") from None
        return go_json_dumps(bundle)

    async def upload_dsse(self, envelope: Mapping[str, Any], public_key: PublicKey) -> dict[str, Any]:
        """Log a DSSE envelope; returns the bundle ``tlogEntries`` item (protobuf JSON)."""
        proposed = {
            "apiVersion": "0.0.1",
            "kind": "dsse",
            "spec": {
                "proposedContent": {
                    "envelope": json.dumps(dict(envelope), separators=(",", ":")),
                    "verifiers": [b64encode_std(public_key_pem(public_key))],
                }
            },
        }
        entry = await self._create(proposed)
        try:
            out: dict[str, Any] = {
                "logIndex": str(int(entry["logIndex"])),
                "logId": {"keyId": b64encode_std(bytes.fromhex(str(entry["logID"])))},
                "kindVersion": {"kind": "dsse", "version": "0.0.1"},
                "integratedTime": str(int(entry["integratedTime"])),
                "inclusionPromise": {"signedEntryTimestamp": str(entry["verification"]["signedEntryTimestamp"])},
                "canonicalizedBody": str(entry["body"]),
            }
            proof = entry["verification"].get("inclusionProof")
            if isinstance(proof, dict):
                out["inclusionProof"] = {
                    "logIndex": str(int(proof["logIndex"])),
                    "rootHash": b64encode_std(bytes.fromhex(proof["rootHash"])),
                    "treeSize": str(int(proof["treeSize"])),
                    "hashes": [b64encode_std(bytes.fromhex(h)) for h in proof.get("hashes") or []],
                    "checkpoint": {"envelope": str(proof.get("checkpoint", ""))},
                }
        except (KeyError, TypeError, ValueError, AttributeError):
            raise RegtoolError(f"Rekor {self.url} sent an incomplete log entry") from None
        return out


# --------------------------------------------------------------------------- signers


class ImageSigner(ABC):
    """Makes legacy signatures and bundles, and recognises its own earlier ones."""

    description: str = ""

    @abstractmethod
    async def sign_payload(self, payload: bytes) -> Signature:
        """A simple-signing signature (with its annotations) over ``payload``."""

    @abstractmethod
    async def sign_statement(self, statement: bytes) -> bytes:
        """A Sigstore bundle (JSON) whose DSSE envelope signs the in-toto ``statement``."""

    @abstractmethod
    def signed_by_me(self, sig: Signature) -> bool:
        """Whether ``sig`` verifies with this signer's key (or certificate identity)."""

    @abstractmethod
    def bundle_signed_by_me(self, bundle_json: bytes, statement: bytes) -> bool:
        """Whether the bundle signs exactly ``statement`` with this signer's key (or identity)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (sigstore's signing session)."""


def _bundle_envelope(bundle_json: bytes) -> tuple[dict[str, Any], dict[str, Any]] | None:
    try:
        doc = json.loads(bundle_json)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    env = doc.get("dsseEnvelope")
    material = doc.get("verificationMaterial")
    if not isinstance(env, dict) or not isinstance(material, dict):
        return None
    return env, material


def _envelope_signs(env: Mapping[str, Any], statement: bytes, key: PublicKey) -> bool:
    try:
        if env.get("payloadType") != IN_TOTO_PAYLOAD_TYPE:
            return False
        if b64decode_std(str(env.get("payload")), "DSSE payload") != statement:
            return False
        pae = dsse_pae(IN_TOTO_PAYLOAD_TYPE, statement)
        for item in env.get("signatures") or []:
            if isinstance(item, dict) and verify_raw(key, b64decode_std(str(item.get("sig")), "DSSE sig"), pae):
                return True
    except RegtoolError:
        return False
    return False


class KeySigner(ImageSigner):
    """Signs with a cosign private key; ``rekor`` (``--tlog-upload``) also logs each signature."""

    def __init__(self, key: PrivateKey, *, rekor: RekorUploader | None = None) -> None:
        self.key = key
        self.public_key: PublicKey = check_public_key(key.public_key())
        self.rekor = rekor
        self.description = f"key {key_fingerprint(self.public_key)}"

    async def sign_payload(self, payload: bytes) -> Signature:
        raw = sign_payload(self.key, payload)
        annotations = {SIGNATURE_ANNOTATION: b64encode_std(raw)}
        if self.rekor is not None:
            annotations[BUNDLE_ANNOTATION] = await self.rekor.upload_hashedrekord(payload, raw, self.public_key)
        return Signature.from_annotations(payload, annotations)

    async def sign_statement(self, statement: bytes) -> bytes:
        envelope = _key_envelope(self.key, statement)
        entry = await self.rekor.upload_dsse(envelope, self.public_key) if self.rekor is not None else None
        return _key_bundle_json(self.key, envelope, entry)

    def signed_by_me(self, sig: Signature) -> bool:
        if sig.source_format != "simplesigning":
            return False
        try:
            raw = b64decode_std(sig.signature, "signature")
        except RegtoolError:
            return False
        return verify_raw(self.public_key, raw, sig.payload)

    def bundle_signed_by_me(self, bundle_json: bytes, statement: bytes) -> bool:
        parts = _bundle_envelope(bundle_json)
        return parts is not None and _envelope_signs(parts[0], statement, self.public_key)


class KeylessBackend(Protocol):
    """What :class:`KeylessSigner` needs from sigstore-python's ``Signer`` (tests substitute it)."""

    def sign_artifact(self, input_: bytes) -> Any: ...

    def sign_dsse(self, input_: Any) -> Any: ...


def _bundle_text(bundle: Any) -> bytes:
    if isinstance(bundle, bytes):
        return bundle
    if isinstance(bundle, str):
        return bundle.encode()
    return str(bundle.to_json()).encode()


class KeylessSigner(ImageSigner):
    """Signs with a short-lived Fulcio certificate for an OIDC identity, logged in Rekor.

    ``backend`` is a sigstore-python ``Signer`` (see :func:`make_keyless_signer`);
    its calls block on the network, so they run in a worker thread.
    ``identity``/``issuer`` are the token's (what the certificate will name),
    used to recognise this signer's earlier signatures. ``trusted_root``
    (trusted-root JSON) lets the legacy annotations carry the Fulcio chain
    (root last). ``statement_factory`` wraps statement bytes for
    ``backend.sign_dsse`` (default: ``sigstore.dsse.Statement``);
    ``on_close`` ends the signing session.
    """

    def __init__(
        self,
        backend: KeylessBackend,
        *,
        identity: str,
        issuer: str,
        trusted_root: bytes | None = None,
        statement_factory: Callable[[bytes], Any] | None = None,
        on_close: Callable[[], object] | None = None,
    ) -> None:
        self.backend = backend
        self.identity = identity
        self.issuer = issuer
        self.trusted_root = trusted_root
        self._statement_factory = statement_factory
        self._on_close = on_close
        self.description = f"{identity} (issuer {issuer})"

    async def sign_payload(self, payload: bytes) -> Signature:
        bundle = await anyio.to_thread.run_sync(self.backend.sign_artifact, payload)
        annotations = bundle_to_legacy_annotations(_bundle_text(bundle), trusted_root=self.trusted_root)
        return Signature.from_annotations(payload, annotations)

    async def sign_statement(self, statement: bytes) -> bytes:
        if self._statement_factory is not None:
            wrapped = self._statement_factory(statement)
        else:
            from sigstore.dsse import Statement

            wrapped = Statement(statement)
        bundle = await anyio.to_thread.run_sync(self.backend.sign_dsse, wrapped)
        return _bundle_text(bundle)

    def _cert_is_mine(self, cert: x509.Certificate) -> bool:
        try:
            return self.identity in certificate_identities(cert) and certificate_oidc_issuer(cert) == self.issuer
        except RegtoolError:
            return False

    def signed_by_me(self, sig: Signature) -> bool:
        if sig.source_format != "simplesigning" or not sig.certificate:
            return False
        try:
            cert = x509.load_pem_x509_certificate(sig.certificate.encode())
            key = check_public_key(cert.public_key())
            raw = b64decode_std(sig.signature, "signature")
        except (ValueError, RegtoolError):
            return False
        return self._cert_is_mine(cert) and verify_raw(key, raw, sig.payload)

    def bundle_signed_by_me(self, bundle_json: bytes, statement: bytes) -> bool:
        parts = _bundle_envelope(bundle_json)
        if parts is None:
            return False
        env, material = parts
        raw = None
        if isinstance(material.get("certificate"), dict):
            raw = material["certificate"].get("rawBytes")
        elif isinstance(material.get("x509CertificateChain"), dict):
            certs = material["x509CertificateChain"].get("certificates") or [{}]
            raw = certs[0].get("rawBytes") if isinstance(certs[0], dict) else None
        try:
            cert = x509.load_der_x509_certificate(b64decode_std(str(raw), "certificate"))
            key = check_public_key(cert.public_key())
        except (ValueError, RegtoolError):
            return False
        return self._cert_is_mine(cert) and _envelope_signs(env, statement, key)

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()
            self._on_close = None


# --------------------------------------------------------------------------- OIDC and keyless set-up


def ambient_identity_token(environ: Mapping[str, str] | None = None) -> str | None:
    """The raw OIDC token from ``SIGSTORE_ID_TOKEN`` or ambient CI credentials, or ``None``.

    Ambient detection is sigstore-python's ``detect_credential`` (GitHub
    Actions, GitLab CI, Buildkite, Google Cloud, CircleCI); an environment
    that looks like a CI but cannot hand out a token is an error (for
    GitHub Actions usually a missing ``id-token: write`` permission).
    """
    env = os.environ if environ is None else environ
    token = env.get("SIGSTORE_ID_TOKEN")
    if token:
        return token.strip()
    try:
        from sigstore.oidc import IdentityError, detect_credential
    except ImportError:
        return None
    try:
        found = detect_credential()
    except IdentityError as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise RegtoolError(f"ambient OIDC credential detection failed: {message}") from None
    return found or None


def _require_sigstore() -> None:
    try:
        import sigstore  # noqa: F401
    except ImportError:
        raise UsageError("keyless signing needs the 'sigstore' package (pip install 'regtool[keyless]')") from None


def identity_token(*, interactive: bool | None = None, oidc_url: str | None = None) -> Any:
    """A sigstore ``IdentityToken``: from the environment, ambient CI, or (on a terminal) the browser flow."""
    _require_sigstore()
    from sigstore.oidc import IdentityError, IdentityToken, Issuer

    raw = ambient_identity_token()
    if raw is None:
        if interactive is None:
            interactive = sys.stdin.isatty() and sys.stderr.isatty()
        if not interactive:
            raise UsageError(
                "no OIDC identity token: set SIGSTORE_ID_TOKEN, run in a CI with OIDC credentials, "
                "or run on a terminal for the interactive flow"
            )
        try:
            if oidc_url is None:
                from sigstore.models import ClientTrustConfig

                oidc_url = ClientTrustConfig.production().signing_config.get_oidc_url()
            return Issuer(oidc_url).identity_token()
        except Exception as exc:  # sigstore raises several unrelated types here
            raise RegtoolError(f"interactive OIDC flow failed: {' '.join(str(exc).split())}") from None
    try:
        return IdentityToken(raw)
    except IdentityError as exc:
        raise UsageError(f"OIDC identity token is not usable: {' '.join(str(exc).split())}") from None


def make_keyless_signer(token: Any, *, legacy: bool = True, staging: bool = False) -> KeylessSigner:
    """A :class:`KeylessSigner` on the public-good (or staging) Sigstore instance.

    Fetches the trust configuration over TUF, then a Fulcio certificate for
    ``token``. ``legacy`` pins Rekor v1, whose signed entry timestamps the
    legacy ``.sig`` bundle annotation needs.
    """
    _require_sigstore()
    from sigstore.models import ClientTrustConfig
    from sigstore.sign import SigningContext

    try:
        config = ClientTrustConfig.staging() if staging else ClientTrustConfig.production()
        if legacy:
            config.force_tlog_version = 1
        context = SigningContext.from_trust_config(config)
        root_json: bytes | None = None
        inner = getattr(config.trusted_root, "_inner", None)
        if inner is not None and hasattr(inner, "to_json"):
            root_json = str(inner.to_json()).encode()
        stack = contextlib.ExitStack()
        backend = stack.enter_context(context.signer(token, cache=True))
    except UsageError:
        raise
    except Exception as exc:  # network and sigstore errors of many kinds
        raise RegtoolError(f"keyless signing set-up failed: {' '.join(str(exc).split())}") from None
    return KeylessSigner(
        backend,
        identity=str(token.identity),
        issuer=str(token.federated_issuer),
        trusted_root=root_json,
        on_close=stack.close,
    )


# --------------------------------------------------------------------------- signing images


@dataclass(frozen=True)
class SignOptions:
    """What to sign and how (``regtool sign`` flags; a sync ``sign:`` block)."""

    identity: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    recursive: bool = True
    bundle_format: BundleFormat = "legacy"

    def __post_init__(self) -> None:
        if self.bundle_format not in BUNDLE_FORMATS:
            raise UsageError(f"unknown bundle format {self.bundle_format!r} (legacy, v3 or both)")
        for key, value in self.annotations.items():
            if not isinstance(key, str) or not key or not isinstance(value, str):
                raise UsageError("signature annotations must be non-empty string keys with string values")


@dataclass(frozen=True)
class SignedManifest:
    """One manifest signed (``added``) or found already signed by the same signer (``present``)."""

    digest: str
    format: Literal["legacy", "v3"]
    action: Literal["added", "present"]
    identity: str


@dataclass
class SignResult:
    image: str
    digest: str
    identity: str
    signer: str
    manifests: list[SignedManifest] = field(default_factory=list)

    @property
    def added(self) -> int:
        return sum(1 for m in self.manifests if m.action == "added")


def signing_identity(image: ImageRef, override: str | None = None) -> str:
    """The ``docker-reference`` to sign: ``--identity``, else ``registry/repo:tag`` (or ``@digest``).

    ``oci:PATH:NAME`` uses NAME when it is a full reference
    (``registry.example.com/app:1``); ``dir:`` and other layouts need ``override``.
    """
    from regtool.errors import InvalidReference
    from regtool.reference import parse_reference

    if override is not None:
        try:
            ref = parse_reference(override)
        except InvalidReference as exc:
            raise UsageError(f"invalid --identity: {exc}") from None
        return str(ref)
    if image.transport == "docker" and image.reference is not None:
        ref = image.reference
        if ref.tag:
            return f"{ref.name}:{ref.tag}"
        if ref.digest:
            return f"{ref.name}@{ref.digest}"
        return f"{ref.name}:latest"
    if image.transport == "oci" and image.layout_ref and "/" in image.layout_ref:
        with contextlib.suppress(InvalidReference):
            ref = parse_reference(image.layout_ref)
            if ref.tag or ref.digest:
                return str(ref)
    raise UsageError(f"{image} has no registry name of its own: give the signed name with --identity REF")


async def _manifests(store: SignatureStore, top: Manifest, recursive: bool) -> list[Manifest]:
    out = [top]
    if not recursive:
        return out
    seen = {top.digest}

    async def walk(index: Manifest, depth: int) -> None:
        if depth > MAX_INDEX_DEPTH:
            raise RegtoolError(f"index {index.digest} nests deeper than {MAX_INDEX_DEPTH} levels")
        for child in index.children():
            if child.digest in seen:
                continue
            seen.add(child.digest)
            manifest = await store.get_manifest(child.digest)
            out.append(manifest)
            if manifest.is_index:
                await walk(manifest, depth + 1)

    if top.is_index:
        await walk(top, 1)
    return out


async def sign_image(
    store: SignatureStore,
    signer: ImageSigner,
    options: SignOptions,
    *,
    identity: str,
    image_name: str | None = None,
) -> SignResult:
    """Sign the store's named image (and every manifest below an index when ``options.recursive``).

    ``identity`` is the signed ``docker-reference`` (see :func:`signing_identity`).
    Signatures already present from the same signer for the same payload or
    statement are kept and not duplicated.
    """
    from regtool.reference import parse_reference

    want_legacy = options.bundle_format in ("legacy", "both")
    want_v3 = options.bundle_format in ("v3", "both")
    if want_v3 and not store.supports_bundles:
        raise UsageError(f"{store.name}: dir: images have no place for Sigstore bundles (use --bundle-format legacy)")
    parse_reference(identity)  # validated before anything is signed
    top = await store.top()
    result = SignResult(image_name or store.name, top.digest, identity, signer.description)
    optional = dict(sorted(options.annotations.items())) or None
    for manifest in await _manifests(store, top, options.recursive):
        existing = await store.read(manifest.digest)
        if want_legacy:
            payload = make_payload(identity, manifest.digest, optional)
            if any(
                f.signature is not None and f.signature.payload == payload and signer.signed_by_me(f.signature)
                for f in existing
            ):
                result.manifests.append(SignedManifest(manifest.digest, "legacy", "present", identity))
            else:
                sig = await signer.sign_payload(payload)
                await store.add_signatures(manifest.digest, [sig])
                result.manifests.append(SignedManifest(manifest.digest, "legacy", "added", identity))
                log.info("signed %s (legacy) as %s", manifest.digest, identity)
        if want_v3:
            statement = make_cosign_v3_statement(manifest.digest, identity)
            if any(
                f.signature is not None
                and f.format == "bundle"
                and signer.bundle_signed_by_me(f.signature.payload, statement)
                for f in existing
            ):
                result.manifests.append(SignedManifest(manifest.digest, "v3", "present", identity))
            else:
                bundle = await signer.sign_statement(statement)
                await store.add_bundle(
                    manifest.descriptor(),
                    bundle,
                    {BUNDLE_CONTENT_ANNOTATION: "dsse-envelope", BUNDLE_PREDICATE_ANNOTATION: COSIGN_SIGN_PREDICATE},
                )
                result.manifests.append(SignedManifest(manifest.digest, "v3", "added", identity))
                log.info("signed %s (v3 bundle) as %s", manifest.digest, identity)
    return result
