"""Small objects from the heap during a burst, so that the heap can give them back.

Each case runs in a child process: the object allocator is process-wide.  The
pattern is the one that kept ~20 MB per process after 10,000 tunnelled connections:
a burst of small objects, a few of them surviving here and there, the rest freed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or sys.implementation.name != "cpython",
    reason="CPython's allocator API and glibc's malloc_trim",
)

_BURST = textwrap.dedent(
    """
    import gc, sys
    from cc.runtime.heap import trim_heap
    from cc.runtime.objalloc import ObjectAllocator

    def rss_mb():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024

    switch = sys.argv[1] == "heap"
    allocator = ObjectAllocator.for_this_process()
    assert allocator is not None, "plain pymalloc expected"
    survivors = []
    start = rss_mb()
    if switch:
        assert allocator.use_heap(True) and allocator.on_heap
    burst = []
    for i in range(400_000):  # ~100 MB of small objects, as 10,000 connections make
        burst.append((i, str(i), [i]))
        if i % 1000 == 0:
            survivors.append(str(i) + "!")  # one survivor in 1,000, scattered
    peak = rss_mb()
    del burst
    if switch:
        assert not allocator.use_heap(False)
    gc.collect()
    trim_heap()
    after = rss_mb()
    assert len(survivors) == 400
    print(f"{start:.0f} {peak:.0f} {after:.0f}")
    """
)


def _run(code: str, *args: str, python_args: tuple[str, ...] = ()) -> str:
    proc = subprocess.run(
        [sys.executable, *python_args, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_a_burst_on_the_heap_is_given_back() -> None:
    """With the burst's objects on the heap, RSS returns to within a few MB of the start;
    on pymalloc, 400 survivors keep nearly all of it (the control)."""
    start, peak, after = map(float, _run(_BURST, "heap").split())
    assert peak > start + 60, (start, peak)
    assert after < start + 10, (start, peak, after)
    start, peak, after = map(float, _run(_BURST, "pymalloc").split())
    assert after > start + 60, "pymalloc gave its arenas back: the premise is gone"


_CROSSING = textwrap.dedent(
    """
    import gc
    from cc.runtime.objalloc import ObjectAllocator

    allocator = ObjectAllocator.for_this_process()
    # Objects made on one side of a switch, grown (realloc) and freed on the other.
    kept = {}
    for round_ in range(20):
        allocator.use_heap(round_ % 2 == 0)
        for i in range(2000):
            key = f"k{i}"
            seq = kept.setdefault(key, [])
            seq.append(str(round_) * (i % 40))
            if i % 3 == round_ % 3:
                kept.pop(key)
        gc.collect()
    allocator.use_heap(False)
    text = "".join(str(len(v)) for v in kept.values())
    print(len(kept), len(text))
    """
)


def test_objects_cross_the_switch_both_ways() -> None:
    """Growing and freeing, on pymalloc, objects made on the heap and back: no crash."""
    assert _run(_CROSSING).split()[0].isdigit()


_HOOKED = textwrap.dedent(
    """
    import sys, tracemalloc
    from cc.runtime.objalloc import ObjectAllocator

    if sys.argv[1] == "later":
        allocator = ObjectAllocator.for_this_process()
        assert allocator is not None
        tracemalloc.start()
        # A hook wraps ours now: switching would unhook it, so it is left alone.
        assert not allocator.use_heap(True) and allocator.disabled
        data = [str(i) for i in range(10_000)]
        assert tracemalloc.get_traced_memory()[0] > 100_000
    else:
        assert ObjectAllocator.for_this_process() is None
    print("ok")
    """
)


@pytest.mark.parametrize(
    ("python_args", "when"),
    [
        pytest.param(("-X", "tracemalloc"), "start", id="tracemalloc"),
        pytest.param(("-X", "dev"), "start", id="debug-hooks"),
        pytest.param((), "later", id="hooked-later"),
    ],
)
def test_no_switch_under_another_allocator_hook(python_args: tuple[str, ...], when: str) -> None:
    """Under tracemalloc or the debug hooks the allocator is not ours to replace."""
    assert _run(_HOOKED, when, python_args=python_args).strip() == "ok"


def test_no_switch_when_objects_already_use_malloc() -> None:
    """PYTHONMALLOC=malloc already does what a burst would switch to."""
    code = "from cc.runtime.objalloc import ObjectAllocator as A; print(A.for_this_process())"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONMALLOC": "malloc"},
    )
    assert proc.stdout.strip() == "None", proc.stdout + proc.stderr


@pytest.mark.parametrize(("value", "switches"), [("1", True), ("0", False), ("off", False)])
def test_cc_burst_allocator_turns_the_switch_off(value: str, switches: bool) -> None:
    """Linux/glibc CPython with plain pymalloc, as the suite runs.

    ``CC_BURST_ALLOCATOR=0``: an operator's way back to plain pymalloc, no rebuild."""
    code = (
        "from cc.runtime.process import new_event_loop\n"
        "from cc.runtime.reclaim import BURSTS\n"
        "new_event_loop()\n"
        "print(BURSTS.enabled, BURSTS._use_heap is not None)\n"
    )
    env = {**os.environ, "CC_BURST_ALLOCATOR": value}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert out[0] == "True"  # bursts are still watched (and trimmed) either way
    assert out[1] == str(switches)
