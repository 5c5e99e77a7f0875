"""A SOCKS5 server on a ``chisel`` channel's byte stream (channel target ``socks``).

chisel runs armon/go-socks5 on the channel: no authentication inside the tunnel
(the SSH login already authenticated the peer), CONNECT only (BIND and UDP
ASSOCIATE get "command not supported"), and the reply codes below.  The one
deliberate difference: every CONNECT is checked by ``authorize("host:port")``
before anything is dialled.  On the gateway that is the session's ACL (user and
token), so ``--socks5`` does not let a user past the ACL as chisel's does; on the
connector (``R:socks``) there is no ACL, the user chose to expose a SOCKS proxy.

After a successful CONNECT the channel is handed to a :class:`cc.tunnel.pipe.Pipe`,
so flow control and half-close are those of every TCP tunnel.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any

import asyncssh

from cc.stats import RemoteStats
from cc.tunnel.pipe import Pipe

__all__ = ["Reply", "SocksSession", "socks_target"]

VERSION = 5
METHOD_NO_AUTH = 0
METHOD_NONE_ACCEPTABLE = 0xFF
CMD_CONNECT = 1
ATYP_IPV4, ATYP_DOMAIN, ATYP_IPV6 = 1, 3, 4

#: Time allowed for the greeting and the request.
HANDSHAKE_TIMEOUT = 30.0
#: Time allowed to connect to the requested target (go-socks5 has no bound).
CONNECT_TIMEOUT = 30.0
#: A greeting is at most 257 bytes and a request at most 262; more is not SOCKS.
MAX_HANDSHAKE = 1024


class Reply(enum.IntEnum):
    """RFC 1928 reply codes."""

    SUCCEEDED = 0
    GENERAL_FAILURE = 1
    NOT_ALLOWED = 2
    NETWORK_UNREACHABLE = 3
    HOST_UNREACHABLE = 4
    CONNECTION_REFUSED = 5
    TTL_EXPIRED = 6
    COMMAND_NOT_SUPPORTED = 7
    ADDRESS_TYPE_NOT_SUPPORTED = 8


def socks_target(host: str, port: int) -> str:
    """``host:port`` as ACLs and remotes write it (IPv6 in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reply(code: Reply, bound: Any = None) -> bytes:
    """The server's reply; ``bound`` is the outgoing socket's address on success."""
    if bound is not None:
        ip = ipaddress.ip_address(bound[0].split("%", 1)[0])
        atyp = ATYP_IPV4 if ip.version == 4 else ATYP_IPV6
        return bytes((VERSION, code, 0, atyp)) + ip.packed + struct.pack("!H", bound[1])
    return bytes((VERSION, code, 0, ATYP_IPV4)) + bytes(6)


def _failure_code(exc: BaseException) -> Reply:
    """Map a dial error to a reply code, as go-socks5 does (plus a few more)."""
    if isinstance(exc, socket.gaierror | TimeoutError):
        return Reply.HOST_UNREACHABLE
    if isinstance(exc, ConnectionRefusedError):
        return Reply.CONNECTION_REFUSED
    if isinstance(exc, OSError):
        if exc.errno == errno.ENETUNREACH:
            return Reply.NETWORK_UNREACHABLE
        if exc.errno == errno.EHOSTUNREACH:
            return Reply.HOST_UNREACHABLE
    return Reply.GENERAL_FAILURE


class _Incomplete(Exception):
    """More bytes are needed."""


class _Refuse(Exception):
    """End the handshake, after sending ``reply`` when it is not empty."""

    def __init__(self, reason: str, reply: bytes = b"") -> None:
        super().__init__(reason)
        self.reply = reply


class SocksSession(asyncssh.SSHTCPSession[bytes]):
    """The session of one ``socks`` channel: handshake, authorize, dial, then pipe.

    ``authorize(target)`` gets ``host:port`` (IPv6 hosts in brackets, names as the
    client sent them) and returns whether the CONNECT may proceed; None allows all.
    """

    def __init__(
        self,
        authorize: Callable[[str], bool] | None,
        stats: RemoteStats | None,
        log: logging.Logger,
        label: str = "socks",
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.authorize = authorize
        self.stats = stats
        self.log = log
        self.label = label
        self.connect_timeout = connect_timeout
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self.pipe: Pipe | None = None
        self._buf = bytearray()
        self._greeted = False
        self._dialing: asyncio.Task[None] | None = None
        self._early: list[bytes] = []
        self._eof = False
        self._lost = False
        self._timer: asyncio.TimerHandle | None = None

    # -- channel callbacks ------------------------------------------------------
    def connection_made(self, chan: Any) -> None:
        self.chan = chan
        self._timer = asyncio.get_running_loop().call_later(HANDSHAKE_TIMEOUT, self._too_slow)

    def data_received(self, data: bytes, datatype: Any = None) -> None:
        if self.pipe is not None:
            self.pipe.channel_side.data_received(data)
            return
        if self._dialing is not None:
            self._early.append(data)  # sent before our reply; goes out after the dial
            return
        self._buf += data
        if len(self._buf) > MAX_HANDSHAKE:
            self._refuse(_Refuse("handshake too long"))
            return
        try:
            self._advance()
        except _Incomplete:
            return
        except _Refuse as exc:
            self._refuse(exc)

    def eof_received(self) -> bool:
        if self.pipe is not None:
            return self.pipe.channel_side.eof_received()
        self._eof = True
        if self._dialing is None:  # the client left during the handshake
            self._close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._cancel_timer()
        if self.pipe is not None:
            self.pipe.channel_side.connection_lost(exc)
        elif self._dialing is not None:
            self._dialing.cancel()

    def pause_writing(self) -> None:
        if self.pipe is not None:
            self.pipe.channel_side.pause_writing()

    def resume_writing(self) -> None:
        if self.pipe is not None:
            self.pipe.channel_side.resume_writing()

    # -- the handshake ------------------------------------------------------------
    def _take(self, pos: int, count: int) -> bytes:
        if len(self._buf) < pos + count:
            raise _Incomplete
        return bytes(self._buf[pos : pos + count])

    def _advance(self) -> None:
        if not self._greeted:
            version, count = self._take(0, 2)
            if version != VERSION:
                raise _Refuse(f"not SOCKS5 (version byte {version})")
            methods = self._take(2, count)
            del self._buf[: 2 + count]
            if METHOD_NO_AUTH not in methods:
                raise _Refuse(
                    "client offers no 'no authentication' method",
                    bytes((VERSION, METHOD_NONE_ACCEPTABLE)),
                )
            self._write(bytes((VERSION, METHOD_NO_AUTH)))
            self._greeted = True
        version, command, _, atyp = self._take(0, 4)
        if version != VERSION:
            raise _Refuse(f"not SOCKS5 (version byte {version})")
        if atyp == ATYP_IPV4:
            host, end = str(ipaddress.IPv4Address(self._take(4, 4))), 8
        elif atyp == ATYP_IPV6:
            host, end = str(ipaddress.IPv6Address(self._take(4, 16))), 20
        elif atyp == ATYP_DOMAIN:
            (length,) = self._take(4, 1)
            name = self._take(5, length)
            end = 5 + length
            try:
                host = name.decode("ascii")
            except UnicodeDecodeError:
                raise _Refuse("non-ASCII host name", _reply(Reply.HOST_UNREACHABLE)) from None
            if not host or any(c in host for c in "\x00/\\@ ") or not host.isprintable():
                raise _Refuse(f"bad host name {host[:60]!r}", _reply(Reply.HOST_UNREACHABLE))
        else:
            raise _Refuse(
                f"address type {atyp} not supported", _reply(Reply.ADDRESS_TYPE_NOT_SUPPORTED)
            )
        (port,) = struct.unpack("!H", self._take(end, 2))
        rest = bytes(self._buf[end + 2 :])
        self._buf.clear()
        if command != CMD_CONNECT:
            raise _Refuse(f"command {command} not supported", _reply(Reply.COMMAND_NOT_SUPPORTED))
        target = socks_target(host, port)
        if self.authorize is not None and not self.authorize(target):
            self.log.warning("%s: CONNECT %s denied by the ACL", self.label, target)
            raise _Refuse("", _reply(Reply.NOT_ALLOWED))
        if rest:
            self._early.append(rest)
        self._cancel_timer()
        assert self.chan is not None
        self.chan.pause_reading()  # the request's followers wait in the SSH window
        self._dialing = asyncio.get_running_loop().create_task(self._connect(host, port, target))

    def _write(self, data: bytes) -> None:
        if self.chan is not None and not self.chan.is_closing():
            self.chan.write(data)

    def _refuse(self, exc: _Refuse) -> None:
        if str(exc):
            self.log.info("%s: %s", self.label, exc)
        if exc.reply:
            self._write(exc.reply)
        self._close()

    def _too_slow(self) -> None:
        self._timer = None
        if self.pipe is None and self._dialing is None:
            self.log.info("%s: no SOCKS request within %.0fs", self.label, HANDSHAKE_TIMEOUT)
            self._close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _close(self) -> None:
        self._cancel_timer()
        if self.chan is not None:
            self.chan.close()  # flushes a pending reply first

    # -- dial and hand over -----------------------------------------------------------
    async def _connect(self, host: str, port: int, target: str) -> None:
        pipe = Pipe(self.stats, f"{self.label} {target}")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                transport, _ = await loop.create_connection(lambda: pipe.socket_side, host, port)
        except asyncio.CancelledError:  # the channel went away while we dialled
            pipe.close()
            raise
        except (OSError, TimeoutError) as exc:
            if self.stats is not None:
                self.stats.failed += 1
            pipe.close(exc)
            code = _failure_code(exc)
            reason = getattr(exc, "strerror", None) or exc or type(exc).__name__
            self.log.info("%s: CONNECT %s failed: %s (reply %s)", self.label, target, reason, code)
            self._write(_reply(code))
            self._close()
            return
        chan = self.chan
        if self._lost or chan is None:
            pipe.close()
            return
        self._write(_reply(Reply.SUCCEEDED, transport.get_extra_info("sockname")))
        self.log.debug("%s: CONNECT %s", self.label, target)
        self.pipe = pipe
        side = pipe.channel_side
        side.connection_made(chan)
        side.session_started()  # sends what the target said before our reply was out
        for data in self._early:
            side.data_received(data)
        self._early.clear()
        if self._eof:
            side.eof_received()
        if not chan.is_closing():
            chan.resume_reading()
