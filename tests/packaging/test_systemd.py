"""The systemd units in packaging/systemd are valid, hardened and restart with backoff.

``systemd-analyze verify`` checks them as installed: ExecStart= must name an
executable, so the copies under test point at this environment's console scripts
instead of /opt/cloud-connector/bin (the README's venv), nothing else changed.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "packaging" / "systemd").glob("*.service"))
VENV_BIN = "/opt/cloud-connector/bin/"


def _installed_copy(unit: Path, directory: Path) -> Path:
    scripts = Path(shutil.which("outsystemscc") or "/nonexistent").parent
    copy = directory / unit.name
    copy.write_text(unit.read_text().replace(VENV_BIN, f"{scripts}/"))
    return copy


def _service(unit: Path) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(unit.read_text())
    return parser["Service"]


def test_there_is_a_unit_per_program() -> None:
    assert [u.name for u in UNITS] == [
        "cloud-connector-client.service",
        "cloud-connector-server.service",
    ]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.skipif(shutil.which("outsystemscc") is None, reason="cloud-connector not installed")
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    copies = [_installed_copy(unit, tmp_path) for unit in UNITS]
    result = subprocess.run(
        ["systemd-analyze", "verify", *map(str, copies)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


@pytest.mark.parametrize("unit", UNITS, ids=[u.stem for u in UNITS])
def test_units_restart_with_backoff_and_are_hardened(unit: Path) -> None:
    service = _service(unit)
    assert service["Restart"] == "on-failure"
    assert service["RestartSec"].endswith("s")
    assert service["EnvironmentFile"].startswith("/etc/cloud-connector/")
    assert service["ExecStart"].startswith(VENV_BIN)
    for key, value in {
        "DynamicUser": "yes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
    }.items():
        assert service[key] == value, key
    text = unit.read_text()
    assert "StartLimitIntervalSec=" in text
    assert "StartLimitBurst=" in text
