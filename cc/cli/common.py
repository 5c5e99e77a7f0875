"""What every front end shares: Go-style flags, layered defaults, clean errors, the run loop.

chisel and outsystemscc parse flags with Go's ``flag`` package, which takes
``-name`` as well as ``--name`` and ``--name=value``; users paste both, so each
long option here answers to both spellings.

An option's value comes from, in this order: the command line, its environment
variable (``env=``), the ``--config`` file (``cc.cli.configfile``), its built-in
default.  ``add_flag`` records where to look; ``parse_args`` fills the defaults
from the layers just before argparse reads the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from cc.cli.configfile import ConfigFileError, FileOption, load_config_file
from cc.log import fatal_line
from cc.protocol.ciphers import DEFAULT_CIPHERS, CipherListError, parse_cipher_list
from cc.protocol.durations import parse_duration
from cc.protocol.errors import ProtocolError
from cc.protocol.http import check_field
from cc.runtime.report import report_to_control

if TYPE_CHECKING:
    from cc.tunnel.udp.settings import UDPSettings

__all__ = [
    "EXIT_FATAL",
    "EXIT_USAGE",
    "GoArgumentParser",
    "UsageError",
    "add_ssh_ciphers_flag",
    "add_udp_flags",
    "canonical_header_name",
    "check_hostname",
    "cipher_list",
    "duration",
    "env_default",
    "env_flag",
    "env_list",
    "fail",
    "fail_on_refused_import",
    "parse_header",
    "run_async",
    "udp_settings",
]

EXIT_FATAL = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad command-line input: one line on stderr, exit status 2."""


def fail(prog: str, message: str, status: int = EXIT_FATAL, *, report: bool = True) -> NoReturn:
    """Stop with one line on stderr (JSON with ``--log-format json``) and ``status``.

    A ``--workers`` worker hands the line to its control process instead, which
    prints it once for all of them (``report=False``: print it here anyway).
    """
    if not (report and report_to_control(message)):
        print(fatal_line(prog, message, status), file=sys.stderr)
    raise SystemExit(status)


def fail_on_refused_import(prog: str, exc: BaseException) -> None:
    """Exit with one line if ``exc`` is an import we refuse, not a bug.

    ``cc.ssh`` raises an ImportError naming asyncssh when it is missing or of a
    version we refuse, ``cc.fastpath`` one naming ``cc._fastpath`` when
    CC_REQUIRE_EXTENSIONS is set and the compiled module is missing (the CLIs import
    both late, once the arguments are checked); anything else returns to the caller.
    """
    if isinstance(exc, ImportError) and exc.name in ("asyncssh", "cc._fastpath"):
        fail(prog, str(exc))


class _QuietParser(argparse.ArgumentParser):
    """Finds ``--config`` before the real parse; leaves every complaint to the real one."""

    def error(self, message: str) -> NoReturn:
        raise argparse.ArgumentError(None, message)


@dataclass(frozen=True)
class _Layers:
    """Where an option's default comes from, below the command line."""

    env: str | None
    fallback: Any
    file: FileOption | None


#: argparse types whose TOML form is a number, not a string.
INTEGER_TYPES: set[Callable[[str], Any]] = {int}


