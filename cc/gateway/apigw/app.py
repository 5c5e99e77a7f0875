"""The HTTP API gateway's app port: requests in, relayed to targets through connectors.

Per request: the Host picks a target (``targets.yaml``), the target's policy judges
the normalised path and the method, the least busy connector that declared the
target (and carries one of its identifiers) gets a channel to it (or a kept one is
reused), and request and response stream through with back-pressure both ways.

Statuses the gateway gives itself: 400 (a request it will not parse or relay),
404 (no target for the Host), 403 (the policy denies), 502 (no connector serves
the target, the target cannot be reached, TLS to it fails, it answers nonsense,
or its connector went away), 504 (no answer within ``--timeout``, restarted by each
chunk received).  socket-gateway answers 500 for an unreachable target; a gateway
that got no valid answer from upstream says 502 (RFC 9110 15.6.3).

A connector that drops mid-request: its requests fail at once (the channels see
the session's loss) and one without a body whose method is idempotent (GET, HEAD,
OPTIONS) is tried once more on another connector, if no byte of the answer was sent.

The app port is public, so idle sockets must not be able to eat the gateway's
descriptors (which its connectors need too): a request head must be whole within
``head_timeout`` of its first byte (the first one within ``head_timeout`` of the
connection; 408 for a head begun), client connections are capped per address
(the newcomer is refused) and in total (the oldest connection waiting for a
request is closed for the newcomer; one in the middle of a request never is).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cc.log import get_logger
from cc.protocol.apigw.forwarding import (
    ClientInfo,
    TrustedProxies,
    request_headers,
    response_headers,
)
from cc.protocol.apigw.message import (
    BodyFramer,
    Framing,
    build_head,
    parse_request_head,
    parse_response_head,
    request_framing,
    response_framing,
    split_target,
)
from cc.protocol.apigw.policy import PathError, normalize_path
from cc.protocol.apigw.scheduler import least_in_flight
from cc.protocol.apigw.targets import Target, host_of
from cc.protocol.authguard import FailureLog, source_of
from cc.protocol.hosts import bare_host, join_host_port
from cc.protocol.http import HTTPError, Request, Response, find_head_end
from cc.runtime.filewatch import FileWatcher

from .handoff import Handoff
from .streams import ClientProtocol, StreamClosed
from .targetfile import LoadedTargets, parse_targets_file
from .upstream import SessionLost, TargetUnreachable, Upstream, UpstreamPool

if TYPE_CHECKING:
    from cc.gateway.gateway import Gateway
    from cc.gateway.session import GatewaySession

__all__ = ["AppConfig", "AppGateway"]

log = get_logger("server.apigw")

_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class AppConfig:
    #: --targets
    targets_path: str
    #: --app-host, --app-port
    host: str = "0.0.0.0"
    port: int = 3000
    #: --timeout: longest wait for the next bytes of an answer (504 before its head)
    timeout: float = 180.0
    #: --trusted-proxies
    trusted: TrustedProxies = field(default_factory=TrustedProxies)
    #: a channel open plus a TLS handshake to a target
    connect_timeout: float = 30.0
    #: a kept-alive client connection with no request for this long is closed
    idle_timeout: float = 75.0
    #: a request head must be whole this long after its first byte arrived, and a new
    #: connection must start one within it (slowloris clients hold no socket longer)
    head_timeout: float = 30.0
    #: client connections at once; when full, the oldest one waiting for a request is
    #: closed for the newcomer (0: no cap; at most half the descriptor limit is used)
    max_clients: int = 4096
    #: client connections from one address (an IPv6 /64 is one); more are refused.
    #: Not for --trusted-proxies: a load balancer in front carries everyone's
    max_clients_per_source: int = 256
    #: how often the targets file is checked for changes
    reload_interval: float = 1.0
    reuse_port: bool = False
    #: --workers: this worker's index, their number and the handoff directory
    #: (requests for targets served on another worker go there; see handoff.py)
    worker: int = 0
    workers: int = 1
    handoff_dir: str | None = None


class _Retry(Exception):
    """The connector failed before any byte of the answer was sent; maybe try another."""


class _Stale(Exception):
    """A kept connection turned out closed before any answer: open a new one."""


class _Done(Exception):
    """The client connection cannot carry another request (already answered or cut)."""


class _Given(Exception):
    """Another worker took the client connection."""


class AppGateway:
    """The app listener beside a :class:`~cc.gateway.gateway.Gateway` and its sessions."""

    def __init__(
        self,
        gateway: Gateway,
        config: AppConfig,
        targets: LoadedTargets,
        randbelow: Callable[[int], int] = random.randrange,
    ) -> None:
        self.gateway = gateway
        self.config = config
        self.targets = targets
        self.pool = UpstreamPool()
        self.in_flight: dict[int, int] = {}
        #: requests relayed, by connector session id
        self.served: dict[int, int] = {}
        self._randbelow = randbelow
        self._server: asyncio.Server | None = None
        self._watcher: FileWatcher[LoadedTargets] | None = None
        #: connected clients, oldest first, and how many each address holds
        self._clients: dict[ClientProtocol, str] = {}
        self._per_source: Counter[str] = Counter()
        self.max_clients = config.max_clients
        interval = gateway.config.log_summary_interval
        self._refusals = FailureLog("refused app connections", interval=interval)
        self._evictions = FailureLog(
            "app connections closed for newcomers", interval=interval, about="at"
        )
        #: clients refused (per address or all busy) and idle ones closed for newcomers
        self.refused = 0
        self.evicted = 0
        self.requests = 0
        self.handoff: Handoff | None = None

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        import os
        import resource

        loop = asyncio.get_running_loop()
        descriptors = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if descriptors != resource.RLIM_INFINITY and descriptors > 0:
            half = max(16, descriptors // 2)  # the rest: connectors, targets, files
            if not self.max_clients or self.max_clients > half:
                self.max_clients = half
        self._server = await loop.create_server(
            self._new_client,
            bare_host(self.config.host) or None,
            self.config.port,
            reuse_address=True,
            reuse_port=self.config.reuse_port or None,
            backlog=1024,
        )
        folder = os.path.dirname(os.path.abspath(self.config.targets_path))
        self._watcher = FileWatcher(
            self.config.targets_path,
            lambda data: parse_targets_file(data, folder),
            self.set_targets,
            log,
            self.config.reload_interval,
        )
        self._watcher.start()
        self.gateway.log_flushers.append(self.flush_logs)
        if self.config.handoff_dir is not None and self.config.workers > 1:
            self.handoff = Handoff(
                self.config.handoff_dir,
                self.config.worker,
                self.config.workers,
                self._serves,
                self._adopt,
            )
            await self.handoff.start()
        log.info(
            "HTTP API gateway listening on http://%s (%d targets, at most %s clients)",
            join_host_port(self.config.host or "0.0.0.0", self.ports[0]),
            len(self.targets.table),
            self.max_clients or "unlimited",
        )

    @property
    def ports(self) -> list[int]:
        assert self._server is not None
        return [int(s.getsockname()[1]) for s in self._server.sockets]

    def set_targets(self, targets: LoadedTargets) -> None:
        self.targets = targets

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        with contextlib.suppress(ValueError):
            self.gateway.log_flushers.remove(self.flush_logs)
        if self.handoff is not None:
            self.handoff.close()
        if self._server is not None:
            self._server.close()
        for client in list(self._clients):
            client.close()
        self.pool.close()

    def _new_client(self) -> ClientProtocol:
        return ClientProtocol(self._serve)

    # -- who may hold a connection ---------------------------------------------------
    def _admit(self, client: ClientProtocol) -> bool:
        """Count ``client`` in, closing an idle one if full; False: refuse it."""
        source = source_of(client.peer[0])
        per_source = self.config.max_clients_per_source
        why = ""
        if (
            per_source
            and self._per_source[source] >= per_source
            and client.peer[0] not in self.config.trusted  # a load balancer carries many
        ):
            why = f"{per_source} connections from this address already"
        elif self.max_clients and len(self._clients) >= self.max_clients:
            idle = next((c for c in self._clients if c.waiting and not c.inbox.pending), None)
            if idle is None:
                why = f"all {self.max_clients} connections are busy"
            else:
                self.evicted += 1
                line = self._evictions.record(
                    f"the cap of {self.max_clients}",
                    time.monotonic(),
                    f"app: {self.max_clients} client connections: closed the oldest one "
                    f"waiting for a request ({idle.peer[0]}) for a newcomer",
                )
                if line is not None:
                    log.warning("%s", line)
                self._forget(idle)
                idle.close()  # no request under way: a clean close, the client may retry
        if why:
            self.refused += 1
            line = self._refusals.record(
                source, time.monotonic(), f"app: refused a connection from {source}: {why}"
            )
            if line is not None:
                log.warning("%s", line)
            return False
        self._clients[client] = source
        self._per_source[source] += 1
        return True

    def _forget(self, client: ClientProtocol) -> None:
        source = self._clients.pop(client, None)
        if source is not None:
            left = self._per_source[source] - 1
            if left:
                self._per_source[source] = left
            else:
                del self._per_source[source]

    def flush_logs(self) -> None:
        """Summaries of refused app connections that are due (the gateway's housekeeping)."""
        now = time.monotonic()
        for line in [*self._refusals.flush(now), *self._evictions.flush(now)]:
            log.warning("%s", line)

    # -- connectors -----------------------------------------------------------------
    def connectors_for(self, target: Target) -> list[GatewaySession]:
        """Sessions that declared ``target`` and carry an identifier it accepts."""
        address = target.address
        subject = f"http:{address}"
        return [
            s
            for s in self.gateway.sessions
            if address in s.http_targets
            and target.serves(s.http_identifiers)
            and s.conn is not None
            and not s.conn.is_closed()
            and s.allowed(subject)
        ]

    def _load(self, session: GatewaySession) -> int:
        """Requests in flight on ``session``."""
        return self.in_flight.get(session.id, 0)

    def ready(self) -> bool:
        """Whether any connector serves any target now (``/readyz``)."""
        return any(self.connectors_for(t) for t in self.targets.table.targets)

    # -- workers --------------------------------------------------------------------
    def _serves(self, name: str) -> bool:
        """Whether this worker takes another's connection for ``name`` (``""``: /readyz)."""
        if not name:
            return self.ready()
        target = self.targets.table.lookup(name)
        return target is not None and bool(self.connectors_for(target))

    async def _adopt(self, sock: socket.socket, buffered: bytes) -> None:
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(lambda: ClientProtocol(self._serve, buffered), sock)

    async def _hand_off(self, client: ClientProtocol, name: str, head: bytes) -> None:
        """Give the connection to a worker whose connectors serve ``name``, if one does.

        Raises _Given when one took it; returns to serve it here otherwise.
        """
        if self.handoff is None or client.closed:
            return
        client.hold()
        rest = client.inbox.take()
        if await self.handoff.give(client.fileno, name, head + rest):
            raise _Given
        client.inbox.unread(rest)
        client.release()

    # -- one client connection -----------------------------------------------------------
    async def _serve(self, client: ClientProtocol) -> None:
        if not self._admit(client):
            client.abort()
            return
        try:
            while await self._one_request(client):
                pass
            client.close()
        except _Given:
            client.detach()
        except _Done:
            client.close()
        except (StreamClosed, TimeoutError, ConnectionError):
            client.abort()
        except asyncio.CancelledError:
            client.abort()  # the client went away: its upstream work is cancelled
        except Exception:
            log.exception("app: unexpected error serving %s", client.peer[0])
            client.abort()
        finally:
            self._forget(client)

    async def _read_head(self, client: ClientProtocol) -> bytes | None:
        """The next request head; None when the client is done (EOF, or idle too long).

        The first request's first byte must come within ``head_timeout`` of the
        connection, a later one's within ``idle_timeout`` of the last answer; from
        its first byte a head has ``head_timeout`` to be whole (else 408).  Until it
        is, the connection may be closed for a newcomer (``waiting``).
        """
        config = self.config
        inbox = client.inbox
        if client.served:
            timeout = config.idle_timeout
        else:
            timeout = min(config.idle_timeout, config.head_timeout)
        client.waiting = True
        try:
            try:
                data = await inbox.read(timeout)
            except TimeoutError:
                return None  # idle: closed without a word, as servers do between requests
            buffer = b""
            deadline = 0.0
            while True:
                if not data:
                    if buffer:
                        raise _Done
                    return None
                buffer = buffer + data if buffer else data
                try:
                    end = find_head_end(buffer)
                except HTTPError:
                    self._respond(client, 431, b"request head too large\n", keep=False)
                    raise _Done from None
                if end >= 0:
                    inbox.unread(buffer[end:])
                    client.served = True
                    return buffer[:end]
                now = time.monotonic()
                if not deadline:
                    deadline = now + config.head_timeout
                try:
                    data = await inbox.read(max(0.0, deadline - now))
                except TimeoutError:
                    self._respond(client, 408, b"request head not complete in time\n", keep=False)
                    raise _Done from None
        finally:
            client.waiting = False

    def _respond(
        self,
        client: ClientProtocol,
        status: int,
        body: bytes,
        *,
        keep: bool,
        head_only: bool = False,
    ) -> None:
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ]
        if not keep:
            headers.append(("Connection", "close"))
        line = f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}"
        client.write(build_head(line, headers) + (b"" if head_only else body))

    async def _one_request(self, client: ClientProtocol) -> bool:
        """Serve one request; whether the connection may carry another."""
        head = await self._read_head(client)
        if head is None:
            return False
        self.requests += 1
        try:
            request = parse_request_head(head)
            framing, length = request_framing(request)
        except HTTPError as exc:
            self._respond(client, exc.status, f"{exc}\n".encode(), keep=False)
            return False
        has_body = framing is not Framing.NONE
        keep = request.version == "HTTP/1.1" and not request.headers.has_token(
            "Connection", "close"
        )
        # a body the gateway refuses is not read: the connection ends after the answer
        refuse_keep = keep and not has_body
        head_only = request.method == "HEAD"
        hosts = request.headers.index.get("host") or ()
        if len(hosts) > 1 or (not hosts and request.version == "HTTP/1.1"):
            self._respond(client, 400, b"exactly one Host header is required\n", keep=False)
            return False
        try:
            authority, origin_form = split_target(request.target)
        except HTTPError as exc:
            self._respond(client, exc.status, f"{exc}\n".encode(), keep=False)
            return False
        # an absolute-form target's authority overrides Host (RFC 9112 3.2.2)
        public_host = authority if authority is not None else hosts[0].strip() if hosts else ""
        public = host_of(public_host) if public_host else ""
        if public is None:
            what = "authority in the request target" if authority else "Host header"
            self._respond(client, 400, f"malformed {what}\n".encode(), keep=False)
            return False
        path, _, query = origin_form.partition("?")
        target = self.targets.table.lookup(public)
        if self.handoff is not None:
            if target is not None and not self.connectors_for(target):
                await self._hand_off(client, public, head)
            elif target is None and path in ("/readyz", "/readyz/") and not self.ready():
                await self._hand_off(client, "", head)
        if target is None:
            self._default_route(client, request, path, refuse_keep, head_only)
            return refuse_keep
        try:
            normal = normalize_path(path)
        except PathError as exc:
            self._respond(client, 400, f"{exc}\n".encode(), keep=False)
            return False
        if not target.policy.allows(request.method, normal):
            body = f"Forbidden: {request.method} {normal} is not allowed by policy.\n"
            self._respond(client, 403, body.encode(), keep=refuse_keep, head_only=head_only)
            return refuse_keep
        upgrade = None
        if request.headers.has_token("Connection", "upgrade"):
            upgrade = request.headers.get("Upgrade")
        target_path = normal + ("?" + query if query else "")
        exchange = _Exchange(self, client, request, target, public_host, public, target_path, keep)
        exchange.framing, exchange.length, exchange.upgrade = framing, length, upgrade
        return await exchange.run()

    def _default_route(
        self, client: ClientProtocol, request: Request, path: str, keep: bool, head_only: bool
    ) -> None:
        """A Host with no target: the gateway's own probes, or 404."""
        if request.method in ("GET", "HEAD") and path in ("/healthz", "/healthz/"):
            self._respond(client, 200, b"OK\n", keep=keep, head_only=head_only)
        elif request.method in ("GET", "HEAD") and path in ("/readyz", "/readyz/"):
            ready = self.ready()
            body = b"OK\n" if ready else b"no connector serves any target\n"
            self._respond(client, 200 if ready else 503, body, keep=keep, head_only=head_only)
        else:
            self._respond(client, 404, b"Not Found\n", keep=keep, head_only=head_only)


