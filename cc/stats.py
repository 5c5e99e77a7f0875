"""Counters the data path bumps and SIGUSR2, /metrics and /status show.

Plain attributes keep the hot path cheap.  A gateway counts twice: per session (for
the status page) and for the whole gateway (metrics, SIGUSR2); a session's
``RemoteStats`` carries its gateway-wide twin in ``parent`` and the data path bumps
both, which costs one addition per chunk instead of summing sessions on every read.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LATENCY_BUCKETS", "OTHER", "LatencyHistogram", "RemoteStats", "SessionStats"]

#: Upper bounds (seconds) of the channel-open latency buckets: loopback opens take
#: well under a millisecond, a connector across an ocean 100-300 ms.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


@dataclass(slots=True)
class LatencyHistogram:
    """Counts per bucket (not cumulative; the last one is +Inf), their sum and count."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1

    def add(self, other: LatencyHistogram) -> None:
        for i, n in enumerate(other.counts):
            self.counts[i] += n
        self.total += other.total
        self.count += other.count

    def as_dict(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sum": self.total, "count": self.count}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyHistogram:
        counts = [int(n) for n in data.get("counts", ())]
        if len(counts) != len(LATENCY_BUCKETS) + 1:
            counts = [0] * (len(LATENCY_BUCKETS) + 1)
        return cls(counts, float(data.get("sum", 0.0)), int(data.get("count", 0)))


@dataclass(slots=True)
class RemoteStats:
    """Per remote: connections open now and in total, bytes each way through the tunnel."""

    name: str
    open: int = 0
    total: int = 0
    failed: int = 0
    #: bytes that arrived through the tunnel and were written to the local socket
    bytes_in: int = 0
    #: bytes read from the local socket and sent into the tunnel
    bytes_out: int = 0
    #: UDP datagrams dropped (over the size limit, congested, no channel)
    dropped: int = 0
    #: the gateway-wide figures a session's counts also go to (None: none)
    parent: RemoteStats | None = field(default=None, repr=False, compare=False)
    #: sessions' figures that count into these (a gateway forgets no remote they use)
    links: int = field(default=0, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "remote": self.name,
            "open": self.open,
            "total": self.total,
            "failed": self.failed,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "dropped": self.dropped,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RemoteStats:
        remote = cls(str(data["remote"]))
        for key in _COUNTS:
            setattr(remote, key, int(data.get(key, 0)))
        return remote

    def add(self, other: RemoteStats) -> None:
        """Add ``other``'s figures to ours (merging workers' snapshots)."""
        for key in _COUNTS:
            setattr(self, key, getattr(self, key) + getattr(other, key))

    # Bumps outside the TCP pipe's per-chunk path go through these (both levels).
    def count_opened(self) -> None:
        self.total += 1
        if self.parent is not None:
            self.parent.total += 1

    def count_in(self, n: int) -> None:
        self.bytes_in += n
        if self.parent is not None:
            self.parent.bytes_in += n

    def count_out(self, n: int) -> None:
        self.bytes_out += n
        if self.parent is not None:
            self.parent.bytes_out += n

    def count_failed(self) -> None:
        self.failed += 1
        if self.parent is not None:
            self.parent.failed += 1

    def count_dropped(self) -> None:
        self.dropped += 1
        if self.parent is not None:
            self.parent.dropped += 1


_COUNTS = ("open", "total", "failed", "bytes_in", "bytes_out", "dropped")
#: Where the figures of remotes beyond ``SessionStats.max_remotes`` go (the label
#: /metrics uses for the remotes beyond its own cap).
OTHER = "other"


@dataclass(slots=True)
class SessionStats:
    """What a connector or gateway (or one gateway session) knows about its tunnels."""

    state: str = "starting"
    sessions: int = 0
    reconnects: int = 0
    remotes: dict[str, RemoteStats] = field(default_factory=dict)
    #: failed logins by reason: password, token, banned, admin
    auth_failures: dict[str, int] = field(default_factory=dict)
    #: named-service clients refused because their path's queue was full, by remote
    #: (``svc:/path``, as its connections are counted)
    busy_refusals: dict[str, int] = field(default_factory=dict)
    #: how long opening a channel for an accepted connection took
    channel_open: LatencyHistogram = field(default_factory=LatencyHistogram)
    #: a gateway session's gateway-wide stats: new remotes are linked to theirs
    parent: SessionStats | None = field(default=None, repr=False, compare=False)
    #: remotes kept by name, at most (0: no bound; a session takes its gateway's); the
    #: figures of the rest go to ``other``.  A gateway's forward targets are chosen by
    #: its clients, so without it a client could grow this without end.
    max_remotes: int = field(default=0, repr=False, compare=False)
    #: a session's figures that were released (``release()``)
    released: bool = field(default=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.parent is not None and not self.max_remotes:
            self.max_remotes = self.parent.max_remotes

    def remote(self, name: str) -> RemoteStats:
        stats = self.remotes.get(name)
        if stats is None:
            stats = self._add_remote(name)
        return stats

    def _add_remote(self, name: str) -> RemoteStats:
        """A new name; when full, an old idle one makes room, or ``other`` counts it.

        Only the gateway-wide figures forget a remote (into ``other``): nothing holds
        one of them but sessions' figures (counted in ``links``) and connections
        (counted in ``open``).  A session's own remotes are held by its listeners and
        channels, so a full session counts new names in its ``other``; they go with it.
        """
        full = bool(self.max_remotes) and len(self.remotes) >= self.max_remotes
        if full and (self.parent is not None or not self._forget_one()):
            return self._other()
        parent = self.parent.remote(name) if self.parent is not None else None
        stats = self.remotes[name] = RemoteStats(name, parent=parent)
        if parent is not None and not self.released:
            parent.links += 1
        return stats

    def _forget_one(self) -> bool:
        """Fold the oldest remote that nothing uses into ``other``; False if none."""
        for name, stats in self.remotes.items():
            if stats.open == 0 and stats.links == 0 and name != OTHER:
                break
        else:
            return False
        del self.remotes[name]
        self._other().add(stats)
        return True

    def _other(self) -> RemoteStats:
        other = self.remotes.get(OTHER)
        if other is None:
            parent = self.parent._other() if self.parent is not None else None
            other = self.remotes[OTHER] = RemoteStats(OTHER, parent=parent)
        return other

    def release(self) -> None:
        """A session is over: its gateway may forget the remotes no other session uses."""
        if self.released:
            return
        self.released = True
        for stats in self.remotes.values():
            if stats.parent is not None and stats.name != OTHER:
                stats.parent.links -= 1

    def observe_channel_open(self, seconds: float) -> None:
        self.channel_open.observe(seconds)
        if self.parent is not None:
            self.parent.channel_open.observe(seconds)

    def count_auth_failure(self, reason: str, n: int = 1) -> None:
        self.auth_failures[reason] = self.auth_failures.get(reason, 0) + n

    def count_busy_refusal(self, remote: str, n: int = 1) -> None:
        self.busy_refusals[remote] = self.busy_refusals.get(remote, 0) + n

    def as_dict(self) -> dict[str, Any]:
        """JSON-able figures (a worker hands these to its control process)."""
        return {
            "state": self.state,
            "sessions": self.sessions,
            "reconnects": self.reconnects,
            "remotes": [r.as_dict() for r in self.remotes.values()],
            "auth_failures": dict(self.auth_failures),
            "busy_refusals": dict(self.busy_refusals),
            "channel_open": self.channel_open.as_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionStats:
        stats = cls(
            state=str(data.get("state", "")),
            sessions=int(data.get("sessions", 0)),
            reconnects=int(data.get("reconnects", 0)),
            auth_failures={str(k): int(v) for k, v in dict(data.get("auth_failures", {})).items()},
            busy_refusals={str(k): int(v) for k, v in dict(data.get("busy_refusals", {})).items()},
            channel_open=LatencyHistogram.from_dict(dict(data.get("channel_open", {}))),
        )
        for item in data.get("remotes", ()):
            remote = RemoteStats.from_dict(item)
            stats.remotes[remote.name] = remote
        return stats

    def add(self, other: SessionStats) -> None:
        """Add another process's figures to ours (the state is left alone)."""
        self.sessions += other.sessions
        self.reconnects += other.reconnects
        for reason, n in other.auth_failures.items():
            self.count_auth_failure(reason, n)
        for name, n in other.busy_refusals.items():
            self.count_busy_refusal(name, n)
        self.channel_open.add(other.channel_open)
        for name, remote in other.remotes.items():
            self.remote(name).add(remote)
