"""Targets for what arrives on a socket: WebSocket frames, HTTP heads, the upgrade,
SOCKS5, gob UDP and SSH packets (the last three also compared between the twins).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .common import Reader, agree, check, same, twins, vector

if TYPE_CHECKING:
    from cc.protocol.handshake import ClientEvent, ClientHandshake

__all__ = [
    "FIXED_KEY",
    "gob",
    "gob_seeds",
    "gob_values",
    "handshake_client",
    "handshake_client_seeds",
    "handshake_roundtrip",
    "handshake_roundtrip_seeds",
    "handshake_server",
    "http_request",
    "http_response",
    "http_seeds",
    "socks5",
    "socks5_seeds",
    "ssh_chacha",
    "ssh_gcm",
    "ssh_seeds_chacha",
    "ssh_seeds_gcm",
    "ws_header",
    "ws_seeds",
    "ws_stream",
]

#: websockets draws a random Sec-WebSocket-Key; the client targets pin this one
#: (RFC 6455's example) so that the fuzzer has one right answer to find.
FIXED_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def _steps(data: bytes, step: int) -> Iterable[bytes]:
    for i in range(0, len(data), step):
        yield data[i : i + step]


# --- WebSocket ---------------------------------------------------------------------


def ws_header(data: bytes) -> None:
    agree(lambda fp: fp.parse_header(data, 0))
    if len(data) > 4:
        agree(lambda fp: fp.apply_mask(data[4:], data[:4]))


def ws_stream(data: bytes) -> None:
    from cc.protocol.ws import WebSocketError, WebSocketStream

    if not data:
        return
    outcomes: list[tuple[object, ...]] = []
    for fp in twins():
        ws = WebSocketStream(is_client=bool(data[0] & 1), max_frame_size=1 << 16, fastpath=fp)
        step = (data[0] >> 1) % 7 + 1
        out: list[bytes] = []
        try:
            for piece in _steps(data[1:], step):
                out.extend(ws.receive_data(piece))
                ws.data_to_send()
        except WebSocketError as exc:
            outcomes.append(("error", int(exc.code), b"".join(out)))
        else:
            outcomes.append(("ok", b"".join(out), ws.closed))
    same(outcomes)


def ws_seeds() -> Iterable[bytes]:
    yield b"\x01\x82\x85\x11\x22\x33\x44" + bytes(b ^ 0x11 for b in b"hello")
    yield b"\x00\x81\x05hello\x88\x02\x03\xe8"
    yield b"\x01\x81\xff\x00\x00\x00\x00\x00\x00\x00\x10\x00\x11\x22\x33\x44"
    yield b"\x00\x81\x02\xc3\x28"  # a text frame that is not UTF-8


# --- HTTP heads --------------------------------------------------------------------


def http_request(data: bytes) -> None:
    from cc.protocol import http

    end = http.find_head_end(data)
    if end >= 0:
        request = http.parse_request(data[:end])
        request.is_websocket_upgrade()
        request.headers.get("host")


def http_response(data: bytes) -> None:
    from cc.protocol import http

    end = http.find_head_end(data)
    if end >= 0:
        response = http.parse_response(data[:end])
        response.headers.get("location")
        check(0 <= response.status <= 999, f"status {response.status} is not three digits")
    parsed = http.ResponseParser().receive_data(data)
    if parsed is not None:
        check(parsed[1] == data[end:], "ResponseParser and find_head_end disagree")


def http_seeds() -> Iterable[bytes]:
    text = vector("upgrade_requests.txt").decode("utf-8", "replace")
    for block in text.split("\n\n"):
        lines = [ln for ln in block.splitlines() if ln and not ln.startswith("#")]
        if lines:
            yield ("\r\n".join(lines) + "\r\n\r\n").encode()
    yield b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


# --- the upgrade -------------------------------------------------------------------


def _client() -> ClientHandshake:
    from cc.protocol.handshake import ClientHandshake

    client = ClientHandshake(urlsplit("http://gateway.example:8080/sg_1?id=1"))
    client._protocol.key = FIXED_KEY
    return client


def handshake_client(data: bytes) -> None:
    """The connector's check of the gateway's answer, fed whole and in pieces."""
    from cc.protocol import http
    from cc.protocol.handshake import UpgradeAccepted, UpgradeRefused

    if not data:
        return
    step, body = data[0] % 11 + 1, data[1:]
    events: list[ClientEvent | None] = []
    for pieces in ([body], list(_steps(body, step))):
        client = _client()
        got: list[ClientEvent] = []
        after = b""  # what arrived after the outcome belongs to the WebSocket
        for piece in pieces:
            if got:
                after += piece
            elif (event := client.receive_data(piece)) is not None:
                got.append(event)
                check(client.receive_data(b"more") is None, "an event after the outcome")
        if got and isinstance(got[0], UpgradeAccepted):
            got[0] = dataclasses.replace(got[0], leftover=got[0].leftover + after)
        events.append(got[0] if got else None)
    check(events[0] == events[1], f"the outcome depends on the segmentation: {events!r}")
    event = events[0]
    try:
        end = http.find_head_end(body)
    except http.HTTPError:
        return
    check(event is None or end >= 0, f"an outcome {event!r} before the head's end")
    if event is None and end >= 0:
        # A refusal waits for its short text body (the gateway's reason, shown to the
        # user); any other complete head must have an outcome.
        response = http.parse_response(body[:end])
        length = int(response.headers.get("Content-Length") or 0)
        check(
            response.status != 101 and len(body) - end < length,
            f"head end {end} but no outcome (status {response.status}, body {length})",
        )
    if isinstance(event, UpgradeAccepted):
        response = http.parse_response(body[:end])
        check(response.status == 101, f"accepted a {response.status}")
        accept = response.headers.get("Sec-WebSocket-Accept")
        check(accept == http.accept_key(FIXED_KEY), f"accepted Sec-WebSocket-Accept {accept!r}")
        check(event.subprotocol in (None, "chisel-v3"), f"accepted {event.subprotocol!r}")
        check(event.leftover == body[end:], "leftover is not what followed the head")
    elif isinstance(event, UpgradeRefused):
        check(event.status != 101, "a 101 reported as a refusal")


def handshake_client_seeds() -> Iterable[bytes]:
    from cc.protocol.http import accept_key

    ok = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(FIXED_KEY)}\r\nSec-WebSocket-Protocol: chisel-v3\r\n"
    )
    yield b"\x00" + ok.encode() + b"\r\n\x82\x00"
    yield b"\x03" + ok.encode() + b"X-Cloud-Connector: 1\r\n\r\n"
    yield b"\x05" + ok.replace("chisel-v3", "chisel-v2").encode() + b"\r\n"
    yield b"\x01HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"


def handshake_server(data: bytes) -> None:
    """The gateway's check of an upgrade request; its answer must be well formed."""
    from cc.protocol import http
    from cc.protocol.handshake import accept_upgrade

    end = http.find_head_end(data)
    if end < 0:
        return
    request = http.parse_request(data[:end])
    answer = accept_upgrade(request, version="0.0.0-fuzz")
    check(http.find_head_end(answer.data) > 0, f"answer without a head end: {answer.data!r}")
    response = http.parse_response(answer.data[: http.find_head_end(answer.data)])
    check(response.status == answer.status, f"status {answer.status} written as {response}")
    if answer.status == 101:
        key = request.headers.get("Sec-WebSocket-Key") or ""
        got = response.headers.get("Sec-WebSocket-Accept")
        check(got == http.accept_key(key), f"Sec-WebSocket-Accept {got!r} for key {key!r}")
        protocol = response.headers.get("Sec-WebSocket-Protocol")
        check(protocol in (None, "chisel-v3"), f"gateway chose protocol {protocol!r}")
    else:
        check(not answer.peer_is_ours, "a refusal that claims the peer is ours")


