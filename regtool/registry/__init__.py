"""The async OCI distribution client: HTTP, auth, credentials, errors, retries.

This layer knows nothing of copy, sync or signing.
"""

from regtool.registry.client import BlobOpener, RegistryClient
from regtool.registry.credentials import Credential
from regtool.registry.errors import (
    BlobUnknown,
    ConnectionFailed,
    ManifestUnknown,
    NameUnknown,
    RegistryError,
    RetryWaitExceeded,
    ServerError,
    TooManyRequests,
    Unauthorized,
)
from regtool.registry.options import ClientOptions, RegistryOptions, RetryPolicy

__all__ = [
    "BlobOpener",
    "BlobUnknown",
    "ClientOptions",
    "ConnectionFailed",
    "Credential",
    "ManifestUnknown",
    "NameUnknown",
    "RegistryClient",
    "RegistryError",
    "RegistryOptions",
    "RetryPolicy",
    "RetryWaitExceeded",
    "ServerError",
    "TooManyRequests",
    "Unauthorized",
]
