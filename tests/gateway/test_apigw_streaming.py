"""Bodies stream through the HTTP API gateway live, both ways, in bounded memory."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.apigw import ApiGateway, Backend, Client, pattern_sha256
from tests.support.harness import Harness

__all__: list[str] = []


@pytest.fixture
async def api(harness: Harness, tmp_path: Path) -> AsyncIterator[tuple[ApiGateway, Backend]]:
    backend = await Backend().start()
    a = ApiGateway(harness, tmp_path)
    await a.start(
        f"targets:\n  api.test:\n    protocol: http\n    hostname: 127.0.0.1\n"
        f"    port: {backend.port}\n",
        timeout=30,
    )
    await a.connect([f"127.0.0.1:{backend.port}"])
    try:
        yield a, backend
    finally:
        await a.close()
        await backend.close()


async def test_slow_ticks_arrive_live(api: tuple[ApiGateway, Backend]) -> None:
    gateway, _ = api
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        started = time.monotonic()
        writer.write(b"GET /tick?n=5&s=0.4 HTTP/1.1\r\nHost: api.test\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b"tick 0\n"), 5)
        first = time.monotonic() - started
        await asyncio.wait_for(reader.readuntil(b"tick 1\n"), 5)
        second = time.monotonic() - started
        assert first < 0.3, first  # not held until the answer ends (2 s)
        assert 0.3 < second < 1.0, second
    finally:
        writer.close()


async def test_64_mib_both_ways(api: tuple[ApiGateway, Backend]) -> None:
    """sha256 both ways (the gateway's own memory is bounded in tests/cli/test_apigw_cli.py)."""
    gateway, _ = api
    size = 64 << 20
    async with Client(gateway.port) as client:
        response = await asyncio.wait_for(client.upload("/upload", size), 120)
        assert response.status == 200
        assert f"body {size} {pattern_sha256(size)}" in response.text
        got = await asyncio.wait_for(client.download(f"/download?size={size}"), 120)
        assert got == (200, size, pattern_sha256(size))
