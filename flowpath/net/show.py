"""Listings in the style of `ip link`, `ip addr`, `ip route` and `ip neigh`.

Linux: iproute2 ip/ipaddress.c (print_linkinfo, print_addrinfo), ip/iproute.c (print_route) and
ip/ipneigh.c (print_neigh). Deviation: qdisc, group, qlen and lifetimes other than "forever" are left
out; a port (kind "ether") always has carrier.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowpath.net.fib import (
    PROTO_NAMES,
    REJECT_TYPES,
    RT_TABLE_MAIN,
    RTN_UNICAST,
    RTPROT_BOOT,
    TABLE_NAMES,
    FibAlias,
)
from flowpath.net.inetdev import RT_SCOPE_UNIVERSE, SCOPE_NAMES, format_addr
from flowpath.net.link import KIND_DUMMY, KIND_LOOPBACK, KIND_VETH, KIND_VLAN, Link, format_hwaddr
from flowpath.net.neighbour import NUD_TEXT, NUD_VALID

if TYPE_CHECKING:
    from flowpath.net.model import Network


def _link_header(net: Network, link: Link) -> list[str]:
    if link.kind == KIND_LOOPBACK:
        flags = ["LOOPBACK"]
    elif link.kind == KIND_DUMMY:
        flags = ["BROADCAST", "NOARP"]
    else:
        flags = ["BROADCAST", "MULTICAST"]
    state = "DOWN"
    if link.up:
        carrier = net.carrier(link)
        flags += ["UP", "LOWER_UP"] if carrier else ["UP"]
        if not carrier:
            flags.insert(0, "NO-CARRIER")
            state = "LOWERLAYERDOWN"
        else:
            state = "UNKNOWN" if link.kind in (KIND_LOOPBACK, KIND_DUMMY) else "UP"
    name = link.name
    if link.kind == KIND_VETH:
        name += f"@{link.peer}"
    elif link.kind == KIND_VLAN:
        name += f"@{net.links[link.parent].name}"
    ltype = "loopback" if link.kind == KIND_LOOPBACK else "ether"
    brd = "00:00:00:00:00:00" if link.kind == KIND_LOOPBACK else "ff:ff:ff:ff:ff:ff"
    return [
        f"{link.ifindex}: {name}: <{','.join(flags)}> mtu {link.mtu} state {state}",
        f"    link/{ltype} {format_hwaddr(link.address)} brd {brd}",
    ]


def show_link(net: Network) -> str:
    """`ip link show`."""
    return "\n".join(line for link in net.links.values() for line in _link_header(net, link)) + "\n"


def show_addr(net: Network) -> str:
    """`ip addr show`."""
    out = []
    for link in net.links.values():
        out += _link_header(net, link)
        for family, word in ((4, "inet"), (6, "inet6")):
            for ifa in net.addrs(link.ifindex, family):
                parts = [f"    {word} {format_addr(family, ifa.address)}/{ifa.prefixlen}"]
                if ifa.broadcast is not None:
                    parts.append(f"brd {format_addr(4, ifa.broadcast)}")
                if ifa.metric:
                    parts.append(f"metric {ifa.metric}")
                parts.append(f"scope {SCOPE_NAMES.get(ifa.scope, ifa.scope)}")
                if ifa.secondary:
                    parts.append("secondary")
                if ifa.noprefixroute:
                    parts.append("noprefixroute")
                if family == 4:
                    parts.append(link.name)
                out += [" ".join(parts), "       valid_lft forever preferred_lft forever"]
    return "\n".join(out) + "\n"


def format_route(net: Network, fa: FibAlias, show_table: bool = False) -> str:
    """One `ip route` line (iproute2 iproute.c › print_route's field order)."""
    parts = [] if fa.type == RTN_UNICAST else [str(fa.type)]
    if fa.prefixlen == 0:
        parts.append("default")
    elif fa.prefixlen == (32 if fa.family == 4 else 128):
        parts.append(format_addr(fa.family, fa.prefix))
    else:
        parts.append(f"{format_addr(fa.family, fa.prefix)}/{fa.prefixlen}")
    if fa.gateway is not None:
        parts.append(f"via {format_addr(fa.family, fa.gateway)}")
    if fa.oif:
        parts.append(f"dev {net.links[fa.oif].name}")
    elif fa.family == 6 and fa.type in REJECT_TYPES:
        parts.append("dev lo")  # IPv6 reject routes point at the loopback device (ip6_null_entry)
    if show_table and fa.table != RT_TABLE_MAIN:
        parts.append(f"table {TABLE_NAMES.get(fa.table, fa.table)}")
    if fa.protocol != RTPROT_BOOT:
        parts.append(f"proto {PROTO_NAMES.get(fa.protocol, fa.protocol)}")
    if fa.family == 4 and fa.scope != RT_SCOPE_UNIVERSE:
        parts.append(f"scope {SCOPE_NAMES.get(fa.scope, fa.scope)}")
    if fa.prefsrc is not None:
        parts.append(f"src {format_addr(fa.family, fa.prefsrc)}")
    if fa.metric or fa.family == 6:
        parts.append(f"metric {fa.metric}")
    if fa.onlink:
        parts.append("onlink")
    if fa.oif and not net.carrier(net.links[fa.oif]):
        parts.append("linkdown")
    if fa.mtu:
        parts.append(f"mtu {'lock ' if fa.mtu_lock else ''}{fa.mtu}")
    if fa.family == 6:
        parts.append("pref medium")
    return " ".join(parts)


def show_route(net: Network, family: int = 4, table: int | str = RT_TABLE_MAIN) -> str:
    """`ip [-6] route show [table ID|all]`."""
    tables = net.tables[family]
    if table == "all":
        ids = sorted(tables, key=lambda t: (t == 255, t))  # iproute2 dumps main before local
    else:
        ids = [table] if table in tables else []
    lines = [format_route(net, fa, table == "all") for tb in ids for fa in tables[tb]]
    return "".join(line + "\n" for line in lines)


def show_neigh(net: Network, family: int | None = None) -> str:
    """`ip [-4|-6] neigh show` (ip/ipneigh.c › print_neigh: no lladdr while INCOMPLETE or FAILED; an
    entry resolution created but never used, NUD_NONE, is not listed)."""
    lines = [
        f"{format_addr(n.family, n.primary_key)} dev {net.links[n.ifindex].name}"
        + (f" lladdr {format_hwaddr(n.ha)}" if n.nud_state & NUD_VALID else "")
        + f" {NUD_TEXT.get(n.nud_state, hex(n.nud_state))}"
        for n in net.neigh
        if n.nud_state and family in (None, n.family)
    ]
    return "".join(line + "\n" for line in lines)
