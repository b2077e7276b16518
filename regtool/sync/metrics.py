"""Prometheus text-format metrics for node_exporter's textfile collector.

The file is replaced atomically so the collector never reads half of it. The
last-success timestamp survives failed runs: it is carried over from the
previous file, which is what alerting on "no success for N hours" needs.
"""

from __future__ import annotations

import re
import time

from regtool.atomic import write_atomic
from regtool.sync.report import SyncReport

ACTIONS = ("copied", "skipped", "failed", "rate-limited", "pruned", "would-copy", "would-prune", "rejected")


def _labels(**labels: str) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"


def _previous_success(path: str, job: str, shard: str) -> float | None:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError:
        return None
    want = _labels(job=job, shard=shard)
    m = re.search(r"^regtool_sync_last_success_timestamp_seconds" + re.escape(want) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def render(report: SyncReport, previous_success: float | None = None) -> str:
    job, shard = report.job, report.shard
    base = _labels(job=job, shard=shard)
    finished = report.finished or time.time()
    ok = not report.failed and not report.interrupted
    last_success = finished if ok else previous_success
    counts = report.counts()
    lines = [
        "# HELP regtool_sync_last_run_timestamp_seconds When the last sync run ended (Unix time).",
        "# TYPE regtool_sync_last_run_timestamp_seconds gauge",
        f"regtool_sync_last_run_timestamp_seconds{base} {finished:.3f}",
        "# HELP regtool_sync_last_success_timestamp_seconds When a sync run last ended with every image in step.",
        "# TYPE regtool_sync_last_success_timestamp_seconds gauge",
    ]
    if last_success is not None:
        lines.append(f"regtool_sync_last_success_timestamp_seconds{base} {last_success:.3f}")
    lines += [
        "# HELP regtool_sync_success Whether the last run ended with every image in step (1) or not (0).",
        "# TYPE regtool_sync_success gauge",
        f"regtool_sync_success{base} {1 if ok else 0}",
        "# HELP regtool_sync_images Images handled by the last run, by action.",
        "# TYPE regtool_sync_images gauge",
    ]
    for action in ACTIONS:
        lines.append(f"regtool_sync_images{_labels(job=job, shard=shard, action=action)} {counts.get(action, 0)}")
    lines += [
        "# HELP regtool_sync_bytes Bytes of blobs copied by the last run.",
        "# TYPE regtool_sync_bytes gauge",
        f"regtool_sync_bytes{base} {report.bytes}",
        "# HELP regtool_sync_duration_seconds Wall time of the last run.",
        "# TYPE regtool_sync_duration_seconds gauge",
        f"regtool_sync_duration_seconds{base} {finished - report.started:.3f}",
        "# HELP regtool_sync_errors Failures of the last run not tied to one image (listings, catalogs).",
        "# TYPE regtool_sync_errors gauge",
        f"regtool_sync_errors{base} {len(report.errors)}",
    ]
    return "\n".join(lines) + "\n"


def write_metrics(path: str, report: SyncReport) -> None:
    previous = _previous_success(path, report.job, report.shard)
    write_atomic(path, render(report, previous).encode())
