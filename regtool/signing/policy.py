"""Build verification policies and signers from plain options (files, identities, switches).

This is the one place that turns what a user names (key files, trusted roots,
Fulcio and Rekor material, PKI roots, a cosign key and its password, keyless
signing) into the objects the signing library works with:

* :func:`build_policy` → a :class:`~regtool.signing.verify.VerifyPolicy` and
  the :class:`~regtool.signing.gate.SigstoreTrust` that goes with it, for
  ``regtool verify``, the ``copy --require-signed`` gate and a sync config's
  ``verify:`` block;
* :func:`build_signer` → an :class:`~regtool.signing.sign.ImageSigner` for
  ``regtool sign`` and a sync config's ``sign:`` block.

Everything is read and checked here, before any registry traffic; every
problem is a one-line :class:`~regtool.errors.UsageError`.  Messages name the
options as the caller spells them: ``option_prefix="--"`` (the default) gives
command-line flags (``--key``), ``""`` gives config keys (``key``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

import anyio.to_thread
from cryptography import x509

from regtool.errors import RegtoolError, UsageError
from regtool.signing.gate import SigstoreTrust, public_good_trusted_root
from regtool.signing.keys import (
    COSIGN_PEM_TYPE,
    SIGSTORE_PEM_TYPE,
    PublicKey,
    load_private_key,
    load_public_keys,
    password_from_env_or_prompt,
    pem_blocks,
)
from regtool.signing.rekor import RekorKey, load_rekor_keys, rekor_keys_from_trusted_root
from regtool.signing.sign import (
    BUNDLE_FORMATS,
    DEFAULT_REKOR_URL,
    BundleFormat,
    ImageSigner,
    KeylessSigner,
    KeySigner,
    RekorUploader,
    make_keyless_signer,
)
from regtool.signing.sign import identity_token as discover_identity_token
from regtool.signing.verify import (
    IDENTITY_MATCHES,
    VerifyPolicy,
    fulcio_material_from_trusted_root,
    load_certificates,
)

if TYPE_CHECKING:
    from regtool.signing.models import Signature

PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "DeferredKeylessSigner",
    "PathLike",
    "build_policy",
    "build_signer",
    "key_is_encrypted",
    "read_file",
]


def read_file(path: PathLike, what: str) -> bytes:
    """A file's bytes; UsageError ``cannot read WHAT PATH: REASON`` (one line) otherwise."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {os.fspath(path)}: {exc.strerror or exc}") from None


