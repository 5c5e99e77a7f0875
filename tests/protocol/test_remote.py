"""chisel's remote grammar: every documented form, the error cases, and the JSON form.

Expected values come from chisel v1.11.5 share/settings/remote.go and remote_test.go;
with CHISEL_BIN set, reverse remotes are also fed to the real client to prove it
accepts and refuses the same specs (or differs where we differ on purpose).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cc.protocol.errors import RemoteError
from cc.protocol.remote import (
    Proto,
    Remote,
    check_unique,
    parse_outsystemscc_remote,
    parse_remote,
    validate_host,
)

TCP, UDP = Proto.TCP, Proto.UDP


def R(lh: str, lp: int, rh: str, rp: int, proto: Proto = TCP, **flags: bool) -> Remote:
    return Remote(lh, lp, proto, rh, rp, proto, **flags)


# (spec, expected Remote, chisel Encode(), chisel String(), target, acl subject)
# fmt: off
FORMS: list[tuple[str, Remote, str, str, str, str]] = [
    ("3000", R("0.0.0.0", 3000, "127.0.0.1", 3000),
     "0.0.0.0:3000:127.0.0.1:3000", "3000=>3000", "127.0.0.1:3000", "127.0.0.1:3000"),
    ("example.com:3000", R("0.0.0.0", 3000, "example.com", 3000),
     "0.0.0.0:3000:example.com:3000", "3000=>example.com:3000",
     "example.com:3000", "example.com:3000"),
    ("3000:google.com:80", R("0.0.0.0", 3000, "google.com", 80),
     "0.0.0.0:3000:google.com:80", "3000=>google.com:80", "google.com:80", "google.com:80"),
    ("192.168.0.5:3000:google.com:80", R("192.168.0.5", 3000, "google.com", 80),
     "192.168.0.5:3000:google.com:80", "192.168.0.5:3000=>google.com:80",
     "google.com:80", "google.com:80"),
    ("socks", R("127.0.0.1", 1080, "", 0, socks=True),
     "127.0.0.1:1080:socks", "127.0.0.1:1080=>socks", "socks", "socks"),
    ("5000:socks", R("127.0.0.1", 5000, "", 0, socks=True),
     "127.0.0.1:5000:socks", "127.0.0.1:5000=>socks", "socks", "socks"),
    ("127.0.0.1:1081:socks", R("127.0.0.1", 1081, "", 0, socks=True),
     "127.0.0.1:1081:socks", "127.0.0.1:1081=>socks", "socks", "socks"),
    ("R:2222:localhost:22", R("0.0.0.0", 2222, "localhost", 22, reverse=True),
     "R:0.0.0.0:2222:localhost:22", "R:2222=>localhost:22", "localhost:22", "R:0.0.0.0:2222"),
    ("R:socks", R("127.0.0.1", 1080, "", 0, socks=True, reverse=True),
     "R:127.0.0.1:1080:socks", "R:127.0.0.1:1080=>socks", "socks", "R:127.0.0.1:1080"),
    ("R:5000:socks", R("127.0.0.1", 5000, "", 0, socks=True, reverse=True),
     "R:127.0.0.1:5000:socks", "R:127.0.0.1:5000=>socks", "socks", "R:127.0.0.1:5000"),
    ("stdio:example.com:22", R("0.0.0.0", 22, "example.com", 22, stdio=True),
     "stdio:example.com:22", "stdio=>example.com:22", "example.com:22", "example.com:22"),
    ("1.1.1.1:53/udp", R("0.0.0.0", 53, "1.1.1.1", 53, UDP),
     "0.0.0.0:53:1.1.1.1:53/udp", "53=>1.1.1.1:53/udp", "1.1.1.1:53/udp", "1.1.1.1:53"),
    ("localhost:5353:1.1.1.1:53/udp", R("localhost", 5353, "1.1.1.1", 53, UDP),
     "localhost:5353:1.1.1.1:53/udp", "localhost:5353=>1.1.1.1:53/udp",
     "1.1.1.1:53/udp", "1.1.1.1:53"),
    ("[::1]:3000:[::1]:80", R("[::1]", 3000, "[::1]", 80),
     "[::1]:3000:[::1]:80", "[::1]:3000=>[::1]:80", "[::1]:80", "[::1]:80"),
    ("[::1]:8080:google.com:80", R("[::1]", 8080, "google.com", 80),
     "[::1]:8080:google.com:80", "[::1]:8080=>google.com:80", "google.com:80", "google.com:80"),
    ("R:[::]:3000:[::1]:3000", R("[::]", 3000, "[::1]", 3000, reverse=True),
     "R:[::]:3000:[::1]:3000", "R:[::]:3000=>[::1]:3000", "[::1]:3000", "R:[::]:3000"),
    ("R:google.com:80", R("0.0.0.0", 80, "google.com", 80, reverse=True),
     "R:0.0.0.0:80:google.com:80", "R:80=>google.com:80", "google.com:80", "R:0.0.0.0:80"),
    ("示例網站.com:80", R("0.0.0.0", 80, "示例網站.com", 80),
     "0.0.0.0:80:示例網站.com:80", "80=>示例網站.com:80", "示例網站.com:80", "示例網站.com:80"),
    ("R:8081:192.168.0.3:8393", R("0.0.0.0", 8081, "192.168.0.3", 8393, reverse=True),
     "R:0.0.0.0:8081:192.168.0.3:8393", "R:8081=>192.168.0.3:8393",
     "192.168.0.3:8393", "R:0.0.0.0:8081"),
    ("R:8082:127.0.0.1:587/udp", R("0.0.0.0", 8082, "127.0.0.1", 587, UDP, reverse=True),
     "R:0.0.0.0:8082:127.0.0.1:587/udp", "R:8082=>587/udp", "127.0.0.1:587/udp",
     "R:0.0.0.0:8082"),
    # chisel's back-to-front rule: the first host seen from the end is the REMOTE host.
    ("example.com:3000:80", R("0.0.0.0", 3000, "example.com", 80),
     "0.0.0.0:3000:example.com:80", "3000=>example.com:80", "example.com:80", "example.com:80"),
    ("3000:80", R("0.0.0.0", 3000, "127.0.0.1", 80),
     "0.0.0.0:3000:127.0.0.1:80", "3000=>80", "127.0.0.1:80", "127.0.0.1:80"),
    ("0.0.0.0:example.com:80", R("0.0.0.0", 80, "example.com", 80),
     "0.0.0.0:80:example.com:80", "80=>example.com:80", "example.com:80", "example.com:80"),
    ("example.com:socks", R("example.com", 1080, "", 0, socks=True),
     "example.com:1080:socks", "example.com:1080=>socks", "socks", "socks"),
    ("stdio:socks", R("127.0.0.1", 1080, "", 0, socks=True, stdio=True),
     "stdio:socks", "stdio=>socks", "socks", "socks"),
    ("1.1.1.1:0053/UDP", R("0.0.0.0", 53, "1.1.1.1", 53, UDP),
     "0.0.0.0:53:1.1.1.1:53/udp", "53=>1.1.1.1:53/udp", "1.1.1.1:53/udp", "1.1.1.1:53"),
    ("5353/udp:1.1.1.1:53/udp", R("0.0.0.0", 5353, "1.1.1.1", 53, UDP),
     "0.0.0.0:5353:1.1.1.1:53/udp", "5353=>1.1.1.1:53/udp", "1.1.1.1:53/udp", "1.1.1.1:53"),
    ("65535:localhost:1", R("0.0.0.0", 65535, "localhost", 1),
     "0.0.0.0:65535:localhost:1", "65535=>localhost:1", "localhost:1", "localhost:1"),
]
# fmt: on


@pytest.mark.parametrize(("spec", "expected", "encoded", "string", "target", "subject"), FORMS)
def test_parse_remote_forms_match_chisel(
    spec: str, expected: Remote, encoded: str, string: str, target: str, subject: str
) -> None:
    remote = parse_remote(spec)
    assert remote == expected
    assert remote.encode() == encoded
    assert str(remote) == string
    assert remote.target() == target
    assert remote.acl_subject() == subject
    assert parse_remote(remote.encode()) == remote


def test_local_is_stdio_for_stdio_remotes_and_host_port_otherwise() -> None:
    assert parse_remote("stdio:example.com:22").local() == "stdio"
    assert parse_remote("[::1]:3000:x:80").local() == "[::1]:3000"
    assert parse_remote("socks").remote() == "socks"


# (spec, a fragment the message must contain)
ERRORS: list[tuple[str, str]] = [
    ("", "empty"),
    ("R:", "empty"),
    ("3000::80", "empty field"),
    ("3000:", "empty field"),
    (":3000", "empty field"),
    ("1:2:3:4:5", "too many fields"),
    ("70000:80", "port 70000 out of range"),
    ("0:80", "port 0 out of range"),
    ("99999999999999999999999", "out of range"),
    ("example.com", "missing port"),
    ("3000:example.com", "missing port"),
    ("stdio", "missing port"),
    ("a/b:80", "invalid character '/'"),
    ("user@host:80", "invalid character '@'"),
    ("ho st:80", "invalid character ' '"),
    ("+80", "invalid character '+'"),
    ("[::1", "unclosed '['"),
    ("a]b:80", "unbalanced brackets"),
    ("[a[b]:80", "unbalanced brackets"),
    ("[::1]x:80", "expected ':'"),
    ("[zz]:80:h:80", "invalid IPv6 literal"),
    ("[]:80", "invalid IPv6 literal"),
    ("1:2:3", "too many ports"),
    ("a:b:c:80", "too many hosts"),
    ("h/udp:53/udp", "protocol suffix must follow a port"),
    ("socks/udp", "protocol suffix must follow a port"),
    ("5000/udp:socks", "only TCP SOCKS is supported"),
    ("53/tcp:h:53/udp", "cross-protocol"),
    ("R:stdio:h:22", "stdio cannot be reversed"),
    ("stdio:3000:h:22", "stdio takes no local host or port"),
    ("x" * 2000, "longer than"),
    # found by fuzzing: encode() wrote "R:307:q:81", a reverse remote (tests/vectors/fuzz/)
    ("307:R:q:81", "reads as the reverse prefix"),
    ("5000:R:socks", "reads as the reverse prefix"),
]


@pytest.mark.parametrize(("spec", "fragment"), ERRORS)
def test_parse_remote_rejects_with_clear_message(spec: str, fragment: str) -> None:
    with pytest.raises(RemoteError) as info:
        parse_remote(spec)
    message = str(info.value)
    assert fragment in message
    if len(spec) < 100:
        assert repr(spec) in message  # names the bad input


def test_remote_error_is_a_value_error_for_argparse() -> None:
    with pytest.raises(ValueError, match="invalid remote"):
        parse_remote("nope")


def test_parse_remote_rejects_non_string() -> None:
    with pytest.raises(RemoteError, match="must be a string"):
        parse_remote(3000)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "host", ["localhost", "a-b.c_d~e", "10.0.0.1", "[::1]", "[fe80::1%eth0]", "bücher.de"]
)
def test_validate_host_accepts_names_ips_and_idn(host: str) -> None:
    assert validate_host(host) == host


@pytest.mark.parametrize("host", ["", "a:b", "a b", "a\x00", "[::1", "x" * 300, "a%20"])
def test_validate_host_rejects(host: str) -> None:
    with pytest.raises(RemoteError):
        validate_host(host)


# ---------------------------------------------------------------- construction invariants


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"local_port": 0}, "local port 0 out of range"),
        ({"remote_port": 65536}, "remote port 65536 out of range"),
        ({"local_port": True}, "must be an int"),
        ({"local_proto": "tcp"}, "must be a Proto"),
        ({"local_proto": UDP}, "cross-protocol"),
        ({"reverse": 1}, "must be a bool"),
        ({"stdio": True, "reverse": True}, "stdio cannot be reversed"),
        ({"socks": True}, "no remote host or port"),
        ({"remote_host": ""}, "empty host"),
        ({"local_host": "a b"}, "invalid character"),
    ],
)
def test_remote_validates_at_construction(kwargs: dict[str, Any], fragment: str) -> None:
    fields: dict[str, Any] = {
        "local_host": "0.0.0.0",
        "local_port": 80,
        "local_proto": TCP,
        "remote_host": "h",
        "remote_port": 80,
        "remote_proto": TCP,
    }
    fields.update(kwargs)
    with pytest.raises(RemoteError, match=fragment):
        Remote(**fields)


def test_remote_is_frozen() -> None:
    remote = parse_remote("3000")
    with pytest.raises(AttributeError):
        remote.local_port = 1  # type: ignore[misc]


# ---------------------------------------------------------------- JSON


def test_to_json_uses_chisel_field_names_and_string_ports() -> None:
    assert parse_remote("R:8081:192.168.0.3:8393").to_json() == {
        "LocalHost": "0.0.0.0",
        "LocalPort": "8081",
        "LocalProto": "tcp",
        "RemoteHost": "192.168.0.3",
        "RemotePort": "8393",
        "RemoteProto": "tcp",
        "Socks": False,
        "Reverse": True,
        "Stdio": False,
    }


def test_socks_json_has_empty_remote_fields_like_chisel() -> None:
    obj = parse_remote("R:socks").to_json()
    assert (obj["RemoteHost"], obj["RemotePort"], obj["Socks"]) == ("", "", True)
    assert Remote.from_json(obj) == parse_remote("R:socks")


def test_from_json_ignores_unknown_fields() -> None:
    obj = {**parse_remote("3000").to_json(), "Future": 1}
    assert Remote.from_json(obj) == parse_remote("3000")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"LocalPort": 8081}, "'LocalPort' must be a string"),
        ({"LocalPort": "0"}, "LocalPort 0 out of range"),
        ({"LocalPort": "+81"}, "is not a port"),
        ({"LocalPort": "\uff18\uff10"}, "is not a port"),
        ({"LocalPort": ""}, "is not a port"),
        ({"RemotePort": ""}, "is not a port"),
        ({"RemotePort": "123456"}, "is not a port"),
        ({"LocalProto": "TCP"}, "must be 'tcp' or 'udp'"),
        ({"Socks": "false"}, "'Socks' must be a boolean"),
        ({"Reverse": 1}, "'Reverse' must be a boolean"),
        ({"RemoteHost": "::1"}, "invalid character ':'"),
        ({"RemoteHost": None}, "must be a string"),
        ({"LocalHost": ""}, "empty host"),
    ],
)
def test_from_json_validates_types_and_values(change: dict[str, object], fragment: str) -> None:
    obj = {**parse_remote("R:8081:192.168.0.3:8393").to_json(), **change}
    with pytest.raises(RemoteError, match=fragment):
        Remote.from_json(obj)


@pytest.mark.parametrize("missing", ["LocalHost", "RemotePort", "Stdio"])
def test_from_json_requires_every_field(missing: str) -> None:
    obj = parse_remote("3000").to_json()
    del obj[missing]
    with pytest.raises(RemoteError, match=f"missing field '{missing}'"):
        Remote.from_json(obj)


def test_from_json_rejects_non_object() -> None:
    with pytest.raises(RemoteError, match="must be a JSON object"):
        Remote.from_json(["3000"])


# ---------------------------------------------------------------- uniqueness


def _all(*specs: str) -> list[Remote]:
    return [parse_remote(s) for s in specs]


@pytest.mark.parametrize(
    "specs",
    [
        ("3000", "3000:example.com:80"),
        ("R:8081:a:1", "R:8081:b:2"),
        ("127.0.0.1:3000:a:1", "0.0.0.0:3000:b:2"),
        ("[::]:3000:a:1", "127.0.0.1:3000:b:2"),
        ("1080:x:80", "socks"),
        ("stdio:a:22", "stdio:b:22"),
    ],
)
def test_check_unique_rejects_clashing_listeners(specs: tuple[str, ...]) -> None:
    with pytest.raises(RemoteError, match=r"same local port|only one stdio"):
        check_unique(_all(*specs))


@pytest.mark.parametrize(
    "specs",
    [
        ("3000", "3001"),
        ("R:3000:a:1", "3000:a:1"),  # one listens on the server, one on the client
        ("R:53:a:53", "R:53:a:53/udp"),  # TCP and UDP may share a port number
        ("127.0.0.1:3000:a:1", "127.0.0.2:3000:a:1"),
        ("stdio:a:22", "22"),  # stdio opens no listener
    ],
)
def test_check_unique_accepts_distinct_listeners(specs: tuple[str, ...]) -> None:
    check_unique(_all(*specs))


def test_check_unique_port_only_is_outsystemscc_rule() -> None:
    remotes = _all("R:8081:a:1", "R:8081:a:1/udp")
    check_unique(remotes)
    with pytest.raises(RemoteError, match="same local port 8081"):
        check_unique(remotes, port_only=True)


# ---------------------------------------------------------------- outsystemscc


@pytest.mark.parametrize(
    "spec",
    ["R:8081:192.168.0.3:8393", "R:8082:192.168.0.4:587/udp", "R:127.0.0.1:8081:h:80", "R:3000"],
)
def test_outsystemscc_accepts_reverse_tunnels(spec: str) -> None:
    assert parse_outsystemscc_remote(spec) == parse_remote(spec)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("8081:192.168.0.3:8393", "only reverse remotes"),
        ("stdio:h:22", "only reverse remotes"),
        ("socks", "only reverse remotes"),
        ("R:socks", "does not support socks"),
        ("R:5000:socks", "does not support socks"),
        ("R:0:h:80", "out of range"),
    ],
)
def test_outsystemscc_rejects_other_remotes(spec: str, fragment: str) -> None:
    with pytest.raises(RemoteError, match=fragment):
        parse_outsystemscc_remote(spec)


# ---------------------------------------------------------------- properties

_ports = st.integers(1, 65535)
_names = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z]{2,6})?", fullmatch=True)
_hosts = st.one_of(
    _names.filter(lambda h: not h.isdigit() and h not in ("socks", "stdio")),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)


@st.composite
def _remotes(draw: st.DrawFn) -> Remote:
    proto = draw(st.sampled_from(Proto))
    socks = proto is TCP and draw(st.booleans())
    reverse = draw(st.booleans())
    stdio = not reverse and draw(st.booleans())
    return Remote(
        local_host=draw(_hosts),
        local_port=draw(_ports),
        local_proto=proto,
        remote_host="" if socks else draw(_hosts),
        remote_port=0 if socks else draw(_ports),
        remote_proto=proto,
        socks=socks,
        reverse=reverse,
        stdio=stdio,
    )


@given(st.text(max_size=80))
def test_parse_remote_raises_only_remote_error(text: str) -> None:
    with contextlib.suppress(RemoteError):
        parse_remote(text)


@given(
    st.lists(
        st.sampled_from(
            [
                "R:",
                ":",
                "[",
                "]",
                "::1",
                "80",
                "/udp",
                "/TCP",
                "socks",
                "stdio",
                "h",
                "0",
                "70000",
                "a.b",
            ]
        ),
        max_size=8,
    ).map("".join)
)
def test_parse_remote_raises_only_remote_error_on_grammar_pieces(text: str) -> None:
    try:
        remote = parse_remote(text)
    except RemoteError:
        return
    assert parse_remote(remote.encode()) == remote


@given(_remotes())
def test_json_round_trip(remote: Remote) -> None:
    assert Remote.from_json(remote.to_json()) == remote


@given(_remotes())
def test_encode_round_trip_when_stdio_keeps_defaults(remote: Remote) -> None:
    reparsed = parse_remote(remote.encode())
    if remote.stdio:  # chisel's Encode() drops a stdio remote's local address
        assert (reparsed.remote_host, reparsed.remote_port) == (
            remote.remote_host,
            remote.remote_port,
        )
    else:
        assert reparsed == remote


# ---------------------------------------------------------------- real chisel

CROSS_CHECK = [
    # (spec, chisel accepts, we accept)
    ("R:8081:192.168.0.3:8393", True, True),
    ("R:8082:127.0.0.1:587/udp", True, True),
    ("R:[::]:3000:[::1]:3000", True, True),
    ("R:socks", True, True),
    ("R:a:b:c:d", False, False),
    ("R:stdio:h:22", False, False),
    ("R:5000/udp:socks", False, False),
    # deliberate differences: chisel skips the empty field / dials host "70000"
    ("R:3000::80", True, False),
    ("R:70000:80", True, False),
]


@pytest.mark.interop
@pytest.mark.parametrize(("spec", "chisel_ok", "ours_ok"), CROSS_CHECK)
def test_real_chisel_client_agrees_on_reverse_remotes(
    spec: str, chisel_ok: bool, ours_ok: bool
) -> None:
    chisel = os.environ.get("CHISEL_BIN")
    if not chisel:
        pytest.skip("CHISEL_BIN is not set")
    # Reverse remotes make the client open no listener; port 1 refuses at once.
    proc = subprocess.run(
        [chisel, "client", "--max-retry-count", "0", "http://127.0.0.1:1", spec],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (proc.returncode == 0) is chisel_ok, proc.stderr
    if not chisel_ok:
        assert "Failed to decode remote" in proc.stderr
    try:
        parse_remote(spec)
        assert ours_ok
    except RemoteError:
        assert not ours_ok
