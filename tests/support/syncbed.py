"""Mirror-sync scenarios for the fault, crash and long-run tests and benchmarks.

Shared by ``tests/test_faults_sync.py``, ``tests/test_crash_safety.py``, ``bench/faults.py`` and
``bench/longrun.py``. Everything that looks at a registry here uses plain synchronous ``httpx``
(through :class:`tests.support.registries.Registry`), never regtool's own code:

* :func:`seed_mirror_source` pushes several repositories of tags with shared base layers,
  some of them multi-platform indexes.
* :func:`compare_mirror` walks every source tag (manifest, children, blobs) and fetches the
  same objects at the destination, counting verified digests and the bytes that are missing
  or differ there.
* :func:`dangling_tags` checks, for every tag of a destination repository, that its manifest,
  every child manifest and every blob can be fetched: no tag points at an incomplete image.
* :func:`open_upload_sessions` lists the upload sessions a distribution registry still holds.
* :class:`RssSampler` samples a process's ``VmRSS`` from ``/proc``.
* :func:`write_sync_config`, :func:`regtool_command`, :func:`regtool_env` and
  :func:`count_retries` run ``regtool sync`` the way a cron job does and read its log.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support import images
from tests.support.images import ACCEPT_ALL, OCI_INDEX, BuiltImage, PushedImage, Target
from tests.support.netproxy import FaultRule
from tests.support.registries import Registry

ROOT = Path(__file__).resolve().parent.parent.parent

# -------------------------------------------------------------------------------------------------
# Seeding
# -------------------------------------------------------------------------------------------------


@dataclass
class SeededRepo:
    """One source repository: tag -> the image pushed under it."""

    name: str
    tags: dict[str, PushedImage] = field(default_factory=dict)


@dataclass
class SeededSource:
    """What :func:`seed_mirror_source` pushed."""

    repos: list[SeededRepo]
    blob_bytes: int = 0  # distinct blob bytes (the shared base counted once)
    blobs: int = 0

    @property
    def images(self) -> int:
        return sum(len(r.tags) for r in self.repos)

    def repo(self, name: str) -> SeededRepo:
        return next(r for r in self.repos if r.name == name)


def _index_of(children: Sequence[BuiltImage]) -> BuiltImage:
    """An OCI index over already built platform images (their own layers, any shared base)."""
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [c.descriptor() for c in children],
    }
    return BuiltImage(
        manifest=images.dump_json(index), media_type=OCI_INDEX, config=None, layers=[], children=list(children)
    )


def seed_mirror_source(
    target: Target,
    *,
    prefix: str = "app",
    repos: int = 4,
    tags: int = 5,
    multi_every: int = 3,
    base_size: int = 64 * 1024,
    repo_layer_size: int = 16 * 1024,
    layer_size: int = 8 * 1024,
    platforms: Sequence[str] = ("linux/amd64", "linux/arm64/v8"),
    seed: str = "mirror",
) -> SeededSource:
    """``repos`` repositories ``{prefix}0..`` of ``tags`` tags ``1.0 ..`` each.

    Every image carries a base layer shared by all repositories, a layer shared by the tags of its
    repository and a layer of its own. Every ``multi_every``-th tag (``1.2``, ``1.5`` ... with the
    default 3) is an OCI index over ``platforms``; its children carry the same shared layers.
    Deterministic from ``seed``.
    """
    base = images.make_layer(f"{seed}/base", base_size)
    out = SeededSource(repos=[], blob_bytes=base.size, blobs=1)
    for r in range(repos):
        name = f"{prefix}{r}"
        shared = images.make_layer(f"{seed}/{name}/shared", repo_layer_size)
        out.blob_bytes += shared.size
        out.blobs += 1
        repo = SeededRepo(name)
        for t in range(tags):
            tag = f"1.{t}"
            one = f"{seed}/{name}:{tag}"
            if multi_every and t % multi_every == multi_every - 1:
                children = [
                    images.build_image(f"{one}/{p}", layers=1, layer_size=layer_size, platform=p,
                                       extra_layers=[base, shared])
                    for p in platforms
                ]
                built = _index_of(children)
            else:
                built = images.build_image(one, layers=1, layer_size=layer_size, extra_layers=[base, shared])
                children = [built]
            for child in children:
                own = [child.layers[0]] + ([child.config] if child.config else [])
                out.blob_bytes += sum(b.size for b in own)
                out.blobs += len(own)
            repo.tags[tag] = images.push_built(target, name, built, tag)
        out.repos.append(repo)
    return out


def seed_many_tags(
    target: Target,
    *,
    prefix: str = "many",
    repos: int = 3,
    tags: int = 100,
    base_size: int = 32 * 1024,
    layer_size: int = 1024,
    seed: str = "longrun",
    workers: int = 8,
) -> SeededSource:
    """``repos`` × ``tags`` small single-platform images (``1.0.0`` ...), one shared base layer.

    Pushed from ``workers`` threads (the base layer first, so no two threads upload it).
    """
    base = images.make_layer(f"{seed}/base", base_size)
    out = SeededSource(repos=[SeededRepo(f"{prefix}{r}") for r in range(repos)], blob_bytes=base.size, blobs=1)
    for repo in out.repos:
        images.push_blob(target, repo.name, base)

    def push(repo: SeededRepo, tag: str) -> tuple[SeededRepo, str, PushedImage, int]:
        built = images.build_image(f"{seed}/{repo.name}:{tag}", layers=1, layer_size=layer_size,
                                   extra_layers=[base])
        pushed = images.push_built(target, repo.name, built, tag)
        return repo, tag, pushed, sum(b.size for b in built.blobs()) - base.size

    jobs = [(repo, f"1.0.{t}") for repo in out.repos for t in range(tags)]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for repo, tag, pushed, size in pool.map(lambda job: push(*job), jobs):
            repo.tags[tag] = pushed
            out.blob_bytes += size
            out.blobs += 2
    return out


def seed_big_layers(
    target: Target,
    *,
    prefix: str = "big",
    repos: int = 3,
    tags: int = 3,
    layers: int = 2,
    layer_size: int = 2 * images.MiB,
    seed: str = "crash",
) -> SeededSource:
    """``repos`` × ``tags`` single-platform images with ``layers`` random layers of ``layer_size``.

    Tag ``v1`` of each repository is a 2-platform index instead (its children have the big layers),
    so a kill can land between children and index.
    """
    out = SeededSource(repos=[])
    for r in range(repos):
        repo = SeededRepo(f"{prefix}{r}")
        for t in range(tags):
            tag = f"v{t}"
            one = f"{seed}/{repo.name}:{tag}"
            if t == 1:
                children = [images.build_image(f"{one}/{p}", layers=layers, layer_size=layer_size, platform=p)
                            for p in ("linux/amd64", "linux/arm64/v8")]
                built = _index_of(children)
            else:
                built = images.build_image(one, layers=layers, layer_size=layer_size)
                children = [built]
            for child in children:
                out.blob_bytes += sum(b.size for b in child.blobs())
                out.blobs += len(child.blobs())
            repo.tags[tag] = images.push_built(target, repo.name, built, tag)
        out.repos.append(repo)
    return out


# -------------------------------------------------------------------------------------------------
# Looking at registries with plain httpx
# -------------------------------------------------------------------------------------------------


@dataclass
class Node:
    """A manifest as served: its bytes, and what it references."""

    digest: str
    media_type: str
    data: bytes
    children: list[tuple[str, int]]  # (digest, size) of child manifests (indexes)
    blobs: list[tuple[str, int]]  # (digest, size) of config and layers (foreign layers left out)


def _describe(data: bytes, media_type: str) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    doc = json.loads(data)
    children = [(d["digest"], int(d["size"])) for d in doc.get("manifests") or []]
    blobs: list[tuple[str, int]] = []
    if isinstance(doc.get("config"), dict):
        blobs.append((doc["config"]["digest"], int(doc["config"]["size"])))
    for layer in doc.get("layers") or []:
        if not layer.get("urls"):
            blobs.append((layer["digest"], int(layer["size"])))
    return children, blobs


def get_manifest(client: httpx.Client, repo: str, reference: str) -> Node | None:
    """GET a manifest (None on 404); the digest is computed from the bytes served."""
    resp = client.get(f"/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT_ALL})
    if resp.status_code == 404:
        return None
    resp.raise_for_status()
    data = resp.content
    media_type = resp.headers.get("content-type", "").split(";")[0].strip()
    children, blobs = _describe(data, media_type)
    return Node("sha256:" + hashlib.sha256(data).hexdigest(), media_type, data, children, blobs)


def head_manifest(client: httpx.Client, repo: str, reference: str) -> str | None:
    """The ``Docker-Content-Digest`` a HEAD reports, or None on 404."""
    resp = client.head(f"/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT_ALL})
    if resp.status_code == 404:
        return None
    resp.raise_for_status()
    digest: str | None = resp.headers.get("docker-content-digest")
    return digest


def blob_digest(client: httpx.Client, repo: str, digest: str) -> tuple[str, int] | None:
    """GET a blob, hashing it as it streams: (sha256 digest, size), or None on 404."""
    hasher = hashlib.sha256()
    size = 0
    with client.stream("GET", f"/v2/{repo}/blobs/{digest}") as resp:
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        for piece in resp.iter_bytes():
            hasher.update(piece)
            size += len(piece)
    return "sha256:" + hasher.hexdigest(), size


def blob_present(client: httpx.Client, repo: str, digest: str) -> bool:
    return client.head(f"/v2/{repo}/blobs/{digest}").status_code == 200


def list_tags(client: httpx.Client, repo: str) -> list[str]:
    resp = client.get(f"/v2/{repo}/tags/list", params={"n": 10000})
    if resp.status_code == 404:
        return []
    resp.raise_for_status()
    return sorted(resp.json().get("tags") or [])


def catalog(client: httpx.Client) -> list[str]:
    resp = client.get("/v2/_catalog", params={"n": 10000})
    resp.raise_for_status()
    return sorted(resp.json().get("repositories") or [])


@dataclass
class MirrorCheck:
    """The outcome of :func:`compare_mirror`."""

    tags: int = 0  # source tags looked at
    tags_identical: int = 0  # destination tag serves the source's exact manifest bytes
    digests_verified: int = 0  # manifests and blobs fetched at the destination, identical to the source
    bytes_verified: int = 0
    bytes_missing: int = 0  # source bytes with nothing at the destination under their digest
    bytes_lost: int = 0  # destination bytes that differ from the source (wrong manifest, corrupt blob)
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.tags == self.tags_identical and not self.bytes_missing and not self.bytes_lost

    def to_json(self) -> dict[str, Any]:
        return {
            "tags": self.tags,
            "tags_identical": self.tags_identical,
            "digests_verified": self.digests_verified,
            "bytes_verified": self.bytes_verified,
            "bytes_missing": self.bytes_missing,
            "bytes_lost": self.bytes_lost,
            "problems": self.problems,
        }


def compare_mirror(
    src: Registry,
    dst: Registry,
    pairs: Iterable[tuple[str, str]],
    *,
    skip_repos: Iterable[str] = (),
) -> MirrorCheck:
    """Compares every tag of each source repository with its destination repository.

    ``pairs``: (source repository, destination repository). For each source tag: HEAD on both
    sides (``Docker-Content-Digest``), then GET of the destination's manifest (exact bytes), of
    every child manifest by digest and of every blob, each hashed. A manifest or blob with nothing
    at the destination counts as missing; one that is there with other bytes counts as lost.
    ``skip_repos`` (source names) are left out entirely.
    """
    check = MirrorCheck()
    skip = set(skip_repos)
    with src.client() as s, dst.client() as d:
        for src_repo, dst_repo in pairs:
            if src_repo in skip:
                continue
            seen: set[str] = set()
            for tag in list_tags(s, src_repo):
                check.tags += 1
                want = head_manifest(s, src_repo, tag)
                have = head_manifest(d, dst_repo, tag)
                node = get_manifest(s, src_repo, tag)
                assert node is not None and want == node.digest, f"source {src_repo}:{tag} changed under the test"
                seen.add(node.digest)
                if have is None:
                    check.problems.append(f"{dst_repo}:{tag}: missing at the destination")
                    if get_manifest(d, dst_repo, node.digest) is None:
                        check.bytes_missing += len(node.data)
                elif have != want:
                    check.problems.append(f"{dst_repo}:{tag}: destination has {have}, source {want}")
                    check.bytes_lost += len(node.data)
                else:
                    got = get_manifest(d, dst_repo, tag)
                    if got is not None and got.data == node.data:
                        check.tags_identical += 1
                        check.digests_verified += 1
                        check.bytes_verified += len(node.data)
                    else:
                        check.problems.append(f"{dst_repo}:{tag}: manifest bytes differ from the source")
                        check.bytes_lost += len(node.data)
                _compare_refs(s, d, src_repo, dst_repo, node, check, seen)
    return check


def _compare_refs(
    s: httpx.Client, d: httpx.Client, src_repo: str, dst_repo: str, node: Node, check: MirrorCheck, seen: set[str]
) -> None:
    """Compares what ``node`` references (child manifests, blobs), each digest once per repository."""
    for child_digest, _ in node.children:
        if child_digest in seen:
            continue
        seen.add(child_digest)
        child = get_manifest(s, src_repo, child_digest)
        assert child is not None, f"source {src_repo}@{child_digest} is missing"
        got = get_manifest(d, dst_repo, child_digest)
        if got is None:
            check.problems.append(f"{dst_repo}@{child_digest}: child manifest missing")
            check.bytes_missing += len(child.data)
        elif got.data != child.data:
            check.problems.append(f"{dst_repo}@{child_digest}: child manifest bytes differ")
            check.bytes_lost += len(child.data)
        else:
            check.digests_verified += 1
            check.bytes_verified += len(child.data)
        _compare_refs(s, d, src_repo, dst_repo, child, check, seen)
    for digest, size in node.blobs:
        if digest in seen:
            continue
        seen.add(digest)
        found = blob_digest(d, dst_repo, digest)
        if found is None:
            check.problems.append(f"{dst_repo}: blob {digest} missing")
            check.bytes_missing += size
        elif found != (digest, size):
            check.problems.append(f"{dst_repo}: blob {digest} is {found[1]} bytes hashing to {found[0]}")
            check.bytes_lost += size
        else:
            check.digests_verified += 1
            check.bytes_verified += size


def dangling_tags(dst: Registry, repos: Iterable[str], *, in_flight: bool = False) -> list[str]:
    """Every problem with every tag of ``repos`` at ``dst``: a tag whose manifest, child manifest or
    blob cannot be fetched. Empty when each tag points at a complete image.

    A tag that is listed but whose manifest is not found yet is re-checked after 0.2 s:
    distribution creates a tag's directory (which the tag list shows) a moment before the link
    to the manifest in it, so while a manifest PUT is ``in_flight`` such a tag is skipped.
    """
    problems: list[str] = []
    with dst.client() as d:
        for repo in repos:
            for tag in list_tags(d, repo):
                node = get_manifest(d, repo, tag)
                if node is None:
                    time.sleep(0.2)
                    node = get_manifest(d, repo, tag)
                if node is None:
                    if not in_flight:
                        problems.append(f"{repo}:{tag}: listed, but its manifest is not found")
                    continue
                problems += _incomplete(d, repo, node, f"{repo}:{tag}")
    return problems


def _incomplete(d: httpx.Client, repo: str, node: Node, label: str) -> list[str]:
    problems = [f"{label}: blob {digest} missing" for digest, _ in node.blobs if not blob_present(d, repo, digest)]
    for digest, _ in node.children:
        child = get_manifest(d, repo, digest)
        if child is None:
            problems.append(f"{label}: child manifest {digest} missing")
        else:
            problems += _incomplete(d, repo, child, f"{label} -> {digest[:19]}")
    return problems


def open_upload_sessions(registry: Registry) -> list[str]:
    """Upload sessions a distribution (filesystem storage) registry still holds open.

    Distribution keeps a session in ``repositories/<repo>/_uploads/<uuid>/`` with a ``startedat``
    file; completing or cancelling (DELETE) the session removes ``startedat`` and ``data``.
    """
    root = Path(registry.storage_dir) / "docker" / "registry" / "v2" / "repositories"
    return sorted(str(p.parent.relative_to(root)) for p in root.glob("**/_uploads/*/startedat"))


def sessions_left_open_by_regtool(registry: Registry) -> list[str]:
    """Open upload sessions regtool never tried to cancel (sent no DELETE for).

    distribution 2.8 refuses to cancel a session whose single PUT was cut mid-body: the ``_state``
    in its URL still says offset 0 while the stored data has grown ("upload resumed at wrong
    offset"), and no request can learn a newer state. Such sessions stay until the registry's
    upload purger removes them; what regtool owes is the DELETE, which this checks in the
    registry's request log.
    """
    log = Path(registry.log_file).read_text(errors="replace")
    return [s for s in open_upload_sessions(registry)
            if f"DELETE /v2/{s.replace('/_uploads/', '/blobs/uploads/')}" not in log]


# -------------------------------------------------------------------------------------------------
# Running regtool sync
# -------------------------------------------------------------------------------------------------


def write_sync_config(
    path: Path,
    *,
    job: str,
    insecure_hosts: Sequence[str],
    mirrors: Sequence[tuple[str, str]],
    options: dict[str, Any] | None = None,
) -> Path:
    """A regtool sync config: ``mirrors`` are (source repository, ``docker://`` or ``oci:`` target)."""
    doc: dict[str, Any] = {
        "version": 1,
        "job": job,
        "registries": {host: {"tls-verify": False} for host in insecure_hosts},
        "mirrors": [{"name": source.rsplit("/", 1)[-1], "source": source, "targets": [target]}
                    for source, target in mirrors],
    }
    if options:
        doc["options"] = options
    path.write_text(json.dumps(doc, indent=2))  # JSON is YAML
    return path


def regtool_command(*args: str) -> list[str]:
    """``regtool ARGS`` as a process of its own (the interpreter running this code)."""
    return [sys.executable, "-m", "regtool.cli.main", *args]


def regtool_env() -> dict[str, str]:
    """The environment ``tests.support.cli.run_regtool`` uses: no personal logins, no proxies."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env["REGISTRY_AUTH_FILE"] = "/nonexistent/regtool-test-auth.json"
    env.setdefault("CONTAINERS_REGISTRIES_CONF", "/dev/null")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


#: How regtool's log says it tries again: a request retried, an upload started again, a download or a
#: chunked upload resumed.
RETRY_MARKERS = ("retrying after ", "starting the upload again", ", resuming", "asking the registry where to resume")


def log_messages(stderr: str) -> list[str]:
    """The messages of a ``--debug=true --log-format json`` log (other lines are left out)."""
    out: list[str] = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            try:
                out.append(str(json.loads(line)["msg"]))
            except (ValueError, KeyError):
                continue
    return out


def count_retries(messages: Iterable[str]) -> int:
    """Retries regtool logged (see ``RETRY_MARKERS``)."""
    return sum(1 for m in messages if any(marker in m for marker in RETRY_MARKERS))


def random_fault_kinds() -> list[FaultRule]:
    """The faults the fault-injection sync draws at random (``FaultProxy(kinds=...)``)."""
    return [
        FaultRule(kind="reset", times=None),  # RST right after the request head: no answer at all
        FaultRule(kind="reset", forward=True, times=None),  # done upstream, answer lost
        FaultRule(kind="reset", after_bytes=300, times=None),  # RST in the middle of the body
        FaultRule(kind="status", times=None),  # 502, 503 or 504
        FaultRule(kind="429", times=None),  # no Retry-After: regtool's own backoff
        FaultRule(kind="429", retry_after=1, times=None),
        FaultRule(kind="stall", seconds=1.0, times=None),  # far shorter than regtool's timeouts
        FaultRule(kind="truncate", method="GET", path_regex=r"/blobs/sha256:", times=None),
        FaultRule(kind="slow", method="GET", path_regex=r"/blobs/sha256:", bytes_per_second=256 * 1024, times=None),
    ]


# -------------------------------------------------------------------------------------------------
# Memory
# -------------------------------------------------------------------------------------------------


def vm_rss_kib(pid: int) -> int | None:
    """``VmRSS`` of a process in KiB (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class RssSampler:
    """Samples a process's ``VmRSS`` every ``interval`` seconds in a thread: ``samples`` is
    (seconds since start, KiB)."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)
        self._start = time.monotonic()

    def start(self) -> RssSampler:
        self._start = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = vm_rss_kib(self.pid)
            if rss is None:
                return
            # a zombie (exited, not yet reaped) reports no VmRSS line, hence None above
            self.samples.append((time.monotonic() - self._start, rss))
            self._stop.wait(self.interval)


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 for fewer than two distinct x)."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / sxx


ACTIONS = ("copied", "skipped", "failed", "rate-limited", "rejected", "pruned")


def image_marks(stderr: str, started: float) -> list[float]:
    """When each image finished, in seconds after ``started`` (a ``time.time()``), from the
    ``--debug=true --log-format json`` log (one ``"<action> SOURCE -> TARGET"`` line per image)."""
    marks: list[float] = []
    for line in stderr.splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
            msg = str(record["msg"])
            stamp, _, millis = str(record["time"]).partition(",")
            when = time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis or 0) / 1000
        except (ValueError, KeyError):
            continue
        if msg.split(" ", 1)[0] in ACTIONS and " -> " in msg:
            marks.append(when - started)
    return sorted(marks)


@dataclass
class RssProfile:
    """What a run's ``VmRSS`` samples say (KiB).

    With the times at which images finished (``marks``), the run is split by images: ``warm`` is
    the RSS when the first image was done (imports, connections and caches are all in place),
    ``mid`` when half of them were, ``end`` when the last one was; the slope is RSS over images
    completed, fitted over the second half. Without marks, by time (10 %, 50 %, end).
    """

    samples: int
    seconds: float
    images: int
    start_kib: int  # first sample (the interpreter starting)
    warm_kib: int
    mid_kib: int
    end_kib: int
    peak_kib: int
    first_half_kib: int  # growth from warm to mid
    second_half_kib: int  # growth from mid to end
    kib_per_image: float  # least-squares slope over the second half (0 without marks)

    @classmethod
    def of(cls, samples: Sequence[tuple[float, int]], marks: Sequence[float] = ()) -> RssProfile:
        if not samples:
            raise ValueError("no RSS samples (the process ended before the first one)")
        duration = samples[-1][0]

        def rss_at(when: float) -> int:
            return min(samples, key=lambda s: abs(s[0] - when))[1]

        per_image = 0.0
        if marks:
            n = len(marks)
            warm, mid, end = rss_at(marks[0]), rss_at(marks[(n - 1) // 2]), rss_at(marks[-1])
            half = marks[(n - 1) // 2]
            points = [(float(sum(1 for m in marks if m <= t)), float(k)) for t, k in samples if half <= t <= marks[-1]]
            per_image = slope(points)
        else:
            warm, mid, end = rss_at(duration * 0.1), rss_at(duration * 0.5), samples[-1][1]
        return cls(
            samples=len(samples),
            seconds=round(duration, 2),
            images=len(marks),
            start_kib=samples[0][1],
            warm_kib=warm,
            mid_kib=mid,
            end_kib=end,
            peak_kib=max(k for _, k in samples),
            first_half_kib=mid - warm,
            second_half_kib=end - mid,
            kib_per_image=round(per_image, 3),
        )

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)
