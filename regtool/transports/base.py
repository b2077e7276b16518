"""The one source/destination interface every transport implements.

A copy is driven from above (``regtool.copy`` / ``regtool.sync``) and talks to
transports only through :class:`ImageSource` and :class:`ImageDestination`:

* a source hands out manifests (the named one, or any other by digest), blob
  streams, tags and signatures;
* a destination receives blobs, manifests, names (``tag``) and signatures, and
  makes the result visible at :meth:`ImageDestination.commit`.

The order a copier uses on a destination is: ``has_blob``/``put_blob`` for every
layer and config, ``put_manifest`` for every child manifest and then the
top-level one, ``tag(None, top)`` (plus ``tag(name, desc)`` for extra entries
such as cosign ``sha256-<hex>.sig`` tags when ``supports_tags``),
``put_signatures`` when ``supports_signatures``, then ``commit``. ``close`` is
always called (``async with`` does it) and discards anything uncommitted that
the transport staged.

This module also holds the shared, transport-neutral helpers: strict digest
parsing (the only way a digest becomes a path), streaming digest verification,
and atomic file writes offloaded to worker threads so big blobs never block the
event loop and are never read whole into memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator
from types import TracebackType
from typing import IO, Any, TypeVar

import anyio
import anyio.to_thread

from regtool.errors import DigestMismatch, ManifestError, NotFound
from regtool.manifest import (
    MAX_MANIFEST_SIZE,
    Descriptor,
    InvalidDigest,
    Manifest,
    manifest_digest,
    validate_digest,
)

__all__ = [
    "CHUNK_SIZE",
    "TEMP_PREFIX",
    "DigestVerifier",
    "ImageDestination",
    "ImageSource",
    "atomic_write_bytes",
    "blob_file_matches",
    "descriptor_fields",
    "ensure_real_dir",
    "iter_file_range",
    "manifest_matches_digest",
    "read_file_limited",
    "split_digest",
    "write_stream_atomic",
]

CHUNK_SIZE = 1024 * 1024
"""Size of the chunks blobs are read and written in."""

TEMP_PREFIX = ".regtool-tmp-"
"""Name prefix of in-progress files inside a layout (removed on failure)."""

# Algorithms a digest may use, with the length of their lowercase hex encoding
# (the OCI image spec's registered algorithms).
_DIGEST_ALGORITHMS: dict[str, int] = {"sha256": 64, "sha384": 96, "sha512": 128}
_HEX = frozenset("0123456789abcdef")

_ClosingT = TypeVar("_ClosingT", bound="_Closing")


def _shown(text: str, limit: int = 80) -> str:
    """``text`` quoted and shortened for an error message."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def split_digest(digest: str) -> tuple[str, str]:
    """Validate ``digest`` strictly and return ``(algorithm, hex)``.

    Only ``sha256``/``sha384``/``sha512`` with lowercase hex of the right
    length pass, so the result is always safe to use as a file name:
    ``sha256:../../x`` and friends raise :class:`InvalidDigest` (a
    :class:`ManifestError` and an :class:`InvalidReference`).
    """
    validate_digest(digest)
    algorithm, _, encoded = digest.partition(":")
    length = _DIGEST_ALGORITHMS.get(algorithm)
    if length is None:
        raise InvalidDigest(f"unsupported digest algorithm in {_shown(digest)}")
    if len(encoded) != length or not _HEX.issuperset(encoded):  # validate_digest checked; belt and braces
        raise InvalidDigest(f"invalid digest {_shown(digest)}")
    return algorithm, encoded


def _hash_bytes(algorithm: str, data: bytes) -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def manifest_matches_digest(data: bytes, digest: str) -> bool:
    """Whether manifest bytes ``data`` are identified by ``digest``.

    Plain content hashing, plus the schema1 rule (the digest of a signed v2s1
    manifest is computed with its JWS signatures stripped).
    """
    algorithm, _ = split_digest(digest)
    if _hash_bytes(algorithm, data) == digest:
        return True
    if algorithm == "sha256":
        try:
            return manifest_digest(data) == digest
        except Exception:  # not a manifest at all: it simply does not match
            return False
    return False


