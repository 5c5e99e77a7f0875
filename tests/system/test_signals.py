"""Signals, pid files and SIGUSR2 stats on real processes: a ``cloud-connector server``
gateway and an ``outsystemscc`` connector talking to each other on loopback.

The seed promises: ``--pid`` writes ``outsystemscc.pid``; SIGUSR2 prints process
stats (the real SIGUSR2: chisel listens on signal 31, SIGSYS on Linux); SIGHUP
cuts the reconnect wait short; SIGINT/SIGTERM exit cleanly with
``Graceful shutdown signal received: ...``.
"""

from __future__ import annotations

import contextlib
import platform
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import cc
from cc import fastpath
from cc.protocol.durations import parse_duration
from tests.support.cli import GO_DURATION, LOG_PREFIX, RecordingServer, start_gateway
from tests.support.net import LOOPBACK, echo_back, free_port, tcp_echo_server
from tests.support.processes import CC, OSCC, CliProcess


@contextlib.contextmanager
def tunnel(tmp_path: Path) -> Iterator[tuple[CliProcess, int, int]]:
    """Gateway + ``outsystemscc --pid`` (cwd: tmp_path/connector) + echo service.

    Yields (connector, the gateway-side port of the reverse remote, the echo port).
    """
    workdir = tmp_path / "connector"
    workdir.mkdir()
    with tcp_echo_server() as echo, start_gateway(tmp_path) as (_gateway, gateway_port):
        public_port = free_port()
        argv = [
            *OSCC,
            "--pid",
            "--header",
            "token: abc",
            f"http://127.0.0.1:{gateway_port}/sg_123",
            f"R:{public_port}:127.0.0.1:{echo.port}",
        ]
        with CliProcess("connector", argv, cwd=workdir, logdir=tmp_path) as connector:
            connector.wait_for_line(r"client: Connected \(Latency ", 15)
            yield connector, public_port, echo.port


def test_pid_file_stats_and_sigterm(tmp_path: Path) -> None:
    with tunnel(tmp_path) as (connector, public_port, echo_port):
        pid_file = tmp_path / "connector" / "outsystemscc.pid"
        assert pid_file.read_text().strip() == str(connector.pid)

        payload = b"hello through the tunnel\n"
        assert echo_back(public_port, payload) == payload

        mark = len(connector.lines())
        connector.popen.send_signal(signal.SIGUSR2)
        _, proc_line = connector.wait_for_line(r"client: stats: pid=", 10, after=mark)
        assert re.fullmatch(
            LOG_PREFIX + rf"client: stats: pid={connector.pid} processes=1 uptime=[\d.]+s "
            r"rss=[\d.]+MiB cpu_user=[\d.]+s cpu_system=[\d.]+s open_fds=\d+ threads=\d+",
            proc_line,
        ), proc_line
        _, state_line = connector.wait_for_line(r"client: stats: state=", 5, after=mark)
        assert "state=connected sessions=1 reconnects=0" in state_line
        _, what_line = connector.wait_for_line(r"client: stats: version=", 5, after=mark)
        assert what_line.endswith(
            f"client: stats: version={cc.__version__} python={platform.python_version()} "
            f"fastpath={fastpath.IMPLEMENTATION}"
        ), what_line
        _, remote_line = connector.wait_for_line(r"client: stats: remote ", 5, after=mark)
        match = re.search(
            rf"remote R:{public_port}=>{echo_port} open=\d+ total=(\d+) failed=0 "
            r"bytes_in=(\d+) bytes_out=(\d+)$",
            remote_line,
        )
        assert match, remote_line
        total, bytes_in, bytes_out = map(int, match.groups())
        assert total == 1
        assert bytes_in == bytes_out == len(payload)

        mark = len(connector.lines())
        connector.popen.send_signal(signal.SIGTERM)
        assert connector.wait_exit(10) == 0, connector.report()
        assert any(
            re.fullmatch(LOG_PREFIX + "client: Graceful shutdown signal received: terminated", line)
            for line in connector.lines()[mark:]
        ), connector.report()
        assert not pid_file.exists()
        assert "Traceback" not in connector.stderr() and connector.stderr() == ""


