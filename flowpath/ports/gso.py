"""Software GSO and checksum completion for frames a packet socket hands over with a virtio_net_hdr.

Linux: net/ipv4/tcp_offload.c › tcp_gso_segment, net/ipv4/udp_offload.c › __udp_gso_segment,
net/ipv4/af_inet.c › inet_gso_segment (IP id and length per segment), net/ipv6/ip6_offload.c ›
ipv6_gso_segment, net/core/dev.c › skb_checksum_help; include/linux/virtio_net.h › the header.
A frame the local stack sent (a host behind a veth) arrives as the kernel held it: CHECKSUM_PARTIAL
(the L4 check field holds only the pseudo-header sum, VIRTIO_NET_HDR_F_NEEDS_CSUM) and, over TSO/USO,
as one super-packet of up to 64 KiB with gso_size set. The gateway forwards what a NIC would have put
on the wire, so the port finishes both jobs here: `gso_parse` decides (every check first), then
`gso_segment` writes segment k into a batch slot from the untouched original in the ring.
Segment k is a pure function of k, so a batch that fills up mid-packet resumes at the next k.
With GSO passthrough (AfPacketPort(gso=True), the live gateway) a TCP super-packet instead stays
whole in one slot (PacketBatch.gso, checksum partial) as far as the fast path takes it, and leaves
with a virtio_net_hdr; `skb_gso_segment` cuts one for the classic path, which handles ordinary
packets only.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flowpath.packet.csum import csum_partial, ip_fast_csum, l4_csum, ld16, ld32, st16, st32
from flowpath.packet.layout import (
    ETH,
    ETH_P_8021AD,
    ETH_P_8021Q,
    ETH_P_IP,
    ETH_P_IPV6,
    IP6H,
    IP_MF,
    IP_OFFSET,
    IPH,
    IPPROTO_TCP,
    IPPROTO_UDP,
    TCPH,
    TCPHDR_CWR,
    TCPHDR_FIN,
    TCPHDR_PSH,
    UDPH,
    VLAN,
)

# include/uapi/linux/virtio_net.h
VIRTIO_NET_HDR = np.dtype([  # struct virtio_net_hdr (little-endian: virtio legacy on a little-endian host)
    ("flags", "u1"), ("gso_type", "u1"), ("hdr_len", "<u2"), ("gso_size", "<u2"),
    ("csum_start", "<u2"),  # from the mac header, where the checksum starts
    ("csum_offset", "<u2"),  # from csum_start, where the result goes
])  # fmt: skip
assert VIRTIO_NET_HDR.itemsize == 10
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_UDP = 3  # UFO: IP fragments, not segments; not done here
VIRTIO_NET_HDR_GSO_TCPV6 = 4
VIRTIO_NET_HDR_GSO_UDP_L4 = 5
VIRTIO_NET_HDR_GSO_ECN = 0x80
CSUM_MANGLED_0 = 0xFFFF

# gso_parse's result: l4proto, is_ipv6, nhoff, thoff, hdrlen, nsegs (l4proto 0: cannot segment)
GSO_FAIL = (0, 0, 0, 0, 0, 0)


@njit(cache=True, nogil=True, _nrt=False)
def skb_checksum_help(b, start, end, coff):
    """Complete a CHECKSUM_PARTIAL checksum: the sum over b[start:end] (the field already holds the
    pseudo-header sum), folded and inverted, stored at coff; 0 goes out as 0xffff.
    Linux: net/core/dev.c › skb_checksum_help (csum_fold(csum) ?: CSUM_MANGLED_0)."""
    c = (~csum_partial(b, start, end - start, 0)) & 0xFFFF
    st16(b, coff, c if c != 0 else CSUM_MANGLED_0)


@njit(cache=True, nogil=True, _nrt=False)
def _l2_skip(b, mac, flen):
    """Ethertype and network offset past up to two VLAN tags left in the frame."""
    nhoff = ETH.size
    proto = ld16(b, mac + ETH.h_proto) if flen >= ETH.size else 0
    for _ in range(2):
        if (proto == ETH_P_8021Q or proto == ETH_P_8021AD) and nhoff + VLAN.size <= flen:
            proto = ld16(b, mac + nhoff + VLAN.h_vlan_encapsulated_proto)
            nhoff += VLAN.size
    return proto, nhoff


@njit(cache=True, nogil=True, _nrt=False)
def gso_parse(b, mac, flen, gso_type, flags, csum_start, gso_size):
    """Decide whether the super-packet b[mac : mac + flen] can be segmented, and how.

    gso_type  virtio_net_hdr gso_type (ECN bit included); flags, csum_start, gso_size: the header's
    Returns (l4proto, is_ipv6, nhoff, thoff, hdrlen, nsegs), offsets from the mac header; l4proto 0
    when the type is not TCPv4/TCPv6/UDP_L4 or the headers do not hold together.
    """
    t = np.int64(gso_type) & (0xFF ^ VIRTIO_NET_HDR_GSO_ECN)
    l4proto = IPPROTO_TCP if t == VIRTIO_NET_HDR_GSO_TCPV4 or t == VIRTIO_NET_HDR_GSO_TCPV6 else 0
    if t == VIRTIO_NET_HDR_GSO_UDP_L4:
        l4proto = IPPROTO_UDP
    if l4proto == 0 or gso_size == 0:
        return GSO_FAIL
    proto, nhoff = _l2_skip(b, mac, flen)
    if proto == ETH_P_IP and t != VIRTIO_NET_HDR_GSO_TCPV6:
        vihl = np.int64(b[mac + nhoff]) if nhoff + IPH.size <= flen else 0
        if vihl >> 4 != 4 or (vihl & 0xF) < 5:
            return GSO_FAIL
        thoff = nhoff + (vihl & 0xF) * 4
        tot_len = ld16(b, mac + nhoff + IPH.tot_len)
        if np.int64(b[mac + nhoff + IPH.protocol]) != l4proto:
            return GSO_FAIL
        if ld16(b, mac + nhoff + IPH.frag_off) & (IP_MF | IP_OFFSET):  # a fragment is no super-packet
            return GSO_FAIL
        if tot_len != 0 and tot_len != flen - nhoff:  # 0: BIG TCP's over-64K length
            return GSO_FAIL
        is_ipv6 = 0
    elif proto == ETH_P_IPV6 and t != VIRTIO_NET_HDR_GSO_TCPV4:
        if nhoff + IP6H.size > flen or np.int64(b[mac + nhoff]) >> 4 != 6:
            return GSO_FAIL
        plen = ld16(b, mac + nhoff + IP6H.payload_len)
        if plen != 0 and plen != flen - nhoff - IP6H.size:
            return GSO_FAIL
        thoff = nhoff + IP6H.size
        if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM and csum_start > thoff:
            thoff = csum_start  # past extension headers, as the sender's stack placed it
        elif np.int64(b[mac + nhoff + IP6H.nexthdr]) != l4proto:
            return GSO_FAIL
        is_ipv6 = 1
    else:
        return GSO_FAIL
    if l4proto == IPPROTO_TCP:
        doff = np.int64(b[mac + thoff + TCPH.doff_res]) >> 4 if thoff + TCPH.size <= flen else 0
        if doff < 5:
            return GSO_FAIL
        hdrlen = thoff + doff * 4
    else:
        hdrlen = thoff + UDPH.size
    if hdrlen >= flen:
        return GSO_FAIL
    return l4proto, is_ipv6, nhoff, thoff, hdrlen, (flen - hdrlen + gso_size - 1) // gso_size


@njit(cache=True, nogil=True, _nrt=False)
def gso_segment(row, h, ins, info, k, gso_size, seglen):
    """Fix the headers of segment k, already copied to row[h : h + seglen] (its headers from the
    super-packet, ins = 4 when a VLAN tag was put back in front of them, then its payload).

    Linux: tcp_gso_segment (seq += mss per segment, FIN and PSH on the last only, CWR on the first
    only, full checksum), __udp_gso_segment (UDP length and checksum per datagram),
    inet_gso_segment (tot_len, id + k, header checksum), ipv6_gso_segment (payload_len).
    info: gso_parse's tuple; returns nothing (all checks ran in gso_parse).
    """
    l4proto, is_ipv6, nhoff, thoff, hdrlen, nsegs = info
    nh, th = h + ins + nhoff, h + ins + thoff
    l4len = seglen - ins - thoff
    if is_ipv6:
        st16(row, nh + IP6H.payload_len, seglen - ins - nhoff - IP6H.size)
    else:
        st16(row, nh + IPH.tot_len, seglen - ins - nhoff)
        st16(row, nh + IPH.id, (ld16(row, nh + IPH.id) + k) & 0xFFFF)
        st16(row, nh + IPH.check, ip_fast_csum(row, nh, thoff - nhoff))
    if l4proto == IPPROTO_TCP:
        st32(row, th + TCPH.seq, (ld32(row, th + TCPH.seq) + k * gso_size) & 0xFFFFFFFF)
        fl = np.int64(row[th + TCPH.flags])
        if k != nsegs - 1:
            fl &= ~(TCPHDR_FIN | TCPHDR_PSH)
        if k != 0:
            fl &= ~TCPHDR_CWR
        row[th + TCPH.flags] = fl
        st16(row, th + TCPH.check, l4_csum(row, nh, th, l4len, is_ipv6, IPPROTO_TCP, TCPH.check))
    else:
        st16(row, th + UDPH.len, l4len)
        st16(row, th + UDPH.check, l4_csum(row, nh, th, l4len, is_ipv6, IPPROTO_UDP, UDPH.check))


def skb_gso_segment(frame: np.ndarray, gso: int) -> list[np.ndarray]:
    """The segments of a GSO super-packet kept whole in a batch slot (frame: its bytes, Ethernet
    first; gso: its PacketBatch.gso word), each with full checksums, for a path that handles only
    ordinary packets (the classic path). [] when its headers do not hold together.

    Linux: net/core/gso.c › skb_gso_segment (validate_xmit_skb's software fallback), here through
    gso_parse and gso_segment, as the port's receive does.
    """
    gso_type, gso_size = (gso >> 16) & 0xFF, gso & 0xFFFF
    flen = frame.shape[0]
    info = gso_parse(frame, 0, flen, gso_type, VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, gso_size)
    if info[0] == 0:
        return []
    hdrlen, nsegs = info[4], info[5]
    segs = []
    for k in range(nsegs):
        off = hdrlen + k * gso_size
        plen = min(gso_size, flen - off)
        row = np.empty(hdrlen + plen, np.uint8)
        row[:hdrlen] = frame[:hdrlen]
        row[hdrlen:] = frame[off : off + plen]
        gso_segment(row, 0, 0, info, k, gso_size, hdrlen + plen)
        segs.append(row)
    return segs
