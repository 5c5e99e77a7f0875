"""Headers across the gateway: hop-by-hop dropped, the client described, names made public."""

from __future__ import annotations

from cc.protocol.apigw.forwarding import (
    ClientInfo,
    TrustedProxies,
    request_headers,
    response_headers,
)
from cc.protocol.apigw.targets import parse_targets
from cc.protocol.http import Headers

__all__: list[str] = []

_FOUND = parse_targets(
    b"targets:\n  api.example.com:\n    protocol: http\n    hostname: backend.lan\n    port: 8080\n"
).lookup("api.example.com")
assert _FOUND is not None
TARGET = _FOUND

TRUSTED = TrustedProxies.parse("10.0.0.0/8, 192.168.1.1")


def _request(
    fields: list[tuple[str, str]],
    peer: str = "203.0.113.9",
    *,
    upgrade: str | None = None,
    chunked: bool = False,
) -> dict[str, str]:
    client = ClientInfo(peer, 3000, trusted=peer in TRUSTED)
    out = request_headers(
        Headers(tuple(fields)),
        TARGET,
        client,
        "api.example.com:3000",
        TRUSTED,
        upgrade=upgrade,
        chunked=chunked,
    )
    assert out[0] == ("Host", "backend.lan:8080")
    names = [n.lower() for n, _ in out]
    assert len(names) == len(set(names)), out
    return {n.lower(): v for n, v in out}


def test_hop_by_hop_and_connection_named_are_dropped() -> None:
    got = _request(
        [
            ("Host", "api.example.com:3000"),
            ("Connection", "keep-alive, X-Secret, Content-Length"),
            ("Keep-Alive", "timeout=5"),
            ("X-Secret", "s"),
            ("TE", "trailers"),
            ("Proxy-Authorization", "Basic x"),
            ("Upgrade", "websocket"),
            ("Content-Length", "3"),
            ("Accept", "*/*"),
        ]
    )
    assert "x-secret" not in got and "keep-alive" not in got and "te" not in got
    assert "proxy-authorization" not in got and "upgrade" not in got and "connection" not in got
    assert got["content-length"] == "3"  # never dropped by a Connection token
    assert got["accept"] == "*/*"


def test_forwarded_fields_from_an_untrusted_client_are_replaced() -> None:
    got = _request(
        [
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Real-IP", "1.2.3.4"),
            ("X-Forwarded-Proto", "https"),
            ("Forwarded", "for=1.2.3.4"),
        ]
    )
    assert got["x-forwarded-for"] == "203.0.113.9"
    assert got["x-real-ip"] == "203.0.113.9"
    assert got["x-forwarded-proto"] == "http"
    assert got["x-forwarded-host"] == "api.example.com:3000"
    assert got["x-forwarded-port"] == "3000"
    assert "forwarded" not in got


def test_a_trusted_proxy_is_appended_to() -> None:
    got = _request(
        [
            ("X-Forwarded-For", "198.51.100.7, 10.1.1.1"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Port", "443"),
            ("X-Forwarded-Host", "public.example.com"),
        ],
        peer="10.2.2.2",
    )
    assert got["x-forwarded-for"] == "198.51.100.7, 10.1.1.1, 10.2.2.2"
    assert got["x-real-ip"] == "198.51.100.7"
    assert got["x-forwarded-proto"] == "https"
    assert got["x-forwarded-port"] == "443"
    assert got["x-forwarded-host"] == "public.example.com"


def test_upgrade_and_chunked() -> None:
    got = _request([("Transfer-Encoding", "chunked")], chunked=True, upgrade="websocket")
    assert got["transfer-encoding"] == "chunked"
    assert got["connection"] == "upgrade" and got["upgrade"] == "websocket"


def test_trusted_proxies_parse() -> None:
    proxies = TrustedProxies.parse("127.0.0.1,::1,10.0.0.0/8")
    assert "127.0.0.1" in proxies and "::1" in proxies and "10.9.9.9" in proxies
    assert "::ffff:10.1.2.3" in proxies
    assert "11.0.0.1" not in proxies and "junk" not in proxies
    assert "127.0.0.1" not in TrustedProxies()


def _response(
    fields: list[tuple[str, str]], public_host: str = "api.example.com:3000"
) -> list[tuple[str, str]]:
    return response_headers(
        Headers(tuple(fields)),
        TARGET,
        "http",
        public_host,
        public_host.partition(":")[0],
    )


def test_location_and_content_location_are_made_public() -> None:
    got = dict(
        _response(
            [
                ("Location", "http://backend.lan:8080/login?next=/x"),
                ("Content-Location", "http://BACKEND.lan:8080"),
                ("Link", "<http://backend.lan:8080/a>"),
                ("Connection", "close, X-Hop"),
                ("X-Hop", "1"),
                ("Keep-Alive", "timeout=5"),
            ]
        )
    )
    assert got["Location"] == "http://api.example.com:3000/login?next=/x"
    assert got["Content-Location"] == "http://api.example.com:3000"
    assert got["Link"] == "<http://backend.lan:8080/a>"  # only Location-like fields
    assert "X-Hop" not in got and "Keep-Alive" not in got and "Connection" not in got


def test_other_locations_are_left_alone() -> None:
    for value in ("/relative", "http://elsewhere:8080/", "http://backend.lan/", "mailto:x"):
        assert dict(_response([("Location", value)]))["Location"] == value


def test_set_cookie_domain() -> None:
    got = [
        v
        for n, v in _response(
            [
                ("Set-Cookie", "a=1; Domain=.backend.lan; Path=/"),
                ("Set-Cookie", "b=2; domain=other.lan"),
                ("Set-Cookie", "c=3; Path=/"),
            ]
        )
    ]
    assert got == ["a=1; Domain=api.example.com; Path=/", "b=2; domain=other.lan", "c=3; Path=/"]
    on_ip = [
        v
        for n, v in _response([("Set-Cookie", "a=1; Domain=backend.lan; Path=/")], "127.0.0.1:3000")
    ]
    assert on_ip == ["a=1; Path=/"]
