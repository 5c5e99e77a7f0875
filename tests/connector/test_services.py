"""Our own ends of named services (issue 13 B), in process: the registrar and a client leg.

A ``ServiceRegistrar`` (what ``client R:svc/PATH:HOST:PORT`` runs) registers a path
at an in-process gateway and splices each announced client to a local service;
``open_webroute`` (what ``connect`` runs) is the client.  The CLIs and OpenSSH's
ProxyCommand are in tests/system/test_named_services.py, the PHP SDK in
tests/interop/test_remoted.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import SplitResult

import pytest

from cc.connector.connector import FatalError
from cc.connector.webroute import ServiceConfig, ServiceRegistrar
from cc.gateway.gateway import Gateway
from cc.gateway.webroute import WebRouteSettings
from cc.protocol.webroute import KeyTable, WebRouteRefused, parse_service_remote
from cc.transport.tls import TLSOptions
from cc.transport.webroute import ServiceURL, open_webroute
from tests.support.harness import STEP, Harness, wait_until
from tests.support.net import free_port
from tests.support.streams import answer_after_eof, echo_handler
from tests.support.tls import Pki

__all__: list[str] = []

SERVER_KEY = "server-key-0123456789"
CLIENT_KEY = "client-key-0123456789"


async def services_gateway(harness: Harness) -> Gateway:
    return await harness.gateway(
        webroute=WebRouteSettings(KeyTable.from_keys(SERVER_KEY, CLIENT_KEY))
    )


def gateway_url(gateway: Gateway) -> SplitResult:
    return SplitResult("http", f"127.0.0.1:{gateway.ports[0]}", "", "", "")


@contextlib.asynccontextmanager
async def registrar(
    gateway: Gateway, spec: str, key: str = SERVER_KEY, **options: object
) -> AsyncIterator[ServiceRegistrar]:
    config = ServiceConfig(gateway_url(gateway), parse_service_remote(spec), key, **options)  # type: ignore[arg-type]
    running = ServiceRegistrar(config)
    task = asyncio.get_running_loop().create_task(running.run())
    try:
        yield running
    finally:
        running.stop()
        async with asyncio.timeout(STEP):
            await asyncio.gather(task, return_exceptions=True)


class Leg:
    """A client leg as ``connect`` opens it, read and written with streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, gateway: Gateway, path: str, key: str = CLIENT_KEY) -> Leg:
        service = ServiceURL(gateway_url(gateway), path, None)
        transport, early = await open_webroute(service, key, timeout=STEP)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if early:
            reader.feed_data(early)
        transport.resume_reading()
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        return cls(reader, writer)

    async def round_trip(self, data: bytes) -> bytes:
        self.writer.write(data)
        async with asyncio.timeout(STEP):
            return await self.reader.readexactly(len(data))


async def registered(gateway: Gateway, path: str, count: int = 1) -> None:
    services = gateway.named_services
    assert services is not None
    await wait_until(lambda: len(services.directory.servers(path)) == count)


async def test_registrar_serves_a_path(harness: Harness) -> None:
    gateway = await services_gateway(harness)
    echo = await harness.service(echo_handler)
    async with registrar(gateway, f"R:svc/echo:127.0.0.1:{echo}") as running:
        await registered(gateway, "/echo")
        legs = await asyncio.gather(*(Leg.open(gateway, "/echo") for _ in range(8)))
        payload = bytes(range(256)) * 4096
        answers = await asyncio.gather(*(leg.round_trip(payload) for leg in legs))
        assert all(a == payload for a in answers)
        assert running.stats.total == 8
        for leg in legs:
            leg.writer.close()


async def test_half_close_crosses_the_named_service(harness: Harness) -> None:
    gateway = await services_gateway(harness)
    service = await harness.service(answer_after_eof)
    async with registrar(gateway, f"R:svc/answer:127.0.0.1:{service}"):
        await registered(gateway, "/answer")
        leg = await Leg.open(gateway, "/answer")
        data = b"x" * 100_000
        leg.writer.write(data)
        leg.writer.write_eof()
        async with asyncio.timeout(STEP):
            answer = await leg.reader.read(-1)
        assert answer == b"%d %s" % (len(data), hashlib.sha256(data).hexdigest().encode())


