"""Go-style durations (``time.ParseDuration`` / ``Duration.String``), sans-I/O.

Durations follow Go exactly, because the CLI accepts chisel's flags
(``--keepalive 25s``) and our log lines copy chisel's
(``Connected (Latency 733.439µs)``, ``Retrying in 100ms...``).
"""

from __future__ import annotations

import math

from .errors import ProtocolError

__all__ = [
    "DurationError",
    "format_duration",
    "format_duration_ns",
    "parse_duration",
    "parse_duration_ns",
]


class DurationError(ProtocolError, ValueError):
    """A duration string Go's ``time.ParseDuration`` would reject (message as Go's)."""


_NS_PER = {
    b"ns": 1,
    b"us": 1_000,
    "µs".encode(): 1_000,  # U+00B5 micro sign
    "μs".encode(): 1_000,  # U+03BC Greek mu
    b"ms": 1_000_000,
    b"s": 1_000_000_000,
    b"m": 60_000_000_000,
    b"h": 3_600_000_000_000,
}
_MAX_NS = (1 << 63) - 1
_DIGITS = b"0123456789"


def _quote(raw: bytes) -> str:
    """Go's time.quote: printable ASCII as is, anything else as \\xNN."""
    out = ['"']
    for byte in raw:
        if byte < 0x20 or byte >= 0x80:
            out.append(f"\\x{byte:02x}")
        else:
            char = chr(byte)
            out.append("\\" + char if char in '"\\' else char)
    out.append('"')
    return "".join(out)


def _leading_int(s: bytes, i: int) -> tuple[int, int] | None:
    """Go's leadingInt: digits from ``i`` as an int, None on overflow past 1<<63."""
    x = 0
    while i < len(s) and s[i] in _DIGITS:
        if x > (1 << 63) // 10:
            return None
        x = x * 10 + s[i] - 0x30
        if x > 1 << 63:
            return None
        i += 1
    return x, i


def _leading_fraction(s: bytes, i: int) -> tuple[int, float, int]:
    """Go's leadingFraction: digits after the point; stops gaining precision, never fails."""
    x, scale, overflow = 0, 1.0, False
    while i < len(s) and s[i] in _DIGITS:
        if not overflow:
            if x > _MAX_NS // 10:
                overflow = True
            else:
                y = x * 10 + s[i] - 0x30
                if y > 1 << 63:
                    overflow = True
                else:
                    x, scale = y, scale * 10
        i += 1
    return x, scale, i


def parse_duration_ns(text: str) -> int:
    """Parse a Go duration (``1m30s``, ``500ms``, ``-1.5h``, ``0``) into integer nanoseconds.

    A port of Go 1.19's ``time.ParseDuration``, byte for byte (including its
    float rounding of fractions), so flags mean here what they mean to chisel.
    """
    orig = text.encode("utf-8", "surrogatepass")
    s, i = orig, 0
    neg = False
    if s and s[0] in b"+-":
        neg = s[0] == 0x2D
        i = 1
    if s[i:] == b"0":
        return 0
    invalid = DurationError(f"time: invalid duration {_quote(orig)}")
    if i == len(s):
        raise invalid
    total = 0
    while i < len(s):
        if not (s[i] == 0x2E or s[i] in _DIGITS):
            raise invalid
        start = i
        lead = _leading_int(s, i)
        if lead is None:
            raise invalid
        value, i = lead
        pre = i != start
        frac, scale, post = 0, 1.0, False
        if i < len(s) and s[i] == 0x2E:
            i += 1
            frac_start = i
            frac, scale, i = _leading_fraction(s, i)
            post = i != frac_start
        if not pre and not post:
            raise invalid
        unit_start = i
        while i < len(s) and not (s[i] == 0x2E or s[i] in _DIGITS):
            i += 1
        if i == unit_start:
            raise DurationError(f"time: missing unit in duration {_quote(orig)}")
        unit_name = s[unit_start:i]
        unit = _NS_PER.get(unit_name)
        if unit is None:
            raise DurationError(
                f"time: unknown unit {_quote(unit_name)} in duration {_quote(orig)}"
            )
        if value > (1 << 63) // unit:
            raise invalid
        value *= unit
        if frac > 0:
            value += int(float(frac) * (float(unit) / scale))
            if value > 1 << 63:
                raise invalid
        total += value
        if total > 1 << 63:
            raise invalid
    if neg:
        return -total
    if total > _MAX_NS:
        raise invalid
    return total


def parse_duration(text: str) -> float:
    """Parse a Go duration into seconds, the unit our clocks and timeouts use."""
    return parse_duration_ns(text) / 1e9


def _frac(value: int, prec: int) -> tuple[str, int]:
    """Go's fmtFrac: ``prec`` low decimal digits as ``.ddd`` without trailing zeros."""
    digits = ""
    printed = False
    for _ in range(prec):
        digit = value % 10
        printed = printed or digit != 0
        if printed:
            digits = str(digit) + digits
        value //= 10
    return ("." + digits if printed else ""), value


def format_duration_ns(ns: int) -> str:
    """Render nanoseconds as Go's ``Duration.String`` does: ``1h0m0s``, ``1.5s``, ``733.439µs``."""
    neg = ns < 0
    u = -ns if neg else ns
    if u < 1_000_000_000:
        if u == 0:
            return "0s"
        if u < 1_000:
            prec, unit = 0, "ns"
        elif u < 1_000_000:
            prec, unit = 3, "µs"
        else:
            prec, unit = 6, "ms"
        frac, u = _frac(u, prec)
        out = f"{u}{frac}{unit}"
    else:
        frac, u = _frac(u, 9)
        out = f"{u % 60}{frac}s"
        u //= 60
        if u > 0:
            out = f"{u % 60}m{out}"
            u //= 60
            if u > 0:
                out = f"{u}h{out}"
    return "-" + out if neg else out


def format_duration(seconds: float) -> str:
    """Render seconds (rounded to the nanosecond) the way chisel's log lines print them."""
    if not math.isfinite(seconds):
        raise ValueError(f"cannot format non-finite duration {seconds!r}")
    ns = seconds * 1e9
    if not math.isfinite(ns):  # 1e300 s: finite, but its nanoseconds are not
        raise ValueError(f"cannot format duration {seconds!r}: out of range")
    return format_duration_ns(round(ns))
