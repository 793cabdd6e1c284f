"""TCP connection tracking: the state table, timeouts, sysctls and the per-packet state machine.

Linux: net/netfilter/nf_conntrack_proto_tcp.c (tcp_conntracks, tcp_timeouts, get_conntrack_index,
tcp_error, tcp_new, nf_conntrack_tcp_packet, nf_tcp_handle_invalid, nf_conntrack_tcp_set_closing) and
struct nf_tcp_net for the sysctls. Defaults as Linux: nf_conntrack_tcp_loose=1 (mid-stream pickup),
nf_conntrack_tcp_be_liberal=0, nf_conntrack_tcp_ignore_invalid_rst=0, nf_conntrack_tcp_max_retrans=3,
nf_conntrack_checksum=1. Segment parsing, options and tcp_in_window: conntrack_proto_tcp_window.py.

One implementation: the tracker is @njit over one row of the conntrack table's `hot` array (int64[32],
ct_layout.py) and the packet's bytes. The compiled classic path calls tcp_conntrack_packet per packet;
the Python path calls it too, through nf_conntrack_tcp_packet, a thin wrapper over an NfConn. The
sysctls and the timeout table are an int64 `params` vector (tcp_params, layout in ct_layout.py).
"""

from __future__ import annotations

from functools import cache

import numpy as np
from numba import njit

from flowpath.netfilter.conntrack_proto_tcp_window import (
    IP_CT_EXP_CHALLENGE_ACK,
    IP_CT_TCP_FLAG_BE_LIBERAL,
    IP_CT_TCP_FLAG_CLOSE_INIT,
    IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED,
    IP_CT_TCP_FLAG_MAXACK_SET,
    IP_CT_TCP_FLAG_SACK_PERM,
    IP_CT_TCP_FLAG_WINDOW_SCALE,
    IP_CT_TCP_SIMULTANEOUS_OPEN,
    NFCT_TCP_IGNORE,
    NFCT_TCP_INVALID,
    TCP_ACK_SET,
    TCP_CONNTRACK_NAMES,
    TCP_CONNTRACK_RETRANS,
    TCP_CONNTRACK_UNACK,
    TCP_CONNTRACKS,
    TCP_FIN_SET,
    TCP_FLAG_SYSCTLS,
    TCP_NONE_SET,
    TCP_RST_SET,
    TCP_SYN_SET,
    TCP_SYNACK_SET,
    TCP_TIMEOUT_SYSCTLS,
    TCP_TIMEOUTS_NS,
    TcpConntrack,
    before,
    get_conntrack_index,
    sCL,
    sCW,
    seen_base,
    sES,
    sFW,
    sIG,
    sIV,
    sLA,
    sNO,
    sS2,
    sSR,
    sSS,
    sTW,
    tcp_checksum_bad,
    tcp_error,
    tcp_in_window,
    tcp_options,
    tcp_options_parse,
    tcp_seg,
)
from flowpath.netfilter.constants import (
    IP_CT_DIR_ORIGINAL,
    IP_CT_DIR_REPLY,
    IPS_ASSURED,
    IPS_CONFIRMED,
    IPS_DYING,
    IPS_FIXED_TIMEOUT,
    IPS_SEEN_REPLY,
    NF_ACCEPT,
    NF_REPEAT,
)
from flowpath.netfilter.ct_layout import (
    CT_PROTO,
    CT_PROTO_WORDS,
    CT_STATUS,
    CT_TIMEOUT,
    TCP_LAST_ACK,
    TCP_LAST_DIR,
    TCP_LAST_END,
    TCP_LAST_FLAGS,
    TCP_LAST_INDEX,
    TCP_LAST_SEQ,
    TCP_LAST_WIN,
    TCP_LAST_WSCALE,
    TCP_P_BE_LIBERAL,
    TCP_P_IGNORE_INVALID_RST,
    TCP_P_LOOSE,
    TCP_P_MAX_RETRANS,
    TCP_P_TIMEOUTS,
    TCP_PARAMS,
    TCP_RETRANS,
    TCP_STATE,
    TD_END,
    TD_FLAGS,
    TD_MAXACK,
    TD_MAXEND,
    TD_MAXWIN,
    TD_SCALE,
)
from flowpath.netfilter.ct_row import nf_ct_acct_update, nf_ct_refresh_acct
from flowpath.packet import layout as L

