"""The dialing side of a UDP remote: one connected socket per sender, LRU-capped."""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import socket
import weakref
from typing import Any, ClassVar

import asyncssh

from cc.protocol.udp import GobDecoder, GobEncoder, GobError
from cc.protocol.udpmap import SenderTable
from cc.ssh import OPEN_CONNECT_FAILED, ChannelOpenError
from cc.stats import RemoteStats
from cc.tunnel.udp.common import (
    READS_PER_WAKEUP,
    RESOLVE_TIMEOUT,
    UDPSettings,
    _Drops,
)

__all__ = ["UDPExit", "open_udp_exit"]


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
            stats.count_failed()
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
        self.drops = _Drops(log, self.label, stats)
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
            self.stats.count_opened()
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
            self.stats.count_in(len(payload))

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
                self.stats.count_out(len(data))

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
