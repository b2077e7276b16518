"""Sync execution: expand mirror entries into images, plan by HEADs, copy what differs, prune.

Plan then copy. Tags are listed once per source repository (not at all when a
selection names only exact tags or digests); the tag list also tells which
cosign digest tags exist, so an unchanged image costs its two manifest HEADs
and nothing else. Images run concurrently under per-registry limits, and one
``Copier`` serves the whole run so blobs shared between images move once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import anyio

from regtool.copy import Copier, CopyOptions, Transfers
from regtool.errors import NotFound, RegtoolError
from regtool.manifest import Descriptor, Platform
from regtool.reference import ImageRef, Reference
from regtool.registry import ClientOptions, Credential, RegistryClient, RegistryOptions, RetryPolicy
from regtool.registry.errors import TooManyRequests
from regtool.sync.config import MirrorEntry, RegistryConfig, SyncConfig, Target
from regtool.sync.filters import is_signature_tag, select_tags
from regtool.sync.report import ImageResult, SyncReport
from regtool.sync.shard import Shard
from regtool.transports import open_destination, open_source
from regtool.transports.base import ImageDestination, ImageSource
from regtool.transports.docker import DockerDestination, DockerSource
from regtool.transports.layout import OCILayoutDestination

log = logging.getLogger("regtool.sync")


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


@dataclass
class _Unit:
    """One image to bring in step: a source tag (or digest) and one target."""

    entry: MirrorEntry
    repository: str
    tag: str | None
    digest: str | None
    target: Target
    source_ref: ImageRef
    dest_ref: ImageRef


class FailFast(RegtoolError):
    """Raised to stop the run at the first failure (--fail-fast, or skopeo's default)."""


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
    elif creds.password_env or creds.password_file:
        credential = Credential(registry_token=creds.resolve_password())
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
    )


