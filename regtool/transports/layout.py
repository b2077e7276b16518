"""OCI image layouts: ``oci:PATH[:REF]`` and ``oci-archive:FILE[:REF]``.

A layout is a directory holding ``oci-layout`` (``{"imageLayoutVersion":
"1.0.0"}``), ``index.json`` and content-addressed ``blobs/<alg>/<hex>``. One
layout can hold many images: each ``index.json`` entry may carry an
``org.opencontainers.image.ref.name`` annotation, which is what ``REF`` selects
(as in containers/image). Manifests are stored and read byte-for-byte, and the
media type of a top-level manifest is the one in its ``index.json`` descriptor,
so a Docker v2s2 image stays v2s2.

``oci-archive:`` is the same layout in an (uncompressed) tar. Reading an
uncompressed archive needs no extraction: blobs are streamed straight out of
the tar file at their member offsets. A compressed archive is extracted into a
temporary directory first, refusing any member that would land outside it.
Writing builds the layout in a temporary directory and tars it over ``FILE``
atomically at :meth:`commit`, replacing any previous archive (as skopeo does).

Safety: every digest passes :func:`~regtool.transports.base.split_digest`
before it becomes a path, ref names must follow the OCI annotation grammar,
and nothing is written through symlinked directories inside the layout.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from typing import IO, Any

import anyio.to_thread

from regtool.atomic import write_atomic
from regtool.errors import DigestMismatch, InvalidReference, ManifestError, NotFound, RegtoolError, UsageError
from regtool.manifest import MAX_MANIFEST_SIZE, OCI_INDEX, Descriptor, Manifest, parse_manifest
from regtool.transports.base import (
    CHUNK_SIZE,
    TEMP_PREFIX,
    DigestVerifier,
    ImageDestination,
    ImageSource,
    atomic_write_bytes,
    blob_file_matches,
    descriptor_fields,
    ensure_real_dir,
    iter_file_range,
    manifest_matches_digest,
    split_digest,
    write_stream_atomic,
)

__all__ = [
    "INDEX_FILE",
    "LAYOUT_FILE",
    "LAYOUT_VERSION",
    "REF_NAME_ANNOTATION",
    "OCIArchiveDestination",
    "OCILayoutDestination",
    "OCILayoutSource",
    "blob_path",
    "open_archive_source",
    "validate_ref_name",
]

LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
LAYOUT_VERSION = "1.0.0"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
MAX_INDEX_SIZE = 64 * 1024 * 1024

# The OCI image spec grammar for org.opencontainers.image.ref.name.
_ALNUM = r"[A-Za-z0-9]+"
_SEPARATOR = r"(?:[-._:@+]|--)"
_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_REF_NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_MAX_REF_NAME = 1024


def validate_ref_name(name: str) -> str:
    """Return ``name`` if it is a valid OCI ref name, else raise :class:`InvalidReference`.

    Accepts ``latest``, ``v1.2``, ``docker.io/library/alpine:3.19`` and cosign's
    ``sha256-<hex>.sig``; refuses ``..``, ``/x``, empty names and whitespace.
    """
    if not isinstance(name, str) or len(name) > _MAX_REF_NAME or not _REF_NAME_RE.fullmatch(name):
        shown = name if not isinstance(name, str) or len(name) <= 80 else name[:80] + "..."
        raise InvalidReference(f"invalid OCI layout reference name {shown!r}")
    return name


def blob_path(digest: str) -> tuple[str, str]:
    """``(directory, file)`` of a blob relative to the layout root, validated."""
    algorithm, encoded = split_digest(digest)
    return f"blobs/{algorithm}", encoded


def _ref_name_of(entry: dict[str, Any]) -> str | None:
    annotations = entry.get("annotations")
    if isinstance(annotations, dict):
        name = annotations.get(REF_NAME_ANNOTATION)
        if isinstance(name, str) and name:
            return name
    return None


def _parse_index(data: bytes, where: str) -> dict[str, Any]:
    try:
        index = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(f"{where}: index.json is not valid JSON: {exc}") from None
    if not isinstance(index, dict):
        raise ManifestError(f"{where}: index.json is not a JSON object")
    manifests = index.get("manifests", [])
    if manifests is None:
        manifests = []
    if not isinstance(manifests, list) or not all(isinstance(m, dict) for m in manifests):
        raise ManifestError(f"{where}: index.json 'manifests' is not a list of descriptors")
    for entry in manifests:
        if not isinstance(entry.get("digest"), str):
            raise ManifestError(f"{where}: index.json has a descriptor without a digest")
    index["manifests"] = manifests
    return index


def _entries(index: dict[str, Any]) -> list[dict[str, Any]]:
    manifests: list[dict[str, Any]] = index["manifests"]
    return manifests


def _resolve(index: dict[str, Any], ref: str | None, where: str) -> dict[str, Any]:
    """The index.json entry ``ref`` names (containers/image rules)."""
    entries = _entries(index)
    names = [n for n in (_ref_name_of(e) for e in entries) if n is not None]
    if ref is None:
        if len(entries) == 1:
            return entries[0]
        if not entries:
            raise NotFound(f"{where}: the layout holds no image")
        listed = ", ".join(repr(n) for n in dict.fromkeys(names)) or "(none named)"
        raise UsageError(
            f"{where}: more than one image in the layout, choose one with {where}:REF; refs: {listed}"
        )
    matches = [e for e in entries if _ref_name_of(e) == ref]
    if not matches:
        listed = ", ".join(repr(n) for n in dict.fromkeys(names)) or "(none)"
        raise NotFound(f"{where}: no image named {ref!r} in the layout; refs: {listed}")
    if len(matches) > 1 and len({m["digest"] for m in matches}) > 1:
        raise ManifestError(f"{where}: more than one image named {ref!r} in the layout")
    return matches[0]


# --------------------------------------------------------------------------- reading


class _Store(ABC):
    """Where a layout's files are: a directory, or members of a tar file."""

    @abstractmethod
    def locate(self, relpath: str) -> tuple[str, int, int] | None:
        """``(file, offset, size)`` holding ``relpath``, or ``None``. Blocking."""

    def read(self, relpath: str, limit: int, what: str) -> bytes:
        """A small file read whole. Blocking."""
        where = self.locate(relpath)
        if where is None:
            raise NotFound(f"{what} not found")
        path, offset, size = where
        if size > limit:
            raise ManifestError(f"{what} is larger than {limit} bytes")
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(size)
        if len(data) != size:
            raise ManifestError(f"{what} is truncated")
        return data


