"""Local transports (oci:, oci-archive:, dir:) through the one source/destination interface.

skopeo (``/usr/bin/skopeo``) is the reference peer: it must read what regtool writes
and regtool must read what it writes. Images are built here from real gzip'd tar
layers, configs and manifests, written straight into OCI layouts.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from regtool.errors import DigestMismatch, InvalidReference, ManifestError, NotFound, UsageError
from regtool.manifest import DOCKER_V2S2, OCI_INDEX, OCI_MANIFEST, Descriptor, Manifest
from regtool.transports import ImageDestination, ImageSource, open_destination, open_source
from regtool.transports.base import CHUNK_SIZE, TEMP_PREFIX, split_digest
from regtool.transports.dirlayout import VERSION, DirDestination, DirSource
from regtool.transports.layout import (
    REF_NAME_ANNOTATION,
    OCIArchiveDestination,
    OCILayoutDestination,
    OCILayoutSource,
    open_archive_source,
    validate_ref_name,
)

SKOPEO = shutil.which("skopeo")
needs_skopeo = pytest.mark.skipif(SKOPEO is None, reason="skopeo not installed")

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --------------------------------------------------------------------------- image building helpers


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def store_blob(root: Path, data: bytes) -> str:
    digest = sha256(data)
    path = root / "blobs" / "sha256" / digest.split(":", 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def make_layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A gzip'd tar layer and its diff ID."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(content))
    data = raw.getvalue()
    return gzip.compress(data, mtime=0), sha256(data)


def make_image(root: Path, arch: str = "amd64", text: str = "hello", docker: bool = False) -> dict[str, Any]:
    """Store one single-arch image's blobs and manifest; return its descriptor (with platform)."""
    layers = []
    diff_ids = []
    for i in range(2):
        gz, diff_id = make_layer({f"file{i}.txt": f"{text} {arch} {i}\n".encode()})
        layers.append(
            {
                "mediaType": DOCKER_LAYER if docker else OCI_LAYER_GZIP,
                "digest": store_blob(root, gz),
                "size": len(gz),
            }
        )
        diff_ids.append(diff_id)
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/usr/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_V2S2 if docker else OCI_MANIFEST,
            "config": {
                "mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
                "digest": store_blob(root, config),
                "size": len(config),
            },
            "layers": layers,
        },
        indent=3,  # unusual formatting: any re-serialisation would change the digest
    ).encode()
    return {
        "mediaType": DOCKER_V2S2 if docker else OCI_MANIFEST,
        "digest": store_blob(root, manifest),
        "size": len(manifest),
        "platform": {"architecture": arch, "os": "linux"},
    }


def make_index(root: Path, children: list[dict[str, Any]]) -> dict[str, Any]:
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}, indent=1).encode()
    return {"mediaType": OCI_INDEX, "digest": store_blob(root, index), "size": len(index)}


def named(desc: dict[str, Any], name: str | None) -> dict[str, Any]:
    entry = {k: v for k, v in desc.items() if k != "platform"}
    if name is not None:
        entry["annotations"] = {REF_NAME_ANNOTATION: name}
    return entry


def write_layout(root: Path, entries: list[dict[str, Any]]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))


def sample_layout(root: Path) -> dict[str, dict[str, Any]]:
    """A layout with ``single`` (amd64), ``multi`` (amd64+arm64 index) and ``docker`` (v2s2)."""
    amd = make_image(root, "amd64")
    arm = make_image(root, "arm64")
    idx = make_index(root, [amd, arm])
    dock = make_image(root, "amd64", text="docker", docker=True)
    write_layout(root, [named(amd, "single"), named(idx, "multi"), named(dock, "docker")])
    return {"single": amd, "arm": arm, "multi": idx, "docker": dock}


def skopeo(*args: str) -> str:
    assert SKOPEO is not None
    done = subprocess.run(
        [SKOPEO, "--insecure-policy", *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"skopeo {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def desc_of(m: Manifest) -> Descriptor:
    return Descriptor(media_type=m.media_type, digest=m.digest, size=len(m.raw))


# --------------------------------------------------------------------------- a small copier


async def copy_image(src: ImageSource, dst: ImageDestination, name: str | None = None) -> Manifest:
    """What regtool's copier does: blobs, children, top manifest, name, signatures, commit."""

    async def copy_single(m: Manifest) -> None:
        for blob in ([m.config] if m.config is not None else []) + list(m.layers):
            if not await dst.has_blob(blob):
                await dst.put_blob(blob, src.open_blob(blob))
        await dst.put_manifest(m.raw, m.media_type, m.digest)

    async def copy_sigs(digest: str) -> None:
        sigs = await src.get_signatures(digest)
        if sigs and dst.supports_signatures:
            await dst.put_signatures(digest, sigs)

    top = await src.get_manifest()
    if top.is_index:
        for child in top.children():
            await copy_single(await src.get_manifest(child.digest))
            await copy_sigs(child.digest)
        await dst.put_manifest(top.raw, top.media_type, top.digest)
    else:
        await copy_single(top)
    await dst.tag(name, desc_of(top))
    await copy_sigs(top.digest)
    await dst.commit()
    return top


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in chunks])


