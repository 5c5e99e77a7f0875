"""The ``--workers`` control process: a worker that stops for a reason stops them all.

Workers here are tiny Python programs, so each case runs in a second: one that
reports why it stops (``cc.runtime.report``) ends the group with its status and
reason, one that just dies is restarted, and siblings' reports are not repeated.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

from cc.runtime.supervisor import WORKER_ENV, Supervisor

REPORTING = textwrap.dedent(
    """
    import os, sys, time
    from cc.runtime.report import report_to_control
    runs = sys.argv[1]
    index = os.environ[WORKER_ENV]
    # the first run of worker 0 just dies (a crash: restarted); later runs give a reason
    marker = os.path.join(runs, index)
    first = not os.path.exists(marker)
    open(marker, "a").write("x")
    if first and index == "0":
        sys.exit(3)
    if index == "1":
        # the sibling stops for the same reason, after worker 0's second run began
        # (a bounded wait: a loaded machine may take a while to restart it)
        deadline = time.monotonic() + 20
        path0 = os.path.join(runs, "0")
        while time.monotonic() < deadline:
            if os.path.exists(path0) and open(path0).read() == "xx":
                break
            time.sleep(0.02)
        time.sleep(0.3)
    report_to_control(f"cannot listen on 127.0.0.1:1: address already in use ({index})")
    sys.exit(1)
    """
).replace("WORKER_ENV", repr(WORKER_ENV))


async def test_a_reported_stop_ends_the_group_with_its_reason(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", REPORTING, str(tmp_path)]
    supervisor = Supervisor(argv, 2, component="server")
    status = await supervisor.run()
    assert status == 1
    assert supervisor.reason is not None
    assert supervisor.reason.startswith("cannot listen on 127.0.0.1:1: address already in use")
    assert supervisor.restarts == 1  # the crash (status 3, no reason) was restarted
    assert (tmp_path / "0").read_text() == "xx"
    assert not supervisor.pids()


async def test_without_a_reason_a_worker_is_restarted(tmp_path: Path) -> None:
    crash = "import sys, time; time.sleep(0.05); sys.exit(1)"
    supervisor = Supervisor([sys.executable, "-c", crash], 1, component="client")
    task = asyncio.ensure_future(supervisor.run())
    async with asyncio.timeout(20):
        while supervisor.restarts < 2:
            await asyncio.sleep(0.05)
    supervisor.stop()
    assert await task == 0
    assert supervisor.reason is None
