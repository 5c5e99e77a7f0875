"""The ``--udp-*`` limits, apart from the UDP data path so a CLI can check them cheaply."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_SIZE", "MAX_DATAGRAM", "UDPSettings"]

#: chisel's default ``UDP_MAX_SIZE``: the largest datagram it relays.
DEFAULT_MAX_SIZE = 9012
#: The largest UDP payload over IPv4.
MAX_DATAGRAM = 65507


@dataclass(frozen=True, slots=True)
class UDPSettings:
    """Limits of the UDP data path, shared by both sides (``--udp-*`` options)."""

    #: sender mappings kept per channel; the least recently used is evicted beyond it
    max_senders: int = 10_000
    #: seconds without traffic after which a mapping is closed (``math.inf``: never)
    idle_timeout: float = 15.0
    #: largest datagram relayed; larger ones are dropped
    max_size: int = DEFAULT_MAX_SIZE
    #: channel send-buffer bytes beyond which datagrams are dropped instead of queued
    channel_buffer: int = 1 << 20

    def __post_init__(self) -> None:
        if self.max_senders < 1:
            raise ValueError("udp max senders must be at least 1")
        if not self.idle_timeout > 0:
            raise ValueError("udp idle timeout must be positive")
        if not 1 <= self.max_size <= MAX_DATAGRAM:
            raise ValueError(f"udp max size must be in 1..{MAX_DATAGRAM}")
        if self.channel_buffer < 1:
            raise ValueError("udp channel buffer must be positive")

    @property
    def decoder_limit(self) -> int:
        """Largest gob message accepted from a peer.

        Generous (a full 64 KiB datagram plus its ``Src``), so a peer with a larger
        ``UDP_MAX_SIZE`` costs only the dropped datagram, not the whole channel; a
        chisel listener never re-opens a channel it lost until its SSH session ends.
        """
        return max(self.max_size, 65535) + 1024
