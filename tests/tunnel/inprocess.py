"""Run an in-process test on each event loop without a conftest of this directory.

Every test here runs on the stock asyncio loop and on uvloop, like the tests
run by the I/O packages' conftests (tests/support/inprocess.py): the loops differ in when
callbacks run, and such differences are where tunnel bugs hide.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable

from cc.protocol import keys
from tests.support.harness import Harness

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
    uvloop = None  # type: ignore[assignment]

__all__ = ["LOOPS", "run_on"]

#: The loops every test runs on; parametrize with ``sorted(LOOPS)``.
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.SelectorEventLoop}
if uvloop is not None:
    LOOPS["uvloop"] = uvloop.new_event_loop


@functools.cache
def _host_key_pem() -> bytes:
    return keys.private_key_pem_for_asyncssh(keys.generate_private_key())


def run_on(loop_name: str, test: Callable[[Harness], Awaitable[None]]) -> None:
    """Run ``test`` with a fresh harness on the named loop; the harness is closed after."""

    async def main() -> None:
        harness = Harness(_host_key_pem())
        try:
            await test(harness)
        finally:
            await harness.aclose()

    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(main())
