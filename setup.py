"""Build hook for the optional Cython fast path; all metadata lives in pyproject.toml.

``cc._fastpath`` is an optional extension: when Cython or a C compiler is missing, the
install still succeeds and ``cc.fastpath`` falls back to the pure twin. Environment:

* ``CC_NO_EXTENSIONS=1``      build nothing (pure-Python install).
* ``CC_REQUIRE_EXTENSIONS=1`` any failure to cythonize or compile is fatal (wheel jobs).

Without Cython, a pre-generated ``cc/_fastpath.c`` (as shipped in the sdist) is compiled;
packaging/build_backend.py then does not even ask the index for Cython.  A fallback is
never silent: a banner on stderr here (pip shows it with -v), and at run time a warning
at every start, ``cloud-connector version`` and SIGUSR2 say which fast path runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, ExecError, PlatformError

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
    """Say why the fast path is skipped, loudly, without failing the install."""
    rule = "*" * 78
    print(
        f"\n{rule}\nWARNING: cloud-connector: {message}.\n"
        "Installing WITHOUT the compiled fast path: the pure-Python twin moves ~2.6x less\n"
        "data per CPU second.  Install a C compiler and the Python headers (Debian:\n"
        "gcc python3-dev) and reinstall, or set CC_REQUIRE_EXTENSIONS=1 to make this an\n"
        f"error.  `cloud-connector version` says which fast path runs.\n{rule}\n",
        file=sys.stderr,
    )


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

    def build_extension(self, ext: Extension) -> None:
        """Compile ``ext``; for an optional one, a missing compiler or header is a warning."""
        try:
            super().build_extension(ext)
        except (CCompilerError, CompileError, ExecError, PlatformError, OSError) as exc:
            if not getattr(ext, "optional", False):
                raise
            _warn(f"cannot compile {ext.name}: {exc} (no C compiler or Python headers?)")


setup(ext_modules=ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
