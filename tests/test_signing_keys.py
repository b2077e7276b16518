"""cosign key files: real cosign-written keys load; generated keys round-trip; files are private."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import nacl.secret
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa

from regtool.errors import UsageError
from regtool.signing import keys
from regtool.signing.keys import (
    generate_keypair,
    load_private_key,
    load_public_key,
    password_from_env_or_prompt,
    sign_payload,
    verify_raw,
    write_keypair,
)

FIXTURES = Path(__file__).parent / "fixtures" / "signing"
COSIGN_KEYS = FIXTURES / "cosign-keys"
PASSWORD = b"hello"


def _pem_json(pem: bytes) -> tuple[str, dict[str, Any]]:
    """The PEM type and the decoded JSON body of a cosign encrypted key."""
    lines = pem.decode().strip().splitlines()
    pem_type = lines[0].removeprefix("-----BEGIN ").removesuffix("-----")
    return pem_type, json.loads(base64.b64decode("".join(lines[1:-1])))


def _encrypt_independently(der: bytes, password: bytes, n: int, r: int = 8, p: int = 1) -> bytes:
    """Build a cosign key file straight from the format description (not via regtool's encoder)."""
    salt, nonce = os.urandom(32), os.urandom(24)
    k = hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=512 * 1024 * 1024, dklen=32)
    ct = nacl.secret.SecretBox(k).encrypt(der, nonce).ciphertext
    body = json.dumps(
        {
            "kdf": {
                "name": "scrypt",
                "params": {"N": n, "r": r, "p": p},
                "salt": base64.b64encode(salt).decode(),
            },
            "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
            "ciphertext": base64.b64encode(ct).decode(),
        }
    ).encode()
    return keys.pem_encode("ENCRYPTED SIGSTORE PRIVATE KEY", body)


