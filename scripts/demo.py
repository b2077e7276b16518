"""The README's demo: a local registry, seeded images, and a mirror sync run twice."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.images import push_index, push_oci_image  # noqa: E402
from tests.support.registries import RegistryBed  # noqa: E402

OUT = ROOT / "demo-out"


def regtool(*args: str, env: dict[str, str]) -> int:
    print(f"\n$ regtool {' '.join(args)}", flush=True)
    return subprocess.run([str(ROOT / ".venv/bin/regtool"), *args], env=env, check=False).returncode


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    with tempfile.TemporaryDirectory(prefix="regtool-demo-") as tmp:
        bed = RegistryBed(Path(tmp))
        try:
            reg = bed.get("plain")
            print(f"local registry (CNCF distribution) at {reg.host}; seeding demo/app and demo/tools ...")
            for tag in ("1.0.0", "1.1.0", "1.2.0", "2.0.0-rc.1"):
                push_index(reg, "demo/app", tag, seed=zlib.crc32(tag.encode()) & 0xFFFF)
            push_oci_image(reg, "demo/app", "latest", seed=7)
            push_oci_image(reg, "demo/tools", "stable", seed=8)
            env = dict(os.environ, REGTOOL_DEMO_REGISTRY=reg.host, REGTOOL_DEMO_OUT=str(OUT))
            common = ["--report", str(OUT / "report.json"), "--metrics-file", str(OUT / "metrics.prom")]
            rc = regtool("sync", "--config", str(ROOT / "sync-configs/demo.yaml"), *common, env=env)
            if rc != 0:
                return rc
            report = json.loads((OUT / "report.json").read_text())
            print("\nreport (demo-out/report.json):")
            for image in report["images"]:
                print(f"  {image['action']:<10} {image['source']} -> {image['target']}")
            print("\nsecond run: nothing changed upstream, so only HEAD requests are made")
            rc = regtool("sync", "--config", str(ROOT / "sync-configs/demo.yaml"), *common, env=env)
            if rc != 0:
                return rc
            regtool("list-tags", "--tls-verify=false", f"docker://{reg.host}/mirror/demo/app", env=env)
            regtool("inspect", "--tls-verify=false", "--format", "{{.Digest}} {{.Architecture}}",
                    f"docker://{reg.host}/mirror/demo/app:1.2.0", env=env)
            print(f"\nmetrics for node_exporter (demo-out/metrics.prom):\n{(OUT / 'metrics.prom').read_text()}")
            print(f"oci layout: {OUT / 'layout'} (index.json lists repo:tag entries)")
        finally:
            bed.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
