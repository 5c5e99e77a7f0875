"""Log lines in the seed's format (Go's ``2006/01/02 15:04:05 client: ...``) or JSON.

Loggers are named ``cc.client``, ``cc.server``, ``cc.client.tun`` ...; the text
formatter turns the name into chisel's prefix chain (``client: tun: ``), so a log
shipper or a person grepping at 3 a.m. sees the lines they know from chisel.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

__all__ = ["GoFormatter", "JSONFormatter", "get_logger", "redact", "setup_logging"]

_ROOT = "cc"


def get_logger(name: str) -> logging.Logger:
    """``get_logger("client")`` logs as ``client: ...``."""
    return logging.getLogger(f"{_ROOT}.{name}")


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
    for noisy in ("asyncssh", "asyncio", "websockets"):
        logging.getLogger(noisy).setLevel(logging.ERROR if not verbose else logging.WARNING)


def redact(url: str) -> str:
    """Hide the password in ``scheme://user:pass@host`` so credentials never reach a log."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    userinfo, _, hostpart = rest.partition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hostpart}" if ":" in userinfo else f"{scheme}://***@{hostpart}"
