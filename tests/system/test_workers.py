"""``cloud-connector server --workers N``: SO_REUSEPORT workers under a control process.

Real processes on 127.0.0.1: the control process starts N gateway workers on one
port (one host key, handed over when it is generated), connectors spread over
them, a killed worker is restarted, SIGUSR2 sums the workers' figures and SIGTERM
stops everything with status 0.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psutil
import pytest

from cc.cli.workers import auto_workers
from tests.support.cli import run_cli, start_gateway
from tests.support.net import LOOPBACK, echo_back, free_port, tcp_echo_server, wait_for_port
from tests.support.processes import CC, CliProcess, clean_env

FINGERPRINT = re.compile(r"server: Fingerprint (\S+)")


def _workers(control: CliProcess, count: int, timeout: float = 15.0) -> list[int]:
    """The control process's children once ``count`` of them serve."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = psutil.Process(control.pid).children()
        if len(children) == count and len(FINGERPRINT.findall(control.stdout())) >= count:
            return sorted(c.pid for c in children)
        time.sleep(0.05)
    raise AssertionError(f"expected {count} workers\n{control.report()}")


@contextmanager
def _connector(
    tmp_path: Path, gateway_port: int, service_port: int, fingerprint: str
) -> Iterator[int]:
    port = free_port()
    remote = f"R:{LOOPBACK}:{port}:{LOOPBACK}:{service_port}"
    argv = [
        *CC,
        "client",
        "--fingerprint",
        fingerprint,
        f"http://{LOOPBACK}:{gateway_port}",
        remote,
    ]
    with CliProcess(f"connector-{port}", argv, cwd=tmp_path, logdir=tmp_path) as proc:
        wait_for_port(LOOPBACK, port, 15.0, proc.popen)
        yield port


def test_workers_share_the_port_and_the_host_key(tmp_path: Path) -> None:
    with start_gateway(tmp_path, "--workers", "2") as (control, port), tcp_echo_server() as echo:
        workers = _workers(control, 2)
        prints = FINGERPRINT.findall(control.stdout())
        assert len(set(prints)) == 1, "a generated key must be the same in every worker"
        # several connectors; each tunnel works whichever worker holds its session
        with ExitStack() as stack:
            ports = [
                stack.enter_context(_connector(tmp_path, port, echo.port, prints[0]))
                for _ in range(4)
            ]
            for tunnel_port in ports:
                payload = os.urandom(100_000)
                assert echo_back(tunnel_port, payload) == payload
            sessions = {
                pid: sum(
                    1
                    for conn in psutil.Process(pid).net_connections("tcp")
                    if conn.status == psutil.CONN_ESTABLISHED and conn.laddr.port == port
                )
                for pid in workers
            }
            # the kernel spreads connectors over the workers (which ones is its choice)
            assert sum(sessions.values()) == 4, sessions
            assert not [
                c
                for c in psutil.Process(control.pid).net_connections("tcp")
                if c.status == psutil.CONN_ESTABLISHED
            ], "the control process holds no session"


def test_sigusr2_sums_the_workers_and_sigterm_stops_all(tmp_path: Path) -> None:
    with start_gateway(tmp_path, "--workers", "2") as (control, _port):
        workers = _workers(control, 2)
        mark = len(control.lines())
        os.kill(control.pid, signal.SIGUSR2)
        control.wait_for_line(r"stats: pid=\d+ processes=3 ", 10.0, after=mark)
        for pid in workers:  # and each worker printed its own block
            control.wait_for_line(rf"stats: pid={pid} processes=1 ", 10.0, after=mark)
        os.kill(control.pid, signal.SIGTERM)
        assert control.wait_exit(20.0) == 0
        for pid in workers:
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"