def _pkcs8(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# --------------------------------------------------------------------------- cosign's own key files


@pytest.mark.parametrize("name", ["cosign-format-n32768.key", "sigstore-format-n32768.key"])
def test_cosign_written_keys_load_and_sign(name: str) -> None:
    """Keys written by cosign (both PEM types, N=32768) decrypt with `hello` and produce usable signatures."""
    key = load_private_key((COSIGN_KEYS / name).read_bytes(), PASSWORD)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    sig = sign_payload(key, b"payload")
    assert verify_raw(key.public_key(), sig, b"payload")
    assert not verify_raw(key.public_key(), sig, b"payloaD")


def test_wrong_password_is_reported_without_the_password() -> None:
    with pytest.raises(UsageError) as info:
        load_private_key((COSIGN_KEYS / "cosign-format-n32768.key").read_bytes(), b"s3cret-guess")
    assert str(info.value) == "decryption failed (wrong password?)"
    assert "s3cret-guess" not in repr(info.value)


def test_sec1_plaintext_is_refused() -> None:
    """cosign refuses a key whose decrypted plaintext is SEC1 rather than PKCS#8; so do we."""
    with pytest.raises(UsageError, match="is not PKCS#8"):
        load_private_key(
            (COSIGN_KEYS / "cosign-format-sec1-plaintext-must-reject.key").read_bytes(), PASSWORD
        )


def test_sec1_pem_and_unknown_pem_types_are_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    sec1 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    with pytest.raises(UsageError, match="not PKCS#8"):
        load_private_key(sec1, b"")
    with pytest.raises(UsageError, match="unsupported private key PEM type"):
        load_private_key(keys.pem_encode("OPENSSH PRIVATE KEY", b"\x00"), b"")
    with pytest.raises(UsageError, match="no PEM block"):
        load_private_key(b"not a key", b"")


def test_unencrypted_pkcs8_is_accepted() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    loaded = load_private_key(pem, b"ignored")
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert loaded.private_numbers() == key.private_numbers()


# --------------------------------------------------------------------------- generated keys


@pytest.mark.parametrize(
    ("legacy", "pem_type", "n"),
    [(False, "ENCRYPTED SIGSTORE PRIVATE KEY", 65536), (True, "ENCRYPTED COSIGN PRIVATE KEY", 32768)],
)
def test_generated_keys_round_trip(legacy: bool, pem_type: str, n: int) -> None:
    """generate_keypair writes cosign's exact JSON-in-PEM layout and the result loads back."""
    private_pem, public_pem = generate_keypair(b"pw", legacy=legacy)
    got_type, body = _pem_json(private_pem)
    assert got_type == pem_type
    assert list(body) == ["kdf", "cipher", "ciphertext"]
    assert body["kdf"] == {"name": "scrypt", "params": {"N": n, "r": 8, "p": 1}, "salt": body["kdf"]["salt"]}
    assert len(base64.b64decode(body["kdf"]["salt"])) == 32
    assert body["cipher"]["name"] == "nacl/secretbox"
    assert len(base64.b64decode(body["cipher"]["nonce"])) == 24
    key = load_private_key(private_pem, b"pw")
    pub = load_public_key(public_pem)
    assert isinstance(pub, ec.EllipticCurvePublicKey) and pub.curve.name == "secp256r1"
    assert verify_raw(pub, sign_payload(key, b"data"), b"data")
    assert b"PRIVATE" not in public_pem


@pytest.mark.parametrize("n", [32768, 65536, 131072])
def test_accepted_scrypt_costs(n: int) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    loaded = load_private_key(_encrypt_independently(_pkcs8(key), b"pw", n), b"pw")
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert loaded.private_numbers() == key.private_numbers()


@pytest.mark.parametrize(("n", "r", "p"), [(16384, 8, 1), (262144, 8, 1), (65536, 16, 1), (65536, 8, 2)])
def test_other_scrypt_parameters_are_refused(n: int, r: int, p: int) -> None:
    """Refused before any scrypt work: a hostile file cannot make us burn memory or CPU."""
    body = json.dumps(
        {
            "kdf": {
                "name": "scrypt",
                "params": {"N": n, "r": r, "p": p},
                "salt": base64.b64encode(b"s" * 32).decode(),
            },
            "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(b"n" * 24).decode()},
            "ciphertext": base64.b64encode(b"c" * 64).decode(),
        }
    ).encode()
    with pytest.raises(UsageError, match="unsupported scrypt parameters"):
        load_private_key(keys.pem_encode("ENCRYPTED SIGSTORE PRIVATE KEY", body), b"pw")


def test_empty_password_works() -> None:
    private_pem, _ = generate_keypair(b"", legacy=True)
    load_private_key(private_pem, b"")
    with pytest.raises(UsageError, match="wrong password"):
        load_private_key(private_pem, b"x")


# --------------------------------------------------------------------------- public keys


def test_public_key_types() -> None:
    """What cosign accepts: ECDSA P-256/P-384, RSA, Ed25519; anything else is a UsageError."""
    accepted: list[keys.PublicKey] = [
        ec.generate_private_key(ec.SECP256R1()).public_key(),
        ec.generate_private_key(ec.SECP384R1()).public_key(),
        rsa.generate_private_key(65537, 2048).public_key(),
        ed25519.Ed25519PrivateKey.generate().public_key(),
    ]
    for pub in accepted:
        assert load_public_key(keys.public_key_pem(pub)) == pub
    refused = dsa.generate_private_key(2048).public_key()
    with pytest.raises(UsageError, match="unsupported public key type"):
        load_public_key(
            refused.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
    with pytest.raises(UsageError, match="expected a PUBLIC KEY"):
        load_public_key(keys.pem_encode("CERTIFICATE", b"\x30\x00"))
    assert isinstance(
        load_public_key((FIXTURES / "containers-image" / "cosign.pub").read_bytes()),
        ec.EllipticCurvePublicKey,
    )


@pytest.mark.parametrize(
    "make", [lambda: rsa.generate_private_key(65537, 2048), ed25519.Ed25519PrivateKey.generate]
)
def test_rsa_and_ed25519_sign_and_verify(make: object) -> None:
    key = make()  # type: ignore[operator]
    sig = sign_payload(key, b"x")
    assert verify_raw(key.public_key(), sig, b"x")
    assert not verify_raw(key.public_key(), sig, b"y")


def test_fingerprint_is_sha256_of_pkix_der() -> None:
    pub = load_public_key((FIXTURES / "containers-image" / "rekor.pub").read_bytes())
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    h = hashes.Hash(hashes.SHA256())
    h.update(der)
    assert keys.key_fingerprint(pub) == "sha256:" + h.finalize().hex()
    # Rekor's log ID is this same hash: the production log's well-known ID.
    assert keys.key_fingerprint(pub).endswith(
        "c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d"
    )


# --------------------------------------------------------------------------- key files on disk


def test_write_keypair_modes_and_no_overwrite(tmp_path: Path) -> None:
    old = os.umask(0)  # even with a permissive umask the private key is 0600
    try:
        key_path, pub_path = write_keypair(tmp_path / "cosign", b"pw")
    finally:
        os.umask(old)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub_path.stat().st_mode) == 0o644
    load_private_key(key_path.read_bytes(), b"pw")
    before = key_path.read_bytes()
    with pytest.raises(UsageError, match="already exists"):
        write_keypair(tmp_path / "cosign", b"pw")
    assert key_path.read_bytes() == before


def test_existing_pub_blocks_before_anything_is_written(tmp_path: Path) -> None:
    (tmp_path / "k.pub").write_text("keep me")
    with pytest.raises(UsageError, match="k.pub already exists"):
        write_keypair(tmp_path / "k", b"pw")
    assert not (tmp_path / "k.key").exists()
    assert (tmp_path / "k.pub").read_text() == "keep me"


def test_dangling_symlink_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "k.key").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UsageError, match="already exists"):
        write_keypair(tmp_path / "k", b"pw")
    assert not (tmp_path / "elsewhere").exists()


def test_force_replaces_atomically(tmp_path: Path) -> None:
    first, _ = write_keypair(tmp_path / "k", b"pw")
    old = first.read_bytes()
    key_path, pub_path = write_keypair(tmp_path / "k", b"pw2", legacy=True, force=True)
    assert key_path.read_bytes() != old
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert _pem_json(key_path.read_bytes())[0] == "ENCRYPTED COSIGN PRIVATE KEY"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.key", "k.pub"]  # no temporary left behind
    load_private_key(key_path.read_bytes(), b"pw2")


# --------------------------------------------------------------------------- passwords


def test_password_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSIGN_PASSWORD", "")
    assert password_from_env_or_prompt(confirm=True) == b""
    monkeypatch.setenv("COSIGN_PASSWORD", "héllo")
    assert password_from_env_or_prompt(confirm=False) == "héllo".encode()


def test_password_prompt_and_confirmation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COSIGN_PASSWORD", raising=False)
    answers = iter(["one", "one", "one", "two"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert password_from_env_or_prompt(confirm=True) == b"one"
    with pytest.raises(UsageError, match="passwords do not match") as info:
        password_from_env_or_prompt(confirm=True)
    assert "one" not in str(info.value) and "two" not in str(info.value)
