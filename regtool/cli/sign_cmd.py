"""generate-key, sign and verify: cosign-compatible signatures; also the flags of copy's signature gate."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from regtool.cli import common

if TYPE_CHECKING:
    from regtool.reference import ImageRef
    from regtool.registry import RegistryClient
    from regtool.signing.gate import ManifestVerification, SigstoreTrust
    from regtool.signing.verify import VerifiedSignature, VerifyPolicy

GENERATE_EXAMPLES = """\
  COSIGN_PASSWORD=... regtool generate-key                       # cosign.key / cosign.pub
  regtool generate-key --output-key-prefix release --legacy      # for older skopeo/podman
"""

SIGN_EXAMPLES = """\
  regtool sign --key cosign.key docker://registry.example.com/app:1.0
  regtool sign --key cosign.key -a git-sha=abc123 --bundle-format both docker://reg/app:1.0
  regtool sign --keyless docker://ghcr.io/org/app:v1           # in CI: OIDC token from the environment
  regtool sign --key cosign.key --identity registry.example.com/app:1.0 dir:/mnt/usb/app
"""

VERIFY_EXAMPLES = """\
  regtool verify --key cosign.pub docker://registry.example.com/app:1.0
  regtool verify --certificate-identity-regexp '^https://github.com/org/' \\
      --certificate-oidc-issuer https://token.actions.githubusercontent.com docker://ghcr.io/org/app:v1
  regtool verify --key cosign.pub --signed-identity registry.example.com/app:1.0 dir:/mnt/usb/app
  regtool verify --ca-roots roots.pem --certificate-identity ci@example.com oci:/export:app
"""


#: Choices the parser offers; the library's own tuples are the truth (a test keeps them equal),
#: repeated here so building the parser never imports the crypto stack.
IDENTITY_MATCHES = ("exact", "repo-digest-or-exact", "repository")
BUNDLE_FORMATS = ("legacy", "v3", "both")
DEFAULT_REKOR_URL = "https://rekor.sigstore.dev"


def _switch(group: Any, name: str, help: str) -> None:
    """A boolean flag: bare ``--flag`` is true; cosign's ``--flag=true`` / ``--flag=false`` also work."""
    common.bool_flag(group, name, help, default=False)


def _add_policy_flags(group: Any) -> None:
    group.add_argument("--key", metavar="FILE", help="trusted public key(s) (PEM; several PUBLIC KEY blocks allowed)")
    group.add_argument("--certificate-identity", metavar="ID", help="keyless/PKI: the certificate's exact identity")
    group.add_argument("--certificate-identity-regexp", metavar="RE", help="keyless/PKI: identity regexp (search)")
    group.add_argument("--certificate-oidc-issuer", metavar="URL", help="keyless: the exact OIDC issuer")
    group.add_argument("--certificate-oidc-issuer-regexp", metavar="RE", help="keyless: OIDC issuer regexp")
    group.add_argument("--trusted-root", metavar="FILE",
                       help="Sigstore trusted-root JSON (default: the public-good root, offline)")
    group.add_argument("--fulcio-root", metavar="FILE", help="Fulcio CA certificates (PEM), as policy.json takes them")
    group.add_argument("--rekor-public-key", metavar="FILE", help="Rekor public key(s) (PEM)")
    group.add_argument("--ca-roots", metavar="FILE", help="private PKI: root certificates (PEM); no transparency log")
    group.add_argument("--ca-intermediates", metavar="FILE", help="private PKI: intermediate certificates (PEM)")
    _switch(group, "--require-tlog", "key signatures must carry a verified Rekor entry")
    _switch(group, "--insecure-ignore-tlog", "do not check Rekor entries of key signatures (cosign compatibility)")
    group.add_argument("--signed-identity", metavar="REF",
                       help="require the signature to name REF (containers policy rules, see --identity-match)")
    group.add_argument("--identity-match", choices=IDENTITY_MATCHES, default="repo-digest-or-exact",
                       help="how --signed-identity matches (default repo-digest-or-exact)")


