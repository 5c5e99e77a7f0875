"""Shared pytest fixtures."""

from __future__ import annotations

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
