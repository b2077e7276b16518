"""Test-bed support: real registries (registries.py), image builders (images.py), token server.

See README.md in this folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

import pytest


def skopeo_binary() -> str | None:
    return os.environ.get("REGTOOL_SKOPEO_BIN") or shutil.which("skopeo")


def run_skopeo(
    args: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 300,
    authfile: str | None = None,
    insecure_policy: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``skopeo ARGS`` (skips the test when skopeo is not installed).

    ``REGISTRY_AUTH_FILE`` points at ``authfile`` (default: a path that does not exist) so the
    user's own logins never leak into a test. ``insecure_policy`` adds the global
    ``--insecure-policy`` so ``copy`` works without a policy.json (pass False to test policies).
    With ``check`` a non-zero exit fails the test with skopeo's stderr.
    """
    binary = skopeo_binary()
    if binary is None:
        pytest.skip("skopeo is not installed")
    env = dict(os.environ)
    env["REGISTRY_AUTH_FILE"] = authfile or "/nonexistent/regtool-test-auth.json"
    cmd = [binary, *(["--insecure-policy"] if insecure_policy else []), *args]
    proc = subprocess.run(
        cmd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"skopeo {' '.join(args)} exited {proc.returncode}:\n{proc.stderr.decode(errors='replace')}",
            pytrace=False,
        )
    return proc
