"""``R:svc/PATH:HOST:PORT``: serve a named service from inside the network.

The connector registers PATH at the gateway over a WebSocket with the server key
(what the PHP SDK's RemotedAPIWebServer does), and for each client the gateway
announces it opens a WebRoute leg with that client's ID and splices it to a new
connection to HOST:PORT.  Works against our gateway and against remoted's own
``server.php``.  A dropped registration is re-made with backoff; a refused key stops
the connector (retrying cannot fix it); a path another server holds (remoted, or
``--remoted-exclusive``) is retried, since that server may go away.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from urllib.parse import SplitResult

from cc.connector.connector import FatalError
from cc.log import get_logger
from cc.protocol import webroute as wr
from cc.protocol.backoff import Backoff
from cc.protocol.durations import format_duration
from cc.protocol.errors import ProtocolError
from cc.protocol.ws import WebSocketError, WebSocketStream
from cc.stats import RemoteStats, SessionStats
from cc.transport.errors import DialError
from cc.transport.tls import TLSOptions, TLSVerifyError
from cc.transport.webroute import ServiceURL, open_registration, open_webroute
from cc.tunnel.relay import dial_paused, splice

__all__ = ["ServiceConfig", "ServiceRegistrar"]

log = get_logger("client.svc")

#: Statuses of a refused registration that retrying cannot change.
_FATAL_STATUSES = frozenset({401, 403})
#: Largest frame taken from the gateway (its notifications are ~150 bytes).
MAX_FRAME = 64 * 1024


@dataclass
class ServiceConfig:
    """One service remote and how to reach its gateway."""

    gateway: SplitResult  # http:// or https://, no path
    remote: wr.ServiceRemote
    key: str
    proxy: str | None = None
    tls: TLSOptions | None = None
    connect_timeout: float = 30.0
    #: how long the local target may take to accept
    dial_timeout: float = 10.0
    max_retry_interval: float = 300.0
    max_retry_count: int = -1
    #: the gateway pings after 30 s of silence; this long without a byte means it is gone
    silence_limit: float = 90.0

    @property
    def url(self) -> ServiceURL:
        return ServiceURL(self.gateway, self.remote.path, None)


class ServiceRegistrar:
    """Keeps one path registered; ``run()`` until ``stop()``, FatalError on a refused key."""

    def __init__(self, config: ServiceConfig, stats: SessionStats | None = None) -> None:
        self.config = config
        self.stats: RemoteStats = (stats or SessionStats()).remote(str(config.remote))
        self.registered = asyncio.Event()
        self._backoff = Backoff(max_delay=config.max_retry_interval)
        self._stopping = False
        self._wake = asyncio.Event()
        self._transport: asyncio.Transport | None = None
        self._links: set[asyncio.Task[None]] = set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._transport is not None:
            self._transport.close()

    async def run(self) -> None:
        try:
            while not self._stopping:
                started = time.monotonic()
                try:
                    await self._serve_once()
                except wr.WebRouteRefused as exc:
                    if exc.status in _FATAL_STATUSES:
                        raise FatalError(
                            f"{self.config.remote}: the gateway refused the server key ({exc})"
                        ) from None
                    log.warning("%s: registration refused: %s", self.config.remote, exc)
                except TLSVerifyError as exc:
                    raise FatalError(str(exc)) from None
                except (DialError, ProtocolError, OSError) as exc:
                    if self._stopping:
                        break
                    log.info("%s: connection error: %s", self.config.remote, exc)
                if self._stopping:
                    break
                if time.monotonic() - started >= 5.0:
                    self._backoff.reset()
                await self._wait_before_retry()
        finally:
            for task in list(self._links):
                task.cancel()
            await asyncio.gather(*self._links, return_exceptions=True)

    async def _wait_before_retry(self) -> None:
        limit = self.config.max_retry_count
        if 0 <= limit <= self._backoff.attempts:
            raise FatalError(
                f"{self.config.remote}: gave up after {limit} retries (--max-retry-count)"
            )
        delay = self._backoff.next_delay()
        log.info("%s: retrying in %s...", self.config.remote, format_duration(delay))
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    async def _serve_once(self) -> None:
        cfg = self.config
        transport, first = await open_registration(
            cfg.url, cfg.key, proxy=cfg.proxy, tls=cfg.tls, timeout=cfg.connect_timeout
        )
        registration = _Registration(self, transport, cfg.silence_limit)
        self._transport = transport
        transport.set_protocol(registration)
        log.info("%s: registered %s at %s", cfg.remote, cfg.remote.path, cfg.url)
        self.registered.set()
        try:
            if first:
                registration.data_received(first)
            transport.resume_reading()
            await registration.closed
        finally:
            self.registered.clear()
            self._transport = None
            transport.close()
        if not self._stopping:
            log.info("%s: registration closed (%s)", cfg.remote, registration.why)

    # -- clients ----------------------------------------------------------------------
    def notified(self, note: wr.Notification) -> None:
        task = asyncio.get_running_loop().create_task(self._link(note))
        self._links.add(task)
        task.add_done_callback(self._links.discard)

    async def _link(self, note: wr.Notification) -> None:
        """Dial the target and answer the waiting client at once; splice them."""
        cfg = self.config
        remote = cfg.remote
        dialing = asyncio.ensure_future(dial_paused(remote.host, remote.port, cfg.dial_timeout))
        try:
            leg, early = await open_webroute(
                cfg.url,
                cfg.key,
                note.webroute_id,
                proxy=cfg.proxy,
                tls=cfg.tls,
                timeout=cfg.connect_timeout,
            )
        except (DialError, ProtocolError, OSError) as exc:
            dialing.cancel()
            self.stats.failed += 1
            log.warning("%s: client %s: cannot answer it: %s", remote, note.ipaddr, exc)
            return
        try:
            local = await dialing
        except (OSError, TimeoutError) as exc:
            leg.close()  # the client sees EOF at once rather than waiting for a 504
            self.stats.failed += 1
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "timed out"
            log.warning(
                "%s: client %s: cannot reach %s: %s", remote, note.ipaddr, remote.target, reason
            )
            return
        log.debug("%s: client %s linked to %s", remote, note.ipaddr, remote.target)
        splice(local, leg, to_inner=early, stats=self.stats)


class _Registration(asyncio.Protocol):
    """The registration WebSocket: notifications in, pongs out, silence means gone."""

    def __init__(
        self, registrar: ServiceRegistrar, transport: asyncio.Transport, silence: float
    ) -> None:
        self.registrar = registrar
        self.transport = transport
        self.ws = WebSocketStream(is_client=True, max_frame_size=MAX_FRAME)
        self.reader = wr.NotificationReader()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.why = "closed by the gateway"
        self._silence = silence
        self._timer: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self._silence, self._silent)

    def _silent(self) -> None:
        self._timer = None
        self.why = f"nothing from the gateway for {self._silence:.0f} s"
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self._arm()
        try:
            pieces = self.ws.receive_data(data)
            notes = [note for piece in pieces for note in self.reader.feed(piece)]
        except (WebSocketError, ProtocolError) as exc:
            self.why = str(exc)
            self.transport.write(self.ws.data_to_send())
            self.transport.close()
            return
        reply = self.ws.data_to_send()
        if reply:
            self.transport.write(reply)
        for note in notes:
            self.registrar.notified(note)
        if self.ws.closed:
            self.transport.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if exc is not None and self.why == "closed by the gateway":
            self.why = str(exc)
        if not self.closed.done():
            self.closed.set_result(None)
