"""inspect, digest, list-tags, manifest-digest: reading images without pulling layers."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from regtool.cli import common

#: The --format subset (regtool/cli/gotemplate.py implements it; kept here so --help imports nothing).
TEMPLATE_HELP = """\
--format takes a Go template (the text/template subset skopeo accepts):
  {{.Field}} {{.A.B}} {{.}} {{$}}      data; a missing key prints <no value>
  {{index .Labels "k"}} {{index .Layers 0}}
  {{if P}}..{{else if P}}..{{else}}..{{end}}   {{with P}}..{{else}}..{{end}}
  {{range P}}..{{else}}..{{end}}  {{range $i, $e := P}}  {{break}} {{continue}}
  {{$x := P}} {{$x = P}}  pipelines {{.X | json}}  {{/* comment */}}
  "{{- " and " -}}" trim the white space before/after an action
  functions: and or not eq ne lt le gt ge index len print printf println
             json join split upper lower title pad truncate
examples:
  --format '{{.Name}}@{{.Digest}}'
  --format '{{range .RepoTags}}{{.}}{{"\\n"}}{{end}}'
  --format '{{index .Labels "org.opencontainers.image.version"}} {{json .Env}}'"""

INSPECT_EXAMPLES = """\
  regtool inspect docker://docker.io/library/alpine:3.20
  regtool inspect --raw docker://ghcr.io/org/app@sha256:...
  regtool inspect --config --override-arch arm64 docker://quay.io/org/app:v1
  regtool inspect --format '{{.Digest}} {{index .Labels "version"}}' docker://localhost:5000/app:1
  regtool inspect --tls-verify=false --no-tags docker://127.0.0.1:5000/app:1
  regtool inspect oci:/mnt/export:app-1.0
"""


def add_parsers(sub: Any) -> None:
    p = common.add_command(
        sub,
        "inspect",
        "show an image's manifest, config and digest (no layers pulled)",
        "Prints skopeo inspect's JSON fields: Name, Digest, RepoTags, Created, DockerVersion, Labels,\n"
        "Architecture, Os, Variant, Layers, LayersData, Env. For a multi-platform image, Digest is the\n"
        "index's and the rest comes from the host's platform (or --override-*).\n\n" + TEMPLATE_HELP,
        INSPECT_EXAMPLES,
    )
    p.add_argument("image", metavar="IMAGE", help="docker://REF, oci:PATH[:REF], oci-archive:FILE[:REF] or dir:PATH")
    common.bool_flag(p, "--raw", "print the manifest (or with --config the config blob) exactly as stored", False)
    common.bool_flag(p, "--config", "print the image config (in OCI form unless --raw)", False)
    common.bool_flag(p, "--no-tags", "do not list the repository's tags", False)
    p.add_argument("--format", "-f", metavar="TEMPLATE", help="Go template for the output (see above)")
    common.add_auth_flags(p)

    p = common.add_command(
        sub,
        "digest",
        "print an image's manifest digest using a HEAD request",
        "Prints sha256:... for the named manifest. Uses a HEAD request (free of Docker Hub's pull\n"
        "quota) and falls back to GET only when the registry sends no Docker-Content-Digest.",
        "  regtool digest docker://docker.io/library/alpine:3.20\n"
        "  regtool digest --tls-verify=false docker://127.0.0.1:5000/app:1\n",
    )
    p.add_argument("image", metavar="IMAGE", help="docker://REF, oci:PATH[:REF] or dir:PATH")
    common.add_auth_flags(p)

    p = common.add_command(
        sub,
        "list-tags",
        "list a repository's tags (skopeo's JSON: Repository, Tags)",
        "Lists every tag, following the registry's pagination.",
        "  regtool list-tags docker://docker.io/library/alpine\n"
        "  regtool list-tags --creds user:pass docker://registry.example.com/team/app\n",
    )
    p.add_argument("image", metavar="REPOSITORY", help="docker://REPO (no tag or digest)")
    common.add_auth_flags(p)

    p = common.add_command(
        sub,
        "manifest-digest",
        "compute a manifest file's digest as skopeo does",
        "Hashes the file's bytes; schema1 signed manifests are hashed with their JWS signatures\n"
        "stripped, as Docker does.",
        "  regtool manifest-digest manifest.json\n",
    )
    p.add_argument("file", metavar="FILE", help="manifest file")


def run(args: argparse.Namespace) -> int:
    if args.command == "manifest-digest":
        return _manifest_digest(args.file)
    return common.run_async(lambda: _run_async(args), timeout=getattr(args, "command_timeout", None))


def _manifest_digest(path: str) -> int:
    from regtool.errors import UsageError
    from regtool.manifest import manifest_digest

    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    print(manifest_digest(data))
    return 0


async def _run_async(args: argparse.Namespace) -> int:
    from regtool.reference import parse_image
    from regtool.registry import RegistryClient
    from regtool.transports import open_source

    image = parse_image(args.image)
    if args.command == "list-tags":
        return await _list_tags(args, image)
    template = None
    if getattr(args, "format", None):
        from regtool.cli.gotemplate import compile_template, is_json_format, normalize_format

        if not is_json_format(args.format):  # skopeo prints indented JSON for these
            template = compile_template(normalize_format(args.format))  # fails before any traffic
    opts = common.registry_options(args)
    async with RegistryClient(common.client_options(args, opts)) as client:
        source = await open_source(image, client=client)
        async with source:
            if args.command == "digest":
                return await _digest(source)
            return await _inspect(args, image, source, template)


async def _digest(source: Any) -> int:
    head = getattr(source, "head", None)
    desc = await head() if head else None
    digest = desc.digest if desc is not None and desc.digest else (await source.get_manifest()).digest
    print(digest)
    return 0


async def _inspect(args: argparse.Namespace, image: Any, source: Any, template: Any) -> int:
    from regtool.inspect import inspect_image, oci_config, read_config, resolve

    platform = common.platform_from_args(args)
    if args.raw and not args.config:
        manifest = await source.get_manifest()
        sys.stdout.buffer.write(manifest.raw)
        sys.stdout.flush()
        return 0
    if args.config:
        resolved = await resolve(source, platform)
        raw = await read_config(source, resolved.image)
        if args.raw:
            if raw is not None:
                sys.stdout.buffer.write(raw)
            sys.stdout.flush()
            return 0
        common.print_json(oci_config(raw, resolved.image))
        return 0
    name = image.reference.repo_only().name if image.reference is not None else None
    data = await inspect_image(source, name=name, platform=platform, with_tags=not args.no_tags)
    if template is not None:
        sys.stdout.write(template.render(data))
        return 0
    common.print_json(data)
    return 0


async def _list_tags(args: argparse.Namespace, image: Any) -> int:
    from regtool.errors import UsageError
    from regtool.registry import RegistryClient

    if image.transport != "docker" or image.reference is None:
        raise UsageError(f"list-tags needs a docker:// repository, not {args.image!r}")
    ref = image.reference
    if ref.tag or ref.digest:
        raise UsageError(f"list-tags takes a repository without tag or digest: {args.image!r}")
    async with RegistryClient(common.client_options(args, common.registry_options(args))) as client:
        tags = await client.list_tags(ref)
    common.print_json({"Repository": ref.name, "Tags": tags})
    return 0
