"""Memory that a burst of tunnelled connections leaves behind, given back when it is over.

With bench/load.py (10,000 concurrent connections through one tunnel) both processes
went from ~52 MB to ~108 MB of RSS and stayed there once every connection had closed.
What held it: glibc keeps freed heap until it is trimmed (``HeapTrimmer`` acts only
beyond 32 MB free), and pymalloc keeps any arena that a single survivor still uses
(cc.runtime.objalloc).  So every pipe counts itself here for as long as it lives
(until its channel and transport are gone, which is when their memory is freed); at
``high_water`` live pipes new small objects go to the heap, and when the count falls
back to ``low_water`` they return to pymalloc and, ``settle`` seconds later, a full
collection and a heap trim give the pages back: a few tens of ms, at most once per
``min_interval``.  Measured after, with the same bench: ~5 MB above idle on both
sides, flat over rounds.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import Callable

from cc.log import get_logger
from cc.runtime.heap import trim_heap

__all__ = ["BURSTS", "HIGH_WATER", "LOW_WATER", "BurstWatch", "reclaim_memory"]

#: Live pipes that make a burst; each holds ~2.5 KB of small objects (and ~3 KB more).
HIGH_WATER = 512
#: The burst is over when no more than this many are still alive.
LOW_WATER = 128

log = get_logger("heap")


def reclaim_memory() -> None:
    """Free what only the cycle collector can, CPython's free lists and type cache; trim."""
    gc.collect()
    # Its entries keep the attribute names they were looked up with, and asyncssh
    # looks one up by a name built afresh for each channel opened to us: ~4,000 small
    # strings, each pinning a heap page (~6 MB on the connector after 10,000).
    sys._clear_type_cache()
    trim_heap()


class BurstWatch:
    """Counts live pipes; switches the object allocator, and reclaims after a burst.

    ``use_heap(on)`` is the switch (``ObjectAllocator.use_heap``); ``reclaim`` the
    work done once a burst is over.  Both act only once :meth:`enable` was called,
    which the commands do (cc.runtime.process): a library user's process is left alone.
    """

    def __init__(
        self,
        high_water: int = HIGH_WATER,
        low_water: int = LOW_WATER,
        *,
        settle: float = 1.0,
        min_interval: float = 5.0,
        reclaim: Callable[[], None] = reclaim_memory,
    ) -> None:
        if not 0 <= low_water < high_water:
            raise ValueError("need 0 <= low_water < high_water")
        self.high_water = high_water
        self.low_water = low_water
        self.settle = settle
        self.min_interval = min_interval
        self._reclaim = reclaim
        self._use_heap: Callable[[bool], bool] | None = None
        self.enabled = False
        #: pipes alive now (connections open or still being torn down)
        self.live = 0
        self.in_burst = False
        self.peak = 0
        self.bursts = 0
        self.reclaims = 0
        self._last_reclaim = -float("inf")
        self._pending: asyncio.TimerHandle | None = None

    def enable(self, use_heap: Callable[[bool], bool] | None = None) -> None:
        """Act on bursts from now on; ``use_heap`` switches the allocator (None: no switch)."""
        self.enabled = True
        self._use_heap = use_heap

    def created(self) -> None:
        self.live += 1
        if self.live >= self.high_water and not self.in_burst and self.enabled:
            self._begin()
        if self.in_burst and self.live > self.peak:
            self.peak = self.live

    def freed(self) -> None:
        self.live -= 1
        if self.in_burst and self.live <= self.low_water:
            self._end()

    def _begin(self) -> None:
        self.in_burst = True
        self.bursts += 1
        self.peak = self.live
        if self._pending is not None:  # the last burst's reclaim can wait for this one's
            self._pending.cancel()
            self._pending = None
        if self._use_heap is not None:
            self._use_heap(True)

    def _end(self) -> None:
        self.in_burst = False
        if self._use_heap is not None:
            self._use_heap(False)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # closed outside the loop: the process is going away
            return
        now = time.monotonic()
        delay = max(self.settle, self._last_reclaim + self.min_interval - now)
        peak = self.peak
        self._pending = loop.call_later(delay, self._run_reclaim, peak)

    def _run_reclaim(self, peak: int) -> None:
        self._pending = None
        started = time.monotonic()
        self._reclaim()
        self._last_reclaim = time.monotonic()
        self.reclaims += 1
        log.debug(
            "memory reclaimed after a burst of %d connections (%.0f ms)",
            peak,
            (self._last_reclaim - started) * 1000,
        )


#: The process's watch: every tunnelled connection (cc.tunnel.pipe) counts itself here.
BURSTS = BurstWatch()
