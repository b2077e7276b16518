"""``regtool sync`` as a drop-in for ``skopeo sync``: the same command line against the same source
gives the same destination repositories, tags and digests as the real skopeo binary.

Signature tags (``sha256-<hex>.sig``) and OCI referrers fallback tags (``sha256-<hex>``) are left out
of the comparison: regtool carries them with their images, skopeo 1.9.3 copies them as images of
their own only when it happens to list them. Debian's skopeo 1.9.3 lacks ``images-by-semver`` and
``--append-suffix``; those are checked against the examples of upstream skopeo's skopeo-sync(1).
"""

from __future__ import annotations

import hashlib
import secrets
import textwrap
from pathlib import Path

import pytest

from tests.support import run_skopeo
from tests.support.cli import Result, run_regtool
from tests.support.images import (
    ATTACHMENT_TAG_RE,
    head_digest,
    images_only,
    list_tags,
    push_cosign_signature,
    push_docker_image,
    push_index,
    push_oci_image,
    push_referrer,
    referrers_tag,
    tag_state,
)
from tests.support.registries import Registry

PLAIN = ["--src-tls-verify=false", "--dest-tls-verify=false"]


def regtool_sync(*args: str) -> Result:
    r = run_regtool(["sync", *args])
    assert "Traceback" not in r.stderr, r.stderr
    return r


def prefixes(reg: Registry) -> tuple[str, str, str]:
    """Destination prefixes for regtool and skopeo, and the path part they share."""
    run = secrets.token_hex(3)
    return f"{reg.host}/ours-{run}", f"{reg.host}/theirs-{run}", run


def seed_repository(reg: Registry, repo: str, *, referrer: bool) -> dict[str, str]:
    index = push_index(reg, repo, "1.0")
    image = push_oci_image(reg, repo, "2.0")
    push_cosign_signature(reg, image)
    if referrer:  # skopeo without --all cannot copy the fallback index (it has no platforms)
        push_referrer(reg, image)
    push_docker_image(reg, repo, "3.0")
    return {"index": index.digest, "image": image.digest}


@pytest.mark.parametrize("all_platforms", [True, False], ids=["all", "system"])
def test_docker_to_docker_repository(registry_plain: Registry, repo: str, all_platforms: bool) -> None:
    reg = registry_plain
    seeded = seed_repository(reg, repo, referrer=all_platforms)
    ours, theirs, run = prefixes(reg)
    flags = [*PLAIN, *(["--all"] if all_platforms else [])]
    r = regtool_sync("--src", "docker", "--dest", "docker", *flags, f"{reg.host}/{repo}", ours)
    assert r.rc == 0, r.stderr
    run_skopeo(["sync", "--src", "docker", "--dest", "docker", *flags, f"{reg.host}/{repo}", theirs])
    name = repo.rsplit("/", 1)[1]
    mine, skopeos = tag_state(reg, f"ours-{run}/{name}"), tag_state(reg, f"theirs-{run}/{name}")
    assert images_only(mine) == images_only(skopeos)
    assert sorted(images_only(mine)) == ["1.0", "2.0", "3.0"]
    assert (mine["1.0"] == seeded["index"]) is all_platforms  # without --all: the host's instance
    # regtool carries the image's signature (and referrers) along, digests unchanged
    source = tag_state(reg, repo)
    carried = {t: d for t, d in mine.items() if ATTACHMENT_TAG_RE.fullmatch(t)}
    expected = {t: d for t, d in source.items() if ATTACHMENT_TAG_RE.fullmatch(t) and seeded["image"][7:] in t}
    assert carried == expected and len(carried) == (2 if all_platforms else 1)
    if all_platforms:
        assert referrers_tag(seeded["image"]) in carried


def test_docker_to_docker_single_tag(registry_plain: Registry, repo: str) -> None:
    reg = registry_plain
    seed_repository(reg, repo, referrer=False)
    ours, theirs, run = prefixes(reg)
    source = f"{reg.host}/{repo}:1.0"
    r = regtool_sync("--src", "docker", "--dest", "docker", *PLAIN, source, ours)
    assert r.rc == 0, r.stderr
    run_skopeo(["sync", "--src", "docker", "--dest", "docker", *PLAIN, source, theirs])
    name = repo.rsplit("/", 1)[1]
    assert tag_state(reg, f"ours-{run}/{name}") == tag_state(reg, f"theirs-{run}/{name}")
    assert list(tag_state(reg, f"ours-{run}/{name}")) == ["1.0"]


