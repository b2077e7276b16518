"""Image inspection from the manifest and config only (layers are never downloaded).

The output mirrors ``skopeo inspect`` field by field, so scripts written for
skopeo keep working.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import anyio

from regtool.errors import ManifestError
from regtool.manifest import Manifest, Platform, select_platform
from regtool.transports.base import ImageSource

_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def go_time(value: Any) -> str | None:
    """An RFC 3339 time as Go's encoding/json prints it (fraction without trailing zeros)."""
    if not isinstance(value, str) or not value:
        return None
    m = _TIME.match(value.strip())
    if not m:
        return value
    frac = (m.group(2) or "").rstrip("0")
    if frac == ".":
        frac = ""
    zone = "Z" if m.group(3) in ("Z", "+00:00", "-00:00") else m.group(3)
    return f"{m.group(1)}{frac}{zone}"


@dataclass
class ResolvedImage:
    """The top-level manifest and, for an index, the instance chosen for a platform."""

    top: Manifest
    image: Manifest

    @property
    def digest(self) -> str:
        return self.top.digest


async def resolve(source: ImageSource, platform: Platform) -> ResolvedImage:
    """Fetches the named manifest and, for an index, the platform's instance."""
    top = await source.get_manifest()
    if not top.is_index:
        return ResolvedImage(top, top)
    child = select_platform(top, platform)
    return ResolvedImage(top, await source.get_manifest(child.digest))


async def read_config(source: ImageSource, image: Manifest) -> bytes | None:
    """The config blob's bytes, or None for schema1 (whose config lives in the manifest)."""
    if image.config is None:
        return None
    return await source.read_blob(image.config)


def _config_json(raw: bytes | None, image: Manifest) -> dict[str, Any]:
    if raw is None:
        return _schema1_config(image)
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ManifestError(f"config {image.config.digest if image.config else ''} is not valid JSON") from exc
    if not isinstance(value, dict):
        raise ManifestError("image config is not a JSON object")
    return value


def _schema1_config(image: Manifest) -> dict[str, Any]:
    history = image.json.get("history") or []
    if history and isinstance(history[0], dict):
        try:
            v1 = json.loads(history[0].get("v1Compatibility", "{}"))
            if isinstance(v1, dict):
                return v1
        except ValueError:
            pass
    return {"architecture": image.json.get("architecture", ""), "os": "linux"}


def inspect_output(
    name: str | None, resolved: ResolvedImage, config_raw: bytes | None, tags: list[str]
) -> dict[str, Any]:
    """skopeo inspect's JSON: Name, Digest, RepoTags, Created, ..., LayersData, Env."""
    cfg = _config_json(config_raw, resolved.image)
    inner = cfg.get("config") or cfg.get("container_config") or {}
    if not isinstance(inner, dict):
        inner = {}
    out: dict[str, Any] = {}
    if name:
        out["Name"] = name
    out["Digest"] = resolved.digest
    out["RepoTags"] = tags
    out["Created"] = go_time(cfg.get("created"))
    out["DockerVersion"] = cfg.get("docker_version") or ""
    out["Labels"] = inner.get("Labels") or None
    out["Architecture"] = cfg.get("architecture") or ""
    if cfg.get("variant"):
        out["Variant"] = cfg["variant"]
    out["Os"] = cfg.get("os") or ""
    layers = resolved.image.layers
    out["Layers"] = [d.digest for d in layers]
    out["LayersData"] = [
        {"MIMEType": d.media_type, "Digest": d.digest, "Size": d.size, "Annotations": dict(d.annotations) or None}
        for d in layers
    ]
    out["Env"] = inner.get("Env") or None
    return out


_OCI_CONFIG_KEYS = (
    "User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels", "StopSignal", "ArgsEscaped",
)
_HISTORY_KEYS = ("created", "created_by", "author", "comment", "empty_layer")


def oci_config(config_raw: bytes | None, image: Manifest) -> dict[str, Any]:
    """The config in OCI form, as ``skopeo inspect --config`` prints it."""
    cfg = _config_json(config_raw, image)
    out: dict[str, Any] = {}
    if cfg.get("created"):
        out["created"] = go_time(cfg["created"])
    if cfg.get("author"):
        out["author"] = cfg["author"]
    out["architecture"] = cfg.get("architecture") or ""
    out["os"] = cfg.get("os") or ""
    for key in ("os.version", "os.features", "variant"):
        if cfg.get(key):
            out[key] = cfg[key]
    inner = cfg.get("config") or {}
    config = {k: inner[k] for k in _OCI_CONFIG_KEYS if isinstance(inner, dict) and inner.get(k)}
    out["config"] = config
    rootfs = cfg.get("rootfs") or {}
    out["rootfs"] = {"type": rootfs.get("type", ""), "diff_ids": rootfs.get("diff_ids") or None}
    history = [
        {k: h[k] for k in _HISTORY_KEYS if h.get(k)} for h in (cfg.get("history") or []) if isinstance(h, dict)
    ]
    if history:
        for h in history:
            if "created" in h:
                h["created"] = go_time(h["created"])
        out["history"] = history
    return out


async def inspect_image(
    source: ImageSource, *, name: str | None, platform: Platform, with_tags: bool = True
) -> dict[str, Any]:
    """Resolves, then fetches the config and the tag list concurrently."""
    resolved = await resolve(source, platform)
    results: dict[str, Any] = {"tags": []}

    async def fetch_config() -> None:
        results["config"] = await read_config(source, resolved.image)

    async def fetch_tags() -> None:
        results["tags"] = await source.list_tags()

    async with anyio.create_task_group() as tg:
        tg.start_soon(fetch_config)
        if with_tags:
            tg.start_soon(fetch_tags)
    return inspect_output(name, resolved, results["config"], results["tags"])
