"""A sync entry's ``verify:`` / ``sign:`` blocks: block → policy / signer, then the gate and the signing step.

The mapping is checked key by key (and every bad value is a one-line UsageError); the policies a
block builds verify the containers/image fixtures cosign and skopeo wrote; ``verify_step`` and
``sign_step`` run against the real registries, and what ``sign_step`` writes is checked with the
``regtool verify`` command line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from regtool.errors import RegtoolError, UsageError, VerificationError
from regtool.reference import ImageRef, Reference, parse_image
from regtool.registry import ClientOptions, Credential, RegistryClient, RegistryOptions
from regtool.signing.gate import SigstoreTrust
from regtool.signing.keys import generate_keypair, key_fingerprint, load_public_key
from regtool.signing.policy import DeferredKeylessSigner, build_policy, build_signer
from regtool.signing.sign import DEFAULT_REKOR_URL, KeylessSigner, KeySigner, SignOptions
from regtool.signing.storage import resolve_top
from regtool.sync.signing import (
    SIGN_KEYS,
    VERIFY_KEYS,
    sign_step,
    signer_from_config,
    verify_policy_from_config,
    verify_step,
)
from regtool.transports import open_source
from tests.support.cli import run_regtool
from tests.support.images import (
    OCI_MANIFEST,
    build_image,
    cosign_signature_tag,
    fetch_manifest,
    list_tags,
    push_index,
    push_oci_image,
)
from tests.support.registries import Registry

FIXTURES = Path(__file__).parent / "fixtures" / "signing"
CI = FIXTURES / "containers-image"
COSIGN_KEYS = FIXTURES / "cosign-keys"
BUNDLES = FIXTURES / "sigstore-bundles"
PASSWORD = "sync-signing-test-password"
#: CI systems sigstore's ambient detection looks at: removed so no test reaches for a token service.
CI_VARS = ("SIGSTORE_ID_TOKEN", "GITHUB_ACTIONS", "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_URL",
           "GITLAB_CI", "BUILDKITE", "CIRCLECI", "GOOGLE_SERVICE_ACCOUNT_NAME")

T = TypeVar("T")


def run(fn: Callable[[], Awaitable[T]]) -> T:
    return anyio.run(fn)


class Keys:
    """A cosign key pair written to disk (the private key encrypted with PASSWORD)."""

    def __init__(self, directory: Path, name: str) -> None:
        private_pem, public_pem = generate_keypair(PASSWORD.encode())
        self.key = directory / f"{name}.key"
        self.pub = directory / f"{name}.pub"
        self.key.write_bytes(private_pem)
        self.pub.write_bytes(public_pem)
        self.fingerprint = key_fingerprint(load_public_key(public_pem))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Keys, Keys]:
    directory = tmp_path_factory.mktemp("sync-signing-keys")
    return Keys(directory, "one"), Keys(directory, "two")


@pytest.fixture
def key(keys: tuple[Keys, Keys]) -> Keys:
    return keys[0]


@pytest.fixture
def no_ci(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in CI_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


# --------------------------------------------------------------------------- verify: block → policy


def test_every_documented_key_has_a_type() -> None:
    """The blocks' keys are exactly the config schema's (x- keys aside)."""
    schema = json.loads((Path(__file__).parents[1] / "regtool" / "schemas" / "sync-config.schema.json").read_text())
    assert set(VERIFY_KEYS) == set(schema["$defs"]["verify"]["properties"])
    assert set(SIGN_KEYS) == set(schema["$defs"]["sign"]["properties"])


def test_verify_key_block(keys: tuple[Keys, Keys]) -> None:
    one, two = keys
    policy, trust, recursive = verify_policy_from_config({"key": str(one.pub)})
    assert policy.mode == "key" and [key_fingerprint(k) for k in policy.public_keys] == [one.fingerprint]
    assert policy.rekor_keys == () and not policy.require_tlog and policy.signed_identity is None
    assert policy.identity_match == "repo-digest-or-exact" and dict(policy.annotations) == {}
    assert trust == SigstoreTrust() and recursive is False

    policy, trust, recursive = verify_policy_from_config({
        "key": [str(one.pub), str(two.pub)],
        "signed-identity": "registry.example.com/app:1",
        "identity-match": "exact",
        "annotations": {"team": "platform"},
        "recursive": True,
        "x-note": "ignored, as everywhere in sync configs",
    })
    assert [key_fingerprint(k) for k in policy.public_keys] == [one.fingerprint, two.fingerprint]
    assert policy.signed_identity == "registry.example.com/app:1" and policy.identity_match == "exact"
    assert dict(policy.annotations) == {"team": "platform"} and recursive is True


def test_verify_tlog_keys() -> None:
    policy, trust, _ = verify_policy_from_config({
        "key": str(CI / "cosign2.pub"), "rekor-public-key": str(CI / "rekor.pub"), "require-tlog": True,
    })
    assert policy.require_tlog and len(policy.rekor_keys) == 1
    assert trust == SigstoreTrust(public_good=False)
    policy, trust, _ = verify_policy_from_config({
        "key": str(CI / "cosign2.pub"), "rekor-public-key": str(CI / "rekor.pub"), "insecure-ignore-tlog": True,
    })
    assert policy.rekor_keys == () and trust.ignore_tlog
    root = BUNDLES / "trusted_root" / "trustedroot.v1.json"
    policy, trust, _ = verify_policy_from_config({"key": str(CI / "cosign.pub"), "trusted-root": str(root)})
    assert policy.rekor_keys and trust.trusted_root == str(root) and trust.public_good


def test_verify_keyless_and_pki_blocks() -> None:
    policy, trust, _ = verify_policy_from_config({
        "fulcio-root": str(CI / "fulcio_v1.crt.pem"),
        "rekor-public-key": str(CI / "rekor.pub"),
        "certificate-identity": "mitr@redhat.com",
        "certificate-oidc-issuer": "https://github.com/login/oauth",
    })
    assert policy.mode == "keyless" and policy.fulcio_roots and policy.rekor_keys
    assert policy.cert_identity == "mitr@redhat.com" and policy.cert_oidc_issuer == "https://github.com/login/oauth"
    assert trust == SigstoreTrust(public_good=False)

    root = BUNDLES / "trusted_root" / "trustedroot.v1.json"
    policy, trust, _ = verify_policy_from_config({
        "trusted-root": str(root),
        "certificate-identity-regexp": "^https://github\\.com/org/",
        "certificate-oidc-issuer-regexp": "^https://token\\.actions\\.githubusercontent\\.com$",
    })
    assert policy.mode == "keyless" and policy.cert_identity_regexp == "^https://github\\.com/org/"
    assert policy.cert_oidc_issuer_regexp is not None and trust == SigstoreTrust(str(root), public_good=False)

    policy, trust, _ = verify_policy_from_config({
        "ca-roots": str(CI / "pki_root_crts.pem"),
        "ca-intermediates": str(CI / "pki_intermediate_crts.pem"),
        "certificate-identity": "qiwan@redhat.com",
    })
    assert policy.mode == "pki" and policy.pki_roots and policy.pki_intermediates
    assert trust == SigstoreTrust(public_good=False)


def test_verify_keyless_defaults_to_the_public_good_root() -> None:
    pytest.importorskip("sigstore")
    policy, trust, _ = verify_policy_from_config({
        "certificate-identity": "release@example.com", "certificate-oidc-issuer": "https://accounts.google.com",
    })
    assert policy.mode == "keyless" and policy.fulcio_roots and policy.rekor_keys
    assert trust == SigstoreTrust()


def test_config_and_flags_build_the_same_policy(key: Keys) -> None:
    """The CLI and sync share one builder: the same options give equal policies."""
    from_config = verify_policy_from_config({
        "key": str(key.pub), "signed-identity": "r.example/app:1", "identity-match": "repository",
        "annotations": {"a": "b"},
    })
    direct = build_policy(key=str(key.pub), signed_identity="r.example/app:1", identity_match="repository",
                          annotations={"a": "b"})
    assert from_config[:2] == direct


@pytest.mark.parametrize(
    ("block", "reason"),
    [
        ({}, "verification needs key, or certificate-identity[-regexp]"),
        ({"keys": "x.pub"}, "unknown key 'keys'"),
        ({"key": ""}, "key must be a path or a non-empty list of paths"),
        ({"key": []}, "key must be a path or a non-empty list of paths"),
        ({"key": 7}, "key must be a path"),
        ({"key": "MISSING"}, "cannot read public key"),
        ({"key": str(COSIGN_KEYS / "sigstore-format-n32768.key")}, "PUBLIC KEY"),
        ({"key": "PUB", "require-tlog": "yes"}, "require-tlog must be true or false"),
        ({"key": "PUB", "recursive": 1}, "recursive must be true or false"),
        ({"key": "PUB", "annotations": ["a=b"]}, "annotations must be a mapping"),
        ({"key": "PUB", "annotations": {"a": 1}}, "annotations must be a mapping"),
        ({"key": "PUB", "identity-match": "fuzzy"}, "identity-match must be one of exact, repo-digest-or-exact"),
        ({"key": "PUB", "signed-identity": "Not A Reference"}, "verify:"),
        ({"key": "PUB", "certificate-identity": "me@example.com"}, "do not apply to key verification"),
        ({"key": "PUB", "ca-roots": str(CI / "pki_root_crts.pem")}, "key and ca-roots are mutually exclusive"),
        ({"key": "PUB", "require-tlog": True, "insecure-ignore-tlog": True},
         "require-tlog and insecure-ignore-tlog are mutually exclusive"),
        ({"ca-intermediates": str(CI / "pki_intermediate_crts.pem"), "certificate-identity": "x"},
         "ca-intermediates needs ca-roots"),
        ({"ca-roots": str(CI / "pki_root_crts.pem")}, "PKI verification needs a certificate identity"),
        ({"ca-roots": str(CI / "rekor.pub"), "certificate-identity": "x"}, "verify:"),
        ({"ca-roots": str(CI / "pki_root_crts.pem"), "certificate-identity": "x", "require-tlog": True},
         "require-tlog with ca-roots needs rekor-public-key or trusted-root"),
        ({"fulcio-root": str(CI / "fulcio_v1.crt.pem"), "certificate-identity": "x",
          "certificate-oidc-issuer": "y"}, "fulcio-root needs rekor-public-key"),
        ({"fulcio-root": str(CI / "fulcio_v1.crt.pem"), "rekor-public-key": str(CI / "rekor.pub"),
          "certificate-identity": "x"}, "needs a certificate identity and an OIDC issuer"),
        ({"fulcio-root": str(CI / "fulcio_v1.crt.pem"), "rekor-public-key": str(CI / "rekor.pub"),
          "certificate-identity-regexp": "(", "certificate-oidc-issuer": "y"}, "invalid regular expression"),
        ({"fulcio-root": str(CI / "fulcio_v1.crt.pem"), "rekor-public-key": str(CI / "rekor.pub"),
          "certificate-identity": "x", "certificate-oidc-issuer": "y", "insecure-ignore-tlog": True},
         "insecure-ignore-tlog cannot be used for keyless verification"),
        ({"trusted-root": str(CI / "rekor.pub"), "certificate-identity": "x", "certificate-oidc-issuer": "y"},
         "trusted root is not JSON"),
    ],
)
def test_bad_verify_blocks_are_one_line_usage_errors(
    block: dict[str, Any], reason: str, key: Keys, tmp_path: Path
) -> None:
    values = {k: (str(key.pub) if v == "PUB" else str(tmp_path / "missing.pub") if v == "MISSING" else v)
              for k, v in block.items()}
    with pytest.raises(UsageError) as exc:
        verify_policy_from_config(values, where="sync.yaml:7: mirror app")
    text = one_line(exc)
    assert text.startswith("sync.yaml:7: mirror app: verify: ") and reason in text, text


# --------------------------------------------------------------------------- blocks verify real signatures


@pytest.mark.parametrize(
    ("image", "block"),
    [
        ("dir-img-cosign-valid", {"key": str(CI / "cosign.pub")}),
        ("dir-img-cosign-valid-with-tag", {"key": [str(CI / "cosign2.pub"), str(CI / "cosign.pub")],
                                           "signed-identity": "192.168.64.2:5000/skopeo-signed:tag",
                                           "identity-match": "exact"}),
        ("dir-img-cosign-key-rekor-valid", {"key": str(CI / "cosign2.pub"), "require-tlog": True,
                                            "rekor-public-key": str(CI / "rekor.pub")}),
        ("dir-img-cosign-fulcio-rekor-valid", {"fulcio-root": str(CI / "fulcio_v1.crt.pem"),
                                               "rekor-public-key": str(CI / "rekor.pub"),
                                               "certificate-identity": "mitr@redhat.com",
                                               "certificate-oidc-issuer": "https://github.com/login/oauth"}),
        ("dir-img-cosign-pki-valid", {"ca-roots": str(CI / "pki_root_crts.pem"),
                                      "ca-intermediates": str(CI / "pki_intermediate_crts.pem"),
                                      "certificate-identity": "qiwan@redhat.com"}),
    ],
)
def test_blocks_verify_signatures_cosign_and_skopeo_wrote(image: str, block: dict[str, Any]) -> None:
    policy, trust, recursive = verify_policy_from_config(block)

    async def main() -> list[Any]:
        async with await open_source(ImageRef("dir", path=str(CI / image))) as source:
            top = await resolve_top(source)
            return await verify_step(source, top.digest, policy, trust, recursive)

    [accepted] = run(main)
    assert accepted.source_format == "simplesigning"


@pytest.mark.parametrize(
    ("image", "block", "reason"),
    [
        ("dir-img-cosign-valid", {"key": str(CI / "cosign2.pub")}, "cryptographic signature verification failed"),
        ("dir-img-cosign-valid-with-tag", {"key": str(CI / "cosign.pub"),
                                           "signed-identity": "192.168.64.2:5000/other:tag"}, "is not accepted for"),
        ("dir-img-cosign-modified-manifest", {"key": str(CI / "cosign.pub")}, "signature is for manifest digest"),
        ("dir-img-cosign-pki-valid", {"ca-roots": str(CI / "pki_root_crts.pem"),
                                      "ca-intermediates": str(CI / "pki_intermediate_crts.pem"),
                                      "certificate-identity": "someone-else@redhat.com"}, "identity"),
    ],
)
def test_blocks_reject_with_the_reason(image: str, block: dict[str, Any], reason: str) -> None:
    policy, trust, recursive = verify_policy_from_config(block)

    async def main() -> None:
        async with await open_source(ImageRef("dir", path=str(CI / image))) as source:
            top = await resolve_top(source)
            await verify_step(source, top.digest, policy, trust, recursive)

    with pytest.raises(VerificationError) as exc:
        run(main)
    text = one_line(exc)
    assert text.startswith("no accepted signature for sha256:") and "signature-1: " in text and reason in text


# --------------------------------------------------------------------------- sign: block → signer


def test_sign_key_block(key: Keys, tmp_path: Path) -> None:
    signer, options = signer_from_config({"key": str(key.key)}, {"COSIGN_PASSWORD": PASSWORD})
    assert isinstance(signer, KeySigner) and signer.rekor is None
    assert signer.description == f"key {key.fingerprint}"
    assert options == SignOptions()  # identity from the target, recursive, legacy, no annotations

    signer, options = signer_from_config({
        "key": str(key.key),
        "password-env": "MIRROR_KEY_PASSWORD",
        "identity": "mirror.example.com/app:stable",
        "annotations": {"mirrored-by": "regtool"},
        "bundle-format": "both",
        "recursive": False,
        "tlog-upload": True,
        "x-comment": "ignored",
    }, {"MIRROR_KEY_PASSWORD": PASSWORD})
    assert isinstance(signer, KeySigner) and signer.rekor is not None and signer.rekor.url == DEFAULT_REKOR_URL
    assert options == SignOptions(identity="mirror.example.com/app:stable", annotations={"mirrored-by": "regtool"},
                                  recursive=False, bundle_format="both")

    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")  # written with echo: the newline is not part of the password
    signer, _ = signer_from_config({"key": str(key.key), "password-file": str(secret)}, {})
    assert signer.description == f"key {key.fingerprint}"


def test_sign_key_written_by_cosign() -> None:
    signer, _ = signer_from_config({"key": str(COSIGN_KEYS / "cosign-format-n32768.key"),
                                    "password-env": "PW"}, {"PW": "hello"})
    assert isinstance(signer, KeySigner)


def test_unencrypted_pkcs8_key_needs_no_password(tmp_path: Path) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "plain.key"
    path.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    signer, _ = signer_from_config({"key": str(path)}, {})
    assert isinstance(signer, KeySigner)


@pytest.mark.parametrize(
    ("block", "env", "reason"),
    [
        ({}, {}, "needs either key or keyless: true"),
        ({"key": "KEY", "keyless": True}, {}, "needs either key or keyless: true"),
        ({"keyless": False}, {}, "needs either key or keyless: true"),
        ({"key": "KEY", "passwrd-env": "X"}, {}, "unknown key 'passwrd-env'"),
        ({"key": "KEY"}, {}, "environment variable COSIGN_PASSWORD (password-env) is not set"),
        ({"key": "KEY", "password-env": "NOPE"}, {"COSIGN_PASSWORD": PASSWORD},
         "environment variable NOPE (password-env) is not set"),
        ({"key": "KEY", "password-file": "MISSING"}, {}, "cannot read password-file"),
        ({"key": "KEY", "password-env": "A", "password-file": "MISSING"}, {}, "one of password-env and password-file"),
        ({"key": "KEY"}, {"COSIGN_PASSWORD": "wrong"}, "wrong password"),
        ({"key": "MISSING"}, {"COSIGN_PASSWORD": PASSWORD}, "cannot read private key"),
        ({"key": str(COSIGN_KEYS / "cosign-format-sec1-plaintext-must-reject.key")}, {"COSIGN_PASSWORD": "hello"},
         "SEC1"),
        ({"key": str(CI / "cosign.pub")}, {"COSIGN_PASSWORD": PASSWORD}, "private key"),
        ({"key": "KEY", "bundle-format": "v4"}, {"COSIGN_PASSWORD": PASSWORD}, "bundle-format must be one of"),
        ({"key": "KEY", "identity": "Not A Reference"}, {"COSIGN_PASSWORD": PASSWORD}, "invalid identity"),
        ({"key": "KEY", "annotations": {"k": 1}}, {"COSIGN_PASSWORD": PASSWORD}, "annotations must be a mapping"),
        ({"key": "KEY", "annotations": {"": "v"}}, {"COSIGN_PASSWORD": PASSWORD}, "annotations must be a mapping"),
        ({"key": "KEY", "recursive": "no"}, {"COSIGN_PASSWORD": PASSWORD}, "recursive must be true or false"),
        ({"key": "KEY", "tlog-upload": "yes"}, {"COSIGN_PASSWORD": PASSWORD}, "tlog-upload must be true or false"),
        ({"key": "KEY", "identity-token-env": "T"}, {"COSIGN_PASSWORD": PASSWORD}, "identity-token-env is for keyless"),
        ({"keyless": True, "password-env": "A"}, {}, "not with keyless"),
        ({"keyless": True, "tlog-upload": True}, {}, "tlog-upload is for key signing"),
        ({"keyless": "true"}, {}, "keyless must be true or false"),
    ],
)
def test_bad_sign_blocks_are_one_line_usage_errors(
    block: dict[str, Any], env: dict[str, str], reason: str, key: Keys, tmp_path: Path
) -> None:
    values = {k: (str(key.key) if v == "KEY" else str(tmp_path / "missing") if v == "MISSING" else v)
              for k, v in block.items()}
    with pytest.raises(UsageError) as exc:
        signer_from_config(values, env, where="sync.yaml:3: mirror app")
    text = one_line(exc)
    assert text.startswith("sync.yaml:3: mirror app: sign: ") and reason in text, text
    assert PASSWORD not in text and "hello" not in text


# --------------------------------------------------------------------------- keyless blocks (no network)


def _token(**over: Any) -> str:
    jwt = pytest.importorskip("jwt")
    now = int(time.time())
    claims: dict[str, Any] = {"iss": "https://token.actions.githubusercontent.com",
                              "sub": "repo:example/mirror:ref:refs/heads/main", "aud": "sigstore",
                              "iat": now, "nbf": now, "exp": now + 600}
    claims.update(over)
    token: str = jwt.encode(claims, "unverified by clients: a test secret of 32+ bytes", algorithm="HS256")
    return token


def test_keyless_block_checks_the_token_now_and_signs_later(no_ci: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sigstore")
    signer, options = signer_from_config({"keyless": True, "bundle-format": "v3"}, {"SIGSTORE_ID_TOKEN": _token()})
    assert isinstance(signer, DeferredKeylessSigner) and not signer.started
    assert signer.identity == "repo:example/mirror:ref:refs/heads/main"
    assert signer.issuer == "https://token.actions.githubusercontent.com"
    assert signer.legacy is False and options.bundle_format == "v3"
    signer.close()

    signer, _ = signer_from_config({"keyless": True, "identity-token-env": "MIRROR_OIDC"},
                                   {"MIRROR_OIDC": _token(sub="repo:example/other:ref:refs/heads/main") + "\n"})
    assert isinstance(signer, DeferredKeylessSigner) and signer.identity == "repo:example/other:ref:refs/heads/main"
    assert signer.legacy is True

    with pytest.raises(UsageError) as exc:
        signer_from_config({"keyless": True, "identity-token-env": "MIRROR_OIDC"}, {})
    assert "sign: no OIDC identity token: set MIRROR_OIDC" in one_line(exc)
    with pytest.raises(UsageError) as exc:
        signer_from_config({"keyless": True}, {"SIGSTORE_ID_TOKEN": _token(exp=int(time.time()) - 3600)})
    assert "OIDC identity token is not usable" in one_line(exc)
    with pytest.raises(UsageError) as exc:
        signer_from_config({"keyless": True}, {"SIGSTORE_ID_TOKEN": _token(aud="not-sigstore")})
    assert "OIDC identity token is not usable" in one_line(exc)
    no_ci.setenv("GITHUB_ACTIONS", "true")  # a CI that cannot hand out a token: explained, exit 2
    with pytest.raises(UsageError) as exc:
        signer_from_config({"keyless": True}, {})
    assert "ambient OIDC credential detection failed" in one_line(exc)


class _Recorded:
    """Stands in for sigstore-python's signer with bundles recorded from Sigstore."""

    def __init__(self) -> None:
        self.calls = 0

    def sign_artifact(self, input_: bytes) -> Any:
        self.calls += 1
        return (BUNDLES / "bundle_v3.txt.sigstore").read_bytes()

    def sign_dsse(self, input_: Any) -> Any:
        self.calls += 1
        return (BUNDLES / "a.dsse.staging-rekor-v2.txt.sigstore.json").read_text()


