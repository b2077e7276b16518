"""Signature verification against real cosign / skopeo / sigstore-python data.

Every positive case is a signature someone else's tool produced; every negative
case is either a published must-reject fixture or a one-byte change to a valid
one, so a pass means "interoperates" and a rejection means "for that reason".
"""

from __future__ import annotations

import base64
import importlib.resources
import json
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from regtool.errors import UsageError, VerificationError
from regtool.signing import keys
from regtool.signing.models import (
    BUNDLE_ANNOTATION,
    BUNDLE_MEDIA_TYPES,
    CERTIFICATE_ANNOTATION,
    CHAIN_ANNOTATION,
    SIGNATURE_ANNOTATION,
    Signature,
    parse_sigstore_json,
    to_sigstore_json,
)
from regtool.signing.payload import make_payload, parse_payload
from regtool.signing.rekor import RekorKey, load_rekor_keys, rekor_keys_from_trusted_root, verify_rekor_bundle
from regtool.signing.verify import (
    Rejection,
    VerifiedSignature,
    VerifyPolicy,
    identity_matches,
    load_certificates,
    verify_dir_image,
    verify_signature,
)

FIXTURES = Path(__file__).parent / "fixtures" / "signing"
CI = FIXTURES / "containers-image"
BUNDLES = FIXTURES / "sigstore-bundles"

VALID_DIGEST = "sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00"
REKOR_DIGEST = "sha256:0489474da8ea22426ece86ace6c1c0026ab2fd3cdfbbd62b7e94650266c37d9a"
PKI_DIGEST = "sha256:253c890b744fe3efa923b68e3a1be07bd007eb44ba29da1e7deb1d4c53b3e212"


def _keys(name: str) -> tuple[keys.PublicKey, ...]:
    return tuple(keys.load_public_keys((CI / name).read_bytes()))


REKOR = tuple(load_rekor_keys((CI / "rekor.pub").read_bytes()))
FULCIO = tuple(load_certificates((CI / "fulcio_v1.crt.pem").read_bytes()))
PKI_ROOTS = tuple(load_certificates((CI / "pki_root_crts.pem").read_bytes()))
PKI_INTERMEDIATES = tuple(load_certificates((CI / "pki_intermediate_crts.pem").read_bytes()))

KEY_POLICY = VerifyPolicy(public_keys=_keys("cosign.pub"))
KEY_REKOR_POLICY = VerifyPolicy(public_keys=_keys("cosign2.pub"), rekor_keys=REKOR, require_tlog=True)
KEYLESS_POLICY = VerifyPolicy(
    fulcio_roots=FULCIO,
    rekor_keys=REKOR,
    cert_identity="mitr@redhat.com",
    cert_oidc_issuer="https://github.com/login/oauth",
)
PKI_POLICY = VerifyPolicy(
    pki_roots=PKI_ROOTS, pki_intermediates=PKI_INTERMEDIATES, cert_identity="qiwan@redhat.com"
)


def _sig(image: str, n: int = 1) -> Signature:
    return parse_sigstore_json((CI / image / f"signature-{n}").read_bytes())


def _only(results: list[VerifiedSignature | Rejection]) -> VerifiedSignature | Rejection:
    assert len(results) == 1
    return results[0]


# --------------------------------------------------------------------------- valid dir: images


VALID_CASES = [
    ("dir-img-cosign-valid", KEY_POLICY, "192.168.64.2:5000/cosign-signed-single-sample", "repository"),
    ("dir-img-cosign-valid-with-tag", KEY_POLICY, "192.168.64.2:5000/skopeo-signed:tag", "exact"),
    (
        "dir-img-cosign-key-rekor-valid",
        KEY_REKOR_POLICY,
        "192.168.64.2:5000/cosign-signed/key-1",
        "repository",
    ),
    (
        "dir-img-cosign-fulcio-rekor-valid",
        KEYLESS_POLICY,
        "192.168.64.2:5000/cosign-signed/fulcio-rekor-1",
        "repository",
    ),
    ("dir-img-cosign-pki-valid", PKI_POLICY, "localhost:5000/test", "repository"),
]


@pytest.mark.parametrize(
    ("image", "policy", "identity", "match"), VALID_CASES, ids=[c[0] for c in VALID_CASES]
)
def test_valid_dir_images_verify(image: str, policy: VerifyPolicy, identity: str, match: Any) -> None:
    """Each published valid image verifies with its trust material and its signed identity."""
    result = _only(
        verify_dir_image(CI / image, replace(policy, signed_identity=identity, identity_match=match))
    )
    assert isinstance(result, VerifiedSignature), result
    assert result.docker_reference == identity
    assert result.source_format == "simplesigning"


