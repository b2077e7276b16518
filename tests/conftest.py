"""Session-wide pytest fixtures: the real-registry test bed (see tests/support/README.md)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # so ``tests.support`` imports however pytest was started
    sys.path.insert(0, str(_ROOT))

from tests.support.registries import (  # noqa: E402
    KINDS,
    Kind,
    Registry,
    RegistryBed,
    TestPKI,
    repo_name,
)
from tests.support.tokenserver import TokenServer  # noqa: E402


@pytest.fixture(scope="session")
def registry_bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryBed]:
    """The session's :class:`RegistryBed` (CA, token server, registries); closed at session end."""
    bed = RegistryBed(tmp_path_factory.mktemp("testbed"))
    try:
        yield bed
    finally:
        bed.close()


@pytest.fixture(scope="session")
def registry_plain(registry_bed: RegistryBed) -> Registry:
    """Plain-HTTP registry without auth."""
    return registry_bed.get("plain")


@pytest.fixture(scope="session")
def registry_token(registry_bed: RegistryBed) -> Registry:
    """HTTPS registry (test CA) with token auth served by ``token_server``."""
    return registry_bed.get("token")


@pytest.fixture(scope="session")
def registry_basic(registry_bed: RegistryBed) -> Registry:
    """HTTPS registry (test CA) with htpasswd Basic auth."""
    return registry_bed.get("basic")


@pytest.fixture(scope="session", params=list(KINDS))
def any_registry(request: pytest.FixtureRequest, registry_bed: RegistryBed) -> Registry:
    """Each of the three shared registries in turn (test ids ``[plain]``, ``[token]``, ``[basic]``)."""
    kind: Kind = request.param
    return registry_bed.get(kind)


@pytest.fixture(scope="session")
def token_server(registry_bed: RegistryBed) -> TokenServer:
    """The token server behind ``registry_token`` (``requests``, ``request_count``, ``fail_next`` ...)."""
    return registry_bed.token_server


@pytest.fixture(scope="session")
def test_pki(registry_bed: RegistryBed) -> TestPKI:
    """The session CA and files: ``ca_file``, ``cert_dir``, ``ca`` (trustme.CA, to issue more certs)."""
    return registry_bed.pki


@pytest.fixture
def make_registry(registry_bed: RegistryBed) -> Iterator[Callable[[Kind], Registry]]:
    """Factory for private registries (empty storage, may be stopped); stopped when the test ends."""
    made: list[Registry] = []

    def make(kind: Kind) -> Registry:
        reg = registry_bed.start_registry(kind)
        made.append(reg)
        return reg

    yield make
    for reg in made:
        reg.stop()


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A unique repository name for this test: ``t/<test-name>-<6 hex>``."""
    return repo_name(request.node.name)


@pytest.fixture
def public_repo(request: pytest.FixtureRequest) -> str:
    """Like ``repo`` but under ``public/``, where the token server lets anonymous users pull."""
    return repo_name(request.node.name, prefix="public")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """On failure, attach the tail of each test-bed registry log the test used."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    seen: set[int] = set()
    for value in funcargs.values():
        if isinstance(value, Registry) and id(value) not in seen:
            seen.add(id(value))
            tail = value.log_tail(30)
            if tail:
                report.sections.append((f"registry log: {value.name} ({value.log_file})", tail))