def test_a_killed_worker_is_restarted(tmp_path: Path) -> None:
    with start_gateway(tmp_path, "--workers", "2") as (control, port), tcp_echo_server() as echo:
        first = _workers(control, 2)
        os.kill(first[0], signal.SIGKILL)
        control.wait_for_line(r"worker \d \(pid \d+\) exited with status -9; restarting", 10.0)
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            now = sorted(c.pid for c in psutil.Process(control.pid).children())
            if len(now) == 2 and first[0] not in now:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"worker not restarted\n{control.report()}")
        fingerprint = FINGERPRINT.findall(control.stdout())[0]
        wait_for_port(LOOPBACK, port, 10.0, control.popen)
        with _connector(tmp_path, port, echo.port, fingerprint) as tunnel_port:
            assert echo_back(tunnel_port, b"after the restart") == b"after the restart"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "2", "--port", "0"], "--workers needs a fixed --port"),
        (["--workers", "0"], "--workers/-workers: must be at least 1"),
        (["--workers", "two"], "not a number or 'auto': 'two'"),
    ],
)
def test_bad_worker_options_are_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli([*CC, "server", "--host", LOOPBACK, *args], cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


# -- connector workers (cloud-connector client --workers N) ----------------------------


def _listeners(pids: list[int], port: int) -> dict[int, int]:
    """How many listening sockets each process has on ``port``."""
    return {
        pid: sum(
            1
            for conn in psutil.Process(pid).net_connections("tcp")
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port
        )
        for pid in pids
    }


def _wait_listeners(pids: list[int], port: int, total: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(_listeners(pids, port).values()) == total:
            return
        time.sleep(0.05)
    raise AssertionError(f"expected {total} listeners on {port}: {_listeners(pids, port)}")


def _client_workers(
    tmp_path: Path, gateway_port: int, remote: str, *extra: str, name: str = "connector"
) -> CliProcess:
    argv = [*CC, "client", "--workers", "2", *extra, f"http://{LOOPBACK}:{gateway_port}", remote]
    return CliProcess(name, argv, cwd=tmp_path, logdir=tmp_path)


def test_connector_workers_share_a_reverse_port_across_gateway_workers(tmp_path: Path) -> None:
    with start_gateway(tmp_path, "--workers", "2") as (gateway, port), tcp_echo_server() as echo:
        gateway_workers = _workers(gateway, 2)
        tunnel = free_port()
        remote = f"R:{LOOPBACK}:{tunnel}:{LOOPBACK}:{echo.port}"
        with _client_workers(tmp_path, port, remote) as connector:
            for worker in (1, 2):
                connector.wait_for_line(rf"\[worker {worker}\] client: Connected", 15.0)
            connector.wait_for_line("reverse ports shared with the other workers", 5.0)
            # one listening socket per session, whichever gateway worker holds it
            _wait_listeners(gateway_workers, tunnel, 2)
            for _ in range(20):
                payload = os.urandom(10_000)
                assert echo_back(tunnel, payload) == payload
            # a connector worker dies: the port stays up on the other session
            first = sorted(c.pid for c in psutil.Process(connector.pid).children())
            assert len(first) == 2
            os.kill(first[0], signal.SIGKILL)
            connector.wait_for_line(r"worker \d \(pid \d+\) exited with status -9; restarting", 10)
            _wait_listeners(gateway_workers, tunnel, 1)
            for _ in range(10):
                assert echo_back(tunnel, b"still served") == b"still served"
            # ... and comes back, sharing the port again
            _wait_listeners(gateway_workers, tunnel, 2, timeout=20.0)
            assert echo_back(tunnel, b"restarted") == b"restarted"
            os.kill(connector.pid, signal.SIGTERM)
            assert connector.wait_exit(20.0) == 0


def test_another_connector_cannot_take_a_shared_port(tmp_path: Path) -> None:
    with start_gateway(tmp_path) as (gateway, port), tcp_echo_server() as echo:
        tunnel = free_port()
        remote = f"R:{LOOPBACK}:{tunnel}:{LOOPBACK}:{echo.port}"
        with _client_workers(tmp_path, port, remote) as owner:
            for worker in (1, 2):
                owner.wait_for_line(rf"\[worker {worker}\] client: Connected", 15.0)
            with _client_workers(
                tmp_path, port, remote, "--max-retry-count", "1", name="intruder"
            ) as intruder:
                assert intruder.wait_exit(30.0) == 1
                assert "Server cannot listen" in intruder.stdout() + intruder.stderr()
            _wait_listeners([gateway.pid], tunnel, 2)
            assert echo_back(tunnel, b"owner keeps it") == b"owner keeps it"


def test_a_fatal_worker_error_stops_the_connector(tmp_path: Path) -> None:
    with start_gateway(tmp_path) as (_gateway, port):
        wrong = "A" * 43 + "="
        with _client_workers(
            tmp_path, port, f"R:{LOOPBACK}:{free_port()}:{LOOPBACK}:1", "--fingerprint", wrong
        ) as connector:
            assert connector.wait_exit(20.0) == 1
            assert "Invalid fingerprint" in connector.stderr()
            assert "restarting" not in connector.stdout(), "a refused worker is not restarted"
            assert connector.stderr().count("Invalid fingerprint") == 1, "said once"


def test_auto_workers_is_the_cpu_count(tmp_path: Path) -> None:
    env = clean_env()
    del env["CC_WORKERS"]
    expected = auto_workers()  # the CPUs, at most 8; 1 on 2 CPUs or fewer
    port = free_port()
    argv = [*CC, "server", "--host", LOOPBACK, "--port", str(port)]
    with CliProcess("auto", argv, cwd=tmp_path, logdir=tmp_path, env=env) as control:
        wait_for_port(LOOPBACK, port, 15.0, control.popen)
        if expected == 1:
            assert not psutil.Process(control.pid).children()
        else:
            assert len(_workers(control, expected)) == expected


def test_stdio_needs_one_worker(tmp_path: Path) -> None:
    result = run_cli(
        [*CC, "client", "--workers", "2", f"http://{LOOPBACK}:1", "stdio:127.0.0.1:22"],
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "stdio remote has one stdin: it needs --workers 1" in result.stderr


def test_connector_control_sums_workers_and_stops_them(tmp_path: Path) -> None:
    with start_gateway(tmp_path) as (_gateway, port), tcp_echo_server() as echo:
        remote = f"R:{LOOPBACK}:{free_port()}:{LOOPBACK}:{echo.port}"
        with _client_workers(tmp_path, port, remote, "--pid") as connector:
            for worker in (1, 2):
                connector.wait_for_line(rf"\[worker {worker}\] client: Connected", 15.0)
            workers = sorted(c.pid for c in psutil.Process(connector.pid).children())
            assert (tmp_path / "cloud-connector.pid").read_text().strip() == str(connector.pid)
            mark = len(connector.lines())
            os.kill(connector.pid, signal.SIGUSR2)
            connector.wait_for_line(r"client: stats: pid=\d+ processes=3 ", 10.0, after=mark)
            for pid in workers:
                connector.wait_for_line(rf"stats: pid={pid} processes=1 ", 10.0, after=mark)
            os.kill(connector.pid, signal.SIGTERM)
            assert connector.wait_exit(20.0) == 0
            for pid in workers:
                assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
            assert not (tmp_path / "cloud-connector.pid").exists()
