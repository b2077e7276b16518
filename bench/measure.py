"""Run one command and measure it: wall time, CPU time and the peak RSS of that process.

The command is started by ``launch.py``, which reaps it with ``os.wait4``: that rusage
belongs to the one process (``ru_maxrss`` in KiB on Linux), so the figures never include
the benchmark itself or its memory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
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
    floor_kib: int = 0  # the launcher's RSS: maxrss_kib is exact when above it
    log: str | None = None
    minflt: int = 0  # page faults without I/O (each is kernel time: buffers allocated and touched)
    majflt: int = 0
    nvcsw: int = 0  # voluntary context switches (waiting for I/O)
    nivcsw: int = 0  # involuntary ones (preempted: a sign of CPU contention)

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


LAUNCHER = Path(__file__).resolve().parent / "launch.py"


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    timeout: float = 900.0,
) -> Sample:
    """Run ``argv`` (stdin /dev/null, stdout+stderr to ``log_path`` or /dev/null) and measure it.

    The command runs under ``launch.py`` (see there why), in a new session; after
    ``timeout`` seconds that whole process group is killed and the sample says ``timed_out``.
    """
    fd, stats_name = tempfile.mkstemp(prefix="regtool-bench-", suffix=".rusage")
    os.close(fd)
    stats_file = Path(stats_name)
    out = open(log_path, "wb") if log_path is not None else open(os.devnull, "wb")  # noqa: SIM115
    timed_out = False
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(LAUNCHER), str(stats_file), *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
        outer_wall = time.perf_counter() - start
        fields = stats_file.read_text().split()
    finally:
        out.close()
        stats_file.unlink(missing_ok=True)
    if len(fields) != 10:  # the launcher was killed: only the outer wall time is known
        return Sample(outer_wall, 0.0, 0.0, 0, code, timed_out, 0, str(log_path) if log_path else None)
    wall, user, system = (float(f) for f in fields[:3])
    maxrss, floor, code, minflt, majflt, nvcsw, nivcsw = (int(f) for f in fields[3:])
    return Sample(
        wall_s=wall,
        user_s=user,
        sys_s=system,
        maxrss_kib=maxrss,
        exit_code=code,
        timed_out=timed_out,
        floor_kib=floor,
        log=str(log_path) if log_path is not None else None,
        minflt=minflt,
        majflt=majflt,
        nvcsw=nvcsw,
        nivcsw=nivcsw,
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
            "median_user_s": r(statistics.median(s.user_s for s in self.good()) if self.good() else None),
            "median_sys_s": r(statistics.median(s.sys_s for s in self.good()) if self.good() else None),
            "median_minflt": statistics.median(s.minflt for s in self.good()) if self.good() else None,
            "samples": [s.to_json() for s in self.samples],
        }
