"""cosign-compatible signing and verification (library layer, no registry I/O).

Modules:

* :mod:`regtool.signing.keys`: cosign key files (generate, encrypt, load, sign);
* :mod:`regtool.signing.payload`: the simple-signing payload (make / strict parse);
* :mod:`regtool.signing.models`: the storage-neutral :class:`Signature` and the
  ``sigstore-json`` blob form skopeo writes as ``signature-N``;
* :mod:`regtool.signing.rekor`: offline Rekor SET ("bundle" annotation) checks;
* :mod:`regtool.signing.verify`: policies and signature / ``dir:`` verification;
* :mod:`regtool.signing.bundle`: Sigstore bundles via the optional ``sigstore`` package.

The common names are re-exported here lazily, so ``import regtool.signing`` stays
cheap and never imports ``sigstore``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from regtool.signing.bundle import (
        BundleVerification,
        bundle_to_legacy_annotations,
        make_cosign_v3_statement,
        verify_bundle,
    )
    from regtool.signing.keys import (
        generate_keypair,
        load_private_key,
        load_public_key,
        password_from_env_or_prompt,
        sign_payload,
        write_keypair,
    )
    from regtool.signing.models import Signature, parse_sigstore_json, to_sigstore_json
    from regtool.signing.payload import Payload, make_payload, parse_payload
    from regtool.signing.rekor import RekorEntry, RekorKey, load_rekor_keys, verify_rekor_bundle
    from regtool.signing.verify import (
        Rejection,
        VerifiedSignature,
        VerifyPolicy,
        load_certificates,
        verify_dir_image,
        verify_signature,
    )

_EXPORTS = {
    "BundleVerification": "bundle",
    "bundle_to_legacy_annotations": "bundle",
    "make_cosign_v3_statement": "bundle",
    "verify_bundle": "bundle",
    "generate_keypair": "keys",
    "load_private_key": "keys",
    "load_public_key": "keys",
    "password_from_env_or_prompt": "keys",
    "sign_payload": "keys",
    "write_keypair": "keys",
    "Signature": "models",
    "parse_sigstore_json": "models",
    "to_sigstore_json": "models",
    "Payload": "payload",
    "make_payload": "payload",
    "parse_payload": "payload",
    "RekorEntry": "rekor",
    "RekorKey": "rekor",
    "load_rekor_keys": "rekor",
    "verify_rekor_bundle": "rekor",
    "Rejection": "verify",
    "VerifiedSignature": "verify",
    "VerifyPolicy": "verify",
    "load_certificates": "verify",
    "verify_dir_image": "verify",
    "verify_signature": "verify",
}

__all__ = [
    "BundleVerification",
    "Payload",
    "Rejection",
    "RekorEntry",
    "RekorKey",
    "Signature",
    "VerifiedSignature",
    "VerifyPolicy",
    "bundle_to_legacy_annotations",
    "generate_keypair",
    "load_certificates",
    "load_private_key",
    "load_public_key",
    "load_rekor_keys",
    "make_cosign_v3_statement",
    "make_payload",
    "parse_payload",
    "parse_sigstore_json",
    "password_from_env_or_prompt",
    "sign_payload",
    "to_sigstore_json",
    "verify_bundle",
    "verify_dir_image",
    "verify_rekor_bundle",
    "verify_signature",
    "write_keypair",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'regtool.signing' has no attribute {name!r}")
    return getattr(importlib.import_module(f"regtool.signing.{module}"), name)
