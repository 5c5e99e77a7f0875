"""Counters the data path bumps and SIGUSR2 prints; plain attributes keep the hot path cheap."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RemoteStats", "SessionStats"]


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

    def as_dict(self) -> dict[str, object]:
        return {
            "remote": self.name,
            "open": self.open,
            "total": self.total,
            "failed": self.failed,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        }


@dataclass(slots=True)
class SessionStats:
    """What a connector or gateway knows about its tunnel sessions."""

    state: str = "starting"
    sessions: int = 0
    reconnects: int = 0
    remotes: dict[str, RemoteStats] = field(default_factory=dict)

    def remote(self, name: str) -> RemoteStats:
        stats = self.remotes.get(name)
        if stats is None:
            stats = self.remotes[name] = RemoteStats(name)
        return stats
