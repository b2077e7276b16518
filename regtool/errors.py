"""The error hierarchy shared by every layer.

Each error carries the process exit code the CLI maps it to, so the mapping
lives in one place and library users can still catch by kind.
"""

from __future__ import annotations


class RegtoolError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(RegtoolError):
    """Bad input found before any network traffic (flags, files, configs)."""

    exit_code = 2


class InvalidReference(UsageError):
    """An image reference or transport name that does not parse."""


class ManifestError(RegtoolError):
    """A manifest regtool must interpret but cannot (bad JSON, unknown schema)."""


class DigestMismatch(RegtoolError):
    """Content whose bytes do not hash to the digest it was asked for by."""


class NotFound(RegtoolError):
    """Image, tag or repository does not exist (MANIFEST_UNKNOWN / NAME_UNKNOWN)."""

    exit_code = 2


class VerificationError(RegtoolError):
    """A signature or policy check rejected the image."""


class LockHeld(RegtoolError):
    """Another run of the same job holds the lock."""

    exit_code = 75
