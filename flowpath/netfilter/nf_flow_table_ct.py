"""What offloading a flow does to its conntrack entry, on the entry's row: pinning it at the add, and
keeping it alive while the flow lives.

Linux: net/netfilter/nf_flow_table_core.c › flow_offload_add's caller nft_flow_offload_eval
(IPS_OFFLOAD set, nf_ct_refresh to a day via flow_offload_alloc's ct reference, TCP made liberal:
flow_offload_fixup_tcp's counterpart at the add) and nf_flow_table_extend_ct_timeout (GC pushes the
timeout back while the flow is offloaded), flow_offload_fixup_ct (the entry given back when the flow
goes) with the GC's deletions (nf_flow_offload_gc_step). Compiled over the conntrack table's rows
(flowpath/netfilter/ct_layout.py), so the Python path (nft_flow_offload.py), the compiled classic
lane and the GC share them.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flowpath.flowtable.flow_add import (
    FP_TIMEOUT_TCP,
    FP_TIMEOUT_UDP,
    flow_offload_del_rows,
    flow_offload_gc_dead,
)
from flowpath.flowtable.key import F_CLOSING, K_PROTO, V_FLAGS, V_TIMEOUT, proto_l4
from flowpath.netfilter import constants as C
from flowpath.netfilter.conntrack_proto_tcp_window import (
    IP_CT_TCP_FLAG_BE_LIBERAL,
    IP_CT_TCP_FLAG_CLOSE_INIT,
    IP_CT_TCP_FLAG_MAXACK_SET,
    sCL,
    sCW,
    sFW,
    sIG,
    sIV,
    sLA,
    sNO,
    sTW,
)
from flowpath.netfilter.ct_layout import (
    CT_PROTO,
    CT_STATUS,
    CT_TIMEOUT,
    TCP_CONNTRACK_TIMEOUT_MAX,
    TCP_P_TIMEOUTS,
    TCP_SEEN,
    TCP_SEEN_WORDS,
    TCP_STATE,
    TD_FLAGS,
    TD_MAXWIN,
)
from flowpath.netfilter.ct_row import UDP_CT_REPLIED_NS, UDP_CT_UNREPLIED_NS
from flowpath.netfilter.nf_conntrack_table import CT_ROW_CONFIRMED
from flowpath.packet import layout as L

NF_CT_DAY_NS = 86400 * 1_000_000_000
NF_FLOW_EXTEND_MIN_NS = 5 * 60 * 1_000_000_000  # GC extends an entry once less than this is left
_TCP, _UDP = L.IPPROTO_TCP, L.IPPROTO_UDP


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
def _offloaded_row(hot, state, seq, used, ct_row, fid):
    """Flow fid's conntrack row while the flow is live and pins it (IPS_OFFLOAD), else -1: a row
    that holds another entry now is left alone."""
    r = ct_row[fid, 0]
    if not used[2 * fid] or r < 0 or state[r] != CT_ROW_CONFIRMED or seq[r] != ct_row[fid, 1]:
        return -1
    return r if hot[r, CT_STATUS] & C.IPS_OFFLOAD else -1


@njit(cache=True, nogil=True, _nrt=False)
def nf_flow_table_extend_ct_rows(hot, key, state, seq, used, ct_row, now_ns):
    """nf_flow_offload_gc_step's nf_flow_table_extend_ct_timeout over a flowtable's live flows: an
    offloaded entry with less than 5 minutes left gets a day again (a TCP entry in a closing state:
    5 minutes). ct_row (row, seq) per flow id. Returns how many entries it extended."""
    n = 0
    for fid in range(ct_row.shape[0]):
        r = _offloaded_row(hot, state, seq, used, ct_row, fid)
        if r < 0 or hot[r, CT_TIMEOUT] - now_ns >= NF_FLOW_EXTEND_MIN_NS:
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


@njit(cache=True, nogil=True, _nrt=False)
def nf_flow_table_extend_due(hot, state, seq, used, ct_row, before_ns):
    """The earliest time from which a GC run extends (nf_flow_table_extend_ct_rows) an offloaded entry
    that would otherwise time out before before_ns; the largest int64 if none would. A classic-path
    packet of an offloaded flow (udp_packet, tcp_packet) may have set its timeout seconds ahead, and
    Linux's GC, running every second, pins it again long before that: replay, catching up on an idle
    gap, runs that GC too (Worker._maybe_gc)."""
    due = np.iinfo(np.int64).max
    for fid in range(ct_row.shape[0]):
        r = _offloaded_row(hot, state, seq, used, ct_row, fid)
        if r >= 0 and hot[r, CT_TIMEOUT] < before_ns:
            due = min(due, hot[r, CT_TIMEOUT] - NF_FLOW_EXTEND_MIN_NS + 1)
    return due


@njit(cache=True, nogil=True, _nrt=False)
def flow_offload_fixup_row(h, l4proto, flags, now_ns, expired, offload_timeout_ns, tcp_params):
    """flow_offload_fixup_ct on the hot row h of a torn-down flow's entry: IPS_OFFLOAD off; TCP: CLOSE
    after a FIN or RST (F_CLOSING; a SYN may reopen the tuple), the windows learnt again (td_maxwin 0,
    no MAXACK), the timeout of its state (nf_tcp_net's, as tn->timeouts); UDP: its replied or
    unreplied timeout. An expired flow's timeout is the state's less the offload timeout already
    spent. The timeout only shortens (nf_ct_refresh semantics of the fixup)."""
    h[CT_STATUS] &= ~C.IPS_OFFLOAD
    if l4proto == _TCP:
        if flags & F_CLOSING:
            h[CT_PROTO + TCP_STATE] = sCL
            h[CT_PROTO + TCP_SEEN + TD_FLAGS] |= IP_CT_TCP_FLAG_CLOSE_INIT
        for d in range(2):
            o = CT_PROTO + TCP_SEEN + d * TCP_SEEN_WORDS
            h[o + TD_MAXWIN] = 0
            h[o + TD_FLAGS] &= ~IP_CT_TCP_FLAG_MAXACK_SET
        s = h[CT_PROTO + TCP_STATE]
        if s == sNO or s == sIV or s == sIG or s >= TCP_CONNTRACK_TIMEOUT_MAX:  # none of its own: CLOSE's
            s = sCL
        timeout = tcp_params[TCP_P_TIMEOUTS + s]
    elif l4proto == _UDP:
        timeout = UDP_CT_REPLIED_NS if h[CT_STATUS] & C.IPS_SEEN_REPLY else UDP_CT_UNREPLIED_NS
    else:
        return
    if expired:
        timeout -= offload_timeout_ns
    timeout = max(timeout, 0)
    if h[CT_TIMEOUT] - now_ns > timeout:
        h[CT_TIMEOUT] = now_ns + timeout


@njit(cache=True, nogil=True, _nrt=False)
def nf_flow_table_gc_rows(fa, fp, ctv, now_ns, out):
    """nf_flow_offload_gc_step over a flowtable's arrays: the expired and torn-down flows (ids into
    out, ascending) each given back to conntrack (flow_offload_fixup_row, on its entry's row while
    the row holds it) and deleted (flow_offload_del_rows). ctv: the conntrack table's (hot, key,
    state, seq, tcp_params). Returns how many."""
    hot, key, state, seq, tcp_params = ctv
    fkey, val, ct_row = fa[1], fa[2], fa[9]
    n = flow_offload_gc_dead(fa, now_ns, out)
    for j in range(n):
        fid = out[j]
        r, e = ct_row[fid, 0], 2 * fid
        if r >= 0 and state[r] == CT_ROW_CONFIRMED and seq[r] == ct_row[fid, 1] and hot[r, CT_STATUS] & C.IPS_OFFLOAD:
            expired = max(val[e, V_TIMEOUT], val[e + 1, V_TIMEOUT]) - now_ns <= 0
            l4 = proto_l4(key[2 * r, K_PROTO])
            tmo = fp[FP_TIMEOUT_TCP] if l4 == _TCP else fp[FP_TIMEOUT_UDP]
            flow_offload_fixup_row(hot[r], l4, np.int64(fkey[e, V_FLAGS]), now_ns, expired, tmo, tcp_params)
        flow_offload_del_rows(fa, fp, fid, 0)
    return n


def nf_flow_table_gc(ft, ct, now_ns: int) -> int:
    """The flowtable GC's run over ft with conntrack ct, compiled (nf_flow_table_gc_rows); how many
    flows it deleted. The Python owner forgets their references."""
    out = ft.gc_scratch()
    n = int(nf_flow_table_gc_rows(ft.fa, ft.fp, (ct.hot, ct.key, ct.state, ct.seq, ct.tcp_params), int(now_ns), out))
    ft.forget(out[:n].tolist())
    return n
