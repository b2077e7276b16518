"""Where signatures live: reading and writing them next to images.

Three homes, one per kind of image location:

* **registries** (``docker://``): cosign's legacy storage, an OCI manifest
  tagged ``sha256-<hex>.sig`` in the image's repository whose layers are
  simple-signing payloads carrying the signature (and certificate, chain,
  Rekor bundle) as annotations; and cosign v3's storage, a Sigstore bundle
  attached as an OCI 1.1 referrer (``artifactType``
  ``application/vnd.dev.sigstore.bundle.v0.3+json``, the empty config,
  ``subject`` = the signed manifest), found through the referrers API or,
  on registries without one (distribution 2.8), the ``sha256-<hex>``
  referrers fallback tag, which this module maintains;
* **OCI layouts** (``oci:``): the same manifests, named in ``index.json``
  by the same names (``sha256-<hex>.sig``; ``sha256-<hex>`` for the index
  of bundle referrers), which is also how ``regtool copy`` carries them;
* **``dir:`` images** (skopeo's layout): ``signature-N`` files (and
  ``<hex>.signature-N`` for the instances of an index) in the
  ``sigstore-json`` form; bundles have no place there.

:class:`SignatureStore` is the read/write interface ``regtool sign`` uses;
:func:`find_signatures` is the read-only path verification uses on any
:class:`~regtool.transports.base.ImageSource`.  Nothing here verifies:
a :class:`FoundSignature` is only parsed, and one that cannot even be
parsed carries the reason instead.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

import anyio.to_thread

from regtool.errors import ManifestError, RegtoolError, UsageError, VerificationError
from regtool.manifest import (
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
    parse_manifest,
    sha256_digest,
)
from regtool.signing.models import (
    BUNDLE_MEDIA_TYPES,
    SIMPLESIGNING_MEDIA_TYPE,
    Signature,
    go_json_dumps,
    parse_sigstore_json,
    to_sigstore_json,
)
from regtool.transports.base import ImageSource, atomic_write_bytes, split_digest

if TYPE_CHECKING:
    from regtool.reference import ImageRef, Reference
    from regtool.registry import RegistryClient

__all__ = [
    "BUNDLE_ARTIFACT_TYPE",
    "BUNDLE_CONTENT_ANNOTATION",
    "BUNDLE_PREDICATE_ANNOTATION",
    "EMPTY_DIGEST",
    "EMPTY_JSON",
    "DirSignatureStore",
    "FoundSignature",
    "LayoutSignatureStore",
    "RegistrySignatureStore",
    "SignatureStore",
    "add_to_referrers_index",
    "build_bundle_referrer",
    "build_signature_manifest",
    "find_signatures",
    "is_attachment_name",
    "open_signature_store",
    "referrers_tag",
    "resolve_top",
    "signature_layer",
    "signature_tag",
]

BUNDLE_ARTIFACT_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
"""``artifactType`` of a cosign v3 signature referrer, and media type of its one layer."""

BUNDLE_CONTENT_ANNOTATION = "dev.sigstore.bundle.content"
BUNDLE_PREDICATE_ANNOTATION = "dev.sigstore.bundle.predicateType"
CREATED_ANNOTATION = "org.opencontainers.image.created"

EMPTY_JSON = b"{}"
EMPTY_DIGEST = sha256_digest(EMPTY_JSON)

_ATTACHMENT_NAME_RE = re.compile(r"^sha256-[0-9a-f]{64}(?:\.[a-z]+)?$")
_MAX_SIGNATURE_FILES = 1000

FoundFormat = Literal["simplesigning", "bundle", "unknown"]


def signature_tag(digest: str) -> str:
    """cosign's ``sha256-<hex>.sig`` tag for the signatures of manifest ``digest``."""
    algorithm, encoded = split_digest(digest)
    return f"{algorithm}-{encoded}.sig"


