"""TCP connection tracking, first half: the states and tables, the segment's checks and fields, windows.

Linux: net/netfilter/nf_conntrack_proto_tcp.c up to tcp_error (enum tcp_conntrack, tcp_timeouts,
tcp_conntracks, get_conntrack_index, tcp_options, tcp_sack, segment_seq_plus_len, tcp_init_sender,
tcp_in_window, nf_tcp_log_invalid, tcp_valid_flags, tcp_error). The rest (tcp_new,
nf_conntrack_tcp_packet, the sysctls, the Python path's wrappers) is in conntrack_proto_tcp.py.

Every function is @njit over one row of the conntrack table's `hot` array (int64[CT_HOT_ROW], layout in
ct_layout.py: struct ip_ct_tcp at CT_PROTO, the two struct ip_ct_tcp_state at TCP_SEEN) and the packet's
bytes, so the compiled classic path and the per-packet Python path run the same code. Sequence numbers
are kept as int64 in [0, 2**32) and every sum is masked back, as u32 arithmetic wraps in C.
Window tracking follows Linux 6.x, without sequence adjustment (no helpers: nf_ct_seq_offset is 0).
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
from numba import njit

from flowpath.netfilter.constants import IP_CT_DIR_REPLY
from flowpath.netfilter.ct_layout import (
    CT_PROTO,
    TCP_LAST_ACK,
    TCP_LAST_DIR,
    TCP_LAST_END,
    TCP_LAST_SEQ,
    TCP_LAST_WIN,
    TCP_P_BE_LIBERAL,
    TCP_P_IGNORE_INVALID_RST,
    TCP_P_LOOSE,
    TCP_P_MAX_RETRANS,
    TCP_RETRANS,
    TCP_SEEN,
    TCP_SEEN_WORDS,
    TCP_STATE,
    TD_END,
    TD_FLAGS,
    TD_MAXACK,
    TD_MAXEND,
    TD_MAXWIN,
    TD_SCALE,
)
from flowpath.packet import layout as L
from flowpath.packet.csum import l4_csum, ld16, ld32


class TcpConntrack(IntEnum):
    """enum tcp_conntrack (include/uapi/linux/netfilter/nf_conntrack_tcp.h): the TCP_STATE word."""

    NONE = 0
    SYN_SENT = 1
    SYN_RECV = 2
    ESTABLISHED = 3
    FIN_WAIT = 4
    CLOSE_WAIT = 5
    LAST_ACK = 6
    TIME_WAIT = 7
    CLOSE = 8
    SYN_SENT2 = 9
    MAX = 10
    IGNORE = 11
    RETRANS = 12
    UNACK = 13


# Plain ints of the enum for the kernels (numba freezes module ints as constants); kernel spelling
sNO, sSS, sSR, sES, sFW, sCW, sLA, sTW, sCL, sS2, sIV, sIG = range(12)  # noqa: N816
assert (sS2, sIV, sIG) == (TcpConntrack.SYN_SENT2, TcpConntrack.MAX, TcpConntrack.IGNORE)
TCP_CONNTRACK_RETRANS, TCP_CONNTRACK_UNACK = int(TcpConntrack.RETRANS), int(TcpConntrack.UNACK)

# enum tcp_bit_set: the row of the state table a segment uses
TCP_SYN_SET, TCP_SYNACK_SET, TCP_FIN_SET, TCP_ACK_SET, TCP_RST_SET, TCP_NONE_SET = range(6)

# include/uapi/linux/netfilter/nf_conntrack_tcp.h (struct ip_ct_tcp_state.flags and last_flags)
IP_CT_TCP_FLAG_WINDOW_SCALE = 0x01
IP_CT_TCP_FLAG_SACK_PERM = 0x02
IP_CT_TCP_FLAG_CLOSE_INIT = 0x04
IP_CT_TCP_FLAG_BE_LIBERAL = 0x08
IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED = 0x10
IP_CT_TCP_FLAG_MAXACK_SET = 0x20
IP_CT_EXP_CHALLENGE_ACK = 0x40  # last_flags: an RFC 5961 challenge ACK may follow
IP_CT_TCP_SIMULTANEOUS_OPEN = 0x80  # last_flags
TCP_MAX_WSCALE = 14
MAXACKWINCONST = 66000
TCPOPT_EOL, TCPOPT_NOP, TCPOPT_WINDOW, TCPOPT_SACK_PERM, TCPOPT_SACK, TCPOPT_TIMESTAMP = 0, 1, 3, 4, 5, 8
TCPOLEN_WINDOW, TCPOLEN_SACK_PERM, TCPOLEN_SACK_BASE, TCPOLEN_SACK_PERBLOCK = 3, 2, 2, 8
NFCT_TCP_IGNORE, NFCT_TCP_INVALID, NFCT_TCP_ACCEPT = range(3)  # enum nf_ct_tcp_action

NSEC_PER_SEC = 1_000_000_000
TCP_CONNTRACK_NAMES = tuple(s.name for s in TcpConntrack if s < TcpConntrack.MAX)

_S, _M = NSEC_PER_SEC, 60 * NSEC_PER_SEC
# nf_conntrack_proto_tcp.c › tcp_timeouts (the defaults of the params vector)
TCP_TIMEOUTS_NS = {
    TcpConntrack.SYN_SENT: 2 * _M,
    TcpConntrack.SYN_RECV: 60 * _S,
    TcpConntrack.ESTABLISHED: 5 * 24 * 60 * _M,
    TcpConntrack.FIN_WAIT: 2 * _M,
    TcpConntrack.CLOSE_WAIT: 60 * _S,
    TcpConntrack.LAST_ACK: 30 * _S,
    TcpConntrack.TIME_WAIT: 2 * _M,
    TcpConntrack.CLOSE: 10 * _S,
    TcpConntrack.SYN_SENT2: 2 * _M,
    TcpConntrack.RETRANS: 5 * _M,
    TcpConntrack.UNACK: 5 * _M,
}
TCP_MAX_RETRANS = 3  # nf_conntrack_tcp_max_retrans
# nf_conntrack_standalone.c's sysctl names (net.netfilter.*, seconds) of the timeouts it exposes
TCP_TIMEOUT_SYSCTLS = {
    "nf_conntrack_tcp_timeout_syn_sent": TcpConntrack.SYN_SENT,
    "nf_conntrack_tcp_timeout_syn_recv": TcpConntrack.SYN_RECV,
    "nf_conntrack_tcp_timeout_established": TcpConntrack.ESTABLISHED,
    "nf_conntrack_tcp_timeout_fin_wait": TcpConntrack.FIN_WAIT,
    "nf_conntrack_tcp_timeout_close_wait": TcpConntrack.CLOSE_WAIT,
    "nf_conntrack_tcp_timeout_last_ack": TcpConntrack.LAST_ACK,
    "nf_conntrack_tcp_timeout_time_wait": TcpConntrack.TIME_WAIT,
    "nf_conntrack_tcp_timeout_close": TcpConntrack.CLOSE,
    "nf_conntrack_tcp_timeout_max_retrans": TcpConntrack.RETRANS,
    "nf_conntrack_tcp_timeout_unacknowledged": TcpConntrack.UNACK,
}
TCP_FLAG_SYSCTLS = {  # name -> (params word, Linux default)
    "nf_conntrack_tcp_loose": (TCP_P_LOOSE, 1),
    "nf_conntrack_tcp_be_liberal": (TCP_P_BE_LIBERAL, 0),
    "nf_conntrack_tcp_ignore_invalid_rst": (TCP_P_IGNORE_INVALID_RST, 0),
    "nf_conntrack_tcp_max_retrans": (TCP_P_MAX_RETRANS, TCP_MAX_RETRANS),
}
# nf_conntrack_proto_tcp.c › tcp_conntracks[dir][index][old_state]
TCP_CONNTRACKS = np.array([
    [  # ORIGINAL
        # sNO, sSS, sSR, sES, sFW, sCW, sLA, sTW, sCL, sS2
        [sSS, sSS, sIG, sIG, sIG, sIG, sIG, sSS, sSS, sS2],  # syn
        [sIV, sIV, sSR, sIV, sIV, sIV, sIV, sIV, sIV, sSR],  # synack
        [sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV],  # fin
        [sES, sIV, sES, sES, sCW, sCW, sTW, sTW, sCL, sIV],  # ack
        [sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL],  # rst
        [sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV],  # none
    ],
    [  # REPLY
        [sIV, sS2, sIV, sIV, sIV, sIV, sIV, sSS, sIV, sS2],  # syn
        [sIV, sSR, sIG, sIG, sIG, sIG, sIG, sIG, sIG, sSR],  # synack
        [sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV],  # fin
        [sIV, sIG, sSR, sES, sCW, sCW, sTW, sTW, sCL, sIG],  # ack
        [sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL],  # rst
        [sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV],  # none
    ],
], np.int64)  # fmt: skip

U32 = 0xFFFFFFFF
_FIN, _SYN, _RST, _ACK, _URG = L.TCPHDR_FIN, L.TCPHDR_SYN, L.TCPHDR_RST, L.TCPHDR_ACK, L.TCPHDR_URG
_P = CT_PROTO
_FLAGS_IGNORED = L.TCPHDR_ECE | L.TCPHDR_CWR | L.TCPHDR_PSH
# nf_conntrack_proto_tcp.c › tcp_valid_flags, indexed by the flags without ECE, CWR and PSH
TCP_VALID_FLAGS = np.zeros(64, np.uint8)
TCP_VALID_FLAGS[[_SYN, _SYN | _URG, _SYN | _ACK, _RST, _RST | _ACK, _FIN | _ACK, _FIN | _ACK | _URG, _ACK,
                 _ACK | _URG]] = 1  # fmt: skip


@njit(cache=True, nogil=True)
def before(a, b):
    """Sequence-space a < b (include/net/tcp.h › before): (s32)(a - b) < 0."""
    return ((a - b) & U32) >= 0x80000000


@njit(cache=True, nogil=True)
def after(a, b):
    return before(b, a)


@njit(cache=True, nogil=True)
def get_conntrack_index(flags):
    """Linux: get_conntrack_index: which row of the state table a segment uses."""
    if flags & _RST:
        return TCP_RST_SET
    if flags & _SYN:
        return TCP_SYNACK_SET if flags & _ACK else TCP_SYN_SET
    if flags & _FIN:
        return TCP_FIN_SET
    if flags & _ACK:
        return TCP_ACK_SET
    return TCP_NONE_SET


@njit(cache=True, nogil=True)
def _syn_states(state):
    return state == sSS or state == sSR


@njit(cache=True, nogil=True)
def seen_base(dir):
    """Index in the row of struct ip_ct_tcp_state seen[dir] (add TD_*)."""
    return _P + TCP_SEEN + TCP_SEEN_WORDS * dir


@njit(cache=True, nogil=True)
def tcp_error(buf, nhoff, thoff, l3len):
    """True when the segment is INVALID before any state is looked at: truncated header, invalid flags.

    Linux: tcp_error, but for the checksum (tcp_checksum_bad: the caller's, only at PRE_ROUTING).
    buf uint8[:] holding the packet: the IP packet is l3len bytes from nhoff, the TCP header at thoff.
    """
    end = nhoff + l3len
    if thoff < 0 or end > buf.shape[0] or end - thoff < L.TCPH.size:
        return True
    doff = (np.int64(buf[thoff + L.TCPH.doff_res]) >> 4) * 4
    if doff < L.TCPH.size or end - thoff < doff:
        return True
    return TCP_VALID_FLAGS[np.int64(buf[thoff + L.TCPH.flags]) & ~_FLAGS_IGNORED] == 0


@njit(cache=True, nogil=True)
def tcp_checksum_bad(buf, nhoff, thoff, l3len):
    """tcp_error's checksum check (nf_checksum; nf_conntrack_checksum=1, PRE_ROUTING only).

    False for a segment too short to hold its checksum: tcp_error rejects it first, as Linux's order.
    """
    end = nhoff + l3len
    if thoff < 0 or end > buf.shape[0] or end - thoff < L.TCPH.size:
        return False
    is_ipv6 = (buf[nhoff] >> 4) == 6
    return l4_csum(buf, nhoff, thoff, end - thoff, is_ipv6, L.IPPROTO_TCP, L.TCPH.check) != ld16(
        buf, thoff + L.TCPH.check
    )


@njit(cache=True, nogil=True)
def tcp_seg(buf, nhoff, thoff, l3len):
    """The fields of one segment the tracker reads: (doff, flags, seq, ack_seq, window, end).

    buf uint8[:] holding the packet; the IP packet is l3len bytes from nhoff (the buffer may be a longer
    slot), the TCP header at thoff, already checked by tcp_error. end is Linux's segment_seq_plus_len:
    seq + payload + SYN + FIN, mod 2**32.
    """
    doff = (np.int64(buf[thoff + L.TCPH.doff_res]) >> 4) * 4
    flags = np.int64(buf[thoff + L.TCPH.flags])
    seq = ld32(buf, thoff + L.TCPH.seq)
    plen = nhoff + l3len - thoff - doff
    end = (seq + plen + (1 if flags & _SYN else 0) + (1 if flags & _FIN else 0)) & U32
    return doff, flags, seq, ld32(buf, thoff + L.TCPH.ack_seq), ld16(buf, thoff + L.TCPH.window), end


@njit(cache=True, nogil=True)
def tcp_options_parse(buf, thoff, doff):
    """Window scale and SACK-permitted options: (sack_perm, wscale or -1 when absent, last one kept).

    Linux: tcp_options' walk: stops at EOL, at a length below 2 or past the header (silly or partial
    option); only the exact option sizes count.
    """
    off, length = thoff + L.TCPH.size, doff - L.TCPH.size
    sack_perm, wscale = False, -1
    while length > 0:
        kind = np.int64(buf[off])
        if kind == TCPOPT_EOL:
            break
        if kind == TCPOPT_NOP:
            off, length = off + 1, length - 1
            continue
        if length < 2:
            break
        size = np.int64(buf[off + 1])
        if size < 2 or size > length:
            break
        if kind == TCPOPT_SACK_PERM and size == TCPOLEN_SACK_PERM:
            sack_perm = True
        elif kind == TCPOPT_WINDOW and size == TCPOLEN_WINDOW:
            wscale = min(np.int64(buf[off + 2]), TCP_MAX_WSCALE)
        off, length = off + size, length - size
    return sack_perm, wscale


@njit(cache=True, nogil=True)
def tcp_options(hot_row, s, buf, thoff, doff):
    """Linux: tcp_options: window scale and SACK-permitted of a SYN into the ip_ct_tcp_state at s."""
    if doff == L.TCPH.size:
        return
    sack_perm, wscale = tcp_options_parse(buf, thoff, doff)
    hot_row[s + TD_SCALE] = 0
    hot_row[s + TD_FLAGS] &= IP_CT_TCP_FLAG_BE_LIBERAL
    if sack_perm:
        hot_row[s + TD_FLAGS] |= IP_CT_TCP_FLAG_SACK_PERM
    if wscale >= 0:
        hot_row[s + TD_SCALE] = wscale
        hot_row[s + TD_FLAGS] |= IP_CT_TCP_FLAG_WINDOW_SCALE


@njit(cache=True, nogil=True)
def tcp_sack(buf, thoff, doff, sack):
    """Linux: tcp_sack: the highest right edge among the SACK blocks, if above `sack`.

    Deviation (kept from the Python tracker this replaces): the first SACK option ends the walk even
    when its size is not 2 + 8n; Linux goes on to a later one.
    """
    off, length = thoff + L.TCPH.size, doff - L.TCPH.size
    while length > 0:
        kind = np.int64(buf[off])
        if kind == TCPOPT_EOL:
            break
        if kind == TCPOPT_NOP:
            off, length = off + 1, length - 1
            continue
        if length < 2:
            break
        size = np.int64(buf[off + 1])
        if size < 2 or size > length:
            break
        if kind == TCPOPT_SACK:
            n = size - TCPOLEN_SACK_BASE
            if n >= TCPOLEN_SACK_PERBLOCK and n % TCPOLEN_SACK_PERBLOCK == 0:
                for i in range(0, n, TCPOLEN_SACK_PERBLOCK):
                    right = ld32(buf, off + TCPOLEN_SACK_BASE + i + 4)
                    if after(right, sack):
                        sack = right
            return sack
        off, length = off + size, length - size
    return sack


@njit(cache=True, nogil=True)
def tcp_init_sender(hot_row, dir, buf, thoff, doff, win, end):
    """Linux: tcp_init_sender: a SYN/ACK (or a reply SYN) starts the sender's window."""
    s, r = seen_base(dir), seen_base(1 - dir)
    hot_row[s + TD_END] = end
    hot_row[s + TD_MAXEND] = end
    hot_row[s + TD_MAXWIN] = win if win else 1
    tcp_options(hot_row, s, buf, thoff, doff)
    # RFC 7323 §2.2: scaling only when both sides offered it.
    both = hot_row[s + TD_FLAGS] & hot_row[r + TD_FLAGS] & IP_CT_TCP_FLAG_WINDOW_SCALE
    if dir == IP_CT_DIR_REPLY and not both:
        hot_row[s + TD_SCALE] = 0
        hot_row[r + TD_SCALE] = 0


