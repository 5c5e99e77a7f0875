"""Named services on the gateway's port: the I/O of Remoted API Server's WebRoute.

The decisions (which request is what, the exact answers, who serves a path) are
``cc.protocol.webroute``; here are the sockets and timers:

* a registration is a server-side WebSocket (:class:`_Registration`) that is told
  about each parked client in a text frame, pinged after silence and dropped when
  the ping goes unanswered, which removes it from its path;
* a WebRoute leg (:class:`_Leg`) is parked (no answer, early bytes kept, bounded)
  until a server's second connection links it, then both legs get the 101 at the
  same moment and become a raw byte pipe (:class:`_Pair`) with back-pressure both
  ways, half-close where the transport has it, and an idle timeout.

Every connection counts as unauthenticated at the gateway's front until its key is
accepted (``Doorway.release``); a wrong or missing key is a failed login for the
source, answered after its penalty, and a banned source gets 429.  At most
``max_waiting`` clients wait per path; the next gets 503 at once, is counted in
``/metrics`` and logged (the first at once, then a summary per path and interval).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cc.log import get_logger
from cc.protocol import webroute as wr
from cc.protocol.authguard import FailureLog
from cc.protocol.http import Request
from cc.protocol.ws import WebSocketError, WebSocketStream
from cc.stats import RemoteStats
from cc.transport.reset import reset_transport

if TYPE_CHECKING:
    from cc.gateway.front import Doorway
    from cc.gateway.gateway import Gateway, _HTTPConnection

__all__ = ["NamedServices", "WebRouteSettings"]

log = get_logger("server.webroute")

#: Bytes a parked client may send before it is linked (read again once linked).
MAX_EARLY_BYTES = 64 * 1024
#: Largest WebSocket frame taken from a registered server (whose frames are ignored).
MAX_FRAME_FROM_SERVER = 64 * 1024
#: After the two 101s, how long both legs wait before bytes flow (see ``_flow``).
LINK_SETTLE = 0.05


@dataclass(frozen=True)
class WebRouteSettings:
    """``--remoted-*``: the keys, and remoted's timings (shortened by tests)."""

    keys: wr.KeyTable
    #: a parked client's wait and a linked pair's idle time, unless the request asks more
    timeout: int = wr.DEFAULT_TIMEOUT
    #: silence before a registered server is pinged, and the time it has to answer
    keepalive: float = wr.KEEPALIVE_INTERVAL
    #: seconds between the two 101s and the first byte either leg gets after it
    settle: float = LINK_SETTLE
    #: clients that may wait at once per path; the next gets 503 (0: no cap)
    max_waiting: int = wr.DEFAULT_MAX_WAITING


