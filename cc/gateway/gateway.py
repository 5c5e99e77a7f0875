"""The gateway (``cloud-connector server``): chisel-server compatible, stricter where it matters.

One HTTP listener.  A request that asks for a ``chisel-v3`` WebSocket is checked
(token header, when ``--tokens`` is set) *before* any WebSocket or SSH state
exists, then upgraded; the SSH session authenticates the user, receives the
``config`` request, and the gateway opens the session's reverse listeners.  Any
other request is routed by path (cc.gateway.routes: ``/health``, ``/version``,
``/ready``, ``/metrics``, and ``/status`` with ``--admin``), or goes to ``--backend``,
or gets 404; WebRoute requests go to the named services
(cc.gateway.webroute).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import asyncssh

from cc import CHISEL_PROTOCOL, __version__
from cc import fastpath as _fastpath
from cc.gateway import metrics, probes, status
from cc.gateway.backend import proxy_to_backend
from cc.gateway.front import SUMMARY_INTERVAL, Doorway, Front
from cc.gateway.ports import LocalPortRegistry, PortRegistry
from cc.gateway.routes import Reply, Request, Route, Router
from cc.gateway.session import GatewaySession, PeerContext
from cc.gateway.webroute import NamedServices, WebRouteSettings
from cc.log import event, get_logger
from cc.metrics import Figures
from cc.protocol import http
from cc.protocol.acl import Permissions, TokenTable, UserTable, token_digest
from cc.protocol.admission import Admission, AdmissionPolicy
from cc.protocol.authguard import AuthGuard, FailureLog, FailureTable, GuardPolicy, Penalty
from cc.protocol.authorized_keys import ClientKeyTable
from cc.protocol.basicauth import AdminCredentials
from cc.protocol.handshake import accept_upgrade
from cc.protocol.hosts import bare_host, join_host_port
from cc.protocol.status import MAX_ROWS
from cc.protocol.webroute import is_webroute_request
from cc.protocol.workers import GROUP_HEADER
from cc.protocol.ws import WebSocketStream
from cc.runtime.figures import FiguresLink, Fleet
from cc.ssh import (
    fast_path_counts,
    new_server_connection,
)
from cc.stats import SessionStats
from cc.transport.websocket import WebSocketTransport
from cc.tunnel.endpoint import drain, open_connections
from cc.tunnel.udp.settings import UDPSettings

__all__ = ["Gateway", "GatewayConfig"]

log = get_logger("server")
#: failed logins and bans have a logger of their own, to route or filter them
auth_log = get_logger("server.auth")

#: Largest WebSocket frame taken from a client (chisel has no bound).  Anyone may
#: connect and send frames before authenticating, so the bound keeps what one
#: connection can make us hold small; peers send one frame per SSH packet (at most
#: 256 KiB plus framing), which leaves 4x headroom.
MAX_FRAME_FROM_CLIENT = 1 << 20
#: The 401's body, by what was wrong: the connector shows it to its operator.
TOKEN_REFUSALS = {
    "no token": b'no token: this gateway needs a "Token: <token>" header\n',
    "wrong token": b'wrong token: the "Token" header is not one of this gateway\'s tokens\n',
}
#: Seconds between the gateway's housekeeping rounds (log summaries that are due).
HOUSEKEEPING_INTERVAL = 5.0
#: Remotes and forward targets the gateway's figures keep by name (each session's too);
#: the oldest unused ones, then the rest, are counted under ``other``.  /metrics shows
#: 64 of them (cc.metrics.MAX_REMOTE_LABELS).
MAX_REMOTE_STATS = 256


@dataclass
class GatewayConfig:
    #: the interface to listen on; an IPv6 address with or without brackets
    host: str = "0.0.0.0"
    port: int = 8080
    host_key_pem: bytes = b""
    users: UserTable | None = None
    tokens: TokenTable | None = None
    #: --authorized-keys: connectors that log in with a key pair
    authorized_keys: ClientKeyTable | None = None
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
    #: --login-grace-time: from accept to a successful SSH login, whatever happens between
    login_grace_time: float = 30.0
    #: --max-unauthenticated / --max-unauthenticated-per-source
    admission: AdmissionPolicy = field(default_factory=AdmissionPolicy)
    #: remotes and forward targets counted by name (cc.stats.SessionStats.max_remotes)
    max_remote_stats: int = MAX_REMOTE_STATS
    #: --max-auth-tries: wrong passwords one SSH connection may try before it is closed
    max_auth_tries: int = 3
    #: penalties for sources that keep failing (passwords and tokens alike)
    guard: GuardPolicy = field(default_factory=GuardPolicy)
    #: where failed logins are counted: the table all workers share (None: this process)
    failures: FailureTable | None = None
    #: failed logins and refusals are logged once, then summarised this often per source
    log_summary_interval: float = 60.0
    #: --admin: turns on /status and /status.json and protects /metrics
    admin: AdminCredentials | None = None
    #: a worker's line to its control process, for figures of all workers (cc.runtime.figures)
    figures_link: FiguresLink | None = None
    #: this worker's 0-based index (None: not a worker)
    worker: int | None = None
    #: --remoted-*: named services, wire-compatible with Remoted API Server (None: off)
    webroute: WebRouteSettings | None = None
    #: --ssh-ciphers: the only ciphers a client may pick (None: today's default)
    ssh_ciphers: tuple[str, ...] | None = None


class Gateway:
    """Owns the HTTP listener and every live session."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.stats = SessionStats(state="starting", max_remotes=config.max_remote_stats)
        self.sessions: set[GatewaySession] = set()
        self._front: Front | None = None
        self._housekeeping: asyncio.TimerHandle | None = None
        self._conn_factory: Any = None
        self.admission = Admission(config.admission)
        self.auth_guard = AuthGuard(config.guard, config.failures)
        self.failed_logins = FailureLog("failed logins", interval=config.log_summary_interval)
        #: more log summaries the housekeeping flushes (the HTTP API gateway's refusals)
        self.log_flushers: list[Callable[[], None]] = []
        self._session_ids = 0
        #: named services (WebRoute), when keys are configured
        self.named_services = (
            NamedServices(self, config.webroute) if config.webroute is not None else None
        )
        host_key = asyncssh.import_private_key(config.host_key_pem)
        self._host_key = host_key
        #: SIGTERM: /ready answers 503 and new sessions are turned away while connections finish
        self.draining = False
        self.router = Router()
        probes.register(self.router)
        metrics.register(self.router)
        if config.admin is not None:
            status.register(self.router)
        self.fleet = Fleet(self.figures, config.figures_link)

    @property
    def fingerprint(self) -> str:
        from cc.protocol.keys import fingerprint_sha256

        return fingerprint_sha256(self._host_key.public_data)

    @property
    def ports(self) -> list[int]:
        assert self._front is not None
        return self._front.ports

    async def start(self) -> None:
        self._conn_factory = new_server_connection(
            self._host_key, self._new_session, ciphers=self.config.ssh_ciphers
        )
        host = bare_host(self.config.host)
        front = Front(
            lambda doorway: _HTTPConnection(self, doorway),
            admission=self.admission,
            grace_time=self.config.login_grace_time,
            tls=self.config.tls,
            summary_interval=min(SUMMARY_INTERVAL, self.config.log_summary_interval),
        )
        front.listen(host, self.config.port, reuse_port=self.config.reuse_port)
        self._front = front
        self._schedule_housekeeping()
        self.stats.state = "listening"
        self.fleet.start()
        scheme = "https" if self.config.tls else "http"
        log.info("Fingerprint %s", self.fingerprint)
        log.info("Listening on %s://%s", scheme, join_host_port(host or "0.0.0.0", self.ports[0]))

    @property
    def ready(self) -> bool:
        """This process should get traffic: listening and not draining."""
        return self.stats.state == "listening" and not self.draining

    async def close(self, drain_timeout: float = 0.0) -> None:
        """Turn new sessions away, let open connections finish (bounded), end every session.

        While connections drain, the HTTP port still answers: ``/ready`` says 503 (so
        a load balancer stops sending connectors here) and upgrades get 503 (which
        connectors retry, elsewhere); then it closes.
        """
        self.draining = True
        self.stats.state = "draining"
        self.fleet.nudge()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        for session in list(self.sessions):
            session.close_listeners()
        if self.named_services is not None:
            self.named_services.close()
        await drain(self.stats, drain_timeout)
        if self._front is not None:
            self._front.close()
        for session in list(self.sessions):
            session.close()
        await self.fleet.stop()
        self.stats.state = "stopped"

    def _schedule_housekeeping(self) -> None:
        loop = asyncio.get_running_loop()
        interval = min(HOUSEKEEPING_INTERVAL, self.config.log_summary_interval / 2)
        self._housekeeping = loop.call_later(interval, self._housekeep)

    def _housekeep(self) -> None:
        """Rate-limited log summaries that are due."""
        for line in self.failed_logins.flush(time.monotonic()):
            auth_log.warning("%s", line)
        if self._front is not None:
            self._front.flush_logs()
        if self.named_services is not None:
            self.named_services.flush_logs()
        for flush in self.log_flushers:
            flush()
        self._schedule_housekeeping()

    # -- failed logins -----------------------------------------------------------
    def banned_for(self, source: str) -> float:
        """Seconds left of ``source``'s ban for repeated failed logins (0.0: none)."""
        return self.auth_guard.banned_for(source, time.monotonic())

    def login_failed(
        self,
        source: str,
        line: str,
        fields: dict[str, object] | None = None,
        *,
        reason: str = "password",
    ) -> Penalty:
        """Count a failed password, token or admin login; log it (rate-limited); its cost.

        ``fields``: the failure's log fields (``cc.log.event``) for the JSON format;
        ``reason`` labels the failure in the metrics: password, key, token, banned, admin.
        """
        self.stats.count_auth_failure(reason)
        now = time.monotonic()
        penalty = self.auth_guard.failed(source, now)
        first = self.failed_logins.record(source, now, line)
        if first is not None:
            auth_log.warning("%s", first, extra=fields)
        if penalty.banned_for is not None:
            auth_log.warning(
                "Banned %s for %.0f s after %d failed logins",
                source,
                penalty.banned_for,
                penalty.failures,
                extra=event("banned", peer=source, duration_s=penalty.banned_for),
            )
        return penalty

    def open_connections(self) -> int:
        return open_connections(self.stats)

    # -- figures: /metrics, /ready, /status ----------------------------------------
    def figures(self) -> Figures:
        """This process's figures, now (a worker's go to its control process too)."""
        counts = fast_path_counts()
        self.stats.sessions = len(self.sessions)
        return Figures(
            role="gateway",
            stats=self.stats,
            ready=self.ready,
            fast_path=_fastpath.IMPLEMENTATION,
            sealed=counts.sealed,
            opened=counts.opened,
            workers=[] if self.config.worker is None else [self.config.worker],
            rows=self.status_rows() if self.config.admin is not None else [],
        )

    def status_rows(self) -> list[dict[str, object]]:
        """One row per session that is set up (cc.protocol.status), at most MAX_ROWS."""
        rows = []
        for session in sorted(self.sessions, key=lambda s: s.id):
            row = session.status_row()
            if row is not None:
                if self.config.worker is not None:
                    row.worker = self.config.worker + 1
                rows.append(row.as_dict())
            if len(rows) >= MAX_ROWS:
                break
        return rows

    async def serve_forever(self) -> None:
        assert self._front is not None
        await self._front.serve_forever()

    def apply_credentials(self, users: UserTable | None, tokens: TokenTable | None) -> None:
        """Reloaded users or tokens: new logins use them, and live sessions are re-checked.

        chisel only checks at login, so a revoked user kept its tunnels; here each
        session is held to what a login with its credentials would get now.
        """
        self.config.users = users
        self.config.tokens = tokens
        for session in list(self.sessions):
            session.recheck_credentials(users, tokens)

    def apply_authorized_keys(self, keys: ClientKeyTable | None) -> None:
        """A reloaded --authorized-keys file: a session whose key was removed is closed."""
        self.config.authorized_keys = keys
        for session in list(self.sessions):
            session.recheck_credentials(self.config.users, self.config.tokens)

    def _new_session(self) -> GatewaySession:
        self._session_ids += 1
        return GatewaySession(self, self._session_ids)

    # -- HTTP routing ---------------------------------------------------------
    def handle_request(self, conn: _HTTPConnection, request: http.Request, rest: bytes) -> None:
        peer = conn.peer
        if self.named_services is not None and is_webroute_request(request):
            self.named_services.handle(conn, request, rest)
            return
        if request.is_websocket_upgrade():
            protocol = request.headers.get("Sec-WebSocket-Protocol") or ""
            if protocol == CHISEL_PROTOCOL:
                if self.draining:
                    conn.respond(503, b"gateway is shutting down\n", [("Retry-After", "1")])
                    return
                banned = self.banned_for(conn.doorway.source)
                if banned > 0:
                    self.stats.count_auth_failure("banned")
                    conn.respond(
                        429,
                        b"too many failed logins from your address\n",
                        [("Retry-After", f"{math.ceil(banned)}")],
                    )
                    return
                self._upgrade(conn, request, rest)
                return
            log.info(
                "ignored client connection using protocol '%s', expected '%s' (from %s)",
                protocol,
                CHISEL_PROTOCOL,
                peer,
            )
        route = self.router.find(request.path, backend=bool(self.config.backend))
        if route is not None:
            # Counts as unauthenticated until answered (admin logins may be held back
            # by a guesser's penalty): the front's caps and grace time still apply.
            conn.serve(route, Request(self, request, peer, conn.doorway.source))
            return
        conn.doorway.release()  # plain HTTP: served (or proxied) like any web server
        if self.config.backend:
            conn.hand_over(proxy_to_backend(conn.transport, self.config.backend, conn.head + rest))
        else:
            conn.respond(404, b"Not found")

    def _upgrade(self, conn: _HTTPConnection, request: http.Request, rest: bytes) -> None:
        answer = accept_upgrade(request, version=self.config.version)
        if answer.status != 101:
            log.debug("refused upgrade from %s: %s", conn.peer, answer.reason)
            conn.transport.write(answer.data)
            conn.transport.close()
            return
        token_permissions: Permissions | None = None
        token_name: str | None = None
        digest: bytes | None = None
        if self.config.tokens is not None:
            token = request.headers.get("token")
            digest = token_digest(token) if token else None
            entry = self.config.tokens.entry_by_digest(digest) if digest else None
            if entry is not None:
                token_name = f"token #{entry[0]}"
                token_permissions = entry[1]
            else:
                what = "wrong token" if token else "no token"
                penalty = self.login_failed(
                    conn.doorway.source,
                    f"Refused connection from {conn.peer}: {what}",
                    event("login_failed", peer=conn.peer, error=what),
                    reason="token",
                )
                conn.respond_later(penalty.delay, 401, TOKEN_REFUSALS[what])
                return
        transport = conn.transport
        transport.write(answer.data)
        wst = WebSocketTransport(
            transport, WebSocketStream(is_client=False, max_frame_size=MAX_FRAME_FROM_CLIENT)
        )
        wst.set_extra_info(
            cc_context=PeerContext(
                conn.peer,
                token_permissions,
                request,
                group=_group_secret(request),
                source=conn.doorway.source,
                authenticated=conn.doorway.release,
                token_digest=digest,
                token_name=token_name,
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
    """Reads one bounded request head, then hands the socket to whoever serves it.

    The head must arrive within the login grace time, which the front enforces.
    """

    def __init__(self, gateway: Gateway, doorway: Doorway) -> None:
        self.gateway = gateway
        self.doorway = doorway
        self.buffer = bytearray()
        self.head = b""
        self.peer = doorway.peer
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self._task: asyncio.Task[None] | None = None
        self._answer: asyncio.TimerHandle | None = None
        #: one of our handlers is answering: nothing more is read meanwhile
        self._serving = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.doorway.transport = self.transport

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
        self.transport.pause_reading()
        self.gateway.handle_request(self, request, rest)
        if (
            not self.transport.is_closing()
            and self.transport.get_protocol() is self
            and self._answer is None
            and not self._serving
        ):
            self.transport.resume_reading()

    def respond(
        self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None
    ) -> None:
        self.transport.write(
            http.build_response(
                status,
                [
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("Connection", "close"),
                    *(headers or []),
                ],
                body,
            )
        )
        self.transport.close()

    def respond_later(self, delay: float, status: int, body: bytes) -> None:
        """Answer after ``delay`` (a guesser's penalty); reading stays paused meanwhile."""
        if delay <= 0:
            self.respond(status, body)
            return
        self._answer = asyncio.get_running_loop().call_later(delay, self.respond, status, body)

    def hand_over(self, coro: Any) -> None:
        self._task = asyncio.get_running_loop().create_task(coro)

    def serve(self, route: Route, request: Request) -> None:
        """Answer with one of the gateway's own handlers (cc.gateway.routes)."""
        if request.request.method not in route.methods:
            self.respond(
                405, b"Method not allowed\n", [("Allow", ", ".join(sorted(route.methods)))]
            )
            return
        self._serving = True
        self.hand_over(self._serve(route, request))

    async def _serve(self, route: Route, request: Request) -> None:
        try:
            reply = await route.handler(request)
        except Exception:
            log.exception("%s %s failed", request.request.method, request.request.path)
            reply = Reply(500, b"internal error\n")
        if request.request.method == "HEAD":
            reply = dataclasses.replace(reply, head_only=True)
        self.send(reply)

    def send(self, reply: Reply) -> None:
        if self.transport.is_closing():
            return
        data = http.build_response(
            reply.status,
            [
                ("Content-Type", reply.content_type),
                ("Cache-Control", "no-store"),
                ("Connection", "close"),
                *reply.headers,
            ],
            reply.body,
        )
        if reply.head_only:
            data = data[: data.index(b"\r\n\r\n") + 4]
        self.transport.write(data)
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._answer is not None:
            self._answer.cancel()
        if self.transport.get_protocol() is self:
            self.doorway.release()