class _Exchange:
    """One request relayed to its target and its answer relayed back."""

    def __init__(
        self,
        app: AppGateway,
        client: ClientProtocol,
        request: Request,
        target: Target,
        public_host: str,
        public_name: str,
        target_path: str,
        keep: bool,
    ) -> None:
        self.app = app
        self.client = client
        self.request = request
        self.target = target
        self.public_host = public_host
        self.public_name = public_name
        self.target_path = target_path
        self.keep = keep
        self.framing = Framing.NONE
        self.length = 0
        self.upgrade: str | None = None
        #: bytes of the answer already written to the client
        self.answered = False
        #: the upstream connection was a kept one
        self.reused = False

    def _fail(self, status: int, reason: str) -> bool:
        """Answer with our own status (nothing of the target's was sent yet)."""
        log.info(
            "app: %s %s (%s) -> %d: %s",
            self.request.method,
            self.target_path[:200],
            self.public_name,
            status,
            reason,
        )
        keep = self.keep and self.framing is Framing.NONE
        self.app._respond(
            self.client,
            status,
            f"{_REASONS[status]}: {reason}\n".encode(),
            keep=keep,
            head_only=self.request.method == "HEAD",
        )
        return keep

    async def run(self) -> bool:
        """Relay the exchange; whether the client connection may carry another request."""
        app = self.app
        retry_ok = self.request.method in IDEMPOTENT and self.framing is Framing.NONE
        failed: GatewaySession | None = None
        for attempt in range(2):
            candidates = app.connectors_for(self.target)
            session = least_in_flight(candidates, app._load, app._randbelow, failed)
            if session is None:
                if attempt:
                    return self._fail(502, "the connector went away and no other serves it")
                return self._fail(502, f"no connector serves {self.target.address}")
            app.in_flight[session.id] = app.in_flight.get(session.id, 0) + 1
            app.served[session.id] = app.served.get(session.id, 0) + 1
            try:
                try:
                    return await self._through(session, reuse=True, checked=not retry_ok)
                except _Stale:
                    if not retry_ok:
                        return self._fail(502, "the kept connection to the target was closed")
                    return await self._through(session, reuse=False)
            except _Retry as exc:
                if not retry_ok or attempt:
                    return self._fail(502, f"the connector went away ({exc})")
                log.info("app: connector session#%d went away; retrying", session.id)
                failed = session
            finally:
                left = app.in_flight.get(session.id, 1) - 1
                if left:
                    app.in_flight[session.id] = left
                else:
                    app.in_flight.pop(session.id, None)
        return False  # not reached

    async def _through(
        self, session: GatewaySession, *, reuse: bool, checked: bool = False
    ) -> bool:
        """``checked``: take a kept connection only once a ping showed it still open
        (a request that cannot be sent again must not go to a closed one)."""
        app = self.app
        target = self.target
        upstream = None
        if reuse:
            pool = app.pool
            if checked:
                upstream = await pool.take_checked(session, target, app.config.connect_timeout)
            else:
                upstream = pool.take(session, target)
        self.reused = upstream is not None
        if upstream is None:
            try:
                upstream = await app.pool.open(
                    session, target, app.targets.context(target), app.config.connect_timeout
                )
            except TargetUnreachable as exc:
                return self._fail(502, str(exc))
            except SessionLost as exc:
                raise _Retry(str(exc)) from None
        reusable = False
        upload: asyncio.Task[None] | None = None
        try:
            client = self.client
            info = client.info
            if info is None:  # once per connection: the peer and the app port stay
                peer = client.peer[0]
                info = client.info = ClientInfo(peer, client.local_port, peer in app.config.trusted)
            fields = request_headers(
                self.request.headers,
                target,
                info,
                self.public_host,
                app.config.trusted,
                upgrade=self.upgrade,
                chunked=self.framing is Framing.CHUNKED,
            )
            head = build_head(f"{self.request.method} {self.target_path} HTTP/1.1", fields)
            try:
                upstream.write(head)
            except StreamClosed as exc:
                if self.reused:
                    raise _Stale from None
                raise _Retry(str(exc)) from None
            if self.framing is not Framing.NONE:
                upload = asyncio.get_running_loop().create_task(self._upload(upstream))
                upload.add_done_callback(functools.partial(_abort_on_failure, upstream))
            reusable = await self._answer(session, upstream, upload)
            return self.keep
        finally:
            if upload is not None and not upload.done():
                upload.cancel()
                reusable = False
            if reusable:
                app.pool.give(session, target, upstream)
            else:
                upstream.abort()

    async def _upload(self, upstream: Upstream) -> None:
        """The request body, client to target, as it arrives (back-pressure: drain)."""
        framer = BodyFramer(self.framing, self.length)
        client = self.client
        while not framer.done:
            data = await client.read(self.app.config.timeout)
            if not data:
                raise StreamClosed("the client ended its body early")
            out, rest = framer.feed(data)
            if out:
                upstream.write(out)
                if upstream.must_drain:
                    await upstream.drain()
            if rest is not None:
                client.inbox.unread(rest)

    async def _answer(
        self, session: GatewaySession, upstream: Upstream, upload: asyncio.Task[None] | None
    ) -> bool:
        """Relay the answer; whether the upstream connection can be kept."""
        client = self.client
        buffer = b""
        timeout = self.app.config.timeout
        while True:
            try:
                data = await upstream.read(timeout)
            except TimeoutError:
                self._fail(504, f"no answer from {self.target.address} in time")
                raise _Done from None
            except StreamClosed as exc:
                if session.conn is None or session.conn.is_closed():
                    raise _Retry(str(exc)) from None  # nothing was answered yet
                if self.reused and not buffer:
                    raise _Stale from None
                self._fail(502, f"{self.target.address} reset the connection ({exc})")
                raise _Done from None
            if not data:
                if self.reused and not buffer:
                    raise _Stale
                if upload is not None and upload.done() and upload.exception() is not None:
                    raise _Done from upload.exception()
                self._fail(502, f"{self.target.address} closed without an answer")
                raise _Done
            buffer = buffer + data if buffer else data
            try:
                end = find_head_end(buffer)
                if end < 0:
                    continue
                response = parse_response_head(buffer[:end])
                framing, length = response_framing(self.request.method, response)
            except HTTPError as exc:
                self._fail(502, f"bad answer from {self.target.address}: {exc}")
                raise _Done from None
            rest, buffer = buffer[end:], buffer[end:]
            if 100 <= response.status < 200 and response.status != 101:
                if self.request.version == "HTTP/1.1":
                    fields = response_headers(
                        response.headers, self.target, "http", self.public_host, self.public_name
                    )
                    client.write(
                        build_head(f"HTTP/1.1 {response.status} {response.reason}", fields)
                    )
                continue
            break
        status = response.status
        if status == 101:
            if self.upgrade is None:
                self._fail(502, "the target switched protocols unasked")
                raise _Done
            return await self._tunnel(upstream, response, rest, upload)
        self.answered = True
        dechunk = framing is Framing.CHUNKED and self.request.version == "HTTP/1.0"
        closes = response.headers.has_token("Connection", "close")
        if framing is Framing.CLOSE or dechunk or closes:
            self.keep = False
        upstream_keeps = framing is not Framing.CLOSE and not closes
        fields = response_headers(
            response.headers, self.target, "http", self.public_host, self.public_name
        )
        if framing is Framing.CHUNKED and not dechunk:
            fields.append(("Transfer-Encoding", "chunked"))
        if not self.keep:
            fields.append(("Connection", "close"))
        # the head goes out with the first body bytes: one send, one segment
        pending = build_head(f"HTTP/1.1 {status} {response.reason}", fields)
        if framing is Framing.NONE or (framing is Framing.LENGTH and len(rest) >= length):
            # the whole answer came with its head (a small one, the common case): one
            # write, and no framer to follow it
            body, extra = (rest[:length], rest[length:]) if length else (b"", rest)
            client.write(pending + body if body else pending)
            if client.must_drain:
                await client.drain()
            return self._upload_settled(upload) and upstream_keeps and not extra
        framer = BodyFramer(framing, length, dechunk)
        data = rest
        after: bytes | None = None
        while True:
            if data:
                try:
                    out, after = framer.feed(data)
                except HTTPError as exc:
                    log.info("app: bad body from %s: %s", self.target.address, exc)
                    raise StreamClosed(str(exc)) from None
                if out:
                    if pending:
                        out, pending = pending + out, b""
                    client.write(out)
                    if client.must_drain:
                        await client.drain()
                if after is not None:
                    break
            if framer.done:
                break
            if pending:
                client.write(pending)  # the client sees the head while the body comes
                pending = b""
            try:
                data = await upstream.read(self.app.config.timeout)
            except TimeoutError:
                log.info("app: %s stalled mid-answer; cutting the client off", self.target.address)
                raise StreamClosed("upstream stalled") from None
            if not data:
                try:
                    framer.finish()
                except HTTPError as exc:
                    raise StreamClosed(f"{self.target.address}: {exc}") from None
                break
        if pending:
            client.write(pending)
        return self._upload_settled(upload) and upstream_keeps and framer.done and not after

    def _upload_settled(self, upload: asyncio.Task[None] | None) -> bool:
        """After the answer: whether the request body was all read (raises _Done if it failed)."""
        if upload is not None:
            if not upload.done():
                self.keep = False  # answered before the body was all read: where would
                return False  # the next request start?
            if upload.exception() is not None:
                raise _Done from upload.exception()
        return True

    async def _tunnel(
        self,
        upstream: Upstream,
        response: Response,
        rest: bytes,
        upload: asyncio.Task[None] | None,
    ) -> bool:
        """``101 Switching Protocols``: from now on bytes flow both ways until both ends close."""
        client = self.client
        self.answered = True
        if upload is not None:
            upload.cancel()
        fields = response_headers(
            response.headers,
            self.target,
            "http",
            self.public_host,
            self.public_name,
            keep_upgrade=True,
        )
        fields.append(("Connection", "upgrade"))
        client.write(build_head(f"HTTP/1.1 101 {response.reason}", fields))
        if rest:
            client.write(rest)

        async def up() -> None:
            while True:
                data = await client.read()
                if not data:
                    upstream.write_eof()
                    return
                upstream.write(data)
                await upstream.drain()

        async def down() -> None:
            while True:
                data = await upstream.read()
                if not data:
                    client.write_eof()
                    return
                client.write(data)
                await client.drain()

        tasks = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.exception() is not None:
                    raise StreamClosed(str(task.exception()))
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
        raise _Done


def _abort_on_failure(upstream: Upstream, upload: asyncio.Task[None]) -> None:
    """A request body that broke off: the target must not wait for the rest of it."""
    if not upload.cancelled() and upload.exception() is not None:
        upstream.abort()
