"""The gateway's operations endpoints, in process: /metrics, /ready, /status, routing.

Metrics are scraped over real sockets and parsed with prometheus-client's own parser;
readiness is watched as it flips during a drain; the status document is read while a
live connector moves bytes; wrong admin credentials are refused and cost the source
like a wrong password.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from cc.gateway.gateway import Gateway
from cc.protocol.acl import UserTable, parse_tokens_file
from cc.protocol.authguard import GuardPolicy
from cc.protocol.basicauth import AdminCredentials, basic_header
from cc.tunnel.udp.settings import UDPSettings
from tests.gateway.test_http import Backend
from tests.support.harness import (
    STEP,
    Harness,
    free_port,
    http_exchange,
    split_response,
    upgrade_request,
    wait_until,
)
from tests.support.streams import ServiceHandler

__all__ = ["get", "scrape"]

ADMIN = ("ops", "pa:ss word")


def get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def auth(user: str = ADMIN[0], password: str = ADMIN[1]) -> str:
    return f"Authorization: {basic_header(user, password)}"


async def fetch(port: int, path: str, *headers: str) -> tuple[int, dict[str, str], bytes]:
    return split_response(await http_exchange(port, get(path, *headers)))


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by (name, sorted labels), parsed by prometheus-client."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def scrape(port: int, *headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, head, body = await fetch(port, "/metrics", *headers)
    assert status == 200, body
    assert head["content-type"].startswith("text/plain; version=0.0.4")
    return samples(body.decode())


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


async def exchange(port: int, size: int) -> None:
    """``size`` bytes through the tunnel to the echo service and back."""
    async with asyncio.timeout(STEP):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"x" * size)
        await reader.readexactly(size)
        writer.close()


async def tunnel(
    harness: Harness, gateway: Gateway, handler: ServiceHandler = echo
) -> tuple[Any, int, str]:
    service = await harness.service(handler)
    port = free_port()
    remote = f"R:127.0.0.1:{port}:127.0.0.1:{service}"
    running = await harness.connect(gateway, [remote])
    return running, port, f"R:127.0.0.1:{port}=>{service}"


# -- /metrics -------------------------------------------------------------------------


async def test_metrics_parse_and_count_a_live_tunnel(harness: Harness) -> None:
    gateway = await harness.gateway()
    port = gateway.ports[0]
    before = await scrape(port)
    assert before[("cloud_connector_sessions", ())] == 0
    assert before[("cloud_connector_ready", ())] == 1
    assert before[("cloud_connector_workers", ())] == 1
    running, tunnel_port, name = await tunnel(harness, gateway)
    await exchange(tunnel_port, 100_000)
    await exchange(tunnel_port, 50_000)
    label = (("remote", name),)
    await wait_until(lambda: gateway.stats.remotes[name].open == 0)
    after = await scrape(port)
    assert after[("cloud_connector_sessions", ())] == 1
    assert after[("cloud_connector_connections_total", label)] == 2
    assert after[("cloud_connector_connections_open", label)] == 0
    assert after[("cloud_connector_connections_failed_total", label)] == 0
    assert after[("cloud_connector_tunnel_received_bytes_total", label)] == 150_000
    assert after[("cloud_connector_tunnel_sent_bytes_total", label)] == 150_000
    assert after[("cloud_connector_udp_dropped_datagrams_total", label)] == 0
    assert after[("cloud_connector_channel_open_seconds_count", ())] == 2
    assert after[("cloud_connector_channel_open_seconds_bucket", (("le", "+Inf"),))] == 2
    assert after[("cloud_connector_fast_path_packets_total", (("direction", "send"),))] > 0
    assert after[("cloud_connector_fast_path_packets_total", (("direction", "receive"),))] > 0
    info = [k for k in after if k[0] == "cloud_connector_info"]
    assert len(info) == 1 and ("role", "gateway") in info[0][1]
    # the connector's peer address never becomes a label
    assert not any("127.0.0.1:" in v and "=>" not in v for _, ls in after for _, v in ls)
    await running.stop()
    await wait_until(lambda: not gateway.sessions)
    assert (await scrape(port))[("cloud_connector_sessions", ())] == 0


async def test_auth_failures_are_counted_by_reason(harness: Harness) -> None:
    tokens = parse_tokens_file(json.dumps({"good-token": [""]}).encode())
    gateway = await harness.gateway(
        users=UserTable.single("alice", "right"),
        tokens=tokens,
        guard=GuardPolicy(free_failures=100, ban_after=2, ban_time=60.0),
    )
    port = gateway.ports[0]
    # a wrong token (refused before any WebSocket), then wrong passwords until banned
    status, _, _ = split_response(await http_exchange(port, upgrade_request("/", "Token: nope")))
    assert status == 401
    await harness.expect_fatal(
        gateway,
        ["R:127.0.0.1:9:127.0.0.1:9"],
        auth=("alice", "wrong"),
        headers=[("Token", "good-token")],
    )
    status, _, _ = split_response(
        await http_exchange(port, upgrade_request("/", "Token: good-token"))
    )
    assert status == 429
    metrics = await scrape(port)
    reasons = {
        dict(labels)["reason"]: value
        for (name, labels), value in metrics.items()
        if name == "cloud_connector_auth_failures_total"
    }
    assert reasons["token"] == 1
    assert reasons["password"] >= 1
    assert reasons["banned"] >= 1
    assert reasons["admin"] == 0


async def test_udp_drops_are_counted(harness: Harness) -> None:
    """A datagram over --udp-max-size is dropped at the gateway's reverse UDP listener."""
    gateway = await harness.gateway(udp=UDPSettings(max_size=100))
    port = free_port()
    name = f"R:127.0.0.1:{port}=>9/udp"
    await harness.connect(gateway, [f"R:127.0.0.1:{port}:127.0.0.1:9/udp"])
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=("127.0.0.1", port)
    )
    try:
        transport.sendto(b"x" * 500)
        transport.sendto(b"y" * 600)
        await wait_until(lambda: gateway.stats.remotes[name].dropped == 2)
    finally:
        transport.close()
    metrics = await scrape(gateway.ports[0])
    assert metrics[("cloud_connector_udp_dropped_datagrams_total", (("remote", name),))] == 2


