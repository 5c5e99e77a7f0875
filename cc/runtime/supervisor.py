"""The control process of ``cloud-connector server --workers N`` and ``client --workers N``.

Each worker is a full gateway or connector process.  Gateway workers share the
listening port with SO_REUSEPORT, so the kernel spreads connectors (and their
SSH sessions) over the cores, and claim reverse ports through this process;
connector workers each keep their own session.  The supervisor starts them,
restarts one that dies (with backoff, so a worker that cannot start does not
spin), stops everything when one exits with a fatal code or stops on purpose
with a reason (``cc.runtime.report``: a port in use, retries run out), forwards
SIGTERM/SIGINT, SIGUSR2 (and SIGHUP to connectors), and reports process
figures summed over all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
from collections.abc import Collection, Coroutine, Sequence
from typing import Any

from cc.gateway.ports import REGISTRY_FD_ENV, serve_worker_claims
from cc.log import get_logger
from cc.protocol.backoff import Backoff
from cc.protocol.workers import PortClaims
from cc.runtime.figures import FIGURES_FD_ENV, WORKER_COUNT_ENV, FiguresBoard, serve_worker_figures
from cc.runtime.report import REPORT_FD_ENV, ReportPipe
from cc.runtime.sharedfailures import FAILURES_FD_ENV, SharedFailures

__all__ = ["WORKER_ENV", "Supervisor"]

#: Set in a worker's environment to its index; the server or client command then
#: serves (or connects) itself instead of supervising.
WORKER_ENV = "CC_WORKER_INDEX"
#: A worker that ran this long before dying is restarted without waiting.
HEALTHY_AFTER = 10.0
STOP_TIMEOUT = 15.0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the worker gets SIGTERM if the supervisor dies, so none is orphaned."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Supervisor:
    """Keep ``count`` workers running ``argv`` until ``stop()``.

    ``port_claims``: serve reverse-port claims to the workers (gateway workers).
    ``failures``: the failed-login table every worker maps (gateway workers), so a
    guesser has one budget however the kernel spreads its connections.
    ``fatal_codes``: a worker exiting with one of these stops everything and
    ``run()`` returns the code (a connector refused by its gateway must not be
    restarted for ever).  So does a worker that exits non-zero after reporting
    why (``cc.runtime.report``): it stopped on purpose, and its siblings would
    stop for the same reason.  ``reason`` is then the first worker's reason.
    Every worker also gets a socket for its figures (cc.runtime.figures), so
    that one scrape shows them all.
    """

    def __init__(
        self,
        argv: Sequence[str],
        count: int,
        stdin_data: bytes | None = None,
        *,
        port_claims: PortClaims | None = None,
        failures: SharedFailures | None = None,
        fatal_codes: Collection[int] = (),
        component: str = "server",
    ) -> None:
        self.argv = list(argv)
        self.count = count
        self.stdin_data = stdin_data
        self.port_claims = port_claims
        self.failures = failures
        self.fatal_codes = frozenset(fatal_codes)
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.restarts = 0
        self.exit_code = 0
        #: why the first worker that stopped everything stopped (None: unknown)
        self.reason: str | None = None
        self._reports: dict[int, ReportPipe] = {}
        self._stopping = False
        self._stopped = asyncio.Event()
        self._worker_links: set[asyncio.Task[None]] = set()
        self.figures = FiguresBoard()
        self.log = get_logger(f"{component}.supervisor")

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values() if p.returncode is None]

    async def _start(self, index: int) -> asyncio.subprocess.Process:
        report = self._reports[index] = ReportPipe()
        env = {
            **os.environ,
            WORKER_ENV: str(index),
            WORKER_COUNT_ENV: str(self.count),
            REPORT_FD_ENV: str(report.child_fd),
        }
        pass_fds = [report.child_fd]
        if self.failures is not None:
            env[FAILURES_FD_ENV] = str(self.failures.fd)
            pass_fds.append(self.failures.fd)
        ours = theirs = None
        if self.port_claims is not None:
            ours, theirs = socket.socketpair()
            env[REGISTRY_FD_ENV] = str(theirs.fileno())
            pass_fds.append(theirs.fileno())
        figures_ours, figures_theirs = socket.socketpair()
        env[FIGURES_FD_ENV] = str(figures_theirs.fileno())
        pass_fds.append(figures_theirs.fileno())
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                env=env,
                stdin=asyncio.subprocess.PIPE
                if self.stdin_data is not None
                else asyncio.subprocess.DEVNULL,
                pass_fds=pass_fds,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        except BaseException:
            if ours is not None:
                ours.close()
            report.close()
            figures_ours.close()
            raise
        finally:
            report.started()
            if theirs is not None:
                theirs.close()
            figures_theirs.close()
        if ours is not None and self.port_claims is not None:
            self._serve_worker(serve_worker_claims(ours, self.port_claims, index))
        self._serve_worker(serve_worker_figures(figures_ours, self.figures, index))
        if self.stdin_data is not None and proc.stdin is not None:
            proc.stdin.write(self.stdin_data)
            with contextlib.suppress(ConnectionError):
                await proc.stdin.drain()
            proc.stdin.close()
        self.procs[index] = proc
        self.log.info("worker %d started (pid %d)", index + 1, proc.pid)
        return proc

    def _serve_worker(self, coro: Coroutine[Any, Any, None]) -> None:
        """A task that talks with one worker over its socket until the worker is gone."""
        task = asyncio.ensure_future(coro)
        self._worker_links.add(task)
        task.add_done_callback(self._worker_links.discard)

    async def _keep(self, index: int) -> None:
        """Run worker ``index``; restart it with backoff whenever it dies."""
        backoff = Backoff(max_delay=30.0)
        loop = asyncio.get_running_loop()
        while not self._stopping:
            started = loop.time()
            proc = await self._start(index)
            code = await proc.wait()
            reason = self._reports.pop(index).read()
            if self._stopping:
                return
            if code in self.fatal_codes or (code != 0 and reason is not None):
                self.log.error(
                    "worker %d (pid %d) exited with status %d; stopping", index + 1, proc.pid, code
                )
                self.exit_code = code
                self.reason = reason
                self.stop()
                return
            if loop.time() - started >= HEALTHY_AFTER:
                backoff.reset()
            delay = backoff.next_delay()
            self.restarts += 1
            self.log.warning(
                "worker %d (pid %d) exited with status %s; restarting in %.1fs",
                index + 1,
                proc.pid,
                code,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopped.wait()

    async def run(self) -> int:
        """Until ``stop()``: then every worker has been signalled and reaped.

        Returns 0, or the fatal status a worker exited with.
        """
        keepers = [asyncio.ensure_future(self._keep(i)) for i in range(self.count)]
        await self._stopped.wait()
        await self._terminate()
        for keeper in keepers:
            keeper.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
        await asyncio.gather(*self._worker_links, return_exceptions=True)
        for report in self._reports.values():
            report.close()
        self._reports.clear()
        return self.exit_code

    def stop(self) -> None:
        self._stopping = True
        self._stopped.set()

    def signal_workers(self, sig: signal.Signals) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    async def _terminate(self) -> None:
        """SIGTERM (workers drain their connections), bounded wait, then SIGKILL."""
        self.signal_workers(signal.SIGTERM)
        waiting = [p.wait() for p in self.procs.values() if p.returncode is None]
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await asyncio.gather(*waiting)
        except TimeoutError:
            self.log.warning("workers still running after %.0fs; killing them", STOP_TIMEOUT)
            self.signal_workers(signal.SIGKILL)
            await asyncio.gather(*(p.wait() for p in self.procs.values()))
