"""Pick the compiled fast path (``cc._fastpath``) or its pure-Python twin, once, at import.

The data path calls these per frame, so callers bind the names from here and never pay
for a dispatch.  ``CC_NO_EXTENSIONS=1`` forces the twin (debugging, proving the twin is
enough), as does any interpreter but CPython; a missing or broken build falls back to it
silently, and ``IMPLEMENTATION`` tells which runs.  New hot loops go into both twins and
their ``__all__``, and one line here.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType
from typing import TYPE_CHECKING

from cc import _fastpath_py

#: True when the environment asks for the pure twin; Cython code is slower than the
#: interpreter's own on PyPy and friends, so they always get the twin too.
NO_EXTENSIONS = bool(os.environ.get("CC_NO_EXTENSIONS")) or sys.implementation.name != "cpython"

_compiled: ModuleType | None = None
if TYPE_CHECKING or NO_EXTENSIONS:
    from cc._fastpath_py import *
else:
    try:
        from cc import _fastpath as _compiled
        from cc._fastpath import *
    except ImportError:
        from cc._fastpath_py import *

#: Which twin is in use: "cython" or "python".
IMPLEMENTATION = "python" if _compiled is None else "cython"

#: The twins' names plus ours, literally: mypy reads a computed ``__all__`` but then
#: refuses this module where a Protocol of its functions is expected.  The same-names
#: test in tests/test_fastpath.py keeps it equal to the twins'.
__all__ = [
    "FIN",
    "IMPLEMENTATION",
    "MAX_HEADER_SIZE",
    "MAX_SSH_PACKET",
    "NO_EXTENSIONS",
    "RSV1",
    "RSV2",
    "RSV3",
    "RSV_MASK",
    "BytesLike",
    "ChachaPacketCipher",
    "GCMPacketCipher",
    "apply_mask",
    "apply_mask_inplace",
    "encode_frame",
    "encode_header",
    "gob_decode_uint",
    "gob_decode_value",
    "gob_encode_uint",
    "gob_encode_value",
    "implementations",
    "parse_header",
]


def implementations() -> dict[str, ModuleType]:
    """Every usable twin by name ("python" always, "cython" when built and allowed).

    Tests and benchmarks iterate over this to hold both twins to the same behaviour.
    """
    found = {"python": _fastpath_py}
    if _compiled is not None:
        found["cython"] = _compiled
    return found
