"""Targets for text a user or a peer writes: remotes, channel targets, hosts, the
config JSON, auth and token files, keys, seeds and fingerprints, durations and the
CLI's small grammars (``--header``, ``--auth``, ``--proxy``, the server URL).
"""

from __future__ import annotations

import ipaddress
import json
import math
import socket
import struct
from collections.abc import Iterable

from .common import Reader, check

__all__ = [
    "auth_seeds",
    "authfile",
    "channel_target",
    "channel_target_seeds",
    "cli",
    "cli_seeds",
    "config",
    "durations",
    "durations_seeds",
    "fingerprint",
    "host_seeds",
    "hosts",
    "key",
    "remote",
    "remote_seeds",
    "seed",
]


# --- remotes and channel targets ---------------------------------------------------------


def remote(data: bytes) -> None:
    from cc.protocol.remote import parse_outsystemscc_remote, parse_remote

    text = data.decode("utf-8", "replace")
    for parse in (parse_remote, parse_outsystemscc_remote):
        try:
            parsed = parse(text)
        except ValueError:
            continue
        again = parse_remote(parsed.encode())
        check(again == parsed, f"{text!r} -> {parsed!r} re-parses as {again!r}")


def remote_seeds() -> Iterable[bytes]:
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


def channel_target(data: bytes) -> None:
    """What a peer asks a channel to reach; the host must come out canonical."""
    from cc.protocol.hosts import canonical_host
    from cc.protocol.remote import canonical_target, split_target
    from cc.ssh import ChannelOpenError
    from cc.tunnel.endpoint import ChannelTarget

    text = data.decode("utf-8", "replace")
    try:
        target = ChannelTarget.parse(text)
    except ChannelOpenError:
        check(text != "socks", "socks refused")
        return
    if target.socks:
        return
    check(canonical_host(target.host) == target.host, f"host {target.host!r} not canonical")
    check(1 <= target.port <= 65535, f"port {target.port}")
    canonical = canonical_target(target.address)
    check(split_target(canonical) == (target.host, target.port), f"{canonical!r} drifts")
    check(canonical_target(canonical) == canonical, f"{canonical!r} is not a fixed point")


def channel_target_seeds() -> Iterable[bytes]:
    yield from (b"socks", b"127.0.0.1:80", b"[::1]:22/udp", b"example.com:443", b"127.1:80")


# --- hosts -----------------------------------------------------------------------------------


