"""The sync config's verify: and sign: blocks, end to end on real registries through `regtool sync`."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.cli import run_regtool
from tests.support.images import list_tags, push_oci_image
from tests.support.registries import Registry

ENV = {"COSIGN_PASSWORD": "pw-for-tests"}


def make_key(tmp_path: Path, name: str) -> Path:
    out = run_regtool(["generate-key", "--output-key-prefix", str(tmp_path / name)], env=ENV)
    assert out.rc == 0, out.stderr
    return tmp_path / name


def write_config(tmp_path: Path, reg: Registry, source: str, target: str, block: str) -> Path:
    config = tmp_path / "sync.yaml"
    config.write_text(
        f"""version: 1
job: gate
registries:
  "{reg.host}": {{tls-verify: false}}
mirrors:
  - name: gated
    source: {reg.host}/{source}
    targets: [docker://{reg.host}/{target}]
{block}
"""
    )
    return config


def test_verify_block_copies_signed_and_rejects_unsigned(registry_plain: Registry, repo: str, tmp_path: Path) -> None:
    key = make_key(tmp_path, "k")
    push_oci_image(registry_plain, repo, "signed", seed=1)
    push_oci_image(registry_plain, repo, "unsigned", seed=2)
    signed = run_regtool(["sign", "--key", f"{key}.key", "--tls-verify=false",
                          f"docker://{registry_plain.host}/{repo}:signed"], env=ENV)
    assert signed.rc == 0, signed.stderr
    config = write_config(tmp_path, registry_plain, repo, "gated", f"    verify:\n      key: {key}.pub\n")
    report = tmp_path / "report.json"
    out = run_regtool(["sync", "--config", str(config), "--report", str(report)])
    assert out.rc == 1, out.stderr  # one image refused: the run reports a failure
    actions = {Path(r["source"]).name: (r["action"], r["error"]) for r in json.loads(report.read_text())["images"]}
    assert actions[f"{Path(repo).name}:signed"][0] == "copied"
    action, error = actions[f"{Path(repo).name}:unsigned"]
    assert action == "rejected" and "no" in (error or "").lower()
    target_tags = list_tags(registry_plain, f"gated/{repo}")
    assert "signed" in target_tags and "unsigned" not in target_tags
    # the copied signature verifies at the mirror
    ok = run_regtool(["verify", "--key", f"{key}.pub", "--tls-verify=false",
                      f"docker://{registry_plain.host}/gated/{repo}:signed"])
    assert ok.rc == 0, ok.stderr


def test_sign_block_signs_at_the_target(registry_plain: Registry, repo: str, tmp_path: Path) -> None:
    key = make_key(tmp_path, "s")
    push_oci_image(registry_plain, repo, "v1", seed=3)
    config = write_config(tmp_path, registry_plain, repo, "signed-mirror",
                          f"    sign:\n      key: {key}.key\n      password-env: COSIGN_PASSWORD\n")
    out = run_regtool(["sync", "--config", str(config)], env=ENV)
    assert out.rc == 0, out.stderr
    target = f"docker://{registry_plain.host}/signed-mirror/{repo}:v1"
    ok = run_regtool(["verify", "--key", f"{key}.pub", "--tls-verify=false", target])
    assert ok.rc == 0, ok.stderr
    unsigned_source = run_regtool(["verify", "--key", f"{key}.pub", "--tls-verify=false",
                                   f"docker://{registry_plain.host}/{repo}:v1"])
    assert unsigned_source.rc == 1


def test_sign_block_with_unset_password_is_a_config_error(registry_plain: Registry, repo: str, tmp_path: Path) -> None:
    key = make_key(tmp_path, "e")
    config = write_config(tmp_path, registry_plain, repo, "x",
                          f"    sign:\n      key: {key}.key\n      password-env: NOT_SET_ANYWHERE\n")
    out = run_regtool(["sync", "--config", str(config)])
    assert out.rc == 2 and "NOT_SET_ANYWHERE" in out.stderr and "Traceback" not in out.stderr
