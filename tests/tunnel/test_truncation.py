"""No silent truncation (issue 11 bug 3): a tunnelled connection that did not end by EOF
ends in a reset, on both ends; one that did still ends with a FIN after every byte.

Four kinds of tunnelled connection, ours to ours: a reverse remote (the gateway
listens), a forward listener (the connector listens), and SOCKS both ways.  The
applications at either end are raw non-blocking sockets driven by the loop, so that
what the kernel reports (``recv`` returning ``b""`` or raising ConnectionResetError)
is what the test sees.  Each reading socket is only read, never written: a write
would consume the reset (ECONNRESET is reported once) and leave a plain EOF behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from cc.connector.connector import Connector
from cc.gateway.gateway import Gateway
from tests.support.harness import STEP, Harness, wait_until
from tests.support.net import free_port

__all__: list[str] = []

KINDS = ["reverse", "forward", "socks", "reverse-socks"]
MiB = 1 << 20
CHUNK = b"\x5a" * (64 * 1024)
_LINGER_ZERO = struct.pack("ii", 1, 0)


@dataclass
class Setup:
    """One tunnel of a kind: connect ``port`` (SOCKS when ``socks``) to reach the service."""

    gateway: Gateway
    connector: Connector
    port: int
    socks: bool
    service: socket.socket

    async def open(self) -> tuple[socket.socket, socket.socket]:
        """(the client's socket, the service's) of one new tunnelled connection."""
        loop = asyncio.get_running_loop()
        client = socket.socket()
        client.setblocking(False)
        target_port = self.service.getsockname()[1]
        async with asyncio.timeout(STEP):
            await loop.sock_connect(client, ("127.0.0.1", self.port))
            if self.socks:
                await loop.sock_sendall(client, b"\x05\x01\x00")
                assert await _recv_exactly(client, 2) == b"\x05\x00"
                request = b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1")
                await loop.sock_sendall(client, request + struct.pack("!H", target_port))
                reply = await _recv_exactly(client, 10)
                assert reply[:2] == b"\x05\x00", reply
            served, _ = await loop.sock_accept(self.service)
        served.setblocking(False)
        # Both ends are connected through the tunnel before the test starts.
        await loop.sock_sendall(client, b"hi")
        assert await _recv_exactly(served, 2) == b"hi"
        return client, served


async def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await asyncio.get_running_loop().sock_recv(sock, size - len(data))
        assert chunk, f"EOF after {data!r}"
        data += chunk
    return data


@contextlib.asynccontextmanager
async def tunnel(harness: Harness, kind: str) -> AsyncIterator[Setup]:
    service = socket.create_server(("127.0.0.1", 0))
    service.setblocking(False)
    port, target = free_port(), f"127.0.0.1:{service.getsockname()[1]}"
    remote = {
        "reverse": f"R:127.0.0.1:{port}:{target}",
        "forward": f"127.0.0.1:{port}:{target}",
        "socks": f"127.0.0.1:{port}:socks",
        "reverse-socks": f"R:127.0.0.1:{port}:socks",
    }[kind]
    with service:
        gateway = await harness.gateway(socks5=kind == "socks")
        running = await harness.connect(gateway, [remote])
        yield Setup(gateway, running.connector, port, kind.endswith("socks"), service)


class Reader:
    """Reads ``sock`` to its end in a task: ``ended`` is "eof" or "reset"."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.count = 0
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> str:
        loop = asyncio.get_running_loop()
        try:
            while data := await loop.sock_recv(self.sock, 1 << 16):
                self.count += len(data)
        except ConnectionResetError:
            return "reset"
        return "eof"

    async def ended(self) -> str:
        async with asyncio.timeout(STEP):
            return await self.task


async def pour(sock: socket.socket) -> None:
    """Write until the connection fails (the test cancels it otherwise)."""
    with contextlib.suppress(OSError):
        while True:
            await asyncio.get_running_loop().sock_sendall(sock, CHUNK)


def reset(sock: socket.socket) -> None:
    """Close with an RST, as an application that aborts its connection does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    sock.close()


@pytest.mark.parametrize("dies", ["gateway", "connector"])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_dead_session_resets_both_ends(harness: Harness, kind: str, dies: str) -> None:
    """The session is aborted mid-transfer: the client reading a download and the
    service reading an upload each see ConnectionResetError, never a clean EOF."""
    async with tunnel(harness, kind) as setup:
        down_client, down_service = await setup.open()
        up_client, up_service = await setup.open()
        sockets = [down_client, down_service, up_client, up_service]
        download, upload = Reader(down_client), Reader(up_service)
        pourers = [asyncio.ensure_future(pour(s)) for s in (down_service, up_client)]
        try:
            await wait_until(lambda: min(download.count, upload.count) >= MiB)
            if dies == "gateway":
                for session in list(setup.gateway.sessions):
                    session.conn.abort()
            else:
                setup.connector.conn.abort()
            ends = (await download.ended(), await upload.ended())
            counts = (download.count, upload.count)
            assert ends == ("reset", "reset"), f"{ends} after {counts} bytes"
        finally:
            for task in pourers:
                task.cancel()
            await asyncio.gather(*pourers, return_exceptions=True)
            for sock in sockets:
                sock.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_clean_end_is_a_fin_after_every_byte(harness: Harness, kind: str) -> None:
    """Each side sends 2 MiB and shuts down its write side: each reads all, then b""."""
    size = 2 * MiB
    async with tunnel(harness, kind) as setup:
        client, served = await setup.open()
        with client, served:
            readers = Reader(client), Reader(served)
            loop = asyncio.get_running_loop()
            for sock in (client, served):
                await loop.sock_sendall(sock, CHUNK * (size // len(CHUNK)))
                sock.shutdown(socket.SHUT_WR)
            ends = [(await r.ended(), r.count) for r in readers]
            assert ends == [("eof", size), ("eof", size)]


@pytest.mark.parametrize("who", ["client", "service"])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_local_reset_reaches_the_far_end(harness: Harness, kind: str, who: str) -> None:
    """One application resets its connection: the one at the far end sees a reset."""
    async with tunnel(harness, kind) as setup:
        client, served = await setup.open()
        resetting, far = (client, served) if who == "client" else (served, client)
        with far:
            reader = Reader(far)
            reset(resetting)
            assert await reader.ended() == "reset"
        stats = setup.connector.stats
        await wait_until(lambda: sum(r.open for r in stats.remotes.values()) == 0)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_clean_end_behind_a_full_window_keeps_its_eof(harness: Harness, kind: str) -> None:
    """The service answers 8 MiB and closes while the client does not read yet: the
    far pipe gets the EOF while the answer's tail still waits for the window, and
    the close that follows must not drop that EOF (the client would see a reset)."""
    size = 8 * MiB

    async def answer(served: socket.socket) -> None:
        with served:
            assert await loop.sock_recv(served, 1) == b""
            await loop.sock_sendall(served, CHUNK * (size // len(CHUNK)))

    loop = asyncio.get_running_loop()
    async with tunnel(harness, kind) as setup:
        client, served = await setup.open()
        with client:
            client.shutdown(socket.SHUT_WR)
            answering = asyncio.ensure_future(answer(served))
            await asyncio.wait([answering], timeout=0.5)  # all sent, or as much as fits
            reader = Reader(client)
            assert (await reader.ended(), reader.count) == ("eof", size)
            await answering
