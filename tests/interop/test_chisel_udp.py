"""UDP and SOCKS5 remotes with the real chisel (v1.11.5, found only through CHISEL_BIN).

UDP both ways: our connector (``cloud-connector client`` and ``outsystemscc``) with a
chisel server, a chisel client with our gateway, forward and reverse, so each of
chisel's UDP listener and UDP dialer meets ours.  Every tunnel carries an echo
service with 20 senders at once (each answer must reach the sender that asked) and
a DNS-like request/response with random query ids.  SOCKS5: a chisel client's
``socks`` remote against our gateway's ``--socks5`` (with and without an ACL), and
``R:socks`` with chisel on the other side, each driven by curl.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.chisel import CONNECTED_RE, SEED, SEED_FINGERPRINT
from tests.support.net import LOOPBACK, EchoServer, free_port
from tests.support.processes import CliProcess, Processes
from tests.support.udp import dns_service, many_dns_queries, many_senders, udp_echo, udp_probe

pytestmark = pytest.mark.interop

CURL_TIMEOUT = 20.0


def udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def services() -> Iterator[tuple[int, int]]:
    """(UDP echo port, DNS-like port) on 127.0.0.1."""
    with udp_echo() as echo, dns_service() as dns:
        yield echo, dns


def remotes(reverse: bool, services: tuple[int, int]) -> tuple[list[str], list[int]]:
    """One UDP remote per service on a fresh loopback port; (remote specs, their ports)."""
    ports = [udp_port() for _ in services]
    prefix = "R:" if reverse else ""
    specs = [
        f"{prefix}{LOOPBACK}:{port}:{LOOPBACK}:{service}/udp"
        for port, service in zip(ports, services, strict=True)
    ]
    return specs, ports


def check_udp(ports: list[int], *procs: CliProcess) -> None:
    echo_port, dns_port = ports
    udp_probe(echo_port)
    many_senders(echo_port, senders=20, rounds=3)
    many_dns_queries(dns_port, senders=20, per_sender=2)
    for proc in procs:
        assert proc.popen.poll() is None, proc.report()
        proc.assert_no_traceback()


# --------------------------------------------------------------------------- UDP: ours -> chisel


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_udp_our_client_with_chisel_server(
    chisel: str, procs: Processes, services: tuple[int, int], reverse: bool
) -> None:
    """forward: our listener + chisel's dialer; reverse: chisel's listener + our dialer."""
    server, url = procs.chisel_server(chisel, "--key", SEED, "--reverse")
    specs, ports = remotes(reverse, services)
    client = procs.our_client("--fingerprint", SEED_FINGERPRINT, url, *specs)
    client.wait_for(CONNECTED_RE, stream="stdout")
    check_udp(ports, server, client)


def test_udp_outsystemscc_with_chisel_server(
    chisel: str, procs: Processes, services: tuple[int, int]
) -> None:
    """outsystemscc's ``R:<port>:<host>:<port>/udp``: chisel listens, outsystemscc dials."""
    server, url = procs.chisel_server(chisel, "--key", SEED, "--reverse")
    specs, ports = remotes(True, services)
    client = procs.outsystemscc(url, *specs)
    client.wait_for(CONNECTED_RE, stream="stdout")
    check_udp(ports, server, client)


# --------------------------------------------------------------------------- UDP: chisel -> ours


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_udp_chisel_client_with_our_server(
    chisel: str, procs: Processes, services: tuple[int, int], reverse: bool
) -> None:
    """forward: chisel's listener + our dialer; reverse: our listener + chisel's dialer."""
    server, url = procs.our_server("--key", SEED, "--reverse")
    specs, ports = remotes(reverse, services)
    client = procs.chisel_client(chisel, "--fingerprint", SEED_FINGERPRINT, url, *specs)
    client.wait_for(r"client: Connected \(Latency", stream="stderr")
    check_udp(ports, server, client)


# --------------------------------------------------------------------------- SOCKS5


