"""A job lock on flock(2): the kernel drops it when the process dies, so no stale locks."""

from __future__ import annotations

import fcntl
import os
from types import TracebackType

from regtool.errors import LockHeld, UsageError


class JobLock:
    """Holds an exclusive, non-blocking lock on ``path`` while in the ``with`` block."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> JobLock:
        try:
            # O_NOFOLLOW: a symlink planted at the lock path must not redirect the truncate below.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise UsageError(f"cannot open lock file {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(f"another run holds the lock {self.path}; exiting") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
