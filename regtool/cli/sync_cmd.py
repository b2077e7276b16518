"""sync: mirror jobs from regtool's config, or from skopeo's sync command line and YAML."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from regtool.cli import common

if TYPE_CHECKING:
    from regtool.sync.config import SyncConfig
    from regtool.sync.engine import RunOptions

EXAMPLES = """\
  # regtool's own config (a file, or a directory of *.yaml), as a cron job:
  regtool sync --config sync-configs/ --report /var/lib/regtool/report.json \\
      --metrics-file /var/lib/node_exporter/regtool.prom --lock-file /run/regtool-sync.lock
  regtool sync --config mirror.yaml --dry-run              # print the plan, change nothing
  regtool sync --config big.yaml --shard 2/8               # worker 2 of 8 (0-based)
  regtool sync --config big.yaml --shard /8                # index from $JOB_COMPLETION_INDEX

  # skopeo's command line and YAML, unchanged:
  regtool sync --src docker --dest docker --all docker.io/library/alpine registry.example.com/mirror
  regtool sync --src yaml --dest dir skopeo-sync.yaml /media/usb
  regtool sync --src dir --dest docker /media/usb registry.example.com/mirror --dest-creds bot:secret
"""


def add_parsers(sub: Any) -> None:
    p = common.add_command(
        sub,
        "sync",
        "mirror repositories between registries and local layouts",
        "Brings target registries (or OCI layouts) in step with their sources: lists tags once per\n"
        "repository, HEADs source and target manifests, copies only what differs (with signatures), and\n"
        "optionally prunes. Two ways in: --config (regtool's format, docs/sync-config.md) or skopeo's\n"
        "--src/--dest command line and sync YAML. With --config errors are reported and the run goes on\n"
        "(--fail-fast stops); with skopeo's form the first error stops the run unless --keep-going.\n"
        "Exit codes: 0 all in step, 1 some images failed, 2 bad config or input (before any traffic),\n"
        "75 lock held, 130/143 interrupted (report and metrics are still written).",
        EXAMPLES,
    )
    p.add_argument("source", nargs="?", metavar="SOURCE", help="skopeo form: repository, YAML file or directory")
    p.add_argument("destination", nargs="?", metavar="DESTINATION", help="skopeo form: registry/prefix or directory")
    p.add_argument("--config", "-c", metavar="FILE|DIR", help="regtool sync config (file or directory of files)")
    p.add_argument("--src", "-s", choices=("docker", "yaml", "dir"), help="skopeo form: source transport")
    p.add_argument("--dest", "-d", choices=("docker", "dir"), help="skopeo form: destination transport")
    common.bool_flag(p, "--scoped", "skopeo form: keep the source's registry and path in destination names", False)
    p.add_argument("--append-suffix", default="", metavar="SUFFIX", help="skopeo form: append to destination tags")
    common.bool_flag(p, "--all", "skopeo form: copy whole multi-platform indexes (default: host platform)", False)
    common.bool_flag(p, "--dry-run", "print the plan (after real existence checks) and change nothing", False)
    common.bool_flag(p, "--keep-going", "skopeo form: go on after a failed image", False)
    common.bool_flag(p, "--fail-fast", "--config form: stop at the first failed image", False)
    common.bool_flag(p, "--remove-signatures", "do not copy signatures and attached artifacts", False)
    p.add_argument("--report", metavar="FILE", help="write a JSON report (schema: regtool/schemas/sync-report)")
    p.add_argument("--metrics-file", metavar="FILE", help="write Prometheus metrics for node_exporter's textfile")
    p.add_argument("--lock-file", metavar="FILE", help="hold an flock(2) lock; a second run exits 75")
    p.add_argument("--shard", metavar="I/N", help="run shard I of N (0-based; I from $JOB_COMPLETION_INDEX)")
    p.add_argument("--job", metavar="NAME", help="job name for reports and metrics labels")
    p.add_argument("--image-parallel-copies", type=int, default=6, metavar="N", help="blobs in flight per run")
    p.add_argument("--concurrency", type=int, metavar="N", help="images in flight (default 8, or the config's)")
    common.add_auth_flags(p, "src", "source registries")
    common.add_auth_flags(p, "dest", "destination registries")


def _load(args: argparse.Namespace) -> SyncConfig:
    from dataclasses import replace

    from regtool.errors import UsageError
    from regtool.sync.config import load_config, skopeo_cli_source_to_config

    if args.config:
        if args.src or args.dest or args.source or args.destination:
            raise UsageError("--config cannot be combined with --src/--dest SOURCE DESTINATION")
        config = load_config(args.config)
    else:
        if not (args.src and args.dest and args.source and args.destination):
            raise UsageError("sync needs --config FILE, or --src T --dest T SOURCE DESTINATION (as skopeo)")
        config = skopeo_cli_source_to_config(
            args.src,
            args.source,
            args.destination,
            scoped=args.scoped,
            append_suffix=args.append_suffix,
            all_platforms=args.all,
            dest_transport=args.dest,
        )
    if args.remove_signatures:  # neither signatures nor other attached artifacts
        config = replace(
            config, mirrors=tuple(replace(m, signatures=False, referrers=False) for m in config.mirrors)
        )
    return config


def run(args: argparse.Namespace) -> int:
    from regtool.sync.engine import RunOptions
    from regtool.sync.lock import JobLock
    from regtool.sync.shard import parse_shard

    config = _load(args)  # every config error surfaces here, before any traffic
    opts = config.options
    fail_fast = args.fail_fast if args.config else not args.keep_going
    src_defaults = common.registry_options(args, "src")
    dest_defaults = common.registry_options(args, "dest")
    run_options = RunOptions(
        dry_run=args.dry_run,
        fail_fast=fail_fast or opts.fail_fast,
        shard=parse_shard(args.shard) if args.shard else parse_shard(None),
        max_retry_wait=_max_retry_wait(args, opts.max_retry_wait),
        image_concurrency=args.concurrency or opts.concurrency or 8,
        blob_parallel=args.image_parallel_copies,
        platform=common.platform_override(args),  # None: the host's, looked up only if an index needs it
        src_defaults=src_defaults,
        dest_defaults=dest_defaults,
        job=args.job,
    )
    report_path = args.report or opts.report
    metrics_path = args.metrics_file or opts.metrics_file
    lock_path = args.lock_file or opts.lock_file
    if lock_path:
        with JobLock(lock_path):
            return _execute(args, config, run_options, report_path, metrics_path)
    return _execute(args, config, run_options, report_path, metrics_path)


#: The global --max-retry-wait default (regtool/cli/common.py): when the flag still has it, the
#: config's ``options.max-retry-wait`` applies.
_DEFAULT_RETRY_WAIT = 900.0


def _max_retry_wait(args: argparse.Namespace, configured: float | None) -> float:
    given = getattr(args, "max_retry_wait", None)
    if given is not None and float(given) != _DEFAULT_RETRY_WAIT:
        return float(given)
    return float(configured) if configured is not None else _DEFAULT_RETRY_WAIT


def _execute(
    args: argparse.Namespace,
    config: SyncConfig,
    run_options: RunOptions,
    report_path: str | None,
    metrics_path: str | None,
) -> int:
    import anyio

    from regtool.sync.engine import SyncRunner
    from regtool.sync.metrics import write_metrics
    from regtool.sync.report import write_report

    runner = SyncRunner(config, run_options)
    completed: list[bool] = []

    async def go() -> int:
        try:
            await runner.run()
            completed.append(True)
        finally:
            with anyio.CancelScope(shield=True):
                report = runner.report
                report.interrupted = not completed
                if report_path:
                    write_report(report_path, report)
                if metrics_path:
                    write_metrics(metrics_path, report)
        return 1 if runner.report.failed else 0

    code = common.run_async(go, timeout=args.command_timeout)
    report = runner.report
    if args.dry_run:
        for image in report.images:
            sys.stdout.write(f"{image.action}\t{image.source}\t{image.target}\n")
    for message in report.errors:
        sys.stderr.write(f"regtool: error: {message}\n")
    for image in report.images:
        if image.action in ("failed", "rate-limited", "rejected"):
            sys.stderr.write(f"regtool: {image.action}: {image.source} -> {image.target}: {image.error}\n")
    sys.stderr.write(report.summary() + "\n")
    return code
