"""TLS failures against real registries: expired and wrong-host certificates, and no HTTP fallback.

Two extra distribution registries are started with certificates issued by the test-bed CA (so
``--cert-dir`` makes the CA trusted and only the defect under test remains): one whose
certificate expired yesterday, one whose certificate names ``registry.invalid`` instead of
127.0.0.1. Every command that talks to a registry must then fail with one clear line naming the
problem and exit 1, unless ``--tls-verify=false`` was given, and must never retry over plain HTTP
while verification is on: a recording TCP forwarder in front of each registry sees only TLS
handshakes (first byte 0x16), never a plaintext request.
"""

from __future__ import annotations

import datetime
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import yaml

from tests.support.cli import Result, run_regtool
from tests.support.images import PushedImage, push_oci_image
from tests.support.registries import TestPKI, free_port, registry_binary, registry_config

TLS_HANDSHAKE = 0x16


# --------------------------------------------------------------------------- a recording forwarder


@dataclass
class Recorder:
    """TCP forwarder to ``target`` that keeps the first bytes each client sent on each connection."""

    target: tuple[str, int]
    first_bytes: list[bytes] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            client.settimeout(30)
            try:
                first = client.recv(16)
            except OSError:
                return
            with self._lock:
                self.first_bytes.append(first)
            if not first:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=30)
            except OSError:
                return
            with upstream:
                upstream.sendall(first)
                pump = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
                pump.start()
                _pump(client, upstream)
                pump.join(30)

    def plaintext_requests(self) -> list[bytes]:
        with self._lock:
            return [b for b in self.first_bytes if b and b[0] != TLS_HANDSHAKE]

    def close(self) -> None:
        self._stop = True
        self._server.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


# --------------------------------------------------------------------------- registries with bad certificates


@dataclass
class BadRegistry:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    image: PushedImage
    recorder: Recorder
    expect: str  # what the error line must say about the certificate

    @property
    def host(self) -> str:
        """What tests give regtool: the recorder in front of the registry."""
        return self.recorder.host

    def ref(self, tag: str = "v1") -> str:
        return f"docker://{self.host}/{self.image.repository}:{tag}"


def _start(
    root: Path, name: str, pki: TestPKI, cert_identities: tuple[str, ...], **validity: datetime.datetime
) -> tuple[int, subprocess.Popen[bytes]]:
    base = root / name
    (base / "storage").mkdir(parents=True)
    leaf = pki.ca.issue_cert(*cert_identities, **validity)  # type: ignore[arg-type]
    cert, key = base / "server.crt", base / "server.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    for attempt in range(5):
        port = free_port()
        config = registry_config(
            "plain", addr=f"127.0.0.1:{port}", storage_dir=str(base / "storage"), secret=secrets.token_hex(16)
        )
        config["http"]["tls"] = {"certificate": str(cert), "key": str(key)}
        (base / "config.yml").write_text(yaml.safe_dump(config))
        cmd = [registry_binary(), "serve", str(base / "config.yml")]
        setpriv = shutil.which("setpriv")
        if setpriv and sys.platform.startswith("linux"):
            cmd = [setpriv, "--pdeathsig", "TERM", "--", *cmd]
        log = open(base / f"registry-{attempt}.log", "wb")  # noqa: SIM115 - owned by the process
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 30
        with httpx.Client(verify=False, timeout=2) as probe:
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if probe.get(f"https://127.0.0.1:{port}/v2/").status_code == 200:
                        return port, proc
                except httpx.TransportError:
                    time.sleep(0.05)
        proc.terminate()
        proc.wait(10)
    raise RuntimeError(f"registry {name} did not start; see {base}")


