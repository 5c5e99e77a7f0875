"""The sans-I/O pieces of the operations endpoints: Basic credentials, the status
document and its table, listen addresses, and the figures workers merge."""

from __future__ import annotations

import base64

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cc.metrics import Figures, exposition, merge
from cc.protocol.basicauth import AdminCredentials, basic_header, parse_basic
from cc.protocol.errors import AuthError
from cc.protocol.hosts import HostError, split_listen_address
from cc.protocol.status import SessionRow, age, format_table, human_bytes, status_document
from cc.stats import LATENCY_BUCKETS, SessionStats

# -- Basic auth ------------------------------------------------------------------------


def test_basic_header_round_trip() -> None:
    header = basic_header("ops", "pa:ss wörd")
    assert parse_basic(header) == ("ops", "pa:ss wörd")
    assert parse_basic("basic " + header.split()[1]) == ("ops", "pa:ss wörd"), "scheme any case"


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "Bearer abc",
        "Basic",
        "Basic !!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
    ],
)
def test_bad_basic_headers_are_none(value: str | None) -> None:
    assert parse_basic(value) is None


def test_admin_credentials_check() -> None:
    admin = AdminCredentials.parse("ops:pa:ss")  # split at the first colon, as --auth
    assert admin.check(basic_header("ops", "pa:ss"))
    assert not admin.check(basic_header("ops", "pa"))
    assert not admin.check(basic_header("op", "pa:ss"))
    assert not admin.check(None)
    assert not admin.check("Basic !!!")
    assert b"pa:ss" not in repr(admin).encode(), "only digests are kept"


@pytest.mark.parametrize("text", ["nocolon", ":pw", "ops:"])
def test_admin_credentials_refuse_malformed(text: str) -> None:
    with pytest.raises(AuthError):
        AdminCredentials.parse(text)


# -- listen addresses -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9090", ("127.0.0.1", 9090)),
        (":9090", ("127.0.0.1", 9090)),
        ("0.0.0.0:9090", ("0.0.0.0", 9090)),
        ("localhost:1", ("localhost", 1)),
        ("[::1]:9090", ("::1", 9090)),
        ("[::]:9090", ("::", 9090)),
    ],
)
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert split_listen_address(text) == expected


@pytest.mark.parametrize("text", ["", "x", "0", "65536", "::1:9090", "[::1:9090", "h:p"])
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(HostError):
        split_listen_address(text)


# -- the status document ------------------------------------------------------------------


def row(i: int, since: float, **more: object) -> dict[str, object]:
    return SessionRow(i, f"user{i}", f"10.0.0.{i}:5000", "1.2.3", since, **more).as_dict()  # type: ignore[arg-type]


def test_status_document_orders_and_bounds_rows() -> None:
    rows = [row(i, 1000.0 - i) for i in range(3)]
    doc = status_document(rows, version="9", workers=2, now=2000.0)
    assert [r["id"] for r in doc["sessions"]] == [2, 1, 0], "oldest first"
    assert (doc["session_count"], doc["not_shown"], doc["workers"]) == (3, 0, 2)
    many = status_document([row(i, i) for i in range(600)], version="9", workers=1)
    assert len(many["sessions"]) == 500 and many["not_shown"] == 100


def test_table_text() -> None:
    rows = [
        row(
            1,
            1000.0,
            remotes=["R:8081=>10.0.0.5:80", "R:8082=>10.0.0.6:25"],
            bytes_in=3 * 1024 * 1024,
            bytes_out=10,
            open=2,
            last_error="12:00:00 boom",
        )
    ]
    lines = format_table(status_document(rows, version="9", workers=1, now=1000.0 + 3725))
    assert lines[0] == "1 session(s), gateway 9, 1 worker(s)"
    assert lines[1].split()[:3] == ["user", "peer", "version"]
    assert "1h 2m ago" in lines[2] and "3.0 MiB" in lines[2] and "10 B" in lines[2]
    assert "R:8081=>10.0.0.5:80 R:8082=>10.0.0.6:25" in lines[2]
    assert lines[2].endswith("12:00:00 boom")
    assert format_table(status_document([], version="9", workers=1)) == [
        "0 session(s), gateway 9, 1 worker(s)"
    ]


def test_human_units() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1024, 1536 * 1024)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "1.5 MiB",
    ]
    assert [age(s) for s in (5, 65, 3700, 90000)] == ["5s", "1m 5s", "1h 1m", "1d 1h"]


# -- figures ------------------------------------------------------------------------------


def worker_figures(index: int, sessions: int, nbytes: int, *, ready: bool = True) -> Figures:
    stats = SessionStats(state="listening", sessions=sessions)
    stats.remote("R:8081=>10.0.0.5:80").bytes_in = nbytes
    stats.remote("R:8081=>10.0.0.5:80").total = 1
    stats.count_auth_failure("password", index + 1)
    stats.observe_channel_open(0.002)
    return Figures(
        "gateway", stats, ready, sealed=10, opened=20, workers=[index], rows=[row(index, 1.0)]
    )


def test_merged_figures_sum_every_worker() -> None:
    own = worker_figures(0, 2, 100)
    other = Figures.from_dict(worker_figures(1, 3, 50).as_dict())  # as it travels
    merged = merge(own, [other], expected=2)
    assert merged.ready and merged.workers == [0, 1]
    assert merged.stats.sessions == 5
    assert merged.stats.remotes["R:8081=>10.0.0.5:80"].bytes_in == 150
    assert merged.stats.auth_failures == {"password": 3}
    assert merged.stats.channel_open.count == 2
    assert (merged.sealed, merged.opened, len(merged.rows)) == (20, 40, 2)
    assert own.stats.sessions == 2, "merging leaves the worker's own figures alone"
    assert not merge(own, [], expected=2).ready, "a worker missing: not ready"
    assert not merge(own, [worker_figures(1, 0, 0, ready=False)], expected=2).ready


def test_exposition_parses() -> None:
    text = exposition(merge(worker_figures(0, 1, 7), [worker_figures(1, 1, 8)], 2)).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["cloud_connector_channel_open_seconds"].type == "histogram"
    buckets = [
        s
        for s in families["cloud_connector_channel_open_seconds"].samples
        if s.name.endswith("_bucket")
    ]
    assert len(buckets) == len(LATENCY_BUCKETS) + 1
    assert buckets[-1].labels == {"le": "+Inf"} and buckets[-1].value == 2
    received = families["cloud_connector_tunnel_received_bytes"].samples[0]
    assert received.value == 15 and received.labels == {"remote": "R:8081=>10.0.0.5:80"}
    ups = families["cloud_connector_worker_up"].samples
    assert sorted(s.labels["worker"] for s in ups) == ["1", "2"]
