"""The one benchmark verdict CI enforces: a collapse that noise cannot explain.

CI machines are shared and noisy (tens of percent between runs), so no figure is
held to a target.  Two things are not noise:

* **ours below 2x chisel on a single stream**, either direction, in the same run:
  ours has run 4-7x chisel's on every machine measured (README), so half of the
  margin gone is a regression, not a busy neighbour; judged only when chisel ran;
* **the fast path not engaged** in our gateway or connector (``bench.probe``
  records ``cc.ssh.fast_path_counts()`` for the ``ours`` path): then every packet
  went through asyncssh's slow path, whatever the figures say.

What cannot be judged (chisel absent, a path that failed to start) is said, not
failed: the tests catch a broken tunnel, this catches a slow one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MIN_RATIO_TO_CHISEL", "SINGLE_STREAM", "Verdict", "judge", "main"]

#: Ours must move at least this many times chisel's single-stream throughput.
MIN_RATIO_TO_CHISEL = 2.0
#: The single-stream figures compared with chisel's: key -> what it is.
SINGLE_STREAM = {
    "bulk_fwd_MBps": "1 stream gateway -> connector",
    "bulk_rev_MBps": "1 stream connector -> gateway",
}
#: Our processes whose fast path must have run.
ROLES = ("gateway", "connector")


@dataclass
class Verdict:
    """``failures`` fail CI; ``passes`` and ``not_judged`` are said for the reader."""

    failures: list[str] = field(default_factory=list)
    passes: list[str] = field(default_factory=list)
    not_judged: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def lines(self) -> list[str]:
        return (
            [f"FAIL: {line}" for line in self.failures]
            + [f"ok: {line}" for line in self.passes]
            + [f"not judged: {line}" for line in self.not_judged]
        )


def _path(document: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    paths = document.get("paths") or {}
    path = paths.get(name)
    return path if isinstance(path, Mapping) else None


def _figures(path: Mapping[str, Any] | None) -> Mapping[str, float]:
    if path is None:
        return {}
    figures = path.get("figures") or {}
    return {k: v for k, v in figures.items() if isinstance(v, int | float) and v > 0}


def _judge_speed(document: Mapping[str, Any], verdict: Verdict) -> None:
    ours, chisel = _path(document, "ours"), _path(document, "chisel")
    if chisel is None or chisel.get("status") == "skipped":
        verdict.not_judged.append("ours vs chisel: chisel did not run (CHISEL_BIN unset)")
        return
    mine, theirs = _figures(ours), _figures(chisel)
    for key, what in SINGLE_STREAM.items():
        if key not in theirs:
            verdict.not_judged.append(f"{what}: no chisel figure ({chisel.get('status')})")
            continue
        if key not in mine:
            status = ours.get("status") if ours is not None else "not run"
            verdict.not_judged.append(f"{what}: no figure of ours ({status})")
            continue
        ratio = mine[key] / theirs[key]
        line = (
            f"{what}: ours {mine[key]:.0f} MB/s = {ratio:.2f}x chisel's {theirs[key]:.0f} MB/s "
            f"(at least {MIN_RATIO_TO_CHISEL:g}x)"
        )
        (verdict.failures if ratio < MIN_RATIO_TO_CHISEL else verdict.passes).append(line)


def _judge_fast_path(document: Mapping[str, Any], verdict: Verdict) -> None:
    ours = _path(document, "ours")
    details = (ours or {}).get("details") or {}
    counts = details.get("fast_path") if isinstance(details, Mapping) else None
    if not isinstance(counts, Mapping) or not counts:
        status = ours.get("status") if ours is not None else "not run"
        verdict.not_judged.append(f"fast path: no counts from ours ({status})")
        return
    for role in ROLES:
        got = counts.get(role)
        if not isinstance(got, Mapping):
            verdict.not_judged.append(f"fast path in our {role}: no counts")
            continue
        sealed, opened = int(got.get("sealed") or 0), int(got.get("opened") or 0)
        line = f"fast path in our {role}: {sealed} packets sealed, {opened} opened"
        (verdict.failures if sealed == 0 or opened == 0 else verdict.passes).append(line)


def judge(document: Mapping[str, Any]) -> Verdict:
    """The verdict on one run's JSON document (``python -m bench --json``)."""
    verdict = Verdict()
    _judge_speed(document, verdict)
    _judge_fast_path(document, verdict)
    return verdict


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.gate RESULTS.json``: print the verdict; 1 on a collapse."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m bench.gate RESULTS.json", file=sys.stderr)
        return 2
    try:
        document = json.loads(Path(args[0]).read_text())
    except (OSError, ValueError) as exc:
        print(f"bench.gate: cannot read {args[0]}: {exc}", file=sys.stderr)
        return 2
    verdict = judge(document)
    for line in verdict.lines():
        print(f"bench gate: {line}")
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
