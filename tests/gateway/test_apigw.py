"""The HTTP API gateway end to end: statuses, routing, policies, headers, reuse.

Real sockets on 127.0.0.1: an h11 client, the app listener, a connector session,
an h11 backend (tests/support/apigw.py).
"""

from __future__ import annotations

import asyncio

from tests.support.apigw import ApiGateway, Backend, Client, targets_yaml
from tests.support.harness import http_exchange, split_response

__all__: list[str] = []


async def test_get_through_a_connector(api: ApiGateway, backend: Backend) -> None:
    await api.start(targets_yaml(backend.port))
    await api.connect([f"127.0.0.1:{backend.port}"])
    async with Client(api.port) as client:
        response = await client.request("GET", "/hello?q=1", headers=[("X-Custom", "yes")])
        assert response.status == 200, response.text
        assert response.text.startswith("GET /hello?q=1\nbackend backend\n")
        _method, _target, headers = backend.requests[-1]
        assert headers["host"] == f"127.0.0.1:{backend.port}"
        assert headers["x-custom"] == "yes"
        assert headers["x-forwarded-for"] == "127.0.0.1"
        assert headers["x-real-ip"] == "127.0.0.1"
        assert headers["x-forwarded-host"] == "api.test"
        assert headers["x-forwarded-proto"] == "http"
        assert headers["x-forwarded-port"] == str(api.port)
        # keep-alive both ways: the next request uses the same connections
        for _ in range(5):
            assert (await client.request("GET", "/again")).status == 200
    assert backend.connections == 1
    assert api.app is not None and api.app.pool.opened == 1


async def test_host_without_target_is_404_and_host_matching(
    api: ApiGateway, backend: Backend
) -> None:
    await api.start(targets_yaml(backend.port))
    await api.connect([f"127.0.0.1:{backend.port}"])
    async with Client(api.port) as client:
        assert (await client.request("GET", "/", host="other.test")).status == 404
        assert (await client.request("GET", "/", host="API.Test:8080")).status == 200
        assert (await client.request("GET", "/", host="api.test.")).status == 200


async def test_policy_403_names_method_and_path(api: ApiGateway, backend: Backend) -> None:
    policy = '\n      /open: [GET]\n      "^/api/": [GET, POST]\n      /any: "*"'
    await api.start(targets_yaml(backend.port, policy))
    await api.connect([f"127.0.0.1:{backend.port}"])
    async with Client(api.port) as client:
        assert (await client.request("GET", "/open?x=1")).status == 200
        denied = await client.request("POST", "/open")
        assert denied.status == 403
        assert "POST /open" in denied.text
        assert (await client.request("POST", "/api/v1")).status == 200
        assert (await client.request("DELETE", "/api/v1")).status == 403
        assert (await client.request("PATCH", "/any")).status == 200
        assert (await client.request("GET", "/other")).status == 403
        # dot segments cannot step out of an allowed prefix
        assert (await client.request("GET", "/api/../admin")).status == 403
        assert (await client.request("GET", "/api/%2e%2e/admin")).status == 403
        # and what passes is what the target gets: the normalised path
        assert (await client.request("GET", "/api/./x/../v2")).status == 200
        assert backend.requests[-1][1] == "/api/v2"
    async with Client(api.port) as client:
        assert (await client.request("GET", "/api/..%2fadmin")).status == 400


async def test_no_connector_is_502_then_served(api: ApiGateway, backend: Backend) -> None:
    await api.start(targets_yaml(backend.port))
    async with Client(api.port) as client:
        response = await client.request("GET", "/")
        assert response.status == 502
        assert "no connector" in response.text
    await api.connect([f"127.0.0.1:{backend.port}"])
    async with Client(api.port) as client:
        assert (await client.request("GET", "/")).status == 200


async def test_connector_that_did_not_declare_the_target_is_not_used(
    api: ApiGateway, backend: Backend
) -> None:
    await api.start(targets_yaml(backend.port))
    await api.connect(["127.0.0.1:1"])
    async with Client(api.port) as client:
        assert (await client.request("GET", "/")).status == 502


