"""Hostile and broken registries: regtool must refuse what does not add up and write nothing for it.

A real distribution registry cannot be made to lie, so these tests serve a registry double
(:class:`FakeRegistry`, an in-memory distribution API behind ``httpx.MockTransport``) and make it
misbehave on purpose: content that does not match its digest, oversized and endless bodies,
nested and self-referencing indexes, media types that disagree, absurd descriptor sizes, endless
tag pagination, ``Location`` headers and redirects to other hosts, and digests or names crafted as
path traversal. Copies go through the real engine (``regtool.copy.Copier`` with a ``DockerSource``)
into real ``oci:`` and ``dir:`` layouts under ``tmp_path``, so "nothing written" is checked on disk.

What ``tests/test_client_mock.py`` already covers at the client level (a blob or manifest digest
mismatch on ``open_blob``/``get_manifest``, a Content-Length over 4 MiB, looping ``Link`` pages, a
blob GET redirected to an object store) is not repeated here; these tests go one step further
(through a copy, to the disk) or cover the cases it does not.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from regtool.copy import Copier, CopyOptions
from regtool.errors import DigestMismatch, InvalidReference, ManifestError, RegtoolError
from regtool.manifest import MAX_MANIFEST_SIZE, Descriptor
from regtool.reference import parse_image, parse_reference
from regtool.registry import ClientOptions, RegistryClient, RegistryError, RegistryOptions, RetryPolicy
from regtool.registry import client as client_module
from regtool.registry.credentials import Credential
from regtool.transports import open_destination
from regtool.transports.base import ImageDestination
from regtool.transports.dirlayout import DirDestination
from regtool.transports.docker import DockerSource
from regtool.transports.layout import OCILayoutDestination
from tests.support.cli import run_regtool
from tests.support.images import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    BuiltImage,
    build_image,
    build_index,
    dump_json,
    sha256,
)

HOST = "hostile.example"
REPO = "evil/app"
TOKEN = "tok-hostile-3f9c1e"  # what the client sends as "Bearer ..." to HOST

Route = Callable[[httpx.Request], "httpx.Response | None"]


# --------------------------------------------------------------------------- the registry double


class _Endless(httpx.AsyncByteStream):
    """A body that never ends (or ends after ``limit`` bytes); counts what was read from it."""

    def __init__(self, piece: bytes = b" " * 65536, limit: int | None = None) -> None:
        self.piece = piece
        self.limit = limit
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.limit is None or self.sent < self.limit:
            self.sent += len(self.piece)
            yield self.piece


class FakeRegistry:
    """An in-memory distribution API for ``HOST`` (and any other host it is asked about).

    ``add`` stores a built image (children, blobs, manifest) the honest way; ``routes`` are tried
    first, in order, and return a response to misbehave or None to let the honest answer go.
    ``seen`` records every request (method, host, path, Authorization header).
    """

    def __init__(self) -> None:
        self.manifests: dict[str, tuple[bytes, str]] = {}
        self.blobs: dict[str, bytes] = {}
        self.tags: dict[str, str] = {}
        self.routes: list[Route] = []
        self.seen: list[tuple[str, str, str, str | None]] = []

    def add(self, built: BuiltImage, tag: str | None = None) -> BuiltImage:
        for child in built.children:
            self.add(child)
        for blob in built.blobs():
            assert blob.data is not None
            self.blobs[blob.digest] = blob.data
        self.add_manifest(built.manifest, built.media_type, tag)
        return built

    def add_manifest(self, data: bytes, media_type: str, tag: str | None = None) -> str:
        digest = sha256(data)
        self.manifests[digest] = (data, media_type)
        if tag:
            self.tags[tag] = digest
        return digest

    def count(self, method: str, path_regex: str) -> int:
        return sum(1 for m, _, p, _ in self.seen if m == method and re.search(path_regex, p))

    def handler(self, req: httpx.Request) -> httpx.Response:
        self.seen.append((req.method, req.url.host, req.url.path, req.headers.get("authorization")))
        for route in self.routes:
            answer = route(req)
            if answer is not None:
                return answer
        return self.honest(req)

    def honest(self, req: httpx.Request) -> httpx.Response:
        path = req.url.path
        if path == "/v2/":
            return httpx.Response(200, json={})
        m = re.fullmatch(r"/v2/(.+)/(manifests|blobs|tags)/(.+)", path)
        if m is None:
            return _error(404, "NAME_UNKNOWN")
        kind, ident = m.group(2), m.group(3)
        if kind == "tags":
            return httpx.Response(200, json={"name": m.group(1), "tags": sorted(self.tags)})
        if kind == "manifests":
            digest = self.tags.get(ident, ident)
            if digest not in self.manifests:
                return _error(404, "MANIFEST_UNKNOWN")
            data, media_type = self.manifests[digest]
            headers = {"Content-Type": media_type, "Docker-Content-Digest": digest}
            return _answer(req, data, headers)
        if ident not in self.blobs:
            return _error(404, "BLOB_UNKNOWN")
        return _answer(req, self.blobs[ident], {"Content-Type": "application/octet-stream"})

    def client(self, **opts: Any) -> RegistryClient:
        return RegistryClient(
            ClientOptions(
                default=RegistryOptions(**opts),
                retry=RetryPolicy(attempts=3, initial_backoff=0.01, max_backoff=0.02, max_wait=1),
                transport=httpx.MockTransport(self.handler),
            )
        )


def _answer(req: httpx.Request, data: bytes, headers: dict[str, str]) -> httpx.Response:
    headers = {**headers, "Content-Length": str(len(data))}
    return httpx.Response(200, headers=headers, content=b"" if req.method == "HEAD" else data)


def _error(status: int, code: str) -> httpx.Response:
    return httpx.Response(status, json={"errors": [{"code": code, "message": code.lower()}]})


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _image(seed: str = "img") -> BuiltImage:
    return build_image(seed, layers=2, layer_size=2048)


def _index_of(*children: BuiltImage | dict[str, Any]) -> bytes:
    descriptors = [c.descriptor() if isinstance(c, BuiltImage) else c for c in children]
    return dump_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors})


def _manifest_with_layers(*layers: dict[str, Any], config: dict[str, Any] | None = None) -> bytes:
    cfg = config or {"mediaType": OCI_CONFIG, "digest": sha(b"{}"), "size": 2}
    return dump_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": list(layers)})


def _files(root: Path) -> list[str]:
    """Every file and symlink under ``root`` (relative), sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(out)


def _blob_file(layout: Path, digest: str) -> Path:
    algorithm, hexpart = digest.split(":", 1)
    return layout / "blobs" / algorithm / hexpart