NSEC_PER_SEC = 1_000_000_000

_RST = L.TCPHDR_RST
_P = CT_PROTO
_HANDLE_INVALID_MIN_NS = 120 * NSEC_PER_SEC  # nf_tcp_handle_invalid leaves entries with less than this alone


def tcp_params(net_or_sysctls=None) -> np.ndarray:
    """The params vector (int64[TCP_PARAMS], ct_layout.py) of a namespace: struct nf_tcp_net.

    net_or_sysctls: a Net (its .sysctl), or a dict of sysctl names as `sysctl -a` spells them
    ("net.netfilter.nf_conntrack_tcp_be_liberal"; timeouts in seconds), or None for Linux's defaults.
    """
    sysctl = getattr(net_or_sysctls, "sysctl", net_or_sysctls) or {}
    params = np.zeros(TCP_PARAMS, np.int64)
    for state, ns in TCP_TIMEOUTS_NS.items():
        params[TCP_P_TIMEOUTS + state] = ns
    for name, state in TCP_TIMEOUT_SYSCTLS.items():
        if "net.netfilter." + name in sysctl:
            params[TCP_P_TIMEOUTS + state] = int(sysctl["net.netfilter." + name]) * NSEC_PER_SEC
    for name, (word, default) in TCP_FLAG_SYSCTLS.items():
        params[word] = int(sysctl.get("net.netfilter." + name, default))
    return params


@cache
def _default_params() -> np.ndarray:
    return tcp_params()


# ---- compiled: over one hot row ------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def tcp_conntrack_new(hot_row, buf, thoff, doff, flags, win, end, params):
    """Start tracking: False when the first segment cannot open a connection.

    Linux: tcp_new. A SYN opens SYN_SENT; with nf_conntrack_tcp_loose anything the table maps to a state
    from NONE (a bare ACK) is picked up mid-stream with liberal window checking.
    """
    new_state = TCP_CONNTRACKS[0, get_conntrack_index(flags), sNO]
    if new_state >= sIV or (new_state != sSS and params[TCP_P_LOOSE] == 0):
        return False
    hot_row[_P : _P + CT_PROTO_WORDS] = 0  # memset(&ct->proto.tcp, 0, ...)
    s0, s1 = seen_base(0), seen_base(1)
    hot_row[s0 + TD_END] = end
    hot_row[s0 + TD_MAXWIN] = win if win else 1
    if new_state == sSS:
        hot_row[s0 + TD_MAXEND] = end
        tcp_options(hot_row, s0, buf, thoff, doff)
    else:
        hot_row[s0 + TD_MAXEND] = (end + hot_row[s0 + TD_MAXWIN]) & 0xFFFFFFFF
        hot_row[s0 + TD_FLAGS] = IP_CT_TCP_FLAG_SACK_PERM | IP_CT_TCP_FLAG_BE_LIBERAL
        hot_row[s1 + TD_FLAGS] = IP_CT_TCP_FLAG_SACK_PERM | IP_CT_TCP_FLAG_BE_LIBERAL
    hot_row[_P + TCP_LAST_INDEX] = TCP_NONE_SET
    return True


@njit(cache=True, nogil=True)
def tcp_conntrack_established(hot_row):
    """Linux: nf_conntrack_tcp_established (also lets the flowtable offload)."""
    return hot_row[_P + TCP_STATE] == sES and (hot_row[CT_STATUS] & IPS_ASSURED) != 0


@njit(cache=True, nogil=True)
def tcp_conntrack_can_early_drop(hot_row):
    """Linux: tcp_can_early_drop: closing or closed."""
    s = hot_row[_P + TCP_STATE]
    return s == sFW or s == sLA or s == sTW or s == sCL or s == sCW


