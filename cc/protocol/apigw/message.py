"""HTTP/1.1 messages as a relay sees them: heads to parse and rewrite, bodies to frame.

A relay needs to know where each message ends, not what its body says, so bodies
pass through as the bytes that arrived (chunk framing included) while
:class:`BodyFramer` follows the framing to find the end; only an HTTP/1.0 client
that cannot read chunked gets the chunks' payload alone (``dechunk``).  That keeps
a request at one head parse each way, without decoding and re-encoding every body
chunk (h11's way, several times slower per request for the same checks).

The rules are RFC 9112's, strictly, because a relay that frames a message
differently from the server behind it can be made to smuggle a second request:
``Transfer-Encoding`` with ``Content-Length`` is refused, ``Transfer-Encoding`` must
be exactly ``chunked``, conflicting lengths are refused, bare CR or LF and NUL in a
head are refused, chunk sizes are hex without sign or space.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..http import MAX_HEAD_SIZE, Headers, HTTPError, Request, Response, parse_request
from ..http import parse_response as _parse_response

__all__ = [
    "MAX_CHUNK_LINE",
    "BodyFramer",
    "Framing",
    "build_head",
    "parse_request_head",
    "parse_response_head",
    "request_framing",
    "response_framing",
    "split_target",
]

#: Longest chunk-size line (size and extensions) accepted.
MAX_CHUNK_LINE = 4096
_HEX = frozenset(b"0123456789abcdefABCDEF")
_TOKEN_BYTES = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


class Framing(Enum):
    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"
    #: the body ends when the sender closes (responses only)
    CLOSE = "close"


def _check_head(head: bytes) -> None:
    crlf = head.count(b"\r\n")
    if head.count(b"\n") != crlf or head.count(b"\r") != crlf or b"\0" in head:
        raise HTTPError("bare CR, LF or NUL in the head")


def _check_names(headers: Headers) -> None:
    # one C-level pass over all the names; the slow loop only names the culprit
    names = "".join(headers.index).encode("ascii")
    if not names.translate(None, _TOKEN_BYTES):
        return
    for name, _ in headers.items:
        if name.encode("ascii").translate(None, _TOKEN_BYTES):
            raise HTTPError(f"bad header name {name[:40]!r}")


def parse_request_head(head: bytes) -> Request:
    """A request head, strictly; HTTPError carries the status to answer."""
    _check_head(head)
    request = parse_request(head, absolute=True)
    _check_names(request.headers)
    if request.version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HTTPError(f"unsupported version {request.version[:20]!r}", 505)
    return request


def parse_response_head(head: bytes) -> Response:
    """A response head, strictly; HTTPError for anything a relay must not pass on."""
    _check_head(head)
    response = _parse_response(head)
    _check_names(response.headers)
    if not 100 <= response.status <= 999:
        raise HTTPError(f"bad status {response.status}")
    return response


def split_target(target: str) -> tuple[str | None, str]:
    """A request target as (the authority of an absolute-form target or None, path?query).

    RFC 9112 3.2: a client talking to a proxy sends ``http://host[:port]/path``;
    a server must accept it, and its authority (not ``Host``) names the resource.
    The path comes back in origin-form (``/`` when the URL has none), as the target
    receives it.  Another scheme, userinfo, an empty authority or a fragment: 400.
    """
    if target.startswith("/"):
        return None, target
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise HTTPError("the request target must be a path or an http(s) URL")
    cut = len(rest)
    for mark in "/?#":
        index = rest.find(mark)
        if 0 <= index < cut:
            cut = index
    authority, tail = rest[:cut], rest[cut:]
    if not authority or "@" in authority or "#" in tail:
        raise HTTPError("bad authority in the request target")
    if not tail.startswith("/"):
        tail = "/" + tail
    return authority, tail


def _content_length(headers: Headers) -> int | None:
    values = headers.index.get("content-length")
    if not values:
        return None
    if len(values) == 1 and "," not in values[0]:
        text = values[0].strip()  # the usual single value
    else:
        lengths = {part.strip() for value in values for part in value.split(",")}
        if len(lengths) != 1:
            raise HTTPError("conflicting Content-Length values")
        (text,) = lengths
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise HTTPError(f"bad Content-Length {text[:20]!r}")
    return int(text)


def _chunked(headers: Headers) -> bool | None:
    """True for ``Transfer-Encoding: chunked``, None without the header; HTTPError otherwise."""
    values = headers.index.get("transfer-encoding")
    if not values:
        return None
    codings = [part.strip().lower() for value in values for part in value.split(",")]
    return codings == ["chunked"]


def request_framing(request: Request) -> tuple[Framing, int]:
    """How a request's body is delimited: (framing, length for LENGTH)."""
    chunked = _chunked(request.headers)
    length = _content_length(request.headers)
    if chunked is not None:
        if length is not None:
            raise HTTPError("both Transfer-Encoding and Content-Length")
        if not chunked or request.version == "HTTP/1.0":
            raise HTTPError("only Transfer-Encoding: chunked is supported", 501)
        return Framing.CHUNKED, 0
    if length:
        return Framing.LENGTH, length
    return Framing.NONE, 0


