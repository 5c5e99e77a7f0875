"""Reach the gateway: TCP or TLS, directly or through an HTTP CONNECT / SOCKS5 proxy,
then the WebSocket upgrade.  What comes back is a ``WebSocketTransport`` ready
for the SSH session.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import SplitResult, urlsplit, urlunsplit

from cc import CHISEL_PROTOCOL, PEER_HEADER, __version__
from cc.protocol import http
from cc.protocol.ws import WebSocketStream
from cc.transport.websocket import WebSocketTransport

__all__ = [
    "DialError",
    "HandshakeError",
    "ResponseReader",
    "TLSOptions",
    "TLSVerifyError",
    "TLSWatch",
    "connect_socket",
    "normalize_server_url",
    "open_websocket",
    "websocket_url",
]

MAX_FRAME = 4 << 20


class DialError(ConnectionError):
    """The gateway could not be reached (network, proxy, TLS): worth retrying."""


class TLSVerifyError(DialError):
    """A TLS certificate was refused: ours of the gateway's, or the gateway's of ours.

    Deliberately *fatal* for the connector (it stops with a non-zero exit and the
    verification reason instead of retrying): an expired or wrongly named
    certificate, an unknown CA or a missing / rejected client certificate will
    not fix itself between retries, and a connector that keeps redialling hides
    the reason in a retry loop.  The same goes for our own TLS files that cannot
    be loaded (``TLSOptions.context``).  Other TLS failures (a reset during the handshake,
    a peer that does not speak TLS) stay plain, retryable ``DialError`` s, as do
    refused connections and proxy trouble.
    """


#: Alerts by which the peer refuses the certificate *we* sent (or did not send).
_PEER_CERT_ALERTS = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "requires a client certificate",
    "SSLV3_ALERT_BAD_CERTIFICATE": "rejected our client certificate (bad certificate)",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "rejected our client certificate (expired)",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "rejected our client certificate (revoked)",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "rejected our client certificate",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "rejected our client certificate (unsupported)",
    "TLSV1_ALERT_UNKNOWN_CA": "does not trust the CA of our client certificate",
}

#: TLS HandshakeType certificate_request (RFC 8446 section 4) and ContentType handshake.
_CERTIFICATE_REQUEST = 13
_HANDSHAKE = 22


class TLSWatch:
    """One TLS connection's story, to name the reason when it fails.

    Python's asyncio and uvloop TLS servers (our gateway among them) drop a
    connection *without a TLS alert* when they refuse a client certificate, and
    with TLS 1.3 that happens after the client's side of the handshake is done:
    the client sees only the connection closing.  So we note, through OpenSSL's
    message callback (CPython's ``SSLContext._msg_callback``; without it the
    watch just never fires), whether the server asked for a client certificate.
    Asked, none configured, closed without an answer: the server requires one,
    a fatal ``TLSVerifyError``.  Asked, one sent, closed: probably refused, but
    a server going away looks the same, so that stays a retryable hint.
    """

    def __init__(self, where: str) -> None:
        self.where = where
        self.cert_requested = False
        self.have_cert = False

    def attach(self, ctx: ssl.SSLContext, *, have_cert: bool) -> None:
        self.have_cert = have_cert
        with contextlib.suppress(AttributeError):
            ctx._msg_callback = self._message  # type: ignore[attr-defined]

    def detach(self, ctx: ssl.SSLContext) -> None:
        """After the handshake: a certificate request can only come before its end."""
        with contextlib.suppress(AttributeError):
            ctx._msg_callback = None  # type: ignore[attr-defined]

    def _message(
        self,
        _conn: object,
        direction: str,
        _version: object,
        content_type: int,
        msg_type: int,
        _data: bytes,
    ) -> None:
        if direction == "read" and content_type == _HANDSHAKE and msg_type == _CERTIFICATE_REQUEST:
            self.cert_requested = True

    def error(self, exc: ssl.SSLError) -> DialError:
        """A DialError (TLSVerifyError for certificate refusals) naming the reason in words."""
        where = self.where
        if isinstance(exc, ssl.SSLCertVerificationError):
            reason = exc.verify_message or exc.reason or str(exc)
            return TLSVerifyError(
                f"TLS: cannot verify the certificate of {where}: {reason} "
                "(check --tls-ca and --sni, or the gateway's certificate)"
            )
        alert = _PEER_CERT_ALERTS.get(exc.reason or "")
        if alert is not None:
            if not self.have_cert:  # Go's server answers a missing one with bad_certificate
                alert = _PEER_CERT_ALERTS["TLSV13_ALERT_CERTIFICATE_REQUIRED"]
            return TLSVerifyError(
                f"TLS: {where} {alert} ({exc.reason}; check --tls-cert and --tls-key)"
            )
        return self.closed() or DialError(f"TLS error with {where}: {exc.reason or exc}")

    def closed(self) -> DialError | None:
        """Why the server closed before answering, when the handshake tells; else None."""
        if not self.cert_requested:
            return None
        if not self.have_cert:
            return TLSVerifyError(
                f"TLS: {self.where} requires a client certificate (it asked for one and "
                "closed the connection without one; give --tls-cert and --tls-key)"
            )
        return DialError(
            f"TLS: {self.where} asked for a client certificate and closed the connection: "
            "it may not accept ours (check --tls-cert and --tls-key)"
        )

    def lost(self, exc: BaseException | None) -> DialError | None:
        """For ``connection_lost`` before any answer: the TLS reason, if there is one."""
        if isinstance(exc, ssl.SSLError):
            return self.error(exc)
        return self.closed()


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
        """A client context: system CAs (or ``ca``), optional client certificate.

        Files that cannot be used raise TLSVerifyError (fatal for the connector):
        a mistyped ``ca`` must not quietly fall back to trusting the system CAs.
        """
        if self.ca and not os.path.exists(self.ca):
            raise TLSVerifyError(f"TLS: CA file {self.ca}: no such file or directory (--tls-ca)")
        try:
            ctx = ssl.create_default_context(
                cafile=self.ca if self.ca and os.path.isfile(self.ca) else None,
                capath=self.ca if self.ca and os.path.isdir(self.ca) else None,
            )
        except OSError as exc:  # ssl.SSLError included: not PEM
            raise TLSVerifyError(
                f"TLS: cannot load CA certificates from {self.ca} (--tls-ca): {_file_reason(exc)}"
            ) from None
        if self.skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert:
            try:
                ctx.load_cert_chain(self.cert, self.key)
            except OSError as exc:  # missing, not PEM, or a key that does not match
                raise TLSVerifyError(
                    f"TLS: cannot load the client certificate {self.cert} with key "
                    f"{self.key or self.cert} (--tls-cert, --tls-key): {_file_reason(exc)}"
                ) from None
        return ctx


def _file_reason(exc: OSError) -> str:
    return exc.strerror or getattr(exc, "reason", None) or str(exc)


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
    watch: TLSWatch | None = None,
) -> tuple[asyncio.Transport, asyncio.Protocol]:
    """TCP (or TLS) to the gateway, through ``proxy`` when given.

    ``watch`` (see TLSWatch) follows the TLS handshake, for the protocol's
    ``connection_lost`` to explain a refusal that comes after it.
    """
    host, port = _host_port(url)
    watch = watch or TLSWatch(f"{host}:{port}")
    ssl_ctx = (tls or TLSOptions()).context() if _is_secure(url) else None
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


class ResponseReader(asyncio.Protocol):
    """Send one request head; resolve ``done`` with (response head, bytes after it).

    Used for the WebSocket upgrade and for outsystemscc's pre-flight GET; ``what``
    names the exchange in errors.
    """

    def __init__(self, request: bytes, watch: TLSWatch, what: str) -> None:
        self.request = request
        self.watch = watch
        self.what = what
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
            self.done.set_exception(DialError(f"{self.what}: bad HTTP response: {exc}"))
            return
        self.done.set_result((response, bytes(self.buffer[end:])))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        # TLS 1.3: a server refuses our client certificate only after the handshake,
        # so its alert (or its silence) arrives here rather than in connect_socket.
        error = self.watch.lost(exc) if not self.buffer else None
        self.done.set_exception(
            error or DialError(f"{self.what}: connection closed before a response")
        )


def upgrade_request(
    url: SplitResult,
    key: str,
    headers: list[tuple[str, str]],
    hostname: str | None,
    user_agent: str,
    announce: bool = True,
) -> bytes:
    """The upgrade request; ``announce`` adds our peer header (outsystemscc leaves it out
    so that its request stays exactly the original's)."""
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
    if announce:
        fields.append((PEER_HEADER, __version__))
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
    announce: bool = True,
) -> WebSocketTransport:
    """Connect and upgrade; raises DialError or HandshakeError."""
    loop = asyncio.get_running_loop()
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    host, port = _host_port(url)
    watch = TLSWatch(f"{host}:{port}")
    handshake = ResponseReader(
        upgrade_request(url, key, headers, hostname, user_agent, announce),
        watch,
        "websocket handshake",
    )
    transport, _ = await connect_socket(
        loop, lambda: handshake, url, proxy=proxy, tls=tls, timeout=timeout, watch=watch
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
    wst.set_extra_info(cc_peer_is_ours=announce and response.headers.get(PEER_HEADER) is not None)
    transport.set_protocol(wst)
    if rest:
        wst.data_received(rest)
    return wst
