"""The client's address behind load balancers: `Forwarded` (RFC 7239) and `X-Forwarded-For`.

Behind a load balancer every request's socket peer is the balancer, so without this every citizen
would share one rate-limit bucket. But the headers are written by whoever sends the request, so
they are believed only as far as trusted hands wrote them: only when the socket peer is in
`STIMULUS_TRUSTED_PROXIES`, and then reading the chain from the right (each proxy appends the
address it received from), skipping our own proxies, and taking the first address that is not one
of them. Anything a client put further left is ignored. `Forwarded` wins over `X-Forwarded-For`
when a request carries both. An entry that is not an address ("unknown", an obfuscated node, a
typo) ends the walk at the proxy that wrote it.

No library fits: the ASGI servers' proxy-header options trust by host list or hop count, read
`X-Forwarded-For` only, and granian has none; this is the rule nginx's `real_ip_recursive` and
RFC 7239 section 7.4 describe, in a few lines.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from functools import lru_cache

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class TrustedProxies:
    def __init__(self, cidrs: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)

    def trusts(self, address: Address) -> bool:
        return any(address in network for network in self.networks)

    def client(self, peer: str, forwarded: Sequence[str], x_forwarded_for: Sequence[str]) -> str:
        """The client's address, given the socket peer and the request's header values."""
        peer_address = parse_node(peer)
        if peer_address is None or not self.networks or not self.trusts(peer_address):
            return peer
        chain = _forwarded_for(forwarded) if forwarded else _split(x_forwarded_for)
        nearest = peer_address
        for entry in reversed(chain):
            address = parse_node(entry)
            if address is None:
                break
            if not self.trusts(address):
                return str(address)
            nearest = address
        return str(nearest)  # every hop named is ours (or the chain is empty or broken): the last good one


@lru_cache(maxsize=8)
def trusted_proxies(cidrs: tuple[str, ...]) -> TrustedProxies:
    return TrustedProxies(cidrs)


def parse_node(node: str) -> Address | None:
    """An address from a header's node: `192.0.2.1`, `192.0.2.1:80`, `[2001:db8::1]:443`, `2001:db8::1`."""
    node = node.strip().strip('"')
    if node.startswith("["):
        node = node[1:node.find("]")] if "]" in node else ""
    elif node.count(":") == 1:
        node = node.split(":", 1)[0]
    try:
        return ipaddress.ip_address(node)
    except ValueError:
        return None


def _split(values: Sequence[str]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _forwarded_for(values: Sequence[str]) -> list[str]:
    """The `for=` node of each element of `Forwarded` header values; an element without one
    stands in as "unknown", so it still ends the walk."""
    nodes: list[str] = []
    for element in _elements(values):
        node = "unknown"
        for pair in _split_outside_quotes(element, ";"):
            name, _, value = pair.partition("=")
            if name.strip().lower() == "for":
                node = value.strip()
        nodes.append(node)
    return nodes


def _elements(values: Sequence[str]) -> list[str]:
    return [element for value in values for element in _split_outside_quotes(value, ",") if element.strip()]


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts
