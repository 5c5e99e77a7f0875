"""Who may wait unauthenticated, and for how long (issue 11, weak spot 5).

Idle sockets from 127.0.0.2 play the attacker; the connector from 127.0.0.1 must
get in regardless.  The out-of-descriptor case needs its own process limit and is
in tests/system/test_slowloris.py.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest

from cc.protocol.admission import AdmissionPolicy
from tests.support.harness import Harness, http_exchange, wait_until
from tests.support.net import free_port

__all__: list[str] = []

ATTACKER = "127.0.0.2"


def some_remote() -> str:
    return f"R:127.0.0.1:{free_port()}:127.0.0.1:9"


def idle_socket(port: int, source: str = ATTACKER) -> socket.socket:
    """A connection that never says anything."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    sock.settimeout(5)
    return sock


async def closed_by_peer(sock: socket.socket, within: float = 5.0) -> bool:
    """True once the gateway closed ``sock`` (EOF or reset), False if it stays open."""
    sock.setblocking(False)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            data = sock.recv(1)
        except BlockingIOError:
            await asyncio.sleep(0.02)
            continue
        except ConnectionResetError:
            return True
        return data == b""
    return False


async def test_per_source_cap_refuses_the_extra_connection(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await harness.gateway(admission=AdmissionPolicy(total=0, per_source=4))
    port = gateway.ports[0]
    held = [idle_socket(port) for _ in range(4)]
    await wait_until(lambda: len(gateway.admission) == 4)
    with caplog.at_level(logging.WARNING, logger="cc.server"):
        extra = idle_socket(port)
        assert await closed_by_peer(extra, 3.0)
    assert any(
        f"Refused connection from {ATTACKER}:" in r.getMessage()
        and "too many unauthenticated connections from this address" in r.getMessage()
        for r in caplog.records
    )
    for sock in held:
        assert not await closed_by_peer(sock, 0.05)
    await harness.connect(gateway, [some_remote()])  # another address is not capped
    for sock in [*held, extra]:
        sock.close()


async def test_total_cap_evicts_the_oldest_for_a_newcomer(harness: Harness) -> None:
    gateway = await harness.gateway(admission=AdmissionPolicy(total=8, per_source=0))
    port = gateway.ports[0]
    held = [idle_socket(port) for _ in range(8)]
    await wait_until(lambda: len(gateway.admission) == 8)
    started = time.monotonic()
    await harness.connect(gateway, [some_remote()])
    assert time.monotonic() - started < 2.0
    assert await closed_by_peer(held[0], 2.0), "the oldest idle connection was kept"
    assert not await closed_by_peer(held[-1], 0.05), "a newer one was closed instead"
    for sock in held:
        sock.close()


async def test_logged_in_and_plain_http_connections_stop_counting(harness: Harness) -> None:
    gateway = await harness.gateway()
    await harness.connect(gateway, [some_remote()])
    for _ in range(5):
        await http_exchange(gateway.ports[0], b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    await wait_until(lambda: len(gateway.admission) == 0)


@pytest.mark.parametrize(
    "sends", [b"", b"GET / HTTP/1.1\r\nHost: x\r\n"], ids=["silent", "half-head"]
)
async def test_login_grace_time_closes_the_slow(harness: Harness, sends: bytes) -> None:
    gateway = await harness.gateway(login_grace_time=0.5)
    sock = idle_socket(gateway.ports[0])
    sock.sendall(sends)
    started = time.monotonic()
    assert await closed_by_peer(sock, 3.0)
    assert 0.3 < time.monotonic() - started < 2.0
    sock.close()


async def test_login_grace_time_spares_a_logged_in_session(harness: Harness) -> None:
    gateway = await harness.gateway(login_grace_time=0.5)
    running = await harness.connect(gateway, [some_remote()])
    await asyncio.sleep(1.0)
    assert len(gateway.sessions) == 1
    assert running.connector.connected.is_set()
    assert not running.task.done()


async def test_an_upgraded_connection_that_never_logs_in_is_closed(harness: Harness) -> None:
    """The grace time covers the SSH phase too, not only the HTTP head."""
    gateway = await harness.gateway(login_grace_time=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.ports[0])
    writer.write(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: chisel-v3\r\n\r\n"
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    started = time.monotonic()
    async with asyncio.timeout(5):
        while await reader.read(65536):
            pass
    assert time.monotonic() - started < 2.0
    writer.close()
