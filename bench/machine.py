"""What the machine is and which versions of everything under test ran."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
import sys
from importlib import metadata

import psutil

__all__ = ["machine_info", "tool_version"]


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _package(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def tool_version(argv: list[str]) -> str | None:
    """First line a program prints for its version option (stdout or stderr), or None."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return lines[0].strip() if lines else None


def machine_info(chisel: str | None, iperf3: str | None, ssh: str | None) -> dict[str, object]:
    """Machine facts, the fast path our processes load, and every peer's version."""
    from cc import __version__ as cc_version
    from cc import fastpath

    memory = psutil.virtual_memory().total
    iperf3_version = tool_version([iperf3, "--version"]) if iperf3 else None
    return {
        "cpu_model": _cpu_model(),
        "cpus_logical": os.cpu_count(),
        "cpus_physical": psutil.cpu_count(logical=False),
        "memory_bytes": memory,
        "memory_GiB": round(memory / 2**30, 1),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "cloud_connector": cc_version,
        "fastpath": fastpath.IMPLEMENTATION,
        "uvloop": _package("uvloop"),
        "asyncssh": _package("asyncssh"),
        "websockets": _package("websockets"),
        "cryptography": _package("cryptography"),
        "chisel": tool_version([chisel, "--version"]) if chisel else None,
        "iperf3": re.sub(r"\s*\(.*", "", iperf3_version) if iperf3_version else None,
        "openssh": tool_version([ssh, "-V"]) if ssh else None,
    }
