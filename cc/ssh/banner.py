"""chisel's version lines: ``SSH-chisel-v3-client`` / ``SSH-chisel-v3-server``, no ``2.0``.

asyncssh sends ``SSH-2.0-AsyncSSH_x`` and rejects anything but ``SSH-2.0-`` and
``SSH-1.99-``; chisel sends and expects its own lines, which enter the key-exchange
hash exactly as sent, so both of asyncssh's version steps are replaced here.
"""

from __future__ import annotations

from typing import Any

from asyncssh import ProtocolNotSupported

__all__ = ["CLIENT_VERSION", "SERVER_VERSION", "ChiselVersionMixin"]

CLIENT_VERSION = b"SSH-chisel-v3-client"
SERVER_VERSION = b"SSH-chisel-v3-server"
_VERSION_PREFIX = b"SSH-chisel-v3-"
#: RFC 4253 section 4.2: a version line is at most 255 characters (asyncssh's limit too).
_MAX_VERSION_LINE = 255


class ChiselVersionMixin:
    """Send and accept ``SSH-chisel-v3-*`` version lines instead of ``SSH-2.0-*``.

    Copies of asyncssh 2.24.1 ``SSHConnection._send_version`` and ``_recv_version``
    with chisel's lines; the banner lines a client may skip do not exist in chisel.
    """

    _cc_version = b""

    def _send_version(self) -> None:
        conn: Any = self
        version = self._cc_version
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