def test_sigint_exits_cleanly(tmp_path: Path) -> None:
    with tunnel(tmp_path) as (connector, _public_port, _echo_port):
        pid_file = tmp_path / "connector" / "outsystemscc.pid"
        assert pid_file.exists()
        connector.popen.send_signal(signal.SIGINT)
        assert connector.wait_exit(10) == 0, connector.report()
        assert "client: Graceful shutdown signal received: interrupt" in connector.stdout()
        assert not pid_file.exists()
        assert connector.stderr() == ""


def test_gateway_pid_file_stats_and_sigterm(tmp_path: Path) -> None:
    with start_gateway(tmp_path, "--pid") as (gateway, _port):
        pid_file = tmp_path / "gateway" / "cloud-connector.pid"
        gateway.wait_for_line("server: Listening on ", 10)
        assert pid_file.read_text().strip() == str(gateway.pid)
        gateway.popen.send_signal(signal.SIGUSR2)
        _, line = gateway.wait_for_line(r"server: stats: pid=", 10)
        assert f"pid={gateway.pid} " in line
        gateway.wait_for_line(r"server: stats: state=", 5)
        gateway.popen.send_signal(signal.SIGTERM)
        assert gateway.wait_exit(10) == 0, gateway.report()
        assert "server: Graceful shutdown signal received: terminated" in gateway.stdout()
        assert not pid_file.exists()
        assert gateway.stderr() == ""


def _hup_skips_wait(proc: CliProcess, min_wait: float = 1.5) -> None:
    """Wait for a reconnect wait of at least ``min_wait``; SIGHUP must end it at once."""
    after = 0
    pattern = rf"client: Retrying in ({GO_DURATION})\.\.\.$"
    while True:
        index, line = proc.wait_for_line(pattern, 10, after=after)
        match = re.search(pattern, line)
        assert match
        delay = parse_duration(match.group(1))
        if delay >= min_wait:
            break
        after = index + 1
    sent = time.monotonic()
    proc.popen.send_signal(signal.SIGHUP)
    proc.wait_for_line(r"client: Connecting to ", delay, after=index + 1)
    waited = time.monotonic() - sent
    # Without SIGHUP the next attempt would come ~``delay`` after the line we saw
    # (we signal within a poll interval of it); with it, at once. Half a second of
    # slack keeps a loaded machine from failing the test.
    assert waited < delay - 0.5, (waited, delay, proc.report())


def test_sighup_short_circuits_the_reconnect_wait(tmp_path: Path) -> None:
    """outsystemscc against a gateway that refuses the upgrade, and cloud-connector
    client against a closed port, side by side: both back off to waits of seconds."""
    with RecordingServer() as refusing:
        oscc_argv = [*OSCC, f"http://127.0.0.1:{refusing.port}/sg_123", "R:8081:127.0.0.1:9"]
        client_argv = [*CC, "client", f"http://127.0.0.1:{free_port()}", "R:8081:127.0.0.1:9"]
        with (
            CliProcess("oscc", oscc_argv, cwd=tmp_path, logdir=tmp_path) as oscc,
            CliProcess("client", client_argv, cwd=tmp_path, logdir=tmp_path) as client,
        ):
            _hup_skips_wait(oscc)
            _hup_skips_wait(client)
            for proc in (oscc, client):
                proc.popen.send_signal(signal.SIGTERM)
                assert proc.wait_exit(10) == 0, proc.report()


def test_sigterm_while_the_gateway_does_not_answer(tmp_path: Path) -> None:
    """A firewall that swallows packets leaves the pre-flight waiting for its 30 s
    timeout; SIGTERM must still end the connector promptly and cleanly."""
    silent = socket.create_server((LOOPBACK, 0))  # accepts (backlog), never answers
    try:
        port = silent.getsockname()[1]
        argv = [*OSCC, "--pid", f"http://127.0.0.1:{port}/sg_123", "R:8081:127.0.0.1:9"]
        with CliProcess("stuck", argv, cwd=tmp_path, logdir=tmp_path) as stuck:
            pid_file = tmp_path / "outsystemscc.pid"
            deadline = time.monotonic() + 10
            while not pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.3)  # let it get into the pre-flight
            sent = time.monotonic()
            stuck.popen.send_signal(signal.SIGTERM)
            assert stuck.wait_exit(10) == 0, stuck.report()
            assert time.monotonic() - sent < 5
            assert "Graceful shutdown signal received: terminated" in stuck.stdout()
            assert not pid_file.exists()
    finally:
        silent.close()
