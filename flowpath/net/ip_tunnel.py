"""IP tunnel devices (ipip, ip6tnl): their parameters, the receive lookup and the MTU they take.

Linux: include/net/ip_tunnels.h (struct ip_tunnel_parm), net/ipv4/ip_tunnel.c › ip_tunnel_lookup,
ip_tunnel_find, ip_tunnel_bind_dev, __ip_tunnel_change_mtu; net/ipv6/ip6_tunnel.c › ip6_tnl_lookup,
ip6_tnl_locate, ip6_tnl_link_config. Addresses are ints as everywhere in flowpath.net; 0 is the
wildcard ("any").

Deviation: the fallback devices Linux creates with the module (tunl0, ip6tnl0: no addresses, down
until set up) are not modelled. A received packet no configured tunnel matches finds none here, as it
would in Linux while they are down; a tunnel with their parameters (no local, no remote, no dev) is
refused with EEXIST, as Linux refuses it because they hold them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

# include/uapi/linux/in.h
IPPROTO_IPIP = 4
IPPROTO_IPV6 = 41

ETH_DATA_LEN = 1500  # a tunnel with no underlying device to go by starts from it
IPV4_MIN_MTU = 68  # include/net/ip.h
IPV6_MIN_MTU = 1280  # include/linux/ipv6.h
IP_MAX_MTU = 0xFFF8  # net/ipv4/ip_tunnel.c › __ip_tunnel_change_mtu's bound, before the headers
IPV6_DEFAULT_TNL_ENCAP_LIMIT = 4  # include/net/ip6_tunnel.h
DEFAULT_TNL_HOP_LIMIT = 64  # include/uapi/linux/ip6_tunnel.h: ip6tnl's default, where ipip inherits
IPV6_TLV_TNL_ENCAP_LIMIT_LEN = 8  # the destination options header ip6tnl adds (ip6_tnl_dev_init_gen)
IPIP_HLEN = 20  # sizeof(struct iphdr)
IP6TNL_HLEN = 40  # sizeof(struct ipv6hdr)

# `mode` words: the inner protocols each one carries (ipip_tunnel_rcv, ip6_tnl_rcv: proto 0 is "any")
TUNNEL_MODES = {
    4: {"ipip": (IPPROTO_IPIP,), "any": (IPPROTO_IPIP,)},  # ipip's "any" adds MPLS, not modelled
    6: {"ipip6": (IPPROTO_IPIP,), "ip6ip6": (IPPROTO_IPV6,), "any": (IPPROTO_IPIP, IPPROTO_IPV6)},
}


@dataclass(slots=True)
class IpTunnel:
    """struct ip_tunnel_parm (ipip) or struct __ip6_tnl_parm (ip6tnl), the fields flowpath uses.

    mode         "ipip" | "any" (ipip), "ipip6" | "ip6ip6" | "any" (ip6tnl)
    family       4 (ipip: outer IPv4) or 6 (ip6tnl: outer IPv6)
    local        outer source (parms.iph.saddr / laddr), 0 = any
    remote       outer destination (parms.iph.daddr / raddr), 0 = any
    ttl          outer TTL / hop limit; 0 = inherit the inner packet's
    tos          outer TOS / traffic class; 1 = inherit (`tos inherit`; Linux keeps that in bit 0,
                 whose ECN meaning ip_tunnel_ecn_encap overwrites anyway)
    pmtudisc     DF on the outer header (parms.iph.frag_off & IP_DF); ipip only
    link         ifindex of `dev PHYS` (parms.link), 0 none
    encap_limit  ip6tnl's tunnel encapsulation limit option (RFC 2473 §4.1.1), -1 = none
                 (IP6_TNL_F_IGN_ENCAP_LIMIT)
    flowlabel    ip6tnl's outer flow label (the label bits of parms.flowinfo), -1 = inherit the inner
                 IPv6 packet's (IP6_TNL_F_USE_ORIG_FLOWLABEL)
    """

    mode: str
    family: int
    local: int = 0
    remote: int = 0
    ttl: int = 0
    tos: int = 0
    pmtudisc: bool = True
    link: int = 0
    encap_limit: int = IPV6_DEFAULT_TNL_ENCAP_LIMIT
    flowlabel: int = 0

    @property
    def hlen(self) -> int:
        """Bytes the outer headers add (t_hlen: ipip 20; ip6tnl 40, plus 8 with an encapsulation limit)."""
        if self.family == 4:
            return IPIP_HLEN
        return IP6TNL_HLEN + (IPV6_TLV_TNL_ENCAP_LIMIT_LEN if self.encap_limit >= 0 else 0)

    @property
    def protocols(self) -> tuple[int, ...]:
        """The inner protocols (IPPROTO_IPIP, IPPROTO_IPV6) the tunnel carries."""
        return TUNNEL_MODES[self.family][self.mode]

    @property
    def min_mtu(self) -> int:
        return IPV4_MIN_MTU if self.family == 4 else IPV6_MIN_MTU

    @property
    def max_mtu(self) -> int:
        """dev->max_mtu: IP_MAX_MTU less the outer headers (ip_tunnel_newlink, ip6_tnl_dev_init_gen)."""
        return IP_MAX_MTU - self.hlen


class TunnelDev(Protocol):
    """What the lookups read of a device (a flowpath.net Link)."""

    ifindex: int
    up: bool
    tunnel: IpTunnel | None


def _ipv4_is_multicast(addr: int) -> bool:
    return addr >> 28 == 0xE


def ip_tunnel_lookup(net, family: int, outer_saddr: int, outer_daddr: int, link_ifindex: int):
    """The tunnel device a received outer packet belongs to, or None.

    Linux: ip_tunnel.c › ip_tunnel_lookup (ipip passes TUNNEL_NO_KEY) and ip6_tunnel.c › ip6_tnl_lookup:
    only devices that are up; first both addresses exact (the tunnel's remote is the outer source, its
    local the outer destination), then for IPv4 the remote with any local, then the local with any
    remote (or a multicast group the tunnel sends to); ip6_tnl_lookup takes the two wildcard steps the
    other way round (local with any remote first). Within a step a tunnel bound to the receiving
    device (`dev PHYS`) wins; otherwise the candidate is the last exact match or the first of a later
    step. Chains are walked newest first, as hlist_add_head leaves them.

    net            anything with `links` (ifindex -> Link): a flowpath.net Network or the Net above it
    link_ifindex   the device the outer packet came in on (skb->dev->ifindex)
    Returns the Link (TunnelDev) of the tunnel.
    """
    tunnels = [
        lk
        for lk in reversed(net.links.values())
        if lk.tunnel is not None and lk.tunnel.family == family and lk.up
    ]
    remote, local = outer_saddr, outer_daddr
    cand = None
    for dev in tunnels:
        t = dev.tunnel
        if t.local == local and t.remote == remote:
            if t.link == link_ifindex:
                return dev
            cand = dev
    remote_only = lambda t: t.remote == remote and t.local == 0  # noqa: E731
    local_only = lambda t: (  # noqa: E731
        (t.local == local and t.remote == 0)
        or (family == 4 and t.remote == local and _ipv4_is_multicast(local))
    )
    steps = (remote_only, local_only) if family == 4 else (local_only, remote_only)
    for match in steps:
        for dev in tunnels:
            if match(dev.tunnel):
                if dev.tunnel.link == link_ifindex:
                    return dev
                if cand is None:
                    cand = dev
    return cand


def ip_tunnel_find(links: Iterable[TunnelDev], kind_of, p: IpTunnel, kind: str):
    """The device already holding these parameters (same kind, local, remote and dev), or None.

    Linux: ip_tunnel.c › ip_tunnel_find (newlink answers EEXIST), ip6_tunnel.c › ip6_tnl_locate.
    kind_of(dev) gives a device's kind.
    """
    for dev in links:
        t = dev.tunnel
        if (
            t is not None
            and kind_of(dev) == kind
            and (t.local, t.remote, t.link) == (p.local, p.remote, p.link)
        ):
            return dev
    return None


def is_fallback_parms(p: IpTunnel) -> bool:
    """The parameters of tunl0 / ip6tnl0, which Linux's fallback device already holds (see module)."""
    return p.local == 0 and p.remote == 0 and p.link == 0


def ip_tunnel_bind_dev(net, p: IpTunnel) -> int:
    """The MTU a new tunnel takes: its underlying device's MTU less the outer headers.

    Linux: ip_tunnel.c › ip_tunnel_bind_dev: the device of the route to `remote`, else `dev PHYS`,
    else ETH_DATA_LEN; never below IPV4_MIN_MTU. ip6_tunnel.c › ip6_tnl_link_config: the route's device
    when both ends are set (IP6_TNL_F_CAP_XMIT), else ETH_DATA_LEN (ip6_tnl_dev_init_gen); the
    encapsulation limit option counts; never below IPV6_MIN_MTU.
    net  a flowpath.net Network (fib_lookup, links).
    Deviation: with `dev PHYS` that device is the one used; Linux looks the route up bound to it
    (flowi4_oif), which gives that device or, without such a route, falls back to it.
    """
    tdev = net.links.get(p.link) if p.link else None
    if tdev is None and p.remote and (p.family == 4 or p.local):
        fib = net.fib_lookup(p.family, p.remote)
        if fib is not None and fib.oif:
            tdev = net.links.get(fib.oif)
    mtu = (tdev.mtu if tdev is not None else ETH_DATA_LEN) - p.hlen
    return max(mtu, p.min_mtu)
