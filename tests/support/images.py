"""Build real images from bytes and push them with plain synchronous httpx.

Deliberately independent of regtool's own code, so tests never check regtool against itself.
Everything is deterministic from a ``seed`` (layer bytes, configs, manifests), except where a
test passes something that is not.

A *target* is anything with ``host`` ("127.0.0.1:PORT") and ``http`` (an authorised
``httpx.Client`` whose ``base_url`` is the registry), i.e. a :class:`tests.support.registries.Registry`.

Typical use::

    img = push_oci_image(registry_plain, repo, "v1")
    img.reference        # "127.0.0.1:PORT/t/test-x-1a2b3c:v1"
    img.digest           # "sha256:..." of img.manifest (the exact bytes pushed)
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import random
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import httpx

# -- media types (spelled out here on purpose: no import from regtool) -----------------------------------
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_V2S2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
COSIGN_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SBOM_ARTIFACT_TYPE = "application/vnd.example.sbom.v1+json"
ACCEPT_ALL = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_V2S2, DOCKER_LIST])

DEFAULT_PLATFORMS: tuple[str, ...] = ("linux/amd64", "linux/arm64/v8", "linux/arm/v7")
CREATED = "2024-01-01T00:00:00Z"
EMPTY_JSON = b"{}"
MiB = 1024 * 1024


class Target(Protocol):
    """Where to push: a test-bed ``Registry`` or anything shaped like it."""

    @property
    def host(self) -> str: ...

    @property
    def http(self) -> httpx.Client: ...


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def dump_json(obj: Any) -> bytes:
    """How these helpers serialise JSON: 3-space indent like Docker (not canonical on purpose)."""
    return json.dumps(obj, indent=3).encode()


# ----------------------------------------------------------------------------------------------------
# Data classes
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    """A blob and its descriptor fields. ``data`` is None for streamed (big) blobs."""

    media_type: str
    digest: str
    size: int
    data: bytes | None = field(default=None, repr=False)
    diff_id: str | None = None  # layers: sha256 of the uncompressed tar
    annotations: Mapping[str, str] = field(default_factory=dict)
    urls: tuple[str, ...] = ()

    @classmethod
    def of(cls, data: bytes, media_type: str, **kwargs: Any) -> Blob:
        return cls(media_type=media_type, digest=sha256(data), size=len(data), data=data, **kwargs)

    def descriptor(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.urls:
            d["urls"] = list(self.urls)
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3):
            raise ValueError(f"bad platform {text!r}")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def to_json(self) -> dict[str, str]:
        d = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            d["variant"] = self.variant
        return d

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass
class BuiltImage:
    """An image (or index/artifact) built in memory, not yet pushed."""

    manifest: bytes
    media_type: str
    config: Blob | None
    layers: list[Blob]
    platform: Platform | None = None
    children: list[BuiltImage] = field(default_factory=list)
    artifact_type: str | None = None

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def size(self) -> int:
        return len(self.manifest)

    def descriptor(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform is not None:
            d["platform"] = self.platform.to_json()
        return d

    def blobs(self) -> list[Blob]:
        """Config and layers (not children's)."""
        return ([self.config] if self.config else []) + list(self.layers)


@dataclass
class PushedImage:
    """What a ``push_*`` helper pushed: exact manifest bytes, digest, config and layers."""

    host: str
    repository: str
    tag: str | None
    digest: str
    media_type: str
    manifest: bytes = field(repr=False)
    config: bytes | None = field(repr=False)
    config_blob: Blob | None
    layers: list[Blob]
    platform: Platform | None = None
    children: list[PushedImage] = field(default_factory=list)
    artifact_type: str | None = None

    @property
    def reference(self) -> str:
        """``host/repo:tag`` (``host/repo@digest`` when pushed by digest only)."""
        if self.tag:
            return f"{self.host}/{self.repository}:{self.tag}"
        return self.digest_reference

    @property
    def digest_reference(self) -> str:
        return f"{self.host}/{self.repository}@{self.digest}"

    @property
    def name(self) -> str:
        return f"{self.host}/{self.repository}"

    @property
    def size(self) -> int:
        return len(self.manifest)

    @property
    def manifest_json(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.manifest)
        return value

    @property
    def config_json(self) -> dict[str, Any] | None:
        return json.loads(self.config) if self.config is not None else None

    def descriptor(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform is not None:
            d["platform"] = self.platform.to_json()
        if self.artifact_type:
            d["artifactType"] = self.artifact_type
        return d

    def child(self, platform: str) -> PushedImage:
        want = Platform.parse(platform)
        for c in self.children:
            if c.platform == want:
                return c
        raise KeyError(platform)


# ----------------------------------------------------------------------------------------------------
# Bytes: random data, layers, configs
# ----------------------------------------------------------------------------------------------------


def iter_random_bytes(seed: object, size: int, chunk_size: int = MiB) -> Iterator[bytes]:
    """``size`` pseudo-random bytes, deterministic from ``seed``, in chunks."""
    rng = random.Random(str(seed))
    left = size
    while left > 0:
        n = min(chunk_size, left)
        yield rng.randbytes(n)
        left -= n


def random_bytes(seed: object, size: int) -> bytes:
    return b"".join(iter_random_bytes(seed, size))


def _tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 1704067200  # 2024-01-01
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def layer_file_name(seed: object) -> str:
    return f"data/file-{hashlib.sha256(str(seed).encode()).hexdigest()[:12]}.bin"


def iter_layer_tar(seed: object, size: int, chunk_size: int = MiB) -> Iterator[bytes]:
    """An uncompressed tar with one regular file of ``size`` random bytes, streamed."""
    yield _tar_header(layer_file_name(seed), size)
    yield from iter_random_bytes(seed, size, chunk_size)
    if size % 512:
        yield b"\0" * (512 - size % 512)
    yield b"\0" * 1024  # end-of-archive marker


def make_layer(
    seed: object,
    size: int = 1024,
    *,
    compression: Literal["gzip", "none"] = "gzip",
    media_type: str | None = None,
    docker: bool = False,
) -> Blob:
    """A small real layer (tar, gzip'd by default) with one file of ``size`` random bytes."""
    tar = b"".join(iter_layer_tar(seed, size))
    if compression == "gzip":
        data = gzip.compress(tar, compresslevel=6, mtime=0)
        default_type = DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP
    else:
        data = tar
        default_type = OCI_LAYER_TAR
    return Blob.of(data, media_type or default_type, diff_id=sha256(tar))


@dataclass
class StreamedLayer:
    """Digest bookkeeping filled in while a layer streams (see :func:`iter_layer`)."""

    compressed: Any = field(default_factory=hashlib.sha256)
    uncompressed: Any = field(default_factory=hashlib.sha256)
    size: int = 0

    @property
    def digest(self) -> str:
        return "sha256:" + str(self.compressed.hexdigest())

    @property
    def diff_id(self) -> str:
        return "sha256:" + str(self.uncompressed.hexdigest())


def iter_layer(
    seed: object,
    size: int,
    *,
    compression: Literal["gzip", "none"] = "gzip",
    gzip_level: int = 0,
    chunk_size: int = MiB,
    stats: StreamedLayer | None = None,
) -> Iterator[bytes]:
    """Stream a big layer (tar, optionally gzip) with O(chunk) memory; ``stats`` gets digests and size.

    The default gzip level 0 (stored blocks) keeps 100+ MiB layers fast; the data is random so
    compression would gain nothing anyway.
    """
    st = stats if stats is not None else StreamedLayer()
    comp = zlib.compressobj(gzip_level, zlib.DEFLATED, 31) if compression == "gzip" else None
    for piece in iter_layer_tar(seed, size, chunk_size):
        st.uncompressed.update(piece)
        out = comp.compress(piece) if comp is not None else piece
        if out:
            st.compressed.update(out)
            st.size += len(out)
            yield out
    if comp is not None:
        tail = comp.flush()
        st.compressed.update(tail)
        st.size += len(tail)
        yield tail


def make_config(
    diff_ids: Sequence[str],
    *,
    platform: str | Platform = "linux/amd64",
    env: Sequence[str] | None = None,
    labels: Mapping[str, str] | None = None,
    cmd: Sequence[str] = ("/bin/sh",),
    created: str = CREATED,
) -> bytes:
    """An image config (same shape for OCI and Docker) with correct ``rootfs.diff_ids`` and history."""
    plat = Platform.parse(platform) if isinstance(platform, str) else platform
    config: dict[str, Any] = {
        "created": created,
        "author": "regtool tests",
        "architecture": plat.architecture,
        "os": plat.os,
    }
    if plat.variant:
        config["variant"] = plat.variant
    config["config"] = {
        "Env": list(env)
        if env is not None
        else ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": list(cmd),
        "WorkingDir": "/",
        "Labels": dict(labels) if labels is not None else {"org.regtool.test": "true"},
    }
    config["rootfs"] = {"type": "layers", "diff_ids": list(diff_ids)}
    config["history"] = [
        {"created": created, "created_by": f"regtool-test: add layer {i}"} for i in range(len(diff_ids))
    ]
    return dump_json(config)


# ----------------------------------------------------------------------------------------------------
# Building manifests (no network)
# ----------------------------------------------------------------------------------------------------


def build_image(
    seed: object,
    *,
    docker: bool = False,
    layers: int = 2,
    layer_size: int = 1024,
    platform: str | Platform = "linux/amd64",
    labels: Mapping[str, str] | None = None,
    env: Sequence[str] | None = None,
    annotations: Mapping[str, str] | None = None,
    extra_layers: Sequence[Blob] = (),
) -> BuiltImage:
    """An OCI image manifest (or Docker v2s2 with ``docker=True``) with ``layers`` random layers.

    ``extra_layers`` are appended as they are (e.g. a foreign layer with ``urls``).
    """
    plat = Platform.parse(platform) if isinstance(platform, str) else platform
    layer_blobs = [make_layer(f"{seed}/layer{i}", layer_size, docker=docker) for i in range(layers)]
    layer_blobs += list(extra_layers)
    diff_ids = [b.diff_id or b.digest for b in layer_blobs]
    config = Blob.of(
        make_config(diff_ids, platform=plat, labels=labels, env=env),
        DOCKER_CONFIG if docker else OCI_CONFIG,
    )
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": DOCKER_V2S2 if docker else OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [b.descriptor() for b in layer_blobs],
    }
    if annotations and not docker:
        manifest["annotations"] = dict(annotations)
    return BuiltImage(
        manifest=dump_json(manifest),
        media_type=manifest["mediaType"],
        config=config,
        layers=layer_blobs,
        platform=plat,
    )


def build_index(
    seed: object,
    *,
    docker: bool = False,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    layers: int = 1,
    layer_size: int = 512,
    annotations: Mapping[str, str] | None = None,
) -> BuiltImage:
    """A multi-platform OCI index (or Docker manifest list) over freshly built per-platform images."""
    children = [
        build_image(f"{seed}/{p}", docker=docker, layers=layers, layer_size=layer_size, platform=p)
        for p in platforms
    ]
    index: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST if docker else OCI_INDEX,
        "manifests": [c.descriptor() for c in children],
    }
    if annotations and not docker:
        index["annotations"] = dict(annotations)
    return BuiltImage(
        manifest=dump_json(index), media_type=index["mediaType"], config=None, layers=[], children=children
    )


