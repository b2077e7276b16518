"""Settings for the registry client: per-host connection and credential choices."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from regtool.registry.credentials import Credential


@dataclass
class RegistryOptions:
    """How to talk to one registry host (skopeo's --tls-verify, --cert-dir, --creds ...)."""

    tls_verify: bool = True
    cert_dir: str | None = None
    #: Extra CA bundle and client certificate pair (sync configs name files, not a cert dir).
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    credential: Credential | None = None
    no_creds: bool = False
    authfile: str | None = None
    #: Blob transfers in flight to this host; small requests have their own allowance.
    max_concurrency: int = 6
    requests_per_second: float | None = None
    #: Upload in PATCH chunks instead of one PUT (some registries need it).
    chunked_upload: bool = False


@dataclass
class RetryPolicy:
    """Bounded per-request retries (tenacity); ``max_wait`` caps Retry-After."""

    attempts: int = 5
    initial_backoff: float = 0.5
    max_backoff: float = 10.0
    max_wait: float = 15 * 60.0


@dataclass
class ClientOptions:
    """Everything a :class:`~regtool.registry.RegistryClient` is built from: per-host options and retries."""

    default: RegistryOptions = field(default_factory=RegistryOptions)
    per_host: dict[str, RegistryOptions] = field(default_factory=dict)
    #: Called for hosts not in ``per_host``; lets sync configs decide lazily.
    resolver: Callable[[str], RegistryOptions | None] | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float = 60.0
    user_agent: str = "regtool/0.1"
    http2: bool = False
    #: An httpx transport to use instead of the network (tests, embedding).
    transport: Any = None

    def for_host(self, registry: str) -> RegistryOptions:
        if registry in self.per_host:
            return self.per_host[registry]
        if self.resolver is not None:
            found = self.resolver(registry)
            if found is not None:
                return found
        return self.default