# --------------------------------------------------------------------------- round trips


@pytest.mark.anyio
async def test_oci_dir_oci_round_trip_is_byte_exact(tmp_path: Path) -> None:
    src_root = tmp_path / "a"
    descs = sample_layout(src_root)
    for ref in ("single", "multi", "docker"):
        out_dir = tmp_path / f"dir-{ref}"
        out_oci = tmp_path / "b"
        async with (
            await OCILayoutSource.open(str(src_root), ref) as src,
            await DirDestination.open(str(out_dir)) as dst,
        ):
            top = await copy_image(src, dst)
        assert top.digest == descs[ref]["digest"]
        async with (
            await DirSource.open(str(out_dir)) as src2,
            await OCILayoutDestination.open(str(out_oci), ref) as dst2,
        ):
            top2 = await copy_image(src2, dst2)
        assert top2.digest == top.digest and top2.raw == top.raw
        assert top2.media_type == descs[ref]["mediaType"]
    # every blob in the copy is the very same file as in the original
    original = files_under(src_root / "blobs")
    copied = files_under(out_oci / "blobs")
    assert copied == original
    index = json.loads((out_oci / "index.json").read_text())
    entries = {e["annotations"][REF_NAME_ANNOTATION]: e for e in index["manifests"]}
    assert set(entries) == {"single", "multi", "docker"}
    for ref, entry in entries.items():
        assert entry["digest"] == descs[ref]["digest"]
        assert entry["mediaType"] == descs[ref]["mediaType"]  # v2s2 stays v2s2
        assert entry["size"] == descs[ref]["size"]
    assert json.loads((out_oci / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}


@pytest.mark.anyio
async def test_multi_arch_index_stored_with_children(tmp_path: Path) -> None:
    src_root = tmp_path / "a"
    descs = sample_layout(src_root)
    out_dir = tmp_path / "d"
    out_oci = tmp_path / "o"
    async with await OCILayoutSource.open(str(src_root), "multi") as src:
        async with await DirDestination.open(str(out_dir)) as dst:
            await copy_image(src, dst)
        async with await OCILayoutDestination.open(str(out_oci), "m") as odst:
            await copy_image(src, odst)
    index_bytes = (src_root / "blobs/sha256" / descs["multi"]["digest"][7:]).read_bytes()
    # dir: the index is manifest.json, instances are <hex>.manifest.json
    assert (out_dir / "manifest.json").read_bytes() == index_bytes
    for which in ("single", "arm"):
        hexpart = descs[which]["digest"][7:]
        assert (out_dir / f"{hexpart}.manifest.json").read_bytes() == (
            src_root / "blobs/sha256" / hexpart
        ).read_bytes()
        assert (out_oci / "blobs/sha256" / hexpart).is_file()
    assert (out_dir / "version").read_text() == VERSION
    assert not (out_dir / f"{descs['multi']['digest'][7:]}.manifest.json").exists()
    # oci: only the index is named in index.json
    entries = json.loads((out_oci / "index.json").read_text())["manifests"]
    assert [e["digest"] for e in entries] == [descs["multi"]["digest"]]
    # and it reads back, children by digest
    async with await DirSource.open(str(out_dir)) as dsrc:
        top = await dsrc.get_manifest()
        assert top.is_index and top.digest == descs["multi"]["digest"]
        assert (await dsrc.get_manifest(top.digest)).raw == top.raw
        for child in top.children():
            m = await dsrc.get_manifest(child.digest)
            assert m.digest == child.digest and m.media_type == child.media_type


# --------------------------------------------------------------------------- skopeo interop


@needs_skopeo
@pytest.mark.anyio
async def test_skopeo_reads_regtool_oci_layout(tmp_path: Path) -> None:
    src_root = tmp_path / "a"
    descs = sample_layout(src_root)
    out = tmp_path / "regtool-oci"
    for ref in ("single", "multi"):
        async with (
            await OCILayoutSource.open(str(src_root), ref) as src,
            await OCILayoutDestination.open(str(out), f"example.com/team/app:{ref}") as dst,
        ):
            await copy_image(src, dst)

    info = json.loads(skopeo("inspect", f"oci:{out}:example.com/team/app:single"))
    assert info["Digest"] == descs["single"]["digest"]
    assert info["Architecture"] == "amd64"
    raw = skopeo("inspect", "--raw", f"oci:{out}:example.com/team/app:multi").encode()
    assert sha256(raw) == descs["multi"]["digest"]

    skopeo("copy", f"oci:{out}:example.com/team/app:single", f"dir:{tmp_path / 'sk-dir'}")
    assert sha256((tmp_path / "sk-dir/manifest.json").read_bytes()) == descs["single"]["digest"]
    skopeo("copy", "--all", f"oci:{out}:example.com/team/app:multi", f"dir:{tmp_path / 'sk-dir-all'}")
    assert (tmp_path / "sk-dir-all" / f"{descs['arm']['digest'][7:]}.manifest.json").is_file()


@needs_skopeo
@pytest.mark.anyio
async def test_regtool_reads_skopeo_written_layouts(tmp_path: Path) -> None:
    src_root = tmp_path / "a"
    descs = sample_layout(src_root)
    skopeo("copy", f"oci:{src_root}:single", f"dir:{tmp_path / 'sd'}")
    skopeo("copy", "--all", f"oci:{src_root}:multi", f"oci:{tmp_path / 'so'}:x")
    skopeo("copy", f"oci:{src_root}:single", f"oci:{tmp_path / 'so'}:y")
    skopeo("copy", "--all", f"oci:{src_root}:multi", f"dir:{tmp_path / 'sdm'}")

    async with await DirSource.open(str(tmp_path / "sd")) as dsrc:
        m = await dsrc.get_manifest()
        assert m.digest == descs["single"]["digest"]
        assert await dsrc.list_tags() == []
        for blob in [m.config, *m.layers]:
            assert blob is not None
            assert sha256(await collect(dsrc.open_blob(blob))) == blob.digest

    async with await OCILayoutSource.open(str(tmp_path / "so"), "x") as osrc:
        assert await osrc.list_tags() == ["x", "y"]
        top = await osrc.get_manifest()
        assert top.is_index  # skopeo may re-serialise the list; its children are untouched
        assert {c.digest for c in top.children()} == {descs["single"]["digest"], descs["arm"]["digest"]}
        for child in top.children():
            cm = await osrc.get_manifest(child.digest)
            for blob in [cm.config, *cm.layers]:
                assert blob is not None
                assert sha256(await collect(osrc.open_blob(blob))) == blob.digest
        y = await osrc.get_tagged_manifest("y")
        assert y is not None and y.digest == descs["single"]["digest"]
        assert await osrc.get_tagged_manifest("nope") is None

    # skopeo's multi-arch dir: copied on by regtool into a fresh layout, then skopeo reads that
    async with (
        await DirSource.open(str(tmp_path / "sdm")) as dsrc,
        await OCILayoutDestination.open(str(tmp_path / "ro"), "again") as dst,
    ):
        top = await copy_image(dsrc, dst)
    raw = skopeo("inspect", "--raw", f"oci:{tmp_path / 'ro'}:again").encode()
    assert raw == top.raw


# --------------------------------------------------------------------------- signatures


@pytest.mark.anyio
async def test_dir_signatures_written_and_read_back(tmp_path: Path) -> None:
    src_root = tmp_path / "a"
    descs = sample_layout(src_root)
    out = tmp_path / "d"
    top_sigs = [b"\xa3first-signature", b"\xa3second"]
    child_sigs = [b"\xa3child-sig"]
    async with (
        await OCILayoutSource.open(str(src_root), "multi") as src,
        await DirDestination.open(str(out)) as dst,
    ):
        assert dst.supports_signatures
        await dst.put_signatures(descs["multi"]["digest"], top_sigs)
        await dst.put_signatures(descs["arm"]["digest"], child_sigs)
        await copy_image(src, dst)
    assert (out / "signature-1").read_bytes() == top_sigs[0]
    assert (out / "signature-2").read_bytes() == top_sigs[1]
    assert not (out / "signature-3").exists()
    assert (out / f"{descs['arm']['digest'][7:]}.signature-1").read_bytes() == child_sigs[0]
    async with await DirSource.open(str(out)) as dsrc:
        assert await dsrc.get_signatures(descs["multi"]["digest"]) == top_sigs
        assert await dsrc.get_signatures(descs["arm"]["digest"]) == child_sigs
        assert await dsrc.get_signatures(descs["single"]["digest"]) == []
        # dir -> dir keeps them (signatures travel through the interface)
        async with await DirDestination.open(str(tmp_path / "d2")) as dst2:
            await copy_image(dsrc, dst2)
    assert (tmp_path / "d2/signature-2").read_bytes() == top_sigs[1]
    # oci: has no place for them: accepted and dropped, flagged
    async with await OCILayoutDestination.open(str(tmp_path / "o")) as odst:
        assert not odst.supports_signatures
        await odst.put_signatures(descs["multi"]["digest"], top_sigs)
    async with await OCILayoutSource.open(str(src_root), "single") as osrc:
        assert await osrc.get_signatures(descs["single"]["digest"]) == []


@needs_skopeo
@pytest.mark.anyio
async def test_skopeo_copies_regtool_dir_signatures(tmp_path: Path) -> None:
    src_root = tmp_path / "a"
    descs = sample_layout(src_root)
    out = tmp_path / "d"
    async with (
        await OCILayoutSource.open(str(src_root), "single") as src,
        await DirDestination.open(str(out)) as dst,
    ):
        await dst.put_signatures(descs["single"]["digest"], [b"\xa3opaque simple signing blob"])
        await copy_image(src, dst)
    skopeo("copy", f"dir:{out}", f"dir:{tmp_path / 'd2'}")
    assert (tmp_path / "d2/signature-1").read_bytes() == b"\xa3opaque simple signing blob"


@needs_skopeo
@pytest.mark.skipif(shutil.which("gpg") is None, reason="gpg not installed")
@pytest.mark.anyio
async def test_regtool_reads_skopeo_gpg_signature(tmp_path: Path) -> None:
    src_root = tmp_path / "a"
    descs = sample_layout(src_root)
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    try:
        subprocess.run(
            [
                "gpg",
                "--batch",
                "--passphrase",
                "",
                "--quick-gen-key",
                "Test <t@example.com>",
                "ed25519",
                "sign",
                "never",
            ],
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        listing = subprocess.run(
            ["gpg", "--list-keys", "--with-colons"], env=env, check=True, capture_output=True, text=True
        ).stdout
        fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))
        assert SKOPEO is not None
        subprocess.run(
            [
                SKOPEO,
                "--insecure-policy",
                "copy",
                "--sign-by",
                fpr,
                "--sign-identity",
                "example.com/a/b:1",
                f"oci:{src_root}:single",
                f"dir:{tmp_path / 'sd'}",
            ],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
    finally:  # gpg started an agent for this home: stop it
        subprocess.run(
            ["gpgconf", "--kill", "gpg-agent"], env=env, check=False, capture_output=True, timeout=30
        )
    async with await DirSource.open(str(tmp_path / "sd")) as dsrc:
        sigs = await dsrc.get_signatures(descs["single"]["digest"])
    assert sigs == [(tmp_path / "sd/signature-1").read_bytes()]
    assert sigs[0]  # an OpenPGP message


# --------------------------------------------------------------------------- oci-archive


@needs_skopeo
@pytest.mark.anyio
async def test_oci_archive_round_trip_and_skopeo_interop(tmp_path: Path) -> None:
    src_root = tmp_path / "a"
    descs = sample_layout(src_root)
    archive = tmp_path / "img.tar"
    async with await OCILayoutSource.open(str(src_root), "multi") as src:
        dst = await OCIArchiveDestination.open_archive(str(archive), "multi", tmpdir=str(tmp_path))
        async with dst:
            staged = dst.root
            await copy_image(src, dst)
        assert not os.path.exists(staged)  # the staging layout is gone
    assert tarfile.is_tarfile(archive)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "index.json" in names and "oci-layout" in names
    assert f"blobs/sha256/{descs['arm']['digest'][7:]}" in names
    assert not [n for n in names if TEMP_PREFIX in n]
    assert [p.name for p in tmp_path.iterdir() if TEMP_PREFIX in p.name] == []

    raw = skopeo("inspect", "--raw", f"oci-archive:{archive}:multi").encode()
    assert sha256(raw) == descs["multi"]["digest"]
    skopeo("copy", "--all", f"oci-archive:{archive}:multi", f"oci:{tmp_path / 'from-archive'}:m")

    # regtool reads its own archive back (in place, no extraction) and copies it to oci:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    async with (
        await open_archive_source(str(archive), "multi", tmpdir=str(scratch)) as asrc,
        await OCILayoutDestination.open(str(tmp_path / "back"), "multi") as dst2,
    ):
        top = await copy_image(asrc, dst2)
        assert list(scratch.iterdir()) == []
    assert top.digest == descs["multi"]["digest"]
    assert files_under(tmp_path / "back" / "blobs") == {
        k: v
        for k, v in files_under(src_root / "blobs").items()
        if k in files_under(tmp_path / "back" / "blobs")
    }

    # an archive skopeo wrote (skopeo 1.9 only resolves OCI-typed index.json entries, so not "docker")
    skopeo("copy", f"oci:{src_root}:single", f"oci-archive:{tmp_path / 'sk.tar'}:d")
    async with await open_archive_source(str(tmp_path / "sk.tar")) as ssrc:
        m = await ssrc.get_manifest()  # no REF, exactly one image
        assert await ssrc.list_tags() == ["d"]
        for blob in [m.config, *m.layers]:
            assert blob is not None
            assert sha256(await collect(ssrc.open_blob(blob))) == blob.digest


