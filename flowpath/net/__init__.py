"""Links, addresses, FIB and neighbours: the network model an `ip -batch` file describes.

Linux: net/core/dev.c, net/ipv4/{devinet,fib_frontend,fib_trie}.c, net/ipv6/{addrconf,route}.c,
net/core/neighbour.c. Families are the IP versions 4 and 6; addresses are ints. An `ip -batch` file
is read into a Network by flowpath.config.ipbatch (load_network, parse_network).
"""

from __future__ import annotations

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

__all__ = [
    "FibResult", "IfAddr", "Link", "Network", "RouteType",
    "RTN_UNICAST", "RTN_LOCAL", "RTN_BROADCAST", "RTN_BLACKHOLE", "RTN_UNREACHABLE", "RTN_PROHIBIT",
]  # fmt: skip