class _DirStore(_Store):
    def __init__(self, root: str) -> None:
        self.root = root

    def locate(self, relpath: str) -> tuple[str, int, int] | None:
        path = os.path.join(self.root, *relpath.split("/"))
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return path, 0, st.st_size


def _safe_member_name(name: str, archive: str) -> str:
    """``name`` normalised to a relative POSIX path, or raise if it could escape."""
    cleaned = name.replace("\\", "/") if os.sep == "\\" else name
    while cleaned.startswith("./"):
        cleaned = cleaned[2:]
    parts = [p for p in cleaned.split("/") if p not in ("", ".")]
    if cleaned.startswith("/") or ".." in parts or "\x00" in cleaned:
        raise ManifestError(f"{archive}: refusing unsafe archive member {name[:100]!r}")
    return "/".join(parts)


class _TarStore(_Store):
    """Members of an uncompressed tar, read in place at their data offsets."""

    def __init__(self, archive: str, members: dict[str, tuple[int, int]]) -> None:
        self.archive = archive
        self.members = members

    def locate(self, relpath: str) -> tuple[str, int, int] | None:
        found = self.members.get(relpath)
        if found is None:
            return None
        return self.archive, found[0], found[1]

    @classmethod
    def scan(cls, archive: str) -> _TarStore | None:
        """Index ``archive``; ``None`` if it must be extracted (compressed, sparse)."""
        members: dict[str, tuple[int, int]] = {}
        try:
            tar = tarfile.open(archive, mode="r:")  # noqa: SIM115 - closed by the with below
        except tarfile.ReadError:
            return None
        with tar:
            for member in tar:
                name = _safe_member_name(member.name, archive)
                if member.isreg():
                    if member.issparse():
                        return None
                    members[name] = (member.offset_data, member.size)
                elif member.islnk():
                    target = members.get(_safe_member_name(member.linkname, archive))
                    if target is not None:
                        members[name] = target
                elif member.issym():
                    _safe_member_name(member.linkname, archive)  # refused like extraction would
        return cls(archive, members)


