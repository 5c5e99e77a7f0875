"""The facts under tests/vectors: bytes, fingerprints, requests and usage text.

They live in the repository so that a clean clone checks them; a missing file is
an error here (FileNotFoundError), never a reason to skip.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "VECTORS",
    "data_lines",
    "outsystemscc_usage",
    "read_bytes",
    "read_text",
    "udp_gob_messages",
]

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def read_bytes(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def read_text(name: str) -> str:
    return (VECTORS / name).read_text(encoding="utf-8")


def data_lines(name: str) -> list[str]:
    """The non-blank lines of a vector file that are not ``#`` comments, stripped."""
    return [
        line.strip()
        for line in read_text(name).splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def outsystemscc_usage() -> str:
    """The seed README's usage text, without the file's one-line provenance header."""
    header, _, text = read_text("outsystemscc_usage.txt").partition("\n")
    assert header.startswith("# "), "outsystemscc_usage.txt starts with its header line"
    return text.removesuffix("\n")


def udp_gob_messages() -> tuple[bytes, bytes]:
    """The type definition and the value message of udp_gob.txt (Go's own gob bytes)."""
    definition, value = (bytes.fromhex(line) for line in data_lines("udp_gob.txt")[:2])
    return definition, value
