"""Progress rendering for copies: rich on a TTY, plain lines otherwise, nothing with --quiet."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from regtool.copy import ProgressSink
from regtool.manifest import Descriptor

#: Seconds between "still copying" lines when nothing else was printed.
HEARTBEAT = 10.0


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


class LineProgress(ProgressSink):
    """One line per blob and manifest on stderr (for logs and pipes), plus a heartbeat for long blobs."""

    def __init__(self, stream: TextIO | None = None, heartbeat: float = HEARTBEAT) -> None:
        self._stream = stream
        self._heartbeat = heartbeat
        self._started: dict[str, float] = {}
        self._done: dict[str, int] = {}
        self._sizes: dict[str, int] = {}
        self._last_line = time.monotonic()

    def _write(self, line: str) -> None:
        out = self._stream or sys.stderr
        out.write(line + "\n")
        out.flush()
        self._last_line = time.monotonic()

    def blob_started(self, desc: Descriptor) -> None:
        self._started[desc.digest] = time.monotonic()
        self._done[desc.digest] = 0
        self._sizes[desc.digest] = max(desc.size, 0)
        self._write(f"Copying blob {_short(desc.digest)} ({_size(max(desc.size, 0))})")

    def blob_advanced(self, desc: Descriptor, n: int) -> None:
        self._done[desc.digest] = self._done.get(desc.digest, 0) + n
        if time.monotonic() - self._last_line >= self._heartbeat:
            done = sum(self._done.values())
            total = sum(self._sizes.values())
            self._write(f"  ... {_size(done)} of {_size(total)} copied")

    def blob_skipped(self, desc: Descriptor) -> None:
        self._write(f"Copying blob {_short(desc.digest)} skipped: already exists")

    def blob_finished(self, desc: Descriptor, how: str) -> None:
        took = time.monotonic() - self._started.pop(desc.digest, time.monotonic())
        self._write(f"Copied blob {_short(desc.digest)} ({how}, {took:.1f}s)")

    def manifest_written(self, desc: Descriptor, name: str | None) -> None:
        where = f" as {name}" if name else ""
        self._write(f"Wrote manifest {desc.digest}{where}")


class RichProgress(ProgressSink):
    """Live per-blob bars with total throughput (rich is imported only on a TTY)."""

    def __init__(self) -> None:
        from rich.console import Console
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
            console=Console(file=sys.stderr),
            transient=False,
        )
        self._tasks: dict[str, Any] = {}
        self._total: Any = None
        self._total_bytes = 0

    def __enter__(self) -> RichProgress:
        self._progress.start()
        self._total = self._progress.add_task("total", total=0)
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def blob_started(self, desc: Descriptor) -> None:
        self._tasks[desc.digest] = self._progress.add_task(f"blob {_short(desc.digest)}", total=max(desc.size, 0))
        self._total_bytes += max(desc.size, 0)
        if self._total is not None:
            self._progress.update(self._total, total=self._total_bytes)

    def blob_advanced(self, desc: Descriptor, n: int) -> None:
        task = self._tasks.get(desc.digest)
        if task is not None:
            self._progress.advance(task, n)
        if self._total is not None:
            self._progress.advance(self._total, n)

    def blob_skipped(self, desc: Descriptor) -> None:
        self._progress.console.print(f"blob {_short(desc.digest)} already exists")

    def blob_finished(self, desc: Descriptor, how: str) -> None:
        task = self._tasks.get(desc.digest)
        if task is not None:
            self._progress.update(task, description=f"blob {_short(desc.digest)} {how}", completed=desc.size)

    def manifest_written(self, desc: Descriptor, name: str | None) -> None:
        where = f" as {name}" if name else ""
        self._progress.console.print(f"wrote manifest {desc.digest}{where}")


def make_progress(quiet: bool) -> ProgressSink:
    if quiet:
        return ProgressSink()
    if sys.stderr.isatty():
        return RichProgress()
    return LineProgress()