def test_deferred_keyless_signer_sets_up_once_at_the_first_signature() -> None:
    sigstore_oidc = pytest.importorskip("sigstore.oidc")
    token = sigstore_oidc.IdentityToken(_token(iss="https://github.com/login/oauth", sub="william@yossarian.net",
                                               email="william@yossarian.net"))
    backend = _Recorded()
    setups: list[bool] = []
    closed: list[bool] = []

    def setup(tok: Any, *, legacy: bool) -> KeylessSigner:
        assert tok is token
        setups.append(legacy)
        return KeylessSigner(backend, identity=str(tok.identity), issuer=str(tok.federated_issuer),
                             statement_factory=lambda b: b, on_close=lambda: closed.append(True))

    signer = DeferredKeylessSigner(token, legacy=True, setup=setup)
    assert setups == [] and signer.description == "william@yossarian.net (issuer https://github.com/login/oauth)"

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(signer.sign_payload, b"{}")
        signed = (BUNDLES / "bundle_v3.txt").read_bytes()  # what the recorded bundle signs
        sig = await signer.sign_payload(signed)
        assert sig.certificate and signer.signed_by_me(sig)  # the recorded certificate names this identity
        await signer.sign_statement(b"{}")

    run(main)
    assert setups == [True] and backend.calls == 6 and signer.started
    signer.close()
    assert closed == [True]

    def failing(tok: Any, *, legacy: bool) -> KeylessSigner:
        setups.append(legacy)
        raise RegtoolError("keyless signing set-up failed: Fulcio said no")

    broken = DeferredKeylessSigner(token, legacy=False, setup=failing)
    for _ in range(3):
        with pytest.raises(RegtoolError, match="Fulcio said no"):
            run(lambda: broken.sign_payload(b"{}"))
    assert setups == [True, False]  # tried once, then the failure is reported again without a retry


