"""regtool vs skopeo, in one run, on the same local registries, directly and through a latency proxy.

    .venv/bin/python bench/run.py [--only copy|sync|startup|tune] [--runs N] [--delay-ms 25]
                                  [--big-runs N] [--tune] [--scaling] [--json FILE]

Starts two plain-HTTP CNCF distribution registries (source, destination) with the test
bed (``tests/support/registries.py``), seeds the source with ``tests/support/images.py``,
puts a ``LatencyProxy`` process (``bench/latency_proxy.py``) in front of each, and times
``regtool`` and ``skopeo`` interleaved (alternating which goes first), N runs each,
reporting the median wall time, the median CPU time and the peak RSS of each process
(``os.wait4`` rusage). Fresh copies go to a new repository name per run and the
destination registry's storage is wiped after every fresh run, so neither tool finds
blobs there (skopeo's blob-info cache would otherwise turn uploads into cross-repository
mounts). Every fresh result is checked against the source digests. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from measure import Sample, Series, run_measured  # noqa: E402
from seed import Seeded, push_index_image, push_multi_layer_image, push_tagged_repository  # noqa: E402

from tests.support import images  # noqa: E402
from tests.support.images import MiB  # noqa: E402
from tests.support.registries import Registry, RegistryBed  # noqa: E402

TOOLS = ("regtool", "skopeo")
PATHS = ("direct", "proxy")
TUNE_VALUES = (2, 4, 6, 8, 12)
SCALING_TAGS = (50, 100, 200, 400)

# Targets from issues 3 and 4: maximum regtool/skopeo wall-time ratio per scenario.
# Sync targets are stated "at 25 ms each way", i.e. for the proxy path.
RATIO_TARGETS: dict[str, tuple[float, tuple[str, ...]]] = {
    "copy-big": (1.0, PATHS),
    "noop-index": (0.7, PATHS),
    "noop-big": (0.7, PATHS),
    "sync-fresh": (0.15, ("proxy",)),
    "sync-noop": (0.08, ("proxy",)),
    "sync-noop-200": (0.08, ("proxy",)),
}
RSS_TARGET_MIB = 100.0
HELP_CPU_TARGET_S = 0.100


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# Tools
# ------------------------------------------------------------------------------------------------


@dataclass
class Tool:
    name: str
    prefix: list[str]  # program + global flags

    def copy(self, src: str, dst: str, extra: list[str]) -> list[str]:
        return [
            *self.prefix,
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            *extra,
            f"docker://{src}",
            f"docker://{dst}",
        ]

    def sync(self, src: str, dst: str, extra: list[str]) -> list[str]:
        return [
            *self.prefix,
            "sync",
            "--src",
            "docker",
            "--dest",
            "docker",
            "--all",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            *extra,
            src,
            dst,
        ]


def tool_env(workdir: Path) -> dict[str, str]:
    """The environment of both tools: no personal logins, no HTTP proxies."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    empty = workdir / "empty-docker-config"
    empty.mkdir(exist_ok=True)
    env["REGISTRY_AUTH_FILE"] = str(workdir / "no-such-auth.json")
    env["DOCKER_CONFIG"] = str(empty)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    # Byte-code caches as in any pip install (a non-editable install compiles them). Without
    # this, an environment with PYTHONDONTWRITEBYTECODE=1 recompiles regtool's sources on
    # every run (about 90 ms of CPU). The caches go to the work dir, not into the checkout.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    return env


def compile_regtool(python: str, env: dict[str, str]) -> None:
    """Write regtool's byte-code caches (into PYTHONPYCACHEPREFIX) before anything is timed."""
    import regtool

    package = Path(regtool.__file__).resolve().parent
    subprocess.run([python, "-m", "compileall", "-q", str(package)], env=env, check=False, capture_output=True)


