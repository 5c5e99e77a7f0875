"""Two spliced connections (a named service's leg and its local end): how each ends.

Real loopback sockets: ``a`` talks to one spliced transport, ``b`` to the other.
A clean end (FIN) on one side reaches the other as a FIN after every byte; a side
cut by a reset must reach the other as a reset, never as a clean end.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import pytest

from cc.tunnel.relay import Holding, Relay, splice
from tests.support.net import LOOPBACK

__all__: list[str] = []

Ends = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _connected_transport() -> tuple[asyncio.Transport, Ends, asyncio.Server]:
    """A transport with a Holding protocol (as splice expects) and the app at its far end."""
    accepted: asyncio.Future[Ends] = asyncio.get_running_loop().create_future()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result((reader, writer))

    server = await asyncio.start_server(accept, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    transport, _ = await asyncio.get_running_loop().create_connection(Holding, LOOPBACK, port)
    return transport, await accepted, server  # type: ignore[return-value]


@pytest.fixture
async def spliced() -> AsyncIterator[tuple[Ends, Ends, Relay]]:
    inner, a, server_a = await _connected_transport()
    outer, b, server_b = await _connected_transport()
    relay = splice(inner, outer)
    yield a, b, relay
    for _, writer in (a, b):
        writer.close()
    server_a.close()
    server_b.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _read_to_end(reader: asyncio.StreamReader) -> tuple[bytes, str]:
    received = b""
    try:
        async with asyncio.timeout(5):
            while chunk := await reader.read(65536):
                received += chunk
    except ConnectionResetError:
        return received, "reset"
    return received, "fin"


@pytest.mark.parametrize("cut", ["inner", "outer"])
async def test_a_side_cut_by_a_reset_resets_the_other(
    spliced: tuple[Ends, Ends, Relay], cut: str
) -> None:
    a, b, relay = spliced
    (_, dead_writer), (live_reader, _) = (a, b) if cut == "inner" else (b, a)
    dead_writer.write(b"half of it")
    async with asyncio.timeout(5):
        assert await live_reader.readexactly(10) == b"half of it"
    _reset(dead_writer)
    _, ending = await _read_to_end(live_reader)
    assert ending == "reset", f"the {cut} side's reset reached the other side as a FIN"
    async with asyncio.timeout(5):
        await relay.done


async def test_a_clean_end_is_a_fin_after_every_byte(spliced: tuple[Ends, Ends, Relay]) -> None:
    (_, a_writer), (b_reader, b_writer) = spliced[0], spliced[1]
    payload = bytes(range(256)) * 4096
    a_writer.write(payload)
    a_writer.write_eof()
    received, ending = await _read_to_end(b_reader)
    assert (received == payload, ending) == (True, "fin")
    b_writer.close()
    async with asyncio.timeout(5):
        await spliced[2].done
