"""Signing and verifying against the real registries, with skopeo as the independent peer.

Debian's skopeo has sigstore *verification* compiled out, so skopeo here only
moves signatures (``use-sigstore-attachments``): it carries regtool's ``.sig``
signatures into ``dir:`` layouts and writes ``dir:`` signatures back into a
registry, and regtool must accept what comes out in both directions.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from regtool.signing.models import SIMPLESIGNING_MEDIA_TYPE, Signature, parse_sigstore_json
from regtool.signing.payload import parse_payload
from tests.support import run_skopeo
from tests.support.cli import Result, run_regtool
from tests.support.images import (
    OCI_MANIFEST,
    Blob,
    PushedImage,
    cosign_signature_tag,
    fetch_blob,
    fetch_manifest,
    list_tags,
    manifest_exists,
    push_blob,
    push_index,
    push_manifest,
    push_oci_image,
    referrers_tag,
)
from tests.support.registries import Registry

PASSWORD = "regtool-test-password"
ENV = {"COSIGN_PASSWORD": PASSWORD}
BUNDLES = Path(__file__).parent / "fixtures" / "signing" / "sigstore-bundles"
BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"


@dataclass
class KeyPair:
    key: Path
    pub: Path

    def public(self) -> ec.EllipticCurvePublicKey:
        key = serialization.load_pem_public_key(self.pub.read_bytes())
        assert isinstance(key, ec.EllipticCurvePublicKey)
        return key

    def fingerprint(self) -> str:
        der = self.public().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return "sha256:" + hashlib.sha256(der).hexdigest()


def _generate(directory: Path, name: str) -> KeyPair:
    r = run_regtool(["generate-key", "--output-key-prefix", str(directory / name)], env=ENV)
    assert r.rc == 0, r.stderr
    return KeyPair(directory / f"{name}.key", directory / f"{name}.pub")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[KeyPair, KeyPair]:
    """Two key pairs made by ``regtool generate-key`` (once per module: scrypt is slow on purpose)."""
    directory = tmp_path_factory.mktemp("keys")
    return _generate(directory, "one"), _generate(directory, "two")


@pytest.fixture
def key(keys: tuple[KeyPair, KeyPair]) -> KeyPair:
    return keys[0]


@pytest.fixture
def registries_d(tmp_path: Path) -> Path:
    """A registries.d directory turning on sigstore attachments for every registry (skopeo's --registries.d)."""
    d = tmp_path / "registries.d"
    d.mkdir()
    (d / "default.yaml").write_text("default-docker:\n  use-sigstore-attachments: true\n")
    return d


def sign(reg: Registry, ref: str, key: KeyPair, *extra: str) -> Result:
    r = run_regtool(["sign", "--key", str(key.key), *reg.skopeo_flags(), *extra, ref], env=ENV)
    assert r.rc == 0, r.stderr
    return r


def verify(reg: Registry | None, ref: str, key: KeyPair, *extra: str) -> Result:
    flags = reg.skopeo_flags() if reg is not None else []
    return run_regtool(["verify", "--key", str(key.pub), *flags, *extra, ref])


def sig_manifest(reg: Registry, repo: str, digest: str) -> dict[str, Any]:
    raw, _ = fetch_manifest(reg, repo, cosign_signature_tag(digest), accept=OCI_MANIFEST)
    value: dict[str, Any] = json.loads(raw)
    return value


def sig_layers(reg: Registry, repo: str, digest: str) -> list[tuple[dict[str, Any], bytes]]:
    return [(layer, fetch_blob(reg, repo, layer["digest"])) for layer in sig_manifest(reg, repo, digest)["layers"]]


def ecdsa_ok(key: ec.EllipticCurvePublicKey, sig_b64: str, data: bytes) -> bool:
    try:
        key.verify(base64.b64decode(sig_b64), data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def docker(reg: Registry, repo: str, tag: str) -> str:
    return f"docker://{reg.host}/{repo}:{tag}"


# --------------------------------------------------------------------------- round trips


def test_sign_then_verify_on_each_registry(any_registry: Registry, repo: str, key: KeyPair) -> None:
    """Key signing writes a cosign-shaped .sig manifest any cosign-style reader accepts, and regtool verifies it."""
    reg = any_registry
    img = push_oci_image(reg, repo, "v1")
    ref = docker(reg, repo, "v1")
    sign(reg, ref, key)

    manifest = sig_manifest(reg, repo, img.digest)
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    config = json.loads(fetch_blob(reg, repo, manifest["config"]["digest"]))
    [(layer, payload)] = sig_layers(reg, repo, img.digest)
    assert config["rootfs"]["diff_ids"] == [layer["digest"]]
    assert layer["mediaType"] == SIMPLESIGNING_MEDIA_TYPE
    assert set(layer["annotations"]) == {"dev.cosignproject.cosign/signature"}
    # the payload is exactly what containers/image's strict parser accepts, naming registry/repo:tag
    parsed = parse_payload(payload)
    assert parsed.docker_reference == f"{reg.host}/{repo}:v1"
    assert parsed.manifest_digest == img.digest
    assert json.loads(payload)["optional"] is None
    # checked with plain `cryptography`, not regtool: ECDSA-SHA256 over the payload bytes
    assert ecdsa_ok(key.public(), layer["annotations"]["dev.cosignproject.cosign/signature"], payload)

    r = verify(reg, ref, key)
    assert r.rc == 0, r.stderr
    assert "accepted legacy signature" in r.text and key.fingerprint() in r.text
    doc = verify(reg, ref, key, "--output", "json").json
    assert doc["Verified"] is True and doc["Digest"] == img.digest
    [accepted] = doc["Manifests"][0]["Accepted"]
    assert accepted["Format"] == "legacy"
    assert accepted["Signer"] == f"key {key.fingerprint()}"
    assert accepted["SignedIdentity"] == f"{reg.host}/{repo}:v1"


def test_multi_platform_index_and_every_instance_are_signed(
    registry_plain: Registry, repo: str, key: KeyPair
) -> None:
    reg = registry_plain
    idx = push_index(reg, repo, "multi")
    ref = docker(reg, repo, "multi")
    out = sign(reg, ref, key, "--output", "json").json
    signed = {m["Digest"] for m in out["Manifests"] if m["Action"] == "added"}
    assert signed == {idx.digest, *(c.digest for c in idx.children)}
    for digest in signed:
        [(_, payload)] = sig_layers(reg, repo, digest)
        assert parse_payload(payload).docker_reference == f"{reg.host}/{repo}:multi"
    r = verify(reg, ref, key, "--recursive", "--output", "json")
    assert r.rc == 0, r.stderr
    assert {m["Digest"] for m in r.json["Manifests"] if m["Accepted"]} == signed

    # --no-recursive signs the index only
    idx2 = push_index(reg, repo, "multi2", seed="other")
    sign(reg, docker(reg, repo, "multi2"), key, "--no-recursive")
    assert manifest_exists(reg, repo, cosign_signature_tag(idx2.digest))
    assert not any(manifest_exists(reg, repo, cosign_signature_tag(c.digest)) for c in idx2.children)
    assert verify(reg, docker(reg, repo, "multi2"), key).rc == 0
    r = verify(reg, docker(reg, repo, "multi2"), key, "--recursive")
    assert r.rc == 1 and "no signatures found" in r.stderr


def test_skopeo_carries_regtool_signatures_into_dir(
    registry_token: Registry, repo: str, key: KeyPair, registries_d: Path, tmp_path: Path
) -> None:
    """(2) skopeo with use-sigstore-attachments copies the .sig into signature-N files regtool verifies."""
    reg = registry_token
    img = push_oci_image(reg, repo, "v1")
    idx = push_index(reg, repo, "multi")
    sign(reg, docker(reg, repo, "v1"), key)
    sign(reg, docker(reg, repo, "multi"), key)
    src = reg.skopeo_flags("src-")

    single = tmp_path / "single"
    run_skopeo(["copy", "--registries.d", str(registries_d), *src, docker(reg, repo, "v1"), f"dir:{single}"])
    sig = parse_sigstore_json((single / "signature-1").read_bytes())
    assert not (single / "signature-2").exists()
    assert parse_payload(sig.payload).docker_reference == f"{reg.host}/{repo}:v1"
    assert parse_payload(sig.payload).manifest_digest == img.digest
    r = verify(None, f"dir:{single}", key, "--signed-identity", f"{reg.host}/{repo}:v1")
    assert r.rc == 0, r.stderr
    assert "signature-1" in r.text

    multi = tmp_path / "multi"
    run_skopeo(["copy", "--all", "--registries.d", str(registries_d), *src, docker(reg, repo, "multi"),
                f"dir:{multi}"])
    for child in idx.children:
        name = child.digest.split(":", 1)[1] + ".signature-1"
        assert parse_payload(parse_sigstore_json((multi / name).read_bytes()).payload).manifest_digest == child.digest
    r = verify(None, f"dir:{multi}", key, "--recursive", "--output", "json")
    assert r.rc == 0, r.stderr
    assert len(r.json["Manifests"]) == 1 + len(idx.children)


def test_signature_skopeo_writes_into_a_registry_verifies(
    registry_basic: Registry, repo: str, keys: tuple[KeyPair, KeyPair], registries_d: Path, tmp_path: Path
) -> None:
    """(3) regtool signs a dir: image; skopeo pushes it with its signature; regtool verifies skopeo's .sig."""
    reg = registry_basic
    key, other = keys
    img = push_oci_image(reg, repo, "src")
    layout = tmp_path / "dir"
    run_skopeo(["copy", *reg.skopeo_flags("src-"), docker(reg, repo, "src"), f"dir:{layout}"])
    identity = f"{reg.host}/{repo}:released"
    r = run_regtool(["sign", "--key", str(key.key), "--identity", identity, f"dir:{layout}"], env=ENV)
    assert r.rc == 0, r.stderr
    assert (layout / "signature-1").exists()
    assert not manifest_exists(reg, repo, cosign_signature_tag(img.digest))

    run_skopeo(["copy", "--registries.d", str(registries_d), *reg.skopeo_flags("dest-"), f"dir:{layout}",
                docker(reg, repo, "released")])
    assert manifest_exists(reg, repo, cosign_signature_tag(img.digest))  # written by skopeo
    r = verify(reg, docker(reg, repo, "released"), key, "--signed-identity", identity)
    assert r.rc == 0, r.stderr
    assert "accepted legacy signature" in r.text
    # regtool appends to the .sig manifest skopeo wrote, keeping skopeo's layer as it was
    before = sig_manifest(reg, repo, img.digest)["layers"]
    sign(reg, docker(reg, repo, "released"), other)
    after = sig_manifest(reg, repo, img.digest)["layers"]
    assert after[:-1] == before and len(after) == len(before) + 1
    assert verify(reg, docker(reg, repo, "released"), key).rc == 0
    assert verify(reg, docker(reg, repo, "released"), other).rc == 0


# --------------------------------------------------------------------------- tampering


def _repush_sig(reg: Registry, repo: str, digest: str, layers: list[tuple[dict[str, Any], bytes]]) -> None:
    """Write a .sig manifest with the given (descriptor, payload) layers, as an attacker with push rights could."""
    for _, data in layers:
        push_blob(reg, repo, data)
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [d["digest"] for d, _ in layers]}}).encode()
    cfg = push_blob(reg, repo, Blob.of(config, "application/vnd.oci.image.config.v1+json"))
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": cfg.descriptor(),
        "layers": [d for d, _ in layers],
    }
    push_manifest(reg, repo, cosign_signature_tag(digest), json.dumps(manifest).encode(), OCI_MANIFEST)