def referrers_tag(digest: str) -> str:
    """The OCI referrers fallback tag (``sha256-<hex>``) of manifest ``digest``."""
    algorithm, encoded = split_digest(digest)
    return f"{algorithm}-{encoded}"


def is_attachment_name(name: str) -> bool:
    """Whether ``name`` is a digest tag (``sha256-<hex>[.sig|.att|...]``) rather than an image name."""
    return bool(_ATTACHMENT_NAME_RE.match(name))


@dataclass(frozen=True)
class FoundSignature:
    """A signature found next to an image, parsed but not verified.

    ``source`` says where it was (``sha256-<hex>.sig layer 2``, ``referrer
    sha256:...``, ``signature-1``); ``signature`` is ``None`` when it could
    not be parsed, and ``error`` then says why.
    """

    source: str
    signature: Signature | None = None
    error: str | None = None

    @property
    def format(self) -> FoundFormat:
        if self.signature is None:
            return "unknown"
        return self.signature.source_format


# --------------------------------------------------------------------------- building


def _descriptor_json(
    media_type: str, data: bytes, annotations: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A descriptor in go-containerregistry's field order (what cosign writes)."""
    out: dict[str, Any] = {"mediaType": media_type, "size": len(data), "digest": sha256_digest(data)}
    if annotations:
        out["annotations"] = {k: annotations[k] for k in sorted(annotations)}
    return out


def signature_layer(sig: Signature) -> tuple[dict[str, Any], bytes]:
    """The ``.sig`` manifest layer (descriptor JSON) and blob (the payload) for a simple signature."""
    if sig.source_format != "simplesigning":
        raise UsageError("only simple-signing signatures are stored as .sig layers")
    return _descriptor_json(sig.media_type, sig.payload, sig.to_annotations()), sig.payload


def build_signature_manifest(layers: Sequence[Mapping[str, Any]]) -> tuple[bytes, bytes]:
    """``(manifest, config)`` of a cosign signature image holding ``layers`` (descriptor JSON objects).

    The config is the one cosign writes (an empty OCI image config whose
    ``rootfs.diff_ids`` are the layer digests), so a ``.sig`` manifest
    regtool writes looks like one cosign wrote.
    """
    config_doc = {
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [str(layer["digest"]) for layer in layers]},
        "config": {},
    }
    config = go_json_dumps(config_doc).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": _descriptor_json(OCI_CONFIG, config),
        "layers": [dict(layer) for layer in layers],
    }
    return go_json_dumps(manifest).encode(), config


def _now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_bundle_referrer(
    subject: Descriptor,
    bundle_json: bytes,
    *,
    annotations: Mapping[str, str] | None = None,
    created: str | None = None,
) -> tuple[bytes, Descriptor]:
    """``(manifest, bundle layer)`` of the OCI 1.1 artifact cosign v3 attaches a bundle as.

    Empty config (``application/vnd.oci.empty.v1+json``, the ``{}`` blob),
    one layer (the bundle), ``subject`` = the signed manifest, and cosign's
    annotations (``dev.sigstore.bundle.content``,
    ``dev.sigstore.bundle.predicateType`` when given, creation time).
    """
    ann: dict[str, str] = {CREATED_ANNOTATION: created or _now_rfc3339()}
    ann.update(annotations or {})
    layer = _descriptor_json(BUNDLE_ARTIFACT_TYPE, bundle_json)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": BUNDLE_ARTIFACT_TYPE,
        "config": {"mediaType": OCI_EMPTY, "size": len(EMPTY_JSON), "digest": EMPTY_DIGEST, "data": "e30="},
        "layers": [layer],
        "subject": {"mediaType": subject.media_type, "size": subject.size, "digest": subject.digest},
        "annotations": {k: ann[k] for k in sorted(ann)},
    }
    return go_json_dumps(manifest).encode(), Descriptor(BUNDLE_ARTIFACT_TYPE, layer["digest"], layer["size"])


