"""Receive: PREROUTING, the routing decision and local delivery.

Linux: net/ipv4/ip_input.c › ip_rcv, ip_rcv_finish, ip_local_deliver; net/ipv4/route.c ›
ip_route_input_slow, ip_error; net/ipv6/ip6_input.c, route.c. IPIP to us is decapsulated by
flowpath.inet.ipip, IPv4 or IPv6 in IPv6 by flowpath.inet.ip6_tunnel, and received again on the
tunnel device.
"""

from __future__ import annotations

from numba import njit

from flowpath.inet.icmp import echo_request, icmp_send
from flowpath.inet.ip6_tunnel import tunnel6_rcv
from flowpath.inet.ip_forward import ip_forward
from flowpath.inet.ip_options import ip_options_compile
from flowpath.inet.ip_output import family_of, nfproto_of
from flowpath.inet.ipip import ipip_rcv
from flowpath.inet.ndisc import ndisc_is_nd, ndisc_rcv
from flowpath.inet.nf_reject import nf_hook_drop
from flowpath.inet.xfrm4 import xfrm4_rcv, xfrm_policy_check, xfrm_rcv_steer
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


@njit(cache=True, nogil=True)
def ip_route_input_martian(saddr, daddr):
    """ip_route_input_slow's martian checks on an IPv4 packet received from a port (route_localnet
    off): a multicast, broadcast, 0/8 or loopback source; a 0/8 or loopback destination. A limited
    broadcast destination is broadcast input whatever the source (DHCP discovers come from 0.0.0.0).
    The Python path and the compiled classic lane call it."""
    if saddr >> 28 == 0xE or saddr == 0xFFFFFFFF:
        return True
    if daddr == 0xFFFFFFFF or (saddr == 0 and daddr == 0):
        return False
    return saddr >> 24 == 0 or daddr >> 24 == 0 or daddr >> 24 == 0x7F or saddr >> 24 == 0x7F


@njit(cache=True, nogil=True)
def ipv6_rcv_martian(buf, nhoff):
    """ip6_rcv_core's address checks on the IPv6 packet at nhoff, not from the loopback device: a
    multicast, loopback or IPv4-mapped source, a loopback destination, multicast of scope 0 or
    interface-local. The Python path and the compiled classic lane call it."""
    so, do = nhoff + L.IP6H.saddr, nhoff + L.IP6H.daddr
    s_zero = d_zero = True  # the first 15 bytes of each address are zero (::1 is the 16th)
    for j in range(15):
        s_zero = s_zero and buf[so + j] == 0
        d_zero = d_zero and buf[do + j] == 0
    if buf[so] == 0xFF or (s_zero and buf[so + 15] == 1) or (d_zero and buf[do + 15] == 1):
        return True
    mapped = buf[so + 10] == 0xFF and buf[so + 11] == 0xFF
    for j in range(10):
        mapped = mapped and buf[so + j] == 0
    return mapped or (buf[do] == 0xFF and (buf[do + 1] & 0xF) <= 1)


def ip_rcv_finish(net, q, skb: SkBuff) -> Reason:
    """PREROUTING, then the routing decision (ip_rcv / ip_rcv_finish / ip_route_input_noref); IPv6's
    address checks come first, in ip6_rcv_core, IPv4's after the hook, in the route lookup."""
    v6 = skb.l3proto == L.ETH_P_IPV6
    if v6 and ipv6_rcv_martian(skb.buf, skb.nhoff):
        return Reason.IP_INADDRERRORS
    state = NfHookState(C.NF_INET_PRE_ROUTING, nfproto_of(skb), skb.iif, net.ifname(skb.iif), net=net)
    res = net.nf.nf_hook(skb, state)
    if res.verdict != C.NF_ACCEPT:
        return nf_hook_drop(net, q, skb, res, state)
    if not v6:
        if ip_route_input_martian(skb.saddr, skb.daddr):
            return Reason.IP_INADDRERRORS
        reason = ip_rcv_options(net, q, skb)
        if reason is not None:
            return reason
    family = family_of(skb)
    if net.is_local(family, skb.daddr) or (v6 and skb.daddr >> 120 == 0xFF and ndisc_is_nd(skb)):
        return ip_local_deliver(net, q, skb)  # ND to a multicast group: ip6_mc_input, as ours
    if (skb.daddr >> 28 == 0xE or skb.daddr == 0xFFFFFFFF) if family == 4 else skb.daddr >> 120 == 0xFF:
        return Reason.LOCAL_IN  # multicast/broadcast: not forwarded
    fib = net.fib_lookup(family, skb.daddr)
    if fib is None or fib.type != RouteType.UNICAST:
        return ip_error(net, q, skb, fib)
    return ip_forward(net, q, skb, fib)