def _paths(value: PathLike | Sequence[PathLike] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    return [os.fspath(v) for v in value if os.fspath(v)]


def _opt_path(value: PathLike | None) -> str | None:
    return None if value is None else os.fspath(value)


# --------------------------------------------------------------------------- verification


def build_policy(
    *,
    key: PathLike | Sequence[PathLike] | None = None,
    certificate_identity: str | None = None,
    certificate_identity_regexp: str | None = None,
    certificate_oidc_issuer: str | None = None,
    certificate_oidc_issuer_regexp: str | None = None,
    trusted_root: PathLike | None = None,
    fulcio_root: PathLike | None = None,
    rekor_public_key: PathLike | None = None,
    ca_roots: PathLike | None = None,
    ca_intermediates: PathLike | None = None,
    require_tlog: bool = False,
    insecure_ignore_tlog: bool = False,
    signed_identity: str | None = None,
    identity_match: str = "repo-digest-or-exact",
    annotations: Mapping[str, str] | None = None,
    option_prefix: str = "--",
) -> tuple[VerifyPolicy, SigstoreTrust]:
    """The verification policy and Sigstore trust these options describe (``regtool verify``'s flags).

    Exactly one trust source: ``key`` (one file or several; each may hold
    several ``PUBLIC KEY`` blocks, any of which may verify); keyless
    (``certificate_identity[_regexp]`` and ``certificate_oidc_issuer[_regexp]``
    against ``trusted_root``, or ``fulcio_root`` + ``rekor_public_key``, or
    the public-good root embedded in sigstore-python); or a private PKI
    (``ca_roots`` [+ ``ca_intermediates``] with a certificate identity).
    Files are read now; any problem is a one-line UsageError.
    """
    p = option_prefix
    keys_paths = _paths(key)
    trusted_root_path = _opt_path(trusted_root)
    identity_opts = (certificate_identity, certificate_identity_regexp, certificate_oidc_issuer,
                     certificate_oidc_issuer_regexp)
    trust_sources = [f"{p}{name}" for name, v in (("key", keys_paths), ("ca-roots", ca_roots),
                                                 ("fulcio-root", fulcio_root)) if v]
    if len(trust_sources) > 1:
        raise UsageError(f"{' and '.join(trust_sources)} are mutually exclusive")
    ignore = bool(insecure_ignore_tlog)
    if ignore and require_tlog:
        raise UsageError(f"{p}require-tlog and {p}insecure-ignore-tlog are mutually exclusive")
    if identity_match not in IDENTITY_MATCHES:
        raise UsageError(f"unknown {p}identity-match {identity_match!r} ({', '.join(IDENTITY_MATCHES)})")
    for name, value in (("certificate-identity", certificate_identity),
                        ("certificate-identity-regexp", certificate_identity_regexp),
                        ("certificate-oidc-issuer", certificate_oidc_issuer),
                        ("certificate-oidc-issuer-regexp", certificate_oidc_issuer_regexp),
                        ("signed-identity", signed_identity)):
        if value is not None and not isinstance(value, str):
            raise UsageError(f"{p}{name} must be a string")
    common_kw: dict[str, Any] = {
        "require_tlog": bool(require_tlog),
        "signed_identity": signed_identity,
        "identity_match": identity_match,
        "annotations": dict(annotations or {}),
    }
    cert_kw: dict[str, Any] = {
        "cert_identity": certificate_identity,
        "cert_identity_regexp": certificate_identity_regexp,
        "cert_oidc_issuer": certificate_oidc_issuer,
        "cert_oidc_issuer_regexp": certificate_oidc_issuer_regexp,
    }
    root_doc = read_file(trusted_root_path, "trusted root") if trusted_root_path else None
    rekor: tuple[RekorKey, ...] = ()
    if rekor_public_key:
        rekor = tuple(load_rekor_keys(read_file(rekor_public_key, "Rekor public key")))
    elif root_doc is not None:
        rekor = tuple(rekor_keys_from_trusted_root(root_doc))

    if keys_paths:
        if any(v is not None for v in identity_opts):
            raise UsageError(f"certificate identity {'flags' if p else 'options'} do not apply to {p}key verification")
        public_keys: list[PublicKey] = []
        for path in keys_paths:
            public_keys.extend(load_public_keys(read_file(path, "public key")))
        if ignore:
            rekor = ()
        elif require_tlog and not rekor:
            rekor = tuple(rekor_keys_from_trusted_root(public_good_trusted_root()))
        policy = VerifyPolicy(public_keys=tuple(public_keys), rekor_keys=rekor, **common_kw)
        return policy, SigstoreTrust(trusted_root_path, public_good=not rekor_public_key, ignore_tlog=ignore)

    if ca_roots:
        roots = tuple(load_certificates(read_file(ca_roots, "CA roots")))
        inter = tuple(load_certificates(read_file(ca_intermediates, "CA intermediates"))) if ca_intermediates \
            else ()
        if require_tlog and not rekor:
            raise UsageError(f"{p}require-tlog with {p}ca-roots needs {p}rekor-public-key or {p}trusted-root")
        policy = VerifyPolicy(pki_roots=roots, pki_intermediates=inter, rekor_keys=() if ignore else rekor,
                              **cert_kw, **common_kw)
        return policy, SigstoreTrust(public_good=False, ignore_tlog=ignore)
    if ca_intermediates:
        raise UsageError(f"{p}ca-intermediates needs {p}ca-roots")

    if any(v is not None for v in identity_opts):
        if ignore:
            raise UsageError(f"{p}insecure-ignore-tlog cannot be used for keyless verification: the Rekor entry "
                             "is what proves the certificate was valid when the image was signed")
        if fulcio_root:
            if not rekor_public_key:
                raise UsageError(f"{p}fulcio-root needs {p}rekor-public-key")
            certs = load_certificates(read_file(fulcio_root, "Fulcio root"))
            fulcio_roots = tuple(c for c in certs if c.issuer == c.subject)
            fulcio_inter = tuple(c for c in certs if c.issuer != c.subject)
            policy = VerifyPolicy(fulcio_roots=fulcio_roots, fulcio_intermediates=fulcio_inter, rekor_keys=rekor,
                                  **cert_kw, **common_kw)
            return policy, SigstoreTrust(public_good=False)
        doc = root_doc if root_doc is not None else public_good_trusted_root()
        roots_list, inter_list = fulcio_material_from_trusted_root(doc)
        if not rekor:
            rekor = tuple(rekor_keys_from_trusted_root(doc))
        certs_roots: tuple[x509.Certificate, ...] = tuple(roots_list)
        policy = VerifyPolicy(fulcio_roots=certs_roots, fulcio_intermediates=tuple(inter_list), rekor_keys=rekor,
                              **cert_kw, **common_kw)
        return policy, SigstoreTrust(trusted_root_path, public_good=trusted_root_path is None)
    if p:
        raise UsageError(
            f"verification needs {p}key FILE, or {p}certificate-identity[-regexp] with "
            f"{p}certificate-oidc-issuer[-regexp] (keyless), or {p}ca-roots FILE (private PKI)"
        )
    raise UsageError(
        "verification needs key, or certificate-identity[-regexp] with certificate-oidc-issuer[-regexp] "
        "(keyless), or ca-roots (private PKI)"
    )


# --------------------------------------------------------------------------- signing


def key_is_encrypted(pem: bytes) -> bool:
    """Whether a private key file is a cosign-encrypted one (and so needs a password)."""
    try:
        blocks = pem_blocks(pem)
    except UsageError:
        return True  # let load_private_key say what is wrong with it
    return not blocks or blocks[0][0] in (SIGSTORE_PEM_TYPE, COSIGN_PEM_TYPE)


def _sigstore_token(raw: str) -> Any:
    try:
        from sigstore.oidc import IdentityError, IdentityToken
    except ImportError:
        raise UsageError("keyless signing needs the 'sigstore' package (pip install 'regtool[keyless]')") from None
    try:
        return IdentityToken(raw.strip())
    except IdentityError as exc:
        raise UsageError(f"OIDC identity token is not usable: {' '.join(str(exc).split())}") from None


class _NoBackend:
    """Stands in for sigstore's signer in a :class:`KeylessSigner` that only recognises signatures."""

    def sign_artifact(self, input_: bytes) -> Any:
        raise RegtoolError("keyless signer is not set up")

    def sign_dsse(self, input_: Any) -> Any:
        raise RegtoolError("keyless signer is not set up")


class DeferredKeylessSigner(ImageSigner):
    """Keyless signing whose Sigstore session starts at the first signature, not when it is built.

    The identity token is checked when the signer is built (present, not
    expired, audience ``sigstore``: all offline), so a sync config is refused
    before any traffic; the trust configuration and the Fulcio certificate are
    fetched only when something is signed (a ``--dry-run`` or a run with
    nothing to copy contacts no Sigstore service).  A failed set-up is
    remembered and reported for every later signature instead of retried.
    ``setup`` (default :func:`~regtool.signing.sign.make_keyless_signer`) is
    called once, in a worker thread.
    """

    def __init__(
        self,
        token: Any,
        *,
        legacy: bool = True,
        setup: Callable[..., KeylessSigner] = make_keyless_signer,
    ) -> None:
        self.token = token
        self.legacy = legacy
        self._setup = setup
        self._lock = threading.Lock()
        self._ready: KeylessSigner | None = None
        self._failure: str | None = None
        self._closed = False
        self._recognizer = KeylessSigner(
            _NoBackend(), identity=str(token.identity), issuer=str(token.federated_issuer)
        )
        self.identity = self._recognizer.identity
        self.issuer = self._recognizer.issuer
        self.description = self._recognizer.description

    @property
    def started(self) -> bool:
        """Whether the Sigstore session has been set up."""
        return self._ready is not None

    def _ensure(self) -> KeylessSigner:
        with self._lock:
            if self._closed:
                raise RegtoolError("keyless signer is closed")
            if self._failure is not None:
                raise RegtoolError(self._failure)
            if self._ready is None:
                try:
                    self._ready = self._setup(self.token, legacy=self.legacy)
                except RegtoolError as exc:
                    self._failure = " ".join(str(exc).split())
                    raise
            return self._ready

    async def _signer(self) -> KeylessSigner:
        if self._ready is not None:
            return self._ready
        return await anyio.to_thread.run_sync(self._ensure)

    async def sign_payload(self, payload: bytes) -> Signature:
        return await (await self._signer()).sign_payload(payload)

    async def sign_statement(self, statement: bytes) -> bytes:
        return await (await self._signer()).sign_statement(statement)

    def signed_by_me(self, sig: Signature) -> bool:
        return self._recognizer.signed_by_me(sig)

    def bundle_signed_by_me(self, bundle_json: bytes, statement: bytes) -> bool:
        return self._recognizer.bundle_signed_by_me(bundle_json, statement)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            ready, self._ready = self._ready, None
        if ready is not None:
            ready.close()


def build_signer(
    *,
    key: PathLike | None = None,
    password: bytes | str | None = None,
    keyless: bool = False,
    identity_token: str | Any | None = None,
    tlog_upload: bool = False,
    rekor_url: str = DEFAULT_REKOR_URL,
    bundle_format: BundleFormat = "legacy",
    defer_keyless: bool = False,
) -> ImageSigner:
    """The signer ``regtool sign`` (or a sync ``sign:`` block) describes.

    ``key``: a cosign private key file, decrypted with ``password`` (``None``:
    ``COSIGN_PASSWORD``, else a prompt, as the CLI does); ``tlog_upload`` logs
    each signature in the Rekor at ``rekor_url``.  ``keyless``: a Fulcio
    certificate for ``identity_token`` (a raw OIDC token or a sigstore
    ``IdentityToken``; ``None``: ``SIGSTORE_ID_TOKEN``, ambient CI
    credentials, or on a terminal the browser flow); ``bundle_format`` other
    than ``v3`` pins Rekor v1 (the legacy annotation needs a signed entry
    timestamp).  With ``defer_keyless`` the Sigstore session starts at the
    first signature (:class:`DeferredKeylessSigner`); otherwise it starts now.
    Call ``close()`` on the signer when done.
    """
    if bool(key) == bool(keyless):
        raise UsageError("signing needs exactly one of a key and keyless")
    if bundle_format not in BUNDLE_FORMATS:
        raise UsageError(f"unknown bundle format {bundle_format!r} (legacy, v3 or both)")
    if key:
        pem = read_file(key, "private key")
        if password is None:
            secret = password_from_env_or_prompt(confirm=False)
        else:
            secret = password.encode("utf-8") if isinstance(password, str) else password
        private = load_private_key(pem, secret)
        return KeySigner(private, rekor=RekorUploader(rekor_url) if tlog_upload else None)
    if identity_token is None:
        token = discover_identity_token()
    elif isinstance(identity_token, str):
        token = _sigstore_token(identity_token)
    else:
        token = identity_token
    legacy = bundle_format != "v3"
    if defer_keyless:
        return DeferredKeylessSigner(token, legacy=legacy)
    return make_keyless_signer(token, legacy=legacy)
