"""The glibc heap: packet buffers kept on it, and freed pages given back.

glibc serves blocks from 128 KiB up with mmap, so every large buffer on the data
path would be mapped, faulted in page by page and unmapped again; with 256 KiB
packets that halved throughput here, so the mmap threshold is raised.
The price is fragmentation: after 32 busy streams a connector held ~140 MB of heap
of which ~20 MB were in use, and glibc returns only free memory at the top of the
heap.  ``HeapTrimmer`` gives the free pages back every few seconds (``malloc_trim``
takes a few milliseconds), so a burst no longer pins its peak for good.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import sys
from typing import Any

from cc.log import get_logger

__all__ = ["HeapTrimmer", "trim_heap", "tune_allocator"]

#: glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

log = get_logger("heap")


@functools.cache
def _glibc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt  # noqa: B018 - probe: musl has no mallopt
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def tune_allocator(mmap_threshold: int = 16 << 20, trim_threshold: int = 32 << 20) -> bool:
    """Keep packet-sized buffers on the heap instead of in fresh mappings (see above).

    The trim threshold bounds how much free heap top a process keeps.  No-op off glibc.
    """
    libc = _glibc()
    if libc is None:
        return False
    return bool(
        libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
        and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )


def trim_heap() -> bool:
    """Give every free page of the heap back now (a few ms); False off glibc."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


class HeapTrimmer:
    """Every ``interval`` seconds, if more than ``slack`` bytes of heap are free, trim."""

    def __init__(self, libc: Any, interval: float = 5.0, slack: int = 32 << 20) -> None:
        self._libc = libc
        self.interval = interval
        self.slack = slack
        self.trims = 0
        self._handle: asyncio.TimerHandle | None = None
        libc.mallinfo2.restype = _MallInfo2

    @classmethod
    def for_this_process(cls, **kwargs: Any) -> HeapTrimmer | None:
        """None off glibc or before glibc 2.33 (no mallinfo2)."""
        libc = _glibc()
        if libc is None or not hasattr(libc, "mallinfo2"):
            return None
        return cls(libc, **kwargs)

    def free_bytes(self) -> int:
        """Free bytes inside the heap (what trimming can give back, roughly)."""
        return int(self._libc.mallinfo2().fordblks)

    def trim_if_worth_it(self) -> bool:
        if self.free_bytes() <= self.slack:
            return False
        self._libc.malloc_trim(0)
        self.trims += 1
        return True

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = loop.call_later(self.interval, self._tick, loop)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self.trim_if_worth_it()
        if not loop.is_closed():
            self._handle = loop.call_later(self.interval, self._tick, loop)
