"""outsystemscc's pre-flight: a plain GET of the server URL, redirects not followed;
a redirect's Location becomes the URL the WebSocket connects to.  It goes through
``--proxy`` like the connection itself.
"""

from __future__ import annotations

import asyncio
from urllib.parse import SplitResult, urljoin, urlunsplit

from cc.protocol import http
from cc.transport.dial import connect_socket
from cc.transport.errors import DialError
from cc.transport.exchange import Exchange
from cc.transport.tls import TLSOptions, TLSWatch
from cc.transport.urls import normalize_server_url

__all__ = ["follow_redirect"]

_REDIRECTS = {301, 302, 303, 307, 308}


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
    request = http.build_request("GET", target, fields)
    get: Exchange[tuple[http.Response, bytes]] = Exchange(
        request, http.ResponseParser().receive_data, watch, "pre-flight"
    )
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
            response, _ = await get.done
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
