"""Receive: PREROUTING, the routing decision and local delivery.

Linux: net/ipv4/ip_input.c › ip_rcv, ip_rcv_finish, ip_local_deliver; net/ipv4/route.c ›
ip_route_input_slow, ip_error; net/ipv6/ip6_input.c, route.c.
"""

from __future__ import annotations

from flowpath.inet.icmp import echo_request, icmp_send
from flowpath.inet.ip_forward import ip_forward
from flowpath.inet.ip_output import family_of, ip_local_out, nfproto_of
from flowpath.inet.nf_reject import nf_hook_drop
from flowpath.inet.xfrm4 import xfrm4_rcv, xfrm_policy_check
from flowpath.net.fib import RouteType
from flowpath.netfilter import constants as C
from flowpath.netfilter.hooks import NfHookState
from flowpath.packet import layout as L
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff
from flowpath.xfrm.policy import XFRM_POLICY_IN

# ip_error / ip6_pkt_drop: which ICMP a route type answers with (None: silent)
_UNREACH4 = {RouteType.UNREACHABLE: L.ICMP_HOST_UNREACH, RouteType.PROHIBIT: L.ICMP_PKT_FILTERED,
             RouteType.BLACKHOLE: None}  # fmt: skip
_UNREACH6 = {RouteType.UNREACHABLE: L.ICMPV6_NOROUTE, RouteType.PROHIBIT: L.ICMPV6_ADM_PROHIBITED,
             RouteType.BLACKHOLE: None}  # fmt: skip


def _martian(skb: SkBuff) -> bool:
    """ip_route_input_slow's martian source checks (multicast, limited broadcast, zero, loopback)."""
    s = skb.saddr
    if skb.l3proto == L.ETH_P_IPV6:
        return s >> 120 == 0xFF or s == 1
    return s == 0 or s == 0xFFFFFFFF or s >> 28 == 0xE or s >> 24 == 0x7F


def ip_rcv_finish(net, q, skb: SkBuff) -> Reason:
    """PREROUTING, then the routing decision (ip_rcv / ip_rcv_finish / ip_route_input_noref)."""
    state = NfHookState(C.NF_INET_PRE_ROUTING, nfproto_of(skb), skb.iif, net.ifname(skb.iif))
    res = net.nf.nf_hook(skb, state)
    if res.verdict != C.NF_ACCEPT:
        return nf_hook_drop(net, q, skb, res, state)
    if _martian(skb):
        return Reason.IP_INADDRERRORS
    family = family_of(skb)
    if net.is_local(family, skb.daddr):
        return ip_local_deliver(net, q, skb)
    if (skb.daddr >> 28 == 0xE or skb.daddr == 0xFFFFFFFF) if family == 4 else skb.daddr >> 120 == 0xFF:
        return Reason.LOCAL_IN  # multicast/broadcast: not forwarded
    fib = net.fib_lookup(family, skb.daddr)
    if fib is None or fib.type != RouteType.UNICAST:
        return ip_error(net, q, skb, fib)
    return ip_forward(net, q, skb, fib)


def ip_error(net, q, skb: SkBuff, fib) -> Reason:
    """No usable route: ICMP net/host unreachable or administratively prohibited, or silence for blackhole."""
    kind = None if fib is None else fib.type
    if skb.l3proto == L.ETH_P_IPV6:
        code = _UNREACH6.get(kind, L.ICMPV6_NOROUTE)
        if code is not None:
            icmp_send(net, q, skb, L.ICMPV6_DEST_UNREACH, code, 0)
    else:
        code = _UNREACH4.get(kind, L.ICMP_NET_UNREACH)
        if code is not None:
            icmp_send(net, q, skb, L.ICMP_DEST_UNREACH, code, 0)
    return Reason.IP_OUTNOROUTES


def ip_local_deliver(net, q, skb: SkBuff) -> Reason:
    """LOCAL_IN, then the only local services a gateway data plane has: ESP to our SAs (the inner
    packet is received again, as xfrm_input does), echo, and port unreachable."""
    state = NfHookState(C.NF_INET_LOCAL_IN, nfproto_of(skb), skb.iif, net.ifname(skb.iif))
    res = net.nf.nf_hook(skb, state)
    if res.verdict != C.NF_ACCEPT:
        return nf_hook_drop(net, q, skb, res, state)
    if net.xfrm is not None:
        if skb.l4proto in (L.IPPROTO_ESP, L.IPPROTO_UDP) and not skb.frag:
            inner = xfrm4_rcv(net, q, skb)
            if isinstance(inner, SkBuff):
                return ip_rcv_finish(net, q, inner)
            if inner is not None:
                return inner
        if not xfrm_policy_check(net, skb, XFRM_POLICY_IN):
            return Reason.XFRM_POLICY
    if echo_request(skb):
        reply = net.icmp.icmpv6_echo_reply(skb) if skb.l3proto == L.ETH_P_IPV6 else net.icmp.icmp_echo(skb)
        ip_local_out(net, q, reply)
    elif skb.l4proto == L.IPPROTO_UDP and not skb.frag:  # __udp4_lib_rcv: no socket
        if skb.l3proto == L.ETH_P_IPV6:
            icmp_send(net, q, skb, L.ICMPV6_DEST_UNREACH, L.ICMPV6_PORT_UNREACH, 0, local=True)
        else:
            icmp_send(net, q, skb, L.ICMP_DEST_UNREACH, L.ICMP_PORT_UNREACH, 0, local=True)
    return Reason.LOCAL_IN
