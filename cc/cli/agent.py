"""``cloud-connector agent``: a client with one reverse remote, configured like Armorcode's agent.

The Armorcode WS-Agent container is configured only from its environment
(``TUNNEL_PORT``, ``CLIENT_SIDE_DOMAIN``, ``CLIENT_SIDE_PORT``, ``SERVER_IP_DOMAIN``,
``CLIENT_UUID``) and authenticates with a token bound to its tunnel port.  This
command reads exactly those, plus ``TOKEN`` (or ``CC_TOKEN``), and runs
``cloud-connector client`` with them: the settings go through the environment,
never a command line another local user could read.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from cc import __version__
from cc.cli.common import EXIT_USAGE, UsageError, fail
from cc.protocol.errors import RemoteError
from cc.protocol.remote import parse_remote, validate_host

__all__ = ["HELP", "agent_environment", "main"]

PROG = "cloud-connector agent"

REQUIRED = (
    "TUNNEL_PORT",
    "CLIENT_SIDE_DOMAIN",
    "CLIENT_SIDE_PORT",
    "SERVER_IP_DOMAIN",
    "CLIENT_UUID",
)

HELP = f"""\
  Usage: cloud-connector agent

  A connector with one reverse tunnel, configured only from the
  environment, as the Armorcode WS-Agent container is:

    TUNNEL_PORT         the port the gateway opens for this tunnel
    CLIENT_SIDE_DOMAIN  the service inside the network (host name or address)
    CLIENT_SIDE_PORT    its port
    SERVER_IP_DOMAIN    the gateway: host, host:port or a URL (https:// by default)
    CLIENT_UUID         this agent's name (its user name at the gateway)
    TOKEN or CC_TOKEN   the token header (default: CLIENT_UUID), which the
                        gateway's --tokens file binds to the tunnel port
    TUNNEL_HOST         optional: the gateway interface to open the port on
                        (default 0.0.0.0; e.g. an internal address)

  It is "cloud-connector client https://SERVER_IP_DOMAIN
  R:TUNNEL_PORT:CLIENT_SIDE_DOMAIN:CLIENT_SIDE_PORT" with the token
  header, so every CC_ variable of the client also applies (CC_FINGERPRINT,
  CC_TLS_CA, CC_PROXY, ...). With Docker:

    docker run -d --name=cc-agent --restart=on-failure:5 \\
      --entrypoint cloud-connector \\
      -e TUNNEL_PORT=5000 -e CLIENT_SIDE_DOMAIN=jira.internal \\
      -e CLIENT_SIDE_PORT=443 -e SERVER_IP_DOMAIN=gateway.example.com \\
      -e CLIENT_UUID=6f1c... -e TOKEN=... \\
      cloud-connector agent

  Check the gateway first: "curl -k https://gateway.example.com" answers
  "cloud-connector gateway VERSION".

  Exit status: 2 when a variable is missing or wrong (all of them are
  named); 1 when the gateway refuses the token, or when TUNNEL_PORT is
  held by another client ("port 5000 is taken by another client": pick
  another TUNNEL_PORT, or stop the other agent); network trouble is
  retried.

  Version:
    {__version__}
"""


def _port(env: Mapping[str, str], name: str) -> int:
    value = env[name].strip()
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise UsageError(f"{name}={value!r} is not a port (1-65535)")
    return int(value)


def _server_url(value: str) -> str:
    value = value.strip()
    if "://" in value:
        return value
    return f"https://{value}"  # the agent reaches its server on 443


def agent_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The client's variables for an agent's; UsageError naming what is missing or wrong."""
    missing = [name for name in REQUIRED if not env.get(name, "").strip()]
    if missing:
        raise UsageError(f"missing environment variable(s): {', '.join(missing)} (see --help)")
    tunnel_port = _port(env, "TUNNEL_PORT")
    client_port = _port(env, "CLIENT_SIDE_PORT")
    domain = env["CLIENT_SIDE_DOMAIN"].strip()
    try:
        validate_host(domain)
        tunnel_host = env.get("TUNNEL_HOST", "").strip()
        prefix = f"{tunnel_host}:" if tunnel_host else ""
        remote = f"R:{prefix}{tunnel_port}:{domain}:{client_port}"
        parse_remote(remote)
    except RemoteError as exc:
        raise UsageError(f"CLIENT_SIDE_DOMAIN or TUNNEL_HOST: {exc}") from None
    uuid = env["CLIENT_UUID"].strip()
    if ":" in uuid or any(ch.isspace() for ch in uuid):
        raise UsageError("CLIENT_UUID may not hold ':' or spaces")
    token = (env.get("TOKEN") or env.get("CC_TOKEN") or uuid).strip()
    if any(ch in token for ch in "\r\n\0"):
        raise UsageError("TOKEN holds a line break")
    return {
        "CC_SERVER": _server_url(env["SERVER_IP_DOMAIN"]),
        "CC_REMOTES": remote,
        "CC_HEADERS": f"token: {token}",
        "AUTH": f"{uuid}:",
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[2:] if argv is None else argv)
    if args and args[0] in ("-h", "--help", "-help", "help"):
        sys.stdout.write(HELP)
        return 0
    if args:
        fail(PROG, f"takes only environment variables (see --help), not {args[0]!r}", EXIT_USAGE)
    try:
        settings = agent_environment(os.environ)
    except UsageError as exc:
        fail(PROG, str(exc), EXIT_USAGE)
    os.environ.update(settings)
    from cc.cli.client import main as client_main

    return client_main([])
