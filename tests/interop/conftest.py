"""Fixtures for the chisel interop tests: the binary, child processes, targets, payload."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import peers
from tests.interop.chisel_support import Processes, chisel_binary

#: Size of the SHA-256-verified transfer through each tunnel (echoed, so twice this
#: many bytes cross the tunnel).  CC_INTEROP_MIB overrides it for a quick local run.
PAYLOAD_MIB = 64


@pytest.fixture(scope="session")
def chisel() -> str:
    """Path of the real chisel binary, from CHISEL_BIN only (skip when it is unset)."""
    return chisel_binary()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """Starts children for one test and stops each by PID afterwards.

    Their logs are printed at teardown; pytest shows that output only for a failure.
    """
    processes = Processes(tmp_path)
    try:
        yield processes
    finally:
        processes.stop_all()
        print(processes.report())


@pytest.fixture
def echo() -> Iterator[peers.EchoServer]:
    """A byte-exact TCP echo service on 127.0.0.1: the far end of every tunnel."""
    with peers.tcp_echo_server() as server:
        yield server


@pytest.fixture(scope="session")
def payload() -> bytes:
    """Random bytes, so a dropped, duplicated or reordered chunk changes the hash."""
    mib = int(os.environ.get("CC_INTEROP_MIB", PAYLOAD_MIB))
    return os.urandom(mib * 1024 * 1024)


@pytest.fixture(scope="session")
def small_payload(payload: bytes) -> bytes:
    """At most 16 MiB of the payload, for the tests whose point is not bulk throughput."""
    return payload[: 16 * 1024 * 1024]
