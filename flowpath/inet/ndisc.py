"""IPv6 Neighbour Discovery: Neighbour Solicitations and Advertisements (RFC 4861 §4.3, §4.4, §7).

Linux: net/ipv6/ndisc.c › ndisc_rcv (hop limit 255, code 0), ndisc_recv_ns (an NS for one of our
addresses: the sender's entry created or refreshed, STALE, as neigh_event_ns; a solicited NA back with
the target's link-layer address, override set, router set since the gateway forwards),
ndisc_recv_na (an existing entry updated: REACHABLE when solicited, else STALE; no override: a
different address is not taken), ndisc_solicit / ndisc_send_ns (to the solicited-node multicast
address, with the source link-layer address option), ndisc_send_na.
Deviation: Router Solicitations/Advertisements and Redirects are not handled (consumed as local
packets); ND messages leave without the OUTPUT and POSTROUTING hooks (Linux passes them through
NF_INET_LOCAL_OUT); no DAD, anycast or proxy ND.
"""

from __future__ import annotations

import struct

from flowpath.inet.ether import eth_header, link_header
from flowpath.inet.neighbour import neigh_update_xmit
from flowpath.net.neighbour import NUD_PROBE, NUD_REACHABLE, NUD_STALE, Neighbour
from flowpath.packet import layout as L
from flowpath.packet.csum import l4_csum, ld16, st16
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff, frame_array

ND_OPT_SOURCE_LL_ADDR = 1
ND_OPT_TARGET_LL_ADDR = 2
NDISC_HOP_LIMIT = 255
ND_ROUTER, ND_SOLICITED, ND_OVERRIDE = 0x80, 0x40, 0x20  # NA flags (first byte after the checksum)
IN6ADDR_LINKLOCAL_ALLNODES = 0xFF02 << 112 | 1
_SNMA = 0xFF02 << 112 | 0x1FF << 24  # ff02::1:ff00:0/104


def addrconf_addr_solict_mult(addr: int) -> int:
    """The solicited-node multicast address of addr (RFC 4291 §2.7.1)."""
    return _SNMA | (addr & 0xFFFFFF)


def ipv6_eth_mc_map(addr: int) -> bytes:
    """33:33 and the address's last 32 bits (RFC 2464 §7)."""
    return b"\x33\x33" + (addr & 0xFFFFFFFF).to_bytes(4, "big")


def ndisc_is_nd(skb: SkBuff) -> bool:
    """An NS or NA (the ND messages ndisc_rcv handles here)."""
    if skb.l4proto != L.IPPROTO_ICMPV6 or skb.thoff < 0 or skb.frag or skb.len < skb.thoff + 24:
        return False
    return int(skb.buf[skb.thoff]) in (L.NDISC_NEIGHBOUR_SOLICITATION, L.NDISC_NEIGHBOUR_ADVERTISEMENT)


def _nd_lladdr(b, off: int, end: int, want: int) -> bytes | None:
    """ndisc_parse_options: the link-layer address of the first `want` option, or None."""
    while off + 8 <= end:
        kind, units = int(b[off]), int(b[off + 1])
        if units == 0:
            return None  # RFC 4861 §4.6: length 0 is invalid
        if kind == want:
            return b[off + 2 : off + 8].tobytes()
        off += units * 8
    return None


def ndisc_rcv(net, q, skb: SkBuff) -> Reason:
    """ndisc_rcv: the validity checks of RFC 4861 §7.1, then NS or NA."""
    b, th = skb.buf, skb.thoff
    icmplen = skb.len - th
    if int(b[skb.nhoff + L.IP6H.hop_limit]) != NDISC_HOP_LIMIT or int(b[th + 1]) != 0:
        return Reason.IPV6_NDISC_INVALID
    if l4_csum(b, skb.nhoff, th, icmplen, True, L.IPPROTO_ICMPV6, 2) != ld16(b, th + 2):
        return Reason.ICMP_CSUM
    target = int.from_bytes(b[th + 8 : th + 24].tobytes(), "big")
    if target >> 120 == 0xFF:
        return Reason.IPV6_NDISC_INVALID
    if int(b[th]) == L.NDISC_NEIGHBOUR_SOLICITATION:
        return ndisc_recv_ns(net, q, skb, target)
    return ndisc_recv_na(net, q, skb, target)


