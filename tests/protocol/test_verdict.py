"""Retry or stop on the gateway's answers (cc/protocol/verdict.py), without sockets."""

from __future__ import annotations

import pytest

from cc.protocol.verdict import (
    Action,
    Verdict,
    auth_failure_verdict,
    config_reply_verdict,
    upgrade_verdict,
)


def test_accepted_config_carries_on() -> None:
    assert config_reply_verdict(True, b"", connection_closed=False) == Verdict(Action.OK)


@pytest.mark.parametrize(
    "reply",
    [
        b"server: Reverse port forwarding not enabled on server",
        b"server: access to 'R:0.0.0.0:8080' denied",
        b"server: invalid config",
    ],
)
def test_rejected_config_stops_with_the_gateways_reason(reply: bytes) -> None:
    verdict = config_reply_verdict(False, reply, connection_closed=False)
    assert verdict == Verdict(Action.FATAL, reply.decode())


def test_a_success_with_a_payload_is_a_rejection() -> None:
    """chisel answers success with an empty payload; any text is an error message."""
    assert config_reply_verdict(True, b"odd", connection_closed=False) == Verdict(
        Action.FATAL, "odd"
    )


def test_a_failure_without_text_stops_with_a_generic_reason() -> None:
    verdict = config_reply_verdict(False, b"", connection_closed=False)
    assert verdict == Verdict(Action.FATAL, "config rejected by server")


@pytest.mark.parametrize(
    "reply",
    [
        b"server: Server cannot listen on 127.0.0.1:8080",
        b"Server Cannot Listen on [::1]:22",  # chisel's wording, any case
    ],
)
def test_busy_reverse_port_retries(reply: bytes) -> None:
    verdict = config_reply_verdict(False, reply, connection_closed=False)
    assert verdict == Verdict(Action.RETRY, reply.decode())


def test_connection_lost_before_the_answer_retries() -> None:
    verdict = config_reply_verdict(False, b"", connection_closed=True)
    assert verdict.action is Action.RETRY
    assert "connection lost" in verdict.reason


def test_a_real_rejection_on_a_closing_connection_is_still_a_rejection() -> None:
    verdict = config_reply_verdict(False, b"server: invalid config", connection_closed=True)
    assert verdict.action is Action.FATAL


def test_undecodable_reply_still_gives_a_reason() -> None:
    verdict = config_reply_verdict(False, b"\xff\xfe bad", connection_closed=False)
    assert verdict.action is Action.FATAL
    assert verdict.reason.endswith(" bad")


@pytest.mark.parametrize("status", [401, 403])
def test_refused_token_stops_and_says_which_header(status: int) -> None:
    verdict = upgrade_verdict(status, f"websocket: bad handshake (HTTP {status} X)")
    assert verdict == Verdict(
        Action.FATAL,
        f'the gateway refused the token (HTTP {status}): check the "Token" header '
        '(--header "Token: <token>")',
    )


def test_refused_token_shows_the_gateways_reason() -> None:
    verdict = upgrade_verdict(401, "websocket: bad handshake (HTTP 401 Unauthorized)", "no token")
    assert verdict.action is Action.FATAL
    assert verdict.reason.startswith("the gateway refused the token (HTTP 401: no token): ")


@pytest.mark.parametrize("retry_after", [300.0, None])
def test_rate_limited_retries_and_says_why(retry_after: float | None) -> None:
    message = "websocket: bad handshake (HTTP 429 Too Many Requests)"
    verdict = upgrade_verdict(429, message, "too many failed logins", retry_after)
    assert verdict.action is Action.RETRY
    assert verdict.reason.startswith(message + ": the gateway is rate-limiting this address")
    assert verdict.reason.endswith("; will retry")
    assert ("banned for 300 s" in verdict.reason) is (retry_after is not None)


@pytest.mark.parametrize("status", [400, 404, 500, 502, 503])
def test_other_upgrade_failures_retry(status: int) -> None:
    assert upgrade_verdict(status, "x") == Verdict(Action.RETRY, "x")
    assert upgrade_verdict(status, "x", "page not found") == Verdict(
        Action.RETRY, "x: page not found"
    )


def test_authentication_failures_stop() -> None:
    assert auth_failure_verdict("authentication failed (check --auth)") == Verdict(
        Action.FATAL, "authentication failed (check --auth)"
    )


def test_a_port_taken_by_another_client_stops() -> None:
    """Our gateway's "taken by another client" is final, although the port is busy too."""
    reason = b"server: R:5000=>jira:443: port 5000 is taken by another client"
    verdict = config_reply_verdict(False, reason, connection_closed=False)
    assert verdict == Verdict(Action.FATAL, reason.decode())
