"""Pick the compiled fast path (``cc._fastpath``) or its pure-Python twin, once, at import.

The data path calls these functions per frame, so callers import them from here and never
pay for a dispatch. ``CC_NO_EXTENSIONS=1`` forces the pure twin (debugging, PyPy, proving
the twin is enough); a missing or broken build falls back to it silently, and
``IMPLEMENTATION`` tells which one runs. New hot loops go into both twins and get one
re-export line here.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType
from typing import TYPE_CHECKING

from cc import _fastpath_py

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

#: True when the environment asks for the pure twin; Cython code is slower than the
#: interpreter's own on PyPy and friends, so they always get the twin too.
NO_EXTENSIONS = bool(os.environ.get("CC_NO_EXTENSIONS")) or sys.implementation.name != "cpython"


def _load_compiled() -> ModuleType | None:
    """Import the compiled module, or None when it was not built (or is unusable)."""
    if NO_EXTENSIONS:
        return None
    try:
        from cc import _fastpath
    except ImportError:
        return None
    return _fastpath


_compiled = _load_compiled()
_impl: ModuleType = _compiled if _compiled is not None else _fastpath_py

#: Which twin is in use: "cython" or "python".
IMPLEMENTATION: str = "cython" if _compiled is not None else "python"

if TYPE_CHECKING:
    from cc._fastpath_py import (
        FIN,
        MAX_HEADER_SIZE,
        MAX_SSH_PACKET,
        RSV1,
        RSV2,
        RSV3,
        RSV_MASK,
        BytesLike,
        ChachaPacketCipher,
        GCMPacketCipher,
        apply_mask,
        apply_mask_inplace,
        encode_frame,
        encode_header,
        gob_decode_uint,
        gob_decode_value,
        gob_encode_uint,
        gob_encode_value,
        parse_header,
    )
else:
    FIN = _impl.FIN
    MAX_SSH_PACKET = _impl.MAX_SSH_PACKET
    GCMPacketCipher = _impl.GCMPacketCipher
    ChachaPacketCipher = _impl.ChachaPacketCipher
    MAX_HEADER_SIZE = _impl.MAX_HEADER_SIZE
    RSV1 = _impl.RSV1
    RSV2 = _impl.RSV2
    RSV3 = _impl.RSV3
    RSV_MASK = _impl.RSV_MASK
    BytesLike = _impl.BytesLike
    apply_mask = _impl.apply_mask
    apply_mask_inplace = _impl.apply_mask_inplace
    encode_frame = _impl.encode_frame
    encode_header = _impl.encode_header
    gob_decode_uint = _impl.gob_decode_uint
    gob_decode_value = _impl.gob_decode_value
    gob_encode_uint = _impl.gob_encode_uint
    gob_encode_value = _impl.gob_encode_value
    parse_header = _impl.parse_header


def implementations() -> dict[str, ModuleType]:
    """Return every usable twin by name ("python" always, "cython" when built and allowed).

    Tests and benchmarks iterate over this to hold both twins to the same behaviour.
    Honours ``CC_NO_EXTENSIONS`` so a pure-Python run exercises only the twin.
    """
    found: dict[str, ModuleType] = {"python": _fastpath_py}
    if _compiled is not None:
        found["cython"] = _compiled
    return found
