"""Host keys as chisel v1.11.5 makes, stores and fingerprints them (share/ccrypto).

Users move keys and fingerprints between chisel and us, so every format here is
chisel's: the deterministic key from ``--key SEED``, the ``EC PRIVATE KEY`` PEM, the
inline ``ck-`` key that ``chisel server --keygen`` writes (its help calls the file
"PEM-encoded", but ``GenerateKeyFile`` writes the ``ck-`` string), and the SHA-256
fingerprint clients pin.

Deliberate differences: chisel loads any key ``ssh.ParsePrivateKey`` takes (RSA,
Ed25519, ...), we accept only ECDSA P-256 because the protocol's host key algorithm is
``ecdsa-sha2-nistp256``; chisel accepts a legacy MD5 fingerprint that is merely a
prefix of the real one (``strings.HasPrefix(got, expect)``), we require all 16 bytes.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
import struct
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .errors import KeyLoadError

__all__ = [
    "CHISEL_KEY_PREFIX",
    "DETERM_RAND_ITERATIONS",
    "SSH_KEY_TYPE",
    "FingerprintCheck",
    "encode_inline",
    "encode_pem",
    "fingerprint_format_error",
    "fingerprint_matches",
    "fingerprint_md5",
    "fingerprint_sha256",
    "generate_private_key",
    "load_key",
    "private_key_pem_for_asyncssh",
    "public_key_wire",
    "seed_private_key",
]

#: Prefix of chisel's inline key: ``ck-`` + unpadded base64 of the SEC1 DER key.
CHISEL_KEY_PREFIX = "ck-"
#: Rounds of SHA-512 that chisel's NewDetermRand runs to strengthen the seed.
DETERM_RAND_ITERATIONS = 2048
#: The only host key algorithm chisel peers use.
SSH_KEY_TYPE = b"ecdsa-sha2-nistp256"

_MAX_KEY_FILE_SIZE = 64 * 1024
_MD5_RE = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){15}", re.ASCII | re.IGNORECASE)
# Order of the P-256 group (FIPS 186-4, D.1.2.3).
_P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class FingerprintCheck(enum.Enum):
    """Outcome of comparing a pinned fingerprint with the server's host key."""

    MATCH = enum.auto()
    #: Matched an old ``aa:bb:..`` MD5 fingerprint: accept, but warn the user to pin SHA-256.
    MATCH_LEGACY_MD5 = enum.auto()
    MISMATCH = enum.auto()


def _determ_rand(seed: bytes, size: int) -> bytes:
    """chisel's NewDetermRand stream: ``h = sha512(next)``, emit ``h[32:]``, ``next = h[:32]``."""
    state = seed
    for _ in range(DETERM_RAND_ITERATIONS):
        state = hashlib.sha512(state).digest()[:32]
    out = bytearray()
    while len(out) < size:
        digest = hashlib.sha512(state).digest()
        out += digest[32:]
        state = digest[:32]
    return bytes(out[:size])


