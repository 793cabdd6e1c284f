"""Links, addresses, FIB and neighbours: the network model an `ip -batch` file describes.

Linux: net/core/dev.c, net/ipv4/{devinet,fib_frontend,fib_trie}.c, net/ipv6/{addrconf,route}.c,
net/core/neighbour.c. Families are the IP versions 4 and 6; addresses are ints.
"""

from __future__ import annotations

from pathlib import Path

from flowpath.net.fib import (
    RTN_BLACKHOLE,
    RTN_BROADCAST,
    RTN_LOCAL,
    RTN_PROHIBIT,
    RTN_UNICAST,
    RTN_UNREACHABLE,
    FibResult,
    RouteType,
)
from flowpath.net.inetdev import IfAddr
from flowpath.net.link import Link
from flowpath.net.model import Network


def load_network(path: str | Path) -> Network:
    """Read an `ip -batch` file into a Network (ConfigError with file:line:col on a bad line)."""
    from flowpath.config.ipbatch import load_network as _load  # config imports net: import late

    return _load(path)


def parse_network(text: str, path: str = "<stdin>") -> Network:
    """Build a Network from `ip -batch` text."""
    from flowpath.config.ipbatch import parse_network as _parse

    return _parse(text, path)


__all__ = [
    "FibResult", "IfAddr", "Link", "Network", "RouteType", "load_network", "parse_network",
    "RTN_UNICAST", "RTN_LOCAL", "RTN_BROADCAST", "RTN_BLACKHOLE", "RTN_UNREACHABLE", "RTN_PROHIBIT",
]  # fmt: skip
