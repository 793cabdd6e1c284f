"""Forwarding: TTL and MTU checks, TTL decrement, the FORWARD hook, then output.

Linux: net/ipv4/ip_forward.c › ip_forward, ip_exceeds_mtu, ip_forward_finish;
net/ipv6/ip6_output.c › ip6_forward, ip6_pkt_too_big.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowpath.inet.ip_output import ip_output, nfproto_of
from flowpath.inet.xfrm4 import xfrm_outer_route, xfrm_policy_check, xfrm_route_forward, xfrm_state_mtu
from flowpath.netfilter import constants as C
from flowpath.netfilter.hooks import NfHookState
from flowpath.packet import layout as L
from flowpath.packet.csum import ip_decrease_ttl, ld16
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff
from flowpath.xfrm.policy import XFRM_POLICY_FWD

if TYPE_CHECKING:
    from flowpath.datapath import Worker


def ip_exceeds_mtu(skb: SkBuff, mtu: int) -> bool:
    """IPv4: too big and DF set. IPv6: too big (routers never fragment, RFC 8200 §5)."""
    if skb.l3len <= mtu:
        return False
    if skb.l3proto == L.ETH_P_IPV6:
        return True
    return bool(ld16(skb.buf, skb.nhoff + L.IPH.frag_off) & L.IP_DF)


def ip_forward(w: Worker, skb: SkBuff, fib) -> Reason:
    """ip_forward / ip6_forward for a packet routed to `fib` (a unicast route off this host)."""
    v6 = skb.l3proto == L.ETH_P_IPV6
    if w.xfrm is not None and not xfrm_policy_check(w, skb, XFRM_POLICY_FWD):
        return Reason.XFRM_POLICY  # e.g. plaintext where a policy demands ESP, or decrypted and not allowed
    ttl = int(skb.buf[skb.nhoff + (L.IP6H.hop_limit if v6 else L.IPH.ttl)])
    if ttl <= 1:
        if v6:
            w.icmp_error(skb, L.ICMPV6_TIME_EXCEED, L.ICMPV6_EXC_HOPLIMIT, 0)
        else:
            w.icmp_error(skb, L.ICMP_TIME_EXCEEDED, L.ICMP_EXC_TTL, 0)
        return Reason.TTL_EXPIRED
    x, mtu = None, fib.mtu
    if w.xfrm is not None:  # xfrm4_route_forward: the route becomes the SA's outer route
        x = xfrm_route_forward(w, skb)
        if isinstance(x, Reason):
            return x
        if x is not None:
            fib = xfrm_outer_route(w, x)
            if fib is None:
                return Reason.IP_OUTNOROUTES
            mtu = xfrm_state_mtu(x, fib.mtu)
    if ip_exceeds_mtu(skb, mtu):
        if v6:
            w.icmp_error(skb, L.ICMPV6_PKT_TOOBIG, 0, mtu)
        else:
            w.icmp_error(skb, L.ICMP_DEST_UNREACH, L.ICMP_FRAG_NEEDED, mtu)
        return Reason.PKT_TOO_BIG_DF
    if v6:
        skb.buf[skb.nhoff + L.IP6H.hop_limit] = ttl - 1
    else:
        ip_decrease_ttl(skb.buf, skb.nhoff)
    out = w.net.links[fib.oif]
    state = NfHookState(C.NF_INET_FORWARD, nfproto_of(skb), skb.iif, w.ifname(skb.iif), out.ifindex, out.name,
                        w.rt_mtu(skb, fib))  # fmt: skip
    res = w.netfilter.nf_hook(skb, state)
    if res.verdict != C.NF_ACCEPT:
        return w.nf_drop(skb, res, state)
    reason = ip_output(w, skb, fib, skb.iif, x)
    if reason == Reason.TX and res.flow_add:  # through an SA too: XMIT_XFRM (nft_flow_xfrm)
        w.flow_offload(skb, fib, res.flow_add)
    return reason
