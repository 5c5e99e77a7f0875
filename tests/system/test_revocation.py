"""A user removed from ``--authfile`` loses its live sessions on every ``--workers`` worker.

Real processes on 127.0.0.1: ``cloud-connector server --authfile F --reverse
--workers 2`` with connectors of alice on both workers and one of bob; F is
rewritten without alice (an atomic rename, as deployers do) and within the
reload interval every worker has reloaded it and every reverse port of alice
refuses, each worker logged the closing of its sessions, alice's connectors
give up, and bob's tunnel works on.
"""

from __future__ import annotations

import json
import os
import re
import time
from contextlib import ExitStack
from pathlib import Path

import psutil

from tests.support.cli import start_gateway
from tests.support.net import LOOPBACK, echo_back, free_port, port_refuses, tcp_echo_server
from tests.support.processes import CC, CliProcess

__all__: list[str] = []

FINGERPRINT = re.compile(r"server: Fingerprint (\S+)")
#: FileWatcher polls once a second; the session must be gone within that and a margin.
RELOAD_INTERVAL = 1.0
MARGIN = 1.5
MAX_CONNECTORS = 10


def _workers(control: CliProcess, count: int, timeout: float = 15.0) -> list[int]:
    """The control process's children once ``count`` of them serve."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = psutil.Process(control.pid).children()
        if len(children) == count and len(FINGERPRINT.findall(control.stdout())) >= count:
            return sorted(c.pid for c in children)
        time.sleep(0.05)
    raise AssertionError(f"expected {count} workers\n{control.report()}")


def _worker_of(connector: CliProcess, gateway_port: int, workers: list[int]) -> int:
    """The gateway worker holding ``connector``'s session (by the TCP connection's ends)."""
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        ours = {
            c.laddr.port
            for c in psutil.Process(connector.pid).net_connections("tcp")
            if c.raddr and c.raddr.port == gateway_port and c.status == psutil.CONN_ESTABLISHED
        }
        for pid in workers:
            for conn in psutil.Process(pid).net_connections("tcp"):
                if conn.raddr and conn.raddr.port in ours and conn.laddr.port == gateway_port:
                    return pid
        time.sleep(0.05)
    raise AssertionError(f"no worker holds the session of {connector.name}\n{connector.report()}")


def _write_atomically(path: Path, entries: dict[str, list[str]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(entries))
    os.replace(tmp, path)


def test_removed_user_loses_its_sessions_on_every_worker(tmp_path: Path) -> None:
    authfile = tmp_path / "users.json"
    authfile.write_text(json.dumps({"alice:pw": [""], "bob:pw": [""]}))
    with (
        start_gateway(tmp_path, "--authfile", str(authfile), "--workers", "2") as (control, port),
        tcp_echo_server() as echo,
        ExitStack() as stack,
    ):
        workers = _workers(control, 2)
        fingerprint = FINGERPRINT.findall(control.stdout())[0]

        def connector(user: str) -> tuple[CliProcess, int]:
            tunnel = free_port()
            argv = [*CC, "client", "--auth", f"{user}:pw", "--fingerprint", fingerprint]
            argv += [f"http://{LOOPBACK}:{port}", f"R:{LOOPBACK}:{tunnel}:{LOOPBACK}:{echo.port}"]
            proc = stack.enter_context(
                CliProcess(f"{user}-{tunnel}", argv, cwd=tmp_path, logdir=tmp_path)
            )
            proc.wait_listening(tunnel)
            return proc, tunnel

        bob, bob_port = connector("bob")
        # alice until she has a session on each worker (the kernel picks the worker)
        alice: dict[int, int] = {}  # tunnel port -> worker pid
        procs: list[CliProcess] = []
        while set(alice.values()) != set(workers):
            assert len(alice) < MAX_CONNECTORS, f"sessions all on one worker: {alice}"
            proc, tunnel = connector("alice")
            procs.append(proc)
            alice[tunnel] = _worker_of(proc, port, workers)
        for tunnel in [*alice, bob_port]:
            assert echo_back(tunnel, b"before") == b"before"

        mark = len(control.lines())
        _write_atomically(authfile, {"bob:pw": [""]})
        written = time.monotonic()
        open_ports = set(alice)
        while open_ports:
            open_ports = {p for p in open_ports if not port_refuses(p)}
            assert time.monotonic() - written < RELOAD_INTERVAL + MARGIN, (
                f"still accepting: {open_ports}\n{control.report()}"
            )
            time.sleep(0.01)
        refused = time.monotonic() - written
        # each worker polls the file on its own clock: until both did, a connector whose
        # session was closed may log in again on the other worker, and lose it there
        control.wait_for_text(f"Reloaded {authfile}", count=2, timeout=RELOAD_INTERVAL + MARGIN)
        reloaded = time.monotonic() - written
        print(f"file rewrite -> alice's reverse ports refuse: {refused:.3f}s")
        print(f"file rewrite -> both workers reloaded: {reloaded:.3f}s")
        assert reloaded < RELOAD_INTERVAL + MARGIN

        # alice's connectors cannot log in again and give up; her ports stay closed
        for proc in procs:
            assert proc.wait_exit(15.0) != 0, proc.report()
            assert "authentication failed" in proc.text("both"), proc.report()
        assert all(port_refuses(p) for p in alice)
        closed = [
            line
            for line in control.lines()[mark:]
            if re.search(
                r"Closed session of user 'alice' from 127\.0\.0\.1:\d+: "
                r"user removed from the authfile$",
                line,
            )
        ]
        assert len(closed) >= len(alice), "\n".join(control.lines()[mark:])
        tags = {m.group(1) for line in closed if (m := re.search(r"\[worker (\d)\]", line))}
        assert tags == {"1", "2"}, closed
        # bob's tunnel is untouched
        assert echo_back(bob_port, b"after") == b"after"
        assert bob.popen.poll() is None
        assert "Closed session of user 'bob'" not in control.stdout()
