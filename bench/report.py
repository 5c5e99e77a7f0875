"""Results: one ``PathResult`` per path, ratios to chisel, the table and the JSON file."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "FIGURES",
    "Figure",
    "PathResult",
    "add_ratios",
    "kernel_fractions",
    "render_table",
    "worker_scaling",
    "write_json",
]

ROLES = ("gateway", "connector")
BASELINE = "chisel"


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    better: str  # "higher" or "lower"
    ratio: bool = True  # False: a condition of the run, not a result to compare


def _per_role(key: str, label: str, unit: str, better: str) -> list[Figure]:
    return [Figure(f"{key}_{role}", f"{label} {role}", unit, better) for role in ROLES]


FIGURES: list[Figure] = [
    Figure("bulk_fwd_MBps", "1 stream gw->conn", "MB/s", "higher"),
    Figure("bulk_rev_MBps", "1 stream conn->gw", "MB/s", "higher"),
    Figure("bulk_par_MBps", "N streams gw->conn", "MB/s", "higher"),
    Figure("rtt_p50_us", "RTT p50", "µs", "lower"),
    Figure("rtt_p99_us", "RTT p99", "µs", "lower"),
    Figure("conn_per_s", "new conns", "1/s", "higher"),
    *_per_role("cpu_s_per_GiB", "CPU s/GiB", "s/GiB", "lower"),
    *_per_role("cpu_pct_fwd", "CPU % gw->conn", "%", "lower"),
    *_per_role("cpu_pct_rev", "CPU % conn->gw", "%", "lower"),
    *_per_role("cpu_us_per_rtt", "CPU µs/round trip", "µs", "lower"),
    *_per_role("cpu_us_per_conn", "CPU µs/new conn", "µs", "lower"),
    *_per_role("rss_idle_MB", "RSS idle", "MB", "lower"),
    *_per_role("pss_idle_MB", "PSS idle", "MB", "lower"),
    *_per_role("uss_idle_MB", "USS idle", "MB", "lower"),
    *_per_role("rss_load_MB", "RSS peak load", "MB", "lower"),
    *_per_role("rss_conns_delta_MB", "RSS +idle conns", "MB", "lower"),
    Figure("par_spread", "N streams slowest/fastest", "ratio", "higher", ratio=False),
    Figure("busy_par_cores", "machine busy, N streams", "cores", "lower", ratio=False),
    Figure("other_load_cores", "others' CPU load", "cores", "lower", ratio=False),
]
_NO_RATIO = {f.key for f in FIGURES if not f.ratio}


@dataclass
class PathResult:
    """Everything measured for one path; ``status`` is ok, partial, error or skipped."""

    name: str
    label: str
    status: str = "ok"
    error: str | None = None
    errors: dict[str, str] = field(default_factory=dict)  # workload -> message
    figures: dict[str, float] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    details: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "label": self.label,
            "status": self.status,
            "error": self.error,
            "workload_errors": self.errors,
            "figures": self.figures,
            "ratios_to_chisel": self.ratios,
            "details": self.details,
        }


def add_ratios(results: list[PathResult]) -> None:
    """Each figure divided by chisel's same figure (chisel = 1.0), when chisel ran."""
    base = next((r for r in results if r.name == BASELINE and r.figures), None)
    if base is None:
        return
    for result in results:
        result.ratios = {
            key: value / base.figures[key]
            for key, value in result.figures.items()
            if key not in _NO_RATIO and base.figures.get(key) and math.isfinite(value)
        }


def worker_scaling(results: list[PathResult]) -> dict[str, float]:
    """Each throughput figure of ``ours-2w`` divided by ``ours`` (the defaults) in this run."""
    by_name = {r.name: r for r in results}
    one, two = by_name.get("ours"), by_name.get("ours-2w")
    if one is None or two is None:
        return {}
    return {
        key: two.figures[key] / one.figures[key]
        for key in ("bulk_fwd_MBps", "bulk_rev_MBps", "bulk_par_MBps", "conn_per_s")
        if one.figures.get(key) and key in two.figures
    }


