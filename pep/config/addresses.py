"""Listen addresses: `host:port` or `unix:///path`."""

from __future__ import annotations

import ipaddress


def split_address(address: str) -> tuple[str, int]:
    """`host:port` to (host, port), with brackets removed from IPv6 hosts."""
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - parsing, not binding


def is_local_address(address: str) -> bool:
    """True for a Unix socket or a loopback host."""
    if address.startswith("unix://"):
        return True
    host, _ = split_address(address)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