def test_tampering_is_rejected_with_the_reason(registry_plain: Registry, repo: str, key: KeyPair) -> None:
    reg = registry_plain
    img = push_oci_image(reg, repo, "v1")
    ref = docker(reg, repo, "v1")
    sign(reg, ref, key)
    [(layer, payload)] = sig_layers(reg, repo, img.digest)

    # the payload: another digest in it, same signature
    doc = json.loads(payload)
    doc["critical"]["image"]["docker-manifest-digest"] = "sha256:" + "0" * 64
    forged = json.dumps(doc, separators=(",", ":")).encode()
    forged_layer = dict(layer, digest="sha256:" + hashlib.sha256(forged).hexdigest(), size=len(forged))
    _repush_sig(reg, repo, img.digest, [(forged_layer, forged)])
    r = verify(reg, ref, key)
    assert r.rc == 1
    assert "cryptographic signature verification failed" in r.stderr

    # the signature: one bit flipped
    raw = bytearray(base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"]))
    raw[-1] ^= 1
    bad = dict(layer, annotations={"dev.cosignproject.cosign/signature": base64.b64encode(bytes(raw)).decode()})
    _repush_sig(reg, repo, img.digest, [(bad, payload)])
    r = verify(reg, ref, key)
    assert r.rc == 1
    assert "cryptographic signature verification failed" in r.stderr

    # restore, then re-tag another image under the tag: no signature for the new digest
    _repush_sig(reg, repo, img.digest, [(layer, payload)])
    assert verify(reg, ref, key).rc == 0
    other = push_oci_image(reg, repo, "v1", seed="someone else's image")
    r = verify(reg, ref, key)
    assert r.rc == 1 and "no signatures found" in r.stderr
    # ... and moving the genuine signature next to it does not help: it binds the old digest
    _repush_sig(reg, repo, other.digest, [(layer, payload)])
    r = verify(reg, ref, key)
    assert r.rc == 1
    assert f"signature is for manifest digest {img.digest}, not {other.digest}" in r.stderr


def test_signing_twice_does_not_duplicate(
    registry_plain: Registry, repo: str, keys: tuple[KeyPair, KeyPair]
) -> None:
    reg = registry_plain
    one, two = keys
    img = push_oci_image(reg, repo, "v1")
    ref = docker(reg, repo, "v1")
    sign(reg, ref, one)
    second = sign(reg, ref, one, "--output", "json").json
    assert [m["Action"] for m in second["Manifests"]] == ["present"]
    assert len(sig_layers(reg, repo, img.digest)) == 1
    # another key, and other annotations, are new signatures appended after the existing one
    sign(reg, ref, two)
    sign(reg, ref, one, "-a", "release=1.0")
    layers = sig_layers(reg, repo, img.digest)
    assert len(layers) == 3
    assert json.loads(layers[2][1])["optional"] == {"release": "1.0"}
    for k in keys:
        assert verify(reg, ref, k).rc == 0
    r = verify(reg, ref, one, "-a", "release=1.0", "--output", "json")
    assert r.rc == 0
    assert [a["Annotations"] for a in r.json["Manifests"][0]["Accepted"]] == [{"release": "1.0"}]
    r = verify(reg, ref, two, "-a", "release=1.0")
    assert r.rc == 1 and "annotation 'release' is None in the signature, expected '1.0'" in r.stderr


# --------------------------------------------------------------------------- cosign v3 bundles


def _pae(payload_type: str, payload: bytes) -> bytes:
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(payload), payload)