#: The path whose bulk figures are the ceiling (no tunnel: the kernel's loopback).
CEILING = "relay"
_BULK_KEYS = ("bulk_fwd_MBps", "bulk_rev_MBps", "bulk_par_MBps")


def kernel_fractions(results: list[PathResult]) -> dict[str, dict[str, float]]:
    """Each tunnel's bulk figures as a fraction of the kernel relay's in this run.

    Also ``par_over_one``: N streams divided by one stream gw->conn, per path.
    """
    by_name = {r.name: r for r in results}
    ceiling = by_name.get(CEILING)
    out: dict[str, dict[str, float]] = {}
    for result in results:
        if result.name == CEILING:
            continue
        fractions: dict[str, float] = {}
        if ceiling is not None:
            for key in _BULK_KEYS:
                if ceiling.figures.get(key) and key in result.figures:
                    fractions[key] = result.figures[key] / ceiling.figures[key]
        one = result.figures.get("bulk_fwd_MBps")
        if one and "bulk_par_MBps" in result.figures:
            fractions["par_over_one"] = result.figures["bulk_par_MBps"] / one
        if fractions:
            out[result.name] = fractions
    return out


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _cell(result: PathResult, key: str, with_ratio: bool) -> str:
    if key not in result.figures:
        return "-"
    text = _number(result.figures[key])
    if with_ratio and key in result.ratios and result.name != BASELINE:
        text += f" ({result.ratios[key]:.2f})"
    return text


def render_table(results: list[PathResult], *, parallel_streams: int, idle_conns: int) -> str:
    """Figures as rows, paths as columns; "(r)" after a value is its ratio to chisel."""
    with_ratio = any(r.ratios for r in results)
    header = ["figure", *(r.name for r in results)]
    rows = [["status", *(r.status for r in results)]]
    for fig in FIGURES:
        if not any(fig.key in r.figures for r in results):
            continue
        label = fig.label.replace("N streams", f"{parallel_streams} streams")
        label = label.replace("idle conns", f"{idle_conns} idle conns")
        rows.append([f"{label} [{fig.unit}]", *(_cell(r, fig.key, with_ratio) for r in results)])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        )
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if with_ratio:
        lines.append("(x.xx) = ratio to chisel's figure in this run (chisel = 1.00)")
    lines.append("gw = gateway side (clients connect here), conn = connector side (service)")
    scaling = worker_scaling(results)
    if "bulk_par_MBps" in scaling:
        lines.append(
            f"workers: {parallel_streams} streams with --workers 2 = "
            f"{scaling['bulk_par_MBps']:.2f}x the defaults (ours-2w / ours, this run)"
        )
    for name, fractions in kernel_fractions(results).items():
        parts = [
            f"{label} {fractions[key]:.2f}"
            for key, label in (
                ("bulk_fwd_MBps", "1 stream gw->conn"),
                ("bulk_rev_MBps", "1 stream conn->gw"),
            )
            if key in fractions
        ]
        if parts:
            lines.append(f"{name} / kernel relay: " + ", ".join(parts))
        if "par_over_one" in fractions:
            lines.append(
                f"{name}: {parallel_streams} streams / 1 stream = {fractions['par_over_one']:.2f}"
            )
    for r in results:
        if r.error:
            lines.append(f"{r.name}: {r.status}: {r.error.splitlines()[0][:300]}")
        for workload, message in r.errors.items():
            lines.append(f"{r.name}: {workload} failed: {message.splitlines()[0][:300]}")
    return "\n".join(lines)


def write_json(path: Path, document: dict[str, object]) -> None:
    """Write the results; a ``.gitignore`` keeps a results directory out of git."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.parent.name == "results" and not (path.parent / ".gitignore").exists():
        (path.parent / ".gitignore").write_text("*\n")
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