def command_ok(argv: list[str], env: dict[str, str]) -> bool:
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def command_output(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    return (proc.stdout or proc.stderr).decode(errors="replace").strip()


# ------------------------------------------------------------------------------------------------
# Latency proxies (separate processes, so they never share a GIL with each other or with us)
# ------------------------------------------------------------------------------------------------


@dataclass
class ProxyProcess:
    process: subprocess.Popen[bytes]
    host: str


def start_proxy(target: str, delay_ms: float, bandwidth_mbit: float | None, log_file: Path) -> ProxyProcess:
    argv = [sys.executable, str(BENCH / "latency_proxy.py"), "--target", target, "--delay-ms", str(delay_ms)]
    if bandwidth_mbit:
        argv += ["--bandwidth-mbit", str(bandwidth_mbit)]
    setpriv = shutil.which("setpriv")
    if setpriv:  # dies with the benchmark even when it is killed hard
        argv = [setpriv, "--pdeathsig", "TERM", "--", *argv]
    with open(log_file, "ab") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if not line.isdigit():
        proc.kill()
        proc.wait()
        raise RuntimeError(f"latency proxy for {target} did not start; see {log_file}")
    return ProxyProcess(proc, f"127.0.0.1:{line}")


def stop_proxy(proxy: ProxyProcess) -> None:
    if proxy.process.poll() is None:
        proxy.process.terminate()
        try:
            proxy.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proxy.process.kill()
            proxy.process.wait()
    if proxy.process.stdout is not None:
        proxy.process.stdout.close()


# ------------------------------------------------------------------------------------------------
# The bench: registries, endpoints, verification helpers
# ------------------------------------------------------------------------------------------------


@dataclass
class Endpoints:
    path: str
    src: str  # host:port the tools talk to
    dst: str


@dataclass
class Problem:
    scenario: str
    path: str
    tool: str
    run: int
    what: str
    command: str
    log: str | None

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class Result:
    scenario: str
    group: str
    title: str
    path: str
    series: dict[str, Series] = field(default_factory=dict)
    note: str | None = None

    def ratio(self) -> float | None:
        ours, theirs = self.series["regtool"].median_wall(), self.series["skopeo"].median_wall()
        if ours is None or theirs is None or theirs == 0:
            return None
        return ours / theirs

    def to_json(self) -> dict[str, Any]:
        ratio = self.ratio()
        return {
            "scenario": self.scenario,
            "group": self.group,
            "title": self.title,
            "path": self.path,
            "ratio": None if ratio is None else round(ratio, 4),
            "note": self.note,
            "tools": {name: s.summary() for name, s in self.series.items()},
        }


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path, bed: RegistryBed) -> None:
        self.args = args
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.bed = bed
        self.env = tool_env(workdir)
        regtool_bin = args.regtool or str(ROOT / ".venv" / "bin" / "regtool")
        self.tools = {
            "regtool": Tool("regtool", [regtool_bin]),
            "skopeo": Tool("skopeo", [args.skopeo, "--insecure-policy"]),
        }
        log("starting source and destination registries ...")
        python = Path(regtool_bin).parent / "python"
        compile_regtool(str(python) if python.exists() else sys.executable, self.env)
        self.src: Registry = bed.start_registry("plain", "source")
        self.dst: Registry = bed.start_registry("plain", "destination")
        self.proxies: list[ProxyProcess] = []
        self.endpoints: dict[str, Endpoints] = {}
        if "direct" in args.paths:
            self.endpoints["direct"] = Endpoints("direct", self.src.host, self.dst.host)
        if "proxy" in args.paths:
            p_src = start_proxy(self.src.host, args.delay_ms, args.bandwidth_mbit, self.logs / "proxy-src.log")
            self.proxies.append(p_src)
            p_dst = start_proxy(self.dst.host, args.delay_ms, args.bandwidth_mbit, self.logs / "proxy-dst.log")
            self.proxies.append(p_dst)
            self.endpoints["proxy"] = Endpoints("proxy", p_src.host, p_dst.host)
        log(
            f"source {self.src.host}, destination {self.dst.host}"
            + (f", proxies {self.endpoints['proxy'].src} / {self.endpoints['proxy'].dst}" if self.proxies else "")
            + f" (+{args.delay_ms:g} ms each way)"
        )
        self.results: list[Result] = []
        self.problems: list[Problem] = []
        self.tuning: list[dict[str, Any]] = []
        self.startup: dict[str, Any] = {}
        self.seeded: dict[str, Seeded] = {}
        self.skipped: list[str] = []

    def close(self) -> None:
        for proxy in self.proxies:
            stop_proxy(proxy)

    # -- destination state ----------------------------------------------------------------------

    def reset_destination(self) -> None:
        """Forget everything the destination registry stores (repositories and blobs).

        Distribution keeps no blob cache in memory with the test bed's config, so this
        makes the next run start from an empty registry. It also defeats skopeo's
        blob-info cache (which would try a cross-repository mount from an earlier run's
        repository): the mount is refused and skopeo uploads, as on a fresh registry.
        """
        shutil.rmtree(self.dst.storage_dir / "docker", ignore_errors=True)

    def dest_digest(self, repo: str, tag: str) -> str | None:
        r = self.dst.http.head(f"/v2/{repo}/manifests/{tag}", headers={"Accept": images.ACCEPT_ALL})
        if r.status_code != 200:
            return None
        digest: str | None = r.headers.get("Docker-Content-Digest")
        return digest

    def check_tags(self, repo: str, expected: dict[str, str]) -> str | None:
        """None when ``repo`` at the destination holds exactly the expected tag -> digest map."""
        tags = set(images.list_tags(self.dst, repo))
        want = set(expected)
        extra = sorted(t for t in tags - want if not t.startswith("sha256-"))
        missing = sorted(want - tags)
        if missing or extra:
            return f"{repo}: missing tags {missing[:5]}{'...' if len(missing) > 5 else ''}, extra tags {extra[:5]}"
        for tag, digest in expected.items():
            got = self.dest_digest(repo, tag)
            if got != digest:
                return f"{repo}:{tag} has digest {got}, source has {digest}"
        return None

    # -- running ---------------------------------------------------------------------------------

    def run_tool(self, tool: str, argv: list[str], label: str) -> Sample:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", label)
        path = self.logs / f"{safe}.log"
        return run_measured(argv, env=self.env, log_path=path, timeout=self.args.timeout)

    def populate(self, label: str, argv: list[str]) -> None:
        """An untimed run that prepares the destination (for the no-op scenarios)."""
        sample = self.run_tool("skopeo", argv, f"populate-{label}")
        if not sample.ok:
            raise RuntimeError(f"preparing {label} failed ({' '.join(argv)}); see {sample.log}")

    def measure(
        self,
        name: str,
        group: str,
        title: str,
        runs: int,
        argv_for: Callable[[Tool, Endpoints, str], list[str]],
        *,
        fresh: bool,
        verify: Callable[[str], str | None] | None = None,
        dest_for: Callable[[str, str, int], str] | None = None,
    ) -> None:
        """Time both tools ``runs`` times on every path, interleaved, and record a Result per path.

        ``dest_for(tool, path, run)`` names the destination (a fresh name for fresh runs);
        ``verify(dest)`` checks what a run wrote. A failed run of either tool, or a wrong
        result, stops the scenario on that path and is recorded as a problem.
        """
        for path, ep in self.endpoints.items():
            result = Result(name, group, title, path, {t: Series() for t in TOOLS})
            self.results.append(result)
            stop = False
            for i in range(runs):
                order = TOOLS if i % 2 == 0 else tuple(reversed(TOOLS))
                for tool_name in order:
                    dest = dest_for(tool_name, path, i) if dest_for else ""
                    argv = argv_for(self.tools[tool_name], ep, dest)
                    sample = self.run_tool(tool_name, argv, f"{name}-{path}-{tool_name}-{i}")
                    result.series[tool_name].samples.append(sample)
                    problem = None
                    if sample.timed_out:
                        problem = f"timed out after {self.args.timeout:g} s (killed)"
                    elif sample.exit_code != 0:
                        problem = f"exit code {sample.exit_code}: {tail(sample.log)}"
                    elif verify is not None:
                        problem = verify(dest)
                    log(
                        f"  {name:14} {path:6} {tool_name:7} run {i + 1}/{runs}: {sample.wall_s:7.3f} s wall, "
                        f"{sample.cpu_s:6.3f} s CPU, {sample.maxrss_kib / 1024:6.1f} MiB"
                        + (f"  PROBLEM: {problem}" if problem else "")
                    )
                    if fresh:
                        self.reset_destination()
                    if problem:
                        self.problems.append(Problem(name, path, tool_name, i, problem, shell_join(argv), sample.log))
                        result.note = f"stopped: {tool_name} run {i + 1}: {problem}"
                        stop = True
                        break
                if stop:
                    break

    # -- copy scenarios (issue 3) ---------------------------------------------------------------

    def seed_copy(self) -> None:
        a = self.args
        log(f"seeding bench/big:v1 ({a.big_layers} x {a.big_layer_mib} MiB random layers) ...")
        t0 = time.monotonic()
        self.seeded["big"] = push_multi_layer_image(
            self.src, "bench/big", "v1", layers=a.big_layers, layer_size=a.big_layer_mib * MiB
        )
        log(f"  done in {time.monotonic() - t0:.1f} s; seeding bench/index:v1 (3 platforms) ...")
        self.seeded["index"] = push_index_image(self.src, "bench/index", "v1")

    def run_copy(self) -> None:
        a = self.args
        token = secrets.token_hex(3)
        big, index = self.seeded["big"], self.seeded["index"]

        def fresh_name(kind: str) -> Callable[[str, str, int], str]:
            return lambda tool, path, i: f"fresh-{token}/{kind}-{tool}-{path}-{i}"

        def verifier(seeded: Seeded) -> Callable[[str], str | None]:
            ((tag, digest),) = seeded.tags.items()

            def verify(dest: str) -> str | None:
                got = self.dest_digest(dest, tag)
                return None if got == digest else f"{dest}:{tag} has digest {got}, source has {digest}"

            return verify

        big_mib = big.blob_bytes / MiB
        self.measure(
            "copy-big",
            "copy",
            f"fresh copy, 1 image, {a.big_layers} x {a.big_layer_mib} MiB layers ({big_mib:.0f} MiB)",
            a.big_runs,
            lambda t, ep, d: t.copy(f"{ep.src}/bench/big:v1", f"{ep.dst}/{d}:v1", []),
            fresh=True,
            verify=verifier(big),
            dest_for=fresh_name("big"),
        )
        self.measure(
            "copy-index",
            "copy",
            "fresh copy --all, 3-platform index (2 x 512 KiB layers each)",
            a.runs,
            lambda t, ep, d: t.copy(f"{ep.src}/bench/index:v1", f"{ep.dst}/{d}:v1", ["--all"]),
            fresh=True,
            verify=verifier(index),
            dest_for=fresh_name("index"),
        )
        # No-op re-copies: the destination already holds the image (written once by skopeo, untimed).
        self.reset_destination()
        skopeo = self.tools["skopeo"]
        self.populate(
            "noop-index", skopeo.copy(f"{self.src.host}/bench/index:v1", f"{self.dst.host}/noop/index:v1", ["--all"])
        )
        self.populate("noop-big", skopeo.copy(f"{self.src.host}/bench/big:v1", f"{self.dst.host}/noop/big:v1", []))
        self.measure(
            "noop-index",
            "copy",
            "no-op re-copy --all of the 3-platform index",
            a.runs,
            lambda t, ep, d: t.copy(f"{ep.src}/bench/index:v1", f"{ep.dst}/noop/index:v1", ["--all"]),
            fresh=False,
            verify=lambda d: verifier(index)("noop/index"),
        )
        self.measure(
            "noop-big",
            "copy",
            f"no-op re-copy of the {big_mib:.0f} MiB image",
            a.runs,
            lambda t, ep, d: t.copy(f"{ep.src}/bench/big:v1", f"{ep.dst}/noop/big:v1", []),
            fresh=False,
            verify=lambda d: verifier(big)("noop/big"),
        )
        self.reset_destination()

    # -- sync scenarios (issue 4) ---------------------------------------------------------------

    def sync_available(self) -> bool:
        return command_ok([*self.tools["regtool"].prefix, "sync", "--help"], self.env)

    def seed_sync(self, counts: list[int]) -> None:
        log("seeding bench/app (20 tags sharing a base layer + a 3-platform index) ...")
        self.seeded["app"] = push_tagged_repository(self.src, "bench/app", 20, index_tag="multi")
        for n in counts:
            log(f"seeding bench/tags{n} ({n} tags sharing a base layer) ...")
            self.seeded[f"tags{n}"] = push_tagged_repository(self.src, f"bench/tags{n}", n)

    def run_sync(self) -> None:
        a = self.args
        token = secrets.token_hex(3)
        app = self.seeded["app"]
        skopeo = self.tools["skopeo"]

        def sync_argv(repo: str, ns: str) -> Callable[[Tool, Endpoints, str], list[str]]:
            return lambda t, ep, d: t.sync(f"{ep.src}/bench/{repo}", f"{ep.dst}/{d or ns}", [])

        def verify_repo(seeded: Seeded, fixed_ns: str | None = None) -> Callable[[str], str | None]:
            base = seeded.repository.rsplit("/", 1)[-1]
            return lambda ns: self.check_tags(f"{fixed_ns or ns}/{base}", seeded.tags)

        self.measure(
            "sync-fresh",
            "sync",
            f"fresh sync, 1 repository: 20 small tags sharing a base layer + a 3-platform index ({len(app.tags)} tags)",
            a.sync_runs,
            sync_argv("app", ""),
            fresh=True,
            verify=verify_repo(app),
            dest_for=lambda tool, path, i: f"fresh-{token}-{tool}-{path}-{i}",
        )
        self.reset_destination()
        self.populate("sync-noop", skopeo.sync(f"{self.src.host}/bench/app", f"{self.dst.host}/noop", []))
        self.measure(
            "sync-noop",
            "sync",
            "the same sync again, nothing changed",
            a.sync_runs,
            sync_argv("app", "noop"),
            fresh=False,
            verify=verify_repo(app, "noop"),
        )
        big = self.seeded["tags200"]
        self.populate("sync-noop-200", skopeo.sync(f"{self.src.host}/bench/tags200", f"{self.dst.host}/noop", []))
        self.measure(
            "sync-noop-200",
            "sync",
            "no-op re-sync of a 200-tag repository",
            a.sync_runs,
            sync_argv("tags200", "noop"),
            fresh=False,
            verify=verify_repo(big, "noop"),
        )
        if a.scaling:
            for n in a.scaling_tags:
                if n == 200:  # measured above as sync-noop-200
                    continue
                seeded = self.seeded[f"tags{n}"]
                self.populate(f"scale-{n}", skopeo.sync(f"{self.src.host}/bench/tags{n}", f"{self.dst.host}/noop", []))
                self.measure(
                    f"scale-noop-{n}",
                    "scaling",
                    f"no-op re-sync of a {n}-tag repository",
                    a.scaling_runs,
                    sync_argv(f"tags{n}", "noop"),
                    fresh=False,
                    verify=verify_repo(seeded, "noop"),
                )
        self.reset_destination()

    # -- tuning --image-parallel-copies -----------------------------------------------------------

    def run_tune(self) -> None:
        """regtool only: scenario copy-big with each --image-parallel-copies value, interleaved."""
        a = self.args
        ep = self.endpoints.get("proxy") or next(iter(self.endpoints.values()))
        regtool, skopeo = self.tools["regtool"], self.tools["skopeo"]
        token = secrets.token_hex(3)
        images_to_tune = {"big": self.seeded["big"]}
        if a.tune_many:
            log(f"seeding bench/many:v1 ({a.tune_many} x 8 MiB layers) ...")
            self.seeded["many"] = push_multi_layer_image(
                self.src, "bench/many", "v1", layers=a.tune_many, layer_size=8 * MiB
            )
            images_to_tune["many"] = self.seeded["many"]
        for kind, seeded in images_to_tune.items():
            ((tag, digest),) = seeded.tags.items()
            variants: dict[str, Tool | int] = {f"regtool -j{n}": n for n in a.tune_values}
            variants["skopeo"] = skopeo
            series: dict[str, Series] = {name: Series() for name in variants}
            for i in range(a.tune_runs):
                names = list(variants) if i % 2 == 0 else list(reversed(variants))
                for name in names:
                    dest = f"tune-{token}/{kind}-{re.sub(r'[^a-z0-9]+', '', name)}-{i}"
                    value = variants[name]
                    if isinstance(value, int):
                        argv = regtool.copy(
                            f"{ep.src}/bench/{kind}:{tag}",
                            f"{ep.dst}/{dest}:{tag}",
                            ["--image-parallel-copies", str(value)],
                        )
                    else:
                        argv = value.copy(f"{ep.src}/bench/{kind}:{tag}", f"{ep.dst}/{dest}:{tag}", [])
                    sample = self.run_tool(name, argv, f"tune-{kind}-{ep.path}-{name}-{i}")
                    got = self.dest_digest(dest, tag) if sample.ok else None
                    self.reset_destination()
                    series[name].samples.append(sample)
                    problem = (
                        None
                        if got == digest
                        else (f"exit {sample.exit_code}, digest {got} (want {digest}): {tail(sample.log)}")
                    )
                    log(
                        f"  tune-{kind:4} {ep.path:6} {name:13} run {i + 1}/{a.tune_runs}: "
                        f"{sample.wall_s:7.3f} s wall, "
                        f"{sample.cpu_s:6.3f} s CPU, {sample.maxrss_kib / 1024:6.1f} MiB"
                        + (f"  PROBLEM: {problem}" if problem else "")
                    )
                    if problem:
                        self.problems.append(
                            Problem(f"tune-{kind}", ep.path, name, i, problem, shell_join(argv), sample.log)
                        )
            self.tuning.append(
                {
                    "image": kind,
                    "path": ep.path,
                    "blob_bytes": seeded.blob_bytes,
                    "blobs": seeded.blobs,
                    "variants": {name: s.summary() for name, s in series.items()},
                }
            )

    # -- start-up ---------------------------------------------------------------------------------

    def run_startup(self) -> None:
        """CPU and wall time of ``--help`` (Python start-up plus imports), median of 10."""
        commands = {
            "regtool --help": [*self.tools["regtool"].prefix, "--help"],
            "regtool copy --help": [*self.tools["regtool"].prefix, "copy", "--help"],
            "skopeo --help": [self.args.skopeo, "--help"],
            "python -c pass": [str(Path(self.tools["regtool"].prefix[0]).parent / "python"), "-c", "pass"],
        }
        for name, argv in commands.items():
            series = Series([self.run_tool(name, argv, f"startup-{name}") for _ in range(10)])
            self.startup[name] = series.summary()
            log(
                f"  {name:22} median {series.median_wall() or 0:.3f} s wall, {series.median_cpu() or 0:.3f} s CPU, "
                f"{series.max_rss_mib() or 0:.1f} MiB"
            )