def _index_entries(layout: Path) -> list[dict[str, Any]]:
    path = layout / "index.json"
    if not path.exists():
        return []
    entries: list[dict[str, Any]] = json.loads(path.read_bytes()).get("manifests") or []
    return entries


async def _copy(
    fake: FakeRegistry,
    dest: ImageDestination,
    ref: str = f"{HOST}/{REPO}:1",
    *,
    multi_arch: str = "all",
    **opts: Any,
) -> None:
    async with fake.client(**opts) as client:
        source = DockerSource(client, parse_reference(ref))
        async with dest:
            await Copier(CopyOptions(multi_arch=multi_arch)).copy(source, dest)  # type: ignore[arg-type]


def _run_copy(main: Callable[[], Any]) -> None:
    anyio.run(main)


def copy_to_oci(fake: FakeRegistry, layout: Path, ref: str = f"{HOST}/{REPO}:1", **kw: Any) -> None:
    async def main() -> None:
        await _copy(fake, await OCILayoutDestination.open(str(layout), "copied"), ref, **kw)

    _run_copy(main)


def copy_to_dir(fake: FakeRegistry, directory: Path, ref: str = f"{HOST}/{REPO}:1", **kw: Any) -> None:
    async def main() -> None:
        await _copy(fake, await DirDestination.open(str(directory)), ref, **kw)

    _run_copy(main)


@pytest.fixture
def fake() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[Path]:
    """An ``oci:`` destination under a directory of its own; asserts nothing leaked next to it."""
    parent = tmp_path / "parent"
    parent.mkdir()
    path = parent / "layout"
    yield path
    assert sorted(os.listdir(parent)) in ([], ["layout"]), "something was written outside the layout"


def test_the_honest_double_copies_fine(fake: FakeRegistry, layout: Path) -> None:
    """Control: with nothing faked, the same copy succeeds, so every failure below is the lie's doing."""
    index = fake.add(build_index("honest"), tag="1")
    copy_to_oci(fake, layout)
    entries = _index_entries(layout)
    assert [(e["digest"], e["annotations"]["org.opencontainers.image.ref.name"]) for e in entries] == [
        (index.digest, "copied")
    ]
    for child in index.children:
        assert _blob_file(layout, child.digest).read_bytes() == child.manifest
        for blob in child.blobs():
            assert _blob_file(layout, blob.digest).read_bytes() == blob.data


# --------------------------------------------------------------------------- content vs digest


def _assert_nothing_named(layout: Path, *digests: str) -> None:
    """The copy failed: no entry in index.json, nothing stored under ``digests``, no temp files left."""
    assert _index_entries(layout) == []
    for digest in digests:
        assert not _blob_file(layout, digest).exists(), digest
    assert not [f for f in _files(layout) if ".regtool-tmp-" in f] if layout.exists() else True


@pytest.mark.parametrize("lie", ["same-size", "longer", "shorter", "endless"])
def test_blob_not_matching_its_digest_is_refused_and_not_written(
    fake: FakeRegistry, layout: Path, lie: str
) -> None:
    image = fake.add(_image(), tag="1")
    layer = image.layers[1]
    assert layer.data is not None
    endless = _Endless()
    bodies = {
        "same-size": bytes(reversed(layer.data)),
        "longer": layer.data + b"trailing garbage",
        "shorter": layer.data[:-100],
    }

    def lie_about_layer(req: httpx.Request) -> httpx.Response | None:
        if req.url.path.endswith(f"/blobs/{layer.digest}") and req.method == "GET":
            if lie == "endless":
                return httpx.Response(200, stream=endless)
            return httpx.Response(200, content=bodies[lie])
        return None

    fake.routes.append(lie_about_layer)
    with pytest.raises(DigestMismatch) as info:
        copy_to_oci(fake, layout)
    message = str(info.value)
    assert layer.digest in message and HOST in message
    _assert_nothing_named(layout, layer.digest, image.digest)
    # an endless body is abandoned as soon as it passes the descriptor's size
    assert endless.sent <= layer.size + 2 * 65536


def test_child_manifest_not_matching_its_digest_is_refused_and_not_written(
    fake: FakeRegistry, layout: Path
) -> None:
    index = fake.add(build_index("idx"), tag="1")
    victim = index.children[1]
    impostor = _image("impostor")
    fake.add(impostor)

    def serve_impostor(req: httpx.Request) -> httpx.Response | None:
        if req.url.path.endswith(f"/manifests/{victim.digest}"):
            # a valid manifest, with a Docker-Content-Digest header that tells the truth about it
            return httpx.Response(
                200,
                content=impostor.manifest,
                headers={"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": impostor.digest},
            )
        return None

    fake.routes.append(serve_impostor)
    with pytest.raises(DigestMismatch) as info:
        copy_to_oci(fake, layout)
    assert victim.digest in str(info.value) and HOST in str(info.value)
    _assert_nothing_named(layout, victim.digest, impostor.digest, index.digest)
    # the impostor's blobs were never fetched: nothing derived from bad content is used
    for blob in impostor.blobs():
        assert fake.count("GET", blob.digest) == 0


