"""Every private asyncssh touch, in one place.

chisel speaks SSH with a few twists that asyncssh has no public API for:

1. version lines ``SSH-chisel-v3-client`` / ``SSH-chisel-v3-server`` (no ``2.0``),
   which enter the key-exchange hash exactly as sent;
2. the ``chisel`` channel type whose extra data is raw bytes (``host:port``);
3. the ``config`` and ``ping`` global requests with raw payloads, and a
   REQUEST_FAILURE that carries the error text as trailing bytes;
4. our connection classes injected where ``asyncssh.connect()`` would build its own;
5. the host key checked by fingerprint instead of known_hosts.

asyncssh is pinned to a tested range in pyproject.toml and this module is covered
by the interop tests against the real chisel.  Nothing else in ``cc`` imports
asyncssh internals.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

import asyncssh
from asyncssh import encryption as _encryption
from asyncssh.channel import SSHTCPChannel
from asyncssh.connection import (
    SSHClientConnection,
    SSHClientConnectionOptions,
    SSHServerConnection,
    SSHServerConnectionOptions,
)
from asyncssh.constants import (
    MSG_CHANNEL_DATA,
    MSG_CHANNEL_FIRST,
    MSG_CHANNEL_LAST,
    MSG_CHANNEL_WINDOW_ADJUST,
    MSG_IGNORE,
    MSG_KEX_FIRST,
    MSG_KEX_LAST,
    MSG_REQUEST_FAILURE,
    MSG_REQUEST_SUCCESS,
    MSG_UNIMPLEMENTED,
    MSG_USERAUTH_FIRST,
    MSG_USERAUTH_LAST,
    OPEN_ADMINISTRATIVELY_PROHIBITED,
    OPEN_CONNECT_FAILED,
)
from asyncssh.crypto import chacha as _chacha
from asyncssh.misc import (
    ChannelOpenError,
    DisconnectError,
    HostKeyNotVerifiable,
    MACError,
    ProtocolError,
    ProtocolNotSupported,
)
from asyncssh.packet import PacketDecodeError, SSHPacket, UInt32
from asyncssh.public_key import decode_ssh_public_key

from cc import fastpath
from cc.fastpath import BytesLike

__all__ = [
    "CLIENT_VERSION",
    "ENCRYPTION_ALGS",
    "OPEN_ADMINISTRATIVELY_PROHIBITED",
    "OPEN_CONNECT_FAILED",
    "SERVER_VERSION",
    "ChannelOpenError",
    "ChiselClientConnection",
    "ChiselServerConnection",
    "new_channel",
    "new_client_connection",
    "new_server_connection",
    "open_chisel_channel",
    "send_global_request",
]

CLIENT_VERSION = b"SSH-chisel-v3-client"
SERVER_VERSION = b"SSH-chisel-v3-server"
_VERSION_PREFIX = b"SSH-chisel-v3-"
_MAX_VERSION_LINE = 255

#: AES-GCM first: it runs on AES-NI and is what Go offers first.
ENCRYPTION_ALGS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)
_MAC_ALGS = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-256", "hmac-sha2-512-etm@openssh.com")

#: Rekey after this many bytes each way (asyncssh's and Go's default is 1 GiB);
#: tests lower it to prove the fast path survives key changes mid-transfer.
REKEY_BYTES = 1 << 30

#: Between two of our peers (PEER_HEADER on the upgrade): fewer, larger packets.
LARGE_CHANNEL_WINDOW = 4 * 1024 * 1024
LARGE_CHANNEL_MAX_PACKET = 256 * 1024

#: Go peers advertise 32 KiB packets and a 2 MiB window; we match them.
CHANNEL_WINDOW = 2 * 1024 * 1024
CHANNEL_MAX_PACKET = 32 * 1024


class ChiselOwner(Protocol):
    """What our SSHClient/SSHServer subclasses provide to the connections below."""

    def chisel_channel_requested(self, target: bytes) -> Any:
        """Return an SSH session (or an awaitable of one), or raise ChannelOpenError."""


class _ChiselVersionMixin:
    """Send and accept ``SSH-chisel-v3-*`` version lines instead of ``SSH-2.0-*``."""

    _chisel_version = b""

    def _send_version(self) -> None:
        conn: Any = self
        version = self._chisel_version
        if conn.is_client():
            conn._client_version = version
            conn.set_extra_info(client_version=version.decode("ascii"))
        else:
            conn._server_version = version
            conn.set_extra_info(server_version=version.decode("ascii"))
        conn._send(version + b"\r\n")

    def _recv_version(self) -> bool:
        conn: Any = self
        idx = conn._inpbuf.find(b"\n", 0, _MAX_VERSION_LINE + 2)
        if idx < 0:
            if len(conn._inpbuf) > _MAX_VERSION_LINE:
                conn._force_close(ProtocolNotSupported("SSH version line too long"))
            return False
        version = bytes(conn._inpbuf[:idx]).rstrip(b"\r")
        conn._inpbuf = conn._inpbuf[idx + 1 :]
        if not version.startswith(_VERSION_PREFIX):
            conn._force_close(
                ProtocolNotSupported(f"peer does not speak chisel-v3 (version {version[:64]!r})")
            )
            return False
        if conn.is_server():
            conn._client_version = version
            conn.set_extra_info(client_version=version.decode("ascii", "replace"))
        else:
            conn._server_version = version
            conn.set_extra_info(server_version=version.decode("ascii", "replace"))
        conn._send_kexinit()
        conn._kexinit_sent = True
        conn._recv_handler = conn._recv_pkthdr
        return True


class _FastSendMixin:
    """Send packets with one AEAD context and as few copies as possible.

    The empty MSG_IGNORE asyncssh sends before every packet is dropped: it is a
    countermeasure against CBC-mode attacks, and we negotiate only AEAD and CTR
    ciphers (CALIBRATION.md: it doubles the packets).  Once keys are in place and no
    rekey is due, packets are sealed here in one step; everything else (key
    exchange, deferral, rekey triggers, other ciphers) is asyncssh's own path.
    """

    _EMPTY_IGNORE = (b"\x00\x00\x00\x00",)

    def send_packet(self, pkttype: int, *args: bytes, handler: Any = None) -> None:
        conn: Any = self
        if pkttype == MSG_IGNORE and args == self._EMPTY_IGNORE:
            return
        enc = conn._send_encryption
        if (
            type(enc) in _FAST_ENCRYPTIONS
            and pkttype > MSG_USERAUTH_LAST
            and conn._auth_complete
            and conn._kex_complete
            and not conn._kexinit_sent
            and conn._compressor is None
            and conn._rekey_bytes_sent < conn._rekey_bytes
            and not (conn._rekey_seconds and time.monotonic() >= conn._rekey_time)
            and conn._transport is not None
        ):
            body = args[0] if len(args) == 1 else b"".join(args)
            packet = enc.seal(body, _TYPE_BYTES[pkttype], conn._send_seq)
            conn._send(packet)
            conn._send_seq = (conn._send_seq + 1) & 0xFFFFFFFF
            conn._rekey_bytes_sent += len(packet) - 20
            return
        super().send_packet(pkttype, *args, handler=handler)  # type: ignore[misc]


_TYPE_BYTES = tuple(bytes([i]) for i in range(256))
#: Channel states in which asyncssh accepts a window adjustment.
_ADJUSTABLE_STATES = frozenset({"open", "eof_pending", "eof"})


class _FastGCMEncryption(_encryption.Encryption):
    """asyncssh's Encryption interface over ``fastpath.GCMPacketCipher``.

    asyncssh builds a new AESGCM object per packet; ours keeps one per key epoch.
    The receive fast path below also uses ``cipher`` directly on whole packets.
    """

    def __init__(self, cipher: fastpath.GCMPacketCipher) -> None:
        self.cipher = cipher

    @classmethod
    def new(
        cls,
        cipher_name: str,
        key: bytes,
        iv: bytes,
        mac_alg: bytes = b"",
        mac_key: bytes = b"",
        etm: bool = False,
    ) -> _FastGCMEncryption:
        return cls(fastpath.GCMPacketCipher(key, iv))

    @classmethod
    def needs_mac(cls) -> bool:
        return False

    @classmethod
    def get_mac_params(cls, mac_alg: bytes) -> tuple[int, int, bool]:
        return 0, 16, True

    def seal(self, body: BytesLike, head: bytes, seq: int) -> BytesLike:
        """One wire packet (the GCM nonce counts itself; ``seq`` is not needed)."""
        return self.cipher.seal(body, head)

    def open_packet(self, buf: bytearray, offset: int, seq: int) -> tuple[memoryview, int] | None:
        return self.cipher.open_packet(buf, offset)

    def encrypt_packet(self, seq: int, header: bytes, packet: bytes) -> tuple[bytes, bytes]:
        data = self.cipher.encrypt(header, packet)
        return header + data[:-16], data[-16:]

    def decrypt_header(self, seq: int, first_block: bytes, header_len: int) -> tuple[bytes, bytes]:
        return first_block, first_block[:header_len]

    def decrypt_packet(
        self, seq: int, first: bytes, rest: bytes, header_len: int, mac: bytes
    ) -> bytes | None:
        try:
            return bytes(self.cipher.decrypt(first[:header_len], first[header_len:] + rest + mac))
        except ValueError:
            return None


class _FastChachaEncryption(_encryption.ChachaEncryption):
    """asyncssh's chacha20-poly1305 for its own path, ``fastpath.ChachaPacketCipher`` for ours.

    The construction is stateless per packet (the nonce is the sequence number), so
    both can serve the same key epoch side by side.
    """

    def __init__(self, cipher: Any, key: bytes) -> None:
        super().__init__(cipher)
        self.fast = fastpath.ChachaPacketCipher(key)

    @classmethod
    def new(
        cls,
        cipher_name: str,
        key: bytes,
        iv: bytes,
        mac_alg: bytes = b"",
        mac_key: bytes = b"",
        etm: bool = False,
    ) -> _FastChachaEncryption:
        return cls(_chacha.ChachaCipher(key), key)

    def seal(self, body: BytesLike, head: bytes, seq: int) -> BytesLike:
        return self.fast.seal(body, head, seq)

    def open_packet(self, buf: bytearray, offset: int, seq: int) -> tuple[memoryview, int] | None:
        return self.fast.open_packet(buf, offset, seq)


for _alg, _enc, _cipher in (
    (b"aes128-gcm@openssh.com", _FastGCMEncryption, "aes128-gcm"),
    (b"aes256-gcm@openssh.com", _FastGCMEncryption, "aes256-gcm"),
    (b"chacha20-poly1305@openssh.com", _FastChachaEncryption, "chacha20-poly1305"),
):
    if _alg in _encryption._enc_params:  # chacha needs Poly1305 in the OpenSSL build
        _encryption._enc_params[_alg] = (_enc, _cipher)

#: Encryptions whose packets the fast send and receive paths seal and open.
_FAST_ENCRYPTIONS = (_FastGCMEncryption, _FastChachaEncryption)


class _FastReceiveMixin:
    """Decrypt and dispatch whole packets from a growing buffer (AES-GCM, ChaCha20-Poly1305).

    asyncssh slices an immutable ``bytes`` buffer per packet (quadratic on large
    reads), wraps every payload in an SSHPacket and logs it.  Here channel data goes
    straight to the channel (asyncssh's own window and pause logic still apply);
    every other packet is dispatched exactly as asyncssh's ``_recv_packet`` does.
    Anything else (version exchange, first key exchange, other ciphers) keeps
    asyncssh's own path.
    """

    _cc_rx: bytearray
    _cc_blocked = False

    def _cc_fast_ready(self) -> bool:
        conn: Any = self
        return (
            type(conn._recv_encryption) in _FAST_ENCRYPTIONS
            and conn._recv_handler == conn._recv_pkthdr
            and not conn._cc_blocked
        )

    def data_received(self, data: bytes, datatype: Any = None) -> None:
        conn: Any = self
        rx = conn.__dict__.get("_cc_rx")
        if rx is None:
            rx = conn._cc_rx = bytearray()
        # While an async handler runs (``_cc_blocked``) bytes wait here: asyncssh's own
        # path would otherwise read the next packet with the sequence number unchanged.
        if rx or conn._cc_blocked or conn._cc_fast_ready():
            if conn._inpbuf:
                rx += conn._inpbuf
                conn._inpbuf = b""
            rx += data
            conn._reset_keepalive_timer()
            conn._cc_drain()
        else:
            super().data_received(data, datatype)  # type: ignore[misc]

    def _finish_recv_packet(
        self, pkttype: int, seq: int, _task: Any = None, is_async: bool = False
    ) -> None:
        conn: Any = self
        super()._finish_recv_packet(pkttype, seq, _task, is_async)  # type: ignore[misc]
        if is_async:
            conn._cc_blocked = False
            if conn.__dict__.get("_cc_rx"):
                conn._cc_drain()

    def _cc_drain(self) -> None:
        conn: Any = self
        try:
            conn._cc_packets()
        except DisconnectError as exc:
            conn._send_disconnect(exc.code, exc.reason, exc.lang)
            conn._force_close(exc)
        except Exception:
            conn.internal_error()

    def _cc_packets(self) -> None:
        conn: Any = self
        rx: bytearray = conn._cc_rx
        offset = 0
        try:
            while conn._transport is not None and offset < len(rx):
                if not conn._cc_fast_ready():
                    # cipher changed to one we do not handle, or a handler is running
                    if not conn._cc_blocked:
                        conn._inpbuf += bytes(rx[offset:])
                        offset = len(rx)
                        conn._recv_data()
                    return
                try:
                    opened = conn._recv_encryption.open_packet(rx, offset, conn._recv_seq)
                except ValueError as exc:
                    if "authentication" in str(exc):
                        raise MACError("MAC verification failed") from None
                    raise ProtocolError(str(exc)) from None
                if opened is None:
                    return
                payload, used = opened
                offset += used
                if len(payload) > conn._max_recv_pktlen:
                    raise ProtocolError("Max packet size exceeded")
                if not conn._cc_dispatch(conn._recv_seq, payload):
                    return
        finally:
            if offset:
                del rx[:offset]

    def _cc_dispatch(self, seq: int, payload: memoryview) -> bool:
        """asyncssh's ``_recv_packet`` after decryption; channel data takes a short cut."""
        conn: Any = self
        pkttype = payload[0]
        if pkttype == MSG_CHANNEL_DATA and conn._auth_complete and len(payload) >= 9:
            chan = conn._channels.get(int.from_bytes(payload[1:5], "big"))
            if chan is not None and chan._recv_state == "open" and not chan._encoding:
                datalen = int.from_bytes(payload[5:9], "big")
                if datalen != len(payload) - 9:
                    raise ProtocolError("Invalid channel data packet")
                if datalen > chan._recv_window:
                    raise ProtocolError("Window exceeded")
                chan._accept_data(bytes(payload[9:]))
                conn._finish_recv_packet(pkttype, seq)
                return True
        if pkttype == MSG_CHANNEL_WINDOW_ADJUST and conn._auth_complete and len(payload) == 9:
            # Go peers send one after every data packet they read: half of what a
            # request/response exchange receives, so it skips the generic path too.
            chan = conn._channels.get(int.from_bytes(payload[1:5], "big"))
            if chan is not None and chan._recv_state in _ADJUSTABLE_STATES:
                chan._send_window += int.from_bytes(payload[5:9], "big")
                chan._flush_send_buf()
                conn._finish_recv_packet(pkttype, seq)
                return True
        if pkttype == MSG_IGNORE:
            conn._finish_recv_packet(pkttype, seq)
            return True
        packet = SSHPacket(bytes(payload))
        packet.get_byte()
        handler: Any = conn
        skip_reason = exc_reason = ""
        if MSG_KEX_FIRST <= pkttype <= MSG_KEX_LAST:
            if conn._kex:
                handler = conn._kex
            else:
                skip_reason, exc_reason = "kex not in progress", "Key exchange not in progress"
        elif MSG_USERAUTH_FIRST <= pkttype <= MSG_USERAUTH_LAST:
            if conn._auth:
                handler = conn._auth
            else:
                skip_reason, exc_reason = "auth not in progress", "Authentication not in progress"
        elif pkttype > MSG_USERAUTH_LAST and not conn._auth_complete:
            skip_reason = "invalid request before auth complete"
            exc_reason = "Invalid request before authentication was complete"
        elif MSG_CHANNEL_FIRST <= pkttype <= MSG_CHANNEL_LAST:
            try:
                recv_chan = packet.get_uint32()
            except PacketDecodeError:
                skip_reason, exc_reason = "incomplete channel request", "Incomplete channel request"
            else:
                handler = conn._channels.get(recv_chan)
                if handler is None:
                    skip_reason = "invalid channel number"
                    exc_reason = f"Invalid channel number {recv_chan} received"
                    handler = conn
        handler.log_received_packet(pkttype, seq, packet, skip_reason)
        if not skip_reason:
            try:
                result = handler.process_packet(pkttype, seq, packet)
            except PacketDecodeError as exc:
                raise ProtocolError(str(exc)) from None
            if inspect.isawaitable(result):
                conn._cc_blocked = True
                task = conn.create_task(result)
                task.add_done_callback(
                    functools.partial(conn._finish_recv_packet, pkttype, seq, is_async=True)
                )
                return False
            if not result:
                conn.logger.debug1("Unknown packet type %d received", pkttype)
                conn.send_packet(MSG_UNIMPLEMENTED, UInt32(seq))
        if exc_reason:
            raise ProtocolError(exc_reason)
        conn._finish_recv_packet(pkttype, seq)
        return True


class _TransportFlowMixin:
    """Channels hold their data while it could only pile up (see _ChiselTCPChannel).

    That is while the transport is over its high-water mark (asyncssh ignores
    pause_writing) and while a key exchange runs (asyncssh defers every packet
    until it ends, so each channel would pour its whole window into the deferred
    list, then into the socket buffer at once: 78 MB with 32 busy streams).
    """

    _cc_write_paused = False
    _cc_next_channel = 0

    def cc_holding(self) -> bool:
        conn: Any = self
        return bool(conn._cc_write_paused or not conn._kex_complete)

    def pause_writing(self) -> None:
        self._cc_write_paused = True

    def resume_writing(self) -> None:
        self._cc_write_paused = False
        self._cc_flush_held()

    def _send_deferred_packets(self) -> None:
        super()._send_deferred_packets()  # type: ignore[misc]
        self._cc_flush_held()

    def _cc_flush_held(self) -> None:
        """Let held-back channels send, starting one further each time (fairness)."""
        conn: Any = self
        if conn.cc_holding():
            return
        channels = [c for c in conn._channels.values() if c._send_buf]
        if not channels:
            return
        start = conn._cc_next_channel % len(channels)
        conn._cc_next_channel += 1
        for chan in channels[start:] + channels[:start]:
            if conn.cc_holding():
                return
            chan._flush_send_buf()


class _ChiselChannelMixin:
    """Accept ``chisel`` channels: extra data is the raw target, no length prefix."""

    def _process_chisel_open(self, packet: SSHPacket) -> tuple[Any, Any]:
        conn: Any = self
        target = packet.get_remaining_payload()
        owner = conn._owner
        if owner is None or not hasattr(owner, "chisel_channel_requested"):
            raise ChannelOpenError(OPEN_ADMINISTRATIVELY_PROHIBITED, "channels not accepted")
        session = owner.chisel_channel_requested(target)
        chan = new_channel(conn)
        return chan, session

    def reply_global_request(self, ok: bool, payload: bytes = b"") -> None:
        """Answer the oldest pending global request; failure may carry text (chisel does)."""
        conn: Any = self
        _, _, want_reply = conn._global_request_queue.pop(0)
        if want_reply:
            conn.send_packet(MSG_REQUEST_SUCCESS if ok else MSG_REQUEST_FAILURE, payload)
        if conn._global_request_queue:
            conn._service_next_global_request()

    def _process_ping_global_request(self, packet: SSHPacket) -> None:
        self.reply_global_request(True, b"pong")


class ChiselServerConnection(
    _ChiselVersionMixin,
    _FastReceiveMixin,
    _FastSendMixin,
    _TransportFlowMixin,
    _ChiselChannelMixin,
    SSHServerConnection,
):
    """The gateway side of one chisel session."""

    _chisel_version = SERVER_VERSION

    def _process_config_global_request(self, packet: SSHPacket) -> None:
        payload = packet.get_remaining_payload()
        self.create_task(self._answer_config(payload))

    async def _answer_config(self, payload: bytes) -> None:
        owner: Any = self._owner
        try:
            error = await owner.config_requested(payload)
        except Exception as exc:  # the reply must go out whatever happened
            error = f"server error: {exc}"
        if self._transport is not None:
            self.reply_global_request(error is None, b"" if error is None else error.encode())


class ChiselClientConnection(
    _ChiselVersionMixin,
    _FastReceiveMixin,
    _FastSendMixin,
    _TransportFlowMixin,
    _ChiselChannelMixin,
    SSHClientConnection,
):
    """The connector side of one chisel session."""

    _chisel_version = CLIENT_VERSION

    def validate_server_host_key(self, key_data: bytes) -> asyncssh.SSHKey:
        owner: Any = self._owner
        try:
            owner.host_key_received(key_data)
            key = decode_ssh_public_key(key_data)
        except (ValueError, asyncssh.KeyImportError) as exc:
            raise HostKeyNotVerifiable(str(exc)) from None
        self._server_host_key = key
        return key


def _common_options() -> dict[str, Any]:
    return {
        "config": None,
        "encryption_algs": ENCRYPTION_ALGS,
        "mac_algs": _MAC_ALGS,
        "compression_algs": None,
        "keepalive_interval": 0,
        "rekey_bytes": REKEY_BYTES,
        "login_timeout": 30,
    }


def new_server_connection(
    host_key: asyncssh.SSHKey, server_factory: Callable[[], asyncssh.SSHServer]
) -> Callable[[], ChiselServerConnection]:
    """Build options once; return a factory for gateway-side connections."""
    options = SSHServerConnectionOptions(
        server_factory=server_factory,
        server_host_keys=[host_key],
        allow_pty=False,
        x11_forwarding=False,
        agent_forwarding=False,
        **_common_options(),
    )
    loop = asyncio.get_running_loop()
    return lambda: ChiselServerConnection(loop, options)


async def new_client_connection(
    client_factory: Callable[[], asyncssh.SSHClient],
    attach: Callable[[ChiselClientConnection], None],
    *,
    username: str,
    password: str,
) -> ChiselClientConnection:
    """Run the SSH client over the transport that ``attach`` wires it to.

    Returns once the peer accepted our password (asyncssh's ``wait='auth'``).
    """
    loop = asyncio.get_running_loop()
    options = SSHClientConnectionOptions(
        client_factory=client_factory,
        username=username or "",
        password=password,
        preferred_auth="password",
        known_hosts=None,
        client_keys=None,
        agent_path=None,
        host="chisel",
        port=22,
        **_common_options(),
    )
    options.waiter = loop.create_future()
    conn = ChiselClientConnection(loop, options, wait="auth")
    try:
        attach(conn)
        await options.waiter
    except BaseException:
        conn.abort()
        raise
    return conn


class _ChiselTCPChannel(SSHTCPChannel):  # type: ignore[type-arg]
    """A channel that holds its data back while the connection cannot take it.

    asyncssh ignores the transport's pause_writing, so every channel could queue
    a whole window (4 MiB between our peers) in the one shared socket buffer:
    32 busy streams grew a process by ~130 MB, and many more could exhaust a
    small VM.  Held back here, the data stays in the channel's own buffer, whose
    high-water mark pauses the session (the pipe stops reading its socket).
    """

    def _flush_send_buf(self) -> None:
        conn: Any = self._conn
        if conn is not None and self._send_buf and conn.cc_holding():
            # Data waits; with nothing buffered, asyncssh's flush sends a pending EOF
            # or close (small, and the peer must see them).
            self._pause_resume_writing()
            return
        super()._flush_send_buf()


def new_channel(conn: Any) -> Any:
    """A channel whose receive window and packet size suit the peer.

    We advertise what we receive; the peer sends at most that, so Go peers (which
    advertise 32 KiB themselves) are never sent more than 32 KiB either way.
    """
    if conn.get_extra_info("cc_peer_is_ours"):
        window, packet = LARGE_CHANNEL_WINDOW, LARGE_CHANNEL_MAX_PACKET
    else:
        window, packet = CHANNEL_WINDOW, CHANNEL_MAX_PACKET
    conn._update_recv_pktlen(packet)  # what create_tcp_channel does besides constructing
    return _ChiselTCPChannel(conn, conn._loop, None, "strict", window, packet)


async def send_global_request(
    conn: SSHClientConnection | SSHServerConnection, name: str, payload: bytes
) -> tuple[bool, bytes]:
    """Send a global request with a raw payload; return (success, raw reply payload)."""
    pkttype, packet = await conn._make_global_request(name.encode("ascii"), payload)
    return pkttype == MSG_REQUEST_SUCCESS, packet.get_remaining_payload()


async def open_chisel_channel(
    conn: SSHClientConnection | SSHServerConnection,
    target: bytes,
    session_factory: Callable[[], asyncssh.SSHTCPSession[bytes]],
) -> tuple[asyncssh.SSHTCPChannel[bytes], asyncssh.SSHTCPSession[bytes]]:
    """Open a ``chisel`` channel to ``target`` (raw extra data); raises ChannelOpenError."""
    chan = new_channel(conn)
    session = await chan._open_forward(session_factory, b"chisel", target)
    return chan, cast(asyncssh.SSHTCPSession[bytes], session)