def test_build_signer_checks() -> None:
    with pytest.raises(UsageError, match="exactly one of a key and keyless"):
        build_signer()
    with pytest.raises(UsageError, match="exactly one of a key and keyless"):
        build_signer(key="k.key", keyless=True)
    with pytest.raises(UsageError, match="unknown bundle format"):
        build_signer(key="k.key", bundle_format="v9")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- real registries


def client_for(*registries: Registry) -> RegistryClient:
    per_host = {}
    for reg in registries:
        per_host[reg.host] = RegistryOptions(
            tls_verify=reg.tls,
            cert_dir=str(reg.cert_dir) if reg.tls and reg.cert_dir else None,
            credential=Credential(username=reg.username, password=reg.password) if reg.username else None,
        )
    return RegistryClient(ClientOptions(per_host=per_host))


def docker(reg: Registry, repo: str, tag: str) -> ImageRef:
    return ImageRef("docker", reference=Reference(reg.host, repo, tag))


def regtool_sign(reg: Registry, ref: ImageRef, key: Keys, *extra: str) -> None:
    r = run_regtool(["sign", "--key", str(key.key), *reg.skopeo_flags(), *extra, str(ref)],
                    env={"COSIGN_PASSWORD": PASSWORD})
    assert r.rc == 0, r.stderr