def test_tag_whose_docker_content_digest_lies_is_refused(fake: FakeRegistry, layout: Path) -> None:
    image = fake.add(_image(), tag="1")
    claimed = sha(b"what the registry claims")

    def lying_header(req: httpx.Request) -> httpx.Response | None:
        if req.url.path.endswith("/manifests/1"):
            headers = {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": claimed}
            return httpx.Response(200, content=image.manifest, headers=headers)
        return None

    fake.routes.append(lying_header)
    with pytest.raises(DigestMismatch) as info:
        copy_to_oci(fake, layout)
    assert claimed in str(info.value) and HOST in str(info.value)
    _assert_nothing_named(layout, image.digest, claimed)


def test_digest_mismatch_through_the_cli_is_one_line_exit_1(tmp_path: Path) -> None:
    """The same refusal as a user sees it, from ``regtool copy`` against a lying local layout."""
    src = tmp_path / "src"

    async def make() -> None:
        fake = FakeRegistry()
        fake.add(_image(), tag="1")
        await _copy(fake, await OCILayoutDestination.open(str(src), "1"))

    _run_copy(make)
    image = _image()
    layer = image.layers[0]
    _blob_file(src, layer.digest).write_bytes(b"x" * layer.size)  # same size, other bytes
    dest = tmp_path / "dest"
    out = run_regtool(["copy", f"oci:{src}:1", f"oci:{dest}:1"])
    assert out.rc == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("regtool: error:") and layer.digest in lines[-1]
    assert "Traceback" not in out.stderr
    assert not _blob_file(dest, layer.digest).exists() and _index_entries(dest) == []


def test_copy_errors_are_not_exception_groups(fake: FakeRegistry, layout: Path) -> None:
    image = fake.add(_image(), tag="1")
    layer = image.layers[0]
    fake.routes.append(
        lambda req: httpx.Response(200, content=b"x" * layer.size) if layer.digest in req.url.path else None
    )

    async def main() -> None:
        await _copy(fake, await OCILayoutDestination.open(str(layout), "copied"))

    with pytest.raises(DigestMismatch):
        anyio.run(main)


# --------------------------------------------------------------------------- manifest size


def _padded_manifest(size: int) -> bytes:
    """A valid OCI manifest of exactly ``size`` bytes (whitespace padding, as JSON allows)."""
    base = _manifest_with_layers()
    assert size >= len(base)
    return base[:-1] + b" " * (size - len(base)) + base[-1:]


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_manifest_one_byte_over_4_mib_is_refused_exactly_at_the_limit(
    fake: FakeRegistry, layout: Path, declared: bool
) -> None:
    at_limit = _padded_manifest(MAX_MANIFEST_SIZE)
    over = _padded_manifest(MAX_MANIFEST_SIZE + 1)

    def serve(data: bytes) -> Route:
        def route(req: httpx.Request) -> httpx.Response | None:
            if "/manifests/" not in req.url.path:
                return None
            if declared:
                return httpx.Response(200, content=data, headers={"Content-Type": OCI_MANIFEST})
            return httpx.Response(200, stream=_Endless(data, limit=len(data)), headers={"Content-Type": OCI_MANIFEST})

        return route

    async def fetch(data: bytes) -> int:
        fake.routes[:] = [serve(data)]
        async with fake.client() as client:
            manifest = await client.get_manifest(parse_reference(f"{HOST}/{REPO}:1"))
            return manifest.size

    assert anyio.run(fetch, at_limit) == MAX_MANIFEST_SIZE
    with pytest.raises(ManifestError, match="limit"):
        anyio.run(fetch, over)


def test_endless_manifest_body_is_cut_off_after_4_mib(fake: FakeRegistry, layout: Path) -> None:
    endless = _Endless(b" " * 65536)
    fake.routes.append(
        lambda req: httpx.Response(200, stream=endless, headers={"Content-Type": OCI_MANIFEST})
        if "/manifests/" in req.url.path
        else None
    )
    with pytest.raises(ManifestError, match="limit"):
        copy_to_oci(fake, layout)
    assert endless.sent <= MAX_MANIFEST_SIZE + 2 * 65536
    assert not layout.exists() or _index_entries(layout) == []


def test_content_length_over_the_limit_is_refused_before_reading_the_body(fake: FakeRegistry) -> None:
    endless = _Endless()
    fake.routes.append(
        lambda req: httpx.Response(
            200, stream=endless, headers={"Content-Type": OCI_MANIFEST, "Content-Length": str(10 * 2**30)}
        )
    )

    async def main() -> None:
        async with fake.client() as client:
            await client.get_manifest(parse_reference(f"{HOST}/{REPO}:1"))

    with pytest.raises(ManifestError, match="limit"):
        anyio.run(main)
    assert endless.sent == 0


# --------------------------------------------------------------------------- nested and cyclic indexes


def test_self_referencing_index_fails_cleanly(fake: FakeRegistry, layout: Path) -> None:
    """index -> "child" -> ... -> itself: the registry answers the child with the index again.

    A real cycle cannot be built (an index cannot contain its own digest), so a registry that wants
    one must serve an index under a digest it does not hash to, and the digest check stops it at
    the first step. No recursion, no request storm.
    """
    child = _image("child")
    fake.add(child)
    top = fake.add_manifest(_index_of(child), OCI_INDEX, tag="1")
    top_bytes = fake.manifests[top][0]

    def loop(req: httpx.Request) -> httpx.Response | None:
        if req.url.path.endswith(f"/manifests/{child.digest}"):
            return httpx.Response(200, content=top_bytes, headers={"Content-Type": OCI_INDEX})
        return None

    fake.routes.append(loop)
    with pytest.raises(DigestMismatch) as info:
        copy_to_oci(fake, layout)
    assert child.digest in str(info.value)
    assert fake.count("GET", "/manifests/") <= 2 + 3  # top, child (+ retries, none expected)
    _assert_nothing_named(layout, top, child.digest)


def _index_chain(fake: FakeRegistry, depth: int) -> list[str]:
    """index(depth) -> index(depth-1) -> ... -> index(1) -> image; returns the digests, top first."""
    image = fake.add(_image("bottom"))
    digests = [image.digest]
    below: BuiltImage | dict[str, Any] = image
    for _ in range(depth):
        data = _index_of(below)
        digest = fake.add_manifest(data, OCI_INDEX)
        digests.append(digest)
        below = {"mediaType": OCI_INDEX, "digest": digest, "size": len(data)}
    fake.tags["1"] = digests[-1]
    return list(reversed(digests))


def test_deeply_nested_indexes_fail_cleanly(fake: FakeRegistry, layout: Path) -> None:
    chain = _index_chain(fake, depth=50)
    with pytest.raises(ManifestError, match="nests deeper"):
        copy_to_oci(fake, layout)
    # it stopped after a few levels instead of walking all fifty
    assert fake.count("GET", "/manifests/") < 10
    _assert_nothing_named(layout, *chain)


def test_shallow_nested_indexes_still_copy(fake: FakeRegistry, layout: Path) -> None:
    """Control for the depth limit: an index of an index (what some tools produce) is fine."""
    chain = _index_chain(fake, depth=2)
    copy_to_oci(fake, layout)
    assert [e["digest"] for e in _index_entries(layout)] == [chain[0]]
    for digest in chain:
        assert _blob_file(layout, digest).exists()


def test_repeated_children_are_fetched_once(fake: FakeRegistry, layout: Path) -> None:
    chain = _index_chain(fake, depth=1)
    inner = {"mediaType": OCI_INDEX, "digest": chain[0], "size": len(fake.manifests[chain[0]][0])}
    middle_data = _index_of(*([inner] * 5))
    middle = fake.add_manifest(middle_data, OCI_INDEX)
    top_data = _index_of(*([{"mediaType": OCI_INDEX, "digest": middle, "size": len(middle_data)}] * 5))
    fake.add_manifest(top_data, OCI_INDEX, tag="1")
    copy_to_oci(fake, layout)
    per_path = Counter(p for m, _, p, _ in fake.seen if m == "GET" and "/manifests/sha256:" in p)
    assert max(per_path.values()) == 1, per_path.most_common(3)


# --------------------------------------------------------------------------- media types


def test_media_type_disagreeing_with_content_type_fails_the_copy_and_writes_nothing(
    fake: FakeRegistry, layout: Path
) -> None:
    index = fake.add(build_index("cve"), tag="1")
    victim = index.children[0]

    def served_as_index(req: httpx.Request) -> httpx.Response | None:
        if req.url.path.endswith(f"/manifests/{victim.digest}"):
            return httpx.Response(200, content=victim.manifest, headers={"Content-Type": OCI_INDEX})
        return None

    fake.routes.append(served_as_index)
    with pytest.raises(ManifestError, match="CVE-2021-41190"):
        copy_to_oci(fake, layout)
    _assert_nothing_named(layout, victim.digest, index.digest)


def test_document_that_is_both_index_and_image_is_refused(fake: FakeRegistry, layout: Path) -> None:
    image = _image("both")
    fake.add(image)
    doc = json.loads(image.manifest)
    doc["manifests"] = [image.descriptor()]
    data = dump_json(doc)
    fake.add_manifest(data, OCI_MANIFEST, tag="1")
    with pytest.raises(ManifestError, match="ambiguous"):
        copy_to_oci(fake, layout)
    _assert_nothing_named(layout, sha(data))


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "application/octet-stream", ""])
def test_generic_content_type_is_not_a_disagreement(fake: FakeRegistry, layout: Path, content_type: str) -> None:
    image = fake.add(_image(), tag="1")

    def generic(req: httpx.Request) -> httpx.Response | None:
        if "/manifests/" in req.url.path:
            return httpx.Response(200, content=image.manifest, headers={"Content-Type": content_type})
        return None

    fake.routes.append(generic)
    copy_to_oci(fake, layout)
    assert [e["digest"] for e in _index_entries(layout)] == [image.digest]