class GoArgumentParser(argparse.ArgumentParser):
    """argparse that also accepts ``-flag`` for every ``--flag`` and fails in one line."""

    def __init__(self, *args: Any, help_text: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("add_help", False)
        super().__init__(*args, **kwargs)
        self.help_text = help_text
        self._layers: dict[str, _Layers] = {}
        self._config_flag = False
        self.add_argument("--help", "-help", "-h", action="store_true", help="This help text")
        self.add_argument("--version", "-version", action="store_true", help="Print the version")

    def add_flag(
        self,
        name: str,
        *more: str,
        env: str | None = None,
        in_file: bool = True,
        path: bool = False,
        file_types: tuple[type, ...] | None = None,
        **kwargs: Any,
    ) -> argparse.Action:
        """``add_flag("--auth")`` also registers ``-auth``; a name without dashes is positional.

        ``env``: the variable that overrides ``default``; ``in_file``: the option may
        be set in the ``--config`` file (as its long name without dashes); ``path``:
        a relative path there is taken from the file's directory; ``file_types``: the
        TOML types the file may use (default: integers for int types, else strings).
        """
        names = [name, *more]
        if name.startswith("--"):
            names.append(name[1:])
        fallback = kwargs.pop("default", None)
        if isinstance(kwargs.get("action"), str) and kwargs["action"] == "append":
            fallback = list(fallback or [])
        action = self.add_argument(*names, **kwargs)
        key = name.lstrip("-")
        file = None
        if in_file:
            file = FileOption(
                key,
                self._kind(action),
                file_types or ((int,) if action.type in INTEGER_TYPES else (str,)),
                convert=action.type if callable(action.type) else None,
                choices=tuple(action.choices) if action.choices else None,
                path=path,
                example=fallback if isinstance(fallback, str) and fallback else None,
            )
        self._layers[action.dest] = _Layers(env, fallback, file)
        action.default = fallback
        return action

    def add_config_flag(self) -> None:
        """``--config FILE`` (env CC_CONFIG): options from a TOML file."""
        self.add_flag("--config", env="CC_CONFIG", in_file=False)
        self._config_flag = True

    @staticmethod
    def _kind(action: argparse.Action) -> str:
        if isinstance(action, argparse._StoreTrueAction):
            return "flag"
        if isinstance(action, argparse._AppendAction) or action.nargs in ("*", "+"):
            return "list"
        return "value"

    def _config_path(self, argv: Sequence[str]) -> str | None:
        """``--config`` from the command line (a flag wins), else from CC_CONFIG."""
        pre = _QuietParser(add_help=False, allow_abbrev=False, exit_on_error=False)
        pre.add_argument("--config", "-config")
        try:
            known, _ = pre.parse_known_args(list(argv))
        except argparse.ArgumentError:
            return None  # "--config" without a value: the real parse says so
        return known.config or env_default("CC_CONFIG")

    def _apply_layers(self, argv: Sequence[str]) -> None:
        """Set every option's default from its variable, the config file or its fallback."""
        from_file: dict[str, Any] = {}
        path = self._config_path(argv) if self._config_flag else None
        if path:
            options = {layer.file.key: layer.file for layer in self._layers.values() if layer.file}
            try:
                from_file = load_config_file(path, options)
            except ConfigFileError as exc:
                fail(self.prog, str(exc), EXIT_USAGE)
        for action in self._actions:
            layer = self._layers.get(action.dest)
            if layer is None:
                continue
            value = layer.fallback
            if layer.file is not None and layer.file.key in from_file:
                value = from_file[layer.file.key]
            if layer.env is not None:
                value = _from_env(layer.env, self._kind(action), value)
            action.default = value

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        argv = list(sys.argv[1:] if args is None else args)
        self._apply_layers(argv)
        return super().parse_args(argv, namespace)

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)

    def print_help(self, file: Any = None) -> None:
        if self.help_text is not None:
            (file or sys.stdout).write(self.help_text)
        else:
            super().print_help(file)


#: list variables whose items may also be separated by commas
COMMA_LISTS = frozenset({"CC_IDENTIFIER", "CC_HTTP_TARGETS"})


def _from_env(name: str, kind: str, value: Any) -> Any:
    """``value`` unless the variable ``name`` is set (and not empty)."""
    if not os.environ.get(name):
        return value
    if kind == "flag":
        return env_flag(name)
    if kind == "list":
        # CC_HEADERS: one per line; CC_REMOTES: separated by spaces or lines.
        # CC_IDENTIFIER, CC_HTTP_TARGETS: separated by spaces or commas.
        if name == "CC_HEADERS":
            return env_list(name)
        if name in COMMA_LISTS:
            return os.environ[name].replace(",", " ").split()
        return os.environ[name].split()
    return os.environ[name]


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


def cipher_list(text: str) -> tuple[str, ...]:
    """argparse type for ``--ssh-ciphers``: comma-separated names, most preferred first."""
    try:
        return parse_cipher_list(text)
    except CipherListError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_ssh_ciphers_flag(p: GoArgumentParser) -> None:
    """``--ssh-ciphers`` (env CC_SSH_CIPHERS): client and server; outsystemscc keeps its set."""
    p.add_flag(
        "--ssh-ciphers",
        type=cipher_list,
        env="CC_SSH_CIPHERS",
        default=",".join(DEFAULT_CIPHERS),
        help="SSH ciphers, comma-separated, most preferred first",
    )


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
    prog: str,
    factory: Callable[[], Coroutine[Any, Any, int]],
    argv: Sequence[str] | None = None,
    *,
    component: str = "client",
) -> int:
    """Run the command's coroutine on uvloop; turn stray errors into one line, never a traceback.

    First it says what runs (``cc.about``: at -v, and a warning on an unexpected
    pure-Python fast path), logged as ``component``.
    """
    from cc.log import get_logger
    from cc.runtime.process import PidFileError, new_event_loop, raise_descriptor_limit

    try:
        from cc.about import log_startup
    except ImportError as exc:
        fail_on_refused_import(prog, exc)
        raise
    log = get_logger(component)
    log_startup(log)
    before, after = raise_descriptor_limit()
    if after != before:
        log.debug("descriptor limit raised from %d to %d (the hard limit)", before, after)

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
        fail_on_refused_import(prog, exc)
        # A bug or an environment we did not foresee: one line for the user (the
        # traceback only with -v), never a wall of Python on a service's console.
        import logging
        import traceback

        if logging.getLogger("cc").isEnabledFor(logging.DEBUG):
            traceback.print_exc()
        fail(prog, f"internal error: {type(exc).__name__}: {exc}", report=False)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def add_udp_flags(p: GoArgumentParser) -> None:
    """``--udp-*``: limits of the UDP data path, for clients and the server alike."""
    p.add_flag("--udp-max-senders", type=int, env="CC_UDP_MAX_SENDERS", default="10000")
    p.add_flag("--udp-idle-timeout", type=duration, env="CC_UDP_IDLE_TIMEOUT", default="15s")
    p.add_flag("--udp-max-size", type=int, env="CC_UDP_MAX_SIZE", default="9012")


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
