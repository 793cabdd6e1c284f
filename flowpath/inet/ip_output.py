"""Output: local output, the POSTROUTING hook, fragmentation, and the neighbour layer that writes the
Ethernet header.

Linux: net/ipv4/ip_output.c › ip_local_out, ip_output, ip_finish_output, ip_fragment, ip_finish_output2;
net/ipv6/ip6_output.c › ip6_output, __ip6_finish_output, ip6_finish_output2; include/net/neighbour.h › neigh_output;
net/netfilter/nft_rt.c › nft_rt_get_eval (NFT_RT_TCPMSS); a route through a tunnel device ends in the
tunnel's transmit (flowpath.inet.ip_tunnel for ipip, flowpath.inet.ip6_tunnel for ip6tnl), whose outer
packet leaves as a local one.
IPv4 and IPv6 share these steps here; the family only changes the constants. Every step takes `net`
(flowpath.netns.Net) and the OutputQueue `q` that collects the frames it transmits.
"""

from __future__ import annotations

from flowpath.inet.ip6_tunnel import ip6_tnl_xmit
from flowpath.inet.ip_tunnel import ip_tunnel_xmit
from flowpath.inet.neigh_output import neigh_resolve_output
from flowpath.inet.nf_dup_netdev import nf_hook_egress_tunnel
from flowpath.inet.nf_reject import nf_hook_drop
from flowpath.inet.xfrm4 import xfrm_dst_lookup, xfrm_output
from flowpath.net.fib import RouteType
from flowpath.netfilter import constants as C
from flowpath.netfilter.hooks import NfHookState
from flowpath.packet import layout as L
from flowpath.packet.csum import ld16
from flowpath.packet.fragment import ip6_fragment, ip_do_fragment
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff


def nfproto_of(skb: SkBuff) -> int:
    return C.NFPROTO_IPV6 if skb.l3proto == L.ETH_P_IPV6 else C.NFPROTO_IPV4


def family_of(skb: SkBuff) -> int:
    return 6 if skb.l3proto == L.ETH_P_IPV6 else 4


def rt_mtu(net, skb: SkBuff, fib) -> int:
    """nft_rt's TCPMSS view: the smaller of the route's MTU and the route back's (get_tcpmss).
    Only rulesets with an `rt` expression read it, so the others skip the second lookup."""
    if not net.uses_rt:
        return fib.mtu
    back = net.fib_lookup(family_of(skb), skb.saddr)
    return min(fib.mtu, back.mtu) if back is not None and back.type == RouteType.UNICAST else fib.mtu


def ip_local_out(net, q, skb: SkBuff) -> Reason:
    """A packet the gateway sends itself: route it, LOCAL_OUT, then POSTROUTING and output."""
    fib = net.fib_lookup(family_of(skb), skb.daddr)
    if fib is None or fib.type != RouteType.UNICAST:
        return Reason.IP_OUTNOROUTES
    dst = xfrm_dst_lookup(net, skb, fib)
    if isinstance(dst, Reason):
        return dst
    fib, x = dst
    out = net.links[fib.oif]
    state = NfHookState(C.NF_INET_LOCAL_OUT, nfproto_of(skb), 0, "", out.ifindex, out.name, net=net, xfrm=x)
    res = net.nf.nf_hook(skb, state)
    if res.verdict != C.NF_ACCEPT:
        return nf_hook_drop(net, q, skb, res, state)
    return ip_output(net, q, skb, fib, 0, x)


def ip_output(net, q, skb: SkBuff, fib, in_ifindex: int = 0, x=None) -> Reason:
    """POSTROUTING, then ip_finish_output; or, with an xfrm state `x`, ESP and the outer packet's own
    output (xfrm_output). `fib` is the route chosen for the packet (the SA's outer route with `x`)."""
    out = net.links[fib.oif]
    state = NfHookState(C.NF_INET_POST_ROUTING, nfproto_of(skb), in_ifindex,
                        net.ifname(in_ifindex), out.ifindex, out.name, rt_mtu(net, skb, fib), net, x)  # fmt: skip
    res = net.nf.nf_hook(skb, state)
    if res.verdict != C.NF_ACCEPT:
        return nf_hook_drop(net, q, skb, res, state)
    if x is not None:
        outer = xfrm_output(net, skb, x)
        return outer if isinstance(outer, Reason) else ip_local_out(net, q, outer)
    return ip_finish_output(net, q, skb, fib)


def ip_finish_output(net, q, skb: SkBuff, fib) -> Reason:
    """__ip_finish_output / __ip6_finish_output: a packet past the route MTU, or a datagram nf_defrag
    reassembled (frag_max_size: it leaves in fragments no larger than the largest received), goes through
    ip_fragment / ip6_fragment; then neighbour output. Past the MTU, IPv4 with DF and IPv6 are refused
    unless nf_defrag's (ignore_df); forwarded packets that big were refused by ip_forward already."""
    mtu, n, fms = fib.mtu, skb.l3len, skb.frag_max_size
    if skb.l3proto == L.ETH_P_IPV6:
        if n <= mtu and not (fms and n > fms):
            return neigh_output(net, q, skb, fib)
        if (n > mtu and not skb.ignore_df) or fms > mtu:
            return Reason.IP_FRAG_FAILED  # ip6_fragment › fail_toobig
        frames = ip6_fragment(skb.tobytes(), skb.nhoff, mtu, skb.frag_id, frag_max_size=fms,
                              frag_list=skb.frag_list)  # fmt: skip
    else:
        if n <= mtu and not fms:
            return neigh_output(net, q, skb, fib)
        if ld16(skb.buf, skb.nhoff + L.IPH.frag_off) & L.IP_DF and (not skb.ignore_df or fms > mtu):
            return Reason.IP_FRAG_FAILED  # ip_fragment: local traffic with DF
        frames = ip_do_fragment(skb.tobytes(), skb.nhoff, mtu, frag_max_size=fms, frag_list=skb.frag_list,
                                frag_pmtu=skb.frag_pmtu)  # fmt: skip
    return ip_finish_output2(net, q, [f[skb.nhoff :] for f in frames], skb, fib)


def neigh_output(net, q, skb: SkBuff, fib) -> Reason:
    """ip_finish_output2 / ip6_finish_output2 for skb whole."""
    return ip_finish_output2(net, q, [skb.tobytes()[skb.nhoff :]], skb, fib)


def ip_finish_output2(net, q, frames: list[bytes], skb: SkBuff, fib) -> Reason:
    """The next hop's neighbour writes the link-layer header of each of skb's network-layer `frames`
    and transmits, or queues them while it resolves (flowpath.inet.neigh_output). A tunnel device has
    no neighbours: its transmit (ipip_tunnel_xmit, ip6_tnl_start_xmit) encapsulates each frame, and the
    outer packet is sent as a local one (iptunnel_xmit › ip_local_out, ip6tunnel_xmit › ip6_local_out).
    The first frame not transmitted decides."""
    out = net.links[fib.oif]
    if not out.is_tunnel:
        return neigh_resolve_output(net, q, frames, skb, fib)
    xmit = ip_tunnel_xmit if out.tunnel.family == 4 else ip6_tnl_xmit
    reason = Reason.TX
    for frame in frames:
        r, frame = nf_hook_egress_tunnel(net, q, out, frame, skb.l3proto)  # the tunnel device's dev_queue_xmit
        if r is None:
            outer = xmit(net, q, frame, skb, out, fib)
            r = outer if isinstance(outer, Reason) else ip_local_out(net, q, outer)
        reason = r if reason == Reason.TX else reason
    return reason
