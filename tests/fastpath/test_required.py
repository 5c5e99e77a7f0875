"""A missing compiled fast path is never silent, and CC_REQUIRE_EXTENSIONS makes it fatal.

Each case is a fresh interpreter in which ``cc._fastpath`` cannot be imported (a
``None`` in ``sys.modules``, as for a build that fell back to the twin), then runs the
real command line: ``cloud-connector version`` and ``demo -v``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Run cloud-connector's main() as if the extension had never been built.
WITHOUT_EXTENSION = (
    "import sys\n"
    "sys.modules['cc._fastpath'] = None\n"
    "from cc.cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def run_without_extension(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CC_")}
    environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTENSION, *argv],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_version_names_the_fallback_and_its_reason() -> None:
    result = run_without_extension("version")
    assert result.returncode == 0, result.stderr
    assert "fast path: python (pure twin: the compiled fast path cannot be imported" in (
        result.stdout
    )


def test_required_extension_missing_is_one_line_and_status_1() -> None:
    result = run_without_extension("version", CC_REQUIRE_EXTENSIONS="1")
    assert result.returncode == 1, result.stdout
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cloud-connector version: CC_REQUIRE_EXTENSIONS is set but the")


def test_required_extension_missing_stops_a_run_before_it_starts() -> None:
    result = run_without_extension("demo", CC_REQUIRE_EXTENSIONS="1")
    assert result.returncode == 1, result.stdout
    assert "CC_REQUIRE_EXTENSIONS is set but the compiled fast path" in result.stderr
    assert "Traceback" not in result.stderr
    assert "through the tunnel" not in result.stdout


def test_no_extensions_wins_over_require() -> None:
    """An explicit choice of the twin is not a missing build (CI reruns e2e this way)."""
    result = run_without_extension("version", CC_REQUIRE_EXTENSIONS="1", CC_NO_EXTENSIONS="1")
    assert result.returncode == 0, result.stderr
    assert "fast path: python (pure twin: CC_NO_EXTENSIONS is set)" in result.stdout


def test_startup_warns_about_an_unexpected_twin_and_says_what_runs_at_v() -> None:
    result = run_without_extension("demo", "-v")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    warning = [line for line in lines if "running the pure-Python fast path" in line]
    assert len(warning) == 1, result.stdout
    assert "demo: running the pure-Python fast path, ~2.6x slower: the compiled" in warning[0]
    assert any("demo: cloud-connector " in line and "fast path python" in line for line in lines)


def test_startup_line_at_v_with_the_extension_names_it() -> None:
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    environ.pop("CC_NO_EXTENSIONS", None)
    result = subprocess.run(
        [sys.executable, "-m", "cc.cli.main", "demo", "-v"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    from cc import fastpath

    expected = "fast path " + (
        "cython (compiled cc._fastpath)" if "cython" in fastpath.implementations() else "python"
    )
    assert any(
        "demo: cloud-connector " in line and expected in line for line in result.stdout.splitlines()
    )
    assert "running the pure-Python fast path" not in result.stdout
