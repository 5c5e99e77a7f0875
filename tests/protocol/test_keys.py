"""Host keys: chisel's seed derivation, fingerprints, PEM and ``ck-`` formats, loading.

The seed vector comes from a real chisel 1.11.5 server; with CHISEL_BIN set, key files
are also exchanged with the real binary in both directions.
"""

from __future__ import annotations

import base64
import hashlib
import os
import select
import struct
import subprocess
import time
from pathlib import Path

import asyncssh
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from cc.protocol.errors import KeyLoadError
from cc.protocol.keys import (
    CHISEL_KEY_PREFIX,
    FingerprintCheck,
    encode_inline,
    encode_pem,
    fingerprint_format_error,
    fingerprint_matches,
    fingerprint_md5,
    fingerprint_sha256,
    generate_private_key,
    load_key,
    private_key_pem_for_asyncssh,
    public_key_wire,
    seed_private_key,
)
from tests.support.vectors import data_lines

SOMESEED_FINGERPRINT = "pdeCjHNkdSw2t8djM+QABRa1g2xXLXBGebxmcfXHAic="
# Printed by the real chisel 1.11.5: `chisel server --keygen - --key someseed`.
SOMESEED_CK = (
    "ck-MHcCAQEEIOapLLmUCQ+Gj0St8YBldkGwNAcv+oebMeDjJCsdt1IvoAoGCCqGSM49AwEHoUQDQgAE4yuP2Ix4"
    "Yw9WMnzu7fBJ6ujG9NzJX4FZBw5BaLR7fYJh/dFg7XOIkZl7YWsRKZSfEBCS4fU7o30CjVjjTnqywg"
)


def _fingerprint_vectors() -> list[tuple[str, str]]:
    rows = []
    for line in data_lines("fingerprints.txt"):
        seed, fingerprint = line.split("\t")
        rows.append((seed, fingerprint))
    assert rows, "fingerprints.txt holds no vectors"
    return rows


def test_seed_keys_match_the_real_chisel_fingerprints() -> None:
    for seed, fingerprint in _fingerprint_vectors():
        assert fingerprint_sha256(public_key_wire(seed_private_key(seed))) == fingerprint


def test_seed_key_inline_form_is_byte_identical_to_chisel_keygen() -> None:
    assert encode_inline(seed_private_key("someseed")) == SOMESEED_CK


def test_seed_derivation_is_deterministic_and_str_equals_utf8_bytes() -> None:
    a = seed_private_key("sëed")
    b = seed_private_key("sëed".encode())
    assert a.private_numbers().private_value == b.private_numbers().private_value
    assert seed_private_key("other").private_numbers() != a.private_numbers()
    assert fingerprint_sha256(public_key_wire(seed_private_key(b"someseed"))) == (
        SOMESEED_FINGERPRINT
    )


def test_seed_derivation_follows_the_documented_stream() -> None:
    # PROTOCOL.md section 2, written out independently of keys.py.
    state = b"someseed"
    for _ in range(2048):
        state = hashlib.sha512(state).digest()[:32]
    stream = b""
    while len(stream) < 40:
        block = hashlib.sha512(state).digest()
        stream, state = stream + block[32:], block[:32]
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256 order
    d = int.from_bytes(stream[:40], "big") % (n - 1) + 1
    assert seed_private_key("someseed").private_numbers().private_value == d


def test_empty_seed_is_refused_instead_of_silently_random() -> None:
    with pytest.raises(ValueError, match="empty seed"):
        seed_private_key("")


def test_generated_keys_are_p256_and_distinct() -> None:
    a, b = generate_private_key(), generate_private_key()
    assert isinstance(a.curve, ec.SECP256R1)
    assert public_key_wire(a) != public_key_wire(b)


def test_public_key_wire_is_rfc5656_and_matches_openssh_encoding() -> None:
    key = seed_private_key("someseed")
    wire = public_key_wire(key)
    fields = []
    rest = wire
    while rest:
        (length,) = struct.unpack(">I", rest[:4])
        fields.append(rest[4 : 4 + length])
        rest = rest[4 + length :]
    assert fields[:2] == [b"ecdsa-sha2-nistp256", b"nistp256"]
    assert len(fields[2]) == 65 and fields[2][0] == 4
    openssh = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    assert base64.b64decode(openssh.split()[1]) == wire
    assert public_key_wire(key.public_key()) == wire


def test_public_key_wire_refuses_other_curves() -> None:
    with pytest.raises(KeyLoadError, match="P-256"):
        public_key_wire(ec.generate_private_key(ec.SECP384R1()))


