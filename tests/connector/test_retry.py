"""When the connector retries, how long it waits, and when it gives up: in-process.

The random source of the backoff can be injected here (``rng``), so the delays are
exact; gateways that misbehave after the SSH handshake are real in-process gateways
with their session hook replaced.  The same limits seen from outside, on the real
CLI (``--max-retry-count``, SIGHUP), are in tests/system/test_resilience.py.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import re
import socket
import time
from urllib.parse import urlsplit

import pytest

from cc.connector.connector import Connector, ConnectorConfig, FatalError
from cc.gateway.gateway import Gateway, GatewaySession
from cc.protocol.backoff import Backoff
from cc.protocol.durations import parse_duration
from cc.protocol.remote import parse_remote
from tests.support.harness import STEP, Harness
from tests.support.net import LOOPBACK, free_port
from tests.support.streams import echo_handler, round_trip

__all__: list[str] = []

#: Scheduling/CI slack on top of a computed deadline.
SLACK = 2.0


def _remote(rev_port: int, target_port: int) -> str:
    return f"R:{LOOPBACK}:{rev_port}:{LOOPBACK}:{target_port}"


def _retry_delays(records: list[logging.LogRecord]) -> list[float]:
    """The delays the connector announced, in order ("Retrying in 100ms...")."""
    return [
        parse_duration(m.group(1))
        for r in records
        if (m := re.fullmatch(r"Retrying in (\S+)\.\.\.", r.getMessage()))
    ]


# ----------------------------------------------------------------------------- backoff + jitter


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
    announced = _retry_delays(caplog.records)
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


# ----------------------------------------------------------------------------- transient refusals


async def test_reverse_port_held_by_another_program_is_retried_not_fatal(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """ "Server cannot listen" is transient (the holder may go away): the connector keeps
    retrying with backoff and connects once the port is free, instead of exiting."""
    caplog.set_level(logging.INFO, logger="cc")
    service_port = await harness.service(echo_handler)
    gateway = await harness.gateway()
    squatter = socket.socket()
    squatter.bind((LOOPBACK, 0))
    squatter.listen()
    rev_port = int(squatter.getsockname()[1])
    try:
        running = harness.start(
            gateway,
            [_remote(rev_port, service_port)],
            max_retry_count=-1,  # unlimited, the default
            max_retry_interval=0.3,
        )
        connector, task = running.connector, running.task
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
        assert await round_trip(rev_port, b"mine now") == b"mine now"
    finally:
        squatter.close()


# ------------------------------------------------------------------------- gateways that misbehave


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


async def _hooked_gateway(harness: Harness, mode: str) -> Gateway:
    return await harness.gateway(before_start=lambda gateway: _SessionHook.install(gateway, mode))


async def test_flapping_gateway_does_not_reset_the_backoff(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """chisel resets its backoff only after a session that lasted; a gateway that drops
    every session at once must see growing delays and the retry limit, not 10 dials/s."""
    caplog.set_level(logging.INFO, logger="cc")
    gateway = await _hooked_gateway(harness, "flap")
    running = harness.start(
        gateway,
        [_remote(free_port(), 9)],
        rng=lambda: 1.0 - 1e-9,
        max_retry_count=3,
        max_retry_interval=1.0,
    )
    with pytest.raises(FatalError, match="gave up after 3 retries"):
        async with asyncio.timeout(STEP):
            await running.task
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("Connected (Latency") for m in messages) == 4
    assert _retry_delays(caplog.records) == pytest.approx([0.1, 0.2, 0.4], abs=1e-6)


async def test_session_that_lasted_resets_the_backoff(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """A session longer than ``backoff_reset_after`` starts the delays again at 100 ms."""
    caplog.set_level(logging.INFO, logger="cc")
    gateway = await _hooked_gateway(harness, "flap")
    running = harness.start(
        gateway,
        [_remote(free_port(), 9)],
        rng=lambda: 1.0 - 1e-9,
        max_retry_count=1,
        max_retry_interval=1.0,
        backoff_reset_after=0.01,
    )
    task = running.task
    async with asyncio.timeout(STEP):
        while sum(r.getMessage().startswith("Connected (Latency") for r in caplog.records) < 4:
            assert not task.done(), task.exception() if task.done() else None
            await asyncio.sleep(0.01)
    running.connector.stop()
    async with asyncio.timeout(STEP):
        await task
    assert _retry_delays(caplog.records)[:3] == pytest.approx([0.1, 0.1, 0.1], abs=1e-6)


async def test_gateway_mute_after_auth_times_out_and_retries(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """A gateway that completes SSH but never answers the config request must not hang the
    connector: the request is bounded by connect_timeout and the connector retries."""
    caplog.set_level(logging.INFO, logger="cc")
    gateway = await _hooked_gateway(harness, "mute")
    started = time.monotonic()
    error = await harness.expect_fatal(
        gateway,
        [_remote(free_port(), 9)],
        max_retry_count=1,
        max_retry_interval=0.2,
        connect_timeout=0.5,
    )
    elapsed = time.monotonic() - started
    assert "gave up after 1 retries" in str(error)
    print(f"mute gateway: two config timeouts and a give-up in {elapsed:.2f}s")
    assert elapsed < 2 * 0.5 + 0.2 + SLACK
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("Connecting to") for m in messages) == 2
    assert sum(m.startswith("Connection error") for m in messages) == 2
    assert not any(m.startswith("Connected (Latency") for m in messages)
