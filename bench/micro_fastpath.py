"""Micro-benchmark of the WebSocket, SSH packet and gob UDP hot loops, twin by twin.

Run ``python bench/micro_fastpath.py`` (``--seconds`` per case, ``--size`` per payload).
It prints MB/s (10**6 bytes per second of payload), the unit of the README's bench
figures; 32 KiB is what Go chisel peers write per SSH channel packet. The gob
section prints datagrams/s for ``--datagram`` bytes (1200: a QUIC-sized datagram). The
packet crypto section puts asyncssh's own per-packet path beside the twins. No
assertions: the figures move from run to run, the ratios between twins are what matter.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from types import ModuleType

from cc import fastpath
from cc.protocol.udp import GobDecoder, GobEncoder
from cc.protocol.ws import WebSocketStream

__all__ = [
    "GOB_BATCH",
    "asyncssh_crypto_cases",
    "cases",
    "crypto_cases",
    "gob_cases",
    "main",
    "measure",
    "seconds_per_call",
]

#: Datagrams per ``receive_data`` call in the batched gob case (a busy channel's read).
GOB_BATCH = 32
_GOB_SRC = "127.0.0.1:5000"


def measure(func: Callable[[], object], nbytes: int, seconds: float) -> float:
    """Call ``func`` repeatedly for about ``seconds``; return payload MB/s."""
    return nbytes / seconds_per_call(func, seconds) / 1e6


def seconds_per_call(func: Callable[[], object], seconds: float) -> float:
    """Call ``func`` repeatedly for about ``seconds``; return the best time per call."""
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
    return best


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


def crypto_cases(impl: ModuleType, size: int) -> dict[str, Callable[[], object]]:
    """Seal and open one ``size``-byte channel packet with each fast cipher."""
    payload = os.urandom(size)
    gcm = impl.GCMPacketCipher(os.urandom(16), os.urandom(12))
    chacha = impl.ChachaPacketCipher(os.urandom(64))
    gcm_packet = bytes(impl.GCMPacketCipher(bytes(16), bytes(12)).seal(payload, b"^"))
    chacha_packet = bytes(chacha.seal(payload, b"^", 7))

    def gcm_open() -> object:
        # the nonce counts per packet: a fresh cipher opens the same packet again
        return impl.GCMPacketCipher(bytes(16), bytes(12)).open_packet(gcm_packet, 0)

    return {
        "aes128-gcm seal": lambda: gcm.seal(payload, b"^"),
        "aes128-gcm open": gcm_open,
        "chacha20-poly1305 seal": lambda: chacha.seal(payload, b"^", 7),
        "chacha20-poly1305 open": lambda: chacha.open_packet(chacha_packet, 0, 7),
    }


def asyncssh_crypto_cases(size: int) -> dict[str, Callable[[], object]]:
    """asyncssh's own per-packet calls for the same operations (the reference)."""
    from asyncssh.crypto.chacha import ChachaCipher
    from asyncssh.crypto.cipher import GCMCipher

    payload = os.urandom(size)
    packet = bytes([16]) + b"^" + payload + bytes(16)
    header = len(packet).to_bytes(4, "big")
    gcm = GCMCipher("aes128-gcm", bytes(16), bytes(12))
    sealed, tag = gcm.encrypt_and_sign(header, packet)
    chacha = ChachaCipher(bytes(64))
    nonce = (7).to_bytes(8, "big")
    csealed, ctag = chacha.encrypt_and_sign(header, packet, nonce)
    cheader, cbody = csealed[:4], csealed[4:]

    def gcm_open() -> object:
        return GCMCipher("aes128-gcm", bytes(16), bytes(12)).verify_and_decrypt(header, sealed, tag)

    def chacha_open() -> object:
        chacha.decrypt_header(cheader, nonce)  # asyncssh's receive path does both per packet
        return chacha.verify_and_decrypt(cheader, cbody, nonce, ctag)

    return {
        "aes128-gcm seal": lambda: gcm.encrypt_and_sign(header, packet),
        "aes128-gcm open": gcm_open,
        "chacha20-poly1305 seal": lambda: chacha.encrypt_and_sign(header, packet, nonce),
        "chacha20-poly1305 open": chacha_open,
    }


def gob_cases(impl: ModuleType, size: int) -> dict[str, tuple[Callable[[], object], int]]:
    """The gob operations to time on one twin: ``(call, datagrams it handles)`` by name.

    The decoders are primed with the type definition and one value, so every timed
    message is a value on the steady-state path, as on a long-lived UDP channel.
    """
    payload = os.urandom(size)
    src = _GOB_SRC.encode()
    encoder = GobEncoder(fastpath=impl)
    stream = encoder.encode(_GOB_SRC, payload)  # definition + value
    value = encoder.encode(_GOB_SRC, payload)
    batch = value * GOB_BATCH
    start = impl.gob_decode_uint(value, 0)[1]
    decoder = GobDecoder(fastpath=impl)
    decoder.receive_data(stream)
    split = len(value) // 2
    halves = (value[:split], value[split:])

    def receive_split() -> object:
        decoder.receive_data(halves[0])  # buffered: the general receive path
        return decoder.receive_data(halves[1])

    return {
        "gob_encode_value": (lambda: impl.gob_encode_value(65, src, payload), 1),
        "GobEncoder.encode": (lambda: encoder.encode(_GOB_SRC, payload), 1),
        "gob_decode_value": (lambda: impl.gob_decode_value(value, 65, 0, 1, start), 1),
        "GobDecoder 1 per read": (lambda: decoder.receive_data(value), 1),
        f"GobDecoder {GOB_BATCH} per read": (lambda: decoder.receive_data(batch), GOB_BATCH),
        "GobDecoder split read": (receive_split, 1),
    }


def main() -> None:
    """Print one table row per operation, one column per available twin."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32 * 1024, help="payload bytes")
    parser.add_argument("--datagram", type=int, default=1200, help="gob UDP payload bytes")
    parser.add_argument("--seconds", type=float, default=0.5, help="time per case")
    args = parser.parse_args()
    impls = fastpath.implementations()
    header = "".join(f"{name:>12}" for name in impls)
    table = {name: cases(impl, args.size) for name, impl in impls.items()}
    print(f"selected: {fastpath.IMPLEMENTATION}; payload {args.size} bytes; MB/s")
    print(f"{'operation':28}" + header)
    for op in next(iter(table.values())):
        row = [measure(table[name][op], args.size, args.seconds) for name in impls]
        print(f"{op:28}" + "".join(f"{v:12.0f}" for v in row))
    crypto = {name: crypto_cases(impl, args.size) for name, impl in impls.items()}
    crypto["asyncssh"] = asyncssh_crypto_cases(args.size)
    print(f"\nSSH packet crypto, payload {args.size} bytes; MB/s")
    print(f"{'operation':28}" + "".join(f"{name:>12}" for name in crypto))
    for op in crypto["asyncssh"]:
        row = [measure(crypto[name][op], args.size, args.seconds) for name in crypto]
        print(f"{op:28}" + "".join(f"{v:12.0f}" for v in row))
    gob = {name: gob_cases(impl, args.datagram) for name, impl in impls.items()}
    print(f"\ngob udpPacket, payload {args.datagram} bytes; datagrams/s")
    print(f"{'operation':28}" + header)
    for op in next(iter(gob.values())):
        rates = []
        for name in impls:
            func, datagrams = gob[name][op]
            rates.append(datagrams / seconds_per_call(func, args.seconds))
        print(f"{op:28}" + "".join(f"{v:12.0f}" for v in rates))


if __name__ == "__main__":
    main()
