"""The gateway's plain-HTTP face: /, /health, /version, 404, --backend, bounded request heads.

Everything speaks raw bytes over a socket, so the test sees exactly what a browser,
a load balancer's health check or a port scanner would.
"""

from __future__ import annotations

import asyncio

import psutil
import pytest

from cc.gateway import gateway as gateway_module
from cc.protocol.http import MAX_HEAD_SIZE
from tests.support.harness import (
    STEP,
    Harness,
    free_port,
    http_exchange,
    split_response,
    upgrade_request,
    wait_until,
)

__all__: list[str] = []


def get(path: str, *extra: str) -> bytes:
    return ("\r\n".join([f"GET {path} HTTP/1.1", "Host: gw.example", *extra]) + "\r\n\r\n").encode()


async def test_health(harness: Harness) -> None:
    gateway = await harness.gateway()
    status, _, body = split_response(await http_exchange(gateway.ports[0], get("/health")))
    assert (status, body) == (200, b"OK\n")


@pytest.mark.parametrize("path", ["/version", "/version?x=1"])
async def test_version(harness: Harness, path: str) -> None:
    gateway = await harness.gateway(version="1.2.3-test")
    status, _, body = split_response(await http_exchange(gateway.ports[0], get(path)))
    assert (status, body) == (200, b"1.2.3-test")


@pytest.mark.parametrize("path", ["/", "/?x=1"])
async def test_root_says_what_answered(harness: Harness, path: str) -> None:
    """The seed's "check connectivity: curl -k https://server" gets a useful line."""
    gateway = await harness.gateway(version="1.2.3-test")
    status, headers, body = split_response(await http_exchange(gateway.ports[0], get(path)))
    assert (status, body) == (200, b"cloud-connector gateway 1.2.3-test\n")
    assert headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("path", ["/nope", "/health/x", "/versions", "//"])
async def test_other_paths_are_404(harness: Harness, path: str) -> None:
    gateway = await harness.gateway()
    status, headers, _ = split_response(await http_exchange(gateway.ports[0], get(path)))
    assert status == 404
    assert headers["content-length"].isdigit()


@pytest.mark.parametrize("protocol", ["chisel-v2", "", "chisel-v3, chisel-v2"])
async def test_wrong_websocket_protocol_is_served_as_plain_http(
    harness: Harness, protocol: str
) -> None:
    gateway = await harness.gateway(version="1.2.3-test")
    raw = await http_exchange(gateway.ports[0], upgrade_request("/", protocol=protocol))
    status, headers, body = split_response(raw)
    assert (status, body) == (200, b"cloud-connector gateway 1.2.3-test\n"), "GET / as plain HTTP"
    assert "sec-websocket-accept" not in headers
    assert not gateway.sessions


async def test_bad_websocket_handshake_is_400(harness: Harness) -> None:
    gateway = await harness.gateway()
    request = upgrade_request("/").replace(
        b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"
    )
    status, _, _ = split_response(await http_exchange(gateway.ports[0], request))
    assert status == 400
    assert not gateway.sessions


# -- --backend ----------------------------------------------------------------------


class Backend:
    """An HTTP server that records each request exactly as it arrived."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        self.requests.append(head + await reader.readexactly(length))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\n")
        writer.write(b"from backend")
        await writer.drain()


async def backend_gateway(harness: Harness) -> tuple[Backend, int]:
    backend = Backend()
    port = await harness.service(backend.handle)
    gateway = await harness.gateway(backend=f"http://127.0.0.1:{port}")
    return backend, gateway.ports[0]


async def test_backend_gets_the_original_request(harness: Harness) -> None:
    backend, port = await backend_gateway(harness)
    body = b'{"hello": "backend"}' * 1000
    request = (
        b"POST /app/login?next=%%2F HTTP/1.1\r\nHost: public.example\r\nX-Custom: kept\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body
    status, _, answer = split_response(await http_exchange(port, request))
    assert (status, answer) == (200, b"from backend")
    assert backend.requests == [request], "the backend sees the request byte for byte"


async def test_backend_relay_closes_both_sockets(harness: Harness) -> None:
    """Both ends done (each sent EOF): the gateway closes its two sockets, leaking no fd.

    Sockets whose TCP connection is over but whose fd is still open do not show in
    ``net_connections()``, so the test counts this process's file descriptors.
    """
    _, port = await backend_gateway(harness)
    process = psutil.Process()
    baseline = process.num_fds()
    for _ in range(5):
        status, _, _ = split_response(await http_exchange(port, get("/")))
        assert status == 200
    try:
        await wait_until(lambda: process.num_fds() <= baseline, timeout=2.0)
    except TimeoutError:
        pytest.fail(f"{process.num_fds() - baseline} file descriptors leaked by 5 requests")


async def test_backend_also_gets_wrong_protocol_upgrades(harness: Harness) -> None:
    backend, port = await backend_gateway(harness)
    request = upgrade_request("/ws", protocol="chisel-v2")
    status, _, answer = split_response(await http_exchange(port, request))
    assert (status, answer) == (200, b"from backend")
    assert backend.requests == [request]


async def test_backend_does_not_get_chisel_upgrades(harness: Harness) -> None:
    backend, port = await backend_gateway(harness)
    head = await http_exchange(port, upgrade_request("/"), until_eof=False)
    assert split_response(head)[0] == 101
    assert backend.requests == []


async def test_backend_unreachable_is_502(harness: Harness) -> None:
    gateway = await harness.gateway(backend=f"http://127.0.0.1:{free_port()}")
    status, _, _ = split_response(await http_exchange(gateway.ports[0], get("/")))
    assert status == 502


# -- bounded request heads ----------------------------------------------------------


async def test_oversized_head_is_431(harness: Harness) -> None:
    gateway = await harness.gateway()
    filler = "X-Filler: " + "a" * 1000
    request = get("/health", *[filler] * (MAX_HEAD_SIZE // 1000 + 1))
    assert len(request) > MAX_HEAD_SIZE
    status, _, _ = split_response(await http_exchange(gateway.ports[0], request))
    assert status == 431


async def test_endless_head_is_cut_off_with_bounded_buffer(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer streaming header bytes forever: the gateway stops it and never buffers much."""
    peak = 0

    class Recording(gateway_module._HTTPConnection):
        def data_received(self, data: bytes) -> None:
            nonlocal peak
            peak = max(peak, len(self.buffer) + len(data))
            super().data_received(data)

    monkeypatch.setattr(gateway_module, "_HTTPConnection", Recording)
    gateway = await harness.gateway()
    flood = 16 * 1024 * 1024
    sent = 0
    async with asyncio.timeout(STEP):
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.ports[0])
        try:
            writer.write(b"GET / HTTP/1.1\r\nX-Long: ")
            chunk = b"a" * 65536
            while sent < flood:
                writer.write(chunk)
                sent += len(chunk)
                await writer.drain()
                if reader.at_eof() or writer.is_closing():
                    break
            answer = await reader.read(-1)
        except ConnectionError:
            answer = b""  # reset: the gateway closed with our unread bytes in its buffer
        finally:
            writer.close()
    assert sent < flood, "the gateway kept reading an endless head"
    assert not answer or answer.startswith(b"HTTP/1.1 431 ")
    # one read beyond the limit at most; asyncio and uvloop read 256 KiB at a time
    assert 0 < peak <= MAX_HEAD_SIZE + 256 * 1024
