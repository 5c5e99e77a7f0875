"""A password guesser, as an attacker would write one: real sockets, real SSH.

It connects from a chosen loopback source address (127.0.0.2, ...) so one test
can be the attacker and the legitimate connector at once, upgrades to chisel-v3
and lets asyncssh offer password after password on the same connection for as
long as the gateway keeps asking.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import asyncssh

from cc import __version__
from cc.protocol.handshake import ClientEvent, ClientHandshake, UpgradeFailed, UpgradeRefused
from cc.protocol.ws import WebSocketStream
from cc.ssh.connection import ChiselClientConnection, _common_options
from cc.transport.exchange import Exchange
from cc.transport.tls import TLSWatch
from cc.transport.websocket import WebSocketTransport

__all__ = ["GuessResult", "Refused", "guess_passwords", "open_websocket_from"]


class Refused(Exception):
    """The upgrade was answered with ``status`` (401, 429, ...) instead of 101."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status


async def open_websocket_from(
    source: str,
    port: int,
    *,
    headers: list[tuple[str, str]] | None = None,
    sock: socket.socket | None = None,
) -> WebSocketTransport:
    """Upgrade a connection from ``source`` to the gateway on 127.0.0.1:``port``.

    ``sock``: a connection already made (from ``source``), e.g. one a chosen
    ``--workers`` process accepted.
    """
    loop = asyncio.get_running_loop()
    url = urlsplit(f"http://127.0.0.1:{port}/")
    handshake = ClientHandshake(url, headers=headers or [], version=__version__)
    exchange: Exchange[ClientEvent] = Exchange(
        handshake.request_bytes(),
        handshake.receive_data,
        TLSWatch(f"127.0.0.1:{port}"),
        "websocket handshake",
    )
    if sock is not None:
        transport, _ = await loop.create_connection(lambda: exchange, sock=sock)
    else:
        transport, _ = await loop.create_connection(
            lambda: exchange, "127.0.0.1", port, local_addr=(source, 0)
        )
    try:
        async with asyncio.timeout(10):
            event = await exchange.done
    except BaseException:
        transport.abort()
        raise
    if isinstance(event, UpgradeRefused):
        transport.abort()
        raise Refused(event.status, event.reason)
    if isinstance(event, UpgradeFailed):
        transport.abort()
        raise ConnectionError(event.message)
    wst = WebSocketTransport(transport, WebSocketStream(is_client=True, max_frame_size=1 << 22))
    transport.set_protocol(wst)
    if event.leftover:
        wst.data_received(event.leftover)
    return wst


@dataclass
class GuessResult:
    """What one connection's guessing achieved."""

    tries: int = 0
    accepted: str | None = None
    #: why the connection ended (the gateway's disconnect reason, when it gave one)
    ended: str = ""
    #: seconds from each password sent to the gateway's answer
    answer_times: list[float] = field(default_factory=list)


class _Guesser(asyncssh.SSHClient):
    def __init__(self, passwords: Iterator[str], result: GuessResult) -> None:
        self.passwords = passwords
        self.result = result
        self.sent_at = 0.0

    def host_key_received(self, key_data: bytes) -> None:
        """An attacker trusts any host key."""

    def password_auth_requested(self) -> str | None:
        if self.sent_at:
            self.result.answer_times.append(time.monotonic() - self.sent_at)
        password = next(self.passwords, None)
        if password is not None:
            self.result.tries += 1
            self.sent_at = time.monotonic()
        return password


async def guess_passwords(
    source: str,
    port: int,
    username: str,
    passwords: Iterator[str],
    *,
    timeout: float = 30.0,
    sock: socket.socket | None = None,
) -> GuessResult:
    """Try ``passwords`` on one connection until the gateway accepts one or hangs up.

    ``sock``: the connection to use (see :func:`open_websocket_from`).
    """
    result = GuessResult()
    wst = await open_websocket_from(source, port, sock=sock)
    loop = asyncio.get_running_loop()
    options: Any = asyncssh.SSHClientConnectionOptions(
        client_factory=lambda: _Guesser(passwords, result),
        username=username,
        preferred_auth="password",
        known_hosts=None,
        client_keys=None,
        agent_path=None,
        host="chisel",
        port=22,
        **_common_options(None),
    )
    options.waiter = loop.create_future()
    conn = ChiselClientConnection(loop, options, wait="auth")
    wst.attach(conn)
    try:
        async with asyncio.timeout(timeout):
            await options.waiter
    except (asyncssh.Error, OSError, ConnectionError) as exc:
        result.ended = str(getattr(exc, "reason", "") or exc)
    else:
        result.accepted = "yes"
    finally:
        conn.abort()
    return result
