"""Faults between the gateway and the connector: loss, delay, blackholes, resets, kills.

Issue 11, item 10.  The gateway runs in one network namespace and the connector in
another, joined only by the impairment relay of :mod:`tests.support.impair` (a TUN
router: real packet loss, real delay, see its docstring for why).  Both are the real
CLIs (``ip netns exec <ns> python -m cc.cli.main server|client``), with one reverse
remote ``R:127.0.0.1:3000:127.0.0.1:4000``: the test's "user" connects to port 3000
inside the gateway's namespace, and its "service" listens on port 4000 inside the
connector's.  Every byte is checked against a seeded stream and by SHA-256 on both
ends.  Needs root (namespaces, /dev/net/tun); skipped without.

Run them (about a minute and a half; the 64 MiB case is ``slow``)::

    python -m pytest tests/system/test_faults.py -s          # figures on stdout
    python -m pytest -m slow tests/system/test_faults.py -s  # 64 MiB at 5 % + 50 ms

The link has an Ethernet MTU (1500).  How fast a stream crosses 5 % loss is up to
the kernel's congestion control, which the session's sockets take from the host:
with BBR (this machine's default) 16 MiB each way takes ~18 s and 64 MiB ~32 s;
with CUBIC plain TCP manages ~55 KB/s over this link, so expect minutes there.

A session that dies mid-transfer must reset the tunnelled connections on every
surviving side (issue 11 bug 3): a FIN would let a reader take a cut stream for a
complete one (``SilentTruncation``).

Strict xfails, each failing today for a reason named in issue 11, and each to
lose its mark when the fix lands (the test then reports XPASS as a failure):

- the reconnect after a blackhole (item 10 asks < 1 s): a dial begun during the
  blackhole runs into its 30 s connect timeout first.
"""

from __future__ import annotations

import functools
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support.impair import ImpairedLink
from tests.support.netns import unavailable_reason
from tests.support.nstunnel import (
    SLACK,
    STEP,
    Received,
    SilentTruncation,
    Tunnel,
    echo,
    receive_stream,
    send_stream,
    stream_sha256,
)

MiB = 1 << 20
#: Long enough never to finish: the cases that kill a session stream "forever".
ENDLESS = 1 << 40


@functools.cache
def _namespaces() -> str | None:
    return unavailable_reason()


@pytest.fixture
def link() -> Iterator[ImpairedLink]:
    reason = _namespaces()
    if reason is not None:
        pytest.skip(reason)
    with ImpairedLink(seed=11) as link:
        yield link


@pytest.fixture
def tunnel(link: ImpairedLink, tmp_path: Path) -> Iterator[Tunnel]:
    """Processes and sockets are gone before the link (and its namespaces) goes."""
    with Tunnel(link, tmp_path) as tunnel:
        yield tunnel


def _duplex(tunnel: Tunnel, size: int, timeout: float) -> tuple[float, list[Received]]:
    """``size`` bytes each way over one tunnelled connection, both ends half-closing."""
    user, service = tunnel.open()
    pool = tunnel.threads()
    started = time.monotonic()
    sent = [pool.submit(send_stream, user, 1, size), pool.submit(send_stream, service, 2, size)]
    got = [
        pool.submit(receive_stream, service, 1, timeout),
        pool.submit(receive_stream, user, 2, timeout),
    ]
    results = [f.result(timeout + STEP) for f in got]
    elapsed = time.monotonic() - started
    for f, r in zip(sent, results, strict=True):
        s = f.result(STEP)
        assert s.error is None, s.error
        assert r.sha256 == s.sha256.hexdigest(), "the two ends' SHA-256 differ"
    return elapsed, results


# ----------------------------------------------------------------------------- loss + delay


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "size",
    [
        pytest.param(16 * MiB, id="16MiB"),
        pytest.param(64 * MiB, id="64MiB", marks=pytest.mark.slow),
    ],
)
def test_stream_intact_under_loss_and_delay(tunnel: Tunnel, link: ImpairedLink, size: int) -> None:
    """At 5 % loss and 50 ms one-way delay (each direction) a stream in each direction
    arrives complete, byte for byte, and ends with the sender's own FIN."""
    tunnel.start()
    link.delay, link.loss = 0.050, 0.05
    before = [ns.tcp_counters()["RetransSegs"] for ns in (link.gateway_ns, link.connector_ns)]
    elapsed, results = _duplex(tunnel, size, timeout=500.0)
    for r in results:
        assert (r.ended, r.count, r.intact) == ("eof", size, True)
        assert r.sha256 == stream_sha256(r.seed, size)
    after = [ns.tcp_counters()["RetransSegs"] for ns in (link.gateway_ns, link.connector_ns)]
    retrans = [a - b for a, b in zip(after, before, strict=True)]
    print(
        f"\n{size // MiB} MiB each way at 5 % loss + 50 ms: {elapsed:.1f} s; "
        f"lost packets {link.stats.lost}, retransmitted segments {retrans}, "
        f"congestion control {tunnel.congestion_control()}"
    )
    # The loss was real: packets vanished both ways and the kernels' TCP resent them.
    assert min(link.stats.lost) > 0 and min(retrans) > 0
    assert tunnel.connector.count("Connected (Latency") == 1, "the session did not hold"


