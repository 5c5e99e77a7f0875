"""The HTTP API gateway with several connectors: fair shares, identifiers, a connector lost.

Also reloads of the targets file, WebSocket passthrough and https targets.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from pathlib import Path

import pytest
import trustme

from tests.support.apigw import ApiGateway, Backend, Client, ws_frame, ws_key
from tests.support.harness import RunningConnector, wait_until

__all__: list[str] = []


def _target(host: str, port: int, extra: str = "", protocol: str = "http") -> str:
    lines = [
        f"  {host}:",
        f"    protocol: {protocol}",
        "    hostname: 127.0.0.1",
        f"    port: {port}",
    ]
    return "\n".join(lines) + "\n" + (extra.rstrip("\n") + "\n" if extra else "")


def _open(running: RunningConnector, port: int) -> int:
    stats = running.connector.stats.remotes.get(f"http 127.0.0.1:{port}")
    return stats.open if stats else 0


async def test_two_connectors_share_one_keep_alive_client(
    api: ApiGateway, backend: Backend
) -> None:
    """1,000 requests on one connection land within 20% of half each (port % n pins them)."""
    await api.start("targets:\n" + _target("api.test", backend.port, "    identifier: dc"))
    address = f"127.0.0.1:{backend.port}"
    await api.connect([address], ["dc"])
    await api.connect([address], ["dc", "other"])
    async with Client(api.port) as client:
        for _ in range(1000):
            response = await client.request("GET", "/x")
            assert response.status == 200
    assert api.app is not None
    shares = sorted(api.app.served.values())
    assert len(shares) == 2 and sum(shares) == 1000
    assert shares[0] >= 400, shares


async def test_identifier_routing(api: ApiGateway, backend: Backend) -> None:
    other = await Backend("other").start()
    try:
        targets = "targets:\n" + _target("one.test", backend.port, "    identifier: [dc1]")
        targets += _target("two.test", other.port, "    identifier: dc2")
        await api.start(targets)
        one = f"127.0.0.1:{backend.port}"
        two = f"127.0.0.1:{other.port}"
        first = await api.connect([one, two], ["dc1"])
        await api.connect([one, two], ["dc2"])
        assert api.gateway is not None
        dc1 = next(s for s in api.gateway.sessions if "dc1" in s.http_identifiers)
        async with Client(api.port) as client:
            for _ in range(20):
                assert (await client.request("GET", "/", host="one.test")).status == 200
                assert (await client.request("GET", "/", host="two.test")).status == 200
        assert api.app is not None and api.app.served[dc1.id] == 20
        await first.stop()
        async with Client(api.port) as client:
            assert (await client.request("GET", "/", host="one.test")).status == 502
            assert (await client.request("GET", "/", host="two.test")).status == 200
    finally:
        await other.close()


async def test_connector_killed_mid_request(api: ApiGateway, backend: Backend) -> None:
    """In-flight requests fail at once; a GET is served again by the other connector.

    Two GETs and two POSTs in flight over two connectors: least-in-flight gives each
    connector one of each.  Killing one connector fails its POST at once (502) and
    retries its GET on the survivor.
    """
    await api.start("targets:\n" + _target("api.test", backend.port), timeout=30)
    address = f"127.0.0.1:{backend.port}"
    connectors = [await api.connect([address]), await api.connect([address])]
    clients = [await Client(api.port).__aenter__() for _ in range(4)]
    try:
        tasks = []
        for number, (client, method) in enumerate(
            zip(clients, ["GET", "GET", "POST", "POST"], strict=True)
        ):
            body = b"x" if method == "POST" else b""
            tasks.append(asyncio.ensure_future(client.request(method, "/sleep?s=1", body=body)))
            await wait_until(lambda n=number: sum(_open(c, backend.port) for c in connectors) > n)
        victim = connectors[0]
        assert _open(victim, backend.port) == 2
        killed = time.monotonic()
        victim.connector.conn.abort()  # like kill -9: the transport just goes
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        assert time.monotonic() - killed < 0.5
        first = done.pop().result()
        assert first.status == 502 and "went away" in first.text, first.text
        statuses = [(await task).status for task in tasks]
        assert statuses[:2] == [200, 200]  # the victim's GET was retried
        assert sorted(statuses[2:]) == [200, 502]
    finally:
        for client in clients:
            client.close()
    gets = [t for m, t, _ in backend.requests if m == "GET"]
    assert len(gets) == 3


async def test_reload_good_and_broken(
    api: ApiGateway, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    await api.start("targets:\n" + _target("a.test", backend.port))
    await api.connect([f"127.0.0.1:{backend.port}"])
    assert api.app is not None
    app = api.app
    async with Client(api.port) as client:
        assert (await client.request("GET", "/", host="b.test")).status == 404
        good = "targets:\n" + _target("a.test", backend.port) + _target("b.test", backend.port)
        api.targets_path.write_text(good)
        await wait_until(lambda: app.targets.table.lookup("b.test") is not None)
        assert (await client.request("GET", "/", host="b.test")).status == 200
        with caplog.at_level(logging.WARNING, logger="cc"):
            api.targets_path.write_text(good + "    port: [oops]\n")
            await wait_until(lambda: "keeping the last good version" in caplog.text)
        assert "line " in caplog.text
        assert (await client.request("GET", "/", host="b.test")).status == 200


async def test_websocket_passthrough(api: ApiGateway, backend: Backend) -> None:
    policy = "    policy:\n      /ws: [GET]\n      /denied: [POST]\n"
    await api.start("targets:\n" + _target("api.test", backend.port, policy))
    await api.connect([f"127.0.0.1:{backend.port}"])
    for path, expected in (("/ws", 101), ("/denied", 403)):
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        try:
            writer.write(
                (
                    f"GET {path} HTTP/1.1\r\nHost: api.test\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {ws_key()}\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(f"HTTP/1.1 {expected} ".encode()), head
            if expected != 101:
                continue
            assert b"upgrade: websocket" in head.lower()
            for message in (b"hello", b"x" * 1000):
                writer.write(ws_frame(message))
                frame = await asyncio.wait_for(reader.readexactly(2), 5)
                length = frame[1] & 0x7F
                if length == 126:
                    length = int.from_bytes(await reader.readexactly(2), "big")
                assert await asyncio.wait_for(reader.readexactly(length), 5) == message
        finally:
            writer.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def _tls_backend(ca: trustme.CA, name: str) -> Backend:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    return await Backend(f"tls-{name}").start(context)


@pytest.mark.parametrize(
    ("cert_name", "settings", "status"),
    [
        ("127.0.0.1", "    ca: ca.pem\n", 200),
        ("other.test", "    ca: ca.pem\n", 502),
        ("127.0.0.1", "", 502),  # the system store does not know the test CA
        ("other.test", "    insecure: true\n", 200),
    ],
    ids=["good", "wrong-name", "unknown-ca", "insecure"],
)
async def test_https_target(
    api: ApiGateway, ca: trustme.CA, tmp_path: Path, cert_name: str, settings: str, status: int
) -> None:
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    tls_backend = await _tls_backend(ca, cert_name)
    try:
        await api.start("targets:\n" + _target("api.test", tls_backend.port, settings, "https"))
        await api.connect([f"127.0.0.1:{tls_backend.port}"])
        async with Client(api.port) as client:
            response = await client.request("GET", "/secure")
            assert response.status == status, response.text
            if status == 200:
                assert "backend tls-" in response.text
                assert (await client.request("GET", "/again")).status == 200
                assert tls_backend.connections == 1  # the TLS connection was reused
            else:
                assert "TLS" in response.text
    finally:
        await tls_backend.close()