_HANDSHAKE_NAMES = frozenset(
    {
        "host",
        "connection",
        "upgrade",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
        "sec-websocket-accept",
    }
)


def handshake_roundtrip(data: bytes) -> None:
    """Whatever URL and headers the CLI accepts, the connector sends and the gateway accepts.

    The URL, ``--header`` and ``--hostname`` go through the CLI's own checks first
    (what they refuse is a usage error, fine); after that nothing may raise.  Only
    headers that redefine the handshake's own fields are left out (they may fail it).
    """
    from cc.cli.common import UsageError, check_hostname, parse_header
    from cc.protocol import http
    from cc.protocol.handshake import ClientHandshake, UpgradeAccepted, accept_upgrade
    from cc.transport.urls import normalize_server_url

    reader = Reader(data)
    flags = reader.byte()
    try:
        url = normalize_server_url(reader.text())
        headers = [parse_header(reader.text()) for _ in range(reader.below(4))]
        hostname = check_hostname(reader.text(64)) if flags & 2 else None
    except (UsageError, ValueError):
        return
    if any(name.lower() in _HANDSHAKE_NAMES for name, _ in headers) or hostname == "":
        return
    announce = bool(flags & 1)
    client = ClientHandshake(url, headers=headers, hostname=hostname, announce=announce)
    wire = client.request_bytes()
    end = http.find_head_end(wire)
    check(end == len(wire), f"the request's head ends at {end} of {len(wire)}")
    try:
        request = http.parse_request(wire)
    except http.HTTPError as exc:
        raise AssertionError(f"gateway cannot parse our request {wire!r}: {exc}") from None
    check(request.is_websocket_upgrade(), f"not an upgrade: {wire!r}")
    check(request.headers.get("Sec-WebSocket-Protocol") == "chisel-v3", "protocol lost")
    answer = accept_upgrade(request, version="0.0.0-fuzz")
    check(answer.status == 101, f"gateway refused our request {wire!r}: {answer.reason}")
    check(answer.peer_is_ours == announce, "peer header lost")
    event = client.receive_data(answer.data + b"\x82\x00")
    check(isinstance(event, UpgradeAccepted), f"client refused the gateway's 101: {event!r}")
    assert isinstance(event, UpgradeAccepted)
    check(event.leftover == b"\x82\x00", "frame bytes after the 101 lost")
    check(event.peer_is_ours == announce, "peer header not seen")


