"""Packet sizes: 256 KiB between two of our peers, chisel's 32 KiB otherwise.

Our connector and gateway recognise each other by PEER_HEADER on the upgrade (and
its 101) and then advertise larger channel packets and windows; without the header
(outsystemscc, chisel) every channel stays at Go's 32 KiB / 2 MiB.
"""

from __future__ import annotations

import asyncio

import pytest

from cc import ssh as compat
from tests.support.harness import STEP, Harness, Tunnel
from tests.support.streams import echo_handler


async def _channel_sizes(harness: Harness, *, announce: bool) -> set[tuple[int, int]]:
    service = await harness.service(echo_handler)
    tunnel = Tunnel(harness, service, reverse=True)
    gateway = await harness.gateway()
    await harness.connect(gateway, [tunnel.remote], announce=announce)
    async with asyncio.timeout(STEP):
        reader, writer = await asyncio.open_connection("127.0.0.1", tunnel.port)
        writer.write(b"x" * 1000)
        assert await reader.readexactly(1000) == b"x" * 1000
        sizes = {
            (chan._send_pktsize, chan._recv_pktsize)
            for session in gateway.sessions
            for chan in session.conn._channels.values()
        }
        writer.close()
    return sizes


@pytest.mark.parametrize(
    ("announce", "expected"),
    [
        (True, compat.LARGE_CHANNEL_MAX_PACKET),
        (False, compat.CHANNEL_MAX_PACKET),
    ],
    ids=["our-peers", "unannounced"],
)
async def test_channel_packet_size_follows_the_peer(
    harness: Harness, announce: bool, expected: int
) -> None:
    assert await _channel_sizes(harness, announce=announce) == {(expected, expected)}