@njit(cache=True, nogil=True)
def tcp_conntrack_handle_invalid(hot_row, dir, index, now_ns, params):
    """Linux: nf_tcp_handle_invalid: an out-of-window FIN/RST answering the peer's FIN/RST shortens an
    assured entry's timeout to the unacknowledged one, so dead connections leave sooner."""
    status = hot_row[CT_STATUS]
    if (
        not status & IPS_ASSURED
        or status & IPS_FIXED_TIMEOUT
        or (index != TCP_RST_SET and index != TCP_FIN_SET)
    ):
        return
    last = hot_row[_P + TCP_LAST_INDEX]
    if hot_row[_P + TCP_LAST_DIR] != dir and (last == TCP_FIN_SET or last == TCP_RST_SET):
        expires = hot_row[CT_TIMEOUT] - now_ns
        if expires < _HANDLE_INVALID_MIN_NS:
            return
        unack = params[TCP_P_TIMEOUTS + TCP_CONNTRACK_UNACK]
        if expires > unack:
            hot_row[CT_TIMEOUT] = now_ns + unack
    else:
        hot_row[_P + TCP_LAST_INDEX] = index
        hot_row[_P + TCP_LAST_DIR] = dir


@njit(cache=True, nogil=True)
def tcp_conntrack_set_closing(hot_row, now_ns, params):
    """Force CLOSE with the CLOSE timeout (the flowtable's teardown of a closing flow).

    Linux: nf_conntrack_proto_tcp.c › nf_conntrack_tcp_set_closing.
    """
    if not hot_row[CT_STATUS] & IPS_CONFIRMED:
        return
    old_state = hot_row[_P + TCP_STATE]
    hot_row[_P + TCP_STATE] = sCL
    if old_state == sCL or hot_row[CT_STATUS] & IPS_FIXED_TIMEOUT:
        return
    hot_row[CT_TIMEOUT] = now_ns + params[TCP_P_TIMEOUTS + sCL]


@njit(cache=True, nogil=True)
def _tcp_ignore(hot_row, dir, index, old_state, buf, thoff, doff, seq, ack, win, end):
    """The IGNORE case of nf_conntrack_tcp_packet: remember the segment, let it pass, keep the state."""
    p = _P
    hot_row[p + TCP_LAST_INDEX], hot_row[p + TCP_LAST_DIR] = index, dir
    hot_row[p + TCP_LAST_SEQ], hot_row[p + TCP_LAST_END], hot_row[p + TCP_LAST_WIN] = seq, end, win
    if index == TCP_SYN_SET and dir == IP_CT_DIR_ORIGINAL:
        # A SYN we are not in sync with: note its options in case the SYN/ACK proves it right.
        sack_perm, wscale = tcp_options_parse(buf, thoff, doff)  # none without options: (False, -1)
        last_flags = IP_CT_TCP_FLAG_SACK_PERM if sack_perm else 0
        if wscale >= 0:
            last_flags |= IP_CT_TCP_FLAG_WINDOW_SCALE
        hot_row[p + TCP_LAST_WSCALE] = wscale if wscale >= 0 else 0
        if old_state == sLA:
            last_flags |= IP_CT_EXP_CHALLENGE_ACK
        hot_row[p + TCP_LAST_FLAGS] = last_flags
    if old_state == sSS and index == TCP_ACK_SET and dir == IP_CT_DIR_REPLY:
        hot_row[p + TCP_LAST_ACK] = ack  # possible challenge ACK answering the SYN
    return NF_ACCEPT


@njit(cache=True, nogil=True)
def _tcp_resync(hot_row, dir):
    """A SYN/ACK acknowledging a SYN we ignored: take the ignored SYN's annotations as the truth."""
    p, side, other = _P, seen_base(hot_row[_P + TCP_LAST_DIR]), seen_base(dir)
    hot_row[side + TD_END] = hot_row[side + TD_MAXEND] = hot_row[p + TCP_LAST_END]
    hot_row[side + TD_MAXWIN] = hot_row[p + TCP_LAST_WIN] if hot_row[p + TCP_LAST_WIN] else 1
    hot_row[side + TD_SCALE] = hot_row[p + TCP_LAST_WSCALE]
    hot_row[p + TCP_LAST_FLAGS] &= ~IP_CT_EXP_CHALLENGE_ACK
    hot_row[side + TD_FLAGS] = hot_row[p + TCP_LAST_FLAGS]
    hot_row[other + TD_END : other + TD_FLAGS] = 0  # nf_ct_tcp_state_reset
    hot_row[other + TD_FLAGS] &= IP_CT_TCP_FLAG_BE_LIBERAL


