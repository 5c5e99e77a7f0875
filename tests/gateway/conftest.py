"""In-process I/O tests: both event loops and the ``e2e`` marker (tests/support/inprocess.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.apigw import ApiGateway, Backend
from tests.support.harness import Harness
from tests.support.inprocess import (
    cc_logs_reach_caplog,
    pytest_asyncio_loop_factories,
    pytest_itemcollected,
)

__all__ = ["cc_logs_reach_caplog", "pytest_asyncio_loop_factories", "pytest_itemcollected"]


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    """An HTTP backend for the HTTP API gateway tests."""
    b = await Backend().start()
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def api(harness: Harness, tmp_path: Path) -> AsyncIterator[ApiGateway]:
    """A gateway serving the HTTP API on its app port (tests/support/apigw.py)."""
    a = ApiGateway(harness, tmp_path)
    try:
        yield a
    finally:
        await a.close()
