"""Seed the benchmark's source registry with the images of issues 3 and 4.

Built from bytes and pushed with the test bed's plain httpx helpers
(``tests/support/images.py``), never with regtool itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tests.support import images
from tests.support.images import MiB, Target


@dataclass
class Seeded:
    """What was pushed: repository, tag -> manifest digest, and the bytes of all distinct blobs."""

    repository: str
    tags: dict[str, str] = field(default_factory=dict)
    blob_bytes: int = 0
    blobs: int = 0


def push_multi_layer_image(
    target: Target,
    repo: str,
    tag: str,
    *,
    layers: int = 5,
    layer_size: int = 100 * MiB,
    seed: str | None = None,
) -> Seeded:
    """An OCI image with ``layers`` incompressible layers of ``layer_size`` random bytes each.

    Layers are tar+gzip at level 0 (stored blocks, so about ``layer_size`` bytes on the
    wire), streamed from a generator, so seeding 500 MiB needs O(1 MiB) of memory.
    """
    seed = seed or f"{repo}:{tag}"
    descriptors: list[dict[str, object]] = []
    diff_ids: list[str] = []
    total = 0
    for i in range(layers):
        stats = images.StreamedLayer()
        blob = images.push_blob_stream(
            target,
            repo,
            images.iter_layer(f"{seed}/layer{i}", layer_size, gzip_level=0, stats=stats),
            images.OCI_LAYER_GZIP,
            stats=stats,
        )
        descriptors.append(blob.descriptor())
        diff_ids.append(stats.diff_id)
        total += blob.size
    config = images.Blob.of(images.make_config(diff_ids), images.OCI_CONFIG)
    images.push_blob(target, repo, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": images.OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": descriptors,
    }
    digest = images.push_manifest(target, repo, tag, images.dump_json(manifest), images.OCI_MANIFEST)
    return Seeded(repo, {tag: digest}, blob_bytes=total + config.size, blobs=layers + 1)


def push_index_image(
    target: Target,
    repo: str,
    tag: str,
    *,
    platforms: Sequence[str] = images.DEFAULT_PLATFORMS,
    layers: int = 2,
    layer_size: int = 512 * 1024,
) -> Seeded:
    """A multi-platform OCI index (3 platforms by default), each child with its own layers."""
    pushed = images.push_index(target, repo, tag, platforms=platforms, layers=layers, layer_size=layer_size)
    blobs = [b for child in pushed.children for b in child.layers]
    configs = [child.config_blob for child in pushed.children if child.config_blob is not None]
    size = sum(b.size for b in blobs) + sum(c.size for c in configs)
    return Seeded(repo, {tag: pushed.digest}, blob_bytes=size, blobs=len(blobs) + len(configs))


def push_tagged_repository(
    target: Target,
    repo: str,
    count: int,
    *,
    base_size: int = 256 * 1024,
    unique_size: int = 4 * 1024,
    index_tag: str | None = None,
    seed: str | None = None,
) -> Seeded:
    """``count`` small single-platform tags (``1.0.0`` ...) sharing one base layer, plus an optional index.

    Each tag is an OCI image of two layers: the shared base (``base_size`` random bytes)
    and a layer of its own (``unique_size``), with its own config. With ``index_tag`` a
    3-platform index (small children) is pushed under that tag as well.
    """
    seed = seed or repo
    base = images.make_layer(f"{seed}/base", base_size)
    result = Seeded(repo)
    result.blob_bytes += base.size
    result.blobs += 1
    for i in range(count):
        tag = f"1.0.{i}"
        unique = images.make_layer(f"{seed}/{tag}", unique_size)
        built = images.build_image(f"{seed}/{tag}", layers=0, extra_layers=[base, unique])
        pushed = images.push_built(target, repo, built, tag)
        result.tags[tag] = pushed.digest
        result.blob_bytes += unique.size + (built.config.size if built.config else 0)
        result.blobs += 2
    if index_tag is not None:
        index = push_index_image(target, repo, index_tag, layers=1, layer_size=64 * 1024)
        result.tags[index_tag] = index.tags[index_tag]
        result.blob_bytes += index.blob_bytes
        result.blobs += index.blobs
    return result
