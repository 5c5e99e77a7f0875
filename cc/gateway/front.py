"""The gateway's door: accepting, capping who may wait unauthenticated, and timing logins out.

asyncio's own accept loop cannot be told what to do when descriptors run out: it
logs once and leaves the connections in the listen backlog, where a real
connector waited 43 s behind 1,500 idle sockets.  So the gateway accepts itself:

* every accepted connection is *unauthenticated* until its SSH login succeeds
  (or it turns out to be plain HTTP, which is answered and closed); the caps of
  :class:`cc.protocol.admission.Admission` bound those in total (evicting the
  oldest) and per source (refusing the newcomer);
* each unauthenticated connection must log in within the grace time
  (``--login-grace-time``), whatever it is doing: TLS, HTTP head, SSH;
* one descriptor is kept in reserve: out of descriptors (EMFILE/ENFILE), it is
  freed to accept the next connection and reset it at once, so the backlog keeps
  moving and the log says so (once per interval, with counts) instead of nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cc.log import get_logger
from cc.protocol.admission import Admission, Refusal
from cc.protocol.authguard import FailureLog, source_of
from cc.protocol.hosts import join_host_port

__all__ = ["Doorway", "Front"]

log = get_logger("server")

#: accept() calls per readiness event: fair to the rest of the loop under a flood.
ACCEPTS_PER_WAKEUP = 64
#: Seconds between the summary lines of refused or shed connections.
SUMMARY_INTERVAL = 10.0
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_LINGER_RESET = struct.pack("ii", 1, 0)


def reset(sock: socket.socket) -> None:
    """Close with RST: a refused connection leaves no TIME_WAIT and no doubt."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    sock.close()


@dataclass(eq=False)
class Doorway:
    """One accepted connection, until it logs in (``release``) or goes away."""

    front: Front
    peer: str
    source: str
    sock: socket.socket | None = None
    transport: asyncio.Transport | None = None
    accepted: float = field(default_factory=time.monotonic)
    timer: asyncio.TimerHandle | None = None
    #: the TLS handshake / transport set-up, while it runs
    starting: asyncio.Task[None] | None = None
    released: bool = False

    def release(self) -> None:
        """It authenticated, was answered as plain HTTP, or closed: it no longer counts."""
        if self.released:
            return
        self.released = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.front.admission.release(self)

    def drop(self, why: str) -> None:
        """Close it now (evicted, or out of grace time)."""
        self.release()
        log.debug("Closing unauthenticated connection from %s: %s", self.peer, why)
        if self.transport is not None:
            self.transport.abort()
        elif self.starting is not None:
            self.starting.cancel()
        elif self.sock is not None:
            reset(self.sock)
            self.sock = None


