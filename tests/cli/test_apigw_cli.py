"""Both HTTP API gateway commands as an operator runs them, and the gateway's memory.

``cloud-connector server --targets ... --app-port ...`` and ``cloud-connector client
--http-target ... --identifier ...`` are child processes; the backend and the h11
client run in the test, so psutil sees the gateway process alone.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import psutil
import pytest

from tests.support.apigw import Backend, Client, pattern_sha256
from tests.support.chisel import CONNECTED_RE
from tests.support.net import free_port
from tests.support.processes import CC, Processes

__all__: list[str] = []


async def _gateway_and_connector(
    procs: Processes, tmp_path: Path, backend: Backend, *options: str
) -> tuple[int, int]:
    """Start both commands; (gateway pid, app port)."""
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        "targets:\n  api.test:\n    protocol: http\n    hostname: 127.0.0.1\n"
        f"    port: {backend.port}\n    identifier: dc1\n"
    )
    app_port = free_port()
    server, url = procs.our_server(
        "--targets", str(targets), "--app-port", str(app_port), "--app-host", "127.0.0.1", *options
    )
    await asyncio.to_thread(server.wait_listening, app_port)
    client = procs.our_client(
        "--http-target", f"127.0.0.1:{backend.port}", "--identifier", "dc1", url
    )
    await asyncio.to_thread(client.wait_for, CONNECTED_RE, 20.0)
    return server.pid, app_port


async def _both_ways(pid: int, port: int, size: int) -> float:
    """Upload and download ``size`` bytes with sha256 checks; the gateway's RSS growth in MB."""
    process = psutil.Process(pid)
    async with Client(port) as client:  # warm up: first connections, first buffers
        assert (await client.request("GET", "/warm")).status == 200
    baseline = process.memory_info().rss
    peak = baseline
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, process.memory_info().rss)
            await asyncio.sleep(0.05)

    sampler = asyncio.ensure_future(sample())
    try:
        async with Client(port) as client:
            response = await asyncio.wait_for(client.upload("/upload", size), 900)
            assert response.status == 200
            assert f"body {size} {pattern_sha256(size)}" in response.text
            status, length, digest = await asyncio.wait_for(
                client.download(f"/download?size={size}"), 900
            )
            assert (status, length, digest) == (200, size, pattern_sha256(size))
    finally:
        stop.set()
        await sampler
    return (peak - baseline) / 1e6


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(64 << 20, id="64MiB"),
        pytest.param(1 << 30, id="1GiB", marks=pytest.mark.slow),
    ],
)
async def test_commands_stream_both_ways_in_bounded_gateway_memory(
    procs: Processes, tmp_path: Path, size: int
) -> None:
    backend = await Backend().start()
    try:
        pid, port = await _gateway_and_connector(procs, tmp_path, backend)
        async with Client(port) as client:
            assert (await client.request("GET", "/healthz", host="127.0.0.1")).status == 200
            assert (await client.request("GET", "/readyz", host="127.0.0.1")).status == 200
            response = await client.request("GET", "/hi")
            assert response.status == 200 and "GET /hi" in response.text
        growth = await _both_ways(pid, port, size)
        assert growth < 32, f"the gateway's RSS grew {growth:.1f} MB"
    finally:
        await backend.close()


async def test_two_workers_answer_whichever_takes_the_request(
    procs: Processes, tmp_path: Path
) -> None:
    """``--workers 2``: the connector's session is on one worker; all requests reach it."""
    backend = await Backend().start()
    try:
        _pid, port = await _gateway_and_connector(procs, tmp_path, backend, "--workers", "2")

        async def one(i: int) -> None:
            async with Client(port) as client:  # a new connection: either worker takes it
                for j in range(2):
                    response = await client.request("GET", f"/w{i}-{j}", timeout=10)
                    assert response.status == 200, response.text
                    assert response.text.startswith(f"GET /w{i}-{j}\n")

        for batch in range(4):
            await asyncio.gather(*(one(batch * 20 + i) for i in range(20)))
        async with Client(port) as client:
            assert (await client.request("GET", "/readyz", host="127.0.0.1")).status == 200
    finally:
        await backend.close()


async def test_broken_targets_file_is_a_usage_error(procs: Processes, tmp_path: Path) -> None:
    targets = tmp_path / "targets.yaml"
    targets.write_text("targets:\n  a:\n    hostname: b\n    port: nope\n")
    proc = procs.start("server", [*CC, "server", "--targets", str(targets), "--app-port", "0"])
    assert await asyncio.to_thread(proc.wait_exit) == 2
    assert "line 4" in proc.stderr()
