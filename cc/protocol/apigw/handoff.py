"""The offer one gateway worker makes another: "serve this client connection".

A request that reaches a worker with no connector for its target is handed, socket
and all, to a worker that has one.  The socket itself rides as ``SCM_RIGHTS`` with
the first bytes; this module frames what goes with it: the name to route (the
receiver takes the connection only if it serves that name, ``""`` meaning "any
target": ``/readyz``) and the bytes already read from the client, which the
receiver reads first.  The answer is one byte: :data:`TAKEN` or :data:`DECLINED`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import ProtocolError

__all__ = [
    "DECLINED",
    "HANDOFF_DIR_ENV",
    "HEADER",
    "TAKEN",
    "Offer",
    "encode_offer",
    "parse_offer",
    "parse_offer_header",
]

#: In a gateway worker's environment: the directory of the workers' handoff sockets.
HANDOFF_DIR_ENV = "CC_APIGW_HANDOFF_DIR"
#: name length (2 bytes), bytes-read length (4 bytes), big endian
HEADER = struct.Struct("!HI")
TAKEN = b"1"
DECLINED = b"0"
#: an offer carries a request head and what arrived with it, never more than this
MAX_BUFFERED = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Offer:
    name: str
    buffered: bytes


def encode_offer(name: str, buffered: bytes) -> bytes:
    raw = name.encode()
    return HEADER.pack(len(raw), len(buffered)) + raw + buffered


def parse_offer_header(data: bytes) -> tuple[int, int]:
    """(name length, bytes-read length) from the first :data:`HEADER` bytes."""
    if len(data) < HEADER.size:
        raise ProtocolError("short handoff header")
    name_len, size = HEADER.unpack_from(data)
    if size > MAX_BUFFERED:
        raise ProtocolError(f"handoff carries {size} bytes, more than {MAX_BUFFERED}")
    return name_len, size


def parse_offer(data: bytes) -> Offer:
    """A whole offer (header, name, bytes); ProtocolError if it is not exactly that."""
    name_len, size = parse_offer_header(data)
    if len(data) != HEADER.size + name_len + size:
        raise ProtocolError("handoff length mismatch")
    name = data[HEADER.size : HEADER.size + name_len].decode("utf-8", "replace")
    return Offer(name, data[HEADER.size + name_len :])
