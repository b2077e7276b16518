"""Crash safety: kill ``regtool sync`` in the middle of a run, then run it again.

The source holds 3 repositories × 3 tags of 2 × 2 MiB random layers (tag ``v1`` a 2-platform
index, 16 MiB per repository) behind a :class:`~tests.support.netproxy.LatencyProxy` capped at
12 MiB/s, so a sync takes about four seconds and a signal lands in the middle of it: between
blobs, between an index's children and the index, during an upload.

* ``SIGKILL``, twice, at different points: while the sync runs, a watcher keeps checking the
  destination, and after each kill it is checked again. No tag ever points at a manifest whose
  blobs or children are missing (children before index, blobs before manifest, tag last). The
  lock file a killed run held does not stop the next run. A final run completes the mirror,
  identical to the source.
* ``SIGINT`` (Ctrl-C) exits 130 and ``SIGTERM`` (Kubernetes) exits 143, promptly, without a
  traceback: the report says ``interrupted: true``, the metrics file is written, every upload
  session regtool had open is cancelled at the registry, the lock is released (a second run
  with the same ``--lock-file`` starts at once and completes the mirror).
* The narrow case of that: the signal arrives while ``POST /blobs/uploads/`` is in flight (the
  registry has opened the session, its answer has not arrived). A fault proxy holds the answers
  to make it certain; the session must still be cancelled.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.netproxy import FaultProxy, FaultRule, LatencyProxy
from tests.support.registries import Registry, RegistryBed
from tests.support.syncbed import (
    SeededSource,
    compare_mirror,
    dangling_tags,
    open_upload_sessions,
    regtool_command,
    regtool_env,
    seed_big_layers,
    sessions_left_open_by_regtool,
    write_sync_config,
)

pytestmark = pytest.mark.slow

BANDWIDTH = 12 * 1024 * 1024  # bytes/s from the source: ~4 s for the whole mirror


@pytest.fixture(scope="module")
def big_source(registry_bed: RegistryBed) -> Iterator[tuple[Registry, SeededSource]]:
    reg = registry_bed.start_registry("plain", "crash-source")
    try:
        yield reg, seed_big_layers(reg)
    finally:
        reg.stop()


@pytest.fixture
def slow_source(big_source: tuple[Registry, SeededSource]) -> Iterator[LatencyProxy]:
    src, _ = big_source
    with LatencyProxy(src.host, delay=0.002, bandwidth=BANDWIDTH) as proxy:
        yield proxy


@dataclass
class Job:
    """One mirror job's files: config, report, metrics, lock."""

    config: Path
    report: Path
    metrics: Path
    lock: Path
    repos: list[str]
    dest_repos: list[str] = field(default_factory=list)

    def argv(self) -> list[str]:
        return regtool_command("sync", "--config", str(self.config), "--report", str(self.report),
                               "--metrics-file", str(self.metrics), "--lock-file", str(self.lock))

    def start(self) -> subprocess.Popen[bytes]:
        for stale in (self.report, self.metrics):
            stale.unlink(missing_ok=True)
        return subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=regtool_env())

    def run(self, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(self.argv(), capture_output=True, timeout=timeout, env=regtool_env(),
                              stdin=subprocess.DEVNULL, check=False)


@pytest.fixture
def job(
    tmp_path: Path,
    big_source: tuple[Registry, SeededSource],
    slow_source: LatencyProxy,
    make_registry: Callable[[str], Registry],
) -> tuple[Job, Registry]:
    _, seeded = big_source
    dst = make_registry("plain")
    repos = [r.name for r in seeded.repos]
    config = write_sync_config(
        tmp_path / "crash.yaml",
        job="crash",
        insecure_hosts=[slow_source.netloc, dst.host],
        mirrors=[(f"{slow_source.netloc}/{r}", f"docker://{dst.host}/mirror") for r in repos],
    )
    files = Job(config, tmp_path / "report.json", tmp_path / "metrics.prom", tmp_path / "sync.lock", repos,
                [f"mirror/{r}" for r in repos])
    return files, dst


class Watcher(threading.Thread):
    """Checks the destination over and over while a sync runs; keeps every problem it sees."""

    def __init__(self, dst: Registry, repos: list[str]) -> None:
        super().__init__(name="dangling-watcher", daemon=True)
        self.dst, self.repos = dst, repos
        self.problems: list[str] = []
        self.rounds = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.problems += dangling_tags(self.dst, self.repos, in_flight=True)
            self.rounds += 1

    def stop(self) -> None:
        self._stop_event.set()
        self.join(30)


def wait_for_bytes(proc: subprocess.Popen[bytes], proxy: LatencyProxy, after: int, timeout: float = 60) -> None:
    """Waits until ``after`` more bytes came from the source (the sync is under way)."""
    start = proxy.stats()["bytes_down"]
    deadline = time.monotonic() + timeout
    while proxy.stats()["bytes_down"] - start < after:
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"regtool ended early ({proc.returncode}): {err.decode()[-2000:]}")
        assert time.monotonic() < deadline, "the sync moved no data"
        time.sleep(0.02)


