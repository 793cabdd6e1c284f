"""The classic path's common case, compiled over a poll's batch: forwarding an IPv4/IPv6 TCP or UDP
packet or an ICMP/ICMPv6 query (echo...), of a confirmed connection or opening a new one, the whole
way, without Python.

No Linux counterpart as a whole: it is Linux's classic receive path for one skb
(ip_rcv › PREROUTING (conntrack, DNAT) › ip_route_input › ip_forward › FORWARD › ip_output ›
POSTROUTING (SNAT, confirm) › neigh_output), with every stage a compiled function that the Python
classic path uses as well: conntrack lookup, row allocation, confirmation and tracking
(nf_conntrack_table, conntrack_proto_tcp, conntrack_proto_icmp, ct_row), the nft VM (nft_vm), NAT's binding and rewrite
(nf_nat_core, nat_manip), the FIB and neighbour tables (fib_table, neigh_table).

A packet the lane cannot finish by itself is *punted*: left, untouched, to the Python classic path
(flowpath.inet.dev), with the reason counted (flowpath.packet.reason's lane punts). Its checks come
first, and what it writes before a later check can still punt (the header bytes, the conntrack row,
NAT's PRNG, a new connection's row) is restored or freed, so a punted packet is exactly the packet
that arrived and the tables exactly what they were. A connection whose packet was punted is tainted
for the rest of the batch (its later packets are punted too), so that each connection's packets are
tracked in order while the lane runs ahead of the Python path; and after any punt the batch opens no
new connection (the punted packet, run later, might have changed what the new one finds: a port
freed or taken).

A new connection's entry is made, bound (the nat chains, or the null binding) and confirmed at the
end of POSTROUTING, the last thing before the transmit: the neighbour is looked up before
POSTROUTING so that nothing can punt a confirmed entry. A `flow add` that FORWARD asked for is done
after POSTROUTING too (classic_lane_offload.py), as the Python path does it once the packet is sent.

The batch loop runs a prefetch pipeline a few packets ahead of the packet it processes (the
conntrack index slots, by-source bucket and rows a packet will touch: classic_lane_prefetch.py),
so that their cache misses overlap instead of coming one after another; it changes no result.

Punted today: ICMP errors (RELATED: the Python path looks up the connection inside and translates
it), ICMPv6 neighbour discovery and MLD (untracked), ICMP types without a reply type, fragments,
options, extension headers, VLAN tags, packets to or from the gateway itself, anything an nft rule
the VM cannot run sees (log, limit, reject...), NAT bindings other than SNAT, DNAT and IPv4
masquerade to a device's one address, a neighbour that is not resolved or whose timer is due, a
route through a tunnel, IPsec policies, the GC's time, new connections and flow adds with several
workers, a flow add into one of several flowtables or through a tunnel or VLAN.
"""


from __future__ import annotations

import numpy as np
from numba import njit

