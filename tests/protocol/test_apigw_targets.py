"""targets.yaml: socket-gateway's format, validated with the line and key of every error."""

from __future__ import annotations

import pytest

from cc.protocol.apigw.targets import host_of, parse_targets
from cc.protocol.errors import TargetsError

__all__: list[str] = []

FULL = b"""
targets:
  API.Example.com:
    protocol: http
    hostname: backend.internal
    port: 8080
    policy:
      /health: [GET]
      ^/v1/: [GET, POST]
      "*": "*"
    identifier: [dc1, dc2]
  secure.example.com:
    hostname: 10.0.0.5
    ca: ca.pem
  plain.example.com:
    hostname: "[::1]"
    identifier: one
"""


def test_full_file() -> None:
    table = parse_targets(FULL)
    assert len(table) == 3
    api = table.lookup("api.example.com")
    assert api is not None
    assert (api.protocol, api.hostname, api.port) == ("http", "backend.internal", 8080)
    assert api.authority == "backend.internal:8080"
    assert api.identifiers == frozenset({"dc1", "dc2"})
    assert api.policy.rules is not None and [r.key for r in api.policy.rules] == [
        "/health",
        "^/v1/",
        "*",
    ]
    secure = table.lookup("secure.example.com")
    assert secure is not None
    assert (secure.protocol, secure.port, secure.ca, secure.tls) == ("https", 443, "ca.pem", True)
    assert secure.authority == "10.0.0.5" and secure.sni is None
    plain = table.lookup("plain.example.com")
    assert plain is not None and plain.address == "[::1]:443"
    assert plain.identifiers == frozenset({"one"})


def test_defaults() -> None:
    target = parse_targets(b"targets:\n  a:\n    hostname: b\n").lookup("a")
    assert target is not None
    assert (target.protocol, target.port, target.policy.rules, target.identifiers) == (
        "https",
        443,
        None,
        None,
    )
    assert target.sni == "b" and not target.insecure
    http = parse_targets(b"targets:\n  a:\n    hostname: b\n    protocol: http\n").lookup("a")
    assert http is not None and http.port == 80 and http.authority == "b"


def test_empty_targets() -> None:
    assert len(parse_targets(b"targets:\n")) == 0
    assert len(parse_targets(b"targets: {}\n")) == 0


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (b"", None, "empty"),
        (b"targets: [\n", None, "YAML"),
        (b"other: 1\n", 1, "unknown key 'other'"),
        (b"targets:\n  a:\n    hostname: b\n    prot: http\n", 4, "unknown key 'prot'"),
        (b"targets:\n  a:\n    port: 80\n", 2, "hostname is required"),
        (b"targets:\n  a:\n    hostname: b\n    port: 0o17\n", 4, "port"),
        (b"targets:\n  a:\n    hostname: b\n    port: 70000\n", 4, "port"),
        (b"targets:\n  a:\n    hostname: b\n    protocol: ftp\n", 4, "protocol"),
        (b"targets:\n  a:\n    hostname: b\n    protocol: on\n", 4, "protocol"),
        (b"targets:\n  a:\n    hostname: b\n  A:\n    hostname: c\n", 4, "repeats"),
        (b"targets:\n  a:\n    hostname: b\n  a:\n    hostname: c\n", 4, "twice"),
        (b"targets:\n  a:8080:\n    hostname: b\n", 2, "without a port"),
        (b"targets:\n  a:\n    hostname: b c\n", 3, "hostname"),
        (b"targets:\n  a:\n    hostname: 127.1\n", 3, "ambiguous"),
        (b"targets:\n  a:\n    hostname: b\n    policy:\n      /x: GET\n", 5, "'/x'"),
        (b"targets:\n  a:\n    hostname: b\n    policy:\n      x: [GET]\n", 5, "'x'"),
        (b"targets:\n  a:\n    hostname: b\n    policy:\n      ^(: [GET]\n", 5, "regular"),
        (b"targets:\n  a:\n    hostname: b\n    policy:\n      /x: [get it]\n", 5, "method"),
        (b"targets:\n  a:\n    hostname: b\n    policy: all\n", 4, "policy"),
        (b"targets:\n  a:\n    hostname: b\n    identifier: []\n", 4, "identifier"),
        (b"targets:\n  a:\n    hostname: b\n    insecure: 1\n", 4, "insecure"),
        (b"targets:\n  a:\n    hostname: b\n    protocol: http\n    ca: x\n", 2, "https"),
    ],
)
def test_errors_name_line_and_key(text: bytes, line: int | None, words: str) -> None:
    with pytest.raises(TargetsError) as info:
        parse_targets(text)
    message = str(info.value)
    assert words in message
    if line is not None:
        assert message.startswith(f"line {line}:"), message


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("api.example.com", "api.example.com"),
        ("API.Example.COM:8080", "api.example.com"),
        ("api.example.com.", "api.example.com"),
        ("[::1]:80", "[::1]"),
        ("127.0.0.1:3000", "127.0.0.1"),
        ("a:b", None),
        ("a b", None),
        ("[::1", None),
        ("[::1]x", None),
        ("", None),
        # ports: ASCII digits for 0-65535 only (latin-1 decoding makes \xb2 a "digit")
        ("api.example.com:65535", "api.example.com"),
        ("api.example.com:65536", None),
        ("api.example.com:99999", None),
        ("api.example.com:0000080", None),
        ("api.example.com:\xb2", None),
        ("api.example.com:\u0663", None),
        ("[::1]:70000", None),
        ("[::1]:\xb2", None),
    ],
)
def test_host_of(header: str, host: str | None) -> None:
    assert host_of(header) == host


def test_lookup_by_host_without_port_any_case() -> None:
    table = parse_targets(FULL)
    host = host_of("API.EXAMPLE.COM:3000")
    assert host is not None and table.lookup(host) is table.lookup("api.example.com")
    assert table.lookup("example.com") is None


def test_serves() -> None:
    target = parse_targets(FULL).lookup("api.example.com")
    assert target is not None
    assert target.serves(frozenset({"dc2", "x"}))
    assert not target.serves(frozenset({"x"}))
    assert not target.serves(frozenset())
    anyone = parse_targets(FULL).lookup("secure.example.com")
    assert anyone is not None and anyone.serves(frozenset())


def test_derived_fields_are_computed_once_and_keyed_by_tls_settings() -> None:
    table = parse_targets(
        b"""
targets:
  a.test: {protocol: https, hostname: api.internal, port: 443}
  b.test: {protocol: https, hostname: api.internal, port: 443, insecure: true}
  c.test: {protocol: http, hostname: "[::1]", port: 8080}
  d.test: {protocol: https, hostname: 10.0.0.5, port: 8443}
"""
    )
    a, b, c, d = (table.lookup(f"{x}.test") for x in "abcd")
    assert a is not None and b is not None and c is not None and d is not None
    assert (a.address, a.authority, a.sni) == ("api.internal:443", "api.internal", "api.internal")
    assert (c.address, c.authority, c.sni) == ("[::1]:8080", "[::1]:8080", None)
    assert (d.address, d.authority, d.sni) == ("10.0.0.5:8443", "10.0.0.5:8443", None)
    # one kept connection must never serve a target with other TLS settings
    assert a.address == b.address and a.connection_key != b.connection_key
    assert a == a and a != b