# --------------------------------------------------------------------------- descriptor sizes


@pytest.mark.parametrize(
    "size",
    [-1, -4096, 2**53 + 1, 2**64, 10**30, 1.5, 1e3, "2048", True, None],
    ids=lambda s: f"{type(s).__name__}:{s}",
)
def test_negative_or_absurd_descriptor_sizes_are_refused(fake: FakeRegistry, layout: Path, size: Any) -> None:
    image = _image()
    fake.add(image)
    layer = dict(image.layers[0].descriptor(), size=size)
    data = _manifest_with_layers(layer, config=image.config.descriptor() if image.config else None)
    fake.add_manifest(data, OCI_MANIFEST, tag="1")
    with pytest.raises(ManifestError, match="size"):
        copy_to_oci(fake, layout)
    _assert_nothing_named(layout, sha(data), image.layers[0].digest)
    assert fake.count("GET", "/blobs/") == 0  # refused while parsing, before any blob was fetched


def test_huge_but_valid_size_only_reads_what_is_served(fake: FakeRegistry, layout: Path) -> None:
    """A descriptor may claim 2**53 bytes; the copy then fails on the short body, having stored nothing."""
    image = _image()
    fake.add(image)
    layer = dict(image.layers[0].descriptor(), size=2**53)
    data = _manifest_with_layers(layer, config=image.config.descriptor() if image.config else None)
    fake.add_manifest(data, OCI_MANIFEST, tag="1")
    with pytest.raises(DigestMismatch) as info:
        copy_to_oci(fake, layout)
    assert image.layers[0].digest in str(info.value)
    _assert_nothing_named(layout, sha(data), image.layers[0].digest)


@pytest.mark.parametrize("served", ["right", "wrong"])
def test_blob_of_unknown_size_is_still_checked_by_digest(fake: FakeRegistry, served: str) -> None:
    """Schema 1 layers have no size (-1): the digest alone decides."""
    data = b"schema one layer " * 1000
    digest = sha(data)
    fake.blobs[digest] = data if served == "right" else data[::-1]

    async def main() -> bytes:
        async with fake.client() as client:
            desc = Descriptor(media_type="application/vnd.docker.image.rootfs.diff.tar.gzip", digest=digest, size=-1)
            return b"".join([c async for c in client.open_blob(parse_reference(f"{HOST}/{REPO}"), desc)])

    if served == "right":
        assert anyio.run(main) == data
    else:
        with pytest.raises(DigestMismatch, match=digest):
            anyio.run(main)


# --------------------------------------------------------------------------- tag pagination