from flowpath.flowtable.ip import FLOW_FORWARD, SLOW_L4PROTO, nf_flow_tuple_ip, nf_flow_tuple_ipv6
from flowpath.flowtable.key import K_DADDR, K_ENCAP, K_PORTS, K_SADDR, ports_dst, ports_src
from flowpath.inet.classic_lane_new import lane_confirm, lane_ct_new, lane_nat_bind
from flowpath.inet.classic_lane_nft import lane_chain
from flowpath.inet.classic_lane_offload import OFFLOAD_DONE, OFFLOAD_PUNT, lane_flow_offload
from flowpath.inet.classic_lane_prefetch import PF_DISTANCE, lane_prefetch_step
from flowpath.inet.classic_lane_state import (
    CFG_BATCH,
    CFG_NEW_OK,
    CFG_NEXT_GC_NS,
    CFG_NR_CPUS,
    CFG_PUNTED,
    CNT_CT_DROP,
    CNT_DONE,
    CNT_FOUND,
    CNT_INSERT,
    CNT_LAST_TS,
    CNT_OFFLOADED,
    CNT_PUNTED,
    CNT_RESUME,
    CNT_SENT,
    DROP_BASE,
    ENTRY_CHAIN,
    ENTRY_CONFIRM,
    ENTRY_CONNTRACK,
    ENTRY_NAT,
    LANE_ICMP,
    LANE_OK,
    LANE_YIELD,
    PS_CT_DROP,
    PS_CTINFO,
    PS_ED,
    PS_END,
    PS_FLOW,
    PS_FOUND,
    PS_IIF,
    PS_INSERT,
    PS_L3,
    PS_L4,
    PS_NACC,
    PS_NEW,
    PS_NEW_OK,
    PS_NOW,
    PS_NR_CPUS,
    PS_OFFLOADED,
    PS_OIF,
    PS_PRNG,
    PS_RTMTU,
    PS_THOFF,
    lane_copy,
    lane_fill,
)
from flowpath.inet.ip_input import ip_route_input_martian, ipv6_rcv_martian
from flowpath.net.fib import RTN_UNICAST
from flowpath.net.fib_table import (
    RT_FLAGS,
    RT_GW,
    RT_OIF,
    RT_TYPE,
    RTF_GATEWAY,
    fib_lookup4,
    fib_lookup6,
    fib_result_mtu,
)
from flowpath.net.link import LK_ADDR, link_lane_ok
from flowpath.net.neigh_table import NB_LLADDR, neigh_lookup, neigh_output_ok
from flowpath.netfilter import constants as C
from flowpath.netfilter.conntrack_proto import udp_error_pkt
from flowpath.netfilter.conntrack_proto_icmp import (
    ICMP_BAD_CSUM,
    ICMP_QUERY,
    icmp_error_pkt,
    nf_conntrack_icmp_packet,
)
from flowpath.netfilter.conntrack_proto_tcp import tcp_conntrack_packet
from flowpath.netfilter.conntrack_proto_tcp_window import tcp_checksum_bad
from flowpath.netfilter.ct_layout import CT_STATUS
from flowpath.netfilter.ct_row import nf_conntrack_udp_packet
from flowpath.netfilter.nat_manip import nf_nat_l3_manip_pkt
from flowpath.netfilter.nf_conntrack_table import (
    NF_CT_NOT_FOUND,
    nf_ct_find,
    nf_ct_pkt_key,
    nf_ct_row_free,
)
from flowpath.netfilter.nft_set_hash import nft_dyn_undo
from flowpath.netfilter.nft_vm import (
    OUT_LEN,
    OUT_NCNT,
    PROG_DYN,
    nft_vm_commit,
)
from flowpath.packet import layout as L
from flowpath.packet.counters import TX_BYTES, TX_PACKETS
from flowpath.packet.csum import csum_partial, ip_decrease_ttl, ld16, ld32
from flowpath.packet.reason import (
    PUNT_CSUM,
    PUNT_CT_STATE,
    PUNT_GC,
    PUNT_HEADER,
    PUNT_ICMP,
    PUNT_L2,
    PUNT_MTU,
    PUNT_NEIGH,
    PUNT_NO_CT,
    PUNT_OFFLOAD,
    PUNT_ROUTE,
    Reason,
)

_TX = int(Reason.TX)
_CT_FULL = int(Reason.CT_TABLE_FULL)
_TX_PACKETS, _TX_BYTES = TX_PACKETS, TX_BYTES
_TCP, _UDP, _ICMP, _ICMPV6 = L.IPPROTO_TCP, L.IPPROTO_UDP, L.IPPROTO_ICMP, L.IPPROTO_ICMPV6
_PRE, _FWD, _POST = C.NF_INET_PRE_ROUTING, C.NF_INET_FORWARD, C.NF_INET_POST_ROUTING