def add_parsers(sub: Any) -> None:
    p = common.add_command(
        sub,
        "generate-key",
        "write a cosign key pair (PREFIX.key, PREFIX.pub)",
        "Writes an ECDSA P-256 key pair in cosign's format: PREFIX.key (mode 0600, encrypted with scrypt +\n"
        "NaCl secretbox, password from COSIGN_PASSWORD or a prompt) and PREFIX.pub (PEM PUBLIC KEY).",
        GENERATE_EXAMPLES,
    )
    p.add_argument("--output-key-prefix", metavar="PREFIX", default="cosign", help="file name prefix (default cosign)")
    _switch(p, "--legacy", "ENCRYPTED COSIGN PRIVATE KEY with scrypt N=32768, for older skopeo/podman")
    _switch(p, "--force", "replace existing key files")

    p = common.add_command(
        sub,
        "sign",
        "sign an image (cosign-compatible; key or keyless)",
        "Signs IMAGE's manifest (and, for a multi-platform image, every platform manifest unless\n"
        "--no-recursive). legacy: a simple-signing payload naming registry/repo:tag appended to the\n"
        "sha256-<hex>.sig manifest (or a dir: signature-N file), read by cosign v2/v3, skopeo and podman;\n"
        "v3: a Sigstore bundle attached as an OCI 1.1 referrer (cosign v3's default). A payload already\n"
        "signed by the same key or identity is not signed again. Nothing is sent to a transparency log\n"
        "with --key unless --tlog-upload; --keyless always logs in Rekor.",
        SIGN_EXAMPLES,
    )
    p.add_argument("image", metavar="IMAGE", help="docker://REF, oci:PATH[:REF] or dir:PATH")
    p.add_argument("--key", metavar="FILE", help="cosign private key (password from COSIGN_PASSWORD or a prompt)")
    _switch(p, "--keyless", "sign with a Fulcio certificate for your OIDC identity (Sigstore public good)")
    p.add_argument("-a", "--annotations", action="append", default=[], metavar="KEY=VALUE",
                   help="add to the payload's optional map (repeatable)")
    p.add_argument("--identity", metavar="REF", help="name to sign (default: IMAGE's registry/repo:tag)")
    _switch(p, "--no-recursive", "sign only the index of a multi-platform image")
    p.add_argument("--bundle-format", choices=BUNDLE_FORMATS, default="legacy",
                   help="legacy (.sig, default), v3 (bundle referrer) or both")
    _switch(p, "--tlog-upload", "with --key: also log each signature in Rekor")
    p.add_argument("--rekor-url", metavar="URL", default=DEFAULT_REKOR_URL, help="Rekor for --tlog-upload")
    p.add_argument("--output", choices=("text", "json"), default="text", help="result format on stdout")
    common.add_auth_flags(p)

    p = common.add_command(
        sub,
        "verify",
        "verify an image's signatures (cosign-compatible)",
        "Finds IMAGE's legacy signatures (sha256-<hex>.sig layers, dir: signature-N files) and Sigstore bundle\n"
        "referrers and verifies each: the signature over the payload, the payload's strict form, the manifest\n"
        "digest, the signed identity (reported; enforced with --signed-identity), Rekor entries, the certificate\n"
        "chain and identity, and -a annotations. Prints each accepted signature's format and signer; exits 1\n"
        "with each rejection's reason when none is accepted.",
        VERIFY_EXAMPLES,
    )
    p.add_argument("image", metavar="IMAGE", help="docker://REF, oci:PATH[:REF], oci-archive:FILE[:REF] or dir:PATH")
    g = p.add_argument_group("trust")
    _add_policy_flags(g)
    p.add_argument("-a", "--annotations", action="append", default=[], metavar="KEY=VALUE",
                   help="require this annotation in the payload (repeatable)")
    _switch(p, "--recursive", "also verify every platform manifest of a multi-platform image")
    p.add_argument("--output", choices=("text", "json"), default="text", help="result format on stdout")
    common.add_auth_flags(p)


# --------------------------------------------------------------------------- shared helpers


def _annotations(items: list[str]) -> dict[str, str]:
    from regtool.errors import UsageError

    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"invalid annotation {item!r} (use KEY=VALUE)")
        out[key] = value
    return out


def policy_from_args(args: argparse.Namespace) -> tuple[VerifyPolicy, SigstoreTrust]:
    """The verification policy and Sigstore trust the verify (or copy gate) flags describe."""
    from regtool.signing.policy import build_policy

    return build_policy(
        key=args.key,
        certificate_identity=args.certificate_identity,
        certificate_identity_regexp=args.certificate_identity_regexp,
        certificate_oidc_issuer=args.certificate_oidc_issuer,
        certificate_oidc_issuer_regexp=args.certificate_oidc_issuer_regexp,
        trusted_root=args.trusted_root,
        fulcio_root=args.fulcio_root,
        rekor_public_key=args.rekor_public_key,
        ca_roots=args.ca_roots,
        ca_intermediates=args.ca_intermediates,
        require_tlog=bool(args.require_tlog),
        insecure_ignore_tlog=bool(args.insecure_ignore_tlog),
        signed_identity=args.signed_identity,
        identity_match=args.identity_match,
        annotations=_annotations(getattr(args, "annotations", None) or []),
    )


