"""Two gateway workers share the app port; a connector's session lives on one of them.

Two in-process gateways stand for two ``--workers`` processes: each has its own
sessions and app listener on one port (SO_REUSEPORT), and a handoff directory.
The kernel spreads new client connections over both listeners; the worker without
the connector hands each of its connections (the socket itself) to the one with
it, so every request is answered by the target whichever worker accepted it.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cc.gateway.apigw import AppConfig, AppGateway, load_targets
from tests.support.apigw import Backend, Client
from tests.support.harness import Harness, wait_until
from tests.support.net import free_port

__all__: list[str] = []


@pytest.fixture
def handoff_dir() -> Iterator[str]:
    # a short path: a Unix socket's name has at most 107 bytes
    with tempfile.TemporaryDirectory(prefix="cc-") as folder:
        yield folder


async def _workers(
    harness: Harness, tmp_path: Path, backend: Backend, folder: str
) -> tuple[list[AppGateway], int]:
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        "targets:\n  api.test:\n    protocol: http\n    hostname: 127.0.0.1\n"
        f"    port: {backend.port}\n"
    )
    port = free_port()
    apps = []
    for index in range(2):
        gateway = await harness.gateway()
        config = AppConfig(
            targets_path=str(targets),
            host="127.0.0.1",
            port=port,
            timeout=10.0,
            reuse_port=True,
            worker=index,
            workers=2,
            handoff_dir=folder,
        )
        app = AppGateway(gateway, config, load_targets(str(targets)))
        await app.start()
        apps.append(app)
    return apps, port


async def test_requests_reach_a_connector_on_the_other_worker(
    harness: Harness, tmp_path: Path, backend: Backend, handoff_dir: str
) -> None:
    apps, port = await _workers(harness, tmp_path, backend, handoff_dir)
    try:
        served, other = apps
        await harness.connect(served.gateway, [], http_targets=[f"127.0.0.1:{backend.port}"])
        await wait_until(lambda: served.ready())
        assert not other.ready()

        async def one(i: int) -> None:
            async with Client(port) as client:  # a new connection: either worker
                for j in range(3):  # and keep-alive requests after the handoff
                    response = await client.request("GET", f"/r{i}-{j}")
                    assert response.status == 200, response.text
                    assert response.text.startswith(f"GET /r{i}-{j}\n")
                    body = b"x" * (1000 + i)
                    response = await client.request("POST", f"/p{i}", body=body)
                    assert response.status == 200, response.text
                    assert response.text.startswith(f"POST /p{i}\n")
                ready = await client.request("GET", "/readyz", host="127.0.0.1")
                assert ready.status == 200, ready.text

        for batch in range(4):
            await asyncio.gather(*(one(batch * 25 + i) for i in range(25)))
        assert other.handoff is not None and served.handoff is not None
        # the kernel gave the connector-less worker some of the 100 connections
        assert other.handoff.given > 0 and served.handoff.taken == other.handoff.given
        assert served.handoff.given == 0
    finally:
        for app in apps:
            await app.close()


async def test_no_worker_serves_the_target_is_502(
    harness: Harness, tmp_path: Path, backend: Backend, handoff_dir: str
) -> None:
    apps, port = await _workers(harness, tmp_path, backend, handoff_dir)
    try:
        for _ in range(10):
            async with Client(port) as client:
                assert (await client.request("GET", "/x")).status == 502
                ready = await client.request("GET", "/readyz", host="127.0.0.1")
                assert ready.status == 503
        assert all(app.handoff is not None and app.handoff.given == 0 for app in apps)
    finally:
        for app in apps:
            await app.close()