@njit(cache=True, nogil=True, inline="always")
def lane_parse(b, h, n, k):
    """The header checks of ip_rcv / ipv6_rcv and conntrack's tuple, for what the lane takes: returns
    (punt or LANE_OK, l3 4|6, l4proto, thoff, l3len) with the tuple in k (the conntrack key layout:
    the flowtable's, zone 0 in K_IIFIDX). l3len is the IP length (Ethernet padding trimmed)."""
    nhoff = h + L.ETH_HLEN
    etype = ld16(b, h + 12)
    if etype == L.ETH_P_IP:
        if nf_flow_tuple_ip(b, nhoff, n - L.ETH_HLEN, 0, k, 0) != FLOW_FORWARD:
            return PUNT_HEADER, 4, 0, 0, 0
        if csum_partial(b, nhoff, L.IPH.size, 0) != 0xFFFF:  # the header verifies (skb_parse's check)
            return PUNT_CSUM, 4, 0, 0, 0
        l3, l3len, thoff = 4, ld16(b, nhoff + L.IPH.tot_len), nhoff + L.IPH.size
        l4proto = int(b[nhoff + L.IPH.protocol])
    elif etype == L.ETH_P_IPV6:
        if nf_flow_tuple_ipv6(b, nhoff, n - L.ETH_HLEN, 0, k, 0) != FLOW_FORWARD:
            return PUNT_HEADER, 6, 0, 0, 0
        l3, l3len, thoff = 6, L.IP6H.size + ld16(b, nhoff + L.IP6H.payload_len), nhoff + L.IP6H.size
        l4proto = int(b[nhoff + L.IP6H.nexthdr])
    else:
        return PUNT_L2, 0, 0, 0, 0
    for w in range(11, 16):
        k[w] = 0
    if l4proto == _UDP:
        if udp_error_pkt(b, nhoff, thoff, l3len, True):
            return PUNT_CSUM, l3, 0, 0, 0  # conntrack's udp_error: the Python path says INVALID
    elif tcp_checksum_bad(b, nhoff, thoff, l3len):
        return PUNT_CSUM, l3, 0, 0, 0
    return LANE_OK, l3, l4proto, thoff, l3len


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def lane_is_icmp(b):
    """Does frame b carry ICMP over IPv4 or ICMPv6 (right after the fixed header)? Asked of a packet
    lane_parse refused, to give it to the ICMP copy of the lane (lane_one_icmp)."""
    etype = ld16(b, 12)
    if etype == L.ETH_P_IP:
        return b.shape[0] > L.ETH_HLEN + L.IPH.protocol and b[L.ETH_HLEN + L.IPH.protocol] == _ICMP
    return etype == L.ETH_P_IPV6 and b.shape[0] > L.ETH_HLEN + L.IP6H.nexthdr and b[L.ETH_HLEN + L.IP6H.nexthdr] == _ICMPV6


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def lane_parse_icmp_frame(b, n, k):
    """lane_parse for an ICMP or ICMPv6 frame of n bytes: ip_rcv's checks as nf_flow_tuple_ip makes
    them (it refuses the protocol only), then lane_parse_icmp's."""
    nhoff = L.ETH_HLEN
    if ld16(b, 12) == L.ETH_P_IP:
        if nf_flow_tuple_ip(b, nhoff, n - L.ETH_HLEN, 0, k, 0) != SLOW_L4PROTO:
            return PUNT_HEADER, 4, 0, 0, 0
        return lane_parse_icmp(b, nhoff, n - L.ETH_HLEN, 4, k)
    if nf_flow_tuple_ipv6(b, nhoff, n - L.ETH_HLEN, 0, k, 0) != SLOW_L4PROTO:
        return PUNT_HEADER, 6, 0, 0, 0
    return lane_parse_icmp(b, nhoff, n - L.ETH_HLEN, 6, k)


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def lane_parse_icmp(b, nhoff, l3max, l3, k):
    """lane_parse for an IPv4 ICMP or IPv6 ICMPv6 packet (nf_flow_tuple_ip's l4proto check refused
    it; its version, length, fragment and option checks passed): the rest of ip_rcv's checks, then
    conntrack's icmp_error / icmpv6_error at PRE_ROUTING (checksum, type; conntrack_proto_icmp.py)
    and the tuple (nf_ct_pkt_key, the Python path's). Only queries stay: an error (RELATED),
    neighbour discovery and MLD (UNTRACKED) and an invalid type are the Python path's."""
    if l3 == 4:
        l4, thoff, l3len = _ICMP, nhoff + L.IPH.size, ld16(b, nhoff + L.IPH.tot_len)
        hop = b[nhoff + L.IPH.ttl]
    else:
        l4, thoff, l3len = _ICMPV6, nhoff + L.IP6H.size, L.IP6H.size + ld16(b, nhoff + L.IP6H.payload_len)
        hop = b[nhoff + L.IP6H.hop_limit]
    if l3len > l3max or l3len < thoff - nhoff + L.ICMPH.size or hop <= 1:
        return PUNT_HEADER, l3, 0, 0, 0
    if l3 == 4 and csum_partial(b, nhoff, L.IPH.size, 0) != 0xFFFF:
        return PUNT_CSUM, l3, 0, 0, 0
    kind = icmp_error_pkt(b, nhoff, thoff, l3len, l4, True)
    if kind == ICMP_BAD_CSUM:
        return PUNT_CSUM, l3, 0, 0, 0  # the Python path says INVALID
    if kind != ICMP_QUERY:
        return PUNT_ICMP, l3, 0, 0, 0
    nf_ct_pkt_key(k, b, nhoff, thoff, l3, l4)
    return LANE_OK, l3, l4, thoff, l3len


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def lane_martian(b, nhoff, l3):
    """ip_route_input_slow's martians and ip6_rcv_core's address checks (the Python path's functions
    of inet/ip_input.py), and a multicast or broadcast destination: the Python path decides those."""
    if l3 == 4:
        d = ld32(b, nhoff + L.IPH.daddr)
        return ip_route_input_martian(ld32(b, nhoff + L.IPH.saddr), d) or d >> 28 == 0xE or d == 0xFFFFFFFF
    return ipv6_rcv_martian(b, nhoff) or b[nhoff + L.IP6H.daddr] == 0xFF


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def lane_words_addr(key, row, off, addr):
    """The address key[row, off : off + 4] (wire-order words) as 16 network-order bytes."""
    for w in range(4):
        v = np.int64(key[row, off + w])
        addr[4 * w] = (v >> 24) & 0xFF
        addr[4 * w + 1] = (v >> 16) & 0xFF
        addr[4 * w + 2] = (v >> 8) & 0xFF
        addr[4 * w + 3] = v & 0xFF


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def nf_nat_packet_row(b, end, nhoff, thoff, l3, l4proto, key, ed, status, maniptype, addr):
    """Linux: nf_nat_packet (+ nf_nat_manip_pkt) for the packet of direction ed & 1 of the confirmed
    entry ed >> 1: the manip of this type is done when its status bit (inverted for replies) is set;
    the target is the inverse of the other direction's tuple (key row ed ^ 1)."""
    dir = ed & 1
    bit = C.IPS_SRC_NAT if maniptype == C.NF_NAT_MANIP_SRC else C.IPS_DST_NAT
    if dir == C.IP_CT_DIR_REPLY:
        bit ^= C.IPS_NAT_MASK
    if not status & bit:
        return True
    other = ed ^ 1
    if maniptype == C.NF_NAT_MANIP_SRC:  # target.src = other.dst, target.sport = other.dport
        lane_words_addr(key, other, K_DADDR, addr)
        port = np.int64(ports_dst(np.int64(key[other, K_PORTS])))
    else:
        lane_words_addr(key, other, K_SADDR, addr)
        port = np.int64(ports_src(np.int64(key[other, K_PORTS])))
    return nf_nat_l3_manip_pkt(b, end, nhoff, thoff, l3, l4proto, addr, port, maniptype)





