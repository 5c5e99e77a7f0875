"""Commands raise their soft descriptor limit to the hard one, as Go programs do.

A shell or a container often gives a process 1,024 descriptors (soft) of a much
higher hard limit; chisel raises its own at start, so ours must too, or a gateway
with a thousand tunnelled connections fails where chisel does not.
"""

from __future__ import annotations

import resource
from pathlib import Path

import psutil
import pytest

from tests.support.net import LOOPBACK, free_port
from tests.support.processes import CC, CliProcess

__all__: list[str] = []

SOFT, HARD = 512, 4096


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT, HARD))


@pytest.fixture(autouse=True)
def _hard_limit_allows() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < HARD:
        pytest.skip(f"the hard descriptor limit here ({hard}) is below {HARD}")


def test_the_gateway_raises_its_soft_limit_to_the_hard_one(tmp_path: Path) -> None:
    port = free_port()
    argv = [*CC, "server", "-v", "--host", LOOPBACK, "--port", str(port)]
    with CliProcess("gateway", argv, cwd=tmp_path, logdir=tmp_path, preexec_fn=_limited) as gw:
        gw.wait_listening(port, 15)
        assert psutil.Process(gw.pid).rlimit(psutil.RLIMIT_NOFILE) == (HARD, HARD)
        gw.wait_for_text(f"descriptor limit raised from {SOFT} to {HARD}", timeout=5)


def test_a_limit_already_at_the_hard_one_is_left_alone(tmp_path: Path) -> None:
    port = free_port()
    argv = [*CC, "server", "-v", "--host", LOOPBACK, "--port", str(port)]

    def at_hard() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (HARD, HARD))

    with CliProcess("gateway", argv, cwd=tmp_path, logdir=tmp_path, preexec_fn=at_hard) as gw:
        gw.wait_listening(port, 15)
        assert psutil.Process(gw.pid).rlimit(psutil.RLIMIT_NOFILE) == (HARD, HARD)
        assert "descriptor limit raised" not in gw.stdout() + gw.stderr()