# ----------------------------------------------------------------------------- blackhole

KEEPALIVE, KEEPALIVE_TIMEOUT, BLACKHOLE = 2.0, 2.0, 30.0


class SlowReconnect(AssertionError):
    """The connector took a second or more to come back after the link did."""


@pytest.mark.timeout(180)
@pytest.mark.xfail(
    strict=True,
    raises=SlowReconnect,
    reason="issue 11 item 10: a dial begun inside the blackhole runs to its 30 s connect "
    "timeout (the kernel's SYN retries come 1, 3, 7, 15 s apart), so the connector is back "
    "only 2-4 s after the lift; fix pending",
)
def test_blackhole_detected_on_both_ends_then_reconnect(tunnel: Tunnel, link: ImpairedLink) -> None:
    """A 30 s blackhole: both ends declare the session dead within keepalive + timeout
    (the connector logs it, the gateway frees the reverse port), and the connector is
    back within 1 s after the link returns."""
    ka = ("--keepalive", f"{KEEPALIVE:g}s", "--keepalive-timeout", f"{KEEPALIVE_TIMEOUT:g}s")
    tunnel.start(gateway_flags=ka, connector_flags=(*ka, "--max-retry-interval", "1s"))
    tunnel.serve(echo)
    assert tunnel.echo_ok(256 * 1024)
    assert not tunnel.reverse_port_free()

    link.blackhole()
    down_at = time.monotonic()
    budget = KEEPALIVE + KEEPALIVE_TIMEOUT + SLACK
    connector_at = tunnel.connector.wait_for_text("Keepalive: no answer", timeout=budget)
    gateway_at = tunnel.gateway.wait_for_text("No keepalive answer", timeout=budget)
    freed_at = tunnel.wait_until(tunnel.reverse_port_free, budget)
    assert freed_at is not None, "the gateway still holds the reverse port"
    time.sleep(max(0.0, down_at + BLACKHOLE - time.monotonic()))
    lifted_at = link.lift()
    back_at = tunnel.connector.wait_for_text(
        "Connected (Latency", count=2, timeout=BLACKHOLE + STEP
    )
    print(
        f"\nblackhole {lifted_at - down_at:.1f} s, keepalive {KEEPALIVE:g}s + "
        f"{KEEPALIVE_TIMEOUT:g}s: connector detected it after {connector_at - down_at:.2f} s, "
        f"gateway after {gateway_at - down_at:.2f} s (port free after {freed_at - down_at:.2f} s); "
        f"reconnected {back_at - lifted_at:.2f} s after the lift"
    )
    assert tunnel.echo_ok(1 * MiB), "the tunnel does not work after the reconnect"
    if back_at - lifted_at >= 1.0:
        raise SlowReconnect(f"reconnected {back_at - lifted_at:.2f} s after the lift")


# ----------------------------------------------------------------------------- injected reset


@pytest.mark.timeout(60)
def test_injected_reset_ends_the_session_and_the_connector_returns(
    tunnel: Tunnel, link: ImpairedLink
) -> None:
    """An RST injected into the session (a NAT or firewall that dropped its state):
    the gateway closes that session at once, the connector reconnects within its retry
    interval, and the reverse port carries byte-exact traffic again."""
    tunnel.start(connector_flags=("--max-retry-interval", "1s"))
    tunnel.serve(echo)
    assert tunnel.echo_ok(64 * 1024)
    link.reset()
    reset_at = time.monotonic()
    tunnel.gateway.wait_for_text("Connection reset by peer", timeout=STEP)
    back_at = tunnel.connector.wait_for_text("Connected (Latency", count=2, timeout=STEP)
    print(
        f"\nreset injected ({link.stats.resets_sent} RSTs): back after {back_at - reset_at:.2f} s"
    )
    assert link.stats.resets_sent >= 2  # one to each end at least
    assert back_at - reset_at < 1.0 + SLACK
    assert tunnel.echo_ok(1 * MiB, seed=1)


# ----------------------------------------------------------------------------- no silent truncation

CAUSES = ("kill-connector", "kill-gateway", "reset", "blackhole")


def _kill(tunnel: Tunnel, link: ImpairedLink, cause: str) -> None:
    if cause == "kill-connector":
        tunnel.connector.popen.send_signal(signal.SIGKILL)
    elif cause == "kill-gateway":
        tunnel.gateway.popen.send_signal(signal.SIGKILL)
    elif cause == "reset":
        link.reset()
    else:
        link.blackhole()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cause", CAUSES)
