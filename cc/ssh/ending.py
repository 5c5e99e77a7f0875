"""How a channel ends: EOF before a clean CLOSE, and a clean CLOSE told from a cut one.

A tunnelled connection passes the channel's EOF on as a FIN; a channel that goes
away without one must reach the local application as a reset, or a reader that
reads to EOF takes a cut stream for a complete one (issue 11).  Our peers send
EOF before every clean CLOSE (``EofKeepingChannel`` keeps asyncssh from losing
one that waits behind data), so from them a CLOSE alone means the far end was
reset or failed.  Go's ssh package never sends EOF with ``Channel.Close``, and
chisel 1.11's pipe closes the channel when its socket reaches EOF, so from chisel
a CLOSE is the only end there is and must count as clean.  The loss of the SSH
connection under a channel (peer killed, keepalive timeout, reset) is never clean.
"""

from __future__ import annotations

from typing import Any

from asyncssh import MSG_CHANNEL_CLOSE, MSG_CHANNEL_EOF, SSHTCPChannel
from asyncssh.packet import SSHPacket

__all__ = ["EofKeepingChannel", "close_is_clean"]


def close_is_clean(chan: Any) -> bool:
    """Whether ``chan``, closed before the peer's EOF, still ended its stream cleanly.

    Call from the session's ``connection_lost``: asyncssh reports a CLOSE from the
    peer and the loss of the connection alike, but only the first leaves the
    channel's receive side ``closed``.
    """
    closed_by_peer = chan._recv_state == "closed"
    return closed_by_peer and not getattr(chan, "cc_peer_is_ours", False)


class EofKeepingChannel(SSHTCPChannel):  # type: ignore[type-arg]
    """A channel whose CLOSE never swallows an EOF, sent or received, queued behind data.

    asyncssh 2.24.1 lets a pending CLOSE replace a pending EOF both ways: ``close()``
    after ``write_eof()`` while data waits for the window sends CLOSE alone, and a
    CLOSE that arrives while a received EOF waits behind paused data is processed
    without ever calling ``eof_received``.  Either way a clean end would reach the
    other side as a CLOSE alone, which means a reset between our peers.  ``abort()``
    still closes without EOF: that is how a reset is passed on.
    """

    _cc_eof_owed = False
    _cc_eof_unread = False

    # -- sending ---------------------------------------------------------------
    def close(self) -> None:
        if self._send_state == "eof_pending":
            self._cc_eof_owed = True
        super().close()

    def abort(self) -> None:
        self._cc_eof_owed = False
        super().abort()

    def _close_send(self) -> None:
        if self._cc_eof_owed and self._send_state == "close_pending" and not self._send_buf:
            self.send_packet(MSG_CHANNEL_EOF)
        self._cc_eof_owed = False
        super()._close_send()

    # -- receiving -------------------------------------------------------------
    def _cc_process_close(self, pkttype: int, pktid: int, packet: SSHPacket) -> None:
        if self._recv_state == "eof_pending":
            self._cc_eof_unread = True
        SSHTCPChannel._process_close(self, pkttype, pktid, packet)

    def cc_closed_by_peer(self) -> None:
        """A CLOSE came (state checked): asyncssh's ``_process_close`` after its checks."""
        if self._recv_state == "eof_pending":
            self._cc_eof_unread = True
        self._close_send()
        self._recv_state = "close_pending"
        self._flush_recv_buf()

    # asyncssh dispatches packets through this table, not by method name.
    _packet_handlers = {
        **SSHTCPChannel._packet_handlers,
        MSG_CHANNEL_CLOSE: _cc_process_close,
    }

    def _flush_recv_buf(self, exc: Exception | None = None) -> None:
        if self._cc_eof_unread:
            # asyncssh's delivery loop, then the EOF it would skip once CLOSE came
            while self._recv_buf and not self._recv_paused:
                self._deliver_data(*self._recv_buf.pop(0))
            if self._recv_buf or self._recv_paused == "starting" or not self._cc_eof_unread:
                return
            self._cc_eof_unread = False
            if self._session is not None:
                self._session.eof_received()
        super()._flush_recv_buf(exc)
