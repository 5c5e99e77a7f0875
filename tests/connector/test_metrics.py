"""The connector's ``--metrics`` endpoint in process: /ready follows the session, /metrics
parses with prometheus-client and counts the tunnel and the reconnects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from cc.connector.monitor import Monitor
from cc.runtime.figures import Fleet
from tests.gateway.test_operating import echo, exchange, fetch, samples
from tests.support.harness import STEP, Harness, RunningConnector, wait_until
from tests.support.net import free_port

__all__: list[str] = []


@pytest.fixture
async def monitors() -> AsyncIterator[list[Monitor]]:
    started: list[Monitor] = []
    yield started
    for monitor in started:
        await monitor.stop()


async def watch(running: RunningConnector, monitors: list[Monitor]) -> int:
    monitor = Monitor(Fleet(running.connector.figures), "127.0.0.1", free_port())
    await monitor.start()
    monitors.append(monitor)
    return monitor.port


async def test_ready_follows_the_session(harness: Harness, monitors: list[Monitor]) -> None:
    gateway = await harness.gateway()
    service = await harness.service(echo)
    tunnel_port = free_port()
    name = f"R:127.0.0.1:{tunnel_port}=>{service}"
    running = harness.start(
        gateway,
        [f"R:127.0.0.1:{tunnel_port}:127.0.0.1:{service}"],
        max_retry_count=-1,
        max_retry_interval=0.1,
    )
    port = await watch(running, monitors)
    await wait_until(lambda: running.connector.connected.is_set())
    assert (await fetch(port, "/ready"))[:3:2] == (200, b"ready\n")
    await exchange(tunnel_port, 30_000)
    await wait_until(lambda: running.stats.remotes[name].open == 0)
    status, headers, body = await fetch(port, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    metrics = samples(body.decode())
    label = (("remote", name),)
    assert metrics[("cloud_connector_sessions", ())] == 1
    assert metrics[("cloud_connector_ready", ())] == 1
    assert metrics[("cloud_connector_connections_total", label)] == 1
    assert metrics[("cloud_connector_tunnel_received_bytes_total", label)] == 30_000
    assert metrics[("cloud_connector_tunnel_sent_bytes_total", label)] == 30_000
    assert metrics[("cloud_connector_reconnects_total", ())] == 0
    assert ("cloud_connector_auth_failures_total", (("reason", "password"),)) not in metrics

    # the gateway goes away: not ready, and the connector counts its retries
    gateway_port = gateway.ports[0]
    await gateway.close()
    await wait_until(lambda: not running.connector.connected.is_set())
    status, _, body = await fetch(port, "/ready")
    assert status == 503 and body.startswith(b"not ready: "), body
    await wait_until(lambda: running.stats.reconnects >= 2)
    metrics = samples((await fetch(port, "/metrics"))[2].decode())
    assert metrics[("cloud_connector_ready", ())] == 0
    assert metrics[("cloud_connector_sessions", ())] == 0
    assert metrics[("cloud_connector_reconnects_total", ())] >= 2

    # back again on the same port: ready again
    await harness.gateway(port=gateway_port)
    await wait_until(lambda: running.connector.connected.is_set(), timeout=STEP)
    assert (await fetch(port, "/ready"))[0] == 200


async def test_unknown_paths_and_a_taken_port(harness: Harness, monitors: list[Monitor]) -> None:
    gateway = await harness.gateway()
    running = harness.start(gateway, [f"R:127.0.0.1:{free_port()}:127.0.0.1:9"])
    port = await watch(running, monitors)
    assert (await fetch(port, "/status"))[0] == 404
    with pytest.raises(OSError):
        await Monitor(Fleet(running.connector.figures), "127.0.0.1", port).start()
    await asyncio.sleep(0)
