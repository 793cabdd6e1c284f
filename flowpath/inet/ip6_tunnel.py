"""ip6tnl: IPv4 and IPv6 packets inside IPv6 (RFC 2473), transmitted and received on the classic path.

Linux: net/ipv6/ip6_tunnel.c › ip6_tnl_start_xmit, ipxip6_tnl_xmit, ip6_tnl_xmit, ip6_tnl_xmit_ctl,
ip6_tnl_get_cap, ip6_tnl_parse_tlv_enc_lim, init_tel_txopt, ipxip6_rcv, ip6_tnl_rcv_ctl, __ip6_tnl_rcv
(ECN: ip4ip6_ / ip6ip6_dscp_ecn_decapsulate); net/ipv6/tunnel6.c › tunnel6_rcv, tunnel46_rcv;
include/net/ip6_tunnel.h › ip6tunnel_xmit.
Transmit: ip_output hands each inner frame routed out of an ip6tnl device here (as ip_tunnel_xmit for
ipip) and sends the outer packet as a local one (ip6tunnel_xmit › ip6_local_out: OUTPUT, the IPv6
route to the remote, POSTROUTING, the neighbour on the physical device). skb_scrub_packet clears
ignore_df, so an outer packet past the path MTU is not fragmented: ip6_fragment refuses it
(fail_toobig, IP_FRAG_FAILED), which only an IPv6 inner packet clamped to IPV6_MIN_MTU can reach.
Receive: an IPv6 packet to us whose next header (after its extension headers) is IPPROTO_IPIP or
IPPROTO_IPV6 goes to tunnel6_rcv, whose inner packet is received again on the tunnel device.

Deviations: no automatic flow label (net.ipv6.auto_flowlabels = 0: ip6_make_flowlabel would hash the
inner flow when the tunnel's label is 0); ICMPv6 errors about our outer packets (ip6_tnl_err, the
PMTU they teach, err_count) are not relayed inward, and the PTB that ip6_fragment's fail_toobig
sends to our own outer source is not generated; an outer fragment is dropped (IP_TUNNEL_FRAG), not
reassembled; the dst cache and fwmark are not modelled; an NBMA tunnel (no remote) carries IPv6 only
(Linux also takes an IPv4 route's IPv6 gateway, which flowpath's routes do not have).
"""

from __future__ import annotations

import struct

from flowpath.inet.icmp import icmp_send
from flowpath.inet.inet_ecn import (
    ECN_DECAP_DROP,
    INET_ECN_encapsulate,
    ecn_decapsulate,
    ip6_ecn_set,
    ip_ecn_set,
)
from flowpath.inet.xfrm4 import xfrm_policy_check
from flowpath.net.fib import RouteType
from flowpath.net.ip_tunnel import ip_tunnel_lookup
from flowpath.net.link import KIND_IP6TNL
from flowpath.packet import layout as L
from flowpath.packet.csum import ld16
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff, frame_array, skb_parse
from flowpath.xfrm.policy import XFRM_POLICY_IN

XMIT_RECURSION_LIMIT = 8  # include/linux/netdevice.h, as ip_tunnel_xmit's
IPV4_MIN_MTU = 68
IPV6_TLV_TNL_ENCAP_LIMIT = 4  # include/uapi/linux/ip6_tunnel.h
IPV6_TLV_PADN = 1  # include/uapi/linux/in6.h
# include/net/ipv6.h › ipv6_ext_hdr: what ip6_tnl_parse_tlv_enc_lim walks through
_EXT_HDRS = (L.IPPROTO_HOPOPTS, L.IPPROTO_ROUTING, L.IPPROTO_FRAGMENT, L.IPPROTO_AH, L.IPPROTO_DSTOPTS)
_MAC0 = bytes(12)
_ETH_P = {L.IPPROTO_IPIP: L.ETH_P_IP, L.IPPROTO_IPV6: L.ETH_P_IPV6}


# ---- transmit ----


