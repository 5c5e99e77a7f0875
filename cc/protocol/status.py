"""The gateway's status document (``/status.json``) and its terminal table, sans-I/O.

One row per connected session: who (SSH user, or ``token #N``: the entry's number in
the tokens file, never the token), from where, which client version, since when,
its remotes, its open connections, bytes each way and its last error.  The same
document feeds the HTML page (cc.gateway.status) and ``cloud-connector status``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "MAX_ROWS",
    "SessionRow",
    "age",
    "format_table",
    "human_bytes",
    "status_document",
]

#: Rows one process reports at most; beyond, the document says how many were left out.
MAX_ROWS = 500


@dataclass(slots=True)
class SessionRow:
    """One connected session as an operator sees it."""

    id: int
    user: str
    peer: str
    version: str
    #: wall-clock time (Unix seconds) the session was set up
    since: float
    remotes: list[str] = field(default_factory=list)
    open: int = 0
    #: bytes from the connector's side of the tunnel to the gateway's sockets
    bytes_in: int = 0
    #: bytes from the gateway's sockets into the tunnel, to the connector
    bytes_out: int = 0
    last_error: str = ""
    #: 1-based worker number with --workers, else None
    worker: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def status_document(
    rows: list[dict[str, Any]], *, version: str, workers: int, now: float | None = None
) -> dict[str, Any]:
    """``/status.json``: rows oldest first, at most MAX_ROWS of them."""
    ordered = sorted(rows, key=lambda r: (float(r.get("since", 0.0)), int(r.get("id", 0))))
    return {
        "version": version,
        "generated": time.time() if now is None else now,
        "workers": workers,
        "session_count": len(ordered),
        "sessions": ordered[:MAX_ROWS],
        "not_shown": max(0, len(ordered) - MAX_ROWS),
    }


def human_bytes(n: float) -> str:
    """``1.5 MiB``: short enough for a phone's column."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def age(seconds: float) -> str:
    """``3d 4h``, ``2h 5m``, ``4m 10s``, ``12s``: how long ago, coarse."""
    s = max(0, int(seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {s}s"
    return f"{s}s"


COLUMNS = ("user", "peer", "version", "since", "remotes", "open", "in", "out", "last error")


def format_table(document: dict[str, Any]) -> list[str]:
    """The document as aligned text lines for a terminal (``cloud-connector status``)."""
    now = float(document.get("generated", time.time()))
    sessions = document.get("sessions", [])
    lines = [
        f"{document.get('session_count', len(sessions))} session(s), "
        f"gateway {document.get('version', '?')}, {document.get('workers', 1)} worker(s)"
    ]
    if not sessions:
        return lines
    table = [list(COLUMNS)]
    for row in sessions:
        table.append(
            [
                str(row.get("user", "")),
                str(row.get("peer", "")),
                str(row.get("version", "")),
                age(now - float(row.get("since", now))) + " ago",
                " ".join(row.get("remotes", [])),
                str(row.get("open", 0)),
                human_bytes(row.get("bytes_in", 0)),
                human_bytes(row.get("bytes_out", 0)),
                str(row.get("last_error", "")) or "-",
            ]
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    for r in table:
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip())
    if document.get("not_shown"):
        lines.append(f"... and {document['not_shown']} more")
    return lines
