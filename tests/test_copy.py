"""``regtool copy`` and ``regtool delete`` against the real registries, with skopeo as the reference.

Request-level claims (mounts, no-op re-copies, ordering, sharing) are checked through a
FaultProxy in front of the plain registry, whose request log shows what regtool sent.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import run_skopeo
from tests.support.cli import Result, run_regtool
from tests.support.images import (
    OCI_INDEX,
    Blob,
    MiB,
    PushedImage,
    build_image,
    build_index,
    cosign_signature_tag,
    fetch_blob,
    fetch_manifest,
    list_tags,
    make_layer,
    manifest_exists,
    push_big_image,
    push_blob,
    push_built,
    push_cosign_signature,
    push_docker_image,
    push_index,
    push_oci_image,
    push_referrer,
    referrers_tag,
    sha256,
)
from tests.support.netproxy import FaultProxy, FaultRule
from tests.support.registries import Registry

MakeRegistry = Callable[[str], Registry]

HOST_PLATFORM = {"x86_64": "linux/amd64", "aarch64": "linux/arm64/v8", "arm64": "linux/arm64/v8"}.get(
    os.uname().machine, "linux/amd64"
)


# --------------------------------------------------------------------------- helpers


def dref(reg: Registry | FaultProxy | str, repo: str, tag: str | None = None, digest: str | None = None) -> str:
    host = reg if isinstance(reg, str) else (reg.netloc if isinstance(reg, FaultProxy) else reg.host)
    text = f"docker://{host}/{repo}"
    if tag:
        text += f":{tag}"
    if digest:
        text += f"@{digest}"
    return text


def side_flags(src: Registry, dest: Registry) -> list[str]:
    return [*src.skopeo_flags("src-"), *dest.skopeo_flags("dest-")]


PLAIN_FLAGS = ["--src-tls-verify=false", "--dest-tls-verify=false"]


def copy_ok(*args: str) -> Result:
    r = run_regtool(["copy", *args])
    assert r.rc == 0, r.stderr
    return r


def raw(reg: Registry, repo: str, ref: str) -> bytes:
    return fetch_manifest(reg, repo, ref)[0]


def skopeo_raw(reg: Registry, repo: str, tag: str) -> bytes:
    return run_skopeo(["inspect", "--raw", *reg.skopeo_flags(), dref(reg, repo, tag)]).stdout


def blob_requests(fp: FaultProxy, method: str) -> int:
    return fp.count(method, r"/blobs/sha256:")


def manifest_paths(fp: FaultProxy, method: str) -> list[str]:
    return [r.path for r in fp.requests(method, r"/manifests/")]


@pytest.fixture
def proxy(registry_plain: Registry) -> Iterator[FaultProxy]:
    """A FaultProxy (no faults unless a test adds rules) in front of the plain registry."""
    with FaultProxy(target=registry_plain.host) as fp:
        yield fp


def one_line_error(r: Result) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("regtool: error: "), r.stderr
    return lines[0]


# --------------------------------------------------------------------------- single images


@pytest.mark.parametrize("kind", ["oci", "docker"])
def test_copy_single_image_matches_skopeo(any_registry: Registry, repo: str, kind: str) -> None:
    push = push_oci_image if kind == "oci" else push_docker_image
    img = push(any_registry, repo, "v1")
    flags = side_flags(any_registry, any_registry)
    r = copy_ok(*flags, dref(any_registry, repo, "v1"), dref(any_registry, repo + "-ours", "v1"))
    assert img.digest in r.stderr
    run_skopeo(["copy", *flags, dref(any_registry, repo, "v1"), dref(any_registry, repo + "-skopeo", "v1")])
    ours = skopeo_raw(any_registry, repo + "-ours", "v1")
    assert ours == img.manifest == skopeo_raw(any_registry, repo + "-skopeo", "v1")
    for blob in [img.config_blob, *img.layers]:
        assert blob is not None and blob.data is not None
        assert fetch_blob(any_registry, repo + "-ours", blob.digest) == blob.data


def test_copy_across_kinds_with_side_flags(registry_basic: Registry, registry_token: Registry, repo: str) -> None:
    img = push_docker_image(registry_basic, repo, "v1", layers=3)
    flags = [
        "--src-creds", f"{registry_basic.username}:{registry_basic.password}",
        "--src-cert-dir", str(registry_basic.cert_dir),
        "--dest-username", str(registry_token.username),
        "--dest-password", str(registry_token.password),
        "--dest-cert-dir", str(registry_token.cert_dir),
    ]
    r = copy_ok(*flags, dref(registry_basic, repo, "v1"), dref(registry_token, repo, "copied"))
    assert "4 blobs copied, 0 mounted" in r.stderr  # a config and 3 layers, streamed across registries
    assert raw(registry_token, repo, "copied") == img.manifest
    run_skopeo(["copy", *side_flags(registry_basic, registry_token), dref(registry_basic, repo, "v1"),
                dref(registry_token, repo, "skopeo")])
    assert raw(registry_token, repo, "skopeo") == img.manifest
    # wrong credentials on one side: a one-line error, exit 1, nothing tagged
    bad = run_regtool(["copy", *flags[:4], "--dest-creds", "tester:wrong", "--dest-cert-dir",
                       str(registry_token.cert_dir), dref(registry_basic, repo, "v1"),
                       dref(registry_token, repo, "denied")])
    assert bad.rc == 1, bad.stderr
    one_line_error(bad)
    assert "denied" not in list_tags(registry_token, repo)


# --------------------------------------------------------------------------- multi-platform


def test_copy_all_keeps_index_and_children(any_registry: Registry, repo: str) -> None:
    idx = push_index(any_registry, repo, "m")
    flags = side_flags(any_registry, any_registry)
    copy_ok("--all", *flags, dref(any_registry, repo, "m"), dref(any_registry, repo + "-all", "m"))
    assert raw(any_registry, repo + "-all", "m") == idx.manifest
    for child in idx.children:
        assert raw(any_registry, repo + "-all", child.digest) == child.manifest
        for blob in child.layers:
            assert manifest_exists(any_registry, repo + "-all", child.digest)
            assert fetch_blob(any_registry, repo + "-all", blob.digest) == blob.data
    # skopeo --all gives the same digest
    run_skopeo(["copy", "--all", *flags, dref(any_registry, repo, "m"), dref(any_registry, repo + "-sk", "m")])
    assert skopeo_raw(any_registry, repo + "-sk", "m") == idx.manifest


@pytest.mark.parametrize("docker", [False, True], ids=["oci-index", "docker-list"])
def test_copy_system_instance_like_skopeo(registry_plain: Registry, repo: str, docker: bool) -> None:
    idx = push_index(registry_plain, repo, "m", docker=docker)
    src = dref(registry_plain, repo, "m")
    copy_ok(*PLAIN_FLAGS, src, dref(registry_plain, repo, "host"))
    assert raw(registry_plain, repo, "host") == idx.child(HOST_PLATFORM).manifest
    run_skopeo(["copy", *side_flags(registry_plain, registry_plain), src, dref(registry_plain, repo, "sk-host")])
    assert raw(registry_plain, repo, "sk-host") == idx.child(HOST_PLATFORM).manifest
    # --override-arch (also spelled before the command, as skopeo's global flag)
    copy_ok(*PLAIN_FLAGS, "--override-arch", "arm64", src, dref(registry_plain, repo, "arm64"))
    r = run_regtool(["--override-arch", "arm", "--override-variant", "v7", "copy", *PLAIN_FLAGS, src,
                     dref(registry_plain, repo, "armv7")])
    assert r.rc == 0, r.stderr
    run_skopeo(["--override-arch", "arm64", "copy", *side_flags(registry_plain, registry_plain), src,
                dref(registry_plain, repo, "sk-arm64")])
    assert raw(registry_plain, repo, "arm64") == idx.child("linux/arm64/v8").manifest
    assert raw(registry_plain, repo, "sk-arm64") == idx.child("linux/arm64/v8").manifest
    assert raw(registry_plain, repo, "armv7") == idx.child("linux/arm/v7").manifest
    # a platform the index lacks: exit 2, nothing tagged
    r = run_regtool(["copy", *PLAIN_FLAGS, "--override-arch", "s390x", src, dref(registry_plain, repo, "s390x")])
    assert r.rc == 2
    assert "s390x" in one_line_error(r)
    assert "s390x" not in list_tags(registry_plain, repo)


def test_copy_index_only(registry_plain: Registry, repo: str, tmp_path: Path) -> None:
    idx = push_index(registry_plain, repo, "m")
    src = dref(registry_plain, repo, "m")
    # into an OCI layout: the index alone
    copy_ok(*PLAIN_FLAGS, "--multi-arch", "index-only", src, f"oci:{tmp_path / 'lay'}:m")
    blobs = {p.name for p in (tmp_path / "lay/blobs/sha256").iterdir()}
    assert blobs == {idx.digest.split(":")[1]}
    # into a repository that already holds the instances: only the index is written
    copy_ok(*PLAIN_FLAGS, "--all", src, dref(registry_plain, repo + "-dst", "first"))
    with FaultProxy(target=registry_plain.host) as fp:
        copy_ok(*PLAIN_FLAGS, "--multi-arch", "index-only", dref(fp, repo, "m"), dref(fp, repo + "-dst", "m"))
        assert manifest_paths(fp, "PUT") == [f"/v2/{repo}-dst/manifests/m"]
        assert blob_requests(fp, "GET") == blob_requests(fp, "HEAD") == 0
    assert raw(registry_plain, repo + "-dst", "m") == idx.manifest
    # into a repository without the instances: the registry refuses the index, and regtool says why
    r = run_regtool(["copy", *PLAIN_FLAGS, "--multi-arch", "index-only", src, dref(registry_plain, repo + "-e", "m")])
    assert r.rc == 1 and "--all" in one_line_error(r)
    assert list_tags(registry_plain, repo + "-e") == []


@pytest.mark.parametrize("how", ["multi-arch", "platform"])
def test_copy_platform_subset(registry_plain: Registry, repo: str, how: str) -> None:
    idx = push_index(registry_plain, repo, "m")
    if how == "multi-arch":
        sel = ["--multi-arch", "linux/amd64,linux/arm64"]
    else:
        sel = ["--platform", "linux/amd64", "--platform", "linux/arm64"]
    dst = repo + "-sub"
    with FaultProxy(target=registry_plain.host) as fp:
        r = copy_ok(*PLAIN_FLAGS, *sel, dref(fp, repo, "m"), dref(fp, dst, "sub"))
        puts = manifest_paths(fp, "PUT")
        fp.reset_stats()
        copy_ok(*PLAIN_FLAGS, *sel, dref(fp, repo, "m"), dref(fp, repo, "sub"))  # same repository
        assert manifest_paths(fp, "PUT") == [f"/v2/{repo}/manifests/sub"]
        assert fp.count(path_regex="/blobs/") == 0
    data = raw(registry_plain, dst, "sub")
    assert raw(registry_plain, repo, "sub") == data
    new_digest = sha256(data)
    assert new_digest != idx.digest
    assert f"digest changed from {idx.digest} to {new_digest}" in r.stderr
    body = json.loads(data)
    kept = [e for e in idx.manifest_json["manifests"] if e["platform"]["architecture"] in ("amd64", "arm64")]
    assert body["manifests"] == kept and len(kept) == 2
    assert body["mediaType"] == OCI_INDEX
    # the kept instances first (by digest), the new index last (by tag); arm/v7 never written
    assert puts[-1] == f"/v2/{dst}/manifests/sub"
    assert sorted(puts[:-1]) == sorted(f"/v2/{dst}/manifests/{e['digest']}" for e in kept)
    info = json.loads(run_skopeo(["inspect", *registry_plain.skopeo_flags(), "--override-arch", "arm64",
                                  dref(registry_plain, dst, "sub")]).stdout)
    assert info["Architecture"] == "arm64"
    # a platform the index does not have
    r = run_regtool(["copy", *PLAIN_FLAGS, "--platform", "linux/s390x", dref(registry_plain, repo, "m"),
                     dref(registry_plain, repo, "none")])
    assert r.rc == 2 and "s390x" in one_line_error(r)


def test_copy_order_children_index_tag(registry_plain: Registry, repo: str, proxy: FaultProxy) -> None:
    """Blobs before the instance that lists them, instances before the index, the tag PUT last."""
    idx = push_index(registry_plain, repo, "m", layers=2)
    copy_ok(*PLAIN_FLAGS, "--all", dref(proxy, repo, "m"), dref(proxy, repo + "-o", "m"))
    log = proxy.requests()
    puts = {r.path.rsplit("/", 1)[1]: r for r in log if r.method == "PUT" and "/manifests/" in r.path}
    assert set(puts) == {c.digest for c in idx.children} | {"m"}  # the index goes up once, by tag
    tag_put = puts["m"]
    blob_done: dict[str, float] = {}
    for r in log:  # uploads finish with a PUT ?digest=, mounts with a 201 to POST ?mount=
        m = re.search(r"[?&](?:digest|mount)=(sha256(?::|%3A)[0-9a-f]{64})", r.path)
        if m and r.status == 201 and r.finished is not None:
            blob_done[m.group(1).replace("%3A", ":")] = r.finished
    for child in idx.children:
        put = puts[child.digest]
        assert put.status == 201 and put.finished is not None
        for blob in [child.config_blob, *child.layers]:
            assert blob is not None
            assert blob_done[blob.digest] <= put.started  # blobs before the instance listing them
        assert put.finished <= tag_put.started  # instances before the index


# --------------------------------------------------------------------------- mounts, skips, no-ops


def test_cross_repo_mount_verified_by_registry(registry_plain: Registry, repo: str, proxy: FaultProxy) -> None:
    img = push_oci_image(registry_plain, repo, "v1", layers=3)
    r = copy_ok(*PLAIN_FLAGS, dref(proxy, repo, "v1"), dref(proxy, repo + "-m", "v1"))
    assert "0 blobs copied, 4 mounted" in r.stderr
    mounts = proxy.requests("POST", r"/blobs/uploads/\?mount=")
    assert len(mounts) == 4 and all(m.status == 201 for m in mounts)  # the registry says: mounted
    assert all(f"from={repo}" in m.path for m in mounts)
    assert blob_requests(proxy, "GET") == 0
    assert proxy.count("PATCH") == 0
    assert proxy.count("PUT", r"/blobs/") == 0
    assert raw(registry_plain, repo + "-m", "v1") == img.manifest


def test_skip_existing_blobs(registry_plain: Registry, repo: str, proxy: FaultProxy) -> None:
    push_oci_image(registry_plain, repo, "v1", seed="shared", labels={"v": "1"})
    img2 = push_oci_image(registry_plain, repo, "v2", seed="shared", labels={"v": "2"})  # same layers
    copy_ok(*PLAIN_FLAGS, dref(proxy, repo, "v1"), dref(proxy, repo + "-s", "v1"))
    proxy.reset_stats()
    r = copy_ok(*PLAIN_FLAGS, dref(proxy, repo, "v2"), dref(proxy, repo + "-s", "v2"))
    assert "0 blobs copied, 1 mounted, 2 already present" in r.stderr
    assert blob_requests(proxy, "HEAD") == 3
    assert len(proxy.requests("POST", r"/blobs/uploads/")) == 1  # the new config only
    assert blob_requests(proxy, "GET") == 0
    assert "Copying blob" in r.stderr and "skipped: already exists" in r.stderr
    assert raw(registry_plain, repo + "-s", "v2") == img2.manifest


def test_skip_existing_across_registries(registry_plain: Registry, make_registry: MakeRegistry, repo: str) -> None:
    dest: Registry = make_registry("plain")
    push_oci_image(registry_plain, repo, "v1", seed="s", labels={"v": "1"})
    push_oci_image(registry_plain, repo, "v2", seed="s", labels={"v": "2"})
    copy_ok(*PLAIN_FLAGS, dref(registry_plain, repo, "v1"), dref(dest, repo, "v1"))
    with FaultProxy(target=registry_plain.host) as fp:
        r = copy_ok(*PLAIN_FLAGS, dref(fp, repo, "v2"), dref(dest, repo, "v2"))
        assert blob_requests(fp, "GET") == 1  # only the new config is read from the source
    assert "1 blobs copied, 0 mounted, 2 already present" in r.stderr


def test_noop_recopy_only_heads(registry_plain: Registry, repo: str, proxy: FaultProxy) -> None:
    img, sig = _signed_image(registry_plain, repo)
    src, dst = dref(proxy, repo, "v1"), dref(proxy, repo + "-n", "v1")
    first = copy_ok(*PLAIN_FLAGS, src, dst)
    assert cosign_signature_tag(img.digest) in first.stderr
    proxy.reset_stats()
    r = copy_ok(*PLAIN_FLAGS, src, dst)
    assert "already has" in r.stderr and img.digest in r.stderr
    assert proxy.count("GET", r"/manifests/") == 0
    assert blob_requests(proxy, "GET") == 0
    assert proxy.count("GET", r"/tags/list") == 1
    assert proxy.methods() <= {"HEAD", "GET"}
    others = [r.path for r in proxy.requests("GET") if not re.search(r"/tags/list|^/v2/?$", r.path)]
    assert others == []
    assert proxy.count("HEAD", r"/manifests/") == 4  # image on both sides, .sig on both sides
    # a new signature at the source is found by the same lookup and carried
    sig2 = push_cosign_signature(registry_plain, img, signature=b"another")
    assert sig2.digest != sig.digest
    proxy.reset_stats()
    r = copy_ok(*PLAIN_FLAGS, src, dst)
    assert cosign_signature_tag(img.digest) in r.stderr
    assert raw(registry_plain, repo + "-n", cosign_signature_tag(img.digest)) == sig2.manifest


def test_noop_recopy_index_all(registry_plain: Registry, repo: str, proxy: FaultProxy) -> None:
    push_index(registry_plain, repo, "m")
    src, dst = dref(proxy, repo, "m"), dref(proxy, repo + "-n", "m")
    copy_ok(*PLAIN_FLAGS, "--all", src, dst)
    proxy.reset_stats()
    r = copy_ok(*PLAIN_FLAGS, "--all", src, dst)
    assert "already has" in r.stderr
    assert proxy.count("GET", r"/manifests/") == 0 and blob_requests(proxy, "GET") == 0
    assert proxy.methods() <= {"HEAD", "GET"}
    # system mode on an index: the index is read to choose the instance, nothing else
    copy_ok(*PLAIN_FLAGS, src, dref(proxy, repo + "-n", "host"))
    proxy.reset_stats()
    r = copy_ok(*PLAIN_FLAGS, src, dref(proxy, repo + "-n", "host"))
    assert "already has" in r.stderr
    assert proxy.count("GET", r"/manifests/") == 1 and blob_requests(proxy, "GET") == 0
    assert proxy.methods() <= {"HEAD", "GET"}


def test_interrupted_blob_download_resumes(registry_plain: Registry, make_registry: MakeRegistry, repo: str) -> None:
    dest: Registry = make_registry("plain")
    img = push_oci_image(registry_plain, repo, "v1", layers=1, layer_size=3 * MiB)
    layer = img.layers[0]
    with FaultProxy(target=registry_plain.host) as fp:
        rule = fp.add_rule(FaultRule(method="GET", path_regex=rf"/blobs/{layer.digest}", kind="truncate",
                                     after_bytes=1024 * 1024, times=1))
        copy_ok(*PLAIN_FLAGS, dref(fp, repo, "v1"), dref(dest, repo, "v1"))
        assert rule.fired == 1
        gets = fp.requests("GET", rf"/blobs/{layer.digest}")
        assert len(gets) == 2  # the broken one, then the rest of the blob
        assert gets[1].response_bytes < layer.size  # resumed with Range, not started over
    assert fetch_blob(dest, repo, layer.digest) == layer.data
    assert raw(dest, repo, "v1") == img.manifest


def test_tag_copy_within_repository(registry_plain: Registry, repo: str, proxy: FaultProxy) -> None:
    img = push_oci_image(registry_plain, repo, "a")
    idx = push_index(registry_plain, repo, "m")
    copy_ok(*PLAIN_FLAGS, dref(proxy, repo, "a"), dref(proxy, repo, "b"))
    copy_ok(*PLAIN_FLAGS, "--all", dref(proxy, repo, "m"), dref(proxy, repo, "m2"))
    assert proxy.count(path_regex=r"/blobs/") == 0  # no blob traffic at all
    assert manifest_paths(proxy, "PUT") == [f"/v2/{repo}/manifests/b", f"/v2/{repo}/manifests/m2"]
    assert raw(registry_plain, repo, "b") == img.manifest
    assert raw(registry_plain, repo, "m2") == idx.manifest


def test_shared_blobs_transferred_once(registry_plain: Registry, make_registry: MakeRegistry, repo: str) -> None:
    """Two instances sharing a layer: the layer is read once and written once."""
    dest: Registry = make_registry("plain")
    shared = make_layer("shared-layer", 4096)
    children = [build_image(f"{repo}/{p}", platform=p, layers=1, extra_layers=[shared])
                for p in ("linux/amd64", "linux/arm64")]
    index = build_index(repo)
    index.children = children
    body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [c.descriptor() for c in children]}
    index.manifest = json.dumps(body, indent=3).encode()
    push_built(registry_plain, repo, index, "m")
    with FaultProxy(target=registry_plain.host) as fp:
        r = copy_ok(*PLAIN_FLAGS, "--all", dref(fp, repo, "m"), dref(dest, repo, "m"))
        assert fp.count("GET", rf"/blobs/{shared.digest}") == 1
        assert blob_requests(fp, "GET") == 5  # 2 configs, 2 own layers, 1 shared layer
    assert "5 blobs copied, 0 mounted, 1 already present" in r.stderr
    assert raw(dest, repo, "m") == index.manifest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_library_copies_share_transfers(registry_plain: Registry, make_registry: MakeRegistry, repo: str) -> None:
    """Two images copied concurrently by one Copier into one repository: a shared layer moves once."""
    import anyio

    from regtool.copy import Copier, CopyOptions, CopyResult
    from regtool.reference import parse_image
    from regtool.registry import ClientOptions, RegistryClient, RegistryOptions
    from regtool.transports import open_destination, open_source

    dest = make_registry("plain")
    shared = make_layer("shared-between-images", 64 * 1024)
    for tag in ("a", "b"):
        push_built(registry_plain, repo, build_image(f"{repo}:{tag}", layers=1, extra_layers=[shared]), tag)
    results: dict[str, CopyResult] = {}
    with FaultProxy(target=registry_plain.host) as fp:
        options = ClientOptions(default=RegistryOptions(tls_verify=False))
        async with RegistryClient(options) as client:
            copier = Copier(CopyOptions())

            async def one(tag: str) -> None:
                src_ref = parse_image(dref(fp, repo, tag))
                async with await open_source(src_ref, client=client) as src, await open_destination(
                    parse_image(dref(dest, repo, tag)), client=client, source_ref=src_ref
                ) as dst:
                    results[tag] = await copier.copy(src, dst)

            async with anyio.create_task_group() as tg:
                tg.start_soon(one, "a")
                tg.start_soon(one, "b")
        assert fp.count("GET", rf"/blobs/{shared.digest}") == 1
    assert results["a"].blobs_copied + results["b"].blobs_copied == 5  # 2 configs, 2 own layers, 1 shared
    assert results["a"].blobs_skipped + results["b"].blobs_skipped == 1
    assert all(r.action == "copied" for r in results.values())


def test_line_progress_heartbeat() -> None:
    """Long blobs are never silent: a heartbeat line reports bytes done of the total."""
    import io

    from regtool.cli.progress import LineProgress
    from regtool.manifest import Descriptor

    out = io.StringIO()
    progress = LineProgress(stream=out, heartbeat=0.0)
    desc = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", "sha256:" + "a" * 64, 3 * MiB)
    progress.blob_started(desc)
    progress.blob_advanced(desc, MiB)
    progress.blob_finished(desc, "uploaded")
    assert out.getvalue().splitlines() == [
        "Copying blob aaaaaaaaaaaa (3.0 MiB)",
        "  ... 1.0 MiB of 3.0 MiB copied",
        "Copied blob aaaaaaaaaaaa (uploaded, 0.0s)",
    ]


# --------------------------------------------------------------------------- big blobs and memory


# A small launcher forks regtool and reports that child's peak RSS. Measuring straight from pytest would
# not work: Linux carries a process's peak RSS across fork and exec, so a child of the (large) pytest
# process would report pytest's own peak. The launcher's footprint (a bare interpreter) is what a child
# inherits here, far below the limit being checked.
_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, "-m", "regtool.cli.main", *sys.argv[1:]])
_, status, usage = os.wait4(pid, 0)
with open(os.environ["REGTOOL_TEST_RSS_FILE"], "w") as fh:
    fh.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(args: list[str], tmp_path: Path, timeout: float = 600) -> tuple[int, str, float]:
    """Runs regtool in a subprocess; returns (exit code, stderr, peak RSS of the regtool process in MiB)."""
    rss_file = tmp_path / f"rss-{len(list(tmp_path.glob('rss-*')))}"
    env = dict(os.environ, REGISTRY_AUTH_FILE="/nonexistent/auth.json", CONTAINERS_REGISTRIES_CONF="/dev/null",
               REGTOOL_TEST_RSS_FILE=str(rss_file))
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, *args], stdin=subprocess.DEVNULL,
                          capture_output=True, env=env, timeout=timeout, check=False)
    rss_mib = int(rss_file.read_text()) / 1024  # Linux reports KiB
    print(f"peak RSS of regtool {' '.join(args[:1])}: {rss_mib:.1f} MiB")
    return proc.returncode, proc.stderr.decode(errors="replace"), rss_mib


@pytest.mark.slow
def test_big_blob_streams_with_bounded_memory(
    registry_plain: Registry, registry_basic: Registry, repo: str, tmp_path: Path
) -> None:
    img = push_big_image(registry_plain, repo, "big", size=110 * MiB)
    layer = img.layers[0]
    assert layer.size > 100 * MiB
    rc, err, rss = run_measured(["copy", *side_flags(registry_plain, registry_basic),
                                 dref(registry_plain, repo, "big"), dref(registry_basic, repo, "big")], tmp_path)
    assert rc == 0, err
    assert "2 blobs copied" in err
    assert raw(registry_basic, repo, "big") == img.manifest
    head = registry_basic.http.head(f"/v2/{repo}/blobs/{layer.digest}")
    assert head.status_code == 200 and int(head.headers["content-length"]) == layer.size
    assert rss < 100, f"peak RSS {rss:.1f} MiB registry -> registry"
    out = tmp_path / "layout"
    rc, err, rss_oci = run_measured(["copy", "--src-tls-verify=false", dref(registry_plain, repo, "big"),
                                     f"oci:{out}:big"], tmp_path)
    assert rc == 0, err
    blob = out / "blobs" / "sha256" / layer.digest.split(":")[1]
    assert blob.stat().st_size == layer.size
    assert rss_oci < 100, f"peak RSS {rss_oci:.1f} MiB registry -> oci"


# --------------------------------------------------------------------------- signatures and referrers


def _signed_image(reg: Registry, repo: str, tag: str = "v1") -> tuple[PushedImage, PushedImage]:
    img = push_oci_image(reg, repo, tag)
    sig = push_cosign_signature(reg, img)
    return img, sig


def test_signatures_and_referrers_travel(any_registry: Registry, repo: str) -> None:
    img = push_oci_image(any_registry, repo, "v1")
    sig = push_cosign_signature(any_registry, img)
    sbom = push_referrer(any_registry, img)
    sbom_sig = push_cosign_signature(any_registry, sbom)  # a signed SBOM
    flags = side_flags(any_registry, any_registry)
    r = copy_ok(*flags, dref(any_registry, repo, "v1"), dref(any_registry, repo + "-c", "v1"))
    assert cosign_signature_tag(img.digest) in r.stderr and referrers_tag(img.digest) in r.stderr
    dest = repo + "-c"
    assert raw(any_registry, dest, cosign_signature_tag(img.digest)) == sig.manifest
    ref_index = raw(any_registry, dest, referrers_tag(img.digest))
    assert ref_index == raw(any_registry, repo, referrers_tag(img.digest))
    assert raw(any_registry, dest, sbom.digest) == sbom.manifest
    for blob in sbom.layers:
        assert fetch_blob(any_registry, dest, blob.digest) == blob.data
    assert raw(any_registry, dest, cosign_signature_tag(sbom.digest)) == sbom_sig.manifest
    # --remove-signatures: the image only
    r = copy_ok("--remove-signatures", *flags, dref(any_registry, repo, "v1"), dref(any_registry, repo + "-r", "v1"))
    assert list_tags(any_registry, repo + "-r") == ["v1"]
    assert "attached" not in r.stderr


def test_signatures_of_children_travel_with_all(registry_token: Registry, repo: str) -> None:
    idx = push_index(registry_token, repo, "m")
    sigs = {c.digest: push_cosign_signature(registry_token, c) for c in idx.children[:2]}
    index_sig = push_cosign_signature(registry_token, idx)
    flags = side_flags(registry_token, registry_token)
    copy_ok("--all", *flags, dref(registry_token, repo, "m"), dref(registry_token, repo + "-c", "m"))
    for digest, sig in sigs.items():
        assert raw(registry_token, repo + "-c", cosign_signature_tag(digest)) == sig.manifest
    assert raw(registry_token, repo + "-c", cosign_signature_tag(idx.digest)) == index_sig.manifest
    # system mode copies the instance with its own signature, not the index's
    host = idx.child(HOST_PLATFORM)
    copy_ok(*flags, dref(registry_token, repo, "m"), dref(registry_token, repo + "-h", "m"))
    tags = set(list_tags(registry_token, repo + "-h"))
    assert cosign_signature_tag(idx.digest) not in tags
    assert (cosign_signature_tag(host.digest) in tags) == (host.digest in sigs)
    # a new child signature appears: a no-op re-copy of the index finds and carries it
    third = idx.children[2]
    sig3 = push_cosign_signature(registry_token, third)
    r = copy_ok("--all", *flags, dref(registry_token, repo, "m"), dref(registry_token, repo + "-c", "m"))
    assert "already has" in r.stderr
    assert raw(registry_token, repo + "-c", cosign_signature_tag(third.digest)) == sig3.manifest


# --------------------------------------------------------------------------- format conversion


@pytest.mark.parametrize(("push", "fmt", "want"), [
    (push_oci_image, "v2s2", "application/vnd.docker.distribution.manifest.v2+json"),
    (push_docker_image, "oci", "application/vnd.oci.image.manifest.v1+json"),
], ids=["oci-to-v2s2", "v2s2-to-oci"])
def test_format_conversion(
    registry_plain: Registry, repo: str, push: Callable[[Registry, str, str], PushedImage], fmt: str, want: str
) -> None:
    img = push(registry_plain, repo, "v1")
    r = copy_ok(*PLAIN_FLAGS, "--format", fmt, dref(registry_plain, repo, "v1"), dref(registry_plain, repo, fmt))
    data, ctype = fetch_manifest(registry_plain, repo, fmt)
    assert ctype == want and json.loads(data)["mediaType"] == want
    assert f"digest changed from {img.digest} to {sha256(data)}" in r.stderr
    body, orig = json.loads(data), img.manifest_json
    assert [x["digest"] for x in body["layers"]] == [x["digest"] for x in orig["layers"]]
    assert body["config"]["digest"] == orig["config"]["digest"]
    info = json.loads(run_skopeo(["inspect", *registry_plain.skopeo_flags(), dref(registry_plain, repo, fmt)]).stdout)
    assert info["Digest"] == sha256(data)
    assert info["Layers"] == [x["digest"] for x in orig["layers"]]
    # the same format as the source: nothing to convert, digest kept, no note
    same = "oci" if fmt == "v2s2" else "v2s2"
    r = copy_ok(*PLAIN_FLAGS, "--format", same, dref(registry_plain, repo, "v1"), dref(registry_plain, repo, "same"))
    assert raw(registry_plain, repo, "same") == img.manifest and "digest changed" not in r.stderr
    # --preserve-digests refuses conversions up front
    r = run_regtool(["copy", *PLAIN_FLAGS, "--preserve-digests", "--format", fmt, dref(registry_plain, repo, "v1"),
                     dref(registry_plain, repo, "refused")])
    assert r.rc == 2 and "preserve-digests" in one_line_error(r)


def test_format_conversion_of_index(registry_plain: Registry, repo: str) -> None:
    idx = push_index(registry_plain, repo, "m")
    sig = push_cosign_signature(registry_plain, idx)
    r = copy_ok(*PLAIN_FLAGS, "--all", "--format", "v2s2", dref(registry_plain, repo, "m"),
                dref(registry_plain, repo + "-d", "m"))
    data, ctype = fetch_manifest(registry_plain, repo + "-d", "m")
    assert ctype == "application/vnd.docker.distribution.manifest.list.v2+json"
    assert "digest changed" in r.stderr
    assert "not copied" in r.stderr  # the index's signature signs a digest the destination lacks
    assert cosign_signature_tag(sig.digest) not in list_tags(registry_plain, repo + "-d")
    body = json.loads(data)
    assert [m["platform"] for m in body["manifests"]] == [m["platform"] for m in idx.manifest_json["manifests"]]
    for entry in body["manifests"]:
        child, child_type = fetch_manifest(registry_plain, repo + "-d", entry["digest"])
        assert child_type == entry["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
        assert sha256(child) == entry["digest"]
    run_skopeo(["inspect", *registry_plain.skopeo_flags(), "--override-arch", "arm64",
                dref(registry_plain, repo + "-d", "m")])


# --------------------------------------------------------------------------- flags


def test_digestfile_quiet_and_progress_lines(registry_plain: Registry, repo: str, tmp_path: Path) -> None:
    img = push_oci_image(registry_plain, repo, "v1")
    digestfile = tmp_path / "digest"
    r = copy_ok(*PLAIN_FLAGS, "--digestfile", str(digestfile), dref(registry_plain, repo, "v1"),
                f"oci:{tmp_path / 'lay'}:v1")
    assert digestfile.read_text() == img.digest
    assert r.stdout == b""  # stdout is for machine results only
    lines = r.stderr.splitlines()
    assert sum(line.startswith("Copying blob ") for line in lines) == 3
    assert sum(line.startswith("Copied blob ") for line in lines) == 3
    assert f"Wrote manifest {img.digest} as oci:" in r.stderr
    assert lines[-1].startswith(f"Copied {img.digest}: 3 blobs copied")
    for quiet in ("-q", "--quiet"):
        r = copy_ok(*PLAIN_FLAGS, quiet, dref(registry_plain, repo, "v1"), f"oci:{tmp_path / quiet}:v1")
        assert r.stderr == "" and r.stdout == b""
    # no-op with --digestfile still writes the digest
    copy_ok(*PLAIN_FLAGS, dref(registry_plain, repo, "v1"), dref(registry_plain, repo + "-x", "v1"))
    digestfile.unlink()
    r = copy_ok(*PLAIN_FLAGS, "-q", "--digestfile", str(digestfile), dref(registry_plain, repo, "v1"),
                dref(registry_plain, repo + "-x", "v1"))
    assert digestfile.read_text() == img.digest and r.stderr == ""


def test_progress_on_a_tty(registry_plain: Registry, repo: str, tmp_path: Path) -> None:
    """With a terminal on stderr the live (rich) display is used and the copy still succeeds."""
    push_oci_image(registry_plain, repo, "v1")
    master, slave = os.openpty()
    try:
        env = dict(os.environ, REGISTRY_AUTH_FILE="/nonexistent", CONTAINERS_REGISTRIES_CONF="/dev/null",
                   COLUMNS="120", TERM="xterm")
        proc = subprocess.run([sys.executable, "-m", "regtool.cli.main", "copy", *PLAIN_FLAGS,
                               dref(registry_plain, repo, "v1"), f"oci:{tmp_path / 'lay'}:v1"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=env, timeout=120)
        os.close(slave)
        slave = -1
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert proc.returncode == 0, out.decode(errors="replace")
    text = out.decode(errors="replace")
    assert "blob" in text and "total" in text
    assert (tmp_path / "lay" / "index.json").exists()


def test_retry_times_repeats_the_whole_copy(registry_plain: Registry, repo: str, proxy: FaultProxy) -> None:
    img = push_oci_image(registry_plain, repo, "v1")
    rule = FaultRule(method="GET", path_regex=r"/manifests/v1$", kind="status", status=403, times=1)
    proxy.add_rule(rule)
    r = run_regtool(["copy", *PLAIN_FLAGS, dref(proxy, repo, "v1"), dref(proxy, repo + "-r", "v1")])
    assert r.rc == 1 and rule.fired == 1
    one_line_error(r)
    assert "v1" not in list_tags(registry_plain, repo + "-r")
    rule = proxy.add_rule(FaultRule(method="GET", path_regex=r"/manifests/v1$", kind="status", status=403, times=1))
    r = copy_ok(*PLAIN_FLAGS, "--retry-times", "2", "--retry-delay", "0.1", dref(proxy, repo, "v1"),
                dref(proxy, repo + "-r", "v1"))
    assert rule.fired == 1 and "retrying" in r.stderr
    assert raw(registry_plain, repo + "-r", "v1") == img.manifest
    # not-found is not retried
    proxy.reset_stats()
    r = run_regtool(["copy", *PLAIN_FLAGS, "--retry-times", "3", dref(proxy, repo, "nope"), dref(proxy, repo, "x")])
    assert r.rc == 2 and proxy.count("HEAD", r"/manifests/nope") == 1


def test_image_parallel_copies_bounds_transfers(
    registry_plain: Registry, make_registry: MakeRegistry, repo: str
) -> None:
    dest: Registry = make_registry("plain")
    push_oci_image(registry_plain, repo, "v1", layers=6, layer_size=256 * 1024)

    def overlap(fp: FaultProxy) -> int:
        gets = [(r.started, r.finished or r.started) for r in fp.requests("GET", r"/blobs/sha256:")]
        return max(sum(1 for s, e in gets if s <= t < e) for t, _ in gets)

    with FaultProxy(target=registry_plain.host) as fp:
        fp.add_rule(FaultRule(method="GET", path_regex=r"/blobs/sha256:", kind="stall", seconds=0.15, times=None))
        copy_ok(*PLAIN_FLAGS, "--image-parallel-copies", "1", dref(fp, repo, "v1"), dref(dest, repo, "one"))
        assert blob_requests(fp, "GET") == 7
        assert overlap(fp) == 1
        fp.reset_stats()
        copy_ok(*PLAIN_FLAGS, "--image-parallel-copies", "4", dref(fp, repo, "v1"), dref(dest, repo + "-4", "v1"))
        assert overlap(fp) == 4
    r = run_regtool(["copy", *PLAIN_FLAGS, "--image-parallel-copies", "0", dref(registry_plain, repo, "v1"),
                     dref(dest, repo, "zero")])
    assert r.rc == 2
    one_line_error(r)


def test_nondistributable_layers(
    registry_plain: Registry, make_registry: MakeRegistry, repo: str, tmp_path: Path
) -> None:
    dest: Registry = make_registry("plain")
    foreign_data = make_layer("foreign", 2048)
    foreign = Blob.of(foreign_data.data or b"", "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                      urls=("https://example.com/foreign.tar.gz",), diff_id=foreign_data.diff_id)
    built = build_image(repo, layers=1, extra_layers=[foreign])
    pushed = push_built(registry_plain, repo, built, "v1")
    push_blob(registry_plain, repo, foreign)  # this registry happens to hold it
    copy_ok(*PLAIN_FLAGS, dref(registry_plain, repo, "v1"), dref(dest, repo, "v1"))
    assert raw(dest, repo, "v1") == pushed.manifest
    assert dest.http.head(f"/v2/{repo}/blobs/{foreign.digest}").status_code == 404
    copy_ok(*PLAIN_FLAGS, dref(registry_plain, repo, "v1"), f"oci:{tmp_path / 'lay'}:v1")
    assert not (tmp_path / "lay/blobs/sha256" / foreign.digest.split(":")[1]).exists()
    r = copy_ok(*PLAIN_FLAGS, "--include-nondistributable", dref(registry_plain, repo, "v1"),
                dref(dest, repo + "-all", "v1"))
    assert "3 blobs copied" in r.stderr
    assert fetch_blob(dest, repo + "-all", foreign.digest) == foreign.data


# --------------------------------------------------------------------------- delete


def test_delete_resolves_tag_and_deletes_by_digest(any_registry: Registry, repo: str) -> None:
    img = push_oci_image(any_registry, repo, "v1")
    push_oci_image(any_registry, repo, "keep", seed="other")
    r = run_regtool(["delete", *any_registry.skopeo_flags(), dref(any_registry, repo, "v1")])
    assert r.rc == 0, r.stderr
    assert img.digest in r.stderr
    assert not manifest_exists(any_registry, repo, img.digest)
    inspect = run_regtool(["inspect", *any_registry.skopeo_flags(), dref(any_registry, repo, "v1")])
    assert inspect.rc == 2
    assert list_tags(any_registry, repo) == ["keep"]
    again = run_regtool(["delete", *any_registry.skopeo_flags(), dref(any_registry, repo, "v1")])
    assert again.rc == 2
    one_line_error(again)


def test_delete_request_sequence(registry_plain: Registry, repo: str, proxy: FaultProxy) -> None:
    img = push_oci_image(registry_plain, repo, "v1")
    r = run_regtool(["delete", "--tls-verify=false", dref(proxy, repo, "v1")])
    assert r.rc == 0, r.stderr
    assert [(x.method, x.path) for x in proxy.requests() if "/manifests/" in x.path] == [
        ("HEAD", f"/v2/{repo}/manifests/v1"),
        ("DELETE", f"/v2/{repo}/manifests/{img.digest}"),
    ]
    r = run_regtool(["delete", "--tls-verify=false", f"oci:{repo}"])
    assert r.rc == 2
    one_line_error(r)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("args", "needle"), [
    (["nope://x/y:1", "oci:/tmp/regtool-never"], "unknown transport"),
    (["registry.example/x:1", "oci:/tmp/regtool-never"], 'did you mean "docker://registry.example/x:1"'),
    (["alpine", "oci:/tmp/regtool-never"], "missing transport"),
    (["docker://Bad..Ref//x", "oci:/tmp/regtool-never"], "invalid image name"),
    (["docker://127.0.0.1:1/x:1", "docker-archive:/tmp/regtool-never"], "unknown transport"),
    (["--multi-arch", "bogus", "docker://127.0.0.1:1/x:1", "oci:/tmp/regtool-never"], "platform"),
    (["--platform", "linux", "docker://127.0.0.1:1/x:1", "oci:/tmp/regtool-never"], "platform"),
    (["--all", "--multi-arch", "index-only", "docker://127.0.0.1:1/x:1", "oci:/tmp/regtool-never"], "--all"),
    (["--multi-arch", "index-only", "--format", "oci", "docker://127.0.0.1:1/x:1", "oci:/tmp/regtool-never"],
     "index-only"),
])
def test_bad_input_exits_2(args: list[str], needle: str) -> None:
    r = run_regtool(["copy", *args])
    assert r.rc == 2, r.stderr
    assert needle in one_line_error(r)
    assert not os.path.exists("/tmp/regtool-never")


def test_missing_source_writes_nothing(registry_plain: Registry, repo: str, tmp_path: Path) -> None:
    for dest in (f"oci:{tmp_path / 'lay'}:x", f"dir:{tmp_path / 'dir'}", f"oci-archive:{tmp_path / 'a.tar'}",
                 dref(registry_plain, repo + "-d", "x")):
        r = run_regtool(["copy", *PLAIN_FLAGS, dref(registry_plain, repo, "missing"), dest])
        assert r.rc == 2, r.stderr
        one_line_error(r)
    assert list(tmp_path.iterdir()) == []
    assert list_tags(registry_plain, repo + "-d") == []
    r = run_regtool(["copy", f"oci:{tmp_path / 'nolayout'}:x", f"dir:{tmp_path / 'dir'}"])
    assert r.rc == 2
    one_line_error(r)
    assert list(tmp_path.iterdir()) == []
