"""The sync report: one record per image, written as JSON for cron jobs and dashboards.

Its JSON Schema ships as ``regtool/schemas/sync-report.schema.json``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from regtool.atomic import write_atomic

Action = Literal["copied", "skipped", "failed", "rate-limited", "pruned", "would-copy", "would-prune", "rejected"]
REPORT_VERSION = 1


@dataclass
class ImageResult:
    mirror: str
    source: str
    target: str
    action: Action
    source_digest: str | None = None
    target_digest: str | None = None
    bytes: int = 0
    seconds: float = 0.0
    error: str | None = None
    attachments: list[str] = field(default_factory=list)


@dataclass
class SyncReport:
    job: str
    shard: str = "0/1"
    dry_run: bool = False
    started: float = field(default_factory=time.time)
    finished: float | None = None
    interrupted: bool = False
    images: list[ImageResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # failures not tied to one image (a tag listing, a catalog)

    def counts(self) -> dict[str, int]:
        return dict(Counter(r.action for r in self.images))

    @property
    def failed(self) -> bool:
        return bool(self.errors) or any(r.action in ("failed", "rate-limited", "rejected") for r in self.images)

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.images)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION,
            "job": self.job,
            "shard": self.shard,
            "dry_run": self.dry_run,
            "started": self.started,
            "finished": self.finished,
            "interrupted": self.interrupted,
            "success": not self.failed and not self.interrupted,
            "counts": self.counts(),
            "bytes": self.bytes,
            "errors": self.errors,
            "images": [asdict(r) for r in self.images],
        }

    def summary(self) -> str:
        counts = self.counts()
        parts = [f"{n} {action}" for action, n in sorted(counts.items())] or ["nothing to do"]
        took = (self.finished or time.time()) - self.started
        line = f"regtool sync: job {self.job}, shard {self.shard}: " + ", ".join(parts)
        line += f"; {self.bytes} bytes in {took:.1f}s"
        if self.errors:
            line += f"; {len(self.errors)} errors"
        if self.interrupted:
            line += " (interrupted)"
        return line


def write_report(path: str, report: SyncReport) -> None:
    write_atomic(path, (json.dumps(report.to_json(), indent=2) + "\n").encode())
