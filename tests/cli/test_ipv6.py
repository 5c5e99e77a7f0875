"""IPv6 with the real programs: ``server --host ::1``, ``R:[::1]:...``, ``[::1]:...`` and
``stdio:[::1]:...`` remotes, as the README documents them.

The in-process tests (tests/tunnel/test_ipv6.py) cover every remote kind on both
loops; these prove the same through the command lines, the log lines an operator
reads (``Listening on http://[::1]:PORT``) and the one-line errors.  Skipped, naming
the reason, on a machine without an IPv6 loopback.
"""

from __future__ import annotations

import random
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.chisel import SEED, SEED_FINGERPRINT
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.net import (
    IO_TIMEOUT,
    LOOPBACK6,
    free_port,
    ipv6_loopback_missing,
    read_exactly,
    tcp_echo_server,
    wait_for_port,
)
from tests.support.processes import CC, Processes, clean_env

__all__: list[str] = []

START_TIMEOUT = 20.0


@pytest.fixture(autouse=True)
def _needs_ipv6_loopback() -> None:
    reason = ipv6_loopback_missing()
    if reason is not None:
        pytest.skip(reason)


def echo_v6(port: int, payload: bytes) -> bytes:
    with socket.create_connection((LOOPBACK6, port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(payload)
        return read_exactly(sock, len(payload))


def test_gateway_and_remotes_on_ipv6(procs: Processes) -> None:
    """``server --host ::1`` says where it listens in brackets; R: and forward remotes on
    ``[::1]`` listen there (not on 127.0.0.1) and reach a target on ``[::1]``."""
    port, rport, fport = free_port(LOOPBACK6), free_port(LOOPBACK6), free_port(LOOPBACK6)
    gateway = procs.start(
        "our-server", [*CC, "server", "--host", "::1", "-p", str(port), "--reverse", "--key", SEED]
    )
    wait_for_port(LOOPBACK6, port, START_TIMEOUT, gateway.popen)
    payload = random.Random(6).randbytes(100_000)
    with tcp_echo_server(LOOPBACK6) as echo:
        client = procs.our_client(
            "--fingerprint",
            SEED_FINGERPRINT,
            f"http://[::1]:{port}",
            f"R:[::1]:{rport}:[::1]:{echo.port}",
            f"[::1]:{fport}:[::1]:{echo.port}",
        )
        client.wait_for(r"client: Connected")
        for listening in (rport, fport):
            wait_for_port(LOOPBACK6, listening, START_TIMEOUT, client.popen)
            assert echo_v6(listening, payload) == payload
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", listening), timeout=IO_TIMEOUT).close()
    gateway.wait_for(rf"R:\[::1\]:{rport}=>\[::1\]:{echo.port}")
    gateway.wait_for(rf"server: Listening on http://\[::1\]:{port}\n")
    for proc in (gateway, client):
        assert "Name or service not known" not in proc.text("both"), proc.report()
        proc.assert_no_traceback()


def test_stdio_to_an_ipv6_target(procs: Processes, tmp_path: Path) -> None:
    port = free_port(LOOPBACK6)
    gateway = procs.start(
        "our-server", [*CC, "server", "--host", "::1", "-p", str(port), "--key", SEED]
    )
    wait_for_port(LOOPBACK6, port, START_TIMEOUT, gateway.popen)
    data = random.Random(7).randbytes(300_000)
    with tcp_echo_server(LOOPBACK6) as echo:
        argv = [
            *CC,
            "client",
            "--fingerprint",
            SEED_FINGERPRINT,
            f"http://[::1]:{port}",
            f"stdio:[::1]:{echo.port}",
        ]
        result = subprocess.run(
            argv, input=data, capture_output=True, env=clean_env(), timeout=60, check=False
        )
    stderr = result.stderr.decode(errors="replace")
    assert result.stdout == data, stderr
    assert result.returncode == 0, stderr


def test_ipv6_port_in_use_is_one_bracketed_line(tmp_path: Path) -> None:
    with socket.create_server((LOOPBACK6, 0), family=socket.AF_INET6) as holder:
        port = holder.getsockname()[1]
        result = run_cli([*CC, "server", "--host", "::1", "--port", str(port)], cwd=tmp_path)
    line = assert_one_line_error(result, 1)
    assert f"cannot listen on [::1]:{port}: " in line
