"""Hooks and fixtures of the in-process I/O test packages (transport, tunnel, gateway,
connector, ssh): their conftest.py files import these names, so each rule is written
once and applies only below those directories.

Every async test there runs twice, on the stock asyncio loop and on uvloop (as
uvloop's own suite runs each I/O test on both): the two loops differ in when
callbacks run (uvloop may deliver data before a ``pause_reading()`` issued in
``connection_made`` takes effect), and such differences are where tunnel bugs hide.
pytest-asyncio 1.x offers the ``pytest_asyncio_loop_factories`` hook for this; a
parametrized ``event_loop_policy`` fixture is deprecated there.

Every test there also carries the ``e2e`` marker, so that CI can run them once
more with the pure-Python fast-path twin (``CC_NO_EXTENSIONS=1 pytest -m e2e``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping

import pytest

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
    uvloop = None  # type: ignore[assignment]

__all__ = [
    "LOOP_FACTORIES",
    "cc_logs_reach_caplog",
    "pytest_asyncio_loop_factories",
    "pytest_itemcollected",
]

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

#: The loops every async test of the I/O packages runs on; the ids appear in test names.
LOOP_FACTORIES: dict[str, LoopFactory] = {"asyncio": asyncio.SelectorEventLoop}
if uvloop is not None:
    LOOP_FACTORIES["uvloop"] = uvloop.new_event_loop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, LoopFactory]:
    """Parametrize every async test of the importing directory over asyncio and uvloop."""
    return LOOP_FACTORIES


def pytest_itemcollected(item: pytest.Item) -> None:
    """Mark every test of the importing directory ``e2e`` (before ``-m`` selects)."""
    item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def cc_logs_reach_caplog() -> Iterator[None]:
    """``setup_logging`` (run by CLI tests in this process) stops propagation; undo it here."""
    root = logging.getLogger("cc")
    saved = root.propagate
    root.propagate = True
    try:
        yield
    finally:
        root.propagate = saved
