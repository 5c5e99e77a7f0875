"""Named services on the gateway's port, as Remoted API Server serves them (issue 13 A).

Raw sockets only: a test sends what the PHP SDK sends and compares what comes back
byte for byte with what remoted-api-server's ``server.php`` answered on loopback.
The PHP SDK itself runs against the gateway in tests/interop/test_remoted.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import socket
import struct
import time

import pytest

from cc.gateway.gateway import Gateway
from cc.gateway.webroute import WebRouteSettings
from cc.protocol.authguard import GuardPolicy
from cc.protocol.webroute import KeyTable, parse_keys_file, webroute_accept
from tests.support.harness import STEP, Harness, http_exchange, split_response, wait_until
from tests.support.net import free_port
from tests.support.streams import echo_handler

__all__: list[str] = []

SERVER_KEY = "testserverkey0123456789abcdef"
CLIENT_KEY = "testclientkey0123456789abcdef"
KEYS = KeyTable.from_keys(SERVER_KEY, CLIENT_KEY)

NO_CACHE = (
    b"Expires: Tue, 03 Jul 2001 06:00:00 GMT\r\n"
    b"Cache-Control: max-age=0, no-cache, must-revalidate, proxy-revalidate\r\n"
)
INVALID_KEY = (
    b'{"success":false,"error":"Invalid or missing \'X-Remoted-APIKey\' header.",'
    b'"errorcode":"invalid_missing_apikey"}'
)
MISSING_DESTINATION = (
    b'{"success":false,"error":"Requested destination does not exist at this time.",'
    b'"errorcode":"missing_destination"}'
)
INVALID_REQUEST = (
    b'{"success":false,"error":"Invalid request.  Expected WebSocket or WebRoute upgrade.",'
    b'"errorcode":"invalid_request"}'
)


def json_answer(status: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\nContent-Type: application/json\r\n"
        + NO_CACHE
        + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        + body
    )


def webroute_head(path: str, key: str | None, wid: str, *extra: str) -> bytes:
    """The request the PHP SDK's WebRoute::Connect sends (its header order)."""
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
    if key is not None:
        lines.append(f"X-Remoted-APIKey: {key}")
    lines += [
        "Connection: keep-alive, Upgrade",
        "Pragma: no-cache",
        "WebRoute-Version: 1",
        f"WebRoute-ID: {wid}",
        *extra,
        "Upgrade: webroute",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def new_id() -> str:
    return secrets.token_urlsafe(48)[:64]


async def webroute_gateway(harness: Harness, keys: KeyTable = KEYS, **options: object) -> Gateway:
    settings = {"timeout": 60, "keepalive": 30.0, "settle": 0.05, "max_waiting": 128}
    settings.update({k: options.pop(k) for k in list(options) if k in settings})  # type: ignore[misc]
    return await harness.gateway(webroute=WebRouteSettings(keys, **settings), **options)  # type: ignore[arg-type]


class Conn:
    """One raw connection to the gateway."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, data: bytes = b"", source: str = "127.0.0.1") -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        writer.write(data)
        return cls(reader, writer)

    @property
    def address(self) -> str:
        host, port = self.writer.get_extra_info("sockname")[:2]
        return f"{host}:{port}"

    async def read(self, n: int) -> bytes:
        async with asyncio.timeout(STEP):
            return await self.reader.readexactly(n)

    async def head(self) -> bytes:
        async with asyncio.timeout(STEP):
            return await self.reader.readuntil(b"\r\n\r\n")

    async def rest(self) -> bytes:
        async with asyncio.timeout(STEP):
            return await self.reader.read(-1)

    async def silent(self, seconds: float = 0.2) -> bool:
        """Nothing arrives (and no EOF) within ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                await self.reader.read(1)
        except TimeoutError:
            return True
        return False

    async def frame(self) -> tuple[int, bytes]:
        """One unmasked frame from the gateway: (opcode, payload)."""
        first, second = await self.read(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(await self.read(2), "big")
        return first & 0x0F, await self.read(length)

    def send_frame(self, opcode: int, payload: bytes) -> None:
        """One masked frame, as a client sends it."""
        mask = secrets.token_bytes(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert len(payload) < 126
        self.writer.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def close(self) -> None:
        self.writer.close()


def registration_head(path: str, key: str = SERVER_KEY, *extra: str) -> bytes:
    """What the PHP SDK's RemotedAPIWebServer sends to register ``path``."""
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"X-Remoted-APIKey: {key}",
        "Connection: keep-alive, Upgrade",
        "Origin: http://127.0.0.1",
        "Pragma: no-cache",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *extra,
        "Upgrade: websocket",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


REGISTERED = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)


async def register(gateway: Gateway, path: str = "/test/path/") -> Conn:
    conn = await Conn.open(gateway.ports[0], registration_head(path))
    assert await conn.head() == REGISTERED
    return conn


async def notification(server: Conn) -> dict[str, object]:
    opcode, payload = await server.frame()
    assert opcode == 1, "a text frame"
    parsed = json.loads(payload)
    assert isinstance(parsed, dict)
    return parsed


def linked(wid: str) -> bytes:
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: webroute\r\nConnection: Upgrade\r\n"
        b"Sec-WebRoute-Accept: " + webroute_accept(wid).encode() + b"\r\n\r\n"
    )


async def park(gateway: Gateway, path: str, wid: str, early: bytes = b"", *extra: str) -> Conn:
    return await Conn.open(gateway.ports[0], webroute_head(path, CLIENT_KEY, wid, *extra) + early)


# -- each answer, byte for byte --------------------------------------------------------


@pytest.mark.parametrize("key", [None, "wrong-key", CLIENT_KEY[:-1]])
async def test_missing_or_wrong_key_is_403(harness: Harness, key: str | None) -> None:
    gateway = await webroute_gateway(harness)
    raw = await http_exchange(gateway.ports[0], webroute_head("/test/path/", key, new_id()))
    assert raw == json_answer(b"403 Forbidden", INVALID_KEY)


async def test_wrong_key_on_a_registration_is_403(harness: Harness) -> None:
    gateway = await webroute_gateway(harness)
    raw = await http_exchange(gateway.ports[0], registration_head("/p", "wrong"))
    assert raw == json_answer(b"403 Forbidden", INVALID_KEY)
    assert not gateway.named_services.directory.paths()  # type: ignore[union-attr]


async def test_unserved_path_is_502(harness: Harness) -> None:
    gateway = await webroute_gateway(harness)
    raw = await http_exchange(gateway.ports[0], webroute_head("/test/path/", CLIENT_KEY, "x"))
    assert raw == json_answer(b"502 Bad Gateway", MISSING_DESTINATION)


async def test_wrong_webroute_version_is_426(harness: Harness) -> None:
    gateway = await webroute_gateway(harness)
    server = await register(gateway, "/p")
    request = webroute_head("/p", CLIENT_KEY, "x").replace(
        b"WebRoute-Version: 1", b"WebRoute-Version: 2"
    )
    raw = await http_exchange(gateway.ports[0], request)
    assert raw == b"HTTP/1.1 426 Upgrade Required\r\nWebRoute-Version: 1\r\n\r\n"
    assert await server.silent(), "the registered server is not bothered"


async def test_server_with_unknown_id_is_400(harness: Harness) -> None:
    gateway = await webroute_gateway(harness)
    server = await register(gateway, "/p")
    raw = await http_exchange(gateway.ports[0], webroute_head("/p", SERVER_KEY, "unknown"))
    assert raw == json_answer(b"400 Bad Request", INVALID_REQUEST)
    server.close()


async def test_registration_without_origin_is_403(harness: Harness) -> None:
    gateway = await webroute_gateway(harness)
    request = registration_head("/p").replace(b"Origin: http://127.0.0.1\r\n", b"")
    raw = await http_exchange(gateway.ports[0], request)
    assert raw == b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\n"
    assert not gateway.named_services.directory.paths()  # type: ignore[union-attr]


async def test_without_keys_webroute_is_plain_http(harness: Harness) -> None:
    gateway = await harness.gateway()
    raw = await http_exchange(gateway.ports[0], webroute_head("/p", CLIENT_KEY, "x"))
    assert split_response(raw)[0] == 404


# -- a whole exchange ----------------------------------------------------------------------


async def test_register_park_notify_link_pipe(harness: Harness) -> None:
    gateway = await webroute_gateway(harness)
    server = await register(gateway)
    wid = new_id()
    client = await park(gateway, "/test/path/", wid, b"early from client", "WebRoute-Timeout: 90")
    assert await client.silent(), "a parked client gets no answer yet"
    assert await notification(server) == {"ipaddr": client.address, "id": wid, "timeout": 90}
    leg = await Conn.open(
        gateway.ports[0], webroute_head("/test/path/", SERVER_KEY, wid) + b"early from server"
    )
    answer = linked(wid)
    assert await leg.read(len(answer)) == answer
    assert await client.read(len(answer)) == answer
    assert await leg.read(17) == b"early from client"
    assert await client.read(17) == b"early from server"
    payload = secrets.token_bytes(1 << 20)
    client.writer.write(payload)
    assert await leg.read(len(payload)) == payload
    leg.writer.write(b"reply")
    assert await client.read(5) == b"reply"
    client.writer.write_eof()
    assert await leg.rest() == b"", "the server leg gets EOF when the client is done"
    leg.close()
    assert await client.rest() == b""
    services = gateway.named_services
    assert services is not None
    await wait_until(lambda: not services.pairs)
    assert services.linked_total == 1
    figures = gateway.stats.remotes["svc:/test/path/"]
    assert (figures.open, figures.total, figures.failed) == (0, 1, 0)
    assert (figures.bytes_out, figures.bytes_in) == (17 + len(payload), 17 + 5)
    scrape = await http_exchange(gateway.ports[0], b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b'cloud_connector_connections_total{remote="svc:/test/path/"} 1.0' in scrape


async def test_bytes_after_the_101_wait_for_the_settle_time(harness: Harness) -> None:
    """The PHP SDK drops what follows its 101 in the same read: bytes wait a moment."""
    gateway = await webroute_gateway(harness, settle=0.3)
    server = await register(gateway)
    client = await park(gateway, "/test/path/", "settle", b"early")
    await notification(server)
    leg = await Conn.open(gateway.ports[0], webroute_head("/test/path/", SERVER_KEY, "settle"))
    assert await leg.head() == linked("settle")
    linked_at = time.monotonic()
    assert await client.head() == linked("settle")
    client.writer.write(b" and prompt")
    assert await leg.read(16) == b"early and prompt"
    assert time.monotonic() - linked_at >= 0.25


async def test_default_timeout_in_the_notification_is_60(harness: Harness) -> None:
    gateway = await webroute_gateway(harness)
    server = await register(gateway)
    client = await park(gateway, "/test/path/", "abc", b"", "WebRoute-Timeout: 5")
    text = await server.frame()
    assert text == (1, b'{"ipaddr":"%s","id":"abc","timeout":60}' % client.address.encode())


async def test_parked_client_gets_504_after_its_timeout(harness: Harness) -> None:
    gateway = await webroute_gateway(harness, timeout=1)
    server = await register(gateway)
    client = await park(gateway, "/test/path/", "slow")
    await notification(server)
    started = time.monotonic()
    raw = await client.rest()
    assert (
        raw == b"HTTP/1.1 504 Gateway Timeout\r\nWebRoute-Version: 1\r\nConnection: close\r\n\r\n"
    )
    assert 0.8 < time.monotonic() - started < 3
    assert gateway.stats.remotes["svc:/test/path/"].failed == 1
    late = await http_exchange(gateway.ports[0], webroute_head("/test/path/", SERVER_KEY, "slow"))
    assert split_response(late)[0] == 400, "its ID is forgotten"


async def test_idle_linked_pair_is_closed(harness: Harness) -> None:
    gateway = await webroute_gateway(harness, timeout=1)
    server = await register(gateway)
    client = await park(gateway, "/test/path/", "idle")
    await notification(server)
    leg = await Conn.open(gateway.ports[0], webroute_head("/test/path/", SERVER_KEY, "idle"))
    await leg.head()
    await client.head()
    for _ in range(3):  # traffic keeps it open past the timeout
        await asyncio.sleep(0.5)
        client.writer.write(b".")
        assert await leg.read(1) == b"."
    started = time.monotonic()
    assert await client.rest() == b""
    assert await leg.rest() == b""
    assert 0.7 < time.monotonic() - started < 3


# -- registered servers ----------------------------------------------------------------


async def test_silent_server_is_pinged_then_dropped(harness: Harness) -> None:
    gateway = await webroute_gateway(harness, keepalive=0.3)
    server = await register(gateway)
    opcode, stamp = await server.frame()
    assert opcode == 9 and stamp.isdigit(), "a ping after 0.3 s of silence"
    started = time.monotonic()
    assert await server.rest() == b"", "unanswered: dropped"
    assert 0.2 < time.monotonic() - started < 2
    raw = await http_exchange(gateway.ports[0], webroute_head("/test/path/", CLIENT_KEY, "x"))
    assert raw == json_answer(b"502 Bad Gateway", MISSING_DESTINATION), "and its path removed"


async def test_answering_server_stays(harness: Harness) -> None:
    gateway = await webroute_gateway(harness, keepalive=0.3)
    server = await register(gateway)
    for _ in range(4):
        opcode, stamp = await server.frame()
        assert opcode == 9
        server.send_frame(0xA, stamp)  # pong
    client = await park(gateway, "/test/path/", "still")
    assert (await notification(server))["id"] == "still"
    client.close()


async def test_server_close_frame_is_answered_and_path_removed(harness: Harness) -> None:
    gateway = await webroute_gateway(harness)
    server = await register(gateway)
    server.send_frame(0x8, (1000).to_bytes(2, "big"))
    assert await server.frame() == (0x8, (1000).to_bytes(2, "big"))
    assert await server.rest() == b""
    services = gateway.named_services
    assert services is not None
    await wait_until(lambda: not services.directory.paths())


async def test_losing_the_only_server_closes_its_parked_clients(harness: Harness) -> None:
    gateway = await webroute_gateway(harness)
    server = await register(gateway)
    clients = [await park(gateway, "/test/path/", f"id{n}") for n in range(3)]
    for _ in clients:
        await notification(server)
    server.close()
    for client in clients:
        assert await client.rest() == b"", "closed at once, without a 504"


async def test_several_servers_share_a_path_and_fail_over(harness: Harness) -> None:
    gateway = await webroute_gateway(harness)
    first = await register(gateway)
    second = await register(gateway)
    clients = [await park(gateway, "/test/path/", f"c{n}") for n in range(4)]
    got_first = [(await notification(first))["id"] for _ in range(2)]
    got_second = [(await notification(second))["id"] for _ in range(2)]
    assert sorted(got_first + got_second) == ["c0", "c1", "c2", "c3"]
    assert got_first == ["c0", "c2"] and got_second == ["c1", "c3"], "in turn"
    first.close()  # c0 and c2 were offered to it: now the second server gets them
    assert sorted([(await notification(second))["id"] for _ in range(2)]) == ["c0", "c2"]
    for n, client in enumerate(clients):
        leg = await Conn.open(gateway.ports[0], webroute_head("/test/path/", SERVER_KEY, f"c{n}"))
        assert await leg.head() == linked(f"c{n}")
        assert await client.head() == linked(f"c{n}")
        leg.writer.write(b"hi %d" % n)
        assert await client.read(4) == b"hi %d" % n
    rows = gateway.named_services.rows()  # type: ignore[union-attr]
    assert rows == [{"path": "/test/path/", "servers": 1, "waiting": 0, "linked": 4}]


async def test_exclusive_keys_refuse_a_second_server(harness: Harness) -> None:
    gateway = await webroute_gateway(
        harness, KeyTable.from_keys(SERVER_KEY, CLIENT_KEY, exclusive=True)
    )
    first = await register(gateway, "/p")
    raw = await http_exchange(gateway.ports[0], registration_head("/p"))
    assert raw == json_answer(b"400 Bad Request", INVALID_REQUEST)
    first.close()


async def test_keys_limited_to_paths(harness: Harness) -> None:
    keys = parse_keys_file(
        json.dumps(
            {
                "server_keys": {"S-jira": ["/jira"]},
                "client_keys": {"C-jira": ["/jira"], "C-all": ["*"]},
            }
        ).encode()
    )
    gateway = await webroute_gateway(harness, keys)
    refused = await http_exchange(gateway.ports[0], registration_head("/wiki", "S-jira"))
    assert split_response(refused)[0] == 403
    assert b'"errorcode":"path_not_allowed"' in refused
    server = await Conn.open(gateway.ports[0], registration_head("/jira", "S-jira"))
    assert await server.head() == REGISTERED
    raw = await http_exchange(gateway.ports[0], webroute_head("/wiki", "C-jira", "x"))
    assert split_response(raw)[0] == 403
    client = await Conn.open(gateway.ports[0], webroute_head("/jira", "C-jira", "y"))
    assert (await notification(server))["id"] == "y"
    client.close()


# -- a bounded queue per path ----------------------------------------------------------------

BUSY_BODY = (
    b'{"success":false,"error":"Too many clients are waiting for the requested destination.",'
    b'"errorcode":"destination_busy"}'
)
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    + NO_CACHE
    + b"Retry-After: 5\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(BUSY_BODY)
    + BUSY_BODY
)


async def test_one_client_more_than_max_waiting_is_refused_at_once(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """N wait, the N+1th gets 503 at once (logged once, counted); the N are linked later."""
    gateway = await webroute_gateway(harness, max_waiting=3, log_summary_interval=0.5)
    server = await register(gateway)
    other_path = await register(gateway, "/other/")
    clients = [await park(gateway, "/test/path/", f"w{n}") for n in range(3)]
    assert [(await notification(server))["id"] for _ in clients] == ["w0", "w1", "w2"]
    with caplog.at_level(logging.INFO, logger="cc"):
        started = time.monotonic()
        assert (
            await http_exchange(gateway.ports[0], webroute_head("/test/path/", CLIENT_KEY, "w3"))
            == BUSY
        )
        assert time.monotonic() - started < 1.0, "refused at once, not after a timeout"
        await http_exchange(gateway.ports[0], webroute_head("/test/path/", CLIENT_KEY, "w4"))
    warnings = [r.getMessage() for r in caplog.records if "already wait" in r.getMessage()]
    assert len(warnings) == 1, "the first refusal is logged, the next ones summed up"
    assert "Named service /test/path/: 3 clients already wait" in warnings[0]
    assert "--remoted-max-waiting 3" in warnings[0]
    with caplog.at_level(logging.INFO, logger="cc"):
        await wait_until(lambda: "1 busy refusals (503) for /test/path/" in caplog.text)
    elsewhere = await park(gateway, "/other/", "x0")
    assert (await notification(other_path))["id"] == "x0", "the cap is per path"
    for n, client in enumerate(clients):
        assert await client.silent(0.05), "still waiting, not refused"
        leg = await Conn.open(gateway.ports[0], webroute_head("/test/path/", SERVER_KEY, f"w{n}"))
        assert await leg.head() == linked(f"w{n}")
        assert await client.head() == linked(f"w{n}")
        client.writer.write(b"hello %d" % n)
        assert await leg.read(7) == b"hello %d" % n
    late = await park(gateway, "/test/path/", "w5")
    assert (await notification(server))["id"] == "w5", "linked clients left the queue"
    scrape = await http_exchange(gateway.ports[0], b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (
        b'cloud_connector_named_service_busy_refusals_total{remote="svc:/test/path/"} 2.0' in scrape
    )
    assert b'cloud_connector_named_service_busy_refusals_total{remote="svc:/other/"} 0.0' in scrape
    for conn in (late, elsewhere, server, other_path):
        conn.close()


async def test_waiting_clients_that_hang_up_free_their_place(harness: Harness) -> None:
    gateway = await webroute_gateway(harness, max_waiting=2)
    server = await register(gateway)
    first, second = await park(gateway, "/test/path/", "a"), await park(gateway, "/test/path/", "b")
    await notification(server)
    await notification(server)
    raw = await http_exchange(gateway.ports[0], webroute_head("/test/path/", CLIENT_KEY, "c"))
    assert split_response(raw)[0] == 503
    first.close()
    services = gateway.named_services
    assert services is not None
    await wait_until(lambda: services.directory.waiting("/test/path/") == 1)
    third = await park(gateway, "/test/path/", "c")
    assert (await notification(server))["id"] == "c", "the place first held is third's"
    assert await third.silent(0.1), "third waits, no 503"
    raw = await http_exchange(gateway.ports[0], webroute_head("/test/path/", CLIENT_KEY, "d"))
    assert split_response(raw)[0] == 503, "full again"
    for conn in (second, third, server):
        conn.close()


async def test_max_waiting_zero_lifts_the_cap(harness: Harness) -> None:
    gateway = await webroute_gateway(harness, max_waiting=0)
    server = await register(gateway)
    clients = [await park(gateway, "/test/path/", f"z{n}") for n in range(200)]
    for _ in clients:
        await notification(server)
    assert gateway.named_services.directory.waiting("/test/path/") == 200  # type: ignore[union-attr]
    for conn in (*clients, server):
        conn.close()


# -- the gateway's front ---------------------------------------------------------------------


async def test_accepted_legs_outlive_the_login_grace_time(harness: Harness) -> None:
    gateway = await webroute_gateway(harness, login_grace_time=0.5)
    server = await register(gateway)
    client = await park(gateway, "/test/path/", "grace")
    await notification(server)
    leg = await Conn.open(gateway.ports[0], webroute_head("/test/path/", SERVER_KEY, "grace"))
    await leg.head()
    await client.head()
    await asyncio.sleep(1.0)
    client.writer.write(b"still here")
    assert await leg.read(10) == b"still here"
    assert len(gateway.admission) == 0, "both legs count as logged in"


async def test_wrong_keys_cost_the_source_and_ban_it(harness: Harness) -> None:
    policy = GuardPolicy(free_failures=1, base_delay=0.3, max_delay=0.3, ban_after=3)
    gateway = await webroute_gateway(harness, guard=policy)
    head = webroute_head("/p", "wrong", "x")
    started = time.monotonic()
    await http_exchange(gateway.ports[0], head)
    assert time.monotonic() - started < 0.25, "the first failure is free"
    started = time.monotonic()
    assert split_response(await http_exchange(gateway.ports[0], head))[0] == 403
    assert time.monotonic() - started >= 0.3, "the second waits for its answer"
    await http_exchange(gateway.ports[0], head)
    raw = await http_exchange(gateway.ports[0], webroute_head("/p", CLIENT_KEY, "x"))
    status, headers, body = split_response(raw)
    assert status == 429 and int(headers["retry-after"]) > 0
    assert json.loads(body)["errorcode"] == "too_many_attempts"
    other = await Conn.open(gateway.ports[0], webroute_head("/p", CLIENT_KEY, "x"), "127.0.0.2")
    assert split_response(await other.rest())[0] == 502, "other addresses are not affected"


async def test_chisel_sessions_still_work_beside_named_services(harness: Harness) -> None:
    gateway = await webroute_gateway(harness)
    service = await harness.service(echo_handler)
    port = free_port()
    await harness.connect(gateway, [f"R:127.0.0.1:{port}:127.0.0.1:{service}"])
    async with asyncio.timeout(STEP):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        writer.close()
    await register(gateway)


async def test_named_services_have_rows_on_the_status_page(harness: Harness) -> None:
    """/status.json, /status and the terminal table show each path: servers, waiting, linked."""
    from cc.protocol.basicauth import AdminCredentials
    from cc.protocol.status import format_table
    from tests.gateway.test_operating import ADMIN, auth, fetch

    gateway = await webroute_gateway(harness, admin=AdminCredentials.parse(":".join(ADMIN)))
    port = gateway.ports[0]
    first, second = await register(gateway, "/a/"), await register(gateway, "/a/")
    client = await park(gateway, "/a/", new_id())
    await notification(first)  # the client waits for its server's second leg
    status, _, body = await fetch(port, "/status.json", auth())
    assert status == 200
    document = json.loads(body)
    assert document["services"] == [{"path": "/a/", "servers": 2, "waiting": 1, "linked": 0}]
    assert "service /a/: 2 server(s), 1 waiting, 0 linked" in format_table(document)
    status, _, page = await fetch(port, "/status", auth())
    assert status == 200 and b'<tr class="service" data-path="/a/">' in page
    for conn in (client, first, second):
        conn.writer.close()


def _reset(conn: Conn) -> None:
    """End ``conn`` with an RST (SO_LINGER 0), as a killed or failing peer does."""
    sock = conn.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.writer.transport.abort()


async def _ends_with_reset(conn: Conn) -> bool:
    """Read to the end: True for a reset, False for a clean EOF."""
    try:
        async with asyncio.timeout(STEP):
            while await conn.reader.read(65536):
                pass
    except ConnectionResetError:
        return True
    return False


async def _linked_pair(harness: Harness, wid: str) -> tuple[Conn, Conn]:
    """A client and a server leg of one WebRoute pair, linked: (client, leg)."""
    gateway = await webroute_gateway(harness)
    server = await register(gateway)
    client = await park(gateway, "/test/path/", wid)
    await notification(server)
    leg = await Conn.open(gateway.ports[0], webroute_head("/test/path/", SERVER_KEY, wid))
    assert await leg.head() == linked(wid)
    assert await client.head() == linked(wid)
    return client, leg


@pytest.mark.parametrize("cut", ["server", "client"])
async def test_a_leg_cut_by_a_reset_resets_the_other(harness: Harness, cut: str) -> None:
    """A cut stream must not look complete: a reset on one leg is a reset on the other."""
    client, leg = await _linked_pair(harness, "cut")
    leg.writer.write(b"part of an answer")
    assert await client.read(17) == b"part of an answer"
    dead, other = (leg, client) if cut == "server" else (client, leg)
    _reset(dead)
    assert await _ends_with_reset(other), f"the {cut}'s reset reached the other leg as a FIN"


async def test_a_leg_that_ends_cleanly_ends_the_other_cleanly(harness: Harness) -> None:
    client, leg = await _linked_pair(harness, "clean")
    leg.writer.write(b"all of an answer")
    leg.close()
    assert await client.read(16) == b"all of an answer"
    assert not await _ends_with_reset(client)