def test_verified_details() -> None:
    """What a verification reports: signer, identity, Rekor time, payload optional."""
    keyless = _only(verify_dir_image(CI / "dir-img-cosign-fulcio-rekor-valid", KEYLESS_POLICY))
    assert isinstance(keyless, VerifiedSignature)
    assert keyless.signer == "mitr@redhat.com (issuer https://github.com/login/oauth)"
    assert (keyless.cert_identity, keyless.cert_issuer) == (
        "mitr@redhat.com",
        "https://github.com/login/oauth",
    )
    assert (keyless.integrated_time, keyless.log_index) == (1674247893, 11605770)
    assert keyless.manifest_digest == REKOR_DIGEST

    keyed = _only(verify_dir_image(CI / "dir-img-cosign-key-rekor-valid", KEY_REKOR_POLICY))
    assert isinstance(keyed, VerifiedSignature)
    assert keyed.signer == "key " + keys.key_fingerprint(_keys("cosign2.pub")[0])
    assert keyed.integrated_time == 1674251859

    tagged = _only(verify_dir_image(CI / "dir-img-cosign-valid-with-tag", KEY_POLICY))
    assert isinstance(tagged, VerifiedSignature)
    assert tagged.optional == {"creator": "containers/image 5.21.2-dev", "timestamp": 1657296609}
    assert tagged.integrated_time is None


def test_keyless_uses_the_rekor_time_not_now() -> None:
    """The Fulcio certificate expired ten minutes after issue (2023); only the SET time makes it valid."""
    cert = load_certificates(_sig("dir-img-cosign-fulcio-rekor-valid").certificate or "")[0]
    assert cert.not_valid_after_utc < datetime.now(timezone.utc)
    assert isinstance(
        _only(verify_dir_image(CI / "dir-img-cosign-fulcio-rekor-valid", KEYLESS_POLICY)), VerifiedSignature
    )


# --------------------------------------------------------------------------- published negatives


def test_modified_manifest_is_rejected() -> None:
    result = _only(verify_dir_image(CI / "dir-img-cosign-modified-manifest", KEY_POLICY))
    assert isinstance(result, Rejection)
    assert result.source == "signature-1"
    assert result.reason.startswith(f"signature is for manifest digest {VALID_DIGEST}, not sha256:")


def test_manifest_digest_error_is_rejected() -> None:
    result = _only(verify_dir_image(CI / "dir-img-cosign-manifest-digest-error", KEY_POLICY))
    assert isinstance(result, Rejection)
    assert result.reason.startswith("cannot compute manifest digest")


# --------------------------------------------------------------------------- wrong trust material


def test_wrong_key_is_rejected() -> None:
    with pytest.raises(VerificationError, match="cryptographic signature verification failed"):
        verify_signature(
            _sig("dir-img-cosign-valid"), VALID_DIGEST, VerifyPolicy(public_keys=_keys("cosign2.pub"))
        )


