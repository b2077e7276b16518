"""Sync configuration: the shipped JSON Schema, the loader's strict validation with FILE:LINE errors,
the model's naming rules, skopeo's sync YAML / command line (destination names compared with the real
skopeo binary where that needs no registry), sharding, and the report schema."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from regtool.errors import UsageError
from regtool.manifest import Platform
from regtool.sync.config import (
    SCHEMA_PATH,
    CredentialSource,
    MirrorEntry,
    Naming,
    RegistryConfig,
    Source,
    SyncConfig,
    Target,
    expand_env,
    load_config,
    load_config_text,
    load_schema,
    skopeo_cli_source_to_config,
    skopeo_yaml_to_config,
)
from regtool.sync.filters import TagSelection
from regtool.sync.shard import MAX_SHARDS, Shard, parse_shard, repository_key, shard_of

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "sync-configs"
REPORT_SCHEMA = ROOT / "regtool" / "schemas" / "sync-report.schema.json"
SKOPEO_EXAMPLES = {"skopeo-sync.yaml"}
DIGEST = "sha256:" + "0" * 64
DIGEST2 = "sha256:" + "ab" * 32
ENV = {"REGTOOL_DEMO_REGISTRY": "127.0.0.1:5000", "REGTOOL_DEMO_OUT": "/tmp/regtool-demo-out"}


def native_examples() -> list[Path]:
    return sorted(p for p in EXAMPLES.glob("*.yaml") if p.name not in SKOPEO_EXAMPLES)


def write(tmp_path: Path, text: str, name: str = "sync.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, text: str, env: Mapping[str, str] | None = None) -> SyncConfig:
    return load_config(write(tmp_path, text), environ=env or {})


def destinations(config: SyncConfig) -> set[str]:
    """Every destination the config's explicit tags and digests map to (transport-qualified)."""
    out: set[str] = set()
    for entry in config.mirrors:
        for target in entry.targets:
            for tag in entry.tags.exact:
                out.add(str(entry.destination(target, entry.source.repository, tag=tag)))
            for digest in entry.tags.digests:
                out.add(str(entry.destination(target, entry.source.repository, digest=digest)))
    return out


# =========================================================================== the schema and the examples


def test_schema_is_valid_draft_2020_12_and_uses_only_what_the_loader_interprets() -> None:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    from regtool.sync.config import _SUPPORTED_KEYWORDS

    def keywords(node: Any, in_properties: bool = False) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if not in_properties:
                    yield key
                child_is_map = key in ("properties", "patternProperties", "$defs") and not in_properties
                yield from keywords(value, child_is_map)
        elif isinstance(node, list):
            for item in node:
                yield from keywords(item)

    assert set(keywords(schema)) <= _SUPPORTED_KEYWORDS


def test_defaults_and_mirror_take_the_same_settings() -> None:
    defs = load_schema()["$defs"]
    assert set(defs["defaults"]["properties"]) == set(defs["mirror"]["properties"]) - {"name", "source"}


