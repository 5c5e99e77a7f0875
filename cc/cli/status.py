"""``cloud-connector status URL``: the gateway's status page as a table in a terminal.

It fetches ``/status.json`` (the same document the HTML page shows) with the
``--admin`` credentials and prints one line per connected session.
"""

from __future__ import annotations

import json
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cc import __version__
from cc.cli.common import (
    EXIT_FATAL,
    EXIT_USAGE,
    GoArgumentParser,
    env_default,
    env_flag,
    fail,
)
from cc.protocol.acl import parse_user_pass
from cc.protocol.basicauth import basic_header
from cc.protocol.errors import ProtocolError
from cc.protocol.status import format_table

__all__ = ["HELP", "main", "status_url"]

PROG = "cloud-connector status"
TIMEOUT = 10.0

HELP = f"""\
  Usage: cloud-connector status [options] <url>

  Prints the sessions connected to a gateway, as its /status page shows
  them: user (or token #N), peer, client version, since when, remotes,
  open connections, bytes in (from the connector) and out, last error.
  <url> is the gateway's address, for example http://gateway:8080; its
  /status.json is fetched. The gateway needs --admin.

  Options:

    --admin, The gateway's --admin credentials, <user:pass> (env
    CC_ADMIN).

    --json, Print the JSON document instead of the table.

    --tls-ca, A PEM file with the CA that signed the gateway's
    certificate (env CC_TLS_CA).

    --tls-skip-verify, Do not verify the gateway's TLS certificate.

    --help, This help text.

  Exit status: 0 when the table was printed, 1 when the gateway could
  not be reached or refused the credentials, 2 for bad input.

  Version:
    {__version__}
"""


def status_url(url: str) -> str:
    """The status.json address for what the user typed (``gw:8080``, ``http://gw/status``)."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {url!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/status.json"):
        pass
    elif path.endswith("/status"):
        path += ".json"
    else:
        path += "/status.json"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _parser() -> GoArgumentParser:
    p = GoArgumentParser(prog=PROG, help_text=HELP)
    p.add_flag("--admin", default=env_default("CC_ADMIN"))
    p.add_flag("--json", action="store_true")
    p.add_flag("--tls-ca", default=env_default("CC_TLS_CA"))
    p.add_flag("--tls-skip-verify", action="store_true", default=env_flag("CC_TLS_SKIP_VERIFY"))
    p.add_argument("url", nargs="?")
    return p


def fetch(url: str, admin: str | None, context: ssl.SSLContext | None) -> dict[str, Any]:
    """GET the document; OSError-family errors go to the caller."""
    headers = {"Accept": "application/json", "User-Agent": f"cloud-connector/{__version__}"}
    if admin:
        headers["Authorization"] = basic_header(*parse_user_pass(admin))
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as response:
        document: dict[str, Any] = json.loads(response.read())
    return document


def main(argv: Sequence[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    if args.help:
        p.print_help()
        return 0
    if not args.url:
        fail(PROG, "a gateway URL is required (see --help)", EXIT_USAGE)
    try:
        url = status_url(args.url)
        if args.admin:
            parse_user_pass(args.admin)
    except (ValueError, ProtocolError) as exc:
        fail(PROG, str(exc), EXIT_USAGE)
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context(cafile=args.tls_ca) if args.tls_ca else None
        if args.tls_skip_verify:
            context = ssl._create_unverified_context()
    try:
        document = fetch(url, args.admin, context)
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            why = "wrong --admin credentials" if args.admin else "it needs --admin user:pass"
            fail(PROG, f"{url}: the gateway refused the request ({why})")
        if exc.code == 404:
            fail(PROG, f"{url}: not found (is the gateway started with --admin?)")
        fail(PROG, f"{url}: HTTP {exc.code} {exc.reason}")
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        fail(PROG, f"cannot fetch {url}: {reason}", EXIT_FATAL)
    if args.json:
        sys.stdout.write(json.dumps(document, indent=1) + "\n")
    else:
        sys.stdout.write("\n".join(format_table(document)) + "\n")
    return 0
