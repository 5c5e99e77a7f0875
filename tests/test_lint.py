"""The house rules, enforced by CI: ruff clean, type hints that check.

``cc/protocol`` is checked with ``mypy --strict`` (configured in pyproject.toml), the
rest of ``cc`` and ``bench`` with mypy's defaults.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_ruff_is_clean() -> None:
    if shutil.which("ruff") is None:
        pytest.skip("ruff not installed (pip install -e '.[test]')")
    result = _run("ruff", "check", "cc", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    pytest.importorskip("mypy", reason="mypy not installed (pip install -e '.[test]')")
    result = _run("mypy", "cc", "bench")
    assert result.returncode == 0, result.stdout + result.stderr
