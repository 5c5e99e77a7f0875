"""Just enough HTTP/1.1 for the WebSocket upgrade, /health, /version and 401s.

The gateway reads the request head itself (bounded, before any WebSocket or SSH
state exists) so that a hostile peer cannot make it buffer more than
``MAX_HEAD_SIZE`` bytes before it is authenticated.  No sockets here: callers
feed bytes and get parsed heads or wire bytes back.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

from .errors import ProtocolError

__all__ = [
    "MAX_HEAD_SIZE",
    "WS_GUID",
    "HTTPError",
    "Headers",
    "Request",
    "Response",
    "ResponseParser",
    "accept_key",
    "build_request",
    "build_response",
    "check_field",
    "find_head_end",
    "parse_request",
    "parse_response",
]

#: Largest request or response head we accept; chisel's Go server allows 1 MiB,
#: we need far less and bound it before authentication.
MAX_HEAD_SIZE = 16 * 1024
MAX_HEADERS = 100
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_REASONS = {
    101: "Switching Protocols",
    200: "OK",
    302: "Found",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class HTTPError(ProtocolError):
    """The peer sent an HTTP head we will not parse; ``status`` is the answer to give."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Headers:
    """Header fields in wire order; lookups are case-insensitive as HTTP requires."""

    items: tuple[tuple[str, str], ...] = ()
    #: the values by lower-case name, in wire order, built once: a relay asks for a
    #: dozen fields per message, most of them absent, and each lookup is one dict get
    index: dict[str, list[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, list[str]] = {}
        for key, value in self.items:
            lname = key.lower()
            values = index.get(lname)
            if values is None:
                index[lname] = [value]
            else:
                values.append(value)
        object.__setattr__(self, "index", index)

    @classmethod
    def _indexed(cls, items: tuple[tuple[str, str], ...], index: dict[str, list[str]]) -> Headers:
        """Fields whose index the parser built as it went (no second pass over them)."""
        headers = object.__new__(cls)
        object.__setattr__(headers, "items", items)
        object.__setattr__(headers, "index", index)
        return headers

    @property
    def names(self) -> frozenset[str]:
        """The names present, lower case."""
        return frozenset(self.index)

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self.index.get(name.lower())
        return default if values is None else values[0]

    def get_all(self, name: str) -> list[str]:
        values = self.index.get(name.lower())
        return [] if values is None else list(values)

    def has_token(self, name: str, token: str) -> bool:
        """Whether a comma-separated header (``Connection: keep-alive, Upgrade``) has ``token``."""
        values = self.index.get(name.lower())
        if values is None:
            return False
        ltoken = token.lower()
        return any(part.strip().lower() == ltoken for value in values for part in value.split(","))


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    version: str
    headers: Headers = field(default_factory=Headers)

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def is_websocket_upgrade(self) -> bool:
        return (
            self.method == "GET"
            and self.headers.has_token("Connection", "upgrade")
            and (self.headers.get("Upgrade") or "").lower() == "websocket"
        )


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    reason: str
    version: str
    headers: Headers = field(default_factory=Headers)


def find_head_end(buffer: bytes | bytearray) -> int:
    """Index just past the blank line ending a head, -1 if incomplete.

    Raises HTTPError(431) once the buffer outgrows ``MAX_HEAD_SIZE`` without one.
    """
    end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD_SIZE + 4)
    if end >= 0:
        return end + 4
    if len(buffer) > MAX_HEAD_SIZE:
        raise HTTPError("request head too large", 431)
    return -1


#: What ``bytes.strip()`` strips, for the same result on latin-1 text.
_SPACE = " \t\n\r\x0b\x0c"


def _parse_fields(block: bytes, present: bool) -> Headers:
    """The fields after the start line: decoded once (latin-1), split, checked in one pass."""
    if not present:
        return Headers(())
    lines = block.decode("latin-1").split("\r\n")
    if len(lines) > MAX_HEADERS:
        raise HTTPError("too many header fields", 431)
    items: list[tuple[str, str]] = []
    append = items.append
    index: dict[str, list[str]] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip(_SPACE) or " " in name:
            raise HTTPError(f"malformed header line {line.encode('latin-1')[:60]!r}")
        if not name.isascii():
            raise HTTPError("non-ASCII header name")
        value = value.strip(_SPACE)
        append((name, value))
        lname = name.lower()
        values = index.get(lname)
        if values is None:
            index[lname] = [value]
        else:
            values.append(value)
    return Headers._indexed(tuple(items), index)


