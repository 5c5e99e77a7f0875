"""Reload a file when it changes, including editors' and deployers' atomic renames.

Polling stat() once a second is boring and reliable: it sees in-place writes
(mtime/size) and renames over the path (inode), needs no inotify, and a broken
new version never replaces the last good one.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Generic, TypeVar

from cc.protocol.errors import ProtocolError

__all__ = ["FileWatcher"]

T = TypeVar("T")


def _signature(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class FileWatcher(Generic[T]):
    """Call ``parse(bytes)`` on each change; on success hand the value to ``apply``."""

    def __init__(
        self,
        path: str,
        parse: Callable[[bytes], T],
        apply: Callable[[T], None],
        log: logging.Logger,
        interval: float = 1.0,
    ) -> None:
        self.path = path
        self._parse = parse
        self._apply = apply
        self._log = log
        self._interval = interval
        self._seen = _signature(path)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def check(self) -> bool:
        """Reload if the file changed; True when a new version was applied."""
        sig = _signature(self.path)
        if sig == self._seen:
            return False
        self._seen = sig
        if sig is None:
            self._log.warning("%s is gone; keeping the last good version", self.path)
            return False
        try:
            with open(self.path, "rb") as fh:
                value = self._parse(fh.read())
        except (OSError, ValueError, ProtocolError) as exc:
            self._log.warning(
                "Reload of %s failed, keeping the last good version: %s", self.path, exc
            )
            return False
        self._apply(value)
        self._log.info("Reloaded %s", self.path)
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.check()
