"""UDP remotes over ``chisel`` channels: the listening side and the dialing side.

chisel carries every datagram of one UDP remote over ONE channel whose extra data is
``host:port/udp``; each direction of the channel is a gob stream of
``udpPacket{Src, Payload}`` (:mod:`cc.protocol.udp`).  ``Src`` is the original
sender's ``ip:port``, so the dialing side can keep one connected socket per sender
(replies then come back on that socket, tagged with the same ``Src``) and the
listening side knows where to send each reply.

* :class:`UDPListener` binds the local UDP socket (a forward remote on the connector,
  a reverse remote on the gateway), opens the channel when the first datagram
  arrives and re-opens it after the channel is lost.  It sends replies only to
  senders it has heard from recently (chisel resolves any ``Src`` the peer names
  and writes to it, which lets a peer use the listener to spray datagrams).
* :class:`UDPExit` is the channel session on the dialing side.  Its sender table
  (:class:`cc.protocol.udpmap.SenderTable`) is capped (``--udp-max-senders``,
  default 10000, chisel: 100) and evicts the least recently used sender, where
  chisel stops listening for replies of new senders; mappings idle for
  ``--udp-idle-timeout`` (15 s, as chisel) are closed.

Datagrams larger than ``--udp-max-size`` (9012 bytes, chisel's ``UDP_MAX_SIZE``) are
dropped, not truncated as chisel's fixed read buffer does.  A malformed gob stream
is logged as an error and closes the channel; it never raises out of a callback.
Datagrams are dropped (UDP semantics) instead of queued when the channel's send
buffer is over ``channel_buffer`` bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh

from cc.protocol.hosts import join_host_port
from cc.stats import RemoteStats
from cc.tunnel.udp.settings import DEFAULT_MAX_SIZE, MAX_DATAGRAM, UDPSettings

__all__ = [
    "DEFAULT_MAX_SIZE",
    "MAX_DATAGRAM",
    "ChannelOpener",
    "UDPSettings",
    "format_addr",
]

#: Datagrams a listener holds while its channel is being opened.
PENDING_DATAGRAMS = 256
#: After a failed channel open, datagrams are dropped this long before the next try.
REOPEN_DELAY = 1.0
#: Datagrams read per readiness callback, so one busy socket cannot starve the loop.
READS_PER_WAKEUP = 64
#: Resolving the target of a new UDP channel may take this long.
RESOLVE_TIMEOUT = 10.0

#: ``opener(target, session_factory)`` opens a ``chisel`` channel (open_chisel_channel).
ChannelOpener = Callable[[bytes, Callable[[], asyncssh.SSHTCPSession[bytes]]], Awaitable[object]]


def format_addr(addr: Any) -> str:
    """A socket address as Go's ``UDPAddr.String()``: ``1.2.3.4:53``, ``[::1]:53``."""
    return join_host_port(addr[0], addr[1])


class _Drops:
    """Counts dropped datagrams; logs the first and then every 1000th (no log floods)."""

    __slots__ = ("count", "log", "stats", "what")

    def __init__(self, log: logging.Logger, what: str, stats: RemoteStats | None = None) -> None:
        self.log = log
        self.what = what
        self.stats = stats
        self.count = 0

    def __call__(self, reason: str) -> None:
        self.count += 1
        if self.stats is not None:
            self.stats.count_dropped()
        if self.count == 1 or self.count % 1000 == 0:
            self.log.debug(
                "%s: dropped datagram (%s; %d dropped so far)", self.what, reason, self.count
            )