@pytest.mark.anyio
async def test_compressed_oci_archive_is_extracted_and_cleaned_up(tmp_path: Path) -> None:
    src_root = tmp_path / "a"
    descs = sample_layout(src_root)
    archive = tmp_path / "img.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src_root, arcname=".")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    src = await open_archive_source(str(archive), "docker", tmpdir=str(scratch))
    async with src:
        assert len(list(scratch.iterdir())) == 1
        m = await src.get_manifest()
        assert m.digest == descs["docker"]["digest"] and m.media_type == DOCKER_V2S2
        assert m.config is not None
        assert sha256(await src.read_blob(m.config)) == m.config.digest
    assert list(scratch.iterdir()) == []


@pytest.mark.anyio
async def test_oci_archive_destination_replaces_file_atomically(tmp_path: Path) -> None:
    src_root = tmp_path / "a"
    sample_layout(src_root)
    archive = tmp_path / "img.tar"
    archive.write_bytes(b"previous")
    async with await OCILayoutSource.open(str(src_root), "single") as src:
        dst = await OCIArchiveDestination.open_archive(str(archive), "s", tmpdir=str(tmp_path))
        async with dst:
            await dst.put_blob(
                Descriptor(media_type=OCI_LAYER_GZIP, digest=sha256(b"x"), size=1), _chunks([b"x"])
            )
            # no commit: the old file stays as it was
    assert archive.read_bytes() == b"previous"
    async with await OCILayoutSource.open(str(src_root), "single") as src:
        dst = await OCIArchiveDestination.open_archive(str(archive), "s", tmpdir=str(tmp_path))
        async with dst:
            await copy_image(src, dst)
    async with await open_archive_source(str(archive)) as asrc:
        assert await asrc.list_tags() == ["s"]  # replaced, not merged (as skopeo does)


