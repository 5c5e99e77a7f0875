"""asyncio TCP services for ``Harness.service`` and the client side that checks them.

Services: an echo, one that answers only after EOF (half-close), one that sends a
blob while hashing what it reads.  Clients: round trips through an echo and the
64 MiB-each-way bulk exchange, every byte checked by value or by sha256.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable

from tests.support.net import LOOPBACK, blob

__all__ = [
    "CHUNK",
    "DIGEST",
    "STEP",
    "Blob",
    "ServiceHandler",
    "answer_after_eof",
    "assert_echoes",
    "bulk_exchange",
    "digest_service",
    "echo_handler",
    "hash_exactly",
    "round_trip",
    "send_all",
]

#: Upper bound for one step of an in-process test (connect, one exchange, one shutdown).
STEP = 10.0
#: Write size of ``send_all``.
CHUNK = 256 * 1024
DIGEST = hashlib.sha256().digest_size

ServiceHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Blob:
    """Seeded random bytes and their sha256, made once per run."""

    def __init__(self, seed: int, size: int) -> None:
        self.data = random.Random(seed).randbytes(size)
        self.digest = hashlib.sha256(self.data).digest()


# --------------------------------------------------------------------------- services


async def echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo until EOF: a half-close-aware echo service (``Harness.service`` closes it)."""
    while chunk := await reader.read(1 << 16):
        writer.write(chunk)
        await writer.drain()


async def answer_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads until EOF, only then answers with the size and sha256 of what it read."""
    data = await reader.read(-1)
    writer.write(b"%d %s" % (len(data), hashlib.sha256(data).hexdigest().encode()))
    await writer.drain()


def digest_service(answer: bytes) -> ServiceHandler:
    """Sends ``answer`` while reading to EOF, then sends the sha256 of what it read."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sender = asyncio.ensure_future(send_all(writer, answer, eof=False))
        digest = hashlib.sha256()
        while chunk := await reader.read(1 << 20):
            digest.update(chunk)
        await sender
        writer.write(digest.digest())
        await writer.drain()

    return handle


# --------------------------------------------------------------------------- clients


async def send_all(writer: asyncio.StreamWriter, data: bytes, *, eof: bool) -> None:
    view = memoryview(data)
    for offset in range(0, len(view), CHUNK):
        writer.write(view[offset : offset + CHUNK])
        await writer.drain()
    if eof:
        writer.write_eof()


async def hash_exactly(reader: asyncio.StreamReader, size: int) -> bytes:
    """sha256 of the next ``size`` bytes (IncompleteReadError if the stream ends early)."""
    digest = hashlib.sha256()
    left = size
    while left:
        chunk = await reader.read(min(left, 1 << 20))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", left)
        digest.update(chunk)
        left -= len(chunk)
    return digest.digest()


async def round_trip(
    port: int,
    payload: bytes,
    *,
    half_close: bool = True,
    timeout: float | None = STEP,
    host: str = LOOPBACK,
) -> bytes:
    """``payload`` through an echo service behind ``host``:``port``; what came back.

    ``half_close``: send it all, then EOF, and read until the echo's EOF (which
    proves the half-close crossed).  Otherwise read back exactly as many bytes
    with the connection still open both ways.
    """
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            if not half_close:
                writer.write(payload)
                await writer.drain()
                return await reader.readexactly(len(payload))
            sender = asyncio.ensure_future(send_all(writer, payload, eof=True))
            answer = await reader.read(-1)
            await sender
            return answer
        finally:
            writer.close()


async def assert_echoes(
    port: int, size: int = 256 * 1024, seed: int = 0, *, host: str = LOOPBACK
) -> None:
    """Send ``size`` random bytes to ``host``:``port`` and require them back unchanged."""
    payload = blob(size, seed)
    answer = await round_trip(port, payload, host=host)
    assert len(answer) == len(payload), f"{len(answer)} of {len(payload)} bytes came back"
    assert answer == payload, "the bytes came back changed"


async def bulk_exchange(port: int, bulk: tuple[Blob, Blob]) -> None:
    """``bulk[0]`` one way and ``bulk[1]`` the other at once through one connection,
    then the digest of what the service read, after our EOF."""
    mine, theirs = bulk
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        sender = asyncio.ensure_future(send_all(writer, mine.data, eof=True))
        received = await hash_exactly(reader, len(theirs.data))
        their_digest = await reader.readexactly(DIGEST)
        assert await reader.read() == b"", "the service closes after its digest"
        await sender
    finally:
        writer.close()
    assert received == theirs.digest, "bytes from the service arrived changed"
    assert their_digest == mine.digest, "the service read something other than we sent"