@njit(cache=True, nogil=True, _nrt=False, inline="always")
def lane_conntrack(f, ps, ct, scr, icmp):
    """nf_conntrack_in for a packet the lane takes: its confirmed entry or a punt (NO_CT), then the
    tracker on its row (saved first in scr's hsnap, for a later punt to restore)."""
    ctv, hot, taint, gen, tcp_params = ct[0], ct[1], ct[3], ct[4][0], ct[5]
    k, hsnap = scr[0], scr[2]
    now = ps[PS_NOW]
    ed = nf_ct_find(ctv, k, now)
    if ed == NF_CT_NOT_FOUND and ps[PS_NEW_OK]:
        row = lane_ct_new(k, ps, ct)
        if row == -2:
            ps[PS_CT_DROP] = 1
            return DROP_BASE - _CT_FULL
        if row == -3:
            return PUNT_ICMP  # no reply type: no entry (the Python path says INVALID)
        if row == -4:
            return LANE_YIELD  # no free row until Python frees those its views held
        if row < 0:
            return PUNT_NO_CT
        ed, dir, ctinfo = 2 * row, C.IP_CT_DIR_ORIGINAL, C.IP_CT_NEW
    elif ed < 0:
        return PUNT_NO_CT  # an expired entry in the way (the Python path removes it), or no new ones now
    else:
        row, dir = ed >> 1, ed & 1
        status = hot[row, CT_STATUS]
        if taint[row] == gen or status & (C.IPS_DYING | C.IPS_EXPECTED | C.IPS_UNTRACKED):
            return PUNT_CT_STATE
        if dir == C.IP_CT_DIR_REPLY:
            ctinfo = C.IP_CT_ESTABLISHED_REPLY
        elif status & C.IPS_SEEN_REPLY:
            ctinfo = C.IP_CT_ESTABLISHED
        else:
            ctinfo = C.IP_CT_NEW
        lane_copy(hsnap, hot[row], hsnap.shape[0])
        ps[PS_FOUND] = 1  # conntrack's "found" statistic, counted once the packet is done
    ps[PS_ED], ps[PS_CTINFO] = ed, ctinfo
    end = ps[PS_END]
    if ps[PS_L4] == _TCP:
        ret = tcp_conntrack_packet(hot[row], f, L.ETH_HLEN, ps[PS_THOFF], end - L.ETH_HLEN, dir, ctinfo, now,
                                   tcp_params)  # fmt: skip
    elif not icmp:
        ret = nf_conntrack_udp_packet(hot[row], dir, now, end - L.ETH_HLEN)
    else:
        orig_type = np.int64(ct[2][2 * row, K_ENCAP]) >> 8  # the original tuple's ICMP type
        ret = nf_conntrack_icmp_packet(hot[row], dir, now, end - L.ETH_HLEN, ps[PS_L4], orig_type)
    if ret <= 0 or hot[row, CT_STATUS] & C.IPS_DYING:
        return PUNT_CT_STATE  # invalid, a SYN reopening, a RST killing it: the Python path decides
    if ctinfo == C.IP_CT_ESTABLISHED_REPLY:
        hot[row, CT_STATUS] |= C.IPS_SEEN_REPLY
    return LANE_OK


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def lane_hook(f, hook, ps, ents, nft, ct, rtv, scr, icmp):
    """One hook's entries in priority order (nf_hook_slow): chains through the VM, conntrack, NAT
    (binding a new connection, then the rewrite), confirming a new connection; defrag has nothing to
    do for the lane's packets. LANE_OK, a punt, or DROP_BASE - reason."""
    hookv, hookn = ents[0], ents[1]
    nfp = 0 if ps[PS_L3] == 4 else 1
    for e in range(hookn[nfp, hook]):
        kind = hookv[nfp, hook, e, 0]
        r = LANE_OK
        if kind == ENTRY_CHAIN:
            r = lane_chain(f, hookv[nfp, hook, e, 1], hook, ps, nft, ct, scr, False)
        elif kind == ENTRY_CONNTRACK:
            r = lane_conntrack(f, ps, ct, scr, icmp)
        elif kind == ENTRY_NAT and ps[PS_ED] >= 0:
            ed = ps[PS_ED]
            mtype = C.NF_NAT_MANIP_DST if hook == _PRE else C.NF_NAT_MANIP_SRC
            done = C.IPS_DST_NAT_DONE if hook == _PRE else C.IPS_SRC_NAT_DONE
            if ps[PS_NEW] >= 0 and not ct[1][ed >> 1, CT_STATUS] & done:
                r = lane_nat_bind(f, hook, mtype, ps, ents, nft, ct, rtv, scr)
            if r == LANE_OK and not nf_nat_packet_row(f, ps[PS_END], L.ETH_HLEN, ps[PS_THOFF], ps[PS_L3], ps[PS_L4],
                                                      ct[2], ed, ct[1][ed >> 1, CT_STATUS], mtype, scr[5]):  # fmt: skip
                r = PUNT_HEADER
        elif kind == ENTRY_CONFIRM and ps[PS_NEW] >= 0:
            r = lane_confirm(ps, ct)
        if r != LANE_OK:
            return r
    return LANE_OK


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def lane_route(f, ps, rtv):
    """ip_route_input's forwarding decision and ip_forward's MTU check on the (DNATed) destination:
    the route row, or -1 - punt. A local, reject or missing route, a route through a device the lane
    does not transmit on (tunnel, VLAN, loopback), or a packet over the MTU goes to the Python path."""
    fv, lk = rtv[0], rtv[1]
    if ps[PS_L3] == 4:
        r = fib_lookup4(fv, ld32(f, L.ETH_HLEN + L.IPH.daddr))
        rt = fv[0][3]
    else:
        o = L.ETH_HLEN + L.IP6H.daddr
        r = fib_lookup6(fv, ld32(f, o), ld32(f, o + 4), ld32(f, o + 8), ld32(f, o + 12))
        rt = fv[1][5]
    if r < 0 or rt[r, RT_TYPE] != RTN_UNICAST:
        return -1 - PUNT_ROUTE
    oif = rt[r, RT_OIF]
    if oif >= lk.shape[0] or not link_lane_ok(lk, oif):
        return -1 - PUNT_ROUTE
    if ps[PS_END] - L.ETH_HLEN > fib_result_mtu(rt, r, lk):
        return -1 - PUNT_MTU
    ps[PS_OIF] = oif
    return r


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def lane_rt_mtu(f, ps, r, rtv):
    """What `rt mtu` reads at FORWARD and POSTROUTING (inet/ip_output.py › rt_mtu): the route's MTU,
    or the smaller of it and the route back's when the ruleset has an `rt` expression."""
    fv, lk, uses_rt = rtv[0], rtv[1], rtv[3]
    rt = fv[0][3] if ps[PS_L3] == 4 else fv[1][5]
    mtu = fib_result_mtu(rt, r, lk)
    if not uses_rt:
        return mtu
    if ps[PS_L3] == 4:
        back = fib_lookup4(fv, ld32(f, L.ETH_HLEN + L.IPH.saddr))
    else:
        o = L.ETH_HLEN + L.IP6H.saddr
        back = fib_lookup6(fv, ld32(f, o), ld32(f, o + 4), ld32(f, o + 8), ld32(f, o + 12))
    if back >= 0 and rt[back, RT_TYPE] == RTN_UNICAST:
        return min(mtu, fib_result_mtu(rt, back, lk))
    return mtu


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def lane_neigh_lookup(f, ps, r, rtv):
    """neigh_resolve_output's entry for a next hop that can transmit without Python: found, in a
    state neigh_event_send passes as is (CONNECTED, DELAY, PROBE), its timer not due; -1: punt (the
    Python path creates, solicits or moves the entry). Asked before POSTROUTING, whose confirm of
    a new connection must be the last thing the lane does before it transmits."""
    fv, nv = rtv[0], rtv[2]
    oif = ps[PS_OIF]
    if ps[PS_L3] == 4:
        rt = fv[0][3]
        if rt[r, RT_FLAGS] & RTF_GATEWAY:
            w0, w1, w2, w3 = rt[r, RT_GW], 0, 0, 0
        else:
            w0, w1, w2, w3 = ld32(f, L.ETH_HLEN + L.IPH.daddr), 0, 0, 0
        n = neigh_lookup(nv, 4, oif, w0, w1, w2, w3)
    else:
        rt = fv[1][5]
        if rt[r, RT_FLAGS] & RTF_GATEWAY:
            w0, w1, w2, w3 = rt[r, RT_GW], rt[r, RT_GW + 1], rt[r, RT_GW + 2], rt[r, RT_GW + 3]
        else:
            o = L.ETH_HLEN + L.IP6H.daddr
            w0, w1, w2, w3 = ld32(f, o), ld32(f, o + 4), ld32(f, o + 8), ld32(f, o + 12)
        n = neigh_lookup(nv, 6, oif, w0, w1, w2, w3)
    if n < 0 or not neigh_output_ok(nv[2], n, ps[PS_NOW]):
        return -1
    return n


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def lane_neigh_output(f, ps, n, rtv):
    """neigh_output with entry n: the Ethernet addresses."""
    ha, sa = rtv[2][2][n, NB_LLADDR], rtv[1][ps[PS_OIF], LK_ADDR]
    for j in range(6):
        f[j] = (ha >> (40 - 8 * j)) & 0xFF
        f[6 + j] = (sa >> (40 - 8 * j)) & 0xFF


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def lane_forward(f, ps, ents, nft, ct, rtv, scr, icmp):
    """One packet from PREROUTING to the wire (ip_rcv_finish › ip_forward › ip_output ›
    neigh_output): LANE_OK (f is the frame to send, out of ps[PS_OIF]), a punt, or DROP_BASE - reason."""
    r = lane_hook(f, _PRE, ps, ents, nft, ct, rtv, scr, icmp)
    if r != LANE_OK:
        return r
    if lane_martian(f, L.ETH_HLEN, ps[PS_L3]):
        return PUNT_ROUTE
    rt = lane_route(f, ps, rtv)
    if rt < 0:
        return -1 - rt
    ps[PS_RTMTU] = lane_rt_mtu(f, ps, rt, rtv)
    if ps[PS_L3] == 4:
        ip_decrease_ttl(f, L.ETH_HLEN)
    else:
        f[L.ETH_HLEN + L.IP6H.hop_limit] -= 1
    r = lane_hook(f, _FWD, ps, ents, nft, ct, rtv, scr, icmp)
    if r != LANE_OK:
        return r
    n = lane_neigh_lookup(f, ps, rt, rtv)
    if n < 0:
        return PUNT_NEIGH
    r = lane_hook(f, _POST, ps, ents, nft, ct, rtv, scr, icmp)
    if r != LANE_OK:
        return r
    if ps[PS_FLOW]:  # ip_forward's q.offload: once the packet is on its way
        o = lane_flow_offload(ps[PS_ED] >> 1, ps[PS_L3], ps[PS_NOW], ct, rtv, nft[3], ps[PS_ED] & 1, rt, n)
        if o == OFFLOAD_PUNT:
            return PUNT_OFFLOAD
        ps[PS_OFFLOADED] = o == OFFLOAD_DONE
    lane_neigh_output(f, ps, n, rtv)
    return LANE_OK


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def lane_taint(ps, ct, scr):
    """A packet is punted: its connection's later packets in this batch follow it to the Python
    path, in order. Its row (found before or now) is marked with this batch's generation."""
    ctv, taint, gen = ct[0], ct[3], ct[4][0]
    ed = ps[PS_ED]
    if ps[PS_NEW] >= 0:
        return  # a connection the packet opened: freed; later packets will not find it
    if ed < 0:
        ed = nf_ct_find(ctv, scr[0], ps[PS_NOW])
    if ed >= 0:
        taint[ed >> 1] = gen


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def lane_one(pk, i, ents, nft, ct, rtv, cfg, scr, icmp):
    """One packet through the lane: LANE_OK (forwarded or dropped: its verdict says), or a punt with
    the packet's bytes, its conntrack row and NAT's PRNG as they were (a connection it opened is
    freed, as Linux frees an unconfirmed entry with its skb). icmp, a constant: the copy for ICMP
    (lane_one_icmp), which the TCP/UDP copy hands ICMP packets to with LANE_ICMP. Apart, so that
    neither the ICMP parse nor its tracker weighs on the TCP/UDP copy (in it, they cost a fifth)."""
    data, head, length, iif, oif, verdict, ts_ns, gso, encap = pk
    k, snap, hsnap, ps, acc = scr[0], scr[1], scr[2], scr[9], scr[6]
    lk = rtv[1]
    h, n = np.int64(head[i]), np.int64(length[i])
    f = data[i, h:]
    ifx = np.int64(iif[i])
    if gso[i] or encap[i] or ifx >= lk.shape[0] or not link_lane_ok(lk, ifx) or n < L.ETH_HLEN:
        return PUNT_L2
    if ((ld16(f, 0) << 32) | ld32(f, 2)) != lk[ifx, LK_ADDR]:
        return PUNT_L2
    r, l3, l4, thoff, l3len = lane_parse_icmp_frame(f, n, k) if icmp else lane_parse(f, 0, n, k)
    if r != LANE_OK:
        return LANE_ICMP if r == PUNT_HEADER and not icmp and lane_is_icmp(f) else r
    lane_fill(ps, 0)
    ps[PS_L3], ps[PS_L4], ps[PS_THOFF], ps[PS_END] = l3, l4, thoff, L.ETH_HLEN + l3len
    ps[PS_IIF], ps[PS_ED], ps[PS_NOW], ps[PS_NEW] = ifx, -1, ts_ns[i], -1
    ps[PS_NEW_OK], ps[PS_NR_CPUS] = cfg[CFG_NEW_OK] and not cfg[CFG_PUNTED], cfg[CFG_NR_CPUS]
    prng = ct[8]
    ps[PS_PRNG] = prng[0]
    m = min(thoff + L.TCPH.size, n)  # what the lane may write: addresses, TTL, ports, checksums
    lane_copy(snap, f, m)
    scr[13][0, 0] = 0  # the undo log of the packet's chains (nft_set_hash.py)
    r = lane_forward(f, ps, ents, nft, ct, rtv, scr, icmp)
    if r == LANE_OK or r <= DROP_BASE:
        acc[OUT_LEN], acc[OUT_NCNT] = ps[PS_END] - L.ETH_HLEN, ps[PS_NACC]
        nft_vm_commit(nft[0], acc)
        if r == LANE_OK:
            length[i], oif[i], verdict[i] = ps[PS_END], ps[PS_OIF], _TX
        else:
            verdict[i] = DROP_BASE - r
            if ps[PS_NEW] >= 0:  # dropped before confirm: the entry goes with the packet
                nf_ct_row_free(ct[6], ct[1], ct[2], ps[PS_NEW])
        return LANE_OK
    lane_copy(f, snap, m)
    nft_dyn_undo(nft[0][PROG_DYN], scr[13])
    lane_taint(ps, ct, scr)
    if ps[PS_NEW] >= 0:
        nf_ct_row_free(ct[6], ct[1], ct[2], ps[PS_NEW])
    elif ps[PS_ED] >= 0:
        lane_copy(ct[1][ps[PS_ED] >> 1], hsnap, hsnap.shape[0])
    prng[0] = ps[PS_PRNG]
    return r