def test_endless_pagination_with_ever_new_links_is_bounded(
    fake: FakeRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``test_client_mock`` covers a Link looping back; this one never repeats a URL."""
    monkeypatch.setattr(client_module, "MAX_TAG_PAGES", 25)
    counter = iter(range(10**9))

    def endless(req: httpx.Request) -> httpx.Response | None:
        n = next(counter)
        return httpx.Response(
            200, json={"tags": [f"t{n}"]}, headers={"Link": f'</v2/{REPO}/tags/list?last=t{n}>; rel="next"'}
        )

    fake.routes.append(endless)

    async def main() -> list[str]:
        async with fake.client() as client:
            return await client.list_tags(parse_reference(f"{HOST}/{REPO}"))

    with pytest.raises(RegistryError, match="more than 25 pages"):
        anyio.run(main)
    assert fake.count("GET", "/tags/list") == 25


def test_endless_tag_list_body_is_cut_off(fake: FakeRegistry) -> None:
    """One page that never ends (chunked, no Content-Length) must not be read into memory forever."""
    endless = _Endless(b'{"tags": [' + b'"x",' * 16384)
    fake.routes.append(lambda req: httpx.Response(200, stream=endless) if "/tags/" in req.url.path else None)

    async def main() -> list[str]:
        async with fake.client() as client:
            return await client.list_tags(parse_reference(f"{HOST}/{REPO}"))

    with pytest.raises(RegistryError, match="too large"):
        anyio.run(main)
    assert endless.sent <= 64 * 2**20 + 2**20


def test_pagination_link_to_another_host_gets_no_authorization(fake: FakeRegistry) -> None:
    def pages(req: httpx.Request) -> httpx.Response | None:
        if req.url.host == HOST:
            return httpx.Response(
                200, json={"tags": ["a"]}, headers={"Link": '<https://collector.example/steal?x=1>; rel="next"'}
            )
        return httpx.Response(200, json={"tags": ["b"]})

    fake.routes.append(pages)

    async def main() -> list[str]:
        async with fake.client(credential=Credential(registry_token=TOKEN)) as client:
            return await client.list_tags(parse_reference(f"{HOST}/{REPO}"))

    anyio.run(main)
    auth_by_host = {host: auth for _, host, _, auth in fake.seen}
    assert auth_by_host[HOST] == f"Bearer {TOKEN}"
    assert auth_by_host.get("collector.example", "not asked") is None


# --------------------------------------------------------------------------- other hosts


def _upload_routes(location: str, patch_location: str | None = None) -> Route:
    """POST answers 202 with ``location``; every other upload request succeeds."""

    def route(req: httpx.Request) -> httpx.Response | None:
        if req.method == "HEAD" and "/blobs/" in req.url.path:
            return _error(404, "BLOB_UNKNOWN")
        if req.method == "POST":
            extra = {"OCI-Chunk-Min-Length": "1"} if patch_location else {}
            return httpx.Response(202, headers={"Location": location, **extra})
        if req.method == "PATCH":
            end = int(req.headers["content-range"].split("-")[1])
            return httpx.Response(202, headers={"Location": patch_location or location, "Range": f"0-{end}"})
        if req.method == "PUT":
            return httpx.Response(201, headers={"Docker-Content-Digest": req.url.params.get("digest", "")})
        return None

    return route


async def _upload(fake: FakeRegistry, data: bytes, cred: Credential, **opts: Any) -> str:
    async def opener(offset: int) -> AsyncIterator[bytes]:
        yield data[offset:]

    async with fake.client(credential=cred, **opts) as client:
        desc = Descriptor(media_type=OCI_LAYER_GZIP, digest=sha(data), size=len(data))
        return await client.upload_blob(parse_reference(f"{HOST}/{REPO}"), desc, opener)


CREDENTIALS = [
    pytest.param(Credential(registry_token=TOKEN), f"Bearer {TOKEN}", id="registry-token"),
    pytest.param(
        Credential(username="alice", password="pw-3f9c1e"),
        "Basic YWxpY2U6cHctM2Y5YzFl",  # base64("alice:pw-3f9c1e")
        id="basic",
    ),
]


def _basic_challenge(fake: FakeRegistry) -> None:
    """Make the registry (https://HOST) ask for Basic auth, so the client learns to send it."""

    def challenge(req: httpx.Request) -> httpx.Response | None:
        own = req.url.scheme == "https" and req.url.netloc == HOST.encode()
        if own and not req.headers.get("authorization"):
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="hostile"'})
        return None

    fake.routes.insert(0, challenge)


@pytest.mark.parametrize(("cred", "header"), CREDENTIALS)
@pytest.mark.parametrize(
    "location",
    ["https://uploads.example/session/1?_state=x", "https://hostile.example:8443/session/1", "http://hostile.example/s/1"],
    ids=["other-host", "other-port", "plain-http"],
)
def test_upload_location_on_another_origin_gets_no_authorization(
    fake: FakeRegistry, cred: Credential, header: str, location: str
) -> None:
    if cred.username:
        _basic_challenge(fake)
    fake.routes.append(_upload_routes(location))
    assert anyio.run(_upload, fake, b"layer bytes " * 100, cred) == "uploaded"
    sent = {(m, h, p): a for m, h, p, a in fake.seen}
    assert sent[("POST", HOST, f"/v2/{REPO}/blobs/uploads/")] == header
    foreign = [(m, h, a) for m, h, p, a in fake.seen if p.startswith(("/session/", "/s/"))]
    assert foreign and all(a is None for _, _, a in foreign), foreign


@pytest.mark.parametrize(("cred", "header"), CREDENTIALS)
def test_chunked_upload_location_to_another_host_gets_no_authorization(
    fake: FakeRegistry, cred: Credential, header: str
) -> None:
    """The first Location stays on the registry; a PATCH answer then moves the session elsewhere."""
    if cred.username:
        _basic_challenge(fake)
    fake.routes.append(_upload_routes(f"/v2/{REPO}/blobs/uploads/abc", "https://uploads.example/session/2"))
    assert anyio.run(_upload, fake, bytes(range(256)) * 64, cred) == "uploaded"
    on_registry = [a for m, h, p, a in fake.seen if h == HOST and m == "PATCH"]
    assert on_registry and all(a == header for a in on_registry)
    foreign = [(m, a) for m, h, p, a in fake.seen if h == "uploads.example"]
    assert foreign and all(a is None for _, a in foreign), foreign


def test_challenge_from_another_host_is_not_answered(fake: FakeRegistry) -> None:
    """An upload host that answers 401 does not get a token fetched and sent for it either."""
    fake.routes.append(
        lambda req: httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="https://uploads.example/token"'})
        if req.url.host == "uploads.example"
        else None
    )
    fake.routes.append(_upload_routes("https://uploads.example/session/3"))
    with pytest.raises(RegistryError, match="401"):
        anyio.run(_upload, fake, b"data", Credential(username="alice", password="pw-3f9c1e"))
    assert all(a is None for _, h, _, a in fake.seen if h == "uploads.example")
    assert not [p for _, _, p, _ in fake.seen if p == "/token"]


@pytest.mark.parametrize(
    "target",
    ["https://objects.example/blob", "https://hostile.example:8443/blob", "//objects.example/blob"],
    ids=["other-host", "other-port", "scheme-relative"],
)
def test_manifest_redirect_to_another_origin_gets_no_authorization(fake: FakeRegistry, target: str) -> None:
    image = _image()

    def redirect(req: httpx.Request) -> httpx.Response | None:
        if req.url.host == HOST and req.url.path.endswith("/manifests/1"):
            return httpx.Response(302, headers={"Location": target})
        if req.url.path == "/blob":
            return httpx.Response(200, content=image.manifest, headers={"Content-Type": OCI_MANIFEST})
        return None

    fake.routes.append(redirect)

    async def main() -> str:
        async with fake.client(credential=Credential(registry_token=TOKEN)) as client:
            return (await client.get_manifest(parse_reference(f"{HOST}/{REPO}:1"))).digest

    assert anyio.run(main) == image.digest
    assert [a for _, h, p, a in fake.seen if p == "/blob"] == [None]
    assert [a for _, h, p, a in fake.seen if p.endswith("/manifests/1")] == [f"Bearer {TOKEN}"]


def test_redirect_from_https_to_plain_http_is_refused(fake: FakeRegistry) -> None:
    fake.routes.append(
        lambda req: httpx.Response(307, headers={"Location": "http://objects.example/blob"})
        if req.url.host == HOST and "/blobs/" in req.url.path
        else None
    )

    async def main() -> None:
        async with fake.client(credential=Credential(registry_token=TOKEN)) as client:
            desc = Descriptor(media_type=OCI_LAYER_GZIP, digest=sha(b"x"), size=1)
            async for _ in client.open_blob(parse_reference(f"{HOST}/{REPO}"), desc):
                pass

    with pytest.raises(RegtoolError, match="plain HTTP"):
        anyio.run(main)
    assert not [h for _, h, _, _ in fake.seen if h == "objects.example"]


def test_redirect_loop_is_bounded(fake: FakeRegistry) -> None:
    fake.routes.append(lambda req: httpx.Response(302, headers={"Location": f"/v2/{REPO}/manifests/1"}))

    async def main() -> None:
        async with fake.client() as client:
            await client.get_manifest(parse_reference(f"{HOST}/{REPO}:1"))

    with pytest.raises(RegistryError, match="too many redirects"):
        anyio.run(main)
    assert len(fake.seen) < 30


# --------------------------------------------------------------------------- what the registry says


def test_registry_error_messages_cannot_inject_terminal_escapes(fake: FakeRegistry) -> None:
    message = "denied\x1b]0;owned\x07\x1b[2J\r\nregtool: all good, exit 0"
    fake.routes.append(lambda req: httpx.Response(403, json={"errors": [{"code": "DENIED", "message": message}]}))

    async def main() -> None:
        async with fake.client() as client:
            await client.get_manifest(parse_reference(f"{HOST}/{REPO}:1"))

    with pytest.raises(RegistryError) as info:
        anyio.run(main)
    text = str(info.value)
    assert "denied" in text and "403" in text
    assert not re.search(r"[\x00-\x1f\x7f-\x9f]", text), repr(text)


@pytest.mark.parametrize("header", ["sha256:../../etc/passwd", "sha256:" + "A" * 64, "nonsense", "sha256:\x1b[2J"])
@pytest.mark.parametrize("method", ["head", "get"])
def test_invalid_docker_content_digest_is_the_registrys_fault(fake: FakeRegistry, header: str, method: str) -> None:
    """A bad digest header is refused as bad content (exit 1), not reported as a usage error (exit 2)."""
    image = fake.add(_image(), tag="1")
    fake.routes.append(
        lambda req: httpx.Response(
            200,
            content=b"" if req.method == "HEAD" else image.manifest,
            headers={"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": header},
        )
    )

    async def main() -> None:
        async with fake.client() as client:
            ref = parse_reference(f"{HOST}/{REPO}:1")
            await (client.head_manifest(ref) if method == "head" else client.get_manifest(ref))

    with pytest.raises(ManifestError) as info:
        anyio.run(main)
    assert info.value.exit_code == 1
    assert HOST in str(info.value) and "\x1b" not in str(info.value)


# --------------------------------------------------------------------------- path traversal


TRAVERSAL_DIGESTS = [
    "sha256:../../../../../../tmp/regtool-escape",
    "sha256:" + "a" * 62 + "/..",
    "../../../escape:" + "a" * 64,
    "sha256:" + "A" * 64,
    "sha256:" + "a" * 63,
    "sha512:../../x",
    "sha256:" + "a" * 64 + "\x00",
    "sha256:" + "a" * 64 + "/../../x",
]


@pytest.mark.parametrize("digest", TRAVERSAL_DIGESTS)
@pytest.mark.parametrize("where", ["layer", "config", "child"])
@pytest.mark.parametrize("transport", ["oci", "dir"])
def test_digests_crafted_as_paths_never_become_paths(
    fake: FakeRegistry, tmp_path: Path, digest: str, where: str, transport: str
) -> None:
    image = _image()
    fake.add(image)
    if where == "child":
        data = _index_of({"mediaType": OCI_MANIFEST, "digest": digest, "size": 10})
        fake.add_manifest(data, OCI_INDEX, tag="1")
    else:
        layer = {"mediaType": OCI_LAYER_GZIP, "digest": digest, "size": 10}
        config = {"mediaType": OCI_CONFIG, "digest": digest, "size": 10}
        data = _manifest_with_layers(layer) if where == "layer" else _manifest_with_layers(config=config)
        fake.add_manifest(data, OCI_MANIFEST, tag="1")
    parent = tmp_path / "parent"
    parent.mkdir()
    target = parent / "out"
    with pytest.raises((ManifestError, InvalidReference)) as info:
        if transport == "oci":
            copy_to_oci(fake, target)
        else:
            copy_to_dir(fake, target)
    assert "\n" not in str(info.value)
    assert sorted(os.listdir(parent)) in ([], ["out"])
    leaked = [p for p in _files(tmp_path) if "escape" in p or p.endswith("/x")]
    assert leaked == []
    assert not Path("/tmp/regtool-escape").exists()
    assert [f for f in _files(target) if f not in ("version",)] == [] if target.exists() else True
    assert not [p for m, _, p, _ in fake.seen if "/blobs/" in p]


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "sha256+b64u", "blake3"])
def test_unsupported_digest_algorithm_fails_cleanly_without_fetching(
    fake: FakeRegistry, tmp_path: Path, algorithm: str
) -> None:
    digest = f"{algorithm}:{'ab' * 16}"
    data = _manifest_with_layers({"mediaType": OCI_LAYER_GZIP, "digest": digest, "size": 10})
    fake.add_manifest(data, OCI_MANIFEST, tag="1")
    for transport in ("oci", "dir"):
        target = tmp_path / transport
        with pytest.raises(RegtoolError) as info:
            (copy_to_oci if transport == "oci" else copy_to_dir)(fake, target)
        assert digest in str(info.value) or algorithm in str(info.value)
        assert _index_entries(target) == []


