"""Long runs: regtool's memory stays flat over a sync of many images (no per-image leak).

A modest version of ``bench/longrun.py``: 3 repositories × 40 tags (120 images, each with a
64 KiB layer of its own on top of a shared base) are synced into an empty registry, then synced
again (a no-op). While each run goes, the regtool process's ``VmRSS`` is read from
``/proc/PID/status`` every 100 ms; the ``--debug`` JSON log says when each image was done, so
the run is split by images, not by time. Memory must stay under 150 MiB and must not grow with
the images: over the second half of the images it grows by less than 3 MiB and its slope is
under 8 KiB per image. Measured without a leak: +0.1 MiB and 0.3-1.5 KiB/image. Checked against a
leak injected on purpose (a ``sitecustomize`` keeping N KiB per image in regtool's process): 16
KiB/image measures as 17 KiB/image and +1.1 MiB, 64 KiB/image as 67 KiB/image and +3.7 MiB.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.registries import Registry, RegistryBed
from tests.support.syncbed import (
    RssProfile,
    RssSampler,
    SeededSource,
    compare_mirror,
    image_marks,
    regtool_command,
    regtool_env,
    seed_many_tags,
    write_sync_config,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status"),
]

MiB = 1024


@pytest.fixture(scope="module")
def many_source(registry_bed: RegistryBed) -> Iterator[tuple[Registry, SeededSource]]:
    reg = registry_bed.start_registry("plain", "longrun-source")
    try:
        yield reg, seed_many_tags(reg, repos=3, tags=40, layer_size=64 * 1024)
    finally:
        reg.stop()


def sampled_sync(config: Path, workdir: Path, name: str) -> tuple[int, dict[str, int], RssProfile]:
    log = workdir / f"{name}.log"
    report = workdir / f"{name}.json"
    argv = regtool_command("--debug=true", "--log-format", "json", "sync", "--config", str(config),
                           "--report", str(report))
    started = time.time()
    with open(log, "wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=regtool_env())
        sampler = RssSampler(proc.pid, 0.02).start()  # a no-op run is short: sample often
        try:
            code = proc.wait(300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            sampler.stop()
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    counts = json.loads(report.read_text())["counts"]
    return code, counts, RssProfile.of(sampler.samples, image_marks(text, started))


def test_memory_stays_flat_over_many_images(
    many_source: tuple[Registry, SeededSource], make_registry: Callable[[str], Registry], tmp_path: Path
) -> None:
    src, seeded = many_source
    dst = make_registry("plain")
    repos = [r.name for r in seeded.repos]
    config = write_sync_config(
        tmp_path / "longrun.yaml",
        job="longrun",
        insecure_hosts=[src.host, dst.host],
        mirrors=[(f"{src.host}/{r}", f"docker://{dst.host}/mirror") for r in repos],
    )

    code, counts, fresh = sampled_sync(config, tmp_path, "fresh")
    assert code == 0 and counts == {"copied": seeded.images}, counts
    code, counts, noop = sampled_sync(config, tmp_path, "noop")
    assert code == 0 and counts == {"skipped": seeded.images}, counts

    for name, rss in (("fresh", fresh), ("no-op", noop)):
        assert rss.images == seeded.images, f"{name}: the log shows {rss.images} images done"
        assert rss.samples >= 10, f"{name}: too few RSS samples ({rss.samples})"
        assert rss.peak_kib < 150 * MiB, f"{name}: {rss}"
        assert rss.second_half_kib < 3 * MiB, f"{name}: RSS grew over the second half of the images: {rss}"
        assert rss.kib_per_image < 8, f"{name}: RSS grows with the images: {rss}"

    check = compare_mirror(src, dst, [(r, f"mirror/{r}") for r in repos])
    assert check.complete and check.tags == seeded.images, check.problems[:10]
