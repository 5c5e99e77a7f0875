"""outsystemscc's pre-flight: a plain GET of the server URL, redirects not followed;
a redirect's Location becomes the URL the WebSocket connects to.  It goes through
``--proxy`` like the connection itself.
"""

from __future__ import annotations

import asyncio
from typing import cast
from urllib.parse import SplitResult, urljoin, urlunsplit

from cc.aio.dial import DialError, TLSOptions, TLSWatch, connect_socket, normalize_server_url
from cc.protocol import http

__all__ = ["follow_redirect"]

_REDIRECTS = {301, 302, 303, 307, 308}


class _Get(asyncio.Protocol):
    def __init__(self, request: bytes, watch: TLSWatch) -> None:
        self.request = request
        self.watch = watch
        self.buffer = bytearray()
        self.done: asyncio.Future[http.Response] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        self.buffer += data
        try:
            end = http.find_head_end(self.buffer)
            if end >= 0:
                self.done.set_result(http.parse_response(self.buffer[:end]))
        except http.HTTPError as exc:
            self.done.set_exception(DialError(f"pre-flight: bad HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        error = self.watch.lost(exc) if not self.buffer else None  # e.g. client cert refused
        self.done.set_exception(
            error or DialError("pre-flight: connection closed before a response")
        )


async def follow_redirect(
    url: SplitResult,
    *,
    user_agent: str,
    proxy: str | None = None,
    tls: TLSOptions | None = None,
    timeout: float = 30.0,
) -> SplitResult:
    """The URL to connect to: ``url`` itself, or where a redirect points.

    The token header is not sent here (outsystemscc does not send it either), so
    a redirect cannot carry it to another host.
    """
    scheme = {"ws": "http", "wss": "https"}.get(url.scheme, url.scheme)
    plain = url._replace(scheme=scheme)
    target = (plain.path or "/") + (f"?{plain.query}" if plain.query else "")
    host = plain.netloc.rsplit("@", 1)[-1]
    fields = [("Host", host), ("User-Agent", user_agent)]
    fields.append(("Connection", "close"))
    watch = TLSWatch(host)
    get = _Get(http.build_request("GET", target, fields), watch)
    transport, _ = await connect_socket(
        asyncio.get_running_loop(),
        lambda: get,
        plain,
        proxy=proxy,
        tls=tls,
        timeout=timeout,
        watch=watch,
    )
    try:
        async with asyncio.timeout(timeout):
            response = await get.done
    except TimeoutError:
        raise DialError(f"pre-flight: no answer within {timeout:g}s") from None
    finally:
        transport.abort()
    location = response.headers.get("Location")
    if response.status in _REDIRECTS and location:
        try:
            return normalize_server_url(urljoin(urlunsplit(plain), location))
        except ValueError as exc:
            raise DialError(f"pre-flight: unusable redirect {location!r}: {exc}") from None
    return url