def test_fingerprint_formats() -> None:
    wire = public_key_wire(seed_private_key("someseed"))
    sha = fingerprint_sha256(wire)
    assert len(sha) == 44 and sha.endswith("=")
    assert base64.b64decode(sha) == hashlib.sha256(wire).digest()
    md5 = fingerprint_md5(wire)
    assert md5 == ":".join(f"{b:02x}" for b in hashlib.md5(wire).digest())
    assert len(md5) == 47


def test_fingerprint_format_is_checked_before_dialing() -> None:
    md5 = fingerprint_md5(public_key_wire(seed_private_key("someseed")))
    for good in (SOMESEED_FINGERPRINT, md5, md5.upper(), ""):
        assert fingerprint_format_error(good) is None, good
    for bad in (
        SOMESEED_FINGERPRINT[:-1],  # no padding
        SOMESEED_FINGERPRINT[1:] + "A",  # 44 characters, not 32 bytes
        SOMESEED_FINGERPRINT[:20],
        md5[:11],
        "not a fingerprint at all!!",
        "\udcff",
    ):
        error = fingerprint_format_error(bad)
        assert error is not None and "44 characters" in error, bad
    openssh = "SHA256:" + SOMESEED_FINGERPRINT.rstrip("=")
    assert "OpenSSH's form" in (fingerprint_format_error(openssh) or "")


def test_fingerprint_matches_outcomes() -> None:
    wire = public_key_wire(seed_private_key("someseed"))
    other = public_key_wire(seed_private_key("other"))
    md5 = fingerprint_md5(wire)
    assert fingerprint_matches(SOMESEED_FINGERPRINT, wire) is FingerprintCheck.MATCH
    assert fingerprint_matches(SOMESEED_FINGERPRINT, other) is FingerprintCheck.MISMATCH
    assert fingerprint_matches(md5, wire) is FingerprintCheck.MATCH_LEGACY_MD5
    assert fingerprint_matches(md5.upper(), wire) is FingerprintCheck.MATCH_LEGACY_MD5
    assert fingerprint_matches(md5, other) is FingerprintCheck.MISMATCH
    # chisel accepts any MD5 prefix (strings.HasPrefix); we require the whole digest.
    assert fingerprint_matches(md5[:11], wire) is FingerprintCheck.MISMATCH
    # chisel requires the padding too: "Fingerprints must be 44 characters".
    assert fingerprint_matches(SOMESEED_FINGERPRINT[:-1], wire) is FingerprintCheck.MISMATCH
    assert fingerprint_matches("", wire) is FingerprintCheck.MISMATCH
    assert fingerprint_matches("\udcff", wire) is FingerprintCheck.MISMATCH


# ---------------------------------------------------------------- encoding / loading


def test_encode_pem_is_sec1_like_chisel() -> None:
    pem = encode_pem(seed_private_key("someseed"))
    assert pem.startswith(b"-----BEGIN EC PRIVATE KEY-----\n")
    assert pem.endswith(b"-----END EC PRIVATE KEY-----\n")
    body = b"".join(pem.splitlines()[1:-1])
    # chisel's ck- key is the same DER, unpadded base64.
    assert base64.b64decode(body) == base64.b64decode(SOMESEED_CK[3:] + "==")


def test_encode_inline_has_prefix_and_no_padding() -> None:
    inline = encode_inline(generate_private_key())
    assert inline.startswith(CHISEL_KEY_PREFIX)
    assert "=" not in inline


@settings(max_examples=20, deadline=None)
@given(st.text(min_size=1, max_size=30))
def test_pem_and_inline_round_trip_through_load_key(seed: str) -> None:
    key = seed_private_key(seed)
    wire = public_key_wire(key)
    files = {"k.pem": encode_pem(key), "k.ck": encode_inline(key).encode() + b"\n"}
    assert public_key_wire(load_key(encode_inline(key))) == wire
    for name in files:
        assert public_key_wire(load_key(name, read_file=files.__getitem__)) == wire


def test_load_key_reads_real_files(tmp_path: Path) -> None:
    key = generate_private_key()
    wire = public_key_wire(key)
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    openssh = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    for name, data in [
        ("sec1", encode_pem(key)),
        ("pkcs8", pkcs8),
        ("openssh", openssh),
        ("ck", encode_inline(key).encode()),
        ("ckcrlf", encode_inline(key).encode() + b"\r\n"),
    ]:
        path = tmp_path / name
        path.write_bytes(data)
        assert public_key_wire(load_key(str(path))) == wire, name


def _raise(exc: BaseException) -> object:
    def reader(path: str) -> bytes:
        raise exc

    return reader