class SyncRunner:
    """Runs one sync job; ``report`` fills in as images finish, so it is complete even when interrupted."""

    def __init__(self, config: SyncConfig, options: RunOptions | None = None) -> None:
        self.config = config
        self.options = options or RunOptions()
        job = self.options.job or config.options.job
        self.report = SyncReport(job=job, shard=str(self.options.shard), dry_run=self.options.dry_run)
        self._tags: dict[tuple[str, str], list[str]] = {}
        self.transfers = Transfers(self.options.blob_parallel)
        self._heads: dict[tuple[str, str], Descriptor | None] = {}
        self._stop = False
        self.client: RegistryClient | None = None

    # -- set-up ---------------------------------------------------------------------

    def _client_options(self) -> ClientOptions:
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

        return ClientOptions(
            per_host=per_host,
            resolver=resolver,
            retry=RetryPolicy(max_wait=opts.max_retry_wait),
        )

    # -- the run --------------------------------------------------------------------

    async def run(self) -> SyncReport:
        """Plans and executes every mirror entry this shard owns."""
        limiter = anyio.CapacityLimiter(max(1, self.options.image_concurrency))
        async with RegistryClient(self._client_options()) as client:
            self.client = client
            try:
                async with anyio.create_task_group() as tg:
                    for entry in self.config.mirrors:
                        tg.start_soon(self._run_entry, entry, limiter)
            except FailFast:
                pass
            finally:
                self.report.finished = time.time()
        return self.report

    async def _run_entry(self, entry: MirrorEntry, limiter: anyio.CapacityLimiter) -> None:
        try:
            repositories = await self._repositories(entry)
        except RegtoolError as exc:
            self._error(f"{entry.name}: cannot list repositories of {entry.source}: {exc}")
            return
        async with anyio.create_task_group() as tg:
            for repository in repositories:
                if self.options.shard.owns(entry.shard_key(repository)):
                    tg.start_soon(self._run_repository, entry, repository, limiter)

    async def _repositories(self, entry: MirrorEntry) -> list[str]:
        src = entry.source
        if src.kind in ("repository", "image"):
            return [src.repository]
        if src.kind == "dir":
            return [""]
        if src.kind == "namespace":
            assert self.client is not None
            repos = await self.client.catalog(src.registry)
            return [r for r in repos if src.allows(r)]
        # oci layout: images named repo:tag
        layout = await open_source(ImageRef("oci", path=src.path))
        async with layout:
            names = await layout.list_tags()
        return sorted({n.rsplit(":", 1)[0] for n in names if ":" in n and src.allows(n.rsplit(":", 1)[0])})

    async def _source_tags(self, entry: MirrorEntry, repository: str) -> list[str]:
        """The repository's tag list, fetched once per run."""
        src = entry.source
        key = (src.registry or src.path, repository)
        if key not in self._tags:
            if src.kind == "oci":
                layout = await open_source(ImageRef("oci", path=src.path))
                async with layout:
                    names = await layout.list_tags()
                self._tags[key] = [n.split(":", 1)[1] for n in names if n.startswith(repository + ":")]
            elif src.kind == "dir":
                self._tags[key] = []
            else:
                assert self.client is not None
                self._tags[key] = await self.client.list_tags(Reference(src.registry, repository))
        return self._tags[key]

    def _units(self, entry: MirrorEntry, repository: str, tags: list[str]) -> list[_Unit]:
        src = entry.source
        units: list[_Unit] = []
        pairs: list[tuple[str | None, str | None]] = [(t, None) for t in tags]
        pairs += [(None, d) for d in entry.tags.digests]
        for tag, digest in pairs:
            if src.kind == "dir":
                source_ref = ImageRef("dir", path=src.path)
            elif src.kind == "oci":
                source_ref = ImageRef("oci", path=src.path, layout_ref=f"{repository}:{tag}" if tag else None)
            else:
                source_ref = ImageRef("docker", reference=Reference(src.registry, repository, tag, digest))
            for target in entry.targets:
                dest_ref = entry.destination(target, repository, tag=tag, digest=digest) if tag or digest else None
                if dest_ref is None:
                    continue
                units.append(_Unit(entry, repository, tag, digest, target, source_ref, dest_ref))
        return units

    async def _run_repository(self, entry: MirrorEntry, repository: str, limiter: anyio.CapacityLimiter) -> None:
        label = f"{entry.source.registry}/{repository}" if entry.source.registry else str(entry.source)
        listed_ok = True
        try:
            all_tags = await self._source_tags(entry, repository) if entry.tags.lists else []
        except RegtoolError as exc:
            self._error(f"{entry.name}: cannot list tags of {label}: {exc}")
            listed_ok = False
            all_tags = []
            if self.options.fail_fast:
                raise FailFast(str(exc)) from exc
        selected = select_tags(all_tags, entry.tags)
        if entry.source.kind == "dir":
            selected = list(entry.tags.exact)
        units = self._units(entry, repository, selected)
        async with anyio.create_task_group() as tg:
            for unit in units:
                tg.start_soon(self._guarded, unit, limiter)
        if entry.prune.enabled and listed_ok:
            await self._prune(entry, repository, all_tags, selected)

    async def _guarded(self, unit: _Unit, limiter: anyio.CapacityLimiter) -> None:
        async with limiter:
            if self._stop:
                return
            result = await self._run_unit(unit)
        self.report.images.append(result)
        log.info("%s %s -> %s%s", result.action, result.source, result.target,
                 f": {result.error}" if result.error else "")
        if result.action == "failed" and self.options.fail_fast:
            self._stop = True
            raise FailFast(result.error or "failed")

    async def _run_unit(self, unit: _Unit) -> ImageResult:
        started = time.monotonic()
        result = ImageResult(mirror=unit.entry.name, source=str(unit.source_ref), target=str(unit.dest_ref),
                             action="failed")
        try:
            floor = self.config.registry(unit.entry.source.registry).rate_limit_floor if unit.entry.source.registry \
                else None
            remaining = self.client.rate_limit_remaining(unit.entry.source.registry) if self.client else None
            if floor is not None and remaining is not None and remaining < floor:
                result.action = "rate-limited"
                result.error = f"RateLimit-Remaining {remaining} is below the floor {floor}; not starting new pulls"
                return result
            await self._bring_in_step(unit, result)
        except TooManyRequests as exc:
            result.action = "rate-limited"
            result.error = str(exc)
        except RegtoolError as exc:
            result.action = "failed"
            result.error = str(exc)
        finally:
            result.seconds = round(time.monotonic() - started, 3)
        return result

    async def _open_pair(self, unit: _Unit) -> tuple[ImageSource, ImageDestination]:
        assert self.client is not None
        source = await open_source(unit.source_ref, client=self.client)
        if isinstance(source, DockerSource):
            key = (unit.entry.source.registry, unit.repository)
            if key in self._tags:
                source.known_tags = self._tags[key]
        dest = await open_destination(unit.dest_ref, client=self.client, source_ref=unit.source_ref)
        return source, dest

    async def _bring_in_step(self, unit: _Unit, result: ImageResult) -> None:
        entry = unit.entry
        source, dest = await self._open_pair(unit)
        async with source, dest:
            docker_pair = isinstance(source, DockerSource) and isinstance(dest, DockerDestination)
            immutable = unit.tag is not None and entry.is_immutable(unit.tag)
            if self.options.dry_run or immutable or not docker_pair:
                # The copier checks registry pairs itself; here the cheap checks it cannot make.
                have = await _target_digest(dest)
                if immutable and have is not None:
                    result.action, result.target_digest = "skipped", have
                    return
                src_head = await self._source_head(unit, source)
                result.source_digest = src_head.digest if src_head else None
                if src_head is None:
                    raise NotFound(f"{unit.source_ref} not found")
                same = have == src_head.digest and entry.platforms == "all"
                if self.options.dry_run or (same and not docker_pair):
                    result.action = "skipped" if same else "would-copy"
                    result.target_digest = have
                    return
            copier = Copier(
                CopyOptions(
                    multi_arch="all" if entry.platforms == "all" else "system",
                    platforms=list(entry.platforms) if isinstance(entry.platforms, tuple) else [],
                    platform=self.options.platform,
                    remove_signatures=not entry.signatures,
                    parallel=self.options.blob_parallel,
                ),
                transfers=self.transfers,
            )
            outcome = await copier.copy(source, dest)
            result.action = outcome.action
            result.source_digest = outcome.source_digest
            result.target_digest = outcome.digest
            result.bytes = outcome.bytes_copied
            result.attachments = list(outcome.attachments)

    async def _source_head(self, unit: _Unit, source: ImageSource) -> Descriptor | None:
        """The source manifest's descriptor, once per run however many targets read it."""
        key = (str(unit.source_ref), "head")
        if key not in self._heads:
            if isinstance(source, DockerSource):
                self._heads[key] = await source.head()
            else:
                manifest = await source.get_manifest()
                self._heads[key] = Descriptor(media_type=manifest.media_type, digest=manifest.digest,
                                              size=len(manifest.raw))
        return self._heads[key]

    # -- pruning --------------------------------------------------------------------

    async def _prune(self, entry: MirrorEntry, repository: str, upstream: list[str], selected: list[str]) -> None:
        """Deletes target tags gone upstream (or unselected), within every safety rule."""
        assert self.client is not None
        if not upstream:
            self._error(f"{entry.name}: not pruning {repository}: the upstream tag list came back empty")
            return
        keep = set(selected) if entry.prune.unmatched else set(upstream)
        for target in entry.targets:
            if target.kind != "registry":
                continue
            repo = entry.target_repository(target, repository)
            dest = Reference(target.registry, repo)
            try:
                present = await self.client.list_tags(dest)
            except NotFound:
                continue
            except RegtoolError as exc:
                self._error(f"{entry.name}: cannot list {dest.name} for pruning: {exc}")
                continue
            suffix = entry.naming_for(target).tag_suffix
            kept_here = {t + suffix for t in keep}
            candidates = [
                t for t in present
                if t not in kept_here and not is_signature_tag(t) and not entry.prune.protects(t)
                and (not suffix or t.endswith(suffix))
            ]
            if not candidates:
                continue
            digests = await _head_all(self.client, dest, present)
            protected = {digests[t] for t in present if t not in candidates and digests.get(t)}
            budget = entry.prune.max_prune
            for tag in sorted(candidates):
                digest = digests.get(tag)
                res = ImageResult(mirror=entry.name, source=f"{entry.source.registry}/{repository}",
                                  target=str(dest.with_tag(tag)), action="would-prune", target_digest=digest)
                if not digest or digest in protected:
                    log.info("not pruning %s: its digest is still tagged by a kept tag", res.target)
                    continue
                if budget <= 0:
                    self._error(f"{entry.name}: max-prune {entry.prune.max_prune} reached for {dest.name}; "
                                f"{tag} and others left in place")
                    break
                budget -= 1
                if not self.options.dry_run:
                    try:
                        await self.client.delete_manifest(dest.with_digest(digest))
                        res.action = "pruned"
                    except RegtoolError as exc:
                        res.action, res.error = "failed", f"prune: {exc}"
                self.report.images.append(res)

    def _error(self, message: str) -> None:
        self.report.errors.append(message)


async def _target_digest(dest: ImageDestination) -> str | None:
    """What the destination currently holds under the name, if it can tell cheaply."""
    if isinstance(dest, DockerDestination):
        desc = await dest.head()
        return desc.digest if desc else None
    if isinstance(dest, OCILayoutDestination):
        return await dest.named_digest()
    return None


async def _head_all(client: RegistryClient, repo: Reference, tags: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}

    async def one(tag: str) -> None:
        desc = await client.head_manifest(repo.with_tag(tag))
        if desc is not None and desc.digest:
            out[tag] = desc.digest

    async with anyio.create_task_group() as tg:
        for tag in tags:
            tg.start_soon(one, tag)
    return out


__all__ = ["FailFast", "RunOptions", "SyncRunner", "registry_options"]