def gate(reg: Registry, ref: ImageRef, block: dict[str, Any]) -> list[Any]:
    policy, trust, recursive = verify_policy_from_config(block)

    async def main() -> list[Any]:
        async with client_for(reg) as client, await open_source(ref, client=client) as source:
            top = await source.get_manifest()
            return await verify_step(source, top.digest, policy, trust, recursive)

    return run(main)


def test_verify_step_accepts_a_signed_image(any_registry: Registry, repo: str, keys: tuple[Keys, Keys]) -> None:
    reg = any_registry
    one, two = keys
    img = push_oci_image(reg, repo, "v1")
    ref = docker(reg, repo, "v1")
    regtool_sign(reg, ref, one)
    [accepted] = gate(reg, ref, {"key": str(one.pub), "signed-identity": f"{reg.host}/{repo}:v1"})
    assert accepted.manifest_digest == img.digest and accepted.signer == f"key {one.fingerprint}"
    assert accepted.docker_reference == f"{reg.host}/{repo}:v1"
    [accepted] = gate(reg, ref, {"key": [str(two.pub), str(one.pub)]})  # any of the listed keys
    assert accepted.key_fingerprint == one.fingerprint


def test_verify_step_refuses_unsigned_and_wrong_key(
    registry_token: Registry, repo: str, keys: tuple[Keys, Keys]
) -> None:
    reg = registry_token
    one, two = keys
    unsigned = push_oci_image(reg, repo, "unsigned", seed="unsigned")
    with pytest.raises(VerificationError) as exc:
        gate(reg, docker(reg, repo, "unsigned"), {"key": str(one.pub)})
    assert one_line(exc) == f"no signatures found for {unsigned.digest}"

    signed = push_oci_image(reg, repo, "signed", seed="signed")
    regtool_sign(reg, docker(reg, repo, "signed"), one)
    with pytest.raises(VerificationError) as exc:
        gate(reg, docker(reg, repo, "signed"), {"key": str(two.pub)})
    text = one_line(exc)
    assert text.startswith(f"no accepted signature for {signed.digest} (1 rejected: ")
    assert f"{cosign_signature_tag(signed.digest)} layer 1: cryptographic signature verification failed" in text
    with pytest.raises(VerificationError, match="is not accepted for"):
        gate(reg, docker(reg, repo, "signed"), {"key": str(one.pub), "signed-identity": f"{reg.host}/{repo}:other",
                                                "identity-match": "exact"})


