"""Compiled helpers over one conntrack row (ct_layout.py): refresh, accounting, UDP tracking.

Linux: net/netfilter/nf_conntrack_core.c › __nf_ct_refresh_acct, nf_conntrack_acct.h ›
nf_ct_acct_update, nf_conntrack_proto_udp.c › nf_conntrack_udp_packet.
The Python classic path (conntrack_tuple.py, conntrack_proto.py) and the compiled classic lane call
these on the same row of the table's `hot` array.
"""

from __future__ import annotations

from numba import njit

from flowpath.netfilter.constants import (
    IPS_ASSURED,
    IPS_CONFIRMED,
    IPS_FIXED_TIMEOUT,
    IPS_NAT_CLASH_BIT,
    IPS_SEEN_REPLY,
    NF_ACCEPT,
)
from flowpath.netfilter.ct_layout import CT_BYTES, CT_PACKETS, CT_PROTO, CT_STATUS, CT_TIMEOUT, UDP_STREAM_TS

NSEC_PER_SEC = 1_000_000_000
UDP_CT_UNREPLIED_NS = 30 * NSEC_PER_SEC  # nf_conntrack_proto_udp.c › udp_timeouts
UDP_CT_REPLIED_NS = 120 * NSEC_PER_SEC
UDP_STREAM_DELAY_NS = 2 * NSEC_PER_SEC  # ct->proto.udp.stream_ts = 2 * HZ + jiffies
_NAT_CLASH = 1 << IPS_NAT_CLASH_BIT


@njit(cache=True, nogil=True)
def nf_ct_acct_update(hot_row, dir, nbytes):
    """Linux: nf_conntrack_acct.h › nf_ct_acct_update: count the packet in its direction."""
    hot_row[CT_PACKETS + dir] += 1
    hot_row[CT_BYTES + dir] += nbytes


@njit(cache=True, nogil=True)
def nf_ct_refresh_acct(hot_row, dir, now_ns, nbytes, extra_ns):
    """Refresh the timeout to now + extra (unless fixed) and count the packet in its direction.
    Linux: __nf_ct_refresh_acct."""
    if not hot_row[CT_STATUS] & IPS_FIXED_TIMEOUT:
        hot_row[CT_TIMEOUT] = now_ns + extra_ns
    nf_ct_acct_update(hot_row, dir, nbytes)


@njit(cache=True, nogil=True)
def nf_conntrack_udp_packet(hot_row, dir, now_ns, l3len):
    """Linux: nf_conntrack_udp_packet, after udp_error accepted the header.

    Unreplied: 30 s. Seen both ways: still 30 s until the flow has lived 2 s (stream_ts), then 120 s
    and ASSURED, so a one-shot query and its answer do not pin an entry for two minutes.
    """
    status = hot_row[CT_STATUS]
    if not status & IPS_CONFIRMED:
        hot_row[CT_PROTO + UDP_STREAM_TS] = now_ns + UDP_STREAM_DELAY_NS
    if status & IPS_SEEN_REPLY:
        extra, stream = UDP_CT_UNREPLIED_NS, False
        if now_ns > hot_row[CT_PROTO + UDP_STREAM_TS]:  # time_after(jiffies, stream_ts)
            extra, stream = UDP_CT_REPLIED_NS, not status & IPS_ASSURED
        nf_ct_refresh_acct(hot_row, dir, now_ns, l3len, extra)
        if stream and not status & _NAT_CLASH:
            hot_row[CT_STATUS] |= IPS_ASSURED
    else:
        nf_ct_refresh_acct(hot_row, dir, now_ns, l3len, UDP_CT_UNREPLIED_NS)
    return NF_ACCEPT
