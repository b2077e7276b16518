"""Credentials: ``--creds``, the containers-auth.json(5) search, helpers, login/logout."""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from regtool.errors import RegtoolError, UsageError
from regtool.registry import credentials
from regtool.registry.credentials import (
    Credential,
    auth_file_candidates,
    get_login,
    login,
    logout,
    lookup,
    parse_creds,
)
from regtool.registry.tls import build_ssl_context
from tests.support.registries import Registry

SECRET = "pa:ss-w0rd-SECRET"
TOKEN = "refresh-TOKEN-value"

linux_only = pytest.mark.skipif(sys.platform == "darwin", reason="auth.json locations differ on macOS")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def entry(user: str = "alice", password: str = SECRET) -> dict[str, str]:
    return {"auth": b64(f"{user}:{password}")}


@dataclass
class Env:
    root: Path
    home: Path
    run: Path

    @property
    def runtime(self) -> Path:
        return self.run / "containers" / "auth.json"

    @property
    def xdg(self) -> Path:
        return self.home / ".config" / "containers" / "auth.json"

    @property
    def docker(self) -> Path:
        return self.home / ".docker" / "config.json"

    @property
    def dockercfg(self) -> Path:
        return self.home / ".dockercfg"


def write_json(path: Path, content: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    home = tmp_path / "home"
    run = tmp_path / "run"
    home.mkdir()
    run.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    for name in ("XDG_CONFIG_HOME", "DOCKER_CONFIG", "REGISTRY_AUTH_FILE"):
        monkeypatch.delenv(name, raising=False)
    return Env(root=tmp_path, home=home, run=run)


# --------------------------------------------------------------------------- credential helpers

HELPER_SCRIPT = """#!{python}
# A docker-credential-* helper for tests: secrets live in $HELPER_DIR/<name>.json.
import json, os, sys
name = os.path.basename(sys.argv[0]).split("docker-credential-", 1)[1]
directory = os.environ["REGTOOL_TEST_HELPER_DIR"]
store = os.path.join(directory, name + ".json")
verb = sys.argv[1]
data = sys.stdin.read()
db = json.load(open(store)) if os.path.exists(store) else {{}}
with open(os.path.join(directory, "calls.log"), "a") as log:
    url = json.loads(data)["ServerURL"] if verb == "store" else data
    log.write(name + " " + verb + " " + url + "\\n")
if name == "broken":
    print("the keychain is locked")
    sys.exit(1)
if verb == "get":
    if data not in db:
        print("credentials not found in native keychain")
        sys.exit(1)
    user, secret = db[data]
    print(json.dumps({{"ServerURL": data, "Username": user, "Secret": secret}}))
elif verb == "store":
    payload = json.loads(data)
    db[payload["ServerURL"]] = [payload["Username"], payload["Secret"]]
    json.dump(db, open(store, "w"))
elif verb == "erase":
    if data not in db:
        print("credentials not found in native keychain")
        sys.exit(1)
    del db[data]
    json.dump(db, open(store, "w"))
else:
    print("unknown verb")
    sys.exit(1)
"""


@dataclass
class Helpers:
    directory: Path

    def db(self, name: str) -> dict[str, list[str]]:
        path = self.directory / f"{name}.json"
        return read_json(path) if path.exists() else {}

    def put(self, name: str, url: str, user: str, secret: str) -> None:
        db = self.db(name)
        db[url] = [user, secret]
        (self.directory / f"{name}.json").write_text(json.dumps(db))

    def calls(self) -> list[str]:
        log = self.directory / "calls.log"
        return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Helpers:
    """``docker-credential-{test,other,broken}`` on $PATH, backed by JSON files."""
    bindir = tmp_path / "bin"
    store = tmp_path / "helper-store"
    bindir.mkdir()
    store.mkdir()
    script = bindir / "docker-credential-test"
    script.write_text(HELPER_SCRIPT.format(python=sys.executable))
    script.chmod(0o755)
    for name in ("other", "broken"):
        (bindir / f"docker-credential-{name}").symlink_to(script)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("REGTOOL_TEST_HELPER_DIR", str(store))
    return Helpers(store)


# --------------------------------------------------------------------------- Credential


def test_repr_and_str_mask_every_secret() -> None:
    cred = Credential(username="alice", password=SECRET, identity_token=TOKEN, registry_token="bearer-XYZ")
    for text in (repr(cred), str(cred), repr([cred]), f"{cred}", repr({"c": cred})):
        assert SECRET not in text
        assert TOKEN not in text
        assert "bearer-XYZ" not in text
        assert "alice" in text
    assert repr(Credential()) == (
        "Credential(username=None, password=None, identity_token=None, registry_token=None)"
    )


def test_credential_is_frozen_and_compares_by_value() -> None:
    a = Credential("u", "p")
    assert a == Credential("u", "p")
    assert hash(a) == hash(Credential("u", "p"))
    with pytest.raises(AttributeError):
        a.password = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("cred", "expected"),
    [
        (Credential("u", "p"), ("u", "p")),
        (Credential("u"), ("u", "")),
        (Credential("u", ""), ("u", "")),
        (Credential(password="p"), None),
        (Credential(), None),
        (Credential("u", "", identity_token="t"), None),
        (Credential(registry_token="t"), None),
    ],
)
def test_basic_auth(cred: Credential, expected: tuple[str, str] | None) -> None:
    assert cred.basic_auth() == expected


