"""Signals, pid files and SIGUSR2 stats on real processes: a ``cloud-connector server``
gateway and an ``outsystemscc`` connector talking to each other on loopback.

The seed promises: ``--pid`` writes ``outsystemscc.pid``; SIGUSR2 prints process
stats (the real SIGUSR2: chisel listens on signal 31, SIGSYS on Linux); SIGHUP
cuts the reconnect wait short; SIGINT/SIGTERM exit cleanly with
``Graceful shutdown signal received: ...``.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from cc.protocol.durations import parse_duration
from tests.cli_support import (
    CC,
    GO_DURATION,
    LOG_PREFIX,
    OSCC,
    LiveProcess,
    RecordingServer,
    start_gateway,
)
from tests.peers import LOOPBACK, free_port


@contextlib.contextmanager
def echo_server() -> Iterator[int]:
    """A TCP echo service on loopback: the private endpoint behind the tunnel."""
    listener = socket.create_server((LOOPBACK, 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve_one(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            with contextlib.suppress(OSError):
                while data := conn.recv(65536):
                    conn.sendall(data)

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


@contextlib.contextmanager
def tunnel(tmp_path: Path) -> Iterator[tuple[LiveProcess, int, int]]:
    """Gateway + ``outsystemscc --pid`` (cwd: tmp_path/connector) + echo service.

    Yields (connector, the gateway-side port of the reverse remote, the echo port).
    """
    workdir = tmp_path / "connector"
    workdir.mkdir()
    with echo_server() as echo_port, start_gateway(tmp_path) as (_gateway, gateway_port):
        public_port = free_port()
        argv = [
            *OSCC,
            "--pid",
            "--header",
            "token: abc",
            f"http://127.0.0.1:{gateway_port}/sg_123",
            f"R:{public_port}:127.0.0.1:{echo_port}",
        ]
        with LiveProcess("connector", argv, cwd=workdir, logdir=tmp_path) as connector:
            connector.wait_for_line(r"client: Connected \(Latency ", 15)
            yield connector, public_port, echo_port


def _round_trip(port: int, payload: bytes) -> bytes:
    """Send ``payload`` through the tunnel's public port; read the echo back."""
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        sock.sendall(payload)
        received = b""
        while len(received) < len(payload):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return received


def test_pid_file_stats_and_sigterm(tmp_path: Path) -> None:
    with tunnel(tmp_path) as (connector, public_port, echo_port):
        pid_file = tmp_path / "connector" / "outsystemscc.pid"
        assert pid_file.read_text().strip() == str(connector.pid)

        payload = b"hello through the tunnel\n"
        assert _round_trip(public_port, payload) == payload

        mark = len(connector.lines())
        connector.proc.send_signal(signal.SIGUSR2)
        _, proc_line = connector.wait_for_line(r"client: stats: pid=", 10, after=mark)
        assert re.fullmatch(
            LOG_PREFIX + rf"client: stats: pid={connector.pid} processes=1 uptime=[\d.]+s "
            r"rss=[\d.]+MiB cpu_user=[\d.]+s cpu_system=[\d.]+s open_fds=\d+ threads=\d+",
            proc_line,
        ), proc_line
        _, state_line = connector.wait_for_line(r"client: stats: state=", 5, after=mark)
        assert "state=connected sessions=1 reconnects=0" in state_line
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
        connector.proc.send_signal(signal.SIGTERM)
        assert connector.wait(10) == 0, connector.describe()
        assert any(
            re.fullmatch(LOG_PREFIX + "client: Graceful shutdown signal received: terminated", line)
            for line in connector.lines()[mark:]
        ), connector.describe()
        assert not pid_file.exists()
        assert "Traceback" not in connector.stderr and connector.stderr == ""


