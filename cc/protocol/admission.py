"""Who may hold a connection before logging in: caps in total and per source.

Unauthenticated connections cost descriptors and memory and prove nothing; with
none of these caps, 1,500 idle sockets locked a real connector out of a gateway
for 43 s.  The rules, after OpenSSH's ``MaxStartups`` / ``PerSourceMaxStartups``
but kinder to the legitimate client:

* one source (see :func:`cc.protocol.authguard.source_of`) holds at most
  ``per_source`` unauthenticated connections; more are refused at once;
* in total at most ``total``; when full, the *oldest* unauthenticated connection
  is evicted to make room.  A real connector finishes its login in milliseconds,
  so the oldest ones are the idle ones an attacker keeps open, and a newcomer
  gets in instead of being refused as OpenSSH's random early drop would do.

Connections are identified by any hashable key the I/O layer chooses.
"""

from __future__ import annotations

import enum
from collections import Counter, OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field

__all__ = ["Admission", "AdmissionPolicy", "Decision", "Refusal"]


class Refusal(enum.Enum):
    """Why a connection was not admitted."""

    PER_SOURCE = "too many unauthenticated connections from this address"
    TOTAL = "too many unauthenticated connections"


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    """Caps; ``0`` disables one."""

    total: int = 512
    per_source: int = 32


@dataclass(frozen=True, slots=True)
class Decision:
    """Admit the newcomer (``refused is None``) and close ``evict`` first, or refuse it."""

    refused: Refusal | None = None
    evict: tuple[Hashable, ...] = field(default=())


class Admission:
    """Tracks unauthenticated connections; ``admit`` on accept, ``release`` on login or close."""

    def __init__(self, policy: AdmissionPolicy | None = None) -> None:
        self.policy = policy or AdmissionPolicy()
        self._pending: OrderedDict[Hashable, str] = OrderedDict()  # oldest first
        self._per_source: Counter[str] = Counter()
        self.refused: Counter[Refusal] = Counter()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._pending)

    def from_source(self, source: str) -> int:
        return self._per_source[source]

    def admit(self, key: Hashable, source: str) -> Decision:
        policy = self.policy
        if policy.per_source and self._per_source[source] >= policy.per_source:
            self.refused[Refusal.PER_SOURCE] += 1
            return Decision(Refusal.PER_SOURCE)
        evict: list[Hashable] = []
        if policy.total:
            while len(self._pending) >= policy.total:
                oldest = next(iter(self._pending))
                self.release(oldest)
                evict.append(oldest)
        self.evicted += len(evict)
        self._pending[key] = source
        self._per_source[source] += 1
        return Decision(None, tuple(evict))

    def release(self, key: Hashable) -> None:
        """The connection logged in or went away; idempotent."""
        source = self._pending.pop(key, None)
        if source is None:
            return
        self._per_source[source] -= 1
        if not self._per_source[source]:
            del self._per_source[source]