class DigestVerifier:
    """Hashes a stream incrementally and checks it against a descriptor."""

    def __init__(self, digest: str, size: int | None = None) -> None:
        self.algorithm, _ = split_digest(digest)
        self.expected = digest
        self.expected_size = size if size is not None and size >= 0 else None
        self._hash = hashlib.new(self.algorithm)
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self.size += len(chunk)
        if self.expected_size is not None and self.size > self.expected_size:
            raise DigestMismatch(
                f"blob {self.expected} is larger than the expected {self.expected_size} bytes"
            )

    @property
    def actual(self) -> str:
        return f"{self.algorithm}:{self._hash.hexdigest()}"

    def check(self) -> None:
        """Raise :class:`DigestMismatch` unless the bytes seen match."""
        if self.expected_size is not None and self.size != self.expected_size:
            raise DigestMismatch(
                f"blob {self.expected}: got {self.size} bytes, expected {self.expected_size}"
            )
        actual = self.actual
        if actual != self.expected:
            raise DigestMismatch(f"blob content has digest {actual}, expected {self.expected}")


# --------------------------------------------------------------------------- file helpers


async def iter_file_range(
    path: str,
    offset: int,
    length: int,
    desc: Descriptor,
    chunk_size: int = CHUNK_SIZE,
) -> AsyncIterator[bytes]:
    """Stream ``length`` bytes of ``path`` from ``offset``, verifying ``desc``.

    The final chunk is held back until the digest has been checked, so a
    consumer never receives the complete content of a corrupt blob: the
    :class:`DigestMismatch` replaces the last chunk. A size that disagrees with
    the descriptor fails before any byte is yielded.
    """
    verifier = DigestVerifier(desc.digest, desc.size)
    if verifier.expected_size is not None and verifier.expected_size != length:
        raise DigestMismatch(f"blob {desc.digest}: stored size {length}, expected {desc.size}")
    try:
        fh: IO[bytes] = await anyio.to_thread.run_sync(open, path, "rb")
    except FileNotFoundError:
        raise NotFound(f"blob {desc.digest} not found") from None

    def read(n: int) -> bytes:
        data = fh.read(n)
        verifier.update(data)
        return data

    try:
        if offset:
            await anyio.to_thread.run_sync(fh.seek, offset)
        remaining = length
        while remaining > 0:
            chunk = await anyio.to_thread.run_sync(read, min(chunk_size, remaining))
            if not chunk:
                raise DigestMismatch(f"blob {desc.digest} is truncated ({length - remaining} of {length})")
            remaining -= len(chunk)
            if remaining == 0:
                verifier.check()
            yield chunk
        if length == 0:
            verifier.check()
    finally:
        fh.close()


async def read_file_limited(path: str, limit: int, what: str) -> bytes:
    """Read a small file whole, refusing files over ``limit`` bytes."""

    def read() -> bytes:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise ManifestError(f"{what} is larger than {limit} bytes")
        return data

    try:
        return await anyio.to_thread.run_sync(read)
    except FileNotFoundError:
        raise NotFound(f"{what} not found") from None
    except IsADirectoryError:
        raise NotFound(f"{what} not found (a directory is in its place)") from None


def ensure_real_dir(root: str, *parts: str) -> str:
    """Create ``root/parts...`` level by level and return its path.

    ``root`` (the user-chosen layout directory) may itself be a symlink; every
    level below it must be a plain directory, because writing through a
    symlinked ``blobs/`` could land outside the layout.
    """
    os.makedirs(root, exist_ok=True)
    if not os.path.isdir(root):
        raise ManifestError(f"refusing to write into {root}: not a directory")
    path = root
    for part in parts:
        if part in ("", ".", "..") or "/" in part or (os.sep != "/" and os.sep in part):
            raise ManifestError(f"refusing to write into {_shown(part)}")
        path = os.path.join(path, part)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o755)
            st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            raise ManifestError(f"refusing to write into {path}: not a plain directory")
    return path


