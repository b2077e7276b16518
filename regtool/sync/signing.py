"""A sync mirror entry's ``verify:`` and ``sign:`` blocks: build once, then gate and sign each image.

:func:`verify_policy_from_config` and :func:`signer_from_config` turn the
validated blocks of :class:`~regtool.sync.config.MirrorEntry` (keys as spelled
in the file, paths already resolved) into a policy and a signer.  They read
every file and secret they need (keys, trusted roots, certificates, the key's
password from ``password-env`` / ``password-file``, the OIDC token), so call
them once per mirror entry before any traffic: a problem is a one-line
:class:`~regtool.errors.UsageError` (exit 2).

:func:`verify_step` is the gate in front of a copy (the entry's images are
copied only with an accepted signature) and :func:`sign_step` signs an image
at a target after it was copied.  Keyless signing starts its Sigstore session
at the first signature (:class:`~regtool.signing.policy.DeferredKeylessSigner`),
so building the signer needs no network.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from regtool.errors import InvalidReference, RegtoolError, UsageError
from regtool.reference import ImageRef, parse_reference
from regtool.registry import RegistryClient
from regtool.signing.gate import SigstoreTrust, require_signed
from regtool.signing.policy import build_policy, build_signer, key_is_encrypted, read_file
from regtool.signing.sign import (
    BUNDLE_FORMATS,
    BundleFormat,
    ImageSigner,
    SignOptions,
    SignResult,
    ambient_identity_token,
    sign_image,
    signing_identity,
)
from regtool.signing.storage import open_signature_store
from regtool.signing.verify import IDENTITY_MATCHES, VerifiedSignature, VerifyPolicy
from regtool.sync.config import CredentialSource, MirrorEntry
from regtool.transports.base import ImageSource

__all__ = [
    "SIGN_KEYS",
    "VERIFY_KEYS",
    "Gate",
    "SyncSigning",
    "sign_step",
    "signer_from_config",
    "verify_policy_from_config",
    "verify_step",
]

DEFAULT_PASSWORD_ENV = "COSIGN_PASSWORD"
DEFAULT_TOKEN_ENV = "SIGSTORE_ID_TOKEN"

#: The keys of a ``verify:`` block and their types ("path" is a non-empty string).
VERIFY_KEYS: Mapping[str, str] = {
    "key": "paths",
    "certificate-identity": "str",
    "certificate-identity-regexp": "str",
    "certificate-oidc-issuer": "str",
    "certificate-oidc-issuer-regexp": "str",
    "trusted-root": "path",
    "fulcio-root": "path",
    "rekor-public-key": "path",
    "ca-roots": "path",
    "ca-intermediates": "path",
    "require-tlog": "bool",
    "insecure-ignore-tlog": "bool",
    "signed-identity": "str",
    "identity-match": "str",
    "annotations": "annotations",
    "recursive": "bool",
}

#: The keys of a ``sign:`` block and their types.
SIGN_KEYS: Mapping[str, str] = {
    "key": "path",
    "password-env": "str",
    "password-file": "path",
    "keyless": "bool",
    "identity-token-env": "str",
    "identity": "str",
    "annotations": "annotations",
    "bundle-format": "str",
    "recursive": "bool",
    "tlog-upload": "bool",
}


def _checked(block: Mapping[str, Any], keys: Mapping[str, str], what: str) -> dict[str, Any]:
    """The block without ``x-`` keys, every value of the type its key takes."""
    if not isinstance(block, Mapping):
        raise UsageError(f"{what}: must be a mapping, not {type(block).__name__}")
    out: dict[str, Any] = {}
    for name, value in block.items():
        if not isinstance(name, str):
            raise UsageError(f"{what}: keys must be strings, not {name!r}")
        if name.startswith("x-"):
            continue
        kind = keys.get(name)
        if kind is None:
            raise UsageError(f"{what}: unknown key {name!r} (one of: {', '.join(keys)})")
        if kind == "bool":
            ok = isinstance(value, bool)
            want = "true or false"
        elif kind in ("str", "path"):
            ok = isinstance(value, str) and bool(value)
            want = "a non-empty string"
        elif kind == "paths":
            ok = (isinstance(value, str) and bool(value)) or (
                isinstance(value, (list, tuple)) and bool(value)
                and all(isinstance(v, str) and v for v in value)
            )
            want = "a path or a non-empty list of paths"
        else:  # annotations
            ok = isinstance(value, Mapping) and all(isinstance(k, str) and k and isinstance(v, str)
                                                    for k, v in value.items())
            want = "a mapping of non-empty string keys to string values"
        if not ok:
            raise UsageError(f"{what}: {name} must be {want}, not {value!r}")
        out[name] = value
    return out


def _prefixed(where: str, what: str) -> str:
    return f"{where}: {what}" if where else what


# --------------------------------------------------------------------------- verify


def verify_policy_from_config(
    block: Mapping[str, Any], *, where: str = ""
) -> tuple[VerifyPolicy, SigstoreTrust, bool]:
    """A ``verify:`` block → (policy, Sigstore trust, recursive).

    The block's keys are ``regtool verify``'s flags without ``--`` (see
    docs/sync-config.md); ``recursive: true`` requires an accepted signature on
    every platform image of an index too.  Reads every file now. ``where``
    (e.g. the entry's ``FILE:LINE``) starts error messages.
    """
    what = _prefixed(where, "verify")
    values = _checked(block, VERIFY_KEYS, what)
    match = values.get("identity-match", "repo-digest-or-exact")
    if match not in IDENTITY_MATCHES:
        raise UsageError(f"{what}: identity-match must be one of {', '.join(IDENTITY_MATCHES)}, not {match!r}")
    key = values.get("key")
    try:
        policy, trust = build_policy(
            key=list(key) if isinstance(key, (list, tuple)) else key,
            certificate_identity=values.get("certificate-identity"),
            certificate_identity_regexp=values.get("certificate-identity-regexp"),
            certificate_oidc_issuer=values.get("certificate-oidc-issuer"),
            certificate_oidc_issuer_regexp=values.get("certificate-oidc-issuer-regexp"),
            trusted_root=values.get("trusted-root"),
            fulcio_root=values.get("fulcio-root"),
            rekor_public_key=values.get("rekor-public-key"),
            ca_roots=values.get("ca-roots"),
            ca_intermediates=values.get("ca-intermediates"),
            require_tlog=values.get("require-tlog", False),
            insecure_ignore_tlog=values.get("insecure-ignore-tlog", False),
            signed_identity=values.get("signed-identity"),
            identity_match=match,
            annotations=values.get("annotations"),
            option_prefix="",
        )
    except UsageError as exc:
        raise UsageError(f"{what}: {' '.join(str(exc).split())}") from None
    return policy, trust, bool(values.get("recursive", False))


async def verify_step(
    source: ImageSource,
    digest: str,
    policy: VerifyPolicy,
    trust: SigstoreTrust,
    recursive: bool,
) -> list[VerifiedSignature]:
    """The gate before a copy: the accepted signatures of manifest ``digest`` at ``source``.

    With ``recursive`` every platform manifest of an index needs an accepted
    signature too. Raises :class:`~regtool.errors.VerificationError` (one line)
    naming, for the first manifest without one, each rejected signature and
    its reason (or that there are none). Registry errors propagate.
    """
    return await require_signed(source, digest, policy, recursive, trust=trust)


# --------------------------------------------------------------------------- sign


def _key_password(values: Mapping[str, Any], pem: bytes, environ: Mapping[str, str], what: str) -> bytes:
    env_name = values.get("password-env")
    file_name = values.get("password-file")
    if env_name is None and file_name is None:
        if DEFAULT_PASSWORD_ENV not in environ and not key_is_encrypted(pem):
            return b""  # an unencrypted PKCS#8 key needs none
        env_name = DEFAULT_PASSWORD_ENV
    source = CredentialSource(password_env=env_name, password_file=file_name)
    try:
        password = source.resolve_password(environ)
    except UsageError as exc:
        raise UsageError(f"{what}: {exc}") from None
    return (password or "").encode("utf-8")


def _keyless_token(values: Mapping[str, Any], environ: Mapping[str, str], what: str) -> str:
    env_name = values.get("identity-token-env", DEFAULT_TOKEN_ENV)
    raw = (environ.get(env_name) or "").strip()
    if raw:
        return raw
    try:
        ambient = ambient_identity_token({})  # CI detection only: the variable was looked at above
    except RegtoolError as exc:
        raise UsageError(f"{what}: {' '.join(str(exc).split())}") from None
    if not ambient:
        raise UsageError(
            f"{what}: no OIDC identity token: set {env_name} or run in a CI with OIDC credentials"
        )
    return ambient


def signer_from_config(
    block: Mapping[str, Any], environ: Mapping[str, str] = os.environ, *, where: str = ""
) -> tuple[ImageSigner, SignOptions]:
    """A ``sign:`` block → (signer, options); ``options.identity`` is the block's ``identity`` or None.

    ``key`` is loaded now with its password from ``password-env`` /
    ``password-file`` (default ``COSIGN_PASSWORD``; an unencrypted PKCS#8 key
    needs none). ``keyless: true`` takes the OIDC token from
    ``identity-token-env`` (default ``SIGSTORE_ID_TOKEN``) or ambient CI
    credentials and checks it now; the Sigstore session starts at the first
    signature. Close the signer after the run.
    """
    what = _prefixed(where, "sign")
    values = _checked(block, SIGN_KEYS, what)
    keyless = bool(values.get("keyless", False))
    if keyless == ("key" in values):
        raise UsageError(f"{what}: needs either key or keyless: true")
    if keyless and ("password-env" in values or "password-file" in values):
        raise UsageError(f"{what}: password-env and password-file are a key's password: not with keyless")
    if "password-env" in values and "password-file" in values:
        raise UsageError(f"{what}: give one of password-env and password-file, not both")
    if not keyless and "identity-token-env" in values:
        raise UsageError(f"{what}: identity-token-env is for keyless signing")
    if keyless and values.get("tlog-upload"):
        raise UsageError(f"{what}: tlog-upload is for key signing (keyless signatures are always logged)")
    bundle_format: BundleFormat = "legacy"
    fmt = values.get("bundle-format", "legacy")
    if fmt not in BUNDLE_FORMATS:
        raise UsageError(f"{what}: bundle-format must be one of {', '.join(BUNDLE_FORMATS)}, not {fmt!r}")
    bundle_format = fmt
    identity = values.get("identity")
    if identity is not None:
        try:
            identity = str(parse_reference(identity))
        except InvalidReference as exc:
            raise UsageError(f"{what}: invalid identity: {exc}") from None
    try:
        options = SignOptions(
            identity=identity,
            annotations=dict(values.get("annotations") or {}),
            recursive=bool(values.get("recursive", True)),
            bundle_format=bundle_format,
        )
        if keyless:
            token = _keyless_token(values, environ, what)
            signer = build_signer(keyless=True, identity_token=token, bundle_format=bundle_format,
                                  defer_keyless=True)
        else:
            pem = read_file(values["key"], "private key")
            password = _key_password(values, pem, environ, what)
            signer = build_signer(key=values["key"], password=password,
                                  tlog_upload=bool(values.get("tlog-upload", False)), bundle_format=bundle_format)
    except UsageError as exc:
        message = " ".join(str(exc).split())
        raise UsageError(message if message.startswith(f"{what}:") else f"{what}: {message}") from None
    return signer, options


async def sign_step(
    dest_ref: ImageRef,
    client: RegistryClient,
    signer: ImageSigner,
    options: SignOptions,
    *,
    default_identity: str | None = None,
) -> SignResult:
    """Sign the image just copied to ``dest_ref`` (a registry, ``oci:`` or ``dir:`` target).

    The signed identity is ``options.identity`` when the block names one, else
    ``default_identity`` when given, else the target's own name
    (``registry/repo:tag``; an ``oci:`` name only when it is a full reference).
    A signature the same signer already made for the same payload is not
    added again (a re-run signs nothing new).
    """
    override = options.identity or default_identity
    try:
        identity = signing_identity(dest_ref, override)
    except UsageError:
        if override is not None:
            raise
        raise UsageError(
            f"{dest_ref} has no registry name of its own: name the signed identity with the sign block's identity"
        ) from None
    if options.bundle_format != "legacy" and dest_ref.transport == "dir":
        raise UsageError(f"{dest_ref}: dir: images have no place for Sigstore bundles (bundle-format legacy)")
    store = await open_signature_store(dest_ref, client)
    try:
        return await sign_image(store, signer, options, identity=identity, image_name=str(dest_ref))
    finally:
        await store.close()


# --------------------------------------------------------------------------- a run's set-up


@dataclass(frozen=True)
class Gate:
    """What a ``verify:`` block built: the policy, its Sigstore trust, and whether every instance is checked."""

    policy: VerifyPolicy
    trust: SigstoreTrust
    recursive: bool

    async def check(self, source: ImageSource, digest: str) -> list[VerifiedSignature]:
        """:func:`verify_step` with this gate's rules."""
        return await verify_step(source, digest, self.policy, self.trust, self.recursive)


def _block_key(block: Mapping[str, Any]) -> str:
    return json.dumps(dict(block), sort_keys=True, default=str)


class SyncSigning:
    """The ``verify:`` / ``sign:`` set-up of a whole sync run, built before any traffic.

    One gate or signer per distinct block (entries that share a block through
    ``defaults`` share one decrypted key or one keyless session). Errors are
    one-line UsageErrors naming the entry (``FILE:LINE: mirror NAME: sign: ...``).
    :meth:`sign` serialises signing per target repository or layout: two tags of
    one digest copied at the same time would otherwise both append to the same
    ``sha256-<hex>.sig`` manifest and one signature would be lost.
    """

    def __init__(self, entries: Iterable[MirrorEntry], environ: Mapping[str, str] = os.environ) -> None:
        self._gates: dict[str, Gate] = {}
        self._signers: dict[str, tuple[ImageSigner, SignOptions]] = {}
        self._locks: dict[str, anyio.Lock] = {}
        gates: dict[str, Gate] = {}
        signers: dict[str, tuple[ImageSigner, SignOptions]] = {}
        try:
            for entry in entries:
                where = f"{entry.origin}: mirror {entry.name}" if entry.origin else f"mirror {entry.name}"
                if entry.verify is not None:
                    key = _block_key(entry.verify)
                    if key not in gates:
                        gates[key] = Gate(*verify_policy_from_config(entry.verify, where=where))
                    self._gates[entry.name] = gates[key]
                if entry.sign is not None:
                    key = _block_key(entry.sign)
                    if key not in signers:
                        signers[key] = signer_from_config(entry.sign, environ, where=where)
                    self._signers[entry.name] = signers[key]
        except BaseException:
            for signer, _ in signers.values():
                signer.close()
            raise
        self._all_signers = [signer for signer, _ in signers.values()]

    def gate(self, entry: MirrorEntry) -> Gate | None:
        """The entry's verification gate, or None without a ``verify:`` block."""
        return self._gates.get(entry.name)

    def signer(self, entry: MirrorEntry) -> tuple[ImageSigner, SignOptions] | None:
        """The entry's signer and options, or None without a ``sign:`` block."""
        return self._signers.get(entry.name)

    async def sign(
        self,
        entry: MirrorEntry,
        dest_ref: ImageRef,
        client: RegistryClient,
        *,
        default_identity: str | None = None,
    ) -> SignResult | None:
        """:func:`sign_step` for ``entry`` (None when it has no ``sign:`` block), one at a time per target."""
        found = self._signers.get(entry.name)
        if found is None:
            return None
        signer, options = found
        if dest_ref.reference is not None:
            scope = f"docker://{dest_ref.reference.registry}/{dest_ref.reference.repository}"
        else:
            scope = f"{dest_ref.transport}:{os.path.realpath(dest_ref.path or '')}"
        lock = self._locks.setdefault(scope, anyio.Lock())
        async with lock:
            return await sign_step(dest_ref, client, signer, options, default_identity=default_identity)

    def close(self) -> None:
        """Close every signer (ends keyless signing sessions)."""
        signers, self._all_signers = self._all_signers, []
        for signer in signers:
            signer.close()
