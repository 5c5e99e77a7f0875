"""WebRoute (Remoted API Server) decisions without sockets: keys, answers, directory, probe.

The expected bytes were captured from remoted-api-server's own ``server.php``
(commit 42de4af) on loopback; tests/gateway/test_webroute.py checks the same bytes
come out of the gateway's socket.
"""

from __future__ import annotations

import json

import pytest

from cc.protocol import webroute as wr
from cc.protocol.errors import AuthFileError, ProtocolError, RemoteError
from cc.protocol.http import Request, parse_request, parse_response

SERVER_KEY = "skey123"
CLIENT_KEY = "ckey123"
KEYS = wr.KeyTable.from_keys(SERVER_KEY, CLIENT_KEY)


def request(path: str = "/p", *lines: str) -> Request:
    head = "\r\n".join([f"GET {path} HTTP/1.1", "Host: gw", *lines]) + "\r\n\r\n"
    return parse_request(head.encode())


def webroute(path: str = "/p", key: str = CLIENT_KEY, *extra: str, wid: str = "abc") -> Request:
    return request(
        path,
        f"X-Remoted-APIKey: {key}",
        "Connection: keep-alive, Upgrade",
        "Upgrade: webroute",
        "WebRoute-Version: 1",
        f"WebRoute-ID: {wid}",
        *extra,
    )


def registration(path: str = "/p", key: str = SERVER_KEY, *extra: str) -> Request:
    return request(
        path,
        f"X-Remoted-APIKey: {key}",
        "Connection: keep-alive, Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *extra,
    )


def served(*paths: str) -> wr.Directory[object, object]:
    directory: wr.Directory[object, object] = wr.Directory()
    for path in paths:
        directory.register(path, object())
    return directory


def test_accept_key_is_remoteds() -> None:
    # remoted's server.php answered WebRoute-ID "abc" with this value
    assert wr.webroute_accept("abc") == "9D/+GxbhzrLgqN4hx8V9Zw9gk7o="
    assert wr.switching_protocols("abc") == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: webroute\r\nConnection: Upgrade\r\n"
        b"Sec-WebRoute-Accept: 9D/+GxbhzrLgqN4hx8V9Zw9gk7o=\r\n\r\n"
    )


def test_error_bodies_are_remoteds_json() -> None:
    assert json.loads(wr.BODY_INVALID_KEY) == {
        "success": False,
        "error": "Invalid or missing 'X-Remoted-APIKey' header.",
        "errorcode": "invalid_missing_apikey",
    }
    assert len(wr.BODY_INVALID_KEY) == 110  # remoted's Content-Length
    assert len(wr.BODY_MISSING_DESTINATION) == 112
    assert len(wr.BODY_INVALID_SERVER_REQUEST) == 115


def test_notification_is_compact_json_with_unescaped_slashes() -> None:
    text = wr.notification("127.0.0.1:59390", "a/b", 60)
    assert text == '{"ipaddr":"127.0.0.1:59390","id":"a/b","timeout":60}'


@pytest.mark.parametrize(
    ("header", "timeout"),
    [(None, 60), ("5", 60), ("120", 120), ("120.9", 120), ("x", 60), ("nan", 60), ("1e9", 86400)],
)
def test_timeout_is_at_least_the_default(header: str | None, timeout: int) -> None:
    lines = [] if header is None else [f"WebRoute-Timeout: {header}"]
    assert wr.requested_timeout(request("/p", *lines)) == timeout


# -- which request goes where ----------------------------------------------------------


def test_routing_takes_webroute_and_keyed_websockets_only() -> None:
    assert wr.is_webroute_request(webroute())
    assert wr.is_webroute_request(request("/", "Upgrade: WebRoute"))  # any case, no key
    assert wr.is_webroute_request(registration())
    plain_ws = request("/", "Upgrade: websocket", "Connection: Upgrade")
    assert not wr.is_webroute_request(plain_ws)  # chisel's upgrade
    assert not wr.is_webroute_request(request("/", "X-Remoted-APIKey: x"))  # no upgrade


