"""The HTTP API gateway's test bench: a gateway with an app port, connectors, a backend.

The backend and the test client speak HTTP through h11, an HTTP/1.1
implementation independent of the gateway's own framing, so a framing mistake on
either side of the gateway shows up as a failed parse here.

:class:`Backend` is an asyncio HTTP/1.1 server on 127.0.0.1 with routes the tests
need (echo, slow ticks, big downloads, uploads with sha256, redirects and cookies,
WebSocket echo, sleeps); :class:`Client` is one keep-alive client connection;
:class:`ApiGateway` starts an in-process gateway with the app listener on a
targets file and connectors that serve it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11

from cc.gateway.apigw import AppConfig, AppGateway, load_targets
from cc.gateway.gateway import Gateway
from cc.protocol.apigw.forwarding import TrustedProxies
from cc.protocol.http import accept_key
from tests.support.harness import Harness, RunningConnector, wait_until
from tests.support.streams import STEP

__all__ = [
    "ApiGateway",
    "Backend",
    "Client",
    "Response",
    "pattern",
    "pattern_sha256",
    "ws_frame",
    "ws_key",
]

CHUNK = 64 * 1024


def pattern_sha256(size: int) -> str:
    """sha256 of :func:`pattern` bytes, computed block by block."""
    block = pattern(CHUNK)
    digest = hashlib.sha256()
    whole, part = divmod(size, CHUNK)
    for _ in range(whole):
        digest.update(block)
    digest.update(block[:part])
    return digest.hexdigest()


def pattern(size: int, seed: int = 0) -> bytes:
    """``size`` deterministic bytes (a repeated 64 KiB block)."""
    block = hashlib.sha256(str(seed).encode()).digest() * (CHUNK // 32)
    whole, part = divmod(size, CHUNK)
    return block * whole + block[:part]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    raw_headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class Backend:
    """A test target: ``GET /echo`` etc.; ``requests`` records (method, target, headers)."""

    def __init__(self, name: str = "backend") -> None:
        self.name = name
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> Backend:
        self.server = await asyncio.start_server(
            self._connection, "127.0.0.1", 0, ssl=ssl_context, backlog=1024
        )
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await _next_event(conn, reader)
                if not isinstance(request, h11.Request):
                    return
                if not await self._serve(conn, request, reader, writer):
                    return
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _serve(
        self,
        conn: h11.Connection,
        request: h11.Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        target = request.target.decode()
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        self.requests.append((request.method.decode(), target, headers))
        path, _, query = target.partition("?")
        params = dict(urllib.parse.parse_qsl(query))

        def send(event: Any) -> None:
            writer.write(conn.send(event) or b"")

        if path == "/ws" and headers.get("upgrade", "").lower() == "websocket":
            key = headers["sec-websocket-key"]
            send(
                h11.InformationalResponse(
                    status_code=101,
                    headers=[
                        ("Upgrade", "websocket"),
                        ("Connection", "Upgrade"),
                        ("Sec-WebSocket-Accept", accept_key(key)),
                    ],
                )
            )
            trailing, _ = conn.trailing_data
            await _websocket_echo(reader, writer, trailing)
            return False
        digest = hashlib.sha256()
        received = 0
        while True:
            event = await _next_event(conn, reader)
            if isinstance(event, h11.Data):
                digest.update(event.data)
                received += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                return False
        if path == "/sleep":
            await asyncio.sleep(float(params.get("s", "1")))
        if path == "/tick":
            count, interval = int(params.get("n", "3")), float(params.get("s", "0.2"))
            send(h11.Response(status_code=200, headers=[("Transfer-Encoding", "chunked")]))
            for i in range(count):
                send(h11.Data(data=f"tick {i}\n".encode()))
                await writer.drain()
                await asyncio.sleep(interval)
            send(h11.EndOfMessage())
            await writer.drain()
            return True
        if path == "/download":
            size = int(params.get("size", "0"))
            send(h11.Response(status_code=200, headers=[("Content-Length", str(size))]))
            sent = 0
            while sent < size:
                piece = pattern(min(CHUNK, size - sent))
                send(h11.Data(data=piece))
                sent += len(piece)
                await writer.drain()
            send(h11.EndOfMessage())
            return True
        extra: list[tuple[str, str]] = []
        status = int(params.get("status", "200"))
        if path == "/redirect":
            status = 302
            extra.append(("Location", f"http://{headers.get('host', '')}/landed?x=1"))
            extra.append(("Set-Cookie", f"s=1; Domain={headers.get('host', '').split(':')[0]}"))
        if path == "/close":
            extra.append(("Connection", "close"))
        lines = [f"{request.method.decode()} {target}", f"backend {self.name}"]
        lines += [f"{k}: {v}" for k, v in sorted(headers.items())]
        lines.append(f"body {received} {digest.hexdigest()}")
        body = ("\n".join(lines) + "\n").encode()
        send(
            h11.Response(
                status_code=status,
                headers=[("Content-Length", str(len(body))), ("X-Backend", self.name), *extra],
            )
        )
        if request.method != b"HEAD":
            send(h11.Data(data=body))
        send(h11.EndOfMessage())
        await writer.drain()
        return True


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(CHUNK)
            conn.receive_data(data)
            continue
        return event


async def _websocket_echo(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bytes
) -> None:
    """Echo unmasked copies of masked client frames (small frames, no fragmentation)."""
    buffer = bytearray(first)
    while True:
        while len(buffer) < 2 or len(buffer) < _frame_length(buffer):
            data = await reader.read(CHUNK)
            if not data:
                return
            buffer += data
        size = _frame_length(buffer)
        frame, buffer = bytes(buffer[:size]), buffer[size:]
        opcode = frame[0] & 0x0F
        length = frame[1] & 0x7F
        offset = 2 if length < 126 else 4
        mask, payload = frame[offset : offset + 4], frame[offset + 4 :]
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        if opcode == 8:
            writer.write(bytes([0x88, len(data)]) + data)
            await writer.drain()
            return
        header = (
            bytes([0x80 | opcode, len(data)])
            if len(data) < 126
            else (bytes([0x80 | opcode, 126]) + len(data).to_bytes(2, "big"))
        )
        writer.write(header + data)
        await writer.drain()


def _frame_length(buffer: bytearray) -> int:
    length = buffer[1] & 0x7F
    if length < 126:
        return 2 + 4 + length
    if len(buffer) < 4:
        return 1 << 30
    return 4 + 4 + int.from_bytes(buffer[2:4], "big")


def ws_frame(data: bytes, opcode: int = 1) -> bytes:
    """A masked client frame."""
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    if len(data) < 126:
        return bytes([0x80 | opcode, 0x80 | len(data)]) + mask + masked
    return bytes([0x80 | opcode, 0x80 | 126]) + len(data).to_bytes(2, "big") + mask + masked


def ws_key() -> str:
    return base64.b64encode(b"0123456789abcdef").decode()


def targets_yaml(port: int, policy: str = '"*"', extra: str = "") -> str:
    """A targets.yaml with ``api.test`` -> http://127.0.0.1:``port`` (and ``extra`` after it)."""
    return f"""
targets:
  api.test:
    protocol: http
    hostname: 127.0.0.1
    port: {port}
    policy: {policy}
{extra}"""