def ip6_tnl_xmit(net, q, frame: bytes, skb: SkBuff, dev, fib) -> SkBuff | Reason:
    """ip6_tnl_start_xmit › ipxip6_tnl_xmit › ip6_tnl_xmit for `frame`, one IP packet (skb or a
    fragment of it) routed by `fib` out of ip6tnl device `dev`: the outer packet, or a drop Reason
    (tx_errors). Every check runs before the outer header is built."""
    t = dev.tunnel
    depth = skb.meta.get("tnl_depth", 0)
    if depth >= XMIT_RECURSION_LIMIT:
        return Reason.IP_TUNNEL_LOOP  # dev_xmit_recursion
    if t.family != 6 or skb.l3proto not in (L.ETH_P_IP, L.ETH_P_IPV6):
        return Reason.IP_TUNNEL_PROTO
    inner = frame_array(frame)
    v6 = skb.l3proto == L.ETH_P_IPV6
    if v6 and _ld128(inner, L.IP6H.saddr) == t.remote:
        return Reason.IP_TUNNEL_LOOP  # ip6_tnl_addr_conflict: a trivial loop
    protocol = L.IPPROTO_IPV6 if v6 else L.IPPROTO_IPIP
    if protocol not in t.protocols:
        return Reason.IP_TUNNEL_PROTO
    skb = _frame_skb(skb, frame)
    if isinstance(skb, Reason):
        return skb
    encap_limit = ip6_tnl_encap_limit(net, q, skb, inner, t) if v6 else t.encap_limit
    if isinstance(encap_limit, Reason):
        return encap_limit
    dsfield, flowlabel = ip6_tnl_flowinfo(t, inner, v6)
    # ip6_tnl_xmit: where to, then whether we may, then the route and its MTU
    daddr = t.remote or (_nbma_daddr(inner, fib) if v6 else 0)
    if not daddr or not ip6_tnl_xmit_ctl(net, t, t.local, daddr):
        return dst_link_failure(net, q, skb, Reason.IP6_TNL_XMIT_CTL)
    rt = net.fib_lookup(6, daddr)
    if rt is None or rt.type != RouteType.UNICAST:
        return dst_link_failure(net, q, skb, Reason.IP_OUTNOROUTES)  # tx_carrier_errors
    if rt.oif == dev.ifindex:
        return Reason.IP_TUNNEL_LOOP  # collisions: "Local routing loop detected!"
    mtu = rt.mtu - L.IP6H.size - (8 if encap_limit >= 0 else 0)
    mtu = max(mtu, L.IPV6_MIN_MTU if v6 else IPV4_MIN_MTU)
    if len(frame) > mtu:  # -EMSGSIZE: "XXX: send ICMP error even if DF is not set."
        if v6:
            icmp_send(net, q, skb, L.ICMPV6_PKT_TOOBIG, 0, mtu)
        else:
            icmp_send(net, q, skb, L.ICMP_DEST_UNREACH, L.ICMP_FRAG_NEEDED, mtu)
        return Reason.PKT_TOO_BIG_DF
    hop_limit = t.ttl or int(inner[L.IP6H.hop_limit if v6 else L.IPH.ttl])
    outer = ip6tunnel_push_header(frame, protocol, encap_limit, dsfield, flowlabel, hop_limit, t.local, daddr)
    out = skb_parse(outer, 0, skb.ts_ns)
    if isinstance(out, SkBuff):
        out.meta["tnl_depth"] = depth + 1
    return out


def _frame_skb(skb: SkBuff, frame: bytes) -> SkBuff | Reason:
    """The SkBuff the tunnel transmits and its ICMP errors quote: skb, or the fragment of it that
    ip_finish_output cut on the tunnel route (Linux hands the device each fragment as an skb)."""
    if len(frame) == skb.l3len:
        return skb
    buf = skb.buf[: skb.nhoff].tobytes() + frame
    return skb_parse(frame_array(buf), skb.iif, skb.ts_ns)


