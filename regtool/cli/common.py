"""Shared CLI plumbing: global and auth/TLS flags, logging, exit codes, signals, output."""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from regtool.manifest import Platform
    from regtool.registry.options import ClientOptions, RegistryOptions


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "t"):
        return True
    if value in ("false", "0", "no", "f"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {text!r} (use true or false)")


def normalise_bool_flags(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """Turns a bare ``--tls-verify`` into ``--tls-verify=true`` so the next word stays a positional.

    Boolean flags take skopeo's ``--flag=false`` spelling; which words are boolean flags depends on
    the command (``--config`` is one for inspect, not for sync), so the parsers are asked.
    """
    sub_parsers: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub_parsers = dict(action.choices)
    flags = _bool_options(parser)
    out: list[str] = []
    for i, word in enumerate(argv):
        if word == "--":
            return out + argv[i:]
        if word in sub_parsers and not any(w in sub_parsers for w in out):
            flags = flags | _bool_options(sub_parsers[word])
        out.append(f"{word}=true" if word in flags else word)
    return out


def _bool_options(parser: argparse.ArgumentParser) -> set[str]:
    return {opt for action in parser._actions if action.type is parse_bool for opt in action.option_strings}


def bool_flag(parser: argparse.ArgumentParser | Any, name: str, help: str, default: Any = None) -> None:
    parser.add_argument(name, type=parse_bool, metavar="BOOL", default=default, help=help)


@functools.cache
def global_flags(suppress: bool) -> argparse.ArgumentParser:
    """Flags accepted before or after the command (suppressed defaults on subcommands).

    Built once per variant: every subcommand parser takes the same one as a parent.
    """
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("global flags")
    d: Any = argparse.SUPPRESS if suppress else None
    g.add_argument("--debug", type=parse_bool, metavar="BOOL", default=d if suppress else False,
                   help="log requests and decisions to stderr (never secrets)")
    g.add_argument("--log-format", choices=("text", "json"), default=d if suppress else "text",
                   help="stderr log format (json for log shippers)")
    g.add_argument("--override-os", metavar="OS", default=d, help="use OS instead of the host's for choosing images")
    g.add_argument("--override-arch", metavar="ARCH", default=d, help="use ARCH instead of the host's")
    g.add_argument("--override-variant", metavar="VARIANT", default=d, help="use VARIANT instead of the host's")
    g.add_argument("--command-timeout", metavar="SECONDS", type=float, default=d,
                   help="give up on the whole command after SECONDS")
    g.add_argument("--max-retry-wait", metavar="SECONDS", type=float, default=d if suppress else 900.0,
                   help="longest Retry-After regtool waits out (default 900)")
    return p


def add_auth_flags(parser: argparse.ArgumentParser, prefix: str = "", what: str = "the registry") -> None:
    """skopeo's per-side auth and TLS flags: --creds, --authfile, --tls-verify, --cert-dir ..."""
    dash = f"--{prefix}-" if prefix else "--"
    g = parser.add_argument_group(f"{prefix + ' ' if prefix else ''}auth and TLS")
    g.add_argument(f"{dash}creds", metavar="USER[:PASS]", help=f"credentials for {what}")
    g.add_argument(f"{dash}username", metavar="USER", help=f"user name for {what}")
    g.add_argument(f"{dash}password", metavar="PASS", help=f"password for {what}")
    g.add_argument(f"{dash}registry-token", metavar="TOKEN", help=f"bearer token for {what}")
    g.add_argument(f"{dash}authfile", metavar="PATH", help="auth.json to read instead of the default search")
    bool_flag(g, f"{dash}no-creds", f"access {what} anonymously", default=False)
    g.add_argument(f"{dash}cert-dir", metavar="DIR", help="directory with *.crt CAs and *.cert/*.key client pairs")
    bool_flag(g, f"{dash}tls-verify", "verify TLS (false also allows plain HTTP, as skopeo)", default=None)


def registry_options(args: argparse.Namespace, prefix: str = "") -> RegistryOptions:
    """Builds the registry options one side of a command asked for."""
    from regtool.errors import UsageError
    from regtool.registry.credentials import Credential, parse_creds
    from regtool.registry.options import RegistryOptions

    key = f"{prefix}_" if prefix else ""

    def get(name: str) -> Any:
        return getattr(args, key + name, None)

    creds, user, password, token = get("creds"), get("username"), get("password"), get("registry_token")
    if creds and (user or password):
        raise UsageError(f"--{prefix + '-' if prefix else ''}creds and --username/--password are mutually exclusive")
    credential = None
    if creds:
        credential = parse_creds(creds)
    elif user:
        credential = Credential(username=user, password=password or "")
    elif password:
        raise UsageError("--password needs --username")
    if token:
        credential = Credential(registry_token=token)
    if get("no_creds") and credential:
        raise UsageError("--no-creds cannot be combined with credentials")
    tls = get("tls_verify")
    if prefix and tls is None:
        tls = getattr(args, "tls_verify", None)
    return RegistryOptions(
        tls_verify=True if tls is None else bool(tls),
        cert_dir=get("cert_dir") or (getattr(args, "cert_dir", None) if prefix else None),
        credential=credential,
        no_creds=bool(get("no_creds")),
        authfile=get("authfile") or (getattr(args, "authfile", None) if prefix else None),
    )


def client_options(args: argparse.Namespace, default: RegistryOptions) -> ClientOptions:
    from regtool.registry.options import ClientOptions, RetryPolicy

    return ClientOptions(
        default=default,
        retry=RetryPolicy(max_wait=float(getattr(args, "max_retry_wait", 900.0) or 900.0)),
    )


def platform_from_args(args: argparse.Namespace) -> Platform:
    """The platform to pick from an index: the host's, or as --override-os/arch/variant say."""
    from regtool.manifest import Platform

    return Platform.host(
        os=getattr(args, "override_os", None),
        arch=getattr(args, "override_arch", None),
        variant=getattr(args, "override_variant", None),
    )


def platform_override(args: argparse.Namespace) -> Platform | None:
    """:func:`platform_from_args` when an --override-* flag was given, else None.

    None leaves the host's platform to the copier, which looks it up only when an index needs it.
    """
    overrides = ("override_os", "override_arch", "override_variant")
    return platform_from_args(args) if any(getattr(args, name, None) for name in overrides) else None


def setup_logging(args: argparse.Namespace) -> None:
    import json
    import logging  # here, not at the top: `regtool --help` never needs it

    class JsonFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return json.dumps(
                {"time": self.formatTime(record), "level": record.levelname.lower(),
                 "logger": record.name, "msg": record.getMessage()}
            )

    handler = logging.StreamHandler(sys.stderr)
    if getattr(args, "log_format", "text") == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger("regtool")
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(logging.DEBUG if getattr(args, "debug", False) else logging.WARNING)


def print_json(value: Any) -> None:
    """JSON on stdout, indented as skopeo prints it."""
    import json

    sys.stdout.write(json.dumps(value, indent=4, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def error(message: str) -> None:
    first = (message.strip().splitlines() or [""])[0]
    sys.stderr.write(f"regtool: error: {first}\n")


def run_async(fn: Callable[[], Awaitable[int]], timeout: float | None = None) -> int:
    """Runs ``fn`` under anyio; SIGINT/SIGTERM cancel it so cleanup (reports, cancelled uploads) runs.

    Returns 130 or 143 when a signal ended the run, else what ``fn`` returned.
    """
    import signal

    import anyio

    received: list[int] = []
    result: list[int] = []
    failure: list[BaseException] = []

    async def guarded() -> None:
        try:
            if timeout:
                with anyio.fail_after(timeout):
                    result.append(await fn())
            else:
                result.append(await fn())
        except Exception as exc:  # re-raised outside the task group, unwrapped
            failure.append(exc)

    async def main() -> None:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        received.append(int(signum))
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch)
            await guarded()
            tg.cancel_scope.cancel()

    anyio.run(main)
    if failure and not received:
        if isinstance(failure[0], TimeoutError):
            from regtool.errors import RegtoolError

            raise RegtoolError(f"command timed out after {timeout:g}s (--command-timeout)")
        raise failure[0]
    if received:
        return 128 + received[0]
    return result[0] if result else 1


def run_command(args: argparse.Namespace) -> int:
    """Runs the chosen command, turning errors into one line on stderr and an exit code."""
    from regtool.cli.main import COMMANDS
    from regtool.errors import RegtoolError

    module = importlib.import_module(f"regtool.cli.{COMMANDS[args.command]}")
    try:
        return int(module.run(args))
    except RegtoolError as exc:
        error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except OSError as exc:
        error(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
        return 1


def add_command(
    sub: Any, name: str, summary: str, description: str, examples: str
) -> argparse.ArgumentParser:
    """A subcommand parser that also accepts the global flags after the command name."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[global_flags(suppress=True)],
    )
    return parser
