"""NAT packet mangling: addresses, ports, ICMP ids and the packet inside an ICMP error.

Linux: net/netfilter/nf_nat_proto.c (nf_nat_ipv4_manip_pkt, nf_nat_ipv6_manip_pkt, tcp_manip_pkt,
udp_manip_pkt, icmp_manip_pkt, icmpv6_manip_pkt, nf_csum_update, nf_nat_manip_pkt,
nf_nat_icmp_reply_translation, nf_nat_icmpv6_reply_translation).
The rewrite itself is compiled (nat_manip.py), shared with the compiled classic lane; this module
finds the headers it applies to and translates ICMP errors. `b` is the frame (skb.buf); offsets are
absolute.
"""

from __future__ import annotations

import numpy as np

from flowpath.netfilter.conntrack_proto import addr_bytes, ipv6_skip_exthdr
from flowpath.netfilter.conntrack_tuple import NfConn, NfConnTuple, nf_ct_invert_tuple
from flowpath.netfilter.constants import (
    IP_CT_DIR_ORIGINAL,
    IP_CT_DIR_REPLY,
    IPS_DST_NAT,
    IPS_DST_NAT_DONE,
    IPS_NAT_MASK,
    IPS_SRC_NAT,
    IPS_SRC_NAT_DONE,
    NF_NAT_MANIP_DST,
    NF_NAT_MANIP_SRC,
    NFPROTO_IPV4,
)
from flowpath.netfilter.nat_manip import nf_nat_l3_manip_pkt as _manip
from flowpath.packet import layout as L
from flowpath.packet.csum import icmp_csum, l4_csum, ld16, st16
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff, skb_reload_addrs

IPS_NAT_DONE_MASK = IPS_SRC_NAT_DONE | IPS_DST_NAT_DONE
_ICMP_QUERIES = frozenset({L.ICMP_ECHO, L.ICMP_ECHOREPLY, L.ICMP_TIMESTAMP, L.ICMP_TIMESTAMPREPLY,
                           L.ICMP_INFO_REQUEST, L.ICMP_INFO_REPLY, L.ICMP_ADDRESS, L.ICMP_ADDRESSREPLY})  # fmt: skip
NDISC_REDIRECT = 137


def nf_nat_l3_manip_pkt(b, iphdroff: int, t: NfConnTuple, maniptype: int) -> bool:
    """Make the packet at iphdroff carry t's source (SRC) or destination (DST) part: the transport
    header found as Linux finds it (IPv4: after the options, none in a later fragment; IPv6: after the
    extension headers), then nat_manip.nf_nat_l3_manip_pkt rewrites. False: too short."""
    end = b.shape[0]
    l3 = 4 if t.l3proto == NFPROTO_IPV4 else 6
    hdroff = -1
    if l3 == 4:
        # A later fragment has no L4 header: the inner packet of an ICMP error, say (nf_defrag.py
        # hands NAT whole datagrams).
        if end >= iphdroff + L.IPH.size and not ld16(b, iphdroff + L.IPH.frag_off) & L.IP_OFFSET:
            hdroff = iphdroff + (int(b[iphdroff]) & 0x0F) * 4
    elif end >= iphdroff + L.IP6H.size:
        off, _, frag_off = ipv6_skip_exthdr(b, iphdroff + L.IP6H.size, int(b[iphdroff + L.IP6H.nexthdr]))
        hdroff = off if off >= 0 and not frag_off & 0xFFF8 else -1
    src = maniptype == NF_NAT_MANIP_SRC
    addr = np.zeros(16, np.uint8)
    addr[: 4 if l3 == 4 else 16] = addr_bytes(t.src if src else t.dst, t.l3proto)
    port = t.sport if src or t.is_icmp else t.dport  # an ICMP id is a source part
    return bool(_manip(b, end, iphdroff, hdroff, l3, t.l4proto, addr, port, maniptype))


