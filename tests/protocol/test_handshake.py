"""cc.protocol.handshake: the upgrade request byte for byte as Go writes it, the checks
websockets does on the 101 (client) and on the request (gateway), without sockets.

The captured requests are in tests/vectors/upgrade_requests.txt (outsystemscc 2.0.11
and chisel 1.11.5 on the wire).
"""

from __future__ import annotations

import base64
import itertools
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.datastructures import Headers as WSHeaders

from cc import CHISEL_PROTOCOL, PEER_HEADER, __version__
from cc.protocol import http
from cc.protocol.handshake import (
    MAX_REFUSAL_BODY,
    ClientHandshake,
    UpgradeAccepted,
    UpgradeFailed,
    UpgradeRefused,
    accept_upgrade,
)

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
PORT = 41234
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def _vector(after: str) -> bytes:
    """The request block that follows the line ``after``, with CRLF line ends."""
    text = (VECTORS / "upgrade_requests.txt").read_text(encoding="utf-8")
    block = text.split(after + "\n", 1)[1]
    lines = [line for line in block.split("\n\n", 1)[0].split("\n") if not line.startswith("#")]
    return ("\r\n".join(lines) + "\r\n\r\n").replace("PORT", str(PORT)).encode()


def _with_key(request: bytes, key: str) -> bytes:
    return re.sub(rb"Sec-WebSocket-Key: \S+", b"Sec-WebSocket-Key: " + key.encode(), request)


def _client(url: str = f"http://127.0.0.1:{PORT}/sg_123", **kwargs: Any) -> ClientHandshake:
    return ClientHandshake(urlsplit(url), **kwargs)


def _101(key: str, *extra: str, protocol: str | None = CHISEL_PROTOCOL) -> bytes:
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {http.accept_key(key)}",
    ]
    if protocol is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocol}")
    return ("\r\n".join([*lines, *extra]) + "\r\n\r\n").encode()


# -- the request -----------------------------------------------------------------------


def test_request_is_outsystemscc_byte_for_byte() -> None:
    vector = _vector("# 2) the WebSocket upgrade")
    client = _client(
        f"http://127.0.0.1:{PORT}/sg_123?id=872214718&ports=8081,8082",
        headers=[("Token", "abc")],
        user_agent="CloudConnector/2.0.11",
        announce=False,
    )
    assert client.request_bytes() == _with_key(vector, client.key)


def test_request_is_chisel_byte_for_byte() -> None:
    vector = _vector("## chisel 1.11.5 client:")
    client = _client(headers=[("Token", "abc")], user_agent="Go-http-client/1.1", announce=False)
    assert client.request_bytes() == _with_key(vector, client.key)


def test_announcing_adds_only_our_peer_header_before_upgrade() -> None:
    quiet = _client(headers=[("Token", "abc")], announce=False)
    loud = _client(headers=[("Token", "abc")], version="9.9.9")
    expected = _with_key(quiet.request_bytes(), loud.key).replace(
        b"Upgrade: websocket\r\n", f"{PEER_HEADER}: 9.9.9\r\nUpgrade: websocket\r\n".encode()
    )
    assert loud.request_bytes() == expected
    assert f"{PEER_HEADER}: {__version__}".encode() in _client().request_bytes()


def test_each_handshake_has_its_own_valid_key() -> None:
    keys = {_client().key for _ in range(20)}
    assert len(keys) == 20
    for key in keys:
        assert len(base64.b64decode(key, validate=True)) == 16


def test_hostname_and_user_headers() -> None:
    client = _client(
        "wss://user:pw@gw.example:8443/p?q=1",
        headers=[("host", "ignored"), ("X-One", "1"), ("X-One", "2")],
        hostname="front.example",
    )
    request = http.parse_request(client.request_bytes())
    assert request.target == "/p?q=1"
    assert request.headers.get_all("Host") == ["front.example"]
    assert request.headers.get_all("X-One") == ["1", "2"]
    # without a hostname: the URL's host and port, never its user info
    plain = http.parse_request(_client("wss://user:pw@gw.example:8443/").request_bytes())
    assert plain.headers.get("Host") == "gw.example:8443"


def test_user_headers_cannot_inject_lines() -> None:
    with pytest.raises(ValueError, match="forbidden character"):
        _client(headers=[("X-A", "1\r\nX-Evil: 2")])
    with pytest.raises(ValueError, match="forbidden character"):
        _client(headers=[("X-A", "1\x012")])  # not websockets' InvalidHeaderValue


