"""Typed errors for distribution API answers.

Registries answer errors as OCI error JSON (``{"errors": [{"code", "message"}]}``);
mapping codes to classes lets callers catch what they can act on (a missing
manifest, a refused credential, a rate limit) without parsing strings.
"""

from __future__ import annotations

import json
import re

import httpx

from regtool.errors import NotFound, RegtoolError


class RegistryError(RegtoolError):
    """An error answer from a registry, carrying its code and message."""

    def __init__(self, message: str, *, host: str = "", status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.host = host
        self.status = status
        self.code = code


class Unauthorized(RegistryError):
    """401/403: credentials missing, wrong, or without the needed access."""


class ManifestUnknown(RegistryError, NotFound):
    exit_code = 2


class NameUnknown(RegistryError, NotFound):
    exit_code = 2


class BlobUnknown(RegistryError, NotFound):
    exit_code = 2


class TooManyRequests(RegistryError):
    """429; ``retry_after`` is the server's wish in seconds, if it said."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class RetryWaitExceeded(TooManyRequests):
    """The registry asked us to wait longer than ``--max-retry-wait``."""


class ServerError(RegistryError):
    """5xx or 408: transient by nature, retried before it surfaces."""


class ConnectionFailed(RegtoolError):
    """The registry could not be reached at all (DNS, refused, TLS, timeout)."""


class TLSVerificationFailed(ConnectionFailed):
    """The registry's certificate was refused (or it does not speak TLS): retrying cannot help."""


_CODE_CLASSES: dict[str, type[RegistryError]] = {
    "MANIFEST_UNKNOWN": ManifestUnknown,
    "NAME_UNKNOWN": NameUnknown,
    "BLOB_UNKNOWN": BlobUnknown,
    "UNAUTHORIZED": Unauthorized,
    "DENIED": Unauthorized,
    "TOOMANYREQUESTS": TooManyRequests,
}


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    import time

    return max(0.0, when.timestamp() - time.time())


def error_from_response(response: httpx.Response, what: str) -> RegistryError:
    """Builds the typed error for a failed response whose body has been read.

    ``what`` names the object ("manifest docker.io/library/alpine:3") so the
    one-line message says what failed, then what the registry said.
    """
    host = response.request.url.netloc.decode("ascii", "replace")
    status = response.status_code
    code: str | None = None
    detail = ""
    try:
        body = json.loads(response.content[:65536] or b"null")
        errors = body.get("errors") if isinstance(body, dict) else None
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            code = str(errors[0].get("code") or "") or None
            # The registry's words go to a terminal: no control characters (escape sequences, newlines).
            detail = _CONTROL.sub("?", str(errors[0].get("message") or "")[:300])
    except (ValueError, UnicodeDecodeError, httpx.ResponseNotRead):
        pass
    cls: type[RegistryError]
    if code in _CODE_CLASSES:
        cls = _CODE_CLASSES[code]
    elif status in (401, 403):
        cls = Unauthorized
    elif status == 404:
        cls = ManifestUnknown if "manifest" in what else NameUnknown
    elif status == 429:
        cls = TooManyRequests
    elif status >= 500 or status == 408:
        cls = ServerError
    else:
        cls = RegistryError
    reason = detail or response.reason_phrase or "error"
    message = f"{what}: {host} answered {status} {code or ''}".rstrip() + f": {reason}"
    if cls is Unauthorized and status == 401:
        message += " (check credentials: --creds, --authfile or `regtool login`)"
    if cls is TooManyRequests:
        return TooManyRequests(
            message,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            host=host,
            status=status,
            code=code,
        )
    return cls(message, host=host, status=status, code=code)
