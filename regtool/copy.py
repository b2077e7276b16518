"""The transfer engine: copies images between any two transports, digest-exact.

Rules every copy follows, because a reader may look at the destination at any
moment: blobs before the manifest that lists them, children before their index,
the tag last, attachments (signatures, referrers) after the image they point at.
Manifests travel byte-for-byte unless a conversion or a platform subset was
asked for (then the new digest is reported). Blobs stream from source to
destination without temporary files; each (destination repository, digest) is
transferred once per run however many images share it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import anyio.abc

from regtool.errors import ManifestError, NotFound, RegtoolError, UsageError
from regtool.manifest import (
    DOCKER_CONFIG,
    DOCKER_FOREIGN_LAYER,
    DOCKER_FOREIGN_LAYER_GZIP,
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    DOCKER_LAYER_ZSTD,
    DOCKER_LIST,
    DOCKER_V2S2,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_NONDISTRIBUTABLE,
    OCI_LAYER_NONDISTRIBUTABLE_GZIP,
    OCI_LAYER_NONDISTRIBUTABLE_ZSTD,
    OCI_LAYER_ZSTD,
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
#: cosign's digest-tag suffixes carried along with an image; "" is the OCI referrers fallback tag.
ATTACHMENT_SUFFIXES = (".sig", ".att", ".sbom", "")
#: Attachments of attachments (a signature of an SBOM referrer) are followed this deep.
MAX_ATTACHMENT_DEPTH = 2


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

    def validate(self) -> None:
        """Raises :class:`UsageError` for combinations the engine cannot honour."""
        if self.multi_arch not in ("system", "all", "index-only"):
            raise UsageError(f"unknown --multi-arch mode {self.multi_arch!r}")
        if self.format not in (None, "oci", "v2s2"):
            raise UsageError(f"unknown manifest format {self.format!r} (use oci or v2s2)")
        if self.format and self.multi_arch == "index-only" and not self.platforms:
            raise UsageError("--format cannot convert an index without its instances (--multi-arch index-only)")
        if self.parallel < 1:
            raise UsageError("at least one parallel blob copy is needed")


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
    #: Names (tags / layout refs) of attached artifacts written: ``sha256-<hex>.sig``, ``sha256-<hex>``.
    attachments: list[str] = field(default_factory=list)
    #: ``signature-N`` style signatures written (dir: destinations).
    signatures: int = 0
    #: Signatures the destination could not store (e.g. dir: → docker://, which has no lookaside).
    signatures_dropped: int = 0
    #: Every manifest written: source digest → digest at the destination.
    manifests: dict[str, str] = field(default_factory=dict)
    #: Human-readable remarks for the user (digest changes, things not carried).
    notes: list[str] = field(default_factory=list)


class ProgressSink:
    """Receives transfer events; the CLI renders them (rich on a TTY, lines otherwise)."""

    def blob_started(self, desc: Descriptor) -> None: ...

    def blob_advanced(self, desc: Descriptor, n: int) -> None: ...

    def blob_finished(self, desc: Descriptor, how: str) -> None: ...

    def blob_skipped(self, desc: Descriptor) -> None: ...

    def manifest_written(self, desc: Descriptor, name: str | None) -> None: ...


class Transfers:
    """Run-wide blob bookkeeping: one in-flight transfer per (destination scope, digest).

    Later users of a digest await the first transfer instead of starting their
    own; a failed transfer is forgotten so a retry can try again. ``limiter``
    bounds the blob transfers in flight for everything sharing this object.
    """

    def __init__(self, parallel: int = 6) -> None:
        self.limiter = anyio.CapacityLimiter(max(1, parallel))
        self._done: dict[tuple[str, str], str] = {}
        self._inflight: dict[tuple[str, str], anyio.Event] = {}
        self._errors: dict[tuple[str, str], BaseException] = {}

    async def once(self, key: tuple[str, str], work: Callable[[], Awaitable[str]]) -> str:
        """Runs ``work`` for ``key`` unless done or running; returns its answer, or "shared"."""
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
            # Waiters see a real failure as their own; a cancelled owner (its image was stopped)
            # says nothing about the blob, so they take the transfer over instead of re-raising a
            # cancellation in a task that was never cancelled (which would let it carry on as if
            # the blob had arrived).
            if not isinstance(exc, anyio.get_cancelled_exc_class()):
                self._errors[key] = exc
            raise
        finally:
            del self._inflight[key]
            event.set()
        self._done[key] = how
        return how


def _first_error(exc: BaseException) -> BaseException | None:
    """The first real (non-cancellation) error inside an exception group, depth first."""
    subs = getattr(exc, "exceptions", None)
    if not isinstance(subs, tuple) or "ExceptionGroup" not in type(exc).__name__:
        return None if isinstance(exc, anyio.get_cancelled_exc_class()) else exc
    found = [e for e in (_first_error(s) for s in subs) if e is not None]
    regtool_errors = [e for e in found if isinstance(e, RegtoolError)]
    return (regtool_errors or found or [None])[0]


@contextlib.asynccontextmanager
async def _task_group() -> AsyncIterator[anyio.abc.TaskGroup]:
    """A task group whose failure surfaces as the first error itself, not as an exception group.

    Callers (the CLI, sync) then see a ``RegtoolError`` with its exit code and a one-line message.
    """
    try:
        async with anyio.create_task_group() as tg:
            yield tg
    except BaseException as exc:
        if "ExceptionGroup" in type(exc).__name__:
            first = _first_error(exc)
            if first is not None:
                raise first from None
        raise


def _blob_scope(dest: ImageDestination) -> str:
    """Where a blob lives at ``dest``: a registry repository (any tag), or the destination itself."""
    if isinstance(dest, DockerDestination):
        return dest.blob_scope
    return dest.name or f"{type(dest).__name__}@{id(dest):x}"


def _same_repository(src: ImageSource, dest: ImageDestination) -> bool:
    return (
        isinstance(src, DockerSource)
        and isinstance(dest, DockerDestination)
        and src.ref.registry == dest.ref.registry
        and src.ref.repository == dest.ref.repository
    )


def _mount_candidate(src: ImageSource, dest: ImageDestination) -> str | None:
    if isinstance(src, DockerSource) and isinstance(dest, DockerDestination):
        if src.ref.registry == dest.ref.registry and src.ref.repository != dest.ref.repository:
            return src.ref.repository
    return None


async def check_source(src: ImageSource) -> None:
    """Raises :class:`NotFound` unless ``src`` names an existing image (one HEAD for registries).

    Call it before opening a destination that writes as soon as it is opened
    (``dir:``), so a bad source leaves nothing behind.
    """
    if isinstance(src, DockerSource):
        if await src.head() is None:
            raise NotFound(f"{src.name}: manifest unknown")
        return
    await src.get_manifest()


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
        self._tags: dict[str, set[str]] = {}

    # -- entry points ----------------------------------------------------------------

    async def copy(
        self,
        src: ImageSource,
        dest: ImageDestination,
        *,
        heads: tuple[Descriptor | None, Descriptor | None] | None = None,
    ) -> CopyResult:
        """Copies the named image of ``src`` to ``dest``; a no-op when ``dest`` already has it.

        ``heads``: the source's and the destination's manifest descriptors (None: absent) when the
        caller HEADed both already, as sync's plan does; they are not asked again.
        """
        self.options.validate()
        opts = self.options
        dest_digest: str | None = None
        if not opts.format and not opts.platforms and isinstance(src, DockerSource) and isinstance(
            dest, DockerDestination
        ):
            src_head, dest_head = await self._heads(src, dest, heads)
            dest_digest = dest_head.digest if dest_head is not None and dest_head.digest else None
            if src_head is not None and src_head.digest and src_head.digest == dest_digest:
                is_index = _is_index_type(src_head.media_type)
                if not is_index or opts.multi_arch != "system":
                    return await self._skipped(src, dest, src_head.digest, is_index)
        top = await src.get_manifest()
        result = CopyResult(source_digest=top.digest, digest=top.digest)
        if top.is_index and not opts.platforms and opts.multi_arch == "system":
            child = select_platform(top, opts.platform or Platform.host())
            log.info("copying the %s instance %s of %s", child.platform, child.digest, top.digest)
            if child.digest == dest_digest and not opts.format:
                return await self._skipped(src, dest, child.digest, False)
            top = await src.get_manifest(child.digest)
            result.source_digest = top.digest
        written = await self._copy_top(src, dest, top, result)
        try:
            await dest.tag(None, written)
        except RegtoolError as exc:
            index_only = top.is_index and opts.multi_arch == "index-only"
            if index_only and getattr(exc, "code", None) == "MANIFEST_BLOB_UNKNOWN":
                raise RegtoolError(
                    f"{dest.name} does not hold the instances of {written.digest}: --multi-arch index-only "
                    "copies the index alone (copy the instances first, or use --all)"
                ) from exc
            raise
        self.progress.manifest_written(written, dest.name)
        result.digest = written.digest
        result.digest_changed = written.digest != top.digest
        if result.digest_changed:
            result.notes.append(f"the digest changed from {top.digest} to {written.digest}")
        if not opts.remove_signatures:
            await self._carry_attachments(src, dest, result)
        await dest.commit()
        return result

    async def _heads(
        self,
        src: DockerSource,
        dest: DockerDestination,
        known: tuple[Descriptor | None, Descriptor | None] | None = None,
    ) -> tuple[Descriptor | None, Descriptor | None]:
        if known is not None:  # nothing to wait for but (at most) the tag list: no task group needed
            if not self.options.remove_signatures:
                with contextlib.suppress(RegtoolError):
                    await self._source_tags(src)
            return known
        heads: dict[str, Descriptor | None] = {}

        async def head(side: str, obj: DockerSource | DockerDestination) -> None:
            heads[side] = await obj.head()

        async def tags() -> None:
            with contextlib.suppress(RegtoolError):  # a failure shows again where the tags are needed
                await self._source_tags(src)

        async with _task_group() as tg:
            tg.start_soon(head, "src", src)
            tg.start_soon(head, "dest", dest)
            if not self.options.remove_signatures:
                tg.start_soon(tags)  # the attachment lookup, in the same round trip as the HEADs
        return heads["src"], heads["dest"]

    async def _skipped(self, src: ImageSource, dest: ImageDestination, digest: str, is_index: bool) -> CopyResult:
        """The destination already holds ``digest``: only attachments can be new."""
        result = CopyResult(source_digest=digest, digest=digest, action="skipped")
        result.manifests[digest] = digest
        if not self.options.remove_signatures:
            digests = [digest]
            if is_index and self.options.multi_arch == "all":
                digests += await self._children_with_attachments(src, digest)
            await self._copy_attachments(src, dest, digests, result, depth=0)
        await dest.commit()
        return result

    async def _children_with_attachments(self, src: ImageSource, index_digest: str) -> list[str]:
        """Digests of the index's instances, read only when the source has attachment tags for others."""
        if not isinstance(src, DockerSource):
            return []
        tags = await self._source_tags(src)
        own = index_digest.replace(":", "-")
        if not any(_is_attachment_tag(t) and not t.startswith(own) for t in tags):
            return []
        index = await src.get_manifest(index_digest)
        return [c.digest for c in index.children()]

    # -- manifests -------------------------------------------------------------------

    async def _copy_top(
        self, src: ImageSource, dest: ImageDestination, top: Manifest, result: CopyResult
    ) -> Descriptor:
        """Copies what the options select from ``top``; returns the descriptor to tag."""
        if top.is_index and self.options.platforms:
            top = subset_index(top, self.options.platforms)
            log.info("platform subset: new index digest %s (source %s)", top.digest, result.source_digest)
        return await self._copy_manifest(
            src, dest, top, result, depth=0, is_top=True, source_digest=result.source_digest
        )

    async def _copy_manifest(
        self,
        src: ImageSource,
        dest: ImageDestination,
        manifest: Manifest,
        result: CopyResult,
        *,
        depth: int,
        is_top: bool = False,
        source_digest: str | None = None,
    ) -> Descriptor:
        """Copies ``manifest`` (and what it references); returns the descriptor written."""
        if depth > MAX_INDEX_DEPTH:
            raise ManifestError(f"index {manifest.digest} nests deeper than {MAX_INDEX_DEPTH} levels")
        fmt = self.options.format
        origin = source_digest or manifest.digest
        if manifest.is_index:
            index_only = is_top and self.options.multi_arch == "index-only" and not self.options.platforms
            if not index_only and not (_same_repository(src, dest) and not fmt):
                manifest = await self._copy_children(src, dest, manifest, result, depth)
            if fmt:
                manifest = _convert_index(manifest, fmt)
        else:
            if not _same_repository(src, dest):
                await self._copy_blobs(src, dest, manifest, result)
            if fmt:
                manifest = _convert_image(manifest, fmt)
        desc = Descriptor(media_type=manifest.media_type, digest=manifest.digest, size=len(manifest.raw))
        result.manifests[origin] = desc.digest
        if is_top and isinstance(dest, DockerDestination):
            dest.stage_manifest(manifest.raw, manifest.media_type, manifest.digest)  # the tag PUT pushes it
        else:
            await dest.put_manifest(manifest.raw, manifest.media_type, manifest.digest)
            if not is_top:
                self.progress.manifest_written(desc, None)
        return desc

    async def _copy_children(
        self, src: ImageSource, dest: ImageDestination, index: Manifest, result: CopyResult, depth: int
    ) -> Manifest:
        """Copies every instance of ``index`` (all before it); rewrites it if an instance changed."""
        children = index.children()
        written: dict[str, Descriptor] = {}

        async def child(desc: Descriptor) -> None:
            sub = await src.get_manifest(desc.digest)
            written[desc.digest] = await self._copy_manifest(
                src, dest, sub, result, depth=depth + 1, source_digest=desc.digest
            )

        async with _task_group() as tg:
            for desc in {d.digest: d for d in children}.values():
                tg.start_soon(child, desc)
        if all(written[d.digest].digest == d.digest for d in children):
            return index
        return _rewrite_index(index, [written[d.digest] for d in children])

    # -- blobs -----------------------------------------------------------------------

    async def _copy_blobs(self, src: ImageSource, dest: ImageDestination, image: Manifest, result: CopyResult) -> None:
        blobs: list[Descriptor] = []
        if image.config is not None:
            blobs.append(image.config)
        for layer in image.layers:
            if is_nondistributable(layer.media_type) and not self.options.include_nondistributable:
                log.info("not copying non-distributable layer %s (--include-nondistributable copies it)", layer.digest)
                continue
            blobs.append(layer)
        async with _task_group() as tg:
            for desc in {b.digest: b for b in blobs}.values():
                tg.start_soon(self._copy_blob, src, dest, desc, result)

    async def _copy_blob(self, src: ImageSource, dest: ImageDestination, desc: Descriptor, result: CopyResult) -> None:
        async def work() -> str:
            async with self.transfers.limiter:
                if await dest.has_blob(desc):
                    self.progress.blob_skipped(desc)
                    return "skipped"
                self.progress.blob_started(desc)
                if isinstance(dest, DockerDestination):
                    if isinstance(src, DockerSource):
                        opener = src.blob_opener(desc)
                        how = await dest.upload(
                            desc,
                            lambda offset: self._counted(opener(offset), desc, result),
                            mount_from=_mount_candidate(src, dest),
                        )
                    else:
                        how = await dest.upload(desc, _reopener(src, desc, lambda st: self._counted(st, desc, result)))
                else:
                    await dest.put_blob(desc, self._counted(src.open_blob(desc), desc, result))
                    how = "uploaded"
                self.progress.blob_finished(desc, how)
                return how

        how = await self.transfers.once((_blob_scope(dest), desc.digest), work)
        if how in ("skipped", "shared"):
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

    async def _source_tags(self, src: ImageSource) -> set[str]:
        """The source's tags (or layout names), listed once per source per run."""
        key = f"docker://{src.ref.registry}/{src.ref.repository}" if isinstance(src, DockerSource) else src.name
        if key not in self._tags:
            try:
                self._tags[key] = set(await src.list_tags())
            except NotFound:
                self._tags[key] = set()
            except RegtoolError as exc:  # e.g. a registry that refuses tag listing to this user
                log.warning("cannot list the tags of %s to find signatures and attachments: %s", src.name, exc)
                self._tags[key] = set()
        return self._tags[key]

    async def _carry_attachments(self, src: ImageSource, dest: ImageDestination, result: CopyResult) -> None:
        """Attachments of every manifest written unchanged; a note for those whose digest changed."""
        kept = [s for s, d in result.manifests.items() if s == d]
        changed = [s for s, d in result.manifests.items() if s != d]
        await self._copy_attachments(src, dest, kept, result, depth=0)
        if changed and dest.supports_tags and not _same_repository(src, dest):
            tags = await self._source_tags(src)
            lost = [s for s in changed if any(_attachment_name(s, sfx) in tags for sfx in ATTACHMENT_SUFFIXES)]
            if lost:
                result.notes.append(
                    f"signatures and attached artifacts of {', '.join(lost)} were not copied: "
                    "they refer to a digest the destination does not have"
                )
        for digest in changed:
            if await src.get_signatures(digest):
                result.notes.append(f"signatures of {digest} were not copied: its digest changed")

    async def _copy_attachments(
        self, src: ImageSource, dest: ImageDestination, digests: list[str], result: CopyResult, *, depth: int
    ) -> None:
        """Carries dir: signatures, cosign digest tags and the OCI referrers fallback tag of ``digests``."""
        for digest in dict.fromkeys(digests):
            sigs = await src.get_signatures(digest)
            if not sigs:
                continue
            if dest.supports_signatures:
                await dest.put_signatures(digest, sigs)
                result.signatures += len(sigs)
            else:
                result.signatures_dropped += len(sigs)
        if result.signatures_dropped and depth == 0:
            result.notes.append(
                f"{result.signatures_dropped} signature(s) not copied: {dest.name} has no place for "
                "signature-N signatures (copy to dir:, or sign again with cosign)"
            )
        if not dest.supports_tags or _same_repository(src, dest) or depth > MAX_ATTACHMENT_DEPTH:
            return
        tags = await self._source_tags(src)
        names = [
            _attachment_name(d, suffix) for d in dict.fromkeys(digests) for suffix in ATTACHMENT_SUFFIXES
        ]
        for name in names:
            if name in tags and name not in result.attachments:
                await self._copy_attachment(src, dest, name, result, depth)

    async def _copy_attachment(
        self, src: ImageSource, dest: ImageDestination, name: str, result: CopyResult, depth: int
    ) -> None:
        if isinstance(src, DockerSource) and isinstance(dest, DockerDestination):
            theirs, ours = await src.head_tag(name), await dest.head_tag(name)
            if theirs is not None and ours is not None and theirs.digest and theirs.digest == ours.digest:
                return  # already there: nothing read, nothing written
        attached = await src.get_tagged_manifest(name)
        if attached is None:
            return
        sub = Copier(
            CopyOptions(
                multi_arch="all",
                remove_signatures=True,
                include_nondistributable=self.options.include_nondistributable,
                parallel=self.options.parallel,
            ),
            transfers=self.transfers,
            progress=self.progress,
        )
        sub._tags = self._tags
        sub_result = CopyResult(source_digest=attached.digest, digest=attached.digest)
        desc = await sub._copy_manifest(src, dest, attached, sub_result, depth=0, is_top=True)
        await dest.tag(name, desc)
        self.progress.manifest_written(desc, name)
        result.attachments.append(name)
        result.bytes_copied += sub_result.bytes_copied
        result.blobs_copied += sub_result.blobs_copied
        result.blobs_mounted += sub_result.blobs_mounted
        result.blobs_skipped += sub_result.blobs_skipped
        # a referrer (an SBOM listed in the fallback index) may be signed in turn
        nested = [s for s, d in sub_result.manifests.items() if s == d and s != attached.digest]
        if nested:
            await self._copy_attachments(src, dest, nested, result, depth=depth + 1)