def ndisc_recv_ns(net, q, skb: SkBuff, target: int) -> Reason:
    b, th = skb.buf, skb.thoff
    sllao = _nd_lladdr(b, th + 24, skb.len, ND_OPT_SOURCE_LL_ADDR)
    dad = skb.saddr == 0
    if dad and sllao is not None:
        return Reason.IPV6_NDISC_INVALID  # RFC 4861 §7.1.1
    if not any(ifa.address == target for ifa in net.addrs(skb.iif, 6)):
        return Reason.LOCAL_IN  # not ours: no proxy ND
    if dad:  # another node's duplicate address detection: defend, to all nodes (ndisc_send_na)
        ndisc_send_na(net, q, skb.iif, IN6ADDR_LINKLOCAL_ALLNODES, ipv6_eth_mc_map(IN6ADDR_LINKLOCAL_ALLNODES),
                      target, ND_ROUTER | ND_OVERRIDE)  # fmt: skip
        return Reason.LOCAL_IN
    if sllao is not None:
        n = net.neigh.neigh_create(6, skb.saddr, skb.iif)
        neigh_update_xmit(net, q, n, sllao, NUD_STALE, skb.ts_ns)
    dst_mac = sllao if sllao is not None else b[6:12].tobytes()
    ndisc_send_na(net, q, skb.iif, skb.saddr, dst_mac, target, ND_ROUTER | ND_SOLICITED | ND_OVERRIDE)
    return Reason.LOCAL_IN


def ndisc_recv_na(net, q, skb: SkBuff, target: int) -> Reason:
    b, th = skb.buf, skb.thoff
    flags = int(b[th + 4])
    if flags & ND_SOLICITED and skb.daddr >> 120 == 0xFF:
        return Reason.IPV6_NDISC_INVALID  # RFC 4861 §7.1.2
    tllao = _nd_lladdr(b, th + 24, skb.len, ND_OPT_TARGET_LL_ADDR)
    n = net.neigh.neigh_lookup(6, target, skb.iif)
    if n is not None:
        state = NUD_REACHABLE if flags & ND_SOLICITED else NUD_STALE
        neigh_update_xmit(net, q, n, tllao, state, skb.ts_ns, override=bool(flags & ND_OVERRIDE))
    return Reason.LOCAL_IN


def _ndisc_send(net, q, ifindex: int, dst_mac: bytes, saddr: int, daddr: int, icmp: bytes) -> None:
    """ndisc_send_skb: an ICMPv6 ND message, hop limit 255, checksum over the pseudo-header; counted as
    generated (or as a generated drop)."""
    ip6h = struct.pack(">IHBB", 0x60000000, len(icmp), L.IPPROTO_ICMPV6, NDISC_HOP_LIMIT)
    ip6h += saddr.to_bytes(16, "big") + daddr.to_bytes(16, "big")
    link = net.links[ifindex]
    buf = frame_array(eth_header(dst_mac, link.address, L.ETH_P_IPV6) + ip6h + icmp)
    nh = L.ETH_HLEN
    th = nh + L.IP6H.size
    st16(buf, th + 2, l4_csum(buf, nh, th, len(icmp), True, L.IPPROTO_ICMPV6, 2))
    q.xmit_generated(net, link, link_header(net, link, dst_mac, L.ETH_P_IPV6) + buf[nh:].tobytes())


def ndisc_send_na(net, q, ifindex: int, daddr: int, dst_mac: bytes, target: int, flags: int) -> None:
    """ndisc_send_na: an advertisement of our `target`, from it, with the target link-layer option."""
    link = net.links[ifindex]
    icmp = struct.pack(">BBHI", L.NDISC_NEIGHBOUR_ADVERTISEMENT, 0, 0, flags << 24) + target.to_bytes(
        16, "big"
    )
    icmp += struct.pack(">BB", ND_OPT_TARGET_LL_ADDR, 1) + link.address
    _ndisc_send(net, q, ifindex, dst_mac, target, daddr, icmp)


def ndisc_solicit(net, q, n: Neighbour, saddr: int | None) -> bool:
    """ndisc_solicit / ndisc_send_ns: a solicitation for n's address, to its solicited-node multicast
    address (to the address itself, unicast, when PROBE), with the source link-layer option, from
    `saddr` when it is ours, else the device's address towards the target (ipv6_dev_get_saddr).
    False when the device has no IPv6 address."""
    if saddr is None or not net.is_local(6, saddr):
        saddr = net.inet_select_addr(n.ifindex, 6, n.primary_key)
        if saddr is None:
            return False
    link = net.links[n.ifindex]
    if n.nud_state == NUD_PROBE:
        daddr, dst_mac = n.primary_key, n.ha
    else:
        daddr = addrconf_addr_solict_mult(n.primary_key)
        dst_mac = ipv6_eth_mc_map(daddr)
    icmp = struct.pack(">BBHI", L.NDISC_NEIGHBOUR_SOLICITATION, 0, 0, 0) + n.primary_key.to_bytes(16, "big")
    icmp += struct.pack(">BB", ND_OPT_SOURCE_LL_ADDR, 1) + link.address
    _ndisc_send(net, q, n.ifindex, dst_mac, saddr, daddr, icmp)
    return True
