"""Send packets with one AEAD context and as few copies as possible.

Once keys are in place and no rekey is due, a packet is sealed here in one step
(``ciphers``); everything else (key exchange, deferral, rekey triggers, other
ciphers) is asyncssh's own ``send_packet``.  The fast branch repeats, for the state
it accepts, what asyncssh 2.24.1 ``SSHConnection.send_packet`` does after its
deferral checks: sequence number, rekey byte count, ``_send``.
"""

from __future__ import annotations

import time
from typing import Any

from asyncssh import MSG_IGNORE, MSG_USERAUTH_LAST

from cc.ssh.ciphers import FAST_ENCRYPTIONS

__all__ = ["FastSendMixin", "fast_sealer", "sealed_count"]

#: The empty MSG_IGNORE asyncssh sends before every packet once encrypting.
_EMPTY_IGNORE = (b"\x00\x00\x00\x00",)
_TYPE_BYTES = tuple(bytes([i]) for i in range(256))

#: Packets sealed by the fast branch in this process (see ``cc.ssh.fast_path_counts``).
_sealed = 0


def sealed_count() -> int:
    """Packets the fast send path sealed so far in this process."""
    return _sealed


def fast_sealer(conn: Any) -> Any:
    """The send encryption if the fast path may seal the next packet now, else None.

    Not before authentication, during or when due for a key exchange, with
    compression, another cipher or no transport: asyncssh's own path handles those.
    """
    enc = conn._send_encryption
    if (
        type(enc) in FAST_ENCRYPTIONS
        and conn._auth_complete
        and conn._kex_complete
        and not conn._kexinit_sent
        and conn._compressor is None
        and conn._rekey_bytes_sent < conn._rekey_bytes
        and not (conn._rekey_seconds and time.monotonic() >= conn._rekey_time)
        and conn._transport is not None
    ):
        return enc
    return None


class FastSendMixin:
    """``send_packet`` that seals whole packets itself when it safely can.

    The empty MSG_IGNORE asyncssh sends before every packet is dropped: it is a
    countermeasure against CBC-mode attacks, and we negotiate only AEAD and CTR
    ciphers, while it doubles the packets on the wire (one empty packet, sealed and
    opened, per data packet).
    """

    def send_packet(self, pkttype: int, *args: bytes, handler: Any = None) -> None:
        global _sealed
        conn: Any = self
        if pkttype == MSG_IGNORE and args == _EMPTY_IGNORE:
            return
        enc = fast_sealer(conn) if pkttype > MSG_USERAUTH_LAST else None
        if enc is not None:
            body = args[0] if len(args) == 1 else b"".join(args)
            packet = enc.seal(body, _TYPE_BYTES[pkttype], conn._send_seq)
            conn._cc_write(packet)  # cc.ssh.coalesce
            conn._send_seq = (conn._send_seq + 1) & 0xFFFFFFFF
            conn._rekey_bytes_sent += len(packet) - 20
            _sealed += 1
            return
        super().send_packet(pkttype, *args, handler=handler)  # type: ignore[misc]
