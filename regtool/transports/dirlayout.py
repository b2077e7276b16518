"""skopeo's ``dir:PATH`` format (containers/image "Directory Transport Version: 1.1").

Files in the directory:

* ``version``: ``Directory Transport Version: 1.1\\n``;
* ``manifest.json``: the top-level manifest, byte-exact;
* ``<hex>``: each blob (layers, configs) named by the hex part of its digest;
* ``<hex>.manifest.json``: each other manifest (the instances of an index);
* ``signature-1`` ... ``signature-N``: signatures of the top-level manifest;
* ``<hex>.signature-1`` ...: signatures of instance ``<alg>:<hex>``.

As with containers/image, a destination directory that already holds a ``dir:``
image is emptied when opened (one image per directory), and a non-empty
directory that is not one is refused.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import AsyncIterable, AsyncIterator

import anyio.to_thread

from regtool.errors import DigestMismatch, ManifestError, NotFound, UsageError
from regtool.manifest import MAX_MANIFEST_SIZE, Descriptor, Manifest, manifest_digest, parse_manifest
from regtool.transports.base import (
    CHUNK_SIZE,
    DigestVerifier,
    ImageDestination,
    ImageSource,
    atomic_write_bytes,
    blob_file_matches,
    ensure_real_dir,
    iter_file_range,
    manifest_matches_digest,
    read_file_limited,
    split_digest,
    write_stream_atomic,
)

__all__ = ["MANIFEST_FILE", "VERSION", "VERSION_FILE", "DirDestination", "DirSource"]

VERSION = "Directory Transport Version: 1.1\n"
VERSION_FILE = "version"
MANIFEST_FILE = "manifest.json"
MAX_SIGNATURE_SIZE = 4 * 1024 * 1024
_MAX_SIGNATURES = 1000


def _manifest_name(digest: str | None) -> str:
    if digest is None:
        return MANIFEST_FILE
    return f"{split_digest(digest)[1]}.manifest.json"


def _signature_name(index: int, digest: str | None) -> str:
    """File name of signature ``index`` (1-based) of the top-level (``None``) or an instance."""
    if digest is None:
        return f"signature-{index}"
    return f"{split_digest(digest)[1]}.signature-{index}"


class DirSource(ImageSource):
    """Reads an image from a ``dir:`` directory."""

    def __init__(self, root: str, name: str) -> None:
        self._root = root
        self.name = name
        self._top_digest: str | None = None

    @classmethod
    async def open(cls, path: str) -> DirSource:
        name = f"dir:{path}"
        if not await anyio.to_thread.run_sync(os.path.isdir, path):
            raise NotFound(f"{name}: no such directory")
        return cls(path, name)

    async def _read(self, file_name: str, limit: int, what: str) -> bytes:
        return await read_file_limited(os.path.join(self._root, file_name), limit, what)

    async def _top(self) -> tuple[bytes, str]:
        data = await self._read(MANIFEST_FILE, MAX_MANIFEST_SIZE, f"{self.name}: manifest.json")
        digest = manifest_digest(data)
        self._top_digest = digest
        return data, digest

    async def top_digest(self) -> str:
        """Digest of ``manifest.json`` (as ``skopeo manifest-digest`` computes it)."""
        if self._top_digest is None:
            await self._top()
        assert self._top_digest is not None
        return self._top_digest

    async def get_manifest(self, digest: str | None = None) -> Manifest:
        if digest is None:
            data, _ = await self._top()
            return parse_manifest(data)
        file_name = _manifest_name(digest)
        what = f"{self.name}: manifest {digest}"
        try:
            data = await self._read(file_name, MAX_MANIFEST_SIZE, what)
        except NotFound:
            data, top = await self._top()
            if top != digest and not manifest_matches_digest(data, digest):
                raise
            return parse_manifest(data)
        if not manifest_matches_digest(data, digest):
            raise DigestMismatch(f"{what}: stored bytes do not match the digest")
        return parse_manifest(data)

    async def open_blob(self, desc: Descriptor) -> AsyncIterator[bytes]:
        _, encoded = split_digest(desc.digest)
        path = os.path.join(self._root, encoded)

        def size() -> int | None:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                return None
            return st.st_size if stat.S_ISREG(st.st_mode) else None

        length = await anyio.to_thread.run_sync(size)
        if length is None:
            raise NotFound(f"{self.name}: blob {desc.digest} not found")
        async for chunk in iter_file_range(path, 0, length, desc, CHUNK_SIZE):
            yield chunk

    async def list_tags(self) -> list[str]:
        return []

    async def get_signatures(self, digest: str) -> list[bytes]:
        split_digest(digest)
        instance: str | None = None if digest == await self.top_digest() else digest
        sigs: list[bytes] = []
        for i in range(1, _MAX_SIGNATURES + 1):
            name = _signature_name(i, instance)
            try:
                sigs.append(await self._read(name, MAX_SIGNATURE_SIZE, f"{self.name}: {name}"))
            except NotFound:
                break
        return sigs

    async def get_tagged_manifest(self, tag: str) -> Manifest | None:
        return None


def check_dir_destination(path: str, what: str) -> bool:
    """Refuses a path that cannot become a ``dir:`` image; True when it holds one already. Blocking."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise UsageError(f"{what}: {path} exists and is not a directory")
    if not os.path.isdir(path) or not os.listdir(path):
        return False
    try:
        with open(os.path.join(path, VERSION_FILE), "rb") as fh:
            version = fh.read(256)
    except (FileNotFoundError, IsADirectoryError):
        version = None
    if version != VERSION.encode():
        raise UsageError(f"{what}: {path} is not empty and is not a dir: image directory")
    return True


