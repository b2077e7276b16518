"""inspect, digest, list-tags and manifest-digest against real registries, compared with skopeo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import run_skopeo
from tests.support.cli import run_regtool
from tests.support.images import push_docker_image, push_index, push_oci_image
from tests.support.registries import Registry

FIXTURES = Path(__file__).parent / "fixtures" / "manifests"

# Fields skopeo 1.9.3 prints; LayersData is newer skopeo (checked against its documented shape below).
SKOPEO_FIELDS = ("Name", "Digest", "RepoTags", "Created", "DockerVersion", "Labels", "Architecture", "Os", "Layers",
                 "Env")


def flags(reg: Registry) -> list[str]:
    return reg.skopeo_flags()


@pytest.mark.parametrize("kind", ["oci", "docker", "index"])
def test_inspect_matches_skopeo(any_registry: Registry, repo: str, kind: str) -> None:
    if kind == "oci":
        img = push_oci_image(any_registry, repo, "v1", labels={"org.example.k": "v"})
    elif kind == "docker":
        img = push_docker_image(any_registry, repo, "v1", labels={"a": "b"})
    else:
        img = push_index(any_registry, repo, "v1")
    push_oci_image(any_registry, repo, "other", seed=99)
    ref = f"docker://{any_registry.host}/{repo}:v1"
    ours = run_regtool(["inspect", *flags(any_registry), ref])
    assert ours.rc == 0, ours.stderr
    theirs = json.loads(run_skopeo(["inspect", *flags(any_registry), ref]).stdout)
    mine = ours.json
    for field in SKOPEO_FIELDS:
        assert mine.get(field) == theirs.get(field), field
    assert mine.get("Variant") == theirs.get("Variant")
    assert mine["Digest"] == img.digest
    assert sorted(mine["RepoTags"]) == ["other", "v1"]
    # LayersData (newer skopeo): one entry per layer with its media type and size
    assert [d["Digest"] for d in mine["LayersData"]] == mine["Layers"]
    assert all(isinstance(d["Size"], int) and d["MIMEType"] for d in mine["LayersData"])


def test_inspect_raw_and_config_match_skopeo(registry_token: Registry, repo: str) -> None:
    img = push_index(registry_token, repo, "multi")
    ref = f"docker://{registry_token.host}/{repo}:multi"
    f = flags(registry_token)
    raw = run_regtool(["inspect", "--raw", *f, ref])
    assert raw.rc == 0 and raw.stdout == img.manifest == run_skopeo(["inspect", "--raw", *f, ref]).stdout
    for extra in ([], ["--raw"]):
        ours = run_regtool(["inspect", "--config", *extra, *f, "--override-arch", "arm64", ref])
        theirs = run_skopeo(["--override-arch", "arm64", "inspect", "--config", *extra, *f, ref]).stdout
        assert ours.rc == 0, ours.stderr
        if extra:
            assert ours.stdout == theirs
        else:
            assert ours.json == json.loads(theirs)


def test_inspect_override_arch_selects_instance(registry_plain: Registry, repo: str) -> None:
    push_index(registry_plain, repo, "m")
    ref = f"docker://{registry_plain.host}/{repo}:m"
    f = flags(registry_plain)
    for arch, variant in (("arm64", None), ("arm", "v7"), ("amd64", None)):
        extra = ["--override-arch", arch] + (["--override-variant", variant] if variant else [])
        ours = run_regtool(["inspect", *extra, *f, ref]).json
        theirs = json.loads(run_skopeo([*extra, "inspect", *f, ref]).stdout)
        assert ours["Architecture"] == theirs["Architecture"] == arch
        assert ours["Layers"] == theirs["Layers"]
        assert ours["Digest"] == theirs["Digest"]


def test_inspect_format_template(registry_plain: Registry, repo: str) -> None:
    img = push_oci_image(registry_plain, repo, "t", labels={"version": "1.2"})
    out = run_regtool(["inspect", "--format", '{{.Digest}} {{index .Labels "version"}}', *flags(registry_plain),
                       f"docker://{registry_plain.host}/{repo}:t"])
    assert out.rc == 0, out.stderr
    assert out.text == f"{img.digest} 1.2\n"


def test_digest_uses_head_and_matches(any_registry: Registry, repo: str) -> None:
    img = push_oci_image(any_registry, repo, "d")
    out = run_regtool(["digest", *flags(any_registry), f"docker://{any_registry.host}/{repo}:d"])
    assert out.rc == 0, out.stderr
    assert out.text.strip() == img.digest


def test_list_tags_matches_skopeo(any_registry: Registry, repo: str) -> None:
    for tag in ("a", "b", "c"):
        push_oci_image(any_registry, repo, tag, seed=1)
    ref = f"docker://{any_registry.host}/{repo}"
    ours = run_regtool(["list-tags", *flags(any_registry), ref])
    assert ours.rc == 0, ours.stderr
    theirs = json.loads(run_skopeo(["list-tags", *flags(any_registry), ref]).stdout)
    assert ours.json["Repository"] == theirs["Repository"]
    assert sorted(ours.json["Tags"]) == sorted(theirs["Tags"])


def test_token_is_reused_across_requests(registry_token: Registry, repo: str, token_server) -> None:  # type: ignore[no-untyped-def]
    push_index(registry_token, repo, "x")
    before = token_server.request_count
    out = run_regtool(["inspect", *flags(registry_token), f"docker://{registry_token.host}/{repo}:x"])
    assert out.rc == 0, out.stderr
    # manifest, child manifest, config and tag list all share one pull token for the repository
    assert token_server.request_count - before == 1


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["inspect", "alpine"], 2, "missing transport"),
        (["inspect", "docker://UPPER/Case:x"], 2, "invalid"),
        (["inspect", "docker://a/b:t@sha256:123"], 2, "invalid"),
        (["inspect", "bogus://x"], 2, "transport"),
        (["inspect", "--tls-verify=maybe", "docker://x/y"], 2, "invalid boolean"),
        (["list-tags", "docker://x/y:tag"], 2, "tag or digest"),
        (["manifest-digest", "/nonexistent/file"], 2, "cannot read"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(args: list[str], code: int, message: str) -> None:
    out = run_regtool(args)
    assert out.rc == code, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert out.stdout == b""


def test_missing_tag_and_repo_exit_2(registry_plain: Registry, repo: str) -> None:
    push_oci_image(registry_plain, repo, "exists")
    f = flags(registry_plain)
    missing_tag = run_regtool(["inspect", *f, f"docker://{registry_plain.host}/{repo}:nope"])
    assert missing_tag.rc == 2 and "MANIFEST_UNKNOWN" in missing_tag.stderr
    missing_repo = run_regtool(["list-tags", *f, f"docker://{registry_plain.host}/no/such-repo"])
    assert missing_repo.rc == 2 and "NAME_UNKNOWN" in missing_repo.stderr
    assert "Traceback" not in missing_tag.stderr + missing_repo.stderr


def test_401_without_credentials_exit_1(registry_basic: Registry, repo: str) -> None:
    push_oci_image(registry_basic, repo, "x")
    out = run_regtool(["inspect", "--cert-dir", str(registry_basic.cert_dir), f"docker://{registry_basic.host}/{repo}:x"])
    assert out.rc == 1
    assert "401" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_unknown_host_is_a_one_line_runtime_error() -> None:
    out = run_regtool(["inspect", "--command-timeout", "20", "docker://nonexistent.invalid/x/y:1"])
    assert out.rc == 1
    assert "nonexistent.invalid" in out.stderr and "Traceback" not in out.stderr


def test_tls_is_never_silently_downgraded(registry_plain: Registry, repo: str) -> None:
    push_oci_image(registry_plain, repo, "x")
    out = run_regtool(["inspect", f"docker://{registry_plain.host}/{repo}:x"])
    assert out.rc == 1
    assert "TLS" in out.stderr


def test_untrusted_certificate_fails_clearly_unless_tls_verify_false(registry_basic: Registry, repo: str) -> None:
    push_oci_image(registry_basic, repo, "x")
    creds = ["--creds", f"{registry_basic.username}:{registry_basic.password}"]
    ref = f"docker://{registry_basic.host}/{repo}:x"
    out = run_regtool(["inspect", *creds, ref])
    assert out.rc == 1 and "certificate" in out.stderr
    ok = run_regtool(["inspect", "--tls-verify=false", *creds, ref])
    assert ok.rc == 0, ok.stderr


def test_manifest_digest_matches_skopeo_on_every_fixture() -> None:
    checked = 0
    for path in sorted(FIXTURES.glob("*.json")):
        theirs = run_skopeo(["manifest-digest", str(path)], check=False)
        ours = run_regtool(["manifest-digest", str(path)])
        if theirs.returncode == 0:
            assert ours.rc == 0, (path.name, ours.stderr)
            assert ours.text.strip() == theirs.stdout.decode().strip(), path.name
            checked += 1
        else:
            assert ours.rc != 0, path.name
            assert "Traceback" not in ours.stderr
    assert checked >= 20
