"""Secrets never leak: every command, with known secrets, succeeding and failing, grepped.

Each run passes known secrets the ways users do (``--creds user:pass``, ``--username`` and
``--password``, ``--registry-token``, an auth.json holding them, ``COSIGN_PASSWORD``), with
``--debug`` on (text and JSON logs), against the real token and Basic-auth registries of the test
bed: runs that succeed, and runs that fail (wrong password, 401, a token the registry refuses,
an unknown host). All of stdout and stderr, plus any report file, is then searched for each
secret, for ``user:pass`` in base64 (what Basic auth sends), for the URL-quoted forms, and for
anything shaped like a JWT (what the token server hands out).

Also here: ``repr``/``str`` and formatted tracebacks of the exceptions a wrong credential raises,
log records of an authenticated run in-process, and the auth.json ``regtool login`` writes (0600
from the first instant, even with umask 0; replaced atomically; untouched when the login fails),
and the private key ``generate-key`` writes.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import stat
import subprocess
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

import anyio
import pytest

from regtool.reference import parse_reference
from regtool.registry import ClientOptions, Credential, RegistryClient, RegistryOptions, RetryPolicy
from regtool.registry.errors import Unauthorized
from tests.support.cli import Result, run_regtool
from tests.support.images import PushedImage, push_oci_image
from tests.support.registries import PASSWORD, USERNAME, Registry

WRONG = "Wr0ng-pass-5e1f9a"
TOKEN = "regtoken-SECRET-4d7b2c"
IDENTITY_TOKEN = "idtoken-SECRET-8a3c51"
COSIGN_PASSWORD = "cosign-pw-SECRET-2b9e"
SECRETS = (PASSWORD, WRONG, TOKEN, IDENTITY_TOKEN, COSIGN_PASSWORD)
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def leak_forms(secrets: Iterable[str] = SECRETS) -> dict[str, str]:
    """Every spelling of every secret that must not show up: raw, quoted, base64 (alone and as Basic)."""
    forms: dict[str, str] = {}
    for secret in secrets:
        forms[secret] = secret
        forms[f"quote({secret})"] = quote(secret, safe="")
        forms[f"b64({secret})"] = _b64(secret).rstrip("=")
        forms[f"b64({USERNAME}:{secret})"] = _b64(f"{USERNAME}:{secret}").rstrip("=")
    return forms


def assert_no_secrets(*texts: str | bytes, what: str = "output") -> None:
    text = "\n".join(t.decode(errors="replace") if isinstance(t, bytes) else t for t in texts)
    for name, form in leak_forms().items():
        assert form not in text, f"{name} leaked into {what}:\n{text[:3000]}"
    found = JWT.search(text)
    assert found is None, f"a JWT leaked into {what}: {found.group(0)[:20]}..."


def tls(reg: Registry, prefix: str = "") -> list[str]:
    return [f"--{prefix}cert-dir", str(reg.cert_dir)]


def creds(password: str = PASSWORD, prefix: str = "") -> list[str]:
    return [f"--{prefix}creds", f"{USERNAME}:{password}"]


DEBUG = ["--debug"]


@pytest.fixture(scope="module")
def images(registry_basic: Registry, registry_token: Registry) -> dict[str, PushedImage]:
    from tests.support.registries import repo_name

    repo = repo_name("secrets")
    return {
        "basic": push_oci_image(registry_basic, repo, "v1"),
        "token": push_oci_image(registry_token, repo, "v1"),
    }


@pytest.fixture
def regs(registry_basic: Registry, registry_token: Registry) -> dict[str, Registry]:
    return {"basic": registry_basic, "token": registry_token}


def ref(reg: Registry, img: PushedImage, tag: str = "v1") -> str:
    return f"docker://{reg.host}/{img.repository}:{tag}"


def run(args: list[str], **kw: object) -> Result:
    out = run_regtool(args, timeout=120, **kw)  # type: ignore[arg-type]
    assert "Traceback" not in out.stderr, out.stderr
    assert_no_secrets(out.stdout, out.stderr, what=" ".join(a for a in args if not a.startswith("/")))
    return out


# --------------------------------------------------------------------------- read-only commands


@pytest.mark.parametrize("kind", ["basic", "token"])
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_reading_commands_with_creds(
    regs: dict[str, Registry], images: dict[str, PushedImage], kind: str, log_format: str
) -> None:
    reg, img = regs[kind], images[kind]
    flags = [*DEBUG, "--log-format", log_format, *tls(reg)]
    for args in (
        ["inspect", *flags, *creds(), ref(reg, img)],
        ["inspect", *flags, "--username", USERNAME, "--password", PASSWORD, "--raw", ref(reg, img)],
        ["inspect", *flags, *creds(), "--config", ref(reg, img)],
        ["digest", *flags, *creds(), ref(reg, img)],
        ["list-tags", *flags, *creds(), f"docker://{reg.host}/{img.repository}"],
    ):
        out = run(args)
        assert out.rc == 0, out.stderr
    # the debug log really was on and talked about requests
    assert "DEBUG" in out.stderr or '"level": "debug"' in out.stderr


@pytest.mark.parametrize("kind", ["basic", "token"])
def test_wrong_password_fails_without_echoing_it(
    regs: dict[str, Registry], images: dict[str, PushedImage], kind: str
) -> None:
    reg, img = regs[kind], images[kind]
    for args in (
        ["inspect", *DEBUG, *tls(reg), *creds(WRONG), ref(reg, img)],
        ["digest", *DEBUG, *tls(reg), *creds(WRONG), ref(reg, img)],
        ["list-tags", *DEBUG, *tls(reg), "--username", USERNAME, "--password", WRONG,
         f"docker://{reg.host}/{img.repository}"],
        ["delete", *DEBUG, *tls(reg), *creds(WRONG), ref(reg, img)],
    ):
        out = run(args)
        assert out.rc == 1, out.stderr
        assert "401" in out.stderr or "nauthorized" in out.stderr


@pytest.mark.parametrize("kind", ["basic", "token"])
def test_refused_registry_token_is_not_echoed(
    regs: dict[str, Registry], images: dict[str, PushedImage], kind: str
) -> None:
    reg, img = regs[kind], images[kind]
    out = run(["inspect", *DEBUG, *tls(reg), "--registry-token", TOKEN, ref(reg, img)])
    assert out.rc == 1, out.stderr


def test_unknown_host_with_creds() -> None:
    for args in (
        ["inspect", *DEBUG, *creds(WRONG), "--command-timeout", "30", "docker://nonexistent.invalid/x/y:1"],
        ["list-tags", *DEBUG, "--registry-token", TOKEN, "--command-timeout", "30", "docker://nonexistent.invalid/x/y"],
    ):
        out = run(args)
        assert out.rc == 1, out.stderr
        assert "nonexistent.invalid" in out.stderr


def _authfile(path: Path, entries: dict[str, dict[str, str]]) -> str:
    path.write_text(json.dumps({"auths": entries}))
    path.chmod(0o600)
    return str(path)


def test_secrets_from_an_auth_file(
    regs: dict[str, Registry], images: dict[str, PushedImage], tmp_path: Path
) -> None:
    basic, token = regs["basic"], regs["token"]
    good = _authfile(tmp_path / "good.json", {basic.host: {"auth": _b64(f"{USERNAME}:{PASSWORD}")}})
    bad = _authfile(
        tmp_path / "bad.json",
        {
            basic.host: {"auth": _b64(f"{USERNAME}:{WRONG}")},
            token.host: {"identitytoken": IDENTITY_TOKEN},
        },
    )
    ok = run(["inspect", *DEBUG, *tls(basic), ref(basic, images["basic"])], authfile=good)
    assert ok.rc == 0, ok.stderr
    ok = run(["inspect", *DEBUG, *tls(basic), "--authfile", good, ref(basic, images["basic"])])
    assert ok.rc == 0, ok.stderr
    for reg, kind in ((basic, "basic"), (token, "token")):
        out = run(["inspect", *DEBUG, *tls(reg), "--authfile", bad, ref(reg, images[kind])])
        assert out.rc == 1, out.stderr


# --------------------------------------------------------------------------- commands that write


def test_copy_and_delete_with_creds_on_both_sides(
    regs: dict[str, Registry], images: dict[str, PushedImage]
) -> None:
    basic, token = regs["basic"], regs["token"]
    img = images["basic"]
    dest = f"docker://{token.host}/{img.repository}-copy:c1"
    out = run(["copy", *DEBUG, *tls(basic, "src-"), *creds(prefix="src-"), *tls(token, "dest-"),
               *creds(prefix="dest-"), ref(basic, img), dest])
    assert out.rc == 0, out.stderr
    failed = run(["copy", *DEBUG, *tls(basic, "src-"), *creds(prefix="src-"), *tls(token, "dest-"),
                  *creds(WRONG, prefix="dest-"), ref(basic, img), f"docker://{token.host}/{img.repository}-copy:c2"])
    assert failed.rc == 1, failed.stderr
    failed = run(["copy", *DEBUG, *tls(basic, "src-"), "--src-registry-token", TOKEN, *tls(token, "dest-"),
                  *creds(prefix="dest-"), ref(basic, img), f"docker://{token.host}/{img.repository}-copy:c3"])
    assert failed.rc == 1, failed.stderr
    deleted = run(["delete", *DEBUG, *tls(token), *creds(), dest])
    assert deleted.rc == 0, deleted.stderr


def _sync(regs: dict[str, Registry], img: PushedImage, tmp_path: Path, password: str) -> tuple[Result, list[Path]]:
    basic, token = regs["basic"], regs["token"]
    report, metrics = tmp_path / "report.json", tmp_path / "metrics.prom"
    args = ["sync", *DEBUG, "--src", "docker", "--dest", "docker", *tls(basic, "src-"), *creds(prefix="src-"),
            *tls(token, "dest-"), *creds(password, prefix="dest-"), "--report", str(report),
            "--metrics-file", str(metrics), f"{basic.host}/{img.repository}", f"{token.host}/mirror-{tmp_path.name}"]
    out = run_regtool(args, timeout=120)
    assert_no_secrets(out.stdout, out.stderr, what="sync output")
    for path in (report, metrics):
        if path.exists():
            assert_no_secrets(path.read_bytes(), what=path.name)
    return out, [p for p in (report, metrics) if p.exists()]


def test_sync_with_creds_and_its_report(
    regs: dict[str, Registry], images: dict[str, PushedImage], tmp_path: Path
) -> None:
    out, written = _sync(regs, images["basic"], tmp_path, PASSWORD)
    assert out.rc == 0, out.stderr
    assert "Traceback" not in out.stderr
    assert len(written) == 2


def test_sync_with_a_wrong_password_leaks_nothing(
    regs: dict[str, Registry], images: dict[str, PushedImage], tmp_path: Path
) -> None:
    out, written = _sync(regs, images["basic"], tmp_path, WRONG)
    assert out.rc == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert written  # the report and metrics of a failed run are written (and were searched) too


def test_login_and_logout(regs: dict[str, Registry], tmp_path: Path) -> None:
    authfile = str(tmp_path / "auth.json")
    for kind, reg in regs.items():
        ok = run(["login", *DEBUG, *tls(reg), "-u", USERNAME, "--password-stdin", "--authfile", authfile, reg.host],
                 input=f"{PASSWORD}\n".encode())
        assert ok.rc == 0, (kind, ok.stderr)
        who = run(["login", "--get-login", "--authfile", authfile, reg.host])
        assert who.rc == 0 and who.text.strip() == USERNAME
        bad = run(["login", *DEBUG, *tls(reg), "-u", USERNAME, "--password", WRONG, "--authfile",
                   str(tmp_path / f"never-{kind}.json"), reg.host])
        assert bad.rc == 1, bad.stderr
        assert not (tmp_path / f"never-{kind}.json").exists()
    out = run(["logout", *DEBUG, "--authfile", authfile, regs["basic"].host])
    assert out.rc == 0, out.stderr
    unknown = run(["login", *DEBUG, "-u", USERNAME, "--password-stdin", "--authfile", authfile,
                   "--command-timeout", "30", "nonexistent.invalid"], input=f"{WRONG}\n".encode())
    assert unknown.rc == 1, unknown.stderr


def test_signing_commands(regs: dict[str, Registry], images: dict[str, PushedImage], tmp_path: Path) -> None:
    reg, img = regs["token"], images["token"]
    env = {"COSIGN_PASSWORD": COSIGN_PASSWORD}
    prefix = str(tmp_path / "k")
    out = run(["generate-key", *DEBUG, "--output-key-prefix", prefix], env=env)
    assert out.rc == 0, out.stderr
    key_text = Path(prefix + ".key").read_text()
    key_body = "".join(line for line in key_text.splitlines() if "-----" not in line)
    signed = run(["sign", *DEBUG, *tls(reg), *creds(), "--key", prefix + ".key", ref(reg, img)], env=env)
    assert signed.rc == 0, signed.stderr
    verified = run(["verify", *DEBUG, *tls(reg), *creds(), "--key", prefix + ".pub", ref(reg, img)])
    assert verified.rc == 0, verified.stderr
    wrong_pw = run(["sign", *DEBUG, *tls(reg), *creds(), "--key", prefix + ".key", ref(reg, img)],
                   env={"COSIGN_PASSWORD": WRONG})
    assert wrong_pw.rc != 0, wrong_pw.stderr
    wrong_creds = run(["sign", *DEBUG, *tls(reg), *creds(WRONG), "--key", prefix + ".key", ref(reg, img)], env=env)
    assert wrong_creds.rc == 1, wrong_creds.stderr
    for result in (out, signed, verified, wrong_pw, wrong_creds):
        text = result.stdout.decode() + result.stderr
        assert key_body[:40] not in text and key_body[-40:] not in text


# --------------------------------------------------------------------------- in-process: exceptions and logs


def _client(reg: Registry, cred: Credential) -> RegistryClient:
    return RegistryClient(
        ClientOptions(
            default=RegistryOptions(cert_dir=str(reg.cert_dir), credential=cred),
            retry=RetryPolicy(attempts=2, initial_backoff=0.01, max_backoff=0.02),
        )
    )


@pytest.mark.parametrize("kind", ["basic", "token"])
@pytest.mark.parametrize(
    "cred",
    [
        Credential(USERNAME, WRONG),
        Credential(registry_token=TOKEN),
        Credential(USERNAME, identity_token=IDENTITY_TOKEN),
    ],
    ids=["password", "registry-token", "identity-token"],
)
def test_exceptions_of_refused_credentials_hold_no_secret(
    regs: dict[str, Registry], images: dict[str, PushedImage], kind: str, cred: Credential
) -> None:
    reg, img = regs[kind], images[kind]

    async def main() -> None:
        async with _client(reg, cred) as client:
            await client.get_manifest(parse_reference(f"{reg.host}/{img.repository}:v1"))

    with pytest.raises(Unauthorized) as info:
        anyio.run(main)
    exc = info.value
    rendered = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    assert_no_secrets(str(exc), repr(exc), rendered, repr(exc.args), what="the exception")
    assert_no_secrets(repr(cred), str(cred), f"{cred!r} {cred!s}", what="Credential")


def test_log_records_and_client_state_of_an_authenticated_run_hold_no_secret(
    regs: dict[str, Registry], images: dict[str, PushedImage], caplog: pytest.LogCaptureFixture
) -> None:
    """Every logger (regtool's, httpx's, httpcore's) at DEBUG during token and Basic-auth traffic."""
    caplog.set_level(logging.DEBUG)
    reprs: list[str] = []

    async def main() -> None:
        for kind, reg in regs.items():
            async with _client(reg, Credential(USERNAME, PASSWORD)) as client:
                ref_ = parse_reference(f"{reg.host}/{images[kind].repository}:v1")
                manifest = await client.get_manifest(ref_)
                await client.list_tags(ref_)
                assert manifest.config is not None
                async for _ in client.open_blob(ref_, manifest.config):
                    pass
                reprs.extend(repr(h) for h in client._hosts.values())
                reprs.extend(repr(vars(h.auth)) for h in client._hosts.values())

    anyio.run(main)
    assert len(caplog.records) > 10
    assert_no_secrets(*(r.getMessage() for r in caplog.records), what="log records")
    assert_no_secrets(*reprs, what="client state reprs")


# --------------------------------------------------------------------------- files holding secrets


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _umask0(args: list[str], stdin: bytes | None = None, env: dict[str, str] | None = None) -> Result:
    """regtool under umask 0, where anything not created private would be world-readable."""
    full = dict(os.environ, REGISTRY_AUTH_FILE="/nonexistent/regtool-test-auth.json", **(env or {}))
    full.setdefault("CONTAINERS_REGISTRIES_CONF", "/dev/null")
    proc = subprocess.run(
        ["sh", "-c", 'umask 000; exec "$@"', "sh", sys.executable, "-m", "regtool.cli.main", *args],
        input=stdin,
        capture_output=True,
        env=full,
        timeout=120,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr.decode(errors="replace"))


def test_login_writes_a_private_auth_file_atomically(regs: dict[str, Registry], tmp_path: Path) -> None:
    reg = regs["basic"]
    # a new file in new directories: 0600 file, 0700 directories, even under umask 0
    fresh = tmp_path / "new" / "dir" / "auth.json"
    out = _umask0(["login", *tls(reg), "-u", USERNAME, "--password-stdin", "--authfile", str(fresh), reg.host],
                  stdin=f"{PASSWORD}\n".encode())
    assert out.rc == 0, out.stderr
    assert_no_secrets(out.stdout, out.stderr)
    assert _mode(fresh) == 0o600
    assert _mode(fresh.parent) == 0o700 and _mode(fresh.parent.parent) == 0o700
    # an existing, too open file with other entries: replaced by rename (new inode), entries kept, 0600
    existing = tmp_path / "existing.json"
    existing.write_text(json.dumps({"auths": {"other.example": {"auth": _b64("o:p")}}, "credHelpers": {}}))
    existing.chmod(0o644)
    inode = existing.stat().st_ino
    out = _umask0(["login", *tls(reg), "-u", USERNAME, "--password-stdin", "--authfile", str(existing), reg.host],
                  stdin=f"{PASSWORD}\n".encode())
    assert out.rc == 0, out.stderr
    assert existing.stat().st_ino != inode
    assert _mode(existing) == 0o600
    content = json.loads(existing.read_text())
    assert content["auths"]["other.example"] == {"auth": _b64("o:p")}
    assert content["auths"][reg.host] == {"auth": _b64(f"{USERNAME}:{PASSWORD}")}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.json", "new"]  # no temp files left
    # a failing login leaves the file exactly as it was
    before, inode = existing.read_bytes(), existing.stat().st_ino
    out = _umask0(["login", *tls(reg), "-u", USERNAME, "--password-stdin", "--authfile", str(existing), reg.host],
                  stdin=f"{WRONG}\n".encode())
    assert out.rc == 1
    assert existing.read_bytes() == before and existing.stat().st_ino == inode
    # logout rewrites it, still private
    out = _umask0(["logout", "--authfile", str(existing), reg.host])
    assert out.rc == 0, out.stderr
    assert _mode(existing) == 0o600 and reg.host not in json.loads(existing.read_text())["auths"]


def test_generate_key_writes_a_private_key_file(tmp_path: Path) -> None:
    prefix = tmp_path / "release"
    out = _umask0(["generate-key", "--output-key-prefix", str(prefix)], env={"COSIGN_PASSWORD": COSIGN_PASSWORD})
    assert out.rc == 0, out.stderr
    assert_no_secrets(out.stdout, out.stderr)
    assert _mode(Path(f"{prefix}.key")) == 0o600
    assert COSIGN_PASSWORD not in Path(f"{prefix}.key").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release.key", "release.pub"]
