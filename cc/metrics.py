"""What ``/metrics`` shows, built at scrape time from the counters the data path keeps.

Nothing here counts: :class:`cc.exposition.FiguresCollector` is a prometheus-client
custom collector that turns a :class:`Figures` snapshot (``cc.stats`` plus readiness, the
fast path and the workers) into metric families when Prometheus asks, so the data
path keeps its plain integer bumps and the figures SIGUSR2 prints are the ones
scraped.  With ``--workers``, a snapshot of every worker is merged first (see
:mod:`cc.runtime.figures` for how they travel).

Labels are bounded and carry no secret: ``remote`` is a remote's text as
configured (``R:8081:10.0.0.5:80``) or a channel's target, the first
:data:`MAX_REMOTE_LABELS` of them, the rest summed under ``remote="other"``;
never a client address, user or token.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cc.stats import SessionStats

__all__ = [
    "CONTENT_TYPE",
    "MAX_REMOTE_LABELS",
    "PREFIX",
    "Figures",
    "exposition",
    "merge",
]

PREFIX = "cloud_connector"
#: Prometheus' text format, version 0.0.4 (every scraper reads it).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Distinct ``remote`` label values at most; a gateway's forward targets are chosen
#: by its clients, so without a bound a client could grow the series without end.
MAX_REMOTE_LABELS = 64
#: Longest ``remote`` label value kept whole.
MAX_LABEL_LENGTH = 120
OTHER = "other"
#: Reasons of ``auth_failures`` always shown (at 0 when none happened yet).
AUTH_REASONS = ("password", "token", "banned", "admin")


@dataclass
class Figures:
    """One process's figures, or several workers' merged: what a scrape shows."""

    #: "gateway" or "connector"
    role: str
    stats: SessionStats
    #: what /ready answers: listening (gateway) or connected (connector), not draining
    ready: bool
    #: fast path: "cython" or "python", and the packets it sealed and opened
    fast_path: str = "python"
    sealed: int = 0
    opened: int = 0
    #: 0-based indexes of the worker processes that reported (empty: no --workers)
    workers: list[int] = field(default_factory=list)
    #: the gateway's session rows for /status (cc.protocol.status), when --admin is on
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: how many worker processes there should be (1 without --workers)
    expected_workers: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "stats": self.stats.as_dict(),
            "ready": self.ready,
            "fast_path": self.fast_path,
            "sealed": self.sealed,
            "opened": self.opened,
            "workers": list(self.workers),
            "rows": self.rows,
            "expected_workers": self.expected_workers,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Figures:
        return cls(
            role=str(data.get("role", "")),
            stats=SessionStats.from_dict(dict(data.get("stats", {}))),
            ready=bool(data.get("ready", False)),
            fast_path=str(data.get("fast_path", "python")),
            sealed=int(data.get("sealed", 0)),
            opened=int(data.get("opened", 0)),
            workers=[int(w) for w in data.get("workers", ())],
            rows=list(data.get("rows", ())),
            expected_workers=int(data.get("expected_workers", 1)),
        )


def merge(own: Figures, others: Iterable[Figures], expected: int) -> Figures:
    """Every worker's figures as one process's: counts summed, rows joined.

    Ready only when ``expected`` workers reported and each of them is ready.
    """
    stats = SessionStats(state=own.stats.state)
    stats.add(own.stats)
    merged = Figures(
        role=own.role,
        stats=stats,
        ready=own.ready,
        fast_path=own.fast_path,
        sealed=own.sealed,
        opened=own.opened,
        workers=list(own.workers),
        rows=list(own.rows),
        expected_workers=expected,
    )
    for other in others:
        stats.add(other.stats)
        merged.ready = merged.ready and other.ready
        merged.sealed += other.sealed
        merged.opened += other.opened
        merged.workers += other.workers
        merged.rows += other.rows
    merged.workers.sort()
    merged.ready = merged.ready and len(set(merged.workers)) >= expected
    return merged


def exposition(figures: Figures) -> bytes:
    """The text a scrape gets: only our families (a worker's process figures would mislead).

    prometheus-client (~3 MB with the http.server, email and urllib it imports) loads
    with the first scrape, so a process that is never scraped does not carry it.
    """
    from cc.exposition import render

    return render(figures)