def _verified_json(source: str, v: VerifiedSignature) -> dict[str, Any]:
    return {
        "Format": "legacy" if v.source_format == "simplesigning" else "bundle",
        "Source": source,
        "Signer": v.signer,
        "KeyFingerprint": v.key_fingerprint,
        "CertificateIdentity": v.cert_identity,
        "CertificateIssuer": v.cert_issuer,
        "SignedIdentity": v.docker_reference,
        "ManifestDigest": v.manifest_digest,
        "IntegratedTime": v.integrated_time,
        "LogIndex": v.log_index,
        "Annotations": dict(v.optional) if v.optional is not None else None,
    }


def _describe(source: str, v: VerifiedSignature) -> str:
    fmt = "legacy" if v.source_format == "simplesigning" else "bundle"
    text = f"{v.manifest_digest}: accepted {fmt} signature ({source}) by {v.signer}"
    if v.docker_reference:
        text += f"; signed identity {v.docker_reference}"
    if v.integrated_time is not None:
        text += f"; logged in Rekor (index {v.log_index})"
    return text


# --------------------------------------------------------------------------- the copy gate


GATE_FLAGS = (
    "key", "certificate_identity", "certificate_identity_regexp", "certificate_oidc_issuer",
    "certificate_oidc_issuer_regexp", "trusted_root", "fulcio_root", "rekor_public_key", "ca_roots",
    "ca_intermediates", "signed_identity",
)


def add_gate_flags(parser: argparse.ArgumentParser) -> None:
    """The ``copy`` flags of the signature gate (one argument group)."""
    g = parser.add_argument_group(
        "signature gate",
        "refuse to copy unless the source has a signature accepted by these rules (same flags as verify)",
    )
    _switch(g, "--require-signed", "copy only images with an accepted signature (on the index of a multi-platform "
                                   "image)")
    _switch(g, "--recursive", "with --require-signed: every platform manifest must be signed too")
    _add_policy_flags(g)


async def run_gate(args: argparse.Namespace, image: ImageRef, client: RegistryClient) -> ImageRef:
    """Apply ``--require-signed``: verify the source, and return it pinned to the verified digest.

    Without ``--require-signed`` the image is returned unchanged (the gate's
    trust flags alone are a usage error, so a forgotten flag never skips the check).
    """
    from regtool.errors import UsageError

    if not getattr(args, "require_signed", False):
        given = [f"--{n.replace('_', '-')}" for n in GATE_FLAGS if getattr(args, n, None)]
        if given or getattr(args, "recursive", False) or getattr(args, "require_tlog", False):
            raise UsageError(f"{', '.join(given) or 'signature gate flags'} need --require-signed")
        return image
    # Only now: the crypto stack costs a plain copy ~0.1 s of CPU it does not need.
    from regtool.reference import ImageRef
    from regtool.signing.gate import require_signed
    from regtool.signing.storage import resolve_top
    from regtool.transports import open_source

    policy, trust = policy_from_args(args)
    async with await open_source(image, client=client) as source:
        top = await resolve_top(source)
        accepted = await require_signed(source, top.digest, policy, bool(args.recursive), trust=trust)
    if not getattr(args, "quiet", False):
        for v in accepted:
            sys.stderr.write(f"Signature gate: {_describe('stored signature', v)}\n")
    if image.transport == "docker" and image.reference is not None:
        return ImageRef("docker", reference=image.reference.with_digest(top.digest))
    return image


# --------------------------------------------------------------------------- commands


def run(args: argparse.Namespace) -> int:
    if args.command == "generate-key":
        return _generate_key(args)
    if args.command == "sign":
        return _sign(args)
    return _verify(args)


def _generate_key(args: argparse.Namespace) -> int:
    from regtool.signing.keys import password_from_env_or_prompt, write_keypair

    password = password_from_env_or_prompt(confirm=True)
    key_path, pub_path = write_keypair(args.output_key_prefix, password, legacy=args.legacy, force=args.force)
    sys.stderr.write(f"Private key written to {key_path}\nPublic key written to {pub_path}\n")
    return 0


