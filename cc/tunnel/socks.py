"""A SOCKS5 server on a ``chisel`` channel's byte stream (channel target ``socks``).

The handshake itself (greeting, request, reply bytes) is ``cc.protocol.socks5``;
this module does its I/O: the handshake timer, the ``authorize`` call, the dial
and the hand-off.  The one deliberate difference from chisel (armon/go-socks5):
every CONNECT is checked by ``authorize("host:port")`` before anything is
dialled.  On the gateway that is the session's ACL (user and token), so
``--socks5`` does not let a user past the ACL as chisel's does; on the connector
(``R:socks``) there is no ACL, the user chose to expose a SOCKS proxy.

After a successful CONNECT the channel is handed to a :class:`cc.tunnel.pipe.Pipe`,
so flow control and half-close are those of every TCP tunnel.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

import asyncssh

from cc.protocol.socks5 import (
    ConnectRequested,
    MethodsOffered,
    Refusal,
    Reply,
    SocksServer,
    encode_reply,
    socks_target,
)
from cc.stats import RemoteStats
from cc.tunnel.pipe import Pipe

__all__ = ["Reply", "SocksSession", "socks_target"]

#: Time allowed for the greeting and the request.
HANDSHAKE_TIMEOUT = 30.0
#: Time allowed to connect to the requested target (go-socks5 has no bound).
CONNECT_TIMEOUT = 30.0


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


class SocksSession(asyncssh.SSHTCPSession[bytes]):
    """The session of one ``socks`` channel: handshake, authorize, dial, then pipe.

    ``authorize(target)`` gets ``host:port`` (IPv6 hosts in brackets and RFC 5952
    form, names as the client sent them; numeric shorthands never get this far) and
    returns whether the CONNECT may proceed; None allows all.
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
        self._parser = SocksServer()
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
        for event in self._parser.receive_data(data):
            if isinstance(event, MethodsOffered):
                self._write(event.reply)
            elif isinstance(event, Refusal):
                if event.denied:  # a policy refusal is a warning, as the ACL's is
                    self.log.warning("%s: %s", self.label, event.reason)
                    self._refuse("", event.reply)
                else:
                    self._refuse(event.reason, event.reply)
            else:
                self._connect_requested(event)

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
    def _connect_requested(self, request: ConnectRequested) -> None:
        target = request.target
        if self.authorize is not None and not self.authorize(target):
            self.log.warning("%s: CONNECT %s denied by the ACL", self.label, target)
            self._refuse("", encode_reply(Reply.NOT_ALLOWED))
            return
        if request.early:
            self._early.append(request.early)
        self._cancel_timer()
        assert self.chan is not None
        self.chan.pause_reading()  # the request's followers wait in the SSH window
        self._dialing = asyncio.get_running_loop().create_task(
            self._connect(request.host, request.port, target)
        )

    def _write(self, data: bytes) -> None:
        if self.chan is not None and not self.chan.is_closing():
            self.chan.write(data)

    def _refuse(self, reason: str, reply: bytes) -> None:
        if reason:
            self.log.info("%s: %s", self.label, reason)
        if reply:
            self._write(reply)
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
        """End the handshake on purpose: with EOF, so the client gets a FIN, not a reset."""
        self._cancel_timer()
        if self.chan is not None:
            self.chan.write_eof()  # after a pending reply
            self.chan.close()

    # -- dial and hand over -----------------------------------------------------------
    async def _connect(self, host: str, port: int, target: str) -> None:
        pipe = Pipe(self.stats, f"{self.label} {target}")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                transport, _ = await loop.create_connection(lambda: pipe.socket_side, host, port)
        except asyncio.CancelledError:  # the channel went away while we dialled
            pipe.reset(ConnectionResetError("SOCKS channel lost"))
            raise
        except (OSError, TimeoutError) as exc:
            if self.stats is not None:
                self.stats.count_failed()
            pipe.reset(exc)
            code = _failure_code(exc)
            reason = getattr(exc, "strerror", None) or exc or type(exc).__name__
            self.log.info("%s: CONNECT %s failed: %s (reply %s)", self.label, target, reason, code)
            self._write(encode_reply(code))
            self._close()
            return
        chan = self.chan
        if self._lost or chan is None:  # the client is gone: the target is reset
            pipe.reset(ConnectionResetError("SOCKS channel lost"))
            return
        sockname = transport.get_extra_info("sockname")
        bound = (sockname[0], sockname[1]) if sockname else None
        self._write(encode_reply(Reply.SUCCEEDED, bound))
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
