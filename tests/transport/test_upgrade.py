"""The WebSocket upgrade over real loopback sockets: ``open_websocket`` against a
scripted gateway (the exact bytes a chisel or a proxy may answer), and our gateway's
answers to raw upgrade requests.  The sans-I/O rules themselves are in
tests/protocol/test_handshake.py; this checks the piping around them.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from cc import PEER_HEADER, __version__
from cc.gateway.gateway import Gateway, GatewayConfig
from cc.protocol import http, keys
from cc.protocol.acl import parse_tokens_file
from cc.transport.dial import DialError, HandshakeError, open_websocket
from cc.transport.websocket import WebSocketTransport

STEP = 10.0
GO_ORDER = [
    "Host",
    "User-Agent",
    "Connection",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Version",
    "Token",
    PEER_HEADER,
    "Upgrade",
]

#: The segments to write for a request (b"" is a pause); None closes without answering.
Answer = Callable[[http.Request], list[bytes] | None]


class ScriptedGateway:
    """Reads one request head, records it, writes ``answer(request)`` segment by segment."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[http.Request] = []
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = http.parse_request(await reader.readuntil(b"\r\n\r\n"))
            self.requests.append(request)
            segments = self.answer(request)
            if segments is None:
                return
            for segment in segments:
                if segment:
                    writer.write(segment)
                    await writer.drain()
                else:
                    await asyncio.sleep(0.05)  # an empty segment: a pause between writes
            await reader.read()  # until the client closes
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/sg_123"


Scripted = Callable[[Answer], Awaitable[ScriptedGateway]]


@pytest.fixture
async def scripted() -> AsyncIterator[Scripted]:
    gateways: list[ScriptedGateway] = []

    async def start(answer: Answer) -> ScriptedGateway:
        gateway = ScriptedGateway(answer)
        gateway.server = await asyncio.start_server(gateway.handle, "127.0.0.1", 0)
        gateways.append(gateway)
        return gateway

    yield start
    for gateway in gateways:
        assert gateway.server is not None
        gateway.server.close()
        await gateway.server.wait_closed()


def switching(request: http.Request, *extra: str, protocol: str | None = None) -> bytes:
    """A 101 for ``request``; chisel's own carries no Sec-WebSocket-Protocol."""
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {http.accept_key(request.headers.get('Sec-WebSocket-Key') or '')}",
    ]
    if protocol is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocol}")
    return ("\r\n".join([*lines, *extra]) + "\r\n\r\n").encode()


def frame(payload: bytes) -> bytes:
    """One unmasked binary frame, as a server sends it."""
    assert len(payload) < 126
    return bytes((0x82, len(payload))) + payload


class Collect(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()

    def data_received(self, data: bytes) -> None:
        self.data += data


async def dial(gateway: ScriptedGateway, *, announce: bool = True) -> WebSocketTransport:
    async with asyncio.timeout(STEP):
        return await open_websocket(
            urlsplit(gateway.url), headers=[("Token", "abc")], timeout=STEP, announce=announce
        )


async def received(wst: WebSocketTransport, expected: bytes) -> bytes:
    sink = Collect()
    wst.attach(sink)
    async with asyncio.timeout(STEP):
        while len(sink.data) < len(expected):
            await asyncio.sleep(0.01)
    return bytes(sink.data)


# -- the client ---------------------------------------------------------------------------


async def test_request_in_gos_order_and_frames_in_the_101_segment_are_kept(
    scripted: Scripted,
) -> None:
    gateway = await scripted(lambda r: [switching(r) + frame(b"SSH-chisel-v3-server\r\n")])
    wst = await dial(gateway)
    try:
        assert await received(wst, b"SSH-chisel-v3-server\r\n") == b"SSH-chisel-v3-server\r\n"
        assert wst.get_extra_info("cc_peer_is_ours") is False
    finally:
        wst.abort()
    [request] = gateway.requests
    assert [name for name, _ in request.headers.items] == GO_ORDER
    assert request.headers.get(PEER_HEADER) == __version__


async def test_head_in_pieces_then_frames_in_a_later_segment(scripted: Scripted) -> None:
    def answer(request: http.Request) -> list[bytes]:
        head = switching(request, f"{PEER_HEADER}: 0.1.0", protocol="chisel-v3")
        return [head[:20], b"", head[20:-1], b"", head[-1:], b"", frame(b"hi")]

    gateway = await scripted(answer)
    wst = await dial(gateway)
    try:
        assert wst.get_extra_info("cc_peer_is_ours") is True
        assert await received(wst, b"hi") == b"hi"
    finally:
        wst.abort()


async def test_outsystemscc_sends_no_peer_header_and_ignores_one(scripted: Scripted) -> None:
    gateway = await scripted(lambda r: [switching(r, f"{PEER_HEADER}: 0.1.0")])
    wst = await dial(gateway, announce=False)
    wst.abort()
    assert gateway.requests[0].headers.get(PEER_HEADER) is None
    assert wst.get_extra_info("cc_peer_is_ours") is False


async def test_non_101_is_a_handshake_error_with_status_and_reason(scripted: Scripted) -> None:
    refusal = http.build_response(401, [("Connection", "close")], b"unauthorized\n")
    gateway = await scripted(lambda _r: [refusal])
    with pytest.raises(HandshakeError) as caught:
        await dial(gateway)
    assert str(caught.value) == "websocket: bad handshake (HTTP 401 Unauthorized)"
    assert caught.value.status == 401


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            lambda r: [switching(r).replace(b"Accept: ", b"Accept: x")],
            re.escape("websocket: bad handshake (wrong Sec-WebSocket-Accept)"),
        ),
        (
            lambda r: [switching(r, protocol="chisel-v2")],
            re.escape("websocket: server chose protocol 'chisel-v2', expected chisel-v3"),
        ),
        (
            lambda r: [switching(r).replace(b"Upgrade: websocket\r\n", b"")],
            r"websocket: bad handshake \(.*Upgrade.*\)",
        ),
        (
            lambda _r: [b"SSH-2.0-OpenSSH_9.6\r\n\r\n"],
            "websocket handshake: bad HTTP response: .*",
        ),
        (lambda _r: None, "websocket handshake: connection closed before a response"),
    ],
    ids=["wrong-accept", "other-subprotocol", "no-upgrade-field", "not-http", "closed"],
)
async def test_a_bad_answer_is_a_dial_error(
    scripted: Scripted, answer: Answer, message: str
) -> None:
    gateway = await scripted(answer)
    with pytest.raises(DialError) as caught:
        await dial(gateway)
    assert re.fullmatch(message, str(caught.value)), str(caught.value)


