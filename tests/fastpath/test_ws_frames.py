"""cc.fastpath: both twins against RFC 6455 vectors, a naive reference and each other."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cc import _fastpath_py, fastpath

try:
    from cc import _fastpath as _compiled
except ImportError:  # not built: the Cython-only tests skip
    _compiled = None

__all__: list[str] = []

needs_both = pytest.mark.skipif(
    "cython" not in fastpath.implementations(), reason="cc._fastpath is not built (or disabled)"
)

masks = st.binary(min_size=4, max_size=4)


def naive_mask(data: bytes, mask: bytes) -> bytes:
    """The RFC 6455 section 5.3 definition, byte by byte."""
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def naive_header(opcode: int, length: int, mask: bytes | None, fin: bool = True) -> bytes:
    """RFC 6455 section 5.2 header with the minimal length encoding, written out by hand."""
    first = bytes([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask is not None else 0
    if length <= 125:
        rest = bytes([bit | length])
    elif length <= 0xFFFF:
        rest = bytes([bit | 126]) + length.to_bytes(2, "big")
    else:
        rest = bytes([bit | 127]) + length.to_bytes(8, "big")
    return first + rest + (mask or b"")


# --- the selector ---------------------------------------------------------------------


def test_selector_exports_the_named_implementation() -> None:
    impls = fastpath.implementations()
    assert impls["python"] is _fastpath_py
    assert fastpath.IMPLEMENTATION in impls
    chosen = impls[fastpath.IMPLEMENTATION]
    for name in ("apply_mask", "apply_mask_inplace", "parse_header", "encode_header"):
        assert getattr(fastpath, name) is getattr(chosen, name)
    assert fastpath.encode_frame is chosen.encode_frame


@pytest.mark.skipif(_compiled is None, reason="cc._fastpath is not built")
@pytest.mark.skipif(bool(os.environ.get("CC_NO_EXTENSIONS")), reason="CC_NO_EXTENSIONS is set")
def test_compiled_module_is_the_one_exported() -> None:
    assert fastpath.IMPLEMENTATION == "cython"
    assert fastpath.apply_mask is _compiled.apply_mask
    assert fastpath.parse_header is _compiled.parse_header
    assert fastpath.encode_frame is _compiled.encode_frame
    assert fastpath.implementations()["cython"] is _compiled


@pytest.mark.skipif(
    not os.environ.get("CC_REQUIRE_EXTENSIONS"),
    reason="CC_REQUIRE_EXTENSIONS is not set: running without the compiled extension is allowed",
)
@pytest.mark.skipif(bool(os.environ.get("CC_NO_EXTENSIONS")), reason="CC_NO_EXTENSIONS is set")
def test_required_extension_is_the_one_running() -> None:
    """CI installs with CC_REQUIRE_EXTENSIONS=1: a build that fell back to the twin fails here."""
    assert fastpath.IMPLEMENTATION == "cython"
    assert "cython" in fastpath.implementations()


def test_no_extensions_env_selects_the_twin() -> None:
    code = "import cc.fastpath as f; print(f.IMPLEMENTATION, sorted(f.implementations()))"
    env = {**os.environ, "CC_NO_EXTENSIONS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["python", "['python']"]


def test_no_extensions_env_reaches_the_data_path() -> None:
    """With CC_NO_EXTENSIONS=1 each selected callable and the SSH cipher contexts are the twin's."""
    code = (
        "import cc.fastpath as f, cc.ssh.ciphers as c\n"
        "own = ('implementations', 'describe')\n"
        "names = [n for n in f.__all__ if callable(getattr(f, n)) and n not in own]\n"
        "print(sorted({getattr(f, n).__module__ for n in names}))\n"
        "gcm = c.FastGCMEncryption.new('aes128-gcm', bytes(16), bytes(12))\n"
        "chacha = c.FastChachaEncryption.new('chacha20-poly1305', bytes(64), b'')\n"
        "print(type(gcm.cipher).__module__)\n"
        "print(type(chacha.fast).__module__)\n"
    )
    env = {**os.environ, "CC_NO_EXTENSIONS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.splitlines() == ["['cc._fastpath_py']", "cc._fastpath_py", "cc._fastpath_py"]


def _stub_names() -> tuple[list[str], set[str]]:
    """``__all__`` of cc/_fastpath.pyi and the names it defines at top level."""
    tree = ast.parse((Path(_fastpath_py.__file__).parent / "_fastpath.pyi").read_text())
    exported: list[str] = []
    defined: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            defined.add(node.target.id)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id == "__all__":
                    exported = list(ast.literal_eval(node.value))
                elif isinstance(target, ast.Name):
                    defined.add(target.id)
    return exported, defined


def test_twins_stub_and_selector_export_the_same_names() -> None:
    """The compiled module, the twin, the .pyi stub and cc.fastpath agree on the API."""
    names = sorted(_fastpath_py.__all__)
    if _compiled is not None:
        assert sorted(_compiled.__all__) == names
    stub_all, stub_defined = _stub_names()
    assert sorted(stub_all) == names
    assert sorted(stub_defined & set(names)) == names, "listed in the stub, never declared"
    selector_own = [
        "FALLBACK_REASON",
        "IMPLEMENTATION",
        "NO_EXTENSIONS",
        "REQUIRE_EXTENSIONS",
        "describe",
        "implementations",
    ]
    assert sorted(fastpath.__all__) == sorted(names + selector_own)
    for name in fastpath.__all__:
        assert hasattr(fastpath, name), name


def test_twins_export_the_same_constants() -> None:
    for impl in fastpath.implementations().values():
        assert (impl.FIN, impl.RSV1, impl.RSV2, impl.RSV3, impl.RSV_MASK) == (
            0x80,
            0x40,
            0x20,
            0x10,
            0x70,
        )
        assert impl.MAX_HEADER_SIZE == 14


# --- masking --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [*range(34), 63, 64, 65, 1000, 32 * 1024 + 3])
def test_apply_mask_matches_naive_xor(fastpath_impl: ModuleType, size: int) -> None:
    data = os.urandom(size)
    mask = os.urandom(4)
    out = fastpath_impl.apply_mask(data, mask)
    assert type(out) is bytes
    assert out == naive_mask(data, mask)
    assert fastpath_impl.apply_mask(out, mask) == data  # its own inverse


@pytest.mark.parametrize("shift", range(8))
def test_apply_mask_unaligned_views(fastpath_impl: ModuleType, shift: int) -> None:
    backing = bytearray(os.urandom(100))
    mask = b"\x01\x80\xfe\x7f"
    view = memoryview(backing)[shift : shift + 61]
    assert fastpath_impl.apply_mask(view, mask) == naive_mask(bytes(view), mask)
    assert fastpath_impl.apply_mask(bytes(view), bytearray(mask)) == naive_mask(bytes(view), mask)


def test_apply_mask_leaves_input_alone(fastpath_impl: ModuleType) -> None:
    data = bytearray(b"abcdefghij")
    fastpath_impl.apply_mask(data, b"\xff\xff\xff\xff")
    assert data == b"abcdefghij"


@pytest.mark.parametrize("mask", [b"", b"abc", b"abcde"])
def test_apply_mask_needs_four_byte_mask(fastpath_impl: ModuleType, mask: bytes) -> None:
    with pytest.raises(ValueError):
        fastpath_impl.apply_mask(b"data", mask)
    with pytest.raises(ValueError):
        fastpath_impl.apply_mask_inplace(bytearray(b"data"), mask)


@pytest.mark.parametrize(
    ("start", "end"), [(0, None), (0, 37), (1, 37), (5, 5), (3, 20), (9, None)]
)
def test_apply_mask_inplace_range(fastpath_impl: ModuleType, start: int, end: int | None) -> None:
    data = os.urandom(37)
    mask = os.urandom(4)
    buf = bytearray(data)
    fastpath_impl.apply_mask_inplace(buf, mask, start, end)
    stop = len(data) if end is None else end
    expected = data[:start] + naive_mask(data[start:stop], mask) + data[stop:]
    assert buf == expected


def test_apply_mask_inplace_on_memoryview(fastpath_impl: ModuleType) -> None:
    data = os.urandom(50)
    buf = bytearray(data)
    fastpath_impl.apply_mask_inplace(memoryview(buf)[7:40], b"wxyz")
    assert buf == data[:7] + naive_mask(data[7:40], b"wxyz") + data[40:]


@pytest.mark.parametrize(("start", "end"), [(-1, None), (0, 11), (6, 5), (11, None), (0, -1)])
def test_apply_mask_inplace_rejects_bad_ranges(
    fastpath_impl: ModuleType, start: int, end: int | None
) -> None:
    buf = bytearray(10)
    with pytest.raises(ValueError):
        fastpath_impl.apply_mask_inplace(buf, b"abcd", start, end)
    assert buf == bytearray(10)


def test_apply_mask_inplace_needs_writable(fastpath_impl: ModuleType) -> None:
    with pytest.raises(BufferError):
        fastpath_impl.apply_mask_inplace(b"immutable", b"abcd")
    with pytest.raises(BufferError):
        fastpath_impl.apply_mask_inplace(memoryview(bytearray(8)).toreadonly(), b"abcd")
    with pytest.raises(TypeError):
        fastpath_impl.apply_mask_inplace([1, 2, 3], b"abcd")


# --- RFC 6455 section 5.7 examples ----------------------------------------------------

HELLO_UNMASKED = bytes.fromhex("810548656c6c6f")
HELLO_MASKED = bytes.fromhex("818537fa213d7f9f4d5158")
FRAGMENT_1 = bytes.fromhex("010348656c")
FRAGMENT_2 = bytes.fromhex("80026c6f")
PING_HELLO = bytes.fromhex("890548656c6c6f")
PONG_HELLO_MASKED = bytes.fromhex("8a8537fa213d7f9f4d5158")
RFC_MASK = bytes.fromhex("37fa213d")


def test_rfc_single_unmasked_text(fastpath_impl: ModuleType) -> None:
    assert fastpath_impl.parse_header(HELLO_UNMASKED, 0) == (0x80, 1, False, None, 5, 2)
    assert fastpath_impl.encode_frame(1, b"Hello", None) == HELLO_UNMASKED


def test_rfc_single_masked_text(fastpath_impl: ModuleType) -> None:
    assert fastpath_impl.parse_header(HELLO_MASKED, 0) == (0x80, 1, True, RFC_MASK, 5, 6)
    assert fastpath_impl.apply_mask(HELLO_MASKED[6:], RFC_MASK) == b"Hello"
    assert fastpath_impl.encode_frame(1, b"Hello", RFC_MASK) == HELLO_MASKED


def test_rfc_fragmented_text(fastpath_impl: ModuleType) -> None:
    assert fastpath_impl.parse_header(FRAGMENT_1, 0) == (0x00, 1, False, None, 3, 2)
    assert fastpath_impl.parse_header(FRAGMENT_2, 0) == (0x80, 0, False, None, 2, 2)
    assert fastpath_impl.encode_frame(1, b"Hel", None, fin=False) == FRAGMENT_1
    assert fastpath_impl.encode_frame(0, b"lo", None) == FRAGMENT_2


def test_rfc_ping_and_masked_pong(fastpath_impl: ModuleType) -> None:
    assert fastpath_impl.parse_header(PING_HELLO, 0) == (0x80, 9, False, None, 5, 2)
    assert fastpath_impl.encode_frame(9, b"Hello", None) == PING_HELLO
    assert fastpath_impl.encode_frame(10, b"Hello", RFC_MASK) == PONG_HELLO_MASKED


def test_rfc_256_bytes_binary(fastpath_impl: ModuleType) -> None:
    payload = bytes(range(256))
    frame = fastpath_impl.encode_frame(2, payload, None)
    assert frame[:4] == bytes.fromhex("827e0100")
    assert frame[4:] == payload
    assert fastpath_impl.parse_header(frame, 0) == (0x80, 2, False, None, 256, 4)


def test_rfc_64k_binary(fastpath_impl: ModuleType) -> None:
    payload = os.urandom(65536)
    frame = fastpath_impl.encode_frame(2, payload, None)
    assert frame[:10] == bytes.fromhex("827f0000000000010000")
    assert frame[10:] == payload
    assert fastpath_impl.parse_header(frame, 0) == (0x80, 2, False, None, 65536, 10)


# --- header encodings -----------------------------------------------------------------

LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 2**32, 2**63 - 1]


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("mask", [None, b"\x00\xff\x10\x01"])
def test_header_length_encodings(
    fastpath_impl: ModuleType, length: int, mask: bytes | None
) -> None:
    if length > sys.maxsize:
        pytest.skip("needs a 64-bit Py_ssize_t")
    header = fastpath_impl.encode_header(2, length, mask)
    assert header == naive_header(2, length, mask)
    parsed = fastpath_impl.parse_header(header, 0)
    assert parsed == (0x80, 2, mask is not None, mask, length, len(header))
    # Every strict prefix of a header is "incomplete", never an error.
    for cut in range(len(header)):
        assert fastpath_impl.parse_header(header[:cut], 0) is None