def test_any_of_several_keys_may_match() -> None:
    policy = VerifyPolicy(public_keys=_keys("cosign2.pub") + _keys("cosign.pub"))
    assert verify_signature(_sig("dir-img-cosign-valid"), VALID_DIGEST, policy).signer.startswith(
        "key sha256:"
    )


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"cert_identity": "someone@redhat.com"}, "certificate identity mismatch"),
        ({"cert_oidc_issuer": "https://accounts.google.com"}, "unexpected certificate OIDC issuer"),
        ({"cert_identity": None, "cert_identity_regexp": r"^nobody@"}, "certificate identity mismatch"),
        (
            {"cert_oidc_issuer": None, "cert_oidc_issuer_regexp": r"google"},
            "unexpected certificate OIDC issuer",
        ),
    ],
)
def test_wrong_keyless_identity_is_rejected(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(VerificationError, match=reason):
        verify_signature(
            _sig("dir-img-cosign-fulcio-rekor-valid"), REKOR_DIGEST, replace(KEYLESS_POLICY, **changes)
        )


def test_identity_regexps_match() -> None:
    policy = replace(
        KEYLESS_POLICY,
        cert_identity=None,
        cert_identity_regexp=r"^[a-z]+@redhat\.com$",
        cert_oidc_issuer=None,
        cert_oidc_issuer_regexp=r"^https://github\.com/",
    )
    assert verify_signature(
        _sig("dir-img-cosign-fulcio-rekor-valid"), REKOR_DIGEST, policy
    ).cert_identity == ("mitr@redhat.com")


def test_wrong_pki_identity_and_roots_are_rejected() -> None:
    sig = _sig("dir-img-cosign-pki-valid")
    with pytest.raises(VerificationError, match="certificate identity mismatch"):
        verify_signature(sig, PKI_DIGEST, replace(PKI_POLICY, cert_identity="mitr@redhat.com"))
    with pytest.raises(VerificationError, match="certificate chain verification failed"):
        verify_signature(sig, PKI_DIGEST, replace(PKI_POLICY, pki_roots=FULCIO))
    # the PKI certificate also carries a DNS SAN, which containers/image's subjectHostname matches
    assert verify_signature(sig, PKI_DIGEST, replace(PKI_POLICY, cert_identity="myhost.example.com"))


def test_pki_chain_is_checked_at_the_verification_time() -> None:
    late = datetime(2060, 1, 1, tzinfo=timezone.utc)  # after the leaf's 2052 expiry
    with pytest.raises(VerificationError, match="certificate chain verification failed"):
        verify_signature(_sig("dir-img-cosign-pki-valid"), PKI_DIGEST, replace(PKI_POLICY, at_time=late))


def test_keyless_certificate_does_not_pass_as_pki_or_fulcio_root_swap() -> None:
    sig = _sig("dir-img-cosign-fulcio-rekor-valid")
    with pytest.raises(VerificationError, match="certificate chain verification failed"):
        verify_signature(sig, REKOR_DIGEST, replace(KEYLESS_POLICY, fulcio_roots=PKI_ROOTS))


def test_the_chain_annotation_root_is_never_trusted() -> None:
    """A signature cannot bring its own root: the last chain entry is ignored (containers/image rule)."""
    sig = _sig("dir-img-cosign-fulcio-rekor-valid")
    other_root = load_certificates((CI / "pki_root_crts.pem").read_bytes())
    policy = replace(KEYLESS_POLICY, fulcio_roots=tuple(other_root))
    with pytest.raises(VerificationError, match="certificate chain verification failed"):
        verify_signature(sig, REKOR_DIGEST, policy)


def test_keyless_signature_with_key_policy_and_vice_versa() -> None:
    with pytest.raises(VerificationError, match="cryptographic signature verification failed"):
        verify_signature(_sig("dir-img-cosign-fulcio-rekor-valid"), REKOR_DIGEST, KEY_POLICY)
    with pytest.raises(VerificationError, match="no certificate annotation"):
        verify_signature(_sig("dir-img-cosign-valid"), VALID_DIGEST, KEYLESS_POLICY)


# --------------------------------------------------------------------------- tampering


def test_tampered_payload_is_rejected() -> None:
    sig = _sig("dir-img-cosign-valid")
    tampered = replace(sig, payload=sig.payload.replace(b"single-sample", b"single-sampla"))
    with pytest.raises(VerificationError, match="cryptographic signature verification failed"):
        verify_signature(tampered, VALID_DIGEST, KEY_POLICY)


def test_tampered_signature_is_rejected() -> None:
    sig = _sig("dir-img-cosign-valid")
    raw = bytearray(base64.b64decode(sig.signature))
    raw[-1] ^= 1
    with pytest.raises(VerificationError, match="cryptographic signature verification failed"):
        verify_signature(
            replace(sig, signature=base64.b64encode(bytes(raw)).decode()), VALID_DIGEST, KEY_POLICY
        )
    with pytest.raises(VerificationError, match="invalid base64 in signature annotation"):
        verify_signature(replace(sig, signature="!!!"), VALID_DIGEST, KEY_POLICY)


def test_wrong_media_type_is_rejected() -> None:
    sig = replace(_sig("dir-img-cosign-valid"), media_type="application/json")
    with pytest.raises(VerificationError, match="unexpected MIME type"):
        verify_signature(sig, VALID_DIGEST, KEY_POLICY)


# --------------------------------------------------------------------------- transparency log


def test_require_tlog_without_a_bundle_is_rejected() -> None:
    policy = replace(KEY_POLICY, rekor_keys=REKOR, require_tlog=True)
    with pytest.raises(VerificationError, match="no Rekor bundle"):
        verify_signature(_sig("dir-img-cosign-valid"), VALID_DIGEST, policy)


def test_keyless_without_a_bundle_is_rejected() -> None:
    sig = replace(_sig("dir-img-cosign-fulcio-rekor-valid"), rekor_bundle=None)
    with pytest.raises(VerificationError, match="no Rekor bundle"):
        verify_signature(sig, REKOR_DIGEST, KEYLESS_POLICY)


def _edit_bundle(sig: Signature, edit: Any) -> Signature:
    doc = json.loads(sig.rekor_bundle or "")
    edit(doc)
    return replace(sig, rekor_bundle=json.dumps(doc))


def test_tampered_set_is_rejected() -> None:
    sig = _sig("dir-img-cosign-key-rekor-valid")
    moved = _edit_bundle(
        sig, lambda d: d["Payload"].update(integratedTime=d["Payload"]["integratedTime"] + 1)
    )
    with pytest.raises(VerificationError, match="cryptographic signature verification of Rekor SET failed"):
        verify_signature(moved, REKOR_DIGEST, KEY_REKOR_POLICY)
    extra = _edit_bundle(sig, lambda d: d["Payload"].update(extra=1))
    with pytest.raises(VerificationError, match="unexpected key 'extra'"):
        verify_signature(extra, REKOR_DIGEST, KEY_REKOR_POLICY)


def test_set_from_another_signature_is_rejected() -> None:
    """A genuine SET for another entry (CVE-2022-36056 style): its body does not describe this signature."""
    keyless = _sig("dir-img-cosign-fulcio-rekor-valid")
    keyed = _sig("dir-img-cosign-key-rekor-valid")
    with pytest.raises(VerificationError, match="signature in Rekor SET does not match"):
        verify_signature(replace(keyed, rekor_bundle=keyless.rekor_bundle), REKOR_DIGEST, KEY_REKOR_POLICY)


def test_rekor_body_must_name_the_signer() -> None:
    """Same signature bytes, but the entry records another key: rejected on the key comparison."""
    keyed = _sig("dir-img-cosign-key-rekor-valid")
    with pytest.raises(VerificationError, match="publicKey in Rekor SET does not match"):
        verify_rekor_bundle(
            keyed.rekor_bundle or "",
            REKOR,
            signature_b64=keyed.signature,
            payload=keyed.payload,
            signer_pem=(CI / "cosign.pub").read_bytes(),
        )
    with pytest.raises(VerificationError, match="payload in Rekor SET does not match"):
        verify_rekor_bundle(
            keyed.rekor_bundle or "",
            REKOR,
            signature_b64=keyed.signature,
            payload=keyed.payload + b" ",
            signer_pem=(CI / "cosign2.pub").read_bytes(),
        )


def test_unknown_rekor_key_is_rejected() -> None:
    policy = replace(KEY_REKOR_POLICY, rekor_keys=(RekorKey.from_public_key(_keys("cosign.pub")[0]),))
    with pytest.raises(VerificationError, match="does not match any trusted Rekor key"):
        verify_signature(_sig("dir-img-cosign-key-rekor-valid"), REKOR_DIGEST, policy)


def test_rekor_key_validity_window_is_enforced() -> None:
    key = REKOR[0]
    expired = RekorKey(key.public_key, key.log_id, valid_until=datetime(2022, 1, 1, tzinfo=timezone.utc))
    with pytest.raises(VerificationError, match="not valid at the entry's integrated time"):
        verify_signature(
            _sig("dir-img-cosign-key-rekor-valid"),
            REKOR_DIGEST,
            replace(KEY_REKOR_POLICY, rekor_keys=(expired,)),
        )


def test_rekor_keys_from_a_trusted_root_document() -> None:
    """The production Rekor key inside a trusted root (sigstore-python asset) is the one in rekor.pub."""
    from_root = rekor_keys_from_trusted_root((BUNDLES / "trusted_root" / "trustedroot.v1.json").read_bytes())
    assert REKOR[0].log_id in {k.log_id for k in from_root}
    assert isinstance(
        verify_signature(
            _sig("dir-img-cosign-key-rekor-valid"),
            REKOR_DIGEST,
            replace(KEY_REKOR_POLICY, rekor_keys=tuple(from_root)),
        ),
        VerifiedSignature,
    )


# --------------------------------------------------------------------------- signed identity


@pytest.mark.parametrize(
    ("mode", "intended", "signed", "ok"),
    [
        ("exact", "example.com/a:t", "example.com/a:t", True),
        ("exact", "example.com/a:t", "example.com/a:u", False),
        ("exact", "example.com/a", "example.com/a", False),  # name-only never matches exactly
        ("exact", "busybox:latest", "docker.io/library/busybox:latest", True),  # normalised
        ("repo-digest-or-exact", "example.com/a:t", "example.com/a:t", True),
        ("repo-digest-or-exact", f"example.com/a@{VALID_DIGEST}", "example.com/a:anything", True),
        ("repo-digest-or-exact", f"example.com/a@{VALID_DIGEST}", "example.com/b:t", False),
        ("repo-digest-or-exact", "example.com/a:t", "example.com/a", False),  # cosign's repo-only identity
        ("repo-digest-or-exact", "example.com/a", "example.com/a:t", False),
        ("repository", "example.com/a:t", "example.com/a", True),
        ("repository", "example.com/a", "example.com/b", False),
    ],
)
def test_identity_match_semantics(mode: Any, intended: str, signed: str, ok: bool) -> None:
    """containers-policy.json matchExact / matchRepoDigestOrExact / matchRepository."""
    assert identity_matches(mode, intended, signed) is ok


def test_signed_identity_rejections() -> None:
    sig = _sig("dir-img-cosign-valid")  # identity is the repository only, as cosign signs
    with pytest.raises(VerificationError, match="is not accepted"):
        verify_signature(
            sig,
            VALID_DIGEST,
            replace(KEY_POLICY, signed_identity="192.168.64.2:5000/cosign-signed-single-sample:latest"),
        )
    with pytest.raises(VerificationError, match="is not accepted"):
        verify_signature(
            sig,
            VALID_DIGEST,
            replace(KEY_POLICY, signed_identity="192.168.64.2:5000/other", identity_match="repository"),
        )
    tagged = _sig("dir-img-cosign-valid-with-tag")
    with pytest.raises(VerificationError, match="is not accepted"):
        verify_signature(
            tagged, VALID_DIGEST, replace(KEY_POLICY, signed_identity="192.168.64.2:5000/skopeo-signed:other")
        )
    ok = replace(KEY_POLICY, signed_identity=f"192.168.64.2:5000/skopeo-signed@{VALID_DIGEST}")
    assert (
        verify_signature(tagged, VALID_DIGEST, ok).docker_reference == "192.168.64.2:5000/skopeo-signed:tag"
    )


# --------------------------------------------------------------------------- annotations


def test_requested_annotations() -> None:
    sig = _sig("dir-img-cosign-valid-with-tag")
    good = replace(KEY_POLICY, annotations={"creator": "containers/image 5.21.2-dev"})
    assert verify_signature(sig, VALID_DIGEST, good)
    with pytest.raises(VerificationError, match="annotation 'creator'"):
        verify_signature(sig, VALID_DIGEST, replace(KEY_POLICY, annotations={"creator": "cosign"}))
    # cosign compares -a values as strings: a numeric timestamp never equals "1657296609"
    with pytest.raises(VerificationError, match="annotation 'timestamp'"):
        verify_signature(sig, VALID_DIGEST, replace(KEY_POLICY, annotations={"timestamp": "1657296609"}))
    with pytest.raises(VerificationError, match="annotation 'env'"):
        verify_signature(
            _sig("dir-img-cosign-valid"), VALID_DIGEST, replace(KEY_POLICY, annotations={"env": "prod"})
        )


# --------------------------------------------------------------------------- signing with cosign's keys


@pytest.mark.parametrize("name", ["cosign-format-n32768.key", "sigstore-format-n32768.key"])
def test_sign_with_cosign_key_then_verify(name: str) -> None:
    key = keys.load_private_key((FIXTURES / "cosign-keys" / name).read_bytes(), b"hello")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    payload = make_payload("registry.example/app", VALID_DIGEST, {"env": "prod"})
    sig = Signature(payload=payload, signature=base64.b64encode(keys.sign_payload(key, payload)).decode())
    policy = VerifyPolicy(
        public_keys=(key.public_key(),),
        signed_identity="registry.example/app:v1",
        identity_match="repository",
        annotations={"env": "prod"},
    )
    result = verify_signature(parse_sigstore_json(to_sigstore_json(sig)), VALID_DIGEST, policy)
    assert result.docker_reference == "registry.example/app"
    with pytest.raises(VerificationError, match="cryptographic"):
        verify_signature(sig, VALID_DIGEST, KEY_POLICY)


# --------------------------------------------------------------------------- policy validation


def test_policy_construction_errors() -> None:
    with pytest.raises(UsageError, match="exactly one of"):
        VerifyPolicy()
    with pytest.raises(UsageError, match="exactly one of"):
        VerifyPolicy(public_keys=_keys("cosign.pub"), fulcio_roots=FULCIO)
    with pytest.raises(UsageError, match="needs Rekor public keys"):
        VerifyPolicy(fulcio_roots=FULCIO, cert_identity="a", cert_oidc_issuer="b")
    with pytest.raises(UsageError, match="certificate identity and an OIDC issuer"):
        VerifyPolicy(fulcio_roots=FULCIO, rekor_keys=REKOR, cert_identity="a")
    with pytest.raises(UsageError, match="require_tlog needs Rekor"):
        VerifyPolicy(public_keys=_keys("cosign.pub"), require_tlog=True)
    with pytest.raises(UsageError, match="invalid regular expression"):
        VerifyPolicy(pki_roots=PKI_ROOTS, cert_identity_regexp="(")
    with pytest.raises(UsageError, match="invalid signed identity"):
        VerifyPolicy(public_keys=_keys("cosign.pub"), signed_identity="UPPER/Case")
    with pytest.raises(UsageError, match="need Fulcio or PKI"):
        VerifyPolicy(public_keys=_keys("cosign.pub"), cert_identity="x")


# --------------------------------------------------------------------------- payload format


def test_make_payload_is_byte_identical_to_cosign_and_skopeo() -> None:
    assert (
        make_payload("192.168.64.2:5000/cosign-signed-single-sample", VALID_DIGEST)
        == _sig("dir-img-cosign-valid").payload
    )
    skopeo = make_payload(
        "192.168.64.2:5000/skopeo-signed:tag",
        VALID_DIGEST,
        {"timestamp": 1657296609, "creator": "containers/image 5.21.2-dev"},
    )
    assert skopeo == _sig("dir-img-cosign-valid-with-tag").payload


def _payload(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "critical": {
            "identity": {"docker-reference": "example.com/a"},
            "image": {"docker-manifest-digest": VALID_DIGEST},
            "type": "cosign container image signature",
        },
        "optional": None,
    }
    doc.update(over)
    return doc


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (json.dumps({"critical": _payload()["critical"]}), "missing key 'optional'"),
        (json.dumps(_payload(extra=1)), "unexpected key 'extra'"),
        (
            json.dumps(_payload(critical={**_payload()["critical"], "x": 1})),
            "unexpected key 'x' in payload critical",
        ),
        (
            json.dumps(_payload(critical={**_payload()["critical"], "type": "atomic container signature"})),
            "unrecognized signature type",
        ),
        (
            json.dumps(
                _payload(
                    critical={**_payload()["critical"], "image": {"docker-manifest-digest": "sha256:abc"}}
                )
            ),
            "invalid docker-manifest-digest",
        ),
        (
            json.dumps(_payload(critical={**_payload()["critical"], "identity": {"docker-reference": 1}})),
            "is not a string",
        ),
        (
            json.dumps(_payload(critical={**_payload()["critical"], "identity": {}})),
            "missing key 'docker-reference'",
        ),
        (json.dumps(_payload(optional=[])), "payload optional is not a JSON object"),
        (json.dumps(_payload(optional={"creator": 5})), "optional.creator is not a string"),
        (json.dumps(_payload(optional={"timestamp": 1.5})), "optional.timestamp is not an integer"),
        (json.dumps(_payload(optional={"timestamp": "1"})), "optional.timestamp is not a number"),
        (json.dumps(_payload()) + " {}", "invalid JSON"),
        ('{"optional":null,"optional":null,"critical":{}}', "duplicate key"),
        ("[]", "signature payload is not a JSON object"),
        ("\ufeff" + json.dumps(_payload()), "invalid JSON"),
    ],
)
def test_parse_payload_strictness(raw: str, reason: str) -> None:
    with pytest.raises(VerificationError, match=reason):
        parse_payload(raw.encode())


