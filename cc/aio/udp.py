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

import asyncio
import collections
import errno
import logging
import math
import socket
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import asyncssh

from cc._asyncssh_compat import OPEN_CONNECT_FAILED, ChannelOpenError
from cc.protocol.remote import Remote
from cc.protocol.udp import GobDecoder, GobEncoder, GobError
from cc.protocol.udpmap import SenderTable
from cc.stats import RemoteStats

__all__ = [
    "DEFAULT_MAX_SIZE",
    "ChannelOpener",
    "UDPExit",
    "UDPListener",
    "UDPSettings",
    "format_addr",
    "open_udp_exit",
]

#: chisel's default ``UDP_MAX_SIZE``: the largest datagram it relays.
DEFAULT_MAX_SIZE = 9012
#: The largest UDP payload over IPv4.
MAX_DATAGRAM = 65507
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


@dataclass(frozen=True, slots=True)
class UDPSettings:
    """Limits of the UDP data path, shared by both sides (``--udp-*`` options)."""

    #: sender mappings kept per channel; the least recently used is evicted beyond it
    max_senders: int = 10_000
    #: seconds without traffic after which a mapping is closed (``math.inf``: never)
    idle_timeout: float = 15.0
    #: largest datagram relayed; larger ones are dropped
    max_size: int = DEFAULT_MAX_SIZE
    #: channel send-buffer bytes beyond which datagrams are dropped instead of queued
    channel_buffer: int = 1 << 20

    def __post_init__(self) -> None:
        if self.max_senders < 1:
            raise ValueError("udp max senders must be at least 1")
        if not self.idle_timeout > 0:
            raise ValueError("udp idle timeout must be positive")
        if not 1 <= self.max_size <= MAX_DATAGRAM:
            raise ValueError(f"udp max size must be in 1..{MAX_DATAGRAM}")
        if self.channel_buffer < 1:
            raise ValueError("udp channel buffer must be positive")

    @property
    def decoder_limit(self) -> int:
        """Largest gob message accepted from a peer.

        Generous (a full 64 KiB datagram plus its ``Src``), so a peer with a larger
        ``UDP_MAX_SIZE`` costs only the dropped datagram, not the whole channel; a
        chisel listener never re-opens a channel it lost until its SSH session ends.
        """
        return max(self.max_size, 65535) + 1024


def format_addr(addr: Any) -> str:
    """A socket address as Go's ``UDPAddr.String()``: ``1.2.3.4:53``, ``[::1]:53``."""
    host, port = addr[0], addr[1]
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def _strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


class _Drops:
    """Counts dropped datagrams; logs the first and then every 1000th (no log floods)."""

    __slots__ = ("count", "log", "what")

    def __init__(self, log: logging.Logger, what: str) -> None:
        self.log = log
        self.what = what
        self.count = 0

    def __call__(self, reason: str) -> None:
        self.count += 1
        if self.count == 1 or self.count % 1000 == 0:
            self.log.debug(
                "%s: dropped datagram (%s; %d dropped so far)", self.what, reason, self.count
            )


# --------------------------------------------------------------------------- listening side


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
        self.drops = _Drops(log, self._label)

    # -- AbstractServer ---------------------------------------------------------
    async def start(self) -> None:
        """Bind the local socket; OSError if the address is taken."""
        host = _strip_brackets(self.remote.local_host)
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
                self.stats.failed += 1
            self.log.info("%s: channel refused: %s", self._label, getattr(exc, "reason", exc))
            return
        self._opening = None
        if self._closed or session.chan is None or session.lost:
            session.close()
            return
        self._channel = session
        if self.stats is not None:
            self.stats.total += 1
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
            self.stats.bytes_in += len(payload)

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
            listener.stats.bytes_out += len(data)

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


class _Flow:
    """One sender's connected socket to the target."""

    __slots__ = ("fd", "sock", "src")

    def __init__(self, src: str, sock: socket.socket) -> None:
        self.src = src
        self.sock = sock
        self.fd = sock.fileno()

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.fd >= 0:
            loop.remove_reader(self.fd)
            self.fd = -1
            self.sock.close()


