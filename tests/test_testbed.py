"""The test bed itself works: real registries, image helpers and token server, checked with skopeo."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from tests.support import images as img
from tests.support import run_skopeo
from tests.support.registries import (
    COMPOSE_PORTS,
    COMPOSE_TOKEN_PORT,
    KINDS,
    PASSWORD,
    TOKEN_ISSUER,
    TOKEN_SERVICE,
    USERNAME,
    BearerChallengeAuth,
    Registry,
    RegistryBed,
    TestPKI,
    bcrypt_check,
    bcrypt_hash,
    compose_setup,
    free_port,
    parse_challenge,
    repo_name,
)
from tests.support.tokenserver import TokenServer, decode_jwt_unverified, libtrust_key_id

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024

Pusher = Callable[[Registry, str], img.PushedImage]


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


IMAGE_KINDS: dict[str, Pusher] = {
    "oci": lambda r, repo: img.push_oci_image(r, repo, "v1"),
    "docker": lambda r, repo: img.push_docker_image(r, repo, "v1"),
    "oci-index": lambda r, repo: img.push_index(r, repo, "multi"),
    "docker-list": lambda r, repo: img.push_index(r, repo, "multi", docker=True),
    "big": lambda r, repo: img.push_big_image(r, repo, "big", size=8 * MiB),
    "signature": lambda r, repo: img.push_signed_image(r, repo, "signed")[1],
    "referrer": lambda r, repo: img.push_referrer(r, img.push_oci_image(r, repo, "subject")),
}


# ------------------------------------------------------------------------------------------------------
# Every image kind on every registry kind, read back by skopeo
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("image_kind", list(IMAGE_KINDS))
def test_skopeo_reads_what_helpers_push(any_registry: Registry, repo: str, image_kind: str) -> None:
    pushed = IMAGE_KINDS[image_kind](any_registry, repo)
    assert pushed.reference.startswith(f"{any_registry.host}/{repo}")

    raw = run_skopeo(
        ["inspect", "--raw", *any_registry.skopeo_flags(), f"docker://{pushed.reference}"]
    ).stdout
    assert raw == pushed.manifest
    assert _sha(raw) == pushed.digest
    assert json.loads(raw)["mediaType"] == pushed.media_type

    by_digest = run_skopeo(
        ["inspect", "--raw", *any_registry.skopeo_flags(), f"docker://{pushed.digest_reference}"]
    ).stdout
    assert by_digest == pushed.manifest

    if image_kind in ("oci-index", "docker-list"):
        assert [c.platform and str(c.platform) for c in pushed.children] == list(img.DEFAULT_PLATFORMS)
        for child in pushed.children:
            child_raw = run_skopeo(
                ["inspect", "--raw", *any_registry.skopeo_flags(), f"docker://{child.digest_reference}"]
            ).stdout
            assert _sha(child_raw) == child.digest
        arm = run_skopeo(
            [
                "--override-arch",
                "arm64",
                "--override-variant",
                "v8",
                "inspect",
                *any_registry.skopeo_flags(),
                f"docker://{pushed.reference}",
            ]
        ).stdout
        info = json.loads(arm)
        assert info["Architecture"] == "arm64"
        assert info["Layers"] == [layer.digest for layer in pushed.child("linux/arm64/v8").layers]
        return

    if image_kind in ("oci", "docker", "big"):
        info = json.loads(
            run_skopeo(["inspect", *any_registry.skopeo_flags(), f"docker://{pushed.reference}"]).stdout
        )
        assert info["Digest"] == pushed.digest
        assert info["Architecture"] == "amd64"
        assert info["Os"] == "linux"
        assert info["Layers"] == [layer.digest for layer in pushed.layers]

    config = run_skopeo(
        ["inspect", "--config", "--raw", *any_registry.skopeo_flags(), f"docker://{pushed.reference}"]
    ).stdout
    assert config == pushed.config


@pytest.mark.parametrize("docker", [False, True], ids=["oci", "docker"])
def test_skopeo_copy_verifies_every_blob(
    any_registry: Registry, repo: str, tmp_path: Path, docker: bool
) -> None:
    pushed = (img.push_docker_image if docker else img.push_oci_image)(any_registry, repo, "v1", layers=3)
    out = tmp_path / "dir"
    run_skopeo(["copy", *any_registry.skopeo_flags("src-"), f"docker://{pushed.reference}", f"dir:{out}"])
    assert (out / "manifest.json").read_bytes() == pushed.manifest
    for blob in [pushed.config_blob, *pushed.layers]:
        assert blob is not None
        data = (out / blob.digest.split(":")[1]).read_bytes()
        assert data == blob.data
    # The config's diff_ids are the digests of the uncompressed layers.
    assert pushed.config_json is not None
    diff_ids = pushed.config_json["rootfs"]["diff_ids"]
    assert diff_ids == [_sha(gzip.decompress(layer.data or b"")) for layer in pushed.layers]


@pytest.mark.slow
def test_big_layer_over_100_mib(registry_token: Registry, repo: str, tmp_path: Path) -> None:
    size = 110 * MiB
    pushed = img.push_big_image(registry_token, repo, size=size)
    layer = pushed.layers[0]
    assert layer.data is None and layer.size > size
    out = tmp_path / "dir"
    run_skopeo(["copy", *registry_token.skopeo_flags("src-"), f"docker://{pushed.reference}", f"dir:{out}"])
    on_disk = out / layer.digest.split(":")[1]
    assert on_disk.stat().st_size == layer.size
    # The stream regenerates identically from the seed.
    h = hashlib.sha256()
    for chunk in img.iter_layer(f"{repo}:big", size):
        h.update(chunk)
    assert "sha256:" + h.hexdigest() == layer.digest


def test_skopeo_copy_between_registries(
    registry_basic: Registry, registry_token: Registry, repo: str
) -> None:
    pushed = img.push_index(registry_basic, repo, "multi")
    run_skopeo(
        [
            "copy",
            "--all",
            *registry_basic.skopeo_flags("src-"),
            *registry_token.skopeo_flags("dest-"),
            f"docker://{pushed.reference}",
            f"docker://{registry_token.ref(repo, 'multi')}",
        ]
    )
    raw, _ = img.fetch_manifest(registry_token, repo, "multi")
    assert raw == pushed.manifest


# ------------------------------------------------------------------------------------------------------
# Auth is really enforced, and the token server is really used
# ------------------------------------------------------------------------------------------------------


def test_token_registry_refuses_unauthenticated(registry_token: Registry, repo: str) -> None:
    img.push_oci_image(registry_token, repo, "v1")
    with httpx.Client(verify=registry_token.ssl_verify()) as raw_client:
        r = raw_client.get(f"{registry_token.url}/v2/{repo}/manifests/v1")
    assert r.status_code == 401
    scheme, params = parse_challenge(r.headers["WWW-Authenticate"])
    assert scheme == "bearer"
    assert params["realm"] == registry_token.token_server.realm  # type: ignore[union-attr]
    assert params["service"] == TOKEN_SERVICE
    assert params["scope"] == f"repository:{repo}:pull"

    # An anonymous token carries no access to a private repository.
    with registry_token.client(authenticated=False) as anon:
        assert anon.get(f"/v2/{repo}/manifests/v1", headers={"Accept": img.ACCEPT_ALL}).status_code == 401

    denied = run_skopeo(
        [
            "inspect",
            "--raw",
            *registry_token.skopeo_flags(authenticated=False),
            f"docker://{registry_token.ref(repo, 'v1')}",
        ],
        check=False,
    )
    assert denied.returncode != 0
    assert b"unauthorized" in denied.stderr.lower() or b"401" in denied.stderr


def test_token_registry_wrong_password(registry_token: Registry, repo: str) -> None:
    img.push_oci_image(registry_token, repo, "v1")
    proc = run_skopeo(
        [
            "inspect",
            "--raw",
            "--cert-dir",
            str(registry_token.cert_dir),
            "--creds",
            f"{USERNAME}:wrong",
            f"docker://{registry_token.ref(repo, 'v1')}",
        ],
        check=False,
    )
    assert proc.returncode != 0
    assert registry_token.token_server is not None
    assert registry_token.token_server.requests[-1].status == 401


def test_anonymous_pull_of_public_repo(registry_token: Registry, public_repo: str) -> None:
    pushed = img.push_oci_image(registry_token, public_repo, "v1")
    raw = run_skopeo(
        [
            "inspect",
            "--raw",
            *registry_token.skopeo_flags(authenticated=False),
            f"docker://{pushed.reference}",
        ]
    ).stdout
    assert _sha(raw) == pushed.digest
    with registry_token.client(authenticated=False) as anon:
        start = anon.post(f"/v2/{public_repo}/blobs/uploads/")
        assert start.status_code == 401  # pull only


def test_token_server_is_used_by_skopeo(
    registry_token: Registry, token_server: TokenServer, repo: str
) -> None:
    pushed = img.push_oci_image(registry_token, repo, "v1")
    before = token_server.request_count
    run_skopeo(["inspect", "--raw", *registry_token.skopeo_flags(), f"docker://{pushed.reference}"])
    assert token_server.request_count > before
    mine = [r for r in token_server.requests[before:] if f"repository:{repo}:pull" in r.scopes]
    assert mine, token_server.requests[before:]
    assert mine[0].username == USERNAME
    assert mine[0].service == TOKEN_SERVICE
    assert mine[0].status == 200
    assert mine[0].granted == [{"type": "repository", "name": repo, "actions": ["pull"]}]


def test_basic_registry_refuses_unauthenticated(registry_basic: Registry, repo: str) -> None:
    img.push_oci_image(registry_basic, repo, "v1")
    with registry_basic.client(authenticated=False) as anon:
        r = anon.get(f"/v2/{repo}/manifests/v1")
    assert r.status_code == 401
    assert parse_challenge(r.headers["WWW-Authenticate"])[0] == "basic"
    with registry_basic.client(authenticated=False, auth=(USERNAME, "wrong")) as bad:
        assert bad.get("/v2/").status_code == 401
    denied = run_skopeo(
        [
            "inspect",
            "--raw",
            *registry_basic.skopeo_flags(authenticated=False),
            f"docker://{registry_basic.ref(repo, 'v1')}",
        ],
        check=False,
    )
    assert denied.returncode != 0


def test_plain_registry_is_open(registry_plain: Registry) -> None:
    assert registry_plain.url.startswith("http://")
    assert registry_plain.ca_file is None and registry_plain.username is None
    with registry_plain.client(authenticated=False) as anon:
        assert anon.get("/v2/").status_code == 200


def test_delete_is_enabled(any_registry: Registry, repo: str) -> None:
    pushed = img.push_oci_image(any_registry, repo, "v1")
    r = any_registry.http.delete(f"/v2/{repo}/manifests/{pushed.digest}")
    assert r.status_code == 202, r.text
    assert not img.manifest_exists(any_registry, repo, pushed.digest)


def test_fixture_attributes(any_registry: Registry) -> None:
    host, _, port = any_registry.host.partition(":")
    assert host == "127.0.0.1" and int(port) == any_registry.port
    assert any_registry.url.endswith(any_registry.host)
    assert any_registry.storage_dir.is_dir()
    assert any_registry.log_file.exists()
    assert any_registry.is_running()
    if any_registry.kind != "plain":
        assert any_registry.url.startswith("https://")
        assert any_registry.cert_dir is not None and any_registry.ca_file is not None
        assert (any_registry.cert_dir / "ca.crt").read_bytes() == any_registry.ca_file.read_bytes()
        assert (any_registry.username, any_registry.password) == (USERNAME, PASSWORD)


# ------------------------------------------------------------------------------------------------------
# The token server's protocol details
# ------------------------------------------------------------------------------------------------------


def _token_client(test_pki: TestPKI) -> httpx.Client:
    return httpx.Client(verify=test_pki.client_ssl_context(), timeout=10)


def test_token_response_and_jwt(token_server: TokenServer, test_pki: TestPKI) -> None:
    with _token_client(test_pki) as c:
        r = c.get(
            token_server.realm,
            params=[
                ("service", TOKEN_SERVICE),
                ("scope", "repository:t/a:pull,push"),
                ("scope", "repository:t/b:pull"),
                ("scope", "registry:catalog:*"),
            ],
            auth=(USERNAME, PASSWORD),
        )
    assert r.status_code == 200
    body = r.json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] > 0 and body["issued_at"].endswith("Z")
    assert "refresh_token" not in body
    header, _ = decode_jwt_unverified(body["token"])
    assert header["alg"] == "ES256"
    assert header["kid"] == libtrust_key_id(test_pki.signing_key.public_key())
    assert header["x5c"] and isinstance(header["x5c"], list)
    public = test_pki.signing_cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = jwt.decode(
        body["token"], public, algorithms=["ES256"], audience=TOKEN_SERVICE, issuer=TOKEN_ISSUER
    )
    assert claims["sub"] == USERNAME
    assert claims["access"] == [
        {"type": "repository", "name": "t/a", "actions": ["pull", "push"]},
        {"type": "repository", "name": "t/b", "actions": ["pull"]},
        {"type": "registry", "name": "catalog", "actions": ["*"]},
    ]


def test_token_policy(token_server: TokenServer) -> None:
    assert token_server.grant(None, ["repository:t/x:pull"]) == []
    assert token_server.grant(None, ["repository:public/x:pull,push"]) == [
        {"type": "repository", "name": "public/x", "actions": ["pull"]}
    ]
    assert token_server.grant("reader", ["repository:t/x:pull,push,delete"]) == [
        {"type": "repository", "name": "t/x", "actions": ["pull"]}
    ]
    assert token_server.grant(USERNAME, ["repository:t/x:pull,push,delete"])[0]["actions"] == [
        "pull",
        "push",
        "delete",
    ]


def test_reader_cannot_push(registry_token: Registry, repo: str) -> None:
    img.push_oci_image(registry_token, repo, "v1")
    verify = registry_token.ssl_verify()
    auth = BearerChallengeAuth("reader", "reader-pass", verify=verify)
    with httpx.Client(base_url=registry_token.url, verify=verify, auth=auth) as c:
        assert c.get(f"/v2/{repo}/tags/list").status_code == 200
        assert c.post(f"/v2/{repo}/blobs/uploads/").status_code == 401


def test_oauth_post_refresh_token_flow(
    registry_token: Registry, token_server: TokenServer, test_pki: TestPKI, repo: str
) -> None:
    pushed = img.push_oci_image(registry_token, repo, "v1")
    scope = f"repository:{repo}:pull"
    with _token_client(test_pki) as c:
        missing_client = c.post(
            token_server.realm,
            data={
                "grant_type": "password",
                "username": USERNAME,
                "password": PASSWORD,
                "service": TOKEN_SERVICE,
            },
        )
        assert missing_client.status_code == 400
        bad = c.post(
            token_server.realm,
            data={
                "grant_type": "password",
                "username": USERNAME,
                "password": "nope",
                "service": TOKEN_SERVICE,
                "client_id": "regtool-tests",
            },
        )
        assert bad.status_code == 401
        first = c.post(
            token_server.realm,
            data={
                "grant_type": "password",
                "username": USERNAME,
                "password": PASSWORD,
                "service": TOKEN_SERVICE,
                "client_id": "regtool-tests",
                "access_type": "offline",
                "scope": scope,
            },
        )
        assert first.status_code == 200, first.text
        refresh = first.json()["refresh_token"]
        again = c.post(
            token_server.realm,
            data={
                "grant_type": "refresh_token",
                "refresh_token": refresh,
                "service": TOKEN_SERVICE,
                "client_id": "regtool-tests",
                "scope": scope,
            },
        )
        assert again.status_code == 200
        assert again.json()["refresh_token"] == refresh
        token = again.json()["access_token"]
        invalid = c.post(
            token_server.realm,
            data={
                "grant_type": "refresh_token",
                "refresh_token": "bogus",
                "service": TOKEN_SERVICE,
                "client_id": "regtool-tests",
            },
        )
        assert invalid.status_code == 401
        offline_get = c.get(
            token_server.realm,
            params={"service": TOKEN_SERVICE, "scope": scope, "offline_token": "true"},
            auth=(USERNAME, PASSWORD),
        )
        assert "refresh_token" in offline_get.json()
    with httpx.Client(verify=registry_token.ssl_verify()) as raw:
        r = raw.get(
            f"{registry_token.url}/v2/{repo}/manifests/v1",
            headers={"Authorization": f"Bearer {token}", "Accept": img.ACCEPT_ALL},
        )
    assert r.status_code == 200
    assert r.content == pushed.manifest
    refreshes = [q for q in token_server.requests if q.grant_type == "refresh_token" and q.status == 200]
    assert refreshes and refreshes[-1].username == USERNAME and refreshes[-1].client_id == "regtool-tests"


def test_token_server_failure_injection(token_server: TokenServer, test_pki: TestPKI) -> None:
    token_server.fail_next(503)
    with _token_client(test_pki) as c:
        assert c.get(token_server.realm, params={"service": TOKEN_SERVICE}).status_code == 503
        assert c.get(token_server.realm, params={"service": TOKEN_SERVICE}).status_code == 200


def test_tokenserver_runs_as_a_script(test_pki: TestPKI) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests/support/tokenserver.py"),
            "--port",
            str(port),
            "--key",
            str(test_pki.signing_key_file),
            "--cert",
            str(test_pki.signing_cert_file),
            "--tls-cert",
            str(test_pki.server_cert_file),
            "--tls-key",
            str(test_pki.server_key_file),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        with _token_client(test_pki) as c:
            while True:
                try:
                    r = c.get(f"https://127.0.0.1:{port}/token", params={"scope": "repository:public/x:pull"})
                    break
                except httpx.TransportError:
                    assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
        assert r.status_code == 200
        _, claims = decode_jwt_unverified(r.json()["token"])
        assert claims["access"] == [{"type": "repository", "name": "public/x", "actions": ["pull"]}]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ------------------------------------------------------------------------------------------------------
# Helpers and bits
# ------------------------------------------------------------------------------------------------------


def test_repo_fixture_is_unique_and_valid(repo: str, public_repo: str) -> None:
    import re

    pattern = r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    for name in (repo, public_repo, repo_name("Weird[Name]--With__stuff/and.more")):
        assert re.fullmatch(pattern, name), name
    assert repo.startswith("t/test-repo-fixture-is-unique-and-valid-")
    assert public_repo.startswith("public/")
    assert repo_name("x") != repo_name("x")


def test_layers_are_deterministic_real_tars() -> None:
    a = img.make_layer("seed", 3000)
    b = img.make_layer("seed", 3000)
    c = img.make_layer("other", 3000)
    assert a.digest == b.digest != c.digest
    assert a.data is not None
    members = img.tar_members(a.data)
    assert list(members) == [img.layer_file_name("seed")]
    assert members[img.layer_file_name("seed")] == img.random_bytes("seed", 3000)
    assert a.diff_id == _sha(gzip.decompress(a.data))
    stats = img.StreamedLayer()
    streamed = b"".join(img.iter_layer("seed", 3000, compression="none", stats=stats))
    assert img.tar_members(streamed) == members
    assert stats.digest == stats.diff_id == _sha(streamed)


def test_index_children_configs_match_platforms(registry_plain: Registry, repo: str) -> None:
    index = img.push_index(registry_plain, repo, "multi")
    for child in index.children:
        assert child.config_json is not None and child.platform is not None
        assert child.config_json["architecture"] == child.platform.architecture
        assert child.config_json.get("variant") == child.platform.variant
        entry = next(m for m in index.manifest_json["manifests"] if m["digest"] == child.digest)
        assert entry["platform"] == child.platform.to_json()


def test_referrer_and_fallback_tag(registry_plain: Registry, repo: str) -> None:
    subject = img.push_oci_image(registry_plain, repo, "v1")
    one = img.push_referrer(registry_plain, subject)
    two = img.push_referrer(registry_plain, subject, artifact_type="application/vnd.example.other", data=b"x")
    assert one.tag is None and one.manifest_json["subject"]["digest"] == subject.digest
    raw, _ = img.fetch_manifest(registry_plain, repo, img.referrers_tag(subject.digest))
    listed = json.loads(raw)["manifests"]
    assert [m["digest"] for m in listed] == [one.digest, two.digest]
    assert [m["artifactType"] for m in listed] == [img.SBOM_ARTIFACT_TYPE, "application/vnd.example.other"]
    assert img.fetch_blob(registry_plain, repo, one.layers[0].digest) == one.layers[0].data


def test_bcrypt_known_vectors() -> None:
    # Openwall crypt_blowfish test vectors.
    assert bcrypt_check("U*U", "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW")
    assert bcrypt_check("", "$2a$05$CCCCCCCCCCCCCCCCCCCCC.7uG0VCzI2bS7j6ymqJi9CdcdxiRTWNy")
    assert not bcrypt_check("U*V", "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW")
    h = bcrypt_hash("s3cret-pass")
    assert h.startswith("$2b$04$") and bcrypt_check("s3cret-pass", h)


def test_make_registry_gives_a_private_empty_registry(
    make_registry: Callable[[str], Registry], registry_plain: Registry
) -> None:
    reg = make_registry("plain")
    assert reg.host != registry_plain.host
    assert reg.http.get("/v2/_catalog").json() == {"repositories": []}
    reg.stop()
    assert not reg.is_running()


def test_bed_cleans_up(tmp_path: Path) -> None:
    with RegistryBed(tmp_path / "bed") as bed:
        regs = [bed.get(k) for k in KINDS]
        procs = [r.process for r in regs]
        assert all(r.is_running() for r in regs)
    assert all(p is not None and p.poll() is not None for p in procs)


def test_compose_file_matches_fixture_configs(tmp_path: Path) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.test.yml").read_text())
    services = compose["services"]
    compose_setup(tmp_path / "cfg")
    for kind in KINDS:
        svc = services[f"registry-{kind}"]
        assert svc["image"].startswith("registry:2")
        port = COMPOSE_PORTS[kind]
        assert f"{port}:{port}" in [str(p) for p in svc["ports"]]
        config = yaml.safe_load((tmp_path / "cfg" / f"{kind}.yml").read_text())
        assert config["http"]["addr"].endswith(f":{port}")
        assert config["storage"]["delete"]["enabled"] is True
        mounts = " ".join(svc["volumes"])
        assert f"{kind}.yml:/etc/docker/registry/config.yml" in mounts
        # Every /testbed path the config names is a file compose_setup wrote.
        for path in (
            config["http"].get("tls", {}).get("certificate"),
            config["http"].get("tls", {}).get("key"),
            config.get("auth", {}).get("token", {}).get("rootcertbundle"),
            config.get("auth", {}).get("htpasswd", {}).get("path"),
        ):
            if path:
                assert (tmp_path / "cfg" / path.removeprefix("/testbed/")).is_file(), path
    token = services["tokenserver"]
    assert f"{COMPOSE_TOKEN_PORT}:{COMPOSE_TOKEN_PORT}" in [str(p) for p in token["ports"]]
    command = " ".join(token["command"]) if isinstance(token["command"], list) else token["command"]
    assert "tests/support/tokenserver.py" in command and f"--port {COMPOSE_TOKEN_PORT}" in command
    realm = yaml.safe_load((tmp_path / "cfg" / "token.yml").read_text())["auth"]["token"]["realm"]
    assert realm == f"https://127.0.0.1:{COMPOSE_TOKEN_PORT}/token"
    assert bcrypt_check(PASSWORD, (tmp_path / "cfg" / "htpasswd").read_text().split(":", 1)[1].strip())