async def test_unreachable_target_closes_the_client_at_once(harness: Harness) -> None:
    gateway = await services_gateway(harness)
    async with registrar(gateway, f"R:svc/down:127.0.0.1:{free_port()}") as running:
        await registered(gateway, "/down")
        leg = await Leg.open(gateway, "/down")
        async with asyncio.timeout(5):  # not the gateway's 60 s timeout
            assert await leg.reader.read(-1) == b""
        assert running.stats.failed == 1


async def test_two_registrars_share_the_path_and_one_may_go(harness: Harness) -> None:
    gateway = await services_gateway(harness)
    echo = await harness.service(echo_handler)
    spec = f"R:svc/echo:127.0.0.1:{echo}"
    async with registrar(gateway, spec) as first:
        async with registrar(gateway, spec) as second:
            await registered(gateway, "/echo", 2)
            for _ in range(4):
                leg = await Leg.open(gateway, "/echo")
                assert await leg.round_trip(b"ping") == b"ping"
                leg.writer.close()
            assert (first.stats.total, second.stats.total) == (2, 2), "in turn"
        await registered(gateway, "/echo", 1)
        leg = await Leg.open(gateway, "/echo")
        assert await leg.round_trip(b"still") == b"still"
        assert first.stats.total == 3


async def test_registrar_comes_back_after_the_gateway_drops_it(harness: Harness) -> None:
    gateway = await services_gateway(harness)
    echo = await harness.service(echo_handler)
    async with registrar(gateway, f"R:svc/echo:127.0.0.1:{echo}", max_retry_interval=0.2):
        await registered(gateway, "/echo")
        services = gateway.named_services
        assert services is not None
        for server in services.directory.servers("/echo"):
            server.transport.abort()
        await wait_until(lambda: not services.directory.servers("/echo"))
        await registered(gateway, "/echo")
        leg = await Leg.open(gateway, "/echo")
        assert await leg.round_trip(b"back") == b"back"


async def test_wrong_server_key_is_fatal(harness: Harness) -> None:
    gateway = await services_gateway(harness)
    config = ServiceConfig(
        gateway_url(gateway), parse_service_remote("R:svc/x:127.0.0.1:9"), "wrong"
    )
    with pytest.raises(
        FatalError, match=r"refused the server key \(403 Forbidden \(invalid_missing_apikey\)\)"
    ):
        async with asyncio.timeout(STEP):
            await ServiceRegistrar(config).run()


async def test_client_leg_reports_the_gateways_answer(harness: Harness) -> None:
    gateway = await services_gateway(harness)
    with pytest.raises(WebRouteRefused) as info:
        await Leg.open(gateway, "/nobody")
    assert (info.value.status, info.value.errorcode) == (502, "missing_destination")
    with pytest.raises(WebRouteRefused) as info:
        await Leg.open(gateway, "/nobody", key="wrong")
    assert (info.value.status, info.value.errorcode) == (403, "invalid_missing_apikey")


async def test_named_service_over_tls(harness: Harness, tmp_path: Path) -> None:
    """https:// gateway: registration, both legs and the relay over TLS (no half-close)."""
    pki = Pki(tmp_path)
    tls = pki.server(pki.issue("127.0.0.1"))
    keys = KeyTable.from_keys(SERVER_KEY, CLIENT_KEY)
    gateway = await harness.gateway(webroute=WebRouteSettings(keys), tls=tls.context)
    echo = await harness.service(echo_handler)
    url = SplitResult("https", f"127.0.0.1:{gateway.ports[0]}", "", "", "")
    options = TLSOptions(ca=str(pki.ca_pem))
    config = ServiceConfig(
        url, parse_service_remote(f"R:svc/echo:127.0.0.1:{echo}"), SERVER_KEY, tls=options
    )
    running = ServiceRegistrar(config)
    task = asyncio.get_running_loop().create_task(running.run())
    try:
        await registered(gateway, "/echo")
        transport, early = await open_webroute(
            ServiceURL(url, "/echo", None), CLIENT_KEY, tls=options
        )
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        reader.feed_data(early)
        transport.resume_reading()
        transport.write(b"over tls")
        async with asyncio.timeout(STEP):
            assert await reader.readexactly(8) == b"over tls"
        transport.close()
    finally:
        running.stop()
        async with asyncio.timeout(STEP):
            await asyncio.gather(task, return_exceptions=True)
