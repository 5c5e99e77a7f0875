"""Per-sender mapping table for the UDP side of a tunnel, sans-I/O.

A UDP remote multiplexes many senders over one channel; each sender needs a
mapping (on the exit side, a socket whose replies go back to that sender's
``Src``) that lives until the sender goes quiet.  chisel keeps up to 100 such
mappings, frees one when no reply came for 15 s, and *drops* the reply path of
new senders once full (``tunnel_out_ssh_udp.go``: "exceeded max udp
connections").  We evict the least recently used mapping instead, so a burst of
one-shot senders cannot lock out an active sender that arrives later.

Every operation is O(1) (an ``OrderedDict`` kept in recency order) except
:meth:`SenderTable.expire`, which is O(number expired).  Callers pass ``now``
from a monotonic clock and close whatever values they get back.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

__all__ = ["SenderTable"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SenderTable(Generic[K, V]):
    """Sender address -> value, bounded by count (LRU eviction) and by idle time."""

    def __init__(self, max_senders: int = 10_000, idle_timeout: float = 15.0) -> None:
        if max_senders < 1:
            raise ValueError("max_senders must be at least 1")
        if not idle_timeout > 0:  # also rejects NaN
            raise ValueError("idle_timeout must be positive (math.inf disables expiry)")
        self.max_senders = max_senders
        self.idle_timeout = idle_timeout
        # addr -> (value, last_seen); first entry is the least recently used.
        self._entries: OrderedDict[K, tuple[V, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, addr: object) -> bool:
        return addr in self._entries

    def __iter__(self) -> Iterator[K]:
        """Addresses from least to most recently used."""
        return iter(self._entries)

    def add(self, addr: K, value: V, now: float) -> list[tuple[K, V]]:
        """Map ``addr`` to ``value`` as most recent; return the entries the caller must close.

        That is the least recently used entry when the table was full, or the
        old value when ``addr`` was already mapped to a different object.
        """
        removed: list[tuple[K, V]] = []
        old = self._entries.pop(addr, None)
        if old is not None and old[0] is not value:
            removed.append((addr, old[0]))
        while len(self._entries) >= self.max_senders:
            lru_addr, (lru_value, _) = self._entries.popitem(last=False)
            removed.append((lru_addr, lru_value))
        self._entries[addr] = (value, now)
        return removed

    def get(self, addr: K, now: float) -> V | None:
        """Value for ``addr`` (refreshed as just used), or None when unmapped.

        An entry past its idle timeout stays usable until :meth:`expire` reaps
        it, so that the caller always gets the value back to close it.
        """
        entry = self._entries.get(addr)
        if entry is None:
            return None
        self._entries[addr] = (entry[0], now)
        self._entries.move_to_end(addr)
        return entry[0]

    def peek(self, addr: K) -> V | None:
        """Value for ``addr`` without counting as use (for stats and logs)."""
        entry = self._entries.get(addr)
        return None if entry is None else entry[0]

    def touch(self, addr: K, now: float) -> bool:
        """Record traffic for ``addr`` (e.g. a reply); False when it is not mapped."""
        if addr not in self._entries:
            return False
        self.get(addr, now)
        return True

    def remove(self, addr: K) -> V | None:
        """Forget ``addr`` (its socket failed); return its value, or None."""
        entry = self._entries.pop(addr, None)
        return None if entry is None else entry[0]

    def expire(self, now: float) -> list[tuple[K, V]]:
        """Remove and return entries idle for at least ``idle_timeout``, oldest first."""
        expired: list[tuple[K, V]] = []
        limit = now - self.idle_timeout
        while self._entries:
            addr, (value, last_seen) = next(iter(self._entries.items()))
            if last_seen > limit:
                break
            del self._entries[addr]
            expired.append((addr, value))
        return expired

    def next_expiry(self) -> float | None:
        """When the oldest entry falls idle, so an I/O loop knows when to call expire()."""
        if not self._entries or math.isinf(self.idle_timeout):
            return None
        _, last_seen = next(iter(self._entries.values()))
        return last_seen + self.idle_timeout

    def clear(self) -> list[tuple[K, V]]:
        """Remove and return every entry (the channel closed)."""
        items = [(addr, value) for addr, (value, _) in self._entries.items()]
        self._entries.clear()
        return items
