"""Failed logins cost the guesser, not the gateway: per-source penalties and bans.

Without this one SSH connection tried 1,000 passwords in 0.3 s and four made
80,000 guesses in 20 s, each failure writing a log line.  The policy follows
OpenSSH (``MaxAuthTries``, ``PerSourcePenalties``):

* a source is an IPv4 address or an IPv6 /64 (one host owns a whole /64);
* its first ``free_failures`` failures cost nothing (typos happen); each one after
  that delays the answer, doubling from ``base_delay`` up to ``max_delay``;
* ``ban_after`` failures within ``window`` ban the source for ``ban_time``,
  doubling for a source banned again, up to ``max_ban_time``;
* a success forgets the source's failures (not its running ban);
* sources are forgotten after ``window`` without failures, and at most
  ``max_sources`` are kept (the oldest go first), so the table stays bounded
  however many addresses an attacker has;
* with ``--workers`` the counts live in memory every worker shares
  (:mod:`cc.protocol.authslots`), so spreading connections over the workers does
  not multiply the budget.

The same guard serves SSH passwords, tokens and HTTP Basic credentials: what
failed does not matter, who keeps failing does.  :class:`FailureLog` turns a
flood of failures into one line per source per interval.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

__all__ = [
    "AuthGuard",
    "FailureLog",
    "FailureRecord",
    "FailureTable",
    "GuardPolicy",
    "LocalFailures",
    "Penalty",
    "source_of",
]


def source_of(address: str) -> str:
    """The unit of blame for a peer address (``host`` or ``host:port``, IPv6 in brackets)."""
    host = address
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    """How failures are punished; the defaults slow a guesser to about one try per 8 s."""

    free_failures: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    ban_after: int = 20
    ban_time: float = 300.0
    max_ban_time: float = 3600.0
    window: float = 600.0
    max_sources: int = 65536


@dataclass(frozen=True, slots=True)
class Penalty:
    """What one failure costs: wait ``delay`` before answering; ``banned_for`` if it banned."""

    delay: float
    failures: int
    banned_for: float | None = None


@dataclass(slots=True)
class FailureRecord:
    """One source's standing: failures in the current window, and its ban."""

    failures: int = 0
    last_failure: float = 0.0
    banned_until: float = 0.0
    bans: int = 0


T = TypeVar("T")


class FailureTable(Protocol):
    """Where the records live: this process (:class:`LocalFailures`) or memory that every
    worker of a gateway shares (:class:`cc.protocol.authslots.SlotFailures`), so that a
    guesser spreading connections over the workers still has one budget.

    Each call is one step with nothing awaited inside, so a shared table can hold its
    lock for exactly that long.
    """

    def __len__(self) -> int: ...

    def peek(self, source: str) -> FailureRecord | None:
        """A copy of ``source``'s record (None: it has none)."""
        ...

    def update(
        self, source: str, now: float, change: Callable[[FailureRecord], T], *, create: bool
    ) -> T | None:
        """Apply ``change`` to ``source``'s record (made if ``create``, else None if absent)."""
        ...


class LocalFailures:
    """One process's records: at most ``max_sources``, forgotten after ``window``."""

    def __init__(self, window: float, max_sources: int) -> None:
        self.window = window
        self.max_sources = max_sources
        self._sources: OrderedDict[str, FailureRecord] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sources)

    def peek(self, source: str) -> FailureRecord | None:
        return self._sources.get(source)

    def update(
        self, source: str, now: float, change: Callable[[FailureRecord], T], *, create: bool
    ) -> T | None:
        self._expire(now)
        record = self._sources.pop(source, None)
        if record is None:
            if not create:
                return None
            record = FailureRecord()
            while len(self._sources) >= self.max_sources:
                self._sources.popitem(last=False)
        self._sources[source] = record  # most recently changed last
        return change(record)

    def _expire(self, now: float) -> None:
        """Drop sources idle for a window and not banned (oldest first, so it stops early)."""
        while self._sources:
            source, record = next(iter(self._sources.items()))
            if now - record.last_failure <= self.window or record.banned_until > now:
                return
            del self._sources[source]