def add_to_referrers_index(existing: Manifest | None, referrer: Manifest) -> bytes:
    """The referrers fallback index with ``referrer`` added (entries already there are kept as they are)."""
    entries: list[Any] = []
    if existing is not None and existing.is_index:
        entries = [e for e in existing.json.get("manifests") or [] if isinstance(e, dict)]
    if any(e.get("digest") == referrer.digest for e in entries):
        entries = [e for e in entries if e.get("digest") != referrer.digest]
    desc: dict[str, Any] = {"mediaType": referrer.media_type, "size": referrer.size, "digest": referrer.digest}
    if referrer.artifact_type:
        desc["artifactType"] = referrer.artifact_type
    if referrer.annotations:
        desc["annotations"] = {k: referrer.annotations[k] for k in sorted(referrer.annotations)}
    entries.append(desc)
    return go_json_dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()


# --------------------------------------------------------------------------- reading


def _oneline(text: str) -> str:
    return " ".join(text.split())


async def resolve_top(source: ImageSource) -> Manifest:
    """The named image's manifest.

    Like ``source.get_manifest()``, except that an ``oci:PATH`` layout
    holding one image plus its signatures (``sha256-<hex>.sig`` entries)
    still names that one image: digest-named attachments never count as
    images.
    """
    try:
        return await source.get_manifest()
    except UsageError:
        from regtool.transports.layout import OCILayoutSource

        if not isinstance(source, OCILayoutSource):
            raise
        entries = source.index.get("manifests") or []
        images = [e for e in entries if not is_attachment_name(_ref_name(e) or "")]
        if len({e.get("digest") for e in images}) != 1:
            raise
        return await source.get_manifest(str(images[0]["digest"]))


def _ref_name(entry: Any) -> str | None:
    from regtool.transports.layout import REF_NAME_ANNOTATION

    annotations = entry.get("annotations") if isinstance(entry, dict) else None
    name = annotations.get(REF_NAME_ANNOTATION) if isinstance(annotations, dict) else None
    return name if isinstance(name, str) else None


async def _read_sig_manifest(source: ImageSource, digest: str) -> list[FoundSignature]:
    tag = signature_tag(digest)
    manifest = await source.get_tagged_manifest(tag)
    if manifest is None:
        return []
    if manifest.is_index or manifest.config is None:
        return [FoundSignature(tag, error=f"{tag} is a {manifest.media_type}, not a signature manifest")]
    found: list[FoundSignature] = []
    for i, layer in enumerate(manifest.layers, start=1):
        where = f"{tag} layer {i}"
        if layer.media_type != SIMPLESIGNING_MEDIA_TYPE:
            found.append(FoundSignature(where, error=f"unexpected layer media type {layer.media_type!r}"))
            continue
        try:
            payload = await source.read_blob(layer)
            sig = Signature.from_annotations(payload, layer.annotations, media_type=layer.media_type)
        except (VerificationError, ManifestError) as exc:
            found.append(FoundSignature(where, error=_oneline(str(exc))))
            continue
        found.append(FoundSignature(where, sig))
    return found


async def _referrer_descriptors(source: ImageSource, digest: str) -> list[Descriptor]:
    from regtool.transports.docker import DockerSource
    from regtool.transports.layout import OCILayoutSource

    if isinstance(source, DockerSource):
        return await source.referrers(digest)
    found: list[Descriptor] = []
    fallback = await source.get_tagged_manifest(referrers_tag(digest))
    if fallback is not None and fallback.is_index:
        found.extend(fallback.children())
    if isinstance(source, OCILayoutSource):
        # ORAS-style layouts list referrers in index.json itself (with their artifactType)
        for entry in source.index.get("manifests") or []:
            if isinstance(entry, dict) and entry.get("artifactType") == BUNDLE_ARTIFACT_TYPE:
                try:
                    found.append(Descriptor.from_json(entry, "index.json entry"))
                except ManifestError:
                    continue
    return list({d.digest: d for d in found}.values())