def test_verify_step_recursive_needs_every_platform_signed(
    registry_plain: Registry, repo: str, key: Keys
) -> None:
    reg = registry_plain
    index = push_index(reg, repo, "multi")
    ref = docker(reg, repo, "multi")
    regtool_sign(reg, ref, key, "--no-recursive")  # the index only
    assert len(gate(reg, ref, {"key": str(key.pub)})) == 1
    with pytest.raises(VerificationError) as exc:
        gate(reg, ref, {"key": str(key.pub), "recursive": True})
    assert one_line(exc) == f"no signatures found for {index.children[0].digest}"
    regtool_sign(reg, ref, key)
    accepted = gate(reg, ref, {"key": str(key.pub), "recursive": True})
    assert sorted(v.manifest_digest for v in accepted) == sorted([index.digest, *(c.digest for c in index.children)])


def sign_with_block(
    reg: Registry, ref: ImageRef, block: dict[str, Any], env: dict[str, str], **kw: Any
) -> Any:
    signer, options = signer_from_config(block, env)

    async def main() -> Any:
        async with client_for(reg) as client:
            return await sign_step(ref, client, signer, options, **kw)

    try:
        return run(main)
    finally:
        signer.close()


def regtool_verify(reg: Registry, ref: ImageRef | str, key: Keys, *extra: str) -> Any:
    r = run_regtool(["verify", "--key", str(key.pub), *reg.skopeo_flags(), "--output", "json", *extra, str(ref)])
    assert r.rc == 0, r.stderr
    return r.json