@pytest.mark.parametrize(
    ("spec", "content", "fragment"),
    [
        ("", b"", "empty key file path"),
        ("k", b"hello", "neither a PEM key nor a 'ck-' key"),
        (
            "k",
            b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
            "invalid PEM private key",
        ),
        ("k", b"x" * (64 * 1024 + 1), "larger than"),
        ("ck-!!!!", None, "invalid base64 after 'ck-'"),
        ("ck-" + base64.b64encode(b"garbage").decode(), None, "does not hold an EC"),
        ("k", b"ck-%%%", "invalid base64"),
    ],
)
def test_load_key_rejects_garbage(spec: str, content: bytes | None, fragment: str) -> None:
    with pytest.raises(KeyLoadError, match=fragment):
        load_key(spec, read_file=lambda _path: content or b"")


@pytest.mark.parametrize(
    ("exc", "fragment"),
    [
        (FileNotFoundError(2, "No such file"), "not found"),
        (IsADirectoryError(21, "Is a directory"), "is a directory"),
        (PermissionError(13, "Permission denied"), "permission denied"),
        (OSError(5, "Input/output error"), "cannot be read: Input/output error"),
    ],
)
def test_load_key_reports_unreadable_files(exc: OSError, fragment: str) -> None:
    with pytest.raises(KeyLoadError, match=fragment) as info:
        load_key("some/key.pem", read_file=_raise(exc))  # type: ignore[arg-type]
    assert "some/key.pem" in str(info.value)


def test_load_key_missing_real_file(tmp_path: Path) -> None:
    with pytest.raises(KeyLoadError, match="not found"):
        load_key(str(tmp_path / "absent.pem"))
    with pytest.raises(KeyLoadError, match="is a directory"):
        load_key(str(tmp_path))


@pytest.mark.parametrize(
    ("other", "fragment"),
    [
        (rsa.generate_private_key(public_exponent=65537, key_size=1024), "found RSA"),
        (ed25519.Ed25519PrivateKey.generate(), "found Ed25519"),
        (ec.generate_private_key(ec.SECP384R1()), "secp384r1"),
    ],
)
def test_load_key_refuses_keys_that_are_not_p256(other: object, fragment: str) -> None:
    pem = other.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(KeyLoadError, match=fragment):
        load_key("k", read_file=lambda _path: pem)


def test_load_key_refuses_encrypted_pem() -> None:
    pem = generate_private_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(KeyLoadError, match="encrypted keys are not supported"):
        load_key("k", read_file=lambda _path: pem)


def test_asyncssh_imports_our_pem_with_the_same_public_key() -> None:
    key = seed_private_key("someseed")
    imported = asyncssh.import_private_key(private_key_pem_for_asyncssh(key))
    assert imported.algorithm == b"ecdsa-sha2-nistp256"
    assert imported.public_data == public_key_wire(key)


# ---------------------------------------------------------------- real chisel


def _chisel() -> str:
    chisel = os.environ.get("CHISEL_BIN")
    if not chisel:
        pytest.skip("CHISEL_BIN is not set")
    return chisel


def _chisel_server_fingerprint(chisel: str, keyfile: str) -> str:
    """Start a real server on 127.0.0.1 only long enough to read its fingerprint."""
    proc = subprocess.Popen(
        [chisel, "server", "--host", "127.0.0.1", "--port", "0", "--keyfile", keyfile],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 20
        log = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stderr], [], [], 0.5)
            if ready:
                line = proc.stderr.readline()
                if not line:
                    break
                log += line
                if b"Fingerprint " in line:
                    return line.split(b"Fingerprint ", 1)[1].strip().decode()
        pytest.fail(f"chisel printed no fingerprint: {log!r}")
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.mark.interop
def test_chisel_keygen_files_load_with_the_fingerprint_chisel_prints(tmp_path: Path) -> None:
    chisel = _chisel()
    for name, seed_args in [("seeded", ["--key", "someseed"]), ("random", [])]:
        path = tmp_path / name
        subprocess.run(
            [chisel, "server", "--keygen", str(path), *seed_args],
            check=True,
            timeout=30,
            capture_output=True,
        )
        assert path.read_bytes().startswith(b"ck-")  # not PEM, whatever the help says
        fingerprint = fingerprint_sha256(public_key_wire(load_key(str(path))))
        assert fingerprint == _chisel_server_fingerprint(chisel, str(path))
        if seed_args:
            assert fingerprint == SOMESEED_FINGERPRINT
            assert path.read_text() == SOMESEED_CK


@pytest.mark.interop
def test_chisel_loads_our_key_files(tmp_path: Path) -> None:
    chisel = _chisel()
    key = generate_private_key()
    expected = fingerprint_sha256(public_key_wire(key))
    pem = tmp_path / "ours.pem"
    pem.write_bytes(encode_pem(key))
    assert _chisel_server_fingerprint(chisel, str(pem)) == expected
    assert _chisel_server_fingerprint(chisel, encode_inline(key)) == expected
