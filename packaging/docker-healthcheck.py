"""The image's HEALTHCHECK: a gateway answers GET /health on PORT; a connector is alive.

A gateway container (``cloud-connector server``) is healthy when its HTTP front answers
``/health`` on ``127.0.0.1:$PORT`` (8080 in the image), so the front is accepting and the
event loop is turning; with TLS (CC_TLS_CERT) it is asked over HTTPS without checking
the certificate, which names the public host.  A connector has no listening port of its
own: as long as its process runs (PID 1, or Docker restarts it) it is retrying, so the
check passes.  Standard library only; exit 0 healthy, 1 not.  tests/packaging runs it
against a real gateway, with that gateway's PID as the argument.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request

__all__ = ["is_gateway", "main"]


def is_gateway(pid: int) -> bool:
    """Whether process ``pid`` runs ``cloud-connector server`` (console script or -m)."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    return b"server" in argv[1:]


def main(argv: list[str]) -> int:
    """``docker-healthcheck.py [PID]``: the service's process, 1 (the container's) by default."""
    pid = int(argv[0]) if argv else 1
    try:
        if not is_gateway(pid):
            return 0
    except OSError as exc:
        print(f"process {pid}: {exc}", file=sys.stderr)
        return 1
    tls = bool(os.environ.get("CC_TLS_CERT"))
    url = f"{'https' if tls else 'http'}://127.0.0.1:{os.environ.get('PORT', '8080')}/health"
    context = ssl._create_unverified_context() if tls else None
    try:
        with urllib.request.urlopen(url, timeout=4, context=context) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