async def _read_bundle_referrers(source: ImageSource, digest: str) -> list[FoundSignature]:
    found: list[FoundSignature] = []
    for desc in await _referrer_descriptors(source, digest):
        if desc.artifact_type not in (None, BUNDLE_ARTIFACT_TYPE):
            continue
        where = f"referrer {desc.digest}"
        try:
            manifest = await source.get_manifest(desc.digest)
        except (ManifestError, RegtoolError) as exc:
            if desc.artifact_type is None:
                continue
            found.append(FoundSignature(where, error=f"cannot read referrer: {_oneline(str(exc))}"))
            continue
        if manifest.artifact_type != BUNDLE_ARTIFACT_TYPE and desc.artifact_type is None:
            continue
        if manifest.subject is None or manifest.subject.digest != digest:
            found.append(FoundSignature(where, error=f"referrer's subject is not {digest}"))
            continue
        layers = [layer for layer in manifest.layers if layer.media_type in BUNDLE_MEDIA_TYPES]
        if len(layers) != 1:
            found.append(FoundSignature(where, error="referrer does not hold exactly one Sigstore bundle layer"))
            continue
        try:
            data = await source.read_blob(layers[0])
            found.append(FoundSignature(where, Signature.from_bundle_json(data)))
        except (VerificationError, ManifestError) as exc:
            found.append(FoundSignature(where, error=_oneline(str(exc))))
    return found


async def _read_dir_signatures(source: ImageSource, digest: str) -> list[FoundSignature]:
    from regtool.transports.dirlayout import DirSource

    assert isinstance(source, DirSource)
    top = await source.top_digest()
    prefix = "" if digest == top else split_digest(digest)[1] + "."
    found: list[FoundSignature] = []
    for i, blob in enumerate(await source.get_signatures(digest), start=1):
        where = f"{prefix}signature-{i}"
        try:
            found.append(FoundSignature(where, parse_sigstore_json(blob)))
        except VerificationError as exc:
            found.append(FoundSignature(where, error=_oneline(str(exc))))
    return found


async def find_signatures(source: ImageSource, digest: str) -> list[FoundSignature]:
    """Every signature stored for manifest ``digest`` next to ``source``'s image.

    ``dir:``: its ``signature-N`` files.  Registries and OCI layouts: the
    layers of the ``sha256-<hex>.sig`` manifest, then the Sigstore bundle
    referrers.  Registry errors (authentication, network) propagate; a
    signature that does not parse is returned with its ``error``.
    """
    from regtool.transports.dirlayout import DirSource

    split_digest(digest)
    if isinstance(source, DirSource):
        return await _read_dir_signatures(source, digest)
    return [*await _read_sig_manifest(source, digest), *await _read_bundle_referrers(source, digest)]


# --------------------------------------------------------------------------- writing


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


class SignatureStore(ABC):
    """Reads an image and reads/writes its signatures where its transport keeps them."""

    name: str = ""
    supports_bundles: bool = True

    @abstractmethod
    async def source(self) -> ImageSource:
        """A source reflecting everything written so far (reopened after writes where needed)."""

    async def top(self) -> Manifest:
        """The named image's manifest (see :func:`resolve_top`)."""
        return await resolve_top(await self.source())

    async def get_manifest(self, digest: str) -> Manifest:
        return await (await self.source()).get_manifest(digest)

    async def read(self, digest: str) -> list[FoundSignature]:
        return await find_signatures(await self.source(), digest)

    @abstractmethod
    async def add_signatures(self, digest: str, sigs: Sequence[Signature]) -> None:
        """Append simple signatures for manifest ``digest`` (existing ones are kept unchanged)."""

    @abstractmethod
    async def add_bundle(
        self, subject: Descriptor, bundle_json: bytes, annotations: Mapping[str, str] | None = None
    ) -> Descriptor:
        """Attach a Sigstore bundle to ``subject`` as a referrer; returns the referrer's descriptor."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release files and temporary directories."""


