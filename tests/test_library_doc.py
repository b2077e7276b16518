"""The program in docs/library.md runs as written against a real registry."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.images import push_index
from tests.support.registries import Registry

DOC = Path(__file__).parent.parent / "docs" / "library.md"


def test_library_example_runs(registry_plain: Registry, repo: str) -> None:
    img = push_index(registry_plain, repo, "v1")
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert code is not None
    env = dict(os.environ, IMAGE=f"{registry_plain.host}/{repo}:v1", TLS_VERIFY="false",
               REGISTRY_AUTH_FILE="/nonexistent")
    proc = subprocess.run([sys.executable, "-c", code.group(1)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"digest: {img.digest}" in proc.stdout
    assert "tags: ['v1']" in proc.stdout
    assert "layers: ['sha256:" in proc.stdout
