"""Fault-injected sync, as figures: requests, faults, retries, images completed, digests verified, bytes lost.

    .venv/bin/python bench/faults.py [--seed 7] [--runs 1] [--rate 0.05] [--repos 4] [--tags 5]
                                     [--scenario random|budget|both] [--json FILE] [--workdir DIR]

Starts two plain-HTTP distribution registries with the test bed and seeds the source with
``--repos`` repositories × ``--tags`` tags (every third tag a 2-platform OCI index; one base layer
shared by all images, one per repository; plain httpx, never regtool). A
:class:`tests.support.netproxy.FaultProxy` goes in front of the source and another in front of
the destination; regtool only ever sees the proxies.

``random``: each proxy injects a fault into ``--rate`` of the requests, drawn from a random
generator seeded with ``--seed`` (source) and ``--seed + 1`` (destination): a TCP reset before
any answer, a reset after the registry did the work (answer lost), a reset in the middle of the
body, 502/503/504, 429 with and without ``Retry-After: 1``, a 1 s stall, a truncated blob body, a
blob body throttled to 256 KiB/s; behind the destination's proxy a latency proxy caps the link
at 1 MiB/s each way (slow uploads). ``regtool sync --config`` mirrors every repository, then runs a
second time through the same faults (a no-op). Then every source tag, manifest and blob is
fetched at the destination with plain httpx and compared.

``budget``: a rule makes every blob GET of ``app2`` answer 503 and ``app1:1.3`` answer 429 with
``Retry-After: 3600`` (over ``--max-retry-wait 30``), on top of random faults at 2 %. Those images
must be reported ``failed`` / ``rate-limited``, nothing of them published, the rest complete.

The seed fixes the sequence of fault decisions each proxy makes; which request meets which
decision depends on the order in which regtool's concurrent requests arrive, so the counts vary
a little from run to run with the same seed (``--runs N`` shows the spread over N seeds). What
must never vary: every image completes (``random``), ``bytes lost`` is 0, and retries stay within
the faults injected. Exit status 1 when any of that fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from tests.support.netproxy import FaultProxy, FaultRule, LatencyProxy, RequestRecord  # noqa: E402
from tests.support.registries import Registry, RegistryBed  # noqa: E402
from tests.support.syncbed import (  # noqa: E402
    MirrorCheck,
    SeededSource,
    compare_mirror,
    count_retries,
    dangling_tags,
    list_tags,
    log_messages,
    random_fault_kinds,
    regtool_command,
    regtool_env,
    seed_mirror_source,
    write_sync_config,
)

SLOW_LINK = 1024 * 1024  # bytes/s each way behind the destination's fault proxy (random scenario)


def fault_label(rec: RequestRecord) -> str:
    """A finer name for an injected fault than the proxy's kind."""
    if rec.fault == "reset":
        if not rec.forwarded:
            return "reset before answer"
        return "reset mid-body" if rec.status is not None else "reset, answer lost"
    if rec.fault == "status":
        return str(rec.status)
    if rec.fault == "429":
        return "429"
    return str(rec.fault)


FAULT_ORDER = ("reset before answer", "reset, answer lost", "reset mid-body", "502", "503", "504", "429",
               "stall", "truncate", "slow")


@dataclass
class Side:
    requests: int
    faults: Counter[str]

    @classmethod
    def of(cls, proxy: FaultProxy) -> Side:
        stats = proxy.stats()
        faults = Counter(fault_label(r) for r in proxy.requests() if r.fault)
        return cls(stats["requests"] + stats["bad_requests"], faults)

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "faults": dict(self.faults), "faults_total": sum(self.faults.values())}


@dataclass
class Run:
    name: str
    exit_code: int
    seconds: float
    counts: dict[str, int]
    retries: int
    source: Side
    destination: Side
    images: int

    @property
    def faults(self) -> int:
        return sum(self.source.faults.values()) + sum(self.destination.faults.values())

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "exit_code": self.exit_code, "seconds": round(self.seconds, 2),
                "counts": self.counts, "retries": self.retries, "faults_total": self.faults,
                "source": self.source.to_json(), "destination": self.destination.to_json(), "images": self.images}


@dataclass
class Scenario:
    name: str
    seed: int
    runs: list[Run] = field(default_factory=list)
    check: MirrorCheck | None = None
    ok: bool = True
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.name, "seed": self.seed, "ok": self.ok, "notes": self.notes,
                "runs": [r.to_json() for r in self.runs], "mirror": self.check.to_json() if self.check else None}


