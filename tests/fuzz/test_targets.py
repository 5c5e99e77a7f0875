"""The fuzz targets themselves: each runs its seeds and random bytes without a crash.

atheris explores far more inputs (``python -m fuzz --all``); this keeps the targets
importable and honest in the plain suite, and replays any regression inputs.
"""

from __future__ import annotations

import random

import pytest

from fuzz.targets import TARGETS, seeds_for

__all__: list[str] = []


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_survives_its_seeds_and_random_input(name: str) -> None:
    target = TARGETS[name]
    rng = random.Random(name)
    inputs = seeds_for(name) + [rng.randbytes(rng.randrange(0, 300)) for _ in range(300)]
    for data in inputs:
        target(data)


def test_every_parser_family_has_a_target() -> None:
    families = {
        "ws",
        "http",
        "remote",
        "config",
        "authfile",
        "key",
        "seed",
        "gob",
        "ssh",
        "hosts",
        "webroute",
    }
    assert families <= {name.split("_")[0] for name in TARGETS}


def test_a_crash_escapes_the_target() -> None:
    """A target only swallows its parser's own errors; anything else must surface."""
    target = TARGETS["remote"]
    with pytest.raises(AssertionError):
        target.__class__("broken", lambda _data: (_ for _ in ()).throw(AssertionError()), ())(b"")
