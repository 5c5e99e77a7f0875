"""One PNG a person can read: ours against chisel, ssh and the kernel relay.

Four panels from the run's JSON document: throughput (one stream each way and N
streams), round-trip latency, new connections per second, and CPU per GiB moved;
a path that did not run is named in the title instead of drawn as zero.
matplotlib (the ``bench`` extra) draws off-screen (Agg): no display is needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CHART_PATHS", "chart_path_for", "write_chart"]

#: The paths drawn, in order, with their colours (ours stands out).
CHART_PATHS: dict[str, tuple[str, str]] = {
    "relay": ("kernel relay (no tunnel)", "#9e9e9e"),
    "ours": ("ours (cloud-connector)", "#1565c0"),
    "chisel": ("chisel", "#ef6c00"),
    "ssh": ("OpenSSH ssh -R", "#2e7d32"),
}

#: (title, unit, [(figure key, group label)], note) per panel.
PANELS: list[tuple[str, str, list[tuple[str, str]], str]] = [
    (
        "Throughput",
        "MB/s",
        [
            ("bulk_fwd_MBps", "1 stream\ngw -> conn"),
            ("bulk_rev_MBps", "1 stream\nconn -> gw"),
            ("bulk_par_MBps", "{streams} streams\ngw -> conn"),
        ],
        "higher is better",
    ),
    (
        "Round trip (64 bytes)",
        "µs",
        [("rtt_p50_us", "p50"), ("rtt_p99_us", "p99")],
        "lower is better",
    ),
    ("New connections", "per second", [("conn_per_s", "through the tunnel")], "higher is better"),
    (
        "CPU per GiB moved",
        "CPU seconds / GiB",
        [("cpu_s_per_GiB_gateway", "gateway"), ("cpu_s_per_GiB_connector", "connector")],
        "lower is better",
    ),
]


def chart_path_for(json_path: Path) -> Path:
    """The chart goes next to the JSON: ``bench-quick.json`` -> ``bench-quick.png``."""
    return json_path.with_suffix(".png")


def _paths(document: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Paths with figures to draw, and notes on those without."""
    drawn, notes = [], []
    paths = document.get("paths") or {}
    for name, (label, _) in CHART_PATHS.items():
        path = paths.get(name)
        if not path:
            continue
        if path.get("figures"):
            drawn.append(name)
        else:
            why = (path.get("error") or path.get("status") or "no figures").splitlines()[0]
            notes.append(f"{label}: {why[:60]}")
    return drawn, notes


def write_chart(document: Mapping[str, Any], out: Path) -> Path:
    """Draw ``document`` (a run's JSON) into ``out`` (PNG); ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    drawn, notes = _paths(document)
    settings = document.get("settings") or {}
    streams = settings.get("parallel_streams", "N")
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5), dpi=100)
    for ax, (title, unit, groups, note) in zip(axes.flat, PANELS, strict=True):
        _panel(ax, document, drawn, title, unit, groups, note, streams)
    handles = [Patch(color=CHART_PATHS[name][1]) for name in drawn]
    fig.legend(
        handles,
        [CHART_PATHS[name][0] for name in drawn],
        loc="lower center",
        ncol=max(1, len(drawn)),
        frameon=False,
    )
    fig.suptitle(_title(document, notes), fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.93))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    plt.close(fig)
    return out


def _panel(
    ax: Any,
    document: Mapping[str, Any],
    drawn: Sequence[str],
    title: str,
    unit: str,
    groups: list[tuple[str, str]],
    note: str,
    streams: object,
) -> None:
    paths = document.get("paths") or {}
    width = 0.8 / max(1, len(drawn))
    for i, name in enumerate(drawn):
        figures = paths[name].get("figures") or {}
        for g, (key, _) in enumerate(groups):
            value = figures.get(key)
            if not isinstance(value, int | float):
                continue  # not measured for this path (the relay has no CPU of its own)
            x = g - 0.4 + width * (i + 0.5)
            ax.bar(x, value, width * 0.92, color=CHART_PATHS[name][1])
            ax.annotate(
                _short(value),
                (x, value),
                ha="center",
                va="bottom",
                fontsize=7,
                xytext=(0, 2),
                textcoords="offset points",
            )
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([label.format(streams=streams) for _, label in groups], fontsize=9)
    ax.set_title(f"{title} ({note})", fontsize=10)
    ax.set_ylabel(unit, fontsize=9)
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _short(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _title(document: Mapping[str, Any], notes: list[str]) -> str:
    machine = document.get("machine") or {}
    settings = document.get("settings") or {}
    when = str(document.get("started_at", ""))[:16].replace("T", " ")
    kind = "quick run" if settings.get("quick") else "full run"
    cpus = machine.get("cpus_logical", "?")
    line = (
        f"cloud-connector benchmark, {kind}, {when} UTC, {cpus} CPUs, "
        f"fast path {machine.get('fastpath', '?')}, all on 127.0.0.1"
    )
    others = [
        figures["other_load_cores"]
        for path in (document.get("paths") or {}).values()
        if isinstance(figures := path.get("figures") or {}, dict)
        and isinstance(figures.get("other_load_cores"), int | float)
    ]
    if others:
        line += f"\nother programs used up to {max(others):.2f} cores during a path's run"
    if notes:
        line += "\nnot drawn: " + "; ".join(notes)
    return line
