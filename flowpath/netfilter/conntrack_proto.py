"""Tuple extraction and the UDP, ICMP, ICMPv6 and generic trackers.

Linux: net/netfilter/nf_conntrack_core.c (get_l4proto, nf_ct_get_tuple), nf_conntrack_proto_udp.c,
nf_conntrack_proto_icmp.c, nf_conntrack_proto_icmpv6.c, nf_conntrack_proto_generic.c and
nf_conntrack_proto.c › nf_conntrack_inet_error (ICMP errors about a tracked connection are RELATED).

Deviation: only TCP and UDP carry ports in the tuple; GRE has the GRE tracker's timeouts with zero keys
(no PPTP helper, so no GREv1 call ids); every other protocol but ICMP/ICMPv6 (SCTP, UDP-Lite, DCCP, ESP,
...) is tracked by the generic tracker on addresses and protocol alone.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flowpath.netfilter.conntrack_proto_icmp import (
    ICMP_BAD_CSUM,
    ICMP_INVALID,
    ICMP_NOCT,
    ICMP_QUERY,
    icmp_error_pkt,
)
from flowpath.netfilter.conntrack_proto_icmp import nf_conntrack_icmp_packet as icmp_conntrack_row
from flowpath.netfilter.conntrack_tuple import (
    NSEC_PER_SEC,
    NfConn,
    NfConnTuple,
    nf_ct_invert_tuple,
    nf_ct_refresh_acct,
)
from flowpath.netfilter.constants import (
    IP_CT_DIR_REPLY,
    IP_CT_IS_REPLY,
    IP_CT_RELATED,
    IP_CT_UNTRACKED,
    IPS_ASSURED,
    IPS_NAT_CLASH_BIT,
    IPS_SEEN_REPLY,
    NF_ACCEPT,
    NFPROTO_IPV4,
    NFPROTO_IPV6,
)
from flowpath.netfilter.ct_row import nf_conntrack_udp_packet as udp_conntrack_row
from flowpath.packet import layout as L
from flowpath.packet.csum import l4_csum, ld16, ld32
from flowpath.packet.skb import SkBuff

GENERIC_TIMEOUT_NS = 600 * NSEC_PER_SEC  # nf_conntrack_proto_generic.c
GRE_CT_UNREPLIED_NS = 30 * NSEC_PER_SEC  # nf_conntrack_proto_gre.c › gre_timeouts
GRE_CT_REPLIED_NS = 180 * NSEC_PER_SEC


def addr_bytes(addr: int, l3proto: int) -> np.ndarray:
    """A network-order uint8 array of an address (for csum_replace16 and stores)."""
    n = 16 if l3proto == NFPROTO_IPV6 else 4
    return np.array(list(addr.to_bytes(n, "big")), np.uint8)


def _load_addr(b, off: int, l3proto: int) -> int:
    if l3proto == NFPROTO_IPV4:
        return ld32(b, off)
    return int.from_bytes(b[off : off + 16].tobytes(), "big")


def nf_ct_get_tuple(b, thoff: int, l3proto: int, l4proto: int, saddr: int, daddr: int) -> NfConnTuple | None:
    """The tuple of a packet whose L4 header starts at thoff, or None when it is too short.

    Linux: nf_ct_get_tuple with the per-protocol pkt_to_tuple (ports for TCP/UDP, type/code/id for ICMP).
    """
    end = b.shape[0]
    saddr, daddr = int(saddr), int(daddr)  # plain ints (the loads give numpy ints with the JIT off)
    if l4proto in (L.IPPROTO_TCP, L.IPPROTO_UDP):
        if thoff + 4 > end:
            return None
        return NfConnTuple(l3proto, l4proto, saddr, daddr, int(ld16(b, thoff)), int(ld16(b, thoff + 2)))
    if l4proto in (L.IPPROTO_ICMP, L.IPPROTO_ICMPV6):
        if thoff + L.ICMPH.size > end:
            return None
        echo_id = int(ld16(b, thoff + L.ICMPH.id))
        return NfConnTuple(l3proto, l4proto, saddr, daddr, echo_id, echo_id, int(b[thoff]), int(b[thoff + 1]))
    return NfConnTuple(l3proto, l4proto, saddr, daddr, 0, 0)


def ipv6_skip_exthdr(b, off: int, nexthdr: int) -> tuple[int, int, int]:
    """Walk IPv6 extension headers from off: (offset of the upper header, its protocol, frag_off).

    Linux: net/ipv6/exthdrs_core.c › ipv6_skip_exthdr; offset -1 when truncated.
    """
    end, frag_off = b.shape[0], 0
    while nexthdr in L.IPV6_EXT_HDRS and nexthdr != L.IPPROTO_NONE:
        if off + 8 > end:
            return -1, nexthdr, frag_off
        if nexthdr == L.IPPROTO_FRAGMENT:
            frag_off = ld16(b, off + L.FRAGH.frag_off)
            nexthdr, off = int(b[off]), off + L.FRAGH.size
            if frag_off & 0xFFF8:
                break
            continue
        hlen = (int(b[off + 1]) + 2) * 4 if nexthdr == L.IPPROTO_AH else (int(b[off + 1]) + 1) * 8
        nexthdr, off = int(b[off]), off + hlen
    return off, nexthdr, frag_off


def nf_ct_get_tuplepr(b, nhoff: int, l3proto: int) -> NfConnTuple | None:
    """The tuple of the IP packet embedded at nhoff (inside an ICMP error), or None.

    Linux: nf_conntrack_core.c › nf_ct_get_tuplepr + get_l4proto (a later fragment has no tuple).
    """
    end = b.shape[0]
    if l3proto == NFPROTO_IPV4:
        if nhoff + L.IPH.size > end:
            return None
        if ld16(b, nhoff + L.IPH.frag_off) & L.IP_OFFSET:
            return None
        thoff = nhoff + (int(b[nhoff]) & 0x0F) * 4
        l4proto = int(b[nhoff + L.IPH.protocol])
    else:
        if nhoff + L.IP6H.size > end:
            return None
        thoff, l4proto, frag_off = ipv6_skip_exthdr(b, nhoff + L.IP6H.size, int(b[nhoff + L.IP6H.nexthdr]))
        if thoff < 0 or frag_off & 0xFFF8:
            return None
    if thoff > end:
        return None
    saddr = _load_addr(b, nhoff + (L.IPH.saddr if l3proto == NFPROTO_IPV4 else L.IP6H.saddr), l3proto)
    daddr = _load_addr(b, nhoff + (L.IPH.daddr if l3proto == NFPROTO_IPV4 else L.IP6H.daddr), l3proto)
    return nf_ct_get_tuple(b, thoff, l3proto, l4proto, saddr, daddr)


def nf_conntrack_inet_error(net, skb: SkBuff, inner_nhoff: int, l3proto: int, outer_daddr: int) -> int:
    """Attach an ICMP error to the connection its embedded packet belongs to (RELATED), else INVALID.

    Linux: nf_conntrack_proto.c › nf_conntrack_inet_error. The embedded packet went the other way, so
    its tuple is inverted before the lookup; the outer destination must be the one the found tuple
    sends to. Returns NF_ACCEPT (skb.ct set) or -NF_ACCEPT.
    """
    origtuple = nf_ct_get_tuplepr(skb.buf, inner_nhoff, l3proto)
    if origtuple is None:
        return -NF_ACCEPT
    innertuple = nf_ct_invert_tuple(origtuple)
    if innertuple is None:
        return -NF_ACCEPT
    h = net.nf_conntrack_find_get(innertuple, skb.ts_ns)
    if h is None:
        return -NF_ACCEPT
    ct, dir = h
    if ct.tuplehash[dir].dst != outer_daddr:
        return -NF_ACCEPT
    skb.ct = ct
    skb.ctinfo = IP_CT_RELATED + (IP_CT_IS_REPLY if dir == IP_CT_DIR_REPLY else 0)
    return NF_ACCEPT


def _icmp_error_kind(skb: SkBuff, l4proto: int, check_csum: bool) -> int:
    """icmp_error_pkt (compiled, shared with the classic lane) over skb's IP packet."""
    l3len = skb.buf.shape[0] - skb.nhoff
    return int(icmp_error_pkt(skb.buf, skb.nhoff, skb.thoff, l3len, l4proto, check_csum))