def test_parse_header_at_offset(fastpath_impl: ModuleType) -> None:
    stream = b"junk" + fastpath_impl.encode_frame(9, b"ping", b"abcd") + b"tail"
    assert fastpath_impl.parse_header(stream, 4) == (0x80, 9, True, b"abcd", 4, 6)
    assert fastpath_impl.parse_header(bytearray(stream), 4) == (0x80, 9, True, b"abcd", 4, 6)
    assert fastpath_impl.parse_header(memoryview(stream), 4) == (0x80, 9, True, b"abcd", 4, 6)
    assert fastpath_impl.parse_header(stream, len(stream)) is None
    assert fastpath_impl.parse_header(stream, len(stream) - 1) is None


@pytest.mark.parametrize("offset", [-1, 5])
def test_parse_header_offset_out_of_range(fastpath_impl: ModuleType, offset: int) -> None:
    with pytest.raises(ValueError):
        fastpath_impl.parse_header(b"\x82\x00\x00\x00", offset)


def test_parse_header_reports_flags_and_reserved_opcodes(fastpath_impl: ModuleType) -> None:
    # Policy belongs to the caller: RSV bits and reserved opcodes are reported, not refused.
    assert fastpath_impl.parse_header(b"\x7f\x00", 0) == (0x70, 0x0F, False, None, 0, 2)