def response_framing(method: str, response: Response) -> tuple[Framing, int]:
    """How a response's body is delimited (RFC 9112 section 6.3)."""
    status = response.status
    if method == "HEAD" or status < 200 or status in (204, 304):
        return Framing.NONE, 0
    chunked = _chunked(response.headers)
    if chunked is not None:
        if _content_length(response.headers) is not None:
            raise HTTPError("both Transfer-Encoding and Content-Length")
        return (Framing.CHUNKED, 0) if chunked else (Framing.CLOSE, 0)
    length = _content_length(response.headers)
    if length is None:
        return Framing.CLOSE, 0
    return (Framing.LENGTH, length) if length else (Framing.NONE, 0)


def build_head(first_line: str, headers: list[tuple[str, str]]) -> bytes:
    """A head from a start line and fields whose values were parsed (no CR/LF/NUL in them)."""
    fields = "".join([f"{name}: {value}\r\n" for name, value in headers])
    return f"{first_line}\r\n{fields}\r\n".encode("latin-1")


class _State(Enum):
    SIZE = 0
    DATA = 1
    DATA_END = 2
    TRAILER = 3
    DONE = 4


@dataclass
class BodyFramer:
    """Follows one body's framing: feed bytes, learn what to pass on and where it ended.

    ``feed`` returns (bytes of this body to pass on, bytes after the body or None
    while it goes on).  Raises HTTPError on broken chunk framing.
    """

    framing: Framing
    length: int = 0
    #: pass on the chunks' payload only (for an HTTP/1.0 reader)
    dechunk: bool = False

    def __post_init__(self) -> None:
        self._remaining = self.length
        self._state = _State.SIZE
        self._line = bytearray()
        self._trailer_size = 0
        if self.framing is Framing.NONE or (self.framing is Framing.LENGTH and not self.length):
            self._state = _State.DONE

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    def feed(self, data: bytes) -> tuple[bytes, bytes | None]:
        if self._state is _State.DONE:
            return b"", data
        if self.framing is Framing.CLOSE:
            return data, None
        if self.framing is Framing.LENGTH:
            if len(data) < self._remaining:
                self._remaining -= len(data)
                return data, None
            cut = self._remaining
            self._remaining = 0
            self._state = _State.DONE
            return data[:cut], data[cut:]
        return self._feed_chunked(data)

    def finish(self) -> None:
        """The sender closed: fine for CLOSE framing, a truncated body otherwise."""
        if self.framing is Framing.CLOSE:
            self._state = _State.DONE
        elif self._state is not _State.DONE:
            raise HTTPError("the body ended early")

    # -- chunked ------------------------------------------------------------------
    def _feed_chunked(self, data: bytes) -> tuple[bytes, bytes | None]:
        view = memoryview(data)
        i, n = 0, len(data)
        payload: list[bytes] = []
        while i < n:
            state = self._state
            if state is _State.DATA:
                take = min(self._remaining, n - i)
                if self.dechunk:
                    payload.append(bytes(view[i : i + take]))
                self._remaining -= take
                i += take
                if not self._remaining:
                    self._state = _State.DATA_END
                continue
            if state is _State.DONE:
                break
            end = data.find(b"\n", i)
            stop = n if end < 0 else end + 1
            self._line += view[i:stop]
            i = stop
            limit = MAX_CHUNK_LINE if state is not _State.TRAILER else MAX_HEAD_SIZE
            if len(self._line) > limit:
                raise HTTPError("chunk line too long")
            if end < 0:
                break
            line = bytes(self._line)
            self._line.clear()
            if not line.endswith(b"\r\n"):
                raise HTTPError("bare LF in chunk framing")
            self._line_done(line[:-2])
        out = b"".join(payload) if self.dechunk else data if i == n else bytes(view[:i])
        return out, (bytes(view[i:]) if self._state is _State.DONE else None)

    def _line_done(self, line: bytes) -> None:
        state = self._state
        if state is _State.SIZE:
            size, _, ext = line.partition(b";")
            if not size or len(size) > 15 or not set(size) <= _HEX or b"\r" in ext:
                raise HTTPError(f"bad chunk size line {line[:40]!r}")
            self._remaining = int(size, 16)
            self._state = _State.DATA if self._remaining else _State.TRAILER
        elif state is _State.DATA_END:
            if line:
                raise HTTPError("chunk data longer than its size")
            self._state = _State.SIZE
        else:  # TRAILER: fields until the empty line
            if b"\r" in line or (line and b":" not in line):
                raise HTTPError("bad trailer line")
            self._trailer_size += len(line) + 2
            if self._trailer_size > MAX_HEAD_SIZE:
                raise HTTPError("trailers too large")
            if not line:
                self._state = _State.DONE
