"""Reaching a named service's gateway: a WebRoute leg or a registration WebSocket.

Both are one request and one answer over TCP or TLS (through ``--proxy`` when
given), like chisel's upgrade: the bytes and the checks are
``cc.protocol.webroute``, the dialing ``dial.connect_socket``.  What comes back is
the raw transport, reading paused, and the bytes that followed the 101 (the
gateway may have sent them at once); the caller takes the transport over.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import SplitResult, quote, unquote, urlsplit, urlunsplit

from cc.protocol import webroute as wr
from cc.protocol.errors import ProtocolError
from cc.protocol.http import Response, ResponseParser
from cc.transport.dial import connect_socket
from cc.transport.errors import DialError
from cc.transport.exchange import Exchange
from cc.transport.tls import TLSOptions, TLSWatch
from cc.transport.urls import host_port

__all__ = ["ServiceURL", "open_registration", "open_webroute", "parse_service_url"]

#: remoted's schemes (the PHP SDK's URLs) and what they mean on the wire
_SCHEMES = {
    "rwr": "http",  # a client over WebRoute
    "rwrs": "https",
    "rws": "http",  # a server registering over WebSocket
    "rwss": "https",
    "http": "http",
    "https": "https",
    "ws": "http",
    "wss": "https",
}


@dataclass(frozen=True)
class ServiceURL:
    """Where a named service is: the gateway (http/https), the path, and a key if given."""

    gateway: SplitResult
    target: str
    key: str | None

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def __str__(self) -> str:
        """The URL without its key, for logs."""
        netloc = self.gateway.netloc.rpartition("@")[2]
        return urlunsplit((self.gateway.scheme, netloc, self.target, "", ""))


def parse_service_url(text: str, *, default_path: str | None = None) -> ServiceURL:
    """``rwr://KEY@host:port/path``, ``https://host/path`` ...; ValueError if malformed.

    The key is the URL's user part, as in the PHP SDK's URLs; a URL without a path
    gets ``default_path`` (None: a path is required).
    """
    if "://" not in text:
        text = "http://" + text
    url = urlsplit(text)
    scheme = _SCHEMES.get(url.scheme.lower())
    if scheme is None:
        raise ValueError(f"unsupported URL scheme {url.scheme!r} (rwr, rwrs, http, https)")
    if not url.hostname:
        raise ValueError("no host in the service URL")
    try:
        url.port  # noqa: B018 - validates the port
    except ValueError:
        raise ValueError("bad port in the service URL") from None
    path = url.path or default_path
    if not path:
        raise ValueError("the service URL needs a path (the named service, e.g. /jira)")
    key = unquote(url.username) if url.username else None
    netloc = url.netloc.rpartition("@")[2]
    gateway = SplitResult(scheme, netloc, "", "", "")
    target = quote(path, safe="/:@!$&'()*+,;=-._~%") + (f"?{url.query}" if url.query else "")
    return ServiceURL(gateway, target, key)


def _host_header(url: SplitResult) -> str:
    host, port = host_port(url)
    default = 443 if url.scheme == "https" else 80
    shown = f"[{host}]" if ":" in host else host
    return shown if port == default else f"{shown}:{port}"


async def _exchange(
    url: SplitResult,
    request: bytes,
    check: Callable[[Response, bytes], None],
    *,
    proxy: str | None,
    tls: TLSOptions | None,
    timeout: float,
    answer_timeout: float,
    what: str,
) -> tuple[asyncio.Transport, bytes]:
    parser = ResponseParser()

    def parse(data: bytes) -> tuple[Response, bytes] | None:
        return parser.receive_data(data)

    host, port = host_port(url)
    watch = TLSWatch(f"{host}:{port}")
    exchange: Exchange[tuple[Response, bytes]] = Exchange(request, parse, watch, what)
    loop = asyncio.get_running_loop()
    transport, _ = await connect_socket(
        loop, lambda: exchange, url, proxy=proxy, tls=tls, timeout=timeout, watch=watch
    )
    try:
        async with asyncio.timeout(answer_timeout):
            response, rest = await exchange.done
    except TimeoutError:
        transport.abort()
        raise DialError(f"no {what} answer within {answer_timeout:g}s") from None
    except BaseException:
        transport.abort()
        raise
    transport.pause_reading()
    rest += bytes(exchange.late)
    try:
        check(response, rest)
    except ProtocolError:
        transport.abort()
        raise
    return transport, rest


async def open_webroute(
    service: ServiceURL,
    key: str,
    webroute_id: str | None = None,
    *,
    wait: int | None = None,
    proxy: str | None = None,
    tls: TLSOptions | None = None,
    timeout: float = 30.0,
) -> tuple[asyncio.Transport, bytes]:
    """A linked WebRoute leg: the transport (reading paused) and the bytes after the 101.

    A client (client key, a fresh ID) waits here until a server answers (at most
    ``max(60, wait)`` seconds, then the gateway says 504); a server (server key, the
    notified ID) is linked at once.  ``wait`` is the WebRoute-Timeout asked for;
    ``timeout`` bounds the dial.  Raises WebRouteRefused, ProtocolError or DialError.
    """
    wid = webroute_id or wr.new_webroute_id()
    request = wr.webroute_request(service.target, _host_header(service.gateway), key, wid, wait)
    parked = max(wr.DEFAULT_TIMEOUT, wait or 0)
    return await _exchange(
        service.gateway,
        request,
        lambda response, rest: wr.check_switch(response, rest, wid),
        proxy=proxy,
        tls=tls,
        timeout=timeout,
        answer_timeout=timeout + parked + 5,
        what="WebRoute",
    )


async def open_registration(
    service: ServiceURL,
    key: str,
    *,
    proxy: str | None = None,
    tls: TLSOptions | None = None,
    timeout: float = 30.0,
) -> tuple[asyncio.Transport, bytes]:
    """A registration WebSocket for ``service.path``: transport (paused) and first bytes."""
    websocket_key = base64.b64encode(os.urandom(16)).decode("ascii")
    request = wr.registration_request(
        service.target, _host_header(service.gateway), key, websocket_key
    )
    return await _exchange(
        service.gateway,
        request,
        lambda response, rest: wr.check_registration(response, rest, websocket_key),
        proxy=proxy,
        tls=tls,
        timeout=timeout,
        answer_timeout=timeout,
        what="registration",
    )