def _existing_layers(manifest: Manifest | None) -> list[dict[str, Any]]:
    if manifest is None:
        return []
    if manifest.is_index or manifest.config is None:
        raise ManifestError("the existing .sig tag is not a signature manifest; refusing to overwrite it")
    return [dict(layer) for layer in manifest.json.get("layers") or [] if isinstance(layer, dict)]


class RegistrySignatureStore(SignatureStore):
    """Signatures in a registry repository: the ``.sig`` tag and bundle referrers."""

    def __init__(self, client: RegistryClient, ref: Reference) -> None:
        from regtool.transports.docker import DockerSource

        self.client = client
        self.ref = ref
        self.name = f"docker://{ref}"
        self._source = DockerSource(client, ref)

    async def source(self) -> ImageSource:
        return self._source

    async def _put_blob(self, data: bytes, media_type: str) -> Descriptor:
        desc = Descriptor(media_type, sha256_digest(data), len(data))
        if await self.client.blob_exists(self.ref, desc.digest) is None:
            await self.client.upload_blob(self.ref, desc, lambda offset: _one(data[offset:]))
        return desc

    async def add_signatures(self, digest: str, sigs: Sequence[Signature]) -> None:
        if not sigs:
            return
        tag = signature_tag(digest)
        layers = _existing_layers(await self._source.get_tagged_manifest(tag))
        for sig in sigs:
            layer, payload = signature_layer(sig)
            await self._put_blob(payload, sig.media_type)
            layers.append(layer)
        manifest, config = build_signature_manifest(layers)
        await self._put_blob(config, OCI_CONFIG)
        await self.client.put_manifest(self.ref.repo_only().with_tag(tag), manifest, OCI_MANIFEST)

    async def add_bundle(
        self, subject: Descriptor, bundle_json: bytes, annotations: Mapping[str, str] | None = None
    ) -> Descriptor:
        data, layer = build_bundle_referrer(subject, bundle_json, annotations=annotations)
        await self._put_blob(EMPTY_JSON, OCI_EMPTY)
        await self._put_blob(bundle_json, layer.media_type)
        referrer = parse_manifest(data, OCI_MANIFEST)
        repo = self.ref.repo_only()
        await self.client.put_manifest(repo.with_digest(referrer.digest), data, OCI_MANIFEST)
        # A registry with the referrers API lists it now; otherwise keep the fallback tag's index.
        listed = await self.client.referrers(self.ref, subject.digest)
        if not any(d.digest == referrer.digest for d in listed):
            tag = referrers_tag(subject.digest)
            existing = await self._source.get_tagged_manifest(tag)
            index = add_to_referrers_index(existing, referrer)
            await self.client.put_manifest(repo.with_tag(tag), index, OCI_INDEX)
        return referrer.descriptor()