def test_parse_payload_accepts_cosign_and_skopeo_shapes() -> None:
    assert parse_payload(json.dumps(_payload()).encode()).optional is None
    p = parse_payload(json.dumps(_payload(optional={"timestamp": 1.0e9, "anything": [1]})).encode())
    assert p.timestamp == 1_000_000_000 and p.optional == {"timestamp": 1.0e9, "anything": [1]}


@given(
    ref=st.from_regex(r"\A[a-z0-9]{1,10}(\.[a-z]{2,5})?/[a-z0-9]{1,12}(:[a-z0-9]{1,8})?\Z"),
    hexdigest=st.from_regex(r"\A[a-f0-9]{64}\Z"),
    optional=st.none() | st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=4),
)
def test_payload_round_trip(ref: str, hexdigest: str, optional: dict[str, str] | None) -> None:
    parsed = parse_payload(make_payload(ref, "sha256:" + hexdigest, optional))
    assert (parsed.docker_reference, parsed.manifest_digest) == (ref, "sha256:" + hexdigest)
    assert parsed.optional == optional


# --------------------------------------------------------------------------- sigstore-json form


@pytest.mark.parametrize("image", sorted(p.name for p in CI.glob("dir-img-*")))
def test_sigstore_json_round_trips_byte_for_byte(image: str) -> None:
    """to_sigstore_json reproduces exactly what containers/image wrote (key order, escapes, base64)."""
    blob = (CI / image / "signature-1").read_bytes()
    sig = parse_sigstore_json(blob)
    assert to_sigstore_json(sig) == blob
    assert sig.to_annotations()[SIGNATURE_ANNOTATION] == sig.signature


