"""Ending a TCP connection with a reset, so that a cut stream never looks whole.

A relay that loses one side before its end (a reset, a failed write, a lost
session) must not end the other side with a FIN: a reader that reads to EOF would
take the cut stream for a complete one.  Tunnels, the HTTP API gateway and the
named-service relays all end the other side with this.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

__all__ = ["reset_transport"]

#: SO_LINGER on, timeout 0: close() sends an RST and drops what is unsent.
_LINGER_ZERO = struct.pack("ii", 1, 0)


def reset_transport(transport: asyncio.Transport) -> None:
    """Close ``transport`` with an RST, on either loop.

    ``abort()`` alone only drops the write buffer: the kernel still sends a FIN,
    and a reader would take that for the end of the stream.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    transport.abort()
