"""``regtool copy`` through a fault-injecting proxy in front of a real registry.

A multi-platform image (an OCI index over three platforms, two layers each) is pushed straight to
the plain test-bed registry. ``regtool copy --all`` then reads it through one
:class:`~tests.support.netproxy.FaultProxy` and writes it through another (two proxies in front of
the same registry: two registry names, so no cross-repository mounts short-circuit the transfer).
The proxies reset connections mid-body, answer 502/503/504 and 429 (with and without
``Retry-After``), truncate bodies and stall responses, by explicit rules and at random.

What is proven, checked against the registry directly (not through regtool):

* within the retry budget the copy completes and the destination is byte-for-byte the source:
  the index under the tag, every child manifest by digest, every config and layer blob;
* beyond it, the copy fails with one line and exit 1, and the destination tag is not written:
  no partial image is ever visible under the name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.cli import Result, run_regtool
from tests.support.images import PushedImage, fetch_manifest, list_tags, manifest_exists, push_index
from tests.support.netproxy import FaultKind, FaultProxy, FaultRule
from tests.support.registries import Registry, repo_name

TAG = "v1"
LAYER_SIZE = 256 * 1024  # big enough that "mid-body" is really mid-body
BLOB_GET = r"^/v2/.+/blobs/sha256:"
MANIFEST_GET = r"^/v2/.+/manifests/"
UPLOAD = r"^/v2/.+/blobs/uploads/"


@dataclass
class Bed:
    registry: Registry
    image: PushedImage
    src: FaultProxy
    dest: FaultProxy
    dest_repo: str

    @property
    def src_ref(self) -> str:
        return f"docker://{self.src.netloc}/{self.image.repository}:{TAG}"

    @property
    def dest_ref(self) -> str:
        return f"docker://{self.dest.netloc}/{self.dest_repo}:{TAG}"

    def copy(self, *extra: str) -> Result:
        return run_regtool(
            [
                "copy",
                "--all",
                "--quiet",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                *extra,
                self.src_ref,
                self.dest_ref,
            ],
            timeout=240,
        )

    def faults(self) -> int:
        return int(self.src.stats()["faults_total"]) + int(self.dest.stats()["faults_total"])


@pytest.fixture(scope="module")
def image(registry_plain: Registry) -> tuple[Registry, PushedImage]:
    return registry_plain, push_index(registry_plain, repo_name("faults-src"), TAG, layers=2, layer_size=LAYER_SIZE)


@pytest.fixture
def bed(image: tuple[Registry, PushedImage], repo: str) -> Iterator[Bed]:
    registry, pushed = image
    with FaultProxy(registry.host) as src, FaultProxy(registry.host) as dest:
        yield Bed(registry, pushed, src, dest, repo)


def assert_identical(bed: Bed) -> None:
    """The destination holds exactly the source: same bytes under the tag, every child and blob."""
    reg, img, repo = bed.registry, bed.image, bed.dest_repo
    top, _ = fetch_manifest(reg, repo, TAG)
    assert top == img.manifest, "index bytes differ"
    assert len(img.children) == 3
    for child in img.children:
        data, _ = fetch_manifest(reg, repo, child.digest)
        assert data == child.manifest, child.digest
        for blob in [child.config_blob, *child.layers]:
            assert blob is not None and blob.data is not None
            r = reg.http.get(f"/v2/{repo}/blobs/{blob.digest}")
            assert r.status_code == 200, (blob.digest, r.status_code)
            assert "sha256:" + hashlib.sha256(r.content).hexdigest() == blob.digest
            assert r.content == blob.data


def assert_failed_cleanly(bed: Bed, out: Result) -> None:
    assert out.rc == 1, out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("regtool: error: "), out.stderr
    assert not manifest_exists(bed.registry, bed.dest_repo, TAG), "the destination tag was written"
    assert TAG not in list_tags(bed.registry, bed.dest_repo)


def test_control_copy_without_faults(bed: Bed) -> None:
    out = bed.copy()
    assert out.rc == 0, out.stderr
    assert_identical(bed)
    assert bed.faults() == 0
    # the copy really went through both proxies
    assert bed.src.count("GET", BLOB_GET) >= 9 and bed.dest.count("PUT", UPLOAD) >= 9


# Each case: (rules for the source proxy, rules for the destination proxy).
CASES: dict[str, tuple[list[FaultRule], list[FaultRule]]] = {
    "reset-mid-blob-download": (
        [FaultRule(method="GET", path_regex=BLOB_GET, kind="reset", after_bytes=100_000, times=4)],
        [],
    ),
    "truncated-blob-bodies": (
        [FaultRule(method="GET", path_regex=BLOB_GET, kind="truncate", times=4)],
        [],
    ),
    "reset-before-any-answer": (
        [FaultRule(method="GET", path_regex=MANIFEST_GET, kind="reset", times=2)],
        [FaultRule(method="HEAD", kind="reset", times=2)],
    ),
    "5xx-bursts": (
        [
            FaultRule(method="GET", path_regex=MANIFEST_GET, kind="status", status=502, times=2),
            FaultRule(method="GET", path_regex=BLOB_GET, kind="status", status=503, times=3),
        ],
        [
            FaultRule(method="HEAD", kind="status", status=504, times=3),
            FaultRule(method="PUT", path_regex=r"/manifests/", kind="status", status=503, times=2),
            FaultRule(method="POST", path_regex=UPLOAD, kind="status", status=502, times=2),
        ],
    ),
    "429-with-retry-after": (
        [FaultRule(method="GET", path_regex=BLOB_GET, kind="429", retry_after=1, times=2)],
        [FaultRule(method="HEAD", kind="429", retry_after=1, times=2)],
    ),
    "429-without-retry-after": (
        [FaultRule(method="GET", path_regex=MANIFEST_GET, kind="429", times=2)],
        [FaultRule(method="POST", path_regex=UPLOAD, kind="429", times=3)],
    ),
    "stalls-shorter-than-the-timeout": (
        [
            FaultRule(method="GET", path_regex=BLOB_GET, kind="stall", seconds=2, after_bytes=50_000, times=2),
            FaultRule(method="GET", path_regex=MANIFEST_GET, kind="stall", seconds=2, times=1),
        ],
        [FaultRule(method="HEAD", kind="stall", seconds=2, times=2)],
    ),
    "slow-blob-bodies": (
        [FaultRule(method="GET", path_regex=BLOB_GET, kind="slow", bytes_per_second=512 * 1024, times=3)],
        [],
    ),
    "upload-put-answered-503": (
        [],
        [FaultRule(method="PUT", path_regex=UPLOAD, kind="status", status=503, forward=False, times=2)],
    ),
    "upload-put-connection-reset": (
        [],
        [FaultRule(method="PUT", path_regex=UPLOAD, kind="reset", times=2)],
    ),
    "upload-answer-lost-after-the-registry-stored-it": (
        [],
        [FaultRule(method="PUT", path_regex=UPLOAD, kind="reset", forward=True, times=2)],
    ),
    "manifest-put-answer-lost": (
        [],
        [FaultRule(method="PUT", path_regex=r"/manifests/", kind="status", status=502, forward=True, times=3)],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_copy_survives_faults_within_the_retry_budget(bed: Bed, case: str) -> None:
    src_rules, dest_rules = CASES[case]
    for rule in src_rules:
        bed.src.add_rule(rule)
    for rule in dest_rules:
        bed.dest.add_rule(rule)
    out = bed.copy()
    assert out.rc == 0, out.stderr
    assert_identical(bed)
    fired = sum(r.fired for r in src_rules + dest_rules)
    assert fired >= 1, "no fault was injected: the test proves nothing"
    assert bed.faults() == fired


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_copy_survives_random_faults_on_both_sides(image: tuple[Registry, PushedImage], repo: str, seed: int) -> None:
    """Random resets, 502/503/504, 429 (with Retry-After: 1) and truncations on 8% of requests."""
    registry, pushed = image
    kinds: tuple[FaultKind | FaultRule, ...] = (
        "reset",
        "status",
        "truncate",
        FaultRule(kind="429", retry_after=1, times=None),
        FaultRule(kind="429", times=None),
        FaultRule(kind="reset", after_bytes=20_000, times=None),
        FaultRule(kind="stall", seconds=1, after_bytes=1_000, times=None),
    )
    with FaultProxy(registry.host, rate=0.08, seed=seed, kinds=kinds) as src, FaultProxy(
        registry.host, rate=0.08, seed=seed + 100, kinds=kinds
    ) as dest:
        bed = Bed(registry, pushed, src, dest, repo)
        out = bed.copy()
        assert out.rc == 0, out.stderr
        assert_identical(bed)
        assert bed.faults() >= 1


# --------------------------------------------------------------------------- beyond the budget


def test_blob_that_never_downloads_fails_and_writes_no_tag(bed: Bed) -> None:
    victim = bed.image.children[1].layers[0].digest
    bed.src.add_rule(FaultRule(method="GET", path_regex=f"/blobs/{victim}", kind="reset", after_bytes=1000, times=None))
    out = bed.copy()
    assert_failed_cleanly(bed, out)
    assert victim in out.stderr or bed.image.repository in out.stderr
    # nothing names the broken image: no child that needs the blob was pushed either
    assert not manifest_exists(bed.registry, bed.dest_repo, bed.image.children[1].digest)


def test_upload_that_never_succeeds_fails_and_writes_no_tag(bed: Bed) -> None:
    bed.dest.add_rule(FaultRule(method="PUT", path_regex=UPLOAD, kind="status", status=503, times=None))
    out = bed.copy()
    assert_failed_cleanly(bed, out)
    for child in bed.image.children:
        assert not manifest_exists(bed.registry, bed.dest_repo, child.digest)


def test_tag_that_cannot_be_written_leaves_no_tag(bed: Bed) -> None:
    """Children and blobs all land; the index PUT under the tag keeps failing: the tag never appears."""
    bed.dest.add_rule(FaultRule(method="PUT", path_regex=rf"/manifests/{TAG}$", kind="status", status=503, times=None))
    out = bed.copy()
    assert_failed_cleanly(bed, out)
    assert bed.dest.count("PUT", rf"/manifests/{TAG}$") >= 2  # it was retried before giving up
    for child in bed.image.children:  # pushed by digest: present but not named
        assert manifest_exists(bed.registry, bed.dest_repo, child.digest)


def test_retry_after_longer_than_max_retry_wait_fails_fast(bed: Bed) -> None:
    bed.src.add_rule(FaultRule(method="GET", path_regex=MANIFEST_GET, kind="429", retry_after=3600, times=None))
    out = bed.copy("--max-retry-wait", "5")
    assert_failed_cleanly(bed, out)
    assert "max-retry-wait" in out.stderr
    assert bed.src.count("GET", MANIFEST_GET) == 1  # no point asking again
