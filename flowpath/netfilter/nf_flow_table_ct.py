"""What offloading a flow does to its conntrack entry, on the entry's row: pinning it at the add, and
keeping it alive while the flow lives.

Linux: net/netfilter/nf_flow_table_core.c › flow_offload_add's caller nft_flow_offload_eval
(IPS_OFFLOAD set, nf_ct_refresh to a day via flow_offload_alloc's ct reference, TCP made liberal:
flow_offload_fixup_tcp's counterpart at the add) and nf_flow_table_extend_ct_timeout (GC pushes the
timeout back while the flow is offloaded). Compiled over the conntrack table's rows
(flowpath/netfilter/ct_layout.py), so the Python path (nft_flow_offload.py), the compiled classic
lane and the GC share them; the teardown's fixup (flow_offload_fixup_ct) is still Python's.
"""

from __future__ import annotations

from numba import njit

from flowpath.flowtable.key import K_PROTO, proto_l4
from flowpath.netfilter import constants as C
from flowpath.netfilter.conntrack_proto_tcp_window import IP_CT_TCP_FLAG_BE_LIBERAL, sCW, sFW, sLA, sTW
from flowpath.netfilter.ct_layout import (
    CT_PROTO,
    CT_STATUS,
    CT_TIMEOUT,
    TCP_SEEN,
    TCP_SEEN_WORDS,
    TCP_STATE,
    TD_FLAGS,
)
from flowpath.netfilter.nf_conntrack_table import CT_ROW_CONFIRMED
from flowpath.packet import layout as L

NF_CT_DAY_NS = 86400 * 1_000_000_000
NF_FLOW_EXTEND_MIN_NS = 5 * 60 * 1_000_000_000  # GC extends an entry once less than this is left
_TCP = L.IPPROTO_TCP


@njit(cache=True, nogil=True, _nrt=False)
def flow_offload_ct_pin(hot, key, r, now_ns):
    """Row r's entry is offloaded now: IPS_OFFLOAD, its timeout a day away (nf_ct_refresh: not with
    IPS_FIXED_TIMEOUT), and a TCP entry's both senders liberal, as the flowtable does not track
    windows (a packet back on the classic path must not be judged by stale window data)."""
    hot[r, CT_STATUS] |= C.IPS_OFFLOAD
    if not hot[r, CT_STATUS] & C.IPS_FIXED_TIMEOUT:
        hot[r, CT_TIMEOUT] = now_ns + NF_CT_DAY_NS
    if proto_l4(key[2 * r, K_PROTO]) == _TCP:
        for d in range(2):
            hot[r, CT_PROTO + TCP_SEEN + d * TCP_SEEN_WORDS + TD_FLAGS] |= IP_CT_TCP_FLAG_BE_LIBERAL


@njit(cache=True, nogil=True, _nrt=False)
def nf_flow_table_extend_ct_rows(hot, key, state, seq, used, ct_row, now_ns):
    """nf_flow_offload_gc_step's nf_flow_table_extend_ct_timeout over a flowtable's live flows: an
    offloaded entry with less than 5 minutes left gets a day again (a TCP entry in a closing state:
    5 minutes). ct_row (row, seq) per flow id; a row that holds another entry now is left alone.
    Returns how many entries it extended."""
    n = 0
    for fid in range(ct_row.shape[0]):
        r = ct_row[fid, 0]
        if not used[2 * fid] or r < 0 or state[r] != CT_ROW_CONFIRMED or seq[r] != ct_row[fid, 1]:
            continue
        if not hot[r, CT_STATUS] & C.IPS_OFFLOAD or hot[r, CT_TIMEOUT] - now_ns >= NF_FLOW_EXTEND_MIN_NS:
            continue
        ext = NF_CT_DAY_NS
        if proto_l4(key[2 * r, K_PROTO]) == _TCP:
            s = hot[r, CT_PROTO + TCP_STATE]
            if s == sFW or s == sCW or s == sLA or s == sTW:
                ext = NF_FLOW_EXTEND_MIN_NS
        if hot[r, CT_TIMEOUT] < now_ns + ext:
            hot[r, CT_TIMEOUT] = now_ns + ext
        n += 1
    return n
