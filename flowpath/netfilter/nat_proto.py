"""NAT packet mangling: addresses, ports, ICMP ids and the packet inside an ICMP error.

Linux: net/netfilter/nf_nat_proto.c (nf_nat_ipv4_manip_pkt, nf_nat_ipv6_manip_pkt, tcp_manip_pkt,
udp_manip_pkt, icmp_manip_pkt, icmpv6_manip_pkt, nf_csum_update, nf_nat_manip_pkt,
nf_nat_icmp_reply_translation, nf_nat_icmpv6_reply_translation).
Checksums change only through the @njit helpers of packet.csum, in the order nf_nat_proto.c applies them
(L4 pseudo-header address, then port, then the IPv4 header), so the compiled fast path, which calls
the same helpers, writes the same bytes. `b` is the frame (skb.buf); offsets are absolute.
"""

from __future__ import annotations

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
from flowpath.packet import layout as L
from flowpath.packet.csum import (
    CSUM_MANGLED_0,
    csum_replace2,
    csum_replace4,
    csum_replace16,
    icmp_csum,
    l4_csum,
    ld16,
    ld32,
    st16,
    st32,
    udp_csum_replace2,
    udp_csum_replace4,
)
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff, skb_reload_addrs

IPS_NAT_DONE_MASK = IPS_SRC_NAT_DONE | IPS_DST_NAT_DONE
_ICMP_QUERIES = frozenset({L.ICMP_ECHO, L.ICMP_ECHOREPLY, L.ICMP_TIMESTAMP, L.ICMP_TIMESTAMPREPLY,
                           L.ICMP_INFO_REQUEST, L.ICMP_INFO_REPLY, L.ICMP_ADDRESS, L.ICMP_ADDRESSREPLY})  # fmt: skip
NDISC_REDIRECT = 137


def _manip_addr(t: NfConnTuple, maniptype: int) -> int:
    return t.src if maniptype == NF_NAT_MANIP_SRC else t.dst


def nf_csum_update(b, iphdroff: int, coff: int, t: NfConnTuple, maniptype: int, udp: bool) -> None:
    """Patch an L4 checksum for the pseudo-header address change (nf_nat_ipv4/ipv6_csum_update).

    udp=True keeps a zero UDP checksum at zero and never writes a computed zero (CSUM_MANGLED_0).
    """
    if t.l3proto == NFPROTO_IPV4:
        aoff = iphdroff + (L.IPH.saddr if maniptype == NF_NAT_MANIP_SRC else L.IPH.daddr)
        old, new = ld32(b, aoff), _manip_addr(t, maniptype)
        if udp:
            udp_csum_replace4(b, coff, old, new)
        else:
            csum_replace4(b, coff, old, new)
        return
    aoff = iphdroff + (L.IP6H.saddr if maniptype == NF_NAT_MANIP_SRC else L.IP6H.daddr)
    if udp and ld16(b, coff) == 0:
        return
    csum_replace16(b, coff, aoff, addr_bytes(_manip_addr(t, maniptype), t.l3proto), 0)
    if udp and ld16(b, coff) == 0:
        st16(b, coff, CSUM_MANGLED_0)


def tcp_manip_pkt(b, iphdroff: int, hdroff: int, t: NfConnTuple, maniptype: int) -> bool:
    """Rewrite a TCP port; inside an ICMP error only 8 bytes may be there, then the checksum stays."""
    end = b.shape[0]
    if end < hdroff + 8:
        return False
    poff = hdroff + (L.TCPH.source if maniptype == NF_NAT_MANIP_SRC else L.TCPH.dest)
    newport = t.sport if maniptype == NF_NAT_MANIP_SRC else t.dport
    oldport = ld16(b, poff)
    st16(b, poff, newport)
    if end < hdroff + L.TCPH.size:
        return True
    coff = hdroff + L.TCPH.check
    nf_csum_update(b, iphdroff, coff, t, maniptype, False)
    csum_replace2(b, coff, oldport, newport)
    return True


def udp_manip_pkt(b, iphdroff: int, hdroff: int, t: NfConnTuple, maniptype: int) -> bool:
    """Rewrite a UDP port; a zero checksum (none, IPv4) stays zero (__udp_manip_pkt)."""
    if b.shape[0] < hdroff + L.UDPH.size:
        return False
    poff = hdroff + (L.UDPH.source if maniptype == NF_NAT_MANIP_SRC else L.UDPH.dest)
    newport = t.sport if maniptype == NF_NAT_MANIP_SRC else t.dport
    coff = hdroff + L.UDPH.check
    nf_csum_update(b, iphdroff, coff, t, maniptype, True)
    udp_csum_replace2(b, coff, ld16(b, poff), newport)
    st16(b, poff, newport)
    return True