@pytest.fixture(scope="module")
def bad_registries(test_pki: TestPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, BadRegistry]]:
    root = tmp_path_factory.mktemp("bad-tls")
    now = datetime.datetime.now(datetime.timezone.utc)
    specs = {
        "expired": (
            ("127.0.0.1", "localhost"),
            {"not_before": now - datetime.timedelta(days=30), "not_after": now - datetime.timedelta(days=1)},
            "certificate has expired",
        ),
        "wrong-host": (("registry.invalid",), {}, "mismatch"),
    }
    made: dict[str, BadRegistry] = {}
    try:
        for name, (identities, validity, expect) in specs.items():
            port, proc = _start(root, name, test_pki, identities, **validity)
            with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=False) as http:
                image = push_oci_image(SimpleNamespace(host=f"127.0.0.1:{port}", http=http), "tls/app", "v1")
            made[name] = BadRegistry(name, port, proc, image, Recorder(("127.0.0.1", port)), expect)
        yield made
    finally:
        for reg in made.values():
            reg.recorder.close()
            reg.process.terminate()
            reg.process.wait(10)


@pytest.fixture(params=["expired", "wrong-host"])
def bad(request: pytest.FixtureRequest, bad_registries: dict[str, BadRegistry]) -> BadRegistry:
    return bad_registries[request.param]


def assert_tls_failure(out: Result, bad: BadRegistry) -> None:
    assert out.rc == 1, out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    line = lines[0]
    assert line.startswith("regtool: error: ")
    assert "certificate" in line and bad.expect in line, line
    assert "--tls-verify=false" in line, line  # says how to get past it
    assert "_ssl.c" not in line  # no OpenSSL source locations in user-facing text
    assert bad.host in line
    assert out.stdout == b""


def commands(bad: BadRegistry, cert_dir: str, tmp_path: Path) -> dict[str, tuple[list[str], bytes | None]]:
    """Every command that reaches a registry, aimed at ``bad``, trusting the CA through --cert-dir."""
    layout = tmp_path / "layout"
    return {
        "inspect": (["inspect", "--cert-dir", cert_dir, bad.ref()], None),
        "inspect-raw": (["inspect", "--raw", "--cert-dir", cert_dir, bad.ref()], None),
        "digest": (["digest", "--cert-dir", cert_dir, bad.ref()], None),
        "list-tags": (["list-tags", "--cert-dir", cert_dir, f"docker://{bad.host}/{bad.image.repository}"], None),
        "copy-from": (["copy", "--src-cert-dir", cert_dir, bad.ref(), f"oci:{layout}:x"], None),
        "copy-to": (["copy", "--dest-cert-dir", cert_dir, f"oci:{tmp_path}/src:v1", bad.ref("copied")], None),
        "delete": (["delete", "--cert-dir", cert_dir, bad.ref()], None),
        "login": (
            ["login", "--cert-dir", cert_dir, "-u", "tester", "--password-stdin", "--authfile",
             str(tmp_path / "auth.json"), bad.host],
            b"not-used-pass\n",
        ),
    }


def _seed_local_layout(tmp_path: Path, bad: BadRegistry) -> None:
    """A local oci: copy of the image to push from (made over --tls-verify=false)."""
    out = run_regtool(["copy", "--src-tls-verify=false", bad.ref(), f"oci:{tmp_path}/src:v1"])
    assert out.rc == 0, out.stderr


@pytest.mark.parametrize(
    "command", ["inspect", "inspect-raw", "digest", "list-tags", "copy-from", "copy-to", "delete", "login"]
)
def test_bad_certificate_fails_with_one_clear_line(
    bad: BadRegistry, test_pki: TestPKI, tmp_path: Path, command: str
) -> None:
    cert_dir = str(test_pki.cert_dir)
    if command == "copy-to":
        _seed_local_layout(tmp_path, bad)
    args, stdin = commands(bad, cert_dir, tmp_path)[command]
    before = len(bad.recorder.first_bytes)
    out = run_regtool(args, input=stdin)
    assert_tls_failure(out, bad)
    # it did try (over TLS), and never fell back to plain HTTP
    tried = bad.recorder.first_bytes[before:]
    assert tried and all(b[:1] == bytes([TLS_HANDSHAKE]) for b in tried), tried
    if command in ("inspect", "inspect-raw", "digest", "list-tags", "login"):
        assert len(tried) == 1, "a refused certificate was retried: retrying cannot fix it"
    # and nothing changed anywhere
    assert not (tmp_path / "layout").exists()
    assert not (tmp_path / "auth.json").exists()