async def test_unreachable_target_is_502(api: ApiGateway, backend: Backend) -> None:
    from tests.support.net import free_port

    dead = free_port()
    await api.start(targets_yaml(dead))
    await api.connect([f"127.0.0.1:{dead}"])
    async with Client(api.port) as client:
        response = await client.request("GET", "/")
        assert response.status == 502
        assert "could not connect" in response.text


async def test_slow_target_is_504(api: ApiGateway, backend: Backend) -> None:
    await api.start(targets_yaml(backend.port), timeout=0.3)
    await api.connect([f"127.0.0.1:{backend.port}"])
    async with Client(api.port) as client:
        response = await client.request("GET", "/sleep?s=2")
        assert response.status == 504
    async with Client(api.port) as client:
        # a slow ticking answer is not a timeout: each chunk restarts it
        response = await client.request("GET", "/tick?n=4&s=0.2")
        assert response.status == 200 and response.text.count("tick") == 4


async def test_healthz_and_readyz(api: ApiGateway, backend: Backend) -> None:
    await api.start(targets_yaml(backend.port))
    async with Client(api.port) as client:
        assert (await client.request("GET", "/healthz", host="127.0.0.1")).status == 200
        assert (await client.request("GET", "/readyz", host="127.0.0.1")).status == 503
    await api.connect([f"127.0.0.1:{backend.port}"])
    async with Client(api.port) as client:
        assert (await client.request("GET", "/readyz", host="127.0.0.1")).status == 200


async def test_bad_requests_are_400(api: ApiGateway, backend: Backend) -> None:
    await api.start(targets_yaml(backend.port))
    port = api.port
    for raw in (
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: api.test\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
        b"GET /a\\..\\b HTTP/1.1\r\nHost: api.test\r\n\r\n",
    ):
        status, _, _ = split_response(await http_exchange(port, raw))
        assert status == 400, raw


async def test_location_and_cookie_are_made_public(api: ApiGateway, backend: Backend) -> None:
    await api.start(targets_yaml(backend.port))
    await api.connect([f"127.0.0.1:{backend.port}"])
    async with Client(api.port) as client:
        response = await client.request("GET", "/redirect", host="api.test:8080")
        assert response.status == 302
        assert response.headers["location"] == "http://api.test:8080/landed?x=1"
        assert response.headers["set-cookie"] == "s=1; Domain=api.test"


async def test_bodies_chunked_and_length(api: ApiGateway, backend: Backend) -> None:
    await api.start(targets_yaml(backend.port))
    await api.connect([f"127.0.0.1:{backend.port}"])
    import hashlib

    body = b"x" * 100_000
    digest = hashlib.sha256(body).hexdigest()
    async with Client(api.port) as client:
        response = await client.request("POST", "/up", body=body)
        assert f"body 100000 {digest}" in response.text
        response = await client.request("PUT", "/up", body=body, chunked=True)
        assert f"body 100000 {digest}" in response.text
        assert backend.requests[-1][2]["transfer-encoding"] == "chunked"
        response = await client.request("GET", "/tick?n=3&s=0")
        assert response.text == "tick 0\ntick 1\ntick 2\n"
        assert response.headers["transfer-encoding"] == "chunked"
        response = await client.request("HEAD", "/x")
        assert response.status == 200 and response.body == b""
        assert int(response.headers["content-length"]) > 0
        assert (await client.request("GET", "/x")).status == 200


async def test_http10_client_gets_a_dechunked_answer(api: ApiGateway, backend: Backend) -> None:
    await api.start(targets_yaml(backend.port))
    await api.connect([f"127.0.0.1:{backend.port}"])
    raw = await http_exchange(api.port, b"GET /tick?n=2&s=0 HTTP/1.0\r\nHost: api.test\r\n\r\n")
    status, headers, body = split_response(raw)
    assert status == 200 and "transfer-encoding" not in headers
    assert body == b"tick 0\ntick 1\n"


