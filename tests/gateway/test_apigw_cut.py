"""A target that dies mid-answer: the client must see a cut answer, never a whole one.

The backend here speaks raw bytes, so it can end an answer short: a Content-Length
body or a chunked one that stops with a FIN, and a close-delimited body that
stops with a reset (the one case where only the way the connection ends tells a
cut from a whole answer).  What the client of the app port must see: a reset
after the bytes that did arrive, never a clean end.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.support.apigw import ApiGateway, targets_yaml
from tests.support.net import LOOPBACK

__all__: list[str] = []

#: What the backend sends before it ends the connection, and whether with a reset.
Answer = tuple[bytes, bool]

CASES: dict[str, Answer] = {
    "length-fin": (b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 500, False),
    "chunked-fin": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", False),
    "close-reset": (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"y" * 500, True),
    "length-reset": (b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"z" * 500, True),
}


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


Start = Callable[[Answer], Awaitable[int]]


@pytest.fixture
async def cut_backend() -> AsyncIterator[Start]:
    """Start a backend that answers each request with ``answer`` and then ends it."""
    servers: list[asyncio.Server] = []

    async def start(answer: Answer) -> int:
        data, reset = answer

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(data)
            await writer.drain()
            await asyncio.sleep(0.2)  # the bytes are on their way before the end
            if reset:
                _reset(writer)
            else:
                writer.close()

        server = await asyncio.start_server(serve, LOOPBACK, 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()


async def _read_until_end(port: int) -> tuple[bytes, str]:
    """(what arrived, how it ended: "fin" or "reset") for one GET on the app port."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    writer.write(b"GET /x HTTP/1.1\r\nHost: api.test\r\n\r\n")
    received = b""
    try:
        async with asyncio.timeout(10):
            while chunk := await reader.read(65536):
                received += chunk
        return received, "fin"
    except ConnectionResetError:
        return received, "reset"
    finally:
        writer.close()


@pytest.mark.parametrize("case", list(CASES))
async def test_a_cut_answer_reaches_the_client_as_a_reset(
    api: ApiGateway, cut_backend: Start, case: str
) -> None:
    answer = CASES[case]
    port = await cut_backend(answer)
    await api.start(targets_yaml(port))
    await api.connect([f"127.0.0.1:{port}"])
    received, ending = await _read_until_end(api.port)
    assert received.startswith(b"HTTP/1.1 200 OK\r\n"), received[:200]
    assert ending == "reset", f"{case}: the cut answer ended with a FIN after {len(received)} bytes"


async def test_a_close_delimited_answer_that_ends_with_a_fin_is_whole(
    api: ApiGateway, cut_backend: Start
) -> None:
    """The other side of the rule: a close-delimited body ends with its FIN."""
    port = await cut_backend((b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"w" * 500, False))
    await api.start(targets_yaml(port))
    await api.connect([f"127.0.0.1:{port}"])
    received, ending = await _read_until_end(api.port)
    assert ending == "fin"
    assert received.endswith(b"\r\n\r\n" + b"w" * 500)
