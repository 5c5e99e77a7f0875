"""Relay framing: strict heads, and bodies followed to their end whatever the split."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cc.protocol.apigw.message import (
    BodyFramer,
    Framing,
    build_head,
    parse_request_head,
    parse_response_head,
    request_framing,
    response_framing,
    split_target,
)
from cc.protocol.http import HTTPError

__all__: list[str] = []


def _req(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def test_request_framing() -> None:
    def framing(*fields: str) -> tuple[Framing, int]:
        return request_framing(parse_request_head(_req("POST / HTTP/1.1", "Host: a", *fields)))

    assert framing() == (Framing.NONE, 0)
    assert framing("Content-Length: 5") == (Framing.LENGTH, 5)
    assert framing("Content-Length: 5, 5") == (Framing.LENGTH, 5)
    assert framing("Content-Length: 0") == (Framing.NONE, 0)
    assert framing("Transfer-Encoding: chunked") == (Framing.CHUNKED, 0)
    assert framing("Transfer-Encoding: Chunked") == (Framing.CHUNKED, 0)


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        (["Content-Length: 5", "Transfer-Encoding: chunked"], 400),
        (["Content-Length: 5", "Content-Length: 6"], 400),
        (["Content-Length: -1"], 400),
        (["Content-Length: +5"], 400),
        (["Content-Length: 0x5"], 400),
        (["Transfer-Encoding: gzip, chunked"], 501),
        (["Transfer-Encoding: chunked, chunked"], 501),
        (["Transfer-Encoding: identity"], 501),
    ],
)
def test_request_framing_refusals(fields: list[str], status: int) -> None:
    request = parse_request_head(_req("POST / HTTP/1.1", "Host: a", *fields))
    with pytest.raises(HTTPError) as info:
        request_framing(request)
    assert info.value.status == status


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\0\r\n\r\n",
        b"GET / HTTP/1.1\r\n folded: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad(name): x\r\n\r\n",
        b"GET / HTTP/1.1\r\nName : x\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    ],
)
def test_heads_refused(head: bytes) -> None:
    with pytest.raises(HTTPError):
        parse_request_head(head)


def test_response_framing() -> None:
    def framing(method: str, status: int, *fields: str) -> tuple[Framing, int]:
        head = _req(f"HTTP/1.1 {status} X", *fields)
        return response_framing(method, parse_response_head(head))

    assert framing("GET", 200, "Content-Length: 3") == (Framing.LENGTH, 3)
    assert framing("HEAD", 200, "Content-Length: 3") == (Framing.NONE, 0)
    assert framing("GET", 204) == (Framing.NONE, 0)
    assert framing("GET", 304, "Content-Length: 3") == (Framing.NONE, 0)
    assert framing("GET", 101) == (Framing.NONE, 0)
    assert framing("GET", 200) == (Framing.CLOSE, 0)
    assert framing("GET", 200, "Transfer-Encoding: chunked") == (Framing.CHUNKED, 0)
    assert framing("GET", 200, "Transfer-Encoding: gzip") == (Framing.CLOSE, 0)
    with pytest.raises(HTTPError):
        framing("GET", 200, "Transfer-Encoding: chunked", "Content-Length: 3")


def test_build_head() -> None:
    assert build_head("GET / HTTP/1.1", [("Host", "a"), ("X", "y")]) == (
        b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\n"
    )


def _chunked(pieces: list[bytes], trailers: bytes = b"") -> bytes:
    out = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces if p)
    return out + b"0\r\n" + trailers + b"\r\n"


def _feed_split(framer: BodyFramer, data: bytes, cuts: list[int]) -> tuple[bytes, bytes | None]:
    out = bytearray()
    rest = None
    last = 0
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        piece = data[last:cut]
        last = cut
        if rest is not None:
            rest += piece
            continue
        passed, rest = framer.feed(piece)
        out += passed
    return bytes(out), rest


@given(
    st.lists(st.binary(max_size=40), max_size=8),
    st.lists(st.integers(min_value=0, max_value=500), max_size=10),
    st.booleans(),
)
def test_chunked_any_split(pieces: list[bytes], cuts: list[int], trailers: bool) -> None:
    body = _chunked(pieces, b"X-Sum: 1\r\n" if trailers else b"")
    after = b"GET /next HTTP/1.1\r\n\r\n"
    out, rest = _feed_split(BodyFramer(Framing.CHUNKED), body + after, cuts)
    assert out == body
    assert rest == after
    payload, rest = _feed_split(BodyFramer(Framing.CHUNKED, dechunk=True), body + after, cuts)
    assert payload == b"".join(pieces)
    assert rest == after


@given(st.binary(max_size=100), st.lists(st.integers(min_value=0, max_value=200), max_size=6))
def test_length_any_split(body: bytes, cuts: list[int]) -> None:
    framer = BodyFramer(Framing.LENGTH, len(body))
    out, rest = _feed_split(framer, body + b"next", cuts)
    if body:
        assert (out, rest) == (body, b"next")
    assert framer.done


@pytest.mark.parametrize(
    "body",
    [
        b"5\r\nabc\r\n",  # shorter than its size: the CRLF is data, then junk
        b"3\r\nabcdef\r\n0\r\n\r\n",  # longer than its size
        b"-3\r\nabc\r\n",
        b" 3\r\nabc\r\n",
        b"0x3\r\nabc\r\n",
        b"3\nabc\r\n",
        b"1000000000000000\r\n",
        b"0\r\nbad trailer\r\n\r\n",
        b"f" * 5000,
    ],
)
def test_chunked_refusals(body: bytes) -> None:
    framer = BodyFramer(Framing.CHUNKED)
    with pytest.raises(HTTPError):
        framer.feed(body + b"\r\n" * 3 + b"x\r\n")


def test_close_framing_and_truncation() -> None:
    framer = BodyFramer(Framing.CLOSE)
    assert framer.feed(b"abc") == (b"abc", None)
    framer.finish()
    assert framer.done
    truncated = BodyFramer(Framing.LENGTH, 10)
    truncated.feed(b"abc")
    with pytest.raises(HTTPError):
        truncated.finish()


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/x?q=1", (None, "/x?q=1")),
        ("http://api.example.com/x", ("api.example.com", "/x")),
        ("HTTP://API.example.com:8080/a/b?c", ("API.example.com:8080", "/a/b?c")),
        ("https://api.example.com", ("api.example.com", "/")),
        ("http://api.example.com?q=1", ("api.example.com", "/?q=1")),
        ("http://[::1]:80/v6", ("[::1]:80", "/v6")),
    ],
)
def test_split_target_origin_and_absolute_form(
    target: str, expected: tuple[str | None, str]
) -> None:
    assert split_target(target) == expected


@pytest.mark.parametrize(
    "target",
    ["x", "*", "ftp://a/b", "http:///x", "http://user@a/x", "http://a/x#frag", "a.test:80"],
)
def test_split_target_refuses_other_forms(target: str) -> None:
    with pytest.raises(HTTPError) as info:
        split_target(target)
    assert info.value.status == 400
