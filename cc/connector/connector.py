"""The connector (``cloud-connector client`` and ``outsystemscc``): keeps one chisel
session up, serves its remotes, and reconnects when the session dies.

Which failures retry and which stop is deliberate: network trouble retries with
backoff; a refused token (HTTP 401/403), a fingerprint mismatch, a wrong
password and a config the gateway rejects stop with a non-zero exit, because
retrying them only hammers the gateway.  The exception is a busy reverse port
("Server cannot listen"): usually our own stale session still holds it, and it
frees up, so that one retries.  The backoff restarts at 100 ms only after a
session that lasted ``backoff_reset_after`` (chisel: 5 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import asyncssh

from cc.connector.config import ConnectorConfig
from cc.log import get_logger, redact
from cc.protocol.backoff import Backoff
from cc.protocol.config import Config, encode_config
from cc.protocol.keepalive import format_duration
from cc.protocol.keys import FingerprintCheck, fingerprint_matches, fingerprint_sha256
from cc.protocol.remote import Proto, Remote, split_target
from cc.protocol.workers import GROUP_HEADER
from cc.ssh import (
    OPEN_ADMINISTRATIVELY_PROHIBITED,
    OPEN_CONNECT_FAILED,
    ChannelOpenError,
    new_client_connection,
    open_chisel_channel,
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
from cc.transport.preflight import follow_redirect
from cc.tunnel.pipe import Pipe, dial
from cc.tunnel.socks import SocksSession
from cc.tunnel.stdio import serve_stdio
from cc.tunnel.udp.exit import open_udp_exit
from cc.tunnel.udp.listener import UDPListener

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
        self._reverse_targets = {r.target(): r for r in config.remotes if r.reverse}
        self._stdio: asyncio.Task[None] | None = None

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

    def open_connections(self) -> int:
        return sum(r.open for r in self.stats.remotes.values())

    async def _drain_then_close(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.drain_timeout
        if self.open_connections():
            log.info("Draining %d open connection(s)...", self.open_connections())
        while self.open_connections() and loop.time() < deadline:
            await asyncio.sleep(0.05)
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
                try:
                    if await self._session():
                        self._backoff.reset()
                except FatalError:
                    raise
                except TLSVerifyError as exc:  # a bad certificate does not heal: stop
                    log.info("Connection error: %s", exc)
                    raise FatalError(str(exc)) from None
                except (DialError, HandshakeError, OSError, asyncssh.Error) as exc:
                    if self._stopping:
                        break
                    log.info("Connection error: %s", _describe(exc))
                if self._stopping:
                    break
                await self._wait_before_retry()
        finally:
            self.stats.state = "stopped"
            for server in self._listeners:
                server.close()
            if self._stdio is not None:
                self._stdio.cancel()
                await asyncio.gather(self._stdio, return_exceptions=True)
            if self._drainer is not None:
                await asyncio.gather(self._drainer, return_exceptions=True)

    async def _wait_before_retry(self) -> None:
        attempt = self._backoff.attempts
        limit = self.config.max_retry_count
        if limit >= 0 and attempt >= limit:
            log.info("Give up")
            raise FatalError(f"gave up after {attempt} retries (--max-retry-count {limit})")
        delay = self._backoff.next_delay()
        self.stats.reconnects += 1
        log.info("Retrying in %s...", format_duration(delay))
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    # -- one session ------------------------------------------------------------
    async def _session(self) -> bool:
        """One connection, until it ends; True if it lasted ``backoff_reset_after``."""
        cfg = self.config
        self.stats.state = "connecting"
        url = await self._target_url()
        try:
            group = [(GROUP_HEADER, cfg.group)] if cfg.group and cfg.announce else []
            wst = await open_websocket(
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
            if exc.status in (401, 403):  # a refused token: retrying only hammers the gateway
                raise FatalError(str(exc)) from None
            raise
        owner = ConnectorSession(self)
        try:
            async with asyncio.timeout(cfg.connect_timeout):
                conn = await new_client_connection(
                    lambda: owner, wst.attach, username=cfg.auth[0], password=cfg.auth[1]
                )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise FatalError(str(exc.reason)) from None
        except asyncssh.PermissionDenied:
            raise FatalError("authentication failed (check --auth)") from None
        except TimeoutError:
            wst.abort()
            raise DialError("SSH handshake timed out") from None
        self.conn = conn
        try:
            started = time.perf_counter()
            remotes = tuple(cfg.remotes)
            if cfg.worker_count > 1:
                remotes = self._worker_remotes(bool(wst.get_extra_info("cc_peer_is_ours")))
            config = Config(version=cfg.config_version, remotes=remotes)
            try:
                # Bounded: a gateway that went silent after auth must not hang us forever.
                async with asyncio.timeout(cfg.connect_timeout):
                    ok, reply = await send_global_request(conn, "config", encode_config(config))
            except TimeoutError:
                raise DialError(
                    f"no answer to the config request within {format_duration(cfg.connect_timeout)}"
                ) from None
            if not ok and not reply and conn.is_closed():
                # asyncssh fails pending requests when the connection drops: not a verdict.
                raise DialError("connection lost during the config request")
            if not ok or reply:
                reason = reply.decode("utf-8", "replace") or "config rejected by server"
                if "cannot listen" in reason.lower():
                    # Transient: usually our own stale session (a half-open path the gateway
                    # has not timed out yet) still holds the reverse port; the gateway frees
                    # it at its keepalive deadline, so retry with backoff instead of exiting.
                    raise DialError(reason)
                raise FatalError(reason)
            log.info("Connected (Latency %s)", format_duration(time.perf_counter() - started))
            self.stats.state = "connected"
            self.stats.sessions = 1
            self.connected.set()
            connected_at = time.monotonic()
            keepalive = asyncio.get_running_loop().create_task(self._keepalive(conn))
            try:
                await conn.wait_closed()
            finally:
                keepalive.cancel()
            if not self._stopping:
                log.info("Disconnected")
            return time.monotonic() - connected_at >= cfg.backoff_reset_after
        finally:
            self.conn = None
            self.connected.clear()
            self.stats.sessions = 0
            self.stats.state = "disconnected"
            conn.close()

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

    async def _keepalive(self, conn: Any) -> None:
        """Ping every --keepalive; no answer within the deadline means the session is dead."""
        interval = self.config.keepalive
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            try:
                async with asyncio.timeout(self.config.keepalive_timeout):
                    await send_global_request(conn, "ping", b"")
            except TimeoutError:
                log.info(
                    "Keepalive: no answer within %s; reconnecting",
                    format_duration(self.config.keepalive_timeout),
                )
                conn.abort()
                return

    # -- forward remotes: local listeners -----------------------------------------
    async def _open_forward_listeners(self) -> None:
        loop = asyncio.get_running_loop()
        shared = self.config.worker_count > 1  # every worker binds TCP forward ports
        for remote in self.config.forward_remotes():
            if remote.stdio:
                continue
            stats = self.stats.remote(str(remote))
            if remote.local_proto is Proto.UDP:
                await self._open_udp_listener(remote, stats)
                continue
            try:
                server = await loop.create_server(
                    lambda remote=remote, stats=stats: self._accept_forward(remote, stats),
                    remote.local_host or None,
                    remote.local_port,
                    reuse_address=True,
                    reuse_port=shared or None,
                    backlog=1024,  # a burst of clients must not wait for SYN retries
                )
            except OSError as exc:
                for opened in self._listeners:
                    opened.close()
                raise FatalError(
                    f"cannot listen on {remote.local()}: {exc.strerror or exc}"
                ) from None
            self._listeners.append(server)
            log.debug("tun: %s: Listening", remote)
        for remote in self.config.forward_remotes():
            if remote.stdio:  # check_unique allows one
                self._stdio = loop.create_task(serve_stdio(self, remote))

    async def _open_udp_listener(self, remote: Remote, stats: Any) -> None:
        listener = UDPListener(remote, self._open_udp_channel, self.config.udp, stats, log)
        try:
            await listener.start()
        except OSError as exc:
            for opened in self._listeners:
                opened.close()
            raise FatalError(
                f"cannot listen on {remote.local()}/udp: {exc.strerror or exc}"
            ) from None
        self._listeners.append(listener)

    async def _open_udp_channel(self, target: bytes, factory: Callable[[], Any]) -> object:
        conn = self.conn
        if conn is None:
            raise ConnectionError("not connected")
        return await open_chisel_channel(conn, target, factory)

    def _accept_forward(self, remote: Remote, stats: Any) -> asyncio.Protocol:
        pipe = Pipe(stats, str(remote))
        asyncio.get_running_loop().create_task(self._open_forward_channel(remote, pipe))
        return pipe.socket_side

    async def _open_forward_channel(self, remote: Remote, pipe: Pipe) -> None:
        conn = self.conn
        if conn is None:
            log.info("tun: %s: not connected; dropping connection", remote)
            pipe.close(ConnectionError("not connected"))
            return
        try:
            await open_chisel_channel(conn, remote.target().encode(), lambda: pipe.channel_side)
        except (ChannelOpenError, OSError, asyncssh.Error) as exc:
            if pipe.stats is not None:
                pipe.stats.failed += 1
            log.info("tun: %s: %s", remote, getattr(exc, "reason", exc))
            pipe.close(exc)

    # -- reverse remotes: channels from the gateway ---------------------------------
    def channel_requested(self, target_bytes: bytes) -> Any:
        target = target_bytes.decode("utf-8", "replace")
        if self._stopping:
            raise ChannelOpenError(OPEN_CONNECT_FAILED, "connector is shutting down")
        remote = self._reverse_targets.get(target)
        if remote is None:
            log.warning("Denied channel to %r: not one of our remotes", target[:200])
            raise ChannelOpenError(OPEN_ADMINISTRATIVELY_PROHIBITED, "Denied outbound connection")
        stats = self.stats.remote(str(remote))
        if remote.socks:
            # Only because our own remotes declare R:socks: the user chose to expose a
            # SOCKS5 proxy here, so the gateway's clients may reach what we can reach.
            return SocksSession(None, stats, get_logger("client.socks"), str(remote))
        if remote.remote_proto != remote.local_proto:
            raise ChannelOpenError(OPEN_ADMINISTRATIVELY_PROHIBITED, f"{target} not supported yet")
        if remote.remote_proto is Proto.UDP:
            host, port = split_target(target.removesuffix("/udp"))
            return open_udp_exit(host, port, self.config.udp, stats, log, str(remote))
        return self._dial(remote, target)

    async def _dial(self, remote: Remote, target: str) -> Any:
        host, port = split_target(target)
        return await dial(host, port, self.stats.remote(str(remote)), f"{remote}")


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
            raise ValueError(f"Invalid fingerprint ({got})")
        if result is FingerprintCheck.MATCH_LEGACY_MD5:
            log.warning(
                "Specified deprecated MD5 fingerprint (%s), "
                "please update to the new SHA256 fingerprint: %s",
                expected,
                got,
            )

    def chisel_channel_requested(self, target: bytes) -> Any:
        return self.connector.channel_requested(target)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncssh.Error):
        return exc.reason or type(exc).__name__
    return str(exc) or type(exc).__name__