def test_sign_step_signs_the_target_for_regtool_verify(any_registry: Registry, repo: str, key: Keys) -> None:
    reg = any_registry
    img = push_oci_image(reg, repo, "v1")
    ref = docker(reg, repo, "v1")
    block = {"key": str(key.key), "password-env": "MIRROR_PW", "annotations": {"mirrored-by": "regtool"}}
    result = sign_with_block(reg, ref, block, {"MIRROR_PW": PASSWORD})
    assert result.digest == img.digest and result.identity == f"{reg.host}/{repo}:v1"
    assert result.signer == f"key {key.fingerprint}"
    assert [(m.digest, m.format, m.action) for m in result.manifests] == [(img.digest, "legacy", "added")]
    assert cosign_signature_tag(img.digest) in list_tags(reg, repo)

    out = regtool_verify(reg, ref, key, "--signed-identity", f"{reg.host}/{repo}:v1", "-a", "mirrored-by=regtool")
    [accepted] = out["Manifests"][0]["Accepted"]
    assert out["Verified"] and out["Digest"] == img.digest
    assert accepted["SignedIdentity"] == f"{reg.host}/{repo}:v1" and accepted["KeyFingerprint"] == key.fingerprint

    again = sign_with_block(reg, ref, block, {"MIRROR_PW": PASSWORD})  # a re-run adds nothing
    assert [m.action for m in again.manifests] == ["present"]
    raw, _ = fetch_manifest(reg, repo, cosign_signature_tag(img.digest), accept=OCI_MANIFEST)
    assert len(json.loads(raw)["layers"]) == 1