def test_without_cert_dir_the_untrusted_ca_is_named(bad_registries: dict[str, BadRegistry]) -> None:
    bad = bad_registries["wrong-host"]
    out = run_regtool(["inspect", bad.ref()])
    assert out.rc == 1 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "certificate" in out.stderr and "--cert-dir" in out.stderr


@pytest.mark.parametrize("command", ["inspect", "digest", "list-tags", "copy-from", "delete"])
def test_tls_verify_false_gets_past_a_bad_certificate(
    bad: BadRegistry, tmp_path: Path, command: str
) -> None:
    if command == "delete":  # delete a copy, not the image the other tests use
        pushed = run_regtool(
            ["copy", "--src-tls-verify=false", "--dest-tls-verify=false", bad.ref(), bad.ref("doomed")]
        )
        assert pushed.rc == 0, pushed.stderr
    args = {
        "inspect": ["inspect", "--tls-verify=false", bad.ref()],
        "digest": ["digest", "--tls-verify=false", bad.ref()],
        "list-tags": ["list-tags", "--tls-verify=false", f"docker://{bad.host}/{bad.image.repository}"],
        "copy-from": ["copy", "--src-tls-verify=false", bad.ref(), f"oci:{tmp_path}/layout:x"],
        "delete": ["delete", "--tls-verify=false", bad.ref("doomed")],
    }[command]
    plaintext_before = len(bad.recorder.plaintext_requests())
    out = run_regtool(args)
    assert out.rc == 0, out.stderr
    if command == "inspect":
        assert out.json["Digest"] == bad.image.digest
    if command == "digest":
        assert out.text.strip() == bad.image.digest
    if command == "copy-from":
        stored = tmp_path / "layout" / "blobs" / "sha256" / bad.image.digest.split(":")[1]
        assert stored.read_bytes() == bad.image.manifest
    # HTTPS answered (unverified), so everything that changes or carries content went over TLS: the
    # only plain-text lines are the anonymous GET/HEADs sent while the probe was out, which the TLS
    # server refused (security.md; tests/test_scheme_probe.py shows they carry no credentials)
    plain = bad.recorder.plaintext_requests()[plaintext_before:]
    assert all(line.startswith((b"GET /v2/", b"HEAD /v2/")) for line in plain), plain


def test_no_http_fallback_when_the_server_speaks_plain_http(registry_plain: object, tmp_path: Path) -> None:
    """A plain-HTTP registry with verification on: a TLS attempt, a clear line, no plaintext request."""
    from tests.support.registries import Registry

    assert isinstance(registry_plain, Registry)
    recorder = Recorder(("127.0.0.1", registry_plain.port))
    try:
        for args in (
            ["inspect", f"docker://{recorder.host}/any/thing:1"],
            ["list-tags", f"docker://{recorder.host}/any/thing"],
            ["copy", f"docker://{recorder.host}/any/thing:1", f"oci:{tmp_path}/l:x"],
        ):
            out = run_regtool(args)
            assert out.rc == 1, out.stderr
            assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
            assert "TLS" in out.stderr and "--tls-verify=false" in out.stderr
        assert recorder.first_bytes and recorder.plaintext_requests() == []
        # and with --tls-verify=false the same registry is reached over HTTP
        out = run_regtool(["list-tags", "--tls-verify=false", f"docker://{recorder.host}/any/thing"])
        assert out.rc == 2 and "NAME_UNKNOWN" in out.stderr
        assert any(b.startswith(b"GET ") for b in recorder.plaintext_requests())
    finally:
        recorder.close()
    assert not (tmp_path / "l").exists()


def test_the_environment_cannot_turn_verification_off(bad_registries: dict[str, BadRegistry]) -> None:
    """Python/OpenSSL knobs that would disable verification elsewhere do not reach regtool."""
    bad = bad_registries["expired"]
    env = {"PYTHONHTTPSVERIFY": "0", "SSL_CERT_FILE": os.devnull, "CURL_CA_BUNDLE": ""}
    out = run_regtool(["inspect", bad.ref()], env=env)
    assert out.rc == 1 and "certificate" in out.stderr