@njit(cache=True, nogil=True)
def tcp_in_window(hot_row, dir, index, buf, thoff, doff, flags, seq, ack, win, end, be_liberal):
    """Is the segment inside the window both sides advertised? Updates the sides' bounds.

    Linux: tcp_in_window (6.x), returning enum nf_ct_tcp_action. An out-of-window segment from a
    BE_LIBERAL sender (or with nf_conntrack_tcp_be_liberal) is accepted without updating anything
    (nf_tcp_log_invalid). seq, ack, win, end as tcp_seg gives them.
    """
    s, r = seen_base(dir), seen_base(1 - dir)
    sack = ack
    if hot_row[r + TD_FLAGS] & IP_CT_TCP_FLAG_SACK_PERM:
        sack = tcp_sack(buf, thoff, doff, sack)
    if hot_row[s + TD_MAXWIN] == 0:
        if flags & _SYN:
            tcp_init_sender(hot_row, dir, buf, thoff, doff, win, end)
            if not flags & _ACK:
                return NFCT_TCP_ACCEPT  # simultaneous open
        else:
            # Mid-stream: history lost, take what the packet says.
            hot_row[s + TD_END] = end
            swin = (win << hot_row[s + TD_SCALE]) & U32
            hot_row[s + TD_MAXWIN] = swin if swin else 1
            hot_row[s + TD_MAXEND] = (end + hot_row[s + TD_MAXWIN]) & U32
            if hot_row[r + TD_MAXWIN] == 0:
                hot_row[r + TD_END] = sack
                hot_row[r + TD_MAXEND] = sack
            elif sack == (hot_row[r + TD_END] + 1) & U32:
                hot_row[r + TD_END] = sack  # likely a keepalive reply
    elif flags & _SYN and after(end, hot_row[s + TD_END]) and _syn_states(hot_row[_P + TCP_STATE]):
        tcp_init_sender(hot_row, dir, buf, thoff, doff, win, end)  # RFC 793: reinitialised, larger seq
        if dir == IP_CT_DIR_REPLY and not flags & _ACK:
            return NFCT_TCP_ACCEPT
    if not flags & _ACK or (flags & (_ACK | _RST) == (_ACK | _RST) and ack == 0):
        ack = sack = hot_row[r + TD_END]  # no ACK (or a broken RST with ACK 0): pretend it is fine
    if flags & _RST and seq == 0 and hot_row[_P + TCP_STATE] == sSS:
        seq = end = hot_row[s + TD_END]  # RST answering a SYN
    return tcp_in_window_bounds(hot_row, dir, index, flags, seq, ack, sack, win, end, be_liberal)


