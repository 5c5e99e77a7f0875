"""The connector's ``proxy=`` through real proxies: tinyproxy, squid, microsocks, dante.

Each proxy is the Debian package's program, started once per module by
``tests.support.peers`` (with and without credentials).  Each test runs an in-process
gateway and connector (``tests.support.harness``) and sends bytes through a reverse
remote to a local echo service.

Proof that the proxy really carried the connection, not just that data flowed:
the gateway's ``handle_request`` is wrapped to note, for every HTTP request it
gets (the WebSocket upgrade, the pre-flight GET), which process owns the client
end of that TCP connection (psutil, while the connection is open).  Through a
proxy that is the proxy (or one of its children); directly, it is this test
process — the control test checks that the measurement tells the two apart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest
from python_socks import ProxyType

from cc.cli import client as client_cli
from cc.connector.connector import Connector
from cc.gateway.gateway import Gateway
from cc.transport.dial import TLSOptions
from cc.transport.proxy import ProxyURLError, parse_proxy_url
from tests.support import peers
from tests.support.harness import Harness
from tests.support.net import free_port
from tests.support.streams import assert_echoes, echo_handler
from tests.support.tls import Pki

__all__: list[str] = []

pytestmark = pytest.mark.interop

#: dante checks a system account: one per test process, so two suites running at
#: once (CI and a developer's run) never delete or re-password each other's.
USER = f"ccproxy{os.getpid()}"
PASSWORD = "Pr0xySecret7q"
WRONG_PASSWORD = "Wr0ngSecret9z"

ProxyFactory = Callable[..., AbstractContextManager[peers.ProxyPeer]]
FACTORIES: dict[str, ProxyFactory] = {
    "tinyproxy": peers.tinyproxy,
    "squid": peers.squid,
    "microsocks": peers.microsocks,
    "dante": peers.dante,
}


# -- the proxies, started once per module ---------------------------------------------


class ProxyPool:
    """Starts each (proxy, auth) pair on first use; stops them all, in parallel, at the end.

    squid and danted each take about two seconds to stop, so stopping them one after
    the other would cost more than all the tests that use them.
    """

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.managers: list[AbstractContextManager[peers.ProxyPeer]] = []
        self.running: dict[tuple[str, bool], peers.ProxyPeer] = {}

    def get(self, name: str, *, auth: bool) -> peers.ProxyPeer:
        key = (name, auth)
        if key not in self.running:
            tmp = self.tmp_path_factory.mktemp(f"{name}-{'auth' if auth else 'open'}")
            credentials: dict[str, Any] = {"user": USER, "password": PASSWORD} if auth else {}
            manager = FACTORIES[name](tmp, **credentials)
            self.running[key] = manager.__enter__()
            self.managers.append(manager)
        return self.running[key]

    def close(self) -> None:
        with ThreadPoolExecutor(max_workers=max(1, len(self.managers))) as pool:
            stops = [pool.submit(m.__exit__, None, None, None) for m in self.managers]
        for stop in stops:
            stop.result()  # re-raise a failed stop


@pytest.fixture(scope="module")
def proxies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyPool]:
    pool = ProxyPool(tmp_path_factory)
    try:
        yield pool
    finally:
        pool.close()


def proxy_url(proxy: peers.ProxyPeer, scheme: str, password: str | None = None) -> str:
    auth = f"{proxy.user}:{password or proxy.password}@" if proxy.user is not None else ""
    return f"{scheme}://{auth}{proxy.host}:{proxy.port}"


# -- who opened the gateway's connections ---------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (danted and squid work in child processes)."""
    try:
        return [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]
    except psutil.Error:
        return [pid]


def socket_owner(peer: str, gateway_port: int, candidates: list[int]) -> int | None:
    """Which of ``candidates`` owns the TCP socket ``peer`` (``ip:port``) to the gateway."""
    host, _, port = peer.rpartition(":")
    for pid in candidates:
        try:
            conns = psutil.Process(pid).net_connections(kind="tcp4")
        except psutil.Error:
            continue
        for conn in conns:
            if (
                conn.laddr
                and conn.raddr
                and (conn.laddr.ip, conn.laddr.port) == (host, int(port))
                and conn.raddr.port == gateway_port
            ):
                return pid
    return None