# Found by fuzzing (fuzz/wire.py `handshake_roundtrip`: what the CLI accepts, the
# gateway must accept): websockets raised InvalidHeaderValue on a non-ASCII URL host
# and on header values beyond U+00FF, UnicodeEncodeError on a non-ASCII path, and a
# blank in the path split the request line.  Go sends each of them, as below.


def test_non_ascii_url_host_goes_as_punycode() -> None:
    request = http.parse_request(_client("http://b\u00fccher.example:8080/").request_bytes())
    assert request.headers.get("Host") == "xn--bcher-kva.example:8080"


def test_blanks_and_non_ascii_in_the_path_are_percent_encoded() -> None:
    client = _client("http://gw.example/a b/\u00fc?x=\u20ac&y=%41")
    assert http.parse_request(client.request_bytes()).target == "/a%20b/%C3%BC?x=%E2%82%AC&y=%41"


def test_non_ascii_header_values_go_as_their_utf8_bytes() -> None:
    client = _client(headers=[("X-Euro", "\u20ac"), ("X-E", "\u00e9")], hostname="h\u00e9")
    wire = client.request_bytes()
    assert b"\r\nX-Euro: \xe2\x82\xac\r\n" in wire
    assert b"\r\nX-E: \xc3\xa9\r\n" in wire
    assert b"\r\nHost: h\xc3\xa9\r\n" in wire


@pytest.mark.parametrize(
    "url", ["http://b\u00fccher.example/", "http://gw/a b/\u00fc?q=\u20ac", "http://gw/%zz"]
)
def test_the_gateway_accepts_what_the_client_sends(url: str) -> None:
    client = _client(url, headers=[("X-Euro", "\u20ac")])
    answer = accept_upgrade(http.parse_request(client.request_bytes()), version=__version__)
    assert answer.status == 101
    assert isinstance(client.receive_data(answer.data), UpgradeAccepted)


# -- the response ----------------------------------------------------------------------


def test_101_with_chisel_v3_is_accepted_and_frames_after_it_are_left_over() -> None:
    client = _client()
    event = client.receive_data(_101(client.key) + b"\x82\x05hello")
    assert event == UpgradeAccepted(
        peer_is_ours=False, leftover=b"\x82\x05hello", subprotocol="chisel-v3"
    )


def test_chisel_101_without_a_subprotocol_is_accepted() -> None:
    """chisel's gorilla server does not echo Sec-WebSocket-Protocol."""
    client = _client()
    event = client.receive_data(_101(client.key, protocol=None))
    assert event == UpgradeAccepted(peer_is_ours=False, leftover=b"", subprotocol=None)


def test_peer_header_means_ours_only_when_we_announced() -> None:
    peer = f"{PEER_HEADER}: 0.1.0"
    client = _client()
    assert client.receive_data(_101(client.key, peer)) == UpgradeAccepted(True, b"", "chisel-v3")
    quiet = _client(announce=False)
    assert quiet.receive_data(_101(quiet.key, peer)) == UpgradeAccepted(False, b"", "chisel-v3")


def test_header_names_are_case_insensitive() -> None:
    client = _client()
    answer = (
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nCONNECTION: upgrade\r\n"
        f"sec-websocket-accept: {http.accept_key(client.key)}\r\n"
        f"SEC-WEBSOCKET-PROTOCOL: chisel-v3\r\n{PEER_HEADER.lower()}: 1\r\n\r\n"
    )
    assert client.receive_data(answer.encode()) == UpgradeAccepted(True, b"", "chisel-v3")


@pytest.mark.parametrize(
    ("status_line", "status", "reason"),
    [
        ("HTTP/1.1 401 Unauthorized", 401, "Unauthorized"),
        ("HTTP/1.1 404 Not Found", 404, "Not Found"),
        ("HTTP/1.1 502 Bad Gateway", 502, "Bad Gateway"),
        ("HTTP/1.0 200 OK", 200, "OK"),
        ("HTTP/1.1 400", 400, ""),
    ],
)
def test_other_statuses_are_refusals(status_line: str, status: int, reason: str) -> None:
    client = _client()
    head = f"{status_line}\r\nContent-Length: 13\r\nConnection: close\r\n\r\n".encode()
    assert client.receive_data(head + b"unauthorized\n") == UpgradeRefused(
        status, reason, "unauthorized"
    )


