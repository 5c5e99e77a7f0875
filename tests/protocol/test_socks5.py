"""cc.protocol.socks5: the SOCKS5 server handshake chisel runs on a ``socks`` channel,
bytes in and events out (the I/O around it is tested in tests/tunnel/test_socks.py)."""

from __future__ import annotations

import ipaddress
import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cc.protocol.socks5 import (
    MAX_HANDSHAKE,
    ConnectRequested,
    Event,
    MethodsOffered,
    Refusal,
    Reply,
    SocksServer,
    encode_reply,
    socks_target,
)

GREETING = b"\x05\x01\x00"
OK = b"\x05\x00"
NONE_ACCEPTABLE = b"\x05\xff"


def connect(host: bytes, port: int, atyp: int, command: int = 1) -> bytes:
    return bytes((5, command, 0, atyp)) + host + struct.pack("!H", port)


def ipv4(addr: str, port: int, command: int = 1) -> bytes:
    return connect(ipaddress.IPv4Address(addr).packed, port, 1, command)


def ipv6(addr: str, port: int) -> bytes:
    return connect(ipaddress.IPv6Address(addr).packed, port, 4)


def domain(name: bytes, port: int) -> bytes:
    return connect(bytes((len(name),)) + name, port, 3)


def feed(*chunks: bytes) -> list[Event]:
    server = SocksServer()
    return [event for chunk in chunks for event in server.receive_data(chunk)]


def failure(code: Reply) -> bytes:
    return bytes((5, code, 0, 1, 0, 0, 0, 0, 0, 0))


# -- the happy paths ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "host", "port", "target"),
    [
        (ipv4("127.0.0.1", 8080), "127.0.0.1", 8080, "127.0.0.1:8080"),
        (ipv6("::1", 443), "::1", 443, "[::1]:443"),
        (ipv6("2001:db8::1", 1), "2001:db8::1", 1, "[2001:db8::1]:1"),
        (domain(b"example.com", 80), "example.com", 80, "example.com:80"),
        (
            domain(b"Mixed-Case.example", 65535),
            "Mixed-Case.example",
            65535,
            "Mixed-Case.example:65535",
        ),
    ],
)
def test_connect(request_: bytes, host: str, port: int, target: str) -> None:
    server = SocksServer()
    assert server.receive_data(GREETING) == [MethodsOffered(b"\x00", OK)]
    assert server.receive_data(request_) == [ConnectRequested(host, port, target, b"")]
    assert server.done


def test_greeting_request_and_early_data_in_one_segment() -> None:
    events = feed(b"\x05\x03\x02\x01\x00" + ipv4("10.0.0.1", 22) + b"SSH-2.0-x\r\n")
    assert events == [
        MethodsOffered(b"\x02\x01\x00", OK),
        ConnectRequested("10.0.0.1", 22, "10.0.0.1:22", b"SSH-2.0-x\r\n"),
    ]


def test_after_the_request_the_parser_is_done() -> None:
    server = SocksServer()
    server.receive_data(GREETING + ipv4("127.0.0.1", 1))
    assert server.receive_data(b"tunnel bytes, not SOCKS") == []


# -- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("first", [b"\x04\x01", b"GE", b"\x00\x00"])
def test_not_socks5_greeting_closes_without_a_reply(first: bytes) -> None:
    assert feed(first + b"\x00\x50") == [Refusal(b"", f"not SOCKS5 (version byte {first[0]})")]


def test_not_socks5_request_closes_without_a_reply() -> None:
    assert feed(GREETING, b"\x04\x01\x00\x01" + bytes(6)) == [
        MethodsOffered(b"\x00", OK),
        Refusal(b"", "not SOCKS5 (version byte 4)"),
    ]


@pytest.mark.parametrize("methods", [b"\x02", b"\x01\x02\x80", b""])
def test_no_acceptable_method(methods: bytes) -> None:
    assert feed(bytes((5, len(methods))) + methods) == [
        Refusal(NONE_ACCEPTABLE, "client offers no 'no authentication' method")
    ]


@pytest.mark.parametrize(("command", "name"), [(2, "BIND"), (3, "UDP ASSOCIATE"), (9, "unknown")])
def test_commands_other_than_connect_are_not_supported(command: int, name: str) -> None:
    events = feed(GREETING, ipv4("127.0.0.1", 80, command))
    assert events[-1] == Refusal(
        failure(Reply.COMMAND_NOT_SUPPORTED), f"command {command} not supported"
    ), name


