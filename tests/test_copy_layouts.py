"""``regtool copy`` between registries and local layouts (``oci:``, ``oci-archive:``, ``dir:``).

Round trips must keep every digest; skopeo must be able to read what regtool writes (for
OCI-typed images) and regtool what skopeo writes. ``dir:`` carries ``signature-N`` files;
registries (without lookaside storage) cannot, and the copy says so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import run_skopeo, skopeo_binary
from tests.support.cli import Result, run_regtool
from tests.support.images import (
    DOCKER_V2S2,
    OCI_INDEX,
    OCI_MANIFEST,
    PushedImage,
    cosign_signature_tag,
    fetch_blob,
    fetch_manifest,
    list_tags,
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

REF_NAME = "org.opencontainers.image.ref.name"


def dref(reg: Registry, repo: str, tag: str) -> str:
    return f"docker://{reg.host}/{repo}:{tag}"


def copy_ok(*args: str) -> Result:
    r = run_regtool(["copy", *args])
    assert r.rc == 0, r.stderr
    return r


def raw(reg: Registry, repo: str, ref: str) -> bytes:
    return fetch_manifest(reg, repo, ref)[0]


def src_flags(reg: Registry) -> list[str]:
    return reg.skopeo_flags("src-")


def dest_flags(reg: Registry) -> list[str]:
    return reg.skopeo_flags("dest-")


def index_entries(layout: Path) -> dict[str, dict[str, object]]:
    index = json.loads((layout / "index.json").read_text())
    return {e["annotations"][REF_NAME]: e for e in index["manifests"] if REF_NAME in e.get("annotations", {})}


def push_kind(reg: Registry, repo: str, kind: str) -> PushedImage:
    if kind == "oci":
        return push_oci_image(reg, repo, "v1")
    if kind == "docker":
        return push_docker_image(reg, repo, "v1")
    return push_index(reg, repo, "v1")


def assert_same_image(reg: Registry, repo: str, tag: str, img: PushedImage) -> None:
    assert raw(reg, repo, tag) == img.manifest
    for child in img.children:
        assert raw(reg, repo, child.digest) == child.manifest
    for part in [img, *img.children]:
        for blob in [part.config_blob, *part.layers]:
            if blob is not None and blob.data is not None:
                assert fetch_blob(reg, repo, blob.digest) == blob.data


# --------------------------------------------------------------------------- oci: and oci-archive:


@pytest.mark.parametrize("kind", ["oci", "docker", "index"])
def test_oci_layout_round_trip_keeps_digests(
    registry_token: Registry, registry_basic: Registry, repo: str, tmp_path: Path, kind: str
) -> None:
    img = push_kind(registry_token, repo, kind)
    layout = tmp_path / "layout"
    copy_ok("--all", *src_flags(registry_token), dref(registry_token, repo, "v1"), f"oci:{layout}:app-v1")
    entry = index_entries(layout)["app-v1"]
    assert entry["digest"] == img.digest and entry["mediaType"] == img.media_type  # v2s2 stays v2s2
    assert (layout / "blobs/sha256" / img.digest.split(":")[1]).read_bytes() == img.manifest
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    # ... and from the removable medium into another registry
    r = copy_ok("--all", *dest_flags(registry_basic), f"oci:{layout}:app-v1", dref(registry_basic, repo, "v1"))
    assert img.digest in r.stderr and "digest changed" not in r.stderr
    assert_same_image(registry_basic, repo, "v1", img)


def test_oci_layout_holds_many_images(registry_plain: Registry, repo: str, tmp_path: Path) -> None:
    a = push_oci_image(registry_plain, repo, "a")
    b = push_docker_image(registry_plain, repo, "b")
    layout = tmp_path / "many"
    for tag in ("a", "b"):
        copy_ok("--src-tls-verify=false", dref(registry_plain, repo, tag), f"oci:{layout}:{tag}")
    entries = index_entries(layout)
    assert entries["a"]["digest"] == a.digest and entries["b"]["digest"] == b.digest
    # without a name the layout is ambiguous: a usage error
    r = run_regtool(["copy", f"oci:{layout}", f"oci:{tmp_path / 'x'}:x"])
    assert r.rc == 2 and "refs" in r.stderr
    # layout → layout keeps bytes too
    copy_ok(f"oci:{layout}:b", f"oci:{tmp_path / 'other'}:b")
    assert index_entries(tmp_path / "other")["b"]["mediaType"] == DOCKER_V2S2


@pytest.mark.parametrize("kind", ["oci", "index"])
def test_oci_archive_round_trip(registry_plain: Registry, repo: str, tmp_path: Path, kind: str) -> None:
    img = push_kind(registry_plain, repo, kind)
    archive = tmp_path / "image.tar"
    copy_ok("--all", "--src-tls-verify=false", dref(registry_plain, repo, "v1"), f"oci-archive:{archive}:v1")
    assert archive.is_file()
    copy_ok("--all", "--dest-tls-verify=false", f"oci-archive:{archive}:v1", dref(registry_plain, repo + "-b", "v1"))
    assert_same_image(registry_plain, repo + "-b", "v1", img)
    # skopeo reads the archive
    inspect = run_skopeo(["inspect", "--raw", f"oci-archive:{archive}:v1"])
    assert inspect.stdout == img.manifest


@pytest.mark.parametrize("kind", ["oci", "index"])
def test_skopeo_reads_regtool_oci_layout(registry_plain: Registry, repo: str, tmp_path: Path, kind: str) -> None:
    img = push_kind(registry_plain, repo, kind)
    layout = tmp_path / "layout"
    copy_ok("--all", "--src-tls-verify=false", dref(registry_plain, repo, "v1"), f"oci:{layout}:v1")
    assert run_skopeo(["inspect", "--raw", f"oci:{layout}:v1"]).stdout == img.manifest
    run_skopeo(["copy", "--all", *dest_flags(registry_plain), f"oci:{layout}:v1",
                dref(registry_plain, repo + "-sk", "v1")])
    assert_same_image(registry_plain, repo + "-sk", "v1", img)


def test_regtool_reads_skopeo_oci_layout(registry_plain: Registry, repo: str, tmp_path: Path) -> None:
    img = push_oci_image(registry_plain, repo, "v1")
    idx = push_index(registry_plain, repo, "m")
    run_skopeo(["copy", *src_flags(registry_plain), dref(registry_plain, repo, "v1"), f"oci:{tmp_path / 'sk'}:v1"])
    run_skopeo(["copy", "--all", *src_flags(registry_plain), dref(registry_plain, repo, "m"),
                f"oci:{tmp_path / 'sk'}:m"])
    run_skopeo(["copy", *src_flags(registry_plain), dref(registry_plain, repo, "v1"),
                f"oci-archive:{tmp_path / 'sk.tar'}:v1"])
    copy_ok("--dest-tls-verify=false", f"oci:{tmp_path / 'sk'}:v1", dref(registry_plain, repo + "-a", "v1"))
    copy_ok("--all", "--dest-tls-verify=false", f"oci:{tmp_path / 'sk'}:m", dref(registry_plain, repo + "-a", "m"))
    copy_ok("--dest-tls-verify=false", f"oci-archive:{tmp_path / 'sk.tar'}:v1",
            dref(registry_plain, repo + "-b", "v1"))
    assert_same_image(registry_plain, repo + "-a", "v1", img)
    assert_same_image(registry_plain, repo + "-a", "m", idx)
    assert_same_image(registry_plain, repo + "-b", "v1", img)


def test_signatures_and_referrers_in_oci_layout(registry_plain: Registry, repo: str, tmp_path: Path) -> None:
    """cosign tags and the referrers fallback index become named index.json entries (as cosign save)."""
    img = push_oci_image(registry_plain, repo, "v1")
    sig = push_cosign_signature(registry_plain, img)
    sbom = push_referrer(registry_plain, img)
    layout = tmp_path / "layout"
    copy_ok("--src-tls-verify=false", dref(registry_plain, repo, "v1"), f"oci:{layout}:v1")
    entries = index_entries(layout)
    assert entries[cosign_signature_tag(img.digest)]["digest"] == sig.digest
    ref_index = json.loads(raw(registry_plain, repo, referrers_tag(img.digest)))
    assert entries[referrers_tag(img.digest)]["digest"] == sha256(raw(registry_plain, repo, referrers_tag(img.digest)))
    assert [m["digest"] for m in ref_index["manifests"]] == [sbom.digest]
    assert (layout / "blobs/sha256" / sbom.digest.split(":")[1]).read_bytes() == sbom.manifest
    # back into a registry: the attachments come along
    copy_ok("--dest-tls-verify=false", f"oci:{layout}:v1", dref(registry_plain, repo + "-b", "v1"))
    tags = set(list_tags(registry_plain, repo + "-b"))
    assert tags == {"v1", cosign_signature_tag(img.digest), referrers_tag(img.digest)}
    assert raw(registry_plain, repo + "-b", sbom.digest) == sbom.manifest
    # --remove-signatures leaves them out
    copy_ok("--remove-signatures", "--src-tls-verify=false", dref(registry_plain, repo, "v1"),
            f"oci:{tmp_path / 'bare'}:v1")
    assert set(index_entries(tmp_path / "bare")) == {"v1"}


# --------------------------------------------------------------------------- dir:


@pytest.mark.parametrize("kind", ["oci", "docker", "index"])
def test_dir_round_trip_keeps_digests(registry_plain: Registry, repo: str, tmp_path: Path, kind: str) -> None:
    img = push_kind(registry_plain, repo, kind)
    out = tmp_path / "dir"
    copy_ok("--all", "--src-tls-verify=false", dref(registry_plain, repo, "v1"), f"dir:{out}")
    assert (out / "manifest.json").read_bytes() == img.manifest
    assert (out / "version").read_text() == "Directory Transport Version: 1.1\n"
    for child in img.children:
        assert (out / f"{child.digest.split(':')[1]}.manifest.json").read_bytes() == child.manifest
    copy_ok("--all", "--dest-tls-verify=false", f"dir:{out}", dref(registry_plain, repo + "-b", "v1"))
    assert_same_image(registry_plain, repo + "-b", "v1", img)
    if kind != "index":  # skopeo reads what regtool wrote
        run_skopeo(["copy", f"dir:{out}", f"dir:{tmp_path / 'sk'}"])
        assert (tmp_path / "sk" / "manifest.json").read_bytes() == img.manifest


def test_dir_signatures_round_trip(registry_plain: Registry, repo: str, tmp_path: Path) -> None:
    """signature-N files travel dir: → dir:; dir: → registry cannot keep them and says so."""
    img = push_index(registry_plain, repo, "v1")
    src = tmp_path / "signed"
    copy_ok("--all", "--src-tls-verify=false", dref(registry_plain, repo, "v1"), f"dir:{src}")
    sigs = [b"\x89first opaque signature", b"\x89second"]
    for i, sig in enumerate(sigs, start=1):
        (src / f"signature-{i}").write_bytes(sig)
    child = img.children[1]
    (src / f"{child.digest.split(':')[1]}.signature-1").write_bytes(b"\x89instance signature")
    out = tmp_path / "copy"
    r = copy_ok("--all", f"dir:{src}", f"dir:{out}")
    assert "Copied 3 signature(s)" in r.stderr
    assert [(out / f"signature-{i}").read_bytes() for i in (1, 2)] == sigs
    assert not (out / "signature-3").exists()
    assert (out / f"{child.digest.split(':')[1]}.signature-1").read_bytes() == b"\x89instance signature"
    # --remove-signatures drops them
    copy_ok("--all", "--remove-signatures", f"dir:{src}", f"dir:{tmp_path / 'bare'}")
    assert not list((tmp_path / "bare").glob("*signature-*"))
    # a registry has nowhere to put simple signatures (no lookaside configured): the copy says so
    r = copy_ok("--all", "--dest-tls-verify=false", f"dir:{src}", dref(registry_plain, repo + "-r", "v1"))
    assert "3 signature(s) not copied" in r.stderr
    assert raw(registry_plain, repo + "-r", "v1") == img.manifest
    back = tmp_path / "back"
    copy_ok("--all", "--src-tls-verify=false", dref(registry_plain, repo + "-r", "v1"), f"dir:{back}")
    assert (back / "manifest.json").read_bytes() == img.manifest
    assert not list(back.glob("*signature-*"))  # they did not come back


@pytest.fixture
def gpg_home(tmp_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    if shutil.which("gpg") is None:
        pytest.skip("gpg not installed")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    try:
        subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "Test <t@example.com>", "ed25519",
                        "sign", "never"], env=env, check=True, capture_output=True, timeout=60)
        listing = subprocess.run(["gpg", "--list-keys", "--with-colons"], env=env, check=True, capture_output=True,
                                 text=True).stdout
        fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))
        yield env, fpr
    finally:  # gpg started an agent for this home: stop it
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, check=False, capture_output=True, timeout=30)


def test_dir_gpg_signature_survives_and_verifies(
    registry_plain: Registry, repo: str, tmp_path: Path, gpg_home: tuple[dict[str, str], str]
) -> None:
    env, fpr = gpg_home
    img = push_oci_image(registry_plain, repo, "v1")
    skopeo = skopeo_binary()
    if skopeo is None:
        pytest.skip("skopeo is not installed")
    identity = f"example.com/{repo}:v1"
    signed = tmp_path / "signed"
    subprocess.run([skopeo, "--insecure-policy", "copy", "--sign-by", fpr, "--sign-identity", identity,
                    *src_flags(registry_plain), dref(registry_plain, repo, "v1"), f"dir:{signed}"],
                   env=env, check=True, capture_output=True, timeout=120)
    out = tmp_path / "copy"
    copy_ok(f"dir:{signed}", f"dir:{out}")
    assert (out / "signature-1").read_bytes() == (signed / "signature-1").read_bytes()
    verified = subprocess.run([skopeo, "standalone-verify", str(out / "manifest.json"), identity, fpr,
                               str(out / "signature-1")], env=env, capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0, verified.stderr
    assert img.digest in verified.stdout


def test_dir_destination_refuses_foreign_directory(registry_plain: Registry, repo: str, tmp_path: Path) -> None:
    push_oci_image(registry_plain, repo, "v1")
    target = tmp_path / "photos"
    target.mkdir()
    (target / "holiday.jpg").write_bytes(b"jpeg")
    r = run_regtool(["copy", "--src-tls-verify=false", dref(registry_plain, repo, "v1"), f"dir:{target}"])
    assert r.rc == 2
    assert r.stderr.startswith("regtool: error: ") and len(r.stderr.strip().splitlines()) == 1
    assert os.listdir(target) == ["holiday.jpg"]


def test_format_conversion_into_layout(registry_plain: Registry, repo: str, tmp_path: Path) -> None:
    img = push_docker_image(registry_plain, repo, "v1")
    layout = tmp_path / "layout"
    r = copy_ok("--format", "oci", "--src-tls-verify=false", dref(registry_plain, repo, "v1"), f"oci:{layout}:v1")
    entry = index_entries(layout)["v1"]
    assert entry["mediaType"] == OCI_MANIFEST and entry["digest"] != img.digest
    assert f"digest changed from {img.digest} to {entry['digest']}" in r.stderr
    info = json.loads(run_skopeo(["inspect", f"oci:{layout}:v1"]).stdout)
    assert info["Digest"] == entry["digest"]
    index = json.loads((layout / "index.json").read_text())
    assert index["mediaType"] == OCI_INDEX


def test_corrupt_layout_blob_fails_and_tags_nothing(registry_plain: Registry, repo: str, tmp_path: Path) -> None:
    """The digest is checked while streaming: a bad blob aborts the upload and nothing is tagged."""
    img = push_oci_image(registry_plain, repo, "v1", layers=1, layer_size=200_000)
    layout = tmp_path / "layout"
    copy_ok("--src-tls-verify=false", dref(registry_plain, repo, "v1"), f"oci:{layout}:v1")
    layer = img.layers[0]
    path = layout / "blobs/sha256" / layer.digest.split(":")[1]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    r = run_regtool(["copy", "--dest-tls-verify=false", f"oci:{layout}:v1", dref(registry_plain, repo + "-c", "v1")])
    assert r.rc == 1
    last = r.stderr.splitlines()[-1]
    assert last.startswith("regtool: error: ") and "digest" in last
    assert list_tags(registry_plain, repo + "-c") == []
    assert registry_plain.http.head(f"/v2/{repo}-c/blobs/{layer.digest}").status_code == 404


def test_layout_upload_falls_back_to_chunks(registry_plain: Registry, repo: str, tmp_path: Path) -> None:
    """A registry refusing the monolithic PUT gets PATCH chunks; a local blob is simply read again."""
    img = push_oci_image(registry_plain, repo, "v1", layers=1, layer_size=300_000)
    layout = tmp_path / "layout"
    copy_ok("--src-tls-verify=false", dref(registry_plain, repo, "v1"), f"oci:{layout}:v1")
    layer = img.layers[0]
    with FaultProxy(target=registry_plain.host) as fp:
        put = rf"/blobs/uploads/.*digest={layer.digest.replace(':', '%3A')}"
        rule = fp.add_rule(FaultRule(method="PUT", path_regex=put, kind="status", status=405, times=1))
        copy_ok("--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://{fp.netloc}/{repo}-c:v1")
        assert rule.fired == 1
        assert fp.count("PATCH") >= 1
    assert fetch_blob(registry_plain, repo + "-c", layer.digest) == layer.data
    assert raw(registry_plain, repo + "-c", "v1") == img.manifest