@pytest.mark.parametrize("key", [None, "wrong", SERVER_KEY + "x", SERVER_KEY[:-1]])
def test_missing_or_wrong_key_is_403_and_a_failed_login(key: str | None) -> None:
    lines = [] if key is None else [f"X-Remoted-APIKey: {key}"]
    decision = wr.decide(request("/p", "Upgrade: webroute", *lines), KEYS, served("/p"))
    assert isinstance(decision, wr.Refuse)
    assert decision.wrong_key
    assert decision.data.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert decision.data.endswith(b"\r\n\r\n" + wr.BODY_INVALID_KEY)


def test_key_header_name_is_case_insensitive() -> None:
    decision = wr.decide(
        request("/p", f"x-remoted-apikey: {CLIENT_KEY}", "Upgrade: webroute"), KEYS, served()
    )
    assert isinstance(decision, wr.Refuse)
    assert b"missing_destination" in decision.data


def test_client_on_unserved_path_is_502() -> None:
    decision = wr.decide(webroute("/nobody"), KEYS, served("/p"))
    assert isinstance(decision, wr.Refuse) and not decision.wrong_key
    assert decision.data.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert decision.data.endswith(wr.BODY_MISSING_DESTINATION)


def test_path_is_matched_exactly_without_query() -> None:
    assert isinstance(wr.decide(webroute("/p?x=1"), KEYS, served("/p")), wr.Park)
    assert isinstance(wr.decide(webroute("/p/"), KEYS, served("/p")), wr.Refuse)


def test_wrong_version_is_426() -> None:
    req = request(
        "/p",
        f"X-Remoted-APIKey: {CLIENT_KEY}",
        "Connection: Upgrade",
        "Upgrade: webroute",
        "WebRoute-Version: 2",
        "WebRoute-ID: abc",
    )
    decision = wr.decide(req, KEYS, served("/p"))
    assert isinstance(decision, wr.Refuse)
    assert decision.data == b"HTTP/1.1 426 Upgrade Required\r\nWebRoute-Version: 1\r\n\r\n"


def test_client_without_webroute_upgrade_is_400() -> None:
    decision = wr.decide(request("/p", f"X-Remoted-APIKey: {CLIENT_KEY}"), KEYS, served("/p"))
    assert isinstance(decision, wr.Refuse)
    assert decision.data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert decision.data.endswith(wr.BODY_INVALID_CLIENT_REQUEST)


def test_client_is_parked_with_its_timeout() -> None:
    decision = wr.decide(webroute("/p", CLIENT_KEY, "WebRoute-Timeout: 90"), KEYS, served("/p"))
    assert decision == wr.Park("/p", "abc", 90, decision.grant)  # type: ignore[union-attr]


def test_client_over_max_waiting_is_503_busy() -> None:
    directory = served("/p", "/q")
    for n in range(2):
        directory.park(wr.Parked("/p", f"w{n}", object(), 60, object()))
    decision = wr.decide(webroute("/p"), KEYS, directory, max_waiting=2)
    assert isinstance(decision, wr.Refuse) and decision.busy and not decision.wrong_key
    response = parse_response(decision.data.split(b"\r\n\r\n")[0] + b"\r\n\r\n")
    assert (response.status, response.reason) == (503, "Service Unavailable")
    assert response.headers.get("Retry-After") == str(wr.BUSY_RETRY_AFTER)
    assert decision.data.endswith(wr.BODY_DESTINATION_BUSY)
    assert json.loads(wr.BODY_DESTINATION_BUSY)["errorcode"] == "destination_busy"
    assert isinstance(wr.decide(webroute("/q"), KEYS, directory, max_waiting=2), wr.Park)
    assert isinstance(wr.decide(webroute("/p"), KEYS, directory, max_waiting=3), wr.Park)
    assert isinstance(wr.decide(webroute("/p"), KEYS, directory, max_waiting=0), wr.Park)
    assert isinstance(wr.decide(webroute("/p"), KEYS, directory), wr.Park), "no cap by default"


def test_a_full_queue_still_links_its_servers() -> None:
    directory = served("/p")
    directory.park(wr.Parked("/p", "abc", object(), 60, object()))
    decision = wr.decide(webroute("/p", SERVER_KEY), KEYS, directory, max_waiting=1)
    assert isinstance(decision, wr.Link), "a server's second leg empties the queue"


