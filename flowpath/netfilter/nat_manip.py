"""NAT's packet mangling, compiled: one address and its port (or ICMP id) with their checksums.

Linux: net/netfilter/nf_nat_proto.c › nf_nat_ipv4_manip_pkt, nf_nat_ipv6_manip_pkt,
l4proto_manip_pkt, tcp_manip_pkt, udp_manip_pkt (__udp_manip_pkt), icmp_manip_pkt,
icmpv6_manip_pkt, nf_csum_update.
The one implementation of the rewrite: the Python classic path (nat_proto.py, which also walks the
packet inside an ICMP error) and the compiled classic lane (flowpath/inet/classic_lane.py) call it.
Checksums change through packet.csum's helpers in nf_nat_proto.c's order (the L4 pseudo-header
address, then the port, then the IPv4 header), so the flowtable, which calls the same helpers, writes
the same bytes.

`b` is a uint8 array, `end` the end of the packet in it (a slot holds more than its packet), offsets
absolute. `addr` uint8[16]: the new address in network order (IPv4: its first 4 bytes); `port` the new
port, or the new id of an ICMP query. hdroff -1: no transport header to rewrite (a later fragment, an
IPv6 extension-header chain that could not be walked).
"""

from __future__ import annotations

from numba import njit

from flowpath.netfilter.constants import NF_NAT_MANIP_SRC
from flowpath.packet import layout as L
from flowpath.packet.csum import (
    CSUM_MANGLED_0,
    csum_replace2,
    csum_replace4,
    csum_replace16,
    ld16,
    ld32,
    st16,
    st32,
    udp_csum_replace2,
    udp_csum_replace4,
)

_ICMP_ECHOREPLY, _ICMP_ECHO = L.ICMP_ECHOREPLY, L.ICMP_ECHO
_ICMP_TIMESTAMP, _ICMP_TIMESTAMPREPLY = L.ICMP_TIMESTAMP, L.ICMP_TIMESTAMPREPLY
_ICMP_INFO_REQUEST, _ICMP_INFO_REPLY = L.ICMP_INFO_REQUEST, L.ICMP_INFO_REPLY
_ICMP_ADDRESS, _ICMP_ADDRESSREPLY = L.ICMP_ADDRESS, L.ICMP_ADDRESSREPLY
_ICMPV6_ECHO_REQUEST, _ICMPV6_ECHO_REPLY = L.ICMPV6_ECHO_REQUEST, L.ICMPV6_ECHO_REPLY
_TCP, _UDP, _ICMP, _ICMPV6 = L.IPPROTO_TCP, L.IPPROTO_UDP, L.IPPROTO_ICMP, L.IPPROTO_ICMPV6


@njit(cache=True, nogil=True, inline="always")
def addr32(addr):
    """The IPv4 address in addr[0:4] as ld32 loads it."""
    return (int(addr[0]) << 24) | (int(addr[1]) << 16) | (int(addr[2]) << 8) | int(addr[3])


@njit(cache=True, nogil=True, inline="always")
def _aoff(iphdroff, l3, maniptype):
    if l3 == 4:
        return iphdroff + (L.IPH.saddr if maniptype == NF_NAT_MANIP_SRC else L.IPH.daddr)
    return iphdroff + (L.IP6H.saddr if maniptype == NF_NAT_MANIP_SRC else L.IP6H.daddr)


@njit(cache=True, nogil=True)
def nf_csum_update(b, iphdroff, coff, l3, addr, maniptype, udp):
    """Patch an L4 checksum for the pseudo-header address change (nf_nat_ipv4/ipv6_csum_update).
    udp: a zero UDP checksum stays zero and a computed zero goes out as CSUM_MANGLED_0."""
    aoff = _aoff(iphdroff, l3, maniptype)
    if l3 == 4:
        if udp:
            udp_csum_replace4(b, coff, ld32(b, aoff), addr32(addr))
        else:
            csum_replace4(b, coff, ld32(b, aoff), addr32(addr))
        return
    if udp and ld16(b, coff) == 0:
        return
    csum_replace16(b, coff, aoff, addr, 0)
    if udp and ld16(b, coff) == 0:
        st16(b, coff, CSUM_MANGLED_0)