def test_parse_header_rejects_64bit_length_with_top_bit(fastpath_impl: ModuleType) -> None:
    header = b"\x82\x7f" + (2**63).to_bytes(8, "big")
    with pytest.raises(ValueError, match="most significant bit"):
        fastpath_impl.parse_header(header, 0)


@pytest.mark.parametrize(
    ("opcode", "length", "mask", "error"),
    [
        (16, 0, None, ValueError),
        (-1, 0, None, ValueError),
        (2, -1, None, ValueError),
        (2, 0, b"abc", ValueError),
        (2, 2**64, None, OverflowError),
        ("2", 0, None, TypeError),
    ],
)
def test_encode_header_rejects(
    fastpath_impl: ModuleType, opcode: object, length: object, mask: bytes | None, error: type
) -> None:
    with pytest.raises(error):
        fastpath_impl.encode_header(opcode, length, mask)


def test_encode_frame_rejects(fastpath_impl: ModuleType) -> None:
    with pytest.raises(ValueError):
        fastpath_impl.encode_frame(16, b"", None)
    with pytest.raises(ValueError):
        fastpath_impl.encode_frame(2, b"", b"12345")
    with pytest.raises(TypeError):
        fastpath_impl.encode_frame(2, "text", None)


def test_encode_frame_single_copy_shapes(fastpath_impl: ModuleType) -> None:
    payload = bytearray(os.urandom(40000))
    frame = fastpath_impl.encode_frame(2, memoryview(payload)[100:], b"kkkk", fin=False)
    assert type(frame) is bytes
    assert frame[:8] == naive_header(2, 39900, b"kkkk", fin=False)
    assert frame[8:] == naive_mask(bytes(payload[100:]), b"kkkk")


