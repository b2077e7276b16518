"""Long runs: does regtool's memory stay flat over a sync of hundreds of images?

    .venv/bin/python bench/longrun.py [--repos 3] [--tags 100] [--layer-kib 64] [--delay-ms 0]
                                      [--noop-runs 1] [--interval 0.1] [--json FILE] [--workdir DIR]
    .venv/bin/python bench/longrun.py --scaling 25,100,400 [...]

Starts two plain-HTTP distribution registries (source, destination) with the test bed, seeds
``--repos`` × ``--tags`` small single-platform images on the source (one shared base layer, one
layer of ``--layer-kib`` random bytes of their own; plain httpx, never regtool), then runs
``regtool sync --config`` twice or more: a fresh sync that copies everything, then
``--noop-runs`` no-op re-syncs (everything is already there: HEADs only). While each run goes,
a thread reads the regtool process's ``VmRSS`` from ``/proc/PID/status`` every ``--interval``
seconds.

regtool runs with ``--debug=true --log-format json``, whose log has one timestamped line per
finished image, so each run is split by images rather than by time. For each run it prints:
images, wall time, RSS at the start (the interpreter), when the first image was done (imports,
connections and caches in place), when half of the images were done, when the last one was,
the peak, the growth over each half, and the least-squares slope of RSS over images done in the
second half (KiB per image). A per-image leak shows up as a second half that grows about as much
as the first and as a slope well above zero; flat memory is a second half within a few MiB of
nothing. ``--delay-ms`` puts a latency proxy in front of the source to stretch the run in time
(more samples, same work). The mirror is checked against the source after the fresh run (every tag, manifest and blob).

``--scaling 25,100,400`` runs one such job per size (tags per repository, each job its own
repositories and destination namespace) and fits peak RSS against the number of images in the
job: flat memory within a run can still hide state held per image of the job (a plan), which
this slope shows as KiB per image.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from tests.support.netproxy import LatencyProxy  # noqa: E402
from tests.support.registries import Registry, RegistryBed  # noqa: E402
from tests.support.syncbed import (  # noqa: E402
    MirrorCheck,
    RssProfile,
    RssSampler,
    SeededSource,
    compare_mirror,
    image_marks,
    regtool_command,
    regtool_env,
    seed_many_tags,
    slope,
    write_sync_config,
)


@dataclass
class RunResult:
    name: str
    exit_code: int
    images: int
    counts: dict[str, int]
    wall_s: float
    rss: RssProfile

    samples: list[tuple[float, int]]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "exit_code": self.exit_code,
            "images": self.images,
            "counts": self.counts,
            "wall_s": round(self.wall_s, 2),
            "rss": self.rss.to_json(),
            "samples": [[round(t, 3), k] for t, k in self.samples],
        }


def run_sync(name: str, config: Path, workdir: Path, interval: float, timeout: float) -> RunResult:
    report = workdir / f"{name}.report.json"
    log = workdir / f"{name}.log"
    argv = regtool_command("--debug=true", "--log-format", "json", "sync", "--config", str(config),
                           "--report", str(report), "--metrics-file", str(workdir / f"{name}.prom"))
    started = time.monotonic()
    started_wall = time.time()
    with open(log, "wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=regtool_env())
        sampler = RssSampler(proc.pid, interval).start()
        try:
            code = proc.wait(timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            sampler.stop()
    wall = time.monotonic() - started
    doc = json.loads(report.read_text()) if report.exists() else {"counts": {}, "images": []}
    marks = image_marks(log.read_text(errors="replace"), started_wall)
    rss = RssProfile.of(sampler.samples, marks)
    return RunResult(name, code, len(doc["images"]), doc["counts"], wall, rss, sampler.samples)


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def print_table(results: list[RunResult]) -> None:
    head = ("run", "images", "wall s", "start", "1st image", "half", "last image", "peak", "1st half",
            "2nd half", "KiB/image")
    rows = [head]
    for r in results:
        p = r.rss
        rows.append((r.name, str(r.images), f"{r.wall_s:.1f}", mib(p.start_kib), mib(p.warm_kib), mib(p.mid_kib),
                     mib(p.end_kib), mib(p.peak_kib), f"{p.first_half_kib / 1024:+.1f}",
                     f"{p.second_half_kib / 1024:+.1f}", f"{p.kib_per_image:+.2f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    print("regtool's RSS in MiB: at start, when the first image / half of them / the last one was done, peak;")
    print("growth over each half in MiB; KiB/image: least-squares slope of RSS over images done, second half")
    for i, row in enumerate(rows):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def sync_job(work: Path, src: Registry, dst: Registry, source_host: str, seeded: SeededSource, name: str,
             noop_runs: int, interval: float, timeout: float) -> tuple[list[RunResult], MirrorCheck]:
    """A fresh sync of ``seeded`` into ``dst``'s ``<name>/`` namespace, then ``noop_runs`` no-op ones."""
    config = write_sync_config(
        work / f"{name}.yaml",
        job=name,
        insecure_hosts=[source_host, dst.host],
        mirrors=[(f"{source_host}/{r.name}", f"docker://{dst.host}/{name}") for r in seeded.repos],
    )
    print(f"$ regtool sync --config {config} --report ... --metrics-file ...   (source {source_host})", flush=True)
    results = [run_sync(f"{name}-fresh", config, work, interval, timeout)]
    check = compare_mirror(src, dst, [(r.name, f"{name}/{r.name}") for r in seeded.repos])
    for i in range(noop_runs):
        label = f"{name}-noop{i + 1}" if noop_runs > 1 else f"{name}-noop"
        results.append(run_sync(label, config, work, interval, timeout))
    return results, check


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repos", type=int, default=3)
    ap.add_argument("--tags", type=int, default=100, help="tags per repository")
    ap.add_argument("--layer-kib", type=int, default=64, help="size of each image's own layer (random bytes)")
    ap.add_argument("--delay-ms", type=float, default=0.0, help="latency proxy in front of the source (each way)")
    ap.add_argument("--noop-runs", type=int, default=1, help="no-op re-syncs after the fresh one")
    ap.add_argument("--scaling", metavar="N,N,...",
                    help="instead: one job per N tags per repository, and how peak RSS grows with the job's size")
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between RSS samples")
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--json", metavar="FILE", help="write the samples and figures as JSON")
    ap.add_argument("--workdir", metavar="DIR", help="keep registries' data and logs here")
    args = ap.parse_args(argv)
    sizes = [int(n) for n in args.scaling.split(",")] if args.scaling else [args.tags]

    with ExitStack() as stack:
        if args.workdir:
            work = Path(args.workdir)
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="regtool-longrun-")))
        bed = stack.enter_context(RegistryBed(work / "bed"))
        src = bed.start_registry("plain", "source")
        dst = bed.start_registry("plain", "destination")
        source_host = src.host
        if args.delay_ms:
            proxy = stack.enter_context(LatencyProxy(src.host, delay=args.delay_ms / 1000))
            source_host = proxy.netloc
        jobs: list[tuple[int, list[RunResult], MirrorCheck]] = []
        for tags in sizes:
            t0 = time.monotonic()
            prefix = f"t{tags}-many" if args.scaling else "many"
            seeded = seed_many_tags(src, prefix=prefix, repos=args.repos, tags=tags, layer_size=args.layer_kib * 1024)
            print(f"seeded {seeded.images} images in {len(seeded.repos)} repositories on {src.host} "
                  f"({seeded.blobs} blobs, {seeded.blob_bytes / 1024:.0f} KiB) in {time.monotonic() - t0:.1f}s",
                  flush=True)
            name = f"mirror{seeded.images}" if args.scaling else "mirror"
            results, check = sync_job(work, src, dst, source_host, seeded, name, args.noop_runs, args.interval,
                                      args.timeout)
            jobs.append((seeded.images, results, check))
            if not args.scaling:
                print_table(results)
            print(f"mirror check after the fresh run: {check.tags_identical}/{check.tags} tags identical, "
                  f"{check.digests_verified} digests verified, {check.bytes_missing} bytes missing, "
                  f"{check.bytes_lost} bytes lost", flush=True)
        if args.scaling:
            print_table([r for _, results, _ in jobs for r in results])
            print_scaling(jobs)
        ok = True
        for _, results, check in jobs:
            ok = ok and check.complete
            for r in results:
                if r.exit_code:
                    ok = False
                    print(f"{r.name}: regtool exited {r.exit_code} (log: {work / (r.name + '.log')})")
        if args.json:
            Path(args.json).write_text(json.dumps({
                "repos": args.repos, "sizes": sizes, "layer_kib": args.layer_kib, "delay_ms": args.delay_ms,
                "jobs": [{"images": n, "runs": [r.to_json() for r in results], "mirror": check.to_json()}
                         for n, results, check in jobs],
            }, indent=2) + "\n")
        return 0 if ok else 1


def print_scaling(jobs: list[tuple[int, list[RunResult], MirrorCheck]]) -> None:
    """Peak RSS against the number of images in the job: its slope is memory held per image of a job."""
    print("\npeak RSS against the job's size (least-squares slope: memory held per image in the job)")
    kinds = sorted({r.name.split("-", 1)[1] for _, results, _ in jobs for r in results})
    for kind in kinds:
        points = [(float(n), r.rss.peak_kib / 1.0) for n, results, _ in jobs for r in results
                  if r.name.split("-", 1)[1] == kind]
        figures = ", ".join(f"{int(n)}: {k / 1024:.1f} MiB" for n, k in points)
        print(f"  {kind:<6} {figures}; slope {slope(points):.1f} KiB/image")


if __name__ == "__main__":
    sys.exit(main())
