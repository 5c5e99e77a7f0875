"""The gateway (``cloud-connector server``): chisel-server compatible, stricter where it matters.

One HTTP listener.  A request that asks for a ``chisel-v3`` WebSocket is checked
(token header, when ``--tokens`` is set) *before* any WebSocket or SSH state
exists, then upgraded; the SSH session authenticates the user, receives the
``config`` request, and the gateway opens the session's reverse listeners.  Any
other request gets ``/health``, ``/version``, 404, or goes to ``--backend``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any, cast

import asyncssh

from cc import CHISEL_PROTOCOL, __version__
from cc.gateway.backend import proxy_to_backend
from cc.gateway.ports import LocalPortRegistry, PortRegistry
from cc.gateway.session import GatewaySession, PeerContext
from cc.log import get_logger
from cc.protocol import http
from cc.protocol.acl import TokenTable, UserTable
from cc.protocol.handshake import accept_upgrade
from cc.protocol.hosts import bare_host, join_host_port
from cc.protocol.workers import GROUP_HEADER
from cc.protocol.ws import WebSocketStream
from cc.ssh import (
    new_server_connection,
)
from cc.stats import SessionStats
from cc.transport.websocket import WebSocketTransport
from cc.tunnel.endpoint import drain, open_connections
from cc.tunnel.udp.settings import UDPSettings

__all__ = ["Gateway", "GatewayConfig"]

log = get_logger("server")

#: Largest WebSocket frame taken from a client (chisel has no bound).  Anyone may
#: connect and send frames before authenticating, so the bound keeps what one
#: connection can make us hold small; peers send one frame per SSH packet (at most
#: 256 KiB plus framing), which leaves 4x headroom.
MAX_FRAME_FROM_CLIENT = 1 << 20


@dataclass
class GatewayConfig:
    #: the interface to listen on; an IPv6 address with or without brackets
    host: str = "0.0.0.0"
    port: int = 8080
    host_key_pem: bytes = b""
    users: UserTable | None = None
    tokens: TokenTable | None = None
    reverse: bool = False
    socks5: bool = False
    backend: str | None = None
    keepalive: float = 25.0
    #: a session whose peer leaves a ping unanswered this long is closed
    keepalive_timeout: float = 10.0
    tls: ssl.SSLContext | None = None
    reuse_port: bool = False
    #: who holds which reverse port; a worker's asks its control process
    port_registry: PortRegistry = field(default_factory=LocalPortRegistry)
    version: str = __version__
    #: --udp-max-senders, --udp-idle-timeout, --udp-max-size
    udp: UDPSettings = field(default_factory=UDPSettings)


class Gateway:
    """Owns the HTTP listener and every live session."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.stats = SessionStats(state="starting")
        self.sessions: set[GatewaySession] = set()
        self._server: asyncio.AbstractServer | None = None
        self._conn_factory: Any = None
        self._session_ids = 0
        host_key = asyncssh.import_private_key(config.host_key_pem)
        self._host_key = host_key

    @property
    def fingerprint(self) -> str:
        from cc.protocol.keys import fingerprint_sha256

        return fingerprint_sha256(self._host_key.public_data)

    @property
    def ports(self) -> list[int]:
        assert self._server is not None
        server: Any = self._server  # asyncio.Server or uvloop's Server: both have .sockets
        return [s.getsockname()[1] for s in server.sockets]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._conn_factory = new_server_connection(self._host_key, self._new_session)
        host = bare_host(self.config.host)
        self._server = await loop.create_server(
            lambda: _HTTPConnection(self),
            host or None,
            self.config.port,
            ssl=self.config.tls,
            reuse_address=True,
            reuse_port=self.config.reuse_port or None,
            backlog=1024,
        )
        self.stats.state = "listening"
        scheme = "https" if self.config.tls else "http"
        log.info("Fingerprint %s", self.fingerprint)
        log.info("Listening on %s://%s", scheme, join_host_port(host or "0.0.0.0", self.ports[0]))

    async def close(self, drain_timeout: float = 0.0) -> None:
        """Stop accepting, let open connections finish (bounded), then end every session."""
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions):
            session.close_listeners()
        await drain(self.stats, drain_timeout)
        for session in list(self.sessions):
            session.close()
        if self._server is not None:
            await self._server.wait_closed()
        self.stats.state = "stopped"

    def open_connections(self) -> int:
        return open_connections(self.stats)

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    def _new_session(self) -> GatewaySession:
        self._session_ids += 1
        return GatewaySession(self, self._session_ids)

    # -- HTTP routing ---------------------------------------------------------
    def handle_request(self, conn: _HTTPConnection, request: http.Request, rest: bytes) -> None:
        peer = conn.peer
        if request.is_websocket_upgrade():
            protocol = request.headers.get("Sec-WebSocket-Protocol") or ""
            if protocol == CHISEL_PROTOCOL:
                self._upgrade(conn, request, rest)
                return
            log.info(
                "ignored client connection using protocol '%s', expected '%s' (from %s)",
                protocol,
                CHISEL_PROTOCOL,
                peer,
            )
        if self.config.backend:
            conn.hand_over(proxy_to_backend(conn.transport, self.config.backend, conn.head + rest))
            return
        if request.path == "/health":
            conn.respond(200, b"OK\n")
        elif request.path == "/version":
            conn.respond(200, self.config.version.encode())
        else:
            conn.respond(404, b"Not found")

    def _upgrade(self, conn: _HTTPConnection, request: http.Request, rest: bytes) -> None:
        answer = accept_upgrade(request, version=self.config.version)
        if answer.status != 101:
            log.debug("refused upgrade from %s: %s", conn.peer, answer.reason)
            conn.transport.write(answer.data)
            conn.transport.close()
            return
        token_permissions = None
        if self.config.tokens is not None:
            token = request.headers.get("token")
            token_permissions = self.config.tokens.lookup(token) if token else None
            if token_permissions is None:
                log.warning(
                    "Refused connection from %s: %s token", conn.peer, "wrong" if token else "no"
                )
                conn.respond(401, b"unauthorized\n")
                return
        transport = conn.transport
        transport.write(answer.data)
        wst = WebSocketTransport(
            transport, WebSocketStream(is_client=False, max_frame_size=MAX_FRAME_FROM_CLIENT)
        )
        wst.set_extra_info(
            cc_context=PeerContext(
                conn.peer, token_permissions, request, group=_group_secret(request)
            ),
            cc_peer_is_ours=answer.peer_is_ours,
        )
        transport.set_protocol(wst)
        wst.attach(self._conn_factory())
        if rest:
            wst.data_received(rest)
        transport.resume_reading()


