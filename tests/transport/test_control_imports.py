"""The ``--workers`` control process stays small: it parses flags and supervises, it
never dials, so neither the upgrade (websockets) nor SSH (asyncssh) is loaded there.

The CLI modules are what the control process imports; a fresh interpreter shows
what they pull in.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", ["cc.cli.client", "cc.cli.server", "cc.cli.outsystemscc"])
def test_cli_modules_load_no_dialing_code(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "heavy = ('websockets', 'asyncssh', 'cc.transport.dial', 'cc.protocol.handshake')\n"
        "print(' '.join(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "", f"{module} loads {result.stdout.strip()}"
