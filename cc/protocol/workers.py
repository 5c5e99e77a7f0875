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


@dataclass
class _Claim:
    key: str | None
    owners: set[Hashable] = field(default_factory=set)


class PortClaims:
    """Who holds each reverse port: one exclusive owner, or owners with one share key.

    The gateway asks before it binds, so a session can never join a port it was
    not meant to, even though SO_REUSEPORT would let any process of ours bind it.
    """

    def __init__(self) -> None:
        self._claims: dict[int, _Claim] = {}

    def claim(self, port: int, key: str | None, owner: Hashable) -> bool:
        """True if ``owner`` may bind ``port``: it is free, or shared with the same key."""
        held = self._claims.get(port)
        if held is None:
            self._claims[port] = _Claim(key, {owner})
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

    def holders(self, port: int) -> int:
        held = self._claims.get(port)
        return len(held.owners) if held else 0
