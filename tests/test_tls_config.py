"""Per-registry TLS (containers-certs.d) and registries.conf matching."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from regtool.errors import UsageError
from regtool.registry import registries_conf, tls
from regtool.registry.registries_conf import RegistriesConf, RegistryEntry
from regtool.registry.tls import build_ssl_context, cert_dirs_for, clear_ssl_context_cache

HOST = "registry.test"


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    clear_ssl_context_cache()
    yield
    clear_ssl_context_cache()


@pytest.fixture
def system_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path]:
    """Fake /etc/containers/certs.d, /etc/docker/certs.d and $HOME."""
    containers = tmp_path / "etc-containers-certs.d"
    docker = tmp_path / "etc-docker-certs.d"
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setattr(tls, "SYSTEM_CERT_DIRS", (containers, docker))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(tls, "_is_rootless", lambda: True)
    return containers, docker, home


def _as_context(value: ssl.SSLContext | bool) -> ssl.SSLContext:
    assert isinstance(value, ssl.SSLContext)
    return value


def handshake(client: ssl.SSLContext, server: ssl.SSLContext, hostname: str = HOST) -> dict[str, object]:
    """A TLS handshake over a socketpair; returns the server's view of the client cert ({} if none)."""
    a, b = socket.socketpair()
    result: dict[str, object] = {}
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server.wrap_socket(b, server_side=True) as s:
                result.update(s.getpeercert() or {})
                s.sendall(b"ok")
        except BaseException as exc:  # reported by the client side
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(a, server_hostname=hostname) as c:
            assert c.recv(2) == b"ok"
    finally:
        a.close()
        thread.join(10)
        b.close()
    return result


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(HOST).configure_cert(ctx)
    return ctx


# --------------------------------------------------------------------------- directories


def test_explicit_cert_dir_is_the_only_one(tmp_path: Path) -> None:
    assert cert_dirs_for(HOST, str(tmp_path)) == [tmp_path]


def test_default_directories_rootless(system_dirs: tuple[Path, Path, Path]) -> None:
    containers, docker, home = system_dirs
    assert cert_dirs_for("localhost:5000", None) == [
        home / ".config" / "containers" / "certs.d" / "localhost:5000",
        containers / "localhost:5000",
        docker / "localhost:5000",
    ]