@njit(cache=True, nogil=True)
def _tcp_close_rst(hot_row, dir, old_state, seq, ack, params):
    """The RST checks of the CLOSE case: (new_state, skip_window 1 / 0, or -1 for an invalid RST)."""
    if tcp_conntrack_can_early_drop(hot_row):
        return sCL, 1
    p, new_state, peer = _P, sCL, seen_base(1 - dir)
    last_index, last_dir = hot_row[_P + TCP_LAST_INDEX], hot_row[_P + TCP_LAST_DIR]
    if hot_row[peer + TD_FLAGS] & IP_CT_TCP_FLAG_MAXACK_SET and last_index != TCP_SYN_SET:
        established = tcp_conntrack_established(hot_row)
        if seq == 0 and not established:
            return new_state, 0
        if before(seq, hot_row[peer + TD_MAXACK]) and params[TCP_P_IGNORE_INVALID_RST] == 0:
            return new_state, -1
        if not established or seq == hot_row[peer + TD_MAXACK]:
            return new_state, 0
        if last_index == TCP_ACK_SET and last_dir == dir and seq == hot_row[p + TCP_LAST_END]:
            return new_state, 0  # RST closing a train of segments
        new_state = old_state  # inexact: keep the state for a possible challenge ACK
    status = hot_row[CT_STATUS]
    if (
        (status & IPS_SEEN_REPLY and last_index == TCP_SYN_SET)
        or (not status & IPS_ASSURED and last_index == TCP_ACK_SET)
    ) and ack == hot_row[p + TCP_LAST_END]:
        return new_state, 1  # RST answering a SYN or ACK we let through
    if old_state == sSS and last_index == TCP_ACK_SET and last_dir == IP_CT_DIR_REPLY:
        if seq == hot_row[p + TCP_LAST_ACK]:
            return new_state, 1  # RST answering a challenge ACK
    return new_state, 0


@njit(cache=True, nogil=True)
def tcp_timeout(hot_row, index, new_state, params):
    """The timeout nf_conntrack_tcp_packet picks for the new state (ns from now)."""
    t = params[TCP_P_TIMEOUTS + new_state]
    retrans = params[TCP_P_TIMEOUTS + TCP_CONNTRACK_RETRANS]
    unack = params[TCP_P_TIMEOUTS + TCP_CONNTRACK_UNACK]
    if hot_row[_P + TCP_RETRANS] >= params[TCP_P_MAX_RETRANS] and t > retrans:
        return retrans
    if index == TCP_RST_SET:
        return params[TCP_P_TIMEOUTS + sCL]
    unacked = (hot_row[seen_base(0) + TD_FLAGS] | hot_row[seen_base(1) + TD_FLAGS]) & (
        IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED
    )
    if unacked and t > unack:
        return unack
    if hot_row[_P + TCP_LAST_WIN] == 0 and t > retrans:
        return retrans
    return t


@njit(cache=True, nogil=True)
def _tcp_update(hot_row, dir, index, old_state, new_state, flags, l3len, now_ns, params):
    """The end of nf_conntrack_tcp_packet for an accepted segment: state, status, timeout, counters."""
    p = _P
    hot_row[p + TCP_LAST_INDEX], hot_row[p + TCP_LAST_DIR] = index, dir
    hot_row[p + TCP_STATE] = new_state
    if old_state != new_state and new_state == sFW:
        hot_row[seen_base(dir) + TD_FLAGS] |= IP_CT_TCP_FLAG_CLOSE_INIT
    timeout = tcp_timeout(hot_row, index, new_state, params)
    status = hot_row[CT_STATUS]
    if not status & IPS_SEEN_REPLY:
        if flags & _RST:
            # Only a RST as answer: no connection. Linux deletes the entry at once (nf_ct_kill_acct);
            # here IPS_DYING tells the caller to (an unconfirmed entry just goes with its packet).
            nf_ct_acct_update(hot_row, dir, l3len)
            if status & IPS_CONFIRMED:
                hot_row[CT_STATUS] |= IPS_DYING
            return NF_ACCEPT
        if index == TCP_SYN_SET and old_state == sSS:
            return NF_ACCEPT  # no refresh on SYN retransmits, so port reuse cannot keep it alive
        unack = params[TCP_P_TIMEOUTS + TCP_CONNTRACK_UNACK]
        if new_state == sES and timeout > unack:
            timeout = unack  # mid-stream pickup without a reply yet
    elif not status & IPS_ASSURED and (old_state == sSR or old_state == sES) and new_state == sES:
        hot_row[CT_STATUS] |= IPS_ASSURED
    nf_ct_refresh_acct(hot_row, dir, now_ns, l3len, timeout)
    return NF_ACCEPT