def cosign_signature_tag(digest: str) -> str:
    """``sha256:abc`` -> ``sha256-abc.sig`` (cosign's tag for an image's signatures)."""
    algo, _, hexpart = digest.partition(":")
    return f"{algo}-{hexpart}.sig"


def referrers_tag(digest: str) -> str:
    """``sha256:abc`` -> ``sha256-abc`` (OCI 1.1 referrers tag schema fallback)."""
    algo, _, hexpart = digest.partition(":")
    return f"{algo}-{hexpart}"


def build_cosign_signature(docker_reference: str, digest: str, signature: bytes | None = None) -> BuiltImage:
    """A cosign-style signature manifest (simple-signing payload; the signature need not verify)."""
    payload = json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": docker_reference},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature",
            },
            "optional": None,
        },
        separators=(",", ":"),
    ).encode()
    sig = signature if signature is not None else hashlib.sha512(payload).digest()
    layer = Blob.of(
        payload,
        COSIGN_SIMPLESIGNING,
        annotations={COSIGN_SIGNATURE_ANNOTATION: base64.b64encode(sig).decode()},
    )
    config_doc = {
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
        "config": {},
    }
    config = Blob.of(json.dumps(config_doc, separators=(",", ":")).encode(), OCI_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    }
    return BuiltImage(
        manifest=json.dumps(manifest, separators=(",", ":")).encode(),
        media_type=OCI_MANIFEST,
        config=config,
        layers=[layer],
    )


