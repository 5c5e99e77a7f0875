"""The chisel SSH connections: asyncssh's, with chisel's channel type and global requests.

chisel opens ``chisel`` channels whose extra data is the raw target (``host:port``,
no length prefix), sends ``config`` and ``ping`` global requests with raw payloads,
and reads the error text of a REQUEST_FAILURE from its trailing bytes.  Our
connection classes are injected where ``asyncssh.connect()`` would build its own,
and the client checks the host key by fingerprint (its owner's callback) instead of
known_hosts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, cast

import asyncssh
from asyncssh import (
    MSG_REQUEST_FAILURE,
    MSG_REQUEST_SUCCESS,
    OPEN_ADMINISTRATIVELY_PROHIBITED,
    ChannelOpenError,
    HostKeyNotVerifiable,
    SSHClientConnection,
    SSHClientConnectionOptions,
    SSHServerConnection,
    SSHServerConnectionOptions,
)
from asyncssh.packet import SSHPacket
from asyncssh.public_key import decode_ssh_public_key

from cc.protocol.ciphers import DEFAULT_CIPHERS, no_common_cipher
from cc.ssh.banner import CLIENT_VERSION, SERVER_VERSION, ChiselVersionMixin
from cc.ssh.bulk import BulkDataMixin
from cc.ssh.ciphers import FAST_ENCRYPTIONS
from cc.ssh.coalesce import CoalescingMixin
from cc.ssh.fastrecv import FastReceiveMixin
from cc.ssh.fastsend import FastSendMixin
from cc.ssh.flow import ChiselTCPChannel, TransportFlowMixin, new_channel
from cc.ssh.lifecycle import LifecycleMixin, OpenDone

__all__ = [
    "ENCRYPTION_ALGS",
    "REKEY_BYTES",
    "ChiselClientConnection",
    "ChiselServerConnection",
    "NoCommonCipher",
    "cipher_in_use",
    "new_client_connection",
    "new_server_connection",
    "open_chisel_channel",
    "send_global_request",
    "start_chisel_channel",
]

#: Offered without ``--ssh-ciphers``: AES-GCM first, it runs on AES-NI and is what
#: Go offers first (``cc.protocol.ciphers``; tests replace it to pin one cipher).
ENCRYPTION_ALGS = DEFAULT_CIPHERS
_MAC_ALGS = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-256", "hmac-sha2-512-etm@openssh.com")

#: Rekey after this many bytes each way (asyncssh's and Go's default is 1 GiB);
#: tests lower it to prove the fast path survives key changes mid-transfer.
REKEY_BYTES = 1 << 30


class ChiselRequestsMixin:
    """Accept ``chisel`` channels and answer chisel's global requests.

    asyncssh finds ``_process_<type>_open`` and ``_process_<name>_global_request``
    by name (``SSHConnection._process_channel_open`` / ``_process_global_request``).
    """

    def _process_chisel_open(self, packet: SSHPacket) -> tuple[Any, Any]:
        return self.cc_chisel_channel(packet.get_remaining_payload())

    def cc_chisel_channel(self, target: bytes) -> tuple[Any, Any]:
        """A new channel and its session (or an awaitable of one) for ``target``."""
        conn: Any = self
        owner = conn._owner
        if owner is None or not hasattr(owner, "chisel_channel_requested"):
            raise ChannelOpenError(OPEN_ADMINISTRATIVELY_PROHIBITED, "channels not accepted")
        session = owner.chisel_channel_requested(target)
        chan = new_channel(conn)
        return chan, session

    def reply_global_request(self, ok: bool, payload: bytes = b"") -> None:
        """Answer the oldest pending global request; failure may carry text (chisel does).

        asyncssh 2.24.1 ``SSHConnection._report_global_response``, whose failure
        reply is always empty.
        """
        conn: Any = self
        _, _, want_reply = conn._global_request_queue.pop(0)
        if want_reply:
            conn.send_packet(MSG_REQUEST_SUCCESS if ok else MSG_REQUEST_FAILURE, payload)
        if conn._global_request_queue:
            conn._service_next_global_request()

    def _process_ping_global_request(self, packet: SSHPacket) -> None:
        self.reply_global_request(True, b"pong")


class NoCommonCipher(asyncssh.KeyExchangeFailed):
    """The two ends offer no cipher in common (``--ssh-ciphers`` on one or both).

    A KeyExchangeFailed, so asyncssh disconnects as for any failed key exchange and
    the connector retries as for any other; only the reason says what to fix.
    """


class CipherChoiceMixin:
    """Name both cipher lists by role when they do not meet.

    asyncssh 2.24.1 ``SSHConnection._choose_alg`` says "No matching encryption
    algorithm found, sent ... and received ...", which leaves the reader to work
    out which list is whose.
    """

    def _choose_alg(
        self, alg_type: str, local_algs: Sequence[bytes], remote_algs: Sequence[bytes]
    ) -> bytes:
        conn: Any = self
        try:
            chosen: bytes = super()._choose_alg(alg_type, local_algs, remote_algs)  # type: ignore[misc]
        except asyncssh.KeyExchangeFailed:
            if alg_type != "encryption":
                raise
            ours = [alg.decode("ascii", "replace") for alg in local_algs]
            theirs = [alg.decode("ascii", "replace") for alg in remote_algs]
            client, server = (ours, theirs) if conn.is_client() else (theirs, ours)
            raise NoCommonCipher(no_common_cipher(client, server)) from None
        return chosen


class ChiselServerConnection(
    CipherChoiceMixin,
    ChiselVersionMixin,
    BulkDataMixin,
    FastReceiveMixin,
    FastSendMixin,
    CoalescingMixin,
    LifecycleMixin,
    TransportFlowMixin,
    ChiselRequestsMixin,
    SSHServerConnection,
):
    """The gateway side of one chisel session."""

    _cc_version = SERVER_VERSION

    def _process_config_global_request(self, packet: SSHPacket) -> None:
        payload = packet.get_remaining_payload()
        self.create_task(self._cc_answer_config(payload))

    async def _cc_answer_config(self, payload: bytes) -> None:
        owner: Any = self._owner
        try:
            error = await owner.config_requested(payload)
        except Exception as exc:  # the reply must go out whatever happened
            error = f"server error: {exc}"
        if self._transport is not None:
            self.reply_global_request(error is None, b"" if error is None else error.encode())


class ChiselClientConnection(
    CipherChoiceMixin,
    ChiselVersionMixin,
    BulkDataMixin,
    FastReceiveMixin,
    FastSendMixin,
    CoalescingMixin,
    LifecycleMixin,
    TransportFlowMixin,
    ChiselRequestsMixin,
    SSHClientConnection,
):
    """The connector side of one chisel session."""

    _cc_version = CLIENT_VERSION

    def validate_server_host_key(self, key_data: bytes) -> asyncssh.SSHKey:
        owner: Any = self._owner
        try:
            owner.host_key_received(key_data)
            key = decode_ssh_public_key(key_data)
        except (ValueError, asyncssh.KeyImportError) as exc:
            raise HostKeyNotVerifiable(str(exc)) from None
        self._server_host_key = key
        return key


def _common_options(ciphers: Sequence[str] | None) -> dict[str, Any]:
    return {
        "config": None,
        "encryption_algs": tuple(ciphers) if ciphers else ENCRYPTION_ALGS,
        "mac_algs": _MAC_ALGS,
        "compression_algs": None,
        "keepalive_interval": 0,
        "rekey_bytes": REKEY_BYTES,
        "login_timeout": 30,
    }


def new_server_connection(
    host_key: asyncssh.SSHKey,
    server_factory: Callable[[], asyncssh.SSHServer],
    *,
    ciphers: Sequence[str] | None = None,
) -> Callable[[], ChiselServerConnection]:
    """Build options once; return a factory for gateway-side connections.

    ``ciphers``: ``--ssh-ciphers``, most preferred first (None: ``ENCRYPTION_ALGS``).
    """
    options = SSHServerConnectionOptions(
        server_factory=server_factory,
        server_host_keys=[host_key],
        allow_pty=False,
        x11_forwarding=False,
        agent_forwarding=False,
        **_common_options(ciphers),
    )
    loop = asyncio.get_running_loop()
    return lambda: ChiselServerConnection(loop, options)


async def new_client_connection(
    client_factory: Callable[[], asyncssh.SSHClient],
    attach: Callable[[ChiselClientConnection], None],
    *,
    username: str,
    password: str,
    identity: bytes | None = None,
    ciphers: Sequence[str] | None = None,
) -> ChiselClientConnection:
    """Run the SSH client over the transport that ``attach`` wires it to.

    Returns once the peer accepted our key or password (asyncssh's ``wait='auth'``).
    With an ``identity`` (OpenSSH private key) public-key auth is tried first; the
    password stays for gateways (chisel) that only take passwords.  ``ciphers``:
    as for ``new_server_connection``; the client's order decides which is used.
    """
    loop = asyncio.get_running_loop()
    options = SSHClientConnectionOptions(
        client_factory=client_factory,
        username=username or "",
        password=password,
        preferred_auth="publickey,password" if identity else "password",
        known_hosts=None,
        client_keys=[asyncssh.import_private_key(identity)] if identity else None,
        agent_path=None,
        host="chisel",
        port=22,
        **_common_options(ciphers),
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


def cipher_in_use(conn: SSHClientConnection | SSHServerConnection) -> tuple[str, bool]:
    """The cipher this end sends with since the last key exchange, and whether the fast
    path seals it (AES-GCM and chacha20-poly1305; AES-CTR stays on asyncssh's path)."""
    name = str(conn.get_extra_info("send_cipher") or "")
    return name, type(conn._send_encryption) in FAST_ENCRYPTIONS


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


def start_chisel_channel(
    conn: SSHClientConnection | SSHServerConnection,
    target: bytes,
    session: asyncssh.SSHTCPSession[bytes],
    done: OpenDone,
) -> ChiselTCPChannel:
    """Send a ``chisel`` CHANNEL_OPEN for ``target`` now; ``done`` learns how it went.

    ``session`` is started once the peer confirms, then ``done(None)``; a refusal
    or the loss of the connection is ``done(ChannelOpenError)``.  No task, no
    await: a new tunnelled connection costs one callback instead of two tasks.
    Raises ChannelOpenError at once if the connection is gone.
    """
    chan = new_channel(conn)
    chan.cc_start_open(b"chisel", target, session, done)
    return chan