def test_sigstore_json_fields() -> None:
    sig = _sig("dir-img-cosign-fulcio-rekor-valid")
    assert sig.certificate and sig.certificate.startswith("-----BEGIN CERTIFICATE-----")
    assert sig.chain and sig.chain.count("BEGIN CERTIFICATE") == 2
    assert sig.rekor_bundle and json.loads(sig.rekor_bundle)["Payload"]["logIndex"] == 11605770
    assert set(sig.annotations) == {
        SIGNATURE_ANNOTATION,
        CERTIFICATE_ANNOTATION,
        CHAIN_ANNOTATION,
        BUNDLE_ANNOTATION,
    }
    assert Signature.from_annotations(sig.payload, sig.to_annotations()) == sig


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (b"", "empty signature blob"),
        (b"\x89PNG", "not a sigstore-json signature"),
        (b"\x00sigstore-json", "missing newline"),
        (b"\x00simple-signing\n{}", "unsupported signature format 'simple-signing'"),
        (b"\x00sigstore-json\n{}", "missing key"),
        (
            b'\x00sigstore-json\n{"mimeType":"x","payload":"e30=","annotations":{}}',
            "missing dev.cosignproject.cosign/signature",
        ),
        (
            b'\x00sigstore-json\n{"mimeType":"x","payload":"%%","annotations":{}}',
            "invalid base64 in sigstore-json payload",
        ),
        (
            b'\x00sigstore-json\n{"mimeType":"x","payload":"","annotations":{"a":1}}',
            "annotation 'a' is not a string",
        ),
    ],
)
def test_sigstore_json_parse_errors(blob: bytes, reason: str) -> None:
    with pytest.raises(VerificationError, match=reason):
        parse_sigstore_json(blob)


