"""The ICMP and ICMPv6 trackers, compiled: the error check, the reply type, the query tracking.

Linux: net/netfilter/nf_conntrack_proto_icmp.c (icmp_error, invmap / icmp_invert_tuple,
nf_conntrack_icmp_packet, nf_ct_icmp_timeout) and nf_conntrack_proto_icmpv6.c (icmpv6_error,
noct_valid_new, invmap, nf_conntrack_icmpv6_packet).
The Python classic path (conntrack_proto.py, conntrack_tuple.py) and the compiled classic lane
(flowpath/inet/classic_lane.py) call these on the same packet bytes and the same conntrack row.
The lookup of the connection an ICMP error is RELATED to stays Python (conntrack_proto.py ›
nf_conntrack_inet_error); the lane leaves errors to it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flowpath.netfilter.constants import IPS_CONFIRMED, NF_ACCEPT
from flowpath.netfilter.ct_layout import CT_STATUS
from flowpath.netfilter.ct_row import NSEC_PER_SEC, nf_ct_refresh_acct
from flowpath.packet import layout as L
from flowpath.packet.csum import icmp_csum, l4_csum, ld16

ICMP_TIMEOUT_NS = 30 * NSEC_PER_SEC  # nf_conntrack_proto_icmp.c › nf_ct_icmp_timeout
ICMPV6_TIMEOUT_NS = 30 * NSEC_PER_SEC  # nf_conntrack_proto_icmpv6.c › nf_ct_icmpv6_timeout
NR_ICMP_TYPES = 18

# nf_conntrack_proto_icmp.c › invmap / nf_conntrack_proto_icmpv6.c › invmap: the reply type of a query.
ICMP_INVMAP = {
    L.ICMP_ECHO: L.ICMP_ECHOREPLY,
    L.ICMP_ECHOREPLY: L.ICMP_ECHO,
    L.ICMP_TIMESTAMP: L.ICMP_TIMESTAMPREPLY,
    L.ICMP_TIMESTAMPREPLY: L.ICMP_TIMESTAMP,
    L.ICMP_INFO_REQUEST: L.ICMP_INFO_REPLY,
    L.ICMP_INFO_REPLY: L.ICMP_INFO_REQUEST,
    L.ICMP_ADDRESS: L.ICMP_ADDRESSREPLY,
    L.ICMP_ADDRESSREPLY: L.ICMP_ADDRESS,
}
ICMPV6_NI_QUERY = 139
ICMPV6_NI_REPLY = 140
ICMPV6_INVMAP = {
    L.ICMPV6_ECHO_REQUEST: L.ICMPV6_ECHO_REPLY,
    L.ICMPV6_ECHO_REPLY: L.ICMPV6_ECHO_REQUEST,
    ICMPV6_NI_QUERY: ICMPV6_NI_REPLY,
    ICMPV6_NI_REPLY: ICMPV6_NI_QUERY,
}
# valid_new: the queries that may open an entry
ICMP_VALID_NEW = (L.ICMP_ECHO, L.ICMP_TIMESTAMP, L.ICMP_INFO_REQUEST, L.ICMP_ADDRESS)
ICMPV6_VALID_NEW = (L.ICMPV6_ECHO_REQUEST, ICMPV6_NI_QUERY)
# noct_valid_new: MLD (130-132, 143) and neighbour discovery (133-136) are never tracked
ICMPV6_NOCT = (130, 131, 132, 133, 134, 135, 136, 143)


def _type_table(pairs) -> np.ndarray:
    """A type-indexed int64[256] table (-1: none), which numba freezes into the kernels."""
    t = np.full(256, -1, np.int64)
    for k, v in pairs:
        t[k] = v
    return t


_ICMP_INV = _type_table(ICMP_INVMAP.items())
_ICMPV6_INV = _type_table(ICMPV6_INVMAP.items())
_ICMP_NEW = _type_table((t, 1) for t in ICMP_VALID_NEW)
_ICMPV6_NEW = _type_table((t, 1) for t in ICMPV6_VALID_NEW)
_ICMPV6_NOCT = _type_table((t, 1) for t in ICMPV6_NOCT)
_ICMP_ERR = _type_table((t, 1) for t in L.ICMP_ERRORS)
_ICMP, _ICMPV6 = L.IPPROTO_ICMP, L.IPPROTO_ICMPV6

# icmp_error_pkt's results
ICMP_QUERY = 0  # NF_ACCEPT: a query (or another type conntrack looks up as is): normal tracking
ICMP_INVALID = 1  # -NF_ACCEPT: truncated, bad checksum, or an ICMPv4 type past NR_ICMP_TYPES
ICMP_BAD_CSUM = 2  # -NF_ACCEPT too, told apart for the lane's punt reason
ICMP_RELATED = 3  # an error: the connection of the packet inside it is looked up (nf_conntrack_inet_error)
ICMP_NOCT = 4  # ICMPv6 neighbour discovery or MLD: UNTRACKED


@njit(cache=True, nogil=True)
def icmp_invert_type(l4proto, type_):
    """Linux: icmp_invert_tuple / icmpv6_invert_tuple: the reply type of a query, -1 when the type
    has none (an error or an unknown type: no inverse, no entry)."""
    if type_ < 0 or type_ > 255:
        return -1
    return _ICMP_INV[type_] if l4proto == _ICMP else _ICMPV6_INV[type_]


@njit(cache=True, nogil=True)
def icmp_error_pkt(buf, nhoff, thoff, l3len, l4proto, check_csum):
    """Linux: icmp_error / icmpv6_error up to the RELATED lookup, over the IP packet of l3len bytes
    at nhoff whose ICMP header is at thoff: the checksum (check_csum: nf_conntrack_checksum at
    PRE_ROUTING; ICMPv6's covers the pseudo-header), then the type. One of ICMP_QUERY,
    ICMP_INVALID, ICMP_BAD_CSUM, ICMP_RELATED, ICMP_NOCT."""
    end = nhoff + l3len
    n = end - thoff
    if n < L.ICMPH.size or end > buf.shape[0]:
        return ICMP_INVALID  # skb_header_pointer finds no header: "short packet"
    stored = ld16(buf, thoff + L.ICMPH.checksum)
    t = np.int64(buf[thoff])
    if l4proto == _ICMP:
        if check_csum and icmp_csum(buf, thoff, n) != stored:
            return ICMP_BAD_CSUM
        if t > NR_ICMP_TYPES:
            return ICMP_INVALID
        return ICMP_RELATED if _ICMP_ERR[t] > 0 else ICMP_QUERY
    is_ipv6 = (buf[nhoff] >> 4) == 6  # ICMPv6 over IPv4: summed as nf_checksum sums it
    if check_csum and l4_csum(buf, nhoff, thoff, n, is_ipv6, _ICMPV6, L.ICMPH.checksum) != stored:
        return ICMP_BAD_CSUM
    if _ICMPV6_NOCT[t] > 0:
        return ICMP_NOCT
    return ICMP_QUERY if t >= 128 else ICMP_RELATED


@njit(cache=True, nogil=True)
def nf_conntrack_icmp_packet(hot_row, dir, now_ns, l3len, l4proto, orig_type):
    """Linux: nf_conntrack_icmp_packet / nf_conntrack_icmpv6_packet on the entry's row, whose
    original tuple has type orig_type: only queries open an entry (ICMPv4 asks at every packet, as
    Linux does; ICMPv6 only while unconfirmed), then 30 s and the packet counted (nf_ct_refresh_acct).
    NF_ACCEPT, or -NF_ACCEPT (INVALID)."""
    if l4proto == _ICMP:
        if orig_type < 0 or orig_type > 255 or _ICMP_NEW[orig_type] <= 0:
            return -NF_ACCEPT
        timeout = ICMP_TIMEOUT_NS
    else:
        unconfirmed = not hot_row[CT_STATUS] & IPS_CONFIRMED
        if unconfirmed and (orig_type < 0 or orig_type > 255 or _ICMPV6_NEW[orig_type] <= 0):
            return -NF_ACCEPT
        timeout = ICMPV6_TIMEOUT_NS
    nf_ct_refresh_acct(hot_row, dir, now_ns, l3len, timeout)
    return NF_ACCEPT