async def test_remote_labels_are_bounded(harness: Harness) -> None:
    """Forward targets are chosen by clients: past the cap they share one label."""
    from cc.metrics import MAX_REMOTE_LABELS

    gateway = await harness.gateway()
    for i in range(MAX_REMOTE_LABELS + 10):
        gateway.stats.remote(f"10.0.0.{i}:80").total += 1
    metrics = await scrape(gateway.ports[0])
    labels = [dict(ls)["remote"] for n, ls in metrics if n == "cloud_connector_connections_total"]
    assert len(labels) == MAX_REMOTE_LABELS + 1
    assert metrics[("cloud_connector_connections_total", (("remote", "other"),))] == 10


# -- /ready -----------------------------------------------------------------------------


async def test_ready_flips_to_503_while_draining(harness: Harness) -> None:
    """SIGTERM's drain: /ready says 503 and upgrades are turned away while connections
    finish; the port closes only when they are done."""
    gateway = await harness.gateway()
    port = gateway.ports[0]
    assert (await fetch(port, "/ready"))[0] == 200
    running, tunnel_port, _ = await tunnel(harness, gateway)
    reader, writer = await asyncio.open_connection("127.0.0.1", tunnel_port)
    writer.write(b"hold")
    assert await reader.readexactly(4) == b"hold"
    closing = asyncio.ensure_future(gateway.close(drain_timeout=STEP))
    await wait_until(lambda: gateway.draining)
    status, _, body = await fetch(port, "/ready")
    assert (status, body) == (503, b"not ready: draining\n")
    assert (await fetch(port, "/health"))[0] == 200, "alive, just not taking new work"
    status, headers, _ = split_response(await http_exchange(port, upgrade_request()))
    assert (status, headers["retry-after"]) == (503, "1")
    assert (await scrape(port))[("cloud_connector_ready", ())] == 0
    writer.close()  # the last connection ends: the drain is over
    async with asyncio.timeout(STEP):
        await closing
    try:
        await http_exchange(port, get("/ready"))
    except OSError:
        pass
    else:
        raise AssertionError("the port must be closed after the drain")
    await running.stop()


# -- routing ------------------------------------------------------------------------------


async def test_backend_does_not_hide_our_endpoints(harness: Harness) -> None:
    """With --backend, /ready, /metrics, /status[.json] are ours; chisel's /health goes on."""
    backend = Backend()
    backend_port = await harness.service(backend.handle)
    gateway = await harness.gateway(
        backend=f"http://127.0.0.1:{backend_port}", admin=AdminCredentials.parse(":".join(ADMIN))
    )
    port = gateway.ports[0]
    assert (await fetch(port, "/ready"))[2] == b"ready\n"
    assert (await fetch(port, "/metrics", auth()))[0] == 200
    assert (await fetch(port, "/status.json", auth()))[0] == 200
    assert (await fetch(port, "/status", auth()))[0] == 200
    assert (await fetch(port, "/health"))[2] == b"from backend", "as chisel does"
    assert (await fetch(port, "/metrics/extra"))[2] == b"from backend", "exact paths only"
    assert len(backend.requests) == 2


async def test_one_request_per_connection(harness: Harness) -> None:
    """A pipelined second request is not read: one answer, then the close."""
    gateway = await harness.gateway()
    raw = await http_exchange(gateway.ports[0], get("/ready") + get("/metrics"))
    assert raw.count(b"HTTP/1.1 ") == 1
    assert split_response(raw)[2] == b"ready\n"