@pytest.mark.parametrize(
    ("text", "user", "password"),
    [
        ("bob:secret", "bob", "secret"),
        ("bob:se:cr:et", "bob", "se:cr:et"),
        ("bob:", "bob", ""),
        ("bob", "bob", None),
        ("bob::", "bob", ":"),
    ],
)
def test_parse_creds(text: str, user: str, password: str | None) -> None:
    assert parse_creds(text) == Credential(username=user, password=password)


@pytest.mark.parametrize("text", [":" + SECRET, "", ":"])
def test_parse_creds_rejects_empty_username_without_echoing(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_creds(text)
    assert SECRET not in str(info.value)
    assert info.value.exit_code == 2


# --------------------------------------------------------------------------- file search order


@linux_only
def test_default_candidates_in_order(env: Env) -> None:
    assert auth_file_candidates() == [env.runtime, env.xdg, env.docker, env.dockercfg]


@linux_only
def test_candidates_without_xdg_runtime_dir(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    first = Path(f"/run/containers/{os.getuid()}/auth.json")
    assert auth_file_candidates() == [first, env.xdg, env.docker, env.dockercfg]
    assert auth_file_candidates(for_write=True) == [first]


@linux_only
def test_empty_environment_variables_count_as_unset(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("XDG_CONFIG_HOME", "DOCKER_CONFIG", "REGISTRY_AUTH_FILE"):
        monkeypatch.setenv(name, "")
    assert auth_file_candidates() == [env.runtime, env.xdg, env.docker, env.dockercfg]


@linux_only
def test_xdg_config_home_and_docker_config(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(env.root / "cfg"))
    monkeypatch.setenv("DOCKER_CONFIG", str(env.root / "dockercfgdir"))
    assert auth_file_candidates() == [
        env.runtime,
        env.root / "cfg" / "containers" / "auth.json",
        env.root / "dockercfgdir" / "config.json",
        env.dockercfg,
    ]


def test_registry_auth_file_replaces_the_list(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(env.root / "env.json"))
    assert auth_file_candidates() == [env.root / "env.json"]
    assert auth_file_candidates(for_write=True) == [env.root / "env.json"]


def test_authfile_beats_registry_auth_file(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(env.root / "env.json"))
    assert auth_file_candidates(str(env.root / "flag.json")) == [env.root / "flag.json"]
    assert auth_file_candidates(str(env.root / "flag.json"), for_write=True) == [env.root / "flag.json"]


@linux_only
def test_write_target_is_the_runtime_file(env: Env) -> None:
    assert auth_file_candidates(for_write=True) == [env.runtime]


# --------------------------------------------------------------------------- lookup: files


def _write_location(env: Env, where: str, registry: str, ent: dict[str, str]) -> Path:
    if where == "dockercfg":
        return write_json(env.dockercfg, {registry: ent})
    return write_json(getattr(env, where), {"auths": {registry: ent}})


@linux_only
@pytest.mark.parametrize("where", ["runtime", "xdg", "docker", "dockercfg"])
def test_each_location_is_read(env: Env, where: str) -> None:
    _write_location(env, where, "ghcr.io", entry("u-" + where))
    assert lookup("ghcr.io") == Credential("u-" + where, SECRET)
    assert lookup("quay.io") is None


@linux_only
@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        ("runtime", "xdg"),
        ("runtime", "docker"),
        ("runtime", "dockercfg"),
        ("xdg", "docker"),
        ("xdg", "dockercfg"),
        ("docker", "dockercfg"),
    ],
)
def test_earlier_file_wins(env: Env, earlier: str, later: str) -> None:
    _write_location(env, later, "ghcr.io", entry("later"))
    assert lookup("ghcr.io") == Credential("later", SECRET)
    _write_location(env, earlier, "ghcr.io", entry("earlier"))
    assert lookup("ghcr.io") == Credential("earlier", SECRET)


@linux_only
def test_file_without_a_match_falls_through(env: Env) -> None:
    write_json(env.runtime, {"auths": {"quay.io": entry("q"), "ghcr.io": {}}})
    write_json(env.docker, {"auths": {"ghcr.io": entry("g")}})
    assert lookup("ghcr.io") == Credential("g", SECRET)
    assert lookup("quay.io") == Credential("q", SECRET)


@linux_only
def test_environment_relocates_files(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(env.root / "cfg"))
    monkeypatch.setenv("DOCKER_CONFIG", str(env.root / "d"))
    write_json(env.xdg, {"auths": {"ghcr.io": entry("ignored-xdg")}})
    write_json(env.docker, {"auths": {"ghcr.io": entry("ignored-docker")}})
    assert lookup("ghcr.io") is None
    write_json(env.root / "d" / "config.json", {"auths": {"ghcr.io": entry("docker")}})
    assert lookup("ghcr.io") == Credential("docker", SECRET)
    write_json(env.root / "cfg" / "containers" / "auth.json", {"auths": {"ghcr.io": entry("xdg")}})
    assert lookup("ghcr.io") == Credential("xdg", SECRET)


@linux_only
def test_unset_xdg_runtime_dir_reads_run_containers(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    seen: list[Path] = []
    real = credentials._read_auth_file

    def spy(path: Path, *, explicit: bool) -> dict[str, Any] | None:
        seen.append(path)
        return real(path, explicit=explicit)

    monkeypatch.setattr(credentials, "_read_auth_file", spy)
    write_json(env.xdg, {"auths": {"ghcr.io": entry()}})
    assert lookup("ghcr.io") == Credential("alice", SECRET)
    assert seen[0] == Path(f"/run/containers/{os.getuid()}/auth.json")


def test_registry_auth_file_hides_default_files(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    write_json(env.runtime, {"auths": {"ghcr.io": entry("default")}})
    only = write_json(env.root / "only.json", {"auths": {"quay.io": entry("env")}})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(only))
    assert lookup("ghcr.io") is None
    assert lookup("quay.io") == Credential("env", SECRET)
    flag = write_json(env.root / "flag.json", {"auths": {"quay.io": entry("flag")}})
    assert lookup("quay.io", authfile=str(flag)) == Credential("flag", SECRET)


def test_missing_authfile_means_no_credentials(env: Env) -> None:
    assert lookup("ghcr.io", authfile=str(env.root / "nope.json")) is None
    assert lookup("ghcr.io") is None


# --------------------------------------------------------------------------- lookup: keys


@pytest.fixture
def ns_file(env: Env) -> str:
    path = write_json(
        env.root / "ns.json",
        {
            "auths": {
                "reg.example": entry("registry"),
                "reg.example/ns1": entry("ns1"),
                "reg.example/ns1/ns2": entry("ns2"),
                "reg.example/ns1/ns2/app": entry("repo"),
                "reg.example:5000": entry("port"),
            }
        },
    )
    return str(path)


@pytest.mark.parametrize(
    ("repository", "user"),
    [
        (None, "registry"),
        ("other/app", "registry"),
        ("ns1", "ns1"),
        ("ns1/app", "ns1"),
        ("ns1x/app", "registry"),
        ("ns1/ns2/other", "ns2"),
        ("ns1/ns2/deeper/app", "ns2"),
        ("ns1/ns2/app", "repo"),
        ("ns1/ns2/application", "ns2"),
    ],
)
def test_most_specific_namespace_key_wins(ns_file: str, repository: str | None, user: str) -> None:
    assert lookup("reg.example", repository, authfile=ns_file) == Credential(user, SECRET)


def test_port_is_part_of_the_registry(ns_file: str) -> None:
    assert lookup("reg.example:5000", "ns1/app", authfile=ns_file) == Credential("port", SECRET)
    assert lookup("reg.example:5001", "ns1/app", authfile=ns_file) is None


def test_namespace_given_in_the_registry_argument(ns_file: str) -> None:
    assert lookup("reg.example/ns1", authfile=ns_file) == Credential("ns1", SECRET)
    assert lookup("https://reg.example", authfile=ns_file) == Credential("registry", SECRET)


def test_namespace_key_alone_does_not_match_the_registry(env: Env) -> None:
    path = str(write_json(env.root / "a.json", {"auths": {"reg.example/ns1": entry()}}))
    assert lookup("reg.example", authfile=path) is None
    assert lookup("reg.example", "ns2/app", authfile=path) is None
    assert lookup("reg.example", "ns1/app", authfile=path) == Credential("alice", SECRET)


def test_empty_namespace_entry_falls_back_to_the_registry_entry(env: Env) -> None:
    path = str(write_json(env.root / "a.json", {"auths": {"reg.example/ns1": {}, "reg.example": entry()}}))
    assert lookup("reg.example", "ns1/app", authfile=path) == Credential("alice", SECRET)


@linux_only
def test_file_order_beats_key_specificity(env: Env) -> None:
    write_json(env.runtime, {"auths": {"reg.example": entry("general")}})
    write_json(env.docker, {"auths": {"reg.example/ns1": entry("specific")}})
    assert lookup("reg.example", "ns1/app") == Credential("general", SECRET)


@pytest.mark.parametrize("registry", ["docker.io", "index.docker.io", "registry-1.docker.io", "DOCKER.IO"])
@pytest.mark.parametrize(
    "key", ["https://index.docker.io/v1/", "index.docker.io", "docker.io", "http://index.docker.io/v1"]
)
def test_docker_hub_keys_are_equivalent(env: Env, registry: str, key: str) -> None:
    path = str(write_json(env.root / "hub.json", {"auths": {key: entry()}}))
    assert lookup(registry, "library/alpine", authfile=path) == Credential("alice", SECRET)


def test_exact_docker_io_key_beats_the_legacy_key(env: Env) -> None:
    path = str(
        write_json(
            env.root / "hub.json",
            {"auths": {"https://index.docker.io/v1/": entry("legacy"), "docker.io": entry("podman")}},
        )
    )
    assert lookup("docker.io", authfile=path) == Credential("podman", SECRET)


def test_docker_hub_namespace_keys(env: Env) -> None:
    path = str(
        write_json(
            env.root / "hub.json",
            {"auths": {"docker.io": entry("hub"), "docker.io/library": entry("library")}},
        )
    )
    assert lookup("docker.io", "library/alpine", authfile=path) == Credential("library", SECRET)
    assert lookup("docker.io", "someone/app", authfile=path) == Credential("hub", SECRET)


@pytest.mark.parametrize("key", ["https://ghcr.io", "http://ghcr.io/v2/", "https://ghcr.io/v1/", "GHCR.io"])
def test_url_style_keys_are_normalised(env: Env, key: str) -> None:
    path = str(write_json(env.root / "a.json", {"auths": {key: entry()}}))
    assert lookup("ghcr.io", "team/app", authfile=path) == Credential("alice", SECRET)


def test_other_registries_do_not_match(env: Env) -> None:
    path = str(write_json(env.root / "a.json", {"auths": {"ghcr.io.evil": entry(), "evil/ghcr.io": entry()}}))
    assert lookup("ghcr.io", authfile=path) is None


@linux_only
def test_dockercfg_legacy_format(env: Env) -> None:
    write_json(
        env.dockercfg,
        {
            "https://index.docker.io/v1/": {"auth": b64(f"hub:{SECRET}"), "email": "x@example.com"},
            "https://quay.io/v1/": {"auth": b64("q:pw")},
        },
    )
    assert lookup("docker.io", "library/alpine") == Credential("hub", SECRET)
    assert lookup("quay.io") == Credential("q", "pw")


def test_entry_fields(env: Env) -> None:
    path = str(
        write_json(
            env.root / "a.json",
            {
                "auths": {
                    "fields.example": {"username": "bob", "password": SECRET},
                    "token.example": {"auth": b64("bob:"), "identitytoken": TOKEN},
                    "tokenonly.example": {"identitytoken": TOKEN},
                    "registrytoken.example": {"registrytoken": TOKEN},
                    "nul.example": {"auth": b64("bob:pw\x00\x00")},
                    "colon.example": {"auth": b64("bob:a:b:c")},
                    "unicode.example": {"auth": b64("bøb:pässwörd")},
                }
            },
        )
    )
    assert lookup("fields.example", authfile=path) == Credential("bob", SECRET)
    assert lookup("token.example", authfile=path) == Credential("bob", "", identity_token=TOKEN)
    assert lookup("tokenonly.example", authfile=path) == Credential(identity_token=TOKEN)
    assert lookup("registrytoken.example", authfile=path) == Credential(registry_token=TOKEN)
    assert lookup("nul.example", authfile=path) == Credential("bob", "pw")
    assert lookup("colon.example", authfile=path) == Credential("bob", "a:b:c")
    assert lookup("unicode.example", authfile=path) == Credential("bøb", "pässwörd")


def test_auth_without_colon_is_skipped_without_logging_it(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    path = str(write_json(env.root / "a.json", {"auths": {"ghcr.io": {"auth": b64("no-colon-SECRET")}}}))
    with caplog.at_level(logging.DEBUG):
        assert lookup("ghcr.io", authfile=path) is None
    assert "ghcr.io" in caplog.text
    assert "no-colon-SECRET" not in caplog.text


def test_invalid_json_names_the_file(env: Env) -> None:
    path = env.root / "bad.json"
    path.write_text('{"auths": {"ghcr.io": {"auth": "' + b64("u:" + SECRET) + '"}')
    with pytest.raises(UsageError) as info:
        lookup("ghcr.io", authfile=str(path))
    assert str(path) in str(info.value)
    assert b64("u:" + SECRET) not in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        [],
        {"auths": []},
        {"auths": {"ghcr.io": "x"}},
        {"auths": {"ghcr.io": {"auth": 5}}},
        {"credHelpers": ["x"]},
        {"auths": {"ghcr.io": {"auth": "!!!not base64" + SECRET}}},
    ],
)
def test_malformed_file_is_a_usage_error(env: Env, content: Any) -> None:
    path = write_json(env.root / "bad.json", content)
    with pytest.raises(UsageError) as info:
        lookup("ghcr.io", authfile=str(path))
    assert str(path) in str(info.value)
    assert SECRET not in str(info.value)


@linux_only
def test_invalid_default_file_is_an_error_too(env: Env) -> None:
    env.docker.parent.mkdir(parents=True)
    env.docker.write_text("{nope")
    with pytest.raises(UsageError, match="config.json"):
        lookup("ghcr.io")


def test_empty_file_is_empty(env: Env) -> None:
    path = env.root / "empty.json"
    path.write_text("")
    assert lookup("ghcr.io", authfile=str(path)) is None


def test_lookup_logs_no_secrets(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    path = str(write_json(env.root / "a.json", {"auths": {"ghcr.io": entry()}}))
    with caplog.at_level(logging.DEBUG):
        assert lookup("ghcr.io", authfile=path) is not None
        assert lookup("quay.io", authfile=path) is None
    assert SECRET not in caplog.text
    assert b64("alice:" + SECRET) not in caplog.text


# --------------------------------------------------------------------------- lookup: helpers


def test_cred_helper_is_used_first(env: Env, helpers: Helpers) -> None:
    helpers.put("test", "ghcr.io", "from-helper", SECRET)
    path = str(
        write_json(
            env.root / "a.json",
            {"credHelpers": {"ghcr.io": "test"}, "auths": {"ghcr.io": entry("from-auths")}},
        )
    )
    assert lookup("ghcr.io", "team/app", authfile=path) == Credential("from-helper", SECRET)
    assert helpers.calls() == ["test get ghcr.io"]


def test_cred_helper_without_credentials_falls_back_to_auths(env: Env, helpers: Helpers) -> None:
    path = str(
        write_json(
            env.root / "a.json",
            {"credHelpers": {"ghcr.io": "test"}, "auths": {"ghcr.io": entry("from-auths")}},
        )
    )
    assert lookup("ghcr.io", authfile=path) == Credential("from-auths", SECRET)


def test_cred_helper_only_for_its_registry(env: Env, helpers: Helpers) -> None:
    path = str(write_json(env.root / "a.json", {"credHelpers": {"quay.io": "broken"}}))
    assert lookup("ghcr.io", authfile=path) is None
    assert helpers.calls() == []


def test_cred_helper_identity_token(env: Env, helpers: Helpers) -> None:
    helpers.put("test", "ghcr.io", "<token>", TOKEN)
    path = str(write_json(env.root / "a.json", {"credHelpers": {"ghcr.io": "test"}}))
    assert lookup("ghcr.io", authfile=path) == Credential(identity_token=TOKEN)


def test_creds_store_after_auths(env: Env, helpers: Helpers) -> None:
    helpers.put("test", "ghcr.io", "store-ghcr", SECRET)
    helpers.put("test", "quay.io", "store-quay", SECRET)
    path = str(
        write_json(
            env.root / "a.json",
            # what `docker login` writes with a credsStore: an empty marker entry
            {"credsStore": "test", "auths": {"ghcr.io": {}, "quay.io": entry("file-quay")}},
        )
    )
    assert lookup("ghcr.io", authfile=path) == Credential("store-ghcr", SECRET)
    assert lookup("quay.io", authfile=path) == Credential("file-quay", SECRET)
    assert lookup("nothing.example", authfile=path) is None


def test_cred_helpers_beat_creds_store(env: Env, helpers: Helpers) -> None:
    helpers.put("test", "ghcr.io", "store", SECRET)
    helpers.put("other", "ghcr.io", "helper", SECRET)
    path = str(write_json(env.root / "a.json", {"credsStore": "test", "credHelpers": {"ghcr.io": "other"}}))
    assert lookup("ghcr.io", authfile=path) == Credential("helper", SECRET)


def test_docker_hub_asks_helpers_for_the_docker_server_url(env: Env, helpers: Helpers) -> None:
    helpers.put("test", "https://index.docker.io/v1/", "hub", SECRET)
    path = str(write_json(env.root / "a.json", {"credHelpers": {"index.docker.io": "test"}}))
    assert lookup("docker.io", "library/alpine", authfile=path) == Credential("hub", SECRET)
    assert helpers.calls() == ["test get https://index.docker.io/v1/"]


@linux_only
def test_helper_in_later_file(env: Env, helpers: Helpers) -> None:
    helpers.put("test", "ghcr.io", "docker-desktop", SECRET)
    write_json(env.runtime, {"auths": {"quay.io": entry()}})
    write_json(env.docker, {"credsStore": "test"})
    assert lookup("ghcr.io") == Credential("docker-desktop", SECRET)


def test_missing_helper_binary_is_a_one_line_error(env: Env, helpers: Helpers) -> None:
    path = str(write_json(env.root / "a.json", {"credHelpers": {"ghcr.io": "does-not-exist"}}))
    with pytest.raises(RegtoolError) as info:
        lookup("ghcr.io", authfile=path)
    message = str(info.value)
    assert "docker-credential-does-not-exist" in message
    assert "\n" not in message
    assert info.value.exit_code == 1


def test_missing_creds_store_binary_is_an_error(env: Env, helpers: Helpers) -> None:
    path = str(write_json(env.root / "a.json", {"credsStore": "desktop"}))
    with pytest.raises(RegtoolError, match="docker-credential-desktop"):
        lookup("ghcr.io", authfile=path)


def test_failing_helper_reports_its_message(env: Env, helpers: Helpers) -> None:
    path = str(write_json(env.root / "a.json", {"credHelpers": {"ghcr.io": "broken"}}))
    with pytest.raises(RegtoolError, match="docker-credential-broken get failed: the keychain is locked"):
        lookup("ghcr.io", authfile=path)


def test_helper_name_with_a_path_is_refused(env: Env, helpers: Helpers) -> None:
    path = str(write_json(env.root / "a.json", {"credHelpers": {"ghcr.io": "../../bin/sh"}}))
    with pytest.raises(UsageError, match="invalid credential helper"):
        lookup("ghcr.io", authfile=path)


# --------------------------------------------------------------------------- login / logout


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@linux_only
def test_login_creates_a_private_runtime_file(env: Env) -> None:
    path = login("ghcr.io", Credential("alice", SECRET))
    assert path == env.runtime
    assert read_json(path) == {"auths": {"ghcr.io": {"auth": b64(f"alice:{SECRET}")}}}
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert lookup("ghcr.io") == Credential("alice", SECRET)
    assert get_login("ghcr.io") == "alice"
    assert [p.name for p in path.parent.iterdir()] == ["auth.json"]  # no temp files left


def test_login_creates_missing_directories_private(env: Env) -> None:
    target = env.root / "a" / "b" / "auth.json"
    login("ghcr.io", Credential("alice", SECRET), authfile=str(target))
    assert _mode(env.root / "a") == 0o700
    assert _mode(env.root / "a" / "b") == 0o700
    assert _mode(target) == 0o600


def test_login_preserves_other_content(env: Env) -> None:
    original = {
        "auths": {"quay.io": entry("q"), "ghcr.io": entry("old")},
        "credHelpers": {"gcr.io": "gcloud"},
        "HttpHeaders": {"User-Agent": "x"},
        "experimental": "enabled",
    }
    path = write_json(env.root / "a.json", original)
    path.chmod(0o644)
    login("ghcr.io", Credential("new", "pw"), authfile=str(path))
    content = read_json(path)
    assert content["auths"] == {"quay.io": entry("q"), "ghcr.io": {"auth": b64("new:pw")}}
    assert content["credHelpers"] == original["credHelpers"]
    assert content["HttpHeaders"] == original["HttpHeaders"]
    assert content["experimental"] == "enabled"
    assert _mode(path) == 0o600


def test_login_with_null_auths(env: Env) -> None:
    path = write_json(env.root / "a.json", {"auths": None})
    login("ghcr.io", Credential("alice", SECRET), authfile=str(path))
    assert lookup("ghcr.io", authfile=str(path)) == Credential("alice", SECRET)


def test_login_file_is_never_readable_by_others(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even with umask 0 the temp file is 0600 from the moment it exists."""
    opened: list[tuple[str, int, int]] = []
    modes_while_writing: list[int] = []
    real_open, real_write = os.open, os.write

    def spy_open(path: Any, flags: int, mode: int = 0o777, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, flags, mode, *args, **kwargs)
        if str(path).endswith(".tmp"):
            opened.append((str(path), flags, mode))
        return fd

    def spy_write(fd: int, data: Any) -> int:
        modes_while_writing.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_write(fd, data)

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "write", spy_write)
    old_umask = os.umask(0)
    try:
        path = login("ghcr.io", Credential("alice", SECRET), authfile=str(env.root / "d" / "auth.json"))
    finally:
        os.umask(old_umask)
    assert len(opened) == 1
    tmp, flags, mode = opened[0]
    assert Path(tmp).parent == path.parent
    assert flags & os.O_CREAT and flags & os.O_EXCL
    assert mode == 0o600
    assert modes_while_writing and all(m == 0o600 for m in modes_while_writing)
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700


def test_failed_write_keeps_the_old_file(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_json(env.root / "a.json", {"auths": {"quay.io": entry("q")}})
    before = path.read_bytes()

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(RegtoolError, match="No space left") as info:
        login("ghcr.io", Credential("alice", SECRET), authfile=str(path))
    assert SECRET not in str(info.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in env.root.iterdir()) == sorted(["a.json", "home", "run"])


def test_login_keeps_a_symlinked_auth_file_a_symlink(env: Env) -> None:
    real = write_json(env.root / "real" / "auth.json", {"auths": {}})
    link = env.root / "link.json"
    link.symlink_to(real)
    login("ghcr.io", Credential("alice", SECRET), authfile=str(link))
    assert link.is_symlink()
    assert lookup("ghcr.io", authfile=str(real)) == Credential("alice", SECRET)


def test_login_honours_registry_auth_file(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    target = env.root / "env.json"
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(target))
    assert login("ghcr.io", Credential("alice", SECRET)) == target
    assert not env.runtime.exists()
    assert get_login("ghcr.io") == "alice"


@pytest.mark.parametrize("registry", ["docker.io", "index.docker.io", "https://index.docker.io/v1/"])
def test_login_to_docker_hub_writes_docker_io(env: Env, registry: str) -> None:
    path = env.root / "a.json"
    login(registry, Credential("alice", SECRET), authfile=str(path))
    assert list(read_json(path)["auths"]) == ["docker.io"]
    assert lookup("registry-1.docker.io", "library/alpine", authfile=str(path)) == Credential("alice", SECRET)


def test_namespaced_login(env: Env) -> None:
    path = str(env.root / "a.json")
    login("quay.io/team", Credential("team-bot", "pw"), authfile=path)
    login("quay.io", Credential("me", "pw"), authfile=path)
    assert lookup("quay.io", "team/app", authfile=path) == Credential("team-bot", "pw")
    assert lookup("quay.io", "other/app", authfile=path) == Credential("me", "pw")
    assert get_login("quay.io/team", authfile=path) == "team-bot"


def test_login_identity_token(env: Env) -> None:
    path = str(env.root / "a.json")
    login("ghcr.io", Credential("bob", identity_token=TOKEN), authfile=path)
    assert read_json(Path(path))["auths"]["ghcr.io"] == {"auth": b64("bob:"), "identitytoken": TOKEN}
    assert lookup("ghcr.io", authfile=path) == Credential("bob", "", identity_token=TOKEN)


@pytest.mark.parametrize(
    "cred", [Credential(), Credential("alice"), Credential("alice", ""), Credential(None, "x")]
)
def test_login_needs_a_secret_and_user(env: Env, cred: Credential) -> None:
    with pytest.raises(UsageError):
        login("ghcr.io", cred, authfile=str(env.root / "a.json"))
    assert not (env.root / "a.json").exists()


def test_login_refuses_to_clobber_invalid_json(env: Env) -> None:
    path = env.root / "a.json"
    path.write_text("{broken")
    with pytest.raises(UsageError, match="a.json"):
        login("ghcr.io", Credential("alice", SECRET), authfile=str(path))
    assert path.read_text() == "{broken"


@linux_only
def test_login_with_missing_xdg_runtime_dir(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(env.root / "missing"))
    with pytest.raises(UsageError, match="XDG_RUNTIME_DIR"):
        login("ghcr.io", Credential("alice", SECRET))


def test_login_logs_no_secrets(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        login("ghcr.io", Credential("alice", SECRET), authfile=str(env.root / "a.json"))
        logout("ghcr.io", authfile=str(env.root / "a.json"))
    assert SECRET not in caplog.text


def test_login_uses_the_cred_helper(env: Env, helpers: Helpers) -> None:
    path = write_json(env.root / "a.json", {"credHelpers": {"ghcr.io": "test"}, "auths": {}})
    before = path.read_bytes()
    assert login("ghcr.io", Credential("alice", SECRET), authfile=str(path)) == path
    assert path.read_bytes() == before
    assert helpers.db("test") == {"ghcr.io": ["alice", SECRET]}
    assert lookup("ghcr.io", authfile=str(path)) == Credential("alice", SECRET)
    assert logout("ghcr.io", authfile=str(path)) == [path]
    assert helpers.db("test") == {}
    assert lookup("ghcr.io", authfile=str(path)) is None


def test_login_uses_the_creds_store(env: Env, helpers: Helpers) -> None:
    path = write_json(env.root / "a.json", {"credsStore": "test"})
    login("docker.io", Credential("alice", SECRET), authfile=str(path))
    assert helpers.db("test") == {"https://index.docker.io/v1/": ["alice", SECRET]}
    assert read_json(path) == {"credsStore": "test"}
    login("ghcr.io", Credential(identity_token=TOKEN), authfile=str(path))
    assert helpers.db("test")["ghcr.io"] == ["<token>", TOKEN]
    assert lookup("ghcr.io", authfile=str(path)) == Credential(identity_token=TOKEN)


def test_namespaced_login_bypasses_helpers(env: Env, helpers: Helpers) -> None:
    path = write_json(env.root / "a.json", {"credsStore": "broken"})
    login("quay.io/team", Credential("bot", "pw"), authfile=str(path))
    assert read_json(path)["auths"] == {"quay.io/team": {"auth": b64("bot:pw")}}
    assert helpers.calls() == []


@linux_only
def test_logout_removes_only_that_registry(env: Env) -> None:
    write_json(
        env.runtime,
        {
            "auths": {
                "ghcr.io": entry(),
                "https://ghcr.io": entry("legacy"),
                "ghcr.io/team": entry("team"),
                "quay.io": entry("q"),
            },
            "other": 1,
        },
    )
    write_json(env.docker, {"auths": {"ghcr.io": entry("docker")}})
    assert logout("ghcr.io") == [env.runtime]
    assert read_json(env.runtime) == {
        "auths": {"ghcr.io/team": entry("team"), "quay.io": entry("q")},
        "other": 1,
    }
    assert _mode(env.runtime) == 0o600
    # podman logout leaves other tools' files alone; their credentials still apply
    assert read_json(env.docker) == {"auths": {"ghcr.io": entry("docker")}}
    assert lookup("ghcr.io") == Credential("docker", SECRET)
    assert logout("ghcr.io") == []


def test_logout_namespace(env: Env) -> None:
    path = write_json(env.root / "a.json", {"auths": {"quay.io": entry("q"), "quay.io/team": entry("t")}})
    assert logout("quay.io/team", authfile=str(path)) == [path]
    assert read_json(path) == {"auths": {"quay.io": entry("q")}}


def test_logout_docker_hub_removes_all_spellings(env: Env) -> None:
    path = write_json(
        env.root / "a.json",
        {"auths": {"docker.io": entry(), "https://index.docker.io/v1/": entry(), "quay.io": entry()}},
    )
    assert logout("index.docker.io", authfile=str(path)) == [path]
    assert list(read_json(path)["auths"]) == ["quay.io"]
    assert lookup("docker.io", authfile=str(path)) is None


def test_logout_when_nothing_is_stored(env: Env) -> None:
    assert logout("ghcr.io", authfile=str(env.root / "missing.json")) == []
    assert not (env.root / "missing.json").exists()
    with pytest.raises(UsageError):
        logout(None, authfile=str(env.root / "missing.json"))


def test_logout_all(env: Env, helpers: Helpers) -> None:
    helpers.put("test", "ghcr.io", "h", SECRET)
    helpers.put("other", "https://index.docker.io/v1/", "hub", SECRET)
    helpers.put("other", "unrelated.example", "keep", SECRET)
    path = write_json(
        env.root / "a.json",
        {
            "auths": {"quay.io": entry(), "docker.io": {}},
            "credHelpers": {"ghcr.io": "test"},
            "credsStore": "other",
            "keep": True,
        },
    )
    assert logout(None, authfile=str(path), all=True) == [path]
    assert read_json(path) == {
        "auths": {},
        "credHelpers": {"ghcr.io": "test"},
        "credsStore": "other",
        "keep": True,
    }
    assert helpers.db("test") == {}
    assert helpers.db("other") == {"unrelated.example": ["keep", SECRET]}
    assert logout(None, authfile=str(path), all=True) == []


def test_get_login(env: Env) -> None:
    path = str(
        write_json(env.root / "a.json", {"auths": {"ghcr.io": entry("who"), "t.io": {"identitytoken": "x"}}})
    )
    assert get_login("ghcr.io", authfile=path) == "who"
    assert get_login("t.io", authfile=path) is None
    assert get_login("quay.io", authfile=path) is None


# --------------------------------------------------------------------------- compatibility with skopeo

skopeo = shutil.which("skopeo")
needs_skopeo = pytest.mark.skipif(skopeo is None, reason="skopeo is not installed")


def _skopeo(*args: str, env_vars: dict[str, str] | None = None, stdin: str | None = None) -> str:
    assert skopeo is not None
    proc = subprocess.run(
        [skopeo, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env_vars or {})},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@needs_skopeo
def test_skopeo_reads_what_we_write(env: Env) -> None:
    path = env.root / "auth.json"
    login("reg.example:5000", Credential("alice", SECRET), authfile=str(path))
    login("quay.io/team", Credential("team-bot", SECRET), authfile=str(path))
    assert _skopeo("login", "--get-login", "--authfile", str(path), "reg.example:5000").strip() == "alice"
    assert _skopeo("login", "--get-login", "--authfile", str(path), "quay.io/team").strip() == "team-bot"


@needs_skopeo
@linux_only
def test_skopeo_and_we_share_the_default_write_target(env: Env) -> None:
    login("reg.example:5000", Credential("alice", SECRET))
    assert _skopeo("login", "--get-login", "reg.example:5000").strip() == "alice"
    _skopeo("logout", "reg.example:5000")
    assert lookup("reg.example:5000") is None


@needs_skopeo
def test_we_read_what_skopeo_login_writes(env: Env, registry_basic: Registry) -> None:
    reg = registry_basic
    assert reg.username is not None and reg.password is not None
    path = env.root / "auth.json"
    _skopeo(
        "login",
        "--authfile",
        str(path),
        "--cert-dir",
        str(reg.cert_dir),
        "--username",
        reg.username,
        "--password-stdin",
        reg.host,
        stdin=reg.password,
    )
    assert lookup(reg.host, "some/repo", authfile=str(path)) == Credential(reg.username, reg.password)
    assert _mode(path) & 0o077 == 0


def test_lookup_credentials_work_against_a_real_registry(env: Env, registry_basic: Registry) -> None:
    reg = registry_basic
    assert reg.username is not None and reg.password is not None
    path = str(env.root / "auth.json")
    login(reg.host, Credential(reg.username, reg.password), authfile=path)
    cred = lookup(reg.host, "any/repo", authfile=path)
    assert cred is not None
    basic = cred.basic_auth()
    assert basic is not None
    ctx = build_ssl_context(reg.host, cert_dir=str(reg.cert_dir))
    with httpx.Client(verify=ctx, timeout=30) as client:
        assert client.get(f"{reg.url}/v2/").status_code == 401
        assert client.get(f"{reg.url}/v2/", auth=basic).status_code == 200
