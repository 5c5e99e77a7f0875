"""What ``/metrics`` shows, built at scrape time from the counters the data path keeps.

Nothing here counts: :class:`FiguresCollector` is a prometheus-client custom
collector that turns a :class:`Figures` snapshot (``cc.stats`` plus readiness, the
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

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from cc import __version__
from cc.stats import LATENCY_BUCKETS, RemoteStats, SessionStats

__all__ = [
    "CONTENT_TYPE",
    "MAX_REMOTE_LABELS",
    "PREFIX",
    "Figures",
    "FiguresCollector",
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


def _bounded(remotes: Iterable[RemoteStats]) -> dict[str, RemoteStats]:
    """Remote figures by label: the first MAX_REMOTE_LABELS, the rest in ``other``."""
    out: dict[str, RemoteStats] = {}
    for remote in remotes:
        label = remote.name[:MAX_LABEL_LENGTH]
        if label not in out and len(out) >= MAX_REMOTE_LABELS:
            label = OTHER
        if label not in out:
            out[label] = RemoteStats(label)
        out[label].add(remote)
    return out


def _name(suffix: str) -> str:
    return f"{PREFIX}_{suffix}"


class FiguresCollector(Collector):
    """A prometheus-client custom collector over one :class:`Figures` snapshot."""

    def __init__(self, figures: Figures) -> None:
        self.figures = figures

    def describe(self) -> list[Metric]:
        return []  # unchecked: families depend on the figures (role, workers)

    def collect(self) -> Iterator[Metric]:
        f = self.figures
        stats = f.stats
        info = GaugeMetricFamily(
            _name("info"),
            "Version, role and fast path of this process",
            labels=["version", "role", "fast_path"],
        )
        info.add_metric([__version__, f.role, f.fast_path], 1)
        yield info
        yield GaugeMetricFamily(
            _name("ready"),
            "1 when /ready answers 200 (listening or connected, not draining, every worker up)",
            value=1 if f.ready else 0,
        )
        yield GaugeMetricFamily(
            _name("workers"),
            "Worker processes whose figures this scrape holds (1 without --workers)",
            value=len(f.workers) or 1,
        )
        if f.workers:
            up = GaugeMetricFamily(
                _name("worker_up"), "1 for each worker that reported", labels=["worker"]
            )
            for index in f.workers:
                up.add_metric([str(index + 1)], 1)
            yield up
        yield GaugeMetricFamily(
            _name("sessions"),
            "Tunnel sessions connected now (gateway: connectors; connector: 0 or 1 per worker)",
            value=stats.sessions,
        )
        if f.role == "connector":
            yield CounterMetricFamily(
                _name("reconnects"),
                "Reconnect attempts after a session ended or a dial failed",
                value=stats.reconnects,
            )
        else:
            failures = CounterMetricFamily(
                _name("auth_failures"),
                "Refused logins by reason: password, token, banned (source banned), admin",
                labels=["reason"],
            )
            reasons = {reason: 0 for reason in AUTH_REASONS} | stats.auth_failures
            for reason, n in sorted(reasons.items()):
                failures.add_metric([reason], n)
            yield failures
            if stats.busy_refusals:
                yield self._busy(stats)
        yield from self._remotes(stats)
        yield self._latency(stats)
        packets = CounterMetricFamily(
            _name("fast_path_packets"),
            "SSH packets sealed (send) and opened (receive) by the fast path",
            labels=["direction"],
        )
        packets.add_metric(["send"], f.sealed)
        packets.add_metric(["receive"], f.opened)
        yield packets

    @staticmethod
    def _remotes(stats: SessionStats) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "open": GaugeMetricFamily(
                _name("connections_open"), "Tunnelled connections open now", labels=["remote"]
            ),
            "total": CounterMetricFamily(
                _name("connections"),
                "Tunnelled connections (or UDP channels) opened",
                labels=["remote"],
            ),
            "failed": CounterMetricFamily(
                _name("connections_failed"),
                "Tunnelled connections that failed (channel refused, dial failed)",
                labels=["remote"],
            ),
            "bytes_in": CounterMetricFamily(
                _name("tunnel_received_bytes"),
                "Bytes that came out of the tunnel and were written to the local socket",
                labels=["remote"],
            ),
            "bytes_out": CounterMetricFamily(
                _name("tunnel_sent_bytes"),
                "Bytes read from the local socket and sent into the tunnel",
                labels=["remote"],
            ),
            "dropped": CounterMetricFamily(
                _name("udp_dropped_datagrams"),
                "UDP datagrams dropped (too large, congested, no channel)",
                labels=["remote"],
            ),
        }
        for label, remote in _bounded(stats.remotes.values()).items():
            for key, family in families.items():
                family.add_metric([label], getattr(remote, key))
        yield from families.values()

    @staticmethod
    def _busy(stats: SessionStats) -> Metric:
        busy = CounterMetricFamily(
            _name("named_service_busy_refusals"),
            "Named-service clients refused with 503 at once because --remoted-max-waiting "
            "clients already waited for their path's server",
            labels=["remote"],
        )
        counts: dict[str, int] = {}
        for remote, n in stats.busy_refusals.items():
            label = remote[:MAX_LABEL_LENGTH]
            if label not in counts and len(counts) >= MAX_REMOTE_LABELS:
                label = OTHER
            counts[label] = counts.get(label, 0) + n
        for label, n in counts.items():
            busy.add_metric([label], n)
        return busy

    @staticmethod
    def _latency(stats: SessionStats) -> Metric:
        histogram = stats.channel_open
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, n in zip((*LATENCY_BUCKETS, float("inf")), histogram.counts, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        family = HistogramMetricFamily(
            _name("channel_open_seconds"),
            "Time to open the SSH channel for an accepted connection (or UDP sender)",
        )
        family.add_metric([], buckets, histogram.total)
        return family


def exposition(figures: Figures) -> bytes:
    """The text a scrape gets: only our families (a worker's process figures would mislead)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FiguresCollector(figures))
    return generate_latest(registry)