def sync_once(name: str, config: Path, workdir: Path, sp: FaultProxy, dp: FaultProxy, images: int,
              extra: list[str] | None = None) -> Run:
    sp.reset_stats()
    dp.reset_stats()
    report = workdir / f"{name}.report.json"
    log = workdir / f"{name}.log"
    argv = regtool_command("--debug=true", "--log-format", "json", "sync", *(extra or []), "--config", str(config),
                           "--report", str(report))
    started = time.monotonic()
    with open(log, "wb") as err:
        code = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=regtool_env(),
                              timeout=900, check=False).returncode
    seconds = time.monotonic() - started
    text = log.read_text(errors="replace")
    doc = json.loads(report.read_text()) if report.exists() else {"counts": {}}
    if "Traceback" in text:
        print(f"  !! regtool printed a traceback, see {log}")
    return Run(name, code, seconds, doc["counts"], count_retries(log_messages(text)), Side.of(sp), Side.of(dp),
               images)


def run_random(bed: RegistryBed, src: Registry, seeded: SeededSource, seed: int, rate: float,
               workdir: Path) -> Scenario:
    scenario = Scenario("random", seed)
    dst = bed.start_registry("plain", f"dest-random-{seed}")
    repos = [r.name for r in seeded.repos]
    try:
        with (
            FaultProxy(src.host, rate=rate, seed=seed, kinds=random_fault_kinds()) as sp,
            LatencyProxy(dst.host, delay=0.001, bandwidth=SLOW_LINK) as slow,  # slow uploads
            FaultProxy(slow.netloc, rate=rate, seed=seed + 1, kinds=random_fault_kinds()) as dp,
        ):
            config = write_sync_config(
                workdir / f"random-{seed}.yaml", job="faults", insecure_hosts=[sp.netloc, dp.netloc],
                mirrors=[(f"{sp.netloc}/{r}", f"docker://{dp.netloc}/mirror") for r in repos],
            )
            scenario.runs.append(sync_once(f"random-{seed}-fresh", config, workdir, sp, dp, seeded.images))
            scenario.runs.append(sync_once(f"random-{seed}-noop", config, workdir, sp, dp, seeded.images))
        check = compare_mirror(src, dst, [(r, f"mirror/{r}") for r in repos])
        scenario.check = check
        fresh, noop = scenario.runs
        if fresh.exit_code or fresh.counts != {"copied": seeded.images}:
            scenario.notes.append(f"fresh run: exit {fresh.exit_code}, {fresh.counts}")
        if noop.exit_code or noop.counts != {"skipped": seeded.images}:
            scenario.notes.append(f"no-op run: exit {noop.exit_code}, {noop.counts}")
        if not check.complete:
            scenario.notes += check.problems[:10]
        if any(r.retries > r.faults for r in scenario.runs):
            scenario.notes.append("more retries than faults injected")
        problems = dangling_tags(dst, [f"mirror/{r}" for r in repos])
        scenario.notes += problems[:10]
        scenario.ok = not scenario.notes
    finally:
        dst.stop()
    return scenario


def run_budget(bed: RegistryBed, src: Registry, seeded: SeededSource, seed: int, workdir: Path) -> Scenario:
    scenario = Scenario("budget", seed)
    dst = bed.start_registry("plain", f"dest-budget-{seed}")
    repos = [r.name for r in seeded.repos]
    broken = FaultRule(method="GET", path_regex=r"^/v2/app2/blobs/", kind="status", status=503, times=None)
    throttled = FaultRule(path_regex=r"^/v2/app1/manifests/1\.3$", kind="429", retry_after=3600, times=None)
    try:
        with (
            FaultProxy(src.host, rules=[broken, throttled], rate=0.02, seed=seed, kinds=random_fault_kinds()) as sp,
            FaultProxy(dst.host, rate=0.02, seed=seed + 1, kinds=random_fault_kinds()) as dp,
        ):
            config = write_sync_config(
                workdir / f"budget-{seed}.yaml", job="faults", insecure_hosts=[sp.netloc, dp.netloc],
                mirrors=[(f"{sp.netloc}/{r}", f"docker://{dp.netloc}/mirror") for r in repos],
            )
            run = sync_once(f"budget-{seed}", config, workdir, sp, dp, seeded.images, ["--max-retry-wait", "30"])
            scenario.runs.append(run)
            broken_gets = sp.count("GET", r"^/v2/app2/blobs/")
        scenario.check = compare_mirror(src, dst, [(r, f"mirror/{r}") for r in repos if r != "app2"])
        with dst.client() as d:
            published = len(list_tags(d, "mirror/app2"))
        app2 = len(seeded.repo("app2").tags)
        want = {"failed": app2, "rate-limited": 1, "copied": seeded.images - app2 - 1}
        scenario.notes.append(f"{broken_gets} GETs of app2's blobs (all 503), {published} app2 tags published")
        if run.exit_code != 1 or run.counts != want:
            scenario.ok = False
            scenario.notes.append(f"expected exit 1 and {want}, got exit {run.exit_code} and {run.counts}")
        if published or scenario.check.bytes_lost or dangling_tags(dst, [f"mirror/{r}" for r in repos]):
            scenario.ok = False
            scenario.notes.append("something of a failed image was published, or lost")
    finally:
        dst.stop()
    return scenario