async def test_head_and_wrong_methods(harness: Harness) -> None:
    gateway = await harness.gateway()
    port = gateway.ports[0]
    raw = await http_exchange(port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = split_response(raw)
    assert (status, body) == (200, b"") and int(headers["content-length"]) > 100
    raw = await http_exchange(port, b"POST /ready HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert split_response(raw)[0] == 405


# -- /status and --admin --------------------------------------------------------------------


async def test_status_is_off_without_admin(harness: Harness) -> None:
    gateway = await harness.gateway()
    port = gateway.ports[0]
    assert (await fetch(port, "/status"))[0] == 404
    assert (await fetch(port, "/status.json", auth()))[0] == 404
    assert (await fetch(port, "/metrics"))[0] == 200, "public without --admin"


async def test_status_needs_the_admin_credentials(harness: Harness) -> None:
    gateway = await harness.gateway(
        admin=AdminCredentials.parse(":".join(ADMIN)), guard=GuardPolicy(free_failures=100)
    )
    port = gateway.ports[0]
    for path in ("/status", "/status.json", "/metrics"):
        status, headers, _ = await fetch(port, path)
        assert status == 401, path
        assert headers["www-authenticate"].startswith('Basic realm="cloud-connector"')
        assert (await fetch(port, path, auth(password="wrong")))[0] == 401
        assert (await fetch(port, path, auth(user="root")))[0] == 401
        assert (await fetch(port, path, "Authorization: Basic !!!"))[0] == 401
        assert (await fetch(port, path, auth()))[0] == 200
    assert (await fetch(port, "/ready"))[0] == 200, "probes never need credentials"
    assert gateway.stats.auth_failures["admin"] == 9


async def test_wrong_admin_guesses_get_the_source_banned(harness: Harness) -> None:
    gateway = await harness.gateway(
        admin=AdminCredentials.parse(":".join(ADMIN)),
        guard=GuardPolicy(free_failures=100, ban_after=3, ban_time=60.0),
    )
    port = gateway.ports[0]
    for _ in range(3):
        assert (await fetch(port, "/status.json", auth(password="guess")))[0] == 401
    status, headers, _ = await fetch(port, "/status.json", auth())
    assert status == 429 and int(headers["retry-after"]) > 0, "even the right password waits"
    assert gateway.banned_for("127.0.0.1") > 0
    status, _, _ = split_response(await http_exchange(port, upgrade_request()))
    assert status == 429, "and the ban is the same one connectors get"


async def test_status_json_follows_a_live_connector(harness: Harness) -> None:
    tokens = parse_tokens_file(json.dumps({"other": [""], "t0ps3cret": [""]}).encode())
    gateway = await harness.gateway(
        admin=AdminCredentials.parse(":".join(ADMIN)),
        users=UserTable.single("alice", "pw"),
        tokens=tokens,
    )
    port = gateway.ports[0]
    service = await harness.service(echo)
    tunnel_port = free_port()
    remote = f"R:127.0.0.1:{tunnel_port}:127.0.0.1:{service}"
    running = await harness.connect(
        gateway, [remote], auth=("alice", "pw"), headers=[("Token", "t0ps3cret")]
    )

    async def document() -> dict[str, Any]:
        status, headers, body = await fetch(port, "/status.json", auth())
        assert status == 200 and headers["content-type"] == "application/json"
        assert b"t0ps3cret" not in body, "the token itself is never shown"
        return dict(json.loads(body))

    first = await document()
    assert first["session_count"] == 1
    (row,) = first["sessions"]
    assert row["user"] == "alice (token #2)"
    assert row["remotes"] == [f"R:127.0.0.1:{tunnel_port}=>{service}"]
    assert row["peer"].startswith("127.0.0.1:")
    assert row["version"] == running.connector.config.config_version
    assert (row["bytes_in"], row["bytes_out"], row["open"]) == (0, 0, 0)
    await exchange(tunnel_port, 70_000)
    reader, writer = await asyncio.open_connection("127.0.0.1", tunnel_port)
    writer.write(b"open")
    await reader.readexactly(4)
    await wait_until(lambda: gateway.stats.remotes[row["remotes"][0]].open == 1)
    (row2,) = (await document())["sessions"]
    assert row2["bytes_in"] == row2["bytes_out"] == 70_004
    assert row2["open"] == 1
    assert row2["since"] == row["since"]
    writer.close()
    await running.stop()
    await wait_until(lambda: not gateway.sessions)
    gone = await document()
    assert (gone["session_count"], gone["sessions"]) == (0, [])


async def test_status_page_escapes_and_refreshes(harness: Harness) -> None:
    gateway = await harness.gateway(
        admin=AdminCredentials.parse(":".join(ADMIN)), users=UserTable.single("<b>x</b>", "pw")
    )
    await tunnel_as(harness, gateway, ("<b>x</b>", "pw"))
    status, headers, body = await fetch(gateway.ports[0], "/status?refresh=2", auth())
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src" not in headers["content-security-policy"]
    page = body.decode()
    assert '<meta http-equiv=refresh content="2">' in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    assert 'name=viewport content="width=device-width' in page


async def tunnel_as(harness: Harness, gateway: Gateway, credentials: tuple[str, str]) -> None:
    service = await harness.service(echo)
    await harness.connect(
        gateway, [f"R:127.0.0.1:{free_port()}:127.0.0.1:{service}"], auth=credentials
    )