def _extract_archive(archive: str, dest: str) -> None:
    """Extract (a possibly compressed) ``archive`` into ``dest``, safely. Blocking."""
    try:
        tar = tarfile.open(archive, mode="r:*")  # noqa: SIM115 - closed by the with below
    except tarfile.ReadError as exc:
        raise ManifestError(f"{archive}: not a tar archive ({exc})") from None
    with tar:
        members: list[tarfile.TarInfo] = []
        for member in tar:
            _safe_member_name(member.name, archive)
            if member.islnk() or member.issym():
                _safe_member_name(member.linkname, archive)
                if member.issym():
                    continue  # an OCI layout has no use for symlinks
            elif not (member.isreg() or member.isdir()):
                continue
            members.append(member)
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, members=members, filter="data")
        else:  # pragma: no cover - Python without PEP 706 (< 3.10.12 / 3.11.4)
            root = os.path.realpath(dest)
            for member in members:
                target = os.path.realpath(os.path.join(dest, member.name))
                if os.path.commonpath([root, target]) != root:
                    raise ManifestError(f"{archive}: refusing unsafe archive member {member.name[:100]!r}")
                member.mode = (member.mode | 0o600) & 0o755
            tar.extractall(dest, members=members)


class OCILayoutSource(ImageSource):
    """Reads one image (and anything else by digest) from an OCI layout."""

    def __init__(
        self,
        store: _Store,
        index: dict[str, Any],
        ref: str | None,
        name: str,
        cleanup_dir: str | None = None,
    ) -> None:
        self._store = store
        self._index = index
        self._ref = ref
        self.name = name
        self._cleanup_dir = cleanup_dir
        # media types learnt from index.json and from indexes already read
        self._media_types: dict[str, str] = {}
        for entry in _entries(index):
            media_type = entry.get("mediaType")
            if isinstance(media_type, str):
                self._media_types.setdefault(entry["digest"], media_type)
        self._top: dict[str, Any] | None = None

    @classmethod
    async def open(cls, path: str, ref: str | None = None) -> OCILayoutSource:
        """Open the layout directory ``path``; ``ref`` is resolved lazily."""
        if ref is not None:
            validate_ref_name(ref)
        name = f"oci:{path}" + (f":{ref}" if ref else "")
        if not await anyio.to_thread.run_sync(os.path.isdir, path):
            raise NotFound(f"{name}: no such directory")
        store = _DirStore(path)
        data = await anyio.to_thread.run_sync(store.read, INDEX_FILE, MAX_INDEX_SIZE, f"{name}: index.json")
        return cls(store, _parse_index(data, name), ref, name)

    @property
    def index(self) -> dict[str, Any]:
        """The parsed ``index.json`` (read-only by convention)."""
        return self._index

    def top_descriptor(self) -> dict[str, Any]:
        """The ``index.json`` entry of the named image (raises if ambiguous/absent)."""
        if self._top is None:
            self._top = _resolve(self._index, self._ref, self.name)
        return self._top

    async def _read_manifest(self, digest: str, media_type: str | None) -> Manifest:
        directory, encoded = blob_path(digest)
        what = f"{self.name}: manifest {digest}"
        data = await anyio.to_thread.run_sync(
            self._store.read, f"{directory}/{encoded}", MAX_MANIFEST_SIZE, what
        )
        if not manifest_matches_digest(data, digest):
            raise DigestMismatch(f"{what}: stored bytes do not match the digest")
        manifest = parse_manifest(data, media_type)
        if manifest.is_index:
            for child in manifest.children():
                self._media_types.setdefault(child.digest, child.media_type)
        return manifest

    async def get_manifest(self, digest: str | None = None) -> Manifest:
        if digest is None:
            entry = self.top_descriptor()
            digest = entry["digest"]
            media_type = entry.get("mediaType")
            return await self._read_manifest(digest, media_type if isinstance(media_type, str) else None)
        split_digest(digest)
        return await self._read_manifest(digest, self._media_types.get(digest))

    async def open_blob(self, desc: Descriptor) -> AsyncIterator[bytes]:
        directory, encoded = blob_path(desc.digest)
        where = await anyio.to_thread.run_sync(self._store.locate, f"{directory}/{encoded}")
        if where is None:
            raise NotFound(f"{self.name}: blob {desc.digest} not found")
        path, offset, size = where
        async for chunk in iter_file_range(path, offset, size, desc, CHUNK_SIZE):
            yield chunk

    async def list_tags(self) -> list[str]:
        names = (_ref_name_of(e) for e in _entries(self._index))
        return list(dict.fromkeys(n for n in names if n is not None))

    async def get_signatures(self, digest: str) -> list[bytes]:
        split_digest(digest)
        return []

    async def get_tagged_manifest(self, tag: str) -> Manifest | None:
        for entry in _entries(self._index):
            if _ref_name_of(entry) == tag:
                media_type = entry.get("mediaType")
                return await self._read_manifest(
                    entry["digest"], media_type if isinstance(media_type, str) else None
                )
        return None

    async def close(self) -> None:
        if self._cleanup_dir is not None:
            directory, self._cleanup_dir = self._cleanup_dir, None
            await anyio.to_thread.run_sync(shutil.rmtree, directory, True)