def test_v3_bundle_referrer_via_fallback_tag(registry_token: Registry, repo: str, key: KeyPair) -> None:
    """On distribution 2.8 (no referrers API) the referrer is listed under the sha256-<hex> fallback tag."""
    reg = registry_token
    img = push_oci_image(reg, repo, "v1")
    ref = docker(reg, repo, "v1")
    sign(reg, ref, key, "--bundle-format", "v3")
    assert not manifest_exists(reg, repo, cosign_signature_tag(img.digest))

    raw_index, _ = fetch_manifest(reg, repo, referrers_tag(img.digest))
    index = json.loads(raw_index)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    [entry] = index["manifests"]
    assert entry["artifactType"] == BUNDLE_TYPE
    referrer = json.loads(fetch_manifest(reg, repo, entry["digest"], accept=OCI_MANIFEST)[0])
    assert referrer["artifactType"] == BUNDLE_TYPE
    assert referrer["config"]["mediaType"] == EMPTY_TYPE
    assert fetch_blob(reg, repo, referrer["config"]["digest"]) == b"{}"
    assert referrer["subject"] == {"mediaType": img.media_type, "size": img.size, "digest": img.digest}
    [layer] = referrer["layers"]
    assert layer["mediaType"] == BUNDLE_TYPE
    bundle = json.loads(fetch_blob(reg, repo, layer["digest"]))

    # the bundle, checked without regtool: v0.3, key hint, DSSE over cosign's in-toto statement
    assert bundle["mediaType"] == BUNDLE_TYPE
    assert set(bundle["verificationMaterial"]) == {"publicKey", "tlogEntries"}
    assert bundle["verificationMaterial"]["tlogEntries"] == []  # nothing uploaded without --tlog-upload
    env = bundle["dsseEnvelope"]
    assert env["payloadType"] == "application/vnd.in-toto+json"
    statement = json.loads(base64.b64decode(env["payload"]))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://sigstore.dev/cosign/sign/v1"
    assert statement["subject"] == [{"name": f"{reg.host}/{repo}", "digest": {"sha256": img.digest[7:]}}]
    [s] = env["signatures"]
    assert ecdsa_ok(key.public(), s["sig"], _pae(env["payloadType"], base64.b64decode(env["payload"])))

    r = verify(reg, ref, key, "--output", "json")
    assert r.rc == 0, r.stderr
    [accepted] = r.json["Manifests"][0]["Accepted"]
    assert accepted["Format"] == "bundle" and accepted["Source"] == f"referrer {entry['digest']}"

    # signing again adds no second referrer; --bundle-format both adds the legacy .sig next to it
    sign(reg, ref, key, "--bundle-format", "both")
    assert len(json.loads(fetch_manifest(reg, repo, referrers_tag(img.digest))[0])["manifests"]) == 1
    formats = [a["Format"] for a in verify(reg, ref, key, "--output", "json").json["Manifests"][0]["Accepted"]]
    assert sorted(formats) == ["bundle", "legacy"]


