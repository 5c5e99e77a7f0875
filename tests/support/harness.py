"""The in-process test bench: a gateway, connectors against it, small TCP services.

:class:`Harness` starts gateways (127.0.0.1, port 0, the given host key,
``reverse=True``), connectors against them and TCP services, and stops all of
them in ``aclose()``, every wait bounded by :data:`STEP`.  :class:`Tunnel` is one
connector with one remote to a service, reverse or forward.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import asyncssh
import pytest

from cc.connector.connector import Connector, ConnectorConfig, FatalError
from cc.gateway.gateway import Gateway, GatewayConfig
from cc.protocol.remote import Remote, parse_remote
from cc.stats import RemoteStats, SessionStats
from tests.support.net import LOOPBACK, free_port
from tests.support.streams import STEP, ServiceHandler

__all__ = [
    "MODES",
    "STEP",
    "ChannelSink",
    "Harness",
    "RunningConnector",
    "Tunnel",
    "http_exchange",
    "split_response",
    "upgrade_request",
    "wait_until",
]

#: Parametrize a test over both directions of a remote.
MODES = [pytest.param(True, id="reverse"), pytest.param(False, id="forward")]


async def wait_until(predicate: Callable[[], bool], timeout: float = STEP) -> None:
    """Poll ``predicate`` until it holds; TimeoutError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@dataclasses.dataclass
class RunningConnector:
    """A connector whose ``run()`` is a task; ``stop()`` ends it and waits (bounded)."""

    connector: Connector
    task: asyncio.Task[None]

    @property
    def stats(self) -> SessionStats:
        return self.connector.stats

    async def stop(self) -> None:
        self.connector.stop()
        async with asyncio.timeout(STEP):
            with contextlib.suppress(FatalError, asyncio.CancelledError):
                await self.task


