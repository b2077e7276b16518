"""The transfer engine: copies images between any two transports, digest-exact.

Rules every copy follows, because a reader may look at the destination at any
moment: blobs before the manifest that lists them, children before their index,
the tag last. Manifests travel byte-for-byte unless a conversion or a platform
subset was asked for (then the new digest is reported). Blobs stream from
source to destination without temporary files; each (destination, digest) is
transferred once per run however many images share it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from regtool.errors import ManifestError, RegtoolError, UsageError
from regtool.manifest import (
    DOCKER_LIST,
    DOCKER_V2S2,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
    Platform,
    is_nondistributable,
    parse_manifest,
    select_platform,
)
from regtool.transports.base import ImageDestination, ImageSource
from regtool.transports.docker import DockerDestination, DockerSource

log = logging.getLogger("regtool.copy")

MultiArch = Literal["system", "all", "index-only"]
MAX_INDEX_DEPTH = 4
#: cosign's digest-tag suffixes carried along with an image.
ATTACHMENT_SUFFIXES = (".sig", ".att", ".sbom", "")


@dataclass
class CopyOptions:
    """What ``regtool copy`` (and sync, per image) asks of the engine."""

    multi_arch: MultiArch = "system"
    platforms: list[Platform] = field(default_factory=list)  # a subset; overrides multi_arch
    platform: Platform | None = None  # for "system": host or --override-*
    remove_signatures: bool = False
    include_nondistributable: bool = False
    format: Literal["oci", "v2s2"] | None = None
    parallel: int = 6


@dataclass
class CopyResult:
    source_digest: str
    digest: str  # top-level digest written at the destination
    action: Literal["copied", "skipped"] = "copied"
    digest_changed: bool = False
    blobs_copied: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    bytes_copied: int = 0
    attachments: list[str] = field(default_factory=list)
    signatures: int = 0


class ProgressSink:
    """Receives transfer events; the CLI renders them (rich on a TTY, lines otherwise)."""

    def blob_started(self, desc: Descriptor) -> None: ...

    def blob_advanced(self, desc: Descriptor, n: int) -> None: ...

    def blob_finished(self, desc: Descriptor, how: str) -> None: ...


class Transfers:
    """Run-wide blob bookkeeping: one in-flight transfer per (destination, digest).

    Later users of a digest await the first transfer instead of starting their
    own; a failed transfer is forgotten so a retry can try again.
    """

    def __init__(self, parallel: int = 6) -> None:
        self.limiter = anyio.CapacityLimiter(max(1, parallel))
        self._done: dict[tuple[str, str], str] = {}
        self._inflight: dict[tuple[str, str], anyio.Event] = {}
        self._errors: dict[tuple[str, str], BaseException] = {}

    async def once(self, key: tuple[str, str], work: Callable[[], Any]) -> str:
        while True:
            if key in self._done:
                return "shared"
            event = self._inflight.get(key)
            if event is None:
                break
            await event.wait()
            if key in self._errors:
                raise self._errors[key]
        event = anyio.Event()
        self._inflight[key] = event
        self._errors.pop(key, None)
        try:
            how = str(await work())
        except BaseException as exc:
            self._errors[key] = exc  # for those waiting now; a later caller tries again
            raise
        finally:
            del self._inflight[key]
            event.set()
        self._done[key] = how
        return how


class Copier:
    """Copies images; one instance per run so blob transfers are shared."""

    def __init__(
        self,
        options: CopyOptions | None = None,
        *,
        transfers: Transfers | None = None,
        progress: ProgressSink | None = None,
    ) -> None:
        self.options = options or CopyOptions()
        self.transfers = transfers or Transfers(self.options.parallel)
        self.progress = progress or ProgressSink()

    # -- entry points ----------------------------------------------------------------

    async def copy(self, src: ImageSource, dest: ImageDestination) -> CopyResult:
        """Copies the named image of ``src`` to ``dest``; a no-op when ``dest`` already has it."""
        noop = await self._noop_check(src, dest)
        if noop is not None:
            return noop
        top = await src.get_manifest()
        result = CopyResult(source_digest=top.digest, digest=top.digest)
        written = await self._copy_top(src, dest, top, result)
        await self._tag(dest, None, written)
        result.digest = written.digest
        result.digest_changed = written.digest != top.digest
        if not self.options.remove_signatures:
            await self._copy_attachments(src, dest, top.digest, written, result)
        await dest.commit()
        return result

    async def _noop_check(self, src: ImageSource, dest: ImageDestination) -> CopyResult | None:
        """HEAD both sides; equal digests mean nothing but attachments can be new."""
        opts = self.options
        if opts.format or opts.platforms or not (isinstance(src, DockerSource) and isinstance(dest, DockerDestination)):
            return None
        async with anyio.create_task_group() as tg:
            heads: dict[str, Descriptor | None] = {}

            async def head(side: str, obj: DockerSource | DockerDestination) -> None:
                heads[side] = await obj.head()

            tg.start_soon(head, "src", src)
            tg.start_soon(head, "dest", dest)
        s, d = heads["src"], heads["dest"]
        if s is None or not s.digest:
            return None
        if s.media_type in (OCI_INDEX, DOCKER_LIST) and opts.multi_arch == "system":
            return None  # the destination should hold one instance: resolving it needs the index
        if d is None or d.digest != s.digest:
            return None
        result = CopyResult(source_digest=s.digest, digest=s.digest, action="skipped")
        if not opts.remove_signatures:
            await self._copy_attachments(src, dest, s.digest, s, result)
        await dest.commit()
        return result

    # -- manifests -------------------------------------------------------------------

    async def _copy_top(
        self, src: ImageSource, dest: ImageDestination, top: Manifest, result: CopyResult
    ) -> Descriptor:
        """Copies what the options select from ``top``; returns the descriptor to tag."""
        opts = self.options
        if not top.is_index:
            return await self._copy_manifest(src, dest, top, result, depth=0, is_top=True)
        if opts.platforms:
            return await self._copy_subset(src, dest, top, result)
        if opts.multi_arch == "system":
            child = select_platform(top, opts.platform or Platform.host())
            manifest = await src.get_manifest(child.digest)
            return await self._copy_manifest(src, dest, manifest, result, depth=1, is_top=True)
        return await self._copy_manifest(src, dest, top, result, depth=0, is_top=True)

    async def _copy_subset(
        self, src: ImageSource, dest: ImageDestination, top: Manifest, result: CopyResult
    ) -> Descriptor:
        wanted = self.options.platforms
        kept = [d for d in top.children() if d.platform is not None and any(d.platform.matches(w) for w in wanted)]
        if not kept:
            available = ", ".join(str(d.platform) for d in top.children() if d.platform)
            raise UsageError(f"none of the platforms asked for are in {top.digest} (it has: {available})")
        body = dict(top.json)
        body["manifests"] = [d.to_json() for d in kept]
        data = json.dumps(body, separators=(",", ":")).encode()
        subset = parse_manifest(data, top.media_type)
        log.warning("platform subset: new index digest %s (source %s)", subset.digest, top.digest)
        return await self._copy_manifest(src, dest, subset, result, depth=0, is_top=True)

    async def _copy_manifest(
        self,
        src: ImageSource,
        dest: ImageDestination,
        manifest: Manifest,
        result: CopyResult,
        *,
        depth: int,
        is_top: bool = False,
    ) -> Descriptor:
        if depth > MAX_INDEX_DEPTH:
            raise ManifestError(f"index {manifest.digest} nests deeper than {MAX_INDEX_DEPTH} levels")
        if manifest.is_index:
            children = manifest.children()
            if self.options.multi_arch != "index-only" or not is_top:
                replaced: dict[str, Descriptor] = {}

                async def child(desc: Descriptor) -> None:
                    sub = await src.get_manifest(desc.digest)
                    replaced[desc.digest] = await self._copy_manifest(src, dest, sub, result, depth=depth + 1)

                async with anyio.create_task_group() as tg:
                    for desc in children:
                        tg.start_soon(child, desc)
                if any(replaced[d.digest].digest != d.digest for d in children):
                    manifest = _rewrite_index(manifest, [replaced[d.digest] for d in children], self.options.format)
            if self.options.format:
                manifest = _convert_index(manifest, self.options.format)
        else:
            await self._copy_blobs(src, dest, manifest, result)
            if self.options.format:
                manifest = _convert_image(manifest, self.options.format)
        desc = Descriptor(media_type=manifest.media_type, digest=manifest.digest, size=len(manifest.raw))
        if is_top and getattr(dest, "tag_pushes_manifest", False):
            dest.stage_manifest(manifest.raw, manifest.media_type, manifest.digest)  # type: ignore[attr-defined]
        else:
            await dest.put_manifest(manifest.raw, manifest.media_type, manifest.digest)
        return desc

    async def _tag(self, dest: ImageDestination, name: str | None, desc: Descriptor) -> None:
        await dest.tag(name, desc)

    # -- blobs -----------------------------------------------------------------------

    async def _copy_blobs(self, src: ImageSource, dest: ImageDestination, image: Manifest, result: CopyResult) -> None:
        blobs: list[Descriptor] = []
        if image.config is not None:
            blobs.append(image.config)
        for layer in image.layers:
            if is_nondistributable(layer.media_type) and not self.options.include_nondistributable:
                log.info("not copying non-distributable layer %s", layer.digest)
                continue
            blobs.append(layer)
        async with anyio.create_task_group() as tg:
            for desc in dict((b.digest, b) for b in blobs).values():
                tg.start_soon(self._copy_blob, src, dest, desc, result)

    async def _copy_blob(self, src: ImageSource, dest: ImageDestination, desc: Descriptor, result: CopyResult) -> None:
        async def work() -> str:
            async with self.transfers.limiter:
                if await dest.has_blob(desc):
                    return "skipped"
                self.progress.blob_started(desc)
                mount_from = _mount_candidate(src, dest)
                if mount_from is not None and isinstance(dest, DockerDestination):
                    if await dest.mount_blob(desc, mount_from):
                        self.progress.blob_finished(desc, "mounted")
                        return "mounted"
                if isinstance(src, DockerSource) and isinstance(dest, DockerDestination):
                    opener = src.blob_opener(desc)
                    await dest.put_blob(desc, lambda offset: self._counted(opener(offset), desc, result))
                else:
                    await dest.put_blob(desc, self._counted(src.open_blob(desc), desc, result))
                self.progress.blob_finished(desc, "copied")
                return "copied"

        how = await self.transfers.once((dest.name, desc.digest), work)
        if how == "skipped" or how == "shared":
            result.blobs_skipped += 1
        elif how == "mounted":
            result.blobs_mounted += 1
        else:
            result.blobs_copied += 1

    async def _counted(
        self, stream: AsyncIterator[bytes], desc: Descriptor, result: CopyResult
    ) -> AsyncIterator[bytes]:
        async for chunk in stream:
            result.bytes_copied += len(chunk)
            self.progress.blob_advanced(desc, len(chunk))
            yield chunk

    # -- signatures and attached artifacts --------------------------------------------

    async def _copy_attachments(
        self, src: ImageSource, dest: ImageDestination, src_digest: str, written: Descriptor, result: CopyResult
    ) -> None:
        """Carries cosign digest tags, OCI referrers (fallback tag) and dir: signatures along."""
        sigs = await src.get_signatures(src_digest)
        if sigs and dest.supports_signatures and written.digest == src_digest:
            await dest.put_signatures(src_digest, sigs)
            result.signatures = len(sigs)
        if not dest.supports_tags:
            return
        prefix = src_digest.replace(":", "-")
        names = [prefix + suffix for suffix in ATTACHMENT_SUFFIXES]
        tags = set(await src.list_tags()) if isinstance(src, DockerSource) else None
        for name in names:
            if tags is not None and name not in tags:
                continue
            attached = await src.get_tagged_manifest(name)
            if attached is None:
                continue
            if isinstance(dest, DockerDestination):
                have = await dest.head_tag(name)
                if have is not None and have.digest == attached.digest:
                    continue
            sub = CopyResult(source_digest=attached.digest, digest=attached.digest)
            saved = self.options
            self.options = CopyOptions(multi_arch="all", parallel=saved.parallel, remove_signatures=True,
                                       include_nondistributable=saved.include_nondistributable)
            try:
                desc = await self._copy_manifest(src, dest, attached, sub, depth=0, is_top=True)
            finally:
                self.options = saved
            await self._tag(dest, name, desc)
            result.attachments.append(name)
            result.bytes_copied += sub.bytes_copied


def _mount_candidate(src: ImageSource, dest: ImageDestination) -> str | None:
    if isinstance(src, DockerSource) and isinstance(dest, DockerDestination):
        if src.ref.registry == dest.ref.registry and src.ref.repository != dest.ref.repository:
            return src.ref.repository
    return None


# -- format conversion (only when asked: it changes digests) --------------------------

_TO_OCI = {
    "application/vnd.docker.container.image.v1+json": "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    DOCKER_V2S2: OCI_MANIFEST,
    DOCKER_LIST: OCI_INDEX,
}
_TO_DOCKER = {v: k for k, v in _TO_OCI.items()}


def _map_type(media_type: str, fmt: str) -> str:
    table = _TO_OCI if fmt == "oci" else _TO_DOCKER
    if fmt == "v2s2" and media_type.startswith("application/vnd.oci.") and media_type not in table:
        if "zstd" in media_type or "encrypted" in media_type:
            raise UsageError(f"cannot convert layer type {media_type} to Docker v2s2")
    return table.get(media_type, media_type)


def _serialise(body: dict[str, Any], media_type: str) -> Manifest:
    body["mediaType"] = media_type
    data = json.dumps(body, indent=3 if media_type.startswith("application/vnd.docker") else None,
                      separators=None if media_type.startswith("application/vnd.docker") else (",", ":")).encode()
    return parse_manifest(data, media_type)


def _convert_image(image: Manifest, fmt: str) -> Manifest:
    target = OCI_MANIFEST if fmt == "oci" else DOCKER_V2S2
    if image.media_type == target:
        return image
    if image.media_type not in (OCI_MANIFEST, DOCKER_V2S2):
        raise UsageError(f"cannot convert {image.media_type} to {fmt}")
    body = json.loads(image.raw)
    body["config"]["mediaType"] = _map_type(body["config"]["mediaType"], fmt)
    for layer in body.get("layers", []):
        layer["mediaType"] = _map_type(layer["mediaType"], fmt)
    if fmt == "v2s2":
        for key in ("annotations", "artifactType", "subject"):
            body.pop(key, None)
    return _serialise(body, target)


def _convert_index(index: Manifest, fmt: str) -> Manifest:
    target = OCI_INDEX if fmt == "oci" else DOCKER_LIST
    if index.media_type == target:
        return index
    body = json.loads(index.raw)
    for child in body.get("manifests", []):
        child["mediaType"] = _map_type(child.get("mediaType", ""), fmt)
    return _serialise(body, target)


def _rewrite_index(index: Manifest, children: list[Descriptor], fmt: str | None) -> Manifest:
    """The index with children replaced by their converted descriptors (platforms kept)."""
    body = json.loads(index.raw)
    for entry, new in zip(body.get("manifests", []), children, strict=True):
        entry["digest"] = new.digest
        entry["size"] = new.size
        entry["mediaType"] = new.media_type
    data = json.dumps(body, separators=(",", ":")).encode()
    return parse_manifest(data, index.media_type)


async def copy_with_retries(
    run: Callable[[], Any], times: int = 0, delay: float = 0.0
) -> Any:
    """skopeo's --retry-times/--retry-delay: repeat the whole copy on runtime failure."""
    attempt = 0
    while True:
        try:
            return await run()
        except RegtoolError as exc:
            if attempt >= times or exc.exit_code == 2:
                raise
            attempt += 1
            log.warning("copy failed (%s); retrying (%d/%d)", exc, attempt, times)
            await anyio.sleep(delay or min(2**attempt, 30))


__all__ = [
    "Copier",
    "CopyOptions",
    "CopyResult",
    "ProgressSink",
    "Transfers",
    "copy_with_retries",
]