@pytest.mark.parametrize("atyp", [0, 2, 5, 255])
def test_unknown_address_type(atyp: int) -> None:
    events = feed(GREETING, bytes((5, 1, 0, atyp)) + bytes(6))
    assert events[-1] == Refusal(
        failure(Reply.ADDRESS_TYPE_NOT_SUPPORTED), f"address type {atyp} not supported"
    )


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (b"caf\xc3\xa9.example", "non-ASCII host name"),
        (b"", "bad host name ''"),
        (b"a b", "bad host name 'a b'"),
        (b"a/b", "bad host name 'a/b'"),
        (b"a\\b", "bad host name 'a\\\\b'"),
        (b"user@host", "bad host name 'user@host'"),
        (b"nul\x00", "bad host name 'nul\\x00'"),
        (b"tab\t", "bad host name 'tab\\t'"),
        (b"[::1]", "bad host name '[::1]'"),
        (b"a:b", "invalid IPv6 literal 'a:b'"),
    ],
)
def test_bad_host_names_are_host_unreachable(name: bytes, reason: str) -> None:
    events = feed(GREETING, domain(name, 80))
    assert events[-1] == Refusal(failure(Reply.HOST_UNREACHABLE), reason)


@pytest.mark.parametrize(
    ("name", "meaning"),
    [
        (b"127.0.011", "127.0.0.9"),
        (b"127.1", "127.0.0.1"),
        (b"0x7f.1", "127.0.0.1"),
        (b"2130706433", "127.0.0.1"),
        (b"010.0.0.1", "8.0.0.1"),
    ],
)
def test_numeric_shorthand_names_are_not_allowed(name: bytes, meaning: str) -> None:
    """The resolver would dial ``meaning`` while an ACL judged the text: reply 2, a denial."""
    (event,) = feed(GREETING, domain(name, 80))[1:]
    assert isinstance(event, Refusal)
    assert event.reply == failure(Reply.NOT_ALLOWED)
    assert event.denied
    assert event.reason.startswith(f"CONNECT {name.decode()}:80 refused: ambiguous numeric host")
    assert f"reads it as {meaning};" in event.reason


@pytest.mark.parametrize(
    ("name", "host", "target"),
    [
        (b"0:0:0:0:0:0:0:1", "::1", "[::1]:80"),
        (b"2001:DB8::0:1", "2001:db8::1", "[2001:db8::1]:80"),
        (b"::ffff:7f00:1", "::ffff:127.0.0.1", "[::ffff:127.0.0.1]:80"),
        (b"10.0.0.1", "10.0.0.1", "10.0.0.1:80"),
    ],
)
def test_numeric_names_come_in_their_canonical_spelling(
    name: bytes, host: str, target: str
) -> None:
    assert feed(GREETING, domain(name, 80))[1:] == [ConnectRequested(host, 80, target, b"")]


@pytest.mark.parametrize("size", [MAX_HANDSHAKE + 1, 64 * 1024])
def test_oversized_segment_is_cut_off_without_a_reply(size: int) -> None:
    """No greeting (<= 257 bytes) or request (<= 262) is that long: not SOCKS, not parsed."""
    server = SocksServer()
    data = GREETING + ipv4("127.0.0.1", 1)
    assert server.receive_data(data + b"x" * (size - len(data))) == [
        Refusal(b"", "handshake too long")
    ]
    assert server.done
    assert server.receive_data(GREETING) == []


def test_the_bound_counts_unparsed_bytes_only() -> None:
    """After the greeting, the request and what follows it may use the whole bound again."""
    server = SocksServer()
    assert server.receive_data(GREETING) == [MethodsOffered(b"\x00", OK)]
    early = b"x" * (MAX_HANDSHAKE - 10)
    assert server.receive_data(ipv4("127.0.0.1", 1) + early) == [
        ConnectRequested("127.0.0.1", 1, "127.0.0.1:1", early)
    ]
    assert feed(GREETING, ipv4("127.0.0.1", 1) + early + b"y")[-1] == Refusal(
        b"", "handshake too long"
    )


# -- truncation and segmentation ------------------------------------------------------------

HANDSHAKES = [
    GREETING + ipv4("192.0.2.1", 8080),
    GREETING + ipv6("2001:db8::2", 8443),
    b"\x05\x02\x01\x00" + domain(b"gw.example", 443),
    GREETING + ipv4("127.0.0.1", 80, command=2),
    GREETING + domain(b"bad host", 80),
]


@pytest.mark.parametrize("data", HANDSHAKES)
def test_every_truncation_waits_for_more(data: bytes) -> None:
    complete = feed(data)
    for cut in range(len(data)):
        events = feed(data[:cut])
        assert events == complete[: len(events)], cut
        assert not any(isinstance(e, ConnectRequested) for e in events), cut


