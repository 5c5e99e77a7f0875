"""Log lines in the seed's format (Go's ``2006/01/02 15:04:05 client: ...``) or JSON.

Loggers are named ``cc.client``, ``cc.server``, ``cc.client.tun`` ...; the text
formatter turns the name into chisel's prefix chain (``client: tun: ``), so a log
shipper or a person grepping at 3 a.m. sees the lines they know from chisel.

Events that matter to an operator also carry fields (``extra=event(...)``: the
event's name, session, user, peer, remote, bytes, duration, error).  The JSON
format puts them at the top level, where a log shipper can filter on them; the
text format leaves them out, so its lines stay exactly the seed's.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

__all__ = [
    "FIELDS",
    "GoFormatter",
    "JSONFormatter",
    "event",
    "fatal_line",
    "get_logger",
    "redact",
    "set_error_format",
    "setup_logging",
]

_ROOT = "cc"

#: The structured fields a record may carry, in the order the JSON format writes them.
FIELDS = (
    "event",
    "session",
    "user",
    "peer",
    "cipher",
    "remote",
    "bytes_in",
    "bytes_out",
    "duration_s",
    "delay_s",
    "error",
    "status",
)
_FIELD_SET = frozenset(FIELDS)

#: "text" or "json": how ``fatal_line`` writes the error that stops the program.
_error_format = "text"


def get_logger(name: str) -> logging.Logger:
    """``get_logger("client")`` logs as ``client: ...``."""
    return logging.getLogger(f"{_ROOT}.{name}")


def event(name: str, **fields: object) -> dict[str, object]:
    """``extra=`` for a log call: the event's name and its fields (None values left out)."""
    unknown = set(fields) - _FIELD_SET
    if unknown:
        raise KeyError(f"not a log field: {sorted(unknown)}")
    return {"event": name, **{k: v for k, v in fields.items() if v is not None}}


def _prefix(record: logging.LogRecord) -> str:
    name = record.name
    if name == _ROOT or not name.startswith(_ROOT + "."):
        return ""
    return ": ".join(name[len(_ROOT) + 1 :].split(".")) + ": "


class GoFormatter(logging.Formatter):
    """``2006/01/02 15:04:05 client: message`` in local time, like Go's log package.

    A worker process (``--workers``) tags its lines ``[worker N]`` after the time.
    """

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.tag = f"[worker {worker + 1}] " if worker is not None else ""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {self.tag}{_prefix(record)}{record.getMessage()}"
        if record.exc_info and logging.getLogger(_ROOT).isEnabledFor(logging.DEBUG):
            line += "\n" + self.formatException(record.exc_info)
        return line


class JSONFormatter(logging.Formatter):
    """One JSON object per line for log shippers (``worker``: 1-based, in workers)."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": _prefix(record).rstrip(": ").replace(": ", ".") or record.name,
            "msg": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                obj[name] = value
        if self.worker is not None:
            obj["worker"] = self.worker + 1
        return json.dumps(obj, ensure_ascii=False)


def setup_logging(
    verbose: bool = False,
    fmt: str = "text",
    stream: TextIO | None = None,
    worker: int | None = None,
) -> None:
    """Route our loggers to ``stream`` (stdout, as the seed says); libraries stay quiet."""
    # A closed stdout (``outsystemscc | head``) must not print tracebacks on every line.
    logging.raiseExceptions = False
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JSONFormatter(worker) if fmt == "json" else GoFormatter(worker))
    root = logging.getLogger(_ROOT)
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    set_error_format(fmt)
    for noisy in ("asyncssh", "asyncio", "websockets"):
        logging.getLogger(noisy).setLevel(logging.ERROR if not verbose else logging.WARNING)


def set_error_format(fmt: str) -> None:
    """``json``: the error that stops the program is a JSON record too (see fatal_line)."""
    global _error_format
    _error_format = "json" if fmt == "json" else "text"


def fatal_line(prog: str, message: str, status: int) -> str:
    """The one stderr line of an error that stops ``prog`` with ``status``.

    Text: ``prog: message``, as before.  JSON: a record like every log line, with
    ``event: fatal``, so a log shipper that parses every line never meets plain text.
    """
    if _error_format != "json":
        return f"{prog}: {message}"
    component = prog.split()[-1] if prog.startswith("cloud-connector ") else prog
    record = logging.LogRecord(f"{_ROOT}.{component}", logging.ERROR, "", 0, message, None, None)
    record.__dict__.update(event("fatal", error=message, status=status))
    return JSONFormatter().format(record)


def redact(url: str) -> str:
    """Hide the password in ``scheme://user:pass@host`` so credentials never reach a log."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    userinfo, _, hostpart = rest.partition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hostpart}" if ":" in userinfo else f"{scheme}://***@{hostpart}"