def test_default_directories_as_root(
    system_dirs: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    containers, docker, _ = system_dirs
    monkeypatch.setattr(tls, "_is_rootless", lambda: False)
    assert cert_dirs_for(HOST, None) == [containers / HOST, docker / HOST]


def test_real_system_directories() -> None:
    assert (Path("/etc/containers/certs.d"), Path("/etc/docker/certs.d")) == tls.SYSTEM_CERT_DIRS


def test_docker_hub_api_host_also_uses_the_docker_io_directory(
    system_dirs: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    containers, docker, _ = system_dirs
    monkeypatch.setattr(tls, "_is_rootless", lambda: False)
    assert cert_dirs_for("registry-1.docker.io", None) == [
        containers / "registry-1.docker.io",
        containers / "docker.io",
        docker / "registry-1.docker.io",
        docker / "docker.io",
    ]


@pytest.mark.parametrize("host", ["", "..", "../etc", "a/b", "."])
def test_host_cannot_escape_the_directory(host: str) -> None:
    with pytest.raises(UsageError):
        cert_dirs_for(host, None)


def test_first_existing_directory_wins(
    system_dirs: tuple[Path, Path, Path], ca: trustme.CA, server_ctx: ssl.SSLContext
) -> None:
    containers, docker, home = system_dirs
    other = trustme.CA()
    (docker / HOST).mkdir(parents=True)
    ca.cert_pem.write_to_path(str(docker / HOST / "ca.crt"))
    handshake(_as_context(build_ssl_context(HOST)), server_ctx)
    # a directory earlier in the list hides the later one, even when it has the wrong CA
    (containers / HOST).mkdir(parents=True)
    other.cert_pem.write_to_path(str(containers / HOST / "ca.crt"))
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(_as_context(build_ssl_context(HOST)), server_ctx)
    user = home / ".config" / "containers" / "certs.d" / HOST
    user.mkdir(parents=True)
    ca.cert_pem.write_to_path(str(user / "ca.crt"))
    handshake(_as_context(build_ssl_context(HOST)), server_ctx)


def test_missing_explicit_cert_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        build_ssl_context(HOST, cert_dir=str(tmp_path / "nope"))


# --------------------------------------------------------------------------- contexts


def test_default_context_verifies(system_dirs: tuple[Path, Path, Path]) -> None:
    ctx = _as_context(build_ssl_context(HOST))
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_system_store_does_not_trust_a_private_ca(
    system_dirs: tuple[Path, Path, Path], server_ctx: ssl.SSLContext
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(_as_context(build_ssl_context(HOST)), server_ctx)


def test_ca_files_in_cert_dir_are_trusted(tmp_path: Path, ca: trustme.CA, server_ctx: ssl.SSLContext) -> None:
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    handshake(_as_context(build_ssl_context(HOST, cert_dir=str(tmp_path))), server_ctx)


def test_every_crt_file_is_loaded(tmp_path: Path, ca: trustme.CA, server_ctx: ssl.SSLContext) -> None:
    second = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "a.crt"))
    second.cert_pem.write_to_path(str(tmp_path / "b.crt"))
    (tmp_path / "ignored.pem").write_text("not a certificate")
    ctx = _as_context(build_ssl_context(HOST, cert_dir=str(tmp_path)))
    handshake(ctx, server_ctx)
    server2 = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    second.issue_cert(HOST).configure_cert(server2)
    handshake(ctx, server2)


def test_hostname_is_still_checked(tmp_path: Path, ca: trustme.CA, server_ctx: ssl.SSLContext) -> None:
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(_as_context(build_ssl_context(HOST, cert_dir=str(tmp_path))), server_ctx, "other.test")


def test_verify_false_accepts_anything(
    system_dirs: tuple[Path, Path, Path], server_ctx: ssl.SSLContext
) -> None:
    ctx = _as_context(build_ssl_context(HOST, verify=False))
    assert ctx.verify_mode == ssl.CERT_NONE
    assert not ctx.check_hostname
    handshake(ctx, server_ctx, "wrong.name")


def _client_cert_server(ca: trustme.CA, client_ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(HOST).configure_cert(ctx)
    client_ca.configure_trust(ctx)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _write_client_pair(directory: Path, client_ca: trustme.CA, name: str = "client", who: str = "me") -> None:
    cert = client_ca.issue_cert(f"{who}@example.com")
    cert.cert_chain_pems[0].write_to_path(str(directory / f"{name}.cert"))
    cert.private_key_pem.write_to_path(str(directory / f"{name}.key"))


def _peer_email(peer: dict[str, object]) -> str:
    return str(peer.get("subjectAltName"))


@pytest.mark.parametrize("verify", [True, False])
def test_client_certificate_is_presented(tmp_path: Path, ca: trustme.CA, verify: bool) -> None:
    client_ca = trustme.CA()
    server = _client_cert_server(ca, client_ca)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    _write_client_pair(tmp_path, client_ca)
    peer = handshake(_as_context(build_ssl_context(HOST, verify=verify, cert_dir=str(tmp_path))), server)
    assert "me@example.com" in _peer_email(peer)


def test_without_client_certificate_the_server_refuses(tmp_path: Path, ca: trustme.CA) -> None:
    server = _client_cert_server(ca, trustme.CA())
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    with pytest.raises((ssl.SSLError, ConnectionError, AssertionError)):
        handshake(_as_context(build_ssl_context(HOST, cert_dir=str(tmp_path))), server)


def test_first_client_pair_by_name_is_used(tmp_path: Path, ca: trustme.CA) -> None:
    client_ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    _write_client_pair(tmp_path, client_ca, "b", "second")
    _write_client_pair(tmp_path, client_ca, "a", "first")
    peer = handshake(
        _as_context(build_ssl_context(HOST, cert_dir=str(tmp_path))), _client_cert_server(ca, client_ca)
    )
    assert "first@example.com" in _peer_email(peer)


def test_cert_without_key_is_an_error(tmp_path: Path) -> None:
    client_ca = trustme.CA()
    _write_client_pair(tmp_path, client_ca)
    (tmp_path / "client.key").unlink()
    with pytest.raises(UsageError) as info:
        build_ssl_context(HOST, cert_dir=str(tmp_path))
    assert "client.key" in str(info.value)
    assert str(tmp_path / "client.cert") in str(info.value)
    assert ".crt" in str(info.value)  # the hint about CA files


def test_key_without_cert_is_an_error(tmp_path: Path) -> None:
    _write_client_pair(tmp_path, trustme.CA())
    (tmp_path / "client.cert").unlink()
    with pytest.raises(UsageError) as info:
        build_ssl_context(HOST, cert_dir=str(tmp_path), verify=False)
    assert "client.cert" in str(info.value)
    assert str(tmp_path / "client.key") in str(info.value)


def test_bad_ca_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.crt").write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    with pytest.raises(UsageError, match="broken.crt"):
        build_ssl_context(HOST, cert_dir=str(tmp_path))


def test_mismatched_client_pair_is_an_error(tmp_path: Path) -> None:
    client_ca = trustme.CA()
    _write_client_pair(tmp_path, client_ca)
    client_ca.issue_cert("x@example.com").private_key_pem.write_to_path(str(tmp_path / "client.key"))
    with pytest.raises(UsageError, match="client.cert"):
        build_ssl_context(HOST, cert_dir=str(tmp_path))


def test_encrypted_client_key_is_refused_without_prompting(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    _write_client_pair(tmp_path, trustme.CA())
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "client.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pass"),
        )
    )
    with pytest.raises(UsageError, match="encrypted"):
        build_ssl_context(HOST, cert_dir=str(tmp_path))