def test_dead_session_resets_tunnelled_streams(
    tunnel: Tunnel, link: ImpairedLink, cause: str
) -> None:
    """The session dies mid-transfer (a side SIGKILLed, an injected reset, a blackhole
    past the keepalive deadline): each application on a surviving side that was
    receiving must see a reset, never a clean EOF after a cut stream."""
    ka = ("--keepalive", "1s", "--keepalive-timeout", "1s")
    tunnel.start(gateway_flags=ka, connector_flags=ka)
    # A download (service -> user) and an upload (user -> service), each one-way, so
    # the receiving end's tunnel socket holds no unread bytes (which alone turns a close
    # into an RST) and only what the tunnel decides shows.
    down_user, down_service = tunnel.open()
    up_user, up_service = tunnel.open()
    watched = {
        "kill-connector": {"download"},
        "kill-gateway": {"upload"},
    }.get(cause, {"download", "upload"})
    pool = tunnel.threads()
    pool.submit(send_stream, down_service, 3, ENDLESS)
    pool.submit(send_stream, up_user, 4, ENDLESS)
    down, up = Received(3), Received(4)
    got = {
        "download": pool.submit(receive_stream, down_user, 3, 60.0, down),
        "upload": pool.submit(receive_stream, up_service, 4, 60.0, up),
    }
    progress = tunnel.wait_until(lambda: min(down.count, up.count) >= 4 * MiB, STEP)
    assert progress is not None, "the transfers never got going"
    _kill(tunnel, link, cause)
    results = {name: got[name].result(75.0) for name in watched}
    report = ", ".join(f"{n}: {r.ended} after {r.count / MiB:.1f} MiB" for n, r in results.items())
    print(f"\n{cause}: {report}")
    for name, r in results.items():
        assert r.intact and r.sha256 == stream_sha256(r.seed, r.count), f"{name}: corrupted"
        assert r.ended != "timeout", f"{name}: the survivor never learned the stream ended"
    truncated = [n for n, r in results.items() if r.ended == "eof"]
    if truncated:
        raise SilentTruncation(f"{cause}: clean EOF after a cut stream ({report})")
    assert all(r.ended == "reset" or r.ended.startswith("error") for r in results.values())


@pytest.mark.timeout(60)
def test_clean_end_is_a_fin_with_every_byte(tunnel: Tunnel) -> None:
    """The positive control: a peer that ends its stream itself (shutdown, then close)
    is seen by the other end as every byte and then a plain EOF, in both directions."""
    tunnel.start()
    _elapsed, results = _duplex(tunnel, 8 * MiB, timeout=STEP * 4)
    for r in results:
        assert (r.ended, r.count, r.intact) == ("eof", 8 * MiB, True)


# ----------------------------------------------------------------------------- cycles

CYCLES, SAMPLE_EVERY, CYCLE_BYTES = 1000, 100, 16 * 1024


def _usage(pid: int) -> tuple[int, int]:
    proc = psutil.Process(pid)
    return proc.memory_info().rss, proc.num_fds()


@pytest.mark.timeout(300)
def test_connect_transfer_disconnect_cycles_leave_no_growth(tunnel: Tunnel) -> None:
    """1,000 connections through one tunnel, one after another, each a 16 KiB echo
    checked byte for byte: the descriptors and RSS of both processes stay flat."""
    tunnel.start()
    tunnel.serve(echo)
    pids = {"gateway": tunnel.gateway.pid, "connector": tunnel.connector.pid}
    for _ in range(50):  # warm up: first-use allocations are not a leak
        assert tunnel.echo_ok(CYCLE_BYTES)
    time.sleep(1.0)
    samples: dict[str, list[tuple[int, int]]] = {name: [_usage(pid)] for name, pid in pids.items()}
    started = time.monotonic()
    for cycle in range(1, CYCLES + 1):
        assert tunnel.echo_ok(CYCLE_BYTES, seed=cycle), f"cycle {cycle} failed"
        if cycle % SAMPLE_EVERY == 0:
            for name, pid in pids.items():
                samples[name].append(_usage(pid))
    elapsed = time.monotonic() - started
    time.sleep(1.0)  # connections closing in the background settle
    print(f"\n{CYCLES} cycles in {elapsed:.1f} s")
    for name, pid in pids.items():
        final = _usage(pid)
        first = samples[name][0]
        rss_growth = max(s[0] for s in [*samples[name], final]) - first[0]
        fd_growth = max(s[1] for s in [*samples[name], final]) - first[1]
        print(
            f"{name}: RSS {first[0] / MiB:.1f} -> {final[0] / MiB:.1f} MiB "
            f"(max growth {rss_growth / MiB:.2f} MiB), fds {first[1]} -> {final[1]} "
            f"(max growth {fd_growth})"
        )
        assert final[1] - first[1] < 20, f"{name}: descriptors grew {first[1]} -> {final[1]}"
        assert final[0] - first[0] < 5 * MiB, (
            f"{name}: RSS grew by {(final[0] - first[0]) / MiB:.1f} MiB"
        )
