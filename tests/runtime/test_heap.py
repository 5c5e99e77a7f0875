"""The glibc heap: freed packet buffers go back to the system (cc.runtime.heap).

Run in a child process, because the allocator settings are process-wide: big
buffers are allocated between small long-lived ones (the pattern that left a
busy connector with ~120 MB of free but resident heap), freed, and the trimmer
must give their pages back.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="glibc heap tuning is Linux-only"
)

_CHILD = textwrap.dedent(
    """
    import sys
    from cc.runtime.heap import HeapTrimmer, tune_allocator

    def rss_mb():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024

    if not tune_allocator():
        sys.exit(77)  # not glibc
    trimmer = HeapTrimmer.for_this_process(slack=16 << 20)
    if trimmer is None:
        sys.exit(77)
    assert not trimmer.trim_if_worth_it(), "nothing to give back yet"
    big, pins = [], []
    for _ in range(400):  # 100 MB of packet-sized buffers, each page touched
        buf = bytearray(256 * 1024)
        buf[::4096] = b"x" * len(buf[::4096])
        big.append(buf)
        pins.append(bytearray(2048))  # small live blocks between them pin the heap
    del big
    held = rss_mb()
    assert trimmer.free_bytes() > 64 << 20, trimmer.free_bytes()
    assert trimmer.trim_if_worth_it() and trimmer.trims == 1
    after = rss_mb()
    print(f"{held:.0f} {after:.0f}")
    assert after < held - 50, (held, after)
    """
)


def test_trimmer_gives_freed_heap_back() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode == 77:
        pytest.skip("not glibc (or glibc older than 2.33): nothing to tune")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_event_loop_runs_a_trimmer() -> None:
    """``new_event_loop`` (every command's loop) schedules the periodic trim."""
    child = textwrap.dedent(
        """
        import asyncio
        from cc.runtime import heap, process as runtime

        started = []
        original = heap.HeapTrimmer.start
        heap.HeapTrimmer.start = lambda self, loop: (started.append(self), original(self, loop))
        loop = runtime.new_event_loop()
        assert len(started) == 1 and started[0].interval > 0
        loop.close()
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout + result.stderr