class NamedServices:
    """The registered paths, parked clients and linked pairs of one gateway process."""

    def __init__(self, gateway: Gateway, settings: WebRouteSettings) -> None:
        self.gateway = gateway
        self.settings = settings
        self.directory: wr.Directory[_Registration, _Leg] = wr.Directory()
        self.pairs: set[_Pair] = set()
        #: figures since start, for stats and the status page
        self.linked_total = 0
        self.timed_out_total = 0
        self.refused_total = 0
        #: busy refusals: the first per path logged at once, then one summary per interval
        self.busy_log = FailureLog(
            "busy refusals (503)", interval=gateway.config.log_summary_interval, about="for"
        )

    @property
    def keys(self) -> wr.KeyTable:
        return self.settings.keys

    def replace_keys(self, keys: wr.KeyTable) -> None:
        """A reloaded keys file: new requests use it (linked pairs carry on)."""
        self.settings = dataclasses.replace(self.settings, keys=keys)

    # -- requests -------------------------------------------------------------------
    def handle(self, conn: _HTTPConnection, request: Request, rest: bytes) -> None:
        """Serve one WebRoute or registration request; the connection is ours from now on."""
        doorway = conn.doorway
        banned = self.gateway.banned_for(doorway.source)
        if banned > 0:
            self._refuse(conn, wr.banned_response(banned), 0.0)
            return
        decision = wr.decide(
            request, self.keys, self.directory, self.settings.timeout, self.settings.max_waiting
        )
        if isinstance(decision, wr.Refuse):
            self.refused_total += 1
            delay = 0.0
            if decision.busy:
                self._busy(conn, request.path)
            elif decision.wrong_key:
                penalty = self.gateway.login_failed(
                    doorway.source,
                    f"Refused WebRoute request from {conn.peer} for {request.path[:200]}: "
                    f"{decision.reason}",
                )
                delay = penalty.delay
            else:
                log.debug("Refused %s from %s: %s", request.path[:200], conn.peer, decision.reason)
            self._refuse(conn, decision.data, delay)
            return
        self.gateway.auth_guard.succeeded(doorway.source)
        doorway.release()
        if isinstance(decision, wr.Register):
            self._register(conn, decision, rest)
        elif isinstance(decision, wr.Park):
            self._park(conn, decision, rest)
        else:
            self._link(conn, decision, rest)

    def _busy(self, conn: _HTTPConnection, path: str) -> None:
        """A client refused for a full queue: counted, and logged so a stuck server shows."""
        self.gateway.stats.count_busy_refusal(f"svc:{path}")
        servers = self.directory.servers(path)
        shown = ", ".join(server.peer for server in servers[:3])
        more = f" and {len(servers) - 3} more" if len(servers) > 3 else ""
        line = self.busy_log.record(
            path,
            time.monotonic(),
            f"Named service {path}: {self.directory.waiting(path)} clients already wait for a "
            f"server connection (--remoted-max-waiting {self.settings.max_waiting}); refused "
            f"{conn.peer} with 503. Its server(s) {shown}{more} get each client's notification "
            f"but do not answer with its WebRoute-ID: check they are alive and not overloaded",
        )
        if line is not None:
            log.warning("%s", line)

    def flush_logs(self) -> None:
        """Summaries of busy refusals that are due (the gateway's housekeeping calls it)."""
        for line in self.busy_log.flush(time.monotonic()):
            log.warning("Named services: %s", line)

    def _refuse(self, conn: _HTTPConnection, data: bytes, delay: float) -> None:
        answer = _Answer(data, conn.doorway)
        conn.transport.set_protocol(answer)
        answer.start(conn.transport, delay)

    def _register(self, conn: _HTTPConnection, decision: wr.Register, rest: bytes) -> None:
        transport = conn.transport
        transport.write(decision.data)
        registration = _Registration(self, decision.path, conn.peer, transport)
        transport.set_protocol(registration)
        self.directory.register(decision.path, registration)
        self.gateway.stats.busy_refusals.setdefault(f"svc:{decision.path}", 0)  # a series at 0
        log.info(
            "Named service %s registered by %s (%s; %d server(s) on it)",
            decision.path,
            conn.peer,
            decision.grant.name,
            len(self.directory.servers(decision.path)),
        )
        if rest:
            registration.data_received(rest)
        transport.resume_reading()

    def _park(self, conn: _HTTPConnection, decision: wr.Park, rest: bytes) -> None:
        server = self.directory.pick(decision.path)
        assert server is not None  # decide() answers 502 when nobody serves the path
        leg = _Leg(self, conn.peer, conn.transport)
        conn.transport.set_protocol(leg)
        parked = wr.Parked(decision.path, decision.webroute_id, leg, decision.timeout, server)
        leg.park(parked, rest)
        self.directory.park(parked)
        server.notify(parked)
        log.debug(
            "Client %s waits for %s (timeout %d s), offered to %s",
            conn.peer,
            decision.path,
            decision.timeout,
            server.peer,
        )
        conn.transport.resume_reading()

    def _link(self, conn: _HTTPConnection, decision: wr.Link, rest: bytes) -> None:
        parked = self.directory.take(decision.path, decision.webroute_id)
        assert parked is not None  # decide() checked, and nothing ran in between
        client = parked.client
        server = _Leg(self, conn.peer, conn.transport)
        conn.transport.set_protocol(server)
        answer = wr.switching_protocols(decision.webroute_id)
        pair = _Pair(self, decision.path, client, server, min(parked.timeout, decision.timeout))
        client.transport.pause_reading()  # the server leg's reading is still paused
        client.link(pair, server, answer)
        server.link(pair, client, answer)
        self.pairs.add(pair)
        self.linked_total += 1
        log.debug("Linked %s to %s on %s", client.peer, server.peer, decision.path)
        if self.settings.settle > 0:
            asyncio.get_running_loop().call_later(self.settings.settle, _flow, pair, rest)
        else:
            _flow(pair, rest)

    def remote_stats(self, path: str) -> RemoteStats:
        """A path's figures as a remote's (``svc:/path``): SIGUSR2 and /metrics show them."""
        return self.gateway.stats.remote(f"svc:{path}")

    # -- servers coming and going -----------------------------------------------------
    def unregistered(self, registration: _Registration, why: str) -> None:
        """A server's WebSocket ended: its path loses it, its parked clients go elsewhere."""
        path = registration.path
        orphans = self.directory.unregister(path, registration)
        left = len(self.directory.servers(path))
        log.info(
            "Named service %s: server %s gone (%s); %d server(s) left",
            path,
            registration.peer,
            why,
            left,
        )
        for parked in orphans:
            other = self.directory.pick(path)
            if other is None:  # remoted closes them at once so they do not wait in vain
                self.directory.take(parked.path, parked.webroute_id)
                self.remote_stats(path).failed += 1
                parked.client.close()
                continue
            parked.offered_to = other
            other.notify(parked)

    def parked_gone(self, parked: wr.Parked[_Registration, _Leg]) -> None:
        self.directory.take(parked.path, parked.webroute_id)

    def parked_timed_out(self, parked: wr.Parked[_Registration, _Leg]) -> None:
        self.directory.take(parked.path, parked.webroute_id)
        self.timed_out_total += 1
        self.remote_stats(parked.path).failed += 1
        log.info(
            "Client %s waited %d s for %s and got no server connection: 504",
            parked.client.peer,
            parked.timeout,
            parked.path,
        )

    # -- status -----------------------------------------------------------------------
    def rows(self) -> list[dict[str, object]]:
        """One row per served path: servers registered, clients waiting, pairs linked."""
        waiting: dict[str, int] = {}
        for parked in self.directory.parked():
            waiting[parked.path] = waiting.get(parked.path, 0) + 1
        linked: dict[str, int] = {}
        for pair in self.pairs:
            linked[pair.path] = linked.get(pair.path, 0) + 1
        paths = sorted(set(self.directory.paths()) | set(waiting) | set(linked))
        return [
            {
                "path": path,
                "servers": len(self.directory.servers(path)),
                "waiting": waiting.get(path, 0),
                "linked": linked.get(path, 0),
            }
            for path in paths
        ]

    def close(self) -> None:
        """Gateway shutdown: every registration, parked client and pair goes."""
        for path in self.directory.paths():
            for registration in self.directory.servers(path):
                registration.transport.abort()
        for parked in self.directory.parked():
            parked.client.transport.abort()
        for pair in list(self.pairs):
            pair.close()


