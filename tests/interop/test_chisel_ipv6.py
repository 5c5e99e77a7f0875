"""IPv6 reverse remotes between us and the real chisel (CHISEL_BIN), both ways.

chisel sends ``R:[::1]:PORT:[::1]:PORT`` in its config with the brackets (its
``LocalHost`` is ``[::1]``), so our gateway must bind it without them; and our
connector's remote must mean to a chisel server what it means to ours.  The
reverse port listens on ``[::1]`` only and reaches an echo target on ``[::1]``.
"""

from __future__ import annotations

import re
import socket

import pytest

from tests.support.chisel import CONNECTED_RE, SEED, SEED_FINGERPRINT, check_tunnel
from tests.support.net import (
    IO_TIMEOUT,
    LOOPBACK6,
    free_port,
    ipv6_loopback_missing,
    tcp_echo_server,
    wait_for_port,
)
from tests.support.processes import Processes

pytestmark = pytest.mark.interop

START_TIMEOUT = 20.0


@pytest.fixture(autouse=True)
def _needs_ipv6_loopback() -> None:
    reason = ipv6_loopback_missing()
    if reason is not None:
        pytest.skip(reason)


def connect_v6(port: int) -> socket.socket:
    return socket.create_connection((LOOPBACK6, port), timeout=IO_TIMEOUT)


def test_chisel_client_ipv6_reverse_remote_on_our_gateway(
    chisel: str, procs: Processes, small_payload: bytes
) -> None:
    server, url = procs.our_server("--key", SEED, "--reverse")
    rport = free_port(LOOPBACK6)
    with tcp_echo_server(LOOPBACK6) as echo:
        remote = f"R:[::1]:{rport}:[::1]:{echo.port}"
        client = procs.chisel_client(
            chisel, "--fingerprint", SEED_FINGERPRINT, "--max-retry-count", "0", url, remote
        )
        client.wait_for(CONNECTED_RE, stream="stderr")
        wait_for_port(LOOPBACK6, rport, START_TIMEOUT, server.popen)
        check_tunnel(rport, small_payload, connect=lambda: connect_v6(rport))
    server.wait_for(re.escape(f"R:[::1]:{rport}=>[::1]:{echo.port}"), stream="stdout")
    server.assert_no_traceback()


def test_our_client_ipv6_reverse_remote_on_chisel_server(
    chisel: str, procs: Processes, small_payload: bytes
) -> None:
    server, url = procs.chisel_server(chisel, "--key", SEED, "--reverse")
    rport = free_port(LOOPBACK6)
    with tcp_echo_server(LOOPBACK6) as echo:
        client = procs.our_client(
            "--fingerprint", SEED_FINGERPRINT, url, f"R:[::1]:{rport}:[::1]:{echo.port}"
        )
        client.wait_for(CONNECTED_RE, stream="stdout")
        wait_for_port(LOOPBACK6, rport, START_TIMEOUT, server.popen)
        check_tunnel(rport, small_payload, connect=lambda: connect_v6(rport))
    client.assert_no_traceback()
