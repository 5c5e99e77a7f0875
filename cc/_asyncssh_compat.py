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
from collections.abc import Callable
from typing import Any, Protocol

import asyncssh
from asyncssh.connection import (
    SSHClientConnection,
    SSHClientConnectionOptions,
    SSHServerConnection,
    SSHServerConnectionOptions,
)
from asyncssh.constants import (
    MSG_IGNORE,
    MSG_REQUEST_FAILURE,
    MSG_REQUEST_SUCCESS,
    OPEN_ADMINISTRATIVELY_PROHIBITED,
    OPEN_CONNECT_FAILED,
)
from asyncssh.misc import ChannelOpenError, HostKeyNotVerifiable, ProtocolNotSupported
from asyncssh.packet import SSHPacket
from asyncssh.public_key import decode_ssh_public_key

__all__ = [
    "CLIENT_VERSION",
    "ENCRYPTION_ALGS",
    "OPEN_ADMINISTRATIVELY_PROHIBITED",
    "OPEN_CONNECT_FAILED",
    "SERVER_VERSION",
    "ChannelOpenError",
    "ChiselClientConnection",
    "ChiselServerConnection",
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


class _NoIgnoreMixin:
    """Drop the empty MSG_IGNORE asyncssh sends before every packet.

    It is a countermeasure against CBC-mode attacks; we negotiate only AEAD and CTR
    ciphers, so it only doubles the packets on the data path (CALIBRATION.md).
    """

    _EMPTY_IGNORE = (b"\x00\x00\x00\x00",)

    def send_packet(self, pkttype: int, *args: bytes, handler: Any = None) -> None:
        if pkttype == MSG_IGNORE and args == self._EMPTY_IGNORE:
            return
        super().send_packet(pkttype, *args, handler=handler)  # type: ignore[misc]


class _ChiselChannelMixin:
    """Accept ``chisel`` channels: extra data is the raw target, no length prefix."""

    def _process_chisel_open(self, packet: SSHPacket) -> tuple[Any, Any]:
        conn: Any = self
        target = packet.get_remaining_payload()
        owner = conn._owner
        if owner is None or not hasattr(owner, "chisel_channel_requested"):
            raise ChannelOpenError(OPEN_ADMINISTRATIVELY_PROHIBITED, "channels not accepted")
        session = owner.chisel_channel_requested(target)
        chan = conn.create_tcp_channel(window=CHANNEL_WINDOW, max_pktsize=CHANNEL_MAX_PACKET)
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
    _ChiselVersionMixin, _NoIgnoreMixin, _ChiselChannelMixin, SSHServerConnection
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
    _ChiselVersionMixin, _NoIgnoreMixin, _ChiselChannelMixin, SSHClientConnection
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
    chan = conn.create_tcp_channel(window=CHANNEL_WINDOW, max_pktsize=CHANNEL_MAX_PACKET)
    session = await chan._open_forward(session_factory, b"chisel", target)
    return chan, session
