"""The listening side of a UDP remote: one local UDP socket, one ``chisel`` channel."""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from typing import Any

import asyncssh

from cc.protocol.hosts import bare_host
from cc.protocol.remote import Remote
from cc.protocol.udp import GobDecoder, GobEncoder, GobError
from cc.protocol.udpmap import SenderTable
from cc.stats import RemoteStats
from cc.tunnel.udp.common import (
    PENDING_DATAGRAMS,
    REOPEN_DELAY,
    ChannelOpener,
    UDPSettings,
    _Drops,
    format_addr,
)

__all__ = ["UDPListener"]


class UDPListener(asyncio.AbstractServer):
    """The listening side of one UDP remote: a bound socket and one channel.

    An ``asyncio.AbstractServer`` so it sits in the same listener lists as the TCP
    servers and is closed with them.
    """

    def __init__(
        self,
        remote: Remote,
        opener: ChannelOpener,
        settings: UDPSettings,
        stats: RemoteStats | None,
        log: logging.Logger,
    ) -> None:
        self.remote = remote
        self.settings = settings
        self.stats = stats
        self.log = log
        self._opener = opener
        self._label = f"udp: {remote}"
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        # Src string -> the sender's socket address, for replies.
        self._senders: SenderTable[str, Any] = SenderTable(
            settings.max_senders, settings.idle_timeout
        )
        self._channel: _ListenerChannel | None = None
        self._opening: asyncio.Task[None] | None = None
        self._pending: collections.deque[tuple[str, bytes]] = collections.deque()
        self._retry_at = 0.0
        self._closed = False
        self._done: asyncio.Future[None] = self._loop.create_future()
        self.drops = _Drops(log, self._label, stats)

    # -- AbstractServer ---------------------------------------------------------
    async def start(self) -> None:
        """Bind the local socket; OSError if the address is taken."""
        host = bare_host(self.remote.local_host)
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _ListenerProtocol(self), local_addr=(host, self.remote.local_port)
        )
        self._transport = transport
        self.log.debug("%s: Listening", self._label)

    @property
    def sockname(self) -> Any:
        assert self._transport is not None
        return self._transport.get_extra_info("sockname")

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The bound socket, as ``asyncio.Server.sockets`` lists a server's."""
        if self._transport is None or self._closed:
            return ()
        sock = self._transport.get_extra_info("socket")
        return () if sock is None else (sock,)

    @property
    def senders(self) -> int:
        return len(self._senders)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._transport is not None:
            self._transport.close()
        if self._opening is not None:
            self._opening.cancel()
        if self._channel is not None:
            self._channel.close()
        self._pending.clear()
        if not self._done.done():
            self._done.set_result(None)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._done)

    def is_serving(self) -> bool:
        return not self._closed and self._transport is not None

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    async def start_serving(self) -> None:
        """Serving starts in :meth:`start`."""

    async def serve_forever(self) -> None:
        await self.wait_closed()

    # -- datagrams from local senders -------------------------------------------
    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self._closed:
            return
        if len(data) > self.settings.max_size:
            self.drops(f"{len(data)} bytes is over the limit of {self.settings.max_size}")
            return
        now = self._loop.time()
        src = format_addr(addr)
        self._senders.expire(now)
        if self._senders.get(src, now) is None:
            self._senders.add(src, addr, now)
        channel = self._channel
        if channel is not None and channel.chan is not None:
            channel.send(src, data)
            return
        if len(self._pending) >= PENDING_DATAGRAMS:
            self.drops("channel not open yet")
            return
        if self._opening is None:
            if now < self._retry_at:
                self.drops("channel open failed recently")
                return
            self._opening = self._loop.create_task(self._open_channel())
        self._pending.append((src, data))

    async def _open_channel(self) -> None:
        session = _ListenerChannel(self)
        try:
            await self._opener(self.remote.target().encode(), lambda: session)
        except Exception as exc:  # whatever it was, the listener must not get stuck
            self._opening = None
            self._retry_at = self._loop.time() + REOPEN_DELAY
            self._pending.clear()
            if self.stats is not None:
                self.stats.count_failed()
            self.log.info("%s: channel refused: %s", self._label, getattr(exc, "reason", exc))
            return
        self._opening = None
        if self._closed or session.chan is None or session.lost:
            session.close()
            return
        self._channel = session
        if self.stats is not None:
            self.stats.count_opened()
        self.log.debug("%s: channel open", self._label)
        pending, self._pending = self._pending, collections.deque()
        for src, data in pending:
            session.send(src, data)

    # -- replies from the channel -----------------------------------------------
    def reply(self, src: str, payload: bytes) -> None:
        """Send a reply to the local sender ``src``, if we heard from it recently."""
        transport = self._transport
        if transport is None or self._closed:
            return
        addr = self._senders.get(src, self._loop.time())
        if addr is None:
            self.drops(f"reply to {src[:60]!r}, which is not a recent sender")
            return
        if len(payload) > self.settings.max_size:
            self.drops(f"reply of {len(payload)} bytes is over the limit")
            return
        # asyncio's and uvloop's datagram transports have it; typeshed does not say so
        buffered = getattr(transport, "get_write_buffer_size", lambda: 0)()
        if buffered > self.settings.channel_buffer:
            self.drops("local socket congested")
            return
        transport.sendto(payload, addr)
        if self.stats is not None:
            self.stats.count_in(len(payload))

    def channel_lost(self, channel: _ListenerChannel) -> None:
        if self._channel is channel:
            self._channel = None
            self.log.debug("%s: channel closed", self._label)


class _ListenerProtocol(asyncio.DatagramProtocol):
    def __init__(self, listener: UDPListener) -> None:
        self.listener = listener

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.listener.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for replies we sent (the sender went away): nothing to do.
        self.listener.log.debug("%s: %s", self.listener._label, exc)


class _ListenerChannel(asyncssh.SSHTCPSession[bytes]):
    """The channel of a listener: gob out, gob in."""

    def __init__(self, listener: UDPListener) -> None:
        self.listener = listener
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self.lost = False
        self.encoder = GobEncoder()
        self.decoder = GobDecoder(listener.settings.decoder_limit)

    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def send(self, src: str, data: bytes) -> None:
        chan = self.chan
        listener = self.listener
        if chan is None or chan.is_closing():
            listener.drops("channel closing")
            return
        if chan.get_write_buffer_size() > listener.settings.channel_buffer:
            listener.drops("channel congested")
            return
        chan.write(self.encoder.encode(src, data))
        if listener.stats is not None:
            listener.stats.count_out(len(data))

    def data_received(self, data: bytes, datatype: Any = None) -> None:
        try:
            packets = self.decoder.receive_data(data)
        except GobError as exc:
            self.listener.log.error(
                "%s: malformed data from the peer (%s); closing the channel",
                self.listener._label,
                exc,
            )
            self.close()
            return
        for src, payload in packets:
            self.listener.reply(src, payload)

    def eof_received(self) -> bool:
        self.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.listener.channel_lost(self)

    def close(self) -> None:
        if self.chan is not None:
            self.chan.close()


# --------------------------------------------------------------------------- dialing side