# -- the gateway --------------------------------------------------------------------------


StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def gateway() -> AsyncIterator[StartGateway]:
    started: list[Gateway] = []
    pem = keys.private_key_pem_for_asyncssh(keys.generate_private_key())

    async def start(**overrides: Any) -> Gateway:
        config = GatewayConfig(host="127.0.0.1", port=0, host_key_pem=pem, **overrides)
        gw = Gateway(config)
        await gw.start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        await gw.close()


def upgrade(*extra: str, key: str = "dGhlIHNhbXBsZSBub25jZQ==", version: str = "13") -> bytes:
    lines = [
        "GET / HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        f"Sec-WebSocket-Version: {version}",
        "Sec-WebSocket-Protocol: chisel-v3",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def exchange(port: int, request: bytes, *, head_only: bool = False) -> bytes:
    async with asyncio.timeout(STEP):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request)
            if head_only:
                return await reader.readuntil(b"\r\n\r\n")
            return await reader.read(-1)  # to EOF: a refusal closes the connection
        finally:
            writer.close()


async def test_gateway_101_names_chisel_v3_and_answers_our_peer(gateway: StartGateway) -> None:
    gw = await gateway(version="4.5.6")
    head = await exchange(gw.ports[0], upgrade(f"{PEER_HEADER}: 0.1.0"), head_only=True)
    response = http.parse_response(head)
    assert response.status == 101
    assert response.headers.get("Sec-WebSocket-Accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert response.headers.get("Sec-WebSocket-Protocol") == "chisel-v3"
    assert response.headers.get(PEER_HEADER) == "4.5.6"
    assert response.headers.get("Date") is None
    plain = http.parse_response(await exchange(gw.ports[0], upgrade(), head_only=True))
    assert plain.status == 101 and plain.headers.get(PEER_HEADER) is None


@pytest.mark.parametrize(
    ("request_", "named"),
    [
        (upgrade(version="8"), b"Sec-WebSocket-Version"),
        (upgrade(key="not-a-key"), b"Sec-WebSocket-Key"),
    ],
)
async def test_gateway_refuses_a_bad_handshake_before_the_token_check(
    gateway: StartGateway, request_: bytes, named: bytes
) -> None:
    gw = await gateway(tokens=parse_tokens_file(b'{"abc": [""]}'))
    raw = await exchange(gw.ports[0], request_)  # no token, and the answer is 400, not 401
    end = http.find_head_end(raw)
    response = http.parse_response(raw[:end])
    assert response.status == 400
    assert response.headers.get("Connection") == "close"
    assert response.headers.get("Content-Length") == str(len(raw) - end)
    assert named in raw[end:]
    assert not gw.sessions