# --------------------------------------------------------------------------- names and resolution


@pytest.mark.anyio
async def test_layout_ref_resolution(tmp_path: Path) -> None:
    root = tmp_path / "a"
    descs = sample_layout(root)
    src = await OCILayoutSource.open(str(root))
    with pytest.raises(UsageError) as info:
        await src.get_manifest()
    assert "'single'" in str(info.value) and "'multi'" in str(info.value)
    assert await src.list_tags() == ["single", "multi", "docker"]
    with pytest.raises(NotFound):
        await (await OCILayoutSource.open(str(root), "nope")).get_manifest()
    m = await (await OCILayoutSource.open(str(root), "docker")).get_manifest()
    assert m.media_type == DOCKER_V2S2
    one = tmp_path / "one"
    make_image(one)
    write_layout(one, [named(descs["single"], None)])
    shutil.copytree(root / "blobs", one / "blobs", dirs_exist_ok=True)
    assert (await (await OCILayoutSource.open(str(one))).get_manifest()).digest == descs["single"]["digest"]
    with pytest.raises(NotFound):
        await OCILayoutSource.open(str(tmp_path / "missing"))


@pytest.mark.anyio
async def test_oci_destination_keeps_other_entries_and_extra_tags(tmp_path: Path) -> None:
    src_root = tmp_path / "a"
    descs = sample_layout(src_root)
    out = tmp_path / "o"
    async with await OCILayoutSource.open(str(src_root), "single") as src:
        async with await OCILayoutDestination.open(str(out), "app:v1") as dst:
            await copy_image(src, dst)
        async with await OCILayoutDestination.open(str(out), "app:v2") as dst:
            top = await copy_image(src, dst)
            # a cosign-style signature tag next to it, as `cosign save` lays out
            sig_manifest = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": {
                        "mediaType": OCI_CONFIG,
                        "digest": top.config.digest if top.config else "",
                        "size": top.config.size if top.config else 0,
                    },
                    "layers": [],
                }
            ).encode()
            sig_digest = sha256(sig_manifest)
            assert dst.supports_tags
            await dst.put_manifest(sig_manifest, OCI_MANIFEST, sig_digest)
            sig_tag = f"sha256-{top.digest[7:]}.sig"
            await dst.tag(
                sig_tag, Descriptor(media_type=OCI_MANIFEST, digest=sig_digest, size=len(sig_manifest))
            )
            await dst.commit()
    async with (
        await OCILayoutSource.open(str(src_root), "docker") as src,
        await OCILayoutDestination.open(str(out), "app:v1") as dst,
    ):
        await copy_image(src, dst)  # moves app:v1 to another image
    index = json.loads((out / "index.json").read_text())
    by_name = {e["annotations"][REF_NAME_ANNOTATION]: e["digest"] for e in index["manifests"]}
    assert by_name == {
        "app:v2": descs["single"]["digest"],
        sig_tag: sig_digest,
        "app:v1": descs["docker"]["digest"],
    }
    assert len(index["manifests"]) == 3
    async with await OCILayoutSource.open(str(out), "app:v2") as osrc:
        tagged = await osrc.get_tagged_manifest(sig_tag)
        assert tagged is not None and tagged.raw == sig_manifest


