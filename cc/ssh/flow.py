"""Flow control between channels and the session socket, and channels sized for the peer.

asyncssh ignores the transport's ``pause_writing`` and defers every packet during a
key exchange, so each busy channel could pour its whole window into one shared
buffer.  Here channels hold their data back while it could only pile up, and are
let go again in turn (``TransportFlowMixin`` + ``ChiselTCPChannel``).
"""

from __future__ import annotations

from typing import Any

from cc.ssh.coalesce import SmallWriteMixin
from cc.ssh.ending import EofKeepingChannel
from cc.ssh.leanchan import LeanChannelMixin
from cc.ssh.lifecycle import LifecycleChannelMixin

__all__ = [
    "CHANNEL_MAX_PACKET",
    "CHANNEL_WINDOW",
    "LARGE_CHANNEL_MAX_PACKET",
    "LARGE_CHANNEL_WINDOW",
    "ChiselTCPChannel",
    "TransportFlowMixin",
    "new_channel",
]

#: Between two of our peers (PEER_HEADER on the upgrade): fewer, larger packets.
LARGE_CHANNEL_WINDOW = 4 * 1024 * 1024
LARGE_CHANNEL_MAX_PACKET = 256 * 1024

#: Go peers advertise 32 KiB packets and a 2 MiB window; we match them.
CHANNEL_WINDOW = 2 * 1024 * 1024
CHANNEL_MAX_PACKET = 32 * 1024


class TransportFlowMixin:
    """Channels hold their data while it could only pile up (see ChiselTCPChannel).

    That is while the transport is over its high-water mark (asyncssh ignores
    pause_writing) and while a key exchange runs (asyncssh defers every packet
    until it ends, so each channel would pour its whole window into the deferred
    list, then into the socket buffer at once: 78 MB with 32 busy streams).
    """

    _cc_write_paused = False
    _cc_next_channel = 0
    #: whether the peer is one of ours (cc_peer_is_ours), once a channel asked
    _cc_peer_is_ours: bool | None = None

    def cc_holding(self) -> bool:
        conn: Any = self
        return bool(conn._cc_write_paused or not conn._kex_complete)

    def pause_writing(self) -> None:
        self._cc_write_paused = True

    def resume_writing(self) -> None:
        self._cc_write_paused = False
        self._cc_flush_held()

    def _send_deferred_packets(self) -> None:
        super()._send_deferred_packets()  # type: ignore[misc]
        self._cc_flush_held()

    def _cc_flush_held(self) -> None:
        """Let held-back channels send, starting one further each time (fairness)."""
        conn: Any = self
        if conn.cc_holding():
            return
        channels = [c for c in conn._channels.values() if c._send_buf]
        if not channels:
            return
        start = conn._cc_next_channel % len(channels)
        conn._cc_next_channel += 1
        for chan in channels[start:] + channels[:start]:
            if conn.cc_holding():
                return
            chan._flush_send_buf()


class ChiselTCPChannel(LeanChannelMixin, LifecycleChannelMixin, SmallWriteMixin, EofKeepingChannel):
    """A channel that holds its data back while the connection cannot take it.

    asyncssh ignores the transport's pause_writing, so every channel could queue
    a whole window (4 MiB between our peers) in the one shared socket buffer:
    32 busy streams grew a process by ~130 MB, and many more could exhaust a
    small VM.  Held back here, the data stays in the channel's own buffer, whose
    high-water mark pauses the session (the pipe stops reading its socket).

    ``cc_peer_is_ours``: the peer sends EOF before a clean CLOSE (see cc.ssh.ending).
    Opening, ending and small writes take the short cuts of cc.ssh.lifecycle and
    cc.ssh.coalesce; creation and cleanup skip what nobody uses (cc.ssh.leanchan).
    """

    cc_peer_is_ours = False

    def _flush_send_buf(self) -> None:
        conn: Any = self._conn
        if conn is not None and self._send_buf and conn.cc_holding():
            # Data waits; with nothing buffered, asyncssh's flush sends a pending EOF
            # or close (small, and the peer must see them).
            self._pause_resume_writing()
            return
        if conn is not None and self._send_buf:
            send = getattr(conn, "cc_send_buffered", None)
            if send is not None:
                send(self)  # the bulk path (cc.ssh.bulk); asyncssh's loop does the rest
        super()._flush_send_buf()


def new_channel(conn: Any) -> ChiselTCPChannel:
    """A channel whose receive window and packet size suit the peer.

    We advertise what we receive; the peer sends at most that, so Go peers (which
    advertise 32 KiB themselves) are never sent more than 32 KiB either way.  The
    body of asyncssh 2.24.1 ``SSHConnection.create_tcp_channel``, with our class.
    """
    ours = conn._cc_peer_is_ours
    if ours is None:  # asked once per connection: the upgrade said it, it cannot change
        ours = conn._cc_peer_is_ours = bool(conn.get_extra_info("cc_peer_is_ours"))
    if ours:
        window, packet = LARGE_CHANNEL_WINDOW, LARGE_CHANNEL_MAX_PACKET
    else:
        window, packet = CHANNEL_WINDOW, CHANNEL_MAX_PACKET
    conn._update_recv_pktlen(packet)
    chan = ChiselTCPChannel(conn, conn._loop, None, "strict", window, packet)
    chan.cc_peer_is_ours = ours
    return chan