def test_server_with_unknown_id_is_400() -> None:
    decision = wr.decide(webroute("/p", SERVER_KEY), KEYS, served("/p"))
    assert isinstance(decision, wr.Refuse)
    assert decision.data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert decision.data.endswith(wr.BODY_INVALID_SERVER_REQUEST)


def test_server_with_parked_id_links() -> None:
    directory = served("/p")
    directory.park(wr.Parked("/p", "abc", object(), 60, object()))
    decision = wr.decide(webroute("/p", SERVER_KEY), KEYS, directory)
    assert isinstance(decision, wr.Link)
    assert (decision.path, decision.webroute_id, decision.timeout) == ("/p", "abc", 60)


def test_a_client_key_cannot_answer_a_parked_client() -> None:
    """remoted would link two clients with the same ID; only a server key links here."""
    directory = served("/p")
    directory.park(wr.Parked("/p", "abc", object(), 60, object()))
    decision = wr.decide(webroute("/p", CLIENT_KEY), KEYS, directory)
    assert isinstance(decision, wr.Refuse)


def test_registration_needs_origin() -> None:
    decision = wr.decide(registration(), KEYS, served())
    assert isinstance(decision, wr.Refuse)
    assert decision.data == b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\n"


def test_registration_answers_the_websocket_accept() -> None:
    decision = wr.decide(registration("/p", SERVER_KEY, "Origin: http://x"), KEYS, served())
    assert isinstance(decision, wr.Register)
    assert decision.data == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    )


def test_registration_with_wrong_websocket_version_is_426() -> None:
    req = parse_request(
        b"GET /p HTTP/1.1\r\nHost: gw\r\nX-Remoted-APIKey: skey123\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Key: a2V5\r\nSec-WebSocket-Version: 8\r\n"
        b"Origin: http://x\r\n\r\n"
    )
    decision = wr.decide(req, KEYS, served())
    assert isinstance(decision, wr.Refuse)
    assert decision.data == (
        b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\nConnection: close\r\n\r\n"
    )


def test_second_server_is_welcome_unless_exclusive() -> None:
    req = registration("/p", SERVER_KEY, "Origin: http://x")
    assert isinstance(wr.decide(req, KEYS, served("/p")), wr.Register)
    strict = wr.KeyTable.from_keys(SERVER_KEY, CLIENT_KEY, exclusive=True)
    decision = wr.decide(req, strict, served("/p"))
    assert isinstance(decision, wr.Refuse)
    assert decision.data.endswith(wr.BODY_INVALID_SERVER_REQUEST)


def test_client_key_cannot_register() -> None:
    decision = wr.decide(registration("/p", CLIENT_KEY, "Origin: http://x"), KEYS, served())
    assert isinstance(decision, wr.Refuse)
    assert b"missing_destination" in decision.data  # as remoted: a client key is a client


# -- keys ---------------------------------------------------------------------------


def test_keys_are_kept_as_digests() -> None:
    assert all(SERVER_KEY.encode() not in digest for digest, _ in KEYS.entries)
    assert all(len(digest) == 32 for digest, _ in KEYS.entries)


def test_remoted_config_dat_is_a_keys_file() -> None:
    data = json.dumps(
        {"server_apikey": "S1", "client_apikey": "C1", "host": "127.0.0.1", "port": 1}
    ).encode()
    keys = wr.parse_keys_file(data)
    assert keys.lookup("S1").role is wr.Role.SERVER  # type: ignore[union-attr]
    assert keys.lookup("C1").role is wr.Role.CLIENT  # type: ignore[union-attr]
    assert keys.lookup("S2") is None
    assert not keys.exclusive


