"""The no-op re-sync's critical path: what runs concurrently, what is not imported, what is not waited for.

A re-sync of unchanged images is start-up plus a few round trips; these tests pin the parts of that
which the engine controls (the round-trip counts themselves are in test_sync.py's no-op test).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

from tests.support.cli import run_regtool
from tests.support.images import cosign_signature_tag, push_cosign_signature, push_oci_image
from tests.support.netproxy import FaultProxy, FaultRule
from tests.support.registries import Registry

PLAIN = ["--src-tls-verify=false", "--dest-tls-verify=false"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["REGISTRY_AUTH_FILE"] = "/nonexistent/regtool-test-auth.json"
    env.setdefault("CONTAINERS_REGISTRIES_CONF", "/dev/null")
    return env


def test_the_target_scheme_is_settled_while_the_source_is_listed(registry_plain: Registry, repo: str) -> None:
    """With --dest-tls-verify=false the target's HTTPS-or-HTTP probe overlaps the source's tag listing,
    instead of costing a round trip of its own before the first target HEAD."""
    reg = registry_plain
    push_oci_image(reg, repo, "v1", layers=1, layer_size=64)
    with FaultProxy(target=reg.host) as src_fp, FaultProxy(target=reg.host) as dst_fp:
        argv = ["sync", "--src", "docker", "--dest", "docker", *PLAIN]
        argv += [f"{src_fp.netloc}/{repo}", f"{dst_fp.netloc}/early"]
        assert run_regtool(argv).rc == 0  # populate the target
        dst_fp.reset_stats()
        src_fp.reset_stats()
        src_fp.add_rule(FaultRule(method="GET", path_regex=r"/tags/list", kind="stall", seconds=2.0))
        proc = subprocess.Popen(
            [sys.executable, "-m", "regtool.cli.main", *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(),
        )
        try:
            deadline = time.monotonic() + 60
            while src_fp.count("GET", r"/tags/list") == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.5)  # the listing is held for 2 s: the probe (~1 ms) has long been answered
            during = dst_fp.stats()
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")
    assert during["bad_requests"] >= 1, during  # the TLS attempt at the target, while the listing was held
    assert during["requests"] == 0, during  # and nothing else before the source's tags are known
    assert dst_fp.count("HEAD", r"/manifests/v1$") == 1
    assert dst_fp.count("GET") == 0


def test_a_run_that_sends_an_unanswering_target_nothing_does_not_wait_for_it(
    registry_plain: Registry, repo: str
) -> None:
    """The early probe of a target is dropped once its repository is done (here: the source listing fails)."""
    with socket.socket() as hole:  # accepts connections (the kernel's backlog) and never answers
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        target = f"127.0.0.1:{hole.getsockname()[1]}"
        started = time.monotonic()
        r = run_regtool(
            ["sync", "--src", "docker", "--dest", "docker", "--keep-going", *PLAIN,
             f"{registry_plain.host}/{repo}-missing", f"{target}/mirror"],
            timeout=50,
        )
        elapsed = time.monotonic() - started
    assert r.rc == 1, r.stderr
    assert "cannot list tags" in r.stderr, r.stderr
    assert elapsed < 20, elapsed  # the probe would hang until the client's 60 s timeout


_IMPORTS = textwrap.dedent(
    """
    import json, sys
    from regtool.cli.main import main
    rc = main(sys.argv[1:])
    prefixes = ("yaml.", "regtool.signing", "regtool.sync.signing")
    heavy = sorted(m for m in sys.modules if m == "yaml" or m.startswith(prefixes))
    print(json.dumps({"rc": rc, "heavy": heavy}))
    """
)


def test_a_sync_without_verify_or_sign_imports_neither_signing_nor_yaml(registry_plain: Registry, repo: str) -> None:
    """skopeo's command-line form reads no YAML and has no verify:/sign: block: those stacks stay unloaded
    (tens of ms of start-up in every run), also while carrying a cosign signature tag."""
    reg = registry_plain
    image = push_oci_image(reg, repo, "v1", layers=1, layer_size=64)
    push_cosign_signature(reg, image)
    for _ in range(2):  # a copy, then a no-op
        proc = subprocess.run(
            [sys.executable, "-c", _IMPORTS, "sync", "--src", "docker", "--dest", "docker", *PLAIN,
             f"{reg.host}/{repo}", f"{reg.host}/imports"],
            capture_output=True,
            timeout=120,
            env=_env(),
            stdin=subprocess.DEVNULL,
            check=False,
        )
        out = json.loads(proc.stdout.decode().strip().splitlines()[-1])
        assert out == {"rc": 0, "heavy": []}, proc.stderr.decode(errors="replace")
    name = repo.rsplit("/", 1)[-1]
    listed = reg.http.get(f"/v2/imports/{name}/tags/list").json()["tags"]
    assert cosign_signature_tag(image.digest) in listed
