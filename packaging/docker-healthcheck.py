"""The image's HEALTHCHECK: ask the service's readiness endpoint, when it has one.

In order:

1. ``CC_HEALTHCHECK_URL`` set: GET it (what it answers 200 to is healthy);
2. the container runs ``cloud-connector server``: GET its ``/ready`` on
   ``127.0.0.1:$PORT`` (8080 in the image), 200 once listening, 503 while draining;
   with TLS (``CC_TLS_CERT``) over HTTPS without checking the certificate, which names
   the public host;
3. a connector with ``CC_METRICS`` (its ``--metrics`` address): GET its ``/ready``
   there, 200 while its session is connected;
4. a connector without: it listens on nothing of its own, and while its process runs
   it is retrying, so it is healthy.

Standard library only; exit 0 healthy, 1 not.  tests/packaging runs it against real
gateways and connectors, with their PID as the argument (default 1, the container's).
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request

__all__ = ["is_gateway", "main", "metrics_ready_url"]


def is_gateway(pid: int) -> bool:
    """Whether process ``pid`` runs ``cloud-connector server`` (console script or -m)."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    return b"server" in argv[1:]


def metrics_ready_url(address: str) -> str:
    """``--metrics`` spellings (``9090``, ``0.0.0.0:9090``, ``[::]:9090``) -> its /ready."""
    if address.isdigit():
        host, port = "127.0.0.1", address
    else:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/ready"


def _get(url: str) -> int:
    insecure = url.startswith("https:")
    context = ssl._create_unverified_context() if insecure else None
    try:
        with urllib.request.urlopen(url, timeout=4, context=context) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:  # urllib's HTTPError (503) included
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str]) -> int:
    """``docker-healthcheck.py [PID]``: the service's process, 1 by default."""
    if os.environ.get("CC_HEALTHCHECK_URL"):
        return _get(os.environ["CC_HEALTHCHECK_URL"])
    pid = int(argv[0]) if argv else 1
    try:
        gateway = is_gateway(pid)
    except OSError as exc:
        print(f"process {pid}: {exc}", file=sys.stderr)
        return 1
    if gateway:
        scheme = "https" if os.environ.get("CC_TLS_CERT") else "http"
        return _get(f"{scheme}://127.0.0.1:{os.environ.get('PORT', '8080')}/ready")
    if os.environ.get("CC_METRICS"):
        return _get(metrics_ready_url(os.environ["CC_METRICS"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
