"""What both ends of a chisel session do with sockets and channels, written once.

The gateway (for reverse remotes) and the connector (for forward remotes) both
listen on local ports and turn each accepted socket into a ``chisel`` channel;
both accept channels from the other end and route them to a SOCKS5 server, a
UDP exit or a TCP dial; both drain open connections before they stop.  Which
remotes and channels are *allowed* is each side's policy and stays with the
caller (the gateway's ACLs, the connector's declared targets); how it is done,
and how a failure is counted and logged, lives here so a fix lands once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncssh

from cc.protocol.hosts import AmbiguousHostError, bare_host, join_host_port
from cc.protocol.remote import Remote, split_target
from cc.ssh import (
    OPEN_ADMINISTRATIVELY_PROHIBITED,
    OPEN_CONNECT_FAILED,
    ChannelOpenError,
    open_chisel_channel,
    start_chisel_channel,
)
from cc.stats import RemoteStats, SessionStats
from cc.tunnel.pipe import Pipe, dial
from cc.tunnel.socks import SocksSession
from cc.tunnel.udp.exit import open_udp_exit
from cc.tunnel.udp.listener import UDPListener
from cc.tunnel.udp.settings import UDPSettings

__all__ = ["ChannelTarget", "TunnelEndpoint", "drain", "open_connections"]

#: Listen backlog: a burst of clients must not wait for SYN retries.
BACKLOG = 1024
#: How often a drain looks at the open-connection count.
_DRAIN_POLL = 0.05


def open_connections(stats: SessionStats) -> int:
    """Tunnelled connections open now, over every remote in ``stats``."""
    return sum(r.open for r in stats.remotes.values())


async def drain(stats: SessionStats, timeout: float) -> None:
    """Wait until no tunnelled connection is open, or ``timeout`` seconds have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while open_connections(stats) and loop.time() < deadline:
        await asyncio.sleep(_DRAIN_POLL)


@dataclass(frozen=True, slots=True)
class ChannelTarget:
    """An incoming channel's target: ``socks``, ``host:port`` or ``host:port/udp``.

    ``text`` is the target in its one spelling (cc.protocol.hosts), which may differ
    from what the peer sent (``[0:0::1]:22`` is ``[::1]:22``): ACLs, declared remotes,
    stats and logs all see what will be dialled.
    """

    text: str
    host: str = ""
    port: int = 0
    udp: bool = False

    @property
    def socks(self) -> bool:
        return self.text == "socks"

    @property
    def address(self) -> str:
        """``host:port`` without ``/udp``: chisel's ACL subjects do not name the protocol."""
        return self.text.removesuffix("/udp")

    @classmethod
    def parse(cls, text: str) -> ChannelTarget:
        """Split and canonicalise ``text``, or refuse it (ChannelOpenError, to log and send).

        A target that is not ``host:port`` is refused as connect-failed.  A numeric host
        the resolver reads as another address (``127.0.011`` is 127.0.0.9) is refused as
        prohibited, with the address it stands for in the reason: dialling it would
        reach an address no ACL or declared remote named.  Pure, so the answers for
        the targets seen last are kept (every tunnelled connection asks again).
        """
        return _parse_target(text)


@functools.lru_cache(maxsize=1024)
def _parse_target(text: str) -> ChannelTarget:
    """``ChannelTarget.parse``; a refusal raises and is not cached."""
    if text == "socks":
        return ChannelTarget(text)
    address = text.removesuffix("/udp")
    try:
        host, port = split_target(address)
    except AmbiguousHostError as exc:
        raise ChannelOpenError(OPEN_ADMINISTRATIVELY_PROHIBITED, str(exc)) from None
    except ValueError:
        raise ChannelOpenError(OPEN_CONNECT_FAILED, "bad target") from None
    udp = address != text
    return ChannelTarget(join_host_port(host, port) + ("/udp" if udp else ""), host, port, udp=udp)


