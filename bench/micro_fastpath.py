"""Micro-benchmark of the WebSocket hot loops, each fast-path twin side by side.

Run ``python bench/micro_fastpath.py`` (``--seconds`` per case, ``--size`` per payload).
It prints MB/s (10**6 bytes per second of payload) so the numbers line up with
CALIBRATION.md; 32 KiB is what Go chisel peers write per SSH channel packet. No
assertions: the figures move from run to run, the ratios between twins are what matter.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from types import ModuleType

from cc import fastpath
from cc.protocol.ws import WebSocketStream

__all__ = ["cases", "main", "measure"]


def measure(func: Callable[[], object], nbytes: int, seconds: float) -> float:
    """Call ``func`` repeatedly for about ``seconds``; return payload MB/s."""
    calls = 1
    while True:  # grow the batch until one batch takes a measurable time
        start = time.perf_counter()
        for _ in range(calls):
            func()
        elapsed = time.perf_counter() - start
        if elapsed > seconds / 5:
            break
        calls *= 2
    best = elapsed / calls
    for _ in range(4):  # best of five batches: the least disturbed by the machine
        start = time.perf_counter()
        for _ in range(calls):
            func()
        best = min(best, (time.perf_counter() - start) / calls)
    return nbytes / best / 1e6


def cases(impl: ModuleType, size: int) -> dict[str, Callable[[], object]]:
    """The operations to time on one twin, each handling ``size`` payload bytes."""
    payload = os.urandom(size)
    mask = os.urandom(4)
    buf = bytearray(payload)
    masked_frame = impl.encode_frame(2, payload, mask)
    plain_frame = impl.encode_frame(2, payload, None)

    def decode_masked() -> bytes:
        _flags, _op, _masked, key, length, hlen = impl.parse_header(masked_frame, 0)
        return bytes(impl.apply_mask(memoryview(masked_frame)[hlen : hlen + length], key))

    server = WebSocketStream(is_client=False, fastpath=impl)
    client = WebSocketStream(is_client=True, fastpath=impl)
    return {
        "apply_mask (copy)": lambda: impl.apply_mask(payload, mask),
        "apply_mask_inplace": lambda: impl.apply_mask_inplace(buf, mask),
        "encode_frame masked": lambda: impl.encode_frame(2, payload, mask),
        "encode_frame unmasked": lambda: impl.encode_frame(2, payload, None),
        "parse_header + unmask": decode_masked,
        "ws server receive (masked)": lambda: server.receive_data(masked_frame),
        "ws client receive (plain)": lambda: client.receive_data(plain_frame),
        "ws client send_binary": lambda: client.send_binary(payload),
    }


def main() -> None:
    """Print one table row per operation, one column per available twin."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32 * 1024, help="payload bytes")
    parser.add_argument("--seconds", type=float, default=0.5, help="time per case")
    args = parser.parse_args()
    impls = fastpath.implementations()
    table = {name: cases(impl, args.size) for name, impl in impls.items()}
    print(f"selected: {fastpath.IMPLEMENTATION}; payload {args.size} bytes; MB/s")
    print(f"{'operation':28}" + "".join(f"{name:>12}" for name in impls))
    for op in next(iter(table.values())):
        row = [measure(table[name][op], args.size, args.seconds) for name in impls]
        print(f"{op:28}" + "".join(f"{v:12.0f}" for v in row))


if __name__ == "__main__":
    main()