def test_unsupported_digest_algorithm_on_the_client_is_a_regtool_error(fake: FakeRegistry) -> None:
    """Reading a blob by a digest regtool cannot verify is refused, not streamed unverified."""
    fake.blobs["md5:" + "ab" * 16] = b"data"

    async def main() -> bytes:
        async with fake.client() as client:
            desc = Descriptor(media_type=OCI_LAYER_GZIP, digest="md5:" + "ab" * 16, size=4)
            return b"".join([c async for c in client.open_blob(parse_reference(f"{HOST}/{REPO}"), desc)])

    with pytest.raises(RegtoolError, match="md5"):
        anyio.run(main)


@pytest.mark.parametrize(
    "name", ["../escape", "../../tmp/regtool-escape", "/abs", "a/../../b", "a//b", ".", "..", "a b", "-x", "x/"]
)
def test_layout_names_crafted_as_paths_are_refused(tmp_path: Path, name: str) -> None:
    layout = tmp_path / "layout"

    async def open_with_name() -> None:
        await OCILayoutDestination.open(str(layout), name)

    async def tag_with_name() -> None:
        dest = await OCILayoutDestination.open(str(layout), "ok")
        await dest.tag(name, Descriptor(OCI_MANIFEST, sha(b"m"), 1))

    for attempt in (open_with_name, tag_with_name):
        with pytest.raises(InvalidReference):
            anyio.run(attempt)
    assert not layout.exists() or _files(layout) == []
    assert sorted(os.listdir(tmp_path)) in ([], ["layout"])