def handshake_roundtrip_seeds() -> Iterable[bytes]:
    def chunk(text: str) -> bytes:
        raw = text.encode()
        return bytes([len(raw)]) + raw

    yield (
        b"\x01"
        + chunk("http://127.0.0.1:8080/sg_123?id=1&ports=8081")
        + b"\x01"
        + chunk("Token: abc")
    )
    yield b"\x02" + chunk("wss://gw.example/") + b"\x00" + chunk("proxy.example")
    yield b"\x00" + chunk("gw.example:80") + b"\x02" + chunk("X-A: 1") + chunk("x-b:  two ")


# --- SOCKS5 ----------------------------------------------------------------------------


def socks5(data: bytes) -> None:
    """The SOCKS5 handshake, whole and in pieces; a CONNECT must name what it read."""
    import ipaddress

    from cc.protocol.hosts import canonical_host
    from cc.protocol.socks5 import (
        MAX_HANDSHAKE,
        ConnectRequested,
        MethodsOffered,
        Refusal,
        SocksServer,
    )

    if not data:
        return
    step, body = data[0] % 13 + 1, data[1:]
    runs = []
    for pieces in ([body], list(_steps(body, step))):
        server = SocksServer()
        events = [event for piece in pieces for event in server.receive_data(piece)]
        check(len(events) <= 2, f"more than two events: {events!r}")
        if events and not isinstance(events[-1], MethodsOffered):
            check(server.done, "a final event but the parser is not done")
            check(server.receive_data(b"\x05\x01\x00") == [], "events after the end")
        runs.append(events)
    whole, split = runs
    if len(body) > MAX_HANDSHAKE:
        return  # the whole-buffer run refuses at once; pieces may finish first
    check(len(whole) == len(split), f"segmentation changes the events: {runs!r}")
    for one, other in zip(whole, split, strict=True):
        if isinstance(one, ConnectRequested) and isinstance(other, ConnectRequested):
            check(one.early.startswith(other.early), "early bytes differ")
            other = ConnectRequested(other.host, other.port, other.target, one.early)
        check(one == other, f"segmentation changes the events: {runs!r}")
    if not whole:
        return
    first = whole[0]
    if isinstance(first, MethodsOffered):
        check(first.reply == b"\x05\x00", f"greeting answered {first.reply!r}")
        check(0 in first.methods, "no-auth not offered but accepted")
    last = whole[-1]
    if isinstance(last, Refusal):
        check(len(last.reply) in (0, 2, 10), f"malformed reply {last.reply!r}")
    elif isinstance(last, ConnectRequested):
        check(canonical_host(last.host) == last.host, f"non-canonical host {last.host!r}")
        request = body[2 + body[1] :]
        atyp = request[3]
        address = request[4 : len(request) - len(last.early) - 2]
        if atyp == 1:
            check(str(ipaddress.IPv4Address(address)) == last.host, "IPv4 host misread")
        elif atyp == 4:
            check(ipaddress.IPv6Address(address) == ipaddress.ip_address(last.host), "IPv6")
        port = request[len(request) - len(last.early) - 2 :][:2]
        check(int.from_bytes(port, "big") == last.port, f"port {last.port} misread")
        check(last.target.endswith(f":{last.port}"), f"target {last.target!r}")


def socks5_seeds() -> Iterable[bytes]:
    yield b"\x00\x05\x01\x00\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50"
    yield b"\x02\x05\x02\x00\x02\x05\x01\x00\x03\x0bexample.com\x01\xbbearly"
    yield b"\x04\x05\x01\x00\x05\x01\x00\x04" + bytes(15) + b"\x01\x00\x16"
    yield b"\x01\x05\x01\x00\x05\x01\x00\x03\x09127.0.011\x00\x50"
    yield b"\x03\x05\x01\x02"


# --- UDP gob ---------------------------------------------------------------------------