def _split_head(head: bytes | bytearray) -> tuple[bytes, bytes, bool]:
    """(start line, the field lines, whether there are any), bounded."""
    text = bytes(head)
    if text.endswith(b"\r\n\r\n"):
        text = text[:-4]
    if len(text) > MAX_HEAD_SIZE:
        raise HTTPError("head too large", 431)
    first, sep, block = text.partition(b"\r\n")
    return first, block, bool(sep)


def parse_request(head: bytes | bytearray, *, absolute: bool = False) -> Request:
    """Parse a request head (request line + fields, up to and including the blank line).

    ``absolute`` also lets an absolute-form target through (``http://host/path``,
    which a proxy-facing server must accept); the caller then takes it apart.
    """
    first, block, present = _split_head(head)
    parts = first.split(b" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[2].startswith(b"HTTP/1."):
        raise HTTPError(f"malformed request line {first[:80]!r}")
    if not first.isascii():
        raise HTTPError("non-ASCII request line")
    method, target, version = first.decode("ascii").split(" ")
    if not target.startswith("/") and not (absolute and "://" in target):
        raise HTTPError(f"unsupported request target {target[:80]!r}")
    return Request(method, target, version, _parse_fields(block, present))


def parse_response(head: bytes | bytearray) -> Response:
    """Parse a response head (status line + fields).

    The version is ``HTTP/1.<digit>`` and the status three digits, as Go's client
    requires: anything else (a non-ASCII version, a 5,000-digit status that ``int``
    refuses) is an HTTPError, never another exception.
    """
    first, block, present = _split_head(head)
    parts = first.split(b" ", 2)
    if (
        len(parts) < 2
        or len(parts[0]) != 8
        or not parts[0].startswith(b"HTTP/1.")
        or not parts[0][7:].isdigit()
        or len(parts[1]) != 3
        or not parts[1].isdigit()
    ):
        raise HTTPError(f"malformed status line {first[:80]!r}")
    reason = parts[2].decode("latin-1") if len(parts) == 3 else ""
    return Response(int(parts[1]), reason, parts[0].decode("ascii"), _parse_fields(block, present))


class ResponseParser:
    """Bytes in, one response head out: the parsed head and the bytes after it.

    Bounded like the gateway's request reader (``MAX_HEAD_SIZE``), so a peer that
    never ends its head cannot make us buffer more; raises HTTPError on bad input.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def receive_data(self, data: bytes) -> tuple[Response, bytes] | None:
        """The head and what followed it, once the head is complete; else None."""
        self._buffer += data
        end = find_head_end(self._buffer)
        if end < 0:
            return None
        response = parse_response(self._buffer[:end])
        rest = bytes(self._buffer[end:])
        self._buffer.clear()
        return response, rest


def check_field(name: str, value: str) -> None:
    """Refuse a field that would end its line early, forge another one, or not be sent.

    Values may not hold control characters other than tab (Go's http client and
    websockets refuse them too) nor lone surrogates that have no bytes to send.
    """
    if (
        any(c in name for c in "\r\n: ")
        or any(c in _CONTROLS for c in value)
        or not _has_bytes(value)
    ):
        raise ValueError(f"header {name!r} contains a forbidden character")


_CONTROLS = frozenset(chr(c) for c in (*range(0x20), 0x7F)) - {"\t"}


def _has_bytes(value: str) -> bool:
    try:
        value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return True


def build_request(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    """Serialize a request head; refuses CR/LF in fields so user headers cannot inject lines."""
    lines = [f"{method} {target} HTTP/1.1"]
    for name, value in headers:
        check_field(name, value)
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def build_response(
    status: int, headers: list[tuple[str, str]] | None = None, body: bytes = b""
) -> bytes:
    """Serialize a complete response; a body gets its Content-Length."""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    fields = list(headers or [])
    if status != 101:
        fields.append(("Content-Length", str(len(body))))
    for name, value in fields:
        check_field(name, value)
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept value for a Sec-WebSocket-Key (RFC 6455 section 4.2.2)."""
    digest = hashlib.sha1(key.encode("ascii") + WS_GUID).digest()
    return base64.b64encode(digest).decode("ascii")
