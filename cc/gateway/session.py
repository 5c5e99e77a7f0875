"""One gateway session: authentication, the config request, reverse listeners, channels.

asyncssh calls into ``GatewaySession`` (its SSHServer) for each connected chisel
client; the session checks every remote and channel against the user's and the
token's ACLs, owns the session's reverse listeners and releases them when the
session ends or stops answering pings.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import asyncssh

from cc.log import event, get_logger
from cc.protocol import http
from cc.protocol.acl import Permissions, TokenTable, UserTable, password_digest
from cc.protocol.authorized_keys import ClientKey
from cc.protocol.config import Config, decode_config
from cc.protocol.errors import ConfigError
from cc.protocol.remote import Proto, Remote
from cc.protocol.revocation import Login, Revoke, Update, recheck
from cc.protocol.status import SessionRow
from cc.protocol.verdict import PORT_TAKEN
from cc.protocol.workers import client_identity, is_shareable, share_key
from cc.ssh import (
    OPEN_ADMINISTRATIVELY_PROHIBITED,
    ChannelOpenError,
    cipher_in_use,
)
from cc.stats import SessionStats
from cc.tunnel.endpoint import ChannelTarget, TunnelEndpoint
from cc.tunnel.keepalive import KeepaliveDriver

if TYPE_CHECKING:
    from cc.gateway.gateway import Gateway

__all__ = ["CONFIG_TIMEOUT", "REJECTED_LINGER", "GatewaySession", "PeerContext"]

#: chisel waits this long for the config request after authentication.
CONFIG_TIMEOUT = 10.0
#: How long a session whose config was rejected stays open to read the reason.
REJECTED_LINGER = 2.0
#: Binds tried for a reverse port whose stale holder was just evicted.
_REBIND_ATTEMPTS = 10


@dataclass
class PeerContext:
    """What the HTTP phase learnt about a peer, handed to its SSH session."""

    peer: str
    token_permissions: Permissions | None
    request: http.Request
    #: the connector's group secret (GROUP_HEADER), when it runs several sessions
    group: str | None = None
    #: ``acl.token_digest`` of its token, so a reload can tell whether it was revoked
    token_digest: bytes | None = None
    started: float = field(default_factory=time.monotonic)
    #: the unit of blame for failed logins (see cc.protocol.authguard.source_of)
    source: str = "?"
    #: tells the front this connection no longer counts as unauthenticated
    authenticated: Callable[[], None] = field(default=lambda: None)
    #: ``token #N`` (its entry in the tokens file) when a token let it in
    token_name: str | None = None


class PortTakenError(OSError):
    """A reverse port is held by a session of a different user or token."""


class GatewaySession(asyncssh.SSHServer):
    """One authenticated chisel session: its config, reverse listeners and channels."""

    def __init__(self, gateway: Gateway, session_id: int) -> None:
        self.gateway = gateway
        self.id = session_id
        self.log = get_logger(f"server.session#{session_id}")
        self.conn: Any = None
        self.context: PeerContext | None = None
        self.user = ""
        self.permissions: Permissions | None = None
        #: ``acl.password_digest`` of the password it logged in with (reloads re-check it)
        self.password_digest: bytes | None = None
        #: fingerprint of the authorized key it logged in with (reloads re-check it)
        self.key_fingerprint: str | None = None
        #: the HTTP identifiers its key may claim; None: any
        self.key_identifiers: frozenset[str] | None = None
        #: the user and key that passed validate_public_key, before its signature is checked
        self._pending_key: tuple[str, ClientKey] | None = None
        self.remotes: tuple[Remote, ...] = ()
        #: what the connector offers the HTTP API gateway (set with the config)
        self.http_identifiers: frozenset[str] = frozenset()
        self.http_targets: frozenset[str] = frozenset()
        self.listeners: list[asyncio.AbstractServer] = []
        #: the reverse remote each listener serves (a narrowed ACL closes some)
        self._listener_remotes: dict[asyncio.AbstractServer, Remote] = {}
        #: this session's own figures (the status page); they add up in gateway.stats
        self.stats = SessionStats(state="handshaking", parent=gateway.stats)
        self.endpoint = TunnelEndpoint(lambda: self.conn, self.stats, self.log, gateway.config.udp)
        self.client_version = ""
        #: wall-clock time the session was set up (0.0: not yet)
        self.since = 0.0
        #: reverse ports this session claimed, with the share key (None: exclusive)
        self._claimed: dict[int, str | None] = {}
        self._partner_checks: set[asyncio.Task[None]] = set()
        self._configured = False
        self._config_timer: asyncio.TimerHandle | None = None
        self._failed_logins = 0
        #: pings the connector, and answers the other sessions' probes of this one
        self.keepalive: KeepaliveDriver | None = None

    # -- asyncssh callbacks ---------------------------------------------------
    def connection_made(self, conn: Any) -> None:
        self.conn = conn
        config = self.gateway.config
        self.keepalive = KeepaliveDriver(
            conn, config.keepalive, config.keepalive_timeout, self._keepalive_dead
        )
        self.context = conn.get_extra_info("cc_context")
        self.gateway.sessions.add(self)
        self.gateway.stats.sessions = len(self.gateway.sessions)
        self.gateway.fleet.nudge()
        self.log.debug("Handshaking with %s...", self.context.peer if self.context else "?")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.context is not None:
            self.context.authenticated()  # gone: it no longer counts as waiting either
        self.close_listeners()
        if self.keepalive is not None:
            self.keepalive.stop()
        if self._config_timer is not None:
            self._config_timer.cancel()
        self.gateway.sessions.discard(self)
        self.gateway.stats.sessions = len(self.gateway.sessions)
        self.stats.release()  # the gateway may forget targets only this session used
        self.gateway.fleet.nudge()
        if self._configured:
            self.log.info(
                "Closed connection (%s)",
                exc or "normal close",
                extra=event(
                    "session_closed",
                    session=self.id,
                    user=self.user,
                    peer=self.context.peer if self.context else None,
                    duration_s=round(time.monotonic() - self.context.started, 3)
                    if self.context
                    else None,
                    error=str(exc) if exc else None,
                ),
            )
        elif exc is not None and not self._we_closed(exc):
            peer = self.context.peer if self.context else "?"
            # a peer that just hangs up is no news; one that talks nonsense is
            level = logging.DEBUG if isinstance(exc, asyncssh.ConnectionLost) else logging.WARNING
            self.log.log(
                level,
                "Closed connection from %s before it was set up: %s",
                peer,
                _describe(exc),
            )

    @staticmethod
    def _we_closed(exc: Exception) -> bool:
        """Our own disconnects (too many tries, grace time) were logged when decided."""
        return isinstance(exc, asyncssh.DisconnectError) and exc.code in (
            asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
        )

    def begin_auth(self, username: str) -> bool:
        users = self.gateway.config.users
        if (users is None or users.is_empty) and self.gateway.config.authorized_keys is None:
            self.permissions = Permissions.everything()
            self._auth_done(username)
            return False
        return True

    def password_auth_supported(self) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return self.gateway.config.authorized_keys is not None

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        """Is ``key`` authorized?  asyncssh then checks its signature over the session id.

        Asked before the signature is verified (and again with it), so the login is
        only recorded in :meth:`auth_completed`.
        """
        keys = self.gateway.config.authorized_keys
        source = self.context.source if self.context else "?"
        fingerprint = key.get_fingerprint("sha256")
        banned = self.gateway.banned_for(source) > 0
        entry = None if banned or keys is None else keys.lookup(fingerprint)
        if entry is None:
            error = "banned" if banned else f"unknown key {fingerprint}"
            await self._login_failed(username, error, "banned" if banned else "key")
            return False
        self._pending_key = (username, entry)
        return True

    def auth_completed(self) -> None:
        """A key login's signature checked out: record it (a password login already did)."""
        if self.permissions is not None or self._pending_key is None:
            return
        username, entry = self._pending_key
        if self.context is not None:
            self.gateway.auth_guard.succeeded(self.context.source)
        self.key_fingerprint = entry.fingerprint
        self.key_identifiers = entry.identifiers
        self.permissions = entry.permissions
        self._auth_done(username)

    async def validate_password(self, username: str, password: str) -> bool:
        """Check a password; a wrong one costs the source (see cc.protocol.authguard).

        The answer to a failure is held back by the source's penalty, a banned source
        is refused whatever it sends, and after ``--max-auth-tries`` failures the
        connection is closed, like OpenSSH's MaxAuthTries.
        """
        gateway = self.gateway
        users = gateway.config.users
        no_users = users is None or users.is_empty
        if no_users and gateway.config.authorized_keys is None:
            # chisel: no users means any password will do
            self.permissions = Permissions.everything()
            self._auth_done(username)
            return True
        source = self.context.source if self.context else "?"
        banned = gateway.banned_for(source) > 0
        permissions = None if banned or users is None else users.authenticate(username, password)
        if permissions is None:
            await self._login_failed(username, "banned" if banned else "wrong password")
            return False
        gateway.auth_guard.succeeded(source)
        self._pending_key = None
        self.password_digest = password_digest(password)
        self.permissions = permissions
        self._auth_done(username)
        return True

    async def _login_failed(self, username: str, error: str, reason: str = "password") -> None:
        """Charge the source a failure (password or key alike); too many close the connection."""
        gateway = self.gateway
        source = self.context.source if self.context else "?"
        peer = self.context.peer if self.context else "?"
        self._failed_logins += 1
        penalty = gateway.login_failed(
            source,
            f"Login failed for user: {username} (from {peer})",
            event("login_failed", session=self.id, user=username, peer=peer, error=error),
            reason="banned" if error == "banned" else reason,
        )
        if penalty.delay > 0:
            await asyncio.sleep(penalty.delay)
        if self._failed_logins >= gateway.config.max_auth_tries:
            raise asyncssh.DisconnectError(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
                "Too many authentication failures",
            )

    def _auth_done(self, username: str) -> None:
        self.user = username
        if self.context is not None:
            self.context.authenticated()
        loop = asyncio.get_running_loop()
        self._config_timer = loop.call_later(CONFIG_TIMEOUT, self._config_timeout)

    def _config_timeout(self) -> None:
        if not self._configured:
            self.log.warning("No config request within %.0fs; closing", CONFIG_TIMEOUT)
            self.close()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    # -- authorization --------------------------------------------------------
    def allowed(self, subject: str) -> bool:
        """Both the SSH user's ACL and the token's ACL (if any) must allow ``subject``."""
        if self.permissions is None or not self.permissions.allows(subject):
            return False
        token = self.context.token_permissions if self.context else None
        return token is None or token.allows(subject)

    # -- the config request -----------------------------------------------------
    async def config_requested(self, payload: bytes) -> str | None:
        """Answer the config request; a rejected session is closed soon after.

        The pause lets the client read the reason; without the close, a client that
        ignores rejections could hold sessions open for ever.
        """
        error = await self._configure(payload)
        if error is not None and not self._configured:
            asyncio.get_running_loop().call_later(REJECTED_LINGER, self.close)
        return error

    async def _configure(self, payload: bytes) -> str | None:
        """Validate the remotes and open reverse listeners; an error text is sent back."""
        if self._configured:
            return "server: config already received"
        if self._config_timer is not None:
            self._config_timer.cancel()
        config = self._decode_config(payload)
        if config is None:
            return "server: invalid config"
        error = self._refusal(config.remotes) or self._identifier_refusal(config)
        if error is None:
            error = await self._open_listeners([r for r in config.remotes if r.reverse])
        if error is None:  # revoked, narrowed or gone while the listeners opened?
            error = "server: closed" if self.conn.is_closed() else self._refusal(config.remotes)
            if error is not None:
                self.close_listeners()
        if error is not None:
            return error
        self._start(config)
        return None

    def _decode_config(self, payload: bytes) -> Config | None:
        try:
            config = decode_config(payload)
        except ConfigError as exc:
            self.log.warning("Invalid config: %s", exc)
            return None
        if config.version != self.gateway.config.version:
            self.log.debug(
                "Client version (%s) differs from server version (%s)",
                config.version,
                self.gateway.config.version,
            )
        return config

    def _identifier_refusal(self, config: Config) -> str | None:
        """A key bound to identifiers (``cc-identifier``) may claim only those."""
        allowed = self.key_identifiers
        claimed = frozenset(config.http.identifiers)
        if allowed is None or claimed <= allowed:
            return None
        denied = ", ".join(sorted(claimed - allowed))
        self.log.warning("Identifier(s) %s denied for key %s", denied, self.key_fingerprint)
        return f"server: access to identifier(s) {denied} denied"

    def _refusal(self, remotes: tuple[Remote, ...]) -> str | None:
        """Why the gateway's switches or the ACLs refuse one of ``remotes`` (None: all pass)."""
        for remote in remotes:
            if remote.reverse and not self.gateway.config.reverse:
                self.log.warning("Denied reverse remote %s: --reverse not enabled", remote)
                return "server: Reverse port forwarding not enabled on server"
            if remote.socks and not remote.reverse and not self.gateway.config.socks5:
                return "server: SOCKS5 is not enabled on the server"
            subject = remote.acl_subject()
            if not self.allowed(subject):
                self.log.warning("Access to '%s' denied for user '%s'", subject, self.user)
                self.endpoint.note_error(f"access to '{subject}' denied")
                return f"server: access to '{subject}' denied"
        return None

    def _start(self, config: Config) -> None:
        """The config is accepted and the listeners are up: the session serves from now on."""
        self.remotes = config.remotes
        self.client_version = config.version
        self.since = time.time()
        self.stats.state = "connected"
        self.http_identifiers = frozenset(config.http.identifiers)
        self.http_targets = frozenset(config.http.targets)
        self._configured = True
        if self.gateway.config.keepalive > 0 and self.keepalive is not None:
            self.keepalive.start()
        peer = self.context.peer if self.context else "?"
        cipher, _ = cipher_in_use(self.conn)
        self.log.info(
            "Connected: %s user=%r version=%s cipher=%s remotes=[%s]",
            peer,
            self.user,
            config.version,
            cipher,
            ", ".join(str(r) for r in config.remotes),
            extra=event(
                "session_connected", session=self.id, user=self.user, peer=peer, cipher=cipher
            ),
        )

    def _keepalive_dead(self) -> None:
        """A vanished connector: chisel would keep its reverse ports bound forever.

        Go clients answer an unknown global request with a failure, which is still
        an answer; silence past the deadline means the peer is gone, so the session
        is aborted and its reverse ports are released for the reconnecting client.
        """
        self.log.warning(
            "No keepalive answer within %.0fs; closing the session and its ports",
            self.gateway.config.keepalive_timeout,
        )
        self.drop()

    def drop(self) -> None:
        """Abort a dead session now, and free its reverse ports for whoever asks next."""
        self.close_listeners()
        if self.conn is not None:
            self.conn.abort()

    async def _open_listeners(self, remotes: list[Remote]) -> str | None:
        for remote in remotes:
            evicted = False
            for attempt in range(_REBIND_ATTEMPTS):
                try:
                    server = await self._listen(remote)
                    break
                except PortTakenError:
                    return self._taken(remote)
                except OSError as exc:
                    error = exc
                if not evicted:
                    evicted = await self._evict_stale_holder(remote)
                if not evicted or attempt == _REBIND_ATTEMPTS - 1:
                    self.close_listeners()
                    self.log.warning(
                        "Cannot listen on %s: %s", remote.local(), error.strerror or error
                    )
                    self.endpoint.note_error(f"cannot listen on {remote.local()}")
                    return f"server: Server cannot listen on {remote.local()}"
                await asyncio.sleep(0.05)  # uvloop closes a listening socket a tick later
            self.listeners.append(server)
            self._listener_remotes[server] = remote
            self.log.debug("tun: %s: Listening", remote)
        return None

    @property
    def identity(self) -> str:
        """Who this session is for reverse ports: its user (and key) and its token (hashed).

        Key logins may all send the same SSH user name: the key tells them apart.
        """
        return client_identity(
            self._principal(), self.context.token_digest if self.context else None
        )

    def _principal(self) -> str:
        if self.key_fingerprint is None:
            return self.user
        return f"{self.user}\0{self.key_fingerprint}"

    def _taken(self, remote: Remote) -> str:
        """A different client holds the port: refuse at once, naming only our remote.

        Its own stale session would be evicted (``_evict_stale_holder``); another
        client's is not ours to touch, and retrying cannot help, so the message
        tells the connector to stop (see ``cc.protocol.verdict``).
        """
        self.close_listeners()
        peer = self.context.peer if self.context else "?"
        self.log.warning(
            "Refused %s for user '%s' from %s: port %d is held by another client",
            remote,
            self.user,
            peer,
            remote.local_port,
        )
        return f"server: {remote}: port {remote.local_port} is {PORT_TAKEN}"

    async def _listen(self, remote: Remote) -> asyncio.AbstractServer:
        """One reverse remote's listener: a TCP server or a UDP socket; OSError if taken.

        A TCP port is claimed first (see cc.protocol.workers): sessions of one
        connector that sent the same group secret bind it side by side with
        SO_REUSEPORT; anybody else finds it taken.
        """
        if remote.local_proto is Proto.UDP:
            return await self.endpoint.listen_udp(remote)
        group = self.context.group if self.context else None
        key = (
            share_key(self._principal(), group, remote) if group and is_shareable(remote) else None
        )
        port = remote.local_port
        registry = self.gateway.config.port_registry
        if not await registry.claim(port, key, self.id, self.identity):
            holder = await registry.holder(port)
            if holder is not None and holder != self.identity:
                raise PortTakenError(errno.EADDRINUSE, PORT_TAKEN)
            raise OSError(errno.EADDRINUSE, "held by another session")
        try:
            server = await self.endpoint.listen_tcp(remote, reuse_port=key is not None)
        except OSError:
            self.gateway.config.port_registry.release(port, self.id)
            raise
        self._claimed[port] = key
        if key is not None:
            self.log.debug("tun: %s: sharing the port with the connector's other sessions", remote)
            task = asyncio.get_running_loop().create_task(self._check_partners(port, key))
            self._partner_checks.add(task)
            task.add_done_callback(self._partner_checks.discard)
        return server

    def holds_port(self, port: int) -> bool:
        return any(
            sock.getsockname()[1] == port
            for server in self.listeners
            for sock in cast(asyncio.Server, server).sockets
        )

    async def answers_ping(self, timeout: float) -> bool:
        """Ping now; False if the peer stays silent (no answer, no traffic) or is gone."""
        return self.keepalive is not None and await self.keepalive.probe(timeout)

    async def _evict_stale_holder(self, remote: Remote) -> bool:
        """If another of our sessions holds ``remote``'s port and is dead, close it.

        A connector whose old path died silently (NAT state dropped, Wi-Fi roam)
        reconnects before our keepalive deadline, and its stale session still holds
        the reverse port.  Go clients give up on a config error, so instead of
        refusing at once, ask the holder now: if it does not answer within the
        keepalive deadline it is gone, and the port goes to the new session.  A
        holder that answers keeps its port (a genuine conflict).
        """
        for other in list(self.gateway.sessions):
            if other is self or other.conn is None or not other.holds_port(remote.local_port):
                continue
            deadline = self.gateway.config.keepalive_timeout or CONFIG_TIMEOUT
            if await other.answers_ping(deadline):
                return False
            other.log.warning(
                "No keepalive answer within %.0fs while %s wants %s; closing the stale session",
                deadline,
                self.context.peer if self.context else "?",
                remote.local(),
            )
            other.drop()
            return True
        return False

    async def _check_partners(self, port: int, key: str) -> None:
        """A worker of our connector that reconnects joins its own stale session's port.

        Its old session may be dead without the gateway knowing yet, and the kernel
        would keep handing it connections until the keepalive deadline.  So, without
        holding up the new session, ask the partners sharing the port now; one that
        stays silent is closed (partners in other gateway workers answer to their
        own worker's keepalive).
        """
        deadline = self.gateway.config.keepalive_timeout or CONFIG_TIMEOUT
        partners = [
            other
            for other in list(self.gateway.sessions)
            if other is not self and other.conn is not None and other._claimed.get(port) == key
        ]
        answers = await asyncio.gather(*(other.answers_ping(deadline) for other in partners))
        for other, answered in zip(partners, answers, strict=True):
            if not answered and other.conn is not None and not other.conn.is_closed():
                other.log.warning(
                    "No keepalive answer within %.0fs while a new session of the same "
                    "connector joined port %d; closing the stale session",
                    deadline,
                    port,
                )
                other.drop()

    def close_listeners(self) -> None:
        for server in self.listeners:
            server.close()
        self.listeners.clear()
        for port in self._claimed:
            self.gateway.config.port_registry.release(port, self.id)
        self._claimed.clear()
        for task in self._partner_checks:
            task.cancel()

    # -- a reloaded authfile or tokens file ---------------------------------------
    def recheck_credentials(self, users: UserTable | None, tokens: TokenTable | None) -> None:
        """Hold this live session to reloaded credentials, as if it logged in now.

        chisel keeps a session's login-time permissions for ever.  Here a removed
        user or token (or a changed password) ends the session; narrower ACLs
        close the reverse listeners they no longer allow, and every later channel
        (and SOCKS request) is checked against the new ones through ``allowed``.
        """
        if self.permissions is None or self.conn is None or self.conn.is_closed():
            return  # not logged in yet (validate_password reads the new table), or gone
        context = self.context
        peer = context.peer if context else "?"
        token = context.token_permissions if context else None
        login = Login(
            self.user,
            self.password_digest,
            context.token_digest if context else None,
            self.key_fingerprint,
            self.http_identifiers,
        )
        keys = self.gateway.config.authorized_keys
        decision = recheck(login, users, tokens, (self.permissions, token), keys)
        if isinstance(decision, Revoke):
            self.log.warning(
                "Closed session of user '%s' from %s: %s", self.user, peer, decision.reason
            )
            self.close_listeners()
            self.close()
        elif isinstance(decision, Update):
            forwards = [r for r in self.remotes if not r.reverse and not r.socks]
            before = [r for r in forwards if self.allowed(r.acl_subject())]
            self.permissions = decision.user
            if context is not None:
                context.token_permissions = decision.token
            self.log.debug("Permissions of user '%s' from %s reloaded", self.user, peer)
            self._close_disallowed_listeners(peer)
            for remote in before:
                if not self.allowed(remote.acl_subject()):
                    self.log.warning(
                        "Refusing channels of %s for user '%s' from %s: '%s' is no longer allowed",
                        remote,
                        self.user,
                        peer,
                        remote.acl_subject(),
                    )

    def _close_disallowed_listeners(self, peer: str) -> None:
        for server in list(self.listeners):
            remote = self._listener_remotes.get(server)
            if remote is None or self.allowed(remote.acl_subject()):
                continue
            del self._listener_remotes[server]
            server.close()
            self.listeners.remove(server)
            if remote.local_proto is Proto.TCP and remote.local_port in self._claimed:
                del self._claimed[remote.local_port]
                self.gateway.config.port_registry.release(remote.local_port, self.id)
            self.log.warning(
                "Closed %s of user '%s' from %s: '%s' is no longer allowed",
                remote,
                self.user,
                peer,
                remote.acl_subject(),
            )

    # -- channels the client opens (forward remotes) -----------------------------
    def chisel_channel_requested(self, target_bytes: bytes) -> Any:
        """Serve a channel the client opens, if the user's and the token's ACLs allow it.

        chisel lets SOCKS requests past its ACL; here each SOCKS CONNECT's real
        ``host:port`` must be allowed like any forward remote's target.  The ACLs see
        the target's canonical spelling, the one that is dialled; a numeric shorthand
        (``127.0.011``, read as 127.0.0.9) is refused and logged with its meaning.
        """
        if not self._configured:
            raise ChannelOpenError(OPEN_ADMINISTRATIVELY_PROHIBITED, "config first")
        asked = target_bytes.decode("utf-8", "replace")
        try:
            target = ChannelTarget.parse(asked)
        except ChannelOpenError as exc:
            self.log.warning(
                "Refused channel to %r for user '%s': %s", asked[:200], self.user, exc.reason
            )
            self.endpoint.note_error(f"refused channel to {asked[:80]!r}: {exc.reason}")
            raise
        if target.socks:
            if not self.gateway.config.socks5:
                self.log.warning("Denied SOCKS channel for user '%s': --socks5 is off", self.user)
                self.endpoint.note_error("SOCKS channel denied: --socks5 is off")
                raise ChannelOpenError(OPEN_ADMINISTRATIVELY_PROHIBITED, "SOCKS5 is not enabled")
            return self.endpoint.route_channel(
                target,
                self.stats.remote(target.text),
                f"user '{self.user}'",
                socks_authorize=self.allowed,
            )
        if not self.allowed(target.address):  # UDP as TCP: chisel's ACL subjects have no /udp
            self.log.warning("Denied channel to %s for user '%s'", target.text, self.user)
            self.endpoint.note_error(f"channel to {target.text} denied")
            raise ChannelOpenError(OPEN_ADMINISTRATIVELY_PROHIBITED, "access denied")
        return self.endpoint.route_channel(target, self.stats.remote(target.text), target.text)

    # -- the status page ----------------------------------------------------------
    def status_row(self) -> SessionRow | None:
        """This session as /status shows it; None until it is set up."""
        if not self._configured or self.context is None:
            return None
        who = self.user
        if self.context.token_name:
            who = f"{who} ({self.context.token_name})" if who else self.context.token_name
        remotes = self.stats.remotes.values()
        return SessionRow(
            id=self.id,
            user=who or "-",
            peer=self.context.peer,
            version=self.client_version,
            since=self.since,
            remotes=[str(r) for r in self.remotes],
            open=sum(r.open for r in remotes),
            bytes_in=sum(r.bytes_in for r in remotes),
            bytes_out=sum(r.bytes_out for r in remotes),
            last_error=self.endpoint.last_error,
        )


def _describe(exc: Exception) -> str:
    """A protocol error as an operator can act on it: its kind and asyncssh's reason."""
    reason = getattr(exc, "reason", "") or str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {reason}"
