"""IPIP transmit: a packet routed out of an ipip device leaves inside an outer IPv4 header.

Linux: net/ipv4/ipip.c › ipip_tunnel_xmit, net/ipv4/ip_tunnel.c › ip_tunnel_xmit, tnl_update_pmtu,
net/ipv4/ip_tunnel_core.c › iptunnel_xmit, include/net/ip_tunnels.h › ip_tunnel_ecn_encap.
The inner packet has been through FORWARD, POSTROUTING (oifname the tunnel) and fragmentation to the
tunnel's MTU (ip_finish_output on the tunnel's route); ip_output hands each piece here instead of to
the neighbour layer (a tunnel device has no neighbours). The outer packet is returned for the caller to
send as a local one (iptunnel_xmit › ip_local_out: OUTPUT, routing to `remote`, POSTROUTING,
fragmentation where DF is clear, the neighbour on the physical device), as xfrm_output's is.

Deviations: the outer route is looked up without `dev PHYS` binding it (flowi4_oif) and its MTU lock
is not known (a locked route MTU would clear DF); the PMTU learnt (skb_dst_update_pmtu) is not cached.
"""

from __future__ import annotations

import struct

from flowpath.inet.icmp import icmp_send
from flowpath.inet.inet_ecn import INET_ECN_encapsulate
from flowpath.net.fib import RouteType
from flowpath.packet import layout as L
from flowpath.packet.csum import ip_fast_csum, ld16, ld32, st16
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff, frame_array, skb_parse

XMIT_RECURSION_LIMIT = 8  # include/linux/netdevice.h: tunnels nested deeper are dropped
_MAC0 = bytes(12)


def ip_tunnel_xmit(net, q, frame: bytes, skb: SkBuff, dev, fib) -> SkBuff | Reason:
    """ipip_tunnel_xmit › ip_tunnel_xmit for `frame`, one IPv4 packet (skb or a fragment of it) routed
    by `fib` out of tunnel device `dev`: the outer packet, or a drop Reason (tx_errors)."""
    t = dev.tunnel
    if t.family != 4 or skb.l3proto != L.ETH_P_IP or L.IPPROTO_IPIP not in t.protocols:
        return Reason.IP_TUNNEL_PROTO
    depth = skb.meta.get("tnl_depth", 0)
    if depth >= XMIT_RECURSION_LIMIT:
        return Reason.IP_TUNNEL_LOOP  # dev_xmit_recursion
    inner = frame_array(frame)
    inner_tos, inner_ttl = int(inner[L.IPH.tos]), int(inner[L.IPH.ttl])
    inner_df = ld16(inner, L.IPH.frag_off) & L.IP_DF
    # no remote: an NBMA tunnel sends to the inner route's next hop (rt_nexthop)
    dst = t.remote or (fib.gateway if fib.gateway is not None else ld32(inner, L.IPH.daddr))
    tos = inner_tos if t.tos & 1 else t.tos
    rt = net.fib_lookup(4, dst)
    if rt is None or rt.type != RouteType.UNICAST:
        return Reason.IP_OUTNOROUTES  # tx_carrier_errors
    if rt.oif == dev.ifindex:
        return Reason.IP_TUNNEL_LOOP  # collisions: the route to the remote goes through the tunnel
    reason = tnl_update_pmtu(net, q, skb, dev, rt, len(frame), inner_df)
    if reason is not None:
        return reason
    tos = INET_ECN_encapsulate(tos, inner_tos)  # ip_tunnel_ecn_encap
    ttl = t.ttl or inner_ttl
    df = (L.IP_DF if t.pmtudisc else 0) | inner_df
    saddr = t.local or rt.prefsrc or 0
    outer = iptunnel_xmit(net, frame, skb, saddr, dst, tos, ttl, df)
    if isinstance(outer, SkBuff):
        outer.meta["tnl_depth"] = depth + 1
    return outer


def tnl_update_pmtu(net, q, skb: SkBuff, dev, rt, pkt_size: int, inner_df: int) -> Reason | None:
    """Linux: ip_tunnel.c › tnl_update_pmtu: with pmtudisc the path MTU is the outer route's less the
    outer header, else the inner route's (the tunnel's MTU); an inner packet with DF larger than it is
    answered with fragmentation needed carrying that MTU (RFC 1191), and dropped."""
    mtu = rt.mtu - L.IPH.size if dev.tunnel.pmtudisc else dev.mtu
    if inner_df and mtu < pkt_size:
        icmp_send(net, q, skb, L.ICMP_DEST_UNREACH, L.ICMP_FRAG_NEEDED, mtu)
        return Reason.PKT_TOO_BIG_DF
    return None


def iptunnel_xmit(net, frame: bytes, skb: SkBuff, saddr: int, daddr: int, tos: int, ttl: int, df: int):
    """Linux: ip_tunnel_core.c › iptunnel_xmit: push the outer header (protocol IPPROTO_IPIP; the ident
    0 with DF, as ip_select_ident gives a packet with DF and no socket, else the next one) and make it
    a local packet. Returns the outer SkBuff (input device 0: locally generated) or a drop Reason."""
    ident = 0 if df else net.icmp.ip_select_ident()
    iph = bytearray(
        struct.pack(">BBHHHBBHII", 0x45, tos, L.IPH.size + len(frame), ident, df, ttl, L.IPPROTO_IPIP, 0,
                    saddr, daddr)
    )  # fmt: skip
    buf = frame_array(_MAC0 + struct.pack(">H", L.ETH_P_IP) + iph + frame)
    st16(buf, L.ETH_HLEN + L.IPH.check, ip_fast_csum(buf, L.ETH_HLEN, L.IPH.size))
    return skb_parse(buf, 0, skb.ts_ns)
