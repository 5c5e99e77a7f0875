"""Where CPython puts small objects: its own arenas as usual, glibc's heap during a burst.

CPython's small-object allocator (pymalloc) carves 16 KiB pools out of 1 MiB arenas
and gives an arena back only when every block in it is free.  A burst of connections
spreads its objects over fresh arenas; once it is over, a few hundred survivors (the
free lists of uvloop and asyncio, whatever else happened to be allocated then) keep
most of those arenas: after 10,000 tunnelled connections closed, 15-20 arenas stayed
per process, 15-20 MB of RSS that no trimming reaches (bench/load.py).  glibc's heap
can give back any free page (``malloc_trim``), so while a burst lasts new objects are
taken from it.  Survivors then pin a page each instead of an arena.

pymalloc stays the rule outside bursts because it is faster: glibc for every object
(``PYTHONMALLOC=malloc``) cost 8-10 % more CPU per tunnelled connection here.

The switch goes through CPython's allocator API (``PyMem_GetAllocator`` and
``PyMem_SetAllocator``, via ctypes): the object domain gets the raw domain's malloc
and calloc and keeps pymalloc's realloc and free.  pymalloc's free and realloc hand a
block they do not own to the raw domain (as they do for every block over 512 bytes), so
every block, from either side of a switch, is released by the allocator that made it.
Nothing is switched under debug hooks, tracemalloc or any allocator but plain pymalloc,
nor off CPython.  Side effect: ``sys.getallocatedblocks()`` undercounts after a burst
(pymalloc counts the frees of blocks it did not count when they were made).
"""

from __future__ import annotations

import ctypes
import sys

from cc.log import get_logger

__all__ = ["ObjectAllocator"]

_DOMAIN_RAW = 0
_DOMAIN_OBJ = 2

log = get_logger("heap")


_FIELDS = ("ctx", "malloc", "calloc", "realloc", "free")


class _Allocator(ctypes.Structure):
    """``PyMemAllocatorEx``: a context and four function pointers."""

    _fields_ = [(name, ctypes.c_void_p) for name in _FIELDS]

    def same(self, other: _Allocator) -> bool:
        return all(getattr(self, f) == getattr(other, f) for f in _FIELDS)


class ObjectAllocator:
    """Switches new small objects between pymalloc and the heap (see above)."""

    def __init__(self, api: ctypes.PyDLL, pymalloc: _Allocator, heap: _Allocator) -> None:
        self._api = api
        self._pymalloc = pymalloc
        self._heap = heap
        self.on_heap = False
        #: someone installed an allocator over ours (tracemalloc): never switch again
        self.disabled = False

    @classmethod
    def for_this_process(cls) -> ObjectAllocator | None:
        """None unless the object domain is plain pymalloc (CPython, no hooks)."""
        if sys.implementation.name != "cpython":
            return None
        # A PyDLL keeps the GIL during calls, as the API requires; our own handle, so
        # the argtypes set here are not ctypes.pythonapi's, which others may use.
        api = ctypes.PyDLL("python", handle=ctypes.pythonapi._handle)
        api.PyMem_GetAllocator.argtypes = [ctypes.c_int, ctypes.POINTER(_Allocator)]
        api.PyMem_GetAllocator.restype = None
        api.PyMem_SetAllocator.argtypes = [ctypes.c_int, ctypes.POINTER(_Allocator)]
        api.PyMem_SetAllocator.restype = None
        raw, obj = _Allocator(), _Allocator()
        api.PyMem_GetAllocator(_DOMAIN_RAW, ctypes.byref(raw))
        api.PyMem_GetAllocator(_DOMAIN_OBJ, ctypes.byref(obj))
        # Hooks (debug, tracemalloc) carry a context; PYTHONMALLOC=malloc is already it.
        if raw.ctx or obj.ctx or not obj.malloc or obj.malloc == raw.malloc:
            return None
        heap = _Allocator(None, raw.malloc, raw.calloc, obj.realloc, obj.free)
        return cls(api, obj, heap)

    def use_heap(self, on: bool) -> bool:
        """New small objects from the heap (True) or pymalloc; whether they now are."""
        if self.disabled or on == self.on_heap:
            return self.on_heap
        current = _Allocator()
        self._api.PyMem_GetAllocator(_DOMAIN_OBJ, ctypes.byref(current))
        if not current.same(self._heap if self.on_heap else self._pymalloc):
            # A hook wraps what we installed; replacing it would unhook it.
            self.disabled = True
            log.debug("object allocator hooked by someone else; not switching it")
            return self.on_heap
        self._api.PyMem_SetAllocator(
            _DOMAIN_OBJ, ctypes.byref(self._heap if on else self._pymalloc)
        )
        self.on_heap = on
        return on