@pytest.mark.parametrize("name", ["../escape", "a/../../b", "/abs"])
def test_cli_refuses_layout_names_crafted_as_paths(tmp_path: Path, name: str) -> None:
    for image in (f"oci:{tmp_path}/layout:{name}", f"oci-archive:{tmp_path}/a.tar:{name}"):
        out = run_regtool(["copy", f"oci:{tmp_path}/nowhere", image])
        assert out.rc == 2, out.stderr
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("link", ["blobs", "blobs/sha256"])
def test_symlinked_directories_inside_a_layout_are_not_written_through(
    fake: FakeRegistry, tmp_path: Path, link: str
) -> None:
    image = fake.add(_image(), tag="1")
    outside = tmp_path / "outside"
    outside.mkdir()
    layout = tmp_path / "layout"
    (layout / link).parent.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    os.symlink(outside, layout / link)
    with pytest.raises(ManifestError, match="not a plain directory"):
        copy_to_oci(fake, layout)
    assert _files(outside) == []
    assert _index_entries(layout) == []
    assert image.digest


def test_dir_destination_file_names_come_only_from_validated_digests(fake: FakeRegistry, tmp_path: Path) -> None:
    index = fake.add(build_index("dir"), tag="1")
    target = tmp_path / "d"
    copy_to_dir(fake, target)
    names = set(os.listdir(target))
    allowed = re.compile(r"[0-9a-f]{64}(\.manifest\.json)?|manifest\.json|version")
    assert all(allowed.fullmatch(n) for n in names), names
    assert json.loads((target / "manifest.json").read_bytes())["manifests"] == json.loads(index.manifest)["manifests"]


def test_open_destination_rejects_traversal_in_parsed_image_names(tmp_path: Path) -> None:
    for text in (f"oci:{tmp_path}/l:../x", f"oci:{tmp_path}/l:a/../b"):
        with pytest.raises(InvalidReference):
            anyio.run(open_destination, parse_image(text))
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- bad input on the command line
#
# Every command, given malformed references, unknown transports, bad flags or unreadable files,
# must stop before any network traffic with exit 2, no traceback, and the error on the last line
# of stderr. All registry references point at a FaultProxy in front of the plain registry: had
# regtool sent anything (even a TLS probe), the proxy would have seen a connection.

BAD_INPUT: list[tuple[str, list[str], str]] = [
    # inspect
    ("inspect-uppercase-repo", ["inspect", "docker://{P}/Team/App:1"], "lowercase"),
    ("inspect-short-digest", ["inspect", "docker://{P}/a/b:t@sha256:123"], "digest"),
    ("inspect-traversal-digest", ["inspect", "docker://{P}/a/b@sha256:../../etc/passwd"], "digest"),
    ("inspect-unknown-transport", ["inspect", "bogus://{P}/a/b:1"], "transport"),
    ("inspect-docker-daemon", ["inspect", "docker-daemon:a/b:1"], "transport"),
    ("inspect-missing-slashes", ["inspect", "docker:{P}/a/b:1"], ""),
    ("inspect-missing-transport", ["inspect", "{P}/a/b:1"], "transport"),
    ("inspect-empty", ["inspect", ""], ""),
    ("inspect-bad-bool", ["inspect", "--tls-verify=maybe", "docker://{P}/a/b:1"], "invalid boolean"),
    ("inspect-unknown-flag", ["inspect", "--frobnicate", "docker://{P}/a/b:1"], "unrecognized"),
    ("inspect-missing-argument", ["inspect"], "required"),
    ("inspect-bad-template", ["inspect", "--format", "{{.Digest", "docker://{P}/a/b:1"], "template"),
    ("inspect-bad-timeout", ["inspect", "--command-timeout", "soon", "docker://{P}/a/b:1"], "invalid float"),
    ("inspect-missing-cert-dir", ["inspect", "--cert-dir", "{T}/no-such-dir", "docker://{P}/a/b:1"], "no-such-dir"),
    ("inspect-creds-without-user", ["inspect", "--creds", ":pw-only", "docker://{P}/a/b:1"], "username"),
    ("inspect-creds-and-no-creds", ["inspect", "--creds", "u:p", "--no-creds", "docker://{P}/a/b:1"], "no-creds"),
    ("inspect-password-without-user", ["inspect", "--password", "p", "docker://{P}/a/b:1"], "--username"),
    ("inspect-authfile-invalid-json", ["inspect", "--authfile", "{T}/bad.json", "docker://{P}/a/b:1"], "bad.json"),
    ("inspect-authfile-not-a-file", ["inspect", "--authfile", "{T}/a-directory", "docker://{P}/a/b:1"], "a-directory"),
    ("inspect-missing-layout", ["inspect", "oci:{T}/no-such-layout"], "no-such-layout"),
    # digest and list-tags
    ("digest-bad-reference", ["digest", "docker://{P}/a/b:-bad-tag"], ""),
    ("digest-unknown-transport", ["digest", "containers-storage:a/b"], "transport"),
    ("list-tags-with-tag", ["list-tags", "docker://{P}/a/b:1"], "tag or digest"),
    ("list-tags-layout", ["list-tags", "oci:{T}/x"], "docker://"),
    ("list-tags-bad-reference", ["list-tags", "docker://{P}/a//b"], ""),
    # copy
    ("copy-bad-source", ["copy", "docker://{P}/UP:1", "oci:{T}/target:x"], "lowercase"),
    ("copy-bad-destination", ["copy", "docker://{P}/a/b:1", "docker://{P}/a/b:bad tag"], ""),
    ("copy-unknown-destination-transport", ["copy", "docker://{P}/a/b:1", "s3://bucket/x"], "transport"),
    ("copy-destination-name-traversal", ["copy", "docker://{P}/a/b:1", "oci:{T}/target:../../x"], ""),
    ("copy-bad-platform", ["copy", "--multi-arch", "linux", "docker://{P}/a/b:1", "oci:{T}/target:x"], "platform"),
    ("copy-bad-platform-flag", ["copy", "--platform", "a/b/c/d/e", "docker://{P}/a/b:1", "oci:{T}/target:x"], ""),
    ("copy-all-vs-multi-arch", ["copy", "--all", "--multi-arch", "index-only", "docker://{P}/a/b:1",
                                "oci:{T}/target:x"], "--all"),
    ("copy-preserve-vs-format", ["copy", "--preserve-digests", "--format", "oci", "docker://{P}/a/b:1",
                                 "oci:{T}/target:x"], "preserve-digests"),
    ("copy-bad-format", ["copy", "--format", "v1", "docker://{P}/a/b:1", "oci:{T}/target:x"], "invalid choice"),
    ("copy-zero-parallel", ["copy", "--image-parallel-copies", "0", "docker://{P}/a/b:1", "oci:{T}/target:x"],
     "parallel"),
    ("copy-bad-retry-times", ["copy", "--retry-times", "many", "docker://{P}/a/b:1", "oci:{T}/target:x"],
     "invalid int"),
    ("copy-into-a-file", ["copy", "docker://{P}/a/b:1", "oci:{T}/a-file"], "a-file"),
    ("copy-into-a-foreign-directory", ["copy", "docker://{P}/a/b:1", "dir:{T}/not-an-image"], "not-an-image"),
    ("copy-src-creds-conflict", ["copy", "--src-creds", "u:p", "--src-username", "u", "docker://{P}/a/b:1",
                                 "oci:{T}/target:x"], "mutually exclusive"),
    ("copy-dest-missing-cert-dir", ["copy", "--dest-cert-dir", "{T}/no-such-dir", "oci:{T}/src:x",
                                    "docker://{P}/a/b:1"], ""),
    ("copy-missing-arguments", ["copy", "docker://{P}/a/b:1"], "required"),
    ("copy-digestfile-in-missing-dir", ["copy", "--digestfile", "{T}/no/such/dir/digest", "docker://{P}/a/b:1",
                                        "oci:{T}/target:x"], "no/such/dir"),
    # delete
    ("delete-layout", ["delete", "oci:{T}/src:x"], "docker://"),
    ("delete-bad-reference", ["delete", "docker://{P}/a/b@sha256:zz"], "digest"),
    # login and logout
    ("login-bad-registry", ["login", "-u", "u", "--password-stdin", "bad host"], "invalid registry"),
    ("login-two-passwords", ["login", "-u", "u", "-p", "x", "--password-stdin", "{P}"], "mutually exclusive"),
    ("login-empty-password", ["login", "-u", "u", "--password-stdin", "{P}"], "password"),
    ("login-authfile-invalid-json", ["login", "-u", "u", "-p", "pw", "--verify=false", "--authfile", "{T}/bad.json",
                                     "{P}"], "bad.json"),
    ("logout-nothing", ["logout"], "--all"),
    ("logout-authfile-invalid-json", ["logout", "--authfile", "{T}/bad.json", "{P}"], "bad.json"),
    # manifest-digest
    ("manifest-digest-missing-file", ["manifest-digest", "{T}/no-such-file"], "no-such-file"),
    ("manifest-digest-directory", ["manifest-digest", "{T}/a-directory"], "a-directory"),
    # sync
    ("sync-missing-config", ["sync", "--config", "{T}/no-such.yaml"], "no-such.yaml"),
    ("sync-invalid-yaml", ["sync", "--config", "{T}/bad.yaml"], "bad.yaml"),
    ("sync-unknown-key", ["sync", "--config", "{T}/unknown-key.yaml"], "unknown-key.yaml"),
    ("sync-bad-regex", ["sync", "--config", "{T}/bad-regex.yaml"], "bad-regex.yaml"),
    ("sync-no-source", ["sync", "--src", "docker", "--dest", "docker"], ""),
    ("sync-bad-shard", ["sync", "--config", "{T}/good.yaml", "--shard", "9/3"], "shard"),
    # signing
    ("sign-without-key", ["sign", "docker://{P}/a/b:1"], ""),
    ("sign-missing-key-file", ["sign", "--key", "{T}/no-such.key", "docker://{P}/a/b:1"], "no-such.key"),
    ("sign-bad-reference", ["sign", "--key", "{T}/bad.json", "docker://{P}/A:1"], ""),
    ("verify-without-policy", ["verify", "docker://{P}/a/b:1"], ""),
    ("verify-missing-key-file", ["verify", "--key", "{T}/no-such.pub", "docker://{P}/a/b:1"], "no-such.pub"),
    ("verify-key-not-a-key", ["verify", "--key", "{T}/bad.json", "docker://{P}/a/b:1"], "PUBLIC KEY"),
    ("generate-key-into-missing-dir", ["generate-key", "--output-key-prefix", "{T}/no/such/dir/k"], ""),
    ("unknown-command", ["frobnicate", "docker://{P}/a/b:1"], "invalid choice"),
]


