"""setuptools' PEP 517 backend, asking for Cython only when there is no C to compile.

A git checkout has only ``cc/_fastpath.pyx``, so building it needs Cython.  The sdist
ships the generated ``cc/_fastpath.c`` (and a ``PKG-INFO``), so building from it needs
a C compiler and nothing from the index but setuptools: an offline mirror or a
restricted index still gets the compiled fast path.  ``CC_NO_EXTENSIONS=1`` builds
nothing, so it needs no Cython either.  Everything else is setuptools' own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from setuptools.build_meta import (  # the hooks we do not change
    build_editable,
    build_sdist,
    build_wheel,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

__all__ = [
    "build_editable",
    "build_sdist",
    "build_wheel",
    "get_requires_for_build_editable",
    "get_requires_for_build_sdist",
    "get_requires_for_build_wheel",
    "prepare_metadata_for_build_editable",
    "prepare_metadata_for_build_wheel",
]

CYTHON = "Cython>=3.0"


def _cython_for_a_build() -> list[str]:
    """Cython unless we build from an sdist that carries the generated C (hooks run in
    the source tree, per PEP 517)."""
    if os.environ.get("CC_NO_EXTENSIONS"):
        return []
    here = Path.cwd()
    if (here / "PKG-INFO").is_file() and (here / "cc" / "_fastpath.c").is_file():
        return []
    return [CYTHON]


# setuptools' own get_requires_* hooks are not called: they run setup.py before Cython
# is installed (which CC_REQUIRE_EXTENSIONS=1 rightly refuses), only to collect
# setup_requires, which setup.py has none of.


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _cython_for_a_build()


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _cython_for_a_build()


def get_requires_for_build_sdist(config_settings: dict[str, Any] | None = None) -> list[str]:
    """Always Cython: the sdist must carry the C generated from this tree's .pyx."""
    return [CYTHON]