def icmp_manip_pkt(b, hdroff: int, t: NfConnTuple) -> bool:
    """Rewrite the id of an ICMP query; errors are left alone (their inner packet is done apart)."""
    if b.shape[0] < hdroff + L.ICMPH.size:
        return False
    if int(b[hdroff]) not in _ICMP_QUERIES:
        return True
    ioff = hdroff + L.ICMPH.id
    csum_replace2(b, hdroff + L.ICMPH.checksum, ld16(b, ioff), t.sport)
    st16(b, ioff, t.sport)
    return True


def icmpv6_manip_pkt(b, iphdroff: int, hdroff: int, t: NfConnTuple, maniptype: int) -> bool:
    """ICMPv6 has a pseudo-header: patch it for the address, then the echo id."""
    if b.shape[0] < hdroff + L.ICMPH.size:
        return False
    coff = hdroff + L.ICMPH.checksum
    nf_csum_update(b, iphdroff, coff, t, maniptype, False)
    if int(b[hdroff]) in (L.ICMPV6_ECHO_REQUEST, L.ICMPV6_ECHO_REPLY):
        ioff = hdroff + L.ICMPH.id
        csum_replace2(b, coff, ld16(b, ioff), t.sport)
        st16(b, ioff, t.sport)
    return True


def l4proto_manip_pkt(b, iphdroff: int, hdroff: int, t: NfConnTuple, maniptype: int) -> bool:
    """Linux: l4proto_manip_pkt; an unknown protocol passes unmodified."""
    p = t.l4proto
    if p == L.IPPROTO_TCP:
        return tcp_manip_pkt(b, iphdroff, hdroff, t, maniptype)
    if p == L.IPPROTO_UDP:
        return udp_manip_pkt(b, iphdroff, hdroff, t, maniptype)
    if p == L.IPPROTO_ICMP:
        return icmp_manip_pkt(b, hdroff, t)
    if p == L.IPPROTO_ICMPV6:
        return icmpv6_manip_pkt(b, iphdroff, hdroff, t, maniptype)
    return True


def nf_nat_ipv4_manip_pkt(b, iphdroff: int, t: NfConnTuple, maniptype: int) -> bool:
    """Rewrite the L4 part, then the IPv4 address with its header checksum."""
    if b.shape[0] < iphdroff + L.IPH.size:
        return False
    hdroff = iphdroff + (int(b[iphdroff]) & 0x0F) * 4
    # A later fragment has no L4 header: the inner packet of an ICMP error, say (nf_defrag.py hands
    # NAT whole datagrams).
    later_fragment = ld16(b, iphdroff + L.IPH.frag_off) & L.IP_OFFSET
    if not later_fragment and not l4proto_manip_pkt(b, iphdroff, hdroff, t, maniptype):
        return False
    aoff = iphdroff + (L.IPH.saddr if maniptype == NF_NAT_MANIP_SRC else L.IPH.daddr)
    new = _manip_addr(t, maniptype)
    csum_replace4(b, iphdroff + L.IPH.check, ld32(b, aoff), new)
    st32(b, aoff, new)
    return True


def nf_nat_ipv6_manip_pkt(b, iphdroff: int, t: NfConnTuple, maniptype: int) -> bool:
    """Rewrite the L4 part (unless a later fragment), then the IPv6 address (no header checksum)."""
    if b.shape[0] < iphdroff + L.IP6H.size:
        return False
    hdroff, _, frag_off = ipv6_skip_exthdr(b, iphdroff + L.IP6H.size, int(b[iphdroff + L.IP6H.nexthdr]))
    if hdroff >= 0 and not frag_off & 0xFFF8:
        if not l4proto_manip_pkt(b, iphdroff, hdroff, t, maniptype):
            return False
    aoff = iphdroff + (L.IP6H.saddr if maniptype == NF_NAT_MANIP_SRC else L.IP6H.daddr)
    b[aoff : aoff + 16] = addr_bytes(_manip_addr(t, maniptype), t.l3proto)
    return True


def nf_nat_l3_manip_pkt(b, iphdroff: int, t: NfConnTuple, maniptype: int) -> bool:
    if t.l3proto == NFPROTO_IPV4:
        return nf_nat_ipv4_manip_pkt(b, iphdroff, t, maniptype)
    return nf_nat_ipv6_manip_pkt(b, iphdroff, t, maniptype)


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