def test_v3_bundle_tampering_and_identity(registry_plain: Registry, repo: str, keys: tuple[KeyPair, KeyPair]) -> None:
    reg = registry_plain
    one, two = keys
    push_oci_image(reg, repo, "v1")
    ref = docker(reg, repo, "v1")
    sign(reg, ref, one, "--bundle-format", "v3")
    r = verify(reg, ref, two)
    assert r.rc == 1 and "cryptographic signature verification failed" in r.stderr
    # bundles name the repository only: repository-level identity checks pass, exact ones cannot
    assert verify(reg, ref, one, "--signed-identity", f"{reg.host}/{repo}:v1").rc == 0
    r = verify(reg, ref, one, "--signed-identity", f"{reg.host}/{repo}:v1", "--identity-match", "exact")
    assert r.rc == 1 and "cannot match an exact signed identity" in r.stderr
    r = verify(reg, ref, one, "--signed-identity", f"{reg.host}/elsewhere:v1")
    assert r.rc == 1 and "is not accepted for" in r.stderr


# --------------------------------------------------------------------------- oci: layouts


def test_oci_layout_signatures_are_index_entries(
    registry_plain: Registry, repo: str, key: KeyPair, tmp_path: Path
) -> None:
    reg = registry_plain
    img = push_oci_image(reg, repo, "v1")
    layout = tmp_path / "layout"
    run_skopeo(["copy", *reg.skopeo_flags("src-"), docker(reg, repo, "v1"), f"oci:{layout}:app"])
    image = f"oci:{layout}:app"
    r = run_regtool(["sign", "--key", str(key.key), "--bundle-format", "both",
                     "--identity", f"{reg.host}/{repo}:v1", image], env=ENV)
    assert r.rc == 0, r.stderr
    names = {
        m.get("annotations", {}).get("org.opencontainers.image.ref.name")
        for m in json.loads((layout / "index.json").read_text())["manifests"]
    }
    assert names == {"app", cosign_signature_tag(img.digest), referrers_tag(img.digest)}
    r = verify(None, image, key, "--output", "json")
    assert r.rc == 0, r.stderr
    assert sorted(a["Format"] for a in r.json["Manifests"][0]["Accepted"]) == ["bundle", "legacy"]
    # skopeo still reads the image by its name
    run_skopeo(["inspect", image])