def _open_temp(directory: str) -> tuple[str, IO[bytes]]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    while True:
        name = os.path.join(directory, TEMP_PREFIX + secrets.token_hex(8))
        try:
            fd = os.open(name, flags, 0o644)
        except FileExistsError:  # pragma: no cover - 64 random bits
            continue
        return name, os.fdopen(fd, "wb")


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _finish_temp(fh: IO[bytes], temp: str, final: str) -> None:
    fh.flush()
    os.fsync(fh.fileno())
    fh.close()
    os.replace(temp, final)


async def write_stream_atomic(
    directory: str,
    name: str,
    chunks: AsyncIterable[bytes],
    verifier: DigestVerifier | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> None:
    """Stream ``chunks`` into ``directory/name`` atomically.

    ``directory`` must exist (see :func:`ensure_real_dir`).
    The bytes go to a temporary file in ``directory`` (so the final rename
    stays on one file system), are verified by ``verifier`` if given, fsynced,
    then renamed over ``name``. On any failure (including a digest mismatch or
    cancellation) the temporary file is removed and ``name`` is untouched.
    Small chunks are coalesced so each worker-thread hop writes about
    ``chunk_size`` bytes.
    """
    if "/" in name or name in ("", ".", "..") or (os.sep != "/" and os.sep in name):
        raise ManifestError(f"refusing to write file named {_shown(name)}")
    temp, fh = await anyio.to_thread.run_sync(_open_temp, directory)
    final = os.path.join(directory, name)

    def write(data: bytes) -> None:
        if verifier is not None:
            verifier.update(data)
        fh.write(data)

    try:
        buf = bytearray()
        async for chunk in chunks:
            buf += chunk
            if len(buf) >= chunk_size:
                data, buf = bytes(buf), bytearray()
                await anyio.to_thread.run_sync(write, data)
        if buf:
            await anyio.to_thread.run_sync(write, bytes(buf))
        if verifier is not None:
            verifier.check()
        await anyio.to_thread.run_sync(_finish_temp, fh, temp, final)
    except BaseException:
        fh.close()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_unlink_quietly, temp)
        raise


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def atomic_write_bytes(directory: str, name: str, data: bytes) -> None:
    """Write small ``data`` to ``directory/name`` atomically (temp + fsync + rename)."""
    await write_stream_atomic(directory, name, _one(data))


async def blob_file_matches(path: str, desc: Descriptor) -> bool:
    """Whether a stored blob file is present with the descriptor's size (unknown sizes: present)."""

    def check() -> bool:
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        return stat.S_ISREG(st.st_mode) and (desc.size is None or desc.size < 0 or st.st_size == desc.size)

    return await anyio.to_thread.run_sync(check)


# --------------------------------------------------------------------------- interfaces


class _Closing:
    """``async with`` support shared by sources and destinations: ``close`` runs even when cancelled."""

    async def close(self) -> None:  # noqa: B027 - optional hook with a default
        """Release resources."""

    async def __aenter__(self: _ClosingT) -> _ClosingT:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self.close()


