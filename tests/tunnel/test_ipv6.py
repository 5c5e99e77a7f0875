"""IPv6 on both ends of every remote kind: listeners on ``[::1]``, targets on ``[::1]``.

A remote carries IPv6 hosts in brackets (chisel's ``[::1]:3000:[::1]:80``) and
sockets want them bare; before the fix both ends passed the brackets to bind()
("Name or service not known").  Forward and reverse TCP, UDP and SOCKS listen and
dial on ``::1`` here, and the gateway itself listens on ``::1``; stdio, which
listens on nothing, is in tests/cli/test_ipv6.py with the real processes.
Skipped, naming the reason, on a machine without an IPv6 loopback.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from cc.connector.connector import FatalError
from cc.protocol.remote import parse_remote
from tests.support.harness import MODES, STEP, Harness
from tests.support.net import LOOPBACK, LOOPBACK6, free_port, ipv6_loopback_missing
from tests.support.streams import assert_echoes, echo_handler

__all__: list[str] = []


@pytest.fixture(autouse=True)
def _needs_ipv6_loopback() -> None:
    reason = ipv6_loopback_missing()
    if reason is not None:
        pytest.skip(reason)


async def refused_on_ipv4(port: int) -> bool:
    """True when 127.0.0.1:``port`` refuses: the listener is on ::1 only, as asked."""
    try:
        _, writer = await asyncio.open_connection(LOOPBACK, port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


# -- TCP --------------------------------------------------------------------------------------


@pytest.mark.parametrize("reverse", MODES)
async def test_tcp_remote_listens_and_dials_on_ipv6(harness: Harness, reverse: bool) -> None:
    service = await harness.service(echo_handler, host=LOOPBACK6)  # reachable on ::1 only
    gateway = await harness.gateway()
    port = free_port(LOOPBACK6)
    remote = parse_remote(f"{'R:' if reverse else ''}[::1]:{port}:[::1]:{service}")
    assert remote.local() == f"[::1]:{port}", "chisel's text form keeps the brackets"
    running = await harness.connect(gateway, [remote])
    await assert_echoes(port, host=LOOPBACK6)
    assert await refused_on_ipv4(port)
    listening = gateway.stats if reverse else running.stats
    assert listening.remotes[str(remote)].total == 1


async def test_forward_listener_taken_names_the_bracketed_address(harness: Harness) -> None:
    """A port we cannot have is still fatal, and the message keeps chisel's ``[::1]:port``."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as holder:
        holder.bind((LOOPBACK6, 0))
        holder.listen()
        port = holder.getsockname()[1]
        gateway = await harness.gateway()
        error = await harness.expect_fatal(gateway, [f"[::1]:{port}:[::1]:9"])
    assert isinstance(error, FatalError)
    assert str(error).startswith(f"cannot listen on [::1]:{port}: "), str(error)
    assert "Name or service not known" not in str(error)


# -- UDP --------------------------------------------------------------------------------------


class Datagrams(asyncio.DatagramProtocol):
    """A UDP socket that answers ``b"echo:" + data`` (service) or collects what arrives."""

    def __init__(self, *, echo: bool) -> None:
        self.echo = echo
        self.received: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.echo and self.transport is not None:
            self.transport.sendto(b"echo:" + data, addr)
        self.received.put_nowait((data, addr))


async def udp_socket(*, echo: bool) -> Datagrams:
    _, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: Datagrams(echo=echo), local_addr=(LOOPBACK6, 0)
    )
    return protocol


@pytest.fixture
async def udp_service() -> AsyncIterator[Datagrams]:
    service = await udp_socket(echo=True)
    try:
        yield service
    finally:
        assert service.transport is not None
        service.transport.close()


