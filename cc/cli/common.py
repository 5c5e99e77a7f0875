"""What every front end shares: Go-style flags, env defaults, clean errors, the run loop.

chisel and outsystemscc parse flags with Go's ``flag`` package, which takes
``-name`` as well as ``--name`` and ``--name=value``; users paste both, so each
long option here answers to both spellings.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn

from cc.protocol.errors import ProtocolError
from cc.protocol.keepalive import parse_duration

__all__ = [
    "EXIT_FATAL",
    "EXIT_USAGE",
    "GoArgumentParser",
    "UsageError",
    "duration",
    "env_default",
    "fail",
    "parse_header",
    "run_async",
]

EXIT_FATAL = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad command-line input: one line on stderr, exit status 2."""


def fail(prog: str, message: str, status: int = EXIT_FATAL) -> NoReturn:
    print(f"{prog}: {message}", file=sys.stderr)
    raise SystemExit(status)


class GoArgumentParser(argparse.ArgumentParser):
    """argparse that also accepts ``-flag`` for every ``--flag`` and fails in one line."""

    def __init__(self, *args: Any, help_text: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("add_help", False)
        super().__init__(*args, **kwargs)
        self.help_text = help_text
        self.add_argument("--help", "-help", "-h", action="store_true", help="This help text")

    def add_flag(self, name: str, *more: str, **kwargs: Any) -> argparse.Action:
        """``add_flag("--auth")`` also registers ``-auth``."""
        names = [name, *more]
        if name.startswith("--"):
            names.append(name[1:])
        return self.add_argument(*names, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)

    def print_help(self, file: Any = None) -> None:
        if self.help_text is not None:
            (file or sys.stdout).write(self.help_text)
        else:
            super().print_help(file)


def env_default(name: str, fallback: str | None = None) -> str | None:
    """An option's default from the environment, so containers can be configured by env."""
    value = os.environ.get(name)
    return value if value not in (None, "") else fallback


def duration(text: str) -> float:
    """argparse type for Go durations (``25s``, ``2m``, ``0s``)."""
    try:
        return parse_duration(text)
    except (ProtocolError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_header(text: str) -> tuple[str, str]:
    """``"Name: value"`` -> (name, value); the form chisel's --header takes."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c in name for c in " \t\r\n") or any(c in value for c in "\r\n"):
        raise UsageError(f'invalid header {text!r}: use "HeaderName: HeaderContent"')
    return name, value.strip()


def run_async(
    prog: str, factory: Callable[[], Coroutine[Any, Any, int]], argv: Sequence[str] | None = None
) -> int:
    """Run the command's coroutine on uvloop; turn stray errors into one line, never a traceback."""
    from cc.aio.runtime import new_event_loop

    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(factory())
    except KeyboardInterrupt:
        return 0
    except UsageError as exc:
        fail(prog, str(exc), EXIT_USAGE)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
