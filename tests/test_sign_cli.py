"""generate-key / sign / verify without registries: key files, local layouts, bad input, OIDC detection,
Rekor uploads against a local stand-in log, and the keyless code path fed with recorded Sigstore bundles.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import stat
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from regtool.errors import RegtoolError, UsageError, VerificationError
from regtool.signing.keys import load_private_key, public_key_pem
from regtool.signing.models import BUNDLE_ANNOTATION, parse_sigstore_json
from regtool.signing.payload import parse_payload
from tests.support.cli import Result, run_regtool
from tests.support.images import build_image, build_index

PASSWORD = "regtool-test-password"
ENV = {"COSIGN_PASSWORD": PASSWORD}
FIXTURES = Path(__file__).parent / "fixtures" / "signing"
CI = FIXTURES / "containers-image"
COSIGN_KEYS = FIXTURES / "cosign-keys"
BUNDLES = FIXTURES / "sigstore-bundles"
#: CI systems sigstore's ambient detection looks at, blanked so a test never reaches for the network.
NO_CI = {"GITHUB_ACTIONS": "", "GITLAB_CI": "", "BUILDKITE": "", "CIRCLECI": "", "GOOGLE_SERVICE_ACCOUNT_NAME": "",
         "SIGSTORE_ID_TOKEN": ""}


def one_error_line(r: Result, exit_code: int, text: str) -> None:
    assert r.rc == exit_code, (r.rc, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("regtool: error: ") and text in lines[0], r.stderr


@pytest.fixture(scope="module")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("keys")
    r = run_regtool(["generate-key", "--output-key-prefix", str(d / "k")], env=ENV)
    assert r.rc == 0, r.stderr
    return d / "k.key", d / "k.pub"


def make_dir_image(path: Path, seed: str = "dir-image", index: bool = False) -> str:
    """A skopeo ``dir:`` image (version, manifest.json, blobs; instances as <hex>.manifest.json)."""
    path.mkdir(parents=True)
    (path / "version").write_text("Directory Transport Version: 1.1\n")
    built = build_index(seed, platforms=["linux/amd64", "linux/arm64"], layers=1, layer_size=64) if index \
        else build_image(seed, layers=1, layer_size=64)
    for child in built.children:
        (path / (child.digest[7:] + ".manifest.json")).write_bytes(child.manifest)
        for blob in child.blobs():
            (path / blob.digest[7:]).write_bytes(blob.data or b"")
    for blob in built.blobs():
        (path / blob.digest[7:]).write_bytes(blob.data or b"")
    (path / "manifest.json").write_bytes(built.manifest)
    return built.digest


def make_oci_layout(path: Path, name: str = "app", seed: str = "layout-image") -> str:
    built = build_image(seed, layers=1, layer_size=64)
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for blob in built.blobs():
        (blobs / blob.digest[7:]).write_bytes(blob.data or b"")
    (blobs / built.digest[7:]).write_bytes(built.manifest)
    entry = dict(built.descriptor(), annotations={"org.opencontainers.image.ref.name": name})
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return built.digest


def sign(image: str, key: Path, *extra: str, env: dict[str, str] | None = None) -> Result:
    return run_regtool(["sign", "--key", str(key), *extra, image], env={**ENV, **(env or {})})


def verify(image: str, pub: Path, *extra: str, env: dict[str, str] | None = None) -> Result:
    return run_regtool(["verify", "--key", str(pub), *extra, image], env=env)


# --------------------------------------------------------------------------- keys


def test_generate_key_writes_cosign_files(tmp_path: Path) -> None:
    r = run_regtool(["generate-key", "--output-key-prefix", str(tmp_path / "release")], env=ENV)
    assert r.rc == 0, r.stderr
    key, pub = tmp_path / "release.key", tmp_path / "release.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    text = key.read_text()
    assert text.startswith("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    body = json.loads(base64.b64decode("".join(text.splitlines()[1:-1])))
    assert body["kdf"] == {"name": "scrypt", "params": {"N": 65536, "r": 8, "p": 1}, "salt": body["kdf"]["salt"]}
    assert body["cipher"]["name"] == "nacl/secretbox"
    public = serialization.load_pem_public_key(pub.read_bytes())
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    assert public_key_pem(load_private_key(key.read_bytes(), PASSWORD.encode()).public_key()) == pub.read_bytes()

    one_error_line(run_regtool(["generate-key", "--output-key-prefix", str(tmp_path / "release")], env=ENV),
                   2, "already exists")
    r = run_regtool(["generate-key", "--force", "--legacy", "--output-key-prefix", str(tmp_path / "release")],
                    env=ENV)
    assert r.rc == 0, r.stderr
    legacy = key.read_text()
    assert legacy.startswith("-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n")
    assert json.loads(base64.b64decode("".join(legacy.splitlines()[1:-1])))["kdf"]["params"]["N"] == 32768
    assert load_private_key(key.read_bytes(), PASSWORD.encode()).public_key() is not None


@pytest.mark.parametrize("name", ["cosign-format-n32768.key", "sigstore-format-n32768.key"])
def test_keys_written_by_cosign_sign_images(name: str, tmp_path: Path) -> None:
    key = load_private_key((COSIGN_KEYS / name).read_bytes(), b"hello")
    pub = tmp_path / "cosign.pub"
    pub.write_bytes(public_key_pem(key.public_key()))
    make_dir_image(tmp_path / "img")
    image = f"dir:{tmp_path / 'img'}"
    r = sign(image, COSIGN_KEYS / name, "--identity", "registry.example.com/app:1", env={"COSIGN_PASSWORD": "hello"})
    assert r.rc == 0, r.stderr
    r = verify(image, pub, "--signed-identity", "registry.example.com/app:1")
    assert r.rc == 0, r.stderr


def test_bad_keys_and_passwords_are_one_line_usage_errors(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    make_dir_image(tmp_path / "img")
    image = f"dir:{tmp_path / 'img'}"
    ident = ("--identity", "registry.example.com/app:1")
    one_error_line(sign(image, COSIGN_KEYS / "cosign-format-sec1-plaintext-must-reject.key", *ident,
                        env={"COSIGN_PASSWORD": "hello"}), 2, "SEC1")
    one_error_line(sign(image, keypair[0], *ident, env={"COSIGN_PASSWORD": "not the password"}), 2,
                   "wrong password")
    one_error_line(sign(image, tmp_path / "missing.key", *ident), 2, "cannot read private key")
    one_error_line(verify(image, tmp_path / "missing.pub"), 2, "cannot read public key")
    one_error_line(verify(image, keypair[0]), 2, "PUBLIC KEY")  # a private key where a public one belongs
    assert not (tmp_path / "img" / "signature-1").exists()


def test_bad_flags_and_references(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    key, pub = keypair
    make_dir_image(tmp_path / "img")
    image = f"dir:{tmp_path / 'img'}"
    r = run_regtool(["sign", "--key", str(key), "--no-such-flag", image], env=ENV)
    assert r.rc == 2 and "unrecognized arguments: --no-such-flag" in r.stderr.strip().splitlines()[-1]
    r = run_regtool(["verify", "--bundle-format", "v3", "--key", str(pub), image])
    assert r.rc == 2 and "unrecognized arguments" in r.stderr
    one_error_line(sign("registry.example.com/app:1", key), 2, "did you mean \"docker://registry.example.com/app:1\"")
    one_error_line(sign("docker://Registry.example.com/UPPER:1", key), 2, "invalid image name")
    one_error_line(verify("docker://example.com/app:", pub), 2, "empty tag")
    one_error_line(run_regtool(["sign", image], env=ENV), 2, "exactly one of --key FILE and --keyless")
    one_error_line(run_regtool(["sign", "--key", str(key), "--keyless", image], env=ENV), 2, "exactly one")
    one_error_line(sign(image, key), 2, "--identity")  # a dir: image has no name to sign
    one_error_line(sign(image, key, "--identity", "a/b:1", "--bundle-format", "v3"), 2, "no place for Sigstore")
    one_error_line(sign(image, key, "--identity", "a/b:1", "-a", "novalue"), 2, "KEY=VALUE")
    one_error_line(sign(f"oci-archive:{tmp_path / 'x.tar'}", key), 2, "docker://, oci: and dir:")
    one_error_line(run_regtool(["verify", image]), 2, "verification needs --key")
    one_error_line(run_regtool(["verify", "--key", str(pub), "--certificate-identity", "x", image]), 2,
                   "do not apply to --key")
    one_error_line(run_regtool(["verify", "--certificate-identity", "x", "--certificate-oidc-issuer", "y",
                                "--insecure-ignore-tlog", image]), 2, "keyless")
    one_error_line(run_regtool(["verify", "--certificate-identity", "x", "--certificate-oidc-issuer", "y",
                                "--fulcio-root", str(CI / "fulcio_v1.crt.pem"), image]), 2, "--rekor-public-key")


def test_verify_unsigned_image_exits_1_with_a_reason(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    digest = make_dir_image(tmp_path / "img")
    one_error_line(verify(f"dir:{tmp_path / 'img'}", keypair[1]), 1, f"no signatures found for dir:{tmp_path}")
    r = verify(f"dir:{tmp_path / 'img'}", keypair[1], "--output", "json")
    assert r.rc == 1
    assert r.json["Verified"] is False and r.json["Manifests"] == [{"Digest": digest, "Accepted": [],
                                                                      "Rejected": []}]


# --------------------------------------------------------------------------- containers/image fixtures via the CLI


@pytest.mark.parametrize(
    ("image", "args"),
    [
        ("dir-img-cosign-valid", ["--key", str(CI / "cosign.pub")]),
        ("dir-img-cosign-valid-with-tag", ["--key", str(CI / "cosign.pub"),
                                           "--signed-identity", "192.168.64.2:5000/skopeo-signed:tag"]),
        ("dir-img-cosign-key-rekor-valid", ["--key", str(CI / "cosign2.pub"), "--rekor-public-key",
                                            str(CI / "rekor.pub"), "--require-tlog"]),
        ("dir-img-cosign-fulcio-rekor-valid", ["--fulcio-root", str(CI / "fulcio_v1.crt.pem"),
                                               "--rekor-public-key", str(CI / "rekor.pub"),
                                               "--certificate-identity", "mitr@redhat.com",
                                               "--certificate-oidc-issuer", "https://github.com/login/oauth"]),
        ("dir-img-cosign-pki-valid", ["--ca-roots", str(CI / "pki_root_crts.pem"), "--ca-intermediates",
                                      str(CI / "pki_intermediate_crts.pem"),
                                      "--certificate-identity", "qiwan@redhat.com"]),
    ],
)
def test_signatures_from_cosign_and_skopeo_verify(image: str, args: list[str]) -> None:
    r = run_regtool(["verify", *args, "--output", "json", f"dir:{CI / image}"])
    assert r.rc == 0, r.stderr
    [accepted] = r.json["Manifests"][0]["Accepted"]
    assert accepted["Format"] == "legacy" and accepted["Source"] == "signature-1"


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--key", str(CI / "cosign2.pub")], "cryptographic signature verification failed"),
        (["--key", str(CI / "cosign.pub"), "--signed-identity", "192.168.64.2:5000/other:tag"], "is not accepted for"),
        (["--key", str(CI / "cosign.pub"), "--require-tlog", "--rekor-public-key", str(CI / "rekor.pub")],
         "no Rekor bundle"),
    ],
)
def test_wrong_policies_are_rejected_with_the_reason(args: list[str], reason: str) -> None:
    r = run_regtool(["verify", *args, f"dir:{CI / 'dir-img-cosign-valid-with-tag'}"])
    assert r.rc == 1
    [rejected] = [line for line in r.stderr.splitlines() if line.startswith("regtool: rejected ")]
    assert " signature-1: " in rejected and reason in rejected
    assert r.stderr.strip().splitlines()[-1].startswith("regtool: error: no accepted signature")


def test_modified_manifest_fixture_is_rejected() -> None:
    r = run_regtool(["verify", "--key", str(CI / "cosign.pub"), f"dir:{CI / 'dir-img-cosign-modified-manifest'}"])
    assert r.rc == 1
    assert "signature is for manifest digest sha256:634a8f35" in r.stderr


# --------------------------------------------------------------------------- local layouts


def test_dir_image_sign_twice_and_instances(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    key, pub = keypair
    digest = make_dir_image(tmp_path / "img", index=True)
    image = f"dir:{tmp_path / 'img'}"
    r = sign(image, key, "--identity", "registry.example.com/app:1", "--output", "json")
    assert r.rc == 0, r.stderr
    assert len(r.json["Manifests"]) == 3 and r.json["Digest"] == digest
    files = sorted(p.name for p in (tmp_path / "img").iterdir() if "signature" in p.name)
    assert len(files) == 3 and "signature-1" in files
    for name in files:
        sig = parse_sigstore_json((tmp_path / "img" / name).read_bytes())
        assert parse_payload(sig.payload).docker_reference == "registry.example.com/app:1"
    again = sign(image, key, "--identity", "registry.example.com/app:1", "--output", "json")
    assert {m["Action"] for m in again.json["Manifests"]} == {"present"}
    assert not (tmp_path / "img" / "signature-2").exists()
    r = verify(image, pub, "--recursive", "--signed-identity", "registry.example.com/app:1")
    assert r.rc == 0, r.stderr
    assert len(r.text.splitlines()) == 3


def test_oci_layout_without_name_still_resolves_after_signing(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    key, pub = keypair
    make_oci_layout(tmp_path / "layout")
    image = f"oci:{tmp_path / 'layout'}"
    assert sign(image, key, "--identity", "registry.example.com/app:1", "--bundle-format", "both").rc == 0
    r = verify(image, pub, "--output", "json")
    assert r.rc == 0, r.stderr
    assert sorted(a["Format"] for a in r.json["Manifests"][0]["Accepted"]) == ["bundle", "legacy"]
    # the layout's own name for the image is a full reference: it is the default identity
    make_oci_layout(tmp_path / "named", name="registry.example.com/team/app:2.0")
    named = f"oci:{tmp_path / 'named'}:registry.example.com/team/app:2.0"
    assert sign(named, key).rc == 0
    doc = verify(named, pub, "--output", "json").json
    assert doc["Manifests"][0]["Accepted"][0]["SignedIdentity"] == "registry.example.com/team/app:2.0"


# --------------------------------------------------------------------------- Rekor (a local stand-in log)


class FakeRekor:
    """A Rekor v1 log stand-in: canonicalises hashedrekord/dsse entries and signs entry timestamps."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.log_id = hashlib.sha256(der).hexdigest()
        self.entries: list[dict[str, Any]] = []
        rekor = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length", "0"))
                status, answer = rekor.create(json.loads(self.rfile.read(length)))
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def create(self, proposed: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if proposed.get("kind") == "hashedrekord":
            body = proposed
        elif proposed.get("kind") == "dsse":
            content = proposed["spec"]["proposedContent"]
            env = json.loads(content["envelope"])
            body = {
                "apiVersion": "0.0.1",
                "kind": "dsse",
                "spec": {
                    "envelopeHash": {"algorithm": "sha256",
                                     "value": hashlib.sha256(content["envelope"].encode()).hexdigest()},
                    "payloadHash": {"algorithm": "sha256",
                                    "value": hashlib.sha256(base64.b64decode(env["payload"])).hexdigest()},
                    "signatures": [{"signature": s["sig"], "verifier": content["verifiers"][0]}
                                   for s in env["signatures"]],
                },
            }
        else:
            return 400, {"message": "unsupported kind"}
        body_b64 = base64.b64encode(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).decode()
        index = len(self.entries)
        integrated = int(time.time())
        canonical = json.dumps({"body": body_b64, "integratedTime": integrated, "logID": self.log_id,
                                "logIndex": index}, separators=(",", ":")).encode()
        set_sig = base64.b64encode(self.key.sign(canonical, ec.ECDSA(hashes.SHA256()))).decode()
        entry = {
            "body": body_b64,
            "integratedTime": integrated,
            "logID": self.log_id,
            "logIndex": index,
            "verification": {
                "signedEntryTimestamp": set_sig,
                "inclusionProof": {"checkpoint": "rekor.test - 1\n", "hashes": [], "logIndex": index,
                                   "rootHash": hashlib.sha256(b"root").hexdigest(), "treeSize": index + 1},
            },
        }
        self.entries.append(proposed)
        return 201, {hashlib.sha256(canonical).hexdigest(): entry}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def rekor(tmp_path: Path) -> Iterator[FakeRekor]:
    log = FakeRekor()
    try:
        yield log
    finally:
        log.close()


@pytest.fixture
def sigstore_home(tmp_path: Path) -> dict[str, str]:
    """Keeps sigstore-python's TUF cache (the public-good root) out of the real home directory."""
    return {"XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_DATA_HOME": str(tmp_path / "data")}


def test_tlog_upload_legacy_signature(
    tmp_path: Path, keypair: tuple[Path, Path], rekor: FakeRekor, sigstore_home: dict[str, str]
) -> None:
    key, pub = keypair
    make_dir_image(tmp_path / "img")
    image = f"dir:{tmp_path / 'img'}"
    rekor_pub = tmp_path / "rekor.pub"
    rekor_pub.write_bytes(rekor.public_pem())
    r = sign(image, key, "--identity", "registry.example.com/app:1", "--tlog-upload", "--rekor-url", rekor.url)
    assert r.rc == 0, r.stderr
    [entry] = rekor.entries
    assert entry["kind"] == "hashedrekord"
    sig = parse_sigstore_json((tmp_path / "img" / "signature-1").read_bytes())
    bundle = json.loads(sig.annotations[BUNDLE_ANNOTATION])
    assert list(bundle) == ["SignedEntryTimestamp", "Payload"]
    assert list(bundle["Payload"]) == ["body", "integratedTime", "logIndex", "logID"]

    r = verify(image, pub, "--rekor-public-key", str(rekor_pub), "--require-tlog")
    assert r.rc == 0, r.stderr
    assert "logged in Rekor (index 0)" in r.text
    # by default the entry is checked against the public-good Rekor, which never logged it
    r = verify(image, pub, env=sigstore_home)
    assert r.rc == 1 and "does not match any trusted Rekor key" in r.stderr
    assert verify(image, pub, "--insecure-ignore-tlog").rc == 0
    # a tampered SET is caught
    bundle["Payload"]["integratedTime"] += 1
    forged = sig.to_annotations()
    forged[BUNDLE_ANNOTATION] = json.dumps(bundle)
    from regtool.signing.models import Signature, to_sigstore_json

    (tmp_path / "img" / "signature-1").write_bytes(to_sigstore_json(Signature.from_annotations(sig.payload, forged)))
    r = verify(image, pub, "--rekor-public-key", str(rekor_pub))
    assert r.rc == 1 and "Rekor SET failed" in r.stderr
    # without --tlog-upload nothing is sent, and --tlog-upload=false says so explicitly
    make_dir_image(tmp_path / "img2")
    r = sign(f"dir:{tmp_path / 'img2'}", key, "--identity", "a.example/b:1", "--tlog-upload=false",
             "--rekor-url", rekor.url)
    assert r.rc == 0 and len(rekor.entries) == 1
    r = verify(f"dir:{tmp_path / 'img2'}", pub, "--require-tlog", "--rekor-public-key", str(rekor_pub))
    assert r.rc == 1 and "has no Rekor bundle" in r.stderr


def test_tlog_upload_v3_bundle(tmp_path: Path, keypair: tuple[Path, Path], rekor: FakeRekor) -> None:
    key, pub = keypair
    make_oci_layout(tmp_path / "layout")
    image = f"oci:{tmp_path / 'layout'}:app"
    rekor_pub = tmp_path / "rekor.pub"
    rekor_pub.write_bytes(rekor.public_pem())
    r = sign(image, key, "--identity", "registry.example.com/app:1", "--bundle-format", "v3", "--tlog-upload",
             "--rekor-url", rekor.url)
    assert r.rc == 0, r.stderr
    [entry] = rekor.entries
    assert entry["kind"] == "dsse"
    r = verify(image, pub, "--rekor-public-key", str(rekor_pub), "--require-tlog", "--output", "json")
    assert r.rc == 0, r.stderr
    [accepted] = r.json["Manifests"][0]["Accepted"]
    assert accepted["Format"] == "bundle" and accepted["LogIndex"] == 0
    other = tmp_path / "other.pub"
    other.write_bytes(public_key_pem(ec.generate_private_key(ec.SECP256R1()).public_key()))
    r = verify(image, pub, "--rekor-public-key", str(other))
    assert r.rc == 1 and "does not match any trusted Rekor key" in r.stderr


def test_rekor_refusal_is_an_error(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    make_dir_image(tmp_path / "img")
    # nothing listens on port 9 of localhost: the upload fails before anything is written
    r = sign(f"dir:{tmp_path / 'img'}", keypair[0], "--identity", "a.example/b:1", "--tlog-upload",
             "--rekor-url", "http://127.0.0.1:9")
    one_error_line(r, 1, "Rekor upload to http://127.0.0.1:9 failed")
    assert not (tmp_path / "img" / "signature-1").exists()


# --------------------------------------------------------------------------- key-signed bundles (library)


def test_key_bundle_verification_rejects_tampering(keypair: tuple[Path, Path]) -> None:
    from regtool.signing.bundle import make_cosign_v3_statement
    from regtool.signing.gate import verify_key_bundle
    from regtool.signing.keys import load_public_key
    from regtool.signing.sign import make_key_bundle
    from regtool.signing.verify import VerifyPolicy

    key = load_private_key(keypair[0].read_bytes(), PASSWORD.encode())
    digest = "sha256:" + "ab" * 32
    statement = make_cosign_v3_statement(digest, "registry.example.com/app:1")
    bundle = make_key_bundle(key, statement)
    policy = VerifyPolicy(public_keys=(load_public_key(keypair[1].read_bytes()),))
    verified = verify_key_bundle(bundle, digest, policy)
    assert verified.docker_reference == "registry.example.com/app" and verified.source_format == "bundle"
    with pytest.raises(VerificationError, match="no in-toto subject has digest"):
        verify_key_bundle(bundle, "sha256:" + "cd" * 32, policy)
    doc = json.loads(bundle)
    forged = json.loads(statement)
    forged["subject"][0]["digest"]["sha256"] = "cd" * 32
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(forged).encode()).decode()
    with pytest.raises(VerificationError, match="cryptographic signature verification failed"):
        verify_key_bundle(json.dumps(doc).encode(), "sha256:" + "cd" * 32, policy)
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(VerificationError, match="cryptographic signature verification failed"):
        verify_key_bundle(bundle, digest, VerifyPolicy(public_keys=(other.public_key(),)))
    with pytest.raises(VerificationError, match="requires one"):
        verify_key_bundle(bundle, digest, policy.__class__(public_keys=policy.public_keys, require_tlog=True,
                                                           rekor_keys=_any_rekor_keys()))


def _any_rekor_keys() -> tuple[Any, ...]:
    from regtool.signing.rekor import load_rekor_keys

    return tuple(load_rekor_keys((CI / "rekor.pub").read_bytes()))


# --------------------------------------------------------------------------- OIDC detection (no network)


def _jwt(claims: dict[str, Any]) -> str:
    jwt = pytest.importorskip("jwt")
    token: str = jwt.encode(claims, "not-verified-by-clients: a 32+ byte test secret", algorithm="HS256")
    return token


def _claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "https://token.actions.githubusercontent.com",
        "sub": "repo:example/app:ref:refs/tags/v1.0",
        "aud": "sigstore",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
    }
    claims.update(over)
    return claims


