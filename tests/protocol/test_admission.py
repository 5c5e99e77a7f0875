"""Pre-login caps: per source refused, in total the oldest evicted (no sockets)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cc.protocol.admission import Admission, AdmissionPolicy, Refusal

__all__: list[str] = []


def test_per_source_cap_refuses_the_excess_only_from_that_source() -> None:
    adm = Admission(AdmissionPolicy(total=100, per_source=3))
    assert [adm.admit(i, "attacker").refused for i in range(5)] == [
        None,
        None,
        None,
        Refusal.PER_SOURCE,
        Refusal.PER_SOURCE,
    ]
    assert adm.admit("legit", "connector").refused is None
    adm.release(0)
    assert adm.admit(99, "attacker").refused is None, "a released slot is reusable"
    assert adm.refused[Refusal.PER_SOURCE] == 2


def test_when_full_the_oldest_is_evicted_for_the_newcomer() -> None:
    adm = Admission(AdmissionPolicy(total=4, per_source=0))
    for i in range(4):
        assert adm.admit(i, f"s{i}").evict == ()
    decision = adm.admit("legit", "connector")
    assert decision.refused is None
    assert decision.evict == (0,)
    assert len(adm) == 4 and adm.from_source("s0") == 0
    assert adm.admit("next", "x").evict == (1,)
    assert adm.evicted == 2


def test_release_is_idempotent_and_forgets_empty_sources() -> None:
    adm = Admission(AdmissionPolicy(total=10, per_source=2))
    adm.admit("a", "s")
    adm.release("a")
    adm.release("a")
    adm.release("never")
    assert len(adm) == 0 and adm.from_source("s") == 0


@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 30), st.sampled_from(["a", "b", "c", "d"])),
        max_size=300,
    )
)
def test_caps_always_hold(ops: list[tuple[bool, int, str]]) -> None:
    policy = AdmissionPolicy(total=8, per_source=3)
    adm = Admission(policy)
    live: dict[int, str] = {}
    for is_admit, key, source in ops:
        if is_admit and key not in live:
            decision = adm.admit(key, source)
            for evicted in decision.evict:
                live.pop(evicted)  # type: ignore[call-overload]
            if decision.refused is None:
                live[key] = source
        elif not is_admit:
            adm.release(key)
            live.pop(key, None)
        assert len(adm) == len(live) <= policy.total
        for src in "abcd":
            count = sum(1 for s in live.values() if s == src)
            assert adm.from_source(src) == count <= policy.per_source