class Harness:
    """Starts gateways, connectors and services; ``aclose()`` stops them all."""

    def __init__(self, host_key_pem: bytes) -> None:
        self.host_key_pem = host_key_pem
        self.gateways: list[Gateway] = []
        self.connectors: list[RunningConnector] = []
        self.servers: list[asyncio.Server] = []

    # -- gateway ------------------------------------------------------------
    async def gateway(
        self, *, before_start: Callable[[Gateway], None] | None = None, **overrides: Any
    ) -> Gateway:
        """An in-process gateway on 127.0.0.1 with a free port; ``overrides`` go to its config.

        ``before_start`` may change the gateway object before it listens (a test hook).
        """
        settings: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "host_key_pem": self.host_key_pem,
            "reverse": True,
        }
        settings.update(overrides)
        gateway = Gateway(GatewayConfig(**settings))
        if before_start is not None:
            before_start(gateway)
        await gateway.start()
        self.gateways.append(gateway)
        return gateway

    @staticmethod
    def url(gateway: Gateway, path: str = "/") -> str:
        return f"http://127.0.0.1:{gateway.ports[0]}{path}"

    # -- connector ------------------------------------------------------------
    def connector_config(
        self, gateway: Gateway | str, remotes: list[Remote | str], **overrides: Any
    ) -> ConnectorConfig:
        """A config for ``gateway`` (or a URL) that gives up quickly instead of retrying long."""
        if isinstance(gateway, str):
            url, fingerprint = gateway, ""
        else:  # a closed gateway has no port: then the caller's ``server`` must do
            url = overrides.get("server") or self.url(gateway)
            fingerprint = gateway.fingerprint
        settings: dict[str, Any] = {
            "server": urlsplit(url) if isinstance(url, str) else url,
            "remotes": [parse_remote(r) if isinstance(r, str) else r for r in remotes],
            "fingerprint": fingerprint,
            "max_retry_count": 2,
            "max_retry_interval": 0.2,
            "connect_timeout": STEP,
            "drain_timeout": 1.0,  # teardown must not wait long for open connections
        }
        settings.update(overrides)
        return ConnectorConfig(**settings)

    def start(
        self,
        gateway: Gateway | str,
        remotes: list[Remote | str],
        *,
        rng: Callable[[], float] | None = None,
        **overrides: Any,
    ) -> RunningConnector:
        """Run a connector without waiting for it; ``aclose()`` stops it.

        ``rng`` is the backoff's random source (see ``Connector``).
        """
        connector = Connector(self.connector_config(gateway, remotes, **overrides), rng=rng)
        running = RunningConnector(
            connector, asyncio.get_running_loop().create_task(connector.run())
        )
        self.connectors.append(running)
        return running

    async def connect(
        self, gateway: Gateway, remotes: list[Remote | str], **overrides: Any
    ) -> RunningConnector:
        """Run a connector and return once it is connected; its failure is raised here."""
        running = self.start(gateway, remotes, **overrides)
        connected = asyncio.ensure_future(running.connector.connected.wait())
        try:
            async with asyncio.timeout(STEP):
                await asyncio.wait({running.task, connected}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            connected.cancel()
        if running.task.done():
            running.task.result()  # raises FatalError (or whatever ended it)
            raise AssertionError("connector stopped before it connected")
        return running

    async def expect_fatal(
        self, gateway: Gateway | str, remotes: list[Remote | str], **overrides: Any
    ) -> FatalError:
        """Run a connector that must stop with FatalError (within STEP) and never connect."""
        connector = Connector(self.connector_config(gateway, remotes, **overrides))
        connected = asyncio.ensure_future(connector.connected.wait())
        try:
            with pytest.raises(FatalError) as info:
                async with asyncio.timeout(STEP):
                    await connector.run()
            await asyncio.sleep(0)  # let a set() that happened wake its waiter
            assert not connected.done(), "the connector connected before it failed"
        finally:
            connected.cancel()
        return info.value

    # -- services -------------------------------------------------------------
    async def service(self, handler: ServiceHandler, host: str = LOOPBACK) -> int:
        """A TCP service on ``host`` running ``handler`` per connection; returns its port."""

        async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass  # the test at the other end reports what went wrong
            finally:
                writer.close()

        server = await asyncio.start_server(guarded, host, 0, backlog=1024)
        self.servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def aclose(self) -> None:
        """Connectors, then gateways, then services; every one is tried, the first error wins."""
        steps: list[Callable[[], Awaitable[None]]] = [r.stop for r in self.connectors]
        steps += [g.close for g in self.gateways]
        for server in self.servers:
            server.close()
            steps.append(server.wait_closed)
        errors: list[BaseException] = []
        for step in steps:
            try:
                async with asyncio.timeout(STEP):
                    await step()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


class Tunnel:
    """A connector with one remote to ``service``; ``port`` is where clients connect.

    ``reverse``: the gateway listens on ``port`` and the connector dials the service.
    Forward: the connector listens on ``port`` and the gateway dials the service.
    """

    def __init__(self, harness: Harness, service: int, *, reverse: bool) -> None:
        self.harness = harness
        self.port = free_port()
        prefix = "R:" if reverse else ""
        self.remote = parse_remote(f"{prefix}127.0.0.1:{self.port}:127.0.0.1:{service}")
        self.reverse = reverse

    async def start(self, **gateway_options: object) -> Tunnel:
        self.gateway = await self.harness.gateway(**gateway_options)
        self.connector = await self.harness.connect(self.gateway, [self.remote])
        return self

    def connector_stats(self) -> RemoteStats:
        return self.connector.stats.remotes[str(self.remote)]

    def gateway_stats(self) -> RemoteStats:
        # the gateway counts reverse remotes by name and forward channels by target
        key = str(self.remote) if self.reverse else self.remote.target()
        return self.gateway.stats.remotes[key]


def upgrade_request(path: str = "/", *extra: str, protocol: str = "chisel-v3") -> bytes:
    """A raw WebSocket upgrade request as chisel's client sends it, plus ``extra`` lines."""
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        f"Sec-WebSocket-Protocol: {protocol}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def http_exchange(port: int, request: bytes, *, until_eof: bool = True) -> bytes:
    """Send raw ``request`` bytes; return what comes back until EOF (or one head)."""
    async with asyncio.timeout(STEP):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request)
            if until_eof:
                return await reader.read(-1)
            return await reader.readuntil(b"\r\n\r\n")
        finally:
            writer.close()


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, body) of one raw HTTP/1.1 response."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {raw[:200]!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, status, *_ = status_line.split(" ", 2)
    assert version == "HTTP/1.1", status_line
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status), headers, body


class ChannelSink(asyncssh.SSHTCPSession[bytes]):
    """The session of a hand-made channel: keeps what arrives; ``done`` at EOF or close."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes, datatype: object = None) -> None:
        self.data += data

    def eof_received(self) -> bool:
        if not self.done.done():
            self.done.set_result(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)
