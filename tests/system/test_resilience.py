"""Resilience of the real programs: dead, silent and restarted peers; retry limits; SIGHUP.

The gateway and the connector run as real CLI subprocesses (``python -m
cc.cli.main``) and are SIGKILLed, SIGSTOPped and SIGCONTed, because that is what a
crashed host, a frozen VM or a dropped NAT mapping looks like from the other side:
no FIN, no RST, just silence.  Keepalives are short (1 s, deadline 1 s) so a dead
peer must be noticed within ``keepalive + deadline`` plus a little slack.

The cases that need an injected random source, ``Connector.stop()`` or a gateway
that misbehaves on purpose run in-process on both loops:
tests/connector/test_retry.py, tests/connector/test_drain.py and
tests/gateway/test_stale_sessions.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import signal
import socket
import threading
import time

import pytest

from cc.protocol.durations import parse_duration
from tests.support.chisel import SEED, SEED_FINGERPRINT
from tests.support.net import (
    LOOPBACK,
    blob,
    echo_roundtrip,
    free_port,
    port_is_free,
    port_refuses,
    tcp_echo_server,
)
from tests.support.processes import CliProcess, Processes

#: Short keepalive settings used on whichever side must notice a silent peer.
KEEPALIVE = 1.0
KEEPALIVE_TIMEOUT = 1.0
#: Scheduling/CI slack on top of keepalive + deadline.
SLACK = 2.0
#: connector flags: 1 s keepalive with a 1 s deadline, retries at most 1 s apart
FAST_KEEPALIVE = ("--max-retry-interval", "1s", "--keepalive", "1s", "--keepalive-timeout", "1s")
MiB = 1024 * 1024
#: Upper bound on any single step: a process start, a reconnect, a transfer.
STEP = 15.0


def _remote(rev_port: int, target_port: int) -> str:
    return f"R:{LOOPBACK}:{rev_port}:{LOOPBACK}:{target_port}"


def start_gateway(
    procs: Processes,
    port: int,
    *,
    keepalive: str = "25s",
    keepalive_timeout: str = "10s",
    name: str = "gateway",
) -> CliProcess:
    """``cloud-connector server --reverse`` on 127.0.0.1:port (a fixed key, so a restarted
    gateway keeps its fingerprint); returns once it listens."""
    options = ["--reverse", "--key", SEED, "--keepalive", keepalive]
    gateway, _ = procs.our_server(
        *options, "--keepalive-timeout", keepalive_timeout, port=port, name=name
    )
    gateway.wait_for_text("Listening on", timeout=STEP)
    return gateway


def start_client(
    procs: Processes, gateway_port: int, remotes: list[str], *extra: str
) -> CliProcess:
    """``cloud-connector client`` for the gateway on ``gateway_port``; does not wait."""
    url = f"http://{LOOPBACK}:{gateway_port}"
    return procs.our_client("--fingerprint", SEED_FINGERPRINT, *extra, url, *remotes, name="client")


def verified_echo(port: int, size: int, seed: int) -> bool:
    """An echo round trip of ``size`` bytes through ``port``; True if the SHA-256s match."""
    payload = blob(size, seed)
    echoed = echo_roundtrip(port, payload, STEP)
    return hashlib.sha256(echoed).hexdigest() == hashlib.sha256(payload).hexdigest()


class SlowTransfer(threading.Thread):
    """A long echo transfer (``chunk`` bytes every ``pause`` s) running in a thread.

    ``received`` grows while the tunnel carries it; ``error``/``eof_early`` say how
    it ended if it did not complete.
    """

    def __init__(self, port: int, total: int, chunk: int = 16 * 1024, pause: float = 0.02) -> None:
        super().__init__(daemon=True, name="slow-transfer")
        self.port = port
        self.payload = blob(total, seed=99)
        self.chunk = chunk
        self.pause = pause
        self.received = 0
        self.error: BaseException | None = None
        self.completed = False
        self.stop_event = threading.Event()

    def run(self) -> None:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=STEP) as s:
                s.settimeout(STEP)
                got = bytearray()
                for offset in range(0, len(self.payload), self.chunk):
                    if self.stop_event.is_set():
                        return
                    s.sendall(self.payload[offset : offset + self.chunk])
                    # Read back what has been echoed so far without blocking for long.
                    s.settimeout(self.pause)
                    with contextlib.suppress(TimeoutError):
                        while data := s.recv(1 << 16):
                            got += data
                            self.received = len(got)
                        raise ConnectionError("EOF before the transfer finished")
                    s.settimeout(STEP)
                s.shutdown(socket.SHUT_WR)
                while data := s.recv(1 << 16):
                    got += data
                    self.received = len(got)
                self.completed = bytes(got) == self.payload
        except (OSError, ConnectionError) as exc:
            self.error = exc


def _wait_until(predicate: object, timeout: float, poll: float = 0.02) -> float | None:
    """Poll ``predicate()`` until true; the monotonic time it held, or None on timeout."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.monotonic()
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll)