def ip6_tnl_encap_limit(net, q, skb: SkBuff, inner, t) -> int | Reason:
    """ipxip6_tnl_xmit for an IPv6 inner packet: the encapsulation limit the outer header gets. The
    tunnel's own (-1: none), unless the inner packet carries the option itself (it left another
    tunnel): then one less than its limit, and a limit of 0 may not be tunnelled again (RFC 2473
    §4.1.1), answered with a parameter problem pointing at it."""
    off = ip6_tnl_parse_tlv_enc_lim(inner, 0)
    if not off:
        return t.encap_limit
    limit = int(inner[off + 2])
    if limit == 0:
        icmp_send(net, q, skb, L.ICMPV6_PARAMPROB, L.ICMPV6_HDR_FIELD, off + 2)
        return Reason.IP6_TNL_ENCAP_LIMIT
    return limit - 1


def ip6_tnl_flowinfo(t, inner, v6: bool) -> tuple[int, int]:
    """(traffic class, flow label) of the outer header: the tunnel's `tclass` or the inner DS field
    (`tclass inherit`, IP6_TNL_F_USE_ORIG_TCLASS), its ECN field from the inner packet
    (INET_ECN_encapsulate, RFC 6040 §4.1); the tunnel's `flowlabel`, or with `flowlabel inherit` an
    IPv6 inner packet's (ipxip6_tnl_xmit: fl6.flowlabel |= ip6_flowlabel(ipv6h); 0 for IPv4)."""
    if v6:
        word = int.from_bytes(bytes(inner[:4]), "big")
        orig, inner_label = (word >> 20) & 0xFF, word & 0xFFFFF
    else:
        orig, inner_label = int(inner[L.IPH.tos]), 0
    dsfield = orig if t.tos & 1 else t.tos
    flowlabel = inner_label if t.flowlabel < 0 else t.flowlabel
    return INET_ECN_encapsulate(dsfield, orig), flowlabel


def _nbma_daddr(inner, fib) -> int:
    """A tunnel without a remote sends an IPv6 packet to its route's next hop on the tunnel device
    (ip6_tnl_xmit: dst_neigh_lookup, the inner destination when the route has no gateway)."""
    return int(fib.gateway) if fib.gateway else _ld128(inner, L.IP6H.daddr)


def ip6_tnl_get_cap(t, laddr: int, raddr: int) -> tuple[bool, bool]:
    """(may transmit, may receive) for a tunnel between laddr and raddr: both set, neither loopback,
    link-local only when bound to a device (`dev PHYS`), and each end unicast for its direction.
    Linux: ip6_tunnel.c › ip6_tnl_get_cap (an `any` end makes the capability per packet, which the
    callers evaluate with the packet's addresses)."""
    if not laddr or not raddr or 1 in (laddr, raddr):
        return False, False
    if any(a >> 118 == 0x3FA for a in (laddr, raddr)) and not t.link:  # fe80::/10
        return False, False
    return laddr >> 120 != 0xFF, raddr >> 120 != 0xFF


def ip6_tnl_xmit_ctl(net, t, laddr: int, raddr: int) -> bool:
    """ip6_tnl_xmit_ctl: the tunnel may send from laddr to raddr: capable of transmit (without a local
    end it never is), laddr one of our addresses, raddr not ("Routing loop! Remote address found on
    this node!"), unless multicast. Deviation: `dev PHYS` does not narrow the address check to it."""
    if not ip6_tnl_get_cap(t, laddr, raddr)[0]:
        return False
    return net.is_local(6, laddr) and (raddr >> 120 == 0xFF or not net.is_local(6, raddr))


def dst_link_failure(net, q, skb: SkBuff, reason: Reason) -> Reason:
    """ip6_tnl_xmit's tx_err_link_failure: dst_link_failure tells the inner source its destination is
    unreachable (ipv4_link_failure: host unreachable; ip6_link_failure: address unreachable)."""
    if skb.l3proto == L.ETH_P_IPV6:
        icmp_send(net, q, skb, L.ICMPV6_DEST_UNREACH, L.ICMPV6_ADDR_UNREACH, 0)
    else:
        icmp_send(net, q, skb, L.ICMP_DEST_UNREACH, L.ICMP_HOST_UNREACH, 0)
    return reason


