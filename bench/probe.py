"""``python -m bench.probe OUT.json <cloud-connector args>``: our CLI, then its fast-path counts.

``cc.ssh.fast_path_counts()`` counts per process, and the bench runs our gateway
and connector as processes of their own; this wrapper runs the command as
``cloud-connector`` would and, when it ends (SIGTERM included: the CLI returns
from ``main``), writes how many packets the fast path sealed and opened there.
``bench.gate`` fails a run in which the fast path never engaged.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "read_counts"]

PREFIX = "fastpath-"


def _write(out: Path) -> None:
    if "cc.ssh" not in sys.modules:  # never got as far as SSH: nothing to say
        return
    from cc import fastpath
    from cc.ssh import fast_path_counts

    counts = fast_path_counts()
    out.write_text(
        json.dumps(
            {"sealed": counts.sealed, "opened": counts.opened, "twin": fastpath.IMPLEMENTATION}
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m bench.probe OUT.json <cloud-connector args>", file=sys.stderr)
        return 2
    out, command = Path(args[0]), args[1:]
    from cc.cli.main import main as cloud_connector

    try:
        return cloud_connector(command)
    finally:
        _write(out)


def read_counts(workdir: Path) -> dict[str, dict[str, object]]:
    """The counts the probes left in ``workdir``, by role (``fastpath-<role>.json``)."""
    counts: dict[str, dict[str, object]] = {}
    for path in sorted(workdir.glob(f"{PREFIX}*.json")):
        try:
            counts[path.stem.removeprefix(PREFIX)] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return counts


if __name__ == "__main__":
    sys.exit(main())
