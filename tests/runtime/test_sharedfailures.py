"""The shared failed-login table across real processes: one count, no lost updates.

The control process's block is handed to child processes by descriptor, as the
supervisor hands it to gateway workers; each child maps it and counts under the
record lock.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cc.protocol.authguard import AuthGuard, GuardPolicy
from cc.runtime.sharedfailures import FAILURES_FD_ENV, SharedFailures, failures_from_environment

__all__: list[str] = []

ROOT = Path(__file__).resolve().parents[2]

#: A worker's part: count ``n`` failures of one source as fast as it can.
CHILD = """
import sys, time
from cc.protocol.authguard import AuthGuard, GuardPolicy
from cc.runtime.sharedfailures import failures_from_environment
table = failures_from_environment(600.0)
assert table is not None
guard = AuthGuard(GuardPolicy(ban_after=10**9), table)
print("ready", flush=True)
sys.stdin.readline()
for _ in range(int(sys.argv[1])):
    guard.failed("10.0.0.7", time.monotonic())
"""


def _children(shared: SharedFailures, count: int, n: int) -> list[subprocess.Popen[str]]:
    env = {**os.environ, FAILURES_FD_ENV: str(shared.fd), "PYTHONPATH": str(ROOT)}
    return [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(n)],
            env=env,
            pass_fds=[shared.fd],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]


def test_processes_count_into_one_record_without_losing_updates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shared = SharedFailures(slots=1024)
    n = 3000
    children = _children(shared, 2, n)
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
        for child in children:  # both at once, so their updates race
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        for child in children:
            assert child.wait(60) == 0
        monkeypatch.setenv(FAILURES_FD_ENV, str(shared.fd))
        table = failures_from_environment(600.0)
        assert table is not None
        record = table.peek("10.0.0.7")
        assert record is not None
        assert record.failures == 2 * n
        # and this process sees a ban the others would
        guard = AuthGuard(GuardPolicy(ban_after=2 * n + 1, ban_time=30.0), table)
        assert guard.failed("10.0.0.7", time.monotonic()).banned_for == 30.0
        assert guard.banned_for("10.0.0.7", time.monotonic()) > 29.0
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        shared.close()


def test_no_table_when_the_descriptor_is_not_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAILURES_FD_ENV, "not-a-number")
    assert failures_from_environment(600.0) is None
    read, write = os.pipe()
    monkeypatch.setenv(FAILURES_FD_ENV, str(read))
    try:
        assert failures_from_environment(600.0) is None  # a pipe cannot be mapped
    finally:
        os.close(read)
        os.close(write)
