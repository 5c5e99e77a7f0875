"""``cloud-connector demo``: the whole story on loopback in a few seconds.

A private HTTP service, a gateway, and a connector that exposes the service
through the gateway's reverse port; then one request through the tunnel.
Everything binds 127.0.0.1 on free ports and stops by itself.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from urllib.parse import urlsplit

from cc import __version__
from cc.connector.connector import Connector, ConnectorConfig
from cc.gateway.gateway import Gateway, GatewayConfig
from cc.protocol import keys
from cc.protocol.acl import parse_tokens_file
from cc.protocol.remote import parse_remote

__all__ = ["run_demo"]

BODY = b"hello from the private service\n"
TOKEN = "demo-token"


def _say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
        + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
        + BODY
    )
    await writer.drain()
    writer.close()


async def _fetch(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: secure-gateway\r\nConnection: close\r\n\r\n")
    data = await reader.read()
    writer.close()
    return data


async def run_demo(timeout: float = 20.0) -> int:
    """Returns 0 when a request made it through the tunnel and back."""
    service = await asyncio.start_server(_service, "127.0.0.1", 0)
    service_port = service.sockets[0].getsockname()[1]
    _say(f"private HTTP service listening on 127.0.0.1:{service_port}")

    tokens = parse_tokens_file(json.dumps({TOKEN: [r"R:127\.0\.0\.1:\d+"]}).encode())
    gateway = Gateway(
        GatewayConfig(
            host="127.0.0.1",
            port=0,
            reverse=True,
            tokens=tokens,
            host_key_pem=keys.private_key_pem_for_asyncssh(keys.generate_private_key()),
        )
    )
    await gateway.start()
    gateway_url = f"http://127.0.0.1:{gateway.ports[0]}/sg_demo"
    _say(f"gateway listening at {gateway_url} (fingerprint {gateway.fingerprint})")

    exposed = _free_port()
    remote = parse_remote(f"R:127.0.0.1:{exposed}:127.0.0.1:{service_port}")
    connector = Connector(
        ConnectorConfig(
            server=urlsplit(gateway_url),
            remotes=[remote],
            fingerprint=gateway.fingerprint,
            headers=[("token", TOKEN)],
            max_retry_count=3,
            max_retry_interval=1.0,
            user_agent=f"CloudConnector/{__version__}",
        )
    )
    _say(f"connector exposes 127.0.0.1:{service_port} as gateway port {exposed} ({remote})")
    running = asyncio.ensure_future(connector.run())
    status = 1
    try:
        async with asyncio.timeout(timeout):
            waiting = asyncio.ensure_future(connector.connected.wait())
            await asyncio.wait({running, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if running.done():
                running.result()
            response = await _fetch(exposed)
        ok = response.startswith(b"HTTP/1.1 200") and response.endswith(BODY)
        status_line = response.splitlines()[0].decode() if response else "(no response)"
        _say(f"GET http://127.0.0.1:{exposed}/ through the tunnel -> {status_line}")
        body = response.rsplit(b"\r\n\r\n", 1)[-1].decode().strip()
        _say(f"body: {body!r}")
        for _ in range(100):  # let the fetched connection finish closing (at most 1 s)
            if not connector.open_connections():
                break
            await asyncio.sleep(0.01)
        stats = connector.stats.remotes.get(str(remote))
        if stats is not None:
            _say(f"tunnel carried {stats.bytes_out} bytes out, {stats.bytes_in} bytes in")
        status = 0 if ok else 1
        _say(
            "success: the private service answered through the tunnel"
            if ok
            else "FAILED: unexpected response"
        )
    except Exception as exc:  # demo: report, never a traceback
        _say(f"FAILED: {type(exc).__name__}: {exc}")
    finally:
        connector.stop()
        await asyncio.gather(running, return_exceptions=True)
        await gateway.close()
        service.close()
    return status


def main() -> int:  # pragma: no cover - thin wrapper
    from cc.cli.common import run_async

    return run_async("cloud-connector demo", run_demo, component="demo")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
