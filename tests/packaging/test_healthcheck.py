"""The image's HEALTHCHECK (packaging/docker-healthcheck.py) against real processes:
a gateway is healthy while /health answers on PORT, anything else while it runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.cli import start_gateway
from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "packaging" / "docker-healthcheck.py"


def healthcheck(pid: int, port: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PORT": str(port)}
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(pid)], env=env, capture_output=True, text=True, timeout=30
    )


def test_gateway_is_healthy_on_its_port_and_not_on_another(tmp_path: Path) -> None:
    with start_gateway(tmp_path) as (gateway, port):
        assert healthcheck(gateway.pid, port).returncode == 0
        wrong = healthcheck(gateway.pid, free_port())
        assert wrong.returncode == 1
        assert "/health" in wrong.stderr


def test_a_process_that_is_no_gateway_is_healthy_while_it_runs() -> None:
    assert healthcheck(os.getpid(), free_port()).returncode == 0


def test_a_gone_process_is_unhealthy() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    result = healthcheck(child.pid, free_port())
    assert result.returncode == 1
    assert f"process {child.pid}" in result.stderr
