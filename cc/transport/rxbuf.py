"""The one receive buffer that the busy sockets of a thread read into.

A plain asyncio protocol gets every read as a new ``bytes`` object: uvloop reads
into its own buffer, then copies the bytes out, and the tunnel copies them again on
their way (a quarter of the CPU of a bulk transfer went to such copies).  Protocols
that implement ``asyncio.BufferedProtocol`` (the WebSocket under an SSH session, a
tunnelled TCP socket) have the kernel write straight into this buffer instead and
consume it in place.

One buffer serves every socket of the thread, as uvloop's own does: a read is
followed at once by its ``buffer_updated``, and no read can happen while that runs.
So a protocol must be done with the bytes when ``buffer_updated`` returns: whatever
it keeps (data that waits for a channel, a partial packet) it copies.  Per socket,
1,000 idle connections would hold a buffer each.
"""

from __future__ import annotations

import threading

__all__ = ["RECEIVE_BUFFER_SIZE", "receive_buffer"]

#: Bytes one read may return: large enough that a bulk stream costs few syscalls and
#: loop turns per MiB, and holds several whole SSH packets (256 KiB between our peers).
RECEIVE_BUFFER_SIZE = 1 << 20

_local = threading.local()


def receive_buffer() -> memoryview:
    """This thread's receive buffer (writable, ``RECEIVE_BUFFER_SIZE`` bytes)."""
    try:
        view: memoryview = _local.view
    except AttributeError:
        view = _local.view = memoryview(bytearray(RECEIVE_BUFFER_SIZE))
    return view
