"""cosign key files: generation, encryption, loading and signing.

A cosign private key file is a PEM block (``ENCRYPTED SIGSTORE PRIVATE KEY``,
or ``ENCRYPTED COSIGN PRIVATE KEY`` for the legacy form) whose body is JSON::

    {"kdf":{"name":"scrypt","params":{"N":65536,"r":8,"p":1},"salt":"<b64>"},
     "cipher":{"name":"nacl/secretbox","nonce":"<b64>"},
     "ciphertext":"<b64>"}

The secretbox key is ``scrypt(password, salt, N, r, p, 32)``; the plaintext is
the PKCS#8 DER private key.  Public keys are PKIX ``PUBLIC KEY`` PEM.

Secrets (passwords, private keys, plaintext) never appear in exception
messages; the loaded key objects' reprs carry no key material.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import hashlib
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.secret
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from regtool.errors import UsageError

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

SIGSTORE_PEM_TYPE = "ENCRYPTED SIGSTORE PRIVATE KEY"
COSIGN_PEM_TYPE = "ENCRYPTED COSIGN PRIVATE KEY"
PKCS8_PEM_TYPE = "PRIVATE KEY"
PUBLIC_KEY_PEM_TYPE = "PUBLIC KEY"

SCRYPT_N = 65536
LEGACY_SCRYPT_N = 32768
ALLOWED_SCRYPT_N = frozenset({32768, 65536, 131072})
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_LEN = 32
_KEY_LEN = 32
_SCRYPT_MAXMEM = 256 * 1024 * 1024  # N=131072, r=8 needs 128 MiB

_EC_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_MIN_RSA_BITS = 2048

_PEM_RE = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)\r?\n?-----END ([A-Z0-9 ]+)-----",
    re.DOTALL,
)


# --------------------------------------------------------------------------- PEM helpers


def pem_blocks(data: bytes | str) -> list[tuple[str, bytes]]:
    """All PEM blocks in ``data`` as (type, DER) pairs; headers inside blocks are refused."""
    raw = data.encode("ascii", "replace") if isinstance(data, str) else data
    out: list[tuple[str, bytes]] = []
    for m in _PEM_RE.finditer(raw):
        begin, body, end = m.group(1), m.group(2), m.group(3)
        if begin != end:
            raise UsageError(f"malformed PEM: BEGIN {begin.decode()} closed by END {end.decode()}")
        if b":" in body:
            raise UsageError("PEM blocks with headers are not supported")
        try:
            der = base64.b64decode(b"".join(body.split()), validate=True)
        except (binascii.Error, ValueError):
            raise UsageError(f"malformed PEM: bad base64 in {begin.decode()} block") from None
        out.append((begin.decode("ascii"), der))
    return out


def _single_pem(data: bytes | str, what: str) -> tuple[str, bytes]:
    blocks = pem_blocks(data)
    if not blocks:
        raise UsageError(f"{what}: no PEM block found")
    return blocks[0]


def pem_encode(pem_type: str, der: bytes) -> bytes:
    """PEM-encode with 64-column lines, as Go's ``pem.Encode`` does."""
    b64 = base64.b64encode(der).decode("ascii")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return (
        "-----BEGIN " + pem_type + "-----\n" + "\n".join(lines) + "\n-----END " + pem_type + "-----\n"
    ).encode()


# --------------------------------------------------------------------------- DER sniffing


def _der_header(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``pos``."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _private_key_der_kind(der: bytes) -> str:
    """'pkcs8', 'sec1', 'pkcs1' or 'unknown', from the ASN.1 shape alone."""
    try:
        tag, start, _ = _der_header(der, 0)
        if tag != 0x30:
            return "unknown"
        tag, _, end = _der_header(der, start)  # version INTEGER
        if tag != 0x02:
            return "unknown"
        tag, _, _ = _der_header(der, end)
    except ValueError:
        return "unknown"
    return {0x30: "pkcs8", 0x04: "sec1", 0x02: "pkcs1"}.get(tag, "unknown")


# --------------------------------------------------------------------------- key checks


def check_private_key(key: Any) -> PrivateKey:
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        raise UsageError(f"unsupported private key type {type(key).__name__}")
    check_public_key(key.public_key())  # curve and size rules live in one place
    return key


def check_public_key(key: Any) -> PublicKey:
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _EC_CURVES):
            raise UsageError(f"unsupported EC curve {key.curve.name}")
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise UsageError(f"RSA key too small ({key.key_size} bits)")
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise UsageError(f"unsupported public key type {type(key).__name__}")