def _attachment_name(digest: str, suffix: str) -> str:
    return digest.replace(":", "-") + suffix


def _is_attachment_tag(tag: str) -> bool:
    return tag.startswith(("sha256-", "sha512-", "sha384-"))


def _is_index_type(media_type: str) -> bool:
    return media_type in (OCI_INDEX, DOCKER_LIST)


def _reopener(
    src: ImageSource, desc: Descriptor, wrap: Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]]
) -> Callable[[int], AsyncIterator[bytes]]:
    """Opens a (local) source's blob afresh for each upload attempt, from any offset.

    The stream is read from the start every time (so it is verified whole) and
    the bytes before ``offset`` are dropped: cheap for files, and it lets an
    upload fall back to chunks or resume.
    """

    async def skipping(offset: int) -> AsyncIterator[bytes]:
        left = offset
        async for chunk in src.open_blob(desc):
            if left >= len(chunk):
                left -= len(chunk)
                continue
            yield chunk[left:] if left else chunk
            left = 0

    def opener(offset: int) -> AsyncIterator[bytes]:
        return wrap(skipping(offset) if offset else src.open_blob(desc))

    return opener


# -- platform subsets -------------------------------------------------------------------


def subset_index(index: Manifest, wanted: list[Platform]) -> Manifest:
    """A new index with only the instances matching ``wanted`` (their descriptors kept verbatim)."""
    children = index.children()
    body = json.loads(index.raw)
    entries = body.get("manifests") or []
    kept = [
        entry
        for entry, desc in zip(entries, children, strict=True)
        if desc.platform is not None and any(w.matches(desc.platform) for w in wanted)
    ]
    if not kept:
        available = ", ".join(dict.fromkeys(str(d.platform) for d in children if d.platform)) or "none listed"
        asked = ", ".join(str(w) for w in wanted)
        raise UsageError(f"none of the platforms asked for ({asked}) are in {index.digest} (it has: {available})")
    missing = [w for w in wanted if not any(d.platform is not None and w.matches(d.platform) for d in children)]
    if missing:
        raise UsageError(
            f"platform {missing[0]} is not in {index.digest} "
            f"(it has: {', '.join(dict.fromkeys(str(d.platform) for d in children if d.platform))})"
        )
    body["manifests"] = kept
    return _serialise(body, index.media_type)


