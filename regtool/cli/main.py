"""Entry point: parses the command line and dispatches to a command module.

Only argparse and the command modules (which import nothing heavy at module
level) load at start-up, so ``regtool --help`` stays fast; a run of one command
builds only that command's parser.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import TYPE_CHECKING, NoReturn

from regtool import __version__
from regtool.cli import common

if TYPE_CHECKING:
    from collections.abc import Sequence

#: command name → module under regtool.cli; each has ``add_parser`` and ``run``.
COMMANDS: dict[str, str] = {
    "inspect": "inspect_cmd",
    "digest": "inspect_cmd",
    "list-tags": "inspect_cmd",
    "manifest-digest": "inspect_cmd",
    "login": "login_cmd",
    "logout": "login_cmd",
    "copy": "copy_cmd",
    "delete": "copy_cmd",
    "sync": "sync_cmd",
    "generate-key": "sign_cmd",
    "sign": "sign_cmd",
    "verify": "sign_cmd",
}

EPILOG = """\
exit codes: 0 success; 1 runtime failure (registry or network error, 401/403,
verification rejected, some images failed); 2 usage, configuration or reference
error, or image/repository not found; 75 lock held (sync); 130 SIGINT; 143 SIGTERM.

Run `regtool COMMAND --help` for a command's flags and examples."""


class _Parser(argparse.ArgumentParser):
    """argparse with the one-line error every regtool failure has (subcommands inherit it)."""

    def error(self, message: str) -> NoReturn:
        common.error(f"{message} (see {self.prog} --help)")
        raise SystemExit(2)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line; with ``command``, the top level and only that command's module's parsers.

    Every subcommand parser costs a few milliseconds of CPU to build, which a short run (a no-op
    copy) would otherwise spend on commands it does not run.
    """
    parser = _Parser(
        prog="regtool",
        description="Inspect, copy, mirror, sign and verify container images in registries and layouts.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common.global_flags(suppress=False)],
    )
    parser.add_argument("--version", action="version", version=f"regtool version {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = [COMMANDS[command]] if command in COMMANDS else dict.fromkeys(COMMANDS.values())
    for module_name in modules:
        module = importlib.import_module(f"regtool.cli.{module_name}")
        module.add_parsers(sub)
    return parser


def command_in(argv: Sequence[str]) -> str | None:
    """The command ``argv`` runs, if that is plain before parsing: else None (build every parser).

    The command is the first word that is neither a global flag nor a global flag's value. Anything
    argparse might read differently (``--help``/``--version`` first, an abbreviated or unknown flag,
    ``--``) gives None, so the full parser decides and reports exactly as before.
    """
    value_flags: set[str] = set()
    bool_flags: set[str] = set()
    for action in common.global_flags(suppress=False)._actions:
        (bool_flags if action.type is common.parse_bool else value_flags).update(action.option_strings)
    words = iter(argv)
    for word in words:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
        if word in value_flags:
            next(words, None)
        elif word.split("=", 1)[0] not in value_flags | bool_flags:
            return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(command_in(words))
    args_list = common.normalise_bool_flags(parser, words)
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 for --help
        return int(exc.code or 0)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    common.setup_logging(args)
    return common.run_command(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