def ip_rcv_options(net, q, skb: SkBuff) -> Reason | None:
    """An IPv4 header with options: a parameter problem for a malformed one, a drop for a source
    route (accept_source_route 0); None lets the packet go on."""
    ihl = (int(skb.buf[skb.nhoff]) & 0xF) * 4
    if ihl == L.IPH.size:
        return None
    pointer, srr = ip_options_compile(skb.buf, skb.nhoff, ihl)
    if pointer >= 0:
        icmp_send(net, q, skb, L.ICMP_PARAMETERPROB, 0, pointer, local=net.is_local(4, skb.daddr))
        return Reason.IP_INHDR
    return Reason.IP_SOURCE_ROUTE if srr else None


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
    packet is received again, as xfrm_input does), IPIP and IPv4/IPv6-in-IPv6 to our tunnels (received
    again on the tunnel device, as gro_cells_receive does), echo, and port unreachable."""
    state = NfHookState(C.NF_INET_LOCAL_IN, nfproto_of(skb), skb.iif, net.ifname(skb.iif), net=net)
    res = net.nf.nf_hook(skb, state)
    if res.verdict != C.NF_ACCEPT:
        return nf_hook_drop(net, q, skb, res, state)
    if net.xfrm is not None:
        if skb.l4proto in (L.IPPROTO_ESP, L.IPPROTO_UDP) and not skb.frag:
            inner = xfrm4_rcv(net, q, skb)
            if isinstance(inner, SkBuff):
                if xfrm_rcv_steer(net, q, inner):
                    return Reason.RPS_HANDOFF
                return ip_rcv_finish(net, q, inner)
            if inner is not None:
                return inner
    inner = None
    if skb.l4proto == L.IPPROTO_IPIP and skb.l3proto == L.ETH_P_IP:
        inner = ipip_rcv(net, q, skb)  # tunnel4_rcv: its own xfrm policy check (no_policy)
    elif skb.l4proto in (L.IPPROTO_IPIP, L.IPPROTO_IPV6) and skb.l3proto == L.ETH_P_IPV6:
        inner = tunnel6_rcv(net, q, skb)  # tunnel6_rcv / tunnel46_rcv: INET6_PROTO_NOPOLICY likewise
    if isinstance(inner, SkBuff):
        return ip_rcv_finish(net, q, inner)
    if inner is not None:
        return inner
    if net.xfrm is not None and not xfrm_policy_check(net, skb, XFRM_POLICY_IN):
        return Reason.XFRM_POLICY
    return ip_protocol_deliver(net, q, skb)


# the protocols a gateway's own stack handles (inet_protos / inet6_protos); ESP is xfrm4_rcv's
_LOCAL_PROTOS4 = (L.IPPROTO_ICMP, L.IPPROTO_IGMP, L.IPPROTO_TCP, L.IPPROTO_UDP, L.IPPROTO_ESP)
_LOCAL_PROTOS6 = (L.IPPROTO_ICMPV6, L.IPPROTO_TCP, L.IPPROTO_UDP, L.IPPROTO_ESP, L.IPPROTO_NONE)


def ip_protocol_deliver(net, q, skb: SkBuff) -> Reason:
    """ip_protocol_deliver_rcu / ip6_protocol_deliver_rcu for the few local services of a gateway
    data plane: echo, port unreachable for UDP (no sockets), and for a protocol without a handler a
    protocol unreachable (IPv4) or a parameter problem at its next-header byte (IPv6); Neighbour
    Solicitations and Advertisements go to ndisc_rcv (icmpv6_rcv). IPv6's
    "no next header" is discarded quietly (dst_discard). Deviation: TCP to the gateway is consumed
    without a reset."""
    v6 = skb.l3proto == L.ETH_P_IPV6
    if skb.l4proto not in (_LOCAL_PROTOS6 if v6 else _LOCAL_PROTOS4):
        if v6:
            icmp_send(net, q, skb, L.ICMPV6_PARAMPROB, L.ICMPV6_UNK_NEXTHDR, skb.nexthdr_off, local=True)
        else:
            icmp_send(net, q, skb, L.ICMP_DEST_UNREACH, L.ICMP_PROT_UNREACH, 0, local=True)
        return Reason.IP_NOPROTO
    if v6 and ndisc_is_nd(skb):
        return ndisc_rcv(net, q, skb)
    if echo_request(skb):
        q.local_out.append(net.icmp.icmpv6_echo_reply(skb) if v6 else net.icmp.icmp_echo(skb))
    elif skb.l4proto == L.IPPROTO_UDP and not skb.frag:  # __udp4_lib_rcv: no socket
        if v6:
            icmp_send(net, q, skb, L.ICMPV6_DEST_UNREACH, L.ICMPV6_PORT_UNREACH, 0, local=True)
        else:
            icmp_send(net, q, skb, L.ICMP_DEST_UNREACH, L.ICMP_PORT_UNREACH, 0, local=True)
    return Reason.LOCAL_IN