# -- format conversion (only when asked: it changes digests) --------------------------

_TO_OCI = {
    DOCKER_CONFIG: OCI_CONFIG,
    DOCKER_LAYER: OCI_LAYER,
    DOCKER_LAYER_GZIP: OCI_LAYER_GZIP,
    DOCKER_LAYER_ZSTD: OCI_LAYER_ZSTD,
    DOCKER_FOREIGN_LAYER: OCI_LAYER_NONDISTRIBUTABLE,
    DOCKER_FOREIGN_LAYER_GZIP: OCI_LAYER_NONDISTRIBUTABLE_GZIP,
    DOCKER_V2S2: OCI_MANIFEST,
    DOCKER_LIST: OCI_INDEX,
}
_TO_DOCKER = {v: k for k, v in _TO_OCI.items()}
_TO_DOCKER[OCI_LAYER_NONDISTRIBUTABLE_ZSTD] = DOCKER_FOREIGN_LAYER


def _map_type(media_type: str, fmt: str, what: str) -> str:
    table = _TO_OCI if fmt == "oci" else _TO_DOCKER
    if media_type in table:
        return table[media_type]
    if fmt == "v2s2" and media_type.startswith("application/vnd.oci."):
        raise UsageError(f"cannot convert {what} of type {media_type} to Docker v2s2")
    return media_type