def test_sigkill_mid_sync_leaves_no_dangling_tag_and_rerun_completes(
    job: tuple[Job, Registry], big_source: tuple[Registry, SeededSource], slow_source: LatencyProxy
) -> None:
    files, dst = job
    src, seeded = big_source
    total = seeded.blob_bytes
    watcher = Watcher(dst, files.dest_repos)
    watcher.start()
    try:
        # kill twice, at about a quarter and (of the second run's remaining work) about half
        for fraction in (0.25, 0.5):
            proc = files.start()
            wait_for_bytes(proc, slow_source, int(total * fraction * 0.6))
            proc.kill()
            proc.wait(10)
            assert proc.returncode == -signal.SIGKILL
            assert dangling_tags(dst, files.dest_repos) == []
    finally:
        watcher.stop()
    assert watcher.rounds >= 3 and watcher.problems == []

    partial = compare_mirror(src, dst, [(r, f"mirror/{r}") for r in files.repos])
    assert partial.bytes_lost == 0
    assert not partial.complete, "both kills came too late to land mid-run"

    rerun = files.run()  # the killed runs' lock is gone with them
    assert rerun.returncode == 0, rerun.stderr.decode()[-3000:]
    report = json.loads(files.report.read_text())
    assert report["success"] is True and report["interrupted"] is False
    assert sum(report["counts"].values()) == seeded.images
    check = compare_mirror(src, dst, [(r, f"mirror/{r}") for r in files.repos])
    assert check.problems == [] and check.complete
    assert check.tags == seeded.images
    assert dangling_tags(dst, files.dest_repos) == []


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_cleanly(
    job: tuple[Job, Registry],
    big_source: tuple[Registry, SeededSource],
    slow_source: LatencyProxy,
    signum: signal.Signals,
    code: int,
) -> None:
    files, dst = job
    src, seeded = big_source
    proc = files.start()
    try:
        wait_for_bytes(proc, slow_source, seeded.blob_bytes // 3)
        # the lock is held while the run goes
        second = files.run(timeout=30)
        assert second.returncode == 75, second.stderr.decode()
        sent = time.monotonic()
        proc.send_signal(signum)
        _, stderr_bytes = proc.communicate(timeout=30)
        stopped_in = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = stderr_bytes.decode(errors="replace")
    assert proc.returncode == code, stderr[-3000:]
    assert stopped_in < 10
    assert "Traceback" not in stderr, stderr[-3000:]

    report = json.loads(files.report.read_text())
    assert report["interrupted"] is True and report["success"] is False
    assert report["finished"] is not None
    assert sum(report["counts"].values()) < seeded.images  # it did stop mid-run
    assert all(i["action"] == "copied" for i in report["images"]), report["images"]
    metrics = files.metrics.read_text()
    assert 'regtool_sync_success{job="crash",shard="0/1"} 0' in metrics
    assert "regtool_sync_last_run_timestamp_seconds" in metrics

    # every session regtool had open was cancelled (a DELETE sent; see sessions_left_open_by_regtool)
    assert sessions_left_open_by_regtool(dst) == []
    assert dangling_tags(dst, files.dest_repos) == []

    rerun = files.run()  # the lock was released: this run starts at once
    assert rerun.returncode == 0, rerun.stderr.decode()[-3000:]
    check = compare_mirror(src, dst, [(r, f"mirror/{r}") for r in files.repos])
    assert check.problems == [] and check.complete
    assert sessions_left_open_by_regtool(dst) == []


def test_signal_while_an_upload_starts_still_cancels_the_session(
    big_source: tuple[Registry, SeededSource], make_registry: Callable[[str], Registry], tmp_path: Path
) -> None:
    src, _ = big_source
    dst = make_registry("plain")
    held = FaultRule(method="POST", path_regex=r"/blobs/uploads/$", kind="stall", seconds=3, times=None)
    with FaultProxy(dst.host, rules=[held]) as proxy:
        config = write_sync_config(tmp_path / "post.yaml", job="post", insecure_hosts=[src.host, proxy.netloc],
                                   mirrors=[(f"{src.host}/big0", f"docker://{proxy.netloc}/mirror")])
        proc = subprocess.Popen(regtool_command("sync", "--config", str(config), "--report", str(tmp_path / "r.json")),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=regtool_env())
        try:
            deadline = time.monotonic() + 30
            while proxy.count("POST", r"/blobs/uploads/$") == 0:
                assert proc.poll() is None and time.monotonic() < deadline, "no upload was started"
                time.sleep(0.02)
            time.sleep(0.5)  # the registry has opened the session(s); the proxy holds the answers
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 143, stderr.decode()[-2000:]
        posts = proxy.count("POST", r"/blobs/uploads/$")
    assert json.loads((tmp_path / "r.json").read_text())["interrupted"] is True
    assert open_upload_sessions(dst) == [], f"{posts} upload(s) were starting when SIGTERM came"
