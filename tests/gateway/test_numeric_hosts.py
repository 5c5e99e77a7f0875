"""Numeric host shorthands cannot slip past an ACL: channel targets and SOCKS requests.

The resolver reads ``127.0.011`` as 127.0.0.9 (octal), ``0x7f.1``, ``127.1`` and
``2130706433`` as 127.0.0.1.  The attack: an ACL written in chisel's unescaped
style, ``127.0.0.1:PORT``, also matches the text ``127.0.011:PORT`` (each ``.`` is
any character), and the dial goes to 127.0.0.9, an address the ACL never named.
Everywhere a peer names a target (the gateway's forward channels, SOCKS CONNECTs on
either end, the connector's reverse channels) such a host is refused, never dialled,
and the log names what was asked and what it would have meant; IPv6 targets are
judged in their RFC 5952 spelling, the one that is dialled.

127.0.0.9 is a loopback address on Linux (all of 127/8), so a "victim" service
listens there and must never see a connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from collections.abc import AsyncIterator

import asyncssh
import pytest

from cc.protocol.acl import parse_authfile
from cc.ssh import ChannelOpenError, open_chisel_channel
from tests.support.harness import STEP, ChannelSink, Harness, RunningConnector
from tests.support.net import LOOPBACK6, free_port, ipv6_loopback_missing
from tests.support.streams import echo_handler

__all__: list[str] = []

#: What the attacker's ``127.0.011`` really is.
VICTIM = "127.0.0.9"


class Victim:
    """A TCP service on 127.0.0.9 that counts the connections it accepts."""

    def __init__(self) -> None:
        self.accepted = 0
        self.port = free_port(VICTIM)
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Victim:
        async def accept(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            writer.close()

        self.server = await asyncio.start_server(accept, VICTIM, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def victim() -> AsyncIterator[Victim]:
    async with Victim() as service:
        yield service


def needs_ipv6() -> None:
    reason = ipv6_loopback_missing()
    if reason is not None:
        pytest.skip(reason)


def warnings(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith(logger) and r.levelno >= logging.WARNING
    ]


async def unescaped_acl_connector(
    harness: Harness, victim: Victim, *patterns: str, socks: bool = False
) -> RunningConnector:
    """A gateway whose only user may reach ``127.0.0.1:<victim port>`` in chisel's unescaped
    style (plus ``patterns``), and a connector logged in as that user."""
    allowed = [f"127.0.0.1:{victim.port}", *patterns]
    users = parse_authfile(json.dumps({"u:p": allowed}).encode())
    gateway = await harness.gateway(users=users, socks5=socks)
    remote = f"{free_port()}:socks" if socks else f"{free_port()}:127.0.0.1:{victim.port}"
    return await harness.connect(gateway, [remote], auth=("u", "p"))


# -- the gateway's forward channels -----------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/udp"])
async def test_forward_channel_in_shorthand_is_refused_and_logged(
    harness: Harness, victim: Victim, caplog: pytest.LogCaptureFixture, suffix: str
) -> None:
    running = await unescaped_acl_connector(harness, victim)
    asked = f"127.0.011:{victim.port}{suffix}"
    with (
        caplog.at_level(logging.WARNING, logger="cc.server"),
        pytest.raises(ChannelOpenError) as info,
    ):
        async with asyncio.timeout(STEP):
            await open_chisel_channel(running.connector.conn, asked.encode(), ChannelSink)
    assert info.value.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
    assert f"reads it as {VICTIM}" in info.value.reason, "the client is told why"
    (line,) = [m for m in warnings(caplog, "cc.server") if asked in m]
    assert line.startswith(f"Refused channel to '{asked}' for user 'u': ")
    assert f"reads it as {VICTIM}" in line
    await asyncio.sleep(0.1)
    assert victim.accepted == 0


@pytest.mark.parametrize("host", ["0x7f.1", "127.1", "2130706433", "0177.0.0.1"])
async def test_every_ipv4_shorthand_is_refused_on_the_gateway(
    harness: Harness, caplog: pytest.LogCaptureFixture, host: str
) -> None:
    """With no users (everything allowed) a shorthand is still refused, not dialled."""
    service = await harness.service(echo_handler)
    gateway = await harness.gateway()
    running = await harness.connect(gateway, [f"{free_port()}:127.0.0.1:{service}"])
    with (
        caplog.at_level(logging.WARNING, logger="cc.server"),
        pytest.raises(ChannelOpenError),
    ):
        async with asyncio.timeout(STEP):
            await open_chisel_channel(
                running.connector.conn, f"{host}:{service}".encode(), ChannelSink
            )
    assert any(f"'{host}:{service}'" in m and "127.0.0.1" in m for m in warnings(caplog, "cc"))
    assert gateway.stats.remotes.get(f"127.0.0.1:{service}") is None, "nothing was dialled"


async def test_gateway_acl_judges_the_canonical_ipv6_target(harness: Harness) -> None:
    """``[0:0:0:0:0:0:0:1]:port`` is dialled as ``[::1]:port``: that is what the ACL sees."""
    needs_ipv6()
    service = await harness.service(echo_handler, host=LOOPBACK6)
    users = parse_authfile(json.dumps({"u:p": [rf"\[::1\]:{service}"]}).encode())
    gateway = await harness.gateway(users=users)
    running = await harness.connect(gateway, [f"{free_port()}:[::1]:{service}"], auth=("u", "p"))
    async with asyncio.timeout(STEP):
        chan, sink = await open_chisel_channel(
            running.connector.conn, f"[0:0:0:0:0:0:0:1]:{service}".encode(), ChannelSink
        )
        assert isinstance(sink, ChannelSink)
        chan.write(b"canonical")
        chan.write_eof()
        await sink.done
        chan.close()
    assert bytes(sink.data) == b"canonical"
    assert gateway.stats.remotes[f"[::1]:{service}"].total == 1


# -- SOCKS CONNECTs -----------------------------------------------------------------------------


async def socks_domain_connect(proxy_port: int, name: str, port: int) -> int:
    """A SOCKS5 CONNECT to the DOMAINNAME ``name``; the reply code."""
    async with asyncio.timeout(STEP):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
        try:
            writer.write(b"\x05\x01\x00")
            assert await reader.readexactly(2) == b"\x05\x00"
            address = b"\x03" + bytes((len(name),)) + name.encode()
            writer.write(b"\x05\x01\x00" + address + struct.pack("!H", port))
            head = await reader.readexactly(4)
            await reader.readexactly({1: 4, 4: 16}[head[3]] + 2)
            return head[1]
        finally:
            writer.close()


async def test_socks_shorthand_cannot_pass_an_unescaped_acl(
    harness: Harness, victim: Victim, caplog: pytest.LogCaptureFixture
) -> None:
    """The attack itself: ``127.0.011`` matches ``127.0.0.1:PORT`` and would dial 127.0.0.9."""
    running = await unescaped_acl_connector(harness, victim, "socks", socks=True)
    (proxy,) = [r.local_port for r in running.connector.config.remotes]
    with caplog.at_level(logging.WARNING, logger="cc.server"):
        code = await socks_domain_connect(proxy, "127.0.011", victim.port)
    assert code == 2, "connection not allowed by ruleset"
    await asyncio.sleep(0.1)
    assert victim.accepted == 0
    asked = f"127.0.011:{victim.port}"
    assert any(asked in m and f"reads it as {VICTIM}" in m for m in warnings(caplog, "cc.server"))


async def test_socks_acl_judges_the_canonical_ipv6_name(harness: Harness) -> None:
    """An IPv6 literal sent as a DOMAINNAME is judged (and dialled) as RFC 5952 ``[::1]``."""
    needs_ipv6()
    service = await harness.service(echo_handler, host=LOOPBACK6)
    users = parse_authfile(json.dumps({"u:p": ["socks", rf"\[::1\]:{service}"]}).encode())
    gateway = await harness.gateway(users=users, socks5=True)
    proxy = free_port()
    await harness.connect(gateway, [f"{proxy}:socks"], auth=("u", "p"))
    assert await socks_domain_connect(proxy, "0:0:0:0:0:0:0:1", service) == 0


async def test_connector_socks_refuses_a_shorthand(
    harness: Harness, victim: Victim, caplog: pytest.LogCaptureFixture
) -> None:
    """``R:socks`` has no ACL, but a shorthand is refused there too: one rule everywhere."""
    proxy = free_port()
    gateway = await harness.gateway()
    await harness.connect(gateway, [f"R:{proxy}:socks"])
    with caplog.at_level(logging.WARNING, logger="cc.client"):
        code = await socks_domain_connect(proxy, "127.0.011", victim.port)
    assert code == 2
    await asyncio.sleep(0.1)
    assert victim.accepted == 0
    assert any(f"reads it as {VICTIM}" in m for m in warnings(caplog, "cc.client"))


# -- the connector's reverse channels ---------------------------------------------------------


async def test_connector_refuses_a_shorthand_channel_and_says_why(
    harness: Harness, victim: Victim, caplog: pytest.LogCaptureFixture
) -> None:
    """A gateway asking for ``127.0.011:port`` is refused, with what it would have meant."""
    gateway = await harness.gateway()
    await harness.connect(gateway, [f"R:{free_port()}:{VICTIM}:{victim.port}"])
    (session,) = gateway.sessions
    asked = f"127.0.011:{victim.port}"
    with (
        caplog.at_level(logging.WARNING, logger="cc.client"),
        pytest.raises(ChannelOpenError) as info,
    ):
        async with asyncio.timeout(STEP):
            await open_chisel_channel(session.conn, asked.encode(), ChannelSink)
    assert info.value.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
    (line,) = [m for m in warnings(caplog, "cc.client") if asked in m]
    assert f"reads it as {VICTIM}" in line
    await asyncio.sleep(0.1)
    assert victim.accepted == 0


async def test_connector_matches_its_remotes_in_canonical_form(harness: Harness) -> None:
    """``[0:0::1]:port`` is the declared ``[::1]:port``: served, and dialled as ::1."""
    needs_ipv6()
    service = await harness.service(echo_handler, host=LOOPBACK6)
    gateway = await harness.gateway()
    await harness.connect(gateway, [f"R:{free_port()}:[::1]:{service}"])
    (session,) = gateway.sessions
    async with asyncio.timeout(STEP):
        chan, sink = await open_chisel_channel(
            session.conn, f"[0:0::1]:{service}".encode(), ChannelSink
        )
        assert isinstance(sink, ChannelSink)
        chan.write(b"declared")
        chan.write_eof()
        await sink.done
        chan.close()
    assert bytes(sink.data) == b"declared"