@pytest.mark.parametrize("media_type", BUNDLE_MEDIA_TYPES)
def test_bundle_media_types_are_recognised(media_type: str) -> None:
    doc = json.loads((BUNDLES / "bundle_v3.txt.sigstore").read_bytes())
    doc["mediaType"] = media_type
    sig = Signature.from_bundle_json(json.dumps(doc).encode())
    assert sig.source_format == "bundle" and sig.media_type == media_type
    with pytest.raises(VerificationError, match="verify_bundle"):
        verify_signature(sig, VALID_DIGEST, KEY_POLICY)
    doc["mediaType"] = "application/vnd.dev.sigstore.bundle.v0.4+json"
    with pytest.raises(VerificationError, match="unsupported Sigstore bundle media type"):
        Signature.from_bundle_json(json.dumps(doc).encode())


# --------------------------------------------------------------------------- Sigstore bundles

STAGING_ROOT_URL = "https%3A%2F%2Ftuf-repo-cdn.sigstage.dev"
GITHUB_IDENTITY = "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
DSSE_SUBJECT = "sha256:a0cfc71271d6e278e57cd332ff957c3f7043fdda354c4cbb190a30d56efa01bf"


@pytest.fixture
def sigstore_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """sigstore installed, and its TUF cache kept out of the real home directory."""
    pytest.importorskip("sigstore")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))


