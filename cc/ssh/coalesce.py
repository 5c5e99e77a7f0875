"""Small writes: one packet straight from ``write``, and small packets sent once per loop pass.

A request/response exchange writes a few bytes at a time.  asyncssh copies each
write into a bytearray, queues it, slices it, wraps it in a ``String`` and joins
it again; here a write that fits the window and one packet goes out at once
(``SmallWriteMixin``).  And every packet was one transport write: one syscall
and one WebSocket frame for each, and a wake-up of the peer for each.  The EOF
and CLOSE that end a tunnelled connection, or the packets for several channels
that one read made ready, now leave together at the end of the event loop's pass
(``CoalescingMixin``), in the order they were sealed; large packets still go at
once, so bulk transfers and flow control see no change.
"""

from __future__ import annotations

import struct
from typing import Any

from asyncssh import MSG_CHANNEL_DATA

__all__ = ["BATCH_LIMIT", "BATCH_PACKET", "SMALL_WRITE", "CoalescingMixin", "SmallWriteMixin"]

#: Writes up to this size skip asyncssh's send buffer when nothing waits in it.
SMALL_WRITE = 16 * 1024
#: Sealed packets up to this size wait for the end of the loop pass ...
BATCH_PACKET = 16 * 1024
#: ... unless this many bytes already wait (then they all go at once).
BATCH_LIMIT = 64 * 1024

_DATA_HEAD = struct.Struct(">II")  # recipient channel, data length


class SmallWriteMixin:
    """The channel side: a small write with nothing queued before it is one packet, now."""

    def write(self, data: Any, datatype: Any = None) -> None:
        chan: Any = self
        size = len(data)
        if (
            datatype is None
            and chan._send_state == "open"
            and not chan._send_buf
            and 0 < size <= SMALL_WRITE
            and size <= chan._send_window
            and size <= chan._send_pktsize
            and not chan._encoding
        ):
            conn = chan._conn
            if conn is not None and not conn.cc_holding():
                if type(data) is not bytes:
                    # a view of a shared receive buffer (cc.ssh.bulk) must not outlive
                    # this call: asyncssh defers packets during a key exchange as given
                    data = bytes(data)
                chan._send_window -= size
                head = _DATA_HEAD.pack(chan._send_chan, size)
                conn.send_packet(MSG_CHANNEL_DATA, head, data, handler=chan)
                return
        super().write(data, datatype)  # type: ignore[misc]


class CoalescingMixin:
    """The connection side: sealed packets wait for the end of the loop pass, then go as one.

    Every other write (asyncssh's own ``_send``: key exchange, disconnect) first
    sends what waits, so the wire keeps the order of the sequence numbers.
    """

    _cc_batch: list[bytes] | None = None
    _cc_batch_size = 0

    def _cc_write(self, packet: bytes) -> None:
        """Send a packet sealed by the fast path, now or with the others of this pass."""
        conn: Any = self
        size = len(packet)
        batch = conn._cc_batch
        if size > BATCH_PACKET:
            if batch is not None:
                conn._cc_flush_batch()
            super()._send(packet)  # type: ignore[misc]
            return
        if batch is None:
            conn._cc_batch = [packet]
            conn._cc_batch_size = size
            conn._loop.call_soon(conn._cc_flush_batch)
            return
        batch.append(packet)
        conn._cc_batch_size += size
        if conn._cc_batch_size > BATCH_LIMIT:
            conn._cc_flush_batch()

    def _cc_flush_batch(self) -> None:
        """Write what waits, as one transport write (the scheduled call finds nothing left)."""
        conn: Any = self
        batch = conn._cc_batch
        if batch is None:
            return
        conn._cc_batch = None
        super()._send(batch[0] if len(batch) == 1 else b"".join(batch))  # type: ignore[misc]

    def _send(self, data: bytes) -> None:
        if self._cc_batch is not None:
            self._cc_flush_batch()
        super()._send(data)  # type: ignore[misc]
