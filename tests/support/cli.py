"""Runs the regtool command line in a subprocess, as users and cron jobs do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Result:
    rc: int
    stdout: bytes
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def text(self) -> str:
        return self.stdout.decode()


def run_regtool(
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    input: bytes | None = None,
    timeout: float = 300,
    authfile: str | None = None,
) -> Result:
    """``regtool ARGS``; the user's own logins never leak in (REGISTRY_AUTH_FILE points nowhere)."""
    full_env = dict(os.environ)
    full_env["REGISTRY_AUTH_FILE"] = authfile or "/nonexistent/regtool-test-auth.json"
    full_env.setdefault("CONTAINERS_REGISTRIES_CONF", "/dev/null")
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-m", "regtool.cli.main", *args],
        input=input,
        capture_output=True,
        timeout=timeout,
        env=full_env,
        check=False,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr.decode(errors="replace"))
