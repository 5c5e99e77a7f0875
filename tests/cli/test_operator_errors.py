"""Errors that tell the operator what happened and what to do, said once.

Each one was met by trying the programs as a new user would; the message is
asserted word for word where its words are the point.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cc.cli.workers import AUTO_WORKERS_CAP, auto_workers
from tests.support.cli import assert_one_line_error, run_cli, start_gateway
from tests.support.net import LOOPBACK, free_port
from tests.support.processes import CC

WRONG = "A" * 43 + "="


def _remote() -> str:
    return f"R:{LOOPBACK}:{free_port()}:{LOOPBACK}:9"


@pytest.mark.parametrize(
    ("cpus", "workers"),
    [(1, 1), (2, 1), (3, 3), (4, 4), (8, 8), (64, AUTO_WORKERS_CAP)],
)
def test_auto_workers_is_one_on_small_machines(cpus: int, workers: int) -> None:
    """On 2 CPUs a second worker finds no idle core: one process, not three."""
    assert auto_workers(cpus) == workers


def test_gave_up_is_said_once_with_workers(tmp_path: Path) -> None:
    url = f"http://{LOOPBACK}:{free_port()}"
    argv = [*CC, "client", "--workers", "2", "--max-retry-count", "0", url, _remote()]
    result = run_cli(argv, cwd=tmp_path, timeout=30)
    line = assert_one_line_error(result, 1)
    assert line == "cloud-connector client: gave up after 0 retries (--max-retry-count 0)"


def test_wrong_fingerprint_says_expected_and_got(tmp_path: Path) -> None:
    with start_gateway(tmp_path) as (gateway, port):
        _, logged = gateway.wait_for_line(r"server: Fingerprint ", 10)
        actual = logged.rsplit(" ", 1)[1]
        for workers in ("1", "2"):
            argv = [*CC, "client", "--workers", workers, "--fingerprint", WRONG]
            result = run_cli([*argv, f"http://{LOOPBACK}:{port}", _remote()], cwd=tmp_path)
            line = assert_one_line_error(result, 1)  # once, whatever the workers
            assert line == (
                f"cloud-connector client: Invalid fingerprint: expected {WRONG} "
                f"(--fingerprint), got {actual} from the server: compare with the "
                '"Fingerprint" line the gateway logs at start; if they differ, this is '
                "not your gateway"
            )


def test_fatal_error_is_json_with_json_logs(tmp_path: Path) -> None:
    """A log shipper that parses every line never meets plain text, even at the end."""
    bad = run_cli(
        [*CC, "client", "--log-format", "json", "--fingerprint", "x=", "http://h:1", "3000"],
        cwd=tmp_path,
    )
    record = json.loads(assert_one_line_error(bad, 2))
    assert record["event"] == "fatal" and record["status"] == 2
    assert record["logger"] == "client" and record["level"] == "error"
    assert re.match(r"--fingerprint 'x=' is not a fingerprint: expected ", record["error"])