def test_contexts_are_cached(tmp_path: Path, ca: trustme.CA, system_dirs: tuple[Path, Path, Path]) -> None:
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    a = build_ssl_context(HOST, cert_dir=str(tmp_path))
    assert build_ssl_context(HOST, cert_dir=str(tmp_path)) is a
    assert build_ssl_context("other.test", cert_dir=str(tmp_path)) is a  # same directory, same context
    assert build_ssl_context(HOST, cert_dir=str(tmp_path), verify=False) is not a
    assert build_ssl_context(HOST) is not a
    assert build_ssl_context(HOST) is build_ssl_context(HOST)
    clear_ssl_context_cache()
    assert build_ssl_context(HOST, cert_dir=str(tmp_path)) is not a


def test_errors_are_not_cached(tmp_path: Path) -> None:
    _write_client_pair(tmp_path, trustme.CA())
    (tmp_path / "client.key").unlink()
    with pytest.raises(UsageError):
        build_ssl_context(HOST, cert_dir=str(tmp_path))
    (tmp_path / "client.cert").unlink()
    assert isinstance(build_ssl_context(HOST, cert_dir=str(tmp_path)), ssl.SSLContext)


# --------------------------------------------------------------------------- registries.conf


@pytest.fixture
def conf_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every registries.conf location into ``tmp_path``."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("CONTAINERS_REGISTRIES_CONF", raising=False)
    monkeypatch.setattr(registries_conf, "SYSTEM_REGISTRIES_CONF", tmp_path / "etc" / "registries.conf")
    monkeypatch.setattr(registries_conf, "SYSTEM_REGISTRIES_CONF_D", tmp_path / "etc" / "registries.conf.d")
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


CONF = """
unqualified-search-registries = ["docker.io"]

[[registry]]
prefix = "example.com"
blocked = true

[[registry]]
prefix = "example.com/allowed"
location = "example.com/allowed"

[[registry]]
location = "localhost:5000"
insecure = true

[[registry]]
prefix = "*.corp.example"
insecure = true

[[registry]]
prefix = "build.corp.example"
insecure = false

[[registry]]
prefix = "docker.io/library"
location = "mirror.example/library"
[[registry.mirror]]
location = "mirror.example"
"""


@pytest.fixture
def conf(tmp_path: Path) -> RegistriesConf:
    return RegistriesConf.load(str(write(tmp_path / "registries.conf", CONF)))


