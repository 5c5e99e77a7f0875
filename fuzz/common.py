"""What every family of fuzz targets shares: the target type, the twins, input helpers.

A target calls a parser on arbitrary bytes.  The parser's own input errors (the
``expected`` exceptions, the ones its caller catches) are fine; anything else
escaping is a crash, and so is a broken property (an ``AssertionError``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

__all__ = [
    "MODULES",
    "REGRESSIONS",
    "VECTORS",
    "Reader",
    "Target",
    "agree",
    "check",
    "plain",
    "same",
    "twins",
    "vector",
]

VECTORS = Path(__file__).resolve().parents[1] / "tests" / "vectors"
#: The modules the targets exercise, instrumented for coverage by ``python -m fuzz``.
MODULES = (
    "cc.cli.common",
    "cc.protocol.acl",
    "cc.protocol.admission",
    "cc.protocol.authguard",
    "cc.protocol.config",
    "cc.protocol.durations",
    "cc.protocol.handshake",
    "cc.protocol.hosts",
    "cc.protocol.http",
    "cc.protocol.keys",
    "cc.protocol.remote",
    "cc.protocol.socks5",
    "cc.protocol.udp",
    "cc.protocol.verdict",
    "cc.protocol.ws",
    "cc.transport.proxy",
    "cc.transport.urls",
    "cc.tunnel.endpoint",
)
#: One directory per target; each file is an input that once crashed it.
REGRESSIONS = VECTORS / "fuzz"


@dataclass(frozen=True)
class Target:
    """``run(data)`` raises only ``expected`` exceptions on any input."""

    name: str
    run: Callable[[bytes], None]
    expected: tuple[type[Exception], ...]
    seeds: Callable[[], Iterable[bytes]] = field(default=lambda: ())

    def __call__(self, data: bytes) -> None:
        with contextlib.suppress(*self.expected):
            self.run(data)


def check(condition: bool, message: str) -> None:
    """A property of the parser; unlike ``assert`` it also holds under ``python -O``."""
    if not condition:
        raise AssertionError(message)


def twins() -> list[ModuleType]:
    from cc import fastpath

    return list(fastpath.implementations().values())


def same(results: Sequence[object]) -> None:
    """Every twin gave the same outcome (a value, or an error of the same kind)."""
    check(all(other == results[0] for other in results[1:]), f"twins disagree: {results!r}")


def agree(call: Callable[[ModuleType], object]) -> None:
    """Run ``call`` on each twin; they must return equal values or both fail."""
    outcomes: list[tuple[str, object]] = []
    for fp in twins():
        try:
            outcomes.append(("ok", plain(call(fp))))
        except (ValueError, OverflowError):
            outcomes.append(("error", None))  # 32-bit builds differ in which of the two
    same(outcomes)


def plain(value: object) -> object:
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    return value


def vector(name: str) -> bytes:
    path = VECTORS / name
    return path.read_bytes() if path.exists() else b""


class Reader:
    """Draws small values from the fuzz input, front to back; zeros once it runs out.

    Pure Python (not atheris' FuzzedDataProvider) so that the plain test suite can
    replay the same inputs without atheris.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def __bool__(self) -> bool:
        return self.pos < len(self.data)

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def below(self, bound: int) -> int:
        """An int in ``range(bound)`` from one or two bytes."""
        value = self.byte() if bound <= 256 else self.byte() << 8 | self.byte()
        return value % bound

    def take(self, count: int) -> bytes:
        chunk = self.data[self.pos : self.pos + count]
        self.pos += len(chunk)
        return chunk

    def chunk(self, limit: int = 255) -> bytes:
        """A length byte, then that many bytes."""
        return self.take(self.below(min(limit, 255) + 1))

    def text(self, limit: int = 255) -> str:
        return self.chunk(limit).decode("utf-8", "replace")

    def rest(self) -> bytes:
        return self.take(len(self.data))