def ip6tunnel_push_header(frame: bytes, protocol: int, encap_limit: int, dsfield: int, flowlabel: int,
                          hop_limit: int, saddr: int, daddr: int):  # fmt: skip
    """The outer packet as an Ethernet frame with a blank link-layer header: the IPv6 header
    (ip6_flow_hdr), then, with an encapsulation limit, the 8-byte destination options header of
    init_tel_txopt (the limit option, then PadN to 8 bytes; ipv6_push_frag_opts), then `frame`."""
    opt = b""
    nexthdr = protocol
    if encap_limit >= 0:
        opt = bytes((protocol, 0, IPV6_TLV_TNL_ENCAP_LIMIT, 1, encap_limit, IPV6_TLV_PADN, 1, 0))
        nexthdr = L.IPPROTO_DSTOPTS
    word = (6 << 28) | (dsfield << 20) | flowlabel
    ip6h = struct.pack(">IHBB", word, len(opt) + len(frame), nexthdr, hop_limit)
    ip6h += saddr.to_bytes(16, "big") + daddr.to_bytes(16, "big")
    return frame_array(_MAC0 + struct.pack(">H", L.ETH_P_IPV6) + ip6h + opt + frame)


def ip6_tnl_parse_tlv_enc_lim(b, nhoff: int) -> int:
    """Offset from nhoff of the tunnel encapsulation limit option in the IPv6 packet at b[nhoff:], or
    0 when it has none. Linux: ip6_tunnel.c › ip6_tnl_parse_tlv_enc_lim: walk the extension headers
    (not past a non-first fragment nor a truncated header), look in each destination options header
    for an option of type 4 and length 1; Pad1 is one byte, any other option its length plus 2."""
    end = len(b)
    off, nexthdr = nhoff + L.IP6H.size, int(b[nhoff + L.IP6H.nexthdr]) if end >= nhoff + L.IP6H.size else -1
    while nexthdr in _EXT_HDRS:
        if off + 2 > end:
            break
        if nexthdr == L.IPPROTO_FRAGMENT:
            optlen = 8
        elif nexthdr == L.IPPROTO_AH:
            optlen = (int(b[off + 1]) + 2) * 4  # ipv6_authlen
        else:
            optlen = (int(b[off + 1]) + 1) * 8  # ipv6_optlen
        if off + optlen > end:
            break
        if nexthdr == L.IPPROTO_FRAGMENT and ld16(b, off + L.FRAGH.frag_off):
            break
        if nexthdr == L.IPPROTO_DSTOPTS:
            i = 2
            while i + 3 <= optlen:  # sizeof(struct ipv6_tlv_tnl_enc_lim)
                kind, length = int(b[off + i]), int(b[off + i + 1])
                if kind == IPV6_TLV_TNL_ENCAP_LIMIT and length == 1:
                    return i + off - nhoff
                i += length + 2 if kind else 1
        nexthdr = int(b[off])
        off += optlen
    return 0


def _ld128(b, off: int) -> int:
    return int.from_bytes(bytes(b[off : off + 16]), "big")


# ---- receive ----


def tunnel6_registered(net) -> bool:
    """Whether tunnel6's IPPROTO_IPV6 and IPPROTO_IPIP handlers exist: ip6_tunnel loads with the
    first ip6tnl device. Without them the next header is unknown (ip6_protocol_deliver_rcu)."""
    return any(lk.kind == KIND_IP6TNL for lk in net.links.values())


def tunnel6_rcv(net, q, skb: SkBuff) -> SkBuff | Reason | None:
    """tunnel6_rcv (next header 41) / tunnel46_rcv (next header 4) for an IPv6 packet to us: the inner
    packet (on the tunnel device) for the caller to receive again, a drop Reason, or None when no
    ip6tnl device exists (the caller's parameter problem applies). When no tunnel takes the packet,
    ICMPv6 port unreachable, as both handlers answer."""
    if not tunnel6_registered(net):
        return None
    if skb.frag:
        return Reason.IP_TUNNEL_FRAG
    res = ipxip6_rcv(net, skb, skb.l4proto)
    if res is None:
        icmp_send(net, q, skb, L.ICMPV6_DEST_UNREACH, L.ICMPV6_PORT_UNREACH, 0, local=True)
        return Reason.IP_TUNNEL_NOMATCH
    return res


