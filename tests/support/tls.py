"""Certificates for the TLS and proxy tests: a throwaway trustme CA per test, files
under ``tmp_path``.

trustme covers every certificate these tests need (it takes ``not_before`` and
``not_after``, so an expired leaf needs no hand-built X.509).  The gateway side is
a plain ``ssl.SSLContext`` (what ``GatewayConfig.tls`` takes) whose
``sni_callback`` records every ClientHello's server name: one entry per TLS
handshake the gateway saw, so tests can count attempts and check the SNI.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import trustme

__all__ = ["LeafFiles", "Pki", "ServerTLS"]


@dataclass(frozen=True)
class LeafFiles:
    """A leaf certificate (chain) and its key, as PEM files."""

    leaf: trustme.LeafCert
    cert: Path
    key: Path


@dataclass
class ServerTLS:
    """A gateway's server context and the SNI of each handshake it has seen."""

    context: ssl.SSLContext
    server_names: list[str | None] = field(default_factory=list)


class Pki:
    """One CA (its PEM in ``ca_pem``) issuing leaves into ``directory``."""

    def __init__(self, directory: Path, name: str = "ca") -> None:
        self.directory = directory
        self.ca = trustme.CA(organization_name=f"cloud-connector test {name}")
        self.ca_pem = directory / f"{name}.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_pem))
        self._name = name
        self._issued = 0

    def issue(
        self,
        *identities: str,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> LeafFiles:
        """A leaf for ``identities`` (DNS names or IPs), written as cert chain + key."""
        self._issued += 1
        leaf = self.ca.issue_cert(*identities, not_before=not_before, not_after=not_after)
        stem = self.directory / f"{self._name}-leaf{self._issued}"
        cert, key = stem.with_suffix(".crt"), stem.with_suffix(".key")
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        return LeafFiles(leaf, cert, key)

    def expired(self, *identities: str) -> LeafFiles:
        """A leaf that was valid for one day, a year ago."""
        now = datetime.datetime.now(datetime.UTC)
        start = now - datetime.timedelta(days=366)
        return self.issue(
            *identities, not_before=start, not_after=start + datetime.timedelta(days=1)
        )

    def server(self, leaf: LeafFiles, *, client_ca: Pki | None = None) -> ServerTLS:
        """What ``cloud-connector server --tls-cert --tls-key [--tls-ca]`` builds, in-process."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(leaf.cert), str(leaf.key))
        if client_ca is not None:
            ctx.load_verify_locations(cafile=str(client_ca.ca_pem))
            ctx.verify_mode = ssl.CERT_REQUIRED
        tls = ServerTLS(ctx)

        def record_sni(_sock: object, server_name: str | None, _ctx: ssl.SSLContext) -> None:
            tls.server_names.append(server_name)

        ctx.sni_callback = record_sni
        return tls