def _staging_root_document() -> bytes:
    """sigstore-python's embedded staging trusted root (test-only peek at its package data)."""
    path = importlib.resources.files("sigstore") / "_store" / STAGING_ROOT_URL / "trusted_root.json"
    if not path.is_file():
        pytest.skip("installed sigstore has no embedded staging trusted root")
    return path.read_bytes()


def test_bundle_v3_verifies_offline_with_staging_root(sigstore_env: None) -> None:
    from regtool.signing.bundle import verify_bundle

    bundle = (BUNDLES / "bundle_v3.txt.sigstore").read_bytes()
    artifact = (BUNDLES / "bundle_v3.txt").read_bytes()
    kwargs: dict[str, Any] = {
        "instance": "staging",
        "identity": "william@yossarian.net",
        "issuer": "https://github.com/login/oauth",
    }
    result = verify_bundle(bundle, artifact, **kwargs)
    assert (result.kind, result.identity, result.media_type) == (
        "message-signature",
        "william@yossarian.net",
        "application/vnd.dev.sigstore.bundle.v0.3+json",
    )
    assert result.integrated_time is None or result.integrated_time > 1_700_000_000
    # the same, given only the artifact's digest
    assert verify_bundle(bundle, result.artifact_digest, **kwargs).identity == "william@yossarian.net"
    with pytest.raises(VerificationError, match="Sigstore bundle verification failed"):
        verify_bundle(bundle, artifact + b"x", **kwargs)
    with pytest.raises(VerificationError, match="certificate identity mismatch"):
        verify_bundle(bundle, artifact, **{**kwargs, "identity": "someone@example.com"})
    with pytest.raises(VerificationError, match="unexpected certificate OIDC issuer"):
        verify_bundle(bundle, artifact, **{**kwargs, "issuer": "https://accounts.google.com"})
    # staging material does not verify against the production root
    with pytest.raises(VerificationError):
        verify_bundle(bundle, artifact, **{**kwargs, "instance": "production"})


def test_github_bundle_verifies_with_production_root(sigstore_env: None) -> None:
    from regtool.signing.bundle import verify_bundle

    bundle = (BUNDLES / "bundle_v3_github.whl.sigstore").read_bytes()
    artifact = (BUNDLES / "bundle_v3_github.whl").read_bytes()
    for root in (BUNDLES / "trusted_root" / "trustedroot.v1.json", None):
        result = verify_bundle(
            bundle,
            artifact,
            trusted_root=root,
            identity=GITHUB_IDENTITY,
            issuer="https://token.actions.githubusercontent.com",
        )
        assert result.identity == GITHUB_IDENTITY
        assert result.media_type == "application/vnd.dev.sigstore.bundle+json;version=0.2"
    regexp = verify_bundle(
        bundle,
        artifact,
        identity_regexp=r"^https://github\.com/trailofbits/",
        issuer_regexp=r"githubusercontent",
    )
    assert regexp.identity == GITHUB_IDENTITY


def test_dsse_bundle_verifies_against_its_subject_digest(sigstore_env: None) -> None:
    from regtool.signing.bundle import verify_bundle

    bundle = (BUNDLES / "a.dsse.staging-rekor-v2.txt.sigstore.json").read_bytes()
    kwargs: dict[str, Any] = {
        "instance": "staging",
        "identity_regexp": r"^https://github\.com/sigstore-conformance/",
        "issuer_regexp": ".",
    }
    result = verify_bundle(bundle, DSSE_SUBJECT, **kwargs)
    assert result.kind == "dsse"
    assert result.payload_type == "application/vnd.in-toto+json"
    assert (
        result.statement is not None and result.statement["predicateType"] == "https://slsa.dev/provenance/v1"
    )
    assert verify_bundle(bundle, DSSE_SUBJECT, predicate_type="https://slsa.dev/provenance/v1", **kwargs)
    with pytest.raises(VerificationError, match="no in-toto subject has digest"):
        verify_bundle(bundle, (BUNDLES / "a.dsse.staging-rekor-v2.txt").read_bytes(), **kwargs)
    with pytest.raises(VerificationError, match="predicate type"):
        verify_bundle(bundle, DSSE_SUBJECT, predicate_type="https://sigstore.dev/cosign/sign/v1", **kwargs)


def test_cve_2022_36056_bundle_is_rejected(sigstore_env: None) -> None:
    from regtool.signing.bundle import verify_bundle

    with pytest.raises(VerificationError, match="inconsistent"):
        verify_bundle(
            (BUNDLES / "bundle_cve_2022_36056.txt.sigstore").read_bytes(),
            (BUNDLES / "bundle_cve_2022_36056.txt").read_bytes(),
            instance="staging",
            identity="william@yossarian.net",
            issuer="https://github.com/login/oauth",
        )