class LayoutSignatureStore(SignatureStore):
    """Signatures in an OCI layout: extra ``index.json`` entries named like the registry tags."""

    def __init__(self, path: str, layout_ref: str | None) -> None:
        self.path = path
        self.layout_ref = layout_ref
        self.name = f"oci:{path}" + (f":{layout_ref}" if layout_ref else "")
        self._source: ImageSource | None = None

    async def source(self) -> ImageSource:
        if self._source is None:
            from regtool.transports.layout import OCILayoutSource

            self._source = await OCILayoutSource.open(self.path, self.layout_ref)
        return self._source

    async def _written(self) -> None:
        if self._source is not None:
            await self._source.close()
        self._source = None

    async def add_signatures(self, digest: str, sigs: Sequence[Signature]) -> None:
        from regtool.transports.layout import OCILayoutDestination

        if not sigs:
            return
        tag = signature_tag(digest)
        layers = _existing_layers(await (await self.source()).get_tagged_manifest(tag))
        async with await OCILayoutDestination.open(self.path) as dest:
            for sig in sigs:
                layer, payload = signature_layer(sig)
                await dest.put_blob(Descriptor(sig.media_type, layer["digest"], layer["size"]), _one(payload))
                layers.append(layer)
            manifest, config = build_signature_manifest(layers)
            await dest.put_blob(Descriptor(OCI_CONFIG, sha256_digest(config), len(config)), _one(config))
            desc = Descriptor(OCI_MANIFEST, sha256_digest(manifest), len(manifest))
            await dest.put_manifest(manifest, OCI_MANIFEST, desc.digest)
            await dest.tag(tag, desc)
            await dest.commit()
        await self._written()

    async def add_bundle(
        self, subject: Descriptor, bundle_json: bytes, annotations: Mapping[str, str] | None = None
    ) -> Descriptor:
        from regtool.transports.layout import OCILayoutDestination

        data, layer = build_bundle_referrer(subject, bundle_json, annotations=annotations)
        referrer = parse_manifest(data, OCI_MANIFEST)
        tag = referrers_tag(subject.digest)
        existing = await (await self.source()).get_tagged_manifest(tag)
        index = add_to_referrers_index(existing, referrer)
        async with await OCILayoutDestination.open(self.path) as dest:
            await dest.put_blob(Descriptor(OCI_EMPTY, EMPTY_DIGEST, len(EMPTY_JSON)), _one(EMPTY_JSON))
            await dest.put_blob(layer, _one(bundle_json))
            await dest.put_manifest(data, OCI_MANIFEST, referrer.digest)
            index_desc = Descriptor(OCI_INDEX, sha256_digest(index), len(index))
            await dest.put_manifest(index, OCI_INDEX, index_desc.digest)
            await dest.tag(tag, index_desc)
            await dest.commit()
        await self._written()
        return referrer.descriptor()

    async def close(self) -> None:
        await self._written()


class DirSignatureStore(SignatureStore):
    """Signatures of a skopeo ``dir:`` image: ``signature-N`` / ``<hex>.signature-N`` files."""

    supports_bundles = False

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = f"dir:{path}"
        self._source: ImageSource | None = None

    async def source(self) -> ImageSource:
        if self._source is None:
            from regtool.transports.dirlayout import DirSource

            self._source = await DirSource.open(self.path)
        return self._source

    async def add_signatures(self, digest: str, sigs: Sequence[Signature]) -> None:
        from regtool.transports.dirlayout import DirSource

        source = await self.source()
        assert isinstance(source, DirSource)
        _, encoded = split_digest(digest)
        prefix = "" if digest == await source.top_digest() else f"{encoded}."
        if prefix and not await anyio.to_thread.run_sync(
            os.path.isfile, os.path.join(self.path, f"{encoded}.manifest.json")
        ):
            raise UsageError(f"{self.name} does not hold manifest {digest}")
        existing = len(await source.get_signatures(digest))
        if existing + len(sigs) > _MAX_SIGNATURE_FILES:
            raise UsageError(f"{self.name}: too many signatures for {digest}")
        for i, sig in enumerate(sigs, start=existing + 1):
            await atomic_write_bytes(self.path, f"{prefix}signature-{i}", to_sigstore_json(sig))

    async def add_bundle(
        self, subject: Descriptor, bundle_json: bytes, annotations: Mapping[str, str] | None = None
    ) -> Descriptor:
        raise UsageError(f"{self.name}: dir: images have no place for Sigstore bundles (use --bundle-format legacy)")


async def open_signature_store(image: ImageRef, client: RegistryClient | None = None) -> SignatureStore:
    """The store for ``docker://``, ``oci:`` or ``dir:`` images (``oci-archive:`` is read-only here)."""
    if image.transport == "docker" and image.reference is not None:
        if client is None:
            raise UsageError(f"{image}: docker:// images need a registry client")
        return RegistrySignatureStore(client, image.reference)
    if image.transport == "oci" and image.path:
        return LayoutSignatureStore(image.path, image.layout_ref)
    if image.transport == "dir" and image.path:
        return DirSignatureStore(image.path)
    raise UsageError(f"{image}: signatures can be stored for docker://, oci: and dir: images only")