def _bad_input_params() -> list[Any]:
    params = []
    for case_id, args, message in BAD_INPUT:
        params.append(pytest.param(args, message, id=case_id))
    return params


@pytest.fixture(scope="module")
def bad_input_bed(tmp_path_factory: pytest.TempPathFactory, registry_plain: Any) -> Iterator[tuple[Any, Path]]:
    from tests.support.netproxy import FaultProxy

    root = tmp_path_factory.mktemp("bad-input")
    (root / "bad.json").write_text('{"auths": {')
    (root / "a-directory").mkdir()
    (root / "a-file").write_text("not a layout")
    (root / "not-an-image").mkdir()
    (root / "not-an-image" / "precious.txt").write_text("keep me")
    (root / "bad.yaml").write_text("version: 1\nmirrors:\n  - source: [unclosed\n")
    (root / "unknown-key.yaml").write_text("version: 1\nmirrrors: []\n")
    (root / "bad-regex.yaml").write_text(
        "version: 1\nmirrors:\n  - source: 127.0.0.1:1/a/b\n    tags:\n      include: ['(']\n"
        "    targets: [oci:/nonexistent/x]\n"
    )
    (root / "good.yaml").write_text("version: 1\nmirrors:\n  - source: 127.0.0.1:1/a/b\n    targets: [oci:/x/y]\n")
    async def make_src() -> None:
        fake = FakeRegistry()
        fake.add(_image(), tag="1")
        await _copy(fake, await OCILayoutDestination.open(str(root / "src"), "x"))

    anyio.run(make_src)
    with FaultProxy(registry_plain.host) as proxy:
        yield proxy, root


def _snapshot(root: Path) -> dict[str, bytes]:
    return {f: (root / f).read_bytes() for f in _files(root) if not (root / f).is_dir()}


@pytest.mark.parametrize(("args", "message"), _bad_input_params())
def test_bad_input_is_one_line_exit_2_and_no_traffic(
    bad_input_bed: tuple[Any, Path], args: list[str], message: str
) -> None:
    proxy, root = bad_input_bed
    argv = [a.replace("{P}", proxy.netloc).replace("{T}", str(root)) for a in args]
    before = _snapshot(root)
    proxy.reset_stats()  # (keeps the connection count: compare it)
    connections = proxy.stats()["connections"]
    out = run_regtool(argv, input=b"", timeout=60, env={"COSIGN_PASSWORD": "not-a-secret"})
    assert out.rc == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines, "no error message"
    last = lines[-1]
    assert re.match(r"regtool( [a-z-]+)?: error: ", last), out.stderr
    assert [line for line in lines if "error:" in line] == [last]  # one error line (argparse adds usage above)
    assert message in last, last
    assert out.stdout == b""
    stats = proxy.stats()
    assert stats["connections"] == connections and stats["requests"] == 0, f"network traffic: {stats}"
    assert _snapshot(root) == before, "something changed on disk"
