"""Start-up cost: a run builds only its own command's parser and imports only the transports it uses."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys

import pytest

from regtool.cli.main import COMMANDS, build_parser, command_in
from tests.support.images import push_oci_image
from tests.support.registries import Registry


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["copy", "docker://a/b:1", "docker://c/d:1"], "copy"),
        (["--debug", "--log-format", "json", "sync", "--config", "x.yaml"], "sync"),
        (["--override-arch=arm64", "--debug=false", "inspect", "docker://a/b"], "inspect"),
        (["--command-timeout", "5", "delete", "docker://a/b:1"], "delete"),
        (["--override-os", "copy", "sync"], "sync"),  # "copy" is the flag's value
        ([], None),
        (["--help"], None),  # --help before the command prints the top-level help: every command
        (["--version", "copy"], None),
        (["--log-f", "json", "copy"], None),  # abbreviations: argparse decides
        (["--", "copy"], None),
        (["no-such-command"], None),
    ],
)
def test_command_in_names_the_command_only_when_plain(argv: list[str], expected: str | None) -> None:
    assert command_in(argv) == expected


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    return {name for a in parser._actions if isinstance(a, argparse._SubParsersAction) for name in a.choices}


def _help(parser: argparse.ArgumentParser, args: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        parser.parse_args(args)
    return out.getvalue()


def test_one_command_builds_only_its_module_with_the_same_help() -> None:
    full = build_parser()
    assert _commands(full) == set(COMMANDS)
    for command, module in COMMANDS.items():
        one = build_parser(command)
        assert _commands(one) == {c for c, m in COMMANDS.items() if m == module}
        args = ["--override-arch", "arm64", command, "--help"]
        assert _help(full, args) == _help(one, args)


#: Never needed by a copy between two registries (stderr not a TTY, no --require-signed).
NOT_FOR_REGISTRY_COPY = (
    "tarfile",
    "platform",
    "getpass",
    "yaml",
    "rich",
    "cryptography",
    "nacl",
    "regtool.transports.layout",
    "regtool.transports.dirlayout",
    "regtool.signing",
    "regtool.sync",
    "regtool.cli.sync_cmd",
    "regtool.cli.login_cmd",
    "regtool.cli.inspect_cmd",
)


def test_registry_to_registry_copy_imports_no_local_transport(registry_plain: Registry, repo: str) -> None:
    push_oci_image(registry_plain, repo, "a")
    src = f"docker://{registry_plain.host}/{repo}:a"
    dest = f"docker://{registry_plain.host}/{repo}-copy:a"
    code = (
        "import sys\n"
        "from regtool.cli.main import main\n"
        "flags = ['--src-tls-verify=false', '--dest-tls-verify=false']\n"
        "codes = [main(['copy', *flags, sys.argv[1], sys.argv[2]]) for _ in range(2)]  # a copy, then a no-op\n"
        f"loaded = [m for m in {NOT_FOR_REGISTRY_COPY!r} if m in sys.modules]\n"
        "print(codes, ','.join(loaded))\n"
    )
    env = dict(os.environ, REGISTRY_AUTH_FILE="/nonexistent/regtool-test-auth.json",
               CONTAINERS_REGISTRIES_CONF="/dev/null")
    out = subprocess.run([sys.executable, "-c", code, src, dest], capture_output=True, text=True, env=env,
                         stdin=subprocess.DEVNULL, check=False, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0, 0]", f"imported: {out.stdout.strip()}\n{out.stderr}"
    assert "nothing to copy" in out.stderr
