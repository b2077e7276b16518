"""``regtool sync`` with regtool's own config, against the real registries.

Every claim of the sync issue that needs a registry is checked here: tag filters, catalogs,
platforms, signatures, dry runs, HEAD-only no-op runs, pruning and its safety rules, shards, config
errors before any traffic, 429 handling, reports, metrics, signals and the job lock. Request-level
claims are read from a FaultProxy's request log. skopeo parity lives in test_sync_skopeo_parity.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from regtool.sync.shard import shard_of
from tests.support.cli import Result, run_regtool
from tests.support.images import (
    OCI_INDEX,
    build_image,
    cosign_signature_tag,
    fetch_manifest,
    head_digest,
    list_tags,
    make_layer,
    push_built,
    push_cosign_signature,
    push_index,
    push_oci_image,
    push_referrer,
    referrers_tag,
    tag_state,
)
from tests.support.netproxy import FaultProxy, FaultRule
from tests.support.registries import Registry

ROOT = Path(__file__).resolve().parent.parent
REPORT_SCHEMA = ROOT / "regtool" / "schemas" / "sync-report.schema.json"
WRITE_METHODS = ("PUT", "POST", "PATCH", "DELETE")


# --------------------------------------------------------------------------- helpers


def write_config(tmp_path: Path, *parts: str, name: str = "sync.yaml", **subs: str) -> Path:
    """Writes a config from parts, each dedented on its own; ``@KEY@`` placeholders are replaced now
    (``${VAR}`` is left to regtool)."""
    text = "".join(textwrap.dedent(part) for part in parts)
    for key, value in subs.items():
        text = text.replace(f"@{key}@", value)
    path = tmp_path / name
    path.write_text(text)
    return path


def sync(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> Result:
    r = run_regtool(["sync", *args], env=env, timeout=timeout)
    assert "Traceback" not in r.stderr, r.stderr  # every outcome is a message and an exit code
    return r


def sync_ok(*args: str, env: dict[str, str] | None = None) -> Result:
    r = sync(*args, env=env)
    assert r.rc == 0, r.stderr
    return r


def layout_entries(path: Path) -> dict[str, str]:
    """``org.opencontainers.image.ref.name`` → digest of an OCI layout's index.json."""
    index = json.loads((path / "index.json").read_text())
    out: dict[str, str] = {}
    for entry in index["manifests"]:
        name = (entry.get("annotations") or {}).get("org.opencontainers.image.ref.name")
        if name:
            out[name] = entry["digest"]
    return out


