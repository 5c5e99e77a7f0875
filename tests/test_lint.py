"""The house rules, enforced by CI: ruff clean and formatted, type hints that check.

The whole ``cc`` package is checked with mypy's strict mode (configured in
pyproject.toml), ``bench`` with mypy's defaults.  Each check skips only when its tool
is not installed at all; an installed tool that is unhappy fails the test.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = ("cc", "tests", "bench", "fuzz")


def _run(tool: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m tool ...`` in the repository, or a skip when ``tool`` is not importable."""
    if importlib.util.find_spec(tool) is None:
        pytest.skip(f"{tool} is not installed (pip install -e '.[test]')")
    return subprocess.run(
        [sys.executable, "-m", tool, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_ruff_is_clean() -> None:
    result = _run("ruff", "check", *PATHS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    result = _run("ruff", "format", "--check", *PATHS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    result = _run("mypy", "cc", "bench", "fuzz")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_checks_cc_strictly() -> None:
    """pyproject.toml keeps strict mode on for every module of cc."""
    overrides = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["overrides"]
    assert {"module": "cc.*", "strict": True} in overrides
