"""A userspace impairment relay: delay, loss, blackhole and reset injection between
the gateway and the connector.

Design: a TUN router between two network namespaces (design "a"), not a TCP relay
on 127.0.0.1 (design "b").  The kernel here has no netem and there is no iptables,
but it has TUN: :class:`ImpairedLink` creates a namespace for the gateway side and
one for the connector side, a TUN device in each with one end of a point-to-point
link (198.18.0.1 <-> 198.18.0.2, the benchmarking range, which exists only inside
those namespaces), and a thread of the test process that reads every IP packet from
one TUN and writes it to the other after the impairments.  So "5 % loss" is real
packet loss that the kernels' TCP must repair with real retransmissions, and
"50 ms delay" is real added latency that the congestion window has to live with; a
blackhole drops every packet (so keepalives go unanswered and new SYNs vanish)
and a reset injection sends each end of every TCP connection on the link an RST
with the sequence number it expects, as a middlebox or a NAT that lost its state
does.  A TCP-level relay could only stall bytes (TCP above it never loses a
segment), which proves nothing about a stream's integrity under loss.

The relay is bounded (the thread wakes at least every 50 ms to check its stop
flag), and :meth:`ImpairedLink.close` always stops it, closes both TUN file
descriptors and deletes both namespaces, also when the test failed.  Processes
started in the namespaces are stopped before that (:mod:`tests.support.nstunnel`).
"""

from __future__ import annotations

import collections
import fcntl
import os
import random
import select
import struct
import threading
import time
from dataclasses import dataclass, field

from tests.support.netns import NetNamespace

__all__ = [
    "CONNECTOR_ADDR",
    "GATEWAY_ADDR",
    "ImpairedLink",
    "LinkStats",
]

#: The two ends of the link (RFC 2544 benchmarking addresses, only inside the namespaces).
GATEWAY_ADDR = "198.18.0.1"
CONNECTOR_ADDR = "198.18.0.2"
TUN_NAME = "ccimp0"

_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
_READ_SIZE = 65536
_BATCH = 256  # packets read from one TUN before looking at the other and the queues
_TICK = 0.05  # longest sleep: how quickly stop() and a timed blackhole are noticed
_KILL_MEMORY = 10.0  # seconds a reset flow's later packets are answered with RSTs

_TCP_FIN, _TCP_SYN, _TCP_RST, _TCP_ACK = 0x01, 0x02, 0x04, 0x10

# Packets travel "down" from the gateway side to the connector side and "up" back.
_DOWN, _UP = 0, 1