def ipxip6_rcv(net, skb: SkBuff, ipproto: int) -> SkBuff | Reason | None:
    """ip4ip6_rcv / ip6ip6_rcv › ipxip6_rcv: the tunnel whose ends match the outer addresses
    (ip6_tnl_lookup: exact, then local only, then remote only), its mode (ipip6 takes IPv4 only,
    ip6ip6 IPv6 only, any both), the xfrm policy, ip6_tnl_rcv_ctl; then __ip6_tnl_rcv. None when no
    tunnel matches."""
    dev = ip_tunnel_lookup(net, 6, skb.saddr, skb.daddr, skb.iif)
    if dev is None:
        return None
    if ipproto not in dev.tunnel.protocols:
        return Reason.IP_TUNNEL_PROTO
    if net.xfrm is not None and not xfrm_policy_check(net, skb, XFRM_POLICY_IN):
        return Reason.XFRM_POLICY
    if not ip6_tnl_rcv_ctl(net, dev.tunnel, skb.daddr, skb.saddr):
        return Reason.IP6_TNL_RCV_CTL
    inner = iptunnel_pull_header(skb, _ETH_P[ipproto], dev.ifindex)
    if isinstance(inner, Reason):
        return inner
    return ip6_tnl_rcv(skb, inner)


def ip6_tnl_rcv_ctl(net, t, laddr: int, raddr: int) -> bool:
    """ip6_tnl_rcv_ctl: the tunnel may receive what raddr sent to laddr: capable of receive (per packet
    for a tunnel with an `any` end), laddr ours or multicast, raddr not ours."""
    if not ip6_tnl_get_cap(t, laddr, raddr)[1]:
        return False
    return (laddr >> 120 == 0xFF or net.is_local(6, laddr)) and not net.is_local(6, raddr)


def iptunnel_pull_header(skb: SkBuff, eth_p: int, ifindex: int) -> SkBuff | Reason:
    """The packet after the outer IPv6 header and its extension headers (ip6_protocol_deliver_rcu
    pulled them), parsed as received on the tunnel device; its link-layer header is the outer
    frame's addresses with the inner protocol's ethertype (tpi->proto)."""
    b = skb.buf
    frame = b[: L.ETH.h_proto].tobytes() + eth_p.to_bytes(2, "big") + b[skb.thoff :].tobytes()
    return skb_parse(frame_array(frame), ifindex, skb.ts_ns)


def ip6_tnl_rcv(outer: SkBuff, inner: SkBuff) -> SkBuff | Reason:
    """__ip6_tnl_rcv's ECN step: IP6_ECN_decapsulate (RFC 6040 §4.2, the outer traffic class over the
    inner IPv4 TOS or IPv6 traffic class); a CE outer on a not-ECT inner is dropped (rx_frame_errors).
    The inner DSCP is kept (no `dscp inherit`)."""
    ob = outer.buf
    outer_tc = ((int(ob[outer.nhoff]) & 0xF) << 4) | (int(ob[outer.nhoff + 1]) >> 4)
    ib, nh = inner.buf, inner.nhoff
    v6 = inner.l3proto == L.ETH_P_IPV6
    inner_ds = ((int(ib[nh]) & 0xF) << 4) | (int(ib[nh + 1]) >> 4) if v6 else int(ib[nh + L.IPH.tos])
    rc, ecn = ecn_decapsulate(outer_tc, inner_ds)
    if rc == ECN_DECAP_DROP:
        return Reason.IP_TUNNEL_ECN
    if v6:
        ip6_ecn_set(ib, nh, ecn)
    else:
        ip_ecn_set(ib, nh, ecn)
    return inner
