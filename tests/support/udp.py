"""Blocking UDP helpers for tests that run our CLIs (and chisel) as child processes.

An echo service and a DNS-like service on 127.0.0.1 in threads, and clients that
use many sockets at once (each socket is a distinct sender, ``ip:port``), checking
that every answer reaches the sender that asked.  Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

from tests.support.net import LOOPBACK, STOP_TIMEOUT

__all__ = [
    "address_for",
    "dns_query",
    "dns_service",
    "many_dns_queries",
    "many_senders",
    "udp_echo",
    "udp_probe",
]

IO_TIMEOUT = 10.0


@contextlib.contextmanager
def _udp_service(answer: Callable[[bytes], bytes | None]) -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind((LOOPBACK, 0))
    sock.settimeout(0.2)
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            try:
                data, addr = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = answer(data)
            if reply is not None:
                sock.sendto(reply, addr)

    thread = threading.Thread(target=serve, name="udp-service", daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        stopping.set()
        thread.join(timeout=STOP_TIMEOUT)
        sock.close()


def udp_echo() -> contextlib.AbstractContextManager[int]:
    """A UDP service on 127.0.0.1 answering every datagram with itself; yields its port."""
    return _udp_service(lambda data: data)


def udp_probe(port: int, timeout: float = 20.0) -> None:
    """Send until the tunnel answers: UDP listeners have no accept() to wait for."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.settimeout(0.3)
        while True:
            sock.sendto(b"probe", (LOOPBACK, port))
            try:
                while True:
                    data = sock.recv(65535)
                    if data.endswith(b"probe"):
                        return
            except TimeoutError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer through UDP port {port} within {timeout}s")


def _exchange(port: int, requests: list[list[bytes]], check: Callable[[int, bytes], bytes]) -> None:
    """Sender ``i`` (one socket each) sends ``requests[i]``; every answer is checked.

    ``check(i, answer)`` raises if the answer is not for sender ``i`` and returns the
    request it answers; every request must be answered once, within IO_TIMEOUT.
    """
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in requests]
    try:
        waiting: dict[int, tuple[int, set[bytes]]] = {}
        for i, sock in enumerate(socks):
            sock.bind((LOOPBACK, 0))
            sock.setblocking(False)
            waiting[sock.fileno()] = (i, set(requests[i]))
        for round_ in range(max(len(r) for r in requests)):
            for i, sock in enumerate(socks):
                if round_ < len(requests[i]):
                    sock.sendto(requests[i][round_], (LOOPBACK, port))
        poller = select.poll()
        for fd in waiting:
            poller.register(fd, select.POLLIN)
        by_fd = {sock.fileno(): sock for sock in socks}
        deadline = time.monotonic() + IO_TIMEOUT
        while any(pending for _, pending in waiting.values()):
            if time.monotonic() > deadline:
                missing = sum(len(p) for _, p in waiting.values())
                raise AssertionError(f"{missing} requests through port {port} got no answer")
            for fd, _ in poller.poll(100):
                index, pending = waiting[fd]
                with contextlib.suppress(BlockingIOError):
                    while True:
                        request = check(index, by_fd[fd].recv(65535))
                        assert request in pending, f"sender {index}: answer to {request!r} again"
                        pending.discard(request)
    finally:
        for sock in socks:
            sock.close()


def many_senders(port: int, senders: int = 20, rounds: int = 3) -> None:
    """``senders`` sockets send ``rounds`` datagrams each through an echo tunnel at once."""
    requests = [[b"sender %d round %d" % (i, r) for r in range(rounds)] for i in range(senders)]

    def check(index: int, answer: bytes) -> bytes:
        assert answer.startswith(b"sender %d round " % index), f"sender {index} got {answer!r}"
        return answer

    _exchange(port, requests, check)


# --------------------------------------------------------------------------- DNS-like


def _encode_name(name: str) -> bytes:
    return b"".join(bytes((len(p),)) + p.encode() for p in name.split(".")) + b"\x00"


def dns_query(query_id: int, name: str) -> bytes:
    """An A query as a stub resolver sends it (RD set, one question)."""
    return (
        struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0)
        + _encode_name(name)
        + b"\x00\x01\x00\x01"
    )


def address_for(name: bytes) -> bytes:
    """The A record our DNS-like service gives ``name``: 10.x.y.z from its hash."""
    return b"\x0a" + hashlib.sha256(name).digest()[:3]


def _dns_answer(query: bytes) -> bytes | None:
    if len(query) < 17:
        return None
    query_id, _, qdcount = struct.unpack("!HHH", query[:6])
    end = 12
    while end < len(query) and query[end]:
        end += 1 + query[end]
    question = query[12 : end + 5]
    if qdcount != 1 or len(question) < 6:
        return None
    header = struct.pack("!HHHHHH", query_id, 0x8180, 1, 1, 0, 0)
    record = b"\xc0\x0c\x00\x01\x00\x01" + struct.pack("!IH", 60, 4) + address_for(question[:-4])
    return header + question + record


def dns_service() -> contextlib.AbstractContextManager[int]:
    """A DNS-like service on 127.0.0.1: every A query gets a name-specific answer."""
    return _udp_service(_dns_answer)


def many_dns_queries(port: int, senders: int = 20, per_sender: int = 2, seed: int = 1) -> None:
    """Each sender asks ``per_sender`` names with random ids; ids and answers must match."""
    rng = random.Random(seed)
    requests = [
        [dns_query(rng.randrange(1 << 16), f"host{i}-{j}.example.test") for j in range(per_sender)]
        for i in range(senders)
    ]
    by_id = {(i, q[:2]): q for i, qs in enumerate(requests) for q in qs}

    def check(index: int, answer: bytes) -> bytes:
        query = by_id.get((index, answer[:2]))
        assert query is not None, f"sender {index} got an answer with a foreign id"
        question = query[12:]
        assert answer[2:4] == b"\x81\x80", "a response, no error"
        assert answer[12 : 12 + len(question)] == question, "the question echoed"
        assert answer[-4:] == address_for(question[:-4]), "the answer for that name"
        return query

    _exchange(port, requests, check)