@dataclass(frozen=True)
class Seen:
    request: str  # "GET /path (upgrade)" or "GET /path"
    owner: str  # "proxy", "connector" (this process) or "unknown"


class Witness:
    """Notes every HTTP request the gateway handles and who owns its client socket.

    The lookup runs while the request is being handled, so the connection is open.
    """

    def __init__(self, gateway: Gateway, proxy: peers.ProxyPeer | None = None) -> None:
        self.seen: list[Seen] = []
        port = gateway.ports[0]
        original = gateway.handle_request

        def spy(conn: Any, request: Any, rest: bytes) -> None:
            kind = " (upgrade)" if request.is_websocket_upgrade() else ""
            proxy_pids = process_tree(proxy.process.pid) if proxy is not None else []
            owner = socket_owner(conn.peer, port, [os.getpid(), *proxy_pids])
            who = "connector" if owner == os.getpid() else "proxy" if owner else "unknown"
            self.seen.append(Seen(f"{request.method} {request.path}{kind}", who))
            original(conn, request, rest)

        gateway.handle_request = spy  # type: ignore[method-assign]

    def assert_all_via_proxy(self, requests: list[str]) -> None:
        assert [s.request for s in self.seen] == requests
        assert [s.owner for s in self.seen] == ["proxy"] * len(requests), self.seen


# -- helpers ---------------------------------------------------------------------------


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record of every logger, debug included: where a leaked secret would show."""
    caplog.set_level(logging.DEBUG)
    return caplog


def assert_no_secret(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    for record in caplog.records:
        text = record.getMessage() + (str(record.exc_info) if record.exc_info else "")
        for secret in secrets:
            assert secret not in text, f"secret in log record {record.name}: {text!r}"
    for secret in secrets:
        assert secret not in caplog.text


async def tunnel_via(
    harness: Harness, proxy: peers.ProxyPeer | None, url: str | None, **kw: Any
) -> Witness:
    """Gateway, connector through ``url``, bytes through a reverse remote; what it saw."""
    gateway = await harness.gateway(**kw.pop("gateway", {}))
    service = await harness.service(echo_handler)
    exposed = free_port()
    witness = Witness(gateway, proxy)
    await harness.connect(gateway, [f"R:127.0.0.1:{exposed}:127.0.0.1:{service}"], proxy=url, **kw)
    await assert_echoes(exposed)
    return witness


@dataclass(frozen=True)
class Case:
    proxy: str
    auth: bool
    scheme: str

    def __str__(self) -> str:
        return f"{self.proxy}-{'auth' if self.auth else 'open'}-{self.scheme}"


CASES = [
    Case("tinyproxy", False, "http"),
    Case("tinyproxy", True, "http"),
    Case("squid", False, "http"),
    Case("squid", True, "http"),
    *(
        Case("microsocks", auth, s)
        for auth in (False, True)
        for s in ("socks5", "socks5h", "socks")
    ),
    Case("dante", False, "socks5"),
    Case("dante", True, "socks5"),  # as root only: dante checks a system account
]

AUTH_PROXIES = [
    ("tinyproxy", "http"),
    ("squid", "http"),
    ("microsocks", "socks5"),
    ("dante", "socks5"),
]
#: What each proxy answers to a wrong password (tinyproxy says 401, not 407).
WRONG_PASSWORD_REASON = {
    "tinyproxy": "401 Unauthorized",
    "squid": "407 Proxy Authentication Required",
    "microsocks": "Username and password authentication failure",
    "dante": "Username and password authentication failure",
}


# -- proxy URLs: checked before anything is dialled ---------------------------------------


@pytest.mark.parametrize(
    ("url", "kind", "port", "rdns"),
    [
        ("http://127.0.0.1:3128", ProxyType.HTTP, 3128, True),
        ("https://127.0.0.1", ProxyType.HTTP, 8080, True),
        ("socks://127.0.0.1", ProxyType.SOCKS5, 1080, True),
        ("socks5h://127.0.0.1:9", ProxyType.SOCKS5, 9, True),
        ("socks5://127.0.0.1:9", ProxyType.SOCKS5, 9, False),
    ],
)
def test_proxy_url_schemes(url: str, kind: ProxyType, port: int, rdns: bool) -> None:
    """socks5:// resolves locally; socks5h:// and chisel's socks:// let the proxy resolve."""
    assert parse_proxy_url(url) == (kind, "127.0.0.1", port, None, None, rdns)


