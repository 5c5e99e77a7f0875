"""asyncssh without the parts a tunnel never runs, for a smaller idle process.

``import asyncssh`` loads every submodule (``asyncssh/__init__.py`` imports them all,
and ``asyncssh.connection`` most of them): SFTP, SCP, X11 and agent forwarding,
PKCS#11, shell sessions and processes, tun/tap, host-based key signing, SSH
signatures, X.509 certificates.  A tunnel opens ``chisel`` channels only, so the
commands call :func:`leave_out_unused_asyncssh` before anything imports asyncssh:

- the submodules in :data:`UNUSED` are stood in for by placeholder modules.  asyncssh
  imports and runs as usual; a name taken from a placeholder is a stand-in class that
  raises :class:`NotLoaded` when called and matches no instance, so code reaching for
  SFTP and the like fails with a message that says why;
- ``asyncssh.crypto.x509`` is marked absent (``None`` in ``sys.modules``): asyncssh
  then takes its own path for a cryptography without X.509, and offers no
  ``x509v3-*`` key algorithms (chisel and OpenSSH tunnels use plain keys).

Together ~3.5 MB of an idle process (README "Performance").

Standard modules in :data:`DEFERRED` are imported at their first use (``_OnFirstUse``):
``websockets.version`` imports ``importlib.metadata`` and never uses it in a
release, which pulled in ``email``, ``zipfile`` and ~50 more modules (~3.3 MB);
the module loads at its first use, whoever asks.  If the placeholders no
longer fit the installed asyncssh (a release importing a name in a new way), the
import is done again without them: the saving is lost, nothing else.  Library users
of ``cc`` are not affected: only the commands (``cc.cli``) call this, and
tests/runtime/test_lean.py checks both the import and a tunnel through it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from typing import Any, NoReturn

from cc.log import get_logger

__all__ = [
    "ABSENT",
    "DEFERRED",
    "UNUSED",
    "NotLoaded",
    "defer_unused_stdlib",
    "leave_out_unused_asyncssh",
]

#: asyncssh submodules no tunnel uses (each imported by connection.py or __init__.py).
#: Not ``agent``: with a client key (``--identity``) asyncssh builds an agent client
#: for an empty path, which asks no agent but must exist.
UNUSED = (
    "editor",
    "keysign",
    "pkcs11",
    "process",
    "scp",
    "sftp",
    "sshsig",
    "stream",
    "subprocess",
    "tuntap",
    "x11",
)
#: Optional submodules asyncssh already copes without (it catches their ImportError).
ABSENT = ("crypto.x509",)
#: Standard modules imported by a dependency that an idle tunnel never uses.
DEFERRED = ("importlib.metadata",)

log = get_logger("lean")


class NotLoaded(RuntimeError):
    """A part of asyncssh that the commands leave out was used."""


def _refuse(what: str) -> NoReturn:
    raise NotLoaded(
        f"{what} is not loaded: cloud-connector leaves out the parts of asyncssh a "
        "tunnel never uses (cc/runtime/lean.py)"
    )


class _StandIn(type):
    """The type of the stand-ins: not callable, no instances, fine in annotations."""

    def __call__(cls, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse(f"{cls.__module__}.{cls.__qualname__}")

    def __getitem__(cls, item: object) -> _StandIn:
        return cls  # ``SSHClientProcess[AnyStr]`` in asyncssh's signatures

    def __instancecheck__(cls, instance: object) -> bool:
        return False

    def __subclasscheck__(cls, subclass: type) -> bool:
        return False


class _Placeholder(types.ModuleType):
    """Stands for an asyncssh submodule; each name asked for becomes a stand-in."""

    def __getattr__(self, name: str) -> _StandIn:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        stand_in = _StandIn(name, (), {"__module__": self.__name__, "__qualname__": name})
        setattr(self, name, stand_in)
        return stand_in


class _FullOnFailure(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports asyncssh; if that fails with the placeholders, again without them."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != "asyncssh":
            return None
        sys.meta_path.remove(self)  # once: the next lookup is the real one
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        self._loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec: ModuleSpec) -> types.ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        if module.__spec__ is not None:
            module.__spec__.loader = module.__loader__ = self._loader
        try:
            self._loader.exec_module(module)
        except Exception as exc:
            log.debug("asyncssh does not fit the placeholders (%s): importing all of it", exc)
            for name in [m for m in sys.modules if m.startswith("asyncssh.")]:
                del sys.modules[name]
            self._loader.exec_module(module)


def leave_out_unused_asyncssh() -> bool:
    """Have the coming ``import asyncssh`` skip :data:`UNUSED` and :data:`ABSENT`.

    Imports nothing now (a ``--workers`` control process never imports asyncssh).
    Call before anything imports asyncssh: once it is imported this returns False.
    """
    if "asyncssh" in sys.modules:
        return False
    for name in UNUSED:
        sys.modules[f"asyncssh.{name}"] = _Placeholder(f"asyncssh.{name}")
    for name in ABSENT:
        sys.modules[f"asyncssh.{name}"] = None  # type: ignore[assignment]  # -> ImportError
    sys.meta_path.insert(0, _FullOnFailure())
    return True


class _OnFirstUse(types.ModuleType):
    """Stands for a module until a name is asked of it; then it imports the real one.

    Not ``importlib.util.LazyLoader``: the ``import`` statement itself reads a cached
    module's ``__spec__``, which loads a lazy module at once.  Here ``__spec__``,
    ``__file__`` and ``__path__`` are plain attributes; anything else loads the module
    and takes on its names, so references to the stand-in keep working.
    """

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        module_name = self.__name__
        if sys.modules.get(module_name) is self:
            del sys.modules[module_name]
        real = importlib.import_module(module_name)
        self.__dict__.update(real.__dict__)
        return getattr(real, name)


def defer_unused_stdlib() -> list[str]:
    """Have the modules of :data:`DEFERRED` load at their first use; the ones deferred.

    A module already imported (or not found) is left as it is.
    """
    deferred = []
    for name in DEFERRED:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue
        stand_in = _OnFirstUse(name)
        stand_in.__spec__ = spec
        stand_in.__file__ = spec.origin
        if spec.submodule_search_locations is not None:
            stand_in.__path__ = list(spec.submodule_search_locations)
        sys.modules[name] = stand_in
        parent, _, child = name.rpartition(".")
        if parent:  # ``import a.b`` binds ``a`` and reads ``a.b``: the import of a
            setattr(sys.modules[parent], child, stand_in)  # cached module does not set it
        deferred.append(name)
    return deferred
