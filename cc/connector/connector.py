"""The connector (``cloud-connector client`` and ``outsystemscc``): keeps one chisel
session up, serves its remotes, and reconnects when the session dies.

Which failures retry and which stop is deliberate, and decided sans-I/O in
:mod:`cc.protocol.verdict`: network trouble retries with backoff; a refused
token, password, host key or config stops with a non-zero exit.  A certificate
that fails verification stops too (it does not heal).  The backoff restarts at
100 ms only after a session that lasted ``backoff_reset_after`` (chisel: 5 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import asyncssh

from cc import fastpath as _fastpath
from cc.connector.config import ConnectorConfig
from cc.log import event, get_logger, redact
from cc.metrics import Figures
from cc.protocol.backoff import Backoff
from cc.protocol.config import Config, HTTPOffer, encode_config
from cc.protocol.durations import format_duration
from cc.protocol.keys import (
    FingerprintCheck,
    fingerprint_matches,
    fingerprint_md5,
    fingerprint_sha256,
)
from cc.protocol.remote import Proto, Remote
from cc.protocol.verdict import (
    Action,
    Verdict,
    auth_failure_verdict,
    config_reply_verdict,
    upgrade_verdict,
)
from cc.protocol.workers import GROUP_HEADER
from cc.ssh import (
    OPEN_ADMINISTRATIVELY_PROHIBITED,
    OPEN_CONNECT_FAILED,
    ChannelOpenError,
    cipher_in_use,
    fast_path_counts,
    new_client_connection,
    send_global_request,
)
from cc.stats import SessionStats
from cc.transport.dial import (
    DialError,
    HandshakeError,
    TLSVerifyError,
    open_websocket,
    websocket_url,
)
from cc.transport.errors import RetryLater
from cc.transport.preflight import follow_redirect
from cc.transport.websocket import WebSocketTransport
from cc.tunnel.endpoint import ChannelTarget, TunnelEndpoint
from cc.tunnel.keepalive import KeepaliveDriver
from cc.tunnel.stdio import serve_stdio

__all__ = ["Connector", "ConnectorConfig", "FatalError"]

log = get_logger("client")


class FatalError(Exception):
    """A failure that retrying cannot fix; the CLI prints it and exits non-zero."""


class Connector:
    """Run with ``await connector.run()``; stop with ``connector.stop()``."""

    def __init__(self, config: ConnectorConfig, rng: Callable[[], float] | None = None) -> None:
        self.config = config
        self.stats = SessionStats(state="disconnected")
        self.conn: Any = None
        self.connected = asyncio.Event()
        self._stopping = False
        self._drainer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._backoff = Backoff(max_delay=config.max_retry_interval, rand=rng)
        self._listeners: list[asyncio.AbstractServer] = []
        self.endpoint = TunnelEndpoint(lambda: self.conn, self.stats, log, config.udp)
        self._reverse_targets = {r.target(): r for r in config.remotes if r.reverse}
        #: str(remote) by target, worked out once: every channel is counted under it
        self._reverse_labels = {t: str(r) for t, r in self._reverse_targets.items()}
        self._http_targets = frozenset(config.http_targets)
        self._stdio: asyncio.Task[None] | None = None
        #: why run() is to raise FatalError once stopped (a stdio stream was cut)
        self._failure: str | None = None
        #: the current session's keepalive (None before the first session)
        self.keepalive: KeepaliveDriver | None = None
        #: sessions connected so far; the current one's number in log fields
        self._sessions = 0

    # -- control --------------------------------------------------------------
    def stop(self) -> None:
        """SIGINT/SIGTERM: stop accepting, let open connections finish (bounded), close."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        for server in self._listeners:
            server.close()
        self._drainer = asyncio.get_running_loop().create_task(self._drain_then_close())

    def fail(self, reason: str) -> None:
        """Stop as ``stop()`` does, then make ``run()`` raise FatalError(reason)."""
        if self._failure is None:
            self._failure = reason
        self.stop()

    def open_connections(self) -> int:
        return self.endpoint.open_connections()

    def figures(self) -> Figures:
        """What --metrics shows of this process: ready while a session is connected."""
        counts = fast_path_counts()
        cfg = self.config
        return Figures(
            role="connector",
            stats=self.stats,
            ready=self.stats.state == "connected",
            fast_path=_fastpath.IMPLEMENTATION,
            sealed=counts.sealed,
            opened=counts.opened,
            workers=[cfg.worker_index] if cfg.worker_count > 1 else [],
        )

    async def _drain_then_close(self) -> None:
        if self.open_connections():
            log.info("Draining %d open connection(s)...", self.open_connections())
        await self.endpoint.drain(self.config.drain_timeout)
        if self.conn is not None:
            self.conn.close()

    def skip_wait(self) -> None:
        """SIGHUP: reconnect now instead of at the end of the backoff wait."""
        self._wake.set()

    def _with_query(self, url: Any) -> Any:
        extra = self.config.extra_query
        if not extra:
            return url
        return url._replace(query=f"{url.query}&{extra}" if url.query else extra)

    async def _target_url(self) -> Any:
        """The URL to upgrade: the configured one, or where outsystemscc's pre-flight points.

        ``Connecting to`` is logged before the pre-flight, so a gateway that cannot be
        reached still shows which URL was tried.
        """
        cfg = self.config
        log.info("Connecting to %s", redact(websocket_url(self._with_query(cfg.server))))
        url = cfg.server
        if cfg.preflight:
            url = await follow_redirect(
                url,
                user_agent=cfg.user_agent,
                proxy=cfg.proxy,
                tls=cfg.tls,
                timeout=cfg.connect_timeout,
            )
            if url != cfg.server:
                log.info(
                    "Connecting to %s (redirected)", redact(websocket_url(self._with_query(url)))
                )
        return self._with_query(url)

    async def run(self) -> None:
        """Connect, serve, reconnect; returns on stop(); raises FatalError."""
        await self._open_forward_listeners()
        try:
            while not self._stopping:
                not_before: float | None = None
                try:
                    connected_for = await self._connect_and_serve()
                    if connected_for >= self.config.backoff_reset_after:
                        self._backoff.reset()
                except FatalError:
                    raise
                except TLSVerifyError as exc:  # a bad certificate does not heal: stop
                    log.info(
                        "Connection error: %s", exc, extra=event("connection_error", error=str(exc))
                    )
                    raise FatalError(str(exc)) from None
                except (DialError, HandshakeError, OSError, asyncssh.Error) as exc:
                    if self._stopping:
                        break
                    error = _describe(exc)
                    log.info(
                        "Connection error: %s", error, extra=event("connection_error", error=error)
                    )
                    # a banned address is told when to come back: sooner is refused anyway
                    not_before = exc.retry_after if isinstance(exc, RetryLater) else None
                if self._stopping:
                    break
                await self._wait_before_retry(not_before)
        finally:
            self.stats.state = "stopped"
            for server in self._listeners:
                server.close()
            if self._stdio is not None:
                self._stdio.cancel()
                await asyncio.gather(self._stdio, return_exceptions=True)
            if self._drainer is not None:
                await asyncio.gather(self._drainer, return_exceptions=True)
        if self._failure is not None:
            raise FatalError(self._failure)

    async def _wait_before_retry(self, not_before: float | None = None) -> None:
        """The backoff wait (at least ``not_before`` s, capped by --max-retry-interval)."""
        attempt = self._backoff.attempts
        limit = self.config.max_retry_count
        if limit >= 0 and attempt >= limit:
            reason = f"gave up after {attempt} retries (--max-retry-count {limit})"
            log.info("Give up", extra=event("give_up", error=reason))
            raise FatalError(reason)
        delay = self._backoff.next_delay()
        if not_before is not None:
            delay = max(delay, min(not_before, self.config.max_retry_interval))
        self.stats.reconnects += 1
        log.info(
            "Retrying in %s...",
            format_duration(delay),
            extra=event("reconnect", delay_s=round(delay, 3)),
        )
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    # -- one session ------------------------------------------------------------
    async def _connect_and_serve(self) -> float:
        """One session from dial to close; returns how many seconds it was connected.

        A verdict that retrying cannot change raises FatalError; anything that may
        heal raises (DialError, OSError, asyncssh.Error) for run() to log and retry.
        """
        self.stats.state = "connecting"
        wst = await self._open_websocket(await self._target_url())
        conn = await self._ssh_handshake(wst)
        self.conn = conn
        try:
            started = time.perf_counter()
            await self._send_config(conn, self._session_remotes(wst))
            latency = time.perf_counter() - started
            self._sessions += 1
            cipher, fast = cipher_in_use(conn)
            log.info(
                "Connected (Latency %s)",
                format_duration(latency),
                extra=event(
                    "session_connected",
                    session=self._sessions,
                    peer=self._peer(),
                    cipher=cipher,
                    user=self.config.auth[0] or None,
                    duration_s=round(latency, 6),
                ),
            )
            log.debug("SSH cipher %s (%s)", cipher, "fast path" if fast else "no fast path")
            return await self._serve(conn)
        finally:
            self.conn = None
            self.connected.clear()
            self.stats.sessions = 0
            self.stats.state = "disconnected"
            conn.close()

    async def _open_websocket(self, url: Any) -> WebSocketTransport:
        """Dial (through the proxy, TLS) and upgrade; a refused token is fatal."""
        cfg = self.config
        group = [(GROUP_HEADER, cfg.group)] if cfg.group and cfg.announce else []
        try:
            return await open_websocket(
                url,
                headers=cfg.headers + group,
                hostname=cfg.hostname,
                user_agent=cfg.user_agent,
                proxy=cfg.proxy,
                tls=cfg.tls,
                timeout=cfg.connect_timeout,
                announce=cfg.announce,
            )
        except HandshakeError as exc:
            verdict = upgrade_verdict(exc.status, str(exc), exc.detail, exc.retry_after)
            if verdict.action is Action.RETRY and exc.retry_after is not None:
                raise RetryLater(verdict.reason, exc.retry_after) from None
            raise _verdict_error(verdict) from None

    async def _ssh_handshake(self, wst: WebSocketTransport) -> Any:
        """SSH over the WebSocket, up to an accepted password (bounded by connect_timeout)."""
        cfg = self.config
        owner = ConnectorSession(self)
        try:
            async with asyncio.timeout(cfg.connect_timeout):
                return await new_client_connection(
                    lambda: owner,
                    wst.attach,
                    username=cfg.auth[0],
                    password=cfg.auth[1],
                    identity=cfg.identity,
                    ciphers=cfg.ssh_ciphers,
                )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise _verdict_error(auth_failure_verdict(str(exc.reason))) from None
        except asyncssh.PermissionDenied:
            verdict = auth_failure_verdict("authentication failed (check --auth/--identity)")
            raise _verdict_error(verdict) from None
        except TimeoutError:
            wst.abort()
            raise DialError("SSH handshake timed out") from None

    def _session_remotes(self, wst: WebSocketTransport) -> tuple[Remote, ...]:
        """The remotes this session asks for: all of them, or this worker's share."""
        if self.config.worker_count > 1:
            return self._worker_remotes(bool(wst.get_extra_info("cc_peer_is_ours")))
        return tuple(self.config.remotes)

    async def _send_config(self, conn: Any, remotes: tuple[Remote, ...]) -> None:
        """The config request; returns if the gateway accepted it (see cc.protocol.verdict)."""
        cfg = self.config
        http = HTTPOffer(tuple(cfg.identifiers), tuple(cfg.http_targets))
        config = Config(version=cfg.config_version, remotes=remotes, http=http)
        try:
            # Bounded: a gateway that went silent after auth must not hang us forever.
            async with asyncio.timeout(cfg.connect_timeout):
                ok, reply = await send_global_request(conn, "config", encode_config(config))
        except TimeoutError:
            raise DialError(
                f"no answer to the config request within {format_duration(cfg.connect_timeout)}"
            ) from None
        verdict = config_reply_verdict(ok, reply, connection_closed=conn.is_closed())
        if verdict.action is not Action.OK:
            raise _verdict_error(verdict)

    async def _serve(self, conn: Any) -> float:
        """Connected: keep the session alive until it closes; seconds it lasted."""
        cfg = self.config
        self.stats.state = "connected"
        self.stats.sessions = 1
        self.connected.set()
        connected_at = time.monotonic()
        self.keepalive = KeepaliveDriver(
            conn, cfg.keepalive, cfg.keepalive_timeout, lambda: self._keepalive_dead(conn)
        )
        self.keepalive.start()
        try:
            await conn.wait_closed()
        finally:
            self.keepalive.stop()
        lasted = time.monotonic() - connected_at
        if not self._stopping:
            log.info(
                "Disconnected",
                extra=event(
                    "session_closed",
                    session=self._sessions,
                    peer=self._peer(),
                    duration_s=round(lasted, 3),
                ),
            )
        return lasted

    def _peer(self) -> str:
        """The gateway's host:port, for log fields (never the URL's credentials)."""
        server = self.config.server
        return str(server.netloc.rsplit("@", 1)[-1])

    def _worker_remotes(self, gateway_is_ours: bool) -> tuple[Remote, ...]:
        """This worker's share, logged so the split is visible at 3 a.m."""
        cfg = self.config
        shares = gateway_is_ours and cfg.group is not None
        remotes = cfg.session_remotes(shares)
        log.info(
            "%d of %d remotes on this session (%s)",
            len(remotes),
            len(cfg.remotes),
            "reverse ports shared with the other workers"
            if shares
            else "the gateway cannot share reverse ports; they are split among workers",
        )
        return remotes

    def _keepalive_dead(self, conn: Any) -> None:
        """No answer and no traffic within --keepalive-timeout: the gateway is gone."""
        log.info(
            "Keepalive: no answer within %s; reconnecting",
            format_duration(self.config.keepalive_timeout),
        )
        conn.abort()

    # -- forward remotes: local listeners -----------------------------------------
    async def _open_forward_listeners(self) -> None:
        """Bind every forward remote's local port now: a port we cannot have is fatal."""
        shared = self.config.worker_count > 1  # every worker binds TCP forward ports
        for remote in self.config.forward_remotes():
            if remote.stdio:
                continue
            udp = remote.local_proto is Proto.UDP
            try:
                if udp:
                    self._listeners.append(await self.endpoint.listen_udp(remote))
                else:
                    self._listeners.append(
                        await self.endpoint.listen_tcp(remote, reuse_port=shared)
                    )
            except OSError as exc:
                for opened in self._listeners:
                    opened.close()
                where = f"{remote.local()}/udp" if udp else remote.local()
                raise FatalError(f"cannot listen on {where}: {exc.strerror or exc}") from None
            if not udp:
                log.debug("tun: %s: Listening", remote)
        for remote in self.config.forward_remotes():
            if remote.stdio:  # check_unique allows one
                self._stdio = asyncio.get_running_loop().create_task(serve_stdio(self, remote))

    # -- reverse remotes: channels from the gateway ---------------------------------
    def channel_requested(self, target_bytes: bytes) -> Any:
        """Serve a channel the gateway opens, only to a target one of our remotes declares.

        The target is compared in its canonical spelling (as our remotes are written);
        a numeric shorthand (``127.0.011``) is refused with the address it stands for.
        """
        asked = target_bytes.decode("utf-8", "replace")
        if self._stopping:
            raise ChannelOpenError(OPEN_CONNECT_FAILED, "connector is shutting down")
        try:
            target = ChannelTarget.parse(asked)
        except ChannelOpenError as exc:
            log.warning("Denied channel to %r: %s", asked[:200], exc.reason)
            raise ChannelOpenError(OPEN_ADMINISTRATIVELY_PROHIBITED, exc.reason) from None
        remote = self._reverse_targets.get(target.text)
        if remote is None and not target.udp and target.text in self._http_targets:
            # a request of the HTTP API gateway, to a target we declared
            return self.endpoint.route_channel(
                target, self.stats.remote(f"http {target.text}"), f"http {target.text}"
            )
        if remote is None:
            log.warning("Denied channel to %r: not one of our remotes", asked[:200])
            raise ChannelOpenError(OPEN_ADMINISTRATIVELY_PROHIBITED, "Denied outbound connection")
        if remote.remote_proto != remote.local_proto and not remote.socks:
            raise ChannelOpenError(
                OPEN_ADMINISTRATIVELY_PROHIBITED, f"{target.text} not supported yet"
            )
        # SOCKS only because our own remotes declare R:socks: the user chose to expose a
        # SOCKS5 proxy here, so the gateway's clients may reach what we can reach.
        label = self._reverse_labels[target.text]
        return self.endpoint.route_channel(target, self.stats.remote(label), label)


