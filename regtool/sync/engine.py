"""Sync execution: expand mirror entries into images, plan by HEADs, copy what differs, prune.

Plan then copy, per source repository:

1. list the repository's tags once (when a filter needs them, pruning needs them, or signatures and
   referrers are carried: the list tells which ``sha256-<hex>.sig`` tags exist), and select; the
   targets' HTTPS-or-HTTP question (``tls-verify: false``) is asked meanwhile;
2. plan: HEAD every selected source image once and every target concurrently (registry targets by
   HEAD, layouts from their ``index.json``), under the client's per-registry limits;
3. copy what differs through one ``Copier`` per image and one ``Transfers`` for the whole run, so
   blobs shared between images move once per target repository. The planned HEADs are handed to
   the copier, which therefore sends no request of its own for an unchanged image but the HEADs
   that compare its signature and referrer tags. When the listing holds no attachment tag, each
   image goes on to this step as soon as its own plan is made; otherwise after every plan (the
   attachment tags are shared out by the planned digests);
4. prune (opt-in), within every safety rule.

An unchanged image thus costs two manifest HEADs plus HEADs of its attachments, and the repository
one tag listing: never a manifest or blob GET (platform subsets and ``system`` images need the
source index, so they cost one manifest GET).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from regtool.atomic import write_atomic
from regtool.copy import Copier, CopyOptions, Transfers, subset_index
from regtool.errors import NotFound, RegtoolError, UsageError, VerificationError
from regtool.manifest import DOCKER_LIST, OCI_INDEX, Descriptor, Manifest, Platform, select_platform
from regtool.reference import ImageRef, Reference
from regtool.registry import ClientOptions, Credential, RegistryClient, RegistryOptions, RetryPolicy
from regtool.registry.errors import TooManyRequests
from regtool.sync.config import MirrorEntry, RegistryConfig, SyncConfig, Target
from regtool.sync.filters import is_signature_tag, select_tags
from regtool.sync.report import Action, ImageResult, SyncReport
from regtool.sync.shard import Shard
from regtool.transports import open_destination, open_source
from regtool.transports.base import ImageDestination
from regtool.transports.docker import DockerDestination, DockerSource

if TYPE_CHECKING:
    from regtool.signing.sign import SignResult
    from regtool.sync.signing import Gate, SyncSigning

log = logging.getLogger("regtool.sync")

_ATTACHMENT_RE = re.compile(r"(sha256|sha384|sha512)-([0-9a-f]+)(\.(?:sig|att|sbom))?", re.ASCII)
_REF_NAME = "org.opencontainers.image.ref.name"
_INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)


@dataclass
class RunOptions:
    """Command-line choices that are not part of the config file."""

    dry_run: bool = False
    fail_fast: bool = False
    shard: Shard = field(default_factory=Shard)
    max_retry_wait: float = 900.0
    image_concurrency: int = 8
    blob_parallel: int = 6
    platform: Platform | None = None
    #: Command-line auth/TLS flags (skopeo's --src-*/--dest-*) for hosts the config does not name.
    src_defaults: RegistryOptions | None = None
    dest_defaults: RegistryOptions | None = None
    job: str | None = None


class FailFast(RegtoolError):
    """Kept for library users: the run stops at the first failure (--fail-fast, or skopeo's default)."""


# -- plan records ------------------------------------------------------------------------


@dataclass
class _Unit:
    """One source image to one target: what the plan found and what the run did."""

    target: Target
    dest_ref: ImageRef
    result: ImageResult
    #: The target's manifest descriptor as planned (registry HEAD), or its digest (layouts).
    target_desc: Descriptor | None = None
    target_digest: str | None = None
    #: Why the target could not be checked (that target fails; the image's other targets go on).
    check_error: Exception | None = None
    decided: bool = False


@dataclass
class _Want:
    """What a target should hold for a source image, given the entry's platforms."""

    digest: str | None  #: None: unknown before copying (dir: targets never match anyway)
    platforms: list[Platform] = field(default_factory=list)  #: for subsets: those present upstream
    skip: str | None = None  #: a reason not to copy at all (no wanted platform)


@dataclass
class _Image:
    """One selected source image (a tag or a digest) and every target it goes to."""

    entry: MirrorEntry
    repository: str
    tag: str | None
    digest: str | None
    source_ref: ImageRef
    units: list[_Unit] = field(default_factory=list)
    #: Shared by every target (manifests read once); None for local sources, opened per use.
    source: _SharedSource | None = None
    head: Descriptor | None = None
    manifest: Manifest | None = None
    want: _Want | None = None
    #: the verify: block's verdict, shared by every target of the image
    verified: str | None = None
    rejection: str | None = None
    verify_lock: anyio.Lock = field(default_factory=anyio.Lock)


class _SharedSource(DockerSource):
    """A registry source shared by every target of one image: each manifest is read at most once."""

    def __init__(self, client: RegistryClient, ref: Reference) -> None:
        super().__init__(client, ref)
        self._manifests: dict[str | None, Manifest] = {}
        self._locks: dict[str | None, anyio.Lock] = {}

    async def get_manifest(self, digest: str | None = None) -> Manifest:
        lock = self._locks.setdefault(digest, anyio.Lock())
        async with lock:
            if digest not in self._manifests:
                manifest = await super().get_manifest(digest)
                self._manifests[digest] = manifest
                self._manifests.setdefault(manifest.digest, manifest)
            return self._manifests[digest]

    async def close(self) -> None:
        return None  # shared: never closed by one of its users


class _NoSigning:
    """The ``verify:`` / ``sign:`` set-up of a run whose entries have neither block."""

    def gate(self, entry: MirrorEntry) -> Gate | None:
        return None

    def signer(self, entry: MirrorEntry) -> None:
        return None

    async def sign(
        self, entry: MirrorEntry, dest_ref: ImageRef, client: RegistryClient, *, default_identity: str | None = None
    ) -> SignResult | None:
        return None

    def close(self) -> None:
        return None


# -- options ----------------------------------------------------------------------------


def registry_options(cfg: RegistryConfig, fallback: RegistryOptions | None) -> RegistryOptions:
    """A config file's registry settings as client options; secrets resolved now, before traffic."""
    base = fallback or RegistryOptions()
    creds = cfg.credentials
    credential: Credential | None = base.credential
    no_creds = base.no_creds
    authfile = creds.authfile or base.authfile
    if creds.anonymous:
        credential, no_creds = None, True
    elif creds.username is not None:
        credential = Credential(username=creds.username, password=creds.resolve_password() or "")
        no_creds = False
    elif creds.password_env or creds.password_file:
        credential = Credential(registry_token=creds.resolve_password())
        no_creds = False
    return RegistryOptions(
        tls_verify=cfg.tls_verify,
        cert_dir=cfg.cert_dir or base.cert_dir,
        ca_file=cfg.ca_file,
        client_cert=cfg.client_cert,
        client_key=cfg.client_key,
        credential=credential,
        no_creds=no_creds,
        authfile=authfile,
        max_concurrency=cfg.max_concurrency or base.max_concurrency,
        requests_per_second=cfg.requests_per_second,
        chunked_upload=base.chunked_upload,
    )


# -- the runner -------------------------------------------------------------------------


class SyncRunner:
    """Runs one sync job; ``report`` fills in as images finish, so it is complete even when interrupted.

    Building the runner resolves credentials (``password-env`` / ``password-file``), so a missing
    secret is a :class:`UsageError` before any traffic.
    """

    def __init__(self, config: SyncConfig, options: RunOptions | None = None) -> None:
        self.config = config
        self.options = options or RunOptions()
        job = self.options.job or config.options.job
        self.report = SyncReport(job=job, shard=str(self.options.shard), dry_run=self.options.dry_run)
        self.transfers = Transfers(self.options.blob_parallel)
        self.client: RegistryClient | None = None
        self._client_options = self._build_client_options()
        self.signing: SyncSigning | _NoSigning = _NoSigning()
        if any(e.verify is not None or e.sign is not None for e in config.mirrors):
            # the signing stack (cryptography, sigstore models) is imported only by runs that use it
            from regtool.sync.signing import SyncSigning

            self.signing = SyncSigning(config.mirrors)  # keys and tokens load now: errors exit 2, before traffic
        self._tags: dict[tuple[str, str], list[str]] = {}
        self._tag_locks: dict[tuple[str, str], anyio.Lock] = {}
        self._layouts: dict[str, dict[str, str]] = {}
        self._layouts_ready: set[str] = set()
        self._layout_lock = anyio.Lock()
        self._limiter = anyio.CapacityLimiter(max(1, self.options.image_concurrency))
        self._scope: anyio.CancelScope | None = None
        self._stopped = False
        self._settled: set[str] = set()  # target hosts whose scheme question was asked early
        self._source_hosts = {e.source.registry for e in config.mirrors if e.source.registry}

    # -- set-up ---------------------------------------------------------------------

    def _build_client_options(self) -> ClientOptions:
        opts = self.options
        src_hosts = {e.source.registry for e in self.config.mirrors if e.source.registry}
        per_host: dict[str, RegistryOptions] = {}
        for host, cfg in self.config.registries.items():
            fallback = opts.src_defaults if host in src_hosts else opts.dest_defaults
            per_host[host] = registry_options(cfg, fallback)

        def resolver(host: str) -> RegistryOptions | None:
            if host in src_hosts and opts.src_defaults is not None:
                return opts.src_defaults
            return opts.dest_defaults

        return ClientOptions(per_host=per_host, resolver=resolver, retry=RetryPolicy(max_wait=opts.max_retry_wait))

    # -- the run --------------------------------------------------------------------

    async def run(self) -> SyncReport:
        """Plans and executes every mirror entry this shard owns."""
        try:
            async with RegistryClient(self._client_options) as client:
                self.client = client
                with anyio.CancelScope() as scope:
                    self._scope = scope
                    async with anyio.create_task_group() as tg:
                        for entry in self.config.mirrors:
                            tg.start_soon(self._run_entry, entry)
        finally:
            self.signing.close()
            self.report.finished = time.time()
            self.report.images.sort(key=lambda r: (r.mirror, r.target, r.source))
        return self.report

    def _stop(self) -> None:
        """--fail-fast (and skopeo's default): nothing new starts, what is in flight is cancelled."""
        self._stopped = True
        if self._scope is not None:
            self._scope.cancel()

    def _record(self, result: ImageResult) -> None:
        self.report.images.append(result)
        log.info(
            "%s %s -> %s%s", result.action, result.source, result.target, f": {result.error}" if result.error else ""
        )
        if result.action in ("failed", "rate-limited", "rejected") and self.options.fail_fast:
            self._stop()

    def _error(self, message: str) -> None:
        self.report.errors.append(message)
        log.warning("%s", message)
        if self.options.fail_fast:
            self._stop()

    async def _run_entry(self, entry: MirrorEntry) -> None:
        try:
            repositories = await self._repositories(entry)
        except (RegtoolError, OSError) as exc:
            self._error(f"{entry.name}: cannot list repositories of {entry.source}: {_one_line(exc)}")
            return
        async with anyio.create_task_group() as tg:
            for repository in repositories:
                if self.options.shard.owns(entry.shard_key(repository)):
                    early = self._target_hosts(entry, repository)
                    if early:
                        tg.start_soon(self._run_repository_settling, entry, repository, early)
                    else:
                        tg.start_soon(self._run_repository, entry, repository)

    async def _run_repository_settling(self, entry: MirrorEntry, repository: str, targets: list[Reference]) -> None:
        """:meth:`_run_repository`, the target hosts' scheme questions asked meanwhile (and dropped after)."""
        async with anyio.create_task_group() as tg:
            for ref in targets:
                tg.start_soon(self._settle_scheme, ref)
            await self._run_repository(entry, repository)
            tg.cancel_scope.cancel()  # a target nothing was sent to (no tags) is not waited for

    def _target_hosts(self, entry: MirrorEntry, repository: str) -> list[Reference]:
        """The registry targets of a repository whose HTTPS-or-HTTP question is still open, one per host.

        Only hosts that are nobody's source (a source's first request asks it first anyway) and
        that do not verify TLS (a verified host is HTTPS: there is no question).
        """
        out: list[Reference] = []
        for target in entry.targets:
            if target.kind != "registry" or target.registry in self._settled:
                continue
            try:
                ref = Reference(target.registry, entry.target_repository(target, repository))
            except (RegtoolError, ValueError):
                continue  # reported with the repository's images
            self._settled.add(target.registry)
            if ref.registry in self._source_hosts or self._client_options.for_host(ref.registry).tls_verify:
                continue
            out.append(ref)
        return out

    async def _settle_scheme(self, ref: Reference) -> None:
        """Asks a target host the ``--tls-verify=false`` HTTPS-or-HTTP question while the source is listed.

        The client asks it once per host, before the host's first request; asked here, it costs no
        round trip of its own: the target's first HEADs find the answer instead of waiting for it.
        Nothing is asked of a host registries.conf blocks (or that verifies TLS: no question), and
        a failure is left for the target's own requests to report.
        """
        client = self.client
        assert client is not None
        try:
            await client.prepare(ref)
        except Exception as exc:  # noqa: BLE001 - the target's own requests report it
            log.debug("%s: no early HTTPS/HTTP answer: %s", ref.registry, _one_line(exc))

    async def _repositories(self, entry: MirrorEntry) -> list[str]:
        src = entry.source
        if src.kind in ("repository", "image"):
            return [src.repository]
        if src.kind == "dir":
            return [""]
        if src.kind == "namespace":
            assert self.client is not None
            repos = await self.client.catalog(src.registry)
            return sorted(r for r in repos if src.allows(r))
        from regtool.transports.layout import OCILayoutSource  # tarfile & co.: only for layouts

        layout = await OCILayoutSource.open(src.path)
        async with layout:
            names = await layout.list_tags()
        return sorted({n.rsplit(":", 1)[0] for n in names if ":" in n and src.allows(n.rsplit(":", 1)[0])})

    async def _source_tags(self, entry: MirrorEntry, repository: str) -> list[str]:
        """The repository's tags, listed once per run however many entries and images need them."""
        src = entry.source
        key = (src.registry or f"oci:{src.path}", repository)
        async with self._tag_locks.setdefault(key, anyio.Lock()):
            if key not in self._tags:
                if src.kind == "oci":
                    from regtool.transports.layout import OCILayoutSource

                    layout = await OCILayoutSource.open(src.path)
                    async with layout:
                        names = await layout.list_tags()
                    self._tags[key] = [n.split(":", 1)[1] for n in names if n.startswith(repository + ":")]
                else:
                    assert self.client is not None
                    self._tags[key] = await self.client.list_tags(Reference(src.registry, repository))
        return self._tags[key]

    async def _run_repository(self, entry: MirrorEntry, repository: str) -> None:
        src = entry.source
        label = f"{src.registry}/{repository}" if src.registry else str(src)
        registry_source = src.kind in ("repository", "image")
        must_list = src.kind != "dir" and (entry.tags.lists or entry.prune.enabled)
        for_attachments = registry_source and (entry.signatures or entry.referrers)
        upstream: list[str] | None = None
        if must_list or for_attachments:
            try:
                upstream = await self._source_tags(entry, repository)
            except (RegtoolError, OSError) as exc:
                if must_list:
                    self._error(f"{entry.name}: cannot list tags of {label}: {_one_line(exc)}")
                    if entry.tags.lists:
                        return
                else:
                    log.warning("cannot list tags of %s (%s): its signatures are not carried", label, _one_line(exc))
        selected = list(entry.tags.exact) if src.kind == "dir" else select_tags(upstream or [], entry.tags)
        images = [image for image in self._images(entry, repository, selected) if image.units]

        if not _attachment_view(upstream or [], "", set(), entry):
            # No attachment tag to share out: each image goes on to its copy (or its no-op) as soon as
            # its own plan is made, while the other images' HEADs are still on the way.
            async with anyio.create_task_group() as tg:
                for image in images:
                    tg.start_soon(self._plan_and_execute, image)
        else:
            async with anyio.create_task_group() as tg:
                for image in images:
                    tg.start_soon(self._plan, image)
            tops = {image.head.digest for image in images if image.head is not None and image.head.digest}
            for image in images:
                if image.source is not None and image.head is not None:
                    # the copier learns the attachments from this list instead of listing tags per image
                    image.source.known_tags = _attachment_view(upstream or [], image.head.digest, tops, entry)
            async with anyio.create_task_group() as tg:
                for image in images:
                    for unit in image.units:
                        if not unit.decided:
                            tg.start_soon(self._execute, image, unit)
        if entry.prune.enabled and upstream is not None and not self._stopped:
            await self._prune(entry, repository, upstream, selected)

    async def _plan_and_execute(self, image: _Image) -> None:
        """Plans one image, then copies it to the targets the plan left open (no attachment tags)."""
        await self._plan(image)
        if image.source is not None and image.head is not None:
            image.source.known_tags = []  # the listing holds no attachment tag: nothing to look up
        units = [unit for unit in image.units if not unit.decided]
        if len(units) == 1:
            await self._execute(image, units[0])
        elif units:
            async with anyio.create_task_group() as tg:
                for unit in units:
                    tg.start_soon(self._execute, image, unit)

    def _images(self, entry: MirrorEntry, repository: str, tags: Sequence[str]) -> list[_Image]:
        src = entry.source
        pairs: list[tuple[str | None, str | None]] = [(t, None) for t in tags]
        pairs += [(None, d) for d in entry.tags.digests]
        images: list[_Image] = []
        for tag, digest in pairs:
            if src.kind == "dir":
                source_ref = ImageRef("dir", path=src.path)
            elif src.kind == "oci":
                name = f"{repository}:{tag}" if tag else f"{repository}@{digest}"
                source_ref = ImageRef("oci", path=src.path, layout_ref=name if tag else None)
            else:
                source_ref = ImageRef("docker", reference=Reference(src.registry, repository, tag, digest))
            image = _Image(entry, repository, tag, digest, source_ref)
            if source_ref.reference is not None and self.client is not None:
                image.source = _SharedSource(self.client, source_ref.reference)
            for target in entry.targets:
                try:
                    dest_ref = entry.destination(target, repository, tag=tag, digest=digest)
                except UsageError as exc:
                    result = ImageResult(entry.name, str(source_ref), f"{target}", "failed", error=_one_line(exc))
                    self._record(result)
                    continue
                result = ImageResult(entry.name, str(source_ref), str(dest_ref), "failed")
                image.units.append(_Unit(target, dest_ref, result))
            if src.kind == "oci" and digest is not None:
                for unit in image.units:
                    self._decide(unit, "failed", error="images by digest are not supported for oci: sources")
            images.append(image)
        return images

    # -- plan -----------------------------------------------------------------------

    async def _plan(self, image: _Image) -> None:
        """HEADs the source and the targets (concurrently), then decides what needs no copy."""
        entry = image.entry
        open_units = [u for u in image.units if not u.decided]
        if not open_units:
            return
        immutable = image.tag is not None and entry.is_immutable(image.tag)
        started = time.monotonic()
        try:
            if immutable:
                # once present at a target, never checked again: not even a source HEAD
                await self._check_targets(open_units)
                open_units = self._drop_unchecked(open_units, started)
                for unit in open_units:
                    if unit.target_digest is not None:
                        unit.result.target_digest = unit.target_digest
                        self._decide(unit, "skipped", started)
                open_units = [u for u in open_units if not u.decided]
                if not open_units:
                    return
                await self._head_source(image)
            else:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._head_source, image)
                    for unit in open_units:
                        tg.start_soon(self._check_target, unit)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the image's result
            self._fail_all(open_units, exc, started)
            return
        open_units = self._drop_unchecked(open_units, started)
        if not open_units:
            return
        if image.head is None:
            self._fail_all(open_units, NotFound(f"{image.source_ref}: manifest unknown (not found at the source)"),
                           started)
            return
        for unit in open_units:
            unit.result.source_digest = image.head.digest or None
            unit.result.target_digest = unit.target_digest
        if self.options.dry_run or not all(self._copier_decides(image, u) for u in open_units):
            try:
                want = await self._want(image)
            except Exception as exc:  # noqa: BLE001
                self._fail_all(open_units, exc, started)
                return
            for unit in open_units:
                if self.options.dry_run or not self._copier_decides(image, unit):
                    if want.skip is not None:
                        log.info("not copying %s: %s", image.source_ref, want.skip)
                        self._decide(unit, "skipped", started)
                    elif want.digest is not None and want.digest == unit.target_digest:
                        self._decide(unit, "skipped", started)
                    elif self.options.dry_run:
                        self._decide(unit, "would-copy", started)

    def _copier_decides(self, image: _Image, unit: _Unit) -> bool:
        """Registry to registry with whole images (or the host's platform): the copier compares the
        planned HEADs itself, skips what is in step and still carries new signatures."""
        return (
            image.source is not None
            and unit.target.kind == "registry"
            and not isinstance(image.entry.platforms, tuple)
        )

    async def _head_source(self, image: _Image) -> None:
        if image.source is not None:
            image.head = await image.source.head()
            return
        source = await open_source(image.source_ref)
        async with source:
            manifest = await source.get_manifest()
        image.manifest = manifest
        image.head = Descriptor(media_type=manifest.media_type, digest=manifest.digest, size=len(manifest.raw))

    async def _check_targets(self, units: list[_Unit]) -> None:
        async with anyio.create_task_group() as tg:
            for unit in units:
                tg.start_soon(self._check_target, unit)

    async def _check_target(self, unit: _Unit) -> None:
        ref = unit.dest_ref
        try:
            if ref.reference is not None:
                assert self.client is not None
                unit.target_desc = await self.client.head_manifest(ref.reference)
                unit.target_digest = unit.target_desc.digest if unit.target_desc is not None else None
            elif ref.transport == "oci" and ref.path and ref.layout_ref:
                unit.target_digest = (await self._layout_names(ref.path)).get(ref.layout_ref)
        except Exception as exc:  # noqa: BLE001 - reported as this target's result
            unit.check_error = exc

    async def _layout_names(self, path: str) -> dict[str, str]:
        """An OCI layout's names → digests, read once per run (a missing layout has none)."""
        if path not in self._layouts:
            from regtool.transports.layout import OCILayoutSource

            names: dict[str, str] = {}
            try:
                layout = await OCILayoutSource.open(path)
            except NotFound:
                layout = None
            if layout is not None:
                async with layout:
                    for entry in layout.index.get("manifests") or []:
                        name = (entry.get("annotations") or {}).get(_REF_NAME)
                        if isinstance(name, str) and isinstance(entry.get("digest"), str):
                            names[name] = entry["digest"]
            self._layouts.setdefault(path, names)
        return self._layouts[path]

    async def _top_manifest(self, image: _Image) -> Manifest:
        if image.manifest is None:
            if image.source is not None:
                image.manifest = await image.source.get_manifest()
            else:
                source = await open_source(image.source_ref)
                async with source:
                    image.manifest = await source.get_manifest()
        return image.manifest

    async def _want(self, image: _Image) -> _Want:
        """The digest the targets should hold: the source's, its host instance, or a platform subset."""
        if image.want is not None:
            return image.want
        assert image.head is not None
        platforms = image.entry.platforms
        want = _Want(image.head.digest or None)
        if platforms != "all":
            maybe_index = image.head.media_type in _INDEX_TYPES or not image.head.media_type
            if maybe_index:
                top = await self._top_manifest(image)
                if top.is_index and platforms == "system":
                    want.digest = select_platform(top, self.options.platform or Platform.host()).digest
                elif top.is_index and isinstance(platforms, tuple):
                    children = [c.platform for c in top.children() if c.platform is not None]
                    present = [w for w in platforms if any(w.matches(p) for p in children)]
                    if present:
                        want.platforms = present
                        want.digest = subset_index(top, present).digest
                    else:
                        want.skip = f"none of the platforms {', '.join(map(str, platforms))} is in {top.digest}"
                maybe_index = top.is_index
            if not maybe_index and isinstance(platforms, tuple) and not await self._image_matches(image, platforms):
                want.skip = f"its platform is not one of {', '.join(map(str, platforms))}"
        image.want = want
        return want

    async def _image_matches(self, image: _Image, platforms: tuple[Platform, ...]) -> bool:
        """Whether a single image is for one of ``platforms`` (already at a target: it matched then)."""
        assert image.head is not None
        if any(u.target_digest == image.head.digest for u in image.units):
            return True
        top = await self._top_manifest(image)
        if top.config is None:
            return True  # an artifact: no platform to filter on
        if image.source is not None:
            data = await image.source.read_blob(top.config)
        else:
            source = await open_source(image.source_ref)
            async with source:
                data = await source.read_blob(top.config)
        try:
            config = json.loads(data)
            own = Platform(str(config["os"]), str(config["architecture"]), config.get("variant") or None)
        except (ValueError, KeyError, TypeError):
            return True
        return any(w.matches(own) for w in platforms)

    def _decide(self, unit: _Unit, action: Action, started: float | None = None, error: str | None = None) -> None:
        unit.decided = True
        unit.result.action = action
        unit.result.error = error
        if started is not None:
            unit.result.seconds = round(time.monotonic() - started, 3)
        self._record(unit.result)

    def _drop_unchecked(self, units: list[_Unit], started: float) -> list[_Unit]:
        """Fails the units whose target could not be checked; returns the others."""
        for unit in units:
            if unit.check_error is not None and not unit.decided:
                self._fail_all([unit], unit.check_error, started)
        return [u for u in units if not u.decided]

    def _fail_all(self, units: list[_Unit], exc: BaseException, started: float) -> None:
        action: Action = "rate-limited" if isinstance(_first(exc), TooManyRequests) else "failed"
        for unit in units:
            if not unit.decided:
                self._decide(unit, action, started, error=_one_line(exc))

    # -- copy -----------------------------------------------------------------------

    async def _execute(self, image: _Image, unit: _Unit) -> None:
        async with self._limiter:
            if self._stopped:
                return
            started = time.monotonic()
            result = unit.result
            try:
                await self._copy(image, unit)
            except TooManyRequests as exc:
                result.action, result.error = "rate-limited", _one_line(exc)
            except (RegtoolError, OSError) as exc:
                result.action, result.error = "failed", _one_line(exc)
            except Exception as exc:  # noqa: BLE001 - a bug in one image must not end the run
                log.debug("unexpected error copying %s", image.source_ref, exc_info=True)
                result.action, result.error = "failed", f"{type(exc).__name__}: {_one_line(exc)}"
            result.seconds = round(time.monotonic() - started, 3)
        self._record(result)

    async def _copy(self, image: _Image, unit: _Unit) -> None:
        entry, result = image.entry, unit.result
        assert image.head is not None and self.client is not None
        pull = not (self._copier_decides(image, unit) and image.entry.platforms == "all"
                    and unit.target_digest == image.head.digest)
        if pull and entry.source.registry:
            floor = self.config.registry(entry.source.registry).rate_limit_floor
            remaining = self.client.rate_limit_remaining(entry.source.registry)
            if floor is not None and remaining is not None and remaining < floor:
                result.action = "rate-limited"
                result.error = f"RateLimit-Remaining {remaining} is below the floor {floor}; not starting new pulls"
                return
        gate = self.signing.gate(entry)
        if gate is not None and pull:
            rejection = await self._verify(image, gate)
            if rejection is not None:
                result.action, result.error = "rejected", rejection
                return
        want = image.want
        platforms = entry.platforms
        options = CopyOptions(
            multi_arch="all" if platforms == "all" or isinstance(platforms, tuple) else "system",
            platforms=list(want.platforms) if want is not None and isinstance(platforms, tuple) else [],
            platform=self.options.platform,
            remove_signatures=not (entry.signatures or entry.referrers),
            parallel=self.options.blob_parallel,
        )
        copier = Copier(options, transfers=self.transfers)
        dest = await self._open_destination(image, unit)
        if image.source is not None:
            # the plan's HEADs of a registry target (a dir: or oci: target has none to hand over)
            heads = (image.head, unit.target_desc) if unit.dest_ref.reference is not None else None
            async with dest:
                outcome = await copier.copy(image.source, dest, heads=heads)
        else:
            source = await open_source(image.source_ref)
            async with source, dest:
                outcome = await copier.copy(source, dest)
        result.action = outcome.action
        result.source_digest = outcome.source_digest
        result.target_digest = outcome.digest
        result.bytes = outcome.bytes_copied
        result.attachments = list(outcome.attachments)
        for note in outcome.notes:
            log.info("%s: %s", unit.dest_ref, note)
        if result.action == "copied" and self.signing.signer(entry) is not None:
            default_identity = None
            if unit.dest_ref.transport != "docker" and image.source_ref.reference is not None:
                default_identity = str(image.source_ref.reference)
            try:
                await self.signing.sign(entry, unit.dest_ref, self.client, default_identity=default_identity)
            except (RegtoolError, OSError) as exc:
                result.action, result.error = "failed", f"copied, but signing failed: {_one_line(exc)}"

    async def _verify(self, image: _Image, gate: Gate) -> str | None:
        """Verifies the source once per image (its targets share the verdict); the reason, or None."""
        from regtool.signing.storage import resolve_top

        async with image.verify_lock:
            if image.verified is None and image.rejection is None:
                try:
                    if image.source is not None:
                        top = await image.source.get_manifest()  # cached: the copier copies this manifest
                        await gate.check(image.source, top.digest)
                    else:
                        async with await open_source(image.source_ref) as source:
                            top = await resolve_top(source)
                            await gate.check(source, top.digest)
                    image.verified = top.digest
                except VerificationError as exc:
                    image.rejection = _one_line(exc)
        return image.rejection

    async def _open_destination(self, image: _Image, unit: _Unit) -> ImageDestination:
        assert self.client is not None
        ref = unit.dest_ref.reference
        if ref is not None:
            src = image.source_ref.reference
            mount_from = src.repository if src is not None and src.registry == ref.registry else None
            return DockerDestination(self.client, ref, mount_from=mount_from)
        if unit.dest_ref.transport == "oci" and unit.dest_ref.path:
            await self._ensure_layout(unit.dest_ref.path)
        # dir: destinations empty their directory when opened: only now, with the source known good
        return await open_destination(unit.dest_ref, client=self.client, source_ref=image.source_ref)

    async def _ensure_layout(self, path: str) -> None:
        """Creates a new OCI layout before its first copy.

        Images copied into one layout concurrently would otherwise race: the first one writes
        ``blobs/`` before its commit writes ``oci-layout``, and the next one to open the layout
        finds a directory that is neither empty nor a layout.
        """
        async with self._layout_lock:
            if path in self._layouts_ready:
                return

            from regtool.transports.layout import LAYOUT_FILE

            def create() -> None:
                if not os.path.exists(path) or (os.path.isdir(path) and not os.listdir(path)):
                    write_atomic(os.path.join(path, LAYOUT_FILE), b'{"imageLayoutVersion":"1.0.0"}')

            await anyio.to_thread.run_sync(create)
            self._layouts_ready.add(path)

    # -- pruning --------------------------------------------------------------------

    async def _prune(self, entry: MirrorEntry, repository: str, upstream: list[str], selected: list[str]) -> None:
        """Deletes target tags gone upstream (or unselected), within every safety rule."""
        label = f"{entry.source.registry}/{repository}" if entry.source.registry else f"{entry.source}:{repository}"
        upstream_images = [t for t in upstream if not is_signature_tag(t)]
        if not upstream_images:
            self._error(f"{entry.name}: not pruning the targets of {label}: its tag list came back empty")
            return
        keep = set(selected) if entry.prune.unmatched else set(upstream_images) | set(selected)
        source = f"docker://{label}" if entry.source.registry else label
        for target in entry.targets:
            if target.kind != "registry":
                log.info("%s: pruning is done at registry targets only, not at %s", entry.name, target)
                continue
            try:
                await self._prune_target(entry, repository, target, keep, source)
            except (RegtoolError, OSError) as exc:
                self._error(f"{entry.name}: pruning {target} for {label} failed: {_one_line(exc)}")

    async def _prune_target(
        self, entry: MirrorEntry, repository: str, target: Target, keep: set[str], source: str
    ) -> None:
        assert self.client is not None
        client = self.client
        repo = Reference(target.registry, entry.target_repository(target, repository))
        try:
            present = await client.list_tags(repo)
        except NotFound:
            return
        suffix = entry.naming_for(target).tag_suffix

        def prunable(tag: str) -> bool:
            if is_signature_tag(tag) or (suffix and not tag.endswith(suffix)):
                return False
            base = tag[: len(tag) - len(suffix)] if suffix else tag
            return base not in keep and not entry.prune.protects(tag) and not entry.prune.protects(base)

        candidates = sorted(t for t in present if prunable(t))
        if not candidates:
            return
        heads = await _head_all(client, repo, [t for t in present if not is_signature_tag(t)])
        kept = [t for t in present if t not in candidates and not is_signature_tag(t)]
        protected = {heads[t].digest for t in kept if t in heads}
        if any(heads[t].media_type not in _INDEX_TYPES for t in candidates if t in heads):
            # an image that a kept index lists must stay too: registries delete manifests by digest
            for tag in kept:
                desc = heads.get(tag)
                if desc is not None and desc.media_type in _INDEX_TYPES:
                    index = await client.get_manifest(repo.with_digest(desc.digest))
                    protected.update(c.digest for c in index.children())
        by_digest: dict[str, list[str]] = {}
        for tag in candidates:
            desc = heads.get(tag)
            if desc is None:
                continue  # gone meanwhile
            if desc.digest in protected:
                log.info("not pruning %s:%s: a kept tag still needs %s", repo.name, tag, desc.digest)
                continue
            by_digest.setdefault(desc.digest, []).append(tag)
        budget = entry.prune.max_prune
        left: list[str] = []
        for digest, tags in sorted(by_digest.items(), key=lambda item: item[1][0]):
            if len(tags) > budget:
                left += tags
                budget = 0
                continue
            budget -= len(tags)
            action: Action = "would-prune"
            error: str | None = None
            if not self.options.dry_run:
                try:
                    await client.delete_manifest(repo.with_digest(digest))
                    action = "pruned"
                except RegtoolError as exc:
                    action, error = "failed", f"prune: {_one_line(exc)}"
            for tag in tags:
                self._record(
                    ImageResult(entry.name, source, f"docker://{repo.with_tag(tag)}", action,
                                target_digest=digest, error=error)
                )
        if left:
            shown = ", ".join(sorted(left)[:5]) + (" ..." if len(left) > 5 else "")
            self._error(
                f"{entry.name}: max-prune {entry.prune.max_prune} reached for {repo.name}; left in place: {shown}"
            )