# --------------------------------------------------------------------------- the copy gate


def test_copy_gate_refuses_unsigned_and_copies_signed(
    registry_plain: Registry, repo: str, keys: tuple[KeyPair, KeyPair], tmp_path: Path
) -> None:
    reg = registry_plain
    one, two = keys
    unsigned = push_oci_image(reg, repo, "unsigned")
    signed = push_oci_image(reg, repo, "signed")
    sign(reg, docker(reg, repo, "signed"), one)
    f = reg.skopeo_flags("src-")
    dest_flags = reg.skopeo_flags("dest-")

    out = tmp_path / "out"
    r = run_regtool(["copy", "--require-signed", "--key", str(one.pub), *f, docker(reg, repo, "unsigned"),
                     f"dir:{out}"])
    assert r.rc == 1, r.stderr
    assert "no signatures found" in r.stderr and unsigned.digest in r.stderr
    assert not out.exists()
    r = run_regtool(["copy", "--require-signed", "--key", str(one.pub), *f, *dest_flags,
                     docker(reg, repo, "unsigned"), docker(reg, repo, "copied")])
    assert r.rc == 1
    assert "copied" not in list_tags(reg, repo)

    r = run_regtool(["copy", "--require-signed", "--key", str(two.pub), *f, docker(reg, repo, "signed"),
                     f"dir:{out}"])
    assert r.rc == 1 and "cryptographic signature verification failed" in r.stderr
    assert not out.exists()

    r = run_regtool(["copy", "--require-signed", "--key", str(one.pub), *f, docker(reg, repo, "signed"),
                     f"dir:{out}"])
    assert r.rc == 0, r.stderr
    assert "Signature gate" in r.stderr
    assert (out / "manifest.json").read_bytes() == signed.manifest
    # to a registry: the .sig tag travels with the image and still verifies there
    r = run_regtool(["copy", "--require-signed", "--key", str(one.pub), *f, *dest_flags,
                     docker(reg, repo, "signed"), docker(reg, repo + "-mirror", "signed")])
    assert r.rc == 0, r.stderr
    assert verify(reg, docker(reg, repo + "-mirror", "signed"), one).rc == 0

    # gate flags without --require-signed are a usage error, not a silently skipped check
    r = run_regtool(["copy", "--key", str(one.pub), *f, docker(reg, repo, "signed"), f"dir:{tmp_path / 'x'}"])
    assert r.rc == 2 and "need --require-signed" in r.stderr