class Front:
    """Listening sockets and the accept loop; ``protocol_factory(doorway)`` serves each one."""

    def __init__(
        self,
        protocol_factory: Callable[[Doorway], asyncio.Protocol],
        *,
        admission: Admission,
        grace_time: float,
        tls: ssl.SSLContext | None = None,
        summary_interval: float = SUMMARY_INTERVAL,
    ) -> None:
        self.protocol_factory = protocol_factory
        self.admission = admission
        self.grace_time = grace_time
        self.tls = tls
        self.sockets: list[socket.socket] = []
        self._reserve: int | None = None
        self._handshakes: set[asyncio.Task[None]] = set()
        self._closed = asyncio.get_running_loop().create_future()
        self.summary_interval = summary_interval
        self._refusals = FailureLog("refused connections", interval=summary_interval)
        self._shed = 0
        self._shed_since = 0.0
        self._shed_logged = False
        #: connections reset for want of descriptors, since start (for stats)
        self.shed_total = 0

    # -- listening --------------------------------------------------------------
    def listen(self, host: str, port: int, *, reuse_port: bool, backlog: int = 1024) -> None:
        """Bind every address ``host`` names (all of them for ``""``); OSError if one fails."""
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        seen: set[tuple[Any, ...]] = set()
        try:
            for family, kind, proto, _name, address in infos:
                if (family, address) in seen:
                    continue
                seen.add((family, address))
                sock = socket.socket(family, kind, proto)
                self.sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(backlog)
                sock.setblocking(False)
                if port == 0:  # the other families take the same port
                    port = sock.getsockname()[1]
                    infos = [(*i[:4], (i[4][0], port, *i[4][2:])) for i in infos]
        except OSError:
            self._close_sockets()
            raise
        self._reserve = os.open(os.devnull, os.O_RDONLY)
        loop = asyncio.get_running_loop()
        for sock in self.sockets:
            loop.add_reader(sock.fileno(), self._accept, sock)

    @property
    def ports(self) -> list[int]:
        return [int(s.getsockname()[1]) for s in self.sockets]

    def close(self) -> None:
        """Stop accepting; connections already accepted carry on."""
        self._close_sockets()
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None
        if not self._closed.done():
            self._closed.set_result(None)

    async def serve_forever(self) -> None:
        await asyncio.shield(self._closed)

    def _close_sockets(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self.sockets:
            if sock.fileno() >= 0:
                loop.remove_reader(sock.fileno())
            sock.close()

    # -- accepting ----------------------------------------------------------------
    def _accept(self, listener: socket.socket) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_DESCRIPTORS:
                    self._shed_one(listener)
                elif exc.errno not in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    log.warning("accept() failed: %s", exc)
                    return
                continue
            self._admit(sock, address)

    def _admit(self, sock: socket.socket, address: Any) -> None:
        peer = join_host_port(str(address[0]), int(address[1])) if address else "?"
        source = source_of(peer)
        doorway = Doorway(self, peer, source, sock)
        decision = self.admission.admit(doorway, source)
        if decision.refused is not None:
            reset(sock)
            why = f"Refused connection from {peer}: {decision.refused.value}"
            line = self._refusals.record(source, time.monotonic(), why)
            if line is not None:
                log.warning("%s", line)
            return
        for old in decision.evict:
            assert isinstance(old, Doorway)
            old.drop(Refusal.TOTAL.value + "; the oldest is closed for a newcomer")
        loop = asyncio.get_running_loop()
        doorway.timer = loop.call_later(self.grace_time, self._grace_over, doorway)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = loop.create_task(self._start(doorway, sock))
        doorway.starting = task
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _start(self, doorway: Doorway, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: self.protocol_factory(doorway),
                sock,
                ssl=self.tls,
                ssl_handshake_timeout=self.grace_time if self.tls else None,
            )
        except asyncio.CancelledError:  # dropped during the TLS handshake
            reset(sock)
            raise
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            log.debug("Handshake with %s failed: %s", doorway.peer, exc)
            doorway.release()
            sock.close()
            return
        finally:
            doorway.starting = None
            doorway.sock = None
        doorway.transport = transport

    def _grace_over(self, doorway: Doorway) -> None:
        doorway.timer = None
        log.info(
            "Closing connection from %s: no login within %.0f s (--login-grace-time)",
            doorway.peer,
            self.grace_time,
        )
        doorway.drop("login grace time over")

    def _shed_one(self, listener: socket.socket) -> None:
        """Out of descriptors: free the reserve, accept one connection, reset it, re-reserve."""
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None
        try:
            sock, _address = listener.accept()
        except OSError:
            pass
        else:
            reset(sock)
            self._count_shed()
        try:
            self._reserve = os.open(os.devnull, os.O_RDONLY)
        except OSError:
            self._reserve = None

    def _count_shed(self) -> None:
        now = time.monotonic()
        self.shed_total += 1
        self._shed += 1
        if not self._shed_logged:
            self._shed_logged = True
            self._shed_since = now
            log.error(
                "Out of file descriptors: resetting new connections (raise the limit, "
                "ulimit -n; it is %d now)",
                _descriptor_limit(),
            )
            self._shed = 0

    def flush_logs(self) -> None:
        """Summaries that are due (called from the gateway's housekeeping timer)."""
        now = time.monotonic()
        for line in self._refusals.flush(now):
            log.warning("%s", line)
        if self._shed_logged and now - self._shed_since >= self.summary_interval:
            if self._shed:
                log.error(
                    "Out of file descriptors: reset %d connections in the last %.0f s",
                    self._shed,
                    now - self._shed_since,
                )
                self._shed = 0
                self._shed_since = now
            else:
                self._shed_logged = False


def _descriptor_limit() -> int:
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
