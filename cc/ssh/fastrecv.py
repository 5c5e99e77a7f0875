"""Decrypt and dispatch whole packets from a growing buffer (AES-GCM, ChaCha20-Poly1305).

asyncssh slices an immutable ``bytes`` buffer per packet (quadratic on large reads),
wraps every payload in an SSHPacket and logs it.  Here channel data and window
adjustments go straight to the channel (asyncssh's own window and pause logic still
apply), channel open, confirmation, EOF and close to ``cc.ssh.lifecycle``; every
other packet is dispatched as asyncssh's ``_recv_packet`` does.
Anything else (version exchange, first key exchange, other ciphers) keeps asyncssh's
own path.

``_cc_dispatch`` is a copy of the part of asyncssh 2.24.1
``SSHConnection._recv_packet`` after decryption.  It leaves out what cannot happen
while a fast cipher is in use: decompression (we negotiate none), the strict-kex and
"before kex complete" checks (they apply only while ``_recv_encryption`` is unset),
and ``_ignore_first_kex`` (a wrongly guessed first kex packet; neither Go nor
asyncssh sends one).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from asyncssh import (
    MSG_CHANNEL_CLOSE,
    MSG_CHANNEL_DATA,
    MSG_CHANNEL_EOF,
    MSG_CHANNEL_FIRST,
    MSG_CHANNEL_LAST,
    MSG_CHANNEL_OPEN,
    MSG_CHANNEL_OPEN_CONFIRMATION,
    MSG_CHANNEL_WINDOW_ADJUST,
    MSG_IGNORE,
    MSG_KEX_FIRST,
    MSG_KEX_LAST,
    MSG_UNIMPLEMENTED,
    MSG_USERAUTH_FIRST,
    MSG_USERAUTH_LAST,
    DisconnectError,
    MACError,
    ProtocolError,
)
from asyncssh.packet import PacketDecodeError, SSHPacket, UInt32

from cc.fastpath import BytesLike
from cc.ssh.ciphers import FAST_ENCRYPTIONS

__all__ = ["FastReceiveMixin", "opened_count"]

#: Packets ``cc.ssh.lifecycle`` may take (``_cc_lifecycle``).
_LIFECYCLE = frozenset(
    {MSG_CHANNEL_OPEN, MSG_CHANNEL_OPEN_CONFIRMATION, MSG_CHANNEL_EOF, MSG_CHANNEL_CLOSE}
)

#: Channel states in which asyncssh accepts a window adjustment.
_ADJUSTABLE_STATES = frozenset({"open", "eof_pending", "eof"})

#: Packets opened by the fast receive path in this process (see ``cc.ssh.fast_path_counts``).
_opened = 0


def opened_count() -> int:
    """Packets the fast receive path opened so far in this process."""
    return _opened


class FastReceiveMixin:
    """``data_received`` that opens and dispatches whole packets itself when it can."""

    _cc_rx: bytearray
    _cc_blocked = False

    def _cc_fast_ready(self) -> bool:
        conn: Any = self
        return (
            type(conn._recv_encryption) in FAST_ENCRYPTIONS
            and conn._recv_handler == conn._recv_pkthdr
            and not conn._cc_blocked
        )

    def data_received(self, data: bytes, datatype: Any = None) -> None:
        conn: Any = self
        rx = conn.__dict__.get("_cc_rx")
        if rx is None:
            rx = conn._cc_rx = bytearray()
        # While an async handler runs (``_cc_blocked``) bytes wait here: asyncssh's own
        # path would otherwise read the next packet with the sequence number unchanged.
        if rx or conn._cc_blocked or conn._cc_fast_ready():
            if conn._inpbuf:
                rx += conn._inpbuf
                conn._inpbuf = b""
            rx += data
            conn._reset_keepalive_timer()
            conn._cc_drain()
        else:
            super().data_received(data, datatype)  # type: ignore[misc]

    def _finish_recv_packet(
        self, pkttype: int, seq: int, _task: Any = None, is_async: bool = False
    ) -> None:
        conn: Any = self
        super()._finish_recv_packet(pkttype, seq, _task, is_async)  # type: ignore[misc]
        if is_async:
            conn._cc_blocked = False
            if conn.__dict__.get("_cc_rx"):
                conn._cc_drain()

    def _cc_drain(self) -> None:
        """asyncssh's ``_recv_data`` error handling around our packet loop."""
        conn: Any = self
        try:
            conn._cc_packets()
        except DisconnectError as exc:
            conn._send_disconnect(exc.code, exc.reason, exc.lang)
            conn._force_close(exc)
        except Exception:
            conn.internal_error()

    def _cc_packets(self) -> None:
        conn: Any = self
        rx: bytearray = conn._cc_rx
        offset = conn._cc_open_packets(rx)
        if offset:
            del rx[:offset]

    def _cc_open_packets(self, rx: BytesLike) -> int:
        """Open and dispatch the whole packets at the start of ``rx``; the bytes used."""
        global _opened
        conn: Any = self
        offset: int = 0
        opened_here = 0
        try:
            while conn._transport is not None and offset < len(rx):
                if not conn._cc_fast_ready():
                    # cipher changed to one we do not handle, or a handler is running
                    if not conn._cc_blocked:
                        conn._inpbuf += bytes(rx[offset:])
                        offset = len(rx)
                        conn._recv_data()
                    return offset
                try:
                    opened = conn._recv_encryption.open_packet(rx, offset, conn._recv_seq)
                except ValueError as exc:
                    if "authentication" in str(exc):
                        raise MACError("MAC verification failed") from None
                    raise ProtocolError(str(exc)) from None
                if opened is None:
                    return offset
                payload, used = opened
                offset += used
                opened_here += 1
                if len(payload) > conn._max_recv_pktlen:
                    raise ProtocolError("Max packet size exceeded")
                if not conn._cc_dispatch(conn._recv_seq, payload):
                    return offset
            return offset
        finally:
            _opened += opened_here

    def _cc_dispatch(self, seq: int, payload: memoryview) -> bool:
        """asyncssh's ``_recv_packet`` after decryption; channel data takes a short cut."""
        conn: Any = self
        pkttype = payload[0]
        if pkttype == MSG_CHANNEL_DATA and conn._auth_complete and len(payload) >= 9:
            chan = conn._channels.get(int.from_bytes(payload[1:5], "big"))
            if chan is not None and chan._recv_state == "open" and not chan._encoding:
                datalen = int.from_bytes(payload[5:9], "big")
                if datalen != len(payload) - 9:
                    raise ProtocolError("Invalid channel data packet")
                if datalen > chan._recv_window:
                    raise ProtocolError("Window exceeded")
                data: BytesLike = payload[9:]  # a view of this packet's own plaintext
                if not getattr(chan._session, "cc_takes_views", False):
                    data = bytes(data)  # sessions get bytes unless they say they need not
                chan._accept_data(data)
                conn._finish_recv_packet(pkttype, seq)
                return True
        if pkttype == MSG_CHANNEL_WINDOW_ADJUST and conn._auth_complete and len(payload) == 9:
            # Go peers send one after every data packet they read: half of what a
            # request/response exchange receives, so it skips the generic path too.
            chan = conn._channels.get(int.from_bytes(payload[1:5], "big"))
            if chan is not None and chan._recv_state in _ADJUSTABLE_STATES:
                chan._send_window += int.from_bytes(payload[5:9], "big")
                chan._flush_send_buf()
                conn._finish_recv_packet(pkttype, seq)
                return True
        if pkttype in _LIFECYCLE and conn._auth_complete and conn._cc_lifecycle(pkttype, payload):
            conn._finish_recv_packet(pkttype, seq)
            return True
        if pkttype == MSG_IGNORE:
            conn._finish_recv_packet(pkttype, seq)
            return True
        packet = SSHPacket(bytes(payload))
        packet.get_byte()
        handler: Any = conn
        skip_reason = exc_reason = ""
        if MSG_KEX_FIRST <= pkttype <= MSG_KEX_LAST:
            if conn._kex:
                handler = conn._kex
            else:
                skip_reason, exc_reason = "kex not in progress", "Key exchange not in progress"
        elif MSG_USERAUTH_FIRST <= pkttype <= MSG_USERAUTH_LAST:
            if conn._auth:
                handler = conn._auth
            else:
                skip_reason, exc_reason = "auth not in progress", "Authentication not in progress"
        elif pkttype > MSG_USERAUTH_LAST and not conn._auth_complete:
            skip_reason = "invalid request before auth complete"
            exc_reason = "Invalid request before authentication was complete"
        elif MSG_CHANNEL_FIRST <= pkttype <= MSG_CHANNEL_LAST:
            try:
                recv_chan = packet.get_uint32()
            except PacketDecodeError:
                skip_reason, exc_reason = "incomplete channel request", "Incomplete channel request"
            else:
                handler = conn._channels.get(recv_chan)
                if handler is None:
                    skip_reason = "invalid channel number"
                    exc_reason = f"Invalid channel number {recv_chan} received"
                    handler = conn
        handler.log_received_packet(pkttype, seq, packet, skip_reason)
        if not skip_reason:
            try:
                result = handler.process_packet(pkttype, seq, packet)
            except PacketDecodeError as exc:
                raise ProtocolError(str(exc)) from None
            if inspect.isawaitable(result):
                conn._cc_blocked = True
                task = conn.create_task(result)
                task.add_done_callback(
                    functools.partial(conn._finish_recv_packet, pkttype, seq, is_async=True)
                )
                return False
            if not result:
                conn.logger.debug1("Unknown packet type %d received", pkttype)
                conn.send_packet(MSG_UNIMPLEMENTED, UInt32(seq))
        if exc_reason:
            raise ProtocolError(exc_reason)
        conn._finish_recv_packet(pkttype, seq)
        return True