def _serialise(body: dict[str, Any], media_type: str) -> Manifest:
    body["mediaType"] = media_type
    if media_type.startswith("application/vnd.docker"):
        data = json.dumps(body, indent=3).encode()  # as Docker writes them
    else:
        data = json.dumps(body, separators=(",", ":")).encode()
    return parse_manifest(data, media_type)


def _convert_image(image: Manifest, fmt: str) -> Manifest:
    target = OCI_MANIFEST if fmt == "oci" else DOCKER_V2S2
    if image.media_type == target:
        return image
    if image.media_type not in (OCI_MANIFEST, DOCKER_V2S2):
        raise UsageError(f"cannot convert {image.media_type} to {fmt}")
    if fmt == "v2s2" and (image.artifact_type or image.subject is not None):
        raise UsageError(f"{image.digest} is an OCI artifact; it cannot be converted to Docker v2s2")
    body = json.loads(image.raw)
    body["config"]["mediaType"] = _map_type(body["config"]["mediaType"], fmt, "config")
    for layer in body.get("layers") or []:
        layer["mediaType"] = _map_type(layer["mediaType"], fmt, "layer")
    if fmt == "v2s2":
        body.pop("annotations", None)
    return _serialise(body, target)


def _convert_index(index: Manifest, fmt: str) -> Manifest:
    target = OCI_INDEX if fmt == "oci" else DOCKER_LIST
    if index.media_type == target:
        return index
    body = json.loads(index.raw)
    for child in body.get("manifests") or []:
        child["mediaType"] = _map_type(child.get("mediaType", ""), fmt, "instance")
        if fmt == "v2s2":
            child.pop("annotations", None)
            child.pop("artifactType", None)
    if fmt == "v2s2":
        for key in ("annotations", "artifactType", "subject"):
            body.pop(key, None)
    return _serialise(body, target)