# --------------------------------------------------------------------------- encryption


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=_KEY_LEN)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encrypt_private_key(key: PrivateKey, password: bytes, *, legacy: bool = False) -> bytes:
    """Encrypt ``key`` into a cosign PEM (``legacy``: N=32768, ``ENCRYPTED COSIGN PRIVATE KEY``)."""
    check_private_key(key)
    n = LEGACY_SCRYPT_N if legacy else SCRYPT_N
    plaintext = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    salt = secrets.token_bytes(_SALT_LEN)
    nonce = secrets.token_bytes(nacl.secret.SecretBox.NONCE_SIZE)
    box = nacl.secret.SecretBox(_scrypt(password, salt, n, SCRYPT_R, SCRYPT_P))
    ciphertext = box.encrypt(plaintext, nonce).ciphertext
    doc = {
        "kdf": {"name": "scrypt", "params": {"N": n, "r": SCRYPT_R, "p": SCRYPT_P}, "salt": _b64(salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
        "ciphertext": _b64(ciphertext),
    }
    body = json.dumps(doc, separators=(",", ":")).encode("ascii")
    return pem_encode(COSIGN_PEM_TYPE if legacy else SIGSTORE_PEM_TYPE, body)


def _field(obj: Any, key: str, kind: type, what: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise UsageError(f"encrypted key: missing {what}")
    value = obj[key]
    if kind is int and isinstance(value, bool):
        raise UsageError(f"encrypted key: {what} has the wrong type")
    if not isinstance(value, kind):
        raise UsageError(f"encrypted key: {what} has the wrong type")
    return value


def _decrypt_cosign_body(body: bytes, password: bytes) -> bytes:
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise UsageError("encrypted key: body is not JSON") from None
    kdf = _field(doc, "kdf", dict, "kdf")
    if _field(kdf, "name", str, "kdf.name") != "scrypt":
        raise UsageError("encrypted key: unsupported KDF (only scrypt)")
    params = _field(kdf, "params", dict, "kdf.params")
    n = _field(params, "N", int, "scrypt N")
    r = _field(params, "r", int, "scrypt r")
    p = _field(params, "p", int, "scrypt p")
    if n not in ALLOWED_SCRYPT_N or r != SCRYPT_R or p != SCRYPT_P:
        raise UsageError(
            f"encrypted key: unsupported scrypt parameters N={n} r={r} p={p} "
            f"(accepted: N in {sorted(ALLOWED_SCRYPT_N)}, r=8, p=1)"
        )
    cipher = _field(doc, "cipher", dict, "cipher")
    if _field(cipher, "name", str, "cipher.name") != "nacl/secretbox":
        raise UsageError("encrypted key: unsupported cipher (only nacl/secretbox)")
    try:
        salt = base64.b64decode(_field(kdf, "salt", str, "kdf.salt"), validate=True)
        nonce = base64.b64decode(_field(cipher, "nonce", str, "cipher.nonce"), validate=True)
        ciphertext = base64.b64decode(_field(doc, "ciphertext", str, "ciphertext"), validate=True)
    except (binascii.Error, ValueError):
        raise UsageError("encrypted key: bad base64 field") from None
    if not salt:
        raise UsageError("encrypted key: empty salt")
    if len(nonce) != nacl.secret.SecretBox.NONCE_SIZE:
        raise UsageError("encrypted key: nonce must be 24 bytes")
    box = nacl.secret.SecretBox(_scrypt(password, salt, n, r, p))
    try:
        return bytes(box.decrypt(ciphertext, nonce))
    except nacl.exceptions.CryptoError:
        raise UsageError("decryption failed (wrong password?)") from None


def _load_pkcs8(der: bytes, what: str) -> PrivateKey:
    kind = _private_key_der_kind(der)
    if kind == "sec1":
        raise UsageError(f"{what} is not PKCS#8 (it is a SEC1 EC private key); cosign refuses it too")
    if kind == "pkcs1":
        raise UsageError(f"{what} is not PKCS#8 (it is a PKCS#1 RSA private key)")
    if kind != "pkcs8":
        raise UsageError(f"{what} is not PKCS#8")
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise UsageError(f"{what} is not a valid PKCS#8 private key") from None
    return check_private_key(key)


# --------------------------------------------------------------------------- public API


def generate_keypair(password: bytes, *, legacy: bool = False) -> tuple[bytes, bytes]:
    """A new ECDSA P-256 key pair (encrypted private PEM, public PEM), like ``cosign generate-key-pair``."""
    key = ec.generate_private_key(ec.SECP256R1())
    return encrypt_private_key(key, password, legacy=legacy), public_key_pem(key.public_key())


def load_private_key(pem: bytes, password: bytes) -> PrivateKey:
    """Load a cosign/sigstore encrypted key, or an unencrypted PKCS#8 ``PRIVATE KEY`` PEM.

    Raises UsageError for a wrong password ("decryption failed (wrong
    password?)"), unsupported scrypt parameters, a non-PKCS#8 plaintext, or an
    unsupported key type.
    """
    pem_type, der = _single_pem(pem, "private key")
    if pem_type in (SIGSTORE_PEM_TYPE, COSIGN_PEM_TYPE):
        plaintext = _decrypt_cosign_body(der, password)
        return _load_pkcs8(plaintext, "decrypted private key")
    if pem_type == PKCS8_PEM_TYPE:
        return _load_pkcs8(der, "private key")
    if pem_type == "EC PRIVATE KEY":
        raise UsageError("private key is not PKCS#8 (it is a SEC1 EC PRIVATE KEY PEM)")
    raise UsageError(f"unsupported private key PEM type {pem_type!r}")


def load_public_key(pem: bytes | str) -> PublicKey:
    """Load a PKIX ``PUBLIC KEY`` PEM: ECDSA P-256/P-384/P-521, RSA (>= 2048 bits) or Ed25519."""
    pem_type, der = _single_pem(pem, "public key")
    if pem_type != PUBLIC_KEY_PEM_TYPE:
        raise UsageError(f"expected a PUBLIC KEY PEM block, found {pem_type!r}")
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        raise UsageError("public key is not a valid PKIX SubjectPublicKeyInfo") from None
    return check_public_key(key)


def load_public_keys(pem: bytes | str) -> list[PublicKey]:
    """Every ``PUBLIC KEY`` block in ``pem`` (a policy may trust several keys)."""
    keys = [load_public_key(pem_encode(t, der)) for t, der in pem_blocks(pem) if t == PUBLIC_KEY_PEM_TYPE]
    if not keys:
        raise UsageError("no PUBLIC KEY PEM block found")
    return keys


def public_key_pem(key: PublicKey) -> bytes:
    """PKIX PEM of a public key."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_der(key: PublicKey) -> bytes:
    """PKIX DER (SubjectPublicKeyInfo) of a public key."""
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_fingerprint(key: PublicKey) -> str:
    """``sha256:<hex>`` of the PKIX DER encoding (also Rekor's log ID for a log key)."""
    return "sha256:" + hashlib.sha256(public_key_der(key)).hexdigest()


def sign_payload(key: PrivateKey, payload: bytes) -> bytes:
    """Sign as cosign does: ECDSA-SHA256 (ASN.1), RSA PKCS#1 v1.5 SHA-256, or pure Ed25519."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(payload, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(payload)
    raise UsageError(f"unsupported private key type {type(key).__name__}")


def verify_raw(key: PublicKey, signature: bytes, data: bytes) -> bool:
    """True when ``signature`` over ``data`` verifies under ``key`` with cosign's algorithm choice."""
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


def _create_exclusive(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` (never an existing file or symlink) with ``mode``; removed again if writing fails."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def _temp_beside(path: Path, data: bytes, mode: int) -> Path:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    _create_exclusive(tmp, data, mode)
    return tmp


def write_keypair(
    prefix: str | os.PathLike[str], password: bytes, *, legacy: bool = False, force: bool = False
) -> tuple[Path, Path]:
    """Generate a key pair and write ``PREFIX.key`` (mode 0600) and ``PREFIX.pub`` (0644).

    Without ``force`` neither file may exist: the check covers both before
    anything is written, and each file is created with ``O_EXCL`` so a racing
    writer cannot be overwritten either.  With ``force`` files are replaced
    atomically (temporary file + rename), the key never world-readable.
    """
    base = os.fspath(prefix)
    key_path, pub_path = Path(base + ".key"), Path(base + ".pub")
    if not force:
        for path in (key_path, pub_path):
            if path.exists() or path.is_symlink():
                raise UsageError(f"{path} already exists (use --force to overwrite)")
    private_pem, public_pem = generate_keypair(password, legacy=legacy)
    try:
        if force:
            # both files staged first, so a failure leaves the old pair intact
            staged: list[Path] = []
            try:
                staged.append(_temp_beside(key_path, private_pem, 0o600))
                staged.append(_temp_beside(pub_path, public_pem, 0o644))
                os.replace(staged[0], key_path)
                os.replace(staged[1], pub_path)
            finally:
                for tmp in staged:
                    tmp.unlink(missing_ok=True)
        else:
            _create_exclusive(key_path, private_pem, 0o600)
            try:
                _create_exclusive(pub_path, public_pem, 0o644)
            except BaseException:
                key_path.unlink(missing_ok=True)
                raise
    except FileExistsError as exc:
        raise UsageError(f"{exc.filename} already exists (use --force to overwrite)") from None
    except OSError as exc:
        raise UsageError(f"cannot write key pair: {exc.strerror} ({exc.filename})") from None
    return key_path, pub_path


def password_from_env_or_prompt(confirm: bool) -> bytes:
    """The key password: ``COSIGN_PASSWORD`` if set (even empty), else an interactive prompt.

    With ``confirm`` the prompt asks twice and a mismatch is a UsageError.
    """
    env = os.environ.get("COSIGN_PASSWORD")
    if env is not None:
        return env.encode("utf-8")
    try:
        first = getpass.getpass("Enter password for private key: ")
        if confirm:
            second = getpass.getpass("Enter password for private key again: ")
            if first != second:
                raise UsageError("passwords do not match")
    except (EOFError, KeyboardInterrupt):
        raise UsageError("no password given (set COSIGN_PASSWORD for non-interactive use)") from None
    return first.encode("utf-8")
