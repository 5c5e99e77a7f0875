"""Smoke tests of ``python -m bench``: it runs, cleans up and writes valid JSON.

No speed is asserted anywhere: figures depend on the machine and on what else runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.peers import REPO_ROOT
from bench.report import FIGURES
from cc.cli.workers import auto_workers

pytestmark = pytest.mark.timeout(180)

TINY = ["--quick", "--bulk-seconds", "1", "--rtt-count", "20", "--conn-seconds", "0.2"]


def run_bench(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", *TINY, "--json", str(out), *args],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert out.exists(), f"no JSON written\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.returncode, json.loads(out.read_text())


@pytest.mark.parametrize("tool", ["auto", "python"])
def test_relay_writes_valid_json(tmp_path: Path, tool: str) -> None:
    code, doc = run_bench(tmp_path, "--only", "relay", "--bulk-tool", tool)
    assert code == 0
    assert doc["settings"]["paths"] == ["relay"]
    assert doc["machine"]["fastpath"] in ("cython", "python")
    assert doc["machine"]["cpus_logical"] >= 1
    relay = doc["paths"]["relay"]
    assert relay["status"] == "ok", relay
    known = {f["key"] for f in doc["figures"]}
    for key in ("bulk_fwd_MBps", "bulk_rev_MBps", "bulk_par_MBps", "rtt_p50_us", "conn_per_s"):
        assert key in known
        assert relay["figures"][key] > 0
    assert set(relay["figures"]) <= known


def test_ours_path_reports_per_process_figures(tmp_path: Path) -> None:
    code, doc = run_bench(
        # enough round trips for the CPU clock's 10 ms ticks to see them
        tmp_path,
        "--only",
        "ours",
        "--idle-conns",
        "20",
        "--rtt-count",
        "3000",
    )
    ours = doc["paths"]["ours"]
    assert code == 0, ours
    assert ours["status"] == "ok", ours
    # "ours" runs the defaults (--workers auto), and says so
    assert "defaults" in ours["label"] and f"{auto_workers()} each" in ours["label"]
    for role in ("gateway", "connector"):
        assert ours["figures"][f"rss_idle_MB_{role}"] > 0
        assert ours["figures"][f"cpu_s_per_GiB_{role}"] > 0
        if auto_workers() > 1:
            continue  # a control process and workers: bench.probe has no one process to ask
        # bench.probe: the fast path's packet counts of each process, for bench.gate
        counts = ours["details"]["fast_path"][role]
        assert counts["sealed"] > 0 and counts["opened"] > 0, counts
    assert {f.key for f in FIGURES} >= set(ours["figures"])
    for role in ("gateway", "connector"):
        figures = ours["figures"]
        # USS leaves shared pages out, PSS splits them, RSS counts them whole
        assert 0 < figures[f"uss_idle_MB_{role}"] <= figures[f"pss_idle_MB_{role}"]
        assert figures[f"pss_idle_MB_{role}"] <= figures[f"rss_idle_MB_{role}"]
        # CPU per operation, counted with psutil on the tunnel's processes
        assert figures[f"cpu_us_per_rtt_{role}"] > 0
        assert figures[f"cpu_us_per_conn_{role}"] > 0
    rates = ours["details"]["bulk_par"]["stream_MBps"]
    assert len(rates) == doc["settings"]["parallel_streams"]
    assert ours["figures"]["par_spread"] == pytest.approx(min(rates) / max(rates))
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "bench.png").read_bytes().startswith(b"\x89PNG")


def test_worker_scaling_compares_two_workers_with_one(tmp_path: Path) -> None:
    code, doc = run_bench(tmp_path, "--only", "ours,ours-2w", "--idle-conns", "10")
    assert code == 0, doc["paths"]
    one, two = doc["paths"]["ours"]["figures"], doc["paths"]["ours-2w"]["figures"]
    scaling = doc["worker_scaling"]
    assert scaling["bulk_par_MBps"] == pytest.approx(two["bulk_par_MBps"] / one["bulk_par_MBps"])
    assert 0 < one["busy_par_cores"] <= doc["machine"]["cpus_logical"] + 0.5
    assert "streams with --workers 2 =" in doc["table"]
    # a control process and two workers per side are measured as one tree
    if auto_workers() == 1:  # "ours" is the defaults: one process per side here
        assert two["rss_idle_MB_gateway"] > one["rss_idle_MB_gateway"]


def test_broken_chisel_is_an_error_row_not_a_crash(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-chisel")
    code, doc = run_bench(tmp_path, "--only", "chisel,relay", env={"CHISEL_BIN": missing})
    assert code == 1
    assert doc["paths"]["chisel"]["status"] == "error"
    assert "CHISEL_BIN" in doc["paths"]["chisel"]["error"]
    assert doc["paths"]["relay"]["status"] == "ok"


def test_tunnels_are_shown_as_fractions_of_the_kernel_relay(tmp_path: Path) -> None:
    code, doc = run_bench(tmp_path, "--only", "relay,ours", "--idle-conns", "10", "--streams", "4")
    assert code == 0, doc["paths"]
    relay, ours = doc["paths"]["relay"]["figures"], doc["paths"]["ours"]["figures"]
    fractions = doc["kernel_fractions"]["ours"]
    assert fractions["bulk_fwd_MBps"] == pytest.approx(
        ours["bulk_fwd_MBps"] / relay["bulk_fwd_MBps"]
    )
    assert fractions["par_over_one"] == pytest.approx(ours["bulk_par_MBps"] / ours["bulk_fwd_MBps"])
    assert "relay" not in doc["kernel_fractions"]
    assert (
        f"ours / kernel relay: 1 stream gw->conn {fractions['bulk_fwd_MBps']:.2f}" in doc["table"]
    )
    assert f"ours: 4 streams / 1 stream = {fractions['par_over_one']:.2f}" in doc["table"]