def _group_secret(request: http.Request) -> str | None:
    """A connector's group secret: long enough not to be guessed, short enough to keep."""
    value = request.headers.get(GROUP_HEADER)
    if value is None or not 32 <= len(value) <= 128:
        return None
    return value


class _HTTPConnection(asyncio.Protocol):
    """Reads one bounded request head, then hands the socket to whoever serves it."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.buffer = bytearray()
        self.head = b""
        self.peer = "?"
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Slow-loris guard: the head must arrive within 30 s.
        self._timer = asyncio.get_running_loop().call_later(30.0, self.transport.abort)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            end = http.find_head_end(self.buffer)
            if end < 0:
                return
            self.head = bytes(self.buffer[:end])
            request = http.parse_request(self.head)
        except http.HTTPError as exc:
            log.debug("bad request from %s: %s", self.peer, exc)
            self.respond(exc.status, str(exc).encode() + b"\n")
            return
        rest = bytes(self.buffer[end:])
        self.buffer.clear()
        if self._timer is not None:
            self._timer.cancel()
        self.transport.pause_reading()
        self.gateway.handle_request(self, request, rest)
        if not self.transport.is_closing() and self.transport.get_protocol() is self:
            self.transport.resume_reading()

    def respond(self, status: int, body: bytes) -> None:
        self.transport.write(
            http.build_response(
                status,
                [("Content-Type", "text/plain; charset=utf-8"), ("Connection", "close")],
                body,
            )
        )
        self.transport.close()

    def hand_over(self, coro: Any) -> None:
        self._task = asyncio.get_running_loop().create_task(coro)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