# --- properties -----------------------------------------------------------------------


@given(
    opcode=st.integers(0, 15),
    payload=st.binary(max_size=70000),
    mask=st.none() | masks,
    fin=st.booleans(),
)
@settings(max_examples=150, deadline=None)
def test_encode_parse_round_trip(
    fastpath_impl: ModuleType, opcode: int, payload: bytes, mask: bytes | None, fin: bool
) -> None:
    frame = fastpath_impl.encode_frame(opcode, payload, mask, fin)
    flags, op, masked, key, length, hlen = fastpath_impl.parse_header(frame, 0)
    assert (flags, op, masked, key, length) == (
        0x80 if fin else 0,
        opcode,
        mask is not None,
        mask,
        len(payload),
    )
    assert hlen + length == len(frame)
    body = frame[hlen:]
    assert (fastpath_impl.apply_mask(body, key) if key else body) == payload
    assert frame[:hlen] == fastpath_impl.encode_header(opcode, len(payload), mask, fin)


@given(data=st.binary(max_size=300), mask=masks, start=st.integers(0, 300))
def test_inplace_equals_copy(
    fastpath_impl: ModuleType, data: bytes, mask: bytes, start: int
) -> None:
    start = min(start, len(data))
    buf = bytearray(data)
    fastpath_impl.apply_mask_inplace(buf, mask, start)
    assert buf == data[:start] + fastpath_impl.apply_mask(data[start:], mask)