def test_yaml_source(registry_plain: Registry, repo: str, tmp_path: Path) -> None:
    reg = registry_plain
    listed, by_regex = f"{repo}-listed", f"{repo}-regex"
    push_index(reg, listed, "1.0")
    push_oci_image(reg, listed, "2.0")
    by_digest = push_docker_image(reg, listed, "3.0")
    push_oci_image(reg, listed, "4.0")  # not listed: not copied
    for tag in ("v1.0", "v1.1", "v1.1.1", "xv1.1", "v2.1", "latest"):
        push_oci_image(reg, by_regex, tag, layers=1, layer_size=64)
    yaml_file = tmp_path / "skopeo.yaml"
    yaml_file.write_text(
        textwrap.dedent(
            f"""\
            {reg.host}:
              tls-verify: false
              images:
                {listed}: ["1.0", 2.0, "{by_digest.digest}"]
              images-by-tag-regex:
                {by_regex}: v1\\.1
            """
        )
    )
    ours, theirs, run = prefixes(reg)
    for all_flag in ([], ["--all"]):
        suffix = "-all" if all_flag else ""
        flags = ["--src", "yaml", "--dest", "docker", "--dest-tls-verify=false", *all_flag, str(yaml_file)]
        r = regtool_sync(*flags, ours + suffix)
        assert r.rc == 0, r.stderr
        run_skopeo(["sync", *flags, theirs + suffix])
        for name in (listed.rsplit("/", 1)[1], by_regex.rsplit("/", 1)[1]):
            mine = tag_state(reg, f"ours-{run}{suffix}/{name}")
            assert mine == tag_state(reg, f"theirs-{run}{suffix}/{name}")
        # the digest entry is pushed by digest, untagged, by both
        name = listed.rsplit("/", 1)[1]
        assert head_digest(reg, f"ours-{run}{suffix}/{name}", by_digest.digest) == by_digest.digest
        assert head_digest(reg, f"theirs-{run}{suffix}/{name}", by_digest.digest) == by_digest.digest
    assert sorted(tag_state(reg, f"ours-{run}/{listed.rsplit('/', 1)[1]}")) == ["1.0", "2.0"]
    # Go's MatchString is a search: v1\.1 takes v1.1, v1.1.1 and xv1.1
    assert sorted(tag_state(reg, f"ours-{run}/{by_regex.rsplit('/', 1)[1]}")) == ["v1.1", "v1.1.1", "xv1.1"]


def dir_images(root: Path) -> dict[str, tuple[str, list[str]]]:
    """Image directory (relative to ``root``) → (digest of its manifest.json, its files)."""
    out = {}
    for manifest in root.rglob("manifest.json"):
        image = manifest.parent
        digest = "sha256:" + hashlib.sha256(manifest.read_bytes()).hexdigest()
        out[str(image.relative_to(root))] = (digest, sorted(p.name for p in image.iterdir()))
    return out


@pytest.mark.parametrize(
    ("all_platforms", "scoped"), [(True, False), (False, False), (True, True)], ids=["all", "system", "all-scoped"]
)
def test_docker_to_dir(registry_plain: Registry, repo: str, tmp_path: Path, all_platforms: bool, scoped: bool) -> None:
    reg = registry_plain
    seed_repository(reg, repo, referrer=False)
    flags = ["--src-tls-verify=false", *(["--all"] if all_platforms else []), *(["--scoped"] if scoped else [])]
    r = regtool_sync("--src", "docker", "--dest", "dir", *flags, f"{reg.host}/{repo}", str(tmp_path / "ours"))
    assert r.rc == 0, r.stderr
    run_skopeo(["sync", "--src", "docker", "--dest", "dir", *flags, f"{reg.host}/{repo}", str(tmp_path / "theirs")])
    mine = {k: v for k, v in dir_images(tmp_path / "ours").items() if not ATTACHMENT_TAG_RE.search(k)}
    skopeos = {k: v for k, v in dir_images(tmp_path / "theirs").items() if not ATTACHMENT_TAG_RE.search(k)}
    name = f"{reg.host}/{repo}" if scoped else repo.rsplit("/", 1)[1]
    assert sorted(mine) == [f"{name}:1.0", f"{name}:2.0", f"{name}:3.0"]
    assert {k: v[0] for k, v in mine.items()} == {k: v[0] for k, v in skopeos.items()}
    assert {k: v[1] for k, v in mine.items()} == {k: v[1] for k, v in skopeos.items()}


