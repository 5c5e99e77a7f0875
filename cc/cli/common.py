"""What every front end shares: Go-style flags, env defaults, clean errors, the run loop.

chisel and outsystemscc parse flags with Go's ``flag`` package, which takes
``-name`` as well as ``--name`` and ``--name=value``; users paste both, so each
long option here answers to both spellings.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from cc.protocol.durations import parse_duration
from cc.protocol.errors import ProtocolError
from cc.protocol.http import check_field

if TYPE_CHECKING:
    from cc.tunnel.udp.settings import UDPSettings

__all__ = [
    "EXIT_FATAL",
    "EXIT_USAGE",
    "GoArgumentParser",
    "UsageError",
    "add_udp_flags",
    "canonical_header_name",
    "check_hostname",
    "duration",
    "env_default",
    "env_flag",
    "env_list",
    "fail",
    "fail_on_wrong_asyncssh",
    "parse_header",
    "run_async",
    "udp_settings",
]

EXIT_FATAL = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad command-line input: one line on stderr, exit status 2."""


def fail(prog: str, message: str, status: int = EXIT_FATAL) -> NoReturn:
    print(f"{prog}: {message}", file=sys.stderr)
    raise SystemExit(status)


def fail_on_wrong_asyncssh(prog: str, exc: BaseException) -> None:
    """Exit with one line if ``exc`` says asyncssh is missing or of a version we refuse.

    ``cc.ssh`` raises an ImportError naming asyncssh at import (the CLIs import it
    late, once the arguments are checked); anything else returns to the caller.
    """
    if isinstance(exc, ImportError) and exc.name == "asyncssh":
        fail(prog, str(exc))


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


def env_flag(name: str) -> bool:
    """A boolean option's default from the environment (``1``, ``true``, ``yes``, ``on``)."""
    return (os.environ.get(name) or "").strip().lower() in ("1", "true", "yes", "on")


def env_list(name: str) -> list[str]:
    """A repeatable option's defaults from the environment, one value per line."""
    return [line.strip() for line in (os.environ.get(name) or "").splitlines() if line.strip()]


def duration(text: str) -> float:
    """argparse type for Go durations (``25s``, ``2m``, ``0s``)."""
    try:
        return parse_duration(text)
    except (ProtocolError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def canonical_header_name(name: str) -> str:
    """Go's ``textproto.CanonicalMIMEHeaderKey``: ``token`` -> ``Token``, ``x-id`` -> ``X-Id``.

    outsystemscc stores ``--header`` in a Go ``http.Header``, so the wire shows the
    canonical form; sending the same bytes keeps strict proxies and gateways happy.
    """
    if not name or any(c not in _TOKEN_CHARS for c in name):
        return name
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def parse_header(text: str) -> tuple[str, str]:
    """``"Name: value"`` -> (name, value); the form chisel's --header takes.

    The error never repeats the value: a mistyped ``--header "token abc"`` must not
    put the token on stderr, which often ends up in a log.
    """
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep:
        raise UsageError('invalid --header (no ":"): use "HeaderName: HeaderContent"')
    if not name or any(c not in _TOKEN_CHARS for c in name):
        raise UsageError(
            'invalid --header name (letters, digits and "-" only): use "HeaderName: HeaderContent"'
        )
    try:
        check_field(name, value)
    except ValueError:
        raise UsageError(
            f"invalid --header {name!r}: the value contains a line break or a control character"
        ) from None
    return canonical_header_name(name), value.strip()


def check_hostname(text: str) -> str:
    """``--hostname``: it becomes the Host header, so it follows the header rules."""
    try:
        check_field("Host", text)
    except ValueError:
        raise UsageError(
            "invalid --hostname: it contains a line break or a control character"
        ) from None
    return text


def run_async(
    prog: str, factory: Callable[[], Coroutine[Any, Any, int]], argv: Sequence[str] | None = None
) -> int:
    """Run the command's coroutine on uvloop; turn stray errors into one line, never a traceback."""
    from cc.runtime.process import PidFileError, new_event_loop

    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(factory())
    except KeyboardInterrupt:
        return 0
    except UsageError as exc:
        fail(prog, str(exc), EXIT_USAGE)
    except PidFileError as exc:
        fail(prog, str(exc))
    except Exception as exc:
        fail_on_wrong_asyncssh(prog, exc)
        # A bug or an environment we did not foresee: one line for the user (the
        # traceback only with -v), never a wall of Python on a service's console.
        import logging
        import traceback

        if logging.getLogger("cc").isEnabledFor(logging.DEBUG):
            traceback.print_exc()
        fail(prog, f"internal error: {type(exc).__name__}: {exc}")
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def add_udp_flags(p: GoArgumentParser) -> None:
    """``--udp-*``: limits of the UDP data path, for clients and the server alike."""
    p.add_flag("--udp-max-senders", type=int, default=env_default("CC_UDP_MAX_SENDERS", "10000"))
    p.add_flag(
        "--udp-idle-timeout", type=duration, default=env_default("CC_UDP_IDLE_TIMEOUT", "15s")
    )
    p.add_flag("--udp-max-size", type=int, default=env_default("CC_UDP_MAX_SIZE", "9012"))


def udp_settings(args: argparse.Namespace) -> UDPSettings:
    """The ``--udp-*`` options, validated; ``--udp-idle-timeout 0s`` never expires."""
    from cc.tunnel.udp.settings import MAX_DATAGRAM, UDPSettings

    if args.udp_max_senders < 1:
        raise UsageError("--udp-max-senders must be at least 1")
    if args.udp_idle_timeout < 0:
        raise UsageError("--udp-idle-timeout must not be negative")
    if not 1 <= args.udp_max_size <= MAX_DATAGRAM:
        raise UsageError(f"--udp-max-size must be in 1..{MAX_DATAGRAM}")
    idle = args.udp_idle_timeout
    return UDPSettings(
        max_senders=args.udp_max_senders,
        idle_timeout=math.inf if idle == 0 else idle,
        max_size=args.udp_max_size,
    )
