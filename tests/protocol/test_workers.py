"""Connector workers: which remotes each session serves, and who may share a port."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cc.protocol.remote import Remote, parse_remote
from cc.protocol.workers import (
    PortClaims,
    client_identity,
    forward_plan,
    reverse_plan,
    share_key,
)

REMOTES = [
    parse_remote(text)
    for text in (
        "R:9001:127.0.0.1:80",
        "R:9002:127.0.0.1:81",
        "R:9003:127.0.0.1:53/udp",
        "R:socks",
        "3000:127.0.0.1:22",
        "3001:127.0.0.1:53/udp",
        "3002:127.0.0.1:54/udp",
    )
]


def names(remotes: tuple[Remote, ...]) -> list[str]:
    return [str(r) for r in remotes]


def test_our_gateway_shares_tcp_reverse_remotes_and_splits_udp() -> None:
    first = reverse_plan(REMOTES, 0, 2, gateway_shares=True)
    second = reverse_plan(REMOTES, 1, 2, gateway_shares=True)
    tcp = {"R:9001=>80", "R:9002=>81", "R:127.0.0.1:1080=>socks"}
    assert tcp <= set(names(first)) and tcp <= set(names(second))
    udp = [r for r in (*first, *second) if r.local_port == 9003]
    assert len(udp) == 1, "a UDP reverse port has one owner"


def test_a_chisel_gateway_gets_the_reverse_remotes_split() -> None:
    plans = [reverse_plan(REMOTES, i, 3, gateway_shares=False) for i in range(3)]
    assert [len(p) for p in plans] == [2, 1, 1]
    assert sorted(names(plans[0] + plans[1] + plans[2])) == sorted(
        str(r) for r in REMOTES if r.reverse
    )


def test_forward_tcp_is_every_workers_and_forward_udp_has_one_owner() -> None:
    first, second = forward_plan(REMOTES, 0, 2), forward_plan(REMOTES, 1, 2)
    assert "3000=>22" in names(first) and "3000=>22" in names(second)
    udp_first = [r.local_port for r in first if r.local_port in (3001, 3002)]
    udp_second = [r.local_port for r in second if r.local_port in (3001, 3002)]
    assert sorted(udp_first + udp_second) == [3001, 3002]
    assert udp_first and udp_second, "two UDP remotes go to two different workers"


def test_one_worker_serves_everything() -> None:
    assert set(forward_plan(REMOTES, 0, 1)) | set(reverse_plan(REMOTES, 0, 1, False)) == set(
        REMOTES
    )


remote_lists = st.lists(
    st.tuples(
        st.booleans(), st.integers(min_value=1, max_value=65535), st.sampled_from(["", "/udp"])
    ),
    max_size=12,
    unique_by=lambda t: (t[1], t[2], t[0]),
).map(
    lambda items: [
        parse_remote(f"{'R:' if reverse else ''}{port}:127.0.0.1:{port}{proto}")
        for reverse, port, proto in items
    ]
)


@given(remote_lists, st.integers(min_value=1, max_value=6), st.booleans())
def test_every_remote_is_served_and_lone_ones_exactly_once(
    remotes: list[Remote], count: int, shares: bool
) -> None:
    plans = [
        forward_plan(remotes, i, count) + reverse_plan(remotes, i, count, shares)
        for i in range(count)
    ]
    for remote in remotes:
        holders = sum(remote in plan for plan in plans)
        everyone = remote.local_proto.value == "tcp" and (not remote.reverse or shares)
        assert holders == (count if everyone else 1), (remote, holders)


def test_share_key_binds_user_group_and_remote() -> None:
    remote, other = REMOTES[0], REMOTES[1]
    key = share_key("alice", "g" * 43, remote)
    assert key == share_key("alice", "g" * 43, remote)
    assert key != share_key("bob", "g" * 43, remote)
    assert key != share_key("alice", "h" * 43, remote)
    assert key != share_key("alice", "g" * 43, other)
    assert "g" * 43 not in key, "the secret itself is not kept"


def test_claims_share_only_with_the_same_key() -> None:
    claims = PortClaims()
    assert claims.claim(9001, "k", owner=1)
    assert claims.claim(9001, "k", owner=2)
    assert not claims.claim(9001, "other", owner=3)
    assert not claims.claim(9001, None, owner=4), "an exclusive claim cannot join"
    assert claims.holders(9001) == 2
    claims.release(9001, 1)
    assert not claims.claim(9001, "other", owner=3), "still held by owner 2"
    claims.release(9001, 2)
    assert claims.holders(9001) == 0
    assert claims.claim(9001, "other", owner=3), "free again"


def test_an_exclusive_claim_is_never_shared() -> None:
    claims = PortClaims()
    assert claims.claim(9001, None, owner=1)
    assert not claims.claim(9001, None, owner=2)
    assert not claims.claim(9001, "k", owner=2)


def test_release_owners_drops_a_dead_workers_claims() -> None:
    claims = PortClaims()
    claims.claim(9001, "k", owner=(0, 1))
    claims.claim(9001, "k", owner=(1, 1))
    claims.claim(9002, None, owner=(1, 2))
    claims.release_owners(lambda owner: isinstance(owner, tuple) and owner[0] == 1)
    assert claims.holders(9001) == 1
    assert claims.holders(9002) == 0
    assert claims.claim(9002, None, owner=(0, 3))


def test_client_identity_is_user_and_token() -> None:
    alice = client_identity("alice", None)
    assert alice == client_identity("alice", None)
    assert alice != client_identity("bob", None)
    assert client_identity("", b"a" * 32) != client_identity("", b"b" * 32)
    assert "alice" not in alice


def test_claims_remember_who_holds_a_port() -> None:
    claims = PortClaims()
    assert claims.claim(9001, None, owner=1, identity="alice")
    assert not claims.claim(9001, None, owner=2, identity="bob")
    assert claims.identity(9001) == "alice"
    claims.release(9001, 1)
    assert claims.identity(9001) is None
