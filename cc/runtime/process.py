"""Process plumbing shared by every command: uvloop, signals, pid file, SIGUSR2 stats.

chisel registers signal 31 as "SIGUSR2", which is SIGSYS on Linux, so a real
SIGUSR2 prints nothing there; we answer the real ``signal.SIGUSR2``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path

from cc.log import get_logger
from cc.procstats import collect, format_report
from cc.runtime.heap import HeapTrimmer, tune_allocator
from cc.runtime.objalloc import ObjectAllocator
from cc.runtime.reclaim import BURSTS
from cc.stats import SessionStats

__all__ = [
    "PidFile",
    "PidFileError",
    "install_signals",
    "new_event_loop",
    "raise_descriptor_limit",
    "tune_allocator",
]

#: Most descriptors asked for when the hard limit is unlimited.
_DESCRIPTORS_WANTED = 1 << 20


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the soft descriptor limit to the hard one; (before, after).

    Go programs (chisel, and so outsystemscc) do this when they start; a Python
    process keeps the soft limit, which a shell or a container often sets to 1,024:
    a gateway with a thousand tunnelled connections then failed its accepts while
    chisel went on.  Nothing here uses ``select()``, so descriptors past 1,024 are
    fine; a limit that cannot be raised is left as it is.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _DESCRIPTORS_WANTED if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, wanted


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (it is a dependency on Linux), asyncio otherwise.

    With the heap tuned for packet buffers, the loop also gives freed heap back to
    the system every few seconds (cc.runtime.heap), and what a burst of connections
    left once it is over (cc.runtime.reclaim).  ``CC_BURST_ALLOCATOR=0`` keeps
    pymalloc for every object (the reclaim then trims what it can without it).
    """
    loop = _plain_event_loop()
    allocator = None
    if tune_allocator():
        trimmer = HeapTrimmer.for_this_process()
        if trimmer is not None:
            trimmer.start(loop)
        if os.environ.get("CC_BURST_ALLOCATOR", "1").lower() not in ("0", "false", "no", "off"):
            allocator = ObjectAllocator.for_this_process()
    BURSTS.enable(allocator.use_heap if allocator is not None else None)
    return loop


def _plain_event_loop() -> asyncio.AbstractEventLoop:
    if os.environ.get("CC_NO_UVLOOP"):
        return asyncio.new_event_loop()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - non-Linux
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class PidFileError(OSError):
    """``--pid`` could not write its file (read-only or odd working directory)."""


class PidFile:
    """Writes our pid on enter, removes the file on exit (only if it is still ours)."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None

    def __enter__(self) -> PidFile:
        if self.path is not None:
            tmp = self.path.with_name(self.path.name + ".tmp")
            try:
                tmp.write_text(f"{os.getpid()}\n")
                tmp.replace(self.path)
            except OSError as exc:
                # One clear line for the CLI (run_async prints OSErrors as they are).
                raise PidFileError(
                    f"cannot write pid file {self.path}: {exc.strerror or exc}"
                ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.path is None:
            return
        with contextlib.suppress(OSError):
            if self.path.read_text().strip() == str(os.getpid()):
                self.path.unlink()


def install_signals(
    loop: asyncio.AbstractEventLoop,
    *,
    component: str,
    stop: Callable[[str], None],
    stats: SessionStats,
    hup: Callable[[], None] | None = None,
    worker_pids: Callable[[], list[int]] | None = None,
    on_usr2: Callable[[], None] | None = None,
) -> None:
    """SIGINT/SIGTERM -> stop(name); SIGHUP -> hup(); SIGUSR2 -> print stats.

    With workers, the process figures are summed over them and ``on_usr2`` passes
    the signal on, so each worker prints its own sessions and remotes.
    """
    log = get_logger(component)

    def on_stop(sig: signal.Signals) -> None:
        name = "interrupt" if sig == signal.SIGINT else "terminated"
        log.info("Graceful shutdown signal received: %s", name)
        stop(name)

    def print_stats() -> None:
        for line in format_report(collect(stats, worker_pids() if worker_pids else [])):
            log.info("%s", line)
        if on_usr2 is not None:
            on_usr2()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_stop, sig)
    loop.add_signal_handler(signal.SIGUSR2, print_stats)
    if hup is not None:
        loop.add_signal_handler(signal.SIGHUP, hup)