def _prepare_dir(path: str, what: str) -> None:
    """Create ``path``, or empty it if it holds a previous ``dir:`` image. Blocking."""
    if check_dir_destination(path, what):
        for entry in os.scandir(path):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
    elif not os.path.isdir(path):
        os.makedirs(path)


class DirDestination(ImageDestination):
    """Writes one image (possibly multi-arch) into a ``dir:`` directory.

    Blobs are written as they arrive; manifests and signatures are kept in
    memory and written at :meth:`commit`, ``manifest.json`` last.
    """

    supports_signatures = True
    supports_tags = False

    def __init__(self, root: str, name: str) -> None:
        self._root = root
        self.name = name
        self._manifests: dict[str, bytes] = {}
        self._signatures: dict[str, list[bytes]] = {}
        self._top: str | None = None

    @classmethod
    async def open(cls, path: str) -> DirDestination:
        name = f"dir:{path}"
        await anyio.to_thread.run_sync(_prepare_dir, path, name)
        await atomic_write_bytes(path, VERSION_FILE, VERSION.encode())
        return cls(path, name)

    async def has_blob(self, desc: Descriptor) -> bool:
        _, encoded = split_digest(desc.digest)
        return await blob_file_matches(os.path.join(self._root, encoded), desc)

    async def put_blob(self, desc: Descriptor, chunks: AsyncIterable[bytes]) -> None:
        verifier = DigestVerifier(desc.digest, desc.size)
        _, encoded = split_digest(desc.digest)
        await anyio.to_thread.run_sync(ensure_real_dir, self._root)
        await write_stream_atomic(self._root, encoded, chunks, verifier)

    async def put_manifest(self, manifest_bytes: bytes, media_type: str, digest: str) -> None:
        split_digest(digest)
        if len(manifest_bytes) > MAX_MANIFEST_SIZE:
            raise ManifestError(f"{self.name}: manifest {digest} is larger than {MAX_MANIFEST_SIZE} bytes")
        if not manifest_matches_digest(manifest_bytes, digest):
            raise DigestMismatch(f"{self.name}: manifest bytes do not match {digest}")
        self._manifests[digest] = bytes(manifest_bytes)

    async def tag(self, name: str | None, desc: Descriptor) -> None:
        if name is not None:
            raise UsageError(f"{self.name}: a dir: destination holds one image and cannot store tag {name!r}")
        split_digest(desc.digest)
        if desc.digest not in self._manifests:
            raise ManifestError(f"{self.name}: cannot name {desc.digest}: its manifest was not stored")
        if self._top is not None and self._top != desc.digest:
            raise UsageError(f"{self.name}: a dir: destination holds one image")
        self._top = desc.digest

    async def put_signatures(self, digest: str, sigs: list[bytes]) -> None:
        split_digest(digest)
        self._signatures[digest] = [bytes(s) for s in sigs]

    async def _write_signatures(self, instance: str | None, sigs: list[bytes]) -> None:
        for i, sig in enumerate(sigs, start=1):
            await atomic_write_bytes(self._root, _signature_name(i, instance), sig)

        def drop_stale() -> None:
            i = len(sigs) + 1
            while True:
                try:
                    os.unlink(os.path.join(self._root, _signature_name(i, instance)))
                except FileNotFoundError:
                    return
                i += 1

        await anyio.to_thread.run_sync(drop_stale)

    async def commit(self) -> None:
        if self._top is None:
            if self._manifests or self._signatures:
                raise ManifestError(f"{self.name}: no top-level manifest was named (tag) before commit")
            return
        await anyio.to_thread.run_sync(ensure_real_dir, self._root)
        for digest, data in self._manifests.items():
            if digest != self._top:
                await atomic_write_bytes(self._root, _manifest_name(digest), data)
        for digest, sigs in self._signatures.items():
            await self._write_signatures(None if digest == self._top else digest, sigs)
        await atomic_write_bytes(self._root, MANIFEST_FILE, self._manifests[self._top])