@pytest.fixture
def clean_ci(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    pytest.importorskip("sigstore")
    for name in ("SIGSTORE_ID_TOKEN", "GITHUB_ACTIONS", "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
                 "ACTIONS_ID_TOKEN_REQUEST_URL", "GITLAB_CI", "BUILDKITE", "CIRCLECI",
                 "GOOGLE_SERVICE_ACCOUNT_NAME"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_oidc_token_from_sigstore_id_token(clean_ci: pytest.MonkeyPatch) -> None:
    from regtool.signing.sign import ambient_identity_token, identity_token

    assert ambient_identity_token() is None
    token = _jwt(_claims())
    clean_ci.setenv("SIGSTORE_ID_TOKEN", token + "\n")
    assert ambient_identity_token() == token
    ident = identity_token(interactive=False)
    assert ident.identity == "repo:example/app:ref:refs/tags/v1.0"
    assert ident.federated_issuer == "https://token.actions.githubusercontent.com"
    clean_ci.setenv("SIGSTORE_ID_TOKEN", _jwt(_claims(exp=int(time.time()) - 3600)))
    with pytest.raises(UsageError, match="not usable"):
        identity_token(interactive=False)
    clean_ci.setenv("SIGSTORE_ID_TOKEN", _jwt(_claims(aud="someone-else")))
    with pytest.raises(UsageError, match="not usable"):
        identity_token(interactive=False)
    clean_ci.delenv("SIGSTORE_ID_TOKEN")
    with pytest.raises(UsageError, match="no OIDC identity token"):
        identity_token(interactive=False)


def test_oidc_github_actions_detection(clean_ci: pytest.MonkeyPatch) -> None:
    """GitHub Actions: the runner's token endpoint is asked, with the request token, for audience sigstore."""
    from regtool.signing.sign import ambient_identity_token

    token = _jwt(_claims())
    seen: list[tuple[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return

        def do_GET(self) -> None:  # noqa: N802
            seen.append((self.path, self.headers.get("authorization", "")))
            data = json.dumps({"value": token}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        clean_ci.setenv("GITHUB_ACTIONS", "true")
        clean_ci.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "runner-request-token")
        clean_ci.setenv("ACTIONS_ID_TOKEN_REQUEST_URL",
                        f"http://127.0.0.1:{server.server_address[1]}/token?api-version=2.0")
        assert ambient_identity_token() == token
    finally:
        server.shutdown()
        server.server_close()
    [(path, auth)] = seen
    query = urllib.parse.parse_qs(urllib.parse.urlparse(path).query)
    assert query["audience"] == ["sigstore"] and query["api-version"] == ["2.0"]
    assert auth.lower() == "bearer runner-request-token"


def test_oidc_github_without_permission_is_explained(clean_ci: pytest.MonkeyPatch) -> None:
    from regtool.signing.sign import ambient_identity_token

    clean_ci.setenv("GITHUB_ACTIONS", "true")
    with pytest.raises(RegtoolError, match="ambient OIDC credential detection failed: .*ACTIONS_ID_TOKEN_REQUEST"):
        ambient_identity_token()


def test_oidc_gitlab_and_buildkite_detection(clean_ci: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from regtool.signing.sign import ambient_identity_token

    clean_ci.setenv("GITLAB_CI", "true")
    with pytest.raises(RegtoolError, match="GitLab.*SIGSTORE_ID_TOKEN"):
        ambient_identity_token()
    clean_ci.delenv("GITLAB_CI")
    token = _jwt(_claims(iss="https://agent.buildkite.com", sub="organization:example:pipeline:app"))
    agent = tmp_path / "bin" / "buildkite-agent"
    agent.parent.mkdir()
    agent.write_text(f"#!/bin/sh\necho {token}\n")
    agent.chmod(0o755)
    clean_ci.setenv("BUILDKITE", "true")
    clean_ci.setenv("PATH", f"{agent.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert ambient_identity_token() == token


def test_keyless_cli_stops_before_the_network_without_a_usable_token(tmp_path: Path) -> None:
    pytest.importorskip("sigstore")
    make_dir_image(tmp_path / "img")
    image = f"dir:{tmp_path / 'img'}"
    expired = _jwt(_claims(exp=int(time.time()) - 3600))
    r = run_regtool(["sign", "--keyless", "--identity", "a.example/b:1", image],
                    env={**NO_CI, "SIGSTORE_ID_TOKEN": expired})
    one_error_line(r, 2, "OIDC identity token is not usable")
    r = run_regtool(["sign", "--keyless", "--identity", "a.example/b:1", image], env=NO_CI)
    one_error_line(r, 2, "no OIDC identity token: set SIGSTORE_ID_TOKEN")
    assert not (tmp_path / "img" / "signature-1").exists()


# --------------------------------------------------------------------------- keyless into local layouts


class RecordedSigstore:
    """Stands in for sigstore-python's Signer with real bundles recorded from Sigstore."""

    def sign_artifact(self, input_: bytes) -> Any:
        return (BUNDLES / "bundle_v3.txt.sigstore").read_bytes()

    def sign_dsse(self, input_: Any) -> Any:
        return (BUNDLES / "a.dsse.staging-rekor-v2.txt.sigstore.json").read_text()


def test_keyless_signer_writes_recorded_bundles_into_layouts(tmp_path: Path) -> None:
    """Legacy: the bundle's signature, certificate and SET become a dir: signature-N; v3: an OCI referrer."""
    pytest.importorskip("sigstore")
    import anyio

    from regtool.signing.bundle import bundle_to_legacy_annotations
    from regtool.signing.sign import KeylessSigner, SignOptions, sign_image
    from regtool.signing.storage import DirSignatureStore, LayoutSignatureStore, find_signatures
    from regtool.signing.verify import certificate_identities

    signer = KeylessSigner(RecordedSigstore(), identity="william@yossarian.net",
                           issuer="https://github.com/login/oauth", statement_factory=lambda b: b)
    digest = make_dir_image(tmp_path / "img")
    layout_digest = make_oci_layout(tmp_path / "layout")

    async def run() -> None:
        store = DirSignatureStore(str(tmp_path / "img"))
        result = await sign_image(store, signer, SignOptions(), identity="registry.example.com/app:1")
        assert [m.action for m in result.manifests] == ["added"]
        layout = LayoutSignatureStore(str(tmp_path / "layout"), "app")
        await sign_image(layout, signer, SignOptions(bundle_format="v3"), identity="registry.example.com/app:1")
        [found] = await find_signatures(await layout.source(), layout_digest)
        assert found.signature is not None and found.format == "bundle"
        assert found.signature.payload == (BUNDLES / "a.dsse.staging-rekor-v2.txt.sigstore.json").read_bytes()
        await layout.close()

    anyio.run(run)
    sig = parse_sigstore_json((tmp_path / "img" / "signature-1").read_bytes())
    expected = bundle_to_legacy_annotations((BUNDLES / "bundle_v3.txt.sigstore").read_bytes())
    assert {k: sig.annotations[k] for k in expected} == expected
    assert parse_payload(sig.payload).manifest_digest == digest
    # the DSSE bundle's own signer recognises it as its signature of that statement; nobody else does
    doc = json.loads((BUNDLES / "a.dsse.staging-rekor-v2.txt.sigstore.json").read_bytes())
    statement = base64.b64decode(doc["dsseEnvelope"]["payload"])
    from cryptography import x509

    from regtool.signing.verify import certificate_oidc_issuer

    cert = x509.load_der_x509_certificate(base64.b64decode(doc["verificationMaterial"]["certificate"]["rawBytes"]))
    owner = KeylessSigner(RecordedSigstore(), identity=certificate_identities(cert)[0],
                          issuer=certificate_oidc_issuer(cert) or "")
    bundle = json.dumps(doc).encode()
    assert owner.bundle_signed_by_me(bundle, statement)
    assert not owner.bundle_signed_by_me(bundle, statement + b" ")
    assert not signer.bundle_signed_by_me(bundle, statement)

