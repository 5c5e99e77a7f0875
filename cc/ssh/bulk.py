"""The bulk data path: channel data sealed from, and packets opened in, the receive buffer.

A tunnelled byte used to be copied six times on its way into a packet (asyncssh's
``bytearray(data)``, the packet-size slice, ``String()``, two joins, the WebSocket
frame) and four times on its way out of one (uvloop's ``bytes``, the frame payload,
the join, the receive buffer, the channel data), besides the cipher's own pass:
about a quarter of a bulk transfer's CPU.  Here the sockets read into the thread's
receive buffer (``cc.transport.rxbuf``) and:

- ``cc_send_data`` seals channel data straight from it (one copy into the plaintext,
  then the cipher) and writes the packets with one ``writelines``, each framed in
  place by the WebSocket (``WebSocketTransport.writelines``);
- ``cc_stream_received`` opens the whole packets of each WebSocket payload piece
  where they lie, and copies only the packet that straddles two reads; a session
  with ``cc_takes_views`` gets channel data as a view of the packet's plaintext.

Both only take the states the fast paths accept and leave everything else (a
channel with buffered data, a key exchange, a full transport, other ciphers) to
asyncssh's own path, so windows, flow control and rekeys stay as they are.
"""

from __future__ import annotations

from typing import Any

from asyncssh import MSG_CHANNEL_DATA, DisconnectError

from cc.fastpath import BytesLike
from cc.ssh.ciphers import FAST_ENCRYPTIONS
from cc.ssh.fastrecv import FastReceiveMixin
from cc.ssh.fastsend import fast_sealer

__all__ = [
    "DATA_OFFSET",
    "PAD_ROOM",
    "BulkDataMixin",
    "prepared_room",
    "sealed_count",
    "send_data",
    "send_prepared",
]

_DATA = bytes([MSG_CHANNEL_DATA])
#: Where data read for ``send_prepared`` starts in its buffer: after the padding-length
#: byte and the channel data header (type, recipient channel, data length).
DATA_OFFSET = 10
#: Free bytes the padding may take behind prepared data (at most 19).
PAD_ROOM = 20
#: Smaller windows or packets (Go peers: 32 KiB) read more at a time and copy instead:
#: a read per packet would cost more syscalls and loop turns than the copy saves.
MIN_PREPARED = 64 * 1024
#: Packets sealed here in this process (added to ``cc.ssh.fast_path_counts``).
_sealed = 0


def sealed_count() -> int:
    """Channel data packets ``cc_send_data`` sealed so far in this process."""
    return _sealed


