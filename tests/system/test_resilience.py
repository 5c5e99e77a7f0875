"""Resilience: dead, silent and restarted peers; retry limits; backoff; graceful drain.

The kill/stop cases run the real CLIs as subprocesses (``python -m cc.cli.main``)
and SIGKILL / SIGSTOP / SIGCONT them, because that is what a crashed host, a
frozen VM or a dropped NAT mapping looks like from the other side: no FIN, no
RST, just silence.  Keepalives are short (1 s, deadline 1 s) so a dead peer must
be noticed within ``keepalive + deadline`` plus a little slack.

The backoff and drain cases run in-process, where the random source can be
injected and ``Connector.stop()`` called directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import random
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from cc.connector.connector import Connector, ConnectorConfig, FatalError
from cc.gateway.gateway import Gateway, GatewayConfig, GatewaySession
from cc.protocol import keys
from cc.protocol.backoff import Backoff
from cc.protocol.keepalive import parse_duration
from cc.protocol.remote import parse_remote
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


@pytest.fixture(autouse=True)
def _cc_logs_reach_caplog() -> Iterator[None]:
    """A CLI run in this process (other test files) may have turned propagation off."""
    root = logging.getLogger("cc")
    saved_propagate, saved_level = root.propagate, root.level
    root.propagate = True
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.propagate, root.level = saved_propagate, saved_level


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
        assert client.count("Retrying in") >= 2
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


# ----------------------------------------------------------------------------- 5. backoff + jitter


def _closed_port_config(port: int, path: str = "", **overrides: object) -> ConnectorConfig:
    settings: dict[str, object] = {
        "server": urlsplit(f"http://{LOOPBACK}:{port}{path}"),
        "remotes": [parse_remote(_remote(free_port(), 9))],
        "connect_timeout": 2.0,
    }
    settings.update(overrides)
    return ConnectorConfig(**settings)  # type: ignore[arg-type]


def _attempt_times(records: list[logging.LogRecord], url: str) -> list[float]:
    return [r.created for r in records if r.getMessage() == f"Connecting to {url}"]


async def test_backoff_doubles_from_100ms_up_to_max_retry_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the random source pinned near 1, equal jitter gives chisel's nominal delays:
    100 ms doubling up to max_retry_interval, and the connector really waits them."""
    caplog.set_level(logging.INFO, logger="cc")
    port = free_port()
    config = _closed_port_config(port, max_retry_count=6, max_retry_interval=0.8)
    connector = Connector(config, rng=lambda: 1.0 - 1e-9)
    with pytest.raises(FatalError, match="gave up after 6 retries"):
        async with asyncio.timeout(STEP):
            await connector.run()
    announced = [
        parse_duration(m.group(1))
        for r in caplog.records
        if (m := re.fullmatch(r"Retrying in (\S+)\.\.\.", r.getMessage()))
    ]
    assert announced == pytest.approx([0.1, 0.2, 0.4, 0.8, 0.8, 0.8], abs=1e-6)
    attempts = _attempt_times(caplog.records, f"ws://{LOOPBACK}:{port}")
    assert len(attempts) == 7
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    for gap, delay in zip(gaps, announced, strict=True):
        assert delay - 0.01 <= gap <= delay + 0.5, (gaps, announced)