@pytest.mark.parametrize(
    ("registry", "repository", "blocked"),
    [
        ("example.com", "team/app", True),
        ("example.com", "allowed", False),
        ("example.com", "allowed/app", False),
        ("example.com", "allowedx/app", True),  # prefixes end at a path separator
        ("example.com:5000", "team/app", True),  # containers/image quirk, kept on purpose
        ("example.comx", "team/app", False),
        ("sub.example.com", "team/app", False),
        ("docker.io", "library/alpine", False),
        ("quay.io", "x", False),
    ],
)
def test_is_blocked(conf: RegistriesConf, registry: str, repository: str, blocked: bool) -> None:
    assert conf.is_blocked(registry, repository) is blocked


@pytest.mark.parametrize(
    ("registry", "insecure"),
    [
        ("localhost:5000", True),
        ("localhost:5001", False),
        ("localhost", False),
        ("a.corp.example", True),
        ("a.b.corp.example", True),
        ("a.corp.example:8443", True),
        ("corp.example", False),  # a wildcard needs a subdomain
        ("evilcorp.example", False),
        ("a.corp.example.evil", False),
        ("build.corp.example", False),  # an exact prefix beats the wildcard
        ("example.com", False),
    ],
)
def test_is_insecure(conf: RegistriesConf, registry: str, insecure: bool) -> None:
    assert conf.is_insecure(registry) is insecure


def test_longest_prefix_wins(tmp_path: Path) -> None:
    conf = RegistriesConf.load(
        str(
            write(
                tmp_path / "r.conf",
                """
[[registry]]
prefix = "reg.example/a/b"
insecure = true
[[registry]]
prefix = "reg.example"
[[registry]]
prefix = "reg.example/a"
blocked = true
""",
            )
        )
    )
    assert conf.is_blocked("reg.example", "a/x")
    assert not conf.is_blocked("reg.example", "a/b/c")
    assert not conf.is_blocked("reg.example", "b")
    assert conf.is_insecure("reg.example", "a/b/c")
    assert not conf.is_insecure("reg.example")
    found = conf.find("reg.example/a/b/c")
    assert found is not None and found.prefix == "reg.example/a/b"


def test_entry_defaults_and_location(conf: RegistriesConf) -> None:
    found = conf.find("localhost:5000/x")
    assert found == RegistryEntry(prefix="localhost:5000", location="localhost:5000", insecure=True)
    assert conf.find("nothing.example/x") is None
    assert len(conf.sources) == 1


def test_empty_config(conf_env: Path) -> None:
    conf = RegistriesConf.load()
    assert conf.registries == ()
    assert not conf.is_blocked("example.com", "x")
    assert not conf.is_insecure("example.com")


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="nope.conf"):
        RegistriesConf.load(str(tmp_path / "nope.conf"))


def test_environment_override(conf_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(conf_env / "etc" / "registries.conf", '[[registry]]\nprefix = "sys.example"\nblocked = true\n')
    env_file = write(conf_env / "env.conf", '[[registry]]\nprefix = "env.example"\nblocked = true\n')
    arg_file = write(conf_env / "arg.conf", '[[registry]]\nprefix = "arg.example"\nblocked = true\n')
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(env_file))
    conf = RegistriesConf.load()
    assert conf.is_blocked("env.example", "x")
    assert not conf.is_blocked("sys.example", "x")
    conf = RegistriesConf.load(str(arg_file))
    assert conf.is_blocked("arg.example", "x")
    assert not conf.is_blocked("env.example", "x")


