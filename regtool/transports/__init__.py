"""One source/destination interface over every transport.

``open_source``/``open_destination`` turn a parsed :class:`~regtool.reference.ImageRef`
into an :class:`ImageSource`/:class:`ImageDestination`: the local transports
(``oci:``, ``oci-archive:``, ``dir:``) and ``docker://``, which needs the run's
shared :class:`~regtool.registry.RegistryClient`. Transport modules are imported
on use, so importing this package stays cheap and a copy between two registries
never loads the layout transports (nor tarfile).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from regtool.errors import InvalidReference, UsageError
from regtool.transports.base import ImageDestination, ImageSource

if TYPE_CHECKING:
    from regtool.reference import ImageRef
    from regtool.registry import RegistryClient

__all__ = [
    "check_destination", "ImageDestination", "ImageSource", "open_destination", "open_source"]


def _path_of(image_ref: ImageRef) -> str:
    if not image_ref.path:
        raise InvalidReference(f"{image_ref.transport}: transport needs a path")
    return image_ref.path


def _docker_client(image_ref: ImageRef, client: RegistryClient | None) -> RegistryClient:
    if client is None:
        raise UsageError(f"{image_ref}: docker:// images need a registry client")
    return client


async def open_source(
    image_ref: ImageRef, *, client: RegistryClient | None = None, tmpdir: str | None = None
) -> ImageSource:
    """Open an image for reading.

    ``client``: the registry client for ``docker://``; ``tmpdir``: where a
    compressed ``oci-archive:`` may be extracted.
    """
    if image_ref.transport == "docker" and image_ref.reference is not None:
        from regtool.transports.docker import DockerSource

        return DockerSource(_docker_client(image_ref, client), image_ref.reference)
    if image_ref.transport == "oci":
        from regtool.transports.layout import OCILayoutSource

        return await OCILayoutSource.open(_path_of(image_ref), image_ref.layout_ref)
    if image_ref.transport == "oci-archive":
        from regtool.transports.layout import open_archive_source

        return await open_archive_source(_path_of(image_ref), image_ref.layout_ref, tmpdir=tmpdir)
    if image_ref.transport == "dir":
        from regtool.transports.dirlayout import DirSource

        return await DirSource.open(_path_of(image_ref))
    raise UsageError(f"transport {image_ref.transport!r} cannot be opened by regtool.transports yet")


async def open_destination(
    image_ref: ImageRef,
    *,
    client: RegistryClient | None = None,
    source_ref: ImageRef | None = None,
    tmpdir: str | None = None,
) -> ImageDestination:
    """Open an image for writing.

    ``client``: the registry client for ``docker://``; ``source_ref``: the copy's
    source, so a registry destination on the same registry can mount blobs from
    it; ``tmpdir``: where an ``oci-archive:`` is staged before it is tarred.
    """
    if image_ref.transport == "docker" and image_ref.reference is not None:
        from regtool.transports.docker import DockerDestination

        ref = image_ref.reference
        src = source_ref.reference if source_ref is not None else None
        mount_from = src.repository if src is not None and src.registry == ref.registry else None
        return DockerDestination(_docker_client(image_ref, client), ref, mount_from=mount_from)
    if image_ref.transport == "oci":
        from regtool.transports.layout import OCILayoutDestination

        return await OCILayoutDestination.open(_path_of(image_ref), image_ref.layout_ref)
    if image_ref.transport == "oci-archive":
        from regtool.transports.layout import OCIArchiveDestination

        return await OCIArchiveDestination.open_archive(
            _path_of(image_ref), image_ref.layout_ref, tmpdir=tmpdir
        )
    if image_ref.transport == "dir":
        if image_ref.layout_ref is not None:
            raise InvalidReference(f"dir: takes no reference name ({image_ref.layout_ref!r})")
        from regtool.transports.dirlayout import DirDestination

        return await DirDestination.open(_path_of(image_ref))
    raise UsageError(f"transport {image_ref.transport!r} cannot be opened by regtool.transports yet")


def check_destination(image_ref: ImageRef) -> None:
    """Refuses a local destination that cannot be written, before any network traffic.

    Read-only: nothing is created, so a copy whose source turns out missing leaves no trace.
    """
    if image_ref.transport == "oci":
        from regtool.transports.layout import check_layout_destination

        check_layout_destination(_path_of(image_ref), str(image_ref))
    elif image_ref.transport == "dir":
        from regtool.transports.dirlayout import check_dir_destination

        check_dir_destination(_path_of(image_ref), str(image_ref))
    elif image_ref.transport == "oci-archive":
        path = _path_of(image_ref)
        parent = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise UsageError(f"{image_ref}: {path} is a directory, not an archive file")
        if not os.path.isdir(parent):
            raise UsageError(f"{image_ref}: directory {parent} does not exist")
