"""Fixtures for the chisel interop tests: the binary and the payload."""

from __future__ import annotations

import os

import pytest

from tests.support.chisel import chisel_binary

#: Size of the SHA-256-verified transfer through each tunnel (echoed, so twice this
#: many bytes cross the tunnel).  CC_INTEROP_MIB overrides it for a quick local run.
PAYLOAD_MIB = 64


@pytest.fixture(scope="session")
def chisel() -> str:
    """Path of the real chisel binary, from CHISEL_BIN only (skip when it is unset)."""
    return chisel_binary()


@pytest.fixture(scope="session")
def payload() -> bytes:
    """Random bytes, so a dropped, duplicated or reordered chunk changes the hash."""
    mib = int(os.environ.get("CC_INTEROP_MIB", PAYLOAD_MIB))
    return os.urandom(mib * 1024 * 1024)


@pytest.fixture(scope="session")
def small_payload(payload: bytes) -> bytes:
    """At most 16 MiB of the payload, for the tests whose point is not bulk throughput."""
    return payload[: 16 * 1024 * 1024]
