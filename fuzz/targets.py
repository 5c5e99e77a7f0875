"""Fuzz targets: one function per parser, plus differential checks between the twins.

A target calls a parser on arbitrary bytes.  The parser's own input errors (the
``expected`` exceptions) are fine; anything else escaping is a crash.  Where a
parser has a compiled twin, the target also runs the pure one and requires the
same answer (same result, or both failing), so a divergence is a crash too.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

__all__ = ["TARGETS", "Target", "seeds_for"]

VECTORS = Path(__file__).resolve().parents[1] / "tests" / "vectors"


@dataclass(frozen=True)
class Target:
    """``run(data)`` raises only ``expected`` exceptions on any input."""

    name: str
    run: Callable[[bytes], None]
    expected: tuple[type[Exception], ...]
    seeds: Callable[[], Iterable[bytes]] = field(default=lambda: ())

    def __call__(self, data: bytes) -> None:
        with contextlib.suppress(*self.expected):
            self.run(data)


def _twins() -> list[ModuleType]:
    from cc import fastpath

    return list(fastpath.implementations().values())


def _same(results: Sequence[object]) -> None:
    """Every twin gave the same outcome (a value, or an error of the same kind)."""
    if any(other != results[0] for other in results[1:]):
        raise AssertionError(f"twins disagree: {results!r}")


def _agree(call: Callable[[ModuleType], object]) -> None:
    """Run ``call`` on each twin; they must return equal values or both fail."""
    outcomes: list[tuple[str, object]] = []
    for fp in _twins():
        try:
            outcomes.append(("ok", _plain(call(fp))))
        except (ValueError, OverflowError):
            outcomes.append(("error", None))  # 32-bit builds differ in which of the two
    _same(outcomes)


def _plain(value: object) -> object:
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


def _vector(name: str) -> bytes:
    path = VECTORS / name
    return path.read_bytes() if path.exists() else b""


# --- WebSocket ---------------------------------------------------------------------


def _ws_header(data: bytes) -> None:
    _agree(lambda fp: fp.parse_header(data, 0))
    if len(data) > 4:
        _agree(lambda fp: fp.apply_mask(data[4:], data[:4]))


def _ws_stream(data: bytes) -> None:
    from cc.protocol.ws import WebSocketError, WebSocketStream

    if not data:
        return
    outcomes: list[tuple[object, ...]] = []
    for fp in _twins():
        ws = WebSocketStream(is_client=bool(data[0] & 1), max_frame_size=1 << 16, fastpath=fp)
        step = (data[0] >> 1) % 7 + 1
        out: list[bytes] = []
        try:
            for i in range(1, len(data), step):
                out.extend(ws.receive_data(data[i : i + step]))
                ws.data_to_send()
        except WebSocketError as exc:
            outcomes.append(("error", int(exc.code), b"".join(out)))
        else:
            outcomes.append(("ok", b"".join(out), ws.closed))
    _same(outcomes)


def _ws_seeds() -> Iterable[bytes]:
    yield b"\x01\x82\x85\x11\x22\x33\x44" + bytes(b ^ 0x11 for b in b"hello")
    yield b"\x00\x81\x05hello\x88\x02\x03\xe8"
    yield b"\x01\x81\xff\x00\x00\x00\x00\x00\x00\x00\x10\x00\x11\x22\x33\x44"


# --- HTTP --------------------------------------------------------------------------


def _http_request(data: bytes) -> None:
    from cc.protocol import http

    end = http.find_head_end(data)
    if end >= 0:
        request = http.parse_request(data[:end])
        request.is_websocket_upgrade()
        request.headers.get("host")


def _http_response(data: bytes) -> None:
    from cc.protocol import http

    end = http.find_head_end(data)
    if end >= 0:
        http.parse_response(data[:end]).headers.get("location")


def _http_seeds() -> Iterable[bytes]:
    text = _vector("upgrade_requests.txt").decode("utf-8", "replace")
    for block in text.split("\n\n"):
        lines = [ln for ln in block.splitlines() if ln and not ln.startswith("#")]
        if lines:
            yield ("\r\n".join(lines) + "\r\n\r\n").encode()
    yield b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


# --- remotes, config, auth files, keys ----------------------------------------------


def _remote(data: bytes) -> None:
    from cc.protocol.remote import parse_outsystemscc_remote, parse_remote

    text = data.decode("utf-8", "replace")
    for parse in (parse_remote, parse_outsystemscc_remote):
        try:
            remote = parse(text)
        except ValueError:
            continue
        again = parse_remote(remote.encode())
        if again != remote:
            raise AssertionError(f"{text!r} -> {remote!r} re-parses as {again!r}")


def _remote_seeds() -> Iterable[bytes]:
    for spec in (
        "3000",
        "example.com:3000",
        "R:2222:localhost:22",
        "[::1]:3000:[::1]:80",
        "socks",
        "R:socks",
        "stdio:example.com:22",
        "1.1.1.1:53/udp",
        "R:0.0.0.0:80:x:1",
    ):
        yield spec.encode()


def _config(data: bytes) -> None:
    from cc.protocol.config import Config, decode_config, encode_config

    config = decode_config(data)
    again = decode_config(encode_config(config))
    if again != config:
        raise AssertionError("config does not survive encode/decode")
    Config(version=config.version, remotes=config.remotes)


def _authfile(data: bytes) -> None:
    from cc.protocol.acl import parse_authfile, parse_tokens_file

    table = parse_authfile(data)
    table.authenticate("user", "pass")
    tokens = parse_tokens_file(data)
    tokens.lookup("token")


def _auth_seeds() -> Iterable[bytes]:
    yield json.dumps({"user:pass": ["^R:0.0.0.0:80$", ""], "u2:p": []}).encode()
    yield json.dumps({"tok": ["127.0.0.1:80"]}).encode()


def _key(data: bytes) -> None:
    from cc.protocol.keys import load_key

    text = data.decode("utf-8", "surrogateescape")
    load_key(text if text.startswith("ck-") else "ck-" + text)
    load_key("file", read_file=lambda _path: data)


def _seed(data: bytes) -> None:
    from cc.protocol.keys import fingerprint_sha256, public_key_wire, seed_private_key

    fingerprint_sha256(public_key_wire(seed_private_key(data[:64])))


def _fingerprint(data: bytes) -> None:
    from cc.protocol.keys import fingerprint_matches

    text = data.decode("utf-8", "replace")
    fingerprint_matches(text, b"\x00\x00\x00\x13ecdsa-sha2-nistp256")


# --- UDP gob -------------------------------------------------------------------------


def _gob(data: bytes) -> None:
    from cc.protocol.udp import GobDecoder, GobError

    results: list[tuple[str, object]] = []
    for fp in _twins():
        try:
            results.append(("ok", GobDecoder(fastpath=fp).receive_data(data)))
        except GobError as exc:
            results.append(("error", str(exc)))
    _same(results)


def _gob_values(data: bytes) -> None:
    if len(data) < 3:
        return
    type_id, src_field, payload_field = data[0] + 64, data[1] % 4, data[2] % 4
    body = data[3:]
    _agree(lambda fp: fp.gob_decode_value(body, type_id, src_field, payload_field))
    _agree(lambda fp: fp.gob_decode_uint(body, 0))


def _gob_seeds() -> Iterable[bytes]:
    text = _vector("udp_gob.txt").decode("utf-8", "replace")
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            try:
                yield bytes.fromhex(line.split(":", 1)[-1].replace(" ", ""))
            except ValueError:
                continue


# --- SSH packets ---------------------------------------------------------------------


_KEY32 = bytes(range(32))
_KEY64 = bytes(range(64))
_IV12 = bytes(range(12))


def _ssh_gcm(data: bytes) -> None:
    _agree(lambda fp: fp.GCMPacketCipher(_KEY32[:16], _IV12).open_packet(bytearray(data), 0))


def _ssh_chacha(data: bytes) -> None:
    _agree(lambda fp: fp.ChachaPacketCipher(_KEY64).open_packet(bytearray(data), 0, 3))


def _ssh_seeds_gcm() -> Iterable[bytes]:
    from cc import _fastpath_py

    cipher = _fastpath_py.GCMPacketCipher(_KEY32[:16], _IV12)
    yield bytes(cipher.seal(b"\x5e\x00\x00\x00\x01\x00\x00\x00\x03abc", b""))


def _ssh_seeds_chacha() -> Iterable[bytes]:
    from cc import _fastpath_py

    yield bytes(_fastpath_py.ChachaPacketCipher(_KEY64).seal(b"\x02hello", b"", 3))


# --- hosts ----------------------------------------------------------------------------


def _hosts(data: bytes) -> None:
    import socket

    from cc.protocol.hosts import canonical_host, inet_aton_value

    text = data.decode("ascii", "replace")
    value = inet_aton_value(text)
    # getaddrinfo reads numbers with glibc's inet_aton_exact: inet_aton without its
    # "stop at the first blank" leniency, so blanks are left out of the comparison.
    if text and text[0].isdigit() and not any(ch.isspace() or ch == "\x00" for ch in text):
        try:
            libc: int | None = int.from_bytes(socket.inet_aton(text), "big")
        except (OSError, ValueError):
            libc = None
        if libc != value:
            raise AssertionError(f"inet_aton disagrees on {text!r}: {value} vs {libc}")
    canonical_host(text)


def _host_seeds() -> Iterable[bytes]:
    yield from (b"127.0.011", b"0x7f.1", b"[::1]", b"2130706433", b"example.com")


# --- named services (WebRoute) -----------------------------------------------------


def _webroute(data: bytes) -> None:
    """A request head through decide(), as the gateway's named services see it."""
    from cc.protocol import http
    from cc.protocol import webroute as wr

    keys = wr.KeyTable.from_keys("skey", "ckey")
    directory: wr.Directory[object, object] = wr.Directory()
    directory.register("/p", object())
    directory.park(wr.Parked("/p", "abc", object(), 60, object()))
    end = http.find_head_end(data)
    request = http.parse_request(data[:end] if end > 0 else data + b"\r\n\r\n")
    decision = wr.decide(request, keys, directory)
    if isinstance(decision, wr.Refuse):
        assert decision.data.startswith(b"HTTP/1.1 ")


