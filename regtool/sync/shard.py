"""Split one sync job over N workers: ``--shard I/N`` (0-based).

Each source repository belongs to exactly one shard, chosen by a stable hash of its key, so every
worker can read the same config, list the same catalogs, and still copy disjoint sets of images that
together cover everything. All tags of a repository land on the same worker (blobs shared between
tags move once).

The hash is ``int.from_bytes(sha256(key.encode("utf-8")).digest()[:8], "big") % N`` with the key
``"<registry>/<repository>"`` (see :func:`repository_key`): it does not depend on Python's per-process
``hash()`` randomisation, the platform or the order of the config, so workers on different hosts and
runs on different days agree.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from regtool.errors import UsageError

__all__ = ["JOB_COMPLETION_INDEX", "MAX_SHARDS", "Shard", "parse_shard", "repository_key", "shard_of"]

JOB_COMPLETION_INDEX = "JOB_COMPLETION_INDEX"
"""Set by Kubernetes for each pod of an Indexed Job (``completionMode: Indexed``)."""

MAX_SHARDS = 100_000

_NUMBER_RE = re.compile(r"[0-9]+", re.ASCII)


def repository_key(registry: str, repository: str) -> str:
    """The sharding key of a source repository, e.g. ``docker.io/library/alpine``."""
    return f"{registry}/{repository}"


def shard_of(repository_key: str, n: int) -> int:
    """The shard (``0 <= shard < n``) that owns ``repository_key``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UsageError(f"the number of shards must be a positive integer, not {n!r}")
    digest = hashlib.sha256(repository_key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % n


@dataclass(frozen=True)
class Shard:
    """Worker ``index`` of ``count`` (0-based)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise UsageError(f"invalid shard count {self.count}: expected 1 to {MAX_SHARDS}")
        if not 0 <= self.index < self.count:
            raise UsageError(f"invalid shard {self.index}/{self.count}: the index must be 0 to {self.count - 1}")

    def owns(self, repository_key: str) -> bool:
        """Whether this worker handles the repository with this key."""
        return self.count == 1 or shard_of(repository_key, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str | None, environ: Mapping[str, str] | None = None) -> Shard:
    """Parse ``I/N`` or ``/N`` (``I`` from ``$JOB_COMPLETION_INDEX``); ``None`` means the whole job (0/1)."""
    if text is None:
        return Shard()
    env = os.environ if environ is None else environ
    index_text, slash, count_text = text.partition("/")
    if not slash:
        raise UsageError(f"invalid shard {text!r}: expected I/N (0-based) or /N, e.g. 0/4")
    if not _NUMBER_RE.fullmatch(count_text):
        raise UsageError(f"invalid shard {text!r}: N must be a positive integer")
    count = int(count_text)
    if index_text == "":
        index_text = env.get(JOB_COMPLETION_INDEX, "")
        if index_text == "":
            raise UsageError(
                f"shard {text!r} takes its index from ${JOB_COMPLETION_INDEX}, which is not set"
                " (give the index explicitly as I/N)"
            )
        if not _NUMBER_RE.fullmatch(index_text):
            raise UsageError(f"invalid ${JOB_COMPLETION_INDEX} {index_text!r}: expected a non-negative integer")
    elif not _NUMBER_RE.fullmatch(index_text):
        raise UsageError(f"invalid shard {text!r}: I must be a non-negative integer")
    if count < 1:
        raise UsageError(f"invalid shard {text!r}: N must be at least 1")
    index = int(index_text)
    if count > MAX_SHARDS:
        raise UsageError(f"invalid shard {text!r}: at most {MAX_SHARDS} shards")
    if index >= count:
        raise UsageError(f"invalid shard {text!r}: the index must be 0 to {count - 1} (shards are 0-based)")
    return Shard(index, count)