def test_proxy_url_credentials_are_unquoted() -> None:
    assert parse_proxy_url("http://us%40er:p%3Ass@127.0.0.1:1")[3:5] == ("us@er", "p:ss")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"ftp://{USER}:{PASSWORD}@127.0.0.1:21", "unsupported proxy scheme 'ftp'"),
        (f"socks4://{USER}:{PASSWORD}@127.0.0.1:1080", "unsupported proxy scheme 'socks4'"),
        ("127.0.0.1:3128", "unsupported proxy scheme"),
        (f"http://{USER}:{PASSWORD}@:3128", "no host in proxy URL"),
        (f"http://{USER}:{PASSWORD}@127.0.0.1:99999", "bad port in proxy URL"),
    ],
)
def test_unusable_proxy_url_is_a_clear_error(url: str, message: str) -> None:
    with pytest.raises(ProxyURLError) as info:
        parse_proxy_url(url)
    assert isinstance(info.value, ValueError)
    assert message in str(info.value)
    assert PASSWORD not in str(info.value)


def test_cli_rejects_unsupported_proxy_scheme(capsys: pytest.CaptureFixture[str]) -> None:
    """``client --proxy ftp://...`` stops at config time: usage exit 2, one line, no secret."""
    argv = [
        f"--proxy=ftp://{USER}:{PASSWORD}@127.0.0.1:21",
        "--max-retry-count=0",
        f"http://127.0.0.1:{free_port()}",
        f"R:127.0.0.1:{free_port()}:127.0.0.1:9",
    ]
    with pytest.raises(SystemExit) as info:
        client_cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "unsupported proxy scheme 'ftp'" in err
    assert f"{USER}:***@" in err
    assert PASSWORD not in err
    assert "Traceback" not in err


async def test_connector_with_unsupported_proxy_scheme_never_dials(
    harness: Harness, all_logs: pytest.LogCaptureFixture
) -> None:
    """The library path: run() raises ProxyURLError at the first dial, no retries."""
    gateway = await harness.gateway()
    witness = Witness(gateway)
    config = harness.connector_config(
        gateway,
        [f"R:127.0.0.1:{free_port()}:127.0.0.1:9"],
        proxy=f"gopher://{USER}:{PASSWORD}@127.0.0.1:70",
        max_retry_count=5,
    )
    with pytest.raises(ProxyURLError, match="unsupported proxy scheme 'gopher'"):
        async with asyncio.timeout(5):
            await Connector(config).run()
    assert witness.seen == []
    assert "Retrying" not in all_logs.text
    assert_no_secret(all_logs, PASSWORD)


# -- through each real proxy ---------------------------------------------------------------


async def test_witness_tells_a_direct_connection_apart(harness: Harness) -> None:
    """Control: without a proxy the gateway's client socket is this very process."""
    witness = await tunnel_via(harness, None, None)
    assert witness.seen == [Seen("GET / (upgrade)", "connector")]


@pytest.mark.parametrize("case", CASES, ids=str)
async def test_tunnel_through_proxy(
    harness: Harness, proxies: ProxyPool, case: Case, all_logs: pytest.LogCaptureFixture
) -> None:
    proxy = proxies.get(case.proxy, auth=case.auth)
    witness = await tunnel_via(harness, proxy, proxy_url(proxy, case.scheme))
    witness.assert_all_via_proxy(["GET / (upgrade)"])
    assert_no_secret(all_logs, PASSWORD)