def read_report(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(path.read_text())
    jsonschema.validate(report, json.loads(REPORT_SCHEMA.read_text()))
    return report


def actions(report: dict[str, Any]) -> dict[str, str]:
    """target → action of every image in a report."""
    return {img["target"]: img["action"] for img in report["images"]}


def writes(*proxies: FaultProxy) -> int:
    return sum(fp.count(m) for fp in proxies for m in WRITE_METHODS)


def regtool_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["REGISTRY_AUTH_FILE"] = "/nonexistent/regtool-test-auth.json"
    env.setdefault("CONTAINERS_REGISTRIES_CONF", "/dev/null")
    env.update(extra or {})
    return env


def start_regtool(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``regtool ARGS`` in the background (for signals and locks)."""
    return subprocess.Popen(
        [sys.executable, "-m", "regtool.cli.main", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=regtool_env(env),
    )


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def finish(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, err.decode(errors="replace")


@pytest.fixture
def proxy(registry_plain: Registry) -> Iterator[FaultProxy]:
    """A FaultProxy in front of the plain registry (no faults unless a test adds rules)."""
    with FaultProxy(target=registry_plain.host) as fp:
        yield fp


PLAIN_REGISTRY = """\
registries:
  "${SRC}": {tls-verify: false}
"""
TWO_REGISTRIES = """\
registries:
  "${SRC}": {tls-verify: false}
  "${DST}": {tls-verify: false}
"""


# --------------------------------------------------------------------------- tag filters, layouts


FILTER_TAGS = ["1.0.0", "1.1.0", "1.1.1", "1.2.0", "2.0.0", "2.0.0-rc.1", "v3.0.0", "latest", "dev"]


def test_native_config_tag_filters_to_registry_and_layout(registry_plain: Registry, repo: str, tmp_path: Path) -> None:
    src = registry_plain
    digests: dict[str, str] = {}
    for tag in FILTER_TAGS:
        if tag == "1.2.0":
            img = push_index(src, repo, tag, platforms=("linux/amd64", "linux/arm64/v8"))
        else:
            img = push_oci_image(src, repo, tag, layers=1, layer_size=256)
        digests[tag] = img.digest
    out = tmp_path / "out"
    cfg = write_config(
        tmp_path,
        r"""
        version: 1
        job: filters
        registries:
          "${SRC}": {tls-verify: false}
        mirrors:
          - name: include-exclude
            source: ${SRC}/${REPO}
            tags:
              include: ['\d+\.\d+\.\d+']
              exclude: ['1\.1\..*']
            targets:
              - docker://${SRC}/a
              - oci:${OUT}/layout
          - name: semver
            source: {registry: "${SRC}", repository: "${REPO}"}
            tags: {semver: ">=1.1 <3"}
            targets: ["docker://${REGTOOL_TEST_SURELY_UNSET:-@HOST@}/b"]
          - name: latest-two
            source: ${SRC}/${REPO}
            tags: {latest: 2, exact: [latest]}
            targets: ["docker://${SRC}/c"]
          - name: exact
            source: ${SRC}/${REPO}
            tags: {exact: [dev, "1.0.0"], digests: ["@DIGEST@"]}
            naming: {prefix: exact}
            targets: ["oci:${OUT}/layout"]
        """,
        HOST=src.host,
        DIGEST=digests["v3.0.0"],
    )
    env = {"SRC": src.host, "REPO": repo, "OUT": str(out)}
    report_file = tmp_path / "report.json"
    sync_ok("--config", str(cfg), "--report", str(report_file), env=env)

    # the expectations, computed from the source without regtool's filter code
    anchored = [t for t in FILTER_TAGS if re.fullmatch(r"\d+\.\d+\.\d+", t) and not re.fullmatch(r"1\.1\..*", t)]
    assert anchored == ["1.0.0", "1.2.0", "2.0.0"]
    semver = ["1.1.0", "1.1.1", "1.2.0", "2.0.0"]  # >=1.1 <3: no prerelease, v3.0.0 is 3.0.0
    latest_two = ["2.0.0", "v3.0.0", "latest"]  # the two highest releases, plus the exact tag
    assert tag_state(src, f"a/{repo}") == {t: digests[t] for t in anchored}
    assert tag_state(src, f"b/{repo}") == {t: digests[t] for t in semver}
    assert tag_state(src, f"c/{repo}") == {t: digests[t] for t in latest_two}
    expected_layout = {f"{repo}:{t}": digests[t] for t in anchored}
    expected_layout |= {f"exact/{repo}:{t}": digests[t] for t in ("dev", "1.0.0")}
    expected_layout[f"exact/{repo}@{digests['v3.0.0']}"] = digests["v3.0.0"]  # by digest
    assert layout_entries(out / "layout") == expected_layout
    # the index went whole into the layout: its children are stored too
    index = json.loads((out / "layout/blobs/sha256" / digests["1.2.0"].split(":")[1]).read_bytes())
    for child in index["manifests"]:
        assert (out / "layout/blobs/sha256" / child["digest"].split(":")[1]).is_file()

    report = read_report(report_file)
    assert report["job"] == "filters" and report["success"] is True and report["interrupted"] is False
    assert report["counts"] == {"copied": 3 + 3 + 4 + 3 + 3}
    for image in report["images"]:
        assert image["source_digest"] == image["target_digest"]

    # a second run finds everything in step
    sync_ok("--config", str(cfg), "--report", str(report_file), env=env)
    assert read_report(report_file)["counts"] == {"skipped": 16}


def test_images_opening_a_new_layout_while_another_writes_it(
    registry_plain: Registry, repo: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    """One image is half-written into a brand-new layout (blobs, no index yet) when another opens it."""
    reg = registry_plain
    first = push_oci_image(reg, f"{repo}-a", "1", layers=2, layer_size=2048)
    second = push_oci_image(reg, f"{repo}-b", "1", layers=1, layer_size=2048)
    # the first image's second layer arrives late; the second image's plan finishes in between
    proxy.add_rule(FaultRule(method="GET", path_regex=first.layers[1].digest, kind="stall", seconds=3, times=None))
    proxy.add_rule(FaultRule(method="HEAD", path_regex=rf"{repo}-b/manifests/1$", kind="stall", seconds=1, times=None))
    cfg = write_config(
        tmp_path,
        PLAIN_REGISTRY,
        """
        mirrors:
          - {source: "${SRC}/${REPO}-a", targets: ["oci:${OUT}/new"]}
          - {source: "${SRC}/${REPO}-b", targets: ["oci:${OUT}/new"]}
        """,
    )
    sync_ok("--config", str(cfg), env={"SRC": proxy.netloc, "REPO": repo, "OUT": str(tmp_path)})
    assert layout_entries(tmp_path / "new") == {f"{repo}-a:1": first.digest, f"{repo}-b:1": second.digest}


def test_namespace_via_catalog_with_allow_and_deny(make_registry: Callable[[str], Registry], tmp_path: Path) -> None:
    reg = make_registry("plain")
    pushed = {}
    for name in ("ns/app", "ns/web", "ns/app-sandbox", "ns/sub/tool", "nsx/app", "other/app"):
        pushed[name] = push_oci_image(reg, name, "1", layers=1, layer_size=128).digest
    cfg = write_config(
        tmp_path,
        PLAIN_REGISTRY,
        r"""
        mirrors:
          - name: catalog
            source:
              registry: ${SRC}
              namespace: ns
              allow: ['ns/(app|web|sub/.*)(-.*)?']
              deny: ['ns/.*-sandbox']
            targets: ["docker://${SRC}/mirror"]
        """,
    )
    sync_ok("--config", str(cfg), env={"SRC": reg.host})
    catalog = reg.http.get("/v2/_catalog").json()["repositories"]
    mirrored = sorted(r for r in catalog if r.startswith("mirror/"))
    assert mirrored == ["mirror/ns/app", "mirror/ns/sub/tool", "mirror/ns/web"]
    for name in ("ns/app", "ns/sub/tool", "ns/web"):
        assert tag_state(reg, f"mirror/{name}") == {"1": pushed[name]}


def test_platforms_subset_and_all(registry_plain: Registry, repo: str, tmp_path: Path) -> None:
    src = registry_plain
    index = push_index(src, repo, "1")
    amd = push_oci_image(src, repo, "amd", platform="linux/amd64", layers=1)
    push_oci_image(src, repo, "arm", platform="linux/arm64/v8", layers=1)
    cfg = write_config(
        tmp_path,
        PLAIN_REGISTRY,
        """
        mirrors:
          - name: subset
            source: ${SRC}/${REPO}
            platforms: [linux/amd64]
            targets: ["docker://${SRC}/subset"]
          - name: all
            source: ${SRC}/${REPO}
            tags: ["1"]
            platforms: all
            targets: ["docker://${SRC}/all"]
        """,
    )
    env = {"SRC": src.host, "REPO": repo}
    report_file = tmp_path / "report.json"
    sync_ok("--config", str(cfg), "--report", str(report_file), env=env)

    # [linux/amd64]: a new index with only that platform, its instance unchanged
    raw, media_type = fetch_manifest(src, f"subset/{repo}", "1")
    assert media_type == OCI_INDEX
    subset = json.loads(raw)
    source_index = json.loads(index.manifest)
    amd_entries = [m for m in source_index["manifests"] if m["platform"] == {"architecture": "amd64", "os": "linux"}]
    assert subset["manifests"] == amd_entries
    assert head_digest(src, f"subset/{repo}", "1") != index.digest
    assert head_digest(src, f"subset/{repo}", amd_entries[0]["digest"]) == amd_entries[0]["digest"]
    # a single-platform image is copied when it matches, and left out otherwise
    assert sorted(list_tags(src, f"subset/{repo}")) == ["1", "amd"]
    assert head_digest(src, f"subset/{repo}", "amd") == amd.digest
    # all: the index and every instance, digest kept
    assert head_digest(src, f"all/{repo}", "1") == index.digest
    for child in source_index["manifests"]:
        assert head_digest(src, f"all/{repo}", child["digest"]) == child["digest"]

    first = actions(read_report(report_file))
    assert first[f"docker://{src.host}/subset/{repo}:arm"] == "skipped"
    # second run: the subset index is recognised as in step
    sync_ok("--config", str(cfg), "--report", str(report_file), env=env)
    assert set(actions(read_report(report_file)).values()) == {"skipped"}


# --------------------------------------------------------------------------- signatures and referrers


def test_signature_and_referrer_tags_are_carried_unless_turned_off(
    registry_plain: Registry, repo: str, tmp_path: Path
) -> None:
    src = registry_plain
    image = push_oci_image(src, repo, "signed", layers=1)
    sig = push_cosign_signature(src, image)
    index = push_index(src, repo, "multi")
    index_sig = push_cosign_signature(src, index)
    push_referrer(src, index)
    push_oci_image(src, repo, "plain", layers=1)
    source = tag_state(src, repo)
    assert cosign_signature_tag(image.digest) in source and referrers_tag(index.digest) in source
    cfg = write_config(
        tmp_path,
        PLAIN_REGISTRY,
        """
        mirrors:
          - name: sigs-on
            source: ${SRC}/${REPO}
            targets: ["docker://${SRC}/on"]
          - name: no-signatures
            source: ${SRC}/${REPO}
            signatures: false
            targets: ["docker://${SRC}/nosig"]
          - name: nothing
            source: ${SRC}/${REPO}
            signatures: false
            referrers: false
            targets: ["docker://${SRC}/nothing"]
        """,
    )
    report_file = tmp_path / "report.json"
    sync_ok("--config", str(cfg), "--report", str(report_file), env={"SRC": src.host, "REPO": repo})
    images = {"signed", "multi", "plain"}
    assert tag_state(src, f"on/{repo}") == source  # every tag, digests unchanged
    no_sigs = {t: d for t, d in source.items() if t in images or t == referrers_tag(index.digest)}
    assert tag_state(src, f"nosig/{repo}") == no_sigs
    assert tag_state(src, f"nothing/{repo}") == {t: source[t] for t in images}
    # the report names what travelled with each image
    attached = {img["target"]: sorted(img["attachments"]) for img in read_report(report_file)["images"]}
    assert attached[f"docker://{src.host}/on/{repo}:signed"] == [sig.tag]
    assert attached[f"docker://{src.host}/on/{repo}:multi"] == sorted([index_sig.tag, referrers_tag(index.digest)])
    assert attached[f"docker://{src.host}/nosig/{repo}:multi"] == [referrers_tag(index.digest)]
    assert attached[f"docker://{src.host}/nothing/{repo}:multi"] == []


def test_a_signature_added_later_is_carried_by_the_next_run(
    registry_plain: Registry, repo: str, tmp_path: Path
) -> None:
    src = registry_plain
    image = push_oci_image(src, repo, "1", layers=1)
    cfg = write_config(
        tmp_path,
        PLAIN_REGISTRY, "mirrors:\n  - {source: '${SRC}/${REPO}', targets: ['docker://${SRC}/late']}\n",
    )
    env = {"SRC": src.host, "REPO": repo}
    sync_ok("--config", str(cfg), env=env)
    sig = push_cosign_signature(src, image)
    report_file = tmp_path / "report.json"
    sync_ok("--config", str(cfg), "--report", str(report_file), env=env)
    assert tag_state(src, f"late/{repo}") == {"1": image.digest, sig.tag or "": sig.digest}
    [result] = read_report(report_file)["images"]
    assert result["action"] == "skipped" and result["attachments"] == [sig.tag]


# --------------------------------------------------------------------------- dry run, no-op runs


def test_dry_run_prints_the_plan_and_changes_nothing(
    registry_plain: Registry, repo: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    reg = registry_plain
    same = push_oci_image(reg, repo, "1.0", layers=1)
    push_oci_image(reg, repo, "2.0", layers=1)
    push_oci_image(reg, repo, "3.0", layers=1)
    target = f"dry/{repo}"
    push_oci_image(reg, target, "1.0", seed=f"{repo}:1.0", layers=1)  # identical
    push_oci_image(reg, target, "2.0", seed="an older 2.0", layers=1)  # differs
    old = push_oci_image(reg, target, "old", layers=1)  # gone upstream
    assert head_digest(reg, target, "1.0") == same.digest
    before = tag_state(reg, target)
    cfg = write_config(
        tmp_path,
        PLAIN_REGISTRY,
        """
        mirrors:
          - source: ${SRC}/${REPO}
            prune: true
            targets: ["docker://${SRC}/dry"]
        """,
    )
    proxy.reset_stats()
    r = sync_ok("--config", str(cfg), "--dry-run", env={"SRC": proxy.netloc, "REPO": repo})
    src_ref = f"docker://{proxy.netloc}/{repo}"
    dst_ref = f"docker://{proxy.netloc}/{target}"
    plan = sorted(tuple(line.split("\t")) for line in r.text.splitlines())
    assert plan == sorted(
        [
            ("skipped", f"{src_ref}:1.0", f"{dst_ref}:1.0"),
            ("would-copy", f"{src_ref}:2.0", f"{dst_ref}:2.0"),
            ("would-copy", f"{src_ref}:3.0", f"{dst_ref}:3.0"),
            ("would-prune", src_ref, f"{dst_ref}:old"),
        ]
    ), r.text
    assert writes(proxy) == 0, [(q.method, q.path) for q in proxy.requests()]
    assert proxy.count("HEAD", r"/manifests/") >= 6  # real existence checks, both sides
    assert proxy.count("GET", r"/blobs/") == 0
    assert tag_state(reg, target) == before
    assert head_digest(reg, target, "old") == old.digest


def test_second_run_is_a_noop_of_heads(registry_plain: Registry, repo: str, tmp_path: Path) -> None:
    reg = registry_plain
    push_index(reg, repo, "1.0")
    signed = push_oci_image(reg, repo, "2.0", layers=2)
    push_cosign_signature(reg, signed)
    with_sbom = push_oci_image(reg, repo, "3.0", layers=1)
    push_referrer(reg, with_sbom)
    second = f"{repo}-b"
    push_oci_image(reg, second, "x", layers=1)
    cfg = write_config(
        tmp_path,
        """
        registries:
          "${SRC}": {tls-verify: false}
          "${DST}": {tls-verify: false}
        mirrors:
          - name: whole
            source: ${SRC}/${REPO}
            targets: ["docker://${DST}/noop", "oci:${OUT}/layout"]
          - name: exact
            source: ${SRC}/${REPO}
            tags: ["2.0"]
            targets: ["docker://${DST}/noop-exact"]
          - name: other
            source: ${SRC}/${REPO}-b:x
            targets: ["docker://${DST}/noop"]
        """,
    )
    with FaultProxy(target=reg.host) as src_fp, FaultProxy(target=reg.host) as dst_fp:
        env = {"SRC": src_fp.netloc, "DST": dst_fp.netloc, "REPO": repo, "OUT": str(tmp_path)}
        report_file = tmp_path / "report.json"
        sync_ok("--config", str(cfg), "--report", str(report_file), env=env)
        assert set(actions(read_report(report_file)).values()) == {"copied"}
        src_fp.reset_stats()
        dst_fp.reset_stats()

        sync_ok("--config", str(cfg), "--report", str(report_file), env=env)
        report = read_report(report_file)
        assert set(actions(report).values()) == {"skipped"} and len(report["images"]) == 3 + 3 + 1 + 1

        def non_heads(fp: FaultProxy) -> list[tuple[str, str]]:
            return [(q.method, q.path) for q in fp.requests() if q.method != "HEAD" and q.path != "/v2/"]

        # source: HEADs, plus one tag listing per source repository (the two entries of REPO share it)
        listed = non_heads(src_fp)
        assert sorted(listed) == [("GET", f"/v2/{repo}-b/tags/list"), ("GET", f"/v2/{repo}/tags/list")], listed
        assert non_heads(dst_fp) == []
        # GET /v2/ is the client's HTTP-or-HTTPS probe for tls-verify: false hosts, no manifest or blob
        assert {q.path for q in src_fp.requests("GET") + dst_fp.requests("GET")} <= {"/v2/", *(p for _, p in listed)}
        assert src_fp.count("HEAD") > 0 and dst_fp.count("HEAD") > 0


def test_several_targets_read_each_source_manifest_once(
    registry_plain: Registry, repo: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    reg = registry_plain
    index = push_index(reg, repo, "1")
    cfg = write_config(
        tmp_path,
        TWO_REGISTRIES,
        """
        mirrors:
          - source: ${SRC}/${REPO}
            targets: ["docker://${DST}/first", "docker://${DST}/second", "oci:${OUT}/layout"]
        """,
    )
    # the source behind the proxy, the targets on another host: every blob really travels
    sync_ok("--config", str(cfg), env={"SRC": proxy.netloc, "DST": reg.host, "REPO": repo, "OUT": str(tmp_path)})
    gets = sorted(q.path.rsplit("/", 1)[1] for q in proxy.requests("GET", r"/manifests/"))
    assert gets == sorted(["1", *(c.digest for c in index.children)])
    for target in (f"first/{repo}", f"second/{repo}"):
        assert head_digest(reg, target, "1") == index.digest
    assert layout_entries(tmp_path / "layout") == {f"{repo}:1": index.digest}


def test_a_blob_shared_by_many_images_moves_once(
    registry_plain: Registry, repo: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    reg = registry_plain
    base = make_layer(f"{repo}/base", 8192)
    for i in range(6):
        push_built(reg, repo, build_image(f"{repo}:{i}", layers=1, layer_size=64, extra_layers=[base]), f"v{i}")
    cfg = write_config(
        tmp_path, TWO_REGISTRIES, "mirrors:\n  - {source: '${SRC}/${REPO}', targets: ['docker://${DST}/shared']}\n"
    )
    report_file = tmp_path / "report.json"
    sync_ok("--config", str(cfg), "--report", str(report_file),
            env={"SRC": proxy.netloc, "DST": reg.host, "REPO": repo})
    assert proxy.count("GET", rf"/blobs/{base.digest}$") == 1
    assert read_report(report_file)["counts"] == {"copied": 6}
    assert sorted(list_tags(reg, f"shared/{repo}")) == [f"v{i}" for i in range(6)]


def test_immutable_tags_are_not_checked_again(
    registry_plain: Registry, repo: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    reg = registry_plain
    push_oci_image(reg, repo, "1.0.0", layers=1, layer_size=64)
    push_oci_image(reg, repo, "latest", layers=1, layer_size=64)
    cfg = write_config(
        tmp_path,
        TWO_REGISTRIES,
        r"""
        mirrors:
          - source: ${SRC}/${REPO}
            immutable-tags: ['\d+\.\d+\.\d+']
            targets: ["docker://${DST}/immutable"]
        """,
    )
    env = {"SRC": proxy.netloc, "DST": reg.host, "REPO": repo}
    sync_ok("--config", str(cfg), env=env)
    push_oci_image(reg, repo, "1.0.0", seed="moved upstream", layers=1, layer_size=64)
    proxy.reset_stats()
    report_file = tmp_path / "report.json"
    sync_ok("--config", str(cfg), "--report", str(report_file), env=env)
    heads = [q.path for q in proxy.requests("HEAD")]
    assert heads == [f"/v2/{repo}/manifests/latest"], heads  # nothing at all for the immutable tag
    assert set(actions(read_report(report_file)).values()) == {"skipped"}


def test_airgap_export_to_a_layout_and_import(registry_plain: Registry, repo: str, tmp_path: Path) -> None:
    reg = registry_plain
    index = push_index(reg, repo, "1.0")
    image = push_oci_image(reg, repo, "2.0", layers=1)
    sig = push_cosign_signature(reg, image)
    export = write_config(
        tmp_path,
        PLAIN_REGISTRY,
        """
        mirrors:
          - source: ${SRC}/${REPO}
            targets: ["oci:${OUT}/usb"]
        """,
        name="export.yaml",
    )
    imported = write_config(
        tmp_path,
        PLAIN_REGISTRY,
        """
        mirrors:
          - source: {oci: "${OUT}/usb"}
            targets: ["docker://${SRC}/imported"]
        """,
        name="import.yaml",
    )
    env = {"SRC": reg.host, "REPO": repo, "OUT": str(tmp_path)}
    sync_ok("--config", str(export), env=env)
    sync_ok("--config", str(imported), env=env)
    state = tag_state(reg, f"imported/{repo}")
    assert state == {"1.0": index.digest, "2.0": image.digest, sig.tag or "": sig.digest}
    report_file = tmp_path / "report.json"
    sync_ok("--config", str(imported), "--report", str(report_file), env=env)
    assert set(actions(read_report(report_file)).values()) == {"skipped"}


def test_credentials_from_the_environment_and_tls_files(
    registry_token: Registry, registry_basic: Registry, repo: str, tmp_path: Path
) -> None:
    img = push_index(registry_token, repo, "1")
    secret = tmp_path / "basic-password"
    secret.write_text(f"{registry_basic.password}\n")
    cfg = write_config(
        tmp_path,
        """
        registries:
          "${SRC}":
            ca-file: ${CA}
            credentials: {username: "${REG_USER}", password-env: REG_PASSWORD}
          "${DST}":
            cert-dir: ${CERTS}
            credentials: {username: "${REG_USER}", password-file: basic-password}
        mirrors:
          - source: ${SRC}/${REPO}
            targets: ["docker://${DST}/authed"]
        """,
    )
    env = {
        "SRC": registry_token.host,
        "DST": registry_basic.host,
        "REPO": repo,
        "CA": str(registry_token.ca_file),
        "CERTS": str(registry_basic.cert_dir),
        "REG_USER": registry_token.username or "",
        "REG_PASSWORD": registry_token.password or "",
    }
    sync_ok("--config", str(cfg), env=env)
    assert head_digest(registry_basic, f"authed/{repo}", "1") == img.digest
    r = sync("--config", str(cfg), env={**env, "REG_PASSWORD": "wrong"})
    assert r.rc == 1 and "401" in r.stderr, r.stderr  # a wrong password fails the image, not the run
    missing = {k: v for k, v in env.items() if k != "REG_PASSWORD"}
    r = sync("--config", str(cfg), env=missing)
    assert r.rc == 2 and "REG_PASSWORD" in r.stderr, r.stderr  # a missing secret: before any traffic


# --------------------------------------------------------------------------- pruning


def prune_config(tmp_path: Path, max_prune: int = 2) -> Path:
    return write_config(
        tmp_path,
        PLAIN_REGISTRY,
        f"""
        mirrors:
          - source: ${{SRC}}/${{REPO}}
            prune: {{max-prune: {max_prune}}}
            targets: ["docker://${{DST}}/pruned"]
        """,
    )


def delete_tag(reg: Registry, repo: str, tag: str) -> None:
    digest = head_digest(reg, repo, tag)
    r = reg.http.delete(f"/v2/{repo}/manifests/{digest}")
    assert r.status_code == 202, r.text


def test_pruning_rules(registry_plain: Registry, repo: str, tmp_path: Path) -> None:
    reg = registry_plain
    imgs = {tag: push_oci_image(reg, repo, tag, layers=1, layer_size=64) for tag in ("a1", "a2", "a3", "a4", "keep")}
    push_cosign_signature(reg, imgs["a1"])
    cfg = prune_config(tmp_path, max_prune=2)
    env = {"SRC": reg.host, "DST": reg.host, "REPO": repo}
    sync_ok("--config", str(cfg), env=env)
    target = f"pruned/{repo}"
    # a target-only tag on a digest a kept tag points at, and one on an instance of a kept index
    push_built(reg, target, build_image(f"{repo}:keep", layers=1, layer_size=64), "alias")
    kept_index = push_index(reg, repo, "idx")
    sync_ok("--config", str(cfg), env=env)
    child = kept_index.children[0]
    reg.http.put(
        f"/v2/{target}/manifests/child-alias", content=child.manifest, headers={"Content-Type": child.media_type}
    ).raise_for_status()
    for tag in ("a1", "a2", "a3"):
        delete_tag(reg, repo, tag)
    before = tag_state(reg, target)
    assert cosign_signature_tag(imgs["a1"].digest) in before
    # pruning is opt-in: the same entry without it leaves the target alone
    no_prune = write_config(tmp_path, cfg.read_text().replace("prune: {", "x-prune: {"), name="no-prune.yaml")
    sync_ok("--config", str(no_prune), env=env)
    assert tag_state(reg, target) == before

    report_file = tmp_path / "report.json"
    r = sync("--config", str(cfg), "--dry-run", "--report", str(report_file), env=env)
    assert r.rc == 1 and "max-prune 2" in r.stderr, r.stderr  # the limit is an error worth a look
    would = sorted(line.split("\t")[2] for line in r.text.splitlines() if line.startswith("would-prune"))
    assert would == [f"docker://{reg.host}/{target}:a1", f"docker://{reg.host}/{target}:a2"]
    assert tag_state(reg, target) == before

    r = sync("--config", str(cfg), "--report", str(report_file), env=env)
    assert r.rc == 1
    pruned = sorted(t for t, a in actions(read_report(report_file)).items() if a == "pruned")
    assert pruned == [f"docker://{reg.host}/{target}:a1", f"docker://{reg.host}/{target}:a2"]
    after = tag_state(reg, target)
    assert set(before) - set(after) == {"a1", "a2"}
    assert cosign_signature_tag(imgs["a1"].digest) in after  # never signature tags
    assert after["alias"] == imgs["keep"].digest  # never a digest a kept tag points at
    assert after["child-alias"] == child.digest  # ... nor an instance of a kept index

    sync_ok("--config", str(cfg), env=env)  # the rest, within the limit now
    assert set(tag_state(reg, target)) == set(after) - {"a3"}


def test_pruning_unmatched_and_protect(registry_plain: Registry, repo: str, tmp_path: Path) -> None:
    reg = registry_plain
    for tag in ("1.0", "1.1", "2.0", "release-0.9"):
        push_oci_image(reg, repo, tag, layers=1, layer_size=64)
    env = {"SRC": reg.host, "DST": reg.host, "REPO": repo}
    cfg = prune_config(tmp_path)
    sync_ok("--config", str(cfg), env=env)
    narrowed = write_config(
        tmp_path,
        PLAIN_REGISTRY,
        r"""
        mirrors:
          - source: ${SRC}/${REPO}
            tags: {include: ['2\..*']}
            prune: {unmatched: true, protect: ['release-.*'], max-prune: 5}
            targets: ["docker://${DST}/pruned"]
        """,
        name="narrow.yaml",
    )
    sync_ok("--config", str(narrowed), env=env)
    assert sorted(list_tags(reg, f"pruned/{repo}")) == ["2.0", "release-0.9"]


def test_no_pruning_when_the_upstream_listing_fails_or_is_empty(
    registry_plain: Registry, repo: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    reg = registry_plain
    push_oci_image(reg, repo, "1", layers=1, layer_size=64)
    cfg = prune_config(tmp_path, max_prune=10)
    env = {"SRC": proxy.netloc, "DST": proxy.netloc, "REPO": repo}
    sync_ok("--config", str(cfg), env=env)
    target = f"pruned/{repo}"
    push_oci_image(reg, target, "extra", layers=1, layer_size=64)
    before = tag_state(reg, target)

    proxy.add_rule(FaultRule(method="GET", path_regex=r"/tags/list", kind="status", status=403, times=None))
    r = sync("--config", str(cfg), env=env)
    assert r.rc == 1 and "cannot list tags" in r.stderr, r.stderr
    assert tag_state(reg, target) == before
    proxy.clear_rules()

    delete_tag(reg, repo, "1")  # upstream now lists no tag at all
    r = sync("--config", str(cfg), env=env)
    assert r.rc == 1 and "not pruning" in r.stderr, r.stderr
    assert tag_state(reg, target) == before


# --------------------------------------------------------------------------- shards


def test_shards_are_disjoint_and_cover_everything(registry_plain: Registry, repo: str, tmp_path: Path) -> None:
    reg = registry_plain
    names = [f"{repo}-{i}" for i in range(8)]
    for name in names:
        push_oci_image(reg, name, "1", layers=1, layer_size=64)
    entries = "".join(f"  - {{source: '${{SRC}}/{n}', targets: ['docker://${{SRC}}/sharded']}}\n" for n in names)
    cfg = write_config(tmp_path, PLAIN_REGISTRY, "mirrors:\n" + entries)
    env = {"SRC": reg.host}

    def handled(report_file: Path) -> set[str]:
        return {img["mirror"] for img in read_report(report_file)["images"]}

    per_shard: list[set[str]] = []
    for i in range(3):
        report_file = tmp_path / f"shard{i}.json"
        sync_ok("--config", str(cfg), "--shard", f"{i}/3", "--report", str(report_file), env=env)
        assert read_report(report_file)["shard"] == f"{i}/3"
        per_shard.append(handled(report_file))
    everything = {f"{reg.host}/{n}" for n in names}
    assert set().union(*per_shard) == everything
    for i in range(3):
        for j in range(i + 1, 3):
            assert not per_shard[i] & per_shard[j]
        assert per_shard[i] == {f"{reg.host}/{n}" for n in names if shard_of(f"{reg.host}/{n}", 3) == i}
    assert all(list_tags(reg, f"sharded/{n}") == ["1"] for n in names)
    # /N takes I from $JOB_COMPLETION_INDEX, as in a Kubernetes Indexed Job
    report_file = tmp_path / "indexed.json"
    indexed = {**env, "JOB_COMPLETION_INDEX": "1"}
    sync_ok("--config", str(cfg), "--shard", "/3", "--report", str(report_file), env=indexed)
    assert handled(report_file) == per_shard[1] and read_report(report_file)["shard"] == "1/3"
    r = sync("--config", str(cfg), "--shard", "/3", env=env)
    assert r.rc == 2 and "JOB_COMPLETION_INDEX" in r.stderr


# --------------------------------------------------------------------------- bad configs


GOOD_ENTRY = """\
registries:
  "${SRC}": {tls-verify: false}
mirrors:
  - source: ${SRC}/${REPO}
    targets: ["docker://${SRC}/copied"]
"""

BAD_CONFIGS = [
    ("unknown-key", "  - source: ${SRC}/${REPO}\n    tag: [latest]\n    targets: ['docker://${SRC}/x']\n", 7,
     "unknown key 'tag'"),
    ("bad-regex", "  - source: ${SRC}/${REPO}\n    tags: {include: ['[a-']}\n    targets: ['docker://${SRC}/x']\n", 7,
     "invalid regular expression"),
    ("bad-semver", "  - source: ${SRC}/${REPO}\n    tags: {semver: '>=1.2 <<2'}\n    targets: ['docker://${SRC}/x']\n",
     7,
     "invalid semver range"),
    ("wrong-type", "  - source: ${SRC}/${REPO}\n    tags: [latest, 3.1]\n    targets: ['docker://${SRC}/x']\n", 7,
     "expected a string, got the number 3.1"),
    ("yaml-syntax", "  - source: ${SRC}/${REPO}\n    tags: [latest\n    targets: ['docker://${SRC}/x']\n", 8,
     "invalid YAML"),
    ("unset-variable", "  - source: ${SRC}/${NO_SUCH_VARIABLE_HERE}\n    targets: ['docker://${SRC}/x']\n", 6,
     "NO_SUCH_VARIABLE_HERE is not set"),
]


@pytest.mark.parametrize(("case", "entry", "line", "reason"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_configs_exit_2_with_file_and_line_before_any_traffic(
    registry_plain: Registry, repo: str, proxy: FaultProxy, tmp_path: Path, case: str, entry: str, line: int,
    reason: str,
) -> None:
    push_oci_image(registry_plain, repo, "latest", layers=1, layer_size=64)
    cfg = write_config(tmp_path, GOOD_ENTRY + entry, name=f"{case}.yaml")
    report_file = tmp_path / "report.json"
    r = sync("--config", str(cfg), "--report", str(report_file), env={"SRC": proxy.netloc, "REPO": repo})
    assert r.rc == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"regtool: error: {cfg}:{line}: "), r.stderr
    assert reason in lines[0]
    assert proxy.count() == 0 and proxy.stats()["connections"] == 0
    assert list_tags(registry_plain, f"copied/{repo}") == []
    assert not report_file.exists()


def test_a_config_directory_error_names_its_file(registry_plain: Registry, proxy: FaultProxy, tmp_path: Path) -> None:
    configs = tmp_path / "sync-configs"
    configs.mkdir()
    write_config(configs, GOOD_ENTRY, name="10-good.yaml")
    bad = "mirrors:\n  - source: x\n    targets: ['docker://${SRC}/y']\n    prune: maybe\n"
    write_config(configs, bad, name="20-bad.yaml")
    r = sync("--config", str(configs), env={"SRC": proxy.netloc, "REPO": "a"})
    assert r.rc == 2 and f"{configs / '20-bad.yaml'}:4: " in r.stderr, r.stderr
    assert proxy.count() == 0


# --------------------------------------------------------------------------- rate limits


def test_429_retry_after_is_waited_out(registry_plain: Registry, repo: str, proxy: FaultProxy, tmp_path: Path) -> None:
    for tag in ("x", "y", "z"):
        push_oci_image(registry_plain, repo, tag, layers=1, layer_size=64)
    rule = proxy.add_rule(FaultRule(method="GET", path_regex=r"/manifests/y$", kind="429", retry_after=2, times=1))
    cfg = write_config(
        tmp_path, PLAIN_REGISTRY, "mirrors:\n  - {source: '${SRC}/${REPO}', targets: ['docker://${SRC}/limited']}\n"
    )
    started = time.monotonic()
    sync_ok("--config", str(cfg), env={"SRC": proxy.netloc, "REPO": repo})
    assert time.monotonic() - started >= 2.0
    assert rule.fired == 1
    assert sorted(list_tags(registry_plain, f"limited/{repo}")) == ["x", "y", "z"]
    assert proxy.count("GET", r"/manifests/y$") == 2  # one refused, one after the wait: never hammered


def test_retry_after_beyond_max_retry_wait_reports_rate_limited(
    registry_plain: Registry, repo: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    for tag in ("x", "y", "z"):
        push_oci_image(registry_plain, repo, tag, layers=1, layer_size=64)
    proxy.add_rule(FaultRule(method="GET", path_regex=r"/manifests/y$", kind="429", retry_after=60, times=None))
    cfg = write_config(
        tmp_path, PLAIN_REGISTRY, "mirrors:\n  - {source: '${SRC}/${REPO}', targets: ['docker://${SRC}/limited']}\n"
    )
    report_file = tmp_path / "report.json"
    started = time.monotonic()
    r = sync("--config", str(cfg), "--max-retry-wait", "1", "--report", str(report_file),
             env={"SRC": proxy.netloc, "REPO": repo})
    assert time.monotonic() - started < 30
    assert r.rc == 1, r.stderr
    assert "rate-limited" in r.stderr
    got = actions(read_report(report_file))
    base = f"docker://{proxy.netloc}/limited/{repo}"
    assert got == {f"{base}:x": "copied", f"{base}:y": "rate-limited", f"{base}:z": "copied"}
    assert sorted(list_tags(registry_plain, f"limited/{repo}")) == ["x", "z"]
    assert proxy.count("GET", r"/manifests/y$") == 1


def test_config_max_retry_wait_is_used(registry_plain: Registry, repo: str, proxy: FaultProxy, tmp_path: Path) -> None:
    push_oci_image(registry_plain, repo, "y", layers=1, layer_size=64)
    proxy.add_rule(FaultRule(method="GET", path_regex=r"/manifests/y$", kind="429", retry_after=60, times=None))
    cfg = write_config(
        tmp_path,
        PLAIN_REGISTRY,
        "options: {max-retry-wait: 1s}\nmirrors:\n  - {source: '${SRC}/${REPO}', targets: ['docker://${SRC}/l']}\n",
    )
    started = time.monotonic()
    r = sync("--config", str(cfg), env={"SRC": proxy.netloc, "REPO": repo})
    assert r.rc == 1 and "rate-limited" in r.stderr, r.stderr
    assert time.monotonic() - started < 30


# --------------------------------------------------------------------------- report, metrics, signals, lock


METRICS = {
    "regtool_sync_last_run_timestamp_seconds": {"job", "shard"},
    "regtool_sync_last_success_timestamp_seconds": {"job", "shard"},
    "regtool_sync_success": {"job", "shard"},
    "regtool_sync_images": {"job", "shard", "action"},
    "regtool_sync_bytes": {"job", "shard"},
    "regtool_sync_duration_seconds": {"job", "shard"},
    "regtool_sync_errors": {"job", "shard"},
}
SAMPLE_RE = re.compile(r'([a-z_]+)\{((?:[a-z_]+="[^"]*",?)*)\} (\S+)')


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = SAMPLE_RE.fullmatch(line)
        assert m, line
        labels = frozenset(re.findall(r'([a-z_]+)="([^"]*)"', m.group(2)))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples


def test_report_and_metrics_files(registry_plain: Registry, repo: str, proxy: FaultProxy, tmp_path: Path) -> None:
    img = push_oci_image(registry_plain, repo, "1", layers=2, layer_size=512)
    cfg = write_config(
        tmp_path,
        TWO_REGISTRIES,
        "job: reporting\nmirrors:\n  - {source: '${SRC}/${REPO}', targets: ['docker://${DST}/reported']}\n"
        + "  - {source: '${SRC}/${REPO}:missing', targets: ['docker://${DST}/reported']}\n",
    )
    env = {"SRC": registry_plain.host, "DST": proxy.netloc, "REPO": repo}  # another host: blobs really move
    out = tmp_path / "out"
    report_file, metrics_file = out / "report.json", out / "regtool.prom"
    r = sync("--config", str(cfg), "--report", str(report_file), "--metrics-file", str(metrics_file), env=env)
    assert r.rc == 1, r.stderr
    report = read_report(report_file)
    assert report["success"] is False and report["counts"] == {"copied": 1, "failed": 1}
    by_action = {img["action"]: img for img in report["images"]}
    assert by_action["copied"]["source_digest"] == img.digest and by_action["copied"]["bytes"] > 1024
    assert "missing" in by_action["failed"]["error"] and "\n" not in by_action["failed"]["error"]
    samples = parse_metrics(metrics_file.read_text())
    names = {name for name, _ in samples}
    assert names == set(METRICS) - {"regtool_sync_last_success_timestamp_seconds"}  # never succeeded yet
    for (name, labels), _ in samples.items():
        assert {k for k, _ in labels} == METRICS[name]
        assert ("job", "reporting") in labels and ("shard", "0/1") in labels
    base = frozenset({("job", "reporting"), ("shard", "0/1")})
    assert samples[("regtool_sync_success", base)] == 0
    assert samples[("regtool_sync_images", base | {("action", "copied")})] == 1
    assert samples[("regtool_sync_images", base | {("action", "failed")})] == 1
    assert samples[("regtool_sync_bytes", base)] == report["bytes"]

    # a successful run sets the last-success timestamp, a later failed run keeps it
    ok_cfg = write_config(
        tmp_path,
        TWO_REGISTRIES,
        "job: reporting\nmirrors:\n  - {source: '${SRC}/${REPO}', targets: ['docker://${DST}/reported']}\n",
        name="ok.yaml",
    )
    sync_ok("--config", str(ok_cfg), "--metrics-file", str(metrics_file), env=env)
    success = parse_metrics(metrics_file.read_text())[("regtool_sync_last_success_timestamp_seconds", base)]
    sync("--config", str(cfg), "--metrics-file", str(metrics_file), env=env)
    assert parse_metrics(metrics_file.read_text())[("regtool_sync_last_success_timestamp_seconds", base)] == success
    assert sorted(p.name for p in out.iterdir()) == ["regtool.prom", "report.json"]  # no temporary files left


def slow_setup(registry_plain: Registry, repo: str, proxy: FaultProxy, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A sync whose blob downloads hang for a minute behind the proxy."""
    push_oci_image(registry_plain, repo, "1", layers=1, layer_size=4096)
    proxy.add_rule(FaultRule(method="GET", path_regex=r"/blobs/sha256:", kind="stall", seconds=60, times=None))
    cfg = write_config(
        tmp_path, TWO_REGISTRIES, "job: slow\nmirrors:\n  - {source: '${SRC}/${REPO}', targets: ['docker://${DST}/slow']}\n"
    )
    return cfg, {"SRC": proxy.netloc, "DST": registry_plain.host, "REPO": repo}


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["TERM", "INT"])
def test_interrupted_run_still_writes_report_and_metrics(
    registry_plain: Registry, repo: str, proxy: FaultProxy, tmp_path: Path, signum: int, code: int
) -> None:
    cfg, env = slow_setup(registry_plain, repo, proxy, tmp_path)
    report_file, metrics_file = tmp_path / "report.json", tmp_path / "metrics.prom"
    proc = start_regtool(
        ["sync", "--config", str(cfg), "--report", str(report_file), "--metrics-file", str(metrics_file)], env
    )
    try:
        wait_for(lambda: proxy.count("GET", r"/blobs/") > 0, what="the stalled blob download")
        started = time.monotonic()
        proc.send_signal(signum)
        rc, stderr = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == code, stderr
    assert time.monotonic() - started < 15
    report = read_report(report_file)
    assert report["interrupted"] is True and report["success"] is False and report["finished"] is not None
    samples = parse_metrics(metrics_file.read_text())
    assert samples[("regtool_sync_success", frozenset({("job", "slow"), ("shard", "0/1")}))] == 0
    assert "(interrupted)" in stderr
    assert list_tags(registry_plain, f"slow/{repo}") == []


def test_lock_file(registry_plain: Registry, repo: str, proxy: FaultProxy, tmp_path: Path) -> None:
    cfg, env = slow_setup(registry_plain, repo, proxy, tmp_path)
    lock = tmp_path / "job.lock"
    holder = start_regtool(["sync", "--config", str(cfg), "--lock-file", str(lock)], env)
    try:
        wait_for(lambda: proxy.count("GET", r"/blobs/") > 0, what="the first run to be under way")
        r = sync("--config", str(cfg), "--lock-file", str(lock), env=env)
        assert r.rc == 75, r.stderr
        assert "another run holds the lock" in r.stderr and len(r.stderr.strip().splitlines()) == 1
        holder.kill()  # SIGKILL: no clean-up at all; the kernel drops the flock
        holder.wait(10)
    finally:
        if holder.poll() is None:
            holder.kill()
    proxy.clear_rules()
    r = sync("--config", str(cfg), "--lock-file", str(lock), env=env)
    assert r.rc == 0, r.stderr
    assert list_tags(registry_plain, f"slow/{repo}") == ["1"]


# --------------------------------------------------------------------------- fail-fast and keep going


def test_config_runs_keep_going_unless_fail_fast(
    registry_plain: Registry, repo: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    push_oci_image(registry_plain, repo, "good", layers=1, layer_size=64)
    cfg = write_config(
        tmp_path,
        PLAIN_REGISTRY,
        """
        mirrors:
          - {source: '${SRC}/${REPO}:missing', targets: ['docker://${SRC}/ff']}
          - {source: '${SRC}/${REPO}:good', targets: ['docker://${SRC}/ff']}
        """,
    )
    env = {"SRC": proxy.netloc, "REPO": repo}
    # the good image's manifest is slow, so the missing one fails while it is still in flight
    proxy.add_rule(FaultRule(method="GET", path_regex=r"/manifests/good$", kind="stall", seconds=3, times=None))
    r = sync("--config", str(cfg), "--fail-fast", env=env)
    assert r.rc == 1 and "missing" in r.stderr, r.stderr
    assert list_tags(registry_plain, f"ff/{repo}") == []
    r = sync("--config", str(cfg), env=env)
    assert r.rc == 1, r.stderr
    assert list_tags(registry_plain, f"ff/{repo}") == ["good"]


def test_a_failing_target_does_not_hold_back_the_others(
    registry_plain: Registry, repo: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    img = push_oci_image(registry_plain, repo, "1", layers=1, layer_size=64)
    proxy.add_rule(FaultRule(method="HEAD", path_regex=r"/manifests/", kind="status", status=403, times=None))
    cfg = write_config(
        tmp_path,
        TWO_REGISTRIES,
        "mirrors:\n  - {source: '${SRC}/${REPO}', targets: ['docker://${DST}/refused', 'docker://${SRC}/fine']}\n",
    )
    report_file = tmp_path / "report.json"
    r = sync("--config", str(cfg), "--report", str(report_file),
             env={"SRC": registry_plain.host, "DST": proxy.netloc, "REPO": repo})
    assert r.rc == 1, r.stderr
    got = {img["target"]: (img["action"], img["error"]) for img in read_report(report_file)["images"]}
    assert got[f"docker://{registry_plain.host}/fine/{repo}:1"] == ("copied", None)
    action, error = got[f"docker://{proxy.netloc}/refused/{repo}:1"]
    assert action == "failed" and "403" in error
    assert head_digest(registry_plain, f"fine/{repo}", "1") == img.digest


def test_log_format_json(registry_plain: Registry, repo: str, tmp_path: Path) -> None:
    push_oci_image(registry_plain, repo, "1", layers=1, layer_size=64)
    cfg = write_config(
        tmp_path, PLAIN_REGISTRY, "mirrors:\n  - {source: '${SRC}/${REPO}', targets: ['docker://${SRC}/logged']}\n"
    )
    r = sync("--config", str(cfg), "--log-format", "json", "--debug", env={"SRC": registry_plain.host, "REPO": repo})
    assert r.rc == 0
    records = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    assert any(rec["logger"] == "regtool.sync" and "copied" in rec["msg"] for rec in records)
