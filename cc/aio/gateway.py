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
import time
from dataclasses import dataclass, field
from typing import Any, cast

import asyncssh

from cc import CHISEL_PROTOCOL, __version__
from cc._asyncssh_compat import (
    OPEN_ADMINISTRATIVELY_PROHIBITED,
    OPEN_CONNECT_FAILED,
    ChannelOpenError,
    new_server_connection,
    open_chisel_channel,
    send_global_request,
)
from cc.aio.backend import proxy_to_backend
from cc.aio.pipe import Pipe
from cc.aio.socks import SocksSession
from cc.aio.udp import UDPListener, UDPSettings, open_udp_exit
from cc.aio.wstransport import WebSocketTransport
from cc.log import get_logger
from cc.protocol import http
from cc.protocol.acl import Permissions, TokenTable, UserTable
from cc.protocol.config import decode_config
from cc.protocol.errors import ConfigError
from cc.protocol.remote import Proto, Remote
from cc.protocol.ws import WebSocketStream
from cc.stats import SessionStats

__all__ = ["Gateway", "GatewayConfig"]

log = get_logger("server")

#: chisel waits this long for the config request after authentication.
CONFIG_TIMEOUT = 10.0
#: How long a session whose config was rejected stays open to read the reason.
REJECTED_LINGER = 2.0
#: Bound on WebSocket frames from an unauthenticated peer (chisel has none).
MAX_FRAME = 1 << 20
#: Binds tried for a reverse port whose stale holder was just evicted.
_REBIND_ATTEMPTS = 10


@dataclass
class GatewayConfig:
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
    version: str = __version__
    #: --udp-max-senders, --udp-idle-timeout, --udp-max-size
    udp: UDPSettings = field(default_factory=UDPSettings)


@dataclass
class _PeerContext:
    """What the HTTP phase learnt about a peer, handed to its SSH session."""

    peer: str
    token_permissions: Permissions | None
    request: http.Request
    started: float = field(default_factory=time.monotonic)


