"""``--workers`` for the server and the client: how many, and the control process.

With more than one worker the command becomes a control process that runs the
same command line N times as workers (``CC_WORKER_INDEX`` set), restarts a
crashed one, passes signals on and sums the workers' figures for SIGUSR2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Collection

from cc.log import get_logger
from cc.runtime.supervisor import WORKER_ENV

__all__ = [
    "AUTO_WORKERS_CAP",
    "AUTO_WORKERS_MIN_CPUS",
    "auto_workers",
    "supervise",
    "usable_cpus",
    "worker_count",
    "worker_index",
]

#: ``--workers auto`` is the number of usable CPUs, but at most this: every worker
#: is a process with its own memory, and a big box does not need 64 sessions.
AUTO_WORKERS_CAP = 8
#: At or below this many CPUs ``auto`` means one process: a second worker finds no idle
#: core (the tunnel, the services and the kernel already share two), so it buys ~1x
#: throughput for a control process and another ~50 MB of RSS.
AUTO_WORKERS_MIN_CPUS = 3


def worker_count(text: str) -> int | None:
    """argparse type: a positive count, or ``auto`` (None: decided by ``auto_workers``)."""
    if text.strip().lower() == "auto":
        return None
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or 'auto': {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return count


def usable_cpus() -> int:
    """The CPUs this process may run on (a container's cpuset, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def auto_workers(cpus: int | None = None) -> int:
    """``--workers auto``: one per usable CPU, at most 8; one on a machine of 2 or fewer.

    ``cpus`` replaces the machine's count (tests, and callers that know better).
    """
    count = usable_cpus() if cpus is None else cpus
    if count < AUTO_WORKERS_MIN_CPUS:
        return 1
    return min(count, AUTO_WORKERS_CAP)


def worker_index() -> int | None:
    """This process's index if it is a worker, else None."""
    value = os.environ.get(WORKER_ENV)
    return int(value) if value is not None and value.isdigit() else None


async def supervise(
    *,
    prog: str,
    component: str,
    command: list[str],
    count: int,
    stdin_data: bytes | None,
    pid_path: str | None,
    share_ports: bool = False,
    share_failures: bool = False,
    fatal_codes: Collection[int] = (),
    forward_hup: bool = False,
    what: str = "",
) -> int:
    """Run ``count`` workers of ``cloud-connector <command...>`` until a signal stops us.

    ``share_ports``: reverse ports are claimed here; ``share_failures``: the workers
    count failed logins in one table (gateway workers, both).

    Returns 0 after SIGINT/SIGTERM, or the status of a worker that exited with
    one of ``fatal_codes`` or with a reported reason (the others were stopped); that
    reason is printed here, once, rather than by every worker.
    """
    from cc.cli.common import fail
    from cc.protocol.workers import PortClaims
    from cc.runtime.process import PidFile, install_signals
    from cc.runtime.sharedfailures import SharedFailures
    from cc.runtime.supervisor import Supervisor
    from cc.stats import SessionStats

    argv = [sys.executable, "-m", "cc.cli.main", *command]
    failures = SharedFailures() if share_failures else None
    supervisor = Supervisor(
        argv,
        count,
        stdin_data,
        port_claims=PortClaims() if share_ports else None,
        failures=failures,
        fatal_codes=fatal_codes,
        component=component,
    )
    stats = SessionStats(state=f"supervising {count} workers")
    install_signals(
        asyncio.get_running_loop(),
        component=component,
        stop=lambda _: supervisor.stop(),
        stats=stats,
        hup=(lambda: supervisor.signal_workers(signal.SIGHUP)) if forward_hup else None,
        worker_pids=supervisor.pids,
        on_usr2=lambda: supervisor.signal_workers(signal.SIGUSR2),
    )
    get_logger(component).info("Starting %d workers%s", count, what)
    try:
        with PidFile(pid_path):
            status = await supervisor.run()
    finally:
        if failures is not None:
            failures.close()
    if status != 0 and supervisor.reason is not None:
        fail(prog, supervisor.reason, status)
    return status
