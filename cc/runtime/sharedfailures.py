"""The failed-login table that a gateway's workers share (``--workers N``).

The control process makes an anonymous file of fixed size (``memfd``, else an
unlinked temporary file), formats it (``cc.protocol.authslots``) and hands its
descriptor to every worker it starts, restarted ones too, so a guesser's record
survives a worker's death.  Each worker maps it and takes a POSIX record lock
(``lockf``) around each look-up or update: those locks belong to a process, so
workers exclude each other, and the kernel drops the lock of a worker that dies
holding it.  Nothing is awaited while it is held.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import secrets
import tempfile
from collections.abc import Iterator

from cc.log import get_logger
from cc.protocol.authslots import SlotFailures, block_size, format_block

__all__ = ["FAILURES_FD_ENV", "SharedFailures", "failures_from_environment"]

#: In a gateway worker's environment: the descriptor of the shared table.
FAILURES_FD_ENV = "CC_FAILED_LOGINS_FD"
#: Records in the table: as many sources as one process's guard keeps (2 MiB).
DEFAULT_SLOTS = 65536

log = get_logger("server.authguard")


def _anonymous_file(size: int) -> int:
    """A descriptor of ``size`` zero bytes that no path names."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("cc-failed-logins", os.MFD_CLOEXEC)
    else:  # pragma: no cover - non-Linux
        with tempfile.TemporaryFile() as handle:
            fd = os.dup(handle.fileno())
    os.ftruncate(fd, size)
    return fd


class SharedFailures:
    """The control process's side: the formatted table, kept open for the workers."""

    def __init__(self, slots: int = DEFAULT_SLOTS) -> None:
        size = block_size(slots)
        self.fd = _anonymous_file(size)
        try:
            with mmap.mmap(self.fd, size) as block, memoryview(block) as view:
                format_block(view, slots, secrets.token_bytes(16))
        except BaseException:
            os.close(self.fd)
            raise

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _locker(fd: int) -> contextlib.AbstractContextManager[None]:
    @contextlib.contextmanager
    def locked() -> Iterator[None]:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)

    return locked()


def failures_from_environment(window: float) -> SlotFailures | None:
    """The shared table in a worker (None: not a worker, or no usable table)."""
    value = os.environ.get(FAILURES_FD_ENV)
    if value is None or not value.isdigit():
        return None
    fd = int(value)
    try:
        block = mmap.mmap(fd, os.fstat(fd).st_size)
        return SlotFailures(memoryview(block), lambda: _locker(fd), window)
    except (OSError, ValueError) as exc:
        log.warning("No shared table of failed logins (%s): this worker counts alone", exc)
        return None