class Client:
    """One keep-alive client connection to the app port (h11)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.conn = h11.Connection(h11.CLIENT)

    async def __aenter__(self) -> Client:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    async def request(
        self,
        method: str,
        target: str,
        *,
        host: str = "api.test",
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        chunked: bool = False,
        timeout: float = STEP,
    ) -> Response:
        assert self.reader is not None and self.writer is not None
        if self.conn.our_state is h11.DONE:
            self.conn.start_next_cycle()
        fields = [("Host", host), *(headers or [])]
        if chunked:
            fields.append(("Transfer-Encoding", "chunked"))
        elif body or method in ("POST", "PUT"):
            fields.append(("Content-Length", str(len(body))))
        async with asyncio.timeout(timeout):
            self.writer.write(
                self.conn.send(h11.Request(method=method, target=target, headers=fields)) or b""
            )
            if body:
                for i in range(0, len(body), CHUNK):
                    self.writer.write(self.conn.send(h11.Data(data=body[i : i + CHUNK])) or b"")
                    await self.writer.drain()
            self.writer.write(self.conn.send(h11.EndOfMessage()) or b"")
            return await self.read_response()

    async def upload(self, target: str, size: int, *, host: str = "api.test") -> Response:
        """POST ``size`` bytes of :func:`pattern` blocks, never holding more than one block."""
        assert self.writer is not None
        if self.conn.our_state is h11.DONE:
            self.conn.start_next_cycle()
        fields = [("Host", host), ("Content-Length", str(size))]
        self.writer.write(
            self.conn.send(h11.Request(method="POST", target=target, headers=fields)) or b""
        )
        block = pattern(CHUNK)
        sent = 0
        while sent < size:
            piece = block[: min(CHUNK, size - sent)]
            self.writer.write(self.conn.send(h11.Data(data=piece)) or b"")
            sent += len(piece)
            await self.writer.drain()
        self.writer.write(self.conn.send(h11.EndOfMessage()) or b"")
        return await self.read_response()

    async def download(self, target: str, *, host: str = "api.test") -> tuple[int, int, str]:
        """GET ``target`` and hash the body as it arrives: (status, length, sha256 hex)."""
        assert self.reader is not None and self.writer is not None
        if self.conn.our_state is h11.DONE:
            self.conn.start_next_cycle()
        request = h11.Request(method="GET", target=target, headers=[("Host", host)])
        self.writer.write(self.conn.send(request) or b"")
        self.writer.write(self.conn.send(h11.EndOfMessage()) or b"")
        head = await _next_event(self.conn, self.reader)
        assert isinstance(head, h11.Response), head
        digest = hashlib.sha256()
        length = 0
        while True:
            event = await _next_event(self.conn, self.reader)
            if isinstance(event, h11.Data):
                digest.update(event.data)
                length += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return head.status_code, length, digest.hexdigest()
            else:
                raise ConnectionResetError(f"download cut short: {event}")

    async def read_response(self) -> Response:
        assert self.reader is not None
        head = await _next_event(self.conn, self.reader)
        while isinstance(head, h11.InformationalResponse):
            head = await _next_event(self.conn, self.reader)
        if isinstance(head, h11.ConnectionClosed):
            raise ConnectionResetError("closed before the answer")
        assert isinstance(head, h11.Response), head
        body = bytearray()
        while True:
            event = await _next_event(self.conn, self.reader)
            if isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise ConnectionResetError(f"answer cut short: {event}")
        raw = [(k.decode(), v.decode()) for k, v in head.headers]
        return Response(head.status_code, {k.lower(): v for k, v in raw}, bytes(body), raw)


@dataclass
class ApiGateway:
    """A gateway with the app listener on ``targets_path``; connectors on demand."""

    harness: Harness
    tmp_path: Path
    gateway: Gateway | None = None
    app: AppGateway | None = None
    connectors: list[RunningConnector] = field(default_factory=list)

    @property
    def targets_path(self) -> Path:
        return self.tmp_path / "targets.yaml"

    @property
    def port(self) -> int:
        assert self.app is not None
        return self.app.ports[0]

    async def start(
        self,
        targets: str,
        *,
        timeout: float = 10.0,
        trusted: str = "",
        randbelow: Callable[[int], int] | None = None,
        app_options: dict[str, Any] | None = None,
        **gateway_options: Any,
    ) -> ApiGateway:
        """``app_options``: more AppConfig fields (limits, timeouts)."""
        self.targets_path.write_text(targets)
        self.gateway = await self.harness.gateway(**gateway_options)
        config = AppConfig(
            targets_path=str(self.targets_path),
            host="127.0.0.1",
            port=0,
            timeout=timeout,
            trusted=TrustedProxies.parse(trusted),
            reload_interval=0.1,
            **(app_options or {}),
        )
        extra = {"randbelow": randbelow} if randbelow else {}
        self.app = AppGateway(self.gateway, config, load_targets(str(self.targets_path)), **extra)
        await self.app.start()
        return self

    async def connect(
        self, targets: list[str], identifiers: list[str] | None = None, **overrides: Any
    ) -> RunningConnector:
        """A connector that declares ``targets`` (host:port) and ``identifiers``."""
        assert self.gateway is not None and self.app is not None
        before = {s.id for s in self.gateway.sessions}
        running = await self.harness.connect(
            self.gateway,
            [],
            http_targets=targets,
            identifiers=identifiers or [],
            **overrides,
        )
        gateway = self.gateway
        await wait_until(
            lambda: any(s.http_targets and s.id not in before for s in gateway.sessions)
        )
        self.connectors.append(running)
        return running

    async def close(self) -> None:
        if self.app is not None:
            await self.app.close()