@pytest.mark.anyio
async def test_unnamed_destination_and_same_digest_merge(tmp_path: Path) -> None:
    src_root = tmp_path / "a"
    descs = sample_layout(src_root)
    out = tmp_path / "o"
    for _ in range(2):
        async with (
            await OCILayoutSource.open(str(src_root), "single") as src,
            await OCILayoutDestination.open(str(out)) as dst,
        ):
            await copy_image(src, dst)
    entries = json.loads((out / "index.json").read_text())["manifests"]
    assert entries == [
        {"mediaType": OCI_MANIFEST, "digest": descs["single"]["digest"], "size": descs["single"]["size"]}
    ]
    async with (
        await OCILayoutSource.open(str(src_root), "single") as src,
        await OCILayoutDestination.open(str(out), "named") as dst,
    ):
        await copy_image(src, dst)  # the unnamed entry of the same digest takes the name
    entries = json.loads((out / "index.json").read_text())["manifests"]
    assert len(entries) == 1 and entries[0]["annotations"] == {REF_NAME_ANNOTATION: "named"}


def test_ref_name_grammar() -> None:
    for good in (
        "latest",
        "v1.2.3",
        "docker.io/library/alpine:3.19",
        "sha256-" + "a" * 64 + ".sig",
        "a--b",
        "A_b",
    ):
        assert validate_ref_name(good) == good
    for bad in ("", "..", "../x", "a/../b", "/abs", "a/", "a b", "a\n", "-a", "a..b", "x" * 2000):
        with pytest.raises(InvalidReference):
            validate_ref_name(bad)