def test_copy_gate_recursive_needs_every_instance(
    registry_plain: Registry, repo: str, key: KeyPair, tmp_path: Path
) -> None:
    reg = registry_plain
    idx = push_index(reg, repo, "multi")
    sign(reg, docker(reg, repo, "multi"), key, "--no-recursive")
    f = reg.skopeo_flags("src-")
    args = ["copy", "--all", "--require-signed", "--key", str(key.pub), *f, docker(reg, repo, "multi")]
    r = run_regtool([*args, "--recursive", f"dir:{tmp_path / 'a'}"])
    assert r.rc == 1 and "no signatures found" in r.stderr
    assert any(c.digest in r.stderr for c in idx.children)
    r = run_regtool([*args, f"dir:{tmp_path / 'b'}"])
    assert r.rc == 0, r.stderr
    sign(reg, docker(reg, repo, "multi"), key)
    r = run_regtool([*args, "--recursive", f"dir:{tmp_path / 'c'}"])
    assert r.rc == 0, r.stderr


# --------------------------------------------------------------------------- keyless, up to the network edge


STAGING_ROOT_URL = "https%3A%2F%2Ftuf-repo-cdn.sigstage.dev"
DSSE_SUBJECT = "sha256:a0cfc71271d6e278e57cd332ff957c3f7043fdda354c4cbb190a30d56efa01bf"


@pytest.fixture
def sigstore_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    pytest.importorskip("sigstore")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    yield


def _staging_root() -> bytes:
    import importlib.resources

    path = importlib.resources.files("sigstore") / "_store" / STAGING_ROOT_URL / "trusted_root.json"
    if not path.is_file():
        pytest.skip("installed sigstore has no embedded staging trusted root")
    return path.read_bytes()


class RecordedSigstore:
    """Stands in for sigstore-python's Signer: answers with real bundles recorded from Sigstore."""

    def __init__(self) -> None:
        self.artifacts: list[bytes] = []
        self.statements: list[Any] = []

    def sign_artifact(self, input_: bytes) -> Any:
        from sigstore.models import Bundle

        self.artifacts.append(input_)
        return Bundle.from_json((BUNDLES / "bundle_v3.txt.sigstore").read_bytes())

    def sign_dsse(self, input_: Any) -> Any:
        self.statements.append(input_)
        return (BUNDLES / "a.dsse.staging-rekor-v2.txt.sigstore.json").read_text()