def test_bundle_arguments_are_checked(sigstore_env: None) -> None:
    from regtool.signing.bundle import verify_bundle

    bundle = (BUNDLES / "bundle_v3.txt.sigstore").read_bytes()
    with pytest.raises(UsageError, match="certificate identity"):
        verify_bundle(bundle, b"x", issuer="i")
    with pytest.raises(UsageError, match="OIDC issuer"):
        verify_bundle(bundle, b"x", identity="i")
    with pytest.raises(UsageError, match="sha256"):
        verify_bundle(bundle, "md5:abc", identity="i", issuer="i")
    with pytest.raises(VerificationError, match="media type"):
        verify_bundle(b'{"mediaType":"application/json"}', b"x", identity="i", issuer="i")


def test_bundle_to_legacy_annotations_gives_a_verifiable_cosign_signature(sigstore_env: None) -> None:
    """The legacy annotations carry a SET that our Rekor check accepts and a chain up to the Fulcio root."""
    from regtool.signing.bundle import bundle_to_legacy_annotations

    root_doc = _staging_root_document()
    bundle = (BUNDLES / "bundle_v3.txt.sigstore").read_bytes()
    artifact = (BUNDLES / "bundle_v3.txt").read_bytes()
    ann = bundle_to_legacy_annotations(bundle, trusted_root=root_doc)
    assert set(ann) == {SIGNATURE_ANNOTATION, CERTIFICATE_ANNOTATION, CHAIN_ANNOTATION, BUNDLE_ANNOTATION}
    assert list(json.loads(ann[BUNDLE_ANNOTATION])) == ["SignedEntryTimestamp", "Payload"]
    sig = Signature.from_annotations(artifact, ann)
    entry = verify_rekor_bundle(
        sig.rekor_bundle or "",
        rekor_keys_from_trusted_root(root_doc),
        signature_b64=sig.signature,
        payload=artifact,
        signer_pem=sig.certificate or "",
    )
    assert entry.integrated_time == 1712085549
    # the chain ends at a self-signed root from the staging trusted root
    chain = load_certificates(sig.chain or "")
    assert chain[-1].issuer == chain[-1].subject
    # and the whole thing is storable as skopeo's sigstore-json
    assert parse_sigstore_json(to_sigstore_json(sig)) == sig


def test_legacy_annotations_refuse_dsse_and_rekor_v2(sigstore_env: None) -> None:
    from regtool.signing.bundle import bundle_to_legacy_annotations

    with pytest.raises(UsageError, match="DSSE"):
        bundle_to_legacy_annotations((BUNDLES / "a.dsse.staging-rekor-v2.txt.sigstore.json").read_bytes())


def test_legacy_annotations_from_v02_bundle_use_its_chain(sigstore_env: None) -> None:
    from sigstore.models import Bundle

    from regtool.signing.bundle import bundle_to_legacy_annotations

    bundle = Bundle.from_json((BUNDLES / "bundle_v3_github.whl.sigstore").read_bytes())
    ann = bundle_to_legacy_annotations(bundle)
    sig = Signature.from_annotations((BUNDLES / "bundle_v3_github.whl").read_bytes(), ann)
    entry = verify_rekor_bundle(
        sig.rekor_bundle or "",
        REKOR,
        signature_b64=sig.signature,
        payload=sig.payload,
        signer_pem=sig.certificate or "",
    )
    assert entry.integrated_time == 1710888076


def test_cosign_v3_statement() -> None:
    from regtool.signing.bundle import make_cosign_v3_statement

    statement = json.loads(make_cosign_v3_statement(VALID_DIGEST, "ghcr.io/org/app:v1"))
    assert statement == {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "ghcr.io/org/app", "digest": {"sha256": VALID_DIGEST.split(":")[1]}}],
        "predicateType": "https://sigstore.dev/cosign/sign/v1",
        "predicate": {},
    }
    assert "name" not in json.loads(make_cosign_v3_statement(VALID_DIGEST))["subject"][0]
    with pytest.raises(UsageError):
        make_cosign_v3_statement("sha256:short")


def test_importing_signing_does_not_import_sigstore() -> None:
    import subprocess
    import sys

    code = "import sys, regtool.signing.verify, regtool.signing.bundle; print('sigstore' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_sigstore_package_is_a_usage_error() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['sigstore'] = None\n"
        "from regtool.errors import UsageError\n"
        "from regtool.signing.bundle import verify_bundle\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "try:\n"
        "    verify_bundle(data, b'x', identity='i', issuer='i')\n"
        "except UsageError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(BUNDLES / "bundle_v3.txt.sigstore")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "needs the 'sigstore' package" in out.stdout


def test_package_reexports_lazily() -> None:
    import regtool.signing as signing

    assert signing.verify_signature is verify_signature
    assert signing.Signature is Signature
    assert set(signing.__all__) >= {"verify_bundle", "generate_keypair", "VerifyPolicy"}
    with pytest.raises(AttributeError):
        _ = signing.no_such_name