@pytest.mark.parametrize(("name", "scheme"), AUTH_PROXIES)
async def test_preflight_goes_through_the_proxy_too(
    harness: Harness, proxies: ProxyPool, name: str, scheme: str
) -> None:
    """outsystemscc's pre-flight GET and the WebSocket both cross the proxy."""
    proxy = proxies.get(name, auth=True)
    witness = await tunnel_via(harness, proxy, proxy_url(proxy, scheme), preflight=True)
    witness.assert_all_via_proxy(["GET /", "GET / (upgrade)"])


async def test_tls_gateway_through_proxy(
    harness: Harness, proxies: ProxyPool, tmp_path: Path
) -> None:
    """https:// through an HTTP CONNECT proxy: TLS end to end, verified against our CA."""
    pki = Pki(tmp_path)
    server = pki.server(pki.issue("gateway.example"))
    proxy = proxies.get("squid", auth=True)
    gateway = await harness.gateway(tls=server.context)
    witness = Witness(gateway, proxy)
    service = await harness.service(echo_handler)
    exposed = free_port()
    await harness.connect(
        gateway,
        [f"R:127.0.0.1:{exposed}:127.0.0.1:{service}"],
        server=urlsplit(f"https://127.0.0.1:{gateway.ports[0]}/"),
        proxy=proxy_url(proxy, "http"),
        tls=TLSOptions(ca=str(pki.ca_pem), sni="gateway.example"),
    )
    await assert_echoes(exposed)
    witness.assert_all_via_proxy(["GET / (upgrade)"])
    assert server.server_names == ["gateway.example"]


# -- failures ----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "scheme"), AUTH_PROXIES)
async def test_wrong_proxy_password(
    harness: Harness,
    proxies: ProxyPool,
    name: str,
    scheme: str,
    all_logs: pytest.LogCaptureFixture,
) -> None:
    """A clear one-line error naming the proxy; no traceback, no password; gives up as told."""
    proxy = proxies.get(name, auth=True)
    gateway = await harness.gateway()
    witness = Witness(gateway, proxy)
    started = time.monotonic()
    error = await harness.expect_fatal(
        gateway,
        [f"R:127.0.0.1:{free_port()}:127.0.0.1:9"],
        proxy=proxy_url(proxy, scheme, WRONG_PASSWORD),
        max_retry_count=0,
    )
    assert time.monotonic() - started < 3.0
    assert "gave up after 0 retries" in str(error)
    lines = [r for r in all_logs.records if r.getMessage().startswith("Connection error:")]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    message = lines[0].getMessage()
    reason = WRONG_PASSWORD_REASON[name]
    assert f"proxy {proxy.host}:{proxy.port} refused: {reason}" in message
    assert lines[0].exc_info is None and "Traceback" not in all_logs.text
    assert witness.seen == [], "the proxy must not have let us through"
    assert_no_secret(all_logs, WRONG_PASSWORD, PASSWORD)


async def test_proxy_down_is_retried(harness: Harness, all_logs: pytest.LogCaptureFixture) -> None:
    """Nothing listening at the proxy's address: a network error, retried, then given up."""
    gateway = await harness.gateway()
    dead = f"http://{USER}:{PASSWORD}@127.0.0.1:{free_port()}"
    error = await harness.expect_fatal(
        gateway, [f"R:127.0.0.1:{free_port()}:127.0.0.1:9"], proxy=dead, max_retry_count=1
    )
    assert "gave up after 1 retries" in str(error)
    lines = [r.getMessage() for r in all_logs.records if "Connection error:" in r.getMessage()]
    assert len(lines) == 2, lines
    assert all("Could not connect to proxy 127.0.0.1:" in line for line in lines), lines
    assert_no_secret(all_logs, PASSWORD)