# --------------------------------------------------------------------------- security


BAD_DIGESTS = [
    "sha256:../../x",
    "sha256:" + "../" * 20 + "etc/passwd",
    "sha256:" + "A" * 64,
    "sha256:" + "a" * 63,
    "md5:" + "a" * 32,
    "../../sha256:" + "a" * 64,
    "sha256/" + "a" * 64,
    "sha256:" + "a" * 64 + "/",
    "sha256:" + "a" * 62 + "/x",
    "",
]


@pytest.mark.anyio
async def test_path_traversal_in_digests_and_names_is_refused(tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    layout = outer / "layout" / "deeper"
    dir_out = outer / "dirout" / "deeper"
    odst = await OCILayoutDestination.open(str(layout), "ok")
    ddst = await DirDestination.open(str(dir_out))
    before = files_under(tmp_path)
    for bad in BAD_DIGESTS:
        desc = forged(bad)  # Descriptor() refuses most of these itself; the transports must too
        for dst in (odst, ddst):
            with pytest.raises(ManifestError):
                await dst.put_blob(desc, _chunks([b"x"]))
            with pytest.raises(ManifestError):
                await dst.has_blob(desc)
            with pytest.raises(ManifestError):
                await dst.put_manifest(b"{}", OCI_MANIFEST, bad)
            with pytest.raises(ManifestError):
                await dst.put_signatures(bad, [b"s"])
        with pytest.raises(ManifestError):
            await odst.tag("ok", desc)
        with pytest.raises(ManifestError):
            split_digest(bad)
    for bad_name in ("../x", "/abs", "a/../../b", "..", "a\x00b"):
        with pytest.raises(InvalidReference):
            await odst.tag(bad_name, Descriptor(media_type=OCI_MANIFEST, digest=sha256(b"{}"), size=2))
        with pytest.raises(InvalidReference):
            await OCILayoutDestination.open(str(tmp_path / "x"), bad_name)
        with pytest.raises(InvalidReference):
            await OCILayoutSource.open(str(layout), bad_name)
    await odst.commit()
    await ddst.commit()
    after = files_under(tmp_path)
    new = set(after) - set(before)
    assert all(n.startswith(("outer/layout/deeper/", "outer/dirout/deeper/")) for n in new), new
    assert not (tmp_path / "x").exists()

    # a hostile index.json: the digest never becomes a path
    evil = tmp_path / "evil"
    write_layout(evil, [{"mediaType": OCI_MANIFEST, "digest": "sha256:../../../etc/passwd", "size": 1}])
    src = await OCILayoutSource.open(str(evil))
    with pytest.raises(ManifestError):
        await src.get_manifest()
    with pytest.raises(ManifestError):
        await collect(src.open_blob(forged("sha256:../../x")))
    with pytest.raises(ManifestError):
        await src.get_manifest("sha256:../../x")
    dsrc = await DirSource.open(str(dir_out))
    with pytest.raises(ManifestError):
        await dsrc.get_manifest("sha256:../version")


def forged(digest: str) -> Descriptor:
    """A descriptor carrying a digest its constructor would have refused."""
    desc = Descriptor(media_type=OCI_LAYER_GZIP, digest=sha256(b"x"), size=1)
    object.__setattr__(desc, "digest", digest)
    return desc


def _evil_tar(path: Path, mode: str, member: str, link: str | None = None) -> None:
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        data = b'{"imageLayoutVersion":"1.0.0"}'
        info = tarfile.TarInfo("oci-layout")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo(member)
        if link is not None:
            info.type = tarfile.SYMTYPE
            info.linkname = link
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        index = b'{"schemaVersion":2,"manifests":[]}'
        info = tarfile.TarInfo("index.json")
        info.size = len(index)
        tar.addfile(info, io.BytesIO(index))


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["w", "w:gz"])
@pytest.mark.parametrize(
    ("member", "link"),
    [("../escaped", None), ("/tmp/abs-escaped", None), ("blobs/../../escaped", None), ("blobs/link", "/etc")],
)
async def test_archive_members_escaping_are_refused(
    tmp_path: Path, mode: str, member: str, link: str | None
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    archive = work / "evil.tar"
    _evil_tar(archive, mode, member, link)
    scratch = work / "scratch"
    scratch.mkdir()
    before = files_under(tmp_path)
    with pytest.raises(ManifestError):
        await open_archive_source(str(archive), tmpdir=str(scratch))
    assert files_under(tmp_path) == before
    assert list(scratch.iterdir()) == []
    assert not (tmp_path / "escaped").exists()
    assert not Path("/tmp/abs-escaped").exists()


# --------------------------------------------------------------------------- digest verification


async def _chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.mark.anyio
async def test_put_blob_digest_or_size_mismatch_leaves_no_file(tmp_path: Path) -> None:
    good = b"hello world"
    for dst in (
        await OCILayoutDestination.open(str(tmp_path / "o")),
        await DirDestination.open(str(tmp_path / "d")),
    ):
        with pytest.raises(DigestMismatch):
            await dst.put_blob(
                Descriptor(media_type=OCI_CONFIG, digest=sha256(good), size=len(good)),
                _chunks([b"hello", b" there"]),
            )
        with pytest.raises(DigestMismatch):
            await dst.put_blob(
                Descriptor(media_type=OCI_CONFIG, digest=sha256(good), size=len(good) + 1), _chunks([good])
            )
        with pytest.raises(DigestMismatch):
            await dst.put_manifest(b'{"schemaVersion":2}', OCI_MANIFEST, sha256(b"other"))
        assert not await dst.has_blob(Descriptor(media_type=OCI_CONFIG, digest=sha256(good), size=len(good)))
        await dst.put_blob(
            Descriptor(media_type=OCI_CONFIG, digest=sha256(good), size=len(good)), _chunks([good])
        )
        assert await dst.has_blob(Descriptor(media_type=OCI_CONFIG, digest=sha256(good), size=len(good)))
    assert [p.name for p in (tmp_path / "o" / "blobs" / "sha256").iterdir()] == [sha256(good)[7:]]
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == sorted([sha256(good)[7:], "version"])


@pytest.mark.anyio
async def test_open_blob_detects_corruption_before_last_chunk(tmp_path: Path) -> None:
    root = tmp_path / "o"
    data = os.urandom(CHUNK_SIZE * 2 + 1234)
    digest = store_blob(root, data)
    write_layout(root, [])
    corrupted = bytearray(data)
    corrupted[10] ^= 0xFF
    (root / "blobs/sha256" / digest[7:]).write_bytes(bytes(corrupted))
    src = await OCILayoutSource.open(str(root))
    received: list[bytes] = []
    with pytest.raises(DigestMismatch):
        async for chunk in src.open_blob(
            Descriptor(media_type=OCI_LAYER_GZIP, digest=digest, size=len(data))
        ):
            received.append(chunk)
    assert sum(map(len, received)) < len(data)
    # a size that disagrees with the descriptor fails up front
    with pytest.raises(DigestMismatch):
        await collect(src.open_blob(Descriptor(media_type=OCI_LAYER_GZIP, digest=digest, size=len(data) - 1)))
    with pytest.raises(NotFound):
        await collect(src.open_blob(Descriptor(media_type=OCI_LAYER_GZIP, digest=sha256(b"absent"), size=6)))
    # a manifest whose bytes were altered is refused too
    m_root = tmp_path / "m"
    desc = make_image(m_root)
    write_layout(m_root, [named(desc, "t")])
    path = m_root / "blobs/sha256" / desc["digest"][7:]
    path.write_bytes(path.read_bytes() + b" ")
    with pytest.raises(DigestMismatch):
        await (await OCILayoutSource.open(str(m_root), "t")).get_manifest()


@pytest.mark.anyio
async def test_big_blob_streams_with_low_memory(tmp_path: Path) -> None:
    size = 100 * 1024 * 1024
    block = os.urandom(256 * 1024)
    h = hashlib.sha256()
    for _ in range(size // len(block)):
        h.update(block)
    desc = Descriptor(media_type=OCI_LAYER_GZIP, digest="sha256:" + h.hexdigest(), size=size)

    async def produce() -> AsyncIterator[bytes]:
        for _ in range(size // len(block)):
            yield block

    dst = await OCILayoutDestination.open(str(tmp_path / "o"))
    ddst = await DirDestination.open(str(tmp_path / "d"))
    tracemalloc.start()
    try:
        await dst.put_blob(desc, produce())
        (tmp_path / "o" / "index.json").write_text('{"schemaVersion":2,"manifests":[]}')
        osrc = await OCILayoutSource.open(str(tmp_path / "o"))
        await ddst.put_blob(desc, osrc.open_blob(desc))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, peak
    assert (tmp_path / "d" / desc.digest[7:]).stat().st_size == size


# --------------------------------------------------------------------------- dir: specifics and the factory


@pytest.mark.anyio
async def test_dir_destination_directory_rules(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    with pytest.raises(UsageError):
        await DirDestination.open(str(other))
    assert (other / "precious.txt").read_text() == "keep me"
    with pytest.raises(UsageError):
        await OCILayoutDestination.open(str(other))

    src_root = tmp_path / "a"
    sample_layout(src_root)
    out = tmp_path / "d"
    async with (
        await OCILayoutSource.open(str(src_root), "multi") as src,
        await DirDestination.open(str(out)) as dst,
    ):
        await copy_image(src, dst)
    async with (
        await OCILayoutSource.open(str(src_root), "single") as src,
        await DirDestination.open(str(out)) as dst,
    ):
        assert not dst.supports_tags
        top = await copy_image(src, dst)
        with pytest.raises(UsageError):
            await dst.tag("extra", desc_of(top))
    names = sorted(p.name for p in out.iterdir())
    assert [n for n in names if n.endswith(".manifest.json")] == []  # the old image was cleared
    assert (out / "manifest.json").read_bytes() == top.raw

    dst = await DirDestination.open(str(tmp_path / "untagged"))
    await dst.put_manifest(top.raw, top.media_type, top.digest)
    with pytest.raises(ManifestError):
        await dst.commit()


@pytest.mark.anyio
async def test_factory_opens_local_transports(tmp_path: Path) -> None:
    from regtool.reference import parse_image

    src_root = tmp_path / "a"
    descs = sample_layout(src_root)
    src = await open_source(parse_image(f"oci:{src_root}:single"))
    assert isinstance(src, OCILayoutSource)
    dst = await open_destination(parse_image(f"dir:{tmp_path / 'd'}"))
    assert isinstance(dst, DirDestination)
    async with src, dst:
        await copy_image(src, dst)
    async with (
        await open_source(parse_image(f"dir:{tmp_path / 'd'}")) as dsrc,
        await open_destination(parse_image(f"oci-archive:{tmp_path / 'x.tar'}:t")) as adst,
    ):
        assert (await copy_image(dsrc, adst)).digest == descs["single"]["digest"]
    async with await open_source(parse_image(f"oci-archive:{tmp_path / 'x.tar'}:t")) as asrc:
        assert (await asrc.get_manifest()).digest == descs["single"]["digest"]
    with pytest.raises(UsageError):
        await open_destination(parse_image(f"dir:{tmp_path / 'a'}"))  # not empty, not a dir: image
    with pytest.raises(UsageError):  # docker:// needs the run's registry client
        await open_source(parse_image("docker://localhost:5000/team/app:1"))
