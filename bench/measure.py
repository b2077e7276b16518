"""Run one command and measure it: wall time, CPU time and the peak RSS of that process.

The child is reaped with ``os.wait4``, whose rusage belongs to that one process only
(``ru_maxrss`` is in KiB on Linux), so the figures never include the benchmark itself.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Sample:
    """One measured run of one command."""

    wall_s: float
    user_s: float
    sys_s: float
    maxrss_kib: int
    exit_code: int
    timed_out: bool = False
    log: str | None = None

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["cpu_s"] = round(self.cpu_s, 4)
        return data


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    timeout: float = 900.0,
) -> Sample:
    """Run ``argv`` (stdin /dev/null, stdout+stderr to ``log_path`` or /dev/null) and measure it.

    After ``timeout`` seconds the process is killed (SIGKILL) and the sample says ``timed_out``.
    """
    out = open(log_path, "wb") if log_path is not None else open(os.devnull, "wb")  # noqa: SIM115
    timed_out = threading.Event()
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
        )

        def kill() -> None:
            timed_out.set()
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.daemon = True
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        proc.returncode = code  # already reaped: keep Popen from waiting again
    finally:
        out.close()
    return Sample(
        wall_s=wall,
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        maxrss_kib=usage.ru_maxrss,
        exit_code=code,
        timed_out=timed_out.is_set(),
        log=str(log_path) if log_path is not None else None,
    )


@dataclass
class Series:
    """The samples of one tool in one scenario on one network path."""

    samples: list[Sample] = field(default_factory=list)

    def good(self) -> list[Sample]:
        return [s for s in self.samples if s.ok]

    def median_wall(self) -> float | None:
        good = self.good()
        return statistics.median(s.wall_s for s in good) if good else None

    def median_cpu(self) -> float | None:
        good = self.good()
        return statistics.median(s.cpu_s for s in good) if good else None

    def max_rss_mib(self) -> float | None:
        good = self.good()
        return max(s.maxrss_kib for s in good) / 1024 if good else None

    def median_rss_mib(self) -> float | None:
        good = self.good()
        return statistics.median(s.maxrss_kib for s in good) / 1024 if good else None

    def summary(self) -> dict[str, Any]:
        def r(value: float | None, digits: int = 4) -> float | None:
            return None if value is None else round(value, digits)

        return {
            "runs": len(self.samples),
            "ok_runs": len(self.good()),
            "median_wall_s": r(self.median_wall()),
            "min_wall_s": r(min((s.wall_s for s in self.good()), default=None)),
            "max_wall_s": r(max((s.wall_s for s in self.good()), default=None)),
            "median_cpu_s": r(self.median_cpu()),
            "peak_rss_mib": r(self.max_rss_mib(), 1),
            "median_rss_mib": r(self.median_rss_mib(), 1),
            "samples": [s.to_json() for s in self.samples],
        }
