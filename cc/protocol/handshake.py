"""The WebSocket upgrade, both sides, as bytes in and events out.

websockets' sans-I/O handshake (``ClientProtocol`` / ``ServerProtocol``) does the
checking, so we do not keep a second copy of RFC 6455 section 4: the key, the
Sec-WebSocket-Accept check, Upgrade/Connection, the version, subprotocol
negotiation, and its line-length and header-count limits on the response.

What stays ours is what chisel peers see on the wire and what the gateway routes:

* the client's request keeps Go's header order and names (Host, User-Agent,
  Connection, Sec-WebSocket-Key, Sec-WebSocket-Protocol, Sec-WebSocket-Version,
  custom headers, [our peer header], Upgrade), captured byte for byte from
  outsystemscc and chisel; websockets' ``connect()`` orders them differently, so
  the request is built here with the protocol's own key;
* the response head is found by our bounded reader (``http.find_head_end``) and
  only that head is fed to websockets; the bytes after it are WebSocket frames,
  which the fast path (``cc.protocol.ws``) frames, not websockets;
* a non-101 answer is reported with its status and reason, as Go's
  "bad handshake" error does, plus the first line of a short plain-text body
  (our gateway says there whether the token was missing or wrong) and
  ``Retry-After`` (a gateway that banned this address says for how long);
* the gateway's 101 carries no Date header, like chisel's (gorilla's), and names
  ``chisel-v3``; routing (a wrong subprotocol is plain HTTP) and the token check
  stay in the gateway, before any WebSocket exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, quote

from websockets.client import ClientProtocol
from websockets.datastructures import Headers as WSHeaders
from websockets.exceptions import (
    InvalidHandshake,
    InvalidHeader,
    InvalidMessage,
    InvalidUpgrade,
    SecurityError,
)
from websockets.http11 import Request as WSRequest
from websockets.http11 import Response as WSResponse
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol
from websockets.uri import WebSocketURI

from cc import CHISEL_PROTOCOL, PEER_HEADER, __version__

from . import http

__all__ = [
    "ClientEvent",
    "ClientHandshake",
    "UpgradeAccepted",
    "UpgradeAnswer",
    "UpgradeFailed",
    "UpgradeRefused",
    "accept_upgrade",
]

_SUBPROTOCOLS = [Subprotocol(CHISEL_PROTOCOL)]


@dataclass(frozen=True, slots=True)
class UpgradeAccepted:
    """A valid 101: the WebSocket is open; ``leftover`` are its first frame bytes."""

    peer_is_ours: bool
    leftover: bytes
    subprotocol: str | None


#: The most of a refusal's body read for its ``detail`` (a reason, not a web page).
MAX_REFUSAL_BODY = 1024


@dataclass(frozen=True, slots=True)
class UpgradeRefused:
    """The gateway answered with something other than 101 (a 401, a 404, a proxy's 502).

    ``detail``: the first line of a short plain-text body, printable ASCII only
    (it comes from the network and goes to a terminal); ``retry_after``: the
    ``Retry-After`` header in seconds, when it is a number.
    """

    status: int
    reason: str
    detail: str = ""
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class UpgradeFailed:
    """A 101 that does not complete the handshake, or no HTTP at all; ``message`` says why."""

    message: str


ClientEvent = UpgradeAccepted | UpgradeRefused | UpgradeFailed


def _uri(url: SplitResult) -> WebSocketURI:
    secure = url.scheme in ("https", "wss")
    return WebSocketURI(
        secure,
        url.hostname or "",
        url.port or (443 if secure else 80),
        url.path or "/",
        url.query,
    )


class ClientHandshake:
    """The connector's side: ``request_bytes()`` to send, then ``receive_data`` until an event.

    ``headers`` are the user's (``--header``), written after the WebSocket fields
    as Go does; a ``Host`` among them is ignored (``hostname`` sets it).
    ``announce`` adds our peer header, which outsystemscc leaves out so that its
    request stays exactly the original's.
    """

    def __init__(
        self,
        url: SplitResult,
        *,
        headers: Sequence[tuple[str, str]] = (),
        hostname: str | None = None,
        user_agent: str = "cloud-connector",
        announce: bool = True,
        version: str = __version__,
    ) -> None:
        self._protocol = ClientProtocol(_uri(url), subprotocols=_SUBPROTOCOLS)
        self.announce = announce
        self.key: str = self._protocol.key
        host = hostname or _host_field(url)
        target = _request_target(url)
        fields = [
            ("Host", host),
            ("User-Agent", user_agent),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", self.key),
            ("Sec-WebSocket-Protocol", CHISEL_PROTOCOL),
            ("Sec-WebSocket-Version", "13"),
        ]
        fields += [(name, value) for name, value in headers if name.lower() != "host"]
        if announce:
            fields.append((PEER_HEADER, version))
        fields.append(("Upgrade", "websocket"))
        for name, value in fields:
            http.check_field(name, value)  # no CR/LF from --header into the request
        wire = [(name, _wire_value(value)) for name, value in fields]
        self._protocol.send_request(WSRequest(target, WSHeaders(wire)))
        self._request = b"".join(self._protocol.data_to_send())
        self._buffer = bytearray()
        self._event: ClientEvent | None = None
        #: a non-101 head, while its (short) body is still arriving
        self._refusal: http.Response | None = None
        self._body_size = 0

    def request_bytes(self) -> bytes:
        """The upgrade request, exactly as it goes on the wire."""
        return self._request

    def receive_data(self, data: bytes) -> ClientEvent | None:
        """Feed bytes from the gateway; the outcome once the response head is complete.

        After the outcome, further bytes are not the handshake's: they are ignored
        here and belong to the WebSocket stream.
        """
        if self._event is not None:
            return None
        self._buffer += data
        if self._refusal is not None:
            return self._refused(complete=False)
        try:
            end = http.find_head_end(self._buffer)
            if end < 0:
                return None
            head = bytes(self._buffer[:end])
            response = http.parse_response(head)
        except http.HTTPError as exc:
            return self._finish(UpgradeFailed(f"websocket handshake: bad HTTP response: {exc}"))
        if response.status != 101:
            self._refusal = response
            self._body_size = _body_size(response)
            del self._buffer[:end]
            return self._refused(complete=False)
        leftover = bytes(self._buffer[end:])
        self._buffer.clear()
        self._protocol.receive_data(head)
        events = self._protocol.events_received()
        failure = self._protocol.handshake_exc
        if failure is not None:
            return self._finish(UpgradeFailed(_explain(failure, response)))
        if not events:  # a complete 101 head always makes an event; be safe anyway
            return self._finish(UpgradeFailed("websocket handshake: incomplete response"))
        return self._finish(
            UpgradeAccepted(
                peer_is_ours=self.announce and response.headers.get(PEER_HEADER) is not None,
                leftover=leftover,
                subprotocol=self._protocol.subprotocol,
            )
        )

    def connection_closed(self) -> ClientEvent | None:
        """The peer closed: a refusal whose body was cut short is still a refusal."""
        if self._event is None and self._refusal is not None:
            return self._refused(complete=True)
        return None

    def _refused(self, complete: bool) -> ClientEvent | None:
        """The refusal, once its body (at most MAX_REFUSAL_BODY bytes of it) is here."""
        response = self._refusal
        assert response is not None
        if not complete and len(self._buffer) < self._body_size:
            return None
        body = bytes(self._buffer[: self._body_size])
        self._buffer.clear()
        return self._finish(
            UpgradeRefused(
                response.status,
                response.reason,
                _detail(body),
                _retry_after(response.headers.get("Retry-After")),
            )
        )

    def _finish(self, event: ClientEvent) -> ClientEvent:
        self._event = event
        return event


def _body_size(response: http.Response) -> int:
    """How much of a refusal's body to wait for: a short text body, else none."""
    kind = (response.headers.get("Content-Type") or "text/plain").split(";")[0].strip().lower()
    try:
        length = int(response.headers.get("Content-Length") or "0")
    except ValueError:
        return 0
    if kind != "text/plain" or not 0 < length <= MAX_REFUSAL_BODY:
        return 0
    return length


def _detail(body: bytes) -> str:
    """The body's first line, printable ASCII only: it came from the network."""
    line = body.decode("ascii", "replace").strip().split("\n", 1)[0].strip()
    return "".join(c for c in line if " " <= c <= "~")[:200]


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (an HTTP date is not worth a clock here)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


#: Printable ASCII: what a request line may carry as typed; the rest is %-encoded.
_TARGET_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


def _request_target(url: SplitResult) -> str:
    """Path and query for the request line; blanks, controls and non-ASCII %-encoded.

    Go's client escapes them too (``URL.RequestURI``); websockets would raise on
    non-ASCII and a blank would split the request line.
    """
    target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    return quote(target, safe=_TARGET_SAFE, errors="surrogateescape")


def _host_field(url: SplitResult) -> str:
    """The URL's host and port for the Host header; a non-ASCII name as punycode, as Go."""
    host = url.netloc.rsplit("@", 1)[-1]
    return host if host.isascii() else host.encode("idna").decode("ascii")


#: How this websockets writes a header value: ISO-8859-1 since 17, UTF-8 before.
_SERIALIZES_LATIN1 = WSHeaders([("X", "\u00e9")]).serialize() == b"X: \xe9\r\n\r\n"


def _wire_value(value: str) -> str:
    """A field value as Go sends it: its UTF-8 bytes, whichever way websockets encodes.

    websockets < 17 encodes the str as UTF-8; later ones as ISO-8859-1, so for those
    the UTF-8 bytes go in as the latin-1 str that encodes to them.
    """
    if value.isascii():
        return value
    if not _SERIALIZES_LATIN1:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value.encode("utf-8", "surrogateescape").decode("latin-1")


def _explain(exc: Exception, response: http.Response) -> str:
    """websockets' reason for refusing a 101, in the words our users already see.

    Matched on exception types and the response's headers, not on websockets'
    messages, which differ between the versions we allow.
    """
    if isinstance(exc, InvalidMessage):  # websockets >= 14 wraps what its parser raised
        return f"websocket handshake: bad HTTP response: {exc.__cause__ or exc}"
    if isinstance(exc, SecurityError) or not isinstance(exc, InvalidHandshake):
        return f"websocket handshake: bad HTTP response: {exc}"  # a limit, or a parse error
    if isinstance(exc, InvalidHeader) and exc.name == "Sec-WebSocket-Accept":
        return "websocket: bad handshake (wrong Sec-WebSocket-Accept)"
    protocol = response.headers.get("Sec-WebSocket-Protocol")
    if not isinstance(exc, InvalidUpgrade) and protocol not in (None, CHISEL_PROTOCOL):
        return f"websocket: server chose protocol {protocol!r}, expected {CHISEL_PROTOCOL}"
    return f"websocket: bad handshake ({exc})"


@dataclass(frozen=True, slots=True)
class UpgradeAnswer:
    """The gateway's answer to a chisel-v3 upgrade: a 101 or a refusal (400, 426, ...).

    ``data`` is the complete response to write; ``reason`` says why it was refused
    ("" for a 101); ``peer_is_ours`` tells whether the client announced itself.
    """

    status: int
    data: bytes
    peer_is_ours: bool
    reason: str = ""


def accept_upgrade(request: http.Request, *, version: str) -> UpgradeAnswer:
    """Check an upgrade request with websockets' ``ServerProtocol.accept``.

    The caller has routed the request already (a GET asking for ``chisel-v3``);
    ``version`` goes in our peer header when the client sent one.
    The request is handed over as HTTP/1.1 whatever its version line says, as
    before: chisel's Go server does not check it either.
    """
    peer_is_ours = request.headers.get(PEER_HEADER) is not None
    server = ServerProtocol(subprotocols=_SUBPROTOCOLS)
    try:
        headers = WSHeaders(list(request.headers.items))
    except (ValueError, InvalidHeader) as exc:  # a value websockets will not carry
        return _refusal(server.reject(400, f"Failed to open a WebSocket connection: {exc}.\n"))
    response = server.accept(WSRequest(request.target, headers))
    if response.status_code != 101:
        return _refusal(response, str(server.handshake_exc or response.reason_phrase))
    del response.headers["Date"]  # chisel's 101 has none; nothing needs it
    if peer_is_ours:
        response.headers[PEER_HEADER] = version
    return UpgradeAnswer(101, response.serialize(), peer_is_ours)


def _refusal(response: WSResponse, reason: str = "") -> UpgradeAnswer:
    return UpgradeAnswer(
        response.status_code, response.serialize(), False, reason or response.reason_phrase
    )
