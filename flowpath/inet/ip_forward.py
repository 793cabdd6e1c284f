"""Forwarding: TTL and MTU checks, TTL decrement, the FORWARD hook, then output.

Linux: net/ipv4/ip_forward.c › ip_forward, ip_exceeds_mtu, ip_forward_finish;
net/ipv6/ip6_output.c › ip6_forward, ip6_pkt_too_big.
`flow add @ft` does not offload here: the FORWARD hook's request is queued on q (q.offload) once the
packet is transmitted (or dropped by an egress chain, which runs after Linux's nft_flow_offload_eval
offloaded it: the flow's next packets meet that chain on the fast path), and the Worker adds the flow
to its flowtable.
"""

from __future__ import annotations

from flowpath.inet.icmp import icmp_send
from flowpath.inet.ip_output import ip_output, nfproto_of, rt_mtu
from flowpath.inet.nf_reject import nf_hook_drop
from flowpath.inet.xfrm4 import xfrm_dst_lookup, xfrm_policy_check
from flowpath.netfilter import constants as C
from flowpath.netfilter.hooks import NfHookState
from flowpath.packet import layout as L
from flowpath.packet.csum import ip_decrease_ttl, ld16
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff
from flowpath.xfrm.esp import xfrm_state_mtu
from flowpath.xfrm.policy import XFRM_POLICY_FWD


def ip_exceeds_mtu(skb: SkBuff, mtu: int) -> bool:
    """IPv4: too big and DF set. IPv6: too big (routers never fragment, RFC 8200 §5). A datagram
    nf_defrag reassembled leaves as fragments (ignore_df): too big only when its largest fragment was
    (frag_max_size). Linux: ip_exceeds_mtu, ip6_pkt_too_big."""
    if skb.l3len <= mtu:
        return False
    if skb.l3proto == L.ETH_P_IPV6:
        return skb.frag_max_size > mtu or not skb.ignore_df
    if not ld16(skb.buf, skb.nhoff + L.IPH.frag_off) & L.IP_DF:
        return False
    return skb.frag_max_size > mtu or not skb.ignore_df


def ip_forward(net, q, skb: SkBuff, fib) -> Reason:
    """ip_forward / ip6_forward for a packet routed to `fib` (a unicast route off this host)."""
    v6 = skb.l3proto == L.ETH_P_IPV6
    if net.xfrm is not None and not xfrm_policy_check(net, skb, XFRM_POLICY_FWD):
        return Reason.XFRM_POLICY  # e.g. plaintext where a policy demands ESP, or decrypted and not allowed
    ttl = int(skb.buf[skb.nhoff + (L.IP6H.hop_limit if v6 else L.IPH.ttl)])
    if ttl <= 1:
        if v6:
            icmp_send(net, q, skb, L.ICMPV6_TIME_EXCEED, L.ICMPV6_EXC_HOPLIMIT, 0)
        else:
            icmp_send(net, q, skb, L.ICMP_TIME_EXCEEDED, L.ICMP_EXC_TTL, 0)
        return Reason.TTL_EXPIRED
    dst = xfrm_dst_lookup(net, skb, fib)  # xfrm4_route_forward: the route becomes the SA's outer route
    if isinstance(dst, Reason):
        return dst
    fib, x = dst
    mtu = fib.mtu if x is None else xfrm_state_mtu(x, fib.mtu)
    if ip_exceeds_mtu(skb, mtu):
        if v6:
            icmp_send(net, q, skb, L.ICMPV6_PKT_TOOBIG, 0, mtu)
        else:
            icmp_send(net, q, skb, L.ICMP_DEST_UNREACH, L.ICMP_FRAG_NEEDED, mtu)
        return Reason.PKT_TOO_BIG_DF
    if v6:
        skb.buf[skb.nhoff + L.IP6H.hop_limit] = ttl - 1
    else:
        ip_decrease_ttl(skb.buf, skb.nhoff)
    out = net.links[fib.oif]
    state = NfHookState(C.NF_INET_FORWARD, nfproto_of(skb), skb.iif, net.ifname(skb.iif), out.ifindex, out.name,
                        rt_mtu(net, skb, fib), net, x)  # fmt: skip
    res = net.nf.nf_hook(skb, state)
    if res.verdict != C.NF_ACCEPT:
        return nf_hook_drop(net, q, skb, res, state)
    reason = ip_output(net, q, skb, fib, skb.iif, x)
    if reason in (Reason.TX, Reason.NETFILTER_EGRESS) and res.flow_add:  # through an SA too: XMIT_XFRM
        q.offload.append((skb, res.flow_add))
    return reason