def _webroute_text(data: bytes) -> None:
    """The gateway's notifications, a keys file and a service remote, from one input."""
    from cc.protocol import webroute as wr

    wr.NotificationReader().feed(data)
    with contextlib.suppress(ValueError):
        wr.parse_keys_file(data)
    wr.parse_service_remote(data.decode("utf-8", "replace"))


def _webroute_seeds() -> Iterable[bytes]:
    yield (
        b"GET /p HTTP/1.1\r\nHost: h\r\nX-Remoted-APIKey: skey\r\nConnection: Upgrade\r\n"
        b"Upgrade: webroute\r\nWebRoute-Version: 1\r\nWebRoute-ID: abc\r\n\r\n"
    )
    yield b'{"ipaddr":"1.2.3.4:5","id":"abc","timeout":60}{"id":"x"}'
    yield b'{"server_keys": {"k": ["/a.*"]}, "client_apikey": "c"}'
    yield b"R:svc/jira:[::1]:443"


def _targets() -> dict[str, Target]:
    from cc.protocol.errors import ProtocolError

    value_errors = (ValueError, ProtocolError)
    found = [
        Target("ws_header", _ws_header, (), _ws_seeds),
        Target("ws_stream", _ws_stream, (), _ws_seeds),
        Target("http_request", _http_request, value_errors, _http_seeds),
        Target("http_response", _http_response, value_errors, _http_seeds),
        Target("remote", _remote, value_errors, _remote_seeds),
        Target("config", _config, value_errors, lambda: [_vector("config_request.json")]),
        Target("authfile", _authfile, value_errors, _auth_seeds),
        Target("key", _key, value_errors, lambda: [b"ck-" + b"A" * 40]),
        Target("seed", _seed, value_errors, lambda: [b"someseed"]),
        Target("fingerprint", _fingerprint, value_errors, lambda: [b"aa:bb", b"x" * 44]),
        Target("gob", _gob, (), _gob_seeds),
        Target("gob_values", _gob_values, (), _gob_seeds),
        Target("ssh_gcm", _ssh_gcm, (), _ssh_seeds_gcm),
        Target("ssh_chacha", _ssh_chacha, (), _ssh_seeds_chacha),
        Target("hosts", _hosts, value_errors, _host_seeds),
        Target("webroute_request", _webroute, value_errors, _webroute_seeds),
        Target("webroute_text", _webroute_text, value_errors, _webroute_seeds),
    ]
    return {target.name: target for target in found}


TARGETS = _targets()


def seeds_for(name: str) -> list[bytes]:
    """The seed corpus of a target: its examples plus nothing else (vectors included)."""
    return [seed for seed in TARGETS[name].seeds() if seed]