def _outcome(func: object, *args: object) -> object:
    """Result or exception type, so the twins can be compared on bad input too."""
    try:
        return func(*args)  # type: ignore[operator]
    except Exception as exc:
        return type(exc)


@needs_both
@given(data=st.binary(max_size=2000), mask=st.binary(min_size=3, max_size=5))
def test_twins_agree_on_apply_mask(data: bytes, mask: bytes) -> None:
    assert _outcome(_compiled.apply_mask, data, mask) == _outcome(
        _fastpath_py.apply_mask, data, mask
    )


@needs_both
@given(
    data=st.binary(max_size=40),
    mask=masks,
    start=st.integers(-2, 42),
    end=st.none() | st.integers(-2, 42),
)
def test_twins_agree_on_apply_mask_inplace(
    data: bytes, mask: bytes, start: int, end: int | None
) -> None:
    a, b = bytearray(data), bytearray(data)
    ra = _outcome(_compiled.apply_mask_inplace, a, mask, start, end)
    rb = _outcome(_fastpath_py.apply_mask_inplace, b, mask, start, end)
    assert (ra, a) == (rb, b)


@needs_both
@given(data=st.binary(max_size=24), offset=st.integers(-1, 25))
def test_twins_agree_on_parse_header(data: bytes, offset: int) -> None:
    assert _outcome(_compiled.parse_header, data, offset) == _outcome(
        _fastpath_py.parse_header, data, offset
    )


@needs_both
@given(
    data=st.builds(
        lambda head, tail: head + tail,
        st.sampled_from([b"\x82\x7e", b"\x82\x7f", b"\x02\xfe", b"\x8a\xff", b"\x81\x80"]),
        st.binary(max_size=14),
    ),
)
def test_twins_agree_on_extended_headers(data: bytes) -> None:
    assert _outcome(_compiled.parse_header, data, 0) == _outcome(_fastpath_py.parse_header, data, 0)


@needs_both
@given(
    opcode=st.integers(-1, 16),
    payload=st.binary(max_size=3000),
    mask=st.none() | st.binary(min_size=3, max_size=5),
    fin=st.booleans(),
)
def test_twins_agree_on_encode(opcode: int, payload: bytes, mask: bytes | None, fin: bool) -> None:
    assert _outcome(_compiled.encode_frame, opcode, payload, mask, fin) == _outcome(
        _fastpath_py.encode_frame, opcode, payload, mask, fin
    )
    assert _outcome(_compiled.encode_header, opcode, len(payload), mask, fin) == _outcome(
        _fastpath_py.encode_header, opcode, len(payload), mask, fin
    )
