"""What SIGUSR2 prints: process facts from psutil plus the tunnel's own counters."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterable

from cc import __version__, fastpath
from cc.stats import SessionStats

__all__ = ["collect", "format_report"]


def collect(stats: SessionStats, pids: Iterable[int] = ()) -> dict[str, object]:
    """One snapshot; ``pids`` are worker processes whose numbers are added in."""
    import psutil  # at the first report: ~1 MB of an idle process otherwise (lean.py)

    procs = [psutil.Process(os.getpid())]
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.Error:
            continue
    rss = cpu_user = cpu_system = 0.0
    fds = threads = 0
    for proc in procs:
        try:
            with proc.oneshot():
                rss += proc.memory_info().rss
                times = proc.cpu_times()
                cpu_user += times.user
                cpu_system += times.system
                fds += proc.num_fds()
                threads += proc.num_threads()
        except psutil.Error:
            continue
    me = procs[0]
    return {
        "pid": me.pid,
        "processes": len(procs),
        "uptime_s": round(time.time() - me.create_time(), 1),
        "rss_bytes": int(rss),
        "cpu_user_s": round(cpu_user, 2),
        "cpu_system_s": round(cpu_system, 2),
        "open_fds": fds,
        "threads": threads,
        "version": __version__,
        "python": platform.python_version(),
        "fastpath": fastpath.IMPLEMENTATION,
        "state": stats.state,
        "sessions": stats.sessions,
        "reconnects": stats.reconnects,
        "remotes": [r.as_dict() for r in stats.remotes.values()],
    }


def format_report(snapshot: dict[str, object]) -> list[str]:
    """Human lines, one fact each, greppable at 3 a.m."""
    mib = int(snapshot["rss_bytes"]) / (1024 * 1024)  # type: ignore[call-overload]
    lines = [
        f"stats: pid={snapshot['pid']} processes={snapshot['processes']} "
        f"uptime={snapshot['uptime_s']}s rss={mib:.1f}MiB "
        f"cpu_user={snapshot['cpu_user_s']}s cpu_system={snapshot['cpu_system_s']}s "
        f"open_fds={snapshot['open_fds']} threads={snapshot['threads']}",
        f"stats: state={snapshot['state']} sessions={snapshot['sessions']} "
        f"reconnects={snapshot['reconnects']}",
        # The pure twin costs ~2.6x throughput: a slow tunnel's first question.
        f"stats: version={snapshot['version']} python={snapshot['python']} "
        f"fastpath={snapshot['fastpath']}",
    ]
    for remote in snapshot["remotes"]:  # type: ignore[attr-defined]
        lines.append(
            f"stats: remote {remote['remote']} open={remote['open']} total={remote['total']} "
            f"failed={remote['failed']} bytes_in={remote['bytes_in']} "
            f"bytes_out={remote['bytes_out']}"
        )
    return lines