def build_referrer(
    subject: Mapping[str, Any],
    *,
    artifact_type: str = SBOM_ARTIFACT_TYPE,
    data: bytes = b'{"spdxVersion":"SPDX-2.3","name":"regtool-test"}',
    layer_media_type: str = "application/spdx+json",
    annotations: Mapping[str, str] | None = None,
) -> BuiltImage:
    """An OCI 1.1 artifact manifest (empty config, one blob) whose ``subject`` is the given descriptor."""
    empty = Blob.of(EMPTY_JSON, OCI_EMPTY)
    blob = Blob.of(data, layer_media_type)
    subj = {k: subject[k] for k in ("mediaType", "digest", "size")}
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": empty.descriptor(),
        "layers": [blob.descriptor()],
        "subject": subj,
        "annotations": dict(annotations or {"org.opencontainers.image.created": CREATED}),
    }
    return BuiltImage(
        manifest=dump_json(manifest),
        media_type=OCI_MANIFEST,
        config=empty,
        layers=[blob],
        artifact_type=artifact_type,
    )


# ----------------------------------------------------------------------------------------------------
# Talking to the registry
# ----------------------------------------------------------------------------------------------------


class PushError(AssertionError):
    """The registry refused something a helper pushed (shows status and body)."""


def _check(response: httpx.Response, *expected: int) -> httpx.Response:
    if response.status_code not in expected:
        response.read()
        raise PushError(
            f"{response.request.method} {response.request.url.path} -> {response.status_code}: "
            f"{response.text[:500]}"
        )
    return response