def test_default_files_and_drop_ins(conf_env: Path) -> None:
    etc = conf_env / "etc"
    user = conf_env / "home" / ".config" / "containers"
    write(etc / "registries.conf", '[[registry]]\nprefix = "sys.example"\nblocked = true\n')
    assert RegistriesConf.load().is_blocked("sys.example", "x")
    # drop-ins: same prefix replaces, in file-name order
    write(etc / "registries.conf.d" / "10-a.conf", '[[registry]]\nprefix = "sys.example"\nblocked = false\n')
    write(etc / "registries.conf.d" / "20-b.conf", '[[registry]]\nprefix = "b.example"\ninsecure = true\n')
    write(etc / "registries.conf.d" / "ignored.txt", "not toml [[[")
    conf = RegistriesConf.load()
    assert not conf.is_blocked("sys.example", "x")
    assert conf.is_insecure("b.example")
    # a user drop-in with the same name replaces the system one
    write(user / "registries.conf.d" / "20-b.conf", '[[registry]]\nprefix = "c.example"\ninsecure = true\n')
    conf = RegistriesConf.load()
    assert not conf.is_insecure("b.example")
    assert conf.is_insecure("c.example")
    # a user registries.conf replaces the system file (drop-ins still apply)
    write(user / "registries.conf", '[[registry]]\nprefix = "user.example"\nblocked = true\n')
    conf = RegistriesConf.load()
    assert conf.is_blocked("user.example", "x")
    assert not conf.is_blocked("sys.example", "x")
    assert conf.is_insecure("c.example")
    assert conf.sources[0] == user / "registries.conf"


def test_explicit_file_skips_drop_ins(conf_env: Path) -> None:
    write(
        conf_env / "etc" / "registries.conf.d" / "a.conf",
        '[[registry]]\nprefix = "d.example"\nblocked = true\n',
    )
    conf = RegistriesConf.load(str(write(conf_env / "x.conf", "")))
    assert not conf.is_blocked("d.example", "x")


def test_v1_format(tmp_path: Path) -> None:
    conf = RegistriesConf.load(
        str(
            write(
                tmp_path / "v1.conf",
                """
[registries.search]
registries = ["docker.io"]
[registries.insecure]
registries = ["localhost:5000", "both.example"]
[registries.block]
registries = ["bad.example", "both.example"]
""",
            )
        )
    )
    assert conf.is_insecure("localhost:5000")
    assert conf.is_blocked("bad.example", "x")
    assert conf.is_blocked("both.example", "x") and conf.is_insecure("both.example")
    assert not conf.is_blocked("docker.io", "library/alpine")


@pytest.mark.parametrize(
    "text",
    [
        "[[registry]\n",
        '[[registry]]\nprefix = "a.example"\nblocked = "yes"\n',
        "[[registry]]\nprefix = 5\n",
        "[[registry]]\ninsecure = true\n",
        '[[registry]]\nprefix = "foo.*.example"\n',
        '[[registry]]\nprefix = "*.example/ns"\n',
        'registry = "x"\n',
        '[registries.block]\nregistries = ["a"]\n[[registry]]\nprefix = "b"\n',
    ],
)
def test_invalid_config_names_the_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "bad.conf", text)
    with pytest.raises(UsageError, match="bad.conf"):
        RegistriesConf.load(str(path))


def test_without_a_toml_parser_the_config_is_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registries_conf, "_toml_loader", lambda: None)
    conf = RegistriesConf.load(str(write(tmp_path / "r.conf", CONF)))
    assert conf == RegistriesConf()
    assert not conf.is_blocked("example.com", "x")


def test_files_setting_nothing_regtool_reads_are_not_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Comment-only and alias-only system files skip the TOML parser; one that sets a flag does not."""
    calls: list[int] = []
    real = registries_conf._toml_loader

    def counting() -> object:
        calls.append(1)
        return real()

    monkeypatch.setattr(registries_conf, "_toml_loader", counting)
    dropins = tmp_path / "registries.conf.d"
    dropins.mkdir()
    main = write(tmp_path / "registries.conf", "# insecure = true would go here\n# blocked too\n")
    write(dropins / "00-shortnames.conf", '[aliases]\n"app" = "example.com/app"\n')
    monkeypatch.setattr(registries_conf, "SYSTEM_REGISTRIES_CONF", main)
    monkeypatch.setattr(registries_conf, "SYSTEM_REGISTRIES_CONF_D", dropins)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CONTAINERS_REGISTRIES_CONF", raising=False)
    conf = RegistriesConf.load()
    assert calls == [] and conf.registries == ()
    write(dropins / "10-insecure.conf", '[[registry]]\nlocation = "example.com"\ninsecure = true\n')
    conf = RegistriesConf.load()
    assert calls == [1] and conf.is_insecure("example.com")
