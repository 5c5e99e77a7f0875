"""Reach the gateway: TCP or TLS, directly or through an HTTP CONNECT / SOCKS5 proxy,
then the WebSocket upgrade.  What comes back is a ``WebSocketTransport`` ready
for the SSH session.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
from dataclasses import dataclass
from typing import cast
from urllib.parse import SplitResult, urlsplit, urlunsplit

from cc import CHISEL_PROTOCOL
from cc.aio.wstransport import WebSocketTransport
from cc.protocol import http
from cc.protocol.ws import WebSocketStream

__all__ = [
    "DialError",
    "HandshakeError",
    "TLSOptions",
    "connect_socket",
    "normalize_server_url",
    "open_websocket",
    "websocket_url",
]

MAX_FRAME = 4 << 20


class DialError(ConnectionError):
    """The gateway could not be reached (network, proxy, TLS): worth retrying."""


class HandshakeError(ConnectionError):
    """The gateway answered the upgrade with something other than 101."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"websocket: bad handshake (HTTP {status} {reason})".rstrip())
        self.status = status


@dataclass(frozen=True)
class TLSOptions:
    ca: str | None = None
    skip_verify: bool = False
    cert: str | None = None
    key: str | None = None
    sni: str | None = None

    def context(self) -> ssl.SSLContext:
        """A client context: system CAs (or ``ca``), optional client certificate."""
        ctx = ssl.create_default_context(
            cafile=self.ca if self.ca and os.path.isfile(self.ca) else None,
            capath=self.ca if self.ca and os.path.isdir(self.ca) else None,
        )
        if self.skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert:
            ctx.load_cert_chain(self.cert, self.key)
        return ctx


def normalize_server_url(server: str) -> SplitResult:
    """chisel's rules: no scheme means http; http(s) and ws(s) both accepted; default ports."""
    if "://" not in server:
        server = "http://" + server
    url = urlsplit(server)
    if url.scheme not in ("http", "https", "ws", "wss"):
        raise ValueError(f"unsupported URL scheme {url.scheme!r} in {server!r}")
    if not url.hostname:
        raise ValueError(f"no host in server URL {server!r}")
    try:
        url.port  # noqa: B018 - validates the port
    except ValueError:
        raise ValueError(f"bad port in server URL {server!r}") from None
    return url


def websocket_url(url: SplitResult) -> str:
    """The ``ws://`` / ``wss://`` form chisel logs and connects to."""
    scheme = {"http": "ws", "https": "wss"}.get(url.scheme, url.scheme)
    return urlunsplit((scheme, url.netloc, url.path, url.query, ""))


def _is_secure(url: SplitResult) -> bool:
    return url.scheme in ("https", "wss")


def _host_port(url: SplitResult) -> tuple[str, int]:
    assert url.hostname is not None
    return url.hostname, url.port or (443 if _is_secure(url) else 80)


async def connect_socket(
    loop: asyncio.AbstractEventLoop,
    protocol_factory: object,
    url: SplitResult,
    *,
    proxy: str | None,
    tls: TLSOptions | None,
    timeout: float,
) -> tuple[asyncio.Transport, asyncio.Protocol]:
    """TCP (or TLS) to the gateway, through ``proxy`` when given."""
    host, port = _host_port(url)
    ssl_ctx = (tls or TLSOptions()).context() if _is_secure(url) else None
    server_hostname = ((tls.sni if tls else None) or host) if ssl_ctx else None
    try:
        async with asyncio.timeout(timeout):
            if proxy:
                from cc.aio.proxy import open_proxy_socket

                sock = await open_proxy_socket(proxy, host, port)
                return await loop.create_connection(  # type: ignore[return-value]
                    protocol_factory,
                    sock=sock,
                    ssl=ssl_ctx,
                    server_hostname=server_hostname,  # type: ignore[arg-type]
                )
            return await loop.create_connection(  # type: ignore[return-value]
                protocol_factory,
                host,
                port,
                ssl=ssl_ctx,
                server_hostname=server_hostname,  # type: ignore[arg-type]
            )
    except TimeoutError:
        raise DialError(f"timed out after {timeout:g}s connecting to {host}:{port}") from None
    except ssl.SSLError as exc:
        raise DialError(f"TLS error: {exc.reason or exc}") from None
    except OSError as exc:
        raise DialError(f"dial {host}:{port}: {exc.strerror or exc}") from None


class _Handshake(asyncio.Protocol):
    """Send the upgrade request; wait for a complete response head."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.buffer = bytearray()
        self.done: asyncio.Future[tuple[http.Response, bytes]] = (
            asyncio.get_running_loop().create_future()
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        self.buffer += data
        try:
            end = http.find_head_end(self.buffer)
            if end < 0:
                return
            response = http.parse_response(self.buffer[:end])
        except http.HTTPError as exc:
            self.done.set_exception(DialError(f"bad HTTP response from server: {exc}"))
            return
        self.done.set_result((response, bytes(self.buffer[end:])))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(DialError("connection closed during the WebSocket handshake"))


def upgrade_request(
    url: SplitResult,
    key: str,
    headers: list[tuple[str, str]],
    hostname: str | None,
    user_agent: str,
) -> bytes:
    host = hostname or url.netloc.rsplit("@", 1)[-1]
    target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    fields = [
        ("Host", host),
        ("User-Agent", user_agent),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Protocol", CHISEL_PROTOCOL),
        ("Sec-WebSocket-Version", "13"),
    ]
    fields += [(name, value) for name, value in headers if name.lower() != "host"]
    fields.append(("Upgrade", "websocket"))
    return http.build_request("GET", target, fields)


async def open_websocket(
    url: SplitResult,
    *,
    headers: list[tuple[str, str]],
    hostname: str | None = None,
    user_agent: str = "cloud-connector",
    proxy: str | None = None,
    tls: TLSOptions | None = None,
    timeout: float = 30.0,
) -> WebSocketTransport:
    """Connect and upgrade; raises DialError or HandshakeError."""
    loop = asyncio.get_running_loop()
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    handshake = _Handshake(upgrade_request(url, key, headers, hostname, user_agent))
    transport, _ = await connect_socket(
        loop, lambda: handshake, url, proxy=proxy, tls=tls, timeout=timeout
    )
    try:
        async with asyncio.timeout(timeout):
            response, rest = await handshake.done
    except TimeoutError:
        transport.abort()
        raise DialError(f"no WebSocket handshake answer within {timeout:g}s") from None
    except BaseException:
        transport.abort()
        raise
    if response.status != 101:
        transport.abort()
        raise HandshakeError(response.status, response.reason)
    if response.headers.get("Sec-WebSocket-Accept") != http.accept_key(key):
        transport.abort()
        raise DialError("websocket: bad handshake (wrong Sec-WebSocket-Accept)")
    protocol = response.headers.get("Sec-WebSocket-Protocol")
    if protocol not in (None, CHISEL_PROTOCOL):
        transport.abort()
        raise DialError(
            f"websocket: server chose protocol {protocol!r}, expected {CHISEL_PROTOCOL}"
        )
    wst = WebSocketTransport(transport, WebSocketStream(is_client=True, max_frame_size=MAX_FRAME))
    transport.set_protocol(wst)
    if rest:
        wst.data_received(rest)
    return wst
