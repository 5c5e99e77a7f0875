"""The image's HEALTHCHECK (packaging/docker-healthcheck.py) against real processes: a
gateway by its /ready on PORT, a connector by its --metrics /ready, CC_HEALTHCHECK_URL
first, and a connector without metrics healthy while it runs."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.cli import start_gateway
from tests.support.net import LOOPBACK, free_port
from tests.support.processes import OSCC, CliProcess

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "packaging" / "docker-healthcheck.py"


def healthcheck(pid: int, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("CC_", "PORT"))}
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(pid)],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docker_healthcheck", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("address", "url"),
    [
        ("9090", "http://127.0.0.1:9090/ready"),
        ("127.0.0.1:9090", "http://127.0.0.1:9090/ready"),
        ("0.0.0.0:9090", "http://127.0.0.1:9090/ready"),
        ("[::]:9090", "http://[::1]:9090/ready"),
        ("[::1]:9090", "http://[::1]:9090/ready"),
        (":9090", "http://127.0.0.1:9090/ready"),
    ],
)
def test_metrics_address_spellings(script: ModuleType, address: str, url: str) -> None:
    assert script.metrics_ready_url(address) == url


def test_gateway_is_healthy_by_its_ready_on_port(tmp_path: Path) -> None:
    with start_gateway(tmp_path) as (gateway, port):
        assert healthcheck(gateway.pid, PORT=str(port)).returncode == 0
        wrong = healthcheck(gateway.pid, PORT=str(free_port()))
        assert wrong.returncode == 1
        assert "/ready" in wrong.stderr


def test_healthcheck_url_wins(tmp_path: Path) -> None:
    with start_gateway(tmp_path) as (gateway, port):
        url = f"http://{LOOPBACK}:{port}/ready"
        assert healthcheck(os.getpid(), CC_HEALTHCHECK_URL=url).returncode == 0
        bad = f"http://{LOOPBACK}:{port}/no-such-page"
        assert healthcheck(gateway.pid, PORT=str(port), CC_HEALTHCHECK_URL=bad).returncode == 1


def test_connector_is_healthy_while_connected_by_its_metrics_ready(tmp_path: Path) -> None:
    metrics = free_port()
    with start_gateway(tmp_path) as (gateway, port):
        argv = [
            *OSCC,
            "--metrics",
            f"{LOOPBACK}:{metrics}",
            f"http://{LOOPBACK}:{port}/sg_1",
            f"R:{free_port()}:{LOOPBACK}:9",
        ]
        with CliProcess("connector", argv, cwd=tmp_path, logdir=tmp_path) as connector:
            connector.wait_for_line(r"client: Connected \(Latency ", 15)
            assert healthcheck(connector.pid, CC_METRICS=str(metrics)).returncode == 0
            gateway.stop()
            deadline = time.monotonic() + 15
            while healthcheck(connector.pid, CC_METRICS=str(metrics)).returncode == 0:
                assert time.monotonic() < deadline, "still ready without a gateway"
                time.sleep(0.2)
            # Without metrics there is nothing to ask: a running connector is healthy.
            assert healthcheck(connector.pid).returncode == 0


def test_a_gone_process_is_unhealthy() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    result = healthcheck(child.pid)
    assert result.returncode == 1
    assert f"process {child.pid}" in result.stderr
