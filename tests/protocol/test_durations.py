"""Tests for Go-style durations (cc/protocol/durations.py)."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cc.protocol.durations import (
    DurationError,
    format_duration,
    format_duration_ns,
    parse_duration,
    parse_duration_ns,
)
from cc.protocol.errors import ProtocolError

# Expected values below were printed by Go 1.19.8 (time.Duration.String and
# time.ParseDuration), the toolchain the reference chisel binary was built with.


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (1, "1ns"),
        (999, "999ns"),
        (1_000, "1µs"),
        (733_439, "733.439µs"),
        (1_234_567, "1.234567ms"),
        (100_000_000, "100ms"),
        (1_500_000_000, "1.5s"),
        (25_000_000_000, "25s"),
        (90_000_000_000, "1m30s"),
        (120_000_000_000, "2m0s"),
        (3_600_000_000_000, "1h0m0s"),
        (3_723_004_005_006, "1h2m3.004005006s"),
        (-1_500_000_000, "-1.5s"),
        ((1 << 63) - 1, "2562047h47m16.854775807s"),
        (-(1 << 63), "-2562047h47m16.854775808s"),
    ],
)
def test_format_matches_go(ns: int, text: str) -> None:
    assert format_duration_ns(ns) == text


def test_format_seconds_for_log_lines() -> None:
    assert format_duration(0.000733439) == "733.439µs"
    assert format_duration(0.1) == "100ms"
    assert format_duration(1.5) == "1.5s"
    assert format_duration(120.0) == "2m0s"
    with pytest.raises(ValueError):
        format_duration(math.inf)


@pytest.mark.parametrize("seconds", [1e300, -1.7e308])
def test_format_seconds_whose_nanoseconds_overflow_is_a_value_error(seconds: float) -> None:
    """Found by fuzzing: seconds * 1e9 became inf and round() raised OverflowError."""
    with pytest.raises(ValueError, match="out of range"):
        format_duration(seconds)


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("25s", 25_000_000_000),
        ("2m", 120_000_000_000),
        ("5m", 300_000_000_000),
        ("1h", 3_600_000_000_000),
        ("1m30s", 90_000_000_000),
        ("500ms", 500_000_000),
        ("0s", 0),
        ("0", 0),
        ("+0", 0),
        ("-0", 0),
        ("1.5s", 1_500_000_000),
        (".5s", 500_000_000),
        ("1.s", 1_000_000_000),
        ("1.5h", 5_400_000_000_000),
        ("-.5m", -30_000_000_000),
        ("1µs", 1_000),  # U+00B5
        ("1μs", 1_000),  # U+03BC
        ("1us", 1_000),
        ("7ns", 7),
        ("1h2m3s4ms5us6ns", 3_723_004_005_006),
        ("1.0000000005s", 1_000_000_000),  # truncates below a nanosecond
        ("0.3333333333333333333h", 1_200_000_000_000),  # Go's float rounding, kept
        ("1.9999999999999999999s", 2_000_000_000),
        ("9223372036854775807ns", (1 << 63) - 1),
        ("-9223372036854775808ns", -(1 << 63)),
        ("2562047h47m16.854775807s", (1 << 63) - 1),
    ],
)
def test_parse_matches_go(text: str, ns: int) -> None:
    assert parse_duration_ns(text) == ns
    assert parse_duration(text) == ns / 1e9


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'time: invalid duration ""'),
        ("abc", 'time: invalid duration "abc"'),
        ("-", 'time: invalid duration "-"'),
        ("s", 'time: invalid duration "s"'),
        (".s", 'time: invalid duration ".s"'),
        (" 1s", 'time: invalid duration " 1s"'),
        ("5", 'time: missing unit in duration "5"'),
        ("1..5s", 'time: missing unit in duration "1..5s"'),
        ("1s2", 'time: missing unit in duration "1s2"'),
        ("1x", 'time: unknown unit "x" in duration "1x"'),
        ("1S", 'time: unknown unit "S" in duration "1S"'),
        ("1h-1m", 'time: unknown unit "h-" in duration "1h-1m"'),
        ("1µ", 'time: unknown unit "\\xc2\\xb5" in duration "1\\xc2\\xb5"'),
        ("9223372036854775808ns", 'time: invalid duration "9223372036854775808ns"'),
        ("2562047h48m", 'time: invalid duration "2562047h48m"'),
        ("99999999999999999999.5ms", 'time: invalid duration "99999999999999999999.5ms"'),
    ],
)
def test_parse_errors_match_go(text: str, message: str) -> None:
    with pytest.raises(DurationError) as info:
        parse_duration(text)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, ProtocolError)


@given(st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1))
def test_format_then_parse_round_trips_whole_nanoseconds(ns: int) -> None:
    assert parse_duration_ns(format_duration_ns(ns)) == ns


@given(st.text(max_size=30))
def test_parse_raises_only_duration_error(text: str) -> None:
    try:
        ns = parse_duration_ns(text)
    except DurationError:
        return
    assert -(1 << 63) <= ns <= (1 << 63) - 1


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=10**6), st.sampled_from(["h", "m", "s", "ms"])
        ),
        min_size=1,
        max_size=4,
    )
)
@example(parts=[(562048, "h"), (1000000, "h"), (1000000, "h")])  # overflows int64
def test_parse_sums_components(parts: list[tuple[int, str]]) -> None:
    unit_ns = {"h": 3_600_000_000_000, "m": 60_000_000_000, "s": 1_000_000_000, "ms": 1_000_000}
    text = "".join(f"{n}{unit}" for n, unit in parts)
    total = sum(n * unit_ns[unit] for n, unit in parts)
    if total > (1 << 63) - 1:  # past Go's int64 nanoseconds: an error, as in Go
        with pytest.raises(DurationError):
            parse_duration_ns(text)
    else:
        assert parse_duration_ns(text) == total
