"""net/ipv4/ip_tunnel_core.c › iptunnel_xmit: the outer IPv4 header an IPIP tunnel pushes, and the ECN
field across the tunnel both ways.

Scalar @njit helpers, so that the flowtable's transmit (flowtable/ip.py, an entry with XMIT_ENCAP)
and the classic path's ip_tunnel_xmit build the same header: the outer fields from the tunnel parms
(ip_tunnel.c › ip_tunnel_xmit: tos and ttl fixed or inherited, DF from pmtudisc or the inner header)
and the ECN field as include/net/inet_ecn.h › INET_ECN_encapsulate (RFC 6040 §4.1, normal mode);
on receive the inner ECN field as INET_ECN_decapsulate (RFC 6040 §4.2), for the flowtable's pop and
the classic path's ip_tunnel_rcv (flowpath/inet/inet_ecn.py) alike.
The id: the classic path (flowpath/inet/ip_tunnel.py › iptunnel_xmit) gives an outer header with DF
the id 0, as ip_select_ident does for a packet with DF and no socket, and one without DF the next id
of the namespace's counter; the fast path pushes DF headers only (flowtable/ip.py), so their id is 0.
"""

from __future__ import annotations

from numba import njit

from flowpath.packet.csum import csum_replace2, ip_fast_csum, ld16, st16, st32
from flowpath.packet.layout import IP_DF, IPH

INET_ECN_NOT_ECT = 0
INET_ECN_ECT_1 = 1
INET_ECN_ECT_0 = 2
INET_ECN_CE = 3
INET_ECN_MASK = 3
# ecn_decapsulate's answers (__INET_ECN_decapsulate's): 0 fine, 1 "log" (ECT outer on a not-ECT inner),
# 2 drop (CE outer on a not-ECT inner: the congestion mark cannot be passed on, RFC 6040 §4.2)
ECN_DECAP_OK, ECN_DECAP_LOG, ECN_DECAP_DROP = 0, 1, 2
IPTUNNEL_TOS_INHERIT = 1  # `tos inherit`: bit 0 of the parms' tos (ip_tunnel_xmit: tos & 0x1)


@njit(cache=True, nogil=True, inline="always")
def INET_ECN_encapsulate(outer, inner):  # noqa: N802 (the kernel's name)
    """The outer tos for an inner tos: ECN copied from the inner header, CE sent as ECT(0).

    Linux: include/net/inet_ecn.h › INET_ECN_encapsulate (RFC 6040 §4.1).
    """
    outer &= ~INET_ECN_MASK & 0xFF
    if (inner & INET_ECN_MASK) == INET_ECN_CE:
        return outer | INET_ECN_ECT_0
    return outer | (inner & INET_ECN_MASK)


@njit(cache=True, nogil=True, inline="always")
def ip_tunnel_outer_fields(inner_tos, inner_ttl, inner_frag_off, tun_tos, tun_ttl, pmtudisc):
    """(tos, ttl, frag_off) of the outer header over an IPv4 inner header (its fields after
    forwarding), for a tunnel with parms tos (bit 0: inherit), ttl (0: inherit) and pmtudisc.

    Linux: ip_tunnel.c › ip_tunnel_xmit (tos inherit, ip_tunnel_ecn_encap, ttl inherit, df from
    tnl_params->frag_off or'ed with the inner DF); ip_mtu_locked routes are not modelled.
    """
    tos = inner_tos if tun_tos & IPTUNNEL_TOS_INHERIT else tun_tos
    tos = INET_ECN_encapsulate(tos, inner_tos)
    ttl = inner_ttl if tun_ttl == 0 else tun_ttl
    df = (IP_DF if pmtudisc else 0) | (inner_frag_off & IP_DF)
    return tos, ttl, df


@njit(cache=True, nogil=True, inline="always")
def iptunnel_push_header(b, off, tot_len, tos, ttl, frag_off, protocol, saddr, daddr, ident):
    """Write a 20-byte IPv4 header (no options) at b[off:] with its checksum (ip_send_check).

    Linux: ip_tunnel_core.c › iptunnel_xmit (version, ihl, frag_off, protocol, tos, addresses, ttl,
    tot_len, id, then the checksum).
    """
    b[off + IPH.version_ihl] = 0x45
    b[off + IPH.tos] = tos
    st16(b, off + IPH.tot_len, tot_len)
    st16(b, off + IPH.id, ident)
    st16(b, off + IPH.frag_off, frag_off)
    b[off + IPH.ttl] = ttl
    b[off + IPH.protocol] = protocol
    st16(b, off + IPH.check, 0)
    st32(b, off + IPH.saddr, saddr)
    st32(b, off + IPH.daddr, daddr)
    st16(b, off + IPH.check, ip_fast_csum(b, off, IPH.size))


@njit(cache=True, nogil=True, inline="always")
def ecn_decapsulate(outer_tos, inner_tos):
    """RFC 6040 §4.2's table, as __INET_ECN_decapsulate and INET_ECN_decapsulate apply it:
    (ECN_DECAP_*, the inner ECN field to write). A not-ECT inner stays not-ECT (or is dropped under a
    CE outer); a CE outer marks an ECT inner CE; an ECT(1) outer turns an ECT(0) inner into ECT(1)."""
    outer, inner = outer_tos & INET_ECN_MASK, inner_tos & INET_ECN_MASK
    if inner == INET_ECN_NOT_ECT:
        if outer == INET_ECN_NOT_ECT:
            return ECN_DECAP_OK, inner
        return (ECN_DECAP_DROP if outer == INET_ECN_CE else ECN_DECAP_LOG), inner
    if outer == INET_ECN_CE:
        return ECN_DECAP_OK, INET_ECN_CE
    if outer == INET_ECN_ECT_1 and inner == INET_ECN_ECT_0:
        return ECN_DECAP_OK, INET_ECN_ECT_1
    return ECN_DECAP_OK, inner


@njit(cache=True, nogil=True, inline="always")
def ip_ecn_set(b, nhoff, ecn):
    """Write the ECN field of the IPv4 header at nhoff, its checksum updated (IP_ECN_set_ce and
    IP_ECN_set_ect1 make the same RFC 1624 update over the version/ihl/tos word)."""
    old = ld16(b, nhoff + IPH.version_ihl)
    new = (old & (~INET_ECN_MASK & 0xFFFF)) | ecn
    if new != old:
        b[nhoff + IPH.tos] = new & 0xFF
        csum_replace2(b, nhoff + IPH.check, old, new)


@njit(cache=True, nogil=True, inline="always")
def ip6_ecn_set(b, nhoff, ecn):
    """Write the ECN field of the IPv6 header at nhoff: the low two bits of the traffic class, which
    straddles the first two bytes (version:4 | tclass:8 | flow label:20); IPv6 has no header checksum.

    Linux: include/net/inet_ecn.h › IP6_ECN_set_ce, IP6_ECN_set_ect1 (the ip6tnl decapsulation's
    INET_ECN_decapsulate over an IPv6 inner packet).
    """
    b[nhoff + 1] = (b[nhoff + 1] & (~(INET_ECN_MASK << 4) & 0xFF)) | (ecn << 4)