def _upload_location(client: httpx.Client, response: httpx.Response) -> httpx.URL:
    location = response.headers.get("Location")
    if not location:
        raise PushError("upload response has no Location")
    return client.base_url.join(location) if not location.startswith("http") else httpx.URL(location)


def blob_exists(target: Target, repo: str, digest: str) -> bool:
    r = target.http.head(f"/v2/{repo}/blobs/{digest}")
    return r.status_code == 200


def push_blob(
    target: Target, repo: str, blob: Blob | bytes, media_type: str = "application/octet-stream"
) -> Blob:
    """Upload a blob monolithically (POST, then PUT ``?digest=`` with the whole body)."""
    if isinstance(blob, bytes):
        blob = Blob.of(blob, media_type)
    if blob.data is None:
        raise ValueError("push_blob needs a Blob with data; use push_blob_stream for streams")
    client = target.http
    start = _check(client.post(f"/v2/{repo}/blobs/uploads/"), 202)
    url = _upload_location(client, start).copy_merge_params({"digest": blob.digest})
    _check(
        client.put(url, content=blob.data, headers={"Content-Type": "application/octet-stream"}),
        201,
    )
    return blob


def push_blob_stream(
    target: Target,
    repo: str,
    chunks: Iterable[bytes],
    media_type: str,
    *,
    stats: StreamedLayer | None = None,
    digest: str | None = None,
) -> Blob:
    """Upload a stream: POST, one streamed PATCH (chunked encoding), then PUT ``?digest=``.

    The digest is computed while streaming unless given; memory use stays at one chunk. When
    ``stats`` is the :class:`StreamedLayer` the chunks fill in (``iter_layer``), its digest,
    size and diff_id are used.
    """
    client = target.http
    own = hashlib.sha256()
    size = 0

    def body() -> Iterator[bytes]:
        nonlocal size
        for piece in chunks:
            own.update(piece)
            size += len(piece)
            yield piece

    start = _check(client.post(f"/v2/{repo}/blobs/uploads/"), 202)
    url = _upload_location(client, start)
    patched = _check(
        client.patch(url, content=body(), headers={"Content-Type": "application/octet-stream"}), 202
    )
    actual = "sha256:" + own.hexdigest()
    if digest is not None and digest != actual:
        raise PushError(f"stream digest {actual} != expected {digest}")
    url = _upload_location(client, patched).copy_merge_params({"digest": actual})
    _check(client.put(url), 201)
    diff_id = stats.diff_id if stats is not None else None
    return Blob(media_type=media_type, digest=actual, size=size, data=None, diff_id=diff_id)