@njit(cache=True, nogil=True)
def tcp_in_window_bounds(hot_row, dir, index, flags, seq, ack, sack, win, end, be_liberal):
    """The second half of tcp_in_window: the four bounds checks, then the updates of both sides."""
    s, r = seen_base(dir), seen_base(1 - dir)
    liberal = (hot_row[s + TD_FLAGS] & IP_CT_TCP_FLAG_BE_LIBERAL) != 0 or be_liberal != 0
    r_end, r_maxwin = hot_row[r + TD_END], hot_row[r + TD_MAXWIN]
    maxackwin = max(hot_row[s + TD_MAXWIN], MAXACKWINCONST)
    if not before(seq, hot_row[s + TD_MAXEND] + 1):
        overshot = (end - hot_row[s + TD_MAXEND] + 1) & U32
        ack_ok = after(sack, r_end - maxackwin - 1)
        in_recv_win = r_maxwin != 0 and after(end, hot_row[s + TD_END] - r_maxwin - 1)
        if in_recv_win and ack_ok and overshot <= r_maxwin and before(sack, r_end + 1):
            # More than the receive window allowed: remember it so the peer's ACK still fits.
            hot_row[s + TD_END] = end
            hot_row[s + TD_FLAGS] |= IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED
            return NFCT_TCP_ACCEPT if liberal else NFCT_TCP_IGNORE
        return NFCT_TCP_ACCEPT if liberal else NFCT_TCP_INVALID  # SEQ over the upper bound
    if not before(sack, r_end + 1):
        return NFCT_TCP_ACCEPT if liberal else NFCT_TCP_INVALID  # ACK for data not seen yet
    if r_maxwin != 0 and not after(end, hot_row[s + TD_END] - r_maxwin - 1):
        return NFCT_TCP_ACCEPT if liberal else NFCT_TCP_IGNORE  # already ACKed data retransmitted
    if not after(sack, r_end - maxackwin - 1):
        return NFCT_TCP_ACCEPT if liberal else NFCT_TCP_IGNORE  # overly delayed ACK
    # ---- in window: writes from here on ----
    swin = win if flags & _SYN else (win << hot_row[s + TD_SCALE]) & U32
    hot_row[s + TD_MAXWIN] = max(hot_row[s + TD_MAXWIN], (swin + (sack - ack)) & U32)
    if after(end, hot_row[s + TD_END]):
        hot_row[s + TD_END] = end
        hot_row[s + TD_FLAGS] |= IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED
    if flags & _ACK:
        if not hot_row[s + TD_FLAGS] & IP_CT_TCP_FLAG_MAXACK_SET:
            hot_row[s + TD_MAXACK] = ack
            hot_row[s + TD_FLAGS] |= IP_CT_TCP_FLAG_MAXACK_SET
        elif after(ack, hot_row[s + TD_MAXACK]):
            hot_row[s + TD_MAXACK] = ack
    if r_maxwin != 0 and after(end, hot_row[s + TD_MAXEND]):
        hot_row[r + TD_MAXWIN] = (r_maxwin + end - hot_row[s + TD_MAXEND]) & U32
    if after(sack + swin, hot_row[r + TD_MAXEND] - 1):
        hot_row[r + TD_MAXEND] = (sack + swin + (1 if swin == 0 else 0)) & U32
    if ack == r_end:
        hot_row[r + TD_FLAGS] &= ~IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED
    if index == TCP_ACK_SET:
        tcp_retrans_count(hot_row, dir, seq, ack, end, win)
    return NFCT_TCP_ACCEPT


@njit(cache=True, nogil=True)
def tcp_retrans_count(hot_row, dir, seq, ack, end, win):
    """Count a repeat of the last ACK segment (same dir, seq, ack, end and unscaled window)."""
    p = _P
    if (
        hot_row[p + TCP_LAST_DIR] == dir
        and hot_row[p + TCP_LAST_SEQ] == seq
        and hot_row[p + TCP_LAST_ACK] == ack
        and hot_row[p + TCP_LAST_END] == end
        and hot_row[p + TCP_LAST_WIN] == win
    ):
        hot_row[p + TCP_RETRANS] += 1
    else:
        hot_row[p + TCP_LAST_DIR] = dir
        hot_row[p + TCP_LAST_SEQ] = seq
        hot_row[p + TCP_LAST_ACK] = ack
        hot_row[p + TCP_LAST_END] = end
        hot_row[p + TCP_LAST_WIN] = win
        hot_row[p + TCP_RETRANS] = 0