@dataclass
class LinkStats:
    """What the relay did, per direction (index 0: gateway -> connector, 1: back)."""

    forwarded: list[int] = field(default_factory=lambda: [0, 0])
    lost: list[int] = field(default_factory=lambda: [0, 0])
    blackholed: list[int] = field(default_factory=lambda: [0, 0])
    resets_sent: int = 0


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _tcp_rst(src: bytes, sport: int, dst: bytes, dport: int, seq: int) -> bytes:
    """An IPv4 TCP RST from ``src:sport`` to ``dst:dport`` with sequence number ``seq``."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, _TCP_RST, 0, 0, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + tcp


def _open_tun(ns: NetNamespace, mtu: int, address: str, peer: str) -> int:
    """A TUN device created inside ``ns`` (the device lives where /dev/net/tun was opened)."""
    with ns.entered():
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", TUN_NAME.encode(), _IFF_TUN | _IFF_NO_PI))
        ns.ip("link", "set", "dev", TUN_NAME, "mtu", str(mtu), "up")
        ns.ip("addr", "add", address, "peer", peer, "dev", TUN_NAME)
    except BaseException:
        os.close(fd)
        raise
    return fd


class ImpairedLink:
    """Two namespaces joined by an impairing router; knobs may change at any time.

    ``delay`` is one-way, in seconds, added in each direction (so the round trip
    grows by twice it); ``loss`` is the probability that a packet is dropped, drawn
    independently for each packet in each direction from a seeded generator.
    ``mtu`` is the link's MTU: 1500 is an Ethernet path, 65535 the loopback-sized
    segments a same-host test usually gets.
    """

    def __init__(
        self, *, delay: float = 0.0, loss: float = 0.0, mtu: int = 1500, seed: int = 0
    ) -> None:
        self.delay = delay
        self.loss = loss
        self.mtu = mtu
        self.stats = LinkStats()
        #: time.monotonic() of the last lift of a blackhole
        self.lifted_at: float | None = None
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._blackhole_until: float | None = None
        self._reset_pending = False
        # Latest ACK number each TCP endpoint sent: what it expects next (its rcv_nxt).
        self._acks: dict[tuple[bytes, int, bytes, int], tuple[int, int]] = {}
        self._killed: dict[frozenset[tuple[bytes, int]], float] = {}
        self._queues: tuple[collections.deque[tuple[float, bytes]], ...] = (
            collections.deque(),
            collections.deque(),
        )
        self._stop = threading.Event()
        self._fds: list[int] = []
        self._thread: threading.Thread | None = None
        self.gateway_ns = NetNamespace()
        try:
            self.connector_ns = NetNamespace()
            try:
                self._fds.append(_open_tun(self.gateway_ns, mtu, GATEWAY_ADDR, CONNECTOR_ADDR))
                self._fds.append(_open_tun(self.connector_ns, mtu, CONNECTOR_ADDR, GATEWAY_ADDR))
            except BaseException:
                for fd in self._fds:
                    os.close(fd)
                self.connector_ns.close()
                raise
        except BaseException:
            self.gateway_ns.close()
            raise
        self._thread = threading.Thread(target=self._run, name="impaired-link", daemon=True)
        self._thread.start()

    # -- knobs ------------------------------------------------------------------
    def blackhole(self, seconds: float | None = None) -> None:
        """Drop every packet from now on, for ``seconds`` or until :meth:`lift`."""
        with self._lock:
            self._blackhole_until = float("inf") if seconds is None else time.monotonic() + seconds

    def lift(self) -> float:
        """End a blackhole now; returns the time.monotonic() it ended at."""
        with self._lock:
            self._blackhole_until = None
            self.lifted_at = time.monotonic()
            return self.lifted_at

    @property
    def blackholed(self) -> bool:
        with self._lock:
            return self._blackholed(time.monotonic())

    def reset(self) -> None:
        """Reset every TCP connection on the link now: an RST to each end of each one."""
        with self._lock:
            self._reset_pending = True

    # -- life cycle -------------------------------------------------------------
    def close(self) -> None:
        """Stop the relay, close the TUNs, delete the namespaces; safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()
        self.connector_ns.close()
        self.gateway_ns.close()

    def __enter__(self) -> ImpairedLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the relay thread -------------------------------------------------------
    def _blackholed(self, now: float) -> bool:
        until = self._blackhole_until
        if until is None:
            return False
        if now < until:
            return True
        self._blackhole_until = None
        self.lifted_at = until
        return False

    def _run(self) -> None:
        fds = self._fds
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                if self._reset_pending:
                    self._reset_pending = False
                    self._inject_resets(now)
            self._flush(now)
            wait = _TICK
            for queue in self._queues:
                if queue:
                    wait = min(wait, max(0.0, queue[0][0] - now))
            ready, _, _ = select.select(fds, [], [], wait)
            for fd in ready:
                direction = _DOWN if fd == fds[0] else _UP
                for _ in range(_BATCH):
                    try:
                        packet = os.read(fd, _READ_SIZE)
                    except BlockingIOError:
                        break
                    except OSError:
                        return
                    self._accept(packet, direction)

    def _accept(self, packet: bytes, direction: int) -> None:
        now = time.monotonic()
        with self._lock:
            if self._police(packet, direction, now):
                return
            if self._blackholed(now):
                self.stats.blackholed[direction] += 1
                return
            if self.loss and self._random.random() < self.loss:
                self.stats.lost[direction] += 1
                return
            delay = self.delay
        if delay <= 0 and not self._queues[direction]:
            self._write(packet, direction)
        else:
            self._queues[direction].append((now + delay, packet))

    def _flush(self, now: float) -> None:
        for direction, queue in enumerate(self._queues):
            while queue and queue[0][0] <= now:
                _, packet = queue.popleft()
                with self._lock:
                    if self._blackholed(now):  # in flight when the link went down
                        self.stats.blackholed[direction] += 1
                        continue
                self._write(packet, direction)

    def _write(self, packet: bytes, direction: int) -> None:
        out = self._fds[1] if direction == _DOWN else self._fds[0]
        try:
            os.write(out, packet)
        except OSError:
            return  # a full or closing TUN drops the packet, as a busy router would
        self.stats.forwarded[direction] += 1

    # -- TCP state for reset injection (called with the lock held) --------------
    def _police(self, packet: bytes, direction: int, now: float) -> bool:
        """Track each endpoint's ACK number; swallow (and answer) packets of reset flows.

        Returns True when the packet belongs to a reset connection and must not pass.
        """
        if len(packet) < 40 or packet[0] >> 4 != 4 or packet[9] != 6:
            return False
        ihl = (packet[0] & 0x0F) * 4
        src, dst = packet[12:16], packet[16:20]
        sport, dport, _seq, ack = struct.unpack_from("!HHII", packet, ihl)
        flags = packet[ihl + 13]
        flow = frozenset(((src, sport), (dst, dport)))
        killed_at = self._killed.get(flow)
        if killed_at is not None:
            if now - killed_at > _KILL_MEMORY or (flags & _TCP_SYN and not flags & _TCP_ACK):
                del self._killed[flow]  # a new connection on the same ports
            else:
                if flags & _TCP_ACK and not flags & _TCP_RST:
                    # Its ACK number is exactly what it expects: this RST is accepted.
                    self._send_rst(dst, dport, src, sport, ack, toward=direction)
                return True
        if flags & (_TCP_RST | _TCP_FIN) and not flags & _TCP_ACK:
            self._acks.pop((src, sport, dst, dport), None)
        elif flags & _TCP_ACK:
            self._acks[(src, sport, dst, dport)] = (ack, direction)
        return False

    def _inject_resets(self, now: float) -> None:
        for (src, sport, dst, dport), (ack, direction) in list(self._acks.items()):
            self._send_rst(dst, dport, src, sport, ack, toward=direction)
            self._killed[frozenset(((src, sport), (dst, dport)))] = now
        self._acks.clear()

    def _send_rst(
        self, src: bytes, sport: int, dst: bytes, dport: int, seq: int, *, toward: int
    ) -> None:
        """An RST back to the side that sent ``direction``'s packets (written to its TUN)."""
        fd = self._fds[0] if toward == _DOWN else self._fds[1]
        try:
            os.write(fd, _tcp_rst(src, sport, dst, dport, seq))
        except OSError:
            return
        self.stats.resets_sent += 1
