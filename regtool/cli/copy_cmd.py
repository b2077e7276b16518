"""copy and delete."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from regtool.cli import common

COPY_EXAMPLES = """\
  regtool copy docker://docker.io/library/alpine:3.20 docker://registry.example.com/mirror/alpine:3.20
  regtool copy --all docker://ghcr.io/org/app:v1 oci:/mnt/usb/layout:app-v1
  regtool copy --multi-arch linux/amd64,linux/arm64 docker://quay.io/org/app:v1 docker://reg/app:v1
  regtool copy dir:/mnt/usb/app docker://registry.example.com/app:v1 --dest-creds bot:secret
  regtool copy --src-tls-verify=false docker://127.0.0.1:5000/a:1 docker://127.0.0.1:5000/b:1
"""


def add_parsers(sub: Any) -> None:
    p = common.add_command(
        sub,
        "copy",
        "copy an image between registries and local layouts",
        "Copies SOURCE-IMAGE to DESTINATION-IMAGE byte-for-byte (digests preserved), with its\n"
        "signatures and attached artifacts (cosign sha256-<hex>.sig/.att/.sbom tags, OCI referrers,\n"
        "dir: signature-N files). Transports: docker://REF, oci:PATH[:REF], oci-archive:FILE[:REF], dir:PATH.\n"
        "When the destination already holds the same digest the copy is a no-op (HEAD requests only).\n"
        "\n"
        "Where attachments go: cosign tags and the referrers tag (sha256-<hex>) become tags in a registry\n"
        "and named index.json entries in oci: layouts (as `cosign save` writes them; skopeo ignores them).\n"
        "signature-N files (skopeo --sign-by) travel between dir: images only: a registry has no place for\n"
        "them, so dir: -> docker:// leaves them behind and says so. A Docker v2s2 image stays v2s2 in an\n"
        "oci: layout (digest kept); use --format oci for layouts other tools must read.\n"
        "Exit codes: 0 copied or already there; 1 runtime failure; 2 bad input or source not found.",
        COPY_EXAMPLES,
    )
    p.add_argument("source", metavar="SOURCE-IMAGE")
    p.add_argument("destination", metavar="DESTINATION-IMAGE")
    common.bool_flag(p, "--all", "copy the whole index and every instance (= --multi-arch all)", False)
    p.add_argument(
        "--multi-arch",
        metavar="MODE",
        default=None,
        help="system (default: the host's or --override-* instance), all, index-only, or a list of platforms "
        "like linux/amd64,linux/arm64 (writes a new index with only those: its digest changes)",
    )
    p.add_argument("--platform", action="append", default=[], metavar="OS/ARCH[/VARIANT]",
                   help="keep this platform (repeatable); same as a --multi-arch list")
    p.add_argument("--format", "-f", choices=("oci", "v2s2"), help="convert manifests (digests change)")
    common.bool_flag(p, "--remove-signatures", "do not copy signatures and attached artifacts", False)
    common.bool_flag(p, "--include-nondistributable", "also copy non-distributable (foreign) layers", False)
    common.bool_flag(p, "--preserve-digests", "fail rather than change a digest (conversions refused)", False)
    p.add_argument("--digestfile", metavar="FILE", help="write the destination's top-level digest to FILE")
    p.add_argument("--retry-times", type=int, default=0, metavar="N", help="retry the whole copy N times")
    p.add_argument("--retry-delay", type=float, default=0.0, metavar="SECONDS",
                   help="wait between whole-copy retries (default: exponential)")
    p.add_argument("--image-parallel-copies", type=int, default=6, metavar="N", help="blobs in flight (default 6)")
    common.bool_flag(p, "--quiet", "no progress output", False)
    p.add_argument("-q", dest="quiet", action="store_const", const=True, help="same as --quiet")
    common.add_auth_flags(p, "src", "the source registry")
    common.add_auth_flags(p, "dest", "the destination registry")
    p.add_argument("--authfile", metavar="PATH", help="auth file for both sides")
    p.add_argument("--cert-dir", metavar="DIR", help=argparse.SUPPRESS)
    common.bool_flag(p, "--tls-verify", argparse.SUPPRESS, None)
    from regtool.cli.sign_cmd import add_gate_flags  # signature gate (--require-signed), owned by sign_cmd

    add_gate_flags(p)

    p = common.add_command(
        sub,
        "delete",
        "delete an image from a registry",
        "Resolves a tag to its digest and deletes the manifest by digest (registries delete by digest;\n"
        "every tag pointing at that digest goes with it).",
        "  regtool delete docker://registry.example.com/team/app:old\n"
        "  regtool delete --tls-verify=false docker://127.0.0.1:5000/app@sha256:...\n",
    )
    p.add_argument("image", metavar="IMAGE", help="docker://REF")
    common.add_auth_flags(p)


def _copy_options(args: argparse.Namespace) -> Any:
    from regtool.copy import CopyOptions
    from regtool.errors import UsageError
    from regtool.manifest import Platform

    platforms = [Platform.parse(p) for p in args.platform]
    mode: str = args.multi_arch or ("all" if args.all else "system")
    if args.all and args.multi_arch not in (None, "all"):
        raise UsageError("--all and --multi-arch disagree")
    if mode not in ("system", "all", "index-only"):
        platforms += [Platform.parse(p) for p in mode.split(",") if p.strip()]
        mode = "all"
    if args.preserve_digests and (args.format or platforms):
        raise UsageError("--preserve-digests forbids --format and platform subsets (they change digests)")
    if args.image_parallel_copies < 1:
        raise UsageError("--image-parallel-copies must be at least 1")
    options = CopyOptions(
        multi_arch=mode,  # type: ignore[arg-type]  # checked by validate()
        platforms=platforms,
        platform=common.platform_override(args),  # None: the host's, looked up only if an index needs it
        remove_signatures=args.remove_signatures,
        include_nondistributable=args.include_nondistributable,
        format=args.format,
        parallel=args.image_parallel_copies,
    )
    options.validate()
    return options


def run(args: argparse.Namespace) -> int:
    if args.command == "delete":
        return common.run_async(lambda: _delete(args), timeout=args.command_timeout)
    import os

    from regtool.errors import UsageError
    from regtool.reference import parse_image
    from regtool.transports import check_destination

    src = parse_image(args.source)
    dest = parse_image(args.destination)
    options = _copy_options(args)
    check_destination(dest)  # an impossible destination fails before any traffic
    if args.digestfile:
        parent = os.path.dirname(os.path.abspath(args.digestfile))
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
            raise UsageError(f"--digestfile {args.digestfile}: directory {parent} does not exist or is not writable")
    return common.run_async(lambda: _copy(args, src, dest, options), timeout=args.command_timeout)


def _clients(args: argparse.Namespace, src_ref: Any, dest_ref: Any) -> tuple[Any, Any]:
    """The registry clients for both sides.

    One client (one connection pool, token cache and concurrency limit per host) serves both
    sides, with per-host settings; only a copy inside one registry with different settings for
    each side needs two.
    """
    from dataclasses import replace

    from regtool.registry import RegistryClient

    src_opts = common.registry_options(args, "src")
    dest_opts = common.registry_options(args, "dest")
    base = common.client_options(args, src_opts)
    src_reg = src_ref.reference.registry if src_ref.reference is not None else None
    dest_reg = dest_ref.reference.registry if dest_ref.reference is not None else None
    if src_reg is not None and src_reg == dest_reg and src_opts != dest_opts:
        return RegistryClient(base), RegistryClient(replace(base, default=dest_opts))
    per_host = dict(base.per_host)
    if dest_reg is not None:
        per_host[dest_reg] = dest_opts
    if src_reg is not None:
        per_host[src_reg] = src_opts
    shared = RegistryClient(replace(base, default=src_opts if src_reg else dest_opts, per_host=per_host))
    return shared, shared


async def _copy(args: argparse.Namespace, src_ref: Any, dest_ref: Any, options: Any) -> int:
    from regtool.cli.progress import RichProgress, make_progress
    from regtool.copy import Copier, check_source, copy_with_retries
    from regtool.transports import open_destination, open_source

    progress = make_progress(bool(args.quiet))
    src_client, dest_client = _clients(args, src_ref, dest_ref)
    try:
        from regtool.cli.sign_cmd import run_gate  # --require-signed: verify first, pin the verified digest

        src_ref = await run_gate(args, src_ref, src_client)

        async def once() -> Any:
            async with await open_source(src_ref, client=src_client) as source:
                if dest_ref.transport == "dir":
                    await check_source(source)  # opening a dir: destination empties it: source first
                async with await open_destination(dest_ref, client=dest_client, source_ref=src_ref) as destination:
                    return await Copier(options, progress=progress).copy(source, destination)

        ctx = progress if isinstance(progress, RichProgress) else contextlib.nullcontext()
        with ctx:
            result = await copy_with_retries(once, args.retry_times, args.retry_delay)
    finally:
        await src_client.aclose()
        if dest_client is not src_client:
            await dest_client.aclose()
    if args.digestfile:
        with open(args.digestfile, "w", encoding="utf-8") as fh:
            fh.write(result.digest)
    if not args.quiet:
        if result.action == "skipped":
            sys.stderr.write(f"Destination already has {result.digest}; nothing to copy\n")
        else:
            sys.stderr.write(
                f"Copied {result.digest}: {result.blobs_copied} blobs copied, {result.blobs_mounted} mounted, "
                f"{result.blobs_skipped} already present, {result.bytes_copied} bytes\n"
            )
        for name in result.attachments:
            sys.stderr.write(f"Copied attached artifact {name}\n")
        if result.signatures:
            sys.stderr.write(f"Copied {result.signatures} signature(s)\n")
    for note in result.notes:  # warnings: shown even with --quiet
        sys.stderr.write(f"Note: {note}\n")
    return 0


async def _delete(args: argparse.Namespace) -> int:
    from regtool.errors import NotFound, UsageError
    from regtool.reference import parse_image
    from regtool.registry import RegistryClient

    image = parse_image(args.image)
    if image.transport != "docker" or image.reference is None:
        raise UsageError(f"delete supports docker:// images only, not {args.image!r}")
    ref = image.reference
    async with RegistryClient(common.client_options(args, common.registry_options(args))) as client:
        if not ref.digest:
            desc = await client.head_manifest(ref)
            if desc is None:
                raise NotFound(f"image {ref} not found")
            ref = ref.with_digest(desc.digest)  # head_manifest GETs when no digest header came
        await client.delete_manifest(ref.repo_only().with_digest(ref.digest or ""))
    sys.stderr.write(f"Deleted {ref.repo_only().name}@{ref.digest}\n")
    return 0
