"""Idle sockets must not lock a connector out (issue 11, weak spot 5).

Measured before the fix: with the gateway at 1,024 descriptors, 1,500 idle
half-open sockets locked a real connector out for 43 s and the gateway logged
nothing while its accepts failed.  Here the gateway is the real CLI with that
descriptor limit, the idle sockets come from 47 loopback addresses
(127.0.0.2-48, 32 each, the per-source cap), and the connector from 127.0.0.1
must be connected within 2 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest

from cc.connector.config import ConnectorConfig
from cc.connector.connector import Connector
from cc.protocol.remote import parse_remote
from tests.support.net import LOOPBACK, free_port
from tests.support.processes import CC, CliProcess

__all__: list[str] = []

IDLE_SOCKETS = 1500


def descriptor_limit(limit: int) -> Callable[[], None]:
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


@pytest.fixture
def enough_descriptors() -> Iterator[None]:
    """This test process holds the attacker's sockets: raise its own soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < IDLE_SOCKETS + 500:
        pytest.skip(f"the hard descriptor limit ({hard}) is below {IDLE_SOCKETS + 500}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, IDLE_SOCKETS + 500), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.contextmanager
def gateway(tmp_path: Path, limit: int, *flags: str) -> Iterator[tuple[CliProcess, int]]:
    port = free_port()
    argv = [*CC, "server", "--reverse", "--host", LOOPBACK, "--port", str(port), *flags]
    with CliProcess(
        "gateway", argv, cwd=tmp_path, logdir=tmp_path, preexec_fn=descriptor_limit(limit)
    ) as proc:
        proc.wait_listening(port, 15)
        yield proc, port


def open_idle(port: int, count: int, per_source: int = 32) -> list[socket.socket]:
    """``count`` connections that never send a byte, ``per_source`` per loopback address."""
    held = []
    for n in range(count):
        source = f"127.0.0.{2 + n // per_source}"
        sock = socket.socket()
        sock.setblocking(False)
        sock.bind((source, 0))
        with contextlib.suppress(BlockingIOError):
            sock.connect((LOOPBACK, port))
        held.append(sock)
    return held


def time_to_connect(port: int) -> float:
    """Seconds until an in-process connector from 127.0.0.1 is connected (10 s at most)."""

    async def run() -> float:
        config = ConnectorConfig(
            server=urlsplit(f"http://{LOOPBACK}:{port}"),
            remotes=[parse_remote(f"R:127.0.0.1:{free_port()}:127.0.0.1:9")],
            max_retry_count=20,
            max_retry_interval=0.2,
            connect_timeout=5.0,
            drain_timeout=0.5,
        )
        connector = Connector(config)
        started = time.monotonic()
        task = asyncio.ensure_future(connector.run())
        try:
            async with asyncio.timeout(10):
                await connector.connected.wait()
            return time.monotonic() - started
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    return asyncio.run(run())


def closed_count(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the gateway has closed (EOF or reset)."""
    closed = 0
    for sock in socks:
        try:
            if sock.recv(1) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    return closed


@pytest.mark.timeout(120)
def test_connector_gets_in_past_1500_idle_sockets(tmp_path: Path, enough_descriptors: None) -> None:
    with gateway(tmp_path, 1024) as (proc, port):
        held = open_idle(port, IDLE_SOCKETS)
        try:
            time.sleep(2.0)  # the gateway has accepted (and evicted) what it will
            fds = psutil.Process(proc.pid).num_fds()
            took = time_to_connect(port)
            print(
                f"\nconnector in after {took:.2f}s past {IDLE_SOCKETS} idle sockets; "
                f"gateway held {fds} descriptors of 1024"
            )
            assert took < 2.0, proc.report()
            assert fds < 1024
            assert "Out of file descriptors" not in proc.stderr() + proc.stdout()
        finally:
            for sock in held:
                sock.close()
        proc.assert_no_traceback()


@pytest.mark.timeout(120)
def test_out_of_descriptors_resets_and_logs_instead_of_stalling(
    tmp_path: Path, enough_descriptors: None
) -> None:
    """Caps lifted and 64 descriptors: accepts run out.  The gateway says so once,
    resets what it cannot serve (nothing waits in the backlog), and serves again
    as soon as descriptors are free."""
    flags = ("--max-unauthenticated", "0", "--max-unauthenticated-per-source", "0")
    with gateway(tmp_path, 64, *flags) as (proc, port):
        held = open_idle(port, 200, per_source=200)
        try:
            proc.wait_for_text("Out of file descriptors", timeout=10)
            time.sleep(1.0)
            reset = closed_count(held)
            print(f"\n{reset} of 200 idle connections reset for want of descriptors")
            assert reset > 100
        finally:
            for sock in held:
                sock.close()
        took = time_to_connect(port)
        assert took < 2.0, proc.report()
        assert (proc.stderr() + proc.stdout()).count("Out of file descriptors: resetting") == 1
        proc.assert_no_traceback()