# ----------------------------------------------------------------------------- 1. gateway killed


def test_gateway_killed_mid_transfer_connector_reconnects(procs: Processes) -> None:
    """SIGKILL the gateway during a transfer: that transfer fails; after a restart on the
    same port the connector reconnects by itself and the same reverse port carries a new,
    byte-exact transfer."""
    gw_port, rev_port = free_port(), free_port()
    with tcp_echo_server() as echo:
        gateway = start_gateway(procs, gw_port, name="gateway-1")
        client = start_client(
            procs,
            gw_port,
            [_remote(rev_port, echo.port)],
            "--max-retry-interval",
            "1s",
            "--keepalive",
            "1s",
            "--keepalive-timeout",
            "2s",
        )
        client.wait_for_text("Connected (Latency")
        assert verified_echo(rev_port, 256 * 1024, seed=1)

        transfer = SlowTransfer(rev_port, total=32 * MiB)
        transfer.start()
        try:
            assert _wait_until(lambda: transfer.received >= 256 * 1024, STEP), (
                "the slow transfer never got going"
            )
            gateway.popen.send_signal(signal.SIGKILL)
            gateway.popen.wait(timeout=STEP)
            killed_at = time.monotonic()
            transfer.join(timeout=STEP)
            assert not transfer.is_alive(), "the interrupted transfer hung"
        finally:
            transfer.stop_event.set()
        assert not transfer.completed
        assert transfer.received < len(transfer.payload)
        assert transfer.error is not None

        # The connector notices, logs it, and keeps retrying against the dead port.
        client.wait_for_text("Disconnected", timeout=KEEPALIVE + 2.0 + SLACK)
        client.wait_for_text("Connection error", timeout=STEP)
        # the retry after the first failed attempt is logged just after its error line
        client.wait_for_text("Retrying in", count=2, timeout=STEP)
        assert client.popen.poll() is None, "the connector gave up"

        start_gateway(procs, gw_port, name="gateway-2")
        restarted_at = time.monotonic()
        reconnected_at = client.wait_for_text("Connected (Latency", count=2, timeout=STEP)
        print(
            f"gateway down {restarted_at - killed_at:.2f}s; "
            f"reconnected {reconnected_at - restarted_at:.2f}s after the restart"
        )
        # max-retry-interval is 1 s: at most ~1 s of backoff after the gateway is back.
        assert reconnected_at - restarted_at < 1.0 + SLACK
        assert verified_echo(rev_port, 2 * MiB, seed=2)
        assert verified_echo(rev_port, 64 * 1024, seed=3)


# ----------------------------------------------------------------------------- 2. silent connector


def test_silent_connector_is_dropped_and_its_reverse_port_released(procs: Processes) -> None:
    """SIGSTOP the connector: the gateway's keepalive declares the session dead within
    keepalive + deadline and frees the reverse port; after SIGCONT the connector comes
    back and the port works again."""
    gw_port, rev_port = free_port(), free_port()
    with tcp_echo_server() as echo:
        gateway = start_gateway(procs, gw_port, keepalive="1s", keepalive_timeout="1s")
        client = start_client(
            procs,
            gw_port,
            [_remote(rev_port, echo.port)],
            *FAST_KEEPALIVE,
        )
        client.wait_for_text("Connected (Latency")
        # A healthy idle session survives several keepalive rounds on both sides.
        time.sleep(3 * KEEPALIVE)
        assert "No keepalive answer" not in gateway.stdout()
        assert client.count("Keepalive: no answer") == 0
        assert client.count("Connected (Latency") == 1
        assert verified_echo(rev_port, 128 * 1024, seed=4)

        try:
            client.signal(signal.SIGSTOP)
            stopped_at = time.monotonic()
            budget = KEEPALIVE + KEEPALIVE_TIMEOUT + SLACK
            freed_at = _wait_until(lambda: port_is_free(rev_port), budget)
            assert freed_at is not None, f"reverse port still bound {budget}s after SIGSTOP"
            detected = freed_at - stopped_at
            print(f"gateway freed the reverse port {detected:.2f}s after the connector froze")
            assert port_refuses(rev_port)
            gateway.wait_for_text("No keepalive answer", timeout=1.0)
        finally:
            client.signal(signal.SIGCONT)
        resumed_at = time.monotonic()
        back_at = client.wait_for_text("Connected (Latency", count=2, timeout=STEP)
        print(f"connector reconnected {back_at - resumed_at:.2f}s after SIGCONT")
        assert back_at - resumed_at < KEEPALIVE_TIMEOUT + 1.0 + SLACK
        assert verified_echo(rev_port, 1 * MiB, seed=5)