class TunnelEndpoint:
    """One end's listeners and channels over whatever SSH connection ``conn()`` returns now.

    ``conn`` is a getter because the connector's connection comes and goes while
    its forward listeners stay; ``stats`` is where connections are counted.
    """

    def __init__(
        self,
        conn: Callable[[], Any],
        stats: SessionStats,
        log: logging.Logger,
        udp: UDPSettings,
    ) -> None:
        self._conn = conn
        self.stats = stats
        self.log = log
        self.udp = udp
        #: the latest failure worth showing an operator (time and reason), "" if none
        self.last_error = ""

    def note_error(self, reason: str) -> None:
        """Remember ``reason`` as the latest failure (the gateway's status page shows it)."""
        self.last_error = f"{time.strftime('%H:%M:%S')} {reason}"

    # -- draining -------------------------------------------------------------
    def open_connections(self) -> int:
        return open_connections(self.stats)

    async def drain(self, timeout: float) -> None:
        await drain(self.stats, timeout)

    # -- local listeners: accepted sockets become channels ----------------------
    async def listen_tcp(self, remote: Remote, *, reuse_port: bool) -> asyncio.AbstractServer:
        """Listen on ``remote``'s local side; each connection gets a channel to its target.

        ``reuse_port`` lets other processes or sessions bind the same port
        (SO_REUSEPORT) when they are meant to share it.  OSError if it is taken.
        An IPv6 local host is bound without the brackets the remote carries.
        """
        label = str(remote)
        stats = self.stats.remote(label)
        target = remote.target().encode()
        loop = asyncio.get_running_loop()
        return await loop.create_server(
            functools.partial(self.accept_into_channel, remote, stats, label, target, loop),
            bare_host(remote.local_host) or None,
            remote.local_port,
            reuse_address=True,
            reuse_port=reuse_port or None,
            backlog=BACKLOG,
        )

    async def listen_udp(self, remote: Remote) -> UDPListener:
        """Listen for ``remote``'s datagrams; each sender gets a channel.  OSError if taken."""
        stats = self.stats.remote(str(remote))
        listener = UDPListener(remote, self.open_udp_channel, self.udp, stats, self.log)
        await listener.start()
        return listener

    def accept_into_channel(
        self,
        remote: Remote,
        stats: RemoteStats,
        label: str,
        target: bytes,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> asyncio.BaseProtocol:
        """The protocol of an accepted socket: a pipe whose channel opens right after.

        ``label`` is ``str(remote)`` and ``target`` the channel's extra data, both
        worked out once per listener, as is ``loop`` (the listener's; looking up
        the running loop costs a getpid() each time).  The CHANNEL_OPEN goes out
        once the socket is connected (``connection_made`` runs before the scheduled
        call); no task: the pipe is called back.
        """
        pipe = Pipe(stats, label)
        socket_end, channel_end = pipe.ends()
        (loop or asyncio.get_running_loop()).call_soon(
            self._open_channel, remote, target, pipe, channel_end
        )
        return socket_end

    def _open_channel(
        self,
        remote: Remote,
        target: bytes,
        pipe: Pipe,
        channel_end: asyncssh.SSHTCPSession[bytes],
    ) -> None:
        conn = self._conn()
        if conn is None:
            self.log.info("tun: %s: not connected; dropping connection", remote)
            pipe.reset(ConnectionError("not connected"))
            return
        done = functools.partial(self._channel_opened, remote, pipe, time.monotonic())
        try:
            start_chisel_channel(conn, target, channel_end, done)
        except (ChannelOpenError, OSError, asyncssh.Error) as exc:
            done(exc)

    def _channel_opened(
        self, remote: Remote, pipe: Pipe, started: float, exc: Exception | None
    ) -> None:
        if exc is None:
            self.stats.observe_channel_open(time.monotonic() - started)
            return
        if pipe.stats is not None:
            pipe.stats.count_failed()
        reason = getattr(exc, "reason", exc)
        self.log.info("tun: %s: channel refused: %s", remote, reason)
        self.note_error(f"{remote}: channel refused: {reason}")
        pipe.reset(exc)

    async def open_udp_channel(self, target: bytes, factory: Callable[[], Any]) -> object:
        """A channel for one UDP sender (the UDP listener's opener)."""
        conn = self._conn()
        if conn is None:
            raise ConnectionError("not connected")
        started = time.monotonic()
        channel = await open_chisel_channel(conn, target, factory)
        self.stats.observe_channel_open(time.monotonic() - started)
        return channel

    # -- channels from the other end ------------------------------------------------
    def route_channel(
        self,
        target: ChannelTarget,
        stats: RemoteStats,
        label: str,
        *,
        socks_authorize: Callable[[str], bool] | None = None,
    ) -> Any:
        """The session for a channel the caller has allowed: SOCKS5, a UDP exit or a TCP dial.

        ``socks_authorize`` checks each SOCKS CONNECT's ``host:port`` (None: any).
        Returns an asyncssh session or an awaitable of one (a dial).
        """
        if target.socks:
            return SocksSession(socks_authorize, stats, self.log.getChild("socks"), label)
        if target.udp:
            return open_udp_exit(target.host, target.port, self.udp, stats, self.log, label)
        return dial(target.host, target.port, stats, label, self._dial_failed)

    def _dial_failed(self, target: str, reason: str) -> None:
        self.note_error(f"dial {target} failed: {reason}")
