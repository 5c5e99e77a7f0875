"""Failed-login records in a fixed block of memory that every gateway worker maps.

With ``--workers N`` each worker used to keep its own :class:`AuthGuard` counts, so
a guesser whose connections the kernel spread over the workers had N budgets.  The
control process now makes one block (``cc.runtime.sharedfailures``) and every
worker maps it; this module reads and writes records in it, over any writable
buffer, so it is tested without processes.

Why a shared block and not the control process's socket: the ban is checked on
every upgrade and login, and a look-up here is a few memory reads, not a round
trip through another event loop; the block outlives a restarted worker because
the control process holds it.  Its size is fixed when it is made:

* a 64-byte header (magic, slot count, a random hash key), then ``slots`` records
  of 32 bytes: a 64-bit keyed hash of the source (0: empty), failures, bans, the
  last failure and the end of the ban (``time.monotonic()``, one clock for all
  processes of a host);
* a source lives in one of ``PROBE`` slots after its hash; a new source takes an
  empty or expired one there, else the least valuable (unbanned and oldest, then
  the ban that ends first), so a flood of addresses can push out only idle
  records, and never grows the block.  The key is secret, so an attacker cannot
  aim at one source's slots.

Every read and write happens inside ``lock()``, which the caller provides (a
record lock on the file in the workers); nothing waits inside it.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TypeVar

from cc.protocol.authguard import FailureRecord

__all__ = ["HEADER_SIZE", "PROBE", "SLOT_SIZE", "SlotFailures", "block_size", "format_block"]

MAGIC = b"ccfail01"
_HEADER = struct.Struct("<8sI4x16s")
HEADER_SIZE = 64
_SLOT = struct.Struct("<QIIdd")
SLOT_SIZE = _SLOT.size
#: Slots a source may live in, from its hash on: a collision rarely evicts anyone.
PROBE = 8

T = TypeVar("T")


def block_size(slots: int) -> int:
    """Bytes for a block of ``slots`` records (32 bytes each, 2 MiB for 65,536)."""
    return HEADER_SIZE + slots * SLOT_SIZE


def format_block(buffer: memoryview | bytearray, slots: int, key: bytes) -> None:
    """Write an empty table of ``slots`` records with hash key ``key`` (16 bytes)."""
    if slots < PROBE or len(buffer) < block_size(slots) or len(key) != 16:
        raise ValueError("block too small or bad key")
    buffer[: block_size(slots)] = bytes(block_size(slots))
    _HEADER.pack_into(buffer, 0, MAGIC, slots, key)


class SlotFailures:
    """A :class:`cc.protocol.authguard.FailureTable` in a formatted block.

    ``window``: a record without failures for this long (and not banned) is free
    for another source.
    """

    def __init__(
        self,
        buffer: memoryview | bytearray,
        lock: Callable[[], AbstractContextManager[object]],
        window: float,
    ) -> None:
        magic, slots, key = _HEADER.unpack_from(buffer, 0)
        if magic != MAGIC or slots < PROBE or len(buffer) < block_size(slots):
            raise ValueError("not a table of failed logins")
        self._buffer = buffer
        self._lock = lock
        self._key = bytes(key)
        self.slots = slots
        self.window = window

    def __len__(self) -> int:
        """Sources with a record (a full scan: for tests and status, not the hot path)."""
        with self._lock():
            return sum(
                1
                for i in range(self.slots)
                if _SLOT.unpack_from(self._buffer, HEADER_SIZE + i * SLOT_SIZE)[0]
            )

    def peek(self, source: str) -> FailureRecord | None:
        digest = self._digest(source)
        with self._lock():
            index = self._find(digest)
            return None if index is None else self._read(index)

    def update(
        self, source: str, now: float, change: Callable[[FailureRecord], T], *, create: bool
    ) -> T | None:
        digest = self._digest(source)
        with self._lock():
            index = self._find(digest)
            if index is None:
                if not create:
                    return None
                index = self._place(digest, now)
                record = FailureRecord()
            else:
                record = self._read(index)
            result = change(record)
            _SLOT.pack_into(
                self._buffer,
                HEADER_SIZE + index * SLOT_SIZE,
                digest,
                min(record.failures, 0xFFFFFFFF),
                min(record.bans, 0xFFFFFFFF),
                record.last_failure,
                record.banned_until,
            )
            return result

    # -- inside the lock -------------------------------------------------------------
    def _digest(self, source: str) -> int:
        raw = hashlib.blake2b(
            source.encode("utf-8", "surrogateescape"), key=self._key, digest_size=8
        ).digest()
        return int.from_bytes(raw, "little") or 1

    def _window(self, digest: int) -> list[int]:
        start = digest % self.slots
        return [(start + i) % self.slots for i in range(PROBE)]

    def _find(self, digest: int) -> int | None:
        for index in self._window(digest):
            if _SLOT.unpack_from(self._buffer, HEADER_SIZE + index * SLOT_SIZE)[0] == digest:
                return index
        return None

    def _read(self, index: int) -> FailureRecord:
        _, failures, bans, last, banned_until = _SLOT.unpack_from(
            self._buffer, HEADER_SIZE + index * SLOT_SIZE
        )
        return FailureRecord(failures, last, banned_until, bans)

    def _place(self, digest: int, now: float) -> int:
        """The slot for a new source: empty, expired, else the least valuable record."""
        best: tuple[int, float, int] | None = None
        for index in self._window(digest):
            held, _, _, last, banned_until = _SLOT.unpack_from(
                self._buffer, HEADER_SIZE + index * SLOT_SIZE
            )
            banned = banned_until > now
            if not held or (not banned and now - last > self.window):
                return index
            # unbanned before banned; then the oldest failure, or the ban that ends first
            rank = (1, banned_until, index) if banned else (0, last, index)
            if best is None or rank < best:
                best = rank
        assert best is not None
        return best[2]