async def test_pipelined_requests(api: ApiGateway, backend: Backend) -> None:
    await api.start(targets_yaml(backend.port))
    await api.connect([f"127.0.0.1:{backend.port}"])
    one = b"GET /1 HTTP/1.1\r\nHost: api.test\r\n\r\n"
    last = b"GET /2 HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n"
    raw = await http_exchange(api.port, one + last)
    assert raw.count(b"HTTP/1.1 200") == 2
    assert b"GET /1\n" in raw and b"GET /2\n" in raw


async def test_client_disconnect_cancels_the_upstream_request(
    api: ApiGateway, backend: Backend
) -> None:
    await api.start(targets_yaml(backend.port))
    running = await api.connect([f"127.0.0.1:{backend.port}"])
    _reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    writer.write(b"GET /sleep?s=5 HTTP/1.1\r\nHost: api.test\r\n\r\n")
    await writer.drain()
    stats = running.connector.stats
    from tests.support.harness import wait_until

    key = f"http 127.0.0.1:{backend.port}"
    await wait_until(lambda: key in stats.remotes and stats.remotes[key].open == 1)
    writer.close()
    await wait_until(lambda: stats.remotes[key].open == 0)
    assert api.app is not None and not api.app.in_flight


async def test_absolute_form_targets_route_by_their_authority(
    api: ApiGateway, backend: Backend
) -> None:
    """RFC 9112 3.2.2: the URL's authority overrides Host; the target gets origin-form."""
    await api.start(targets_yaml(backend.port))
    await api.connect([f"127.0.0.1:{backend.port}"])
    async with Client(api.port) as client:
        response = await client.request("GET", "http://api.test/x?q=1", host="other.test")
        assert response.status == 200, response.text
        assert response.text.startswith("GET /x?q=1\n")
        _method, target, headers = backend.requests[-1]
        assert target == "/x?q=1"
        assert headers["host"] == f"127.0.0.1:{backend.port}"
        assert headers["x-forwarded-host"] == "api.test"
        # https in the URL, upper-case host with a port, no path: routed, path "/"
        response = await client.request("GET", "https://API.test:8080", host="api.test")
        assert response.status == 200, response.text
        assert backend.requests[-1][1] == "/"
        assert backend.requests[-1][2]["x-forwarded-host"] == "API.test:8080"
        # a Host that names the target does not help a URL that names no target
        response = await client.request("GET", "http://other.test/x", host="api.test")
        assert response.status == 404
        # the policy sees the URL's path, normalised
        response = await client.request("GET", "http://api.test/a/../b")
        assert response.status == 200 and backend.requests[-1][1] == "/b"
    for bad in (b"http://a b/x", b"http://user@api.test/x", b"ftp://api.test/x", b"http:///x"):
        raw = await http_exchange(api.port, b"GET " + bad + b" HTTP/1.1\r\nHost: api.test\r\n\r\n")
        status, _, _ = split_response(raw)
        assert status == 400, (bad, raw[:200])
    raw = await http_exchange(
        api.port, b"GET http://api.test:x/y HTTP/1.1\r\nHost: api.test\r\n\r\n"
    )
    assert split_response(raw)[0] == 400


async def test_an_answer_with_bytes_past_its_body_is_relayed_and_not_kept(
    api: ApiGateway,
) -> None:
    """A complete answer in one piece goes out in one write; bytes the target sent
    beyond its Content-Length are never passed on, nor is that connection kept."""
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokSTRAY",  # more than its body
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes",  # exactly its body
        b"HTTP/1.1 204 No Content\r\n\r\n",  # no body at all
    ]
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while answers:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(answers.pop(0))
                await writer.drain()
            await reader.read()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        await api.start(targets_yaml(port))
        await api.connect([f"127.0.0.1:{port}"])
        async with Client(api.port) as client:
            first = await client.request("GET", "/one")
            assert (first.status, first.body) == (200, b"ok")
            second = await client.request("GET", "/two")
            assert (second.status, second.body) == (200, b"yes")
            third = await client.request("GET", "/three")
            assert (third.status, third.body) == (204, b"")
        # the first connection was dropped for its stray bytes; the second was kept
        assert connections == 2
        assert api.app is not None and api.app.pool.opened == 2
    finally:
        server.close()
