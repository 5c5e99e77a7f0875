"""In-process I/O tests: both event loops and the ``e2e`` marker (tests/support/inprocess.py)."""

from __future__ import annotations

from tests.support.inprocess import (
    cc_logs_reach_caplog,
    pytest_asyncio_loop_factories,
    pytest_itemcollected,
)

__all__ = ["cc_logs_reach_caplog", "pytest_asyncio_loop_factories", "pytest_itemcollected"]