def nf_nat_manip_pkt(skb: SkBuff, ct: NfConn, mtype: int, dir: int) -> bool:
    """Make the packet look like the inverse of the other direction's tuple (nf_nat_manip_pkt)."""
    target = nf_ct_invert_tuple(ct.tuplehash[1 - dir])
    if not nf_nat_l3_manip_pkt(skb.buf, skb.nhoff, target, mtype):
        return False
    skb_reload_addrs(skb)
    return True


def _nat_statusbit(maniptype: int, dir: int) -> int:
    """The status bit that says this hook must mangle a packet of this direction (inverted for replies)."""
    bit = IPS_SRC_NAT if maniptype == NF_NAT_MANIP_SRC else IPS_DST_NAT
    return bit ^ IPS_NAT_MASK if dir == IP_CT_DIR_REPLY else bit


def nf_nat_icmp_reply_translation(skb: SkBuff, ct: NfConn, dir: int, maniptype: int) -> Reason | None:
    """Translate an ICMP/ICMPv6 error RELATED to a NATed connection: inner packet, checksum, outer.

    Linux: nf_nat_icmp_reply_translation / nf_nat_icmpv6_reply_translation. The inner packet travelled
    the other way, so it gets the other direction's tuple and the opposite manip type; the ICMP checksum
    is then recomputed in full (for ICMPv6 over the pseudo-header with the outer addresses not yet
    changed; the outer manip patches that). Returns None, or the Reason to drop the packet for.
    """
    b, thoff = skb.buf, skb.thoff
    is_v6 = skb.is_ipv6
    n = b.shape[0] - thoff
    if n < L.ICMPH.size + (L.IP6H.size if is_v6 else L.IPH.size):
        return Reason.PKT_TOO_SMALL
    if is_v6:
        coff = thoff + L.ICMPH.checksum
        if l4_csum(b, skb.nhoff, thoff, n, True, L.IPPROTO_ICMPV6, L.ICMPH.checksum) != ld16(b, coff):
            return Reason.ICMP_CSUM
        if int(b[thoff]) == NDISC_REDIRECT and (
            (ct.status & IPS_NAT_DONE_MASK) != IPS_NAT_DONE_MASK or ct.status & IPS_NAT_MASK
        ):
            return Reason.NETFILTER_DROP
    else:
        if icmp_csum(b, thoff, n) != ld16(b, thoff + L.ICMPH.checksum):
            return Reason.ICMP_CSUM
        # Redirects on non-null NATs would let the hosts talk past our translation.
        if int(b[thoff]) == L.ICMP_REDIRECT and (
            (ct.status & IPS_NAT_DONE_MASK) != IPS_NAT_DONE_MASK or ct.status & IPS_NAT_MASK
        ):
            return Reason.NETFILTER_DROP
    if not ct.status & _nat_statusbit(maniptype, dir):
        return None
    other = ct.tuplehash[IP_CT_DIR_ORIGINAL if dir == IP_CT_DIR_REPLY else IP_CT_DIR_REPLY]
    if not nf_nat_l3_manip_pkt(b, thoff + L.ICMPH.size, other, 1 - maniptype):
        return Reason.PKT_TOO_SMALL
    if is_v6:
        st16(
            b,
            thoff + L.ICMPH.checksum,
            l4_csum(b, skb.nhoff, thoff, n, True, L.IPPROTO_ICMPV6, L.ICMPH.checksum),
        )
    else:
        st16(b, thoff + L.ICMPH.checksum, icmp_csum(b, thoff, n))
    target = nf_ct_invert_tuple(other)._replace(l4proto=skb.l4proto)
    if not nf_nat_l3_manip_pkt(b, skb.nhoff, target, maniptype):
        return Reason.PKT_TOO_SMALL
    skb_reload_addrs(skb)
    return None


__all__ = ["NF_NAT_MANIP_DST", "nf_nat_icmp_reply_translation", "nf_nat_manip_pkt"]