async def open_archive_source(
    path: str, ref: str | None = None, tmpdir: str | None = None
) -> OCILayoutSource:
    """Open ``oci-archive:path[:ref]``.

    An uncompressed archive is read in place; a compressed one is extracted to
    a temporary directory under ``tmpdir`` (removed by ``close``).
    """
    if ref is not None:
        validate_ref_name(ref)
    name = f"oci-archive:{path}" + (f":{ref}" if ref else "")
    if not await anyio.to_thread.run_sync(os.path.isfile, path):
        raise NotFound(f"{name}: no such file")
    store: _Store | None = await anyio.to_thread.run_sync(_TarStore.scan, path)
    cleanup: str | None = None
    if store is None:
        cleanup = await anyio.to_thread.run_sync(
            lambda: tempfile.mkdtemp(prefix="regtool-oci-archive-", dir=tmpdir)
        )
        try:
            await anyio.to_thread.run_sync(_extract_archive, path, cleanup)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(shutil.rmtree, cleanup, True)
            raise
        store = _DirStore(cleanup)
    try:
        data = await anyio.to_thread.run_sync(store.read, INDEX_FILE, MAX_INDEX_SIZE, f"{name}: index.json")
        index = _parse_index(data, name)
    except BaseException:
        if cleanup is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(shutil.rmtree, cleanup, True)
        raise
    return OCILayoutSource(store, index, ref, name, cleanup_dir=cleanup)


# --------------------------------------------------------------------------- writing


def _add_entry(entries: list[dict[str, Any]], entry: dict[str, Any]) -> list[dict[str, Any]]:
    """containers/image's index update: a name moves; same-digest unnamed entries merge."""
    name = _ref_name_of(entry)
    if name is not None:
        entries = [e for e in entries if _ref_name_of(e) != name]
    for i, existing in enumerate(entries):
        if existing.get("digest") == entry["digest"] and _ref_name_of(existing) is None:
            entries = list(entries)
            entries[i] = entry
            return entries
    return [*entries, entry]


def check_layout_destination(path: str, what: str) -> None:
    """Refuse a destination that is not a directory, or a non-empty non-layout one. Blocking."""
    if not os.path.exists(path):
        return
    if not os.path.isdir(path):
        raise UsageError(f"{what}: {path} exists and is not a directory")
    names = set(os.listdir(path))
    if names and not names & {LAYOUT_FILE, INDEX_FILE}:
        raise UsageError(f"{what}: {path} is not empty and is not an OCI layout")
    if LAYOUT_FILE in names:
        try:
            with open(os.path.join(path, LAYOUT_FILE), "rb") as fh:
                layout = json.loads(fh.read(65536))
        except (OSError, ValueError) as exc:
            raise ManifestError(f"{what}: unreadable {LAYOUT_FILE}: {exc}") from None
        version = layout.get("imageLayoutVersion") if isinstance(layout, dict) else None
        if not isinstance(version, str) or not version.startswith("1."):
            raise ManifestError(f"{what}: unsupported image layout version {version!r}")


