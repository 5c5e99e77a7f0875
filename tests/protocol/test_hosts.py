"""One spelling per address: IPv4 shorthands refused, IPv6 made canonical, names untouched."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cc.protocol.hosts import HostError, canonical_host, inet_aton_value

__all__: list[str] = []


def _libc_value(text: str) -> int | None:
    try:
        packed = socket.inet_aton(text)
    except (OSError, ValueError):
        return None
    return int.from_bytes(packed, "big")


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.011", "127.0.0.9"),
        ("127.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.0.0.01", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("10.0.0x1", "10.0.0.1"),
        ("0", "0.0.0.0"),
    ],
)
def test_shorthands_are_refused_naming_the_real_address(text: str, address: str) -> None:
    assert inet_aton_value(text) == int(ipaddress.IPv4Address(address))
    with pytest.raises(HostError, match=rf"reads it as {address}\b"):
        canonical_host(text)


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1",
        "10.0.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "localhost",
        "example.com",
        "deadbeef",
        "1e100.net",
        "127.0.0.1x",
        "a-b.c_d",
        "xn--bcher-kva.example",
    ],
)
def test_canonical_quads_and_names_pass_unchanged(text: str) -> None:
    assert canonical_host(text) == text


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("[0:0:0:0:0:0:0:1]", "[::1]"),
        ("[0::1]", "[::1]"),
        ("[::1]", "[::1]"),
        ("[2001:DB8::0:1]", "[2001:db8::1]"),
        ("2001:db8:0:0:0:0:0:1", "2001:db8::1"),
        ("[fe80::1%eth0]", "[fe80::1%eth0]"),
    ],
)
def test_ipv6_is_rewritten_to_rfc5952(text: str, canonical: str) -> None:
    assert canonical_host(text) == canonical


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("[::ffff:127.0.0.1]", "[::ffff:127.0.0.1]"),
        ("[::ffff:7f00:1]", "[::ffff:127.0.0.1]"),
        ("[0:0:0:0:0:FFFF:0A00:0001]", "[::ffff:10.0.0.1]"),
        ("::ffff:7f00:9", "::ffff:127.0.0.9"),
    ],
)
def test_ipv4_mapped_ipv6_is_dotted_on_every_python(text: str, canonical: str) -> None:
    """RFC 5952 section 5; Python 3.11's ipaddress writes ``::ffff:7f00:1``, 3.13 the
    dotted form, and an ACL must not change meaning with the interpreter."""
    assert canonical_host(text) == canonical


@pytest.mark.parametrize("text", ["[::g]", "[1:2:3:4:5:6:7:8:9]", "::1::2"])
def test_invalid_ipv6_is_refused(text: str) -> None:
    with pytest.raises(HostError, match="invalid IPv6"):
        canonical_host(text)


@given(st.text(alphabet="0123456789abcdefxX.", max_size=24))
def test_inet_aton_value_agrees_with_libc(text: str) -> None:
    if text and text[0].isdigit():
        assert inet_aton_value(text) == _libc_value(text)
    else:  # glibc takes a leading '.' or letter as "no number"; so do we
        assert inet_aton_value(text) is None
        assert _libc_value(text) is None or not text


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_every_canonical_quad_is_accepted(value: int) -> None:
    text = str(ipaddress.IPv4Address(value))
    assert canonical_host(text) == text


@given(st.ip_addresses(v=6))
def test_every_ipv6_canonical_form_is_a_fixed_point(address: ipaddress.IPv6Address) -> None:
    once = canonical_host(f"[{address.exploded}]")
    if address.ipv4_mapped is None:
        assert once == f"[{address.compressed}]"
    else:
        assert once == f"[::ffff:{address.ipv4_mapped}]"
    assert ipaddress.IPv6Address(once[1:-1]) == address
    assert canonical_host(once) == once


# -- found by fuzzing (fuzz/text.py `hosts`; inputs in tests/vectors/fuzz/hosts/) --------


@pytest.mark.parametrize(
    ("text", "dialled"),
    [
        ("12\x00\x00", "0.0.0.12"),
        ("10.0.0.5\x00.example.com", "10.0.0.5"),
        ("\uff11\uff12\uff17.\uff10.\uff10.\uff11", "127.0.0.1"),  # fullwidth digits
        ("127\u30020\u30020\u30021", "127.0.0.1"),  # ideographic full stops
        ("\uff11\uff12\uff17.\uff10.\uff10\uff11\uff11", "127.0.0.9"),  # and octal
        ("\uff1a\uff1a\uff11", "::1"),  # fullwidth colons
    ],
)
def test_what_the_resolver_reads_differently_is_refused(text: str, dialled: str) -> None:
    """The ACL sees the text; without the refusal the dial went to ``dialled``."""
    found = socket.getaddrinfo(text, None, flags=socket.AI_NUMERICHOST)
    assert ipaddress.ip_address(found[0][4][0]) == ipaddress.ip_address(dialled)
    with pytest.raises(HostError):
        canonical_host(text)


@pytest.mark.parametrize(
    "text", ["", "a b", "a\tb", "host\n", "a\x7fb", "a..b", "x" * 64 + ".example"]
)
def test_hosts_no_loop_can_dial_are_refused(text: str) -> None:
    with pytest.raises(HostError):
        canonical_host(text)


@pytest.mark.parametrize("text", ["b\u00fccher.example", "\u4f8b\u3048.jp", "example.com."])
def test_international_names_still_pass(text: str) -> None:
    assert canonical_host(text) == text
