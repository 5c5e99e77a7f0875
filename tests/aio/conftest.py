"""Fixtures for the asyncio tests: both event loops, and the in-process bench.

Every async test under ``tests/aio`` runs twice, on the stock asyncio loop and on
uvloop (as uvloop's own suite runs each I/O test on both): the two loops differ in
when callbacks run (uvloop may deliver data before a ``pause_reading()`` issued in
``connection_made`` takes effect), and such differences are where tunnel bugs hide.
pytest-asyncio 1.x offers the ``pytest_asyncio_loop_factories`` hook for this; a
parametrized ``event_loop_policy`` fixture is deprecated there.

Every test collected here is marked ``e2e``: CI runs ``pytest -m e2e`` once more with
``CC_NO_EXTENSIONS=1`` so that the pure twin of the fast path moves real bytes too
(selected by marker, not by path, so that moving these files keeps them in that run).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from cc.protocol import keys
from tests.aio.harness import Harness

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
    uvloop = None  # type: ignore[assignment]

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

#: The loops every async test here runs on; the ids appear in test names.
LOOP_FACTORIES: dict[str, LoopFactory] = {"asyncio": asyncio.SelectorEventLoop}
if uvloop is not None:
    LOOP_FACTORIES["uvloop"] = uvloop.new_event_loop


HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test of this directory ``e2e`` (the hook sees the whole session's items)."""
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.e2e)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, LoopFactory]:
    """Parametrize every async test of this directory over asyncio and uvloop."""
    return LOOP_FACTORIES


@pytest.fixture(scope="session")
def host_key() -> ec.EllipticCurvePrivateKey:
    """One generated P-256 host key for every gateway of the run."""
    return keys.generate_private_key()


@pytest.fixture(scope="session")
def host_key_pem(host_key: ec.EllipticCurvePrivateKey) -> bytes:
    return keys.private_key_pem_for_asyncssh(host_key)


@pytest.fixture
async def harness(host_key_pem: bytes) -> AsyncIterator[Harness]:
    h = Harness(host_key_pem)
    try:
        yield h
    finally:
        await h.aclose()


@pytest.fixture(autouse=True)
def _cc_logs_reach_caplog() -> Iterator[None]:
    """``setup_logging`` (run by CLI tests in this process) stops propagation; undo it here."""
    root = logging.getLogger("cc")
    saved = root.propagate
    root.propagate = True
    try:
        yield
    finally:
        root.propagate = saved