async def test_jittered_connectors_do_not_retry_in_lockstep(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two connectors cut off by the same gateway, with different random sources, spread
    their retries: their delays differ and their attempt instants drift apart."""
    caplog.set_level(logging.INFO, logger="cc")
    port = free_port()
    seeds = {"/a": 1, "/b": 2}
    connectors = {
        path: Connector(
            _closed_port_config(port, path, max_retry_count=5, max_retry_interval=0.8),
            rng=random.Random(seed).random,
        )
        for path, seed in seeds.items()
    }
    async with asyncio.timeout(STEP):
        results = await asyncio.gather(
            *(c.run() for c in connectors.values()), return_exceptions=True
        )
    assert all(isinstance(r, FatalError) for r in results), results

    # What each connector's backoff must have produced (same seeds, replayed).
    expected = {}
    for path, seed in seeds.items():
        backoff = Backoff(max_delay=0.8, rand=random.Random(seed).random)
        expected[path] = [backoff.next_delay() for _ in range(5)]
    assert expected["/a"] != pytest.approx(expected["/b"], abs=0.02)

    times = {
        path: _attempt_times(caplog.records, f"ws://{LOOPBACK}:{port}{path}") for path in seeds
    }
    for path in seeds:
        assert len(times[path]) == 6
        gaps = [b - a for a, b in itertools.pairwise(times[path])]
        for gap, delay in zip(gaps, expected[path], strict=True):
            assert delay - 0.01 <= gap <= delay + 0.5, (path, gaps, expected[path])
    start_a, start_b = times["/a"][0], times["/b"][0]
    drift = max(
        abs((a - start_a) - (b - start_b)) for a, b in zip(times["/a"], times["/b"], strict=True)
    )
    assert drift > 0.05, f"retries stayed in lockstep (max drift {drift * 1000:.0f} ms)"


def test_backoff_jitter_defaults_to_a_fresh_random_source() -> None:
    """Connectors built without an rng still jitter (system randomness), not lockstep."""
    config = _closed_port_config(free_port(), max_retry_interval=300.0)
    delays = []
    for _ in range(2):
        connector = Connector(config)
        for _ in range(6):
            delay = connector._backoff.next_delay()
        delays.append(delay)
    # Nominal 3.2 s, equal jitter: anywhere in [1.6, 3.2]; equal only by a fluke of 2**-50.
    assert all(1.6 <= d <= 3.2 for d in delays)
    assert delays[0] != delays[1]


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


# ----------------------------------------------------------------------------- 7. graceful drain


class _SlowService:
    """Sends ``chunks`` x ``chunk`` bytes, one every ``pause`` s, then closes; counts clients."""

    def __init__(self, chunks: int, chunk: int, pause: float, forever: bool = False) -> None:
        self.payload = blob(chunks * chunk, seed=42)
        self.chunk = chunk
        self.pause = pause
        self.forever = forever
        self.accepted = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            if self.forever:
                while True:
                    writer.write(b"x" * self.chunk)
                    await writer.drain()
                    await asyncio.sleep(self.pause)
            for offset in range(0, len(self.payload), self.chunk):
                writer.write(self.payload[offset : offset + self.chunk])
                await writer.drain()
                await asyncio.sleep(self.pause)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.handle, LOOPBACK, 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STEP):
                    await self.server.wait_closed()


async def _start_tunnel(
    service_port: int, drain_timeout: float
) -> tuple[Gateway, Connector, asyncio.Task[None], int]:
    pem = keys.private_key_pem_for_asyncssh(keys.generate_private_key())
    gateway = Gateway(GatewayConfig(host=LOOPBACK, port=0, host_key_pem=pem, reverse=True))
    await gateway.start()
    rev_port = free_port()
    config = ConnectorConfig(
        server=urlsplit(f"http://{LOOPBACK}:{gateway.ports[0]}"),
        remotes=[parse_remote(_remote(rev_port, service_port))],
        fingerprint=gateway.fingerprint,
        max_retry_count=0,
        connect_timeout=STEP,
        drain_timeout=drain_timeout,
    )
    connector = Connector(config)
    task = asyncio.get_running_loop().create_task(connector.run())
    async with asyncio.timeout(STEP):
        await connector.connected.wait()
    return gateway, connector, task, rev_port


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    data = bytearray()
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(1 << 16):
            data += chunk
    return bytes(data)


async def _refused(port: int) -> bool:
    """A new connection through the tunnel gets no data: closed or reset at once."""
    try:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
    except ConnectionRefusedError:
        return True
    try:
        async with asyncio.timeout(STEP):
            return await _read_all(reader) == b""
    finally:
        writer.close()


async def test_stop_drains_an_open_connection_then_returns() -> None:
    service = _SlowService(chunks=40, chunk=16 * 1024, pause=0.04)  # ~1.6 s of data
    service_port = await service.start()
    gateway, connector, task, rev_port = await _start_tunnel(service_port, drain_timeout=8.0)
    try:
        reader, writer = await asyncio.open_connection(LOOPBACK, rev_port)
        first = await asyncio.wait_for(reader.readexactly(32 * 1024), STEP)
        connector.stop()
        stopped_at = time.monotonic()

        assert await _refused(rev_port), "a new connection got through while draining"
        assert service.accepted == 1
        assert not task.done(), "run() returned while a connection was still open"

        rest = await asyncio.wait_for(_read_all(reader), STEP)
        finished_at = time.monotonic()
        writer.close()
        data = first + rest
        assert hashlib.sha256(data).hexdigest() == hashlib.sha256(service.payload).hexdigest()

        async with asyncio.timeout(STEP):
            await task  # returns normally: stop() is not an error
        returned_at = time.monotonic()
        print(
            f"drained: transfer ended {finished_at - stopped_at:.2f}s after stop(), "
            f"run() returned {returned_at - finished_at:.2f}s later"
        )
        assert finished_at - stopped_at > 0.5  # the transfer really outlived stop()
        assert returned_at - stopped_at < 8.0
        assert connector.stats.state == "stopped"
    finally:
        connector.stop()
        with contextlib.suppress(BaseException):
            async with asyncio.timeout(STEP):
                await task
        await gateway.close()
        await service.close()


async def test_stop_drain_is_bounded_by_drain_timeout() -> None:
    service = _SlowService(chunks=1, chunk=1024, pause=0.05, forever=True)
    service_port = await service.start()
    gateway, connector, task, rev_port = await _start_tunnel(service_port, drain_timeout=1.0)
    try:
        reader, writer = await asyncio.open_connection(LOOPBACK, rev_port)
        await asyncio.wait_for(reader.readexactly(4096), STEP)
        connector.stop()
        stopped_at = time.monotonic()
        async with asyncio.timeout(STEP):
            await task
        elapsed = time.monotonic() - stopped_at
        print(f"endless connection cut after {elapsed:.2f}s (drain_timeout 1s)")
        assert 0.9 <= elapsed < 1.0 + SLACK
        # The tunnel is gone: the endless stream ends.
        async with asyncio.timeout(STEP):
            await _read_all(reader)
        writer.close()
    finally:
        connector.stop()
        with contextlib.suppress(BaseException):
            async with asyncio.timeout(STEP):
                await task
        await gateway.close()
        await service.close()


# ----------------------------------------------------------------------------- 8. half-open paths


class _Relay:
    """A TCP relay in front of the gateway whose live connections can be black-holed.

    ``blackhole()`` is a NAT mapping that vanished: the relay keeps both sockets open
    and silently drops every byte, so neither end sees a FIN or RST; connections
    made afterwards pass normally (the connector's new path).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.live: list[list[bool]] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, LOOPBACK, 0)
        return int(self.server.sockets[0].getsockname()[1])

    def blackhole(self) -> None:
        for flag in self.live:
            flag[0] = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.target_port)
        except OSError:
            writer.close()
            return
        flag = [True]
        self.live.append(flag)
        self.writers += [writer, up_writer]
        loop = asyncio.get_running_loop()
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = loop.create_task(self._pump(src, dst, flag))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, flag: list[bool]) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await src.read(1 << 16):
                if flag[0]:
                    dst.write(data)
                    await dst.drain()
            if flag[0]:
                dst.write_eof()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        for writer in self.writers:
            writer.close()


