"""``server --workers 2``: a password guesser has one budget per gateway, not per worker.

Each worker used to count failed logins alone, so a guesser whose connections the
kernel spread over N workers had N budgets.  Here the failures alternate between
the two workers on purpose (each connection is kept only if the worker we want
accepted it, as psutil shows), and the ban must come after the configured number
in total.  Real processes, real sockets, real SSH; the attacker is 127.0.0.2.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import time
from pathlib import Path

import psutil

from tests.support.cli import start_gateway
from tests.support.guesser import GuessResult, Refused, guess_passwords, open_websocket_from
from tests.support.processes import CliProcess

__all__: list[str] = []

ATTACKER = "127.0.0.2"
FRIEND = "127.0.0.3"
RIGHT = "right-password"
FINGERPRINT = re.compile(r"server: Fingerprint (\S+)")


def _workers(control: CliProcess, count: int = 2, timeout: float = 20.0) -> list[int]:
    """The control process's children once ``count`` of them serve."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = psutil.Process(control.pid).children()
        if len(children) == count and len(FINGERPRINT.findall(control.stdout())) >= count:
            return sorted(c.pid for c in children)
        time.sleep(0.05)
    raise AssertionError(f"expected {count} workers\n{control.report()}")


def _acceptor(workers: list[int], port: int, client: tuple[str, int]) -> int | None:
    """The worker that holds the accepted end of ``client``'s connection, if any yet."""
    for pid in workers:
        for conn in psutil.Process(pid).net_connections("tcp"):
            if (
                conn.laddr
                and conn.laddr.port == port
                and conn.raddr
                and (conn.raddr.ip, conn.raddr.port) == client
            ):
                return pid
    return None


def _listens(pid: int, port: int) -> bool:
    return any(
        c.status == psutil.CONN_LISTEN and c.laddr.port == port
        for c in psutil.Process(pid).net_connections("tcp")
    )


async def _connection_to(worker: int, workers: list[int], port: int, source: str) -> socket.socket:
    """A connection from ``source`` that ``worker`` accepted (the others are closed unused)."""
    loop = asyncio.get_running_loop()
    for _ in range(200):
        sock = socket.socket()
        sock.setblocking(False)
        sock.bind((source, 0))
        await loop.sock_connect(sock, ("127.0.0.1", port))
        client = sock.getsockname()
        deadline = time.monotonic() + 5.0
        owner = None
        while owner is None and time.monotonic() < deadline:
            owner = _acceptor(workers, port, client)
            if owner is None:
                await asyncio.sleep(0.01)
        if owner == worker:
            return sock
        sock.close()
    raise AssertionError(f"worker {worker} never accepted a connection")


async def _one_guess(worker: int, workers: list[int], port: int, password: str) -> GuessResult:
    sock = await _connection_to(worker, workers, port, ATTACKER)
    return await guess_passwords(ATTACKER, port, "alice", iter([password]), sock=sock)


async def _refused_on(worker: int, workers: list[int], port: int, source: str) -> int:
    """The status a fresh upgrade from ``source`` gets from ``worker`` (101: let in)."""
    sock = await _connection_to(worker, workers, port, source)
    try:
        wst = await open_websocket_from(source, port, sock=sock)
    except Refused as exc:
        return exc.status
    wst.close()
    return 101


def _gateway_args(budget: int, ban: str) -> list[str]:
    return [
        "--workers",
        "2",
        "--auth",
        f"alice:{RIGHT}",
        "--max-auth-failures",
        str(budget),
        "--auth-ban-time",
        ban,
    ]


async def _spend_budget(workers: list[int], port: int, budget: int) -> None:
    """``budget`` wrong passwords, one per connection, alternating workers."""
    for n in range(budget):
        result = await _one_guess(workers[n % 2], workers, port, f"guess-{n}")
        assert result.tries == 1 and result.accepted is None, (n, result)


async def test_failures_on_both_workers_share_one_budget_that_expires(tmp_path: Path) -> None:
    budget, ban = 6, 6.0
    with start_gateway(tmp_path, *_gateway_args(budget, "6s")) as (control, port):
        workers = _workers(control)
        # failures 1..5 alternate between the workers: 3 on one, 2 on the other, no ban
        for n in range(budget - 1):
            result = await _one_guess(workers[n % 2], workers, port, f"guess-{n}")
            assert result.tries == 1 and result.accepted is None, (n, result)
        for worker in workers:
            assert await _refused_on(worker, workers, port, ATTACKER) == 101
        # the 6th (3 on each worker now) bans the address on both workers
        before_ban = time.monotonic()
        await _one_guess(workers[1], workers, port, "guess-last")
        control.wait_for_line(r"Banned 127\.0\.0\.2 for 6 s after 6 failed logins", 10.0)
        for worker in workers:
            assert await _refused_on(worker, workers, port, ATTACKER) == 429
        # each worker saw failures of its own (their log lines carry the worker)
        log = control.stdout()
        for tag in ("[worker 1]", "[worker 2]"):
            assert re.search(rf"{re.escape(tag)} .*Login failed for user: alice", log), log
        assert log.count("Banned 127.0.0.2") == 1, log
        # another address is not touched
        for worker in workers:
            sock = await _connection_to(worker, workers, port, FRIEND)
            friend = await guess_passwords(FRIEND, port, "alice", iter([RIGHT]), sock=sock)
            assert friend.accepted == "yes", friend
        # the ban lasts as configured (it began after before_ban), then ends on both
        await asyncio.sleep(max(0.0, before_ban + ban - 1.0 - time.monotonic()))
        assert await _refused_on(workers[0], workers, port, ATTACKER) == 429
        await asyncio.sleep(max(0.0, before_ban + ban + 1.5 - time.monotonic()))
        for worker in workers:
            result = await _one_guess(worker, workers, port, RIGHT)
            assert result.accepted == "yes", (worker, result)


async def test_a_restarted_worker_keeps_the_ban(tmp_path: Path) -> None:
    budget = 4
    with start_gateway(tmp_path, *_gateway_args(budget, "60s")) as (control, port):
        workers = _workers(control)
        await _spend_budget(workers, port, budget)
        control.wait_for_line(r"Banned 127\.0\.0\.2 for 60 s after 4 failed logins", 10.0)
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            now = sorted(c.pid for c in psutil.Process(control.pid).children())
            if len(now) == 2 and workers[0] not in now:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"worker not restarted\n{control.report()}")
        fresh = next(pid for pid in now if pid not in workers)
        while not _listens(fresh, port):
            assert time.monotonic() < deadline, control.report()
            await asyncio.sleep(0.05)
        assert await _refused_on(fresh, now, port, ATTACKER) == 429
        assert await _refused_on(workers[1], now, port, ATTACKER) == 429
