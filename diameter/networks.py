"""Admission by source address: is a peer's address in one of the networks a listener admits?
(RFC 6733 §5.3's local policy for Diameter peers; N5g-eir's AMFs too.)"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """CIDR strings as networks (host bits allowed: "10.0.0.1/8" is 10.0.0.0/8)."""
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def address_refused(remote_ip: str | None, networks: Iterable[Network]) -> str | None:
    """None when ``remote_ip`` is in one of ``networks``, else why not. An IPv4-mapped IPv6
    address (a dual-stack listener's IPv4 peer) counts as its IPv4 address; a scope
    ("fe80::1%eth0") is ignored."""
    if remote_ip is None:
        return "remote address unknown"
    try:
        address = ipaddress.ip_address(remote_ip.split("%", 1)[0])
    except ValueError:
        return f"remote address {remote_ip} not an IP address"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not any(address.version == n.version and address in n for n in networks):
        return f"remote address {remote_ip} not in an allowed network"
    return None