def test_sign_step_index_identity_and_bundles(registry_basic: Registry, repo: str, key: Keys) -> None:
    reg = registry_basic
    index = push_index(reg, repo, "multi")
    ref = docker(reg, repo, "multi")
    block = {"key": str(key.key), "identity": f"mirror.example.com/{repo}:multi", "bundle-format": "both"}
    result = sign_with_block(reg, ref, block, {"COSIGN_PASSWORD": PASSWORD})
    signed = {(m.digest, m.format) for m in result.manifests if m.action == "added"}
    digests = [index.digest, *(c.digest for c in index.children)]
    assert signed == {(d, f) for d in digests for f in ("legacy", "v3")}
    out = regtool_verify(reg, ref, key, "--recursive", "--signed-identity", f"mirror.example.com/{repo}:multi")
    assert out["Verified"] and len(out["Manifests"]) == len(digests)
    formats = {a["Format"] for m in out["Manifests"] for a in m["Accepted"]}
    assert formats == {"legacy", "bundle"}

    top_only = push_index(reg, repo, "top-only", seed="top-only")
    result = sign_with_block(reg, docker(reg, repo, "top-only"), {"key": str(key.key), "recursive": False},
                             {"COSIGN_PASSWORD": PASSWORD})
    assert [m.digest for m in result.manifests] == [top_only.digest]


def _layout(path: Path, name: str) -> str:
    built = build_image(f"layout:{name}", layers=1, layer_size=64)
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for blob in built.blobs():
        (blobs / blob.digest[7:]).write_bytes(blob.data or b"")
    (blobs / built.digest[7:]).write_bytes(built.manifest)
    entry = dict(built.descriptor(), annotations={"org.opencontainers.image.ref.name": name})
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return built.digest


def test_sign_step_into_an_oci_layout_target(registry_plain: Registry, tmp_path: Path, key: Keys) -> None:
    """Layout targets name images ``repo:tag``: the identity comes from the block or from the engine."""
    digest = _layout(tmp_path / "layout", "app:2")
    ref = parse_image(f"oci:{tmp_path / 'layout'}:app:2")
    env = {"COSIGN_PASSWORD": PASSWORD}
    with pytest.raises(UsageError, match="no registry name of its own: name the signed identity"):
        sign_with_block(registry_plain, ref, {"key": str(key.key)}, env)
    result = sign_with_block(registry_plain, ref, {"key": str(key.key)}, env,
                             default_identity="upstream.example.com/app:2")
    assert result.digest == digest and result.identity == "upstream.example.com/app:2"
    assert regtool_verify(registry_plain, ref, key, "--signed-identity", "upstream.example.com/app:2")["Verified"]
    result = sign_with_block(registry_plain, ref, {"key": str(key.key), "identity": "pinned.example.com/app:2"},
                             env, default_identity="upstream.example.com/app:2")
    assert result.identity == "pinned.example.com/app:2"  # the block's identity wins


def test_sign_step_v3_into_dir_target_is_refused(tmp_path: Path, key: Keys, registry_plain: Registry) -> None:
    signer, options = signer_from_config({"key": str(key.key), "bundle-format": "v3", "identity": "r.example/a:1"},
                                         {"COSIGN_PASSWORD": PASSWORD})

    async def main() -> None:
        async with client_for(registry_plain) as client:
            await sign_step(ImageRef("dir", path=str(tmp_path / "img")), client, signer, options)

    with pytest.raises(UsageError, match="no place for Sigstore bundles"):
        run(main)


# --------------------------------------------------------------------------- a run's set-up from a config file


def _config(tmp_path: Path, text: str, environ: dict[str, str]) -> Any:
    from regtool.sync.config import load_config_text

    return load_config_text(text, str(tmp_path / "sync.yaml"), environ=environ)


def test_sync_signing_from_a_config_file(tmp_path: Path, key: Keys, keys: tuple[Keys, Keys]) -> None:
    """Relative paths resolve against the file; entries sharing a block share one signer; errors name the entry."""
    from regtool.sync.signing import SyncSigning

    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "mirror.key").write_bytes(key.key.read_bytes())
    (tmp_path / "keys" / "upstream.pub").write_bytes(keys[1].pub.read_bytes())
    text = """\
defaults:
  targets: [docker://r.example/mirror]
  verify: {key: keys/upstream.pub, recursive: true}
  sign: {key: keys/mirror.key, password-env: MIRROR_PW}
mirrors:
  - {name: one, source: quay.io/a/one}
  - {name: two, source: quay.io/a/two}
  - name: plain
    source: quay.io/a/plain
    verify: {key: keys/upstream.pub}
    sign: {key: keys/mirror.key, password-env: MIRROR_PW, bundle-format: both}
"""
    env = {"MIRROR_PW": PASSWORD}
    config = _config(tmp_path, text, env)
    one, two, plain = config.mirrors
    setup = SyncSigning(config.mirrors, env)
    try:
        gate_one, gate_plain = setup.gate(one), setup.gate(plain)
        assert gate_one is not None and gate_one is setup.gate(two) and gate_one.recursive
        assert gate_plain is not None and not gate_plain.recursive
        assert [key_fingerprint(k) for k in gate_one.policy.public_keys] == [keys[1].fingerprint]
        signer_one, signer_plain = setup.signer(one), setup.signer(plain)
        assert signer_one is not None and signer_plain is not None
        assert signer_one is setup.signer(two) and signer_one[0] is not signer_plain[0]
        assert signer_one[0].description == f"key {key.fingerprint}" and signer_plain[1].bundle_format == "both"
    finally:
        setup.close()

    config = _config(tmp_path, text, {})  # the password variable is only needed to build the signer
    with pytest.raises(UsageError) as exc:
        SyncSigning(config.mirrors, {})
    text_ = one_line(exc)
    assert text_.startswith(f"{tmp_path / 'sync.yaml'}:6: mirror one: sign: ")
    assert "environment variable MIRROR_PW (password-env) is not set" in text_


def test_sync_signing_serialises_signatures_of_one_digest(registry_plain: Registry, repo: str, key: Keys) -> None:
    """Two tags of one digest signed at once both keep their signature in the shared .sig manifest."""
    from regtool.sync.signing import SyncSigning

    reg = registry_plain
    img = push_oci_image(reg, repo, "1.0")
    push_oci_image(reg, repo, "latest", seed=f"{repo}:1.0")  # the same image under a second tag
    config = _config(
        Path("/"), f"mirrors:\n  - {{name: m, source: quay.io/a/b, targets: ['docker://{reg.host}/{repo}'],"
                   f" sign: {{key: '{key.key}'}}}}\n", {"COSIGN_PASSWORD": PASSWORD})
    setup = SyncSigning(config.mirrors, {"COSIGN_PASSWORD": PASSWORD})
    [entry] = config.mirrors

    async def main() -> None:
        async with client_for(reg) as client:

            async def one(tag: str) -> None:
                await setup.sign(entry, docker(reg, repo, tag), client)

            async with anyio.create_task_group() as tg:
                for tag in ("1.0", "latest"):
                    tg.start_soon(one, tag)

    try:
        run(main)
    finally:
        setup.close()
    raw, _ = fetch_manifest(reg, repo, cosign_signature_tag(img.digest), accept=OCI_MANIFEST)
    assert len(json.loads(raw)["layers"]) == 2
    for tag in ("1.0", "latest"):
        regtool_verify(reg, docker(reg, repo, tag), key, "--signed-identity", f"{reg.host}/{repo}:{tag}",
                       "--identity-match", "exact")
