"""Shared pytest fixtures."""

from __future__ import annotations

import os
from types import ModuleType

import pytest

from cc import fastpath


@pytest.fixture(scope="session", params=sorted(fastpath.implementations()))
def fastpath_impl(request: pytest.FixtureRequest) -> ModuleType:
    """Each importable fast-path twin ("python", and "cython" when built) in turn.

    Session-scoped because the modules are stateless and Hypothesis refuses
    function-scoped fixtures in ``@given`` tests.
    """
    return fastpath.implementations()[request.param]


@pytest.fixture(autouse=True, scope="session")
def _one_worker_unless_a_test_asks() -> None:
    """Subprocesses run one worker each (``--workers`` defaults to the CPU count).

    Most tests are about one session's behaviour and read its log lines and
    pid; the worker tests pass ``--workers`` or drop ``CC_WORKERS`` themselves.
    """
    os.environ.setdefault("CC_WORKERS", "1")