def nf_conntrack_icmpv4_error(net, skb: SkBuff, check_csum: bool) -> int:
    """Linux: nf_conntrack_proto_icmp.c › nf_conntrack_icmpv4_error.

    NF_ACCEPT: a query, go on with normal tracking (or skb.ct was set: RELATED); -NF_ACCEPT: INVALID.
    """
    kind = _icmp_error_kind(skb, L.IPPROTO_ICMP, check_csum)
    if kind == ICMP_INVALID or kind == ICMP_BAD_CSUM:
        return -NF_ACCEPT
    if kind == ICMP_QUERY:
        return NF_ACCEPT
    return nf_conntrack_inet_error(net, skb, skb.thoff + L.ICMPH.size, NFPROTO_IPV4, skb.daddr)


def nf_conntrack_icmpv6_error(net, skb: SkBuff, check_csum: bool) -> int:
    """Linux: nf_conntrack_proto_icmpv6.c › icmpv6_error (neighbour discovery and MLD are UNTRACKED)."""
    kind = _icmp_error_kind(skb, L.IPPROTO_ICMPV6, check_csum)
    if kind == ICMP_INVALID or kind == ICMP_BAD_CSUM:
        return -NF_ACCEPT
    if kind == ICMP_NOCT:
        skb.ct, skb.ctinfo = None, IP_CT_UNTRACKED
        return NF_ACCEPT
    if kind == ICMP_QUERY:
        return NF_ACCEPT
    return nf_conntrack_inet_error(net, skb, skb.thoff + L.ICMPH.size, NFPROTO_IPV6, skb.daddr)


