"""Who the client is: the socket's peer, unless that peer is a trusted proxy; then the nearest hop of
X-Forwarded-For that is not one (a client can write anything to the left of what its proxy appended)."""

from __future__ import annotations

import pytest

from app.api.client_address import client_address
from app.core.config import Settings, parse_networks

PROXIES = parse_networks("10.0.0.5, 192.168.0.0/16, ::1")


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        pytest.param("203.0.113.7", ["198.51.100.1"], "203.0.113.7", id="untrusted peer: header ignored"),
        pytest.param("10.0.0.5", [], "10.0.0.5", id="trusted peer, no header"),
        pytest.param("10.0.0.5", ["198.51.100.1"], "198.51.100.1", id="one proxy"),
        pytest.param("10.0.0.5", ["1.2.3.4, 198.51.100.1"], "198.51.100.1", id="a spoofed hop on the left"),
        pytest.param("10.0.0.5", ["1.2.3.4", "198.51.100.1, 192.168.3.3"], "198.51.100.1", id="two proxies"),
        pytest.param("10.0.0.5", ["192.168.1.1, 10.0.0.5"], "192.168.1.1", id="every hop trusted: the farthest"),
        pytest.param("10.0.0.5", ["198.51.100.1, not-an-ip"], "10.0.0.5", id="garbled hop: the proxy itself"),
        pytest.param("::1", ["2001:db8::7"], "2001:db8::7", id="IPv6"),
        pytest.param("::ffff:10.0.0.5", ["198.51.100.1"], "198.51.100.1", id="IPv4-mapped proxy"),
        pytest.param("10.0.0.5", ["[2001:db8::7]"], "2001:db8::7", id="bracketed IPv6 hop"),
        pytest.param(None, ["198.51.100.1"], None, id="no peer"),
    ],
)
def test_client_address(peer: str | None, forwarded_for: list[str], expected: str | None) -> None:
    assert client_address(peer, forwarded_for, PROXIES) == expected


def test_by_default_no_proxy_is_trusted() -> None:
    trusted = Settings(_env_file=None).trusted_proxies  # type: ignore[call-arg]
    assert trusted == []
    assert client_address("127.0.0.1", ["198.51.100.1"], trusted) == "127.0.0.1"


@pytest.mark.parametrize("setting", ["*", "proxy.example", "10.0.0.0/33"])
def test_forwarded_allow_ips_refuses_what_is_not_an_address_or_network(setting: str) -> None:
    with pytest.raises(ValueError, match="is not an IP address or network"):
        Settings(_env_file=None, forwarded_allow_ips=setting)  # type: ignore[call-arg]
