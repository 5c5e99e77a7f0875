"""How a channel ends: EOF before a clean CLOSE, and a clean CLOSE told from a cut one.

A tunnelled connection passes the channel's EOF on as a FIN; a channel that goes
away without one must reach the local application as a reset, or a reader that
reads to EOF takes a cut stream for a complete one (issue 11).  Our peers send
EOF before every clean CLOSE (``EofBeforeCloseMixin`` sees to it even when the
EOF still waits behind data), so from them a CLOSE alone means the far end was
reset or failed.  Go's ssh package never sends EOF with ``Channel.Close``, and
chisel 1.11's pipe closes the channel when its socket reaches EOF, so from chisel
a CLOSE is the only end there is and must count as clean.  The loss of the SSH
connection under a channel (peer killed, keepalive timeout, reset) is never clean.
"""

from __future__ import annotations

from typing import Any

from asyncssh import MSG_CHANNEL_EOF

__all__ = ["EofBeforeCloseMixin", "close_is_clean"]


def close_is_clean(chan: Any) -> bool:
    """Whether ``chan``, closed before the peer's EOF, still ended its stream cleanly.

    Call from the session's ``connection_lost``: asyncssh reports a CLOSE from the
    peer and the loss of the connection alike, but only the first leaves the
    channel's receive side ``closed``.
    """
    closed_by_peer = chan._recv_state == "closed"
    return closed_by_peer and not getattr(chan, "cc_peer_is_ours", False)


class EofBeforeCloseMixin:
    """``write_eof()`` then ``close()`` sends the EOF, also while data is still queued.

    asyncssh's ``close()`` replaces a pending EOF by the pending CLOSE, so a clean
    end whose last bytes waited for the window (or a key exchange) would reach the
    peer as a CLOSE alone, which our peers take for a reset.  ``abort()`` still
    closes without EOF: that is how a reset is passed on.
    """

    _cc_eof_owed = False

    def close(self) -> None:
        chan: Any = self
        if chan._send_state == "eof_pending":
            self._cc_eof_owed = True
        super().close()  # type: ignore[misc]

    def abort(self) -> None:
        self._cc_eof_owed = False
        super().abort()  # type: ignore[misc]

    def _close_send(self) -> None:
        chan: Any = self
        if self._cc_eof_owed and chan._send_state == "close_pending" and not chan._send_buf:
            chan.send_packet(MSG_CHANNEL_EOF)
        self._cc_eof_owed = False
        super()._close_send()  # type: ignore[misc]