def _rewrite_index(index: Manifest, children: list[Descriptor]) -> Manifest:
    """The index with children replaced by their rewritten descriptors (platforms kept)."""
    body = json.loads(index.raw)
    for entry, new in zip(body.get("manifests") or [], children, strict=True):
        entry["digest"] = new.digest
        entry["size"] = new.size
        entry["mediaType"] = new.media_type
    return _serialise(body, index.media_type)


async def copy_with_retries(
    run: Callable[[], Awaitable[Any]], times: int = 0, delay: float = 0.0
) -> Any:
    """skopeo's --retry-times/--retry-delay: repeat the whole copy on runtime failure.

    Usage errors and "not found" (exit code 2) are not retried. Without a
    ``delay`` the wait doubles from 2 s (at most 30 s).
    """
    attempt = 0
    while True:
        try:
            return await run()
        except RegtoolError as exc:
            if attempt >= times or exc.exit_code == 2:
                raise
            attempt += 1
            wait = delay if delay > 0 else min(2.0**attempt, 30.0)
            log.warning("copy failed (%s); retrying in %.1fs (%d/%d)", exc, wait, attempt, times)
            await anyio.sleep(wait)


__all__ = [
    "Copier",
    "CopyOptions",
    "CopyResult",
    "ProgressSink",
    "Transfers",
    "check_source",
    "copy_with_retries",
]