def test_sigint_exits_cleanly(tmp_path: Path) -> None:
    with tunnel(tmp_path) as (connector, _public_port, _echo_port):
        pid_file = tmp_path / "connector" / "outsystemscc.pid"
        assert pid_file.exists()
        connector.proc.send_signal(signal.SIGINT)
        assert connector.wait(10) == 0, connector.describe()
        assert "client: Graceful shutdown signal received: interrupt" in connector.stdout
        assert not pid_file.exists()
        assert connector.stderr == ""


def test_gateway_pid_file_stats_and_sigterm(tmp_path: Path) -> None:
    with start_gateway(tmp_path, "--pid") as (gateway, _port):
        pid_file = tmp_path / "gateway" / "cloud-connector.pid"
        gateway.wait_for_line("server: Listening on ", 10)
        assert pid_file.read_text().strip() == str(gateway.pid)
        gateway.proc.send_signal(signal.SIGUSR2)
        _, line = gateway.wait_for_line(r"server: stats: pid=", 10)
        assert f"pid={gateway.pid} " in line
        gateway.wait_for_line(r"server: stats: state=", 5)
        gateway.proc.send_signal(signal.SIGTERM)
        assert gateway.wait(10) == 0, gateway.describe()
        assert "server: Graceful shutdown signal received: terminated" in gateway.stdout
        assert not pid_file.exists()
        assert gateway.stderr == ""


def _hup_skips_wait(proc: LiveProcess, min_wait: float = 1.5) -> None:
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
    proc.proc.send_signal(signal.SIGHUP)
    proc.wait_for_line(r"client: Connecting to ", delay, after=index + 1)
    waited = time.monotonic() - sent
    # Without SIGHUP the next attempt would come ~``delay`` after the line we saw
    # (we signal within a poll interval of it); with it, at once. Half a second of
    # slack keeps a loaded machine from failing the test.
    assert waited < delay - 0.5, (waited, delay, proc.describe())


def test_sighup_short_circuits_the_reconnect_wait(tmp_path: Path) -> None:
    """outsystemscc against a gateway that refuses the upgrade, and cloud-connector
    client against a closed port, side by side: both back off to waits of seconds."""
    with RecordingServer() as refusing:
        oscc_argv = [*OSCC, f"http://127.0.0.1:{refusing.port}/sg_123", "R:8081:127.0.0.1:9"]
        client_argv = [*CC, "client", f"http://127.0.0.1:{free_port()}", "R:8081:127.0.0.1:9"]
        with (
            LiveProcess("oscc", oscc_argv, cwd=tmp_path, logdir=tmp_path) as oscc,
            LiveProcess("client", client_argv, cwd=tmp_path, logdir=tmp_path) as client,
        ):
            _hup_skips_wait(oscc)
            _hup_skips_wait(client)
            for proc in (oscc, client):
                proc.proc.send_signal(signal.SIGTERM)
                assert proc.wait(10) == 0, proc.describe()


def test_sigterm_while_the_gateway_does_not_answer(tmp_path: Path) -> None:
    """A firewall that swallows packets leaves the pre-flight waiting for its 30 s
    timeout; SIGTERM must still end the connector promptly and cleanly."""
    silent = socket.create_server((LOOPBACK, 0))  # accepts (backlog), never answers
    try:
        port = silent.getsockname()[1]
        argv = [*OSCC, "--pid", f"http://127.0.0.1:{port}/sg_123", "R:8081:127.0.0.1:9"]
        with LiveProcess("stuck", argv, cwd=tmp_path, logdir=tmp_path) as stuck:
            pid_file = tmp_path / "outsystemscc.pid"
            deadline = time.monotonic() + 10
            while not pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.3)  # let it get into the pre-flight
            sent = time.monotonic()
            stuck.proc.send_signal(signal.SIGTERM)
            assert stuck.wait(10) == 0, stuck.describe()
            assert time.monotonic() - sent < 5
            assert "Graceful shutdown signal received: terminated" in stuck.stdout
            assert not pid_file.exists()
    finally:
        silent.close()
