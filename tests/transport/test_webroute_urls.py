"""Named-service URLs as ``connect`` takes them: remoted's rwr:// forms and http(s)://."""

from __future__ import annotations

import pytest

from cc.transport.webroute import parse_service_url

__all__: list[str] = []


@pytest.mark.parametrize(
    ("text", "gateway", "target", "key"),
    [
        ("rwr://KEY@gw:8080/jira", "http://gw:8080", "/jira", "KEY"),
        ("rwrs://KEY@gw/jira", "https://gw", "/jira", "KEY"),
        ("rws://S%40K@gw:1/p/", "http://gw:1", "/p/", "S@K"),
        ("https://gw/a/b?x=1", "https://gw", "/a/b?x=1", None),
        ("gw:8080/ssh", "http://gw:8080", "/ssh", None),
        ("wss://[::1]:8443/ssh", "https://[::1]:8443", "/ssh", None),
    ],
)
def test_service_urls(text: str, gateway: str, target: str, key: str | None) -> None:
    url = parse_service_url(text)
    assert url.gateway.geturl() == gateway
    assert (url.target, url.key) == (target, key)
    assert "KEY" not in str(url), "logs never show the key"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ftp://gw/x", "scheme"),
        ("rwr://KEY@gw:8080", "needs a path"),
        ("rwr://KEY@:80/x", "no host"),
        ("rwr://gw:99999/x", "bad port"),
    ],
)
def test_bad_service_urls(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_service_url(text)