def _strict(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address ``host`` names under Python's strict parse (brackets and zone ignored)."""
    inner = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(inner.partition("%")[0])
    except ValueError:
        return None


def _resolver(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address the dialer reads from ``host`` without asking DNS (libc, IDNA and all)."""
    inner = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        found = socket.getaddrinfo(inner, None, flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError, ValueError):
        return None
    return ipaddress.ip_address(str(found[0][4][0]).partition("%")[0])


def hosts(data: bytes) -> None:
    """``canonical_host`` is idempotent, keeps the address, and says what the resolver reads."""
    from cc.protocol.hosts import canonical_host, inet_aton_value

    text = data.decode("utf-8", "replace")
    value = inet_aton_value(text)
    # getaddrinfo reads numbers with glibc's inet_aton_exact: inet_aton without its
    # "stop at the first blank" leniency, so blanks are left out of the comparison.
    blanks = any(ch.isspace() or ch == "\x00" for ch in text)
    if text.isascii() and text[:1].isdigit() and not blanks:
        try:
            libc: int | None = int.from_bytes(socket.inet_aton(text), "big")
        except (OSError, ValueError):
            libc = None
        check(libc == value, f"inet_aton disagrees on {text!r}: {value} vs {libc}")
    canonical = canonical_host(text)
    check(canonical_host(canonical) == canonical, f"{text!r} -> {canonical!r} is not stable")
    check(_strict(canonical) == _strict(text), f"{text!r} -> {canonical!r} moves the address")
    if _strict(text) is None:
        check(canonical == text, f"the name {text!r} was rewritten to {canonical!r}")
    dialled = _resolver(canonical)
    check(
        dialled is None or dialled == _strict(canonical),
        f"{text!r} passes as {canonical!r} but the resolver dials {dialled}",
    )


def host_seeds() -> Iterable[bytes]:
    yield from (b"127.0.011", b"0x7f.1", b"[::1]", b"2130706433", b"example.com", b"fe80::1%1")


# --- the config request, auth files, keys ------------------------------------------------


def config(data: bytes) -> None:
    from cc.protocol.config import Config, decode_config, encode_config

    parsed = decode_config(data)
    again = decode_config(encode_config(parsed))
    check(again == parsed, "config does not survive encode/decode")
    Config(version=parsed.version, remotes=parsed.remotes)


def authfile(data: bytes) -> None:
    from cc.protocol.acl import parse_authfile, parse_tokens_file

    table = parse_authfile(data)
    table.authenticate("user", "pass")
    tokens = parse_tokens_file(data)
    tokens.lookup("token")


def auth_seeds() -> Iterable[bytes]:
    yield json.dumps({"user:pass": ["^R:0.0.0.0:80$", ""], "u2:p": []}).encode()
    yield json.dumps({"tok": ["127.0.0.1:80"]}).encode()


def key(data: bytes) -> None:
    from cc.protocol.keys import load_key

    text = data.decode("utf-8", "surrogateescape")
    load_key(text if text.startswith("ck-") else "ck-" + text)
    load_key("file", read_file=lambda _path: data)


#: Order of the P-256 group, for the Go 1.19 GenerateKey step chisel's seed keys take.
_P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def seed(data: bytes) -> None:
    """Seed keys, and every key through its ``ck-`` form and back.

    An input starting with a zero byte runs ``seed_private_key`` on the rest: its
    2,048 SHA-512 rounds do the same work whatever the seed, so they run for one
    input in 256 (a million inputs would otherwise take over an hour).  Every other
    input is read as chisel's 40-byte random stream (``d = k mod (n - 1) + 1``), and
    the key must come back from ``encode_inline`` through ``load_key`` with its
    fingerprint unchanged (the ``key`` target feeds ``load_key`` arbitrary bytes).
    """
    from cryptography.hazmat.primitives.asymmetric import ec

    from cc.protocol.keys import (
        FingerprintCheck,
        encode_inline,
        fingerprint_matches,
        fingerprint_sha256,
        load_key,
        public_key_wire,
        seed_private_key,
    )

    if data[:1] == b"\0":
        private = seed_private_key(data[1:65])
    else:
        k = int.from_bytes(data[:40], "big")
        private = ec.derive_private_key(k % (_P256_N - 1) + 1, ec.SECP256R1())
    wire = public_key_wire(private)
    fingerprint = fingerprint_sha256(wire)
    matched = fingerprint_matches(fingerprint, wire)
    check(matched is FingerprintCheck.MATCH, f"own fingerprint: {matched}")
    loaded = load_key(encode_inline(private))
    check(fingerprint_sha256(public_key_wire(loaded)) == fingerprint, "key changed on reload")


def fingerprint(data: bytes) -> None:
    from cc.protocol.keys import fingerprint_matches

    text = data.decode("utf-8", "replace")
    fingerprint_matches(text, b"\x00\x00\x00\x13ecdsa-sha2-nistp256")


# --- durations -------------------------------------------------------------------------------


def durations(data: bytes) -> None:
    """Go durations: in int64 range, and ``format`` then ``parse`` gives the same value."""
    from cc.protocol.durations import (
        DurationError,
        format_duration,
        format_duration_ns,
        parse_duration,
        parse_duration_ns,
    )

    if len(data) >= 9 and data[0] == 0xFF:
        seconds = struct.unpack("<d", data[1:9])[0]
        try:
            text = format_duration(seconds)
        except ValueError:
            check(not math.isfinite(seconds * 1e9), f"{seconds!r} not formatted")
            return
        ns = round(seconds * 1e9)
        if -(1 << 63) <= ns < 1 << 63:
            check(parse_duration_ns(text) == ns, f"{seconds!r} -> {text!r} does not parse back")
        return
    text = data.decode("utf-8", "surrogateescape")
    try:
        ns = parse_duration_ns(text)
    except DurationError:
        return
    check(-(1 << 63) <= ns < 1 << 63, f"{text!r} -> {ns} is outside int64")
    again = format_duration_ns(ns)
    check(parse_duration_ns(again) == ns, f"{text!r} -> {ns} -> {again!r} drifts")
    check(parse_duration(text) == ns / 1e9, "seconds and nanoseconds disagree")


def durations_seeds() -> Iterable[bytes]:
    yield from (b"1h2m3.5s", b"-1.5h", b"0", b"733.439\xc2\xb5s", b"9223372036854775807ns")
    yield b"\xff" + struct.pack("<d", 0.1)


# --- the CLI's small grammars ------------------------------------------------------------------


def cli(data: bytes) -> None:
    """``--header``, ``--auth``, ``--proxy`` and the server URL; what passes is usable."""
    from cc.cli.common import UsageError, parse_header
    from cc.protocol.acl import parse_user_pass
    from cc.protocol.errors import ProtocolError
    from cc.protocol.http import check_field
    from cc.transport.proxy import parse_proxy_url
    from cc.transport.urls import host_port, normalize_server_url

    reader = Reader(data)
    which, text = reader.byte() % 4, reader.rest().decode("utf-8", "surrogateescape")
    try:
        if which == 0:
            name, value = parse_header(text)
            check_field(name, value)  # what the upgrade request will do with it
        elif which == 1:
            user, password = parse_user_pass(text)
            check(bool(user) and ":" not in user, f"user {user!r}")
            check(f"{user}:{password}" == text, "credentials changed")
        elif which == 2:
            _kind, host, port, _user, _password, _rdns = parse_proxy_url(text)
            check(bool(host) and 0 <= port <= 65535, f"proxy {host!r}:{port}")
        else:
            host, port = host_port(normalize_server_url(text))
            check(bool(host) and 0 <= port <= 65535, f"server {host!r}:{port}")
    except (UsageError, ProtocolError, ValueError):
        return


def cli_seeds() -> Iterable[bytes]:
    yield b"\x00Token: abc"
    yield b"\x01user:pa:ss"
    yield b"\x02socks5h://u:p%40@proxy.example:1080"
    yield b"\x03https://gw.example:8443/sg_1?x=1"
