"""The ``docker://`` transport: the source/destination interface over a registry client."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from regtool.errors import ManifestError, NotFound, RegtoolError
from regtool.manifest import Descriptor, Manifest
from regtool.reference import Reference
from regtool.registry import RegistryClient
from regtool.registry.client import BlobOpener
from regtool.transports.base import ImageDestination, ImageSource


class DockerSource(ImageSource):
    """Reads one repository of a registry; the client (and its pools) is shared, not owned."""

    def __init__(self, client: RegistryClient, ref: Reference) -> None:
        self.client = client
        self.ref = ref
        self.name = f"docker://{ref}"
        self._head: tuple[Descriptor | None] | None = None
        #: The repository's tag list when the caller already has it (a sync lists once per repository).
        self.known_tags: list[str] | None = None

    async def head(self, digest: str | None = None) -> Descriptor | None:
        """The manifest descriptor from a HEAD (free of Docker Hub's pull quota).

        The named image's answer is kept, so checking that the source exists
        before a copy and the copy's own no-op check cost one request.
        """
        if digest:
            return await self.client.head_manifest(self.ref.with_digest(digest))
        if self._head is None:
            self._head = (await self.client.head_manifest(self.ref),)
        return self._head[0]

    async def head_tag(self, name: str) -> Descriptor | None:
        """HEAD of another tag of the same repository (cosign ``sha256-<hex>.sig`` tags)."""
        return await self.client.head_manifest(self.ref.repo_only().with_tag(name))

    async def get_manifest(self, digest: str | None = None) -> Manifest:
        return await self.client.get_manifest(self.ref.with_digest(digest) if digest else self.ref)

    def open_blob(self, desc: Descriptor) -> AsyncIterator[bytes]:
        return self.client.open_blob(self.ref, desc)

    def blob_opener(self, desc: Descriptor) -> BlobOpener:
        """Reopens the blob at any offset, so uploads can resume or fall back to chunks."""
        return lambda offset: self.client.open_blob(self.ref, desc, offset)

    async def list_tags(self) -> list[str]:
        if self.known_tags is None:
            self.known_tags = await self.client.list_tags(self.ref)
        return self.known_tags

    async def get_signatures(self, digest: str) -> list[bytes]:
        return []

    async def get_tagged_manifest(self, tag: str) -> Manifest | None:
        try:
            return await self.client.get_manifest(self.ref.repo_only().with_tag(tag))
        except NotFound:
            return None

    async def referrers(self, digest: str) -> list[Descriptor]:
        return await self.client.referrers(self.ref, digest)


class DockerDestination(ImageDestination):
    """Writes into one repository; the tag PUT (the last write) makes the image visible."""

    supports_tags = True
    #: ``tag`` pushes the manifest itself, so the top-level manifest needs no PUT by digest first.
    tag_pushes_manifest = True

    def __init__(self, client: RegistryClient, ref: Reference, *, mount_from: str | None = None) -> None:
        self.client = client
        self.ref = ref
        self.mount_from = mount_from
        self.name = f"docker://{ref}"
        #: Blobs belong to a repository, whatever the tag: transfers are shared per scope.
        self.blob_scope = f"docker://{ref.registry}/{ref.repository}"
        self._manifests: dict[str, tuple[bytes, str]] = {}
        self.blob_results: dict[str, str] = {}

    async def has_blob(self, desc: Descriptor) -> bool:
        return await self.client.blob_exists(self.ref, desc.digest) is not None

    async def head(self, digest: str | None = None) -> Descriptor | None:
        return await self.client.head_manifest(self.ref.with_digest(digest) if digest else self.ref)

    async def head_tag(self, name: str) -> Descriptor | None:
        return await self.client.head_manifest(self.ref.repo_only().with_tag(name))

    async def put_blob(self, desc: Descriptor, chunks: AsyncIterable[bytes] | BlobOpener) -> None:
        if callable(chunks):
            opener: BlobOpener = chunks
        else:
            stream = chunks
            opened = False

            def opener(offset: int) -> AsyncIterator[bytes]:
                # A plain stream is read once: a retried upload cannot replay it from byte 0 either.
                nonlocal opened
                if offset or opened:
                    raise RegtoolError(f"blob {desc.digest}: the source cannot be re-read from byte {offset}")
                opened = True
                return _aiter(stream)

        await self.upload(desc, opener, mount_from=self.mount_from)

    async def upload(self, desc: Descriptor, opener: BlobOpener, *, mount_from: str | None = None) -> str:
        """Uploads a blob, first offering a cross-repository mount from ``mount_from``.

        One POST asks for the mount; when the registry declines (202) the upload
        continues in the session it opened. Returns "mounted" or "uploaded".
        """
        result = await self.client.upload_blob(self.ref, desc, opener, mount_from=mount_from)
        self.blob_results[desc.digest] = result
        return result

    async def mount_blob(self, desc: Descriptor, from_repository: str) -> bool:
        return await self.client.mount_blob(self.ref, desc.digest, from_repository)

    async def put_manifest(self, manifest_bytes: bytes, media_type: str, digest: str) -> None:
        self._manifests[digest] = (manifest_bytes, media_type)
        await self.client.put_manifest(self.ref.repo_only().with_digest(digest), manifest_bytes, media_type)

    def stage_manifest(self, manifest_bytes: bytes, media_type: str, digest: str) -> None:
        """Keeps bytes for a later ``tag`` without pushing them by digest first."""
        self._manifests[digest] = (manifest_bytes, media_type)

    async def tag(self, name: str | None, desc: Descriptor) -> None:
        """PUTs the manifest under ``name`` (``None``: the destination's tag, or its digest if it names one)."""
        staged = self._manifests.get(desc.digest)
        if staged is None:
            raise ManifestError(f"{self.name}: cannot tag {desc.digest}: its manifest was not written")
        data, media_type = staged
        target = self.ref.repo_only().with_tag(name) if name else self.ref
        if target.digest and not target.tag:
            if target.digest != desc.digest:
                raise ManifestError(
                    f"{self.name}: the destination names digest {target.digest} but the copy produced {desc.digest}"
                )
            await self.client.put_manifest(target.repo_only().with_digest(target.digest), data, media_type)
            return
        await self.client.put_manifest(target.repo_only().with_tag(target.tag or "latest"), data, media_type)

    async def put_signatures(self, digest: str, sigs: list[bytes]) -> None:
        return None

    async def commit(self) -> None:
        return None


async def _aiter(stream: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    async for chunk in stream:
        yield chunk
