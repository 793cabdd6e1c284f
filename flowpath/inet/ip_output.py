"""Output: the POSTROUTING hook, fragmentation, and the neighbour layer that writes the Ethernet header.

Linux: net/ipv4/ip_output.c › ip_output, ip_finish_output, ip_finish_output2, __ip_local_out;
net/ipv6/ip6_output.c › ip6_output, ip6_finish_output2; include/net/neighbour.h › neigh_output.
IPv4 and IPv6 share these steps here; the family only changes the constants.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from flowpath.netfilter import constants as C
from flowpath.netfilter.hooks import NfHookState
from flowpath.packet import layout as L
from flowpath.packet.csum import ld16
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff

if TYPE_CHECKING:
    from flowpath.datapath import Worker


def nfproto_of(skb: SkBuff) -> int:
    return C.NFPROTO_IPV6 if skb.l3proto == L.ETH_P_IPV6 else C.NFPROTO_IPV4


def family_of(skb: SkBuff) -> int:
    return 6 if skb.l3proto == L.ETH_P_IPV6 else 4


def ip_output(w: Worker, skb: SkBuff, fib, in_ifindex: int = 0, x=None) -> Reason:
    """POSTROUTING, then ip_finish_output; or, with an xfrm state `x`, ESP and the outer packet's own
    output (xfrm_output). `fib` is the route chosen for the packet (the SA's outer route with `x`)."""
    out = w.net.links[fib.oif]
    state = NfHookState(C.NF_INET_POST_ROUTING, nfproto_of(skb), in_ifindex,
                        w.ifname(in_ifindex), out.ifindex, out.name, w.rt_mtu(skb, fib))  # fmt: skip
    res = w.netfilter.nf_hook(skb, state)
    if res.verdict != C.NF_ACCEPT:
        return w.nf_drop(skb, res, state)
    if x is not None:
        from flowpath.inet.xfrm4 import xfrm_output

        return xfrm_output(w, skb, x)
    return ip_finish_output(w, skb, fib)


def ip_finish_output(w: Worker, skb: SkBuff, fib) -> Reason:
    """Fragment an IPv4 packet over the MTU (DF already refused by ip_forward); then neighbour output."""
    mtu = fib.mtu
    if skb.l3len <= mtu:
        return neigh_output(w, skb, fib)
    if skb.l3proto == L.ETH_P_IPV6 or ld16(skb.buf, skb.nhoff + L.IPH.frag_off) & L.IP_DF:
        return Reason.IP_FRAG_FAILED  # local traffic with DF or IPv6: ip_fragment refuses
    from flowpath.packet.fragment import ip_do_fragment

    frames = ip_do_fragment(skb.tobytes(), skb.nhoff, mtu)
    for f in frames:
        r = _neigh_xmit(w, f, skb, fib)
        if r != Reason.TX:
            return r
    return Reason.TX


def neigh_output(w: Worker, skb: SkBuff, fib) -> Reason:
    return _neigh_xmit(w, skb.tobytes(), skb, fib)


def _neigh_xmit(w: Worker, frame: bytes, skb: SkBuff, fib) -> Reason:
    """ip_finish_output2: resolve the next hop's MAC, write the link-layer header, transmit.

    `frame` starts with the (stale) link-layer header of skb; everything before nhoff is replaced.
    Deviation: an unresolved neighbour is a counted drop (NEIGH_FAILED); no ARP/ND request is sent.
    """
    nexthop = fib.gateway if fib.gateway is not None else skb.daddr
    mac = w.net.neigh_lookup(family_of(skb), nexthop, fib.oif)
    if mac is None:
        return Reason.NEIGH_FAILED
    link = w.net.links[fib.oif]
    hdr = w.link_header(link, mac, skb.l3proto)
    w.xmit(link, hdr + frame[skb.nhoff :])
    return Reason.TX


def eth_header(dst: bytes, src: bytes, proto: int, vlan_id: int | None = None) -> bytes:
    """dev_hard_header (eth_header), with an 802.1Q tag for a VLAN device (vlan_dev_hard_header)."""
    if vlan_id is None:
        return dst + src + struct.pack(">H", proto)
    return dst + src + struct.pack(">HHH", L.ETH_P_8021Q, vlan_id & 0x0FFF, proto)
