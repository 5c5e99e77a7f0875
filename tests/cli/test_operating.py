"""Operating the real commands: a ``--workers 2`` gateway's one scrape shows both workers,
its /ready waits for every worker, the connectors' ``--metrics`` flag, and
``cloud-connector status`` printing the gateway's sessions in a terminal."""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psutil

from cc.protocol.basicauth import basic_header
from cc.runtime.figures import PUSH_INTERVAL
from tests.gateway.test_operating import samples
from tests.support.cli import run_cli, start_gateway
from tests.support.net import LOOPBACK, echo_back, free_port, tcp_echo_server, wait_for_port
from tests.support.processes import CC, CliProcess, clean_env

__all__: list[str] = []

ADMIN = "ops:s3cret"


def http_get(url: str, *, admin: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if admin:
        request.add_header("Authorization", basic_header(*admin.split(":", 1)))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_status(url: str, status: int, timeout: float = 15.0, interval: float = 0.05) -> str:
    deadline = time.monotonic() + timeout
    last: tuple[int, str] | str = ""
    while time.monotonic() < deadline:
        try:
            last = http_get(url)
            if last[0] == status:
                return last[1]
        except OSError as exc:
            last = str(exc)
        time.sleep(interval)
    raise AssertionError(f"{url}: never {status} (last: {last!r})")


@contextmanager
def connector(
    tmp_path: Path, gateway_port: int, target: int, *extra: str, name: str = ""
) -> Iterator[tuple[CliProcess, int]]:
    port = free_port()
    argv = [
        *CC,
        "client",
        *extra,
        f"http://{LOOPBACK}:{gateway_port}",
        f"R:{LOOPBACK}:{port}:{LOOPBACK}:{target}",
    ]
    with CliProcess(name or f"connector-{port}", argv, cwd=tmp_path, logdir=tmp_path) as proc:
        wait_for_port(LOOPBACK, port, 20.0, proc.popen)
        yield proc, port


def sessions_per_worker(control: CliProcess, port: int) -> dict[int, int]:
    workers = psutil.Process(control.pid).children()
    return {
        w.pid: sum(
            1
            for c in w.net_connections("tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
        )
        for w in workers
    }


def test_one_scrape_shows_both_workers(tmp_path: Path) -> None:
    with (
        start_gateway(tmp_path, "--workers", "2") as (control, port),
        tcp_echo_server() as echo,
        ExitStack() as stack,
    ):
        base = f"http://{LOOPBACK}:{port}"
        wait_status(f"{base}/ready", 200)
        # connectors until each worker holds a session (the kernel picks the worker)
        for _ in range(8):
            stack.enter_context(connector(tmp_path, port, echo.port))
            spread = sessions_per_worker(control, port)
            if len(spread) == 2 and min(spread.values()) >= 1:
                break
        else:
            raise AssertionError(f"sessions never reached both workers: {spread}")
        count = sum(spread.values())
        time.sleep(PUSH_INTERVAL + 0.5)  # the other workers' figures are at most this old
        for _ in range(6):  # whichever worker answers, the figures are everyone's
            metrics = samples(http_get(f"{base}/metrics")[1])
            assert metrics[("cloud_connector_sessions", ())] == count, spread
            assert metrics[("cloud_connector_workers", ())] == 2
            assert metrics[("cloud_connector_worker_up", (("worker", "1"),))] == 1
            assert metrics[("cloud_connector_worker_up", (("worker", "2"),))] == 1
            assert metrics[("cloud_connector_ready", ())] == 1

        # a dead worker makes the gateway not ready until its replacement is up
        victim = sorted(spread)[0]
        os.kill(victim, signal.SIGKILL)
        body = wait_status(f"{base}/ready", 503, interval=0.01)
        assert body == "not ready: 1 of 2 workers up\n", body
        wait_status(f"{base}/ready", 200, timeout=20.0)
        control.signal(signal.SIGTERM)
        assert control.wait_exit(20.0) == 0, control.report()


def test_connector_metrics_flag(tmp_path: Path) -> None:
    with start_gateway(tmp_path) as (gateway, port), tcp_echo_server() as echo:
        metrics_port = free_port()
        with connector(
            tmp_path, port, echo.port, "--metrics", str(metrics_port), "--max-retry-interval", "1s"
        ) as (proc, tunnel_port):
            base = f"http://127.0.0.1:{metrics_port}"
            wait_status(f"{base}/ready", 200)
            payload = os.urandom(40_000)
            assert echo_back(tunnel_port, payload) == payload
            text = http_get(f"{base}/metrics")[1]
            label = (("remote", f"R:{LOOPBACK}:{tunnel_port}=>{echo.port}"),)
            metrics = samples(text)
            # the probe that waited for the port, then the echo
            assert metrics[("cloud_connector_connections_total", label)] == 2
            assert metrics[("cloud_connector_tunnel_received_bytes_total", label)] == 40_000
            assert metrics[("cloud_connector_sessions", ())] == 1
            # loopback only: the port alone never means every interface
            listening = [
                c.laddr
                for c in psutil.Process(proc.pid).net_connections("tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr.port == metrics_port
            ]
            assert [a.ip for a in listening] == ["127.0.0.1"], listening
            gateway.signal(signal.SIGTERM)
            assert gateway.wait_exit(20.0) == 0
            assert wait_status(f"{base}/ready", 503).startswith("not ready: ")


def test_outsystemscc_takes_metrics_and_bad_addresses_are_refused(tmp_path: Path) -> None:
    with start_gateway(tmp_path) as (_gateway, port), tcp_echo_server() as echo:
        metrics_port = free_port()
        argv = [
            *CC[:-1],
            "cc.cli.outsystemscc",
            "--metrics",
            f"127.0.0.1:{metrics_port}",
            f"http://{LOOPBACK}:{port}",
            f"R:{free_port()}:{LOOPBACK}:{echo.port}",
        ]
        with CliProcess("outsystemscc", argv, cwd=tmp_path, logdir=tmp_path):
            wait_status(f"http://127.0.0.1:{metrics_port}/ready", 200)
    for bad in ("[::1:90", "host:0", "::1:9090", "x"):
        result = run_cli([*CC, "client", "--metrics", bad, "http://x", "R:1:x:1"], cwd=tmp_path)
        assert result.returncode == 2, (bad, result.stderr)
        assert "Traceback" not in result.stderr


def test_status_command_prints_the_sessions(tmp_path: Path) -> None:
    env = clean_env(CC_ADMIN=ADMIN)
    with start_gateway(tmp_path, "--admin", ADMIN) as (_gateway, port), tcp_echo_server() as echo:
        url = f"http://{LOOPBACK}:{port}"
        empty = run_cli([*CC, "status", url], cwd=tmp_path, env=env)
        assert empty.returncode == 0, empty.stderr
        assert empty.stdout.startswith("0 session(s), gateway "), empty.stdout
        with connector(tmp_path, port, echo.port) as (_proc, tunnel_port):
            payload = os.urandom(3000)
            assert echo_back(tunnel_port, payload) == payload
            result = run_cli([*CC, "status", url, "--admin", ADMIN], cwd=tmp_path)
            assert result.returncode == 0, result.stderr
            lines = result.stdout.splitlines()
            assert lines[0].startswith("1 session(s), gateway ")
            assert lines[1].split() == [
                "user",
                "peer",
                "version",
                "since",
                "remotes",
                "open",
                "in",
                "out",
                "last",
                "error",
            ]
            row = lines[2]
            assert f"R:{LOOPBACK}:{tunnel_port}=>{echo.port}" in row
            assert "2.9 KiB" in row
        wrong = run_cli([*CC, "status", url, "--admin", "ops:nope"], cwd=tmp_path)
        assert wrong.returncode == 1
        assert "refused the request (wrong --admin credentials)" in wrong.stderr
        missing = run_cli([*CC, "status", url], cwd=tmp_path)
        assert missing.returncode == 1 and "it needs --admin user:pass" in missing.stderr
    unreachable = run_cli([*CC, "status", f"http://{LOOPBACK}:{free_port()}"], cwd=tmp_path)
    assert unreachable.returncode == 1 and "cannot fetch" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr


def test_sigterm_drain_says_not_ready(tmp_path: Path) -> None:
    """SIGTERM with a tunnelled connection open: /ready is 503 while it finishes."""
    with start_gateway(tmp_path) as (gateway, port), tcp_echo_server() as echo:
        base = f"http://{LOOPBACK}:{port}"
        with connector(tmp_path, port, echo.port) as (_proc, tunnel_port):
            held = socket.create_connection((LOOPBACK, tunnel_port), timeout=10)
            held.sendall(b"ping")
            assert held.recv(4) == b"ping"
            assert http_get(f"{base}/ready") == (200, "ready\n")
            gateway.signal(signal.SIGTERM)
            assert wait_status(f"{base}/ready", 503) == "not ready: draining\n"
            assert gateway.popen.poll() is None, "still draining"
            held.close()
            assert gateway.wait_exit(20.0) == 0, gateway.report()
