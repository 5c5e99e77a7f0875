"""What a connector is told to do: the gateway, the remotes, and how to behave.

Apart from the connector itself so that the command line (and a ``--workers``
control process, which never connects) can build and check it without loading
the SSH stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cc import __version__
from cc.protocol.remote import Remote
from cc.protocol.workers import forward_plan, reverse_plan
from cc.transport.tls import TLSOptions
from cc.tunnel.udp.settings import UDPSettings

__all__ = ["ConnectorConfig"]


@dataclass
class ConnectorConfig:
    server: Any  # urllib SplitResult of the gateway URL
    remotes: list[Remote]
    fingerprint: str = ""
    auth: tuple[str, str] = ("", "")
    #: --identity: an OpenSSH private key (bytes of the file) to log in with
    identity: bytes | None = None
    #: --ssh-ciphers: the ciphers offered, most preferred first (None: today's default)
    ssh_ciphers: tuple[str, ...] | None = None
    keepalive: float = 25.0
    keepalive_timeout: float = 10.0
    max_retry_count: int = -1  # -1: unlimited
    max_retry_interval: float = 300.0
    headers: list[tuple[str, str]] = field(default_factory=list)
    hostname: str | None = None
    proxy: str | None = None
    tls: TLSOptions | None = None
    user_agent: str = f"cloud-connector/{__version__}"
    config_version: str = __version__
    connect_timeout: float = 30.0
    #: outsystemscc: GET the URL first and follow a redirect's Location
    preflight: bool = False
    #: outsystemscc: ``id=...&ports=...`` appended to the WebSocket URL
    extra_query: str = ""
    #: send our peer header (larger packets with our gateway); outsystemscc does not,
    #: so that its upgrade request stays exactly the original's
    announce: bool = True
    #: on SIGTERM, how long open connections may take to finish
    drain_timeout: float = 10.0
    #: only a session that lasted this long restarts the backoff at 100 ms (chisel: 5 s);
    #: shorter ones keep backing off, so a gateway that drops every session is not hammered
    backoff_reset_after: float = 5.0
    #: --udp-max-senders, --udp-idle-timeout, --udp-max-size
    udp: UDPSettings = field(default_factory=UDPSettings)
    #: --workers: this process is worker ``worker_index`` of ``worker_count``
    worker_index: int = 0
    worker_count: int = 1
    #: the secret all workers of this connector send, so our gateway lets their
    #: sessions share reverse ports (see cc.protocol.workers)
    group: str | None = None
    #: --identifier: names the HTTP API gateway's targets.yaml may route by
    identifiers: list[str] = field(default_factory=list)
    #: --http-target: ``host:port`` (canonical) the HTTP API gateway may ask us to dial
    http_targets: list[str] = field(default_factory=list)

    def forward_remotes(self) -> tuple[Remote, ...]:
        return forward_plan(self.remotes, self.worker_index, self.worker_count)

    def session_remotes(self, gateway_shares: bool) -> tuple[Remote, ...]:
        """What this worker's session asks for: its forward and its reverse remotes."""
        reverse = reverse_plan(self.remotes, self.worker_index, self.worker_count, gateway_shares)
        return self.forward_remotes() + reverse