def _flow(pair: _Pair, server_early: bytes) -> None:
    """Let bytes flow between two linked legs: the early ones first, then both reading.

    The PHP SDK reads its 101 with one large ``fread`` on both ends and drops what
    came after the head in that read; remoted's slower loop hides that, a gateway
    that forwards at once does not (the SDK's own test pair failed one run in a few).
    So the bytes after the 101 wait ``settle`` seconds (50 ms), long enough for a
    peer to read its answer first.  Clients that handle a 101 properly (ours do)
    lose nothing either way.
    """
    client, server = pair.client, pair.server
    early = client.take_early()
    if early and not server.transport.is_closing():
        server.transport.write(early)
        pair.touch(len(early), from_client=True)
    if server_early and not client.transport.is_closing():
        client.transport.write(server_early)
        pair.touch(len(server_early), from_client=False)
    client.transport.resume_reading()
    server.transport.resume_reading()


class _Answer(asyncio.Protocol):
    """A refusal: ``data`` after ``delay`` (a wrong key's penalty), then close."""

    def __init__(self, data: bytes, doorway: Doorway) -> None:
        self.data = data
        self.doorway = doorway
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self, transport: asyncio.Transport, delay: float) -> None:
        self.transport = transport
        if delay > 0:
            self._timer = asyncio.get_running_loop().call_later(delay, self._send)
        else:
            self._send()

    def _send(self) -> None:
        self._timer = None
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(self.data)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        pass  # reading stays paused; whatever slipped in is not answered

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.doorway.release()


class _Registration(asyncio.Protocol):
    """A registered server's WebSocket: notifications out, pings, frames in ignored."""

    def __init__(
        self, service: NamedServices, path: str, peer: str, transport: asyncio.Transport
    ) -> None:
        self.service = service
        self.path = path
        self.peer = peer
        self.transport = transport
        self.ws = WebSocketStream(is_client=False, max_frame_size=MAX_FRAME_FROM_SERVER)
        self.probe = wr.IdleProbe(service.settings.keepalive, time.monotonic())
        self._gone = False
        self._timer: asyncio.TimerHandle | None = None
        self._schedule()

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        delay = max(0.0, self.probe.next_check() - time.monotonic())
        self._timer = loop.call_later(delay, self._check)

    def _check(self) -> None:
        action = self.probe.check(time.monotonic())
        if action == wr.IdleProbe.DROP:
            self._timer = None
            self._end("no answer to a ping")
            self.transport.abort()
            return
        if action == wr.IdleProbe.PING:
            self.transport.write(self.ws.send_ping(str(int(time.time())).encode()))
        self._schedule()

    def notify(self, parked: wr.Parked[_Registration, _Leg]) -> None:
        text = wr.notification(parked.client.peer, parked.webroute_id, parked.timeout)
        if not self.ws.close_sent and not self.transport.is_closing():
            self.transport.write(self.ws.send_text(text))

    def data_received(self, data: bytes) -> None:
        self.probe.traffic(time.monotonic())
        try:
            self.ws.receive_data(data)  # remoted ignores what registered servers send
        except WebSocketError as exc:
            self.transport.write(self.ws.data_to_send())
            self._end(f"WebSocket error: {exc}")
            self.transport.close()
            return
        reply = self.ws.data_to_send()
        if reply:
            self.transport.write(reply)
        if self.ws.closed:
            self._end("closed its WebSocket")
            self.transport.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._end("connection closed" if exc is None else f"connection lost: {exc}")

    def _end(self, why: str) -> None:
        if self._gone:
            return
        self._gone = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.service.unregistered(self, why)