class BulkDataMixin:
    """Channel data from and into the receive buffer; goes before ``FastReceiveMixin``."""

    def _cc_sealer(self, chan: Any) -> Any:
        """The send encryption if ``chan``'s data may be sealed here now, else None.

        Not while the channel has data waiting (order) or is not open, nor while the
        connection holds its channels, nor in any state ``FastSendMixin.send_packet``
        leaves to asyncssh (key exchange, rekey due, other ciphers).
        """
        if chan._send_buf:
            return None
        return self._cc_buffered_sealer(chan)

    def _cc_buffered_sealer(self, chan: Any) -> Any:
        """``_cc_sealer`` for the data ``chan`` already buffered (it goes first)."""
        conn: Any = self
        if chan._send_state != "open" or chan._send_chan is None:
            return None
        return None if conn.cc_holding() else fast_sealer(conn)

    def _cc_sent(self, chan: Any, packets: list[BytesLike], taken: int) -> None:
        """Account for and write packets sealed from ``taken`` bytes of ``chan``'s data."""
        global _sealed
        conn: Any = self
        chan._send_window -= taken
        _sealed += len(packets)
        if conn._cc_batch is not None:  # small packets sealed before these go first
            conn._cc_flush_batch()
        conn._transport.writelines(packets)

    def cc_send_data(self, chan: Any, data: memoryview) -> int:
        """Seal what ``chan`` may send of ``data`` now, straight from the view; bytes taken.

        0 when it may not (``_cc_sealer``); the caller writes the rest through asyncssh.
        At most the send window is taken, in packets of the channel's packet size, and
        it stops where the rekey byte limit is reached (asyncssh then rekeys).
        """
        enc = self._cc_sealer(chan)
        return 0 if enc is None else self._cc_seal_from(chan, enc, data)

    def _cc_seal_from(self, chan: Any, enc: Any, data: memoryview) -> int:
        """Seal and write what the window lets go of ``data``; the bytes taken."""
        conn: Any = self
        size = min(len(data), chan._send_window)
        step = chan._send_pktsize
        prefix = _DATA + chan._send_chan.to_bytes(4, "big")
        seq = conn._send_seq
        packets: list[BytesLike] = []
        taken = 0
        while taken < size and conn._rekey_bytes_sent < conn._rekey_bytes:
            n = min(step, size - taken)
            packet = enc.seal(data[taken : taken + n], prefix + n.to_bytes(4, "big"), seq)
            packets.append(packet)
            seq = (seq + 1) & 0xFFFFFFFF
            conn._rekey_bytes_sent += len(packet) - 20
            taken += n
        if packets:
            conn._send_seq = seq
            self._cc_sent(chan, packets, taken)
        return taken

    def cc_send_buffered(self, chan: Any) -> None:
        """Seal what ``chan`` buffered (asyncssh's ``_send_buf``) as far as the window goes.

        For ``ChiselTCPChannel._flush_send_buf``: the data that waited while the
        connection held its channels goes out like the rest, in packets sealed from
        the buffer, instead of through asyncssh's slice, ``String()`` and joins.
        Extended data and anything it may not seal now is left to asyncssh.
        """
        send_buf = chan._send_buf
        while send_buf and chan._send_window:
            buf, datatype = send_buf[0]
            enc = None if datatype is not None else self._cc_buffered_sealer(chan)
            if enc is None:
                return
            with memoryview(buf) as view:
                taken = self._cc_seal_from(chan, enc, view)
            if not taken:
                return
            chan._send_buf_len -= taken
            if taken == len(buf):
                del send_buf[0]
            else:
                del buf[:taken]

    def cc_prepared_room(self, chan: Any) -> int:
        """Bytes of ``chan``'s data one read may bring for ``cc_send_prepared`` now; 0: none."""
        if self._cc_sealer(chan) is None:
            return 0
        room = int(min(chan._send_window, chan._send_pktsize))
        return room if room >= MIN_PREPARED else 0

    def cc_send_prepared(self, chan: Any, buf: memoryview, size: int) -> bool:
        """Seal the ``size`` bytes of data at ``buf[DATA_OFFSET:]`` as one packet, in place.

        The data header goes in front of it and the padding after it, into ``buf``,
        so the data is not copied before the cipher reads it.  False (nothing done)
        when it may not go as one packet now: the caller sends it the other way.
        """
        conn: Any = self
        enc = self._cc_sealer(chan)
        if enc is None or size > chan._send_window or size > chan._send_pktsize or size <= 0:
            return False
        buf[1] = MSG_CHANNEL_DATA
        buf[2:6] = chan._send_chan.to_bytes(4, "big")
        buf[6:DATA_OFFSET] = size.to_bytes(4, "big")
        seq = conn._send_seq
        packet = enc.seal_in_place(buf, DATA_OFFSET - 1 + size, seq)
        conn._send_seq = (seq + 1) & 0xFFFFFFFF
        conn._rekey_bytes_sent += len(packet) - 20
        self._cc_sent(chan, [packet], size)
        return True

    def cc_stream_received(self, pieces: list[BytesLike]) -> None:
        """SSH stream bytes, in pieces that are views of the receive buffer.

        Whole packets are opened where they lie; what must wait (a packet cut by the
        end of a read, bytes behind a running async handler) is copied into ``_cc_rx``.
        """
        conn: Any = self
        rx = conn.__dict__.get("_cc_rx")
        if rx is None:
            rx = conn._cc_rx = bytearray()
        keepalive = True
        for piece in pieces:
            if not (rx or conn._cc_blocked or conn._cc_fast_ready()):
                FastReceiveMixin.data_received(conn, bytes(piece))  # asyncssh's own path
                continue
            if keepalive:
                conn._reset_keepalive_timer()
                keepalive = False
            if conn._inpbuf:
                rx += conn._inpbuf
                conn._inpbuf = b""
            start = 0
            if rx and not conn._cc_blocked:
                # Complete the packet that the last read cut, with only its own bytes.
                start = self._cc_missing(rx, piece)
                rx += piece[:start]
                conn._cc_drain()
            if rx or conn._cc_blocked:
                rx += piece[start:]
                conn._cc_drain()
                continue
            conn._cc_drain_view(piece[start:] if start else piece)

    def _cc_missing(self, rx: bytearray, piece: BytesLike) -> int:
        """How many bytes of ``piece`` complete the packet begun in ``rx`` (all if unknown)."""
        conn: Any = self
        enc = conn._recv_encryption
        if len(rx) < 4:
            return min(len(piece), 4 - len(rx))
        if type(enc) not in FAST_ENCRYPTIONS:
            return len(piece)
        try:
            size: int | None = enc.packet_size(rx, 0, conn._recv_seq)
        except ValueError:
            return len(piece)  # a bad length: open_packet reports it
        if size is None:
            return len(piece)
        return max(0, min(len(piece), size - len(rx)))

    def _cc_drain_view(self, piece: BytesLike) -> None:
        """``_cc_drain`` over a piece of the receive buffer; its unused tail goes to ``_cc_rx``."""
        conn: Any = self
        try:
            used = conn._cc_open_packets(piece)
        except DisconnectError as exc:  # as in FastReceiveMixin._cc_drain
            conn._send_disconnect(exc.code, exc.reason, exc.lang)
            conn._force_close(exc)
            return
        except Exception:
            conn.internal_error()
            return
        if used < len(piece) and conn._transport is not None:
            conn._cc_rx += piece[used:]


def prepared_room(chan: Any) -> int:
    """Bytes one read may bring for ``send_prepared`` now (``cc_prepared_room``); 0: none.

    A socket's protocol then has the read land at ``DATA_OFFSET`` of its buffer, with
    ``PAD_ROOM`` bytes free behind the room.
    """
    room = getattr(chan._conn, "cc_prepared_room", None)
    return 0 if room is None else int(room(chan))


def send_prepared(chan: Any, buf: memoryview, size: int) -> bool:
    """Send the ``size`` bytes read to ``buf[DATA_OFFSET:]`` as one packet, sealed in place."""
    send = getattr(chan._conn, "cc_send_prepared", None)
    return send is not None and bool(send(chan, buf, size))


def send_data(chan: Any, data: memoryview) -> int:
    """Seal what ``chan`` may send of ``data`` now (``BulkDataMixin.cc_send_data``).

    For a socket's protocol that reads into the receive buffer: 0 when the channel's
    connection has no bulk path or cannot take the data now; the caller then hands
    the rest (``data[taken:]``, copied) to ``chan.write``.
    """
    send = getattr(chan._conn, "cc_send_data", None)
    return 0 if send is None else int(send(chan, data))