@njit(cache=True, nogil=True)
def tcp_conntrack_packet(hot_row, buf, nhoff, thoff, l3len, dir, ctinfo, now_ns, params):
    """Run one segment through the state machine.

    Linux: nf_conntrack_tcp_packet (its tcp_error but for the checksum: tcp_checksum_bad, the caller's).
    hot_row int64[CT_HOT_ROW]  the connection's row, updated in place (status, timeout, counters, TCP)
    buf     uint8[:]  bytes holding the packet: the IP packet is l3len bytes from nhoff, TCP at thoff
    dir     IP_CT_DIR_*, CTINFO2DIR(ctinfo); ctinfo is Linux's argument, not otherwise read
    now_ns  packet time; params int64[TCP_PARAMS] (tcp_params)
    Returns NF_ACCEPT, -NF_ACCEPT (INVALID: the packet goes on without a ct), -NF_REPEAT (a SYN reopens a
    closed connection: kill it and look up again) or NF_DROP. NF_ACCEPT with IPS_DYING newly set: an
    unreplied connection answered by a RST, which the caller removes (nf_ct_kill_acct).
    """
    if tcp_error(buf, nhoff, thoff, l3len):
        return -NF_ACCEPT
    doff, flags, seq, ack, win, end = tcp_seg(buf, nhoff, thoff, l3len)
    if not hot_row[CT_STATUS] & IPS_CONFIRMED and not tcp_conntrack_new(
        hot_row, buf, thoff, doff, flags, win, end, params
    ):
        return -NF_ACCEPT
    p, old_state, index = _P, hot_row[_P + TCP_STATE], get_conntrack_index(flags)
    if old_state < sNO or old_state > sS2 or dir < 0 or dir > 1:
        return -NF_ACCEPT  # not a TCP row (the tracker itself never writes such a state)
    new_state = TCP_CONNTRACKS[dir, index, old_state]
    last_dir, last_index = hot_row[p + TCP_LAST_DIR], hot_row[p + TCP_LAST_INDEX]
    skip_window = False

    if new_state == sSS and old_state >= sTW:
        # RFC 1122 4.2.2.13: a SYN may reopen a connection in TIME_WAIT; an aborted one too.
        closed = (
            hot_row[seen_base(0) + TD_FLAGS] | hot_row[seen_base(1) + TD_FLAGS]
        ) & IP_CT_TCP_FLAG_CLOSE_INIT
        if closed or (last_dir == dir and last_index == TCP_RST_SET):
            return -NF_REPEAT
    if new_state == sIG or (new_state == sSS and old_state >= sTW):
        if (
            index == TCP_SYNACK_SET
            and last_index == TCP_SYN_SET
            and last_dir != dir
            and ack == hot_row[p + TCP_LAST_END]
        ):
            old_state, new_state = sSS, sSR
            _tcp_resync(hot_row, dir)
        else:
            return _tcp_ignore(hot_row, dir, index, old_state, buf, thoff, doff, seq, ack, win, end)
    elif new_state == sIV:
        return -NF_ACCEPT
    elif new_state == sTW:
        if (
            old_state == sLA
            and index == TCP_ACK_SET
            and last_dir != dir
            and last_index == TCP_SYN_SET
            and hot_row[p + TCP_LAST_FLAGS] & IP_CT_EXP_CHALLENGE_ACK
        ):
            hot_row[p + TCP_LAST_FLAGS] &= ~IP_CT_EXP_CHALLENGE_ACK  # RFC 5961 challenge ACK, not the last
            return NF_ACCEPT
    elif new_state == sS2:
        hot_row[p + TCP_LAST_FLAGS] |= IP_CT_TCP_SIMULTANEOUS_OPEN
    elif new_state == sSR:
        simopen = hot_row[p + TCP_LAST_FLAGS] & IP_CT_TCP_SIMULTANEOUS_OPEN
        if dir == IP_CT_DIR_REPLY and index == TCP_ACK_SET and simopen:
            new_state = sES
    elif new_state == sCL and index == TCP_RST_SET:
        new_state, skip = _tcp_close_rst(hot_row, dir, old_state, seq, ack, params)
        if skip < 0:
            return -NF_ACCEPT
        skip_window = skip > 0

    if not skip_window:
        be_liberal = params[TCP_P_BE_LIBERAL]
        res = tcp_in_window(hot_row, dir, index, buf, thoff, doff, flags, seq, ack, win, end, be_liberal)
        if res == NFCT_TCP_IGNORE:
            return NF_ACCEPT
        if res == NFCT_TCP_INVALID:
            tcp_conntrack_handle_invalid(hot_row, dir, index, now_ns, params)
            return -NF_ACCEPT
    return _tcp_update(hot_row, dir, index, old_state, new_state, flags, l3len, now_ns, params)


