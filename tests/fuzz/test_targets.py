"""The fuzz targets themselves: each runs its seeds, its regression inputs and random
bytes without a crash.

atheris explores far more inputs (``python -m fuzz --all``); this keeps the targets
importable and honest in the plain suite, and replays every input that once crashed
one (``tests/vectors/fuzz/<target>/``).
"""

from __future__ import annotations

import random

import pytest

from fuzz.common import REGRESSIONS, Target
from fuzz.targets import TARGETS, regressions_for, seeds_for

__all__: list[str] = []


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_survives_its_seeds_and_random_input(name: str) -> None:
    target = TARGETS[name]
    rng = random.Random(name)
    inputs = seeds_for(name) + [rng.randbytes(rng.randrange(0, 300)) for _ in range(300)]
    for data in inputs:
        target(data)


def test_every_parser_family_has_a_target() -> None:
    """Issue 11 item 9's list, plus the parsers and state machines the gateway issues added."""
    families = {
        "ws",  # frames and the stream
        "http",  # heads
        "handshake",  # the upgrade, both sides and the round trip
        "ssh",  # packet opening, both twins
        "remote",
        "config",
        "gob",
        "authfile",  # users and tokens
        "key",
        "seed",
        "fingerprint",
        "socks5",
        "durations",
        "hosts",
        "channel",  # channel targets
        "cli",  # --header, --auth, --proxy, the server URL
        "verdict",
        "authguard",
        "failure",  # FailureLog
        "admission",
        "webroute",  # named services: requests, notifications, keys files
    }
    assert families <= {name.split("_")[0] for name in TARGETS}


def test_every_regression_input_belongs_to_a_target_and_is_replayed() -> None:
    folders = sorted(path.name for path in REGRESSIONS.iterdir() if path.is_dir())
    assert folders, "tests/vectors/fuzz/ holds the inputs that once crashed a target"
    for folder in folders:
        assert folder in TARGETS, f"tests/vectors/fuzz/{folder}/ names no target"
        found = regressions_for(folder)
        assert found, f"tests/vectors/fuzz/{folder}/ is empty"
        assert all(data in seeds_for(folder) for data in found)


def test_a_crash_escapes_the_target() -> None:
    """A target only swallows its parser's own errors; anything else must surface."""

    def broken(_data: bytes) -> None:
        raise AssertionError("a broken property")

    with pytest.raises(AssertionError):
        Target("broken", broken, (ValueError,))(b"")