def test_errors_stop_the_run_unless_keep_going(registry_plain: Registry, repo: str, tmp_path: Path) -> None:
    reg = registry_plain
    push_oci_image(reg, repo, "good", layers=1, layer_size=64)
    yaml_file = tmp_path / "skopeo.yaml"
    yaml_file.write_text(f"{reg.host}:\n  tls-verify: false\n  images:\n    {repo}: [missing, good]\n")
    name = repo.rsplit("/", 1)[1]
    ours, theirs, run = prefixes(reg)
    flags = ["--src", "yaml", "--dest", "docker", "--dest-tls-verify=false"]
    r = regtool_sync(*flags, str(yaml_file), ours)
    skopeo = run_skopeo(["sync", *flags, str(yaml_file), theirs], check=False)
    assert r.rc == skopeo.returncode == 1, r.stderr
    assert "missing" in r.stderr
    assert list_tags(reg, f"ours-{run}/{name}") == list_tags(reg, f"theirs-{run}/{name}") == []
    r = regtool_sync(*flags, "--keep-going", str(yaml_file), ours)
    skopeo = run_skopeo(["sync", *flags, "--keep-going", str(yaml_file), theirs], check=False)
    assert r.rc == skopeo.returncode == 1, r.stderr
    assert list_tags(reg, f"ours-{run}/{name}") == list_tags(reg, f"theirs-{run}/{name}") == ["good"]


# --------------------------------------------------------------------------- newer than skopeo 1.9.3: the documentation


def test_images_by_semver_as_documented(registry_plain: Registry, repo: str, tmp_path: Path) -> None:
    """skopeo-sync(1): ``alpine: ">= 3.12.0"`` takes "3.12.0", "3.12.1", ..., "4.0.0", ...; per the
    Masterminds/semver rules it links to, neither lower versions, prereleases nor non-versions."""
    reg = registry_plain
    tags = ("3.11.5", "3.12.0", "3.12.1", "3.13.0", "3.13.0-rc1", "4.0.0", "latest", "edge")
    for tag in tags:
        push_oci_image(reg, repo, tag, layers=1, layer_size=64)
    yaml_file = tmp_path / "skopeo.yaml"
    yaml_file.write_text(f"{reg.host}:\n  tls-verify: false\n  images-by-semver:\n    {repo}: \">= 3.12.0\"\n")
    ours, _, run = prefixes(reg)
    r = regtool_sync("--src", "yaml", "--dest", "docker", "--dest-tls-verify=false", str(yaml_file), ours)
    assert r.rc == 0, r.stderr
    mirrored = tag_state(reg, f"ours-{run}/{repo.rsplit('/', 1)[1]}")
    assert sorted(mirrored) == ["3.12.0", "3.12.1", "3.13.0", "4.0.0"]
    assert all(mirrored[t] == head_digest(reg, repo, t) for t in mirrored)


def test_append_suffix_as_documented(registry_plain: Registry, repo: str) -> None:
    """skopeo-sync(1): ``--append-suffix '-mirror'`` gives ``busybox: 1-glibc-mirror, ..., latest-mirror``."""
    reg = registry_plain
    image = push_oci_image(reg, repo, "latest", layers=1, layer_size=64)
    push_cosign_signature(reg, image)
    push_oci_image(reg, repo, "1-glibc", layers=1, layer_size=64)
    ours, _, run = prefixes(reg)
    flags = ["--src", "docker", "--dest", "docker", *PLAIN, "--append-suffix=-mirror"]
    r = regtool_sync(*flags, f"{reg.host}/{repo}", ours)
    assert r.rc == 0, r.stderr
    state = tag_state(reg, f"ours-{run}/{repo.rsplit('/', 1)[1]}")
    # the signature tag names a digest, which a suffix does not change
    assert images_only(state) == {"1-glibc-mirror": head_digest(reg, repo, "1-glibc"), "latest-mirror": image.digest}
    assert [t for t in state if ATTACHMENT_TAG_RE.fullmatch(t)] == [f"sha256-{image.digest[7:]}.sig"]


def test_dry_run_changes_nothing(registry_plain: Registry, repo: str) -> None:
    reg = registry_plain
    push_oci_image(reg, repo, "1", layers=1, layer_size=64)
    ours, _, run = prefixes(reg)
    r = regtool_sync("--src", "docker", "--dest", "docker", *PLAIN, "--dry-run", f"{reg.host}/{repo}", ours)
    assert r.rc == 0, r.stderr
    name = repo.rsplit("/", 1)[1]
    assert r.text.split("\t")[0] == "would-copy" and f"ours-{run}/{name}:1" in r.text
    assert list_tags(reg, f"ours-{run}/{name}") == []