def nf_conntrack_icmp_packet(ct: NfConn, skb: SkBuff, dir: int) -> int:
    """Linux: nf_conntrack_icmp_packet / nf_conntrack_icmpv6_packet: only queries open an entry.
    The tracking is compiled (conntrack_proto_icmp.py), shared with the compiled lane."""
    orig = ct.tuplehash[0]
    return int(icmp_conntrack_row(ct.hot_row, dir, skb.ts_ns, skb.l3len, orig.l4proto, orig.type))


@njit(cache=True, nogil=True)
def udp_error_pkt(buf, nhoff, thoff, l3len, check_csum):
    """Linux: nf_conntrack_proto_udp.c › udp_error over the IP packet of l3len bytes at nhoff: truncated,
    a length past the datagram or below the header, or (check_csum: PRE_ROUTING) a bad checksum; a
    zero checksum means none and is not checked. The Python path and the compiled lane call it."""
    end = nhoff + l3len
    udplen = end - thoff
    if udplen < L.UDPH.size:
        return True
    ulen = ld16(buf, thoff + L.UDPH.len)
    if ulen > udplen or ulen < L.UDPH.size:
        return True
    stored = ld16(buf, thoff + L.UDPH.check)
    if not check_csum or stored == 0:
        return False
    is_ipv6 = (buf[nhoff] >> 4) == 6
    return l4_csum(buf, nhoff, thoff, udplen, is_ipv6, L.IPPROTO_UDP, L.UDPH.check) != stored


def udp_error(skb: SkBuff, thoff: int, check_csum: bool) -> bool:
    """Linux: nf_conntrack_proto_udp.c › udp_error for skb (udp_error_pkt)."""
    return bool(udp_error_pkt(skb.buf, skb.nhoff, thoff, skb.buf.shape[0] - skb.nhoff, check_csum))


def nf_conntrack_udp_packet(ct: NfConn, skb: SkBuff, thoff: int, dir: int, check_csum: bool) -> int:
    """Linux: nf_conntrack_udp_packet.

    udp_error here; the tracking itself is compiled (ct_row.py), shared with the compiled lane.
    """
    if udp_error(skb, thoff, check_csum):
        return -NF_ACCEPT
    return int(udp_conntrack_row(ct.hot_row, dir, skb.ts_ns, skb.l3len))


def nf_conntrack_generic_packet(ct: NfConn, skb: SkBuff, dir: int) -> int:
    """Linux: nf_conntrack_proto_generic.c › generic packet handling: refresh for 600 s."""
    nf_ct_refresh_acct(ct, dir, skb.ts_ns, skb.l3len, GENERIC_TIMEOUT_NS)
    return NF_ACCEPT


def nf_conntrack_gre_packet(ct: NfConn, skb: SkBuff, dir: int) -> int:
    """Linux: nf_conntrack_proto_gre.c › nf_conntrack_gre_packet: 30 s, then 180 s and ASSURED once
    traffic was seen both ways."""
    if ct.status & IPS_SEEN_REPLY:
        nf_ct_refresh_acct(ct, dir, skb.ts_ns, skb.l3len, GRE_CT_REPLIED_NS)
        if not ct.status & (1 << IPS_NAT_CLASH_BIT):
            ct.status |= IPS_ASSURED
    else:
        nf_ct_refresh_acct(ct, dir, skb.ts_ns, skb.l3len, GRE_CT_UNREPLIED_NS)
    return NF_ACCEPT
