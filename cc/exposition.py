"""The Prometheus side of ``/metrics``: a :class:`cc.metrics.Figures` snapshot as text.

Only ``cc.metrics.exposition`` imports this module, at the first scrape: most
processes are never scraped, and prometheus-client brings http.server, email and
urllib with it (~3 MB of an idle process).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from cc import __version__
from cc.metrics import AUTH_REASONS, MAX_LABEL_LENGTH, MAX_REMOTE_LABELS, OTHER, PREFIX, Figures
from cc.stats import LATENCY_BUCKETS, RemoteStats, SessionStats

__all__ = ["FiguresCollector", "render"]


def _label(name: str, labels: Mapping[str, object]) -> str:
    """``name`` as a label beside ``labels``: cut short, ``other`` once there are enough."""
    label = name[:MAX_LABEL_LENGTH]
    return OTHER if label not in labels and len(labels) >= MAX_REMOTE_LABELS else label


def _bounded(remotes: Iterable[RemoteStats]) -> dict[str, RemoteStats]:
    """Remote figures by label: the first MAX_REMOTE_LABELS, the rest in ``other``."""
    out: dict[str, RemoteStats] = {}
    for remote in remotes:
        label = _label(remote.name, out)
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
            label = _label(remote, counts)
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


def render(figures: Figures) -> bytes:
    """Our families only, in Prometheus' text format (version 0.0.4)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FiguresCollector(figures))
    return generate_latest(registry)