def print_scenario(s: Scenario) -> None:
    title = {"random": "random faults on both sides", "budget": "one repository beyond the retry budget"}[s.name]
    print(f"\n== {title}, seed {s.seed} ==")
    for run in s.runs:
        done = run.counts.get("copied", 0) + run.counts.get("skipped", 0)
        print(f"{run.name}: exit {run.exit_code}, {run.seconds:.1f} s, images completed {done}/{run.images} "
              f"{dict(sorted(run.counts.items()))}")
        rows = [("", "source", "destination", "total"),
                ("requests made", str(run.source.requests), str(run.destination.requests),
                 str(run.source.requests + run.destination.requests)),
                ("faults injected", str(sum(run.source.faults.values())), str(sum(run.destination.faults.values())),
                 str(run.faults))]
        for label in FAULT_ORDER:
            a, b = run.source.faults.get(label, 0), run.destination.faults.get(label, 0)
            if a or b:
                rows.append((f"  {label}", str(a), str(b), str(a + b)))
        rows.append(("retries (regtool's log)", "", "", str(run.retries)))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for row in rows:
            print("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                                      strict=True))))
    if s.check is not None:
        c = s.check
        print(f"mirror vs source: tags identical {c.tags_identical}/{c.tags}, digests verified {c.digests_verified} "
              f"({c.bytes_verified} bytes), bytes missing {c.bytes_missing}, bytes lost {c.bytes_lost}")
    for note in s.notes:
        print(f"  note: {note}")
    print("OK" if s.ok else "NOT OK")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--runs", type=int, default=1, help="random scenario with seeds SEED, SEED+2, ...")
    ap.add_argument("--rate", type=float, default=0.05, help="share of requests faulted on each side")
    ap.add_argument("--repos", type=int, default=4)
    ap.add_argument("--tags", type=int, default=5)
    ap.add_argument("--scenario", choices=("random", "budget", "both"), default="both")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--workdir", metavar="DIR", help="keep logs, reports and registry data here")
    args = ap.parse_args(argv)
    if args.scenario in ("budget", "both") and args.repos < 3:
        ap.error("the budget scenario needs --repos 3 or more (it breaks app2 and app1:1.3)")

    with ExitStack() as stack:
        if args.workdir:
            work = Path(args.workdir)
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="regtool-faults-")))
        bed = stack.enter_context(RegistryBed(work / "bed"))
        src = bed.start_registry("plain", "source")
        seeded = seed_mirror_source(src, repos=args.repos, tags=args.tags)
        indexes = sum(1 for r in seeded.repos for img in r.tags.values() if img.children)
        print(f"source {src.host}: {args.repos} repositories × {args.tags} tags = {seeded.images} images "
              f"({indexes} multi-platform), {seeded.blobs} distinct blobs, {seeded.blob_bytes} bytes")
        print(f"faults at {args.rate:.0%} of requests on each side (random); regtool {' '.join(regtool_command())}")
        scenarios: list[Scenario] = []
        if args.scenario in ("random", "both"):
            for i in range(args.runs):
                s = run_random(bed, src, seeded, args.seed + 2 * i, args.rate, work)
                print_scenario(s)
                scenarios.append(s)
        if args.scenario in ("budget", "both"):
            s = run_budget(bed, src, seeded, args.seed, work)
            print_scenario(s)
            scenarios.append(s)
        randoms = [s for s in scenarios if s.name == "random"]
        if len(randoms) > 1:
            fresh = [s.runs[0] for s in randoms]
            print(f"\n{len(randoms)} seeds: faults injected {min(r.faults for r in fresh)}-"
                  f"{max(r.faults for r in fresh)}, retries {min(r.retries for r in fresh)}-"
                  f"{max(r.retries for r in fresh)}, images completed "
                  f"{sum(r.counts.get('copied', 0) for r in fresh)}/{sum(r.images for r in fresh)}, bytes lost "
                  f"{sum(s.check.bytes_lost for s in randoms if s.check)}, "
                  f"OK {sum(s.ok for s in randoms)}/{len(randoms)}")
        if args.json:
            Path(args.json).write_text(json.dumps({
                "rate": args.rate, "repos": args.repos, "tags": args.tags, "images": seeded.images,
                "blob_bytes": seeded.blob_bytes, "scenarios": [s.to_json() for s in scenarios],
            }, indent=2) + "\n")
        return 0 if all(s.ok for s in scenarios) else 1


if __name__ == "__main__":
    sys.exit(main())