def test_keys_file_limits_keys_to_paths() -> None:
    keys = wr.parse_keys_file(
        json.dumps(
            {
                "server_keys": {"S-api": ["/api/.*"]},
                "client_keys": {"C-any": ["*"], "C-jira": ["/jira"]},
                "exclusive": True,
            }
        ).encode()
    )
    assert keys.exclusive
    directory = served("/api/v1", "/jira", "/other")
    assert isinstance(wr.decide(webroute("/jira", "C-jira"), keys, directory), wr.Park)
    refused = wr.decide(webroute("/other", "C-jira"), keys, directory)
    assert isinstance(refused, wr.Refuse) and not refused.wrong_key
    assert refused.data.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b'"errorcode":"path_not_allowed"' in refused.data
    assert isinstance(wr.decide(webroute("/other", "C-any"), keys, directory), wr.Park)
    register = registration("/elsewhere", "S-api", "Origin: x")
    assert isinstance(wr.decide(register, keys, served()), wr.Refuse)
    register = registration("/api/v2", "S-api", "Origin: x")
    assert isinstance(wr.decide(register, keys, served()), wr.Register)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[]", "JSON object"),
        (b"{", "not valid JSON"),
        (b"{}", "no keys"),
        (b'{"server_keys": {"": ["*"]}}', "empty key"),
        (b'{"server_keys": {"k": "*"}}', "list of path regexes"),
        (b'{"client_keys": {"k": ["("]}}', "invalid address regex"),
        (b'{"server_apikey": 5}', "non-empty string"),
        (b'{"server_apikey": "k", "exclusive": 1}', "true or false"),
    ],
)
def test_bad_keys_files_are_named(data: bytes, message: str) -> None:
    with pytest.raises(AuthFileError, match=message) as info:
        wr.parse_keys_file(data)
    assert '"k"' not in str(info.value)


# -- the directory --------------------------------------------------------------------


def test_directory_balances_in_turn_and_fails_over() -> None:
    directory: wr.Directory[str, str] = wr.Directory()
    for server in ("a", "b", "c"):
        directory.register("/p", server)
    assert [directory.pick("/p") for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]
    directory.park(wr.Parked("/p", "1", "client1", 60, "b"))
    directory.park(wr.Parked("/p", "2", "client2", 60, "c"))
    orphans = directory.unregister("/p", "b")
    assert [p.client for p in orphans] == ["client1"]
    assert directory.servers("/p") == ("a", "c")
    assert directory.pick("/p", avoid=["a"]) == "c"
    directory.unregister("/p", "a")
    directory.unregister("/p", "c")
    assert directory.servers("/p") == ()
    assert directory.pick("/p") is None
    assert directory.paths() == []


def test_directory_take_forgets() -> None:
    directory: wr.Directory[str, str] = wr.Directory()
    directory.park(wr.Parked("/p", "1", "client", 60, "a"))
    assert directory.is_parked("/p", "1")
    assert not directory.is_parked("/p", "")
    assert directory.take("/p", "1") is not None
    assert directory.take("/p", "1") is None
    assert not directory.is_parked("/p", "1")


def test_directory_counts_waiting_clients_per_path() -> None:
    directory: wr.Directory[str, str] = wr.Directory()
    for wid in ("1", "2"):
        directory.park(wr.Parked("/p", wid, "client", 60, "a"))
    directory.park(wr.Parked("/q", "1", "client", 60, "a"))
    directory.park(wr.Parked("/p", "2", "again", 60, "b"))  # the same ID is one client
    assert (directory.waiting("/p"), directory.waiting("/q"), directory.waiting("/r")) == (2, 1, 0)
    directory.take("/p", "1")
    directory.take("/p", "9")  # not parked: nothing changes
    assert directory.waiting("/p") == 1
    directory.take("/p", "2")
    directory.take("/q", "1")
    assert (directory.waiting("/p"), directory.waiting("/q")) == (0, 0)


def test_idle_probe_pings_after_silence_and_drops_when_unanswered() -> None:
    probe = wr.IdleProbe(30.0, now=0.0)
    assert probe.check(29.9) is None
    assert probe.next_check() == 30.0
    assert probe.check(31.0) == wr.IdleProbe.PING
    assert probe.check(60.9) is None
    assert probe.next_check() == 61.0
    assert probe.check(61.0) == wr.IdleProbe.DROP


def test_idle_probe_traffic_resets() -> None:
    probe = wr.IdleProbe(30.0, now=0.0)
    assert probe.check(30.0) == wr.IdleProbe.PING
    probe.traffic(40.0)  # the pong (or anything) arrived
    assert probe.check(69.0) is None
    assert probe.check(70.0) == wr.IdleProbe.PING