def push_manifest(target: Target, repo: str, reference: str, data: bytes, media_type: str) -> str:
    """PUT a manifest by tag or digest; returns its digest (checked against the registry's answer)."""
    r = _check(
        target.http.put(
            f"/v2/{repo}/manifests/{reference}", content=data, headers={"Content-Type": media_type}
        ),
        201,
    )
    digest = sha256(data)
    answered = r.headers.get("Docker-Content-Digest")
    if answered and answered != digest:
        raise PushError(f"registry says digest {answered}, we computed {digest}")
    return digest


def fetch_manifest(target: Target, repo: str, reference: str, accept: str = ACCEPT_ALL) -> tuple[bytes, str]:
    """GET a manifest: (raw bytes, Content-Type)."""
    r = _check(target.http.get(f"/v2/{repo}/manifests/{reference}", headers={"Accept": accept}), 200)
    return r.content, r.headers.get("Content-Type", "")


def fetch_blob(target: Target, repo: str, digest: str) -> bytes:
    """GET a (small) blob, following redirects, and check its digest."""
    r = _check(target.http.get(f"/v2/{repo}/blobs/{digest}", follow_redirects=True), 200)
    if sha256(r.content) != digest:
        raise PushError(f"blob {digest} came back with digest {sha256(r.content)}")
    return r.content


def list_tags(target: Target, repo: str) -> list[str]:
    r = target.http.get(f"/v2/{repo}/tags/list")
    if r.status_code == 404:
        return []
    _check(r, 200)
    return list(r.json().get("tags") or [])


