"""asyncssh, adapted to chisel: the one place in ``cc`` that touches asyncssh internals.

chisel speaks SSH with twists asyncssh has no public API for (``banner``: version
lines; ``connection``: the ``chisel`` channel type, raw global requests, host key by
fingerprint), and the data path needs more speed and flow control than asyncssh's
generic code gives (``ciphers``, ``fastsend``, ``fastrecv``, ``bulk``, ``flow``,
``lifecycle``, ``coalesce``); ``ending`` tells a clean CLOSE from a cut channel (a FIN
or a reset for the socket behind it).
Everything here was written against asyncssh 2.24.1, the only release the pin
allows (pyproject.toml and ``ASYNCSSH_REQUIREMENT``, checked at import).

Copied from asyncssh 2.24.1 (re-read them when the pin moves):

- ``banner.ChiselVersionMixin``: ``SSHConnection._send_version`` / ``_recv_version``
  (connection.py), with chisel's version lines.
- ``fastrecv.FastReceiveMixin._cc_dispatch``: ``SSHConnection._recv_packet`` after
  its decryption step; ``_cc_drain``: ``SSHConnection._recv_data``'s error handling;
  the channel-data and window-adjust short cuts: ``SSHChannel._process_data`` /
  ``_process_window_adjust`` (channel.py).
- ``fastsend.FastSendMixin.send_packet``: the tail of ``SSHConnection.send_packet``
  (sequence number, rekey byte count) for the states it accepts; ``bulk.cc_send_data``
  repeats it for channel data, with ``SSHChannel._flush_send_buf``'s window and
  packet-size split.
- ``lifecycle``: ``SSHConnection._process_channel_open`` /
  ``_process_channel_open_confirmation`` and ``SSHChannel._process_eof`` /
  ``_process_close`` after their parsing; ``SSHChannel._open``,
  ``SSHForwardChannel._open_forward`` and ``_start_reading`` without their tasks;
  ``SSHChannel.process_open`` + ``_finish_open_request`` (both classes), leaner;
  ``write_eof`` / ``close`` for a channel with nothing buffered.
- ``coalesce.SmallWriteMixin.write``: ``SSHChannel.write`` + ``_flush_send_buf`` for
  one packet that fits the window.
- ``connection.ChiselRequestsMixin.reply_global_request``:
  ``SSHConnection._report_global_response``, whose failure reply is always empty.
- ``flow.new_channel``: the body of ``SSHConnection.create_tcp_channel``.
- ``ending.EofKeepingChannel._flush_recv_buf``: the delivery loop of
  ``SSHChannel._flush_recv_buf``; the mixin relies on ``close`` / ``_close_send`` /
  ``_process_close`` letting a pending CLOSE replace a pending EOF both ways, and
  replaces the CLOSE entry of ``SSHChannel._packet_handlers``.
- ``leanchan.LeanChannelMixin``: ``SSHChannel.__init__`` and ``_cleanup``, the
  ``_close_event`` and the child logger made on first use, the two log calls made
  only when shown.
- ``ciphers``: replace ``encryption.GCMEncryption`` / ``ChachaEncryption`` in
  ``encryption._enc_params`` (same wire format, one context per key epoch).
- ``connection.CipherChoiceMixin._choose_alg``: wraps ``SSHConnection._choose_alg``
  to name both cipher lists by role when they share none.

Private asyncssh names used (``PRIVATE_NAMES`` below is the checked list,
tests/ssh/test_private_api.py keeps it complete):

- connection state: ``_inpbuf``, ``_recv_handler``, ``_recv_pkthdr``, ``_recv_seq``,
  ``_send_seq``, ``_recv_encryption``, ``_send_encryption``, ``_max_recv_pktlen``,
  ``_update_recv_pktlen`` (both from 2.24.1 only), ``_auth``, ``_auth_complete``,
  ``_kex``, ``_kex_complete``, ``_kexinit_sent``, ``_compressor``, ``_rekey_bytes``,
  ``_rekey_bytes_sent``, ``_rekey_seconds``, ``_rekey_time``, ``_transport``,
  ``_channels``, ``_owner``, ``_loop``, ``_client_version``, ``_server_version``,
  ``_server_host_key``, ``_global_request_queue``;
- connection methods called: ``_send`` (also overridden), ``_send_kexinit``, ``_force_close``,
  ``_recv_data``, ``_reset_keepalive_timer``, ``_send_disconnect``,
  ``_service_next_global_request``, ``_make_global_request``, ``_reap_task`` and
  ``_tasks`` (``lifecycle``: asyncssh's ``create_task`` for a dial);
- connection methods overridden: ``_send_version``, ``_recv_version``,
  ``_finish_recv_packet`` (also called), ``_send_deferred_packets``,
  ``_choose_alg`` (wrapped);
- channel: ``_conn``, ``_encoding``, ``_recv_state``, ``_recv_window``,
  ``_send_window``, ``_send_buf``, ``_send_state``, ``_send_chan``, ``_send_pktsize``,
  ``_send_paused``, ``_recv_chan``, ``_recv_pktsize``, ``_open_waiter``,
  ``_discard_recv``, ``_cleanup``, ``_accept_data``,
  ``_flush_send_buf`` (also overridden), ``_close_send`` and ``_flush_recv_buf``
  (overridden), ``_process_close`` (wrapped in ``_packet_handlers``),
  ``_deliver_data``, ``_recv_buf``,
  ``_recv_paused``, ``_session``, ``_pause_resume_writing``, ``_open_forward``;
  set up and cleaned up in ``leanchan`` (``__init__``, ``_cleanup`` and the
  ``_close_event`` property replace asyncssh's): ``_extra``, ``_env``, ``_str_env``,
  ``_command``, ``_subsystem``, ``_send_buf_len``, ``_init_recv_window``,
  ``_request_queue``, ``_request_waiters``, ``_send_high_water``, ``_send_low_water``;
- ``asyncssh.logging.SSHLogger``: ``_debug_level`` (``lifecycle``: what ``debug2`` checks);
- module ``asyncssh.encryption``: ``_enc_params``.

Handlers asyncssh finds by name (``PRIVATE_HOOKS``): ``_process_chisel_open``
(via ``SSHConnection._process_channel_open``), ``_process_config_global_request``
and ``_process_ping_global_request`` (via ``_process_global_request``).

Internal modules imported (``PRIVATE_IMPORTS``): ``asyncssh.encryption``
(``Encryption``, ``ChachaEncryption``), ``asyncssh.crypto.chacha.ChachaCipher``,
``asyncssh.packet`` (``SSHPacket``, ``String``, ``UInt32``, ``PacketDecodeError``),
``asyncssh.public_key.decode_ssh_public_key``, ``asyncssh.logging.SSHLogger``.
Internal but not underscore-named:
constructing the connection classes and ``SSHTCPChannel`` directly,
``SSHClientConnectionOptions.waiter``, ``SSHPacketHandler.process_packet`` /
``log_received_packet``, ``internal_error``, ``logger.debug1``.

Our own attributes on asyncssh objects start with ``_cc_`` (or ``cc_``).
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Final, NamedTuple

import asyncssh

#: The asyncssh releases this package was written and tested against (as in pyproject).
ASYNCSSH_REQUIREMENT: Final = ">=2.24.1,<2.25"
_LOWEST = (2, 24, 1)
_BELOW = (2, 25)


class AsyncsshVersionError(ImportError):
    """The installed asyncssh is outside ``ASYNCSSH_REQUIREMENT``.

    An ImportError (``name == "asyncssh"``) so that the command line reports it as
    one line, like a missing module; the data path would otherwise die with an
    AttributeError on the first session.
    """


def check_asyncssh_version(found: str) -> None:
    """Raise AsyncsshVersionError unless ``found`` lies in ``ASYNCSSH_REQUIREMENT``."""
    numbers = tuple(int(part) for part in re.findall(r"\d+", found.split("+")[0])[:3])
    if not _LOWEST <= numbers < _BELOW or re.search(r"(a|b|rc|dev)\d*$", found):
        raise AsyncsshVersionError(
            f"cloud-connector needs asyncssh {ASYNCSSH_REQUIREMENT}, found {found}: "
            f"pip install 'asyncssh{ASYNCSSH_REQUIREMENT}'",
            name="asyncssh",
        )


check_asyncssh_version(asyncssh.__version__)

# Below the check on purpose: a wrong asyncssh must fail here, with the message above.
from asyncssh import OPEN_ADMINISTRATIVELY_PROHIBITED, OPEN_CONNECT_FAILED, ChannelOpenError

from cc.ssh.banner import CLIENT_VERSION, SERVER_VERSION
from cc.ssh.bulk import sealed_count as bulk_sealed_count
from cc.ssh.connection import (
    ENCRYPTION_ALGS,
    REKEY_BYTES,
    ChiselClientConnection,
    ChiselServerConnection,
    NoCommonCipher,
    cipher_in_use,
    new_client_connection,
    new_server_connection,
    open_chisel_channel,
    send_global_request,
    start_chisel_channel,
)
from cc.ssh.ending import close_is_clean
from cc.ssh.fastrecv import opened_count
from cc.ssh.fastsend import sealed_count
from cc.ssh.flow import (
    CHANNEL_MAX_PACKET,
    CHANNEL_WINDOW,
    LARGE_CHANNEL_MAX_PACKET,
    LARGE_CHANNEL_WINDOW,
    new_channel,
)

__all__ = [
    "ASYNCSSH_REQUIREMENT",
    "CHANNEL_MAX_PACKET",
    "CHANNEL_WINDOW",
    "CLIENT_VERSION",
    "ENCRYPTION_ALGS",
    "LARGE_CHANNEL_MAX_PACKET",
    "LARGE_CHANNEL_WINDOW",
    "OPEN_ADMINISTRATIVELY_PROHIBITED",
    "OPEN_CONNECT_FAILED",
    "PRIVATE_HOOKS",
    "PRIVATE_IMPORTS",
    "PRIVATE_NAMES",
    "REKEY_BYTES",
    "SERVER_VERSION",
    "AsyncsshVersionError",
    "ChannelOpenError",
    "ChiselClientConnection",
    "ChiselServerConnection",
    "FastPathCounts",
    "NoCommonCipher",
    "check_asyncssh_version",
    "cipher_in_use",
    "close_is_clean",
    "fast_path_counts",
    "new_channel",
    "new_client_connection",
    "new_server_connection",
    "open_chisel_channel",
    "send_global_request",
    "start_chisel_channel",
]


class FastPathCounts(NamedTuple):
    """Packets the fast paths handled in this process since it started."""

    #: sealed by ``fastsend`` (the rest went through asyncssh's ``send_packet``)
    sealed: int
    #: opened by ``fastrecv`` (the rest went through asyncssh's ``_recv_packet``)
    opened: int


def fast_path_counts() -> FastPathCounts:
    """How many packets the fast send and receive paths handled: zero means they never ran.

    Per process, never reset; cheap enough to read at any time (stats, SIGUSR2).
    """
    return FastPathCounts(sealed=sealed_count() + bulk_sealed_count(), opened=opened_count())


_CONN, _CLIENT, _CHAN = "connection", "client connection", "channel"

#: Every private asyncssh attribute or method used in this package -> what has it:
#: "connection" (client and server), "client connection", "channel" (SSHTCPChannel)
#: or a module.  tests/ssh/test_private_api.py checks that this matches the code
#: and that each name exists on live asyncssh objects.
PRIVATE_NAMES: Final = MappingProxyType(
    {
        "_inpbuf": _CONN,
        "_recv_handler": _CONN,
        "_recv_pkthdr": _CONN,
        "_recv_seq": _CONN,
        "_send_seq": _CONN,
        "_recv_encryption": _CONN,
        "_send_encryption": _CONN,
        "_max_recv_pktlen": _CONN,
        "_update_recv_pktlen": _CONN,
        "_auth": _CONN,
        "_auth_complete": _CONN,
        "_kex": _CONN,
        "_kex_complete": _CONN,
        "_kexinit_sent": _CONN,
        "_compressor": _CONN,
        "_rekey_bytes": _CONN,
        "_rekey_bytes_sent": _CONN,
        "_rekey_seconds": _CONN,
        "_rekey_time": _CONN,
        "_transport": _CONN,
        "_channels": _CONN,
        "_owner": _CONN,
        "_loop": _CONN,
        "_client_version": _CONN,
        "_server_version": _CONN,
        "_server_host_key": _CLIENT,
        "_global_request_queue": _CONN,
        "_send": _CONN,
        "_send_kexinit": _CONN,
        "_force_close": _CONN,
        "_recv_data": _CONN,
        "_reset_keepalive_timer": _CONN,
        "_send_disconnect": _CONN,
        "_service_next_global_request": _CONN,
        "_make_global_request": _CONN,
        "_tasks": _CONN,
        "_reap_task": _CONN,
        "_send_version": _CONN,
        "_recv_version": _CONN,
        "_finish_recv_packet": _CONN,
        "_send_deferred_packets": _CONN,
        "_choose_alg": _CONN,
        "_conn": _CHAN,
        "_encoding": _CHAN,
        "_recv_state": _CHAN,
        "_recv_window": _CHAN,
        "_send_window": _CHAN,
        "_send_buf": _CHAN,
        "_send_state": _CHAN,
        "_send_chan": _CHAN,
        "_send_pktsize": _CHAN,
        "_send_paused": _CHAN,
        "_recv_chan": _CHAN,
        "_recv_pktsize": _CHAN,
        "_open_waiter": _CHAN,
        "_discard_recv": _CHAN,
        "_cleanup": _CHAN,
        "_close_send": _CHAN,
        "_process_close": _CHAN,
        "_packet_handlers": _CHAN,
        "_flush_recv_buf": _CHAN,
        "_deliver_data": _CHAN,
        "_recv_buf": _CHAN,
        "_recv_paused": _CHAN,
        "_session": _CHAN,
        "_accept_data": _CHAN,
        "_flush_send_buf": _CHAN,
        "_pause_resume_writing": _CHAN,
        "_open_forward": _CHAN,
        "_debug_level": "asyncssh.logging.SSHLogger",
        "_extra": _CHAN,
        "_env": _CHAN,
        "_str_env": _CHAN,
        "_command": _CHAN,
        "_subsystem": _CHAN,
        "_send_buf_len": _CHAN,
        "_init_recv_window": _CHAN,
        "_request_queue": _CHAN,
        "_request_waiters": _CHAN,
        "_close_event": _CHAN,
        "_send_high_water": _CHAN,
        "_send_low_water": _CHAN,
        "_enc_params": "asyncssh.encryption",
    }
)

#: Our handlers that asyncssh looks up by name -> the asyncssh method that does.
PRIVATE_HOOKS: Final = MappingProxyType(
    {
        "_process_chisel_open": "_process_channel_open",
        "_process_config_global_request": "_process_global_request",
        "_process_ping_global_request": "_process_global_request",
    }
)

#: asyncssh modules and names imported here that ``asyncssh`` itself does not export.
PRIVATE_IMPORTS: Final = frozenset(
    {
        "asyncssh.encryption",
        "asyncssh.encryption.Encryption",
        "asyncssh.encryption.ChachaEncryption",
        "asyncssh.crypto.chacha",
        "asyncssh.crypto.chacha.ChachaCipher",
        "asyncssh.packet.PacketDecodeError",
        "asyncssh.packet.SSHPacket",
        "asyncssh.packet.String",
        "asyncssh.packet.UInt32",
        "asyncssh.logging.SSHLogger",
        "asyncssh.public_key.decode_ssh_public_key",
    }
)
