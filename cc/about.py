"""What is running: our version, Python's, the fast path and the dependencies' versions.

One place for ``cloud-connector version``, the startup log and SIGUSR2, so a user
who reports a problem (or wonders about throughput: the pure twin costs ~2.6x) can
say exactly what ran.  Versions come from the installed metadata: asking never
imports asyncssh, so a ``--workers`` control process stays small.
"""

from __future__ import annotations

import logging
import platform
import struct
from importlib import metadata

from cc import __version__, fastpath

__all__ = ["DEPENDENCIES", "dependency_versions", "log_startup", "summary", "version_lines"]

#: The runtime dependencies worth naming in a report, in pyproject.toml's order.
DEPENDENCIES = (
    "asyncssh",
    "cryptography",
    "websockets",
    "uvloop",
    "psutil",
    "python-socks",
    "prometheus-client",
    "PyYAML",
)


def dependency_versions() -> dict[str, str]:
    """Each dependency's installed version, or "not installed"."""
    found = {}
    for name in DEPENDENCIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _python() -> str:
    """``CPython 3.11.7 (x86_64, 64-bit)``: the bits tell an i386 build on a 64-bit kernel."""
    bits = struct.calcsize("P") * 8
    return (
        f"{platform.python_implementation()} {platform.python_version()} "
        f"({platform.machine()}, {bits}-bit)"
    )


def version_lines() -> list[str]:
    """``cloud-connector version``: one ``name: value`` fact per line."""
    lines = [
        f"cloud-connector: {__version__}",
        f"python: {_python()}",
        f"fast path: {fastpath.describe()}",
    ]
    lines += [f"{name}: {version}" for name, version in dependency_versions().items()]
    return lines


def summary() -> str:
    """One line for the startup log and SIGUSR2."""
    deps = dependency_versions()
    return (
        f"cloud-connector {__version__}, {_python()}, fast path {fastpath.describe()}, "
        f"asyncssh {deps['asyncssh']}, cryptography {deps['cryptography']}, "
        f"websockets {deps['websockets']}"
    )


def log_startup(log: logging.Logger) -> None:
    """At ``-v`` the summary; always a warning when the compiled fast path was expected."""
    if fastpath.FALLBACK_REASON:
        log.warning(
            "running the pure-Python fast path, ~2.6x slower: %s "
            "(CC_REQUIRE_EXTENSIONS=1 makes this fatal)",
            fastpath.FALLBACK_REASON,
        )
    if log.isEnabledFor(logging.DEBUG):  # summary() reads every package's metadata
        log.debug("%s", summary())
