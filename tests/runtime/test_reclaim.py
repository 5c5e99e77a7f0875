"""The burst watch: when the allocator switches and when memory is reclaimed.

The switch and the reclaim are passed in as plain functions that record their calls;
what they do to the process is tested in test_objalloc.py, test_heap.py and, end to
end, by tests/system/test_load.py.
"""

from __future__ import annotations

import asyncio

import pytest

from cc.runtime.reclaim import BurstWatch

SETTLE = 0.05


class Recorder:
    def __init__(self) -> None:
        self.switches: list[bool] = []
        self.reclaims = 0

    def use_heap(self, on: bool) -> bool:
        self.switches.append(on)
        return on

    def reclaim(self) -> None:
        self.reclaims += 1


def watch(rec: Recorder, min_interval: float = 0.0) -> BurstWatch:
    w = BurstWatch(8, 2, settle=SETTLE, min_interval=min_interval, reclaim=rec.reclaim)
    w.enable(rec.use_heap)
    return w


async def test_a_burst_switches_to_the_heap_and_back_then_reclaims_once() -> None:
    rec = Recorder()
    w = watch(rec)
    for _ in range(7):
        w.created()
    assert rec.switches == [] and not w.in_burst
    w.created()  # the 8th: a burst
    for _ in range(20):
        w.created()
    assert rec.switches == [True] and w.in_burst
    for _ in range(25):
        w.freed()
    assert rec.switches == [True] and w.live == 3  # not down to the low-water mark yet
    w.freed()
    assert rec.switches == [True, False] and not w.in_burst
    assert rec.reclaims == 0  # the close callbacks get `settle` seconds first
    await asyncio.sleep(SETTLE * 4)
    assert rec.reclaims == 1 and w.reclaims == 1 and w.peak == 28
    for _ in range(2):
        w.freed()
    await asyncio.sleep(SETTLE * 4)
    assert rec.reclaims == 1 and rec.switches == [True, False]


async def test_reclaims_are_at_least_min_interval_apart() -> None:
    rec = Recorder()
    loop = asyncio.get_running_loop()
    done: list[float] = []
    w = BurstWatch(8, 2, settle=SETTLE, min_interval=0.5, reclaim=lambda: done.append(loop.time()))
    w.enable(rec.use_heap)
    for _ in range(3):  # three bursts in quick succession
        for _ in range(8):
            w.created()
        for _ in range(8):
            w.freed()
        await asyncio.sleep(SETTLE * 3)
    await asyncio.sleep(1.2)
    # The second burst's reclaim had to wait for the interval; the third burst came
    # meanwhile and took it over.
    assert len(done) == 2, done
    assert done[1] - done[0] >= 0.5 - 0.01
    assert rec.switches == [True, False] * 3


async def test_a_new_burst_postpones_the_pending_reclaim() -> None:
    rec = Recorder()
    w = watch(rec)
    for _ in range(8):
        w.created()
    for _ in range(6):
        w.freed()  # down to 2: reclaim pending
    for _ in range(6):
        w.created()  # back to 8 before it ran
    await asyncio.sleep(SETTLE * 4)
    assert rec.reclaims == 0 and w.in_burst
    for _ in range(8):
        w.freed()
    await asyncio.sleep(SETTLE * 4)
    assert rec.reclaims == 1


async def test_counts_but_does_nothing_until_enabled() -> None:
    rec = Recorder()
    w = BurstWatch(8, 2, settle=SETTLE, reclaim=rec.reclaim)
    for _ in range(10):
        w.created()
    for _ in range(10):
        w.freed()
    await asyncio.sleep(SETTLE * 4)
    assert (w.live, w.bursts, rec.reclaims, rec.switches) == (0, 0, 0, [])


def test_water_marks_must_be_ordered() -> None:
    with pytest.raises(ValueError):
        BurstWatch(8, 8)