def test_a_refusal_waits_for_its_short_body() -> None:
    """The gateway's reason may come in a later segment than the head."""
    client = _client()
    body = b"wrong token: not one of this gateway's tokens\n"
    head = (
        "HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    assert client.receive_data(head + body[:10]) is None
    event = client.receive_data(body[10:])
    assert event == UpgradeRefused(401, "Unauthorized", body.decode().strip())


def test_a_refusal_cut_short_is_still_a_refusal() -> None:
    client = _client()
    assert client.connection_closed() is None  # nothing arrived: not a refusal
    head = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 100\r\n\r\n"
    assert client.receive_data(head + b"no token\x1b[31m") is None
    # printable ASCII only: the body came from the network and goes to a terminal
    assert client.connection_closed() == UpgradeRefused(401, "Unauthorized", "no token[31m")


@pytest.mark.parametrize(
    ("fields", "detail", "retry_after"),
    [
        ("Retry-After: 300\r\nContent-Length: 5\r\n", "ban!", 300.0),
        ("Retry-After: Wed, 21 Oct 2026 07:28:00 GMT\r\nContent-Length: 5\r\n", "ban!", None),
        ("Content-Type: text/html\r\nContent-Length: 5\r\n", "", None),
        (f"Content-Length: {MAX_REFUSAL_BODY + 1}\r\n", "", None),
        ("", "", None),
    ],
)
def test_refusal_detail_and_retry_after(
    fields: str, detail: str, retry_after: float | None
) -> None:
    client = _client()
    head = f"HTTP/1.1 429 Too Many Requests\r\n{fields}\r\n".encode()
    event = client.receive_data(head + b"ban!\n")
    assert event == UpgradeRefused(429, "Too Many Requests", detail, retry_after)


def test_wrong_or_missing_accept_keeps_its_message() -> None:
    message = "websocket: bad handshake (wrong Sec-WebSocket-Accept)"
    client = _client()
    assert client.receive_data(_101(RFC_KEY)) == UpgradeFailed(message)
    client = _client()
    missing = re.sub(rb"Sec-WebSocket-Accept: \S+\r\n", b"", _101(client.key))
    assert client.receive_data(missing) == UpgradeFailed(message)


@pytest.mark.parametrize("protocol", ["chisel-v2", "chisel-v3, chisel-v2", "other"])
def test_another_subprotocol_is_refused(protocol: str) -> None:
    client = _client()
    assert client.receive_data(_101(client.key, protocol=protocol)) == UpgradeFailed(
        f"websocket: server chose protocol {protocol!r}, expected chisel-v3"
    )


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        (b"Upgrade: websocket\r\n", b"", "Upgrade"),
        (b"Upgrade: websocket", b"Upgrade: h2c", "Upgrade"),
        (b"Connection: Upgrade\r\n", b"", "Connection"),
        (b"Connection: Upgrade", b"Connection: close", "Connection"),
    ],
)
def test_101_without_the_upgrade_fields_fails(old: bytes, new: bytes, named: str) -> None:
    """Go's client checks these too (gorilla: "bad handshake"); we used to skip them."""
    client = _client()
    event = client.receive_data(_101(client.key).replace(old, new))
    assert isinstance(event, UpgradeFailed)
    assert event.message.startswith("websocket: bad handshake (")
    assert named in event.message


def test_101_with_an_extension_we_did_not_offer_fails() -> None:
    client = _client()
    event = client.receive_data(_101(client.key, "Sec-WebSocket-Extensions: permessage-deflate"))
    assert isinstance(event, UpgradeFailed)
    assert event.message.startswith("websocket: bad handshake (")


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"HTTP/1.1 abc\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nno colon\r\n\r\n",
        b"HTTP/1.0 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        # found by fuzzing: UnicodeDecodeError and ValueError escaped receive_data
        b"HTTP/1.\x801 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 " + b"1" * 5000 + b"\r\n\r\n",
    ],
    ids=["ssh", "status-word", "no-colon", "http-1.0", "non-ascii-version", "5000-digits"],
)
def test_garbage_is_a_bad_http_response(answer: bytes) -> None:
    event = _client().receive_data(answer)
    assert isinstance(event, UpgradeFailed)
    assert event.message.startswith("websocket handshake: bad HTTP response: ")


def test_websockets_line_limit_applies_to_the_101() -> None:
    client = _client()
    event = client.receive_data(_101(client.key, "X-Long: " + "a" * 9000))
    assert isinstance(event, UpgradeFailed)
    assert "bad HTTP response" in event.message


def test_endless_head_is_cut_at_our_bound() -> None:
    client = _client()
    assert client.receive_data(b"HTTP/1.1 101 Switching Protocols\r\nX: ") is None
    event = client.receive_data(b"a" * http.MAX_HEAD_SIZE)
    assert event == UpgradeFailed("websocket handshake: bad HTTP response: request head too large")


