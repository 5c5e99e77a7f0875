"""CPU seconds and RSS of a tunnel's processes, each counted with its descendants.

A tunnel has roles ("gateway": the side whose port clients connect to, "connector":
the side next to the service). Each role is one process tree, so workers a program
forks (sshd's per-connection processes, our future SO_REUSEPORT workers) are included.
``ForeignLoad`` measures the opposite: CPU the rest of the machine used meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Mapping
from types import TracebackType

import psutil

__all__ = [
    "MB",
    "ForeignLoad",
    "MachineBusy",
    "RssPeak",
    "cpu_seconds",
    "memory_bytes",
    "rss_bytes",
    "wait_quiet",
]

MB = 1e6


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def cpu_seconds(roles: Mapping[str, int]) -> dict[str, float]:
    """User + system CPU seconds so far of each role's process tree."""
    out: dict[str, float] = {}
    for role, pid in roles.items():
        total = 0.0
        for proc in _tree(pid):
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        out[role] = total
    return out


def rss_bytes(roles: Mapping[str, int]) -> dict[str, int]:
    """Resident set size now of each role's process tree."""
    out: dict[str, int] = {}
    for role, pid in roles.items():
        total = 0
        for proc in _tree(pid):
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        out[role] = total
    return out


def memory_bytes(roles: Mapping[str, int]) -> dict[str, dict[str, int]]:
    """RSS, PSS and USS now of each role's process tree.

    RSS counts shared library pages in every process; PSS splits them between the
    processes that share them and USS leaves them out: what one more process costs
    is between USS and PSS, which is why both are reported beside RSS.
    """
    out: dict[str, dict[str, int]] = {}
    for role, pid in roles.items():
        total = {"rss": 0, "pss": 0, "uss": 0}
        for proc in _tree(pid):
            with contextlib.suppress(psutil.Error):
                info = proc.memory_full_info()
                for key in total:
                    total[key] += int(getattr(info, key, 0))
        out[role] = total
    return out


class RssPeak:
    """Sample RSS every ``interval`` seconds in a thread while the block runs; keep the max."""

    def __init__(self, roles: Mapping[str, int], interval: float = 0.1) -> None:
        self.roles = dict(roles)
        self.interval = interval
        self.peak: dict[str, int] = {role: 0 for role in self.roles}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-peak", daemon=True)

    def _sample(self) -> None:
        while True:
            for role, value in rss_bytes(self.roles).items():
                self.peak[role] = max(self.peak[role], value)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _system_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (not idle, not waiting on I/O)."""
    t = psutil.cpu_times()
    total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    return float(total - t.idle - getattr(t, "iowait", 0.0))


def _own_seconds() -> float:
    """CPU seconds of this process, its reaped children and its live descendants."""
    times = os.times()
    total = times.user + times.system + times.children_user + times.children_system
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            cpu = proc.cpu_times()
            total += cpu.user + cpu.system
    return total


class _CoresBusy:
    """Cores kept busy while the block ran: CPU seconds of ``_seconds()`` per wall second."""

    def __init__(self) -> None:
        self.cores = 0.0

    @staticmethod
    def _seconds() -> float:
        raise NotImplementedError

    def __enter__(self) -> _CoresBusy:
        self._start = (time.monotonic(), self._seconds())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        wall0, busy0 = self._start
        wall = time.monotonic() - wall0
        self.cores = max(0.0, (self._seconds() - busy0) / wall) if wall > 0 else 0.0


class ForeignLoad(_CoresBusy):
    """How many cores the rest of the machine kept busy while the block ran.

    Other work on a 2-core machine skews every figure; this says by how much. It is
    busy CPU time system-wide minus the bench's own process tree, per wall second.
    """

    @staticmethod
    def _seconds() -> float:
        return _system_busy_seconds() - _own_seconds()


class MachineBusy(_CoresBusy):
    """How many cores the whole machine kept busy while the block ran (all programs).

    Says whether a run was CPU-bound: a figure near the core count means no spare
    core existed for another worker to use.
    """

    @staticmethod
    def _seconds() -> float:
        return _system_busy_seconds()


def wait_quiet(max_seconds: float, threshold: float = 0.25, window: float = 1.0) -> float:
    """Wait up to ``max_seconds`` for other programs to use under ``threshold`` cores
    (measured over ``window`` seconds); return the last load measured."""
    deadline = time.monotonic() + max_seconds
    while True:
        with ForeignLoad() as others:
            time.sleep(window)
        if others.cores < threshold or time.monotonic() >= deadline:
            return others.cores