class OCILayoutDestination(ImageDestination):
    """Writes images into an OCI layout directory (created if missing).

    Blobs and manifests land in ``blobs/`` as they arrive (atomically, verified);
    names are recorded in ``index.json`` at :meth:`commit`, re-reading it then
    so entries other runs added meanwhile are kept.
    """

    supports_signatures = False
    supports_tags = True

    def __init__(self, root: str, ref: str | None, name: str) -> None:
        self._root = root
        self._ref = ref
        self.name = name
        self._pending: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, path: str, ref: str | None = None) -> OCILayoutDestination:
        if ref is not None:
            validate_ref_name(ref)
        name = f"oci:{path}" + (f":{ref}" if ref else "")
        await anyio.to_thread.run_sync(check_layout_destination, path, name)
        return cls(path, ref, name)

    @property
    def root(self) -> str:
        return self._root

    def _blob_file(self, digest: str) -> str:
        directory, encoded = blob_path(digest)
        return os.path.join(self._root, *directory.split("/"), encoded)

    def _blob_dir(self, digest: str) -> tuple[str, str]:
        """Create ``blobs/<alg>`` safely; return it and the file name. Blocking."""
        algorithm, encoded = split_digest(digest)
        if not self._root:
            raise RegtoolError(f"{self.name}: destination already closed")
        return ensure_real_dir(self._root, "blobs", algorithm), encoded

    async def has_blob(self, desc: Descriptor) -> bool:
        return await blob_file_matches(self._blob_file(desc.digest), desc)

    async def put_blob(self, desc: Descriptor, chunks: AsyncIterable[bytes]) -> None:
        verifier = DigestVerifier(desc.digest, desc.size)
        directory, encoded = await anyio.to_thread.run_sync(self._blob_dir, desc.digest)
        await write_stream_atomic(directory, encoded, chunks, verifier)

    async def put_manifest(self, manifest_bytes: bytes, media_type: str, digest: str) -> None:
        split_digest(digest)
        if not manifest_matches_digest(manifest_bytes, digest):
            raise DigestMismatch(f"{self.name}: manifest bytes do not match {digest}")
        directory, encoded = await anyio.to_thread.run_sync(self._blob_dir, digest)
        await atomic_write_bytes(directory, encoded, manifest_bytes)

    async def tag(self, name: str | None, desc: Descriptor) -> None:
        if name is None:
            name = self._ref
        else:
            validate_ref_name(name)
        path = self._blob_file(desc.digest)
        if not await anyio.to_thread.run_sync(os.path.isfile, path):
            raise ManifestError(f"{self.name}: cannot name {desc.digest}: its manifest was not stored")
        entry = descriptor_fields(desc)
        annotations: dict[str, Any] = entry.get("annotations") or {}
        annotations.pop(REF_NAME_ANNOTATION, None)
        if name is not None:
            annotations[REF_NAME_ANNOTATION] = name
        if annotations:
            entry["annotations"] = annotations
        else:
            entry.pop("annotations", None)
        self._pending.append(entry)

    async def put_signatures(self, digest: str, sigs: list[bytes]) -> None:
        split_digest(digest)  # OCI layouts have no place for simple signatures

    def _read_current_index(self) -> dict[str, Any]:
        path = os.path.join(self._root, INDEX_FILE)
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_INDEX_SIZE + 1)
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        if len(data) > MAX_INDEX_SIZE:
            raise ManifestError(f"{self.name}: index.json is larger than {MAX_INDEX_SIZE} bytes")
        return _parse_index(data, self.name)

    async def named_digest(self, name: str | None = None) -> str | None:
        """The digest index.json names ``name`` (default: this destination's ref), if any."""
        want = name if name is not None else self._ref

        def find() -> str | None:
            for entry in _entries(self._read_current_index()):
                if _ref_name_of(entry) == want:
                    return str(entry["digest"])
            return None

        return await anyio.to_thread.run_sync(find)

    async def commit(self) -> None:
        if not self._root:
            raise RegtoolError(f"{self.name}: destination already closed")
        await anyio.to_thread.run_sync(self._commit_blocking)
        self._pending = []

    def _commit_blocking(self) -> None:
        # One read-modify-write of index.json at a time per layout in this process, so
        # concurrent copies into one layout (a sync) never lose each other's entries.
        with _index_lock(self._root):
            ensure_real_dir(self._root)
            layout_path = os.path.join(self._root, LAYOUT_FILE)
            if not os.path.isfile(layout_path):
                write_atomic(layout_path, b'{"imageLayoutVersion":"1.0.0"}')
            index = self._read_current_index()
            entries = _entries(index)
            for entry in self._pending:
                entries = _add_entry(entries, entry)
            index["manifests"] = entries
            data = json.dumps(index, separators=(",", ":"), ensure_ascii=False).encode()
            write_atomic(os.path.join(self._root, INDEX_FILE), data)