# ------------------------------------------------------------------------------------------------
# Reporting
# ------------------------------------------------------------------------------------------------


def tail(path: str | None, lines: int = 3) -> str:
    if not path:
        return ""
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def shell_join(argv: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in argv)


def fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def verdict(result: Result) -> str:
    notes: list[str] = []
    ratio = result.ratio()
    target = RATIO_TARGETS.get(result.scenario)
    if target and result.path in target[1]:
        limit = target[0]
        if ratio is None:
            notes.append(f"<= {limit:g}x: n/a")
        else:
            notes.append(f"<= {limit:g}x: {'met' if ratio <= limit else 'MISSED'}")
    rss = result.series["regtool"].max_rss_mib()
    if result.group == "copy" and rss is not None:
        notes.append(f"RSS <= {RSS_TARGET_MIB:g} MiB: {'met' if rss <= RSS_TARGET_MIB else 'MISSED'}")
    return "; ".join(notes)


def results_table(results: list[Result]) -> str:
    head = (
        "| scenario | path | regtool s | skopeo s | ratio | regtool CPU s | skopeo CPU s "
        "| regtool peak RSS MiB | skopeo peak RSS MiB | runs | target |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    )
    rows = [head]
    for r in results:
        ours, theirs = r.series["regtool"], r.series["skopeo"]
        ratio = r.ratio()
        rows.append(
            f"| {r.scenario} | {r.path} | {fmt(ours.median_wall())} | {fmt(theirs.median_wall())} "
            f"| {fmt(ratio, '.2f')}{'x' if ratio is not None else ''} | {fmt(ours.median_cpu())} "
            f"| {fmt(theirs.median_cpu())} | {fmt(ours.max_rss_mib(), '.1f')} | {fmt(theirs.max_rss_mib(), '.1f')} "
            f"| {len(ours.good())}/{len(theirs.good())} | {verdict(r)}{' ' + r.note if r.note else ''} |"
        )
    return "\n".join(rows)


def tuning_table(tuning: list[dict[str, Any]]) -> str:
    rows = [
        "| image | path | variant | median wall s | min s | max s | median CPU s | peak RSS MiB |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for entry in tuning:
        for name, s in entry["variants"].items():
            rows.append(
                f"| {entry['image']} ({entry['blobs']} blobs, {entry['blob_bytes'] / MiB:.0f} MiB) | {entry['path']} "
                f"| {name} | {fmt(s['median_wall_s'])} | {fmt(s['min_wall_s'])} | {fmt(s['max_wall_s'])} "
                f"| {fmt(s['median_cpu_s'])} | {fmt(s['peak_rss_mib'], '.1f')} |"
            )
    return "\n".join(rows)


def scaling_table(results: list[Result]) -> str:
    """No-op re-sync time against the number of tags (sync-noop-200 is the 200-tag point)."""
    points: dict[tuple[int, str], Result] = {}
    for r in results:
        m = re.fullmatch(r"scale-noop-(\d+)", r.scenario)
        if m:
            points[(int(m.group(1)), r.path)] = r
        elif r.scenario == "sync-noop-200":
            points[(200, r.path)] = r
    if len(points) <= len(PATHS):
        return ""
    rows = [
        "| tags | path | regtool s | skopeo s | ratio | regtool ms/tag | skopeo ms/tag | runs |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (n, path), r in sorted(points.items()):
        ours, theirs = r.series["regtool"].median_wall(), r.series["skopeo"].median_wall()
        ratio = r.ratio()
        rows.append(
            f"| {n} | {path} | {fmt(ours)} | {fmt(theirs)} | {fmt(ratio, '.2f')}{'x' if ratio is not None else ''} "
            f"| {fmt(None if ours is None else ours / n * 1000, '.1f')} "
            f"| {fmt(None if theirs is None else theirs / n * 1000, '.1f')} "
            f"| {len(r.series['regtool'].good())}/{len(r.series['skopeo'].good())} |"
        )
    return "\n".join(rows)


def startup_table(startup: dict[str, Any]) -> str:
    rows = ["| command | median wall s | median CPU s | peak RSS MiB |", "|---|---:|---:|---:|"]
    for name, s in startup.items():
        rows.append(
            f"| `{name}` | {fmt(s['median_wall_s'])} | {fmt(s['median_cpu_s'])} | {fmt(s['peak_rss_mib'], '.1f')} |"
        )
    return "\n".join(rows)


def machine_facts(args: argparse.Namespace, regtool_prefix: list[str]) -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from tests.support.registries import registry_binary

    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "bench/run.py", *sys.argv[1:]]),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "loadavg_at_start": os.getloadavg(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "regtool": command_output([*regtool_prefix, "--version"]),
        "skopeo": command_output([args.skopeo, "--version"]),
        "registry": command_output([registry_binary(), "--version"]),
        "delay_ms_each_way": args.delay_ms,
        "bandwidth_mbit": args.bandwidth_mbit,
        "runs": args.runs,
        "big_runs": args.big_runs,
        "sync_runs": args.sync_runs,
    }


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of integers, got {text!r}") from exc
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark regtool against skopeo on local registries, directly and through a latency proxy.",
    )
    p.add_argument(
        "--only",
        action="append",
        choices=["copy", "sync", "startup", "tune"],
        help="run only these parts (repeatable; default: copy, sync and startup, plus tune with --tune)",
    )
    p.add_argument("--runs", type=int, default=5, help="runs per tool and scenario; the median is reported (default 5)")
    p.add_argument("--big-runs", type=int, help="runs for the big-image copy (default: --runs)")
    p.add_argument("--sync-runs", type=int, help="runs for the sync scenarios (default: --runs)")
    p.add_argument("--delay-ms", type=float, default=25.0, help="latency proxy delay, each way (default 25)")
    p.add_argument("--bandwidth-mbit", type=float, help="also cap each proxy direction at N Mbit/s (default: no cap)")
    p.add_argument(
        "--paths",
        type=lambda s: [x for x in s.split(",") if x],
        default=list(PATHS),
        help="direct,proxy (default both)",
    )
    p.add_argument("--big-layers", type=int, default=5, help="layers of the big image (default 5)")
    p.add_argument("--big-layer-mib", type=int, default=100, help="MiB per layer of the big image (default 100)")
    p.add_argument("--tune", action="store_true", help="also sweep regtool --image-parallel-copies (proxy path)")
    p.add_argument("--tune-values", type=int_list, default=list(TUNE_VALUES), help="default 2,4,6,8,12")
    p.add_argument("--tune-runs", type=int, default=3, help="runs per value (default 3)")
    p.add_argument(
        "--tune-many", type=int, default=24, help="also tune on an image of N x 8 MiB layers (default 24; 0: off)"
    )
    p.add_argument("--scaling", action="store_true", help="also run the no-op sync over 50/100/200/400 tags")
    p.add_argument("--scaling-tags", type=int_list, default=list(SCALING_TAGS), help="default 50,100,200,400")
    p.add_argument("--scaling-runs", type=int, default=1, help="runs per size of the scaling series (default 1)")
    p.add_argument("--timeout", type=float, default=900.0, help="kill a tool run after N seconds (default 900)")
    p.add_argument("--regtool", help="regtool executable (default .venv/bin/regtool)")
    p.add_argument("--skopeo", default="/usr/bin/skopeo", help="skopeo executable (default /usr/bin/skopeo)")
    p.add_argument("--workdir", type=Path, help="keep registries' storage and logs here (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="do not delete the temp dir (logs) at the end")
    p.add_argument("--json", type=Path, help="write all results as JSON to this file")
    p.add_argument("--render", type=Path, metavar="JSON", help="only print the tables of an earlier --json file")
    return p


@contextmanager
def working_directory(args: argparse.Namespace) -> Iterator[Path]:
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        yield args.workdir
        return
    path = Path(tempfile.mkdtemp(prefix="regtool-bench-"))
    try:
        yield path
    finally:
        if args.keep:
            log(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def print_report(
    meta: dict[str, Any],
    results: list[Result],
    tuning: list[dict[str, Any]],
    startup: dict[str, Any],
    skipped: list[str],
    problems: list[Problem],
) -> None:
    print(
        f"\nregtool vs skopeo ({meta['date']}, {meta['nproc']} CPUs, "
        f"+{meta['delay_ms_each_way']:g} ms each way on 'proxy')\n"
    )
    if results:
        print(results_table(results))
    scaling = scaling_table(results)
    if scaling:
        print("\nno-op re-sync against the number of tags:\n")
        print(scaling)
    if tuning:
        print("\n--image-parallel-copies (regtool), fresh copy through the latency proxy:\n")
        print(tuning_table(tuning))
    if startup:
        print("\nstart-up:\n")
        print(startup_table(startup))
    for message in skipped:
        print(f"\n{message}")
    if problems:
        print("\nproblems:")
        for pr in problems:
            print(
                f"- {pr.scenario} ({pr.path}, {pr.tool}, run {pr.run + 1}): {pr.what}\n  {pr.command}\n  log: {pr.log}"
            )
    if "elapsed_s" in meta:
        print(f"\ntotal {meta['elapsed_s']:.0f} s")


def render(path: Path) -> int:
    """Print the tables of a results file written by ``--json`` (no benchmark is run)."""
    data = json.loads(path.read_text())
    results: list[Result] = []
    for r in data["results"]:
        result = Result(r["scenario"], r["group"], r["title"], r["path"], note=r.get("note"))
        for tool, summary in r["tools"].items():
            samples = [Sample(**{k: v for k, v in s.items() if k != "cpu_s"}) for s in summary["samples"]]
            result.series[tool] = Series(samples)
        results.append(result)
    problems = [Problem(**p) for p in data.get("problems", [])]
    print(f"command: {data['meta'].get('command')}")
    print_report(
        data["meta"], results, data.get("tuning", []), data.get("startup", {}), data.get("skipped", []), problems
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.render:
        return render(args.render)
    args.big_runs = args.big_runs or args.runs
    args.sync_runs = args.sync_runs or args.runs
    bad = [p for p in args.paths if p not in PATHS]
    if bad or not args.paths:
        build_parser().error(f"--paths takes direct and/or proxy, got {args.paths}")
    parts = set(args.only or ["copy", "sync", "startup"])
    if args.tune:
        parts.add("tune")
    if not Path(args.skopeo).exists():
        build_parser().error(f"skopeo not found at {args.skopeo}")

    started = time.monotonic()
    with working_directory(args) as workdir, RegistryBed(workdir / "bed") as bed:
        bench = Bench(args, workdir, bed)
        meta = machine_facts(args, bench.tools["regtool"].prefix)
        log(f"machine: {meta['nproc']} CPUs ({meta['cpu']}), load {meta['loadavg_at_start']}, Python {meta['python']}")
        try:
            if "startup" in parts:
                log("start-up:")
                bench.run_startup()
            if "copy" in parts or "tune" in parts:
                bench.seed_copy()
            if "copy" in parts:
                log("copy scenarios (issue 3):")
                bench.run_copy()
            if "tune" in parts:
                log("tuning --image-parallel-copies:")
                bench.run_tune()
            if "sync" in parts:
                if bench.sync_available():
                    counts = sorted({200, *(args.scaling_tags if args.scaling else [])})
                    bench.seed_sync(counts)
                    log("sync scenarios (issue 4):")
                    bench.run_sync()
                else:
                    message = "sync scenarios skipped: `regtool sync --help` failed (regtool sync does not exist yet)"
                    bench.skipped.append(message)
                    log(message)
        finally:
            bench.close()
        meta["elapsed_s"] = round(time.monotonic() - started, 1)
        meta["loadavg_at_end"] = os.getloadavg()

        print_report(meta, bench.results, bench.tuning, bench.startup, bench.skipped, bench.problems)
        if args.json:
            data = {
                "meta": meta,
                "results": [r.to_json() for r in bench.results],
                "tuning": bench.tuning,
                "startup": bench.startup,
                "skipped": bench.skipped,
                "problems": [p.to_json() for p in bench.problems],
                "seeded": {
                    k: {"repository": v.repository, "tags": len(v.tags), "blobs": v.blobs, "blob_bytes": v.blob_bytes}
                    for k, v in bench.seeded.items()
                },
            }
            args.json.write_text(json.dumps(data, indent=2) + "\n")
            log(f"wrote {args.json}")
    return 1 if bench.problems else 0


if __name__ == "__main__":
    sys.exit(main())