def gob(data: bytes) -> None:
    from cc.protocol.udp import GobDecoder, GobError

    results: list[tuple[str, object]] = []
    for fp in twins():
        try:
            results.append(("ok", GobDecoder(fastpath=fp).receive_data(data)))
        except GobError as exc:
            results.append(("error", str(exc)))
    same(results)


def gob_values(data: bytes) -> None:
    if len(data) < 3:
        return
    type_id, src_field, payload_field = data[0] + 64, data[1] % 4, data[2] % 4
    body = data[3:]
    agree(lambda fp: fp.gob_decode_value(body, type_id, src_field, payload_field))
    agree(lambda fp: fp.gob_decode_uint(body, 0))


def gob_seeds() -> Iterable[bytes]:
    text = vector("udp_gob.txt").decode("utf-8", "replace")
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            try:
                yield bytes.fromhex(line.split(":", 1)[-1].replace(" ", ""))
            except ValueError:
                continue


# --- SSH packets -----------------------------------------------------------------------


_KEY32 = bytes(range(32))
_KEY64 = bytes(range(64))
_IV12 = bytes(range(12))


def _authentic_gcm(plain: bytes) -> bytes:
    """A wire packet whose tag verifies, around a plaintext the fuzzer wrote (padding too)."""
    from cc import _fastpath_py

    length = len(plain).to_bytes(4, "big")
    return length + _fastpath_py.GCMPacketCipher(_KEY32[:16], _IV12).encrypt(length, plain)


def _authentic_chacha(plain: bytes, seq: int) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher
    from cryptography.hazmat.primitives.ciphers.algorithms import ChaCha20
    from cryptography.hazmat.primitives.poly1305 import Poly1305

    nonce = bytes(8) + seq.to_bytes(8, "big")  # block counter 0, then the sequence number
    length = (
        Cipher(ChaCha20(_KEY64[32:], nonce), mode=None)
        .encryptor()
        .update(len(plain).to_bytes(4, "big"))
    )
    stream = Cipher(ChaCha20(_KEY64[:32], nonce), mode=None).encryptor()
    poly_key = stream.update(bytes(64))[:32]
    body = length + stream.update(plain)
    return body + Poly1305.generate_tag(poly_key, body)


def _whole_blocks(data: bytes, block: int) -> bytes:
    return data[: max(block, len(data) // block * block)].ljust(block, b"\0")


def ssh_gcm(data: bytes) -> None:
    """Packet opening on both twins: raw bytes (only the length and tag checks can be
    reached: a fuzzer cannot forge a tag), and for odd first bytes an authentic packet
    around the fuzzer's plaintext, which reaches the padding checks."""
    if data[:1] and data[0] & 1:
        plain = _whole_blocks(data[1:], 16)
        data = _authentic_gcm(plain) + data[len(plain) + 1 :]
        _opened_is_payload(
            lambda fp: fp.GCMPacketCipher(_KEY32[:16], _IV12).open_packet(bytearray(data), 0),
            plain,
        )
    agree(lambda fp: fp.GCMPacketCipher(_KEY32[:16], _IV12).open_packet(bytearray(data), 0))


def ssh_chacha(data: bytes) -> None:
    """As ``ssh_gcm``, for chacha20-poly1305@openssh.com."""
    if data[:1] and data[0] & 1:
        plain = _whole_blocks(data[1:], 8)
        data = _authentic_chacha(plain, 3) + data[len(plain) + 1 :]
        _opened_is_payload(
            lambda fp: fp.ChachaPacketCipher(_KEY64).open_packet(bytearray(data), 0, 3), plain
        )
    agree(lambda fp: fp.ChachaPacketCipher(_KEY64).open_packet(bytearray(data), 0, 3))


def _opened_is_payload(call: Callable[[ModuleType], object], plain: bytes) -> None:
    """An authentic packet opens to its payload, or is refused for its padding only."""
    for fp in twins():
        try:
            opened = call(fp)
        except ValueError as exc:
            check(plain[0] < 4 or plain[0] >= len(plain), f"refused {plain!r}: {exc}")
            continue
        assert isinstance(opened, tuple)
        payload, used = opened
        check(bytes(payload) == plain[1 : len(plain) - plain[0]], "payload is not the plaintext's")
        check(used == len(plain) + 4 + 16, f"consumed {used} of a {len(plain)}-byte packet")


def ssh_seeds_gcm() -> Iterable[bytes]:
    from cc import _fastpath_py

    cipher = _fastpath_py.GCMPacketCipher(_KEY32[:16], _IV12)
    yield bytes(cipher.seal(b"\x5e\x00\x00\x00\x01\x00\x00\x00\x03abc", b""))


def ssh_seeds_chacha() -> Iterable[bytes]:
    from cc import _fastpath_py

    yield bytes(_fastpath_py.ChachaPacketCipher(_KEY64).seal(b"\x02hello", b"", 3))