async def _echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    writer.close()


async def _async_echo(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(payload)
        writer.write_eof()
        async with asyncio.timeout(STEP):
            return await _read_all(reader)
    finally:
        writer.close()


async def test_half_open_path_gateway_hands_the_port_to_the_new_session() -> None:
    """The old path dies silently (no FIN/RST).  The connector's short keepalive notices
    long before the gateway's own (25 s) and reconnects over a new path while the stale
    session still holds the reverse port.  The gateway pings the holder, gets no answer
    within its deadline, closes it and gives the port to the new session: the very first
    reconnect succeeds (a Go client would give up on a config error)."""
    echo = await asyncio.start_server(_echo_handler, LOOPBACK, 0)
    service_port = int(echo.sockets[0].getsockname()[1])
    pem = keys.private_key_pem_for_asyncssh(keys.generate_private_key())
    gateway = Gateway(
        GatewayConfig(
            host=LOOPBACK,
            port=0,
            host_key_pem=pem,
            reverse=True,
            keepalive=25.0,
            keepalive_timeout=1.0,
        )
    )
    await gateway.start()
    relay = _Relay(gateway.ports[0])
    relay_port = await relay.start()
    rev_port = free_port()
    connector = Connector(
        ConnectorConfig(
            server=urlsplit(f"http://{LOOPBACK}:{relay_port}"),
            remotes=[parse_remote(_remote(rev_port, service_port))],
            fingerprint=gateway.fingerprint,
            keepalive=0.3,
            keepalive_timeout=0.5,
            # exactly one reconnect allowed: it has to work the first time
            max_retry_count=1,
            backoff_reset_after=0.0,
            connect_timeout=STEP,
        )
    )
    task = asyncio.get_running_loop().create_task(connector.run())
    try:
        async with asyncio.timeout(STEP):
            await connector.connected.wait()
        assert await _async_echo(rev_port, b"before") == b"before"
        relay.blackhole()
        cut_at = time.monotonic()
        async with asyncio.timeout(0.3 + 0.5 + SLACK):
            while connector.connected.is_set():
                await asyncio.sleep(0.01)
        noticed = time.monotonic() - cut_at
        async with asyncio.timeout(1.0 + SLACK):
            while not connector.connected.is_set():
                assert not task.done(), task.exception() if task.done() else None
                await asyncio.sleep(0.01)
        back = time.monotonic() - cut_at
        print(
            f"half-open path: connector noticed after {noticed:.2f}s, port back after {back:.2f}s"
        )
        assert len(gateway.sessions) == 1, "the stale session was not closed"
        assert await _async_echo(rev_port, b"after") == b"after"
    finally:
        connector.stop()
        with contextlib.suppress(BaseException):
            async with asyncio.timeout(STEP):
                await task
        await relay.close()
        await gateway.close()
        echo.close()


async def test_reverse_port_held_by_another_program_is_retried_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ "Server cannot listen" is transient (the holder may go away): the connector keeps
    retrying with backoff and connects once the port is free, instead of exiting."""
    caplog.set_level(logging.INFO, logger="cc")
    echo = await asyncio.start_server(_echo_handler, LOOPBACK, 0)
    service_port = int(echo.sockets[0].getsockname()[1])
    pem = keys.private_key_pem_for_asyncssh(keys.generate_private_key())
    gateway = Gateway(GatewayConfig(host=LOOPBACK, port=0, host_key_pem=pem, reverse=True))
    await gateway.start()
    squatter = socket.socket()
    squatter.bind((LOOPBACK, 0))
    squatter.listen()
    rev_port = int(squatter.getsockname()[1])
    connector = Connector(
        ConnectorConfig(
            server=urlsplit(f"http://{LOOPBACK}:{gateway.ports[0]}"),
            remotes=[parse_remote(_remote(rev_port, service_port))],
            fingerprint=gateway.fingerprint,
            max_retry_interval=0.3,
            connect_timeout=STEP,
        )
    )
    task = asyncio.get_running_loop().create_task(connector.run())
    try:
        refusals = 0
        async with asyncio.timeout(STEP):
            while refusals < 3:
                assert not task.done(), task.exception() if task.done() else None
                refusals = sum(
                    "Server cannot listen" in r.getMessage()
                    for r in caplog.records
                    if r.getMessage().startswith("Connection error")
                )
                await asyncio.sleep(0.01)
        assert not connector.connected.is_set()
        squatter.close()
        freed_at = time.monotonic()
        async with asyncio.timeout(0.3 + SLACK):
            await connector.connected.wait()
        print(f"busy reverse port: connected {time.monotonic() - freed_at:.2f}s after it freed")
        assert await _async_echo(rev_port, b"mine now") == b"mine now"
    finally:
        squatter.close()
        connector.stop()
        with contextlib.suppress(BaseException):
            async with asyncio.timeout(STEP):
                await task
        await gateway.close()
        echo.close()


async def test_live_holder_keeps_its_reverse_port(caplog: pytest.LogCaptureFixture) -> None:
    """The stale-session check never takes a port from a session that answers: a second
    connector asking for the same reverse port is refused, the first keeps serving."""
    caplog.set_level(logging.INFO, logger="cc")
    echo = await asyncio.start_server(_echo_handler, LOOPBACK, 0)
    service_port = int(echo.sockets[0].getsockname()[1])
    pem = keys.private_key_pem_for_asyncssh(keys.generate_private_key())
    gateway = Gateway(
        GatewayConfig(host=LOOPBACK, port=0, host_key_pem=pem, reverse=True, keepalive_timeout=1)
    )
    await gateway.start()
    rev_port = free_port()

    def config(**overrides: object) -> ConnectorConfig:
        settings: dict[str, object] = {
            "server": urlsplit(f"http://{LOOPBACK}:{gateway.ports[0]}"),
            "remotes": [parse_remote(_remote(rev_port, service_port))],
            "fingerprint": gateway.fingerprint,
            "connect_timeout": STEP,
        }
        settings.update(overrides)
        return ConnectorConfig(**settings)  # type: ignore[arg-type]

    first = Connector(config())
    task = asyncio.get_running_loop().create_task(first.run())
    try:
        async with asyncio.timeout(STEP):
            await first.connected.wait()
        second = Connector(config(max_retry_count=0))
        with pytest.raises(FatalError, match="gave up after 0 retries"):
            async with asyncio.timeout(STEP):
                await second.run()
        assert any("Server cannot listen" in r.getMessage() for r in caplog.records)
        assert not any("closing the stale session" in r.getMessage() for r in caplog.records)
        assert first.connected.is_set()
        assert await _async_echo(rev_port, b"still mine") == b"still mine"
    finally:
        first.stop()
        with contextlib.suppress(BaseException):
            async with asyncio.timeout(STEP):
                await task
        await gateway.close()
        echo.close()


class _SessionHook:
    """Wraps ``Gateway._new_session`` to misbehave after (or instead of) the config reply."""

    @staticmethod
    def install(gateway: Gateway, mode: str) -> None:
        make = gateway._new_session

        def new_session() -> GatewaySession:
            session = make()
            original = session.config_requested

            async def config_requested(payload: bytes) -> str | None:
                if mode == "mute":  # accepted SSH, then never answers the config request
                    await asyncio.sleep(3600)
                error = await original(payload)
                if mode == "flap":  # drops every session right after it is set up
                    asyncio.get_running_loop().call_later(0.05, session.conn.abort)
                return error

            session.config_requested = config_requested  # type: ignore[method-assign]
            return session

        gateway._new_session = new_session  # type: ignore[method-assign]


async def _hooked_gateway(mode: str) -> Gateway:
    pem = keys.private_key_pem_for_asyncssh(keys.generate_private_key())
    gateway = Gateway(GatewayConfig(host=LOOPBACK, port=0, host_key_pem=pem, reverse=True))
    _SessionHook.install(gateway, mode)
    await gateway.start()
    return gateway


async def test_flapping_gateway_does_not_reset_the_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """chisel resets its backoff only after a session that lasted; a gateway that drops
    every session at once must see growing delays and the retry limit, not 10 dials/s."""
    caplog.set_level(logging.INFO, logger="cc")
    gateway = await _hooked_gateway("flap")
    try:
        config = ConnectorConfig(
            server=urlsplit(f"http://{LOOPBACK}:{gateway.ports[0]}"),
            remotes=[parse_remote(_remote(free_port(), 9))],
            fingerprint=gateway.fingerprint,
            max_retry_count=3,
            max_retry_interval=1.0,
            connect_timeout=STEP,
        )
        connector = Connector(config, rng=lambda: 1.0 - 1e-9)
        with pytest.raises(FatalError, match="gave up after 3 retries"):
            async with asyncio.timeout(STEP):
                await connector.run()
    finally:
        await gateway.close()
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("Connected (Latency") for m in messages) == 4
    announced = [
        parse_duration(m.group(1))
        for msg in messages
        if (m := re.fullmatch(r"Retrying in (\S+)\.\.\.", msg))
    ]
    assert announced == pytest.approx([0.1, 0.2, 0.4], abs=1e-6)


async def test_session_that_lasted_resets_the_backoff(caplog: pytest.LogCaptureFixture) -> None:
    """A session longer than ``backoff_reset_after`` starts the delays again at 100 ms."""
    caplog.set_level(logging.INFO, logger="cc")
    gateway = await _hooked_gateway("flap")
    try:
        config = ConnectorConfig(
            server=urlsplit(f"http://{LOOPBACK}:{gateway.ports[0]}"),
            remotes=[parse_remote(_remote(free_port(), 9))],
            fingerprint=gateway.fingerprint,
            max_retry_count=1,
            max_retry_interval=1.0,
            connect_timeout=STEP,
            backoff_reset_after=0.01,
        )
        connector = Connector(config, rng=lambda: 1.0 - 1e-9)
        task = asyncio.get_running_loop().create_task(connector.run())
        async with asyncio.timeout(STEP):
            while sum(r.getMessage().startswith("Connected (Latency") for r in caplog.records) < 4:
                assert not task.done(), task.exception() if task.done() else None
                await asyncio.sleep(0.01)
        connector.stop()
        async with asyncio.timeout(STEP):
            await task
    finally:
        await gateway.close()
    announced = [
        parse_duration(m.group(1))
        for r in caplog.records
        if (m := re.fullmatch(r"Retrying in (\S+)\.\.\.", r.getMessage()))
    ]
    assert announced[:3] == pytest.approx([0.1, 0.1, 0.1], abs=1e-6)


async def test_gateway_mute_after_auth_times_out_and_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A gateway that completes SSH but never answers the config request must not hang the
    connector: the request is bounded by connect_timeout and the connector retries."""
    caplog.set_level(logging.INFO, logger="cc")
    gateway = await _hooked_gateway("mute")
    try:
        config = ConnectorConfig(
            server=urlsplit(f"http://{LOOPBACK}:{gateway.ports[0]}"),
            remotes=[parse_remote(_remote(free_port(), 9))],
            fingerprint=gateway.fingerprint,
            max_retry_count=1,
            max_retry_interval=0.2,
            connect_timeout=0.5,
        )
        connector = Connector(config)
        started = time.monotonic()
        with pytest.raises(FatalError, match="gave up after 1 retries"):
            async with asyncio.timeout(STEP):
                await connector.run()
        elapsed = time.monotonic() - started
    finally:
        await gateway.close()
    print(f"mute gateway: two config timeouts and a give-up in {elapsed:.2f}s")
    assert elapsed < 2 * 0.5 + 0.2 + SLACK
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("Connecting to") for m in messages) == 2
    assert sum(m.startswith("Connection error") for m in messages) == 2
    assert not any(m.startswith("Connected (Latency") for m in messages)


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
