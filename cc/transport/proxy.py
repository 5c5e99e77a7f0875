"""``--proxy``: reach the gateway through an HTTP CONNECT or SOCKS5 proxy (python-socks).

chisel accepts ``http://user:pass@host:port`` and ``socks://...``; we also take
``socks5://`` (the proxy gets an IP we resolved) and ``socks5h://`` / ``socks://``
(the proxy resolves the name, which is what a connector inside a locked-down
network usually needs).
"""

from __future__ import annotations

import socket
from urllib.parse import unquote, urlsplit

from python_socks import ProxyError, ProxyTimeoutError, ProxyType
from python_socks.async_.asyncio import Proxy

from cc.log import redact

__all__ = ["ProxyURLError", "open_proxy_socket", "parse_proxy_url"]

_SCHEMES = {
    "http": (ProxyType.HTTP, True),
    "https": (ProxyType.HTTP, True),
    "socks": (ProxyType.SOCKS5, True),
    "socks5h": (ProxyType.SOCKS5, True),
    "socks5": (ProxyType.SOCKS5, False),
}


class ProxyURLError(ValueError):
    """The --proxy value cannot be used."""


def parse_proxy_url(url: str) -> tuple[ProxyType, str, int, str | None, str | None, bool]:
    """(type, host, port, user, password, remote_dns) from a proxy URL."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ProxyURLError(
            f"unsupported proxy scheme {parts.scheme!r} in {redact(url)} "
            "(use http://, socks://, socks5:// or socks5h://)"
        )
    if not parts.hostname:
        raise ProxyURLError(f"no host in proxy URL {redact(url)}")
    try:
        port = parts.port or (1080 if parts.scheme.startswith("socks") else 8080)
    except ValueError:
        raise ProxyURLError(f"bad port in proxy URL {redact(url)}") from None
    kind, rdns = _SCHEMES[parts.scheme]
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return kind, parts.hostname, port, user, password, rdns


async def open_proxy_socket(url: str, host: str, port: int) -> socket.socket:
    """A connected socket to ``host:port`` through the proxy; OSError with a clear reason."""
    kind, phost, pport, user, password, rdns = parse_proxy_url(url)
    proxy = Proxy(kind, phost, pport, username=user, password=password, rdns=rdns)
    try:
        return await proxy.connect(dest_host=host, dest_port=port)
    except ProxyTimeoutError:
        raise OSError(f"proxy {phost}:{pport} timed out") from None
    except ProxyError as exc:
        raise OSError(f"proxy {phost}:{pport} refused: {exc}") from None