def curl(socks_port: int, url: str) -> subprocess.CompletedProcess[bytes]:
    exe = shutil.which("curl")
    if exe is None:
        pytest.skip("curl not installed (apt-get install curl)")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    argv = [exe, "-sS", "--max-time", "10", "--socks5-hostname", f"{LOOPBACK}:{socks_port}", url]
    return subprocess.run(argv, capture_output=True, timeout=CURL_TIMEOUT, env=env, check=False)


def socks_reply(socks_port: int, host: str, port: int) -> int:
    """A raw SOCKS5 CONNECT to an IPv4 ``host``; returns the reply code."""
    with socket.create_connection((LOOPBACK, socks_port), timeout=10) as sock:
        sock.sendall(b"\x05\x01\x00")
        assert sock.recv(2) == b"\x05\x00"
        sock.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(host) + struct.pack("!H", port))
        return sock.recv(10)[1]


def test_chisel_socks_client_with_our_socks5_server(
    chisel: str, procs: Processes, http: EchoServer
) -> None:
    server, url = procs.our_server("--key", SEED, "--socks5")
    port = free_port()
    client = procs.chisel_client(chisel, "--fingerprint", SEED_FINGERPRINT, url, f"{port}:socks")
    client.wait_for(r"client: Connected \(Latency", stream="stderr")
    client.wait_listening(port)
    for host in (LOOPBACK, "localhost"):
        result = curl(port, f"http://{host}:{http.port}/via-chisel")
        assert result.returncode == 0, (result.stderr, procs.report())
        assert result.stdout == b"GET /via-chisel\n"
    server.assert_no_traceback()


def test_chisel_socks_client_meets_our_acl(
    chisel: str, procs: Processes, http: EchoServer, tmp_path: Path
) -> None:
    """chisel's own server would let SOCKS past the authfile; ours checks the real target."""
    authfile = tmp_path / "users.json"
    authfile.write_text(json.dumps({"u:p": ["socks", rf"127\.0\.0\.1:{http.port}"]}))
    server, url = procs.our_server("--key", SEED, "--socks5", "--authfile", str(authfile))
    port = free_port()
    client = procs.chisel_client(
        chisel, "--fingerprint", SEED_FINGERPRINT, "--auth", "u:p", url, f"{port}:socks"
    )
    client.wait_for(r"client: Connected \(Latency", stream="stderr")
    client.wait_listening(port)
    allowed = curl(port, f"http://{LOOPBACK}:{http.port}/ok")
    assert allowed.returncode == 0, (allowed.stderr, procs.report())
    denied = curl(port, f"http://{LOOPBACK}:{http.port + 1}/")
    assert denied.returncode != 0 and denied.stdout == b""
    assert socks_reply(port, LOOPBACK, http.port + 1) == 2, "not allowed by ruleset"
    server.wait_for(rf"CONNECT {LOOPBACK}:{http.port + 1} denied", stream="stdout")


@pytest.mark.parametrize("ours", ["client", "server"])
def test_reverse_socks_with_chisel(
    chisel: str, procs: Processes, http: EchoServer, ours: str
) -> None:
    """``R:<port>:socks``: the server listens, the client runs SOCKS5 and dials."""
    port = free_port()
    remote = f"R:{port}:socks"
    if ours == "client":
        server, url = procs.chisel_server(chisel, "--key", SEED, "--reverse")
        client = procs.our_client("--fingerprint", SEED_FINGERPRINT, url, remote)
        client.wait_for(CONNECTED_RE, stream="stdout")
    else:
        server, url = procs.our_server("--key", SEED, "--reverse")
        client = procs.chisel_client(chisel, "--fingerprint", SEED_FINGERPRINT, url, remote)
        client.wait_for(r"client: Connected \(Latency", stream="stderr")
    server.wait_listening(port)
    result = curl(port, f"http://{LOOPBACK}:{http.port}/reverse")
    assert result.returncode == 0, (result.stderr, procs.report())
    assert result.stdout == b"GET /reverse\n"
