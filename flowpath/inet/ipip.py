"""IPIP receive: an IPv4-in-IPv4 packet delivered to us leaves its outer header on its tunnel device.

Linux: net/ipv4/tunnel4.c › tunnel4_rcv (the IPPROTO_IPIP handler: with no tunnel taking the packet,
ICMP port unreachable), net/ipv4/ipip.c › ipip_rcv, ipip_tunnel_rcv, net/ipv4/ip_tunnel.c ›
ip_tunnel_rcv (ECN per RFC 6040: IP_ECN_decapsulate), net/ipv4/ip_tunnel_core.c › iptunnel_pull_header.
The inner packet is returned to ip_local_deliver, which receives it again as from the tunnel device
(gro_cells_receive › netif_receive_skb: PREROUTING sees iifname the tunnel's name), as xfrm4_rcv's is.

Deviations: an outer fragment reaches here only when no conntrack reassembled it (flowpath has no
ip_defrag for local delivery): it is dropped, IP_TUNNEL_FRAG. Per-tunnel rx counters are not kept
(the packets are counted by Reason and on their output device).
"""

from __future__ import annotations

from flowpath.inet.icmp import icmp_send
from flowpath.inet.inet_ecn import ECN_DECAP_DROP, ecn_decapsulate, ip_ecn_set
from flowpath.inet.xfrm4 import xfrm_policy_check
from flowpath.net.ip_tunnel import ip_tunnel_lookup
from flowpath.net.link import KIND_IPIP
from flowpath.packet import layout as L
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff, frame_array, skb_parse
from flowpath.xfrm.policy import XFRM_POLICY_IN


def tunnel4_registered(net) -> bool:
    """Whether Linux would have tunnel4's IPPROTO_IPIP handler: the ipip module is loaded once an
    ipip device exists (its fallback tunl0 with it). Without it, IPIP is an unknown protocol
    (ip_protocol_deliver_rcu: protocol unreachable)."""
    return any(lk.kind == KIND_IPIP for lk in net.links.values())


def ipip_rcv(net, q, skb: SkBuff) -> SkBuff | Reason | None:
    """tunnel4_rcv › ipip_rcv for an IPv4 packet to us with protocol IPPROTO_IPIP: the inner packet
    (on the tunnel device) for the caller to receive again, a drop Reason, or None when no ipip device
    exists (the caller's protocol unreachable applies)."""
    if not tunnel4_registered(net):
        return None
    if skb.frag:
        return Reason.IP_TUNNEL_FRAG
    dev = ip_tunnel_lookup(net, 4, skb.saddr, skb.daddr, skb.iif)
    if dev is None:
        icmp_send(net, q, skb, L.ICMP_DEST_UNREACH, L.ICMP_PORT_UNREACH, 0, local=True)
        return Reason.IP_TUNNEL_NOMATCH
    if L.IPPROTO_IPIP not in dev.tunnel.protocols:
        return Reason.IP_TUNNEL_PROTO
    if net.xfrm is not None and not xfrm_policy_check(net, skb, XFRM_POLICY_IN):
        return Reason.XFRM_POLICY
    inner = iptunnel_pull_header(skb, dev.ifindex)
    if isinstance(inner, Reason):
        return inner
    return ip_tunnel_rcv(skb, inner)


def iptunnel_pull_header(skb: SkBuff, ifindex: int) -> SkBuff | Reason:
    """The packet after the outer IPv4 header, parsed as received (ip_rcv_core's checks) on the tunnel
    device `ifindex`; a drop Reason when it is no valid IPv4 packet. Its link-layer header is the outer
    frame's addresses with ETH_P_IP (a tunnel device has none; output writes its own)."""
    b, nh = skb.buf, skb.nhoff
    ihl = (int(b[nh + L.IPH.version_ihl]) & 0xF) * 4
    frame = b[: L.ETH.h_proto].tobytes() + L.ETH_P_IP.to_bytes(2, "big") + b[nh + ihl :].tobytes()
    inner = skb_parse(frame_array(frame), ifindex, skb.ts_ns)
    if isinstance(inner, Reason):
        return inner
    if inner.l3proto != L.ETH_P_IP:
        return Reason.IP_INHDR
    return inner


def ip_tunnel_rcv(outer: SkBuff, inner: SkBuff) -> SkBuff | Reason:
    """ip_tunnel_rcv's ECN step (IP_ECN_decapsulate: RFC 6040 §4.2); the inner DSCP is kept (Linux's
    ipip copies no outer DSCP inward). The packet is otherwise unchanged: skb_scrub_packet drops the
    mark, conntrack and secpath, which the new SkBuff does not have."""
    outer_tos = int(outer.buf[outer.nhoff + L.IPH.tos])
    inner_tos = int(inner.buf[inner.nhoff + L.IPH.tos])
    rc, ecn = ecn_decapsulate(outer_tos, inner_tos)
    if rc == ECN_DECAP_DROP:
        return Reason.IP_TUNNEL_ECN  # rx_frame_errors
    ip_ecn_set(inner.buf, inner.nhoff, ecn)
    return inner
