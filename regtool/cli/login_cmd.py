"""login and logout: credentials written where skopeo and podman read them."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from regtool.cli import common


def add_parsers(sub: Any) -> None:
    p = common.add_command(
        sub,
        "login",
        "log in to a registry and store the credential",
        "Checks the credential against the registry, then stores it in the auth file skopeo and\n"
        "podman use (${XDG_RUNTIME_DIR}/containers/auth.json, or --authfile / $REGISTRY_AUTH_FILE),\n"
        "mode 0600, written atomically; a credential helper configured for the registry is used instead.",
        "  regtool login -u alice registry.example.com\n"
        "  echo \"$TOKEN\" | regtool login -u bot --password-stdin ghcr.io\n"
        "  regtool login --get-login ghcr.io\n",
    )
    p.add_argument("registry", metavar="REGISTRY", help="registry host[:port]")
    p.add_argument("--username", "-u", metavar="USER")
    p.add_argument("--password", "-p", metavar="PASS", help="password (prefer --password-stdin)")
    common.bool_flag(p, "--password-stdin", "read the password from stdin", False)
    common.bool_flag(p, "--get-login", "print the user name stored for REGISTRY", False)
    p.add_argument("--authfile", metavar="PATH", help="auth file to write")
    p.add_argument("--cert-dir", metavar="DIR", help="CA and client certificates for the registry")
    common.bool_flag(p, "--tls-verify", "verify TLS (false also allows plain HTTP)", None)
    common.bool_flag(p, "--verify", "check the credential against the registry before storing (default true)", True)

    p = common.add_command(
        sub,
        "logout",
        "remove a stored credential",
        "Removes the registry's entry from the auth file (or asks its credential helper to erase it).",
        "  regtool logout registry.example.com\n  regtool logout --all\n",
    )
    p.add_argument("registry", metavar="REGISTRY", nargs="?")
    p.add_argument("--authfile", metavar="PATH", help="auth file to edit")
    p.add_argument("--all", "-a", action="store_true", help="remove every stored credential")


def run(args: argparse.Namespace) -> int:
    from regtool.errors import UsageError
    from regtool.registry import credentials

    if args.command == "logout":
        if not args.registry and not args.all:
            raise UsageError("logout needs a REGISTRY or --all")
        removed = credentials.logout(args.registry or "", authfile=args.authfile, all=args.all)
        if not removed and not args.all:
            raise UsageError(f"not logged in to {args.registry}")
        sys.stderr.write(f"Removed login credentials for {args.registry or 'all registries'}\n")
        return 0
    registry = _registry_name(args.registry)
    if args.get_login:
        user = credentials.get_login(registry, authfile=args.authfile)
        if user is None:
            raise UsageError(f"not logged in to {registry}")
        print(user)
        return 0
    username = args.username or _ask("Username: ")
    if args.password_stdin:
        if args.password:
            raise UsageError("--password and --password-stdin are mutually exclusive")
        password = sys.stdin.readline().rstrip("\r\n")
    elif args.password is not None:
        password = args.password
    else:
        import getpass

        password = getpass.getpass("Password: ")
    if not username or not password:
        raise UsageError("login needs a user name and a password")
    cred = credentials.Credential(username=username, password=password)
    if args.verify:
        common.run_async(lambda: _check(args, registry, cred))
    path = credentials.login(registry, cred, authfile=args.authfile)
    sys.stderr.write(f"Login Succeeded! (stored in {path})\n")
    return 0


def _registry_name(text: str) -> str:
    from regtool.errors import UsageError

    name = text.strip()
    for scheme in ("https://", "http://"):
        if name.startswith(scheme):
            name = name[len(scheme):]
    name = name.split("/", 1)[0]
    if not name or " " in name:
        raise UsageError(f"invalid registry {text!r}")
    return "docker.io" if name in ("index.docker.io", "registry-1.docker.io") else name


def _ask(prompt: str) -> str:
    sys.stderr.write(prompt)
    sys.stderr.flush()
    return sys.stdin.readline().strip()


async def _check(args: argparse.Namespace, registry: str, cred: Any) -> int:
    from regtool.registry import RegistryClient
    from regtool.registry.options import RegistryOptions

    opts = RegistryOptions(
        tls_verify=args.tls_verify is not False, cert_dir=args.cert_dir, credential=cred
    )
    async with RegistryClient(common.client_options(args, opts)) as client:
        await client.check_login(registry)
    return 0