async def open_udp_exit(
    host: str,
    port: int,
    settings: UDPSettings,
    stats: RemoteStats | None,
    log: logging.Logger,
    label: str,
) -> UDPExit:
    """The session for an incoming ``host:port/udp`` channel; ChannelOpenError if unresolvable."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (OSError, TimeoutError) as exc:
        if stats is not None:
            stats.failed += 1
        log.info("udp: %s: cannot resolve %s: %s", label, host, exc)
        raise ChannelOpenError(OPEN_CONNECT_FAILED, f"cannot resolve {host}") from None
    if not infos:
        raise ChannelOpenError(OPEN_CONNECT_FAILED, f"cannot resolve {host}")
    family, _, _, _, sockaddr = infos[0]
    return UDPExit(family, sockaddr, settings, stats, log, label)


class UDPExit(asyncssh.SSHTCPSession[bytes]):
    """The dialing side of a UDP channel: one connected socket per sender ``Src``."""

    #: live sessions, for stats and tests (weak: a closed channel's session goes away)
    live: ClassVar[weakref.WeakSet[UDPExit]] = weakref.WeakSet()

    def __init__(
        self,
        family: int,
        sockaddr: Any,
        settings: UDPSettings,
        stats: RemoteStats | None,
        log: logging.Logger,
        label: str,
    ) -> None:
        self.family = family
        self.sockaddr = sockaddr
        self.settings = settings
        self.stats = stats
        self.log = log
        self.label = f"udp: {label}"
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self.table: SenderTable[str, _Flow] = SenderTable(
            settings.max_senders, settings.idle_timeout
        )
        #: most mappings held at once, and how many were evicted to stay under the cap
        self.peak = 0
        self.evicted = 0
        self.drops = _Drops(log, self.label)
        self._encoder = GobEncoder()
        self._decoder = GobDecoder(settings.decoder_limit)
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        UDPExit.live.add(self)

    # -- channel callbacks --------------------------------------------------------
    def connection_made(self, chan: Any) -> None:
        self.chan = chan
        if self.stats is not None:
            self.stats.total += 1
        self.log.debug("%s: channel open", self.label)

    def data_received(self, data: bytes, datatype: Any = None) -> None:
        if self._closed:
            return
        try:
            packets = self._decoder.receive_data(data)
        except GobError as exc:
            self.log.error(
                "%s: malformed data from the peer (%s); closing the channel", self.label, exc
            )
            self.close()
            return
        now = self._loop.time()
        for src, payload in packets:
            self._forward(src, payload, now)

    def eof_received(self) -> bool:
        self.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._shutdown()
        self.log.debug(
            "%s: channel closed (peak %d senders, %d evicted, %d datagrams dropped)",
            self.label,
            self.peak,
            self.evicted,
            self.drops.count,
        )

    def close(self) -> None:
        if self.chan is not None:
            self.chan.close()
        self._shutdown()

    def _shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for _, flow in self.table.clear():
            flow.close(self._loop)
        UDPExit.live.discard(self)

    # -- tunnel -> target ------------------------------------------------------------
    def _forward(self, src: str, payload: bytes, now: float) -> None:
        if len(payload) > self.settings.max_size:
            self.drops(f"{len(payload)} bytes is over the limit of {self.settings.max_size}")
            return
        flow = self.table.get(src, now)
        if flow is None:
            if len(self.table) >= self.table.max_senders:
                self._evict_lru()  # before the new socket: never more sockets than the cap
            flow = self._new_flow(src)
            if flow is None:
                return
            for _, old in self.table.add(src, flow, now):
                old.close(self._loop)
                self.evicted += 1
            self.peak = max(self.peak, len(self.table))
            self._schedule_expiry()
        try:
            flow.sock.send(payload)
        except (BlockingIOError, InterruptedError):
            self.drops("target socket busy")
            return
        except OSError as exc:  # e.g. ECONNREFUSED left by an earlier ICMP error
            self.drops(f"send to the target failed: {exc.strerror or exc}")
            return
        if self.stats is not None:
            self.stats.bytes_in += len(payload)

    def _new_flow(self, src: str) -> _Flow | None:
        for attempt in range(2):
            sock = None
            try:
                sock = socket.socket(self.family, socket.SOCK_DGRAM)
                sock.setblocking(False)
                sock.connect(self.sockaddr)
            except OSError as exc:
                if sock is not None:
                    sock.close()
                out_of_sockets = exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS)
                if attempt == 0 and out_of_sockets and len(self.table):
                    self._evict_lru()  # out of descriptors: give up the oldest mapping
                    continue
                self.drops(f"cannot open a socket to the target: {exc.strerror or exc}")
                return None
            flow = _Flow(src, sock)
            self._loop.add_reader(flow.fd, self._readable, flow)
            return flow
        return None

    def _evict_lru(self) -> None:
        lru = next(iter(self.table))
        old = self.table.remove(lru)
        if old is not None:
            old.close(self._loop)
            self.evicted += 1

    # -- target -> tunnel --------------------------------------------------------------
    def _readable(self, flow: _Flow) -> None:
        limit = self.settings.max_size
        for _ in range(READS_PER_WAKEUP):
            if flow.fd < 0:
                return
            try:
                data = flow.sock.recv(limit + 1)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                continue  # ICMP port unreachable: the target is not listening (yet)
            except OSError as exc:
                self.log.debug("%s: %s: %s", self.label, flow.src, exc)
                if self.table.remove(flow.src) is flow:
                    flow.close(self._loop)
                return
            if len(data) > limit:
                self.drops(f"reply over the limit of {limit} bytes")
                continue
            chan = self.chan
            if chan is None or chan.is_closing():
                return
            if chan.get_write_buffer_size() > self.settings.channel_buffer:
                self.drops("channel congested")
                continue
            self.table.touch(flow.src, self._loop.time())
            chan.write(self._encoder.encode(flow.src, data))
            if self.stats is not None:
                self.stats.bytes_out += len(data)

    # -- idle mappings -------------------------------------------------------------------
    def _schedule_expiry(self) -> None:
        if self._timer is not None or self._closed:
            return
        when = self.table.next_expiry()
        if when is None or math.isinf(when):
            return
        # a little late rather than early: call_at may fire within the clock resolution
        self._timer = self._loop.call_at(when + 0.001, self._expire)

    def _expire(self) -> None:
        self._timer = None
        for _, flow in self.table.expire(self._loop.time()):
            flow.close(self._loop)
        self._schedule_expiry()
