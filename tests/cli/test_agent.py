"""``cloud-connector agent``: an Armorcode-style environment becomes a client's (issue 13 C)."""

from __future__ import annotations

import pytest

from cc.cli.agent import agent_environment
from cc.cli.common import UsageError

__all__: list[str] = []

SEED_ENV = {
    "TUNNEL_PORT": "5000",
    "CLIENT_SIDE_DOMAIN": "jira.internal",
    "CLIENT_SIDE_PORT": "443",
    "SERVER_IP_DOMAIN": "gateway.example.com",
    "CLIENT_UUID": "6f1c2d3e-aaaa-bbbb-cccc-0123456789ab",
}


def test_the_seeds_variables_make_one_reverse_remote_over_https() -> None:
    assert agent_environment(SEED_ENV) == {
        "CC_SERVER": "https://gateway.example.com",
        "CC_REMOTES": "R:5000:jira.internal:443",
        "CC_HEADERS": "token: 6f1c2d3e-aaaa-bbbb-cccc-0123456789ab",
        "AUTH": "6f1c2d3e-aaaa-bbbb-cccc-0123456789ab:",
    }


@pytest.mark.parametrize("name", ["TOKEN", "CC_TOKEN"])
def test_a_token_variable_wins_over_the_uuid(name: str) -> None:
    env = agent_environment({**SEED_ENV, name: "secret-token"})
    assert env["CC_HEADERS"] == "token: secret-token"


def test_url_and_tunnel_host() -> None:
    env = agent_environment(
        {**SEED_ENV, "SERVER_IP_DOMAIN": "http://10.0.0.1:8080", "TUNNEL_HOST": "10.1.2.3"}
    )
    assert env["CC_SERVER"] == "http://10.0.0.1:8080"
    assert env["CC_REMOTES"] == "R:10.1.2.3:5000:jira.internal:443"


def test_every_missing_variable_is_named() -> None:
    with pytest.raises(UsageError, match="TUNNEL_PORT, CLIENT_SIDE_PORT, CLIENT_UUID"):
        agent_environment(
            {"CLIENT_SIDE_DOMAIN": "x", "SERVER_IP_DOMAIN": "g", "CLIENT_SIDE_PORT": " "}
        )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TUNNEL_PORT", "70000", "TUNNEL_PORT='70000' is not a port"),
        ("CLIENT_SIDE_PORT", "http", "CLIENT_SIDE_PORT='http' is not a port"),
        ("CLIENT_SIDE_DOMAIN", "bad host", "invalid character"),
        ("CLIENT_UUID", "a:b", "CLIENT_UUID may not hold"),
    ],
)
def test_wrong_values_are_named(name: str, value: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        agent_environment({**SEED_ENV, name: value})
