"""Reach the gateway: TCP or TLS, directly or through an HTTP CONNECT / SOCKS5 proxy,
then the WebSocket upgrade.  What comes back is a ``WebSocketTransport`` ready
for the SSH session.

Only dialing and piping bytes live here: the upgrade itself (the request bytes,
the response check) is ``cc.protocol.handshake``, TLS diagnosis ``tls.py``, URLs
``urls.py``.  The names the connector and the CLI import from here are
re-exported from those modules.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable
from typing import cast
from urllib.parse import SplitResult

from cc import __version__
from cc.protocol.handshake import ClientEvent, ClientHandshake, UpgradeFailed, UpgradeRefused
from cc.protocol.ws import WebSocketStream
from cc.transport.errors import DialError, HandshakeError
from cc.transport.exchange import Exchange
from cc.transport.tls import TLSOptions, TLSVerifyError, TLSWatch
from cc.transport.urls import host_port, is_secure, normalize_server_url, websocket_url
from cc.transport.websocket import WebSocketTransport

__all__ = [
    "DialError",
    "HandshakeError",
    "TLSOptions",
    "TLSVerifyError",
    "TLSWatch",
    "connect_socket",
    "normalize_server_url",
    "open_websocket",
    "websocket_url",
]

#: Largest WebSocket frame we take from the gateway (the connector's side; the
#: gateway bounds unauthenticated peers tighter).
MAX_FRAME_FROM_GATEWAY = 4 << 20


async def connect_socket(
    loop: asyncio.AbstractEventLoop,
    protocol_factory: object,
    url: SplitResult,
    *,
    proxy: str | None,
    tls: TLSOptions | None,
    timeout: float,
    watch: TLSWatch | None = None,
) -> tuple[asyncio.Transport, asyncio.Protocol]:
    """TCP (or TLS) to the gateway, through ``proxy`` when given.

    ``watch`` (see TLSWatch) follows the TLS handshake, for the protocol's
    ``connection_lost`` to explain a refusal that comes after it.
    """
    host, port = host_port(url)
    watch = watch or TLSWatch(f"{host}:{port}")
    ssl_ctx = (tls or TLSOptions()).context() if is_secure(url) else None
    if ssl_ctx is not None:
        watch.attach(ssl_ctx, have_cert=bool(tls and tls.cert))
    server_hostname = ((tls.sni if tls else None) or host) if ssl_ctx else None
    factory = cast(Callable[[], asyncio.Protocol], protocol_factory)
    try:
        async with asyncio.timeout(timeout):
            if proxy:
                from cc.transport.proxy import open_proxy_socket

                sock = await open_proxy_socket(proxy, host, port)
                connected = await loop.create_connection(
                    factory, sock=sock, ssl=ssl_ctx, server_hostname=server_hostname
                )
            else:
                connected = await loop.create_connection(
                    factory,
                    host,
                    port,
                    ssl=ssl_ctx,
                    server_hostname=server_hostname,
                )
    except TimeoutError:
        raise DialError(f"timed out after {timeout:g}s connecting to {host}:{port}") from None
    except ssl.SSLError as exc:
        raise watch.error(exc) from None
    except OSError as exc:
        # a TLS 1.2 server refusing our client certificate just resets the handshake
        closed = watch.closed() if ssl_ctx is not None else None
        raise closed or DialError(f"dial {host}:{port}: {_os_reason(exc)}") from None
    if ssl_ctx is not None:
        watch.detach(ssl_ctx)  # handshake done: spare every later TLS record the callback
    return connected


def _os_reason(exc: OSError) -> str:
    """Why, in words: asyncio's "Connect call failed ('127.0.0.1', 80)" hides the errno's."""
    if exc.errno and (not exc.strerror or exc.strerror.startswith("Connect call failed")):
        return os.strerror(exc.errno)
    return exc.strerror or str(exc) or type(exc).__name__


async def open_websocket(
    url: SplitResult,
    *,
    headers: list[tuple[str, str]],
    hostname: str | None = None,
    user_agent: str = "cloud-connector",
    proxy: str | None = None,
    tls: TLSOptions | None = None,
    timeout: float = 30.0,
    announce: bool = True,
) -> WebSocketTransport:
    """Connect and upgrade; raises DialError or HandshakeError."""
    loop = asyncio.get_running_loop()
    handshake = ClientHandshake(
        url,
        headers=headers,
        hostname=hostname,
        user_agent=user_agent,
        announce=announce,
        version=__version__,
    )
    host, port = host_port(url)
    watch = TLSWatch(f"{host}:{port}")
    exchange: Exchange[ClientEvent] = Exchange(
        handshake.request_bytes(),
        handshake.receive_data,
        watch,
        "websocket handshake",
        on_close=handshake.connection_closed,
    )
    transport, _ = await connect_socket(
        loop, lambda: exchange, url, proxy=proxy, tls=tls, timeout=timeout, watch=watch
    )
    try:
        async with asyncio.timeout(timeout):
            event = await exchange.done
    except TimeoutError:
        transport.abort()
        raise DialError(f"no WebSocket handshake answer within {timeout:g}s") from None
    except BaseException:
        transport.abort()
        raise
    if isinstance(event, UpgradeRefused):
        transport.abort()
        raise HandshakeError(event.status, event.reason, event.detail, event.retry_after)
    if isinstance(event, UpgradeFailed):
        transport.abort()
        raise DialError(event.message)
    wst = WebSocketTransport(
        transport, WebSocketStream(is_client=True, max_frame_size=MAX_FRAME_FROM_GATEWAY)
    )
    wst.set_extra_info(cc_peer_is_ours=event.peer_is_ours)
    transport.set_protocol(wst)
    rest = event.leftover + bytes(exchange.late)
    if rest:
        wst.data_received(rest)
    return wst