# ----------------------------------------------------------------------------- 3. silent gateway


def test_silent_gateway_is_detected_by_connector_keepalive(procs: Processes) -> None:
    """SIGSTOP the gateway: the connector's keepalive deadline declares the connection
    dead, it logs that and starts reconnecting; after SIGCONT it reconnects."""
    gw_port, rev_port = free_port(), free_port()
    with tcp_echo_server() as echo:
        # The gateway's own keepalive is long: only the connector's may act here.
        gateway = start_gateway(procs, gw_port, keepalive="25s")
        client = start_client(
            procs,
            gw_port,
            [_remote(rev_port, echo.port)],
            *FAST_KEEPALIVE,
        )
        client.wait_for_text("Connected (Latency")
        assert verified_echo(rev_port, 128 * 1024, seed=6)
        assert client.count("Connecting to") == 1

        try:
            gateway.signal(signal.SIGSTOP)
            stopped_at = time.monotonic()
            budget = KEEPALIVE + KEEPALIVE_TIMEOUT + SLACK
            detected_at = client.wait_for_text("Keepalive: no answer", timeout=budget)
            retry_at = client.wait_for_text("Connecting to", count=2, timeout=1.0 + SLACK)
            print(
                f"connector declared the gateway dead {detected_at - stopped_at:.2f}s after "
                f"SIGSTOP; reconnecting {retry_at - detected_at:.2f}s later"
            )
            assert client.count("Connected (Latency") == 1
        finally:
            gateway.signal(signal.SIGCONT)
        resumed_at = time.monotonic()
        back_at = client.wait_for_text("Connected (Latency", count=2, timeout=STEP)
        print(f"connector reconnected {back_at - resumed_at:.2f}s after the gateway's SIGCONT")
        assert client.popen.poll() is None
        assert verified_echo(rev_port, 1 * MiB, seed=7)


# ----------------------------------------------------------------------------- 4. retry limit


@pytest.mark.parametrize("limit", [2, 0])
def test_max_retry_count_gives_up_with_nonzero_exit(procs: Processes, limit: int) -> None:
    closed = free_port()  # nothing listens there
    client = start_client(procs, closed, [_remote(free_port(), 9)], "--max-retry-count", str(limit))
    # Timed from the first attempt: interpreter start-up is not the retry logic's doing.
    started = client.wait_for_text("Connecting to", timeout=STEP)
    rc = client.popen.wait(timeout=STEP)
    elapsed = time.monotonic() - started
    print(f"--max-retry-count {limit}: exit {rc} {elapsed:.2f}s after the first attempt")
    assert rc != 0
    assert elapsed < 3.0  # 100 ms + ~200 ms of backoff, plus shutdown
    assert f"gave up after {limit} retries" in client.stderr()
    # One first attempt plus ``limit`` retries, each logged, each refused.
    assert client.count("Connecting to") == limit + 1
    assert client.count("Connection error") == limit + 1
    assert client.count("Retrying in") == limit


# ----------------------------------------------------------------------------- 6. SIGHUP


def test_sighup_cuts_a_long_reconnect_wait_short(procs: Processes) -> None:
    """After several failures the wait is seconds long; SIGHUP starts the next attempt now."""
    closed = free_port()
    client = start_client(procs, closed, [_remote(free_port(), 9)], "--max-retry-interval", "30s")
    pattern = re.compile(r"Retrying in (\S+)\.\.\.")
    for n in range(1, 16):
        client.wait_for_text("Retrying in", count=n, timeout=STEP)
        delay = parse_duration(pattern.findall(client.stdout())[-1])
        hup_at = time.monotonic()
        client.signal(signal.SIGHUP)
        if delay >= 5.0:
            next_at = client.wait_for_text("Connecting to", count=n + 1, timeout=2.0)
            print(f"wait of {delay:.1f}s skipped: next attempt {next_at - hup_at:.3f}s after HUP")
            assert next_at - hup_at < 1.0
            assert client.popen.poll() is None
            return
        # Short waits may end on their own before the HUP lands; either way move on.
        client.wait_for_text("Connecting to", count=n + 1, timeout=delay + SLACK)
    pytest.fail(f"the backoff never reached 5s\n{client.report()}")


def test_socket_module_sanity() -> None:
    """port_is_free/port_refuses agree with a real listener (the probes the tests rely on)."""
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not port_is_free(port)
        assert not port_refuses(port)
    assert port_is_free(port)
    assert port_refuses(port)
