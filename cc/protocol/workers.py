"""Which remotes each connector worker serves, and who may share a reverse port.

A connector with ``--workers N`` runs N sessions.  Against our gateway every
session offers each TCP reverse remote and the gateway binds the port once per
session with SO_REUSEPORT, so the kernel spreads connections over the sessions
and one dying session does not take the port down.  A stock chisel gateway
cannot share a port, so there the reverse remotes are split among the sessions.
Forward TCP remotes are local listeners: every worker binds them with
SO_REUSEPORT whatever the gateway is.  UDP and stdio remotes keep one owner.

The gateway lets a session join a port only with the same *share key* as the
holder: the authenticated user, the connector's random group secret and the
remote itself.  A different connector, even of the same user, cannot join.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

from cc.protocol.remote import Proto, Remote

__all__ = [
    "GROUP_HEADER",
    "PortClaims",
    "assigned_to",
    "client_identity",
    "forward_plan",
    "is_shareable",
    "reverse_plan",
    "share_key",
]

#: Upgrade header with the connector's group secret (only when it runs workers).
GROUP_HEADER = "X-Cloud-Connector-Group"


def is_shareable(remote: Remote) -> bool:
    """TCP remotes (including SOCKS) can be served by several sessions at once."""
    return not remote.stdio and remote.local_proto is Proto.TCP


def assigned_to(position: int, index: int, count: int) -> bool:
    """Round-robin ownership of the ``position``-th unshareable remote."""
    return position % count == index


def forward_plan(remotes: Sequence[Remote], index: int, count: int) -> tuple[Remote, ...]:
    """Forward (and stdio) remotes worker ``index`` listens for locally."""
    return _plan([r for r in remotes if not r.reverse], index, count, share=True)


def reverse_plan(
    remotes: Sequence[Remote], index: int, count: int, gateway_shares: bool
) -> tuple[Remote, ...]:
    """Reverse remotes worker ``index`` asks the gateway for."""
    return _plan([r for r in remotes if r.reverse], index, count, share=gateway_shares)


def _plan(remotes: list[Remote], index: int, count: int, share: bool) -> tuple[Remote, ...]:
    """Shareable remotes go to every worker (if ``share``); the rest round-robin."""
    chosen: list[Remote] = []
    lone = 0
    for remote in remotes:
        if share and is_shareable(remote):
            chosen.append(remote)
            continue
        if assigned_to(lone, index, count):
            chosen.append(remote)
        lone += 1
    return tuple(chosen)


def share_key(user: str, group: str, remote: Remote) -> str:
    """Sessions with equal keys may share ``remote``'s port; the secret is not kept."""
    material = "\0".join((user, group, str(remote), remote.target()))
    return hashlib.sha256(material.encode()).hexdigest()


def client_identity(user: str, token_digest: bytes | None) -> str:
    """Who a session is, for reverse ports: its user and its token, hashed.

    A port held by the same identity may be our own stale session (retry, and the
    gateway evicts it if it stays silent); a different identity is another client,
    and the port is refused at once.
    """
    material = b"cc-client\0" + user.encode("utf-8", "surrogateescape") + b"\0"
    return hashlib.sha256(material + (token_digest or b"")).hexdigest()[:32]


@dataclass
class _Claim:
    key: str | None
    owners: set[Hashable] = field(default_factory=set)
    #: the ``client_identity`` of whoever claimed it first (None: not told)
    identity: str | None = None


class PortClaims:
    """Who holds each reverse port: one exclusive owner, or owners with one share key.

    The gateway asks before it binds, so a session can never join a port it was
    not meant to, even though SO_REUSEPORT would let any process of ours bind it.
    """

    def __init__(self) -> None:
        self._claims: dict[int, _Claim] = {}

    def claim(
        self, port: int, key: str | None, owner: Hashable, identity: str | None = None
    ) -> bool:
        """True if ``owner`` may bind ``port``: it is free, or shared with the same key."""
        held = self._claims.get(port)
        if held is None:
            self._claims[port] = _Claim(key, {owner}, identity)
            return True
        if key is not None and held.key == key:
            held.owners.add(owner)
            return True
        return False

    def release(self, port: int, owner: Hashable) -> None:
        held = self._claims.get(port)
        if held is None:
            return
        held.owners.discard(owner)
        if not held.owners:
            del self._claims[port]

    def release_owners(self, predicate: Callable[[Hashable], bool]) -> None:
        """Drop every claim whose owner matches (a worker process that died)."""
        for port in list(self._claims):
            held = self._claims[port]
            held.owners = {o for o in held.owners if not predicate(o)}
            if not held.owners:
                del self._claims[port]

    def identity(self, port: int) -> str | None:
        """The ``client_identity`` holding ``port`` (None: free, or not told)."""
        held = self._claims.get(port)
        return held.identity if held else None

    def holders(self, port: int) -> int:
        held = self._claims.get(port)
        return len(held.owners) if held else 0