@pytest.mark.parametrize("path", native_examples(), ids=lambda p: p.name)
def test_every_example_validates_against_schema_and_loader(path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    jsonschema.Draft202012Validator(load_schema()).validate(data)
    config = load_config(path, environ=ENV)
    assert config.mirrors
    assert config.options.job == data["job"]
    for entry in config.mirrors:
        assert entry.targets
        assert entry.origin.startswith(f"{path}:")


def test_examples_cover_the_documented_use_cases() -> None:
    names = {p.name for p in EXAMPLES.glob("*.yaml")}
    assert {
        "demo.yaml", "dockerhub-official.yaml", "ghcr-quay-filters.yaml", "namespace-catalog.yaml",
        "airgap-export.yaml", "airgap-import.yaml", "sharded.yaml", "skopeo-sync.yaml",
    } <= names  # fmt: skip
    kinds = {entry.source.kind for p in native_examples() for entry in load_config(p, environ=ENV).mirrors}
    assert kinds == {"repository", "image", "namespace", "oci"}


def test_demo_config_matches_the_demo_script() -> None:
    config = load_config(EXAMPLES / "demo.yaml", environ=ENV)
    app = config.mirror("demo-app")
    assert str(app.source) == "127.0.0.1:5000/demo/app"
    assert config.registry("127.0.0.1:5000").tls_verify is False
    registry, layout = app.targets
    assert str(app.destination(registry, "demo/app", tag="1.2.0")) == "docker://127.0.0.1:5000/mirror/demo/app:1.2.0"
    assert str(app.destination(layout, "demo/app", tag="1.2.0")) == "oci:/tmp/regtool-demo-out/layout:demo/app:1.2.0"
    from regtool.sync.filters import select_tags

    assert select_tags(["1.0.0", "1.1.0", "1.2.0", "2.0.0-rc.1", "latest"], app.tags) == [
        "1.0.0", "1.1.0", "1.2.0", "latest",
    ]  # fmt: skip
    # without the environment, the defaults make it runnable against localhost:5000
    default = load_config(EXAMPLES / "demo.yaml", environ={})
    assert str(default.mirror("demo-tools").source) == "localhost:5000/demo/tools:stable"
    assert default.mirror("demo-tools").targets[1].path == str(ROOT / "demo-out" / "layout")


def test_skopeo_example_converts() -> None:
    config = skopeo_yaml_to_config(EXAMPLES / "skopeo-sync.yaml", "mirror.example.com/skopeo")
    by_name = {m.name: m for m in config.mirrors}
    assert by_name["docker.io/library/alpine"].tags.exact == ("3.21", "3.20")
    assert by_name["docker.io/busybox"].source.repository == "library/busybox"
    assert by_name["docker.io/busybox"].tags == TagSelection()
    assert by_name["docker.io/library/redis (images-by-tag-regex)"].tags.unanchored
    assert by_name["docker.io/library/postgres (images-by-semver)"].tags.semver == ">= 16.0, < 18"
    assert config.registry("registry.example.com:5000").tls_verify is False
    assert config.registry("registry.example.com:5000").cert_dir == "/etc/containers/certs.d/registry.example.com:5000"
    assert "docker://mirror.example.com/skopeo/app:1.0" in destinations(config)


def test_report_schema_matches_the_report_writer() -> None:
    from regtool.sync.report import ImageResult, SyncReport

    schema = json.loads(REPORT_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    report = SyncReport(job="demo", shard="1/4", dry_run=True)
    report.images.append(
        ImageResult(
            "alpine", "docker://docker.io/library/alpine:3.21", "docker://r/m:3.21", "would-copy", source_digest=DIGEST
        )
    )
    report.images.append(
        ImageResult(
            "alpine",
            "docker://docker.io/library/alpine:3.20",
            "docker://r/m:3.20",
            "failed",
            error="boom",
            bytes=10,
            seconds=1.5,
            attachments=["x.sig"],
        )
    )
    report.errors.append("listing tags of docker.io/library/nginx: 500")
    report.finished = report.started + 2
    jsonschema.validate(report.to_json(), schema)
    unfinished = SyncReport(job="j").to_json()
    jsonschema.validate(unfinished, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**unfinished, "counts": {"teleported": 1}}, schema)


# =========================================================================== strict validation, FILE:LINE

HEAD = """\
mirrors:
  - source: docker.io/library/alpine
    targets: [docker://registry.example.com/mirror]
"""

BAD_CONFIGS: list[tuple[str, str, int, str]] = [
    ("unknown key", HEAD + "    tag: [latest]\n", 4, "unknown key 'tag' (did you mean 'tags'?)"),
    ("unknown top-level", "mirors: []\n", 1, "unknown key 'mirors' (did you mean 'mirrors'?)"),
    ("wrong type", HEAD + "    tags: {latest: '3'}\n", 4, 'tags.latest: expected an integer, got the string "3"'),
    (
        "float tag",
        HEAD + "    tags: [3.10, latest]\n",
        4,
        "expected a string, got the number 3.1 (put the value in quotes)",
    ),
    (
        "bad regex",
        HEAD + "    tags:\n      include:\n        - 'v\\d+'\n        - '(unclosed'\n",
        7,
        "tags.include[1]: invalid regular expression '(unclosed'",
    ),
    ("bad semver", HEAD + "    tags:\n      semver: '>=1.2 <<2'\n", 5, "tags.semver: invalid semver range '>=1.2 <<2'"),
    ("latest zero", HEAD + "    tags: {latest: 0}\n", 4, "must be at least 1, not 0"),
    (
        "exact excluded",
        HEAD + "    tags:\n      exact: [latest]\n      exclude: ['lat.*']\n",
        4,
        "exact tag 'latest' is excluded by exclude pattern 'lat.*'",
    ),
    ("signature tag", HEAD + f"    tags: [sha256-{'ab' * 32}.sig]\n", 4, "is a signature/attestation tag"),
    ("bad digest", HEAD + "    tags: {digests: ['sha256:abc']}\n", 4, "sha256 needs 64 lowercase hex digits"),
    (
        "bad reference",
        "mirrors:\n  - source: docker.io/Library/Alpine\n    targets: [docker://r.example/m]\n",
        2,
        "must be lowercase",
    ),
    (
        "tag and digest",
        f"mirrors:\n  - source: alpine:3@{DIGEST}\n    targets: [docker://r.example/m]\n",
        2,
        "either a tag or a digest",
    ),
    (
        "image with tags",
        "mirrors:\n  - source: alpine:3\n    targets: [docker://r.example/m]\n    tags: [a]\n",
        4,
        "an image source names its tag or digest",
    ),
    ("no targets", "mirrors:\n  - source: alpine\n", 2, "no targets: set targets here or in defaults"),
    ("empty targets", "mirrors:\n  - source: alpine\n    targets: []\n", 3, "targets: must not be empty"),
    (
        "target not a url",
        "mirrors:\n  - source: alpine\n    targets: [r.example/m]\n",
        3,
        "expected 'docker://HOST[/PREFIX]'",
    ),
    ("target with tag", "mirrors:\n  - source: alpine\n    targets: ['docker://r.example/m:1']\n", 3, "not an image"),
    ("oci path with colon", "mirrors:\n  - source: alpine\n    targets: ['oci:/srv/a:b']\n", 3, "cannot contain ':'"),
    (
        "duplicate target",
        "mirrors:\n  - source: alpine\n    targets:\n      - docker://r.example/m\n"
        "      - {registry: r.example, path: m}\n",
        5,
        "is listed twice",
    ),
    (
        "bad target prefix",
        "mirrors:\n  - source: alpine\n    targets: ['docker://r.example/Mirror']\n",
        3,
        "invalid repository prefix",
    ),
    ("unknown placeholder", HEAD + "    naming: '{org}/{name}'\n", 4, "unknown placeholder {org}"),
    ("format spec", HEAD + "    naming: {template: '{name!r}'}\n", 4, "no format specs or conversions"),
    ("bad suffix", HEAD + "    naming: {tag-suffix: '/x'}\n", 4, "naming.tag-suffix: invalid value"),
    (
        "suffix on digest",
        f"mirrors:\n  - source: alpine@{DIGEST}\n    targets: [docker://r.example/m]\n"
        "    naming: {tag-suffix: -mirror}\n",
        2,
        "cannot be applied to the digest reference",
    ),
    (
        "template gives bad name",
        "mirrors:\n  - source: localhost:5000/app\n    targets: [docker://r.example/m]\n"
        "    naming: '{registry}/{repository}'\n",
        2,
        'invalid repository name component "localhost:5000"',
    ),
    ("bad platform", HEAD + "    platforms: [linux/amd64, windows]\n", 4, 'platforms[1]: invalid value "windows"'),
    ("platform keyword", HEAD + "    platforms: every\n", 4, "must be one of: all, system"),
    ("duplicate platform", HEAD + "    platforms: [linux/amd64, linux/x86_64]\n", 4, "is listed twice"),
    (
        "allow on repository",
        "mirrors:\n  - source: {registry: quay.io, repository: a/b, allow: [x]}\n    targets: [docker://r.example/m]\n",
        2,
        "allow filters repositories of a namespace or oci source",
    ),
    (
        "two source kinds",
        "mirrors:\n  - source: {registry: quay.io, repository: a/b, image: a/b:1}\n"
        "    targets: [docker://r.example/m]\n",
        2,
        "exactly one of repository, image, namespace, oci (got repository, image)",
    ),
    (
        "catalog on docker hub",
        "mirrors:\n  - source: {registry: docker.io, namespace: library}\n    targets: [docker://r.example/m]\n",
        2,
        "Docker Hub does not serve the _catalog API",
    ),
    (
        "bad deny regex",
        "mirrors:\n  - source:\n      registry: r.example\n      namespace: team\n      deny: ['*x']\n"
        "    targets: [docker://t.example/m]\n",
        5,
        "source.deny[0]: invalid regular expression",
    ),
    (
        "unset env",
        "mirrors:\n  - source: ${NOPE}/alpine\n    targets: [docker://r.example/m]\n",
        2,
        "environment variable NOPE is not set",
    ),
    (
        "bad env syntax",
        "mirrors:\n  - source: ${NO PE}/alpine\n    targets: [docker://r.example/m]\n",
        2,
        "invalid variable reference",
    ),
    (
        "inline password",
        "registries:\n  r.example:\n    credentials:\n      username: u\n      password: hunter2\n" + HEAD,
        5,
        "inline passwords are not accepted: use password-env or password-file",
    ),
    (
        "password env without user",
        "registries:\n  r.example:\n    credentials: {password-env: TOKEN}\n" + HEAD,
        3,
        "password-env needs a username",
    ),
    (
        "bad env name",
        "registries:\n  r.example:\n    credentials: {username: u, password-env: 'MY-TOKEN'}\n" + HEAD,
        3,
        "password-env: invalid value",
    ),
    ("client cert alone", "registries:\n  r.example:\n    client-cert: /c.pem\n" + HEAD, 2, "client-key is needed too"),
    ("bad host", "registries:\n  'bad host': {}\n" + HEAD, 2, "invalid registry host 'bad host'"),
    ("zero concurrency", "registries:\n  r.example: {max-concurrency: 0}\n" + HEAD, 2, "must be at least 1"),
    ("zero rps", "registries:\n  r.example:\n    requests-per-second: 0\n" + HEAD, 3, "must be greater than 0"),
    (
        "same host twice",
        "registries:\n  docker.io: {}\n  index.docker.io: {}\n" + HEAD,
        3,
        "registry docker.io is configured twice",
    ),
    (
        "prune an image",
        "mirrors:\n  - source: alpine:3\n    targets: [docker://r.example/m]\n    prune: true\n",
        4,
        "prune needs a repository, namespace or oci source",
    ),
    ("negative max-prune", HEAD + "    prune: {max-prune: -1}\n", 4, "must be at least 0"),
    ("verify without trust", HEAD + "    verify: {require-tlog: true}\n", 4, "verify needs key"),
    (
        "verify key and identity",
        HEAD + "    verify:\n      key: /k.pub\n      certificate-identity: me\n",
        6,
        "certificate-identity is for keyless or PKI verification",
    ),
    (
        "verify identity match",
        HEAD + "    verify: {key: /k.pub, identity-match: fuzzy}\n",
        4,
        "must be one of: exact, repo-digest-or-exact, repository",
    ),
    ("sign twice", HEAD + "    sign: {key: /k.key, keyless: true}\n", 4, "sign needs either key or keyless: true"),
    ("sign unknown", HEAD + "    sign: {key: /k.key, passphrase: x}\n", 4, "unknown key 'passphrase'"),
    ("version", "version: 2\n" + HEAD, 1, "version: must be 1"),
    ("job name", "job: 'my job'\n" + HEAD, 1, "job: invalid value"),
    ("duration", "options: {max-retry-wait: 15 minutes}\n" + HEAD, 1, "max-retry-wait: invalid value"),
    (
        "duplicate key",
        "mirrors:\n  - source: alpine\n    source: busybox\n",
        3,
        "duplicate key 'source' (first at line 2)",
    ),
    ("duplicate mirror", HEAD + HEAD[len("mirrors:\n") :], 4, "duplicate mirror name 'docker.io/library/alpine'"),
    (
        "yaml syntax",
        "mirrors:\n  - source: alpine\n    targets: [docker://r.example/m\n  - source: x\n",
        4,
        "invalid YAML",
    ),
    ("two documents", HEAD + "---\nmirrors: []\n", 4, "invalid YAML: expected a single document"),
    ("not a mapping", "- a\n- b\n", 1, "expected a mapping at the top level, got a list"),
    ("empty file", "# nothing here\n", 1, "empty configuration"),
    ("no mirrors", "registries: {r.example: {}}\n", 0, "no mirrors defined"),
    ("skopeo file", "docker.io:\n  images:\n    alpine: [latest]\n", 1, "looks like skopeo's sync YAML"),
    ("recursive alias", "x-a: &a [*a]\n" + HEAD, 1, "recursive YAML alias"),
    ("non-string key", HEAD + "    1: x\n", 4, "must be a string"),
]


@pytest.mark.parametrize(("case", "text", "line", "reason"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_configs_are_rejected_with_file_line_and_reason(
    tmp_path: Path, case: str, text: str, line: int, reason: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert "\n" not in message
    assert info.value.exit_code == 2
    prefix = f"{path}:{line}: " if line else f"{path}: "
    assert message.startswith(prefix), message
    assert reason in message, message
    assert "hunter2" not in message


def test_the_schema_rejects_the_structural_mistakes_too(tmp_path: Path) -> None:
    """For every bad config the schema can see (unknown keys, wrong types, enums ...), jsonschema agrees."""
    validator = jsonschema.Draft202012Validator(load_schema())
    structural = [
        "unknown key",
        "unknown top-level",
        "wrong type",
        "float tag",
        "latest zero",
        "empty targets",
        "target not a url",
        "bad suffix",
        "bad platform",
        "platform keyword",
        "inline password",
        "bad env name",
        "zero concurrency",
        "zero rps",
        "negative max-prune",
        "verify identity match",
        "sign unknown",
        "version",
        "job name",
        "duration",
        "skopeo file",
    ]
    cases = {c[0]: c[1] for c in BAD_CONFIGS}
    for name in structural:
        assert not validator.is_valid(yaml.safe_load(cases[name])), name


def test_x_keys_are_allowed_anywhere(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        x-top: {anything: [1, 2]}
        x-targets: &targets [docker://r.example/m]
        options: {x-note: hi}
        registries:
          x-not-a-host: {whatever: true}
          r.example: {x-comment: internal, tls-verify: false}
        defaults:
          x-defaults: 1
          targets: *targets
        mirrors:
          - source: {registry: quay.io, repository: a/b, x-owner: team-a}
            x-ticket: OPS-1
            tags: {include: [v.*], x-why: releases}
            naming: {template: '{name}', x-n: 1}
            prune: {enabled: true, x-p: 1}
            verify: {key: /k.pub, x-v: 1}
    """,
    )
    entry = config.mirrors[0]
    assert list(config.registries) == ["r.example"]
    assert config.registry("r.example").tls_verify is False
    assert entry.prune.enabled and entry.verify == {"key": "/k.pub"}
    assert str(entry.destination(entry.targets[0], "a/b", tag="v1")) == "docker://r.example/m/b:v1"


def test_anchors_and_merge_keys_are_resolved(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        x-common: &common
          targets: [docker://r.example/m]
          tags: [latest]
        mirrors:
          - <<: *common
            source: alpine
          - <<: *common
            source: busybox
            tags: [stable]
    """,
    )
    assert [m.tags.exact for m in config.mirrors] == [("latest",), ("stable",)]


# =========================================================================== values: env, paths, defaults


def test_env_expansion() -> None:
    env = {"A": "x", "EMPTY": ""}
    assert expand_env("${A}/y", env) == "x/y"
    assert expand_env("${B:-dflt}", env) == "dflt"
    assert expand_env("${EMPTY:-dflt}", env) == "dflt"
    assert expand_env("${EMPTY}", env) == ""
    assert expand_env("$$HOME and $A", env) == "$HOME and $A"  # only ${...} expands; $$ is a literal $
    with pytest.raises(UsageError, match="not set"):
        expand_env("${B}", env)
    with pytest.raises(UsageError, match="unterminated"):
        expand_env("${A", env)


def test_env_expands_hosts_and_paths_but_not_patterns(tmp_path: Path) -> None:
    env = {"REG": "registry.example.com:5000", "OUT": "/srv/out", "USER_NAME": "bot"}
    config = load(
        tmp_path,
        """\
        options: {report: '${OUT}/report.json'}
        registries:
          ${REG}:
            credentials: {username: '${USER_NAME}', password-file: '${OUT}/pw'}
        mirrors:
          - source: ${REG}/team/app
            targets: ['oci:${OUT}/layout', 'docker://${REG}/mirror']
            tags: {include: ['${NOT_EXPANDED}']}
    """,
        env,
    )
    creds = config.registry("registry.example.com:5000").credentials
    assert creds == CredentialSource(username="bot", password_file="/srv/out/pw")
    assert config.options.report == "/srv/out/report.json"
    entry = config.mirrors[0]
    assert [str(t) for t in entry.targets] == ["oci:/srv/out/layout", "docker://registry.example.com:5000/mirror"]
    assert entry.tags.include == ("${NOT_EXPANDED}",)


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    config = load_config(
        write(
            sub,
            """\
        options: {lock-file: run/sync.lock}
        registries:
          r.example: {ca-file: ../pki/ca.pem}
        mirrors:
          - source: alpine
            targets: ['oci:layout', 'dir:../export']
    """,
        ),
        environ={},
    )
    assert config.options.lock_file == str(sub / "run" / "sync.lock")
    assert config.registry("r.example").ca_file == str(tmp_path / "pki" / "ca.pem")
    assert [t.path for t in config.mirrors[0].targets] == [str(sub / "layout"), str(tmp_path / "export")]


def test_defaults_apply_and_entries_replace_them(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        defaults:
          targets: [docker://r.example/m]
          tags: {include: ['v.*'], latest: 3}
          platforms: [linux/amd64]
          signatures: false
          naming: {prefix: hub}
          immutable-tags: ['v\\d+\\.\\d+\\.\\d+']
        mirrors:
          - source: quay.io/a/b
          - source: quay.io/a/c
            tags: [edge]
            platforms: system
            signatures: true
            referrers: false
            naming: '{name}'
          - source: quay.io/a/d:1.0
    """,
    )
    b, c, d = config.mirrors
    assert b.tags == TagSelection(include=("v.*",), latest=3)
    assert b.platforms == (Platform("linux", "amd64"),)
    assert b.signatures is False and b.referrers is True
    assert b.is_immutable("v1.2.3") and not b.is_immutable("v1.2")
    assert str(b.destination(b.targets[0], "a/b", tag="v1")) == "docker://r.example/m/hub/a/b:v1"
    assert c.tags == TagSelection(exact=("edge",)) and c.platforms == "system"
    assert c.signatures is True and c.referrers is False
    assert str(c.destination(c.targets[0], "a/c", tag="edge")) == "docker://r.example/m/c:edge"
    assert d.tags == TagSelection(exact=("1.0",))  # an image source ignores the default tag selection


def test_options_and_registry_settings(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        job: nightly
        options:
          lock-file: /run/lock/x.lock
          report: /r.json
          metrics-file: /m.prom
          max-retry-wait: 90s
          fail-fast: true
          concurrency: 12
        registries:
          index.docker.io:
            credentials: {username: bot, password-env: HUB_TOKEN}
            max-concurrency: 3
            requests-per-second: 2.5
            rate-limit-floor: 15
          r.example:5000:
            tls-verify: false
            ca-file: /ca.pem
            cert-dir: /certs
            client-cert: /c.pem
            client-key: /c.key
            credentials: {authfile: /auth.json}
          anon.example:
            credentials: {anonymous: true}
        mirrors:
          - source: alpine
            targets: [docker://r.example:5000/m]
    """,
    )
    opts = config.options
    assert (opts.job, opts.lock_file, opts.report, opts.metrics_file) == (
        "nightly",
        "/run/lock/x.lock",
        "/r.json",
        "/m.prom",
    )
    assert (opts.max_retry_wait, opts.fail_fast, opts.concurrency) == (90.0, True, 12)
    hub = config.registry("registry-1.docker.io")
    assert hub == RegistryConfig(
        "docker.io",
        credentials=CredentialSource(username="bot", password_env="HUB_TOKEN"),
        max_concurrency=3,
        requests_per_second=2.5,
        rate_limit_floor=15,
    )
    private = config.registry("r.example:5000")
    assert (private.tls_verify, private.ca_file, private.cert_dir) == (False, "/ca.pem", "/certs")
    assert (private.client_cert, private.client_key) == ("/c.pem", "/c.key")
    assert private.credentials.is_default and private.credentials.authfile == "/auth.json"
    assert config.registry("anon.example").credentials.anonymous
    assert config.registry("unknown.example") == RegistryConfig("unknown.example")


def test_resolve_password(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    assert CredentialSource(username="u", password_file=str(secret)).resolve_password() == "s3cret"
    assert CredentialSource(username="u", password_env="T").resolve_password({"T": "tok"}) == "tok"
    assert CredentialSource().resolve_password() is None
    with pytest.raises(UsageError, match="environment variable T") as info:
        CredentialSource(username="u", password_env="T").resolve_password({})
    assert "tok" not in str(info.value)
    with pytest.raises(UsageError, match="cannot read password-file"):
        CredentialSource(username="u", password_file=str(tmp_path / "missing")).resolve_password()
    assert "hunter2" not in repr(CredentialSource(username="u", password="hunter2"))


# =========================================================================== directories of files


def test_directory_merges_files_in_name_order(tmp_path: Path) -> None:
    write(
        tmp_path,
        """\
        job: fleet
        registries:
          r.example: {max-concurrency: 4}
        defaults:
          targets: [docker://r.example/a]
        mirrors:
          - source: alpine
    """,
        "10-team-a.yaml",
    )
    write(
        tmp_path,
        """\
        job: fleet
        registries:
          r.example: {max-concurrency: 4}
        mirrors:
          - source: busybox
            targets: [docker://r.example/b]
    """,
        "20-team-b.yml",
    )
    write(tmp_path, "this: is ignored\n", "README.txt")
    write(tmp_path, "not: [valid\n", ".hidden.yaml")
    config = load_config(tmp_path, environ={})
    assert config.options.job == "fleet"
    assert [m.name for m in config.mirrors] == ["docker.io/library/alpine", "docker.io/library/busybox"]
    assert [str(m.targets[0]) for m in config.mirrors] == ["docker://r.example/a", "docker://r.example/b"]
    assert config.files == (str(tmp_path / "10-team-a.yaml"), str(tmp_path / "20-team-b.yml"))


def test_directory_defaults_are_per_file(tmp_path: Path) -> None:
    write(tmp_path, "defaults: {targets: [docker://r.example/a]}\nmirrors: [{source: alpine}]\n", "a.yaml")
    write(tmp_path, "mirrors: [{source: busybox}]\n", "b.yaml")
    with pytest.raises(UsageError, match=r"b\.yaml:1: mirrors\[0\]: no targets"):
        load_config(tmp_path, environ={})


@pytest.mark.parametrize(
    ("second", "line", "reason"),
    [
        (
            "mirrors: [{source: alpine, targets: [docker://r.example/b]}]\n",
            1,
            "duplicate mirror name 'docker.io/library/alpine' (first at {first}:4)",
        ),
        (
            "registries: {r.example: {max-concurrency: 9}}\nmirrors: [{source: x, targets: [docker://r.example/b]}]\n",
            1,
            "settings for r.example conflict with those at {first}:1",
        ),
        (
            "job: other\nmirrors: [{source: x, targets: [docker://r.example/b]}]\n",
            1,
            "conflicts with job 'one' set at {first}:",
        ),
        (
            "options: {report: /b.json}\nmirrors: [{source: x, targets: [docker://r.example/b]}]\n",
            1,
            "conflicts with the value set at {first}:",
        ),
    ],
)
def test_directory_conflicts(tmp_path: Path, second: str, line: int, reason: str) -> None:
    first = write(
        tmp_path,
        """\
        registries: {r.example: {max-concurrency: 4}}
        job: one
        options: {report: /a.json}
        mirrors: [{source: alpine, targets: [docker://r.example/a]}]
    """,
        "a.yaml",
    )
    path = write(tmp_path, second, "b.yaml")
    with pytest.raises(UsageError) as info:
        load_config(tmp_path, environ={})
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert reason.format(first=first) in str(info.value)


def test_empty_directory_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no \\*.yaml or \\*.yml files"):
        load_config(tmp_path)
    with pytest.raises(UsageError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_job_defaults_to_the_file_or_directory_name(tmp_path: Path) -> None:
    assert load(tmp_path, HEAD).options.job == "sync"
    (tmp_path / "fleet").mkdir()
    write(tmp_path / "fleet", HEAD, "a.yaml")
    assert load_config(tmp_path / "fleet", environ={}).options.job == "fleet"


# =========================================================================== sources and naming


def test_source_forms(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        f"""\
        defaults: {{targets: [docker://r.example/m]}}
        mirrors:
          - source: alpine
          - source: quay.io/org/app:1.2
          - source: ghcr.io/org/app@{DIGEST}
          - source: {{registry: index.docker.io, repository: nginx}}
          - source: {{registry: registry, image: team/app:v1}}
          - source: {{image: quay.io/a/b@{DIGEST2}}}
          - source: {{registry: harbor.example, namespace: /platform/, allow: ['platform/api.*'], deny: ['.*-tmp']}}
          - source: {{registry: harbor.example, namespace: ''}}
          - source: {{oci: /media/layout}}
    """,
    )
    kinds = [(m.source.kind, str(m.source)) for m in config.mirrors]
    assert kinds == [
        ("repository", "docker.io/library/alpine"),
        ("image", "quay.io/org/app:1.2"),
        ("image", f"ghcr.io/org/app@{DIGEST}"),
        ("repository", "docker.io/library/nginx"),
        ("image", "registry/team/app:v1"),  # a single-label host works in the object form
        ("image", f"quay.io/a/b@{DIGEST2}"),
        ("namespace", "harbor.example/platform/*"),
        ("namespace", "harbor.example/*"),
        ("oci", "oci:/media/layout"),
    ]
    assert config.mirrors[1].tags == TagSelection(exact=("1.2",))
    assert config.mirrors[2].tags == TagSelection(digests=(DIGEST,))
    ns = config.mirrors[6].source
    assert ns.allows("platform/api") and ns.allows("platform/api-v2")
    assert not ns.allows("platform/api-tmp")  # deny wins
    assert not ns.allows("platform/web") and not ns.allows("platformx/api") and not ns.allows("other/platform/api")
    assert config.mirrors[7].source.allows("anything/at/all")
    assert ns.shard_key("platform/api") == "harbor.example/platform/api"


def naming_entry(template: str = "{repository}", prefix: str = "", suffix: str = "") -> MirrorEntry:
    return MirrorEntry(
        name="n",
        source=Source("repository", registry="docker.io", repository="library/alpine"),
        targets=(Target("registry", registry="r.example", path="mirror"),),
        naming=Naming(prefix=prefix, template=template, tag_suffix=suffix),
    )


@pytest.mark.parametrize(
    ("template", "prefix", "repository", "expected"),
    [
        ("{repository}", "", "library/alpine", "mirror/library/alpine"),
        ("{registry}/{repository}", "", "library/alpine", "mirror/docker.io/library/alpine"),
        ("{name}", "hub", "library/alpine", "mirror/hub/alpine"),
        ("{namespace}/{name}-mirror", "", "a/b/c", "mirror/a/b/c-mirror"),
        ("{namespace}/{name}", "", "single", "mirror/single"),  # an empty {namespace} leaves no empty segment
        ("fixed/{{literal}}", "", "x", None),  # braces are literal: an invalid repository name here
    ],
)
def test_naming_templates(template: str, prefix: str, repository: str, expected: str | None) -> None:
    entry = naming_entry(template, prefix)
    target = entry.targets[0]
    if expected is None:
        with pytest.raises(UsageError):
            entry.target_repository(target, repository)
    else:
        assert entry.target_repository(target, repository) == expected


def test_destinations_per_target_kind() -> None:
    entry = MirrorEntry(
        name="n",
        source=Source("repository", registry="quay.io", repository="org/app"),
        targets=(
            Target("registry", registry="docker.io"),
            Target("oci", path="/srv/layout"),
            Target("dir", path="/srv/dirs/"),
            Target("registry", registry="r.example", naming=Naming(template="{name}", tag_suffix="-m")),
        ),
        naming=Naming(template="{name}"),
    )
    hub, layout, dirs, other = entry.targets
    assert str(entry.destination(hub, "org/app", tag="1")) == "docker://docker.io/library/app:1"
    assert str(entry.destination(layout, "org/app", tag="1")) == "oci:/srv/layout:app:1"
    assert str(entry.destination(layout, "org/app", digest=DIGEST)) == f"oci:/srv/layout:app@{DIGEST}"
    assert str(entry.destination(dirs, "org/app", tag="1")) == "dir:/srv/dirs/app:1"
    assert str(entry.destination(other, "org/app", tag="1")) == "docker://r.example/app:1-m"
    with pytest.raises(UsageError, match="tag-suffix"):
        entry.destination(other, "org/app", digest=DIGEST)
    sig = "sha256-" + "ab" * 32 + ".sig"  # signature tags have destinations too (they travel with images)
    assert str(entry.destination(hub, "org/app", tag=sig)) == f"docker://docker.io/library/app:{sig}"
    assert str(entry.destination(other, "org/app", tag=sig)) == f"docker://r.example/app:{sig}"  # no suffix
    with pytest.raises(ValueError):
        entry.destination(hub, "org/app")


# =========================================================================== skopeo: sync YAML


def test_skopeo_yaml_reads_like_yaml_v3(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
        registry.example.com:
          images:
            busybox: [latest, 1.10, "{DIGEST}"]   # 1.10 stays "1.10", as Go's yaml.v3 decodes it
            empty: []
            nulled:
          images-by-tag-regex:
            app: '^v[0-9]+'
          images-by-semver:
            app: ">= 1.2, < 2"
          credentials: {{username: bot, password: hunter2}}
          tls-verify: no
          cert-dir: /certs
        docker.io/bitnami:
          images:
            redis: [7.4]
    """,
    )
    config = skopeo_yaml_to_config(path, "localhost:5000/mirror")
    names = [m.name for m in config.mirrors]
    assert names == [
        "registry.example.com/busybox", "registry.example.com/empty", "registry.example.com/nulled",
        "registry.example.com/app (images-by-tag-regex)", "registry.example.com/app (images-by-semver)",
        "docker.io/bitnami/redis",
    ]  # fmt: skip
    busybox = config.mirrors[0]
    assert busybox.tags == TagSelection(exact=("latest", "1.10"), digests=(DIGEST,))
    assert config.mirrors[1].tags == TagSelection() == config.mirrors[2].tags  # every tag
    assert config.mirrors[3].tags == TagSelection(include=("^v[0-9]+",), unanchored=True)
    assert config.mirrors[4].tags == TagSelection(semver=">= 1.2, < 2")
    assert str(config.mirrors[5].source) == "docker.io/bitnami/redis"
    reg = config.registry("registry.example.com")
    assert (reg.tls_verify, reg.cert_dir) == (False, "/certs")
    assert reg.credentials.resolve_password() == "hunter2" and reg.credentials.username == "bot"
    assert config.registry("docker.io") == RegistryConfig("docker.io")
    assert all(m.platforms == "system" for m in config.mirrors)
    assert "hunter2" not in repr(config)


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        (
            "r.example:\n  image: {a: [latest]}\n",
            2,
            "unknown key 'image' for registry 'r.example' (did you mean 'images'?)",
        ),
        ("r.example:\n  images: {a: latest}\n", 2, "each repository takes a list"),
        ("r.example:\n  images:\n    a: [latest, 'bad tag']\n", 3, "invalid tag 'bad tag'"),
        ("r.example:\n  images:\n    a: ['sha256:abc']\n", 3, "invalid digest"),
        ("r.example:\n  images:\n    A: [latest]\n", 3, "must be lowercase"),
        ("r.example:\n  images-by-tag-regex:\n    a: '(x'\n", 3, "invalid images-by-tag-regex"),
        ("r.example:\n  images-by-semver:\n    a: '>>1'\n", 3, "invalid semver range"),
        ("r.example:\n  tls-verify: maybe\n", 2, "tls-verify must be true or false"),
        ("r.example:\n  credentials: {user: x}\n", 2, "unknown key 'user' in credentials"),
        ("r.example:\n  images: {a: [x]}\n  images: {b: [y]}\n", 3, "duplicate key 'images'"),
        ("- a\n", 1, "must be a mapping"),
        ("r.example:\n  images:\n    a: [x\n", 4, "invalid YAML"),
    ],
)
def test_bad_skopeo_yaml(tmp_path: Path, text: str, line: int, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as info:
        skopeo_yaml_to_config(path, "localhost:5000/m")
    assert str(info.value).startswith(f"{path}:{line}: "), str(info.value)
    assert reason in str(info.value)


def test_skopeo_yaml_registry_conflict(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        docker.io:
          images: {alpine: [latest]}
        docker.io/library:
          images: {busybox: [latest]}
          tls-verify: false
    """,
    )
    with pytest.raises(UsageError, match="settings for docker.io conflict"):
        skopeo_yaml_to_config(path, "localhost:5000/m")


# Destination naming as upstream skopeo documents it (skopeo-sync(1)) for what 1.9.3 cannot show:
# --append-suffix ("String to append to destination tags") and images-by-semver.
@pytest.mark.parametrize(
    ("scoped", "suffix", "dest_transport", "dest", "expected"),
    [
        (False, "", "docker", "my-registry.local.lan/repo", "docker://my-registry.local.lan/repo/busybox:latest"),
        (
            True,
            "",
            "docker",
            "my-registry.local.lan/repo",
            "docker://my-registry.local.lan/repo/registry.example.com/busybox:latest",
        ),
        (
            False,
            "-mirror",
            "docker",
            "my-registry.local.lan/repo",
            "docker://my-registry.local.lan/repo/busybox:latest-mirror",
        ),
        (False, "", "dir", "/media/usb", "dir:/media/usb/busybox:latest"),
        (True, "", "dir", "/media/usb", "dir:/media/usb/registry.example.com/busybox:latest"),
        (False, "-x", "dir", "/media/usb/", "dir:/media/usb/busybox:latest-x"),
    ],
)
def test_skopeo_documented_naming(
    tmp_path: Path, scoped: bool, suffix: str, dest_transport: Any, dest: str, expected: str
) -> None:
    path = write(
        tmp_path,
        "registry.example.com:\n  images-by-semver:\n    busybox: '>= 1.36'\n  images:\n    busybox: [latest]\n",
    )
    config = skopeo_yaml_to_config(path, dest, scoped=scoped, append_suffix=suffix, dest_transport=dest_transport)
    semver_entry = config.mirror("registry.example.com/busybox (images-by-semver)")
    assert semver_entry.tags.semver == ">= 1.36"
    assert destinations(config) == {expected}
    target = semver_entry.targets[0]
    tagged = expected.replace(":latest", ":1.36.1")
    assert str(semver_entry.destination(target, "busybox", tag="1.36.1")) == tagged
    cli = skopeo_cli_source_to_config(
        "docker",
        "registry.example.com/busybox:latest",
        dest,
        scoped=scoped,
        append_suffix=suffix,
        dest_transport=dest_transport,
    )
    assert destinations(cli) == {expected}


def test_skopeo_cli_docker_sources() -> None:
    repo = skopeo_cli_source_to_config("docker", "quay.io/org/app", "r.example/m", all_platforms=True)
    (entry,) = repo.mirrors
    assert entry.source.kind == "repository" and entry.tags == TagSelection() and entry.platforms == "all"
    assert str(entry.destination(entry.targets[0], "org/app", tag="v1")) == "docker://r.example/m/app:v1"
    digest = skopeo_cli_source_to_config("docker", f"quay.io/org/app@{DIGEST}", "r.example/m")
    assert digest.mirrors[0].tags == TagSelection(digests=(DIGEST,))
    with pytest.raises(UsageError, match="both a tag and a digest"):
        skopeo_cli_source_to_config("docker", f"quay.io/org/app:1@{DIGEST}", "r.example/m")
    with pytest.raises(UsageError, match="append"):
        skopeo_cli_source_to_config("docker", "quay.io/org/app:1", "r.example/m", append_suffix="/x")
    with pytest.raises(UsageError, match="cannot be applied to the digest"):
        skopeo_cli_source_to_config("docker", f"quay.io/org/app@{DIGEST}", "r.example/m", append_suffix="-x")
    with pytest.raises(UsageError, match="not a valid source transport"):
        skopeo_cli_source_to_config("oci-archive", "x", "r.example/m")
    with pytest.raises(UsageError, match="invalid destination"):
        skopeo_cli_source_to_config("docker", "alpine:3", "r.example/Bad")
    with pytest.raises(UsageError, match="consider using rsync"):
        skopeo_cli_source_to_config("dir", "/tmp", "/tmp/x", dest_transport="dir")


# ---------------------------------------------------------------------- against the real skopeo binary

SKOPEO = shutil.which("skopeo")
needs_skopeo = pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed")


def as_skopeo_prints(names: set[str]) -> set[str]:
    """skopeo logs Docker references in their familiar form (docker.io/library/ dropped)."""
    out = set()
    for name in names:
        if name.startswith("docker://"):
            from regtool.reference import parse_reference

            name = "docker://" + parse_reference(name[len("docker://") :]).familiar
        out.add(name)
    return out


def skopeo_dry_run(cwd: Path, *args: str) -> set[str]:
    """Where ``skopeo sync --dry-run`` would copy to (it resolves names without contacting a registry)."""
    assert SKOPEO is not None
    proc = subprocess.run(
        [SKOPEO, "--insecure-policy", "sync", "--dry-run", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "HOME": str(cwd)},
    )
    assert proc.returncode == 0, proc.stderr
    return set(re.findall(r'to="([^"]+)"', proc.stderr))


def skopeo_fails(cwd: Path, *args: str) -> bool:
    assert SKOPEO is not None
    proc = subprocess.run(
        [SKOPEO, "--insecure-policy", "sync", "--dry-run", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "HOME": str(cwd)},
    )
    return proc.returncode != 0


SKOPEO_YAML = f"""\
registry.example.com:
  images:
    busybox: [latest, "1.36", "{DIGEST}"]
    team/app: [v1.0]
    deep/er/path/tool: ["2"]
docker.io:
  images:
    alpine: ["3.19"]
    library/nginx: [stable]
    bitnami/redis: ["7.4"]
quay.io/prometheus:
  images:
    node-exporter: [v1.8.2]
"""


@needs_skopeo
@pytest.mark.parametrize("scoped", [False, True])
@pytest.mark.parametrize("dest", ["localhost:5000/mirror", "localhost:5000/a/../mirror/", "docker.io/myorg", "mirror"])
def test_skopeo_yaml_naming_matches_skopeo_docker(tmp_path: Path, scoped: bool, dest: str) -> None:
    path = write(tmp_path, SKOPEO_YAML)
    flags = ["--scoped"] if scoped else []
    expected = skopeo_dry_run(tmp_path, *flags, "--src", "yaml", "--dest", "docker", str(path), dest)
    assert len(expected) == 9
    assert as_skopeo_prints(destinations(skopeo_yaml_to_config(path, dest, scoped=scoped))) == expected


@needs_skopeo
@pytest.mark.parametrize("scoped", [False, True])
def test_skopeo_yaml_naming_matches_skopeo_dir(tmp_path: Path, scoped: bool) -> None:
    path = write(tmp_path, SKOPEO_YAML)
    out = tmp_path / "usb"
    flags = ["--scoped"] if scoped else []
    expected = skopeo_dry_run(tmp_path, *flags, "--src", "yaml", "--dest", "dir", str(path), str(out))
    ours = destinations(skopeo_yaml_to_config(path, str(out), scoped=scoped, dest_transport="dir"))
    assert ours == expected and len(expected) == 9


@needs_skopeo
@pytest.mark.parametrize(
    "source",
    [
        "busybox:1.36",
        "registry.example.com/a/b/c:2",
        f"quay.io/x/y@{DIGEST}",
        "localhost:5000/z:9",
        "index.docker.io/library/alpine:3",
    ],
)
@pytest.mark.parametrize("scoped", [False, True])
def test_skopeo_cli_docker_naming_matches_skopeo(tmp_path: Path, source: str, scoped: bool) -> None:
    flags = ["--scoped"] if scoped else []
    args = (*flags, "--src", "docker", "--dest", "docker", source, "localhost:5000/m/")
    if scoped and source.startswith("localhost:5000/"):
        # "localhost:5000" is not a valid path component: both refuse before copying anything
        assert skopeo_fails(tmp_path, *args)
        with pytest.raises(UsageError, match="localhost:5000"):
            skopeo_cli_source_to_config("docker", source, "localhost:5000/m/", scoped=scoped)
        return
    expected = skopeo_dry_run(tmp_path, *args)
    config = skopeo_cli_source_to_config("docker", source, "localhost:5000/m/", scoped=scoped)
    assert as_skopeo_prints(destinations(config)) == expected


def make_dir_images(root: Path) -> None:
    for rel in ["src/a/b:1", "src/c/d", "src/c/e:2", "src/x", "src/x/aa:3", "src/x/zz:4", "img"]:
        (root / rel).mkdir(parents=True, exist_ok=True)
    for rel in ["src/a/b:1", "src/c/d", "src/c/e:2", "src/x", "src/x/aa:3", "src/x/zz:4", "img"]:
        (root / rel / "manifest.json").write_text("{}")
    # src/x is an image with two image directories inside: skopeo stops reading src/x at its
    # manifest.json, so src/x/aa:3 (sorted before it) is found and src/x/zz:4 (after it) is not.


@needs_skopeo
@pytest.mark.parametrize("source", ["src", "./src", "src/", "img", "img/", "src/c"])
@pytest.mark.parametrize("scoped", [False, True])
@pytest.mark.parametrize("suffix", [""])
def test_skopeo_dir_source_naming_matches_skopeo(tmp_path: Path, source: str, scoped: bool, suffix: str) -> None:
    make_dir_images(tmp_path)
    flags = ["--scoped"] if scoped else []
    expected = skopeo_dry_run(tmp_path, *flags, "--src", "dir", "--dest", "docker", source, "localhost:5000/m")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        config = skopeo_cli_source_to_config("dir", source, "localhost:5000/m", scoped=scoped, append_suffix=suffix)
    finally:
        os.chdir(cwd)
    assert as_skopeo_prints(destinations(config)) == expected
    assert all(m.source.kind == "dir" for m in config.mirrors)
    if source == "src":
        assert {m.source.path for m in config.mirrors} == {"src/a/b:1", "src/c/d", "src/c/e:2", "src/x", "src/x/aa:3"}


def test_skopeo_dir_source_append_suffix_as_documented(tmp_path: Path) -> None:
    make_dir_images(tmp_path)
    config = skopeo_cli_source_to_config("dir", str(tmp_path / "src" / "c"), "localhost:5000/m", append_suffix="-x")
    # DEST/<name> + suffix, then :latest when no tag is named (skopeo parses the joined string)
    assert destinations(config) == {"docker://localhost:5000/m/d-x:latest", "docker://localhost:5000/m/e:2-x"}
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="No images to sync found"):
        skopeo_cli_source_to_config("dir", str(tmp_path / "empty"), "r.example/m")
    with pytest.raises(UsageError, match="Invalid source directory specified"):
        skopeo_cli_source_to_config("dir", str(tmp_path / "missing"), "r.example/m")


# =========================================================================== sharding


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("0/1", {}, Shard(0, 1)),
        ("2/4", {}, Shard(2, 4)),
        ("/4", {"JOB_COMPLETION_INDEX": "3"}, Shard(3, 4)),
        ("1/4", {"JOB_COMPLETION_INDEX": "3"}, Shard(1, 4)),  # an explicit index wins
        (None, {}, Shard(0, 1)),
    ],
)
def test_parse_shard(text: str | None, env: dict[str, str], expected: Shard) -> None:
    assert parse_shard(text, env) == expected


@pytest.mark.parametrize(
    ("text", "env", "reason"),
    [
        ("4", {}, "expected I/N"),
        ("4/4", {}, "0 to 3 (shards are 0-based)"),
        ("-1/4", {}, "I must be a non-negative integer"),
        ("1/0", {}, "N must be at least 1"),
        ("1/x", {}, "N must be a positive integer"),
        ("/4", {}, "JOB_COMPLETION_INDEX, which is not set"),
        ("/4", {"JOB_COMPLETION_INDEX": "four"}, "invalid $JOB_COMPLETION_INDEX"),
        ("/4", {"JOB_COMPLETION_INDEX": "4"}, "0 to 3"),
        (f"0/{MAX_SHARDS + 1}", {}, "at most"),
    ],
)
def test_bad_shards(text: str, env: dict[str, str], reason: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_shard(text, env)
    assert reason in str(info.value) and info.value.exit_code == 2


def test_shard_hash_is_stable() -> None:
    # Pinned values: changing the hash would silently move repositories between workers.
    assert shard_of("docker.io/library/alpine", 4) == 0
    assert shard_of("quay.io/prometheus/prometheus", 7) == 4
    key = "ghcr.io/fluxcd/source-controller"  # the documented formula
    assert shard_of(key, 5) == int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 5
    assert shard_of("anything", 1) == 0
    assert repository_key("docker.io", "library/alpine") == "docker.io/library/alpine"
    with pytest.raises(UsageError):
        shard_of("x", 0)


@settings(max_examples=100, deadline=None)
@given(keys=st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=60, unique=True), n=st.integers(1, 12))
def test_shards_are_disjoint_and_cover_everything(keys: list[str], n: int) -> None:
    owners = {key: [i for i in range(n) if Shard(i, n).owns(key)] for key in keys}
    assert all(len(found) == 1 for found in owners.values())  # exactly one worker per repository
    union = set().union(*({k for k in keys if Shard(i, n).owns(k)} for i in range(n)))
    assert union == set(keys)


def test_shards_spread_repositories_evenly() -> None:
    keys = [repository_key("docker.io", f"library/image-{i}") for i in range(4000)]
    counts = [sum(1 for k in keys if shard_of(k, 8) == i) for i in range(8)]
    assert min(counts) > 400 and max(counts) < 600


def test_example_config_shards(tmp_path: Path) -> None:
    config = load_config(EXAMPLES / "sharded.yaml", environ={})
    shards = [parse_shard(f"/{4}", {"JOB_COMPLETION_INDEX": str(i)}) for i in range(4)]
    per_shard = [[m.name for m in config.mirrors if s.owns(m.shard_key())] for s in shards]
    assert sorted(sum(per_shard, [])) == sorted(m.name for m in config.mirrors)
    assert all(per_shard)  # 18 repositories over 4 workers: nobody idles
    assert config.mirrors[0].shard_key() == "docker.io/library/alpine"


def test_schema_file_is_shipped_with_the_package() -> None:
    assert SCHEMA_PATH.is_file()
    assert SCHEMA_PATH.parent == REPORT_SCHEMA.parent


# =========================================================================== schema, loader and docs agree


def test_every_schema_key_is_documented() -> None:
    doc = (ROOT / "docs" / "sync-config.md").read_text()

    def names(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "properties":
                    yield from value
                yield from names(value)
        elif isinstance(node, list):
            for item in node:
                yield from names(item)

    missing = sorted({n for n in names(load_schema()) if f"`{n}`" not in doc and f"`{n}:" not in doc})
    assert missing == []


PATHS_POOL = ["tags", "naming", "targets", "registry", "prune", "platforms", "latest", "semver", "x-note", "bogus"]
VALUES = st.one_of(
    st.integers(-2, 5),
    st.booleans(),
    st.none(),
    st.sampled_from(["", "all", "1.x", "docker://r.example/m", "oci:/l", "{name}", "v.*", "(", "3.10", "a b"]),
    st.lists(st.sampled_from(["latest", "linux/amd64", "docker://r.example/m", 3]), max_size=2),
    st.dictionaries(st.sampled_from(PATHS_POOL), st.sampled_from([1, "x", True, ["y"]]), max_size=2),
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_the_loader_never_accepts_what_the_schema_rejects(data: st.DataObject) -> None:
    example = data.draw(st.sampled_from(native_examples()), label="example")
    doc = yaml.safe_load(example.read_text())
    path = data.draw(st.sampled_from(list(_paths(doc))[1:]), label="path")
    parent: Any = doc
    for part in path[:-1]:
        parent = parent[part]
    if isinstance(parent, dict) and data.draw(st.booleans(), label="add a key"):
        parent[data.draw(st.sampled_from(PATHS_POOL), label="key")] = data.draw(VALUES, label="value")
    else:
        parent[path[-1]] = data.draw(VALUES, label="value")
    schema_ok = jsonschema.Draft202012Validator(load_schema()).is_valid(doc)
    try:
        load_config_text(yaml.safe_dump(doc), str(example), environ=ENV)
    except UsageError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(f"{example}:")
        return
    assert schema_ok, "the loader accepted a config the shipped schema rejects"