# ---- the Python path: thin wrappers over an NfConn -----------------------------------------------------


def nf_conntrack_tcp_packet(ct, skb, thoff: int, dir: int, check_csum: bool) -> int:
    """Linux: nf_conntrack_tcp_packet for the Python path: tcp_conntrack_packet on ct's row.

    Returns NF_ACCEPT, -NF_ACCEPT, -NF_REPEAT or NF_DROP; an unreplied connection answered by a RST
    leaves the table here (nf_ct_kill_acct).
    """
    b, nhoff, l3len = skb.buf, skb.nhoff, skb.l3len
    if check_csum and tcp_checksum_bad(b, nhoff, thoff, l3len):
        return -NF_ACCEPT
    row = ct.hot_row
    was_dying = row[CT_STATUS] & IPS_DYING
    ret = int(tcp_conntrack_packet(row, b, nhoff, thoff, l3len, dir, skb.ctinfo, skb.ts_ns, _params_of(ct)))
    kill = ret > 0 and not was_dying and row[CT_STATUS] & IPS_DYING
    if kill:
        row[CT_STATUS] &= ~IPS_DYING  # nf_ct_kill sets it, as it removes the entry
    if kill and ct.net is not None:
        ct.net.nf_ct_kill(ct)
    return ret


def nf_tcp_handle_invalid(ct, dir: int, index: int, now_ns: int) -> None:
    """Linux: nf_tcp_handle_invalid (tcp_conntrack_handle_invalid on ct's row)."""
    tcp_conntrack_handle_invalid(ct.hot_row, dir, index, now_ns, _params_of(ct))


def nf_conntrack_tcp_set_closing(ct, now_ns: int) -> None:
    """Linux: nf_conntrack_tcp_set_closing (tcp_conntrack_set_closing on ct's row)."""
    tcp_conntrack_set_closing(ct.hot_row, now_ns, _params_of(ct))


def nf_conntrack_tcp_established(ct) -> bool:
    """Linux: nf_conntrack_tcp_established (also used by the flowtable to allow offload)."""
    return bool(tcp_conntrack_established(ct.hot_row))


def tcp_can_early_drop(ct) -> bool:
    """Linux: tcp_can_early_drop."""
    return bool(tcp_conntrack_can_early_drop(ct.hot_row))


def _params_of(ct) -> np.ndarray:
    """The namespace's params (a `tcp_params` attribute of ct.net, the Conntrack), else the defaults."""
    params = getattr(ct.net, "tcp_params", None)
    return params if params is not None else _default_params()




__all__ = [  # the tracker's names, the window module's among them (one import for the Python path)
    "TCP_CONNTRACK_NAMES",
    "TCP_CONNTRACKS",
    "TCP_TIMEOUTS_NS",
    "TcpConntrack",
    "nf_conntrack_tcp_established",
    "nf_conntrack_tcp_packet",
    "nf_conntrack_tcp_set_closing",
    "nf_tcp_handle_invalid",
    "tcp_can_early_drop",
    "tcp_conntrack_packet",
    "tcp_params",
]