class AuthGuard:
    """Per-source failure counts; the I/O layer asks before and reports after each login.

    ``table``: where the counts live; by default this process's memory.
    """

    def __init__(
        self, policy: GuardPolicy | None = None, table: FailureTable | None = None
    ) -> None:
        self.policy = policy or GuardPolicy()
        # not ``table or ...``: an empty table is falsy
        self.table: FailureTable = (
            table
            if table is not None
            else LocalFailures(self.policy.window, self.policy.max_sources)
        )

    def __len__(self) -> int:
        return len(self.table)

    def banned_for(self, source: str, now: float) -> float:
        """Seconds left of ``source``'s ban (0.0 when it may try)."""
        record = self.table.peek(source)
        if record is None:
            return 0.0
        return max(0.0, record.banned_until - now)

    def failed(self, source: str, now: float) -> Penalty:
        """Count a failure; the answer says how long to stall and whether it banned."""
        penalty = self.table.update(source, now, lambda r: self._failed(r, now), create=True)
        assert penalty is not None
        return penalty

    def _failed(self, record: FailureRecord, now: float) -> Penalty:
        policy = self.policy
        if now - record.last_failure > policy.window:
            record.failures = 0
        record.failures += 1
        record.last_failure = now
        over = record.failures - policy.free_failures
        # the exponent is capped: failures go on counting during a ban, and 2.0**1100
        # does not fit a float
        delay = (
            0.0 if over <= 0 else min(policy.max_delay, policy.base_delay * 2 ** min(over - 1, 64))
        )
        if record.failures >= policy.ban_after and record.banned_until <= now:
            ban = min(policy.max_ban_time, policy.ban_time * 2**record.bans)
            record.bans += 1
            record.banned_until = now + ban
            record.failures = 0
            return Penalty(delay, policy.ban_after, ban)
        return Penalty(delay, record.failures)

    def succeeded(self, source: str) -> None:
        """A good login: its earlier failures were typos, not guesses.

        Looks first and writes only if there is something to forget, so a clean
        source's login costs one look-up, also in a shared table.
        """
        record = self.table.peek(source)
        if record is not None and record.failures:
            self.table.update(source, record.last_failure, _forget_failures, create=False)


def _forget_failures(record: FailureRecord) -> None:
    record.failures = 0


class FailureLog:
    """Rate-limited failure lines: the first from a source at once, then one summary per interval.

    ``record()`` returns the line to log now, if any; ``flush()`` (called from a
    timer) returns the summaries that are due, such as ``17 failed logins from
    10.0.0.7 in the last 60 s``.  A source that went quiet is forgotten, so its
    next failure is logged at once again.  Beyond ``max_sources`` pending sources
    the rest are counted together, so the log stays bounded too.
    """

    OTHERS = "other addresses"

    def __init__(
        self,
        what: str = "failed logins",
        interval: float = 60.0,
        max_sources: int = 10000,
        *,
        about: str = "from",
    ) -> None:
        self.what = what
        self.interval = interval
        self.max_sources = max_sources
        #: how a line ties ``what`` to its key: "from" an address, "for" a path ...
        self.about = about
        #: source -> [start of its interval, failures not yet logged]
        self._pending: dict[str, list[float]] = {}

    def record(self, source: str, now: float, detail: str) -> str | None:
        entry = self._pending.get(source)
        if entry is None and len(self._pending) >= self.max_sources:
            source = self.OTHERS
            entry = self._pending.setdefault(source, [now, 0])
        if entry is None:
            self._pending[source] = [now, 0]
            return (
                f"{detail} (more {self.what} {self.about} {source} are summarised every "
                f"{self.interval:.0f} s)"
            )
        entry[1] += 1
        return None

    def flush(self, now: float) -> list[str]:
        lines = []
        for source, entry in list(self._pending.items()):
            started, count = entry
            if now - started < self.interval:
                continue
            if count:
                lines.append(
                    f"{count:.0f} {self.what} {self.about} {source} in the last "
                    f"{now - started:.0f} s"
                )
                self._pending[source] = [now, 0]
            else:
                del self._pending[source]
        return lines