def manifest_exists(target: Target, repo: str, reference: str) -> bool:
    r = target.http.head(f"/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT_ALL})
    return r.status_code == 200


def head_digest(target: Target, repo: str, reference: str) -> str | None:
    """The digest a tag or digest names (HEAD), None when the registry does not have it."""
    r = target.http.head(f"/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT_ALL})
    if r.status_code == 404:
        return None
    assert r.status_code == 200, (repo, reference, r.status_code)
    return str(r.headers["docker-content-digest"])


def tag_state(target: Target, repo: str) -> dict[str, str]:
    """Every tag of a repository and the digest it points at."""
    out: dict[str, str] = {}
    for tag in list_tags(target, repo):
        digest = head_digest(target, repo, tag)
        assert digest is not None
        out[tag] = digest
    return out


#: cosign digest tags and referrer fallback tags: attachments, not images.
ATTACHMENT_TAG_RE = re.compile(r"sha(256|384|512)-[0-9a-f]+(\.(sig|att|sbom))?")


def images_only(state: dict[str, str]) -> dict[str, str]:
    """A :func:`tag_state` without the attachment tags."""
    return {t: d for t, d in state.items() if not ATTACHMENT_TAG_RE.fullmatch(t)}


def _ensure_blob(target: Target, repo: str, blob: Blob) -> None:
    if not blob_exists(target, repo, blob.digest):
        push_blob(target, repo, blob)


def push_built(target: Target, repo: str, built: BuiltImage, tag: str | None = None) -> PushedImage:
    """Push a :class:`BuiltImage` (children first, then blobs, then the manifest by tag or digest)."""
    children = [push_built(target, repo, c) for c in built.children]
    for blob in built.blobs():
        if blob.urls:  # foreign layer: not uploaded
            continue
        _ensure_blob(target, repo, blob)
    digest = push_manifest(target, repo, tag or built.digest, built.manifest, built.media_type)
    return PushedImage(
        host=target.host,
        repository=repo,
        tag=tag,
        digest=digest,
        media_type=built.media_type,
        manifest=built.manifest,
        config=built.config.data if built.config else None,
        config_blob=built.config,
        layers=list(built.layers),
        platform=built.platform,
        children=children,
        artifact_type=built.artifact_type,
    )


# ----------------------------------------------------------------------------------------------------
# One-call helpers
# ----------------------------------------------------------------------------------------------------


def push_oci_image(
    target: Target,
    repo: str,
    tag: str = "latest",
    *,
    seed: object = None,
    layers: int = 2,
    layer_size: int = 1024,
    platform: str = "linux/amd64",
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> PushedImage:
    """Build and push an OCI image manifest (``seed`` defaults to ``repo:tag``)."""
    built = build_image(
        seed if seed is not None else f"{repo}:{tag}",
        layers=layers,
        layer_size=layer_size,
        platform=platform,
        labels=labels,
        annotations=annotations,
    )
    return push_built(target, repo, built, tag)


def push_docker_image(
    target: Target,
    repo: str,
    tag: str = "latest",
    *,
    seed: object = None,
    layers: int = 2,
    layer_size: int = 1024,
    platform: str = "linux/amd64",
    labels: Mapping[str, str] | None = None,
) -> PushedImage:
    """Build and push a Docker v2 schema 2 image."""
    built = build_image(
        seed if seed is not None else f"{repo}:{tag}",
        docker=True,
        layers=layers,
        layer_size=layer_size,
        platform=platform,
        labels=labels,
    )
    return push_built(target, repo, built, tag)


def push_index(
    target: Target,
    repo: str,
    tag: str = "latest",
    *,
    docker: bool = False,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    seed: object = None,
    layers: int = 1,
    layer_size: int = 512,
    annotations: Mapping[str, str] | None = None,
) -> PushedImage:
    """Build and push a multi-platform OCI index (``docker=True``: Docker manifest list).

    Children are pushed by digest; ``result.child("linux/arm64/v8")`` finds one.
    """
    built = build_index(
        seed if seed is not None else f"{repo}:{tag}",
        docker=docker,
        platforms=platforms,
        layers=layers,
        layer_size=layer_size,
        annotations=annotations,
    )
    return push_built(target, repo, built, tag)


def push_big_image(
    target: Target,
    repo: str,
    tag: str = "big",
    *,
    size: int = 100 * MiB,
    seed: object = None,
    compression: Literal["gzip", "none"] = "gzip",
    gzip_level: int = 0,
    docker: bool = False,
    chunk_size: int = MiB,
) -> PushedImage:
    """Push an image with one layer of ``size`` random bytes, streamed from a generator (low memory).

    The layer's ``Blob.data`` is None; regenerate its bytes with
    ``iter_layer(seed, size, compression=..., gzip_level=...)`` (``seed`` defaults to ``repo:tag``).
    """
    seed = seed if seed is not None else f"{repo}:{tag}"
    stats = StreamedLayer()
    if compression == "gzip":
        media_type = DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP
    else:
        if docker:
            raise ValueError("Docker v2s2 layers are gzip'd: use compression='gzip'")
        media_type = OCI_LAYER_TAR
    layer = push_blob_stream(
        target,
        repo,
        iter_layer(
            seed, size, compression=compression, gzip_level=gzip_level, chunk_size=chunk_size, stats=stats
        ),
        media_type,
        stats=stats,
    )
    config = Blob.of(make_config([stats.diff_id]), DOCKER_CONFIG if docker else OCI_CONFIG)
    manifest_type = DOCKER_V2S2 if docker else OCI_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    }
    built = BuiltImage(
        manifest=dump_json(manifest),
        media_type=manifest_type,
        config=config,
        layers=[layer],
        platform=Platform("linux", "amd64"),
    )
    _ensure_blob(target, repo, config)
    digest = push_manifest(target, repo, tag, built.manifest, built.media_type)
    return PushedImage(
        host=target.host,
        repository=repo,
        tag=tag,
        digest=digest,
        media_type=built.media_type,
        manifest=built.manifest,
        config=config.data,
        config_blob=config,
        layers=[layer],
        platform=built.platform,
    )


def push_cosign_signature(
    target: Target, image: PushedImage, *, signature: bytes | None = None
) -> PushedImage:
    """Push a cosign-style signature for ``image`` under tag ``sha256-<hex>.sig`` in the same repo."""
    built = build_cosign_signature(image.name, image.digest, signature)
    return push_built(target, image.repository, built, cosign_signature_tag(image.digest))


def push_signed_image(
    target: Target, repo: str, tag: str = "latest", *, seed: object = None
) -> tuple[PushedImage, PushedImage]:
    """Push an OCI image and its cosign-style ``.sig`` manifest: returns (image, signature)."""
    image = push_oci_image(target, repo, tag, seed=seed)
    return image, push_cosign_signature(target, image)


def push_referrer(
    target: Target,
    subject: PushedImage,
    *,
    artifact_type: str = SBOM_ARTIFACT_TYPE,
    data: bytes | None = None,
    annotations: Mapping[str, str] | None = None,
    fallback_tag: bool = True,
) -> PushedImage:
    """Push an OCI 1.1 artifact whose ``subject`` is ``subject``, by digest (no tag).

    With ``fallback_tag`` (default) the referrers-tag-schema index ``sha256-<hex>`` is created or
    updated to list it, as OCI 1.1 clients do on registries without the referrers API
    (distribution 2.8 has none).
    """
    kwargs: dict[str, Any] = {"artifact_type": artifact_type, "annotations": annotations}
    if data is not None:
        kwargs["data"] = data
    built = build_referrer(subject.descriptor(), **kwargs)
    pushed = push_built(target, subject.repository, built)
    if fallback_tag:
        tag = referrers_tag(subject.digest)
        manifests: list[dict[str, Any]] = []
        if manifest_exists(target, subject.repository, tag):
            raw, _ = fetch_manifest(target, subject.repository, tag, accept=OCI_INDEX)
            manifests = [m for m in json.loads(raw).get("manifests", []) if m.get("digest") != pushed.digest]
        entry = {
            "mediaType": OCI_MANIFEST,
            "digest": pushed.digest,
            "size": pushed.size,
            "artifactType": artifact_type,
        }
        manifest_annotations = json.loads(built.manifest).get("annotations")
        if manifest_annotations:
            entry["annotations"] = manifest_annotations
        manifests.append(entry)
        index = dump_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})
        push_manifest(target, subject.repository, tag, index, OCI_INDEX)
    return pushed


def tar_members(layer_bytes: bytes) -> dict[str, bytes]:
    """Names and contents of the regular files in a (gzip'd or plain) layer (for assertions)."""
    if layer_bytes[:2] == b"\x1f\x8b":
        layer_bytes = gzip.decompress(layer_bytes)
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(layer_bytes), mode="r:") as tf:
        for member in tf.getmembers():
            if member.isfile():
                f = tf.extractfile(member)
                out[member.name] = f.read() if f is not None else b""
    return out