@pytest.mark.parametrize("data", HANDSHAKES)
def test_every_split_point_gives_the_same_events(data: bytes) -> None:
    complete = feed(data)
    for cut in range(len(data) + 1):
        assert feed(data[:cut], data[cut:]) == complete, cut


@given(data=st.sampled_from(HANDSHAKES), cuts=st.lists(st.integers(0, 40), max_size=8))
def test_segmentation_never_changes_the_outcome(data: bytes, cuts: list[int]) -> None:
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    assert feed(*(data[a:b] for a, b in itertools.pairwise(points))) == feed(data)


def test_early_data_is_what_arrived_with_the_request() -> None:
    request = b"\x05\x02\x01\x00" + domain(b"gw.example", 443)
    for cut in range(len(b"hello") + 1):
        events = feed(request + b"hello"[:cut], b"hello"[cut:])
        assert events[-1] == ConnectRequested("gw.example", 443, "gw.example:443", b"hello"[:cut])


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_and_end_at_most_once(data: bytes) -> None:
    events = feed(data)
    assert sum(isinstance(e, ConnectRequested | Refusal) for e in events) <= 1
    assert all(isinstance(e, MethodsOffered) for e in events[:-1])


# -- replies --------------------------------------------------------------------------------


@pytest.mark.parametrize("code", list(Reply))
def test_failure_replies_carry_a_zero_address(code: Reply) -> None:
    assert encode_reply(code) == bytes((5, int(code), 0, 1)) + bytes(6)


def test_reply_codes_are_rfc1928s() -> None:
    assert [int(code) for code in Reply] == list(range(9))


@pytest.mark.parametrize(
    ("bound", "tail"),
    [
        (("127.0.0.1", 40000), b"\x01\x7f\x00\x00\x01\x9c\x40"),
        (("::1", 1), b"\x04" + bytes(15) + b"\x01\x00\x01"),
        (("fe80::1%eth0", 2), b"\x04\xfe\x80" + bytes(13) + b"\x01\x00\x02"),
    ],
)
def test_success_reply_carries_the_bound_address(bound: tuple[str, int], tail: bytes) -> None:
    assert encode_reply(Reply.SUCCEEDED, bound) == b"\x05\x00\x00" + tail


@pytest.mark.parametrize(
    ("host", "port", "target"),
    [
        ("10.1.2.3", 5, "10.1.2.3:5"),
        ("::1", 22, "[::1]:22"),
        ("name.example", 80, "name.example:80"),
    ],
)
def test_socks_target(host: str, port: int, target: str) -> None:
    assert socks_target(host, port) == target


# -- found by fuzzing (fuzz/wire.py `socks5`; inputs in tests/vectors/fuzz/socks5/) -------


@pytest.mark.parametrize(
    ("name", "address"),
    [(b"127.0.011", "127.0.0.9"), (b"127.1", "127.0.0.1"), (b"2130706433", "127.0.0.1")],
)
def test_numeric_shorthands_are_refused_like_in_remotes(name: bytes, address: str) -> None:
    """The ACL matched ``127.0.011:80`` while the dial went to 127.0.0.9: a policy
    refusal (0x02, see cc/protocol/socks5.py), not an unreachable host."""
    events = feed(GREETING + domain(name, 80))
    assert isinstance(events[-1], Refusal)
    assert events[-1].reply == failure(Reply.NOT_ALLOWED)
    assert f"reads it as {address}" in events[-1].reason


@pytest.mark.parametrize(
    ("name", "host", "target"),
    [(b"0:0::1", "::1", "[::1]:80"), (b"2001:DB8::1", "2001:db8::1", "[2001:db8::1]:80")],
)
def test_ipv6_names_are_made_canonical(name: bytes, host: str, target: str) -> None:
    events = feed(GREETING + domain(name, 80))
    assert events[-1] == ConnectRequested(host, 80, target, b"")


def test_bracketed_names_are_refused() -> None:
    events = feed(GREETING + domain(b"[::1]", 80))
    assert events[-1] == Refusal(failure(Reply.HOST_UNREACHABLE), "bad host name '[::1]'")


def test_an_ipv4_mapped_ipv6_address_is_written_as_everywhere_else() -> None:
    """ATYP 4 with ::ffff:255.255.255.255: the host is canonical_host's spelling (the
    ACL sees what remotes and channel targets write), not Python 3.11's ::ffff:ffff:ffff.
    Found by the socks5 fuzz target."""
    address = bytes(10) + b"\xff\xff" + b"\xff\xff\xff\xff"
    events = feed(GREETING + b"\x05\x01\x00\x04" + address + b"\x00\x50")
    assert isinstance(events[-1], ConnectRequested)
    assert events[-1].host == "::ffff:255.255.255.255"
    assert events[-1].target == "[::ffff:255.255.255.255]:80"