@njit(cache=True, nogil=True, _nrt=False)  # not inlined: the ICMP copy of lane_one
def lane_one_icmp(pk, i, ents, nft, ct, rtv, cfg, scr):
    """lane_one for an ICMP or ICMPv6 packet (the TCP/UDP copy said LANE_ICMP)."""
    return lane_one(pk, i, ents, nft, ct, rtv, cfg, scr, True)


@njit(cache=True, nogil=True, _nrt=False)
def classic_lane_batch(pk, idx, out, ents, nft, ct, rtv, cfg, scr, acct):
    """The lane over the batch's packets idx (in order): each forwarded (verdict TX, its frame in
    its slot, oif set), dropped (verdict its reason), or punted (packet and tables as they were).
    From a punted ARP or ICMPv6 packet on (neighbour discovery may change what later packets see),
    or once the GC is due, the rest of the batch is punted too. A packet that needs Python to make
    room first (LANE_YIELD: the index rebuilt, rows freed; cnt[CNT_YIELD] says which) stops the
    batch: cnt[CNT_RESUME] says where to call again (cfg[CFG_PUNTED]
    and the counts carry over; the first call, cfg[CFG_BATCH] set, clears them and starts the
    batch's taint generation). out int64[2, len(idx)]
    receives the punted packets (row 0) and the transmitted ones (row 1), in order. Counts into acct
    (reasons int64[N_REASONS], ifc int64[nif, 4], punts int64[N_LANE_PUNTS], cnt int64[CNT_WORDS])
    as the Worker's Stats hold them. Returns the number finished."""
    data, length, oif, verdict, ts_ns = pk[0], pk[2], pk[4], pk[5], pk[6]
    reasons, ifc, punts, cnt = acct
    ps, ring = scr[9], scr[14]
    barrier = False
    if cfg[CFG_BATCH]:
        cfg[CFG_BATCH] = cfg[CFG_PUNTED] = 0
        lane_fill(cnt, 0)
        ct[4][0] += 1
    cnt[CNT_RESUME] = 0
    m = idx.shape[0]
    for t in range(-3 * PF_DISTANCE, 0):  # the prefetch pipeline (classic_lane_prefetch.py) filled
        lane_prefetch_step(pk, idx, t, ct, ring)
    for j in range(m):
        lane_prefetch_step(pk, idx, j, ct, ring)
        i = idx[j]
        if barrier or ts_ns[i] >= cfg[CFG_NEXT_GC_NS]:
            r, barrier = PUNT_GC, True
        else:
            r = lane_one(pk, i, ents, nft, ct, rtv, cfg, scr, False)
            if r == LANE_ICMP:
                r = lane_one_icmp(pk, i, ents, nft, ct, rtv, cfg, scr)
        if r == LANE_YIELD:
            cnt[CNT_RESUME] = j + 1
            break
        if r != LANE_OK:
            punts[r] += 1
            cfg[CFG_PUNTED] = 1
            out[0, cnt[CNT_PUNTED]] = i
            cnt[CNT_PUNTED] += 1
            f = data[i]
            et = ld16(f, pk[1][i] + 12)  # neighbour discovery may change what later packets see
            nh = pk[1][i] + L.ETH_HLEN
            barrier = barrier or et == L.ETH_P_ARP or (et == L.ETH_P_IPV6 and f[nh + L.IP6H.nexthdr] == L.IPPROTO_ICMPV6)
            continue
        v = verdict[i]
        reasons[v] += 1
        cnt[CNT_DONE] += 1
        cnt[CNT_FOUND] += ps[PS_FOUND]
        cnt[CNT_INSERT] += ps[PS_INSERT]
        cnt[CNT_CT_DROP] += ps[PS_CT_DROP]
        cnt[CNT_OFFLOADED] += ps[PS_OFFLOADED]
        cnt[CNT_LAST_TS] = ts_ns[i]
        if v == _TX:
            o = np.int64(oif[i])
            if o < ifc.shape[0]:
                ifc[o, _TX_PACKETS] += 1
                ifc[o, _TX_BYTES] += np.int64(length[i])
            out[1, cnt[CNT_SENT]] = i
            cnt[CNT_SENT] += 1
    return cnt[CNT_DONE]