@njit(cache=True, nogil=True)
def _icmp_query(t):
    return (t == _ICMP_ECHO or t == _ICMP_ECHOREPLY or t == _ICMP_TIMESTAMP or t == _ICMP_TIMESTAMPREPLY
            or t == _ICMP_INFO_REQUEST or t == _ICMP_INFO_REPLY or t == _ICMP_ADDRESS
            or t == _ICMP_ADDRESSREPLY)  # fmt: skip


@njit(cache=True, nogil=True)
def l4proto_manip_pkt(b, end, iphdroff, hdroff, l3, l4proto, addr, port, maniptype):
    """Linux: l4proto_manip_pkt: the port (TCP, UDP) or query id (ICMP, ICMPv6) and the L4 checksum.
    Inside an ICMP error a TCP header may be cut after 8 bytes: the port changes, the checksum
    (not there) does not. An unknown protocol passes unmodified. False: too short to rewrite."""
    if l4proto == _TCP:
        if end < hdroff + 8:
            return False
        poff = hdroff + (L.TCPH.source if maniptype == NF_NAT_MANIP_SRC else L.TCPH.dest)
        old = ld16(b, poff)
        st16(b, poff, port)
        if end < hdroff + L.TCPH.size:
            return True
        coff = hdroff + L.TCPH.check
        nf_csum_update(b, iphdroff, coff, l3, addr, maniptype, False)
        csum_replace2(b, coff, old, port)
        return True
    if l4proto == _UDP:
        if end < hdroff + L.UDPH.size:
            return False
        poff = hdroff + (L.UDPH.source if maniptype == NF_NAT_MANIP_SRC else L.UDPH.dest)
        coff = hdroff + L.UDPH.check
        nf_csum_update(b, iphdroff, coff, l3, addr, maniptype, True)
        udp_csum_replace2(b, coff, ld16(b, poff), port)
        st16(b, poff, port)
        return True
    if l4proto == _ICMP:
        if end < hdroff + L.ICMPH.size:
            return False
        if not _icmp_query(b[hdroff]):
            return True  # an error: its inner packet is translated apart
        ioff = hdroff + L.ICMPH.id
        csum_replace2(b, hdroff + L.ICMPH.checksum, ld16(b, ioff), port)
        st16(b, ioff, port)
        return True
    if l4proto == _ICMPV6:
        if end < hdroff + L.ICMPH.size:
            return False
        coff = hdroff + L.ICMPH.checksum
        nf_csum_update(b, iphdroff, coff, l3, addr, maniptype, False)
        if b[hdroff] == _ICMPV6_ECHO_REQUEST or b[hdroff] == _ICMPV6_ECHO_REPLY:
            ioff = hdroff + L.ICMPH.id
            csum_replace2(b, coff, ld16(b, ioff), port)
            st16(b, ioff, port)
        return True
    return True


@njit(cache=True, nogil=True)
def nf_nat_l3_manip_pkt(b, end, iphdroff, hdroff, l3, l4proto, addr, port, maniptype):
    """Linux: nf_nat_ipv4_manip_pkt / nf_nat_ipv6_manip_pkt: the L4 part (unless hdroff is -1),
    then the address (IPv4: with its header checksum). False: too short (the packet is dropped)."""
    if end < iphdroff + (L.IPH.size if l3 == 4 else L.IP6H.size):
        return False
    if hdroff >= 0 and not l4proto_manip_pkt(b, end, iphdroff, hdroff, l3, l4proto, addr, port, maniptype):
        return False
    aoff = _aoff(iphdroff, l3, maniptype)
    if l3 == 4:
        new = addr32(addr)
        csum_replace4(b, iphdroff + L.IPH.check, ld32(b, aoff), new)
        st32(b, aoff, new)
    else:
        for j in range(16):
            b[aoff + j] = addr[j]
    return True
