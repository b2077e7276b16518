"""Progress rendering for copies: rich on a TTY, plain lines otherwise, nothing with --quiet."""

from __future__ import annotations

import sys
import time
from typing import Any

from regtool.copy import ProgressSink
from regtool.manifest import Descriptor


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


class LineProgress(ProgressSink):
    """One line per blob start and end on stderr, plus a heartbeat for long blobs."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}
        self._bytes: dict[str, int] = {}
        self._last_note = time.monotonic()

    def blob_started(self, desc: Descriptor) -> None:
        self._started[desc.digest] = time.monotonic()
        self._bytes[desc.digest] = 0
        sys.stderr.write(f"Copying blob {_short(desc.digest)} ({desc.size} bytes)\n")

    def blob_advanced(self, desc: Descriptor, n: int) -> None:
        self._bytes[desc.digest] = self._bytes.get(desc.digest, 0) + n
        now = time.monotonic()
        if now - self._last_note > 10:
            self._last_note = now
            done = sum(self._bytes.values())
            sys.stderr.write(f"  ... {done / 1e6:.1f} MB transferred\n")

    def blob_finished(self, desc: Descriptor, how: str) -> None:
        took = time.monotonic() - self._started.pop(desc.digest, time.monotonic())
        sys.stderr.write(f"Blob {_short(desc.digest)} {how} in {took:.1f}s\n")


class RichProgress(ProgressSink):
    """Live per-blob bars with total throughput (rich is imported only on a TTY)."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            transient=False,
        )
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def blob_started(self, desc: Descriptor) -> None:
        self._tasks[desc.digest] = self._progress.add_task(f"blob {_short(desc.digest)}", total=desc.size)

    def blob_advanced(self, desc: Descriptor, n: int) -> None:
        task = self._tasks.get(desc.digest)
        if task is not None:
            self._progress.advance(task, n)

    def blob_finished(self, desc: Descriptor, how: str) -> None:
        task = self._tasks.get(desc.digest)
        if task is not None:
            self._progress.update(task, description=f"blob {_short(desc.digest)} {how}", completed=desc.size)


def make_progress(quiet: bool) -> ProgressSink:
    if quiet:
        return ProgressSink()
    if sys.stderr.isatty():
        return RichProgress()
    return LineProgress()