class _Leg(asyncio.Protocol):
    """One WebRoute connection: parked (client) or linked (either side)."""

    def __init__(self, service: NamedServices, peer: str, transport: asyncio.Transport) -> None:
        self.service = service
        self.peer = peer
        self.transport = transport
        self.parked: wr.Parked[_Registration, _Leg] | None = None
        self.pair: _Pair | None = None
        self.other: _Leg | None = None
        self.eof = False
        self._early = bytearray()
        self._timer: asyncio.TimerHandle | None = None

    # -- parked -------------------------------------------------------------------
    def park(self, parked: wr.Parked[_Registration, _Leg], early: bytes) -> None:
        self.parked = parked
        self._keep_early(early)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(parked.timeout, self._timed_out)

    def _keep_early(self, data: bytes) -> None:
        self._early += data
        if len(self._early) >= MAX_EARLY_BYTES:
            self.transport.pause_reading()  # read on once linked

    def take_early(self) -> bytes:
        early = bytes(self._early)
        self._early.clear()
        return early

    def _timed_out(self) -> None:
        self._timer = None
        parked, self.parked = self.parked, None
        if parked is None:
            return
        self.service.parked_timed_out(parked)
        self.transport.write(wr.GATEWAY_TIMEOUT)
        self.transport.close()

    def close(self) -> None:
        """Parked with nobody left to serve it: closed, as remoted does."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.parked = None
        self.transport.close()

    # -- linked -------------------------------------------------------------------
    def link(self, pair: _Pair, other: _Leg, answer: bytes) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.parked = None
        self.pair = pair
        self.other = other
        self.transport.write(answer)

    # -- asyncio ------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.other is not None:
            self.other.transport.write(data)
            if self.pair is not None:
                self.pair.touch(len(data), from_client=self is self.pair.client)
        elif self.parked is not None:
            self._keep_early(data)

    def eof_received(self) -> bool:
        self.eof = True
        other = self.other
        if other is None:
            return False  # a parked client that hangs up is gone (connection_lost follows)
        if other.transport.is_closing():
            return False
        if not other.transport.can_write_eof():  # TLS: no half-close, so close both
            other.transport.close()
            return False
        other.transport.write_eof()
        if other.eof:
            other.transport.close()
            return False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        parked, self.parked = self.parked, None
        if parked is not None:
            self.service.parked_gone(parked)
        if self.other is not None:
            if exc is not None and not self.eof:
                # cut (reset, or a failed write) before its end: the other leg must not
                # take it for a whole stream, so it is reset too, as tunnels do
                reset_transport(self.other.transport)
            else:
                self.other.transport.close()  # what it still has to write goes out first
        if self.pair is not None:
            self.pair.leg_lost()

    def pause_writing(self) -> None:
        if self.other is not None:
            self.other.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.other is not None:
            self.other.transport.resume_reading()


class _Pair:
    """A linked client and server; closed after ``timeout`` seconds without a byte."""

    def __init__(
        self, service: NamedServices, path: str, client: _Leg, server: _Leg, timeout: int
    ) -> None:
        self.service = service
        self.path = path
        self.client = client
        self.server = server
        self.timeout = timeout
        self._last = time.monotonic()
        self._lost = 0
        self._timer: asyncio.TimerHandle | None = None
        self._arm(float(timeout))
        self.stats = service.remote_stats(path)
        self.stats.open += 1
        self.stats.total += 1

    def _arm(self, delay: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(delay, self._check)

    def touch(self, size: int, *, from_client: bool) -> None:
        """Bytes went through: not idle; counted as a reverse remote's (out: from the client)."""
        self._last = time.monotonic()
        if from_client:
            self.stats.bytes_out += size
        else:
            self.stats.bytes_in += size

    def _check(self) -> None:
        idle = time.monotonic() - self._last
        if idle < self.timeout:
            self._arm(self.timeout - idle)
            return
        self._timer = None
        log.debug(
            "Closing %s <-> %s on %s: idle for %d s",
            self.client.peer,
            self.server.peer,
            self.path,
            self.timeout,
        )
        self.close()

    def close(self) -> None:
        self.client.transport.close()
        self.server.transport.close()

    def leg_lost(self) -> None:
        self._lost += 1
        if self._lost == 2:
            self.stats.open -= 1
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.service.pairs.discard(self)
