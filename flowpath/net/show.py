"""Listings in the style of `ip link`, `ip addr`, `ip route` and `ip neigh`.

Linux: iproute2 ip/ipaddress.c (print_linkinfo, print_addrinfo), ip/iproute.c (print_route),
ip/ipneigh.c (print_neigh), and for `ip -d link show` the kinds' print_opt (ip/link_iptnl.c ›
iptunnel_print_opt, ip/link_ip6tnl.c › ip6tunnel_print_opt, ip/iplink_vlan.c › vlan_print_opt).
Deviation: qdisc, group, qlen, lifetimes other than "forever" and the details that describe no modelled
state (promiscuity, minmtu/maxmtu, addrgenmode, queues, GSO/GRO sizes) are left out; a port (kind
"ether") always has carrier.
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
from flowpath.net.link import (
    KIND_DUMMY,
    KIND_ETHER,
    KIND_IPIP,
    KIND_LOOPBACK,
    KIND_VETH,
    KIND_VLAN,
    Link,
    format_hwaddr,
)
from flowpath.net.neighbour import NUD_TEXT, NUD_VALID

if TYPE_CHECKING:
    from flowpath.net.model import Network


def _tunnel_p2p(link: Link) -> bool:
    """IFF_POINTOPOINT: an ipip device with a remote (ip_tunnel_bind_dev), an ip6tnl one with both
    ends (ip6_tnl_link_config, IP6_TNL_F_CAP_XMIT and _RCV taken as given when both are set)."""
    t = link.tunnel
    return bool(t.remote) if t.family == 4 else bool(t.remote and t.local)


def _link_header(net: Network, link: Link, details: bool = False) -> list[str]:
    if link.kind == KIND_LOOPBACK:
        flags = ["LOOPBACK"]
    elif link.kind == KIND_DUMMY:
        flags = ["BROADCAST", "NOARP"]
    elif link.is_tunnel:
        flags = ["POINTOPOINT", "NOARP"] if _tunnel_p2p(link) else ["NOARP"]
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
            state = "UNKNOWN" if link.kind in (KIND_LOOPBACK, KIND_DUMMY) or link.is_tunnel else "UP"
    name = link.name
    if link.kind == KIND_VETH:
        name += f"@{link.peer}"
    elif link.kind == KIND_VLAN:
        name += f"@{net.links[link.parent].name}"
    elif link.is_tunnel:  # IFLA_LINK is the tunnel's `dev` (ip_tunnel_get_iflink): 0 prints "NONE"
        name += f"@{_ifname(net, link.tunnel.link) if link.tunnel.link else 'NONE'}"
    lines = [f"{link.ifindex}: {name}: <{','.join(flags)}> mtu {link.mtu} state {state}"]
    if link.is_tunnel:
        t = link.tunnel
        # ipaddress.c › print_linkinfo: the device address (local) and broadcast/peer address (remote)
        ltype = "ipip" if t.family == 4 else "tunnel6"
        word = "peer" if _tunnel_p2p(link) else "brd"
        local, remote = format_addr(t.family, t.local), format_addr(t.family, t.remote)
        lines.append(f"    link/{ltype} {local} {word} {remote}")
    else:
        ltype = "loopback" if link.kind == KIND_LOOPBACK else "ether"
        brd = "00:00:00:00:00:00" if link.kind == KIND_LOOPBACK else "ff:ff:ff:ff:ff:ff"
        lines.append(f"    link/{ltype} {format_hwaddr(link.address)} brd {brd}")
    if details and link.kind not in (KIND_ETHER, KIND_LOOPBACK):
        lines.append("    " + " ".join([link.kind] + _link_info(net, link)))
    return lines


def _ifname(net: Network, ifindex: int) -> str:
    link = net.links.get(ifindex)
    return link.name if link is not None else f"if{ifindex}"  # lib/ll_map.c › ll_idx_n2a


def _endpoint(family: int, addr: int) -> str:
    """iproute2 ip/tunnel.c › tnl_print_endpoint: "any" for the wildcard."""
    return format_addr(family, addr) if addr else "any"


def _link_info(net: Network, link: Link) -> list[str]:
    """The words print_opt writes after the kind (`ip -d link show`)."""
    if link.kind == KIND_VLAN:
        return ["protocol", "802.1ad" if link.vlan_proto == 0x88A8 else "802.1Q", "id", str(link.vlan_id)]
    t = link.tunnel
    if t is None:
        return []
    words = [t.mode, "remote", _endpoint(t.family, t.remote), "local", _endpoint(t.family, t.local)]
    if t.link:
        words += ["dev", _ifname(net, t.link)]
    if link.kind == KIND_IPIP:  # link_iptnl.c › iptunnel_print_opt
        words += ["ttl", str(t.ttl) if t.ttl else "inherit"]
        if t.tos:
            words += ["tos", "inherit" if t.tos == 1 else f"0x{t.tos:x}"]
        words.append("pmtudisc" if t.pmtudisc else "nopmtudisc")
        return words
    # link_ip6tnl.c › ip6tunnel_print_opt
    words += ["hoplimit", str(t.ttl) if t.ttl else "inherit"]
    words += ["encaplimit", str(t.encap_limit) if t.encap_limit >= 0 else "none"]
    words += ["tclass", "inherit" if t.tos == 1 else f"0x{t.tos:02x}"]
    words += ["flowlabel", "inherit" if t.flowlabel < 0 else f"0x{t.flowlabel:05x}"]
    return words


def show_link(net: Network, details: bool = False) -> str:
    """`ip [-d] link show`."""
    lines = [line for link in net.links.values() for line in _link_header(net, link, details)]
    return "\n".join(lines) + "\n"


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
