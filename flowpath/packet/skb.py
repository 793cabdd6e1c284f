"""The slow path's per-packet view: one parsed frame with its offsets and metadata.

Linux: include/linux/skbuff.h (struct sk_buff: network_header, transport_header, mark, _nfct) and
net/ipv4/ip_input.c › ip_rcv_core, net/ipv6/ip6_input.c › ipv6_rcv for the checks made on receive.
The frame lives in a writable uint8 array (a bytearray view), so the @njit checksum helpers in
`packet.csum` apply to it unchanged. Addresses are Python ints (IPv4 32-bit, IPv6 128-bit).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flowpath.packet import layout as L
from flowpath.packet.csum import csum_partial, ld16, ld32
from flowpath.packet.reason import Reason


@dataclass(slots=True, eq=False)
class SkBuff:
    """One frame on the slow path.

    buf      uint8[len]  the frame, Ethernet header first (writable)
    iif      input ifindex; `ts_ns` packet time
    l3proto  ETH_P_IP, ETH_P_IPV6, ETH_P_ARP or another ethertype
    vlan     the outer VLAN tag's VID, or -1 when untagged
    vlans    every tag, outer first, as (TPID, VID): 802.1Q, or an 802.1ad service tag then 802.1Q
    nhoff    offset of the network header; thoff of the transport header (-1: none, e.g. a later fragment)
    l4proto  IPPROTO_* of the transport header (after IPv6 extension headers), -1 when unknown
    frag     True for an IPv4/IPv6 fragment (first or later)
    saddr, daddr  network addresses as ints; sport, dport  ports (TCP/UDP) or ICMP echo id in both
    nexthdr_off   IPv6: offset from nhoff of the byte that names l4proto (IP6CB(skb)->nhoff)

    A datagram reassembled by nf_defrag also carries what its output needs to fragment it again:
    frag_max_size  the largest fragment received, IP header included (IPCB / IP6CB(skb)->frag_max_size)
    frag_list      data lengths of the fragments after the first, in offset order: the geometry of
                   skb_shinfo(skb)->frag_list, which ip_do_fragment / ip6_fragment reuse when it fits
    frag_pmtu      IPv4: the largest fragments had DF (IPCB(skb)->flags & IPSKB_FRAG_PMTU)
    ignore_df      skb->ignore_df: conntrack's reassembly may be fragmented again, DF or not
    frag_id        IPv6: the fragment header's identification the datagram came with
    """

    buf: np.ndarray
    iif: int
    ts_ns: int = 0
    l3proto: int = 0
    vlan: int = -1
    vlans: tuple[tuple[int, int], ...] = ()
    nhoff: int = L.ETH_HLEN
    thoff: int = -1
    l4proto: int = -1
    frag: bool = False
    saddr: int = 0
    daddr: int = 0
    sport: int = 0
    dport: int = 0
    mark: int = 0
    oif: int = 0
    ct: object = None
    ctinfo: int = 0
    meta: dict = field(default_factory=dict)
    nexthdr_off: int = 6  # offsetof(struct ipv6hdr, nexthdr)
    frag_max_size: int = 0
    frag_list: tuple[int, ...] = ()
    frag_pmtu: bool = False
    ignore_df: bool = False
    frag_id: int = 0
    data_at_mac: bool = False  # skb->data at the MAC header: a netdev egress hook's frame

    @property
    def len(self) -> int:
        return int(self.buf.shape[0])

    @property
    def is_ipv6(self) -> bool:
        return self.l3proto == L.ETH_P_IPV6

    @property
    def l3len(self) -> int:
        return self.len - self.nhoff

    @property
    def skb_len(self) -> int:
        """skb->len as nft sees it: from the network header (skb->data there at the inet hooks and at
        ingress), from the MAC header at egress (dev_queue_xmit), VLAN tags not counted (vlan_tci)."""
        return self.buf.shape[0] - self.nhoff + (L.ETH_HLEN if self.data_at_mac else 0)

    def tobytes(self) -> bytes:
        return self.buf.tobytes()


def frame_array(data: bytes | bytearray | memoryview) -> np.ndarray:
    """A writable uint8 array holding a copy of `data`."""
    return np.frombuffer(bytearray(data), np.uint8)


def skb_parse(buf: np.ndarray, iif: int, ts_ns: int = 0) -> SkBuff | Reason:
    """Parse Ethernet / 802.1Q / IPv4 / IPv6 / L4 headers; return the view or a drop Reason.

    Checks as ip_rcv_core / ipv6_rcv: version, header length, total length, IPv4 header checksum.
    The frame is trimmed to the IP total length (Ethernet padding dropped, like pskb_trim_rcsum).
    """
    n = buf.shape[0]
    if n < L.ETH_HLEN:
        return Reason.PKT_TOO_SMALL
    skb = SkBuff(buf=buf, iif=iif, ts_ns=ts_ns)
    off = L.ETH.h_proto
    proto = ld16(buf, off)
    off += 2
    while proto in (L.ETH_P_8021Q, L.ETH_P_8021AD):
        if n < off + L.VLAN.size:
            return Reason.PKT_TOO_SMALL
        if skb.vlan < 0:
            skb.vlan = ld16(buf, off) & 0x0FFF
        skb.vlans += ((proto, ld16(buf, off) & 0x0FFF),)
        proto = ld16(buf, off + 2)
        off += L.VLAN.size
    skb.l3proto, skb.nhoff = proto, off
    if proto == L.ETH_P_IP:
        return _parse_ipv4(skb)
    if proto == L.ETH_P_IPV6:
        return _parse_ipv6(skb)
    if proto == L.ETH_P_ARP and n < off + L.ARPH.size:
        return Reason.PKT_TOO_SMALL
    return skb


def skb_morph(skb: SkBuff, buf: np.ndarray, nhoff: int) -> Reason | None:
    """Make skb the IP packet at nhoff of buf, its headers parsed again as on receive; a drop Reason
    when they do not parse. Linux: skbuff.c › skb_morph, as ip_frag_reasm / nf_ct_frag6_reasm use it to
    turn the fragment in hand into the reassembled datagram."""
    skb.buf, skb.nhoff = buf, nhoff
    skb.thoff, skb.l4proto, skb.frag, skb.sport, skb.dport, skb.nexthdr_off = -1, -1, False, 0, 0, 6
    parsed = _parse_ipv6(skb) if skb.l3proto == L.ETH_P_IPV6 else _parse_ipv4(skb)
    return parsed if isinstance(parsed, Reason) else None


def _parse_ipv4(skb: SkBuff) -> SkBuff | Reason:
    b, nh = skb.buf, skb.nhoff
    if skb.len < nh + L.IPH.size:
        return Reason.PKT_TOO_SMALL
    vihl = int(b[nh + L.IPH.version_ihl])
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or ihl < L.IPH.size:
        return Reason.IP_INHDR
    tot_len = ld16(b, nh + L.IPH.tot_len)
    if skb.len < nh + tot_len:
        return Reason.PKT_TOO_SMALL
    if tot_len < ihl:
        return Reason.IP_INHDR
    if csum_partial(b, nh, ihl, 0) != 0xFFFF:  # ip_fast_csum over the header, field included, verifies
        return Reason.IP_CSUM
    skb.buf = b[: nh + tot_len]
    skb.saddr, skb.daddr = ld32(b, nh + L.IPH.saddr), ld32(b, nh + L.IPH.daddr)
    skb.l4proto = int(b[nh + L.IPH.protocol])
    frag_off = ld16(b, nh + L.IPH.frag_off)
    skb.frag = bool(frag_off & (L.IP_MF | L.IP_OFFSET))
    if frag_off & L.IP_OFFSET:
        return skb  # a later fragment has no transport header
    return _parse_l4(skb, nh + ihl)


def _parse_ipv6(skb: SkBuff) -> SkBuff | Reason:
    b, nh = skb.buf, skb.nhoff
    if skb.len < nh + L.IP6H.size:
        return Reason.PKT_TOO_SMALL
    if b[nh] >> 4 != 6:
        return Reason.IP_INHDR
    plen = ld16(b, nh + L.IP6H.payload_len)
    if skb.len < nh + L.IP6H.size + plen:
        return Reason.PKT_TOO_SMALL
    skb.buf = b[: nh + L.IP6H.size + plen]
    skb.saddr = int.from_bytes(b[nh + L.IP6H.saddr : nh + L.IP6H.saddr + 16].tobytes(), "big")
    skb.daddr = int.from_bytes(b[nh + L.IP6H.daddr : nh + L.IP6H.daddr + 16].tobytes(), "big")
    nexthdr, off = int(b[nh + L.IP6H.nexthdr]), nh + L.IP6H.size
    end = skb.len
    while nexthdr in L.IPV6_EXT_HDRS:  # ipv6_skip_exthdr
        if off + 8 > end:
            return Reason.PKT_TOO_SMALL
        skb.nexthdr_off = off - nh  # an extension header starts with the next one's number
        if nexthdr == L.IPPROTO_FRAGMENT:
            skb.frag = True
            later = ld16(b, off + L.FRAGH.frag_off) & 0xFFF8
            nexthdr, off = int(b[off]), off + L.FRAGH.size
            if later:
                skb.l4proto = nexthdr
                return skb
            continue
        hlen = (int(b[off + 1]) + 2) * 4 if nexthdr == L.IPPROTO_AH else (int(b[off + 1]) + 1) * 8
        nexthdr, off = int(b[off]), off + hlen
    if off > end:
        return Reason.PKT_TOO_SMALL
    skb.l4proto = nexthdr
    return _parse_l4(skb, off)


_L4_MIN = {L.IPPROTO_TCP: L.TCPH.size, L.IPPROTO_UDP: L.UDPH.size, L.IPPROTO_ICMP: L.ICMPH.size,
           L.IPPROTO_ICMPV6: L.ICMPH.size, L.IPPROTO_ESP: L.ESPH.size}  # fmt: skip


_ICMP_ECHO_TYPES = (L.ICMP_ECHO, L.ICMP_ECHOREPLY, L.ICMPV6_ECHO_REQUEST, L.ICMPV6_ECHO_REPLY)


def _parse_l4(skb: SkBuff, thoff: int) -> SkBuff | Reason:
    b, p = skb.buf, skb.l4proto
    skb.thoff = thoff
    need = _L4_MIN.get(p, 0)
    if skb.len < thoff + need:
        return Reason.PKT_TOO_SMALL
    if p in (L.IPPROTO_TCP, L.IPPROTO_UDP):
        skb.sport, skb.dport = ld16(b, thoff), ld16(b, thoff + 2)
        if p == L.IPPROTO_TCP and ((int(b[thoff + L.TCPH.doff_res]) >> 4) * 4 < L.TCPH.size):
            return Reason.PKT_TOO_SMALL
    elif p in (L.IPPROTO_ICMP, L.IPPROTO_ICMPV6) and int(b[thoff]) in _ICMP_ECHO_TYPES:
        skb.sport = skb.dport = ld16(b, thoff + L.ICMPH.id)
    return skb


def skb_reload_addrs(skb: SkBuff) -> None:
    """Re-read addresses and ports from the bytes after a stage mangled them (NAT)."""
    b, nh = skb.buf, skb.nhoff
    if skb.l3proto == L.ETH_P_IP:
        skb.saddr, skb.daddr = ld32(b, nh + L.IPH.saddr), ld32(b, nh + L.IPH.daddr)
    elif skb.l3proto == L.ETH_P_IPV6:
        skb.saddr = int.from_bytes(b[nh + L.IP6H.saddr : nh + L.IP6H.saddr + 16].tobytes(), "big")
        skb.daddr = int.from_bytes(b[nh + L.IP6H.daddr : nh + L.IP6H.daddr + 16].tobytes(), "big")
    else:
        return
    if skb.thoff >= 0 and skb.l4proto in (L.IPPROTO_TCP, L.IPPROTO_UDP):
        skb.sport, skb.dport = ld16(b, skb.thoff), ld16(b, skb.thoff + 2)
    elif (
        skb.thoff >= 0
        and skb.l4proto in (L.IPPROTO_ICMP, L.IPPROTO_ICMPV6)
        and int(b[skb.thoff]) in _ICMP_ECHO_TYPES
    ):
        skb.sport = skb.dport = ld16(b, skb.thoff + L.ICMPH.id)
