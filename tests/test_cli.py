"""Command-line contract: help for every command, global flags anywhere, login/logout round trip."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from regtool.cli.main import COMMANDS
from tests.support.cli import run_regtool
from tests.support.images import push_index, push_oci_image
from tests.support.registries import Registry


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help_with_examples(command: str) -> None:
    out = run_regtool([command, "--help"])
    assert out.rc == 0, out.stderr
    assert "examples:" in out.text and f"regtool {command}" in out.text


def test_top_level_help_and_version() -> None:
    out = run_regtool(["--help"])
    assert out.rc == 0 and "exit codes" in out.text
    version = run_regtool(["--version"])
    assert version.rc == 0 and version.text.startswith("regtool version ")


def test_no_command_is_a_usage_error() -> None:
    out = run_regtool([])
    assert out.rc == 2


def test_unknown_flag_is_exit_2_one_line_no_traceback() -> None:
    out = run_regtool(["inspect", "--no-such-flag", "docker://a/b"])
    assert out.rc == 2 and "Traceback" not in out.stderr


def test_global_flags_before_or_after_the_command(registry_plain: Registry, repo: str) -> None:
    push_index(registry_plain, repo, "m")
    ref = f"docker://{registry_plain.host}/{repo}:m"
    before = run_regtool(["--override-arch", "arm64", "--debug=false", "inspect", "--tls-verify=false", ref])
    after = run_regtool(["inspect", "--tls-verify=false", ref, "--override-arch", "arm64", "--debug"])
    assert before.rc == 0 and after.rc == 0, before.stderr + after.stderr
    assert before.json["Architecture"] == after.json["Architecture"] == "arm64"
    assert "GET" in after.stderr  # --debug logs requests to stderr, never to stdout
    assert json.loads(after.stdout)["Digest"] == before.json["Digest"]


def test_bare_boolean_flag_keeps_the_next_word_positional(registry_plain: Registry, repo: str) -> None:
    push_oci_image(registry_plain, repo, "t")
    out = run_regtool(["inspect", "--no-tags", "--tls-verify=false", f"docker://{registry_plain.host}/{repo}:t"])
    assert out.rc == 0, out.stderr
    assert out.json["RepoTags"] == []


def test_login_stores_where_skopeo_reads_and_logout_removes(
    registry_basic: Registry, repo: str, tmp_path: Path
) -> None:
    push_oci_image(registry_basic, repo, "x")
    authfile = tmp_path / "auth.json"
    cert = ["--cert-dir", str(registry_basic.cert_dir)]
    bad = run_regtool(["login", *cert, "-u", "tester", "--password-stdin", registry_basic.host],
                      input=b"wrong\n", authfile=str(authfile))
    assert bad.rc == 1 and not authfile.exists()
    ok = run_regtool(["login", *cert, "-u", registry_basic.username or "", "--password-stdin", registry_basic.host],
                     input=(registry_basic.password or "").encode() + b"\n", authfile=str(authfile))
    assert ok.rc == 0, ok.stderr
    assert stat.S_IMODE(os.stat(authfile).st_mode) == 0o600
    assert (registry_basic.password or "") not in ok.stderr
    # the stored credential is used without flags, by regtool and by skopeo
    inspect = run_regtool(["inspect", *cert, f"docker://{registry_basic.host}/{repo}:x"], authfile=str(authfile))
    assert inspect.rc == 0, inspect.stderr
    from tests.support import run_skopeo

    run_skopeo(["inspect", *cert, f"docker://{registry_basic.host}/{repo}:x"], authfile=str(authfile))
    who = run_regtool(["login", "--get-login", registry_basic.host], authfile=str(authfile))
    assert who.text.strip() == registry_basic.username
    out = run_regtool(["logout", registry_basic.host], authfile=str(authfile))
    assert out.rc == 0
    again = run_regtool(["inspect", *cert, f"docker://{registry_basic.host}/{repo}:x"], authfile=str(authfile))
    assert again.rc == 1


def test_sign_cli_choices_match_the_library() -> None:
    from regtool.cli import sign_cmd
    from regtool.signing import sign, verify

    assert sign_cmd.IDENTITY_MATCHES == verify.IDENTITY_MATCHES
    assert sign_cmd.BUNDLE_FORMATS == sign.BUNDLE_FORMATS
    assert sign_cmd.DEFAULT_REKOR_URL == sign.DEFAULT_REKOR_URL


def test_help_starts_fast_without_heavy_imports() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from regtool.cli.main import build_parser; build_parser().format_help(); "
        "mods = ('httpx', 'anyio', 'cryptography', 'sigstore', 'rich', 'yaml', 'nacl', 'logging', 'getpass'); "
        "heavy = [m for m in mods if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"--help imports {out.stdout.strip()}"
