"""Pick the compiled fast path (``cc._fastpath``) or its pure-Python twin, once, at import.

The data path calls these per frame, so callers bind the names from here and never pay
for a dispatch.  ``CC_NO_EXTENSIONS=1`` forces the twin (debugging, proving the twin is
enough), as does any interpreter but CPython.  A missing or broken build falls back to
the twin, which costs ~2.6x throughput, so it is never silent: ``FALLBACK_REASON`` says
why, the CLIs log it as a warning at startup, and ``CC_REQUIRE_EXTENSIONS=1`` (as at
build time) makes it an ImportError here instead.  New hot loops go into both twins and
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

#: ``CC_REQUIRE_EXTENSIONS=1``: running without the compiled module is an error, for
#: deployments that paid for a compiler.  An explicit ``CC_NO_EXTENSIONS=1`` still wins.
REQUIRE_EXTENSIONS = bool(os.environ.get("CC_REQUIRE_EXTENSIONS")) and not NO_EXTENSIONS

#: Why the twin runs although nobody asked for it ("" otherwise): a warning for users.
FALLBACK_REASON = ""

_compiled: ModuleType | None = None
if TYPE_CHECKING or NO_EXTENSIONS:
    from cc._fastpath_py import *
else:
    try:
        from cc import _fastpath as _compiled
        from cc._fastpath import *
    except ImportError as exc:
        if REQUIRE_EXTENSIONS:
            raise ImportError(
                f"CC_REQUIRE_EXTENSIONS is set but the compiled fast path cannot be "
                f"imported ({exc}); reinstall with a C compiler and the Python headers",
                name="cc._fastpath",
            ) from exc
        from cc._fastpath_py import *

        FALLBACK_REASON = f"the compiled fast path cannot be imported ({exc})"

#: Which twin is in use: "cython" or "python".
IMPLEMENTATION = "python" if _compiled is None else "cython"


def describe() -> str:
    """One line for logs, ``cloud-connector version`` and SIGUSR2: which twin, and why."""
    if _compiled is not None:
        return "cython (compiled cc._fastpath)"
    if FALLBACK_REASON:
        return f"python (pure twin: {FALLBACK_REASON})"
    if sys.implementation.name != "cpython":
        return f"python (pure twin: {sys.implementation.name} is not CPython)"
    return "python (pure twin: CC_NO_EXTENSIONS is set)"


#: The twins' names plus ours, literally: mypy reads a computed ``__all__`` but then
#: refuses this module where a Protocol of its functions is expected.  The same-names
#: test in tests/test_fastpath.py keeps it equal to the twins'.
__all__ = [
    "FALLBACK_REASON",
    "FIN",
    "IMPLEMENTATION",
    "MAX_HEADER_SIZE",
    "MAX_SSH_PACKET",
    "NO_EXTENSIONS",
    "REQUIRE_EXTENSIONS",
    "RSV1",
    "RSV2",
    "RSV3",
    "RSV_MASK",
    "BytesLike",
    "ChachaPacketCipher",
    "GCMPacketCipher",
    "apply_mask",
    "apply_mask_inplace",
    "describe",
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