class ConnectorSession(asyncssh.SSHClient):
    """asyncssh's view of the connector: host key check and incoming channels."""

    def __init__(self, connector: Connector) -> None:
        self.connector = connector

    def host_key_received(self, key_data: bytes) -> None:
        expected = self.connector.config.fingerprint
        got = fingerprint_sha256(key_data)
        if not expected:
            log.info("Fingerprint %s", got)
            return
        result = fingerprint_matches(expected, key_data)
        if result is FingerprintCheck.MISMATCH:
            legacy = ":" in expected  # the MD5 form: show the server's in that form too
            raise ValueError(
                f"Invalid fingerprint: expected {expected} (--fingerprint), got "
                + (f"{fingerprint_md5(key_data)} (SHA256 {got})" if legacy else got)
                + ' from the server: compare with the "Fingerprint" line the gateway logs'
                " at start; if they differ, this is not your gateway"
            )
        if result is FingerprintCheck.MATCH_LEGACY_MD5:
            log.warning(
                "Specified deprecated MD5 fingerprint (%s), "
                "please update to the new SHA256 fingerprint: %s",
                expected,
                got,
            )

    def chisel_channel_requested(self, target: bytes) -> Any:
        return self.connector.channel_requested(target)


def _verdict_error(verdict: Verdict) -> Exception:
    """The exception that carries a RETRY or FATAL verdict to run()."""
    if verdict.action is Action.FATAL:
        return FatalError(verdict.reason)
    return DialError(verdict.reason)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncssh.Error):
        return exc.reason or type(exc).__name__
    return str(exc) or type(exc).__name__