def test_keyless_bundles_become_sig_annotations_and_referrers(
    registry_plain: Registry, repo: str, sigstore_env: None
) -> None:
    """The keyless code path from sigstore-python's bundles to registry storage, with recorded bundles."""
    from regtool.reference import parse_reference
    from regtool.registry import ClientOptions, RegistryClient, RegistryOptions
    from regtool.signing.bundle import bundle_to_legacy_annotations, verify_bundle
    from regtool.signing.gate import verify_found
    from regtool.signing.rekor import rekor_keys_from_trusted_root, verify_rekor_bundle
    from regtool.signing.sign import KeylessSigner, SignOptions, sign_image
    from regtool.signing.storage import RegistrySignatureStore, find_signatures
    from regtool.signing.verify import VerifyPolicy, fulcio_material_from_trusted_root

    reg = registry_plain
    img: PushedImage = push_oci_image(reg, repo, "v1")
    root = _staging_root()
    backend = RecordedSigstore()
    signer = KeylessSigner(backend, identity="william@yossarian.net", issuer="https://github.com/login/oauth",
                           trusted_root=root, statement_factory=lambda b: b)
    ref = parse_reference(f"{reg.host}/{repo}:v1")
    identity = f"{reg.host}/{repo}:v1"
    artifact = (BUNDLES / "bundle_v3.txt").read_bytes()

    async def run() -> None:
        opts = ClientOptions(default=RegistryOptions(tls_verify=False))
        async with RegistryClient(opts) as client:
            store = RegistrySignatureStore(client, ref)
            result = await sign_image(store, signer, SignOptions(bundle_format="both"), identity=identity)
            assert [(m.format, m.action) for m in result.manifests] == [("legacy", "added"), ("v3", "added")]
            assert backend.statements == [backend.statements[0]]
            statement = json.loads(backend.statements[0])
            assert statement["subject"][0]["digest"] == {"sha256": img.digest[7:]}
            # the recorded message signature signs its own artifact: store it as that artifact's signature
            sig = await signer.sign_payload(artifact)
            await store.add_signatures(img.digest, [sig])
            found = await find_signatures(await store.source(), img.digest)

        assert [f.format for f in found] == ["simplesigning", "simplesigning", "bundle"]
        expected = bundle_to_legacy_annotations((BUNDLES / "bundle_v3.txt.sigstore").read_bytes(), trusted_root=root)
        for f in found[:2]:
            assert f.signature is not None
            assert {k: f.signature.annotations[k] for k in expected} == expected
        # after the round trip through the registry: the Rekor SET and the signature still check out
        stored = found[1].signature
        assert isinstance(stored, Signature) and stored.payload == artifact
        verify_rekor_bundle(stored.rekor_bundle or "", rekor_keys_from_trusted_root(root),
                            signature_b64=stored.signature, payload=artifact, signer_pem=stored.certificate or "")
        roots, inter = fulcio_material_from_trusted_root(root)
        policy = VerifyPolicy(fulcio_roots=tuple(roots), fulcio_intermediates=tuple(inter),
                              rekor_keys=tuple(rekor_keys_from_trusted_root(root)),
                              cert_identity="william@yossarian.net", cert_oidc_issuer="https://github.com/login/oauth")
        # the signature, Rekor entry and chain pass; only the artifact is not an image payload
        with pytest.raises(Exception, match="invalid JSON in signature payload"):
            verify_found(found[1], img.digest, policy)
        # the signature over the image's payload was the recorded one, so it fails where it should
        with pytest.raises(Exception, match="cryptographic signature verification failed"):
            verify_found(found[0], img.digest, policy)
        # the referrer holds the bundle byte for byte, and it still verifies for its own subject
        bundle = found[2].signature
        assert bundle is not None
        assert bundle.payload == (BUNDLES / "a.dsse.staging-rekor-v2.txt.sigstore.json").read_bytes()
        assert verify_bundle(bundle.payload, DSSE_SUBJECT, instance="staging", identity_regexp=".",
                             issuer_regexp=".").kind == "dsse"

    anyio.run(run)
    # the same signer recognises its stored signature (no duplicate on re-signing), another identity does not
    other = KeylessSigner(backend, identity="someone@example.com", issuer="https://github.com/login/oauth")
    sig = Signature.from_annotations(
        artifact, bundle_to_legacy_annotations((BUNDLES / "bundle_v3.txt.sigstore").read_bytes())
    )
    assert signer.signed_by_me(sig) and not other.signed_by_me(sig)