def seed_private_key(seed: str | bytes) -> ec.EllipticCurvePrivateKey:
    """Derive the P-256 key chisel derives from ``--key SEED``, so fingerprints agree.

    Like Go's GenerateKey of 1.19 (copied into chisel as GenerateKeyGo119): read
    ``256/8 + 8 = 40`` bytes, ``d = k mod (n - 1) + 1``.  A str seed is encoded as the
    UTF-8 bytes Go would see in argv (undecodable argv bytes survive via surrogateescape).
    chisel makes a random key for an empty seed; here that is a ValueError so a missing
    seed is never mistaken for a deterministic one.
    """
    raw = seed.encode("utf-8", "surrogateescape") if isinstance(seed, str) else bytes(seed)
    if not raw:
        raise ValueError("empty seed: use generate_private_key() for a random key")
    k = int.from_bytes(_determ_rand(raw, 256 // 8 + 8), "big")
    d = k % (_P256_N - 1) + 1
    return ec.derive_private_key(d, ec.SECP256R1())


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    """A fresh random P-256 host key (chisel's behaviour without a seed or key file)."""
    return ec.generate_private_key(ec.SECP256R1())


def public_key_wire(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    """The SSH wire encoding (RFC 5656) of the public key: what fingerprints hash."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    _require_p256(public.curve)
    point = public.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b"".join(
        struct.pack(">I", len(part)) + part for part in (SSH_KEY_TYPE, b"nistp256", point)
    )


def fingerprint_sha256(public_wire: bytes) -> str:
    """chisel's FingerprintKey: std base64, with padding, of SHA-256 of the wire key."""
    return base64.b64encode(hashlib.sha256(public_wire).digest()).decode("ascii")


def fingerprint_md5(public_wire: bytes) -> str:
    """The legacy ``aa:bb:..`` MD5 fingerprint older chisel versions printed."""
    digest = hashlib.md5(public_wire, usedforsecurity=False).digest()
    return ":".join(f"{b:02x}" for b in digest)


_SHA256_FORM = 'the base64 SHA256 form the gateway logs at start (44 characters ending in "=")'


def fingerprint_format_error(text: str) -> str | None:
    """Why ``text`` cannot be a pinned fingerprint (None: it can), said before dialing.

    A typo would otherwise show up only as a mismatch with a server that is fine.
    The value is not secret (the gateway logs it), so the message may quote it.
    """
    if not text or _MD5_RE.fullmatch(text):
        return None
    if text.startswith("SHA256:"):
        return (
            f"--fingerprint {text!r} is OpenSSH's form; give {_SHA256_FORM}: "
            "without 'SHA256:' and with its '=' padding"
        )
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raw = b""
    if len(text) != 44 or len(raw) != 32:
        return f"--fingerprint {text!r} is not a fingerprint: expected {_SHA256_FORM}"
    return None


def fingerprint_matches(expected: str, public_wire: bytes) -> FingerprintCheck:
    """Compare a user-pinned fingerprint with the server's key, as chisel's verifyServer.

    SHA-256 base64 must match exactly (44 characters with ``=``); a full MD5
    fingerprint matches as MATCH_LEGACY_MD5, which the caller must log as deprecated.
    An empty ``expected`` is a MISMATCH: callers skip the check when none was pinned,
    so a bug can never turn verification off.
    """
    if not expected:
        return FingerprintCheck.MISMATCH
    if _MD5_RE.fullmatch(expected):
        got = fingerprint_md5(public_wire)
        if hmac.compare_digest(got.encode(), expected.lower().encode()):
            return FingerprintCheck.MATCH_LEGACY_MD5
        return FingerprintCheck.MISMATCH
    got = fingerprint_sha256(public_wire)
    if hmac.compare_digest(got.encode(), expected.encode("utf-8", "surrogatepass")):
        return FingerprintCheck.MATCH
    return FingerprintCheck.MISMATCH


def _sec1_der(key: ec.EllipticCurvePrivateKey) -> bytes:
    _require_p256(key.curve)
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def encode_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """``-----BEGIN EC PRIVATE KEY-----`` (SEC1), as chisel's privateKey2PEM writes."""
    _require_p256(key.curve)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def encode_inline(key: ec.EllipticCurvePrivateKey) -> str:
    """chisel's ``ck-`` key: the prefix plus unpadded std base64 of the SEC1 DER key."""
    raw = base64.b64encode(_sec1_der(key)).decode("ascii").rstrip("=")
    return CHISEL_KEY_PREFIX + raw


def private_key_pem_for_asyncssh(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM, a form ``asyncssh.import_private_key`` always accepts."""
    _require_p256(key.curve)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _require_p256(curve: ec.EllipticCurve) -> None:
    if not isinstance(curve, ec.SECP256R1):
        raise KeyLoadError(f"not an ECDSA P-256 key (curve {curve.name}); chisel needs P-256")


def _check_loaded(key: object, source: str) -> ec.EllipticCurvePrivateKey:
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        kind = type(key).__name__.lstrip("_").replace("PrivateKey", "") or "unknown"
        raise KeyLoadError(f"{source}: not an ECDSA P-256 key (found {kind})")
    try:
        _require_p256(key.curve)
    except KeyLoadError as exc:
        raise KeyLoadError(f"{source}: {exc}") from None
    return key


def _decode_inline(text: bytes, source: str) -> ec.EllipticCurvePrivateKey:
    # Go's base64 decoder skips CR/LF, so a key file ending in a newline still loads.
    raw = b"".join(text[len(CHISEL_KEY_PREFIX) :].split()).rstrip(b"=")
    try:
        der = base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise KeyLoadError(f"{source}: invalid base64 after 'ck-'") from None
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyLoadError(f"{source}: 'ck-' key does not hold an EC private key") from None
    return _check_loaded(key, source)


def _decode_pem(data: bytes, source: str) -> ec.EllipticCurvePrivateKey:
    try:
        if b"-----BEGIN OPENSSH PRIVATE KEY-----" in data:
            key: object = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyLoadError(f"{source}: encrypted keys are not supported") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyLoadError(f"{source}: invalid PEM private key ({exc})") from None
    return _check_loaded(key, source)


def _read_path(path: str) -> bytes:
    with Path(path).open("rb") as fh:
        return fh.read(_MAX_KEY_FILE_SIZE + 1)


def load_key(
    spec: str, *, read_file: Callable[[str], bytes] = _read_path
) -> ec.EllipticCurvePrivateKey:
    """Load ``--keyfile``: an inline ``ck-...`` key, or a path to a ``ck-`` or PEM file.

    Mirrors chisel's NewServer: a spec starting with ``ck-`` is the key itself,
    anything else is a path whose content may again be ``ck-`` or PEM (SEC1, PKCS#8
    or OpenSSH).  Every failure is a KeyLoadError saying what was wrong.
    """
    if spec.startswith(CHISEL_KEY_PREFIX):
        return _decode_inline(spec.encode("utf-8", "surrogateescape"), "inline key")
    if not spec:
        raise KeyLoadError("empty key file path")
    source = f"key file {spec!r}"
    try:
        data = read_file(spec)
    except FileNotFoundError:
        raise KeyLoadError(f"{source} not found") from None
    except IsADirectoryError:
        raise KeyLoadError(f"{source} is a directory") from None
    except PermissionError:
        raise KeyLoadError(f"{source}: permission denied") from None
    except OSError as exc:
        raise KeyLoadError(f"{source} cannot be read: {exc.strerror or exc}") from None
    if len(data) > _MAX_KEY_FILE_SIZE:
        raise KeyLoadError(f"{source} is larger than {_MAX_KEY_FILE_SIZE} bytes")
    stripped = data.strip()
    if stripped.startswith(CHISEL_KEY_PREFIX.encode()):
        return _decode_inline(stripped, source)
    if b"-----BEGIN " in stripped:
        return _decode_pem(stripped, source)
    raise KeyLoadError(f"{source} holds neither a PEM key nor a 'ck-' key")