@pytest.mark.parametrize("reverse", MODES)
async def test_udp_remote_listens_and_dials_on_ipv6(
    harness: Harness, udp_service: Datagrams, reverse: bool
) -> None:
    assert udp_service.transport is not None
    service = udp_service.transport.get_extra_info("sockname")[1]
    port = free_port(LOOPBACK6)
    prefix = "R:" if reverse else ""
    gateway = await harness.gateway()
    await harness.connect(gateway, [f"{prefix}[::1]:{port}:[::1]:{service}/udp"])
    sender = await udp_socket(echo=False)
    assert sender.transport is not None
    try:
        sender.transport.sendto(b"six", (LOOPBACK6, port))
        async with asyncio.timeout(STEP):
            answer, source = await sender.received.get()
            _, relay = await udp_service.received.get()
    finally:
        sender.transport.close()
    assert answer == b"echo:six"
    assert source[0] == LOOPBACK6, "the answer comes from the [::1] listener"
    assert relay[0] == LOOPBACK6, "the datagram reached the service from an IPv6 socket"


# -- SOCKS ------------------------------------------------------------------------------------


async def socks_connect_v6(
    proxy_port: int, target: str, port: int
) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter]:
    """A SOCKS5 CONNECT through the proxy on [::1]; ``target`` an IPv6 address or a name."""
    reader, writer = await asyncio.open_connection(LOOPBACK6, proxy_port)
    writer.write(b"\x05\x01\x00")
    assert await reader.readexactly(2) == b"\x05\x00"
    if ":" in target:
        address = b"\x04" + socket.inet_pton(socket.AF_INET6, target)
    else:
        address = b"\x03" + bytes((len(target),)) + target.encode()
    writer.write(b"\x05\x01\x00" + address + struct.pack("!H", port))
    head = await reader.readexactly(4)
    await reader.readexactly({1: 4, 4: 16}[head[3]] + 2)
    return head[1], reader, writer


async def echo_through_socks(proxy_port: int, target: str, service: int) -> bytes:
    async with asyncio.timeout(STEP):
        code, reader, writer = await socks_connect_v6(proxy_port, target, service)
        try:
            assert code == 0, f"SOCKS reply {code}"
            writer.write(b"through socks over IPv6")
            return await reader.readexactly(23)
        finally:
            writer.close()


async def test_forward_socks_on_ipv6(harness: Harness) -> None:
    """``[::1]:port:socks``: the connector listens on ::1, the gateway dials ::1."""
    service = await harness.service(echo_handler, host=LOOPBACK6)
    port = free_port(LOOPBACK6)
    gateway = await harness.gateway(socks5=True)
    await harness.connect(gateway, [f"[::1]:{port}:socks"])
    assert await echo_through_socks(port, "::1", service) == b"through socks over IPv6"
    assert await refused_on_ipv4(port)


async def test_reverse_socks_on_ipv6(harness: Harness) -> None:
    """``R:[::1]:port:socks``: the gateway listens on ::1, the connector dials ::1."""
    service = await harness.service(echo_handler, host=LOOPBACK6)
    port = free_port(LOOPBACK6)
    gateway = await harness.gateway()
    running = await harness.connect(gateway, [f"R:[::1]:{port}:socks"])
    assert await echo_through_socks(port, "::1", service) == b"through socks over IPv6"
    assert await refused_on_ipv4(port)
    assert running.stats.remotes[f"R:[::1]:{port}=>socks"].total == 1


# -- the gateway itself on ::1 ----------------------------------------------------------------


@pytest.mark.parametrize("host", ["::1", "[::1]"])
async def test_gateway_listens_on_ipv6(
    harness: Harness, caplog: pytest.LogCaptureFixture, host: str
) -> None:
    """``--host ::1`` (or ``[::1]``): the connector reaches it at ``http://[::1]:port``."""
    service = await harness.service(echo_handler, host=LOOPBACK6)
    with caplog.at_level(logging.INFO, logger="cc.server"):
        gateway = await harness.gateway(host=host)
    listening = [r.getMessage() for r in caplog.records if "Listening on" in r.getMessage()]
    assert listening == [f"Listening on http://[::1]:{gateway.ports[0]}"]
    port = free_port(LOOPBACK6)
    server = urlsplit(f"http://[::1]:{gateway.ports[0]}/")
    await harness.connect(gateway, [f"R:[::1]:{port}:[::1]:{service}"], server=server)
    await assert_echoes(port, host=LOOPBACK6)
