"""net/netfilter/nf_flow_table_ip.c: the compiled flowtable fast path over a PacketBatch.

`nf_flow_offload_ip_batch` reads like nf_flow_offload_ip_hook, one step per call, for each packet:
nf_flow_tuple (parse, exceptions, key) -> flow_offload_lookup -> nf_flow_offload_forward (remaining
checks, then refresh, NAT, TTL, counters). Bulk grouping and the link-layer header follow in
flowtable/bulk.py. The stage narrows the active set by writing `verdict`; a packet it sends to the
slow path keeps its bytes, `len` and `head` ("decide, then write"). The hook runs
`nf_flow_offload_ip_range`: the same steps as a three-stage software pipeline (parse and hash,
prefetch the entry, look up and forward), so that the packets' hash chains and memory misses
overlap; `nf_flow_offload_ip_batch` (one packet at a time) is its reference. IPv4 keys are hashed
and compared from the header fields, and IPv4 NAT updates each checksum once (nf_flow_nat_ip), the
same bytes as Linux's field-by-field updates.

The per-packet steps are scalar @njit helpers over one frame (a 1-D uint8 array, `b`), so the slow
path can call the same code: `nf_flow_tuple` builds the key of a frame, `nf_flow_nat_port`,
`nf_flow_nat_ipv4_addr` and `nf_flow_nat_ipv6_addr` mangle exactly as the fast path does.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flowpath.flowtable.key import (
    ENC_SHIFT,
    ENC_TUN,
    ENC_VLAN0_AD,
    F_CLOSING,
    F_DNAT,
    F_SNAT,
    F_TEARDOWN,
    FLOW_KEY_WORDS,
    FLOW_OFFLOAD_DIR_ORIGINAL,
    FLOW_OFFLOAD_XMIT_XFRM,
    HZ_NS,
    K_DADDR,
    K_ENCAP,
    K_IIFIDX,
    K_PORTS,
    K_PROTO,
    K_SADDR,
    K_TUN_DADDR,
    K_TUN_SADDR,
    K_VLAN,
    KEY_ROW,
    NAT6_ROW,
    NF_FLOW_TABLE_ENCAP_MAX,
    V_BYTES,
    V_FLAGS,
    V_NAT_ADDRS,
    V_NAT_PORTS,
    V_OUT,
    V_PACKETS,
    V_TIMEOUT,
    XMIT_ENCAP,
    XMIT_TUN_DF,
    encap_has_tun,
    encap_hlen,
    encap_vlan_num,
    flow_key_equal,
    flow_key_equal_ipv4,
    flow_offload_hash,
    flow_offload_hash_ipv4,
    flow_offload_probe,
    flow_offload_probe_ipv4,
    flow_offload_probe_tag,
    flow_proto,
    nat_daddr,
    nat_saddr,
    out_ifidx,
    out_mtu,
    ports_dst,
    ports_src,
    proto_encap,
    proto_l3,
    proto_l4,
    tun_addr_hash,
    vlan_word,
    xmit_dir,
    xmit_tun_tos,
    xmit_tun_ttl,
    xmit_type,
)
from flowpath.flowtable.prefetch import prefetch
from flowpath.packet.csum import (
    CSUM_MANGLED_0,
    csum_fold,
    csum_partial,
    csum_replace2,
    csum_replace4,
    csum_replace16,
    ip_decrease_ttl,
    ld16,
    ld32,
    st16,
    st32,
    udp_csum_replace2,
    udp_csum_replace4,
)
from flowpath.packet.iptunnel import (
    ECN_DECAP_DROP,
    ecn_decapsulate,
    ip_ecn_set,
    ip_tunnel_outer_fields,
    iptunnel_push_header,
)
from flowpath.packet.layout import (
    ETH,
    ETH_HLEN,
    ETH_P_8021AD,
    ETH_P_8021Q,
    ETH_P_IP,
    ETH_P_IPV6,
    IP6H,
    IP_DF,
    IP_MF,
    IP_OFFSET,
    IPH,
    IPPROTO_FRAGMENT,
    IPPROTO_IPIP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPV6_EXT_HDRS,
    TCPH,
    TCPHDR_FIN,
    TCPHDR_RST,
    TCPHDR_SYN,
    UDPH,
    VLAN,
)
from flowpath.packet.reason import Reason

FLOW_FORWARD = int(Reason.FLOW_FORWARD)
SLOW_NOT_IP = int(Reason.SLOW_NOT_IP)
SLOW_IP_OPTIONS = int(Reason.SLOW_IP_OPTIONS)
SLOW_FRAGMENT = int(Reason.SLOW_FRAGMENT)
SLOW_TTL = int(Reason.SLOW_TTL)
SLOW_L4PROTO = int(Reason.SLOW_L4PROTO)
SLOW_MTU = int(Reason.SLOW_MTU)
SLOW_TEARDOWN = int(Reason.SLOW_TEARDOWN)
SLOW_TCP_STATE = int(Reason.SLOW_TCP_STATE)
SLOW_EXTHDR = int(Reason.SLOW_EXTHDR)
SLOW_NO_ENTRY = int(Reason.SLOW_NO_ENTRY)
SLOW_GSO = int(Reason.SLOW_GSO)
SLOW_TUNNEL_ID = int(Reason.SLOW_TUNNEL_ID)
SLOW_TUNNEL_ECN = int(Reason.SLOW_TUNNEL_ECN)
# A header too short or inconsistent for the flowtable: Linux's nf_flow_tuple_ip fails its
# pskb_may_pull and the packet takes the classic path, which drops and counts it.
SLOW_MALFORMED = int(Reason.SLOW_MALFORMED)
EXT_HDR_0, EXT_HDR_1, EXT_HDR_2, EXT_HDR_3, EXT_HDR_4, EXT_HDR_5 = IPV6_EXT_HDRS


# ---- nf_flow_tuple_ip / nf_flow_tuple_ipv6 ------------------------------------------------------
@njit(cache=True, nogil=True, inline="always")
def nf_flow_tuple_ip_words(b, nhoff, l3len):
    """Check an IPv4 packet; return (FLOW_FORWARD or a Reason, l3proto << 8 | l4proto, saddr,
    daddr, ports): the key words nf_flow_tuple_ip writes, for a caller that keeps them in registers.

    Linux: nf_flow_table_ip.c › nf_flow_tuple_ip: fragment or options, then l4proto, then ttl, then
    the header pull. l3len is the frame length after the Ethernet header (skb->len at ingress).
    """
    z = np.int64(0)
    if l3len < IPH.size:
        return SLOW_MALFORMED, z, z, z, z
    vihl = b[nhoff + IPH.version_ihl]
    if (vihl >> 4) != 4 or (vihl & 0x0F) < 5:
        return SLOW_MALFORMED, z, z, z, z  # the classic path drops it (IP_INHDR)
    if ld16(b, nhoff + IPH.frag_off) & (IP_MF | IP_OFFSET):  # ip_is_fragment()
        return SLOW_FRAGMENT, z, z, z, z
    if vihl != 0x45:  # ip_has_options()
        return SLOW_IP_OPTIONS, z, z, z, z
    l4proto = np.int64(b[nhoff + IPH.protocol])
    if l4proto == IPPROTO_TCP:
        hdrsize = TCPH.size
    elif l4proto == IPPROTO_UDP:
        hdrsize = UDPH.size
    else:
        return SLOW_L4PROTO, z, z, z, z
    if b[nhoff + IPH.ttl] <= 1:
        return SLOW_TTL, z, z, z, z
    tot_len = ld16(b, nhoff + IPH.tot_len)
    thoff = nhoff + IPH.size
    if tot_len > l3len or tot_len < IPH.size + hdrsize:
        return SLOW_MALFORMED, z, z, z, z
    if l4proto == IPPROTO_TCP and (b[thoff + TCPH.doff_res] >> 4) * 4 > tot_len - IPH.size:
        return SLOW_MALFORMED, z, z, z, z
    if l4proto == IPPROTO_TCP and (b[thoff + TCPH.doff_res] >> 4) < 5:
        return SLOW_MALFORMED, z, z, z, z
    saddr, daddr, ports = ld32(b, nhoff + IPH.saddr), ld32(b, nhoff + IPH.daddr), ld32(b, thoff)
    return FLOW_FORWARD, flow_proto(4, l4proto), saddr, daddr, ports


@njit(cache=True, nogil=True, inline="always")
def nf_flow_tuple_ip(b, nhoff, l3len, iifidx, k, koff):
    """Check an IPv4 packet and fill the key words k[koff : koff + 12]; return FLOW_FORWARD or a
    Reason.

    Linux: nf_flow_table_ip.c › nf_flow_tuple_ip (the checks are nf_flow_tuple_ip_words').
    """
    r, proto, saddr, daddr, ports = nf_flow_tuple_ip_words(b, nhoff, l3len)
    if r != FLOW_FORWARD:
        return r
    k[koff + K_IIFIDX] = iifidx
    k[koff + K_PROTO] = proto
    k[koff + K_SADDR] = saddr
    k[koff + K_DADDR] = daddr
    for w in range(1, 4):
        k[koff + K_SADDR + w] = 0
        k[koff + K_DADDR + w] = 0
    k[koff + K_PORTS] = ports
    k[koff + K_ENCAP] = 0
    return FLOW_FORWARD


@njit(cache=True, nogil=True, inline="always")
def nf_flow_tuple_ipv6(b, nhoff, l3len, iifidx, k, koff):
    """Check an IPv6 packet and fill the key words k[koff : koff + 12]; return FLOW_FORWARD or a
    Reason.

    Linux: nf_flow_table_ip.c › nf_flow_tuple_ipv6: nexthdr must be TCP/UDP (extension headers are
    not walked), then hop_limit, then the header pull.
    """
    if l3len < IP6H.size:
        return SLOW_MALFORMED
    if (b[nhoff] >> 4) != 6:
        return SLOW_MALFORMED
    l4proto = np.int64(b[nhoff + IP6H.nexthdr])
    if l4proto == IPPROTO_TCP:
        hdrsize = TCPH.size
    elif l4proto == IPPROTO_UDP:
        hdrsize = UDPH.size
    elif l4proto == IPPROTO_FRAGMENT:
        return SLOW_FRAGMENT
    elif (l4proto == EXT_HDR_0 or l4proto == EXT_HDR_1 or l4proto == EXT_HDR_2 or l4proto == EXT_HDR_3
          or l4proto == EXT_HDR_4 or l4proto == EXT_HDR_5):  # fmt: skip
        return SLOW_EXTHDR
    else:
        return SLOW_L4PROTO
    if b[nhoff + IP6H.hop_limit] <= 1:
        return SLOW_TTL
    plen = ld16(b, nhoff + IP6H.payload_len)
    thoff = nhoff + IP6H.size
    if plen + IP6H.size > l3len or plen < hdrsize:
        return SLOW_MALFORMED
    if l4proto == IPPROTO_TCP and (b[thoff + TCPH.doff_res] >> 4) * 4 > plen:
        return SLOW_MALFORMED
    if l4proto == IPPROTO_TCP and (b[thoff + TCPH.doff_res] >> 4) < 5:
        return SLOW_MALFORMED
    k[koff + K_IIFIDX] = iifidx
    k[koff + K_PROTO] = flow_proto(6, l4proto)
    for w in range(4):
        k[koff + K_SADDR + w] = ld32(b, nhoff + IP6H.saddr + 4 * w)
        k[koff + K_DADDR + w] = ld32(b, nhoff + IP6H.daddr + 4 * w)
    k[koff + K_PORTS] = ld32(b, thoff)
    k[koff + K_ENCAP] = 0
    return FLOW_FORWARD


@njit(cache=True, nogil=True, inline="always")
def nf_flow_skb_encap_protocol(b, head, length):
    """Walk the VLAN tags of the frame at b[head:head+length]: (FLOW_FORWARD or a Reason, offset of
    the network header, its ethertype, ENC_* bits, K_VLAN word).

    Linux: nf_flow_table_ip.c › nf_flow_skb_encap_protocol and nf_flow_tuple_encap: the outer tag
    (802.1Q or 802.1ad, the one skb_vlan_untag moved into the skb) then one in-packet 802.1Q tag; the
    full TCI is the encap id (a tag with priority bits is another encap than the same VID without).
    A third tag, or an 802.1ad tag inside another, is not the flowtable's: SLOW_NOT_IP.
    """
    z = np.int64(0)
    end = head + length
    nh = head + ETH_HLEN
    proto = ld16(b, head + ETH.h_proto)
    enc, tci0, tci1 = z, z, z
    for i in range(NF_FLOW_TABLE_ENCAP_MAX + 1):
        if proto != ETH_P_8021Q and (proto != ETH_P_8021AD or i > 0):
            break
        if i == NF_FLOW_TABLE_ENCAP_MAX:
            return SLOW_NOT_IP, nh, proto, z, z
        if nh + VLAN.size > end:
            return SLOW_MALFORMED, nh, proto, z, z  # the classic path drops it (PKT_TOO_SMALL)
        tci = np.int64(ld16(b, nh + VLAN.h_vlan_TCI))
        if i == 0:
            tci0 = tci
            enc |= ENC_VLAN0_AD if proto == ETH_P_8021AD else 0
        else:
            tci1 = tci
        enc += np.int64(1) << ENC_SHIFT
        proto = ld16(b, nh + VLAN.h_vlan_encapsulated_proto)
        nh += VLAN.size
    return FLOW_FORWARD, nh, proto, enc, vlan_word(tci0, tci1)


@njit(cache=True, nogil=True, inline="always")
def nf_flow_ip4_tunnel_proto(b, nhoff, l3len):
    """Check the outer header of an IPv4-in-IPv4 packet at b[nhoff:]: (FLOW_FORWARD or a Reason, outer
    saddr, outer daddr, the inner packet's length bound: outer tot_len - 20).

    Linux: nf_flow_table_ip.c › nf_flow_ip4_tunnel_proto (6.19): no fragment, no options, ttl > 1,
    then the outer header is skipped (ctx->offset += size). One tunnel level: the inner header is
    parsed by nf_flow_tuple_ip_words, where IPPROTO_IPIP again is SLOW_L4PROTO.
    """
    z = np.int64(0)
    if l3len < 2 * IPH.size:
        return SLOW_MALFORMED, z, z, z
    vihl = b[nhoff + IPH.version_ihl]
    if (vihl >> 4) != 4 or (vihl & 0x0F) < 5:
        return SLOW_MALFORMED, z, z, z
    if ld16(b, nhoff + IPH.frag_off) & (IP_MF | IP_OFFSET):
        return SLOW_FRAGMENT, z, z, z
    if vihl != 0x45:
        return SLOW_IP_OPTIONS, z, z, z
    if b[nhoff + IPH.ttl] <= 1:
        return SLOW_TTL, z, z, z
    tot_len = np.int64(ld16(b, nhoff + IPH.tot_len))
    if tot_len > l3len or tot_len < 2 * IPH.size:
        return SLOW_MALFORMED, z, z, z
    return FLOW_FORWARD, ld32(b, nhoff + IPH.saddr), ld32(b, nhoff + IPH.daddr), tot_len - IPH.size


@njit(cache=True, nogil=True, inline="always")
def nf_flow_tuple(b, head, length, iifidx, k, koff, tun_hash):
    """Key of the frame at b[head:head+length] (Ethernet first) into k[koff : koff + 15];
    FLOW_FORWARD or a Reason. tun_hash 1: an IPIP outer pair also goes into K_ENCAP, hashed
    (tunnel_key="hash"); K_ENCAP is otherwise 0 (the caller sets ESP input's SA word).

    Linux: nf_flow_offload_ip_hook / nf_flow_offload_ipv6_hook: nf_flow_skb_encap_protocol (VLAN
    tags, then an IPIP outer header), then nf_flow_tuple_ip / nf_flow_tuple_ipv6, then the encap
    members (nf_flow_tuple_encap). PPPoE sessions are not parsed (SLOW_NOT_IP).
    """
    if length < ETH_HLEN:
        return SLOW_MALFORMED
    r, nh, proto, enc, vlan = nf_flow_skb_encap_protocol(b, head, length)
    if r != FLOW_FORWARD:
        return r
    l3len = head + length - nh
    ts, td = np.int64(0), np.int64(0)
    if proto == ETH_P_IP:
        if l3len >= IPH.size and b[nh + IPH.protocol] == IPPROTO_IPIP:
            r, ts, td, l3len = nf_flow_ip4_tunnel_proto(b, nh, l3len)
            if r != FLOW_FORWARD:
                return r
            enc |= ENC_TUN
            nh += IPH.size
        r = nf_flow_tuple_ip(b, nh, l3len, iifidx, k, koff)
    elif proto == ETH_P_IPV6:
        r = nf_flow_tuple_ipv6(b, nh, l3len, iifidx, k, koff)
    else:
        return SLOW_NOT_IP
    if r != FLOW_FORWARD:
        return r
    k[koff + K_PROTO] |= enc
    k[koff + K_VLAN] = vlan
    k[koff + K_TUN_SADDR], k[koff + K_TUN_DADDR] = ts, td
    if tun_hash and enc & ENC_TUN:
        k[koff + K_ENCAP] = tun_addr_hash(ts, td)
    return FLOW_FORWARD


# ---- nf_flow_nat_ip / nf_flow_nat_ipv6 -----------------------------------------------------------
@njit(cache=True, nogil=True, inline="always")
def nf_flow_nat_port(b, thoff, l4proto, poff, new_port):
    """Rewrite the port at thoff+poff and patch the L4 checksum (nf_flow_nat_port_tcp/udp)."""
    old = ld16(b, thoff + poff)
    st16(b, thoff + poff, new_port)
    if l4proto == IPPROTO_TCP:
        csum_replace2(b, thoff + TCPH.check, old, new_port)
    else:
        udp_csum_replace2(b, thoff + UDPH.check, old, new_port)


@njit(cache=True, nogil=True, inline="always")
def nf_flow_nat_ipv4_addr(b, nhoff, thoff, l4proto, aoff, new_addr):
    """Rewrite the IPv4 address at nhoff+aoff; patch the header and L4 (pseudo-header) checksums.

    Linux: nf_flow_snat_ip / nf_flow_dnat_ip (csum_replace4) + nf_flow_nat_ip_l4proto.
    """
    old = ld32(b, nhoff + aoff)
    st32(b, nhoff + aoff, new_addr)
    csum_replace4(b, nhoff + IPH.check, old, new_addr)
    if l4proto == IPPROTO_TCP:
        csum_replace4(b, thoff + TCPH.check, old, new_addr)
    else:
        udp_csum_replace4(b, thoff + UDPH.check, old, new_addr)


@njit(cache=True, nogil=True, inline="always")
def nf_flow_nat_ipv6_addr(b, nhoff, thoff, l4proto, aoff, new6, noff):
    """Rewrite the IPv6 address at nhoff+aoff with new6[noff:noff+16]; patch the L4 checksum.

    Linux: nf_flow_snat_ipv6 / nf_flow_dnat_ipv6 + nf_flow_nat_ipv6_tcp/udp
    (inet_proto_csum_replace16; a zero UDP checksum is left alone, a zero result becomes ~0).
    """
    if l4proto == IPPROTO_TCP:
        csum_replace16(b, thoff + TCPH.check, nhoff + aoff, new6, noff)
    elif ld16(b, thoff + UDPH.check) != 0:
        csum_replace16(b, thoff + UDPH.check, nhoff + aoff, new6, noff)
        if ld16(b, thoff + UDPH.check) == 0:
            st16(b, thoff + UDPH.check, CSUM_MANGLED_0)
    for j in range(16):
        b[nhoff + aoff + j] = new6[noff + j]


@njit(cache=True, nogil=True, inline="always")
def _nat_src(b, nhoff, thoff, l3proto, l4proto, val, nat6, e):
    nf_flow_nat_port(b, thoff, l4proto, TCPH.source, ports_src(val[e, V_NAT_PORTS]))
    if l3proto == 4:
        nf_flow_nat_ipv4_addr(b, nhoff, thoff, l4proto, IPH.saddr, nat_saddr(val[e, V_NAT_ADDRS]))
    else:
        nf_flow_nat_ipv6_addr(b, nhoff, thoff, l4proto, IP6H.saddr, nat6, e * NAT6_ROW)


@njit(cache=True, nogil=True, inline="always")
def _nat_dst(b, nhoff, thoff, l3proto, l4proto, val, nat6, e):
    nf_flow_nat_port(b, thoff, l4proto, TCPH.dest, ports_dst(val[e, V_NAT_PORTS]))
    if l3proto == 4:
        nf_flow_nat_ipv4_addr(b, nhoff, thoff, l4proto, IPH.daddr, nat_daddr(val[e, V_NAT_ADDRS]))
    else:
        nf_flow_nat_ipv6_addr(b, nhoff, thoff, l4proto, IP6H.daddr, nat6, e * NAT6_ROW + 16)


# Called, not inlined, and only for a NATed IPv6 flow: inlined into each driver it cost seconds of
# the first run's compiling, and NAT66 is rare.
@njit(cache=True, nogil=True, _nrt=False)
def nf_flow_nat(b, nhoff, thoff, l3proto, l4proto, flags, dir_, val, nat6, e):
    """NAT in Linux's order: SNAT (port, then address), then DNAT, each on the side its direction
    names (nf_flow_nat_ip: ORIGINAL SNAT rewrites the source, REPLY SNAT the destination)."""
    if flags & F_SNAT:
        if dir_ == FLOW_OFFLOAD_DIR_ORIGINAL:
            _nat_src(b, nhoff, thoff, l3proto, l4proto, val, nat6, e)
        else:
            _nat_dst(b, nhoff, thoff, l3proto, l4proto, val, nat6, e)
    if flags & F_DNAT:
        if dir_ == FLOW_OFFLOAD_DIR_ORIGINAL:
            _nat_dst(b, nhoff, thoff, l3proto, l4proto, val, nat6, e)
        else:
            _nat_src(b, nhoff, thoff, l3proto, l4proto, val, nat6, e)


@njit(cache=True, nogil=True, inline="always")
def _csum32_terms(old, new):
    # RFC 1624 eq. 3 terms ~m + m' of a 32-bit field change, as csum_replace4 adds them
    return ((~(old >> 16)) & 0xFFFF) + ((~old) & 0xFFFF) + ((new >> 16) & 0xFFFF) + (new & 0xFFFF)


@njit(cache=True, nogil=True, inline="always")
def csum_replace_terms(b, coff, terms, udp):
    """One RFC 1624 eq. 3 update by the summed ~m + m' terms of several field changes.

    No Linux counterpart: Linux calls csum_replace4/2 (inet_proto_csum_replace4/2 for L4) once per
    field. One update gives the same bytes: csum_fold depends only on its argument modulo 0xFFFF and
    on whether it is 0, so folding between the terms changes nothing, and UDP's zero rules (a zero
    checksum stays zero, a zero result becomes CSUM_MANGLED_0) hold at the end as after each step
    (tests/flowtable: the hypothesis test against the field-by-field helpers). It reads and writes
    the checksum once, instead of a store then a load per field.
    """
    hc = ld16(b, coff)
    if udp and hc == 0:
        return
    c = (~csum_fold(((~hc) & 0xFFFF) + terms)) & 0xFFFF
    st16(b, coff, CSUM_MANGLED_0 if udp and c == 0 else c)


@njit(cache=True, nogil=True, inline="always")
def nf_flow_nat_ip(b, nhoff, thoff, l4proto, flags, dir_, val, e):
    """IPv4 NAT of one hit with one checksum update per header; the same bytes as nf_flow_nat.

    Linux: nf_flow_table_ip.c › nf_flow_nat_ip (nf_flow_snat_port/ip, nf_flow_dnat_port/ip): the
    source side is rewritten by ORIGINAL SNAT and REPLY DNAT, the destination side by REPLY SNAT
    and ORIGINAL DNAT; both sides' changes go into one csum_replace_terms per checksum.
    """
    orig = dir_ == FLOW_OFFLOAD_DIR_ORIGINAL
    src = (flags & F_SNAT and orig) or (flags & F_DNAT and not orig)
    dst = (flags & F_SNAT and not orig) or (flags & F_DNAT and orig)
    if not (src or dst):
        return
    ports = ld32(b, thoff)
    ip_terms = np.int64(0)
    port_terms = np.int64(0)
    if src:
        old, new = ld32(b, nhoff + IPH.saddr), nat_saddr(val[e, V_NAT_ADDRS])
        ip_terms += _csum32_terms(old, new)
        st32(b, nhoff + IPH.saddr, new)
        newp = ports_src(val[e, V_NAT_PORTS])
        port_terms += ((~ports_src(ports)) & 0xFFFF) + newp
        st16(b, thoff + TCPH.source, newp)
    if dst:
        old, new = ld32(b, nhoff + IPH.daddr), nat_daddr(val[e, V_NAT_ADDRS])
        ip_terms += _csum32_terms(old, new)
        st32(b, nhoff + IPH.daddr, new)
        newp = ports_dst(val[e, V_NAT_PORTS])
        port_terms += ((~ports_dst(ports)) & 0xFFFF) + newp
        st16(b, thoff + TCPH.dest, newp)
    csum_replace_terms(b, nhoff + IPH.check, ip_terms, False)
    if l4proto == IPPROTO_TCP:
        csum_replace_terms(b, thoff + TCPH.check, ip_terms + port_terms, False)
    else:
        csum_replace_terms(b, thoff + UDPH.check, ip_terms + port_terms, True)


# ---- GSO super-packets (PacketBatch.gso != 0) ------------------------------------------------------
@njit(cache=True, nogil=True, inline="always")
def nf_flow_gso_fits_mtu(b, nhoff, thoff, l4proto, gso, mtu):
    """True when each segment of the GSO packet at b[nhoff:] fits mtu (gso: its PacketBatch.gso word).

    Linux: nf_flow_table_ip.c › nf_flow_exceeds_mtu (a GSO skb passes when
    skb_gso_validate_network_len does: its segments' network length, headers plus gso_size).
    """
    if gso == 0:
        return False
    l4hdr = (np.int64(b[thoff + TCPH.doff_res]) >> 4) * 4 if l4proto == IPPROTO_TCP else UDPH.size
    return thoff - nhoff + l4hdr + (gso & 0xFFFF) <= mtu


@njit(cache=True, nogil=True, inline="always")
def nf_flow_pseudo_addr_sum(b, nhoff, l3proto):
    """The folded sum of the addresses the pseudo-header takes from the IP header (saddr, daddr)."""
    if l3proto == 4:
        return csum_partial(b, nhoff + IPH.saddr, 8, 0)
    return csum_partial(b, nhoff + IP6H.saddr, 32, 0)


@njit(cache=True, nogil=True, inline="always")
def nf_flow_csum_partial_nat(b, coff, check, old_addrs, new_addrs, udp):
    """The L4 check field of a CHECKSUM_PARTIAL packet after NAT: `check` (the field before NAT,
    the pseudo-header sum, not complemented) moved by the addresses' change only.

    Linux: net/core/utils.c › inet_proto_csum_replace4/16 with pseudohdr=true for CHECKSUM_PARTIAL
    (*sum = ~csum_fold(csum_add(csum_sub(csum_unfold(*sum), from), to))), while
    inet_proto_csum_replace2 (a port, pseudohdr=false) leaves the field alone: the device sums the
    ports with the payload. One update for all address words gives the same value: both fold a sum
    that is equal modulo 0xFFFF and not zero. nf_flow_nat_ip_udp: a zero result goes as
    CSUM_MANGLED_0. NAT's own update of the field (for a full checksum) is overwritten here.
    """
    c = csum_fold(check + ((~old_addrs) & 0xFFFF) + new_addrs)
    st16(b, coff, CSUM_MANGLED_0 if udp and c == 0 else c)


# ---- nf_flow_offload_forward ---------------------------------------------------------------------
@njit(cache=True, nogil=True, inline="always")
def nf_flow_state_check(key, e, b, thoff, l4proto):
    """Linux 6.14 nf_flow_state_check: SYN on a CLOSING flow tears it down (True: go slow);
    FIN or RST marks the flow CLOSING and the packet stays on the fast path."""
    if l4proto != IPPROTO_TCP:
        return False
    tcpflags = b[thoff + TCPH.flags]
    flags = key[e, V_FLAGS]
    if tcpflags & TCPHDR_SYN and flags & F_CLOSING:
        key[e, V_FLAGS] |= F_TEARDOWN  # flow_offload_teardown: both directions
        key[e ^ 1, V_FLAGS] |= F_TEARDOWN
        return True
    if tcpflags & (TCPHDR_FIN | TCPHDR_RST) and not flags & F_CLOSING:
        key[e, V_FLAGS] |= F_CLOSING
        key[e ^ 1, V_FLAGS] |= F_CLOSING
    return False


@njit(cache=True, nogil=True, inline="always")
def nf_flow_offload_forward(b, head, room, ft, nat6, e, now_ns, gso):
    """One hit (entry e of ft, FlowtableViews) at b[head:] (room bytes of headroom before it): checks,
    then writes. nat6 is the flat (1-D) view of ft.nat6; gso the packet's PacketBatch.gso word (0: an
    ordinary packet). Returns (Reason, head move, new frame length): on FLOW_FORWARD the frame starts
    head move bytes later (negative: earlier) with an Ethernet header's room, then the IP header the
    link-layer header goes before (the popped encapsulation is skipped, a pushed IPIP header added).

    Linux: nf_flow_table_ip.c › nf_flow_offload_forward: MTU, TCP state; then refresh, the encap pop
    (nf_flow_encap_pop: VLAN tags and the IPIP outer header; the entry's key says which, as the packet
    matched it), NAT, TTL, acct; then the reverse tuple's IPIP header is pushed (nf_flow_tunnel_push,
    nf_flow_tunnel_ipip_push), its VLAN tags going into the link-layer header (bulk.py).
    A GSO super-packet (checksum partial) passes the MTU check by its segments' size, its NAT
    moves the partial checksum by the addresses only, and it counts as one packet (one skb).
    Deviation: the frame is trimmed to the IP length (Ethernet padding dropped) as the classic
    path's ip_rcv does, so both paths emit the same bytes.
    Deviation: Linux's IPIP pop leaves the inner ECN field as it is; we decapsulate it as ip_tunnel_rcv
    does (RFC 6040), so both paths emit the same bytes (a CE outer over a not-ECT inner, which the
    classic path drops, goes there).
    Deviation: a GSO packet of an XMIT_XFRM flow or of an IPIP one takes the classic path
    (segmented first) instead of software GSO (xfrm_output's, SKB_GSO_IPXIP4); VLAN tags are L2 and
    stay on the fast path.
    """
    key, val = ft.key, ft.val
    flags = key[e, V_FLAGS]
    proto = key[e, K_PROTO]
    enc = proto_encap(proto)
    nhoff = head + ETH_HLEN + (encap_hlen(proto) if enc else 0)
    l3proto, l4proto = proto_l3(proto), proto_l4(proto)
    if l3proto == 4:
        l3len = ld16(b, nhoff + IPH.tot_len)
        thoff = nhoff + IPH.size
    else:
        l3len = ld16(b, nhoff + IP6H.payload_len) + IP6H.size
        thoff = nhoff + IP6H.size
    mtu = out_mtu(val[e, V_OUT])
    if l3len > mtu and not nf_flow_gso_fits_mtu(b, nhoff, thoff, l4proto, gso, mtu):
        return SLOW_MTU, 0, 0  # nf_flow_exceeds_mtu (a tunnel's mtu is its outer MTU minus 20)
    if gso and xmit_type(flags) == FLOW_OFFLOAD_XMIT_XFRM:
        return SLOW_GSO, 0, 0
    tun_in, tun_out, ecn = False, False, np.int64(0)
    if enc or flags & XMIT_ENCAP:  # one predicted branch for a plain flow
        r, tun_in, tun_out, ecn = nf_flow_encap_check(b, nhoff, room, key, e, flags, gso)
        if r != FLOW_FORWARD:
            return r, 0, 0
    if nf_flow_state_check(key, e, b, thoff, l4proto):
        return SLOW_TCP_STATE, 0, 0
    # ---- writes from here on ----
    if tun_in:
        nf_flow_ip_tunnel_ecn(b, nhoff, ecn)
    timeout = now_ns + (ft.timeout_tcp_ns if l4proto == IPPROTO_TCP else ft.timeout_udp_ns)
    if timeout - val[e, V_TIMEOUT] > HZ_NS:  # flow_offload_refresh
        val[e, V_TIMEOUT] = timeout
    partial = gso != 0 and (flags & (F_SNAT | F_DNAT)) != 0
    coff = check = addrs = np.int64(0)
    if partial:
        coff = thoff + (TCPH.check if l4proto == IPPROTO_TCP else UDPH.check)
        check, addrs = ld16(b, coff), nf_flow_pseudo_addr_sum(b, nhoff, l3proto)
    if l3proto == 4:
        nf_flow_nat_ip(b, nhoff, thoff, l4proto, flags, xmit_dir(flags), val, e)
        ip_decrease_ttl(b, nhoff)
    else:
        if flags & (F_SNAT | F_DNAT):
            nf_flow_nat(b, nhoff, thoff, l3proto, l4proto, flags, xmit_dir(flags), val, nat6, e)
        b[nhoff + IP6H.hop_limit] -= 1
    if partial:
        nf_flow_csum_partial_nat(b, coff, check, addrs, nf_flow_pseudo_addr_sum(b, nhoff, l3proto),
                                 l4proto == IPPROTO_UDP)  # fmt: skip
    if ft.counter:  # nf_ct_acct_update(ct, dir, skb->len)
        val[e, V_PACKETS] += 1
        val[e, V_BYTES] += l3len
    if tun_out:
        nf_flow_tunnel_ipip_push(b, nhoff, l3len, key, e, flags)
        return FLOW_FORWARD, nhoff - IPH.size - ETH_HLEN - head, ETH_HLEN + IPH.size + l3len
    return FLOW_FORWARD, nhoff - ETH_HLEN - head, ETH_HLEN + l3len


# The encapsulation steps are called, not inlined (as nf_flow_nat for NAT66): rare, they stay out of
# the hit loop's code and of each driver's compile.
@njit(cache=True, nogil=True, _nrt=False)
def nf_flow_encap_check(b, nhoff, room, key, e, flags, gso):
    """The checks an encapsulated hit adds (entry e's own encap, popped; its reverse tuple's, pushed
    when XMIT_ENCAP): (FLOW_FORWARD or a slow Reason, pop an IPIP header, push one, the inner ECN
    field RFC 6040 decapsulation gives). nhoff: the inner IP header. Writes nothing."""
    proto = key[e, K_PROTO]
    rproto = key[e ^ 1, K_PROTO] if flags & XMIT_ENCAP else np.int64(0)  # the reverse tuple's encap
    tun_in, tun_out = encap_has_tun(proto), encap_has_tun(rproto)
    ecn = np.int64(0)
    if gso and (tun_out or tun_in):
        return SLOW_GSO, tun_in, tun_out, ecn
    push = (IPH.size if tun_out else 0) + VLAN.size * encap_vlan_num(rproto)
    if push > room + encap_hlen(proto):
        return SLOW_MTU, tun_in, tun_out, ecn  # Deviation: no headroom for the push; Linux reallocates
    if tun_out and not (flags & XMIT_TUN_DF or ld16(b, nhoff + IPH.frag_off) & IP_DF):
        return SLOW_TUNNEL_ID, tun_in, tun_out, ecn  # an outer header without DF takes the next id
    if tun_in:  # ip_tunnel_rcv's IP_ECN_decapsulate (RFC 6040 §4.2), as the classic path decapsulates
        rc, ecn = ecn_decapsulate(np.int64(b[nhoff - IPH.size + IPH.tos]), np.int64(b[nhoff + IPH.tos]))
        if rc == ECN_DECAP_DROP:
            return SLOW_TUNNEL_ECN, tun_in, tun_out, ecn
    return FLOW_FORWARD, tun_in, tun_out, ecn


@njit(cache=True, nogil=True, _nrt=False)
def nf_flow_ip_tunnel_ecn(b, nhoff, ecn):
    """The popped IPIP packet's inner ECN field as RFC 6040 decapsulation gives it (ip_tunnel_rcv)."""
    ip_ecn_set(b, nhoff, ecn)


@njit(cache=True, nogil=True, _nrt=False)
def nf_flow_tunnel_ipip_push(b, nhoff, l3len, key, e, flags):
    """Push the IPIP outer header of entry e's transmit in front of the inner IPv4 header at nhoff:
    addresses from the reverse tuple (saddr its tun.dst, daddr its tun.src), tos, ttl and DF from the
    tunnel parms in e's flags word over the (forwarded) inner header, id 0, the checksum.

    Linux: nf_flow_table_ip.c › nf_flow_tunnel_ipip_push (6.19). Deviation: Linux copies the inner
    tos, ttl and frag_off; we take them as ip_tunnel_xmit does (packet/iptunnel.py), so the fast path
    emits what the tunnel device would.
    """
    r = e ^ 1
    saddr, daddr = np.int64(key[r, K_TUN_DADDR]), np.int64(key[r, K_TUN_SADDR])
    tos, ttl, df = ip_tunnel_outer_fields(np.int64(b[nhoff + IPH.tos]), np.int64(b[nhoff + IPH.ttl]),
                                          np.int64(ld16(b, nhoff + IPH.frag_off)), xmit_tun_tos(flags),
                                          xmit_tun_ttl(flags), (flags & XMIT_TUN_DF) != 0)  # fmt: skip
    # id 0: the header has DF (nf_flow_offload_forward checked), as the classic path's iptunnel_xmit
    iptunnel_push_header(b, nhoff - IPH.size, IPH.size + l3len, tos, ttl, df, IPPROTO_IPIP, saddr, daddr, 0)


@njit(cache=True, nogil=True, inline="always")
def nf_flow_offload_step(cols, flat, off, i, ft, nat6, e, now_ns):
    """After the lookup of packet i (entry e or -1): the TEARDOWN check flow_offload_lookup makes,
    then nf_flow_offload_forward; writes the batch's (cols) len/oif/flow of packet i, whose frame
    starts at flat[off] (flat: the batch's data as one row). Returns FLOW_FORWARD or a slow Reason."""
    _, head, length, _, oif, _, flow, _, gso = cols
    flow[i] = e
    if e < 0:
        return SLOW_NO_ENTRY
    if ft.key[e, V_FLAGS] & F_TEARDOWN:
        return SLOW_TEARDOWN
    r, move, newlen = nf_flow_offload_forward(flat, off, np.int64(head[i]), ft, nat6, e, now_ns, np.int64(gso[i]))
    if r == FLOW_FORWARD:
        if move:  # an encapsulation popped or an IPIP header pushed
            head[i] = np.int64(head[i]) + move
        length[i] = newlen
        oif[i] = out_ifidx(ft.val[e, V_OUT])
    return r


@njit(cache=True, nogil=True, inline="always")
def _nf_flow_tuple_hash(flat, off, ln, ifidx, enc, kflat, ko, seed, tun_hash):
    """Parse the frame at flat[off:off+ln], write its key to kflat[ko:] and hash it: (Reason, hash).
    A plain IPv4 key (no VLAN tag, no IPIP) is written as its varying words only (proto, saddr,
    daddr, ports, encap; iifidx in K_IIFIDX; K_VLAN and K_TUN_* left as they are: _ring_key_ipv4
    reads them only under ENC_* bits) and compared from them; anything else goes through
    nf_flow_tuple, which writes the whole key."""
    h = np.int64(0)
    if ln >= ETH_HLEN and ld16(flat, off + ETH.h_proto) == ETH_P_IP:
        r, proto, saddr, daddr, ports = nf_flow_tuple_ip_words(flat, off + ETH_HLEN, ln - ETH_HLEN)
        if r == FLOW_FORWARD:
            kflat[ko + K_IIFIDX], kflat[ko + K_PROTO], kflat[ko + K_PORTS] = ifidx, proto, ports
            kflat[ko + K_SADDR], kflat[ko + K_DADDR], kflat[ko + K_ENCAP] = saddr, daddr, enc
            return r, flow_offload_hash_ipv4(ifidx, proto, saddr, daddr, ports, enc, np.int64(0), seed)
        if r != SLOW_L4PROTO or flat[off + ETH_HLEN + IPH.protocol] != IPPROTO_IPIP:
            return r, h  # IPIP (its outer header is SLOW_L4PROTO here) goes on below
    if ln >= ETH_HLEN and ld16(flat, off + ETH.h_proto) == ETH_P_IPV6:
        r = nf_flow_tuple_ipv6(flat, off + ETH_HLEN, ln - ETH_HLEN, ifidx, kflat, ko)
        kflat[ko + K_VLAN], kflat[ko + K_TUN_SADDR], kflat[ko + K_TUN_DADDR] = 0, 0, 0
    else:
        r = nf_flow_tuple_encap(flat, off, ln, ifidx, kflat, ko, tun_hash)
    if r == FLOW_FORWARD:
        if enc:  # ESP input's SA word (an IPIP key under tunnel_key="hash" has none: one level)
            kflat[ko + K_ENCAP] = enc
        h = flow_offload_hash(kflat, ko, seed, tun_hash)
    return r, h


@njit(cache=True, nogil=True, _nrt=False)
def nf_flow_tuple_encap(b, head, length, iifidx, k, koff, tun_hash):
    """nf_flow_tuple for what is neither plain IPv4 nor plain IPv6 (VLAN tags, IPIP, or not IP at
    all): called, not inlined, so that the plain hit path stays small."""
    return nf_flow_tuple(b, head, length, iifidx, k, koff, tun_hash)


@njit(cache=True, nogil=True, inline="always")
def _nf_flow_lookup_forward(cols, flat, off, i, ft, nat6, kflat, ko, h, cand, now_ns):
    """Look up the key at kflat[ko:] (hash h), then nf_flow_offload_step: FLOW_FORWARD or a slow Reason.

    cand: what flow_offload_probe_tag found for h (the pipeline's stage 2), or CAND_UNKNOWN. The first
    entry on the probe run whose tag matches is the one the probe compares first, so when its key is
    equal it is the probe's answer, and when no record has the tag the probe finds nothing: only a
    tag collision probes again.
    """
    ipv4 = proto_l3(kflat[ko + K_PROTO]) == 4
    k4 = _ring_key_ipv4(kflat, ko)
    th = ft.tun_hash
    if cand >= 0 and (
        flow_key_equal_ipv4(ft.key, cand, k4, th) if ipv4 else flow_key_equal(ft.key, cand, kflat, ko, th)
    ):
        e = cand
    elif cand == -1:
        e = np.int64(-1)
    elif ipv4:
        e = flow_offload_probe_ipv4(ft.index, ft.key, ft.mask, ft.max_probes, k4, h, th)
    else:
        e = flow_offload_probe(ft.index, ft.key, ft.mask, ft.max_probes, kflat, ko, h, th)
    return nf_flow_offload_step(cols, flat, off, i, ft, nat6, e, now_ns)


@njit(cache=True, nogil=True, inline="always")
def _ring_key_ipv4(kflat, ko):
    # an IPv4 key in the ring holds its varying words only (see _nf_flow_tuple_hash): the encap words
    # are read under ENC_* bits only (flow_key_equal_ipv4 compares them only then)
    proto = np.int64(kflat[ko + K_PROTO])
    z = np.int64(0)
    vlan, ts, td = z, z, z
    if proto_encap(proto):
        vlan, ts = np.int64(kflat[ko + K_VLAN]), np.int64(kflat[ko + K_TUN_SADDR])
        td = np.int64(kflat[ko + K_TUN_DADDR])
    return (np.int64(kflat[ko + K_IIFIDX]), proto, np.int64(kflat[ko + K_SADDR]), np.int64(kflat[ko + K_DADDR]),
            np.int64(kflat[ko + K_PORTS]), np.int64(kflat[ko + K_ENCAP]), vlan, ts, td)  # fmt: skip


# The batch stages are compiled without NRT (`_nrt=False`, numba's switch for its reference-counting
# runtime): they allocate nothing, and with NRT on, every inlined helper taking an array paid an
# atomic incref/decref pair per packet that numba's pruner left in place (130 -> 73 ns/pkt).
@njit(cache=True, nogil=True, _nrt=False)
def nf_flow_offload_ip_batch(cols, n, ft, ring, now_ns):
    """Fast path over packets 0..n-1 of a batch: tuple, lookup, forward, one packet at a time.

    Linux: nf_flow_table_ip.c › nf_flow_offload_ip_hook (nf_flow_offload_lookup, then
    nf_flow_offload_forward), for IPv4 and IPv6 alike.
    cols: a PacketBatch's columns (data, head, len, iif, oif, verdict, flow, encap):
    data uint8[cap, slot]; head, len uint16[cap] (len in/out: trimmed on a hit); iif int32[cap]
    oif int32[cap] out: out.ifidx of each hit; verdict uint8[cap] in/out: only FLOW_FORWARD packets
    are looked at, the others are left alone; flow int32[cap] out: the entry, -1 for no entry
    encap uint32[cap]: the key's encap word per packet (0, or SA index + 1 after ESP input)
    ft FlowtableViews; ring (pkey uint32[G, 16], phash int64[G]) scratch (G = PREFETCH_RING); now_ns
    packet time. Returns the number of packets sent to the slow path.
    """
    data, head, length, iif, _, verdict, flow, encap, _ = cols
    flat, slot, kflat, nat6 = data.reshape(-1), data.shape[1], ring[0].reshape(-1), ft.nat6.reshape(-1)
    slow = 0
    for i in range(n):
        if verdict[i] != FLOW_FORWARD:
            continue
        off = i * slot + np.int64(head[i])  # int64: uint16 arithmetic would wrap with the JIT off
        r, h = _nf_flow_tuple_hash(flat, off, np.int64(length[i]), np.int64(iif[i]), np.int64(encap[i]), kflat, 0,
                                   ft.seed, ft.tun_hash)  # fmt: skip
        if r == FLOW_FORWARD:
            r = _nf_flow_lookup_forward(cols, flat, off, i, ft, nat6, kflat, 0, h, CAND_UNKNOWN, now_ns)
        else:
            flow[i] = -1
        if r != FLOW_FORWARD:
            verdict[i] = r
            slow += 1
    return slow


PREFETCH_DISTANCE = 12  # packets between the pipeline's stages
RING_CAND = FLOW_KEY_WORDS  # word of a ring row after the key: stage 2's candidate entry + 1 (0: none)
CAND_UNKNOWN = -2  # _nf_flow_lookup_forward without a stage 2: probe
PREFETCH_RING = 32  # rows of the key/hash scratch ring: a power of two > 2 * PREFETCH_DISTANCE
PREFETCH_MIN_ENTRIES = 1 << 15  # tables this large (4 MB of rows and up) miss the caches (hook.py chunks)


@njit(cache=True, nogil=True, _nrt=False)
def nf_flow_offload_ip_batch_prefetch(cols, n, ft, ring, now_ns):
    """nf_flow_offload_ip_batch as a software pipeline (nf_flow_offload_ip_range over 0..n-1).

    No Linux counterpart (the kernel walks one skb at a time). Same arguments, same results.
    """
    return nf_flow_offload_ip_range(cols, 0, n, ft, ring, now_ns)


@njit(cache=True, nogil=True, _nrt=False)
def nf_flow_offload_ip_range(cols, i0, i1, ft, ring, now_ns):
    """The steps of nf_flow_offload_ip_batch over packets i0..i1-1 as a software pipeline: packet j
    is parsed and hashed (its probe slot prefetched) while packet j + D has its headers prefetched,
    packet j - D the rows of the entry its tag points to, and packet j - 2D is looked up and
    forwarded (D = PREFETCH_DISTANCE).
    The misses of ~2D packets are in flight at once and no packet waits for another's. pkey/phash
    (ring) are a ring of PREFETCH_RING keys and hashes. The hook calls it chunk by chunk, so that it can
    group a chunk's hits while their entries are still in the caches. No Linux counterpart.

    Measured (benchmarks/flowtable_kernel.py, one call over 2**20 frames, hook ns/pkt, against
    groups of 16 in three passes that prefetched the home slot's entry): 100000 flows 74.7 -> 43.3,
    1000 flows 37.6 -> 35.4, 1 flow 26.4 -> 26.0. Most of the gain is prefetching the entry whose
    tag matches rather than the home slot's: at load 0.38 a quarter of the lookups find their
    record past the home slot, and each of those then missed in DRAM with nothing in flight.
    """
    data, head, length, iif, _, verdict, flow, encap, _ = cols
    pkey, phash = ring
    flat, slot, kflat, nat6 = data.reshape(-1), data.shape[1], pkey.reshape(-1), ft.nat6.reshape(-1)
    d, rmask = PREFETCH_DISTANCE, PREFETCH_RING - 1
    slow = 0
    for j in range(i0, min(i1, i0 + d)):
        prefetch(flat, j * slot + np.int64(head[j]))
    for j in range(i0, i1 + 2 * d):
        if j + d < i1:  # the frame's headers, d packets ahead of its parse
            prefetch(flat, (j + d) * slot + np.int64(head[j + d]))
        if j < i1 and verdict[j] == FLOW_FORWARD:
            r, h = _nf_flow_tuple_hash(flat, j * slot + np.int64(head[j]), np.int64(length[j]), np.int64(iif[j]),
                                       np.int64(encap[j]), kflat, (j & rmask) * KEY_ROW, ft.seed,
                                       ft.tun_hash)  # fmt: skip
            if r != FLOW_FORWARD:
                verdict[j] = r
                flow[j] = -1
                slow += 1
            else:
                phash[j & rmask] = h
                prefetch(ft.index, h & ft.mask)
        b = j - d
        if i0 <= b < i1 and verdict[b] == FLOW_FORWARD:
            e = flow_offload_probe_tag(ft.index, ft.mask, ft.max_probes, phash[b & rmask])
            kflat[(b & rmask) * KEY_ROW + RING_CAND] = e + 1
            if e >= 0:
                prefetch(ft.key[e], 0)  # the entry's key line, then its val line
                prefetch(ft.val[e], 0)
        c = j - 2 * d
        if c >= i0 and verdict[c] == FLOW_FORWARD:
            ko = (c & rmask) * KEY_ROW
            r = _nf_flow_lookup_forward(cols, flat, c * slot + np.int64(head[c]), c, ft, nat6, kflat, ko,
                                        phash[c & rmask], np.int64(kflat[ko + RING_CAND]) - 1, now_ns)  # fmt: skip
            if r != FLOW_FORWARD:
                verdict[c] = r
                slow += 1
    return slow