def test_byte_by_byte_gives_one_event_at_the_last_head_byte() -> None:
    client = _client()
    answer = _101(client.key, f"{PEER_HEADER}: 0.1.0")
    events = [client.receive_data(answer[i : i + 1]) for i in range(len(answer))]
    assert events[:-1] == [None] * (len(answer) - 1)
    assert events[-1] == UpgradeAccepted(True, b"", "chisel-v3")
    assert client.receive_data(b"\x82\x00") is None  # later bytes are the stream's


@given(cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=6))
def test_outcome_does_not_depend_on_segmentation(cuts: list[int]) -> None:
    client = _client()
    data = _101(client.key) + b"\x82\x03abc"
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    results = [(i, client.receive_data(chunk)) for i, chunk in enumerate(chunks)]
    done = [(i, event) for i, event in results if event is not None]
    assert len(done) == 1, "exactly one outcome"
    i, event = done[0]
    assert isinstance(event, UpgradeAccepted)
    assert event.leftover + b"".join(chunks[i + 1 :]) == b"\x82\x03abc"


# -- the gateway's answer ------------------------------------------------------------------


def _request(*extra: str, key: str = RFC_KEY, version: str = "13") -> http.Request:
    lines = [
        "GET /any?x=1 HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        f"Sec-WebSocket-Version: {version}",
        f"Sec-WebSocket-Protocol: {CHISEL_PROTOCOL}",
        *extra,
    ]
    return http.parse_request(("\r\n".join(lines) + "\r\n\r\n").encode())


def test_gateway_101_bytes_like_chisels() -> None:
    answer = accept_upgrade(_request(), version="1.2.3")
    assert (answer.status, answer.peer_is_ours, answer.reason) == (101, False, "")
    assert answer.data == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + RFC_ACCEPT.encode() + b"\r\n"
        b"Sec-WebSocket-Protocol: chisel-v3\r\n"
        b"\r\n"
    )


def test_gateway_101_answers_our_peer_header() -> None:
    answer = accept_upgrade(_request(f"{PEER_HEADER}: 0.0.1"), version="1.2.3")
    assert answer.peer_is_ours
    assert answer.data.endswith(
        f"Sec-WebSocket-Protocol: chisel-v3\r\n{PEER_HEADER}: 1.2.3\r\n\r\n".encode()
    )


@pytest.mark.parametrize(
    ("request_", "status", "named"),
    [
        (_request(version="8"), 400, "Sec-WebSocket-Version"),
        (_request(key="short"), 400, "Sec-WebSocket-Key"),
        (_request(key="!!!!not*base64!!!!!!!!=="), 400, "Sec-WebSocket-Key"),
        (_request(key=base64.b64encode(b"x" * 17).decode()), 400, "Sec-WebSocket-Key"),
        (_request(key=f"{RFC_KEY}\r\nSec-WebSocket-Key: {RFC_KEY}"), 400, "Sec-WebSocket-Key"),
    ],
)
def test_gateway_refuses_a_bad_handshake(request_: http.Request, status: int, named: str) -> None:
    answer = accept_upgrade(request_, version="1")
    assert answer.status == status
    assert named in answer.reason
    response = http.parse_response(answer.data[: http.find_head_end(answer.data)])
    assert response.status == status
    assert response.headers.get("Connection") == "close"
    body = answer.data[http.find_head_end(answer.data) :]
    assert response.headers.get("Content-Length") == str(len(body))


def test_gateway_without_upgrade_fields_is_426() -> None:
    request = _request()
    odd = http.Request(
        request.method,
        request.target,
        request.version,
        http.Headers(tuple(kv for kv in request.headers.items if kv[0] != "Upgrade")),
    )
    answer = accept_upgrade(odd, version="1")
    assert answer.status == 426
    assert b"\r\nUpgrade: websocket\r\n" in answer.data


def test_gateway_refuses_a_value_websockets_cannot_carry() -> None:
    """Our parser takes control bytes in values; websockets (>= 14) will not carry them:
    that is a 400, not a crash.  Older websockets carry it, and the upgrade goes on."""
    try:
        WSHeaders([("X-Odd", "a\x01b")])
        expected = 101
    except Exception:
        expected = 400
    answer = accept_upgrade(_request("X-Odd: a\x01b"), version="1")
    assert answer.status == expected
    assert http.parse_response(answer.data[: http.find_head_end(answer.data)]).status == expected


def test_client_and_gateway_agree() -> None:
    client = _client(headers=[("Token", "abc")])
    request = http.parse_request(client.request_bytes())
    answer = accept_upgrade(request, version="7.7.7")
    assert answer.status == 101 and answer.peer_is_ours
    assert client.receive_data(answer.data) == UpgradeAccepted(True, b"", "chisel-v3")
