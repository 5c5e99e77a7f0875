"""Build hook for the optional Cython fast path; all metadata lives in pyproject.toml.

``cc._fastpath`` is an optional extension: when Cython or a C compiler is missing, the
install still succeeds and ``cc.fastpath`` falls back to the pure twin. Environment:

* ``CC_NO_EXTENSIONS=1``      build nothing (pure-Python install).
* ``CC_REQUIRE_EXTENSIONS=1`` any failure to cythonize or compile is fatal (wheel jobs).

Without Cython, a pre-generated ``cc/_fastpath.c`` (as shipped in the sdist) is compiled.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

__all__ = ["OptionalBuildExt", "ext_modules"]

HERE = Path(__file__).parent
NO_EXTENSIONS = bool(os.environ.get("CC_NO_EXTENSIONS"))
REQUIRE_EXTENSIONS = bool(os.environ.get("CC_REQUIRE_EXTENSIONS"))

PYX = "cc/_fastpath.pyx"
GENERATED_C = "cc/_fastpath.c"

CYTHON_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "embedsignature": True,
}


def _warn(message: str) -> None:
    """Say why the fast path is skipped without failing the install."""
    print(f"WARNING: cloud-connector: {message}; using the pure-Python fast path", file=sys.stderr)


def ext_modules() -> list[Extension]:
    """Return the extensions to build: cythonized from source, or the shipped C file."""
    if NO_EXTENSIONS:
        return []
    optional = not REQUIRE_EXTENSIONS
    try:
        from Cython.Build import cythonize
    except ImportError:
        if (HERE / GENERATED_C).exists():
            return [Extension("cc._fastpath", [GENERATED_C], optional=optional)]
        if REQUIRE_EXTENSIONS:
            raise
        _warn("Cython is not installed and no generated C file is present")
        return []
    try:
        exts = cythonize(
            [Extension("cc._fastpath", [PYX])], compiler_directives=CYTHON_DIRECTIVES, quiet=True
        )
    except Exception as exc:
        if REQUIRE_EXTENSIONS:
            raise
        _warn(f"cythonize failed ({exc})")
        return []
    for ext in exts:
        ext.optional = optional  # cythonize() drops this attribute from its templates
    return list(exts)


class OptionalBuildExt(build_ext):
    """Add optimisation flags that suit the compiler actually in use."""

    def build_extensions(self) -> None:
        """Append -O3 (or /O2 on MSVC) so the XOR loops get unrolled and vectorised."""
        flags = ["/O2"] if self.compiler.compiler_type == "msvc" else ["-O3"]
        for ext in self.extensions:
            ext.extra_compile_args = [*ext.extra_compile_args, *flags]
        super().build_extensions()


setup(ext_modules=ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