def _sign(args: argparse.Namespace) -> int:
    from regtool.errors import UsageError
    from regtool.reference import parse_image
    from regtool.signing.policy import build_signer
    from regtool.signing.sign import SignOptions, signing_identity

    image = parse_image(args.image)
    if image.transport not in ("docker", "oci", "dir"):
        raise UsageError(f"sign supports docker://, oci: and dir: images, not {image.transport}:")
    if bool(args.key) == bool(args.keyless):
        raise UsageError("sign needs exactly one of --key FILE and --keyless")
    identity = signing_identity(image, args.identity)
    options = SignOptions(
        identity=identity,
        annotations=_annotations(args.annotations),
        recursive=not args.no_recursive,
        bundle_format=args.bundle_format,
    )
    if options.bundle_format != "legacy" and image.transport == "dir":
        raise UsageError("dir: images have no place for Sigstore bundles (use --bundle-format legacy)")
    signer = build_signer(
        key=args.key or None,
        keyless=bool(args.keyless),
        tlog_upload=bool(args.tlog_upload),
        rekor_url=args.rekor_url,
        bundle_format=options.bundle_format,
    )
    try:
        return common.run_async(lambda: _sign_async(args, image, signer, options, identity),
                                timeout=args.command_timeout)
    finally:
        signer.close()


async def _sign_async(args: argparse.Namespace, image: ImageRef, signer: Any, options: Any, identity: str) -> int:
    from regtool.registry import RegistryClient
    from regtool.signing.sign import sign_image
    from regtool.signing.storage import open_signature_store

    async with RegistryClient(common.client_options(args, common.registry_options(args))) as client:
        store = await open_signature_store(image, client)
        try:
            result = await sign_image(store, signer, options, identity=identity, image_name=str(image))
        finally:
            await store.close()
    for m in result.manifests:
        if m.action == "added":
            sys.stderr.write(f"Signed {m.digest} ({m.format}) as {m.identity} with {result.signer}\n")
        else:
            sys.stderr.write(f"{m.digest} is already signed ({m.format}) as {m.identity} by {result.signer}\n")
    if args.output == "json":
        common.print_json({
            "Image": result.image,
            "Digest": result.digest,
            "Identity": result.identity,
            "Signer": result.signer,
            "Manifests": [{"Digest": m.digest, "Format": m.format, "Action": m.action} for m in result.manifests],
        })
    return 0


def _verify(args: argparse.Namespace) -> int:
    from regtool.reference import parse_image

    image = parse_image(args.image)
    policy, trust = policy_from_args(args)
    return common.run_async(lambda: _verify_async(args, image, policy, trust), timeout=args.command_timeout)


async def _verify_async(args: argparse.Namespace, image: ImageRef, policy: Any, trust: Any) -> int:
    from regtool.errors import VerificationError
    from regtool.registry import RegistryClient
    from regtool.signing.gate import verify_image
    from regtool.signing.storage import resolve_top
    from regtool.transports import open_source

    opts = common.client_options(args, common.registry_options(args))
    async with RegistryClient(opts) as client, await open_source(image, client=client) as source:
        top = await resolve_top(source)
        results: list[ManifestVerification] = await verify_image(
            source, top.digest, policy, recursive=args.recursive, trust=trust
        )
    ok = all(r.ok for r in results)
    if args.output == "json":
        common.print_json({
            "Image": str(image),
            "Digest": top.digest,
            "Verified": ok,
            "Manifests": [
                {
                    "Digest": r.digest,
                    "Accepted": [_verified_json(s, v) for s, v in r.accepted],
                    "Rejected": [{"Source": x.source, "Reason": x.reason} for x in r.rejected],
                }
                for r in results
            ],
        })
    else:
        for r in results:
            for s, v in r.accepted:
                sys.stdout.write(_describe(s, v) + "\n")
        sys.stdout.flush()
    for r in results:
        for x in r.rejected:
            sys.stderr.write(f"regtool: rejected {r.digest} {x.source}: {x.reason}\n")
    failed = [r for r in results if not r.ok]
    if failed:
        first = failed[0]
        what = "no signatures found" if not first.rejected else "no accepted signature"
        raise VerificationError(f"{what} for {image} ({first.digest})")
    return 0