class ImageSource(_Closing, ABC):
    """Where an image is read from (registry, OCI layout, archive or ``dir:``).

    One source is bound to one named image (``docker://repo:tag``,
    ``oci:PATH:REF``, ``dir:PATH``) but can serve any manifest or blob it holds
    by digest. Use as an async context manager, or call :meth:`close`.
    """

    name: str = ""
    """The transport-qualified name, for messages (``oci:/p:ref``)."""

    @abstractmethod
    async def get_manifest(self, digest: str | None = None) -> Manifest:
        """The named image's manifest (``None``) or another manifest by digest.

        Bytes are returned exactly as stored and are verified against the
        digest they were looked up by. Raises :class:`NotFound`.
        """

    @abstractmethod
    def open_blob(self, desc: Descriptor) -> AsyncIterator[bytes]:
        """Stream the blob ``desc`` in chunks of about :data:`CHUNK_SIZE`.

        The stream is verified against ``desc.digest``/``desc.size``; on a
        mismatch :class:`DigestMismatch` is raised (before the final chunk is
        yielded when the transport can tell). Raises :class:`NotFound`.
        """

    @abstractmethod
    async def list_tags(self) -> list[str]:
        """Names the source knows (registry tags, ``index.json`` ref names; ``dir:`` none)."""

    @abstractmethod
    async def get_signatures(self, digest: str) -> list[bytes]:
        """Stored simple-signing/lookaside signatures of manifest ``digest`` (raw bytes)."""

    @abstractmethod
    async def get_tagged_manifest(self, tag: str) -> Manifest | None:
        """The manifest stored under ``tag`` in the same repository/layout, or ``None``.

        Used for cosign-style ``sha256-<hex>.sig``/``.att`` tags and referrers
        fallback tags next to the image.
        """

    async def read_blob(self, desc: Descriptor, max_size: int = MAX_MANIFEST_SIZE) -> bytes:
        """A small blob (a config, a signature payload) read whole and verified."""
        if desc.size is not None and desc.size > max_size:
            raise ManifestError(f"blob {desc.digest} is larger than {max_size} bytes")
        parts: list[bytes] = []
        total = 0
        async for chunk in self.open_blob(desc):
            total += len(chunk)
            if total > max_size:
                raise ManifestError(f"blob {desc.digest} is larger than {max_size} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def close(self) -> None:  # noqa: B027 - optional hook with a default
        """Release files, temporary directories and connections."""



class ImageDestination(_Closing, ABC):
    """Where an image is written to. Nothing is visible until :meth:`commit`.

    ``supports_signatures``: :meth:`put_signatures` stores them (``dir:``, and
    registries through lookaside/sigstore attachments); otherwise it is a no-op
    and the copier should warn or refuse.
    ``supports_tags``: :meth:`tag` accepts names other than ``None`` (extra
    entries next to the image, e.g. cosign ``sha256-<hex>.sig``).
    """

    name: str = ""
    supports_signatures: bool = False
    supports_tags: bool = False

    @abstractmethod
    async def has_blob(self, desc: Descriptor) -> bool:
        """Whether the blob is already present (so it need not be copied)."""

    @abstractmethod
    async def put_blob(self, desc: Descriptor, chunks: AsyncIterable[bytes]) -> None:
        """Store a blob from a stream, verifying digest and size.

        On a mismatch nothing is stored and :class:`DigestMismatch` is raised.
        """

    @abstractmethod
    async def put_manifest(self, manifest_bytes: bytes, media_type: str, digest: str) -> None:
        """Store a manifest (a child of an index, or the top-level) under ``digest``.

        Does not name it; see :meth:`tag`.
        """

    @abstractmethod
    async def tag(self, name: str | None, desc: Descriptor) -> None:
        """Name the manifest ``desc``: ``None`` is the destination's own name."""

    @abstractmethod
    async def put_signatures(self, digest: str, sigs: list[bytes]) -> None:
        """Store signatures for manifest ``digest`` (replacing any it had)."""

    @abstractmethod
    async def commit(self) -> None:
        """Make everything written visible (index.json, manifest.json, archive)."""

    async def close(self) -> None:  # noqa: B027 - optional hook with a default
        """Release resources; discards staged state if :meth:`commit` was not called."""



def descriptor_fields(desc: Descriptor) -> dict[str, Any]:
    """``desc`` as its JSON object (a fresh dict the caller may modify)."""
    data = dict(desc.to_json())
    if "annotations" in data:
        data["annotations"] = dict(data["annotations"])
    return data
