"""Targets for the gateway's and connector's decisions: the retry verdict and the
pre-login state machines (AuthGuard, FailureLog, Admission), driven by event
sequences the fuzzer writes and held to their invariants (Admission to a model).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from .common import Reader, check

__all__ = [
    "MAX_EVENTS",
    "admission",
    "authguard",
    "failure_log",
    "state_seeds",
    "verdict",
]

#: Events per input: the machines are small, longer runs only repeat states more slowly.
MAX_EVENTS = 64

_SOURCES = (
    "10.0.0.1",
    "10.0.0.2:4000",
    "[2001:db8::1]:5",
    "[2001:db8::2]:6",
    "[::ffff:10.0.0.1]:7",
)


def verdict(data: bytes) -> None:
    from cc.protocol.verdict import (
        Action,
        auth_failure_verdict,
        config_reply_verdict,
        upgrade_verdict,
    )

    reader = Reader(data)
    status, flags = reader.below(1000), reader.byte()
    reason = reader.text()
    answer = upgrade_verdict(status, reason)
    check(answer.action is not Action.OK, "a refused upgrade is not OK")
    check((answer.action is Action.FATAL) == (status in (401, 403)), f"{status}: {answer}")
    check(auth_failure_verdict(reason).action is Action.FATAL, "auth failure retried")
    ok, closed, reply = bool(flags & 1), bool(flags & 2), reader.rest()
    answer = config_reply_verdict(ok, reply, closed)
    check((answer.action is Action.OK) == (ok and not reply), f"config {ok} {reply!r}: {answer}")
    check(answer.action is Action.OK or bool(answer.reason), "a verdict without a reason")


def _source(reader: Reader) -> str:
    """A peer address as the I/O layer writes it (``ip:port``, ``[v6]:port``) -> its source."""
    from cc.protocol.authguard import source_of

    pick = reader.byte()
    if pick < 200:
        return source_of(_SOURCES[pick % len(_SOURCES)])
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    if pick & 1:
        ip = ipaddress.IPv6Address(reader.take(16).ljust(16, b"\0"))
        address = f"[{ip}]:{reader.below(65536)}" if pick & 2 else str(ip)
    else:
        ip = ipaddress.IPv4Address(reader.take(4).ljust(4, b"\0"))
        address = f"{ip}:{reader.below(65536)}" if pick & 2 else str(ip)
    source = source_of(address)
    check(source == source_of(str(ip)), f"the port changes the source of {address!r}")
    check(source_of(source) == source, f"source_of({address!r}) = {source!r} is not stable")
    return source


def authguard(data: bytes) -> None:
    """Failures cost more, bans stick and are reported, the table stays bounded."""
    from cc.protocol.authguard import AuthGuard, GuardPolicy

    reader = Reader(data)
    policy = GuardPolicy(
        free_failures=reader.below(5),
        base_delay=reader.below(4) / 2,
        max_delay=reader.below(16) / 2,
        ban_after=reader.below(8) + 1,
        ban_time=reader.below(8) + 1.0,
        max_ban_time=reader.below(32) + 1.0,
        window=float(reader.below(64)),
        max_sources=reader.below(4) + 1,
    )
    guard = AuthGuard(policy)
    now = 1000.0
    succeeded: set[str] = set()
    for _ in range(MAX_EVENTS):
        if not reader:
            break
        op, source = reader.below(4), _source(reader)
        now += reader.below(16) / 2
        if op == 0:
            banned_before = guard.banned_for(source, now)
            penalty = guard.failed(source, now)
            check(0 <= penalty.delay <= max(policy.max_delay, 0), f"delay {penalty}")
            check(penalty.failures >= 1, f"failures {penalty}")
            # failures during a ban keep counting; the first one after it bans again
            check(banned_before > 0 or penalty.failures <= policy.ban_after, f"{penalty}")
            if source in succeeded:
                check(penalty.failures == 1, f"failures counted across a success: {penalty}")
            succeeded.discard(source)
            if penalty.banned_for is not None:
                check(banned_before == 0, f"banned again while banned: {penalty}")
                check(0 < penalty.banned_for <= policy.max_ban_time, f"ban {penalty}")
                check(guard.banned_for(source, now) == penalty.banned_for, "ban not kept")
        elif op == 1:
            guard.succeeded(source)
            succeeded.add(source)
        else:
            left = guard.banned_for(source, now)
            check(0 <= left <= policy.max_ban_time, f"ban of {left} s")
        check(len(guard) <= policy.max_sources, f"{len(guard)} sources kept")


_SUMMARY = re.compile(r"(\d+) failed logins from (.*) in the last (\d+) s", re.DOTALL)


def failure_log(data: bytes) -> None:
    """Every failure is logged, at once or in a summary; pending sources stay bounded."""
    from cc.protocol.authguard import FailureLog

    reader = Reader(data)
    log = FailureLog(interval=float(reader.below(8)), max_sources=reader.below(4) + 1)
    now, recorded, logged = 0.0, 0, 0

    def summaries(at: float) -> int:
        total = 0
        for line in log.flush(at):
            match = _SUMMARY.fullmatch(line)
            check(match is not None, f"summary line {line!r}")
            assert match is not None
            check(int(match[1]) > 0, f"an empty summary {line!r}")
            total += int(match[1])
        return total

    for _ in range(MAX_EVENTS):
        if not reader:
            break
        op, source = reader.below(3), _source(reader)
        now += reader.below(8)
        if op == 2:
            logged += summaries(now)
            continue
        recorded += 1
        line = log.record(source, now, "login failed")
        if line is not None:
            check(line.startswith("login failed"), f"line {line!r}")
            logged += 1
    logged += summaries(now + log.interval)
    check(logged == recorded, f"{recorded} failures, {logged} logged")


def admission(data: bytes) -> None:
    """Admission against a model: per-source caps refuse, the total cap evicts the oldest."""
    from cc.protocol.admission import Admission, AdmissionPolicy, Refusal

    reader = Reader(data)
    policy = AdmissionPolicy(total=reader.below(6), per_source=reader.below(4))
    gate = Admission(policy)
    model: list[tuple[int, str]] = []  # pending (key, source), oldest first
    next_key = 0
    evicted = 0
    for _ in range(MAX_EVENTS):
        if not reader:
            break
        if reader.byte() % 3:
            source = _source(reader)
            count = sum(1 for _, s in model if s == source)
            decision = gate.admit(next_key, source)
            if policy.per_source and count >= policy.per_source:
                check(decision.refused is Refusal.PER_SOURCE, f"{decision} with {count} held")
                continue
            check(decision.refused is None, f"refused {decision}")
            out = model[: max(0, len(model) - policy.total + 1)] if policy.total else []
            check(list(decision.evict) == [k for k, _ in out], f"evicted {decision.evict}")
            evicted += len(out)
            model = [*model[len(out) :], (next_key, source)]
            next_key += 1
        elif model or reader.byte() & 1:
            key = model[reader.below(len(model))][0] if model else next_key + 7
            gate.release(key)
            gate.release(key)  # idempotent
            model = [(k, s) for k, s in model if k != key]
        check(len(gate) == len(model), f"{len(gate)} pending, the model has {len(model)}")
        for source in {s for _, s in model} | {_SOURCES[0]}:
            held = sum(1 for _, s in model if s == source)
            check(gate.from_source(source) == held, f"{source}: {gate.from_source(source)}")
        check(gate.evicted == evicted, f"evicted {gate.evicted}, the model {evicted}")


def state_seeds() -> Iterable[bytes]:
    yield bytes(range(0, 64, 3)) * 4
    yield b"\x03\x01\x02\x02\x00\x04\x10\x02" + b"\x00\x01\x02\x00\x02\x01\x01\x03\x00" * 8
