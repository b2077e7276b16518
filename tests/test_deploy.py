"""deploy/ and the Containerfile cannot run here (no container engine, no cluster): validate them statically.

Each check ties a deployment file to what regtool really accepts: the config in the ConfigMap loads,
the command lines parse with regtool's own parser, and the Indexed Job's shard wiring is consistent.
"""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from regtool.cli.common import normalise_bool_flags
from regtool.cli.main import build_parser
from regtool.sync.config import load_config_text

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"


def k8s(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((K8S / name).read_text())
    assert isinstance(doc, dict)
    assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]
    return doc


def parse_regtool(argv: list[str]) -> Any:
    parser = build_parser()
    return parser.parse_args(normalise_bool_flags(parser, argv))


def test_cronjob_indexed_job_shard_wiring() -> None:
    cron = k8s("cronjob.yaml")
    assert cron["kind"] == "CronJob" and cron["apiVersion"] == "batch/v1"
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["completionMode"] == "Indexed"
    container = job["template"]["spec"]["containers"][0]
    args = parse_regtool(container["args"])
    assert args.command == "sync"
    shard = re.fullmatch(r"/(\d+)", args.shard)
    assert shard is not None, "the index must come from JOB_COMPLETION_INDEX"
    assert job["completions"] == job["parallelism"] == int(shard.group(1))
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"


def test_cronjob_mounts_config_and_secret_it_refers_to() -> None:
    cron = k8s("cronjob.yaml")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = parse_regtool(container["args"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert args.config == mounts["config"]
    assert volumes["config"]["configMap"]["name"] == k8s("configmap.yaml")["metadata"]["name"]
    secret = k8s("secret.yaml")
    assert volumes["credentials"]["secret"]["secretName"] == secret["metadata"]["name"]
    for env in container["env"]:
        ref = env["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]


def test_configmap_config_validates_and_uses_the_secret() -> None:
    cm = k8s("configmap.yaml")
    secret = k8s("secret.yaml")
    for name, text in cm["data"].items():
        config = load_config_text(text, name, environ={"DOCKERHUB_TOKEN": "x"})
        assert config.mirrors
        for reg in config.registries.values():
            creds = reg.credentials
            assert creds.password is None, "no inline secrets"
            if creds.password_env:
                assert creds.password_env in secret["stringData"]
            if creds.password_file:
                assert Path(creds.password_file).name in secret["stringData"]


def test_systemd_units() -> None:
    service = configparser.ConfigParser(strict=False, interpolation=None)
    service.read(ROOT / "deploy/systemd/regtool-sync.service")
    exec_start = service["Service"]["ExecStart"].replace("\\\n", " ").replace("\\", " ")
    argv = shlex.split(exec_start)
    assert argv[0].endswith("/regtool")
    args = parse_regtool(argv[1:])
    assert args.command == "sync" and args.lock_file and args.report and args.metrics_file
    assert service["Service"]["Type"] == "oneshot"
    assert "75" in service["Service"]["SuccessExitStatus"]
    timer = configparser.ConfigParser(strict=False, interpolation=None)
    timer.read(ROOT / "deploy/systemd/regtool-sync.timer")
    assert timer["Timer"]["OnCalendar"] and timer["Install"]["WantedBy"] == "timers.target"


def test_containerfile_copies_what_exists_and_runs_regtool() -> None:
    text = (ROOT / "Containerfile").read_text()
    assert re.search(r"^FROM \S+", text, re.M)
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        *sources, _dest = line.split()
        for src in sources:
            assert (ROOT / src).exists(), src
    assert 'ENTRYPOINT ["regtool"]' in text
    assert re.search(r"^USER \d+", text, re.M), "runs unprivileged"
