"""The one place where a request's client address is decided: what login throttling, registration limits
and the request log all count by.

The socket's peer is the client unless it is one of the reverse proxies in ``FORWARDED_ALLOW_IPS``; only
then is ``X-Forwarded-For`` read, from its right end (the hop the trusted proxy itself saw) leftwards past
any other trusted proxies. Anyone else can write anything in that header, so it is never read by default.
The launcher turns uvicorn's own handling of the header off (``app.serve``); uvicorn started by hand needs
``--no-proxy-headers`` for the same (it would otherwise rewrite the client from loopback peers itself).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.config import IPNetwork

FORWARDED_FOR_HEADER = "x-forwarded-for"


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted_proxies: Sequence[IPNetwork]) -> str | None:
    """The client's address: ``peer`` (the socket's), or the hop ``X-Forwarded-For`` names when ``peer`` is a
    trusted proxy.

    ``forwarded_for`` holds the header's values in order (each a comma-separated list of hops, the nearest
    last). Hops are read from the right, skipping trusted proxies; the first other one is the client. A hop
    that is not an IP address (a garbled or hostile header) stops the walk at the last trusted proxy seen.
    """
    if peer is None or not _is_trusted(peer, trusted_proxies):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    nearest = peer
    for hop in reversed(hops):
        address = _ip(hop)
        if address is None:
            return nearest
        nearest = str(address)
        if not _is_trusted(nearest, trusted_proxies):
            return nearest
    return nearest


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d: compared (and counted) as a.b.c.d.
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return mapped or address


def _is_trusted(address: str, trusted_proxies: Sequence[IPNetwork]) -> bool:
    parsed = _ip(address)
    return parsed is not None and any(parsed in network for network in trusted_proxies)


class ClientAddressMiddleware:
    """ASGI middleware: sets the request's ``client`` to ``client_address`` (outermost, so every layer inside,
    the request log included, sees the same address)."""

    def __init__(self, app: ASGIApp, trusted_proxies: Sequence[IPNetwork]) -> None:
        self.app = app
        self.trusted_proxies = list(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.trusted_proxies and scope.get("client"):
            peer_host, peer_port = scope["client"]
            forwarded_for = Headers(scope=scope).getlist(FORWARDED_FOR_HEADER)
            host = client_address(peer_host, forwarded_for, self.trusted_proxies)
            if host != peer_host:
                # The port is the proxy's, not the client's: 0 says it is unknown.
                scope["client"] = (host, 0)
        await self.app(scope, receive, send)