_INDEX_LOCKS: dict[str, threading.Lock] = {}
_INDEX_LOCKS_GUARD = threading.Lock()


def _index_lock(root: str) -> threading.Lock:
    key = os.path.realpath(root)
    with _INDEX_LOCKS_GUARD:
        return _INDEX_LOCKS.setdefault(key, threading.Lock())


def _archive_members(root: str) -> Iterator[tuple[str, str]]:
    """``(path, arcname)`` of a layout directory, dirs before their files, sorted."""
    for top in (LAYOUT_FILE, INDEX_FILE):
        yield os.path.join(root, top), top
    blobs = os.path.join(root, "blobs")
    if not os.path.isdir(blobs):
        return
    yield blobs, "blobs"
    for algorithm in sorted(os.listdir(blobs)):
        alg_dir = os.path.join(blobs, algorithm)
        if algorithm.startswith(TEMP_PREFIX) or not os.path.isdir(alg_dir):
            continue
        yield alg_dir, f"blobs/{algorithm}"
        for blob in sorted(os.listdir(alg_dir)):
            if not blob.startswith(TEMP_PREFIX):
                yield os.path.join(alg_dir, blob), f"blobs/{algorithm}/{blob}"


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def _write_archive(root: str, archive: str) -> None:
    """Tar the layout ``root`` into ``archive`` atomically. Blocking."""
    directory = os.path.dirname(os.path.abspath(archive)) or "."
    base = os.path.basename(archive)
    fd, temp = tempfile.mkstemp(prefix=f".{base}{TEMP_PREFIX}", dir=directory)
    try:
        fh: IO[bytes]
        with os.fdopen(fd, "wb") as fh:
            with tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for path, arcname in _archive_members(root):
                    tar.add(path, arcname=arcname, recursive=False, filter=_normalise)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, archive)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


class OCIArchiveDestination(OCILayoutDestination):
    """Builds a layout in a temporary directory and tars it over ``FILE`` at commit."""

    def __init__(self, root: str, ref: str | None, name: str, archive: str) -> None:
        super().__init__(root, ref, name)
        self._archive = archive

    @classmethod
    async def open_archive(
        cls, path: str, ref: str | None = None, tmpdir: str | None = None
    ) -> OCIArchiveDestination:
        if ref is not None:
            validate_ref_name(ref)
        name = f"oci-archive:{path}" + (f":{ref}" if ref else "")
        parent = os.path.dirname(os.path.abspath(path))
        if not await anyio.to_thread.run_sync(os.path.isdir, parent):
            raise UsageError(f"{name}: directory {parent} does not exist")
        if await anyio.to_thread.run_sync(os.path.isdir, path):
            raise UsageError(f"{name}: {path} is a directory")
        root = await anyio.to_thread.run_sync(
            lambda: tempfile.mkdtemp(prefix="regtool-oci-archive-", dir=tmpdir)
        )
        return cls(root, ref, name, path)

    async def commit(self) -> None:
        await super().commit()
        await anyio.to_thread.run_sync(_write_archive, self._root, self._archive)

    async def close(self) -> None:
        root, self._root = self._root, ""
        if root:
            await anyio.to_thread.run_sync(shutil.rmtree, root, True)