def _attachment_view(tags: list[str], own: str, tops: set[str], entry: MirrorEntry) -> list[str]:
    """The tag list the copier sees for one image: only attachment tags.

    Attachment tags of the repository's other selected images are left out (those images carry
    them), so an unchanged index does not have to be read to rule out attachments of its instances;
    signature or referrer tags are left out when the entry does not carry them.
    """
    out: list[str] = []
    for tag in tags:
        m = _ATTACHMENT_RE.fullmatch(tag)
        if m is None:
            continue  # the copier only looks for attachment tags: a per-image copy of every tag costs tags²
        if (m.group(3) and not entry.signatures) or (not m.group(3) and not entry.referrers):
            continue
        digest = f"{m.group(1)}:{m.group(2)}"
        if digest != own and digest in tops:
            continue
        out.append(tag)
    return out


async def _head_all(client: RegistryClient, repo: Reference, tags: list[str]) -> dict[str, Descriptor]:
    out: dict[str, Descriptor] = {}

    async def one(tag: str) -> None:
        desc = await client.head_manifest(repo.with_tag(tag))
        if desc is not None and desc.digest:
            out[tag] = desc

    async with anyio.create_task_group() as tg:
        for tag in tags:
            tg.start_soon(one, tag)
    return out


def _first(exc: BaseException) -> BaseException:
    """The first error inside (nested) exception groups; ``exc`` itself otherwise."""
    while True:
        subs = getattr(exc, "exceptions", None)
        if not (isinstance(subs, tuple) and subs and "ExceptionGroup" in type(exc).__name__):
            return exc
        exc = subs[0]


def _one_line(exc: BaseException) -> str:
    """An error as one line (exception groups unwrapped to their first error)."""
    exc = _first(exc)
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


__all__ = ["FailFast", "RunOptions", "SyncRunner", "registry_options"]