def split_target(target: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ValueError otherwise."""
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"bad target {target!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    value = int(port)
    if not 0 < value < 65536:
        raise ValueError(f"bad port in {target!r}")
    return host, value


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
        return [s.getsockname()[1] for s in self._server.sockets]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._conn_factory = new_server_connection(self._host_key, self._new_session)
        self._server = await loop.create_server(
            lambda: _HTTPConnection(self),
            self.config.host or None,
            self.config.port,
            ssl=self.config.tls,
            reuse_address=True,
            reuse_port=self.config.reuse_port or None,
            backlog=1024,
        )
        self.stats.state = "listening"
        scheme = "https" if self.config.tls else "http"
        log.info("Fingerprint %s", self.fingerprint)
        log.info("Listening on %s://%s:%d", scheme, self.config.host or "0.0.0.0", self.ports[0])

    async def close(self, drain_timeout: float = 0.0) -> None:
        """Stop accepting, let open connections finish (bounded), then end every session."""
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions):
            session.close_listeners()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        while self.open_connections() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            session.close()
        if self._server is not None:
            await self._server.wait_closed()
        self.stats.state = "stopped"

    def open_connections(self) -> int:
        return sum(r.open for r in self.stats.remotes.values())

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
        key = request.headers.get("Sec-WebSocket-Key") or ""
        if request.headers.get("Sec-WebSocket-Version") != "13" or len(key) != 24:
            conn.respond(400, b"bad websocket handshake")
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
        transport.write(
            http.build_response(
                101,
                [
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Accept", http.accept_key(key)),
                    ("Sec-WebSocket-Protocol", CHISEL_PROTOCOL),
                ],
            )
        )
        wst = WebSocketTransport(
            transport, WebSocketStream(is_client=False, max_frame_size=MAX_FRAME)
        )
        wst.set_extra_info(cc_context=_PeerContext(conn.peer, token_permissions, request))
        transport.set_protocol(wst)
        wst.attach(self._conn_factory())
        if rest:
            wst.data_received(rest)
        transport.resume_reading()


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
        self._timer = asyncio.get_running_loop().call_later(30.0, transport.abort)

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


class GatewaySession(asyncssh.SSHServer):
    """One authenticated chisel session: its config, reverse listeners and channels."""

    def __init__(self, gateway: Gateway, session_id: int) -> None:
        self.gateway = gateway
        self.id = session_id
        self.log = get_logger(f"server.session#{session_id}")
        self.conn: Any = None
        self.context: _PeerContext | None = None
        self.user = ""
        self.permissions: Permissions | None = None
        self.remotes: tuple[Remote, ...] = ()
        self.listeners: list[asyncio.AbstractServer] = []
        self._configured = False
        self._config_timer: asyncio.TimerHandle | None = None
        self._keepalive: asyncio.Task[None] | None = None

    # -- asyncssh callbacks ---------------------------------------------------
    def connection_made(self, conn: Any) -> None:
        self.conn = conn
        self.context = conn.get_extra_info("cc_context")
        self.gateway.sessions.add(self)
        self.gateway.stats.sessions = len(self.gateway.sessions)
        self.log.debug("Handshaking with %s...", self.context.peer if self.context else "?")

    def connection_lost(self, exc: Exception | None) -> None:
        self.close_listeners()
        if self._keepalive is not None:
            self._keepalive.cancel()
        if self._config_timer is not None:
            self._config_timer.cancel()
        self.gateway.sessions.discard(self)
        self.gateway.stats.sessions = len(self.gateway.sessions)
        if self._configured:
            self.log.info("Closed connection (%s)", exc or "normal close")

    def begin_auth(self, username: str) -> bool:
        users = self.gateway.config.users
        if users is None or users.is_empty:
            self.permissions = Permissions.everything()
            self._auth_done(username)
            return False
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        users = self.gateway.config.users
        if users is None or users.is_empty:  # chisel: no users means any password will do
            self.permissions = Permissions.everything()
            self._auth_done(username)
            return True
        permissions = users.authenticate(username, password)
        if permissions is None:
            peer = self.context.peer if self.context else "?"
            self.log.warning("Login failed for user: %s (from %s)", username, peer)
            return False
        self.permissions = permissions
        self._auth_done(username)
        return True

    def _auth_done(self, username: str) -> None:
        self.user = username
        loop = asyncio.get_running_loop()
        self._config_timer = loop.call_later(CONFIG_TIMEOUT, self._config_timeout)

    def _config_timeout(self) -> None:
        if not self._configured:
            self.log.warning("No config request within %.0fs; closing", CONFIG_TIMEOUT)
            self.close()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    # -- authorization --------------------------------------------------------
    def allowed(self, subject: str) -> bool:
        """Both the SSH user's ACL and the token's ACL (if any) must allow ``subject``."""
        if self.permissions is None or not self.permissions.allows(subject):
            return False
        token = self.context.token_permissions if self.context else None
        return token is None or token.allows(subject)

    # -- the config request -----------------------------------------------------
    async def config_requested(self, payload: bytes) -> str | None:
        """Answer the config request; a rejected session is closed soon after.

        The pause lets the client read the reason; without the close, a client that
        ignores rejections could hold sessions open for ever.
        """
        error = await self._configure(payload)
        if error is not None and not self._configured:
            asyncio.get_running_loop().call_later(REJECTED_LINGER, self.close)
        return error

    async def _configure(self, payload: bytes) -> str | None:
        """Validate the remotes and open reverse listeners; an error text is sent back."""
        if self._configured:
            return "server: config already received"
        if self._config_timer is not None:
            self._config_timer.cancel()
        try:
            config = decode_config(payload)
        except ConfigError as exc:
            self.log.warning("Invalid config: %s", exc)
            return "server: invalid config"
        if config.version != self.gateway.config.version:
            self.log.debug(
                "Client version (%s) differs from server version (%s)",
                config.version,
                self.gateway.config.version,
            )
        for remote in config.remotes:
            if remote.reverse and not self.gateway.config.reverse:
                self.log.warning("Denied reverse remote %s: --reverse not enabled", remote)
                return "server: Reverse port forwarding not enabled on server"
            if remote.socks and not remote.reverse and not self.gateway.config.socks5:
                return "server: SOCKS5 is not enabled on the server"
            subject = remote.acl_subject()
            if not self.allowed(subject):
                self.log.warning("Access to '%s' denied for user '%s'", subject, self.user)
                return f"server: access to '{subject}' denied"
        error = await self._open_listeners([r for r in config.remotes if r.reverse])
        if error is not None:
            return error
        self.remotes = config.remotes
        self._configured = True
        if self.gateway.config.keepalive > 0:
            self._keepalive = asyncio.get_running_loop().create_task(self._ping_loop())
        peer = self.context.peer if self.context else "?"
        self.log.info(
            "Connected: %s user=%r version=%s remotes=[%s]",
            peer,
            self.user,
            config.version,
            ", ".join(str(r) for r in config.remotes),
        )
        return None

    async def _ping_loop(self) -> None:
        """Detect a vanished connector: chisel keeps its reverse ports bound forever.

        Go clients answer an unknown global request with a failure, which is still
        an answer; silence past the deadline means the peer is gone, so the session
        is aborted and its reverse ports are released for the reconnecting client.
        """
        interval = self.gateway.config.keepalive
        deadline = self.gateway.config.keepalive_timeout
        while True:
            await asyncio.sleep(interval)
            try:
                async with asyncio.timeout(deadline):
                    await send_global_request(self.conn, "ping", b"")
            except TimeoutError:
                self.log.warning(
                    "No keepalive answer within %.0fs; closing the session and its ports", deadline
                )
                self.close_listeners()
                self.conn.abort()
                return
            except (OSError, asyncssh.Error):
                return

    async def _open_listeners(self, remotes: list[Remote]) -> str | None:
        for remote in remotes:
            stats = self.gateway.stats.remote(str(remote))
            evicted = False
            for attempt in range(_REBIND_ATTEMPTS):
                try:
                    server = await self._listen(remote, stats)
                    break
                except OSError as exc:
                    error = exc
                if not evicted:
                    evicted = await self._evict_stale_holder(remote)
                if not evicted or attempt == _REBIND_ATTEMPTS - 1:
                    self.close_listeners()
                    self.log.warning(
                        "Cannot listen on %s: %s", remote.local(), error.strerror or error
                    )
                    return f"server: Server cannot listen on {remote.local()}"
                await asyncio.sleep(0.05)  # uvloop closes a listening socket a tick later
            self.listeners.append(server)
            self.log.debug("tun: %s: Listening", remote)
        return None

    async def _listen(self, remote: Remote, stats: Any) -> asyncio.AbstractServer:
        """One reverse remote's listener: a TCP server or a UDP socket; OSError if taken."""
        if remote.local_proto is Proto.UDP:
            udp = UDPListener(
                remote, self._open_udp_channel, self.gateway.config.udp, stats, self.log
            )
            await udp.start()
            return udp
        return await asyncio.get_running_loop().create_server(
            lambda remote=remote, stats=stats: self._accept_reverse(remote, stats),
            remote.local_host or None,
            remote.local_port,
            reuse_address=True,
            backlog=1024,  # a burst of clients must not wait for SYN retries
        )

    async def _open_udp_channel(self, target: bytes, factory: Any) -> object:
        return await open_chisel_channel(self.conn, target, factory)

    def holds_port(self, port: int) -> bool:
        return any(
            sock.getsockname()[1] == port
            for server in self.listeners
            for sock in cast(asyncio.Server, server).sockets
        )

    async def answers_ping(self, timeout: float) -> bool:
        """One keepalive round trip now; False if the peer stays silent or is gone."""
        try:
            async with asyncio.timeout(timeout):
                await send_global_request(self.conn, "ping", b"")
        except (TimeoutError, OSError, asyncssh.Error):
            return False
        return not self.conn.is_closed()

    async def _evict_stale_holder(self, remote: Remote) -> bool:
        """If another of our sessions holds ``remote``'s port and is dead, close it.

        A connector whose old path died silently (NAT state dropped, Wi-Fi roam)
        reconnects before our keepalive deadline, and its stale session still holds
        the reverse port.  Go clients give up on a config error, so instead of
        refusing at once, ask the holder now: if it does not answer within the
        keepalive deadline it is gone, and the port goes to the new session.  A
        holder that answers keeps its port (a genuine conflict).
        """
        for other in list(self.gateway.sessions):
            if other is self or other.conn is None or not other.holds_port(remote.local_port):
                continue
            deadline = self.gateway.config.keepalive_timeout or CONFIG_TIMEOUT
            if await other.answers_ping(deadline):
                return False
            other.log.warning(
                "No keepalive answer within %.0fs while %s wants %s; closing the stale session",
                deadline,
                self.context.peer if self.context else "?",
                remote.local(),
            )
            other.close_listeners()
            other.conn.abort()
            return True
        return False

    def close_listeners(self) -> None:
        for server in self.listeners:
            server.close()
        self.listeners.clear()

    def _accept_reverse(self, remote: Remote, stats: Any) -> asyncio.Protocol:
        pipe = Pipe(stats, str(remote))
        asyncio.get_running_loop().create_task(self._open_reverse_channel(remote, pipe))
        return pipe.socket_side

    async def _open_reverse_channel(self, remote: Remote, pipe: Pipe) -> None:
        try:
            await open_chisel_channel(
                self.conn, remote.target().encode(), lambda: pipe.channel_side
            )
        except (ChannelOpenError, OSError, asyncssh.Error) as exc:
            if pipe.stats is not None:
                pipe.stats.failed += 1
            self.log.info("tun: %s: channel refused: %s", remote, getattr(exc, "reason", exc))
            pipe.close(exc)

    # -- channels the client opens (forward remotes) -----------------------------
    def chisel_channel_requested(self, target_bytes: bytes) -> Any:
        target = target_bytes.decode("utf-8", "replace")
        if not self._configured:
            raise ChannelOpenError(OPEN_ADMINISTRATIVELY_PROHIBITED, "config first")
        if target == "socks":
            return self._socks_session()
        host_port = target.removesuffix("/udp")
        try:
            host, port = split_target(host_port)
        except ValueError:
            raise ChannelOpenError(OPEN_CONNECT_FAILED, "bad target") from None
        if not self.allowed(host_port):  # UDP as TCP: chisel's ACL subjects have no /udp
            self.log.warning("Denied channel to %s for user '%s'", target, self.user)
            raise ChannelOpenError(OPEN_ADMINISTRATIVELY_PROHIBITED, "access denied")
        if host_port != target:
            stats = self.gateway.stats.remote(target)
            return open_udp_exit(host, port, self.gateway.config.udp, stats, self.log, target)
        return self._dial(target, host, port)

    def _socks_session(self) -> SocksSession:
        """A SOCKS5 server on the channel; each CONNECT is checked against our ACL.

        chisel lets SOCKS requests past its ACL; here the real ``host:port`` must be
        allowed for the user (and the token) like any forward remote's target.
        """
        if not self.gateway.config.socks5:
            self.log.warning("Denied SOCKS channel for user '%s': --socks5 is off", self.user)
            raise ChannelOpenError(OPEN_ADMINISTRATIVELY_PROHIBITED, "SOCKS5 is not enabled")
        stats = self.gateway.stats.remote("socks")
        log = get_logger(f"server.session#{self.id}.socks")
        return SocksSession(self.allowed, stats, log, f"user '{self.user}'")

    async def _dial(self, target: str, host: str, port: int) -> Any:
        stats = self.gateway.stats.remote(target)
        pipe = Pipe(stats, target)
        try:
            await asyncio.get_running_loop().create_connection(lambda: pipe.socket_side, host, port)
        except OSError as exc:
            stats.failed += 1
            pipe.close(exc)
            self.log.info("tun: %s: dial failed: %s", target, exc.strerror or exc)
            raise ChannelOpenError(OPEN_CONNECT_FAILED, str(exc.strerror or exc)) from None
        return pipe.channel_side
