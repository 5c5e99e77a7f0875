"""Prove each real peer in tests/support/peers.py starts and behaves as later interop tests assume.

If a fixture silently started a misconfigured proxy (auth off, CONNECT port-restricted,
sshd refusing our key), interop tests of our client would fail for the wrong reason;
these tests pin the peers down first, using only raw sockets, python-socks and ssh.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from python_socks import ProxyError
from python_socks.sync import Proxy

from tests.support import peers
from tests.support.net import (
    EchoServer,
    PeerStartError,
    free_port,
    http_echo_server,
    read_exactly,
    wait_for_port,
)

pytestmark = pytest.mark.interop

IO_TIMEOUT = 10.0

ProxyFactory = Callable[..., AbstractContextManager[peers.ProxyPeer]]


def _assert_echoes(sock: socket.socket, payload: bytes = b"hello through the peer\n") -> None:
    sock.sendall(payload)
    assert read_exactly(sock, len(payload)) == payload


def _http_connect(
    proxy: peers.ProxyPeer,
    target: EchoServer,
    auth: tuple[str, str] | None = None,
) -> tuple[int, bytes, socket.socket]:
    """Send a raw CONNECT and return (status, response head, socket)."""
    sock = socket.create_connection((proxy.host, proxy.port), timeout=IO_TIMEOUT)
    lines = [
        f"CONNECT {target.host}:{target.port} HTTP/1.1",
        f"Host: {target.host}:{target.port}",
    ]
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        lines.append(f"Proxy-Authorization: Basic {token}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            break
        head += chunk
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else -1
    return status, head, sock


HTTP_PROXIES = [
    pytest.param(peers.tinyproxy, id="tinyproxy"),
    pytest.param(peers.squid, id="squid"),
]
SOCKS_PROXIES = [
    pytest.param(peers.microsocks, id="microsocks"),
    pytest.param(peers.dante, id="dante"),
]


@pytest.mark.parametrize("factory", HTTP_PROXIES)
def test_http_connect_without_auth(factory: ProxyFactory, tmp_path: Path, echo: EchoServer) -> None:
    with factory(tmp_path) as proxy:
        status, head, sock = _http_connect(proxy, echo)
        with sock:
            assert status == 200, f"{head!r}\n{proxy.log()}"
            _assert_echoes(sock)


@pytest.mark.parametrize("factory", HTTP_PROXIES)
def test_http_connect_with_auth(factory: ProxyFactory, tmp_path: Path, echo: EchoServer) -> None:
    with factory(tmp_path, user="alice", password="s3cret-pw") as proxy:
        status, head, sock = _http_connect(proxy, echo)
        sock.close()
        assert status == 407, f"no credentials must be refused: {head!r}"

        status, head, sock = _http_connect(proxy, echo, auth=("alice", "wrong"))
        sock.close()
        # tinyproxy 1.11 answers a wrong password with 401, not 407: our client must
        # treat both as "proxy refused the credentials".
        assert status in (401, 407), f"wrong password must be refused: {head!r}"

        status, head, sock = _http_connect(proxy, echo, auth=("alice", "s3cret-pw"))
        with sock:
            assert status == 200, f"{head!r}\n{proxy.log()}"
            _assert_echoes(sock)


def _socks_connect(url: str, target: EchoServer) -> socket.socket:
    return Proxy.from_url(url).connect(target.host, target.port, timeout=IO_TIMEOUT)


@pytest.mark.parametrize("factory", SOCKS_PROXIES)
def test_socks5_without_auth(factory: ProxyFactory, tmp_path: Path, echo: EchoServer) -> None:
    with factory(tmp_path) as proxy, _socks_connect(proxy.url, echo) as sock:
        _assert_echoes(sock)


@pytest.mark.parametrize("factory", SOCKS_PROXIES)
def test_socks5_with_auth(factory: ProxyFactory, tmp_path: Path, echo: EchoServer) -> None:
    user = f"ccsocks{os.getpid()}" if factory is peers.dante else "bob"  # per process
    with factory(tmp_path, user=user, password="pa55-word") as proxy:
        with _socks_connect(proxy.url, echo) as sock:
            _assert_echoes(sock)
        bad = f"socks5://{user}:wrong@{proxy.host}:{proxy.port}"
        with pytest.raises(ProxyError), contextlib.closing(_socks_connect(bad, echo)):
            pass
        anonymous = f"socks5://{proxy.host}:{proxy.port}"
        with pytest.raises(ProxyError), contextlib.closing(_socks_connect(anonymous, echo)):
            pass


def test_sshd_runs_commands(tmp_path: Path) -> None:
    with peers.sshd(tmp_path) as server:
        done = subprocess.run(
            server.ssh_argv(command=["echo", "hi"]),
            capture_output=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, f"{done.stderr.decode()}\n{server.log()}"
        assert done.stdout == b"hi\n"
        done = subprocess.run(server.ssh_argv(command=["true"]), capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr.decode()


def test_sshd_rejects_unknown_key(tmp_path: Path) -> None:
    with peers.sshd(tmp_path) as server:
        other = tmp_path / "other_key"
        keygen = peers.require_binary("ssh-keygen", "openssh-client")
        subprocess.run(
            [keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
            check=True,
            capture_output=True,
            timeout=30,
        )
        argv = server.ssh_argv(command=["true"])
        argv[argv.index(str(server.client_key))] = str(other)
        done = subprocess.run(argv, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        assert done.returncode == 255, done.stderr.decode()


def test_sshd_stops_on_exit(tmp_path: Path) -> None:
    with peers.sshd(tmp_path) as server:
        proc = server.process
    assert proc.poll() is not None, "sshd must be stopped when the context exits"
    # Bounded poll: the kernel may take a moment to drop the listening socket.
    deadline = time.monotonic() + 5
    while True:
        try:
            socket.create_connection((server.host, server.port), timeout=2).close()
        except OSError:
            break
        assert time.monotonic() < deadline, "sshd port still accepts after exit"
        time.sleep(0.05)


def test_iperf3_server_measures_loopback(tmp_path: Path) -> None:
    with peers.iperf3_server(tmp_path) as server:
        done = subprocess.run(server.client_argv("-t", "1", "-J"), capture_output=True, timeout=60)
        assert done.returncode == 0, done.stdout.decode()[-2000:]
        assert b'"error"' not in done.stdout, done.stdout.decode()[-2000:]
        assert b'"bits_per_second"' in done.stdout


def test_http_echo_server_round_trip() -> None:
    with http_echo_server() as server:
        sock = socket.create_connection(server.address, timeout=IO_TIMEOUT)
        with sock:
            sock.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
            data = b""
            while not data.endswith(b"POST /x\nabc"):
                chunk = sock.recv(4096)
                assert chunk, data
                data += chunk
        assert data.startswith(b"HTTP/1.1 200")


def test_missing_binary_skips_or_fails_on_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", os.devnull)
    monkeypatch.setattr(peers, "_SBIN_DIRS", ())
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="apt-get install no-such-pkg"):
        peers.require_binary("no-such-binary-cc", "no-such-pkg")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-such-binary-cc"):
        peers.require_binary("no-such-binary-cc", "no-such-pkg")


def test_wait_for_port_reports_dead_process(tmp_path: Path) -> None:
    log_path = tmp_path / "dead.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", "print('it-broke'); raise SystemExit(3)"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        proc.wait(timeout=10)
    with pytest.raises(PeerStartError, match="it-broke"):
        wait_for_port("127.0.0.1", free_port(), 5, proc, log_path=log_path)
