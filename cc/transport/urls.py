"""Server URLs as chisel reads them: default scheme and ports, and the ``ws://`` form."""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit, urlunsplit

__all__ = ["host_port", "is_secure", "normalize_server_url", "websocket_url"]


def normalize_server_url(server: str) -> SplitResult:
    """chisel's rules: no scheme means http; http(s) and ws(s) both accepted; default ports."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in server):
        raise ValueError(f"invalid control character in server URL {server!r}")  # as Go's
    if "://" not in server:
        server = "http://" + server
    url = urlsplit(server)
    if url.scheme not in ("http", "https", "ws", "wss"):
        raise ValueError(f"unsupported URL scheme {url.scheme!r} in {server!r}")
    if not url.hostname:
        raise ValueError(f"no host in server URL {server!r}")
    try:  # what the Host header and the resolver use (Go sends the punycode too)
        url.hostname.encode("idna")
    except UnicodeError:
        raise ValueError(f"invalid host name in server URL {server!r}") from None
    try:
        url.port  # noqa: B018 - validates the port
    except ValueError:
        raise ValueError(f"bad port in server URL {server!r}") from None
    return url


def websocket_url(url: SplitResult) -> str:
    """The ``ws://`` / ``wss://`` form chisel logs and connects to."""
    scheme = {"http": "ws", "https": "wss"}.get(url.scheme, url.scheme)
    return urlunsplit((scheme, url.netloc, url.path, url.query, ""))


def is_secure(url: SplitResult) -> bool:
    """Whether the URL asks for TLS (``https://`` or ``wss://``)."""
    return url.scheme in ("https", "wss")


def host_port(url: SplitResult) -> tuple[str, int]:
    """Where to dial: the URL's host and its port, or the scheme's default."""
    assert url.hostname is not None
    return url.hostname, url.port or (443 if is_secure(url) else 80)
