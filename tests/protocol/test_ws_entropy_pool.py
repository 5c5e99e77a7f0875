"""Masking keys come from a pooled os.urandom (cc.protocol.ws.EntropyPool)."""

from __future__ import annotations

import os

from cc.protocol.ws import MASK_KEYS, EntropyPool, WebSocketStream

__all__: list[str] = []


def test_keys_are_slices_of_one_read_until_it_is_used_up() -> None:
    pool = EntropyPool(size=16)
    keys = [pool(4) for _ in range(4)]
    assert all(len(key) == 4 for key in keys)
    first_read = pool._buf
    assert b"".join(keys) == first_read  # four keys, one urandom read
    assert pool(4) != keys[0] and pool._buf is not first_read  # the fifth read refills


def test_a_request_larger_than_the_pool_is_served_whole() -> None:
    assert len(EntropyPool(size=8)(32)) == 32


def test_a_forked_child_does_not_repeat_the_parents_keys() -> None:
    pool = EntropyPool(size=4096)
    pool(4)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the next key must not be the parent's next key
        os.write(write, pool(4))
        os._exit(0)
    os.close(write)
    child_key = os.read(read, 4)
    os.close(read)
    os.waitpid(pid, 0)
    assert child_key != pool(4)


def test_client_streams_mask_with_the_shared_pool_by_default() -> None:
    stream = WebSocketStream(is_client=True)
    assert stream._mask_key_source is MASK_KEYS
