"""Fixtures for the whole suite; the helpers behind them live in tests/support."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from cc import fastpath
from cc.protocol import keys
from tests.support.net import EchoServer, http_echo_server, tcp_echo_server
from tests.support.processes import Processes

if TYPE_CHECKING:  # imported by the fixture: tests/protocol and tests/fastpath run
    # without asyncssh (the i386 wheel check, packaging/build-wheels.sh)
    from tests.support.harness import Harness


@pytest.fixture(scope="session", params=sorted(fastpath.implementations()))
def fastpath_impl(request: pytest.FixtureRequest) -> ModuleType:
    """Each importable fast-path twin ("python", and "cython" when built) in turn.

    Session-scoped because the modules are stateless and Hypothesis refuses
    function-scoped fixtures in ``@given`` tests.
    """
    return fastpath.implementations()[request.param]


@pytest.fixture(autouse=True, scope="session")
def _one_worker_unless_a_test_asks() -> None:
    """Subprocesses run one worker each (``--workers`` defaults to the CPU count).

    Most tests are about one session's behaviour and read its log lines and
    pid; the worker tests pass ``--workers`` or drop ``CC_WORKERS`` themselves.
    """
    os.environ.setdefault("CC_WORKERS", "1")


# --------------------------------------------------------------------------- processes


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
def echo() -> Iterator[EchoServer]:
    """A byte-exact TCP echo service on 127.0.0.1 (threads): the far end of a tunnel."""
    with tcp_echo_server() as server:
        yield server


@pytest.fixture(scope="module")
def http() -> Iterator[EchoServer]:
    """A local HTTP server whose body is ``"METHOD PATH\\n"`` and the request body."""
    with http_echo_server() as server:
        yield server


# --------------------------------------------------------------------------- in-process


@pytest.fixture(scope="session")
def host_key() -> ec.EllipticCurvePrivateKey:
    """One generated P-256 host key for every gateway of the run."""
    return keys.generate_private_key()


@pytest.fixture(scope="session")
def host_key_pem(host_key: ec.EllipticCurvePrivateKey) -> bytes:
    return keys.private_key_pem_for_asyncssh(host_key)


@pytest.fixture
async def harness(host_key_pem: bytes) -> AsyncIterator[Harness]:
    """Gateways, connectors and services for one test, all stopped at its end."""
    from tests.support.harness import Harness

    h = Harness(host_key_pem)
    try:
        yield h
    finally:
        await h.aclose()