# -- our own ends ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "path", "host", "port"),
    [
        ("R:svc/jira:jira.internal:443", "/jira", "jira.internal", 443),
        ("R:svc/test/path/:127.0.0.1:8080", "/test/path/", "127.0.0.1", 8080),
        ("R:svc/v6:[::1]:22", "/v6", "[::1]", 22),
        ("R:svc/:localhost:80", "/", "localhost", 80),
    ],
)
def test_service_remotes(spec: str, path: str, host: str, port: int) -> None:
    remote = wr.parse_service_remote(spec)
    assert (remote.path, remote.host, remote.port) == (path, host, port)
    assert str(remote) == spec


@pytest.mark.parametrize(
    "spec",
    [
        "R:svc/jira:443",  # no host
        "R:svc/jira:host:0",
        "R:svc/jira:host:http",
        "R:svc/a b:host:80",
        "R:svc/a?x=1:host:80",
        "R:svc/x:[nope]:80",
        "R:8080:host:80",
    ],
)
def test_bad_service_remotes(spec: str) -> None:
    with pytest.raises(RemoteError):
        wr.parse_service_remote(spec)


def test_webroute_request_is_the_sdks() -> None:
    data = wr.webroute_request("/p", "gw:8080", "KEY", "ID", 90)
    lines = data.decode().split("\r\n")
    assert lines[0] == "GET /p HTTP/1.1"
    assert lines[1] == "Host: gw:8080"
    assert lines[3:] == [
        "X-Remoted-APIKey: KEY",
        "Connection: keep-alive, Upgrade",
        "Pragma: no-cache",
        "WebRoute-Version: 1",
        "WebRoute-ID: ID",
        "WebRoute-Timeout: 90",
        "Upgrade: webroute",
        "",
        "",
    ]
    request = parse_request(data)
    assert wr.is_webroute_request(request)
    assert isinstance(wr.decide(request, wr.KeyTable.from_keys(None, "KEY"), served("/p")), wr.Park)


def test_registration_request_is_accepted_by_decide() -> None:
    data = wr.registration_request("/p", "gw", SERVER_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
    decision = wr.decide(parse_request(data), KEYS, served())
    assert isinstance(decision, wr.Register)


def test_new_ids_are_64_letters_and_digits() -> None:
    ids = {wr.new_webroute_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 64 and i.isalnum() and i.isascii() for i in ids)


def test_check_switch() -> None:
    ok = parse_response(wr.switching_protocols("abc"))
    wr.check_switch(ok, b"", "abc")
    with pytest.raises(ProtocolError, match="Sec-WebRoute-Accept"):
        wr.check_switch(ok, b"", "abd")
    refused = wr.json_response(502, wr.BODY_MISSING_DESTINATION)
    head, _, body = refused.partition(b"\r\n\r\n")
    with pytest.raises(wr.WebRouteRefused) as info:
        wr.check_switch(parse_response(head + b"\r\n\r\n"), body, "abc")
    assert str(info.value) == "502 Bad Gateway (missing_destination)"
    with pytest.raises(wr.WebRouteRefused) as info:
        wr.check_switch(parse_response(wr.WEBROUTE_UPGRADE_REQUIRED), b"", "abc")
    assert (info.value.status, info.value.errorcode) == (426, "")


def test_notification_reader_splits_a_stream_of_objects() -> None:
    reader = wr.NotificationReader()
    text = (
        wr.notification("1.2.3.4:5", "a", 60)
        + '{"unrelated":true}'
        + wr.notification("[::1]:6", "b", 90)
    ).encode()
    assert reader.feed(text[:10]) == []
    notes = reader.feed(text[10:])
    assert notes == [
        wr.Notification("1.2.3.4:5", "a", 60),
        wr.Notification("[::1]:6", "b", 90),
    ]


def test_notification_reader_is_bounded() -> None:
    reader = wr.NotificationReader()
    with pytest.raises(ProtocolError):
        reader.feed(b'{"x":"' + b"a" * (wr.NotificationReader.MAX_BUFFER + 10))
