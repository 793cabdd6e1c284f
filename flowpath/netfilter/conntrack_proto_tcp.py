"""TCP connection tracking: the state table, timeouts and the per-packet state machine.

Linux: net/netfilter/nf_conntrack_proto_tcp.c (tcp_conntracks, tcp_timeouts, get_conntrack_index,
tcp_error, tcp_new, nf_conntrack_tcp_packet). Defaults as Linux: nf_conntrack_tcp_loose=1 (mid-stream
pickup), nf_conntrack_tcp_be_liberal=0, nf_conntrack_checksum=1.

Window tracking (tcp_in_window) follows Linux 6.x: sequence/ack bounds, window scaling and SACK options,
DATA_UNACKNOWLEDGED and retransmission counting (which shorten the timeout to 5 min), ignored and
invalid segments. There is no sequence adjustment (no helpers, so nf_ct_seq_offset is always 0).
"""

from __future__ import annotations

from enum import IntEnum

from flowpath.netfilter.conntrack_proto import nf_l4_checksum_bad
from flowpath.netfilter.conntrack_tuple import (
    NSEC_PER_SEC,
    IpCtTcp,
    IpCtTcpState,
    NfConn,
    nf_ct_acct_update,
    nf_ct_is_confirmed,
    nf_ct_refresh_acct,
)
from flowpath.netfilter.constants import (
    IP_CT_DIR_ORIGINAL,
    IP_CT_DIR_REPLY,
    IPS_ASSURED,
    IPS_FIXED_TIMEOUT,
    IPS_SEEN_REPLY,
    NF_ACCEPT,
    NF_REPEAT,
)
from flowpath.packet import layout as L
from flowpath.packet.csum import ld16, ld32
from flowpath.packet.skb import SkBuff


class TcpConntrack(IntEnum):
    """enum tcp_conntrack (include/uapi/linux/netfilter/nf_conntrack_tcp.h)."""

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


TCP_CONNTRACK_NAMES = tuple(s.name for s in TcpConntrack if s < TcpConntrack.MAX)

_S, _M = NSEC_PER_SEC, 60 * NSEC_PER_SEC
# nf_conntrack_proto_tcp.c › tcp_timeouts
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

# enum tcp_bit_set
TCP_SYN_SET, TCP_SYNACK_SET, TCP_FIN_SET, TCP_ACK_SET, TCP_RST_SET, TCP_NONE_SET = range(6)

# include/uapi/linux/netfilter/nf_conntrack_tcp.h
IP_CT_TCP_FLAG_WINDOW_SCALE = 0x01
IP_CT_TCP_FLAG_SACK_PERM = 0x02
IP_CT_TCP_FLAG_CLOSE_INIT = 0x04
IP_CT_TCP_FLAG_BE_LIBERAL = 0x08
IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED = 0x10
IP_CT_TCP_FLAG_MAXACK_SET = 0x20
IP_CT_EXP_CHALLENGE_ACK = 0x40  # last_flags: an RFC 5961 challenge ACK may follow
IP_CT_TCP_SIMULTANEOUS_OPEN = 0x80  # last_flags
TCP_MAX_RETRANS = 3  # nf_conntrack_tcp_max_retrans
TCP_MAX_WSCALE = 14
MAXACKWINCONST = 66000
TCPOPT_EOL, TCPOPT_NOP, TCPOPT_WINDOW, TCPOPT_SACK_PERM, TCPOPT_SACK, TCPOPT_TIMESTAMP = 0, 1, 3, 4, 5, 8
NFCT_TCP_IGNORE, NFCT_TCP_INVALID, NFCT_TCP_ACCEPT = range(3)  # enum nf_ct_tcp_action

(sNO, sSS, sSR, sES, sFW, sCW, sLA, sTW, sCL, sS2, sIV, sIG) = (  # noqa: N816 (kernel spelling)
    TcpConntrack.NONE, TcpConntrack.SYN_SENT, TcpConntrack.SYN_RECV, TcpConntrack.ESTABLISHED,
    TcpConntrack.FIN_WAIT, TcpConntrack.CLOSE_WAIT, TcpConntrack.LAST_ACK, TcpConntrack.TIME_WAIT,
    TcpConntrack.CLOSE, TcpConntrack.SYN_SENT2, TcpConntrack.MAX, TcpConntrack.IGNORE,
)  # fmt: skip

# nf_conntrack_proto_tcp.c › tcp_conntracks[dir][index][old_state]
TCP_CONNTRACKS = (
    (  # ORIGINAL
        # sNO, sSS, sSR, sES, sFW, sCW, sLA, sTW, sCL, sS2
        (sSS, sSS, sIG, sIG, sIG, sIG, sIG, sSS, sSS, sS2),  # syn
        (sIV, sIV, sSR, sIV, sIV, sIV, sIV, sIV, sIV, sSR),  # synack
        (sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV),  # fin
        (sES, sIV, sES, sES, sCW, sCW, sTW, sTW, sCL, sIV),  # ack
        (sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL),  # rst
        (sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV),  # none
    ),
    (  # REPLY
        (sIV, sS2, sIV, sIV, sIV, sIV, sIV, sSS, sIV, sS2),  # syn
        (sIV, sSR, sIG, sIG, sIG, sIG, sIG, sIG, sIG, sSR),  # synack
        (sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV),  # fin
        (sIV, sIG, sSR, sES, sCW, sCW, sTW, sTW, sCL, sIG),  # ack
        (sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL),  # rst
        (sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV),  # none
    ),
)  # fmt: skip

_FIN, _SYN, _RST, _PSH, _ACK, _URG = (L.TCPHDR_FIN, L.TCPHDR_SYN, L.TCPHDR_RST, L.TCPHDR_PSH,
                                      L.TCPHDR_ACK, L.TCPHDR_URG)  # fmt: skip
# nf_conntrack_proto_tcp.c › tcp_valid_flags (ECE, CWR and PSH masked off)
TCP_VALID_FLAGS = frozenset({
    _SYN, _SYN | _URG, _SYN | _ACK, _RST, _RST | _ACK, _FIN | _ACK, _FIN | _ACK | _URG, _ACK, _ACK | _URG,
})  # fmt: skip


def get_conntrack_index(flags: int) -> int:
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


def before(a: int, b: int) -> bool:
    """Sequence-space a < b (include/net/tcp.h › before)."""
    return ((a - b) & 0xFFFFFFFF) >= 0x80000000


def after(a: int, b: int) -> bool:
    return before(b, a)


def nf_conntrack_tcp_established(ct: NfConn) -> bool:
    """Linux: nf_conntrack_tcp_established (also used by the flowtable to allow offload)."""
    return ct.proto.state == TcpConntrack.ESTABLISHED and bool(ct.status & IPS_ASSURED)


def tcp_can_early_drop(ct: NfConn) -> bool:
    return ct.proto.state in (sFW, sLA, sTW, sCL, sCW)


class TcpSeg:
    """The fields of one segment the tracker reads (seq, ack_seq, window, flags, end of the segment)."""

    __slots__ = ("b", "thoff", "doff", "flags", "seq", "ack_seq", "win", "end")

    def __init__(self, b, thoff: int):
        self.b, self.thoff = b, thoff
        self.doff = (int(b[thoff + L.TCPH.doff_res]) >> 4) * 4
        self.flags = int(b[thoff + L.TCPH.flags])
        self.seq = ld32(b, thoff + L.TCPH.seq)
        self.ack_seq = ld32(b, thoff + L.TCPH.ack_seq)
        self.win = ld16(b, thoff + L.TCPH.window)
        # segment_seq_plus_len: seq + payload + SYN + FIN
        plen = b.shape[0] - thoff - self.doff
        self.end = (
            self.seq + plen + (1 if self.flags & _SYN else 0) + (1 if self.flags & _FIN else 0)
        ) & 0xFFFFFFFF

    def options(self):
        """(kind, bytes) of each TCP option, stopping where Linux's parsers stop."""
        b, off, length = self.b, self.thoff + L.TCPH.size, self.doff - L.TCPH.size
        while length > 0:
            kind = int(b[off])
            if kind == TCPOPT_EOL:
                return
            if kind == TCPOPT_NOP:
                off, length = off + 1, length - 1
                continue
            if length < 2:
                return
            size = int(b[off + 1])
            if size < 2 or size > length:
                return  # silly or partial option
            yield kind, b[off + 2 : off + size]
            off, length = off + size, length - size


def tcp_options(seg: TcpSeg, state: IpCtTcpState) -> None:
    """Linux: tcp_options: window scale and SACK-permitted of a SYN."""
    if seg.doff == L.TCPH.size:
        return
    state.td_scale = 0
    state.flags &= IP_CT_TCP_FLAG_BE_LIBERAL
    for kind, data in seg.options():
        if kind == TCPOPT_SACK_PERM and len(data) == 0:
            state.flags |= IP_CT_TCP_FLAG_SACK_PERM
        elif kind == TCPOPT_WINDOW and len(data) == 1:
            state.td_scale = min(int(data[0]), TCP_MAX_WSCALE)
            state.flags |= IP_CT_TCP_FLAG_WINDOW_SCALE


def tcp_sack(seg: TcpSeg, sack: int) -> int:
    """Linux: tcp_sack: the highest right edge among the SACK blocks, if above the ACK."""
    for kind, data in seg.options():
        if kind == TCPOPT_SACK:
            if len(data) >= 8 and len(data) % 8 == 0:
                for i in range(0, len(data), 8):
                    right = int.from_bytes(data[i + 4 : i + 8].tobytes(), "big")
                    if after(right, sack):
                        sack = right
            return sack
    return sack


def tcp_init_sender(sender: IpCtTcpState, receiver: IpCtTcpState, seg: TcpSeg, dir: int) -> None:
    """Linux: tcp_init_sender: a SYN/ACK (or a reply SYN) starts the sender's window."""
    sender.td_end = sender.td_maxend = seg.end
    sender.td_maxwin = seg.win or 1
    tcp_options(seg, sender)
    # RFC 7323 §2.2: scaling only when both sides offered it.
    if dir == IP_CT_DIR_REPLY and not (
        sender.flags & IP_CT_TCP_FLAG_WINDOW_SCALE and receiver.flags & IP_CT_TCP_FLAG_WINDOW_SCALE
    ):
        sender.td_scale = receiver.td_scale = 0


def tcp_in_window(tcp: IpCtTcp, dir: int, index: int, seg: TcpSeg) -> int:
    """Is the segment inside the window both sides advertised? Updates the sides' bounds.

    Linux: tcp_in_window (6.x, returning enum nf_ct_tcp_action); an out-of-window segment from a
    BE_LIBERAL side is accepted without updating anything (nf_tcp_log_invalid).
    """
    sender, receiver = tcp.seen[dir], tcp.seen[1 - dir]
    flags, end, win = seg.flags, seg.end, seg.win
    seq = seg.seq
    ack = sack = seg.ack_seq
    if receiver.flags & IP_CT_TCP_FLAG_SACK_PERM:
        sack = tcp_sack(seg, sack)
    if sender.td_maxwin == 0:
        if flags & _SYN:
            tcp_init_sender(sender, receiver, seg, dir)
            if not flags & _ACK:
                return NFCT_TCP_ACCEPT  # simultaneous open
        else:
            # Mid-stream: history lost, take what the packet says.
            sender.td_end = end
            swin = (win << sender.td_scale) & 0xFFFFFFFF
            sender.td_maxwin = swin or 1
            sender.td_maxend = (end + sender.td_maxwin) & 0xFFFFFFFF
            if receiver.td_maxwin == 0:
                receiver.td_end = receiver.td_maxend = sack
            elif sack == (receiver.td_end + 1) & 0xFFFFFFFF:
                receiver.td_end = (receiver.td_end + 1) & 0xFFFFFFFF  # likely a keepalive reply
    elif flags & _SYN and after(end, sender.td_end) and tcp.state in (sSS, sSR):
        tcp_init_sender(sender, receiver, seg, dir)  # RFC 793: a reinitialised TCP, larger sequence
        if dir == IP_CT_DIR_REPLY and not flags & _ACK:
            return NFCT_TCP_ACCEPT
    if not flags & _ACK or (flags & (_ACK | _RST) == (_ACK | _RST) and ack == 0):
        ack = sack = receiver.td_end  # no ACK (or a broken RST with ACK 0): pretend it is fine
    if flags & _RST and seq == 0 and tcp.state == sSS:
        seq = end = sender.td_end  # RST answering a SYN
    liberal = bool(sender.flags & IP_CT_TCP_FLAG_BE_LIBERAL)
    maxackwin = max(sender.td_maxwin, MAXACKWINCONST)
    if not before(seq, (sender.td_maxend + 1) & 0xFFFFFFFF):
        overshot = (end - sender.td_maxend + 1) & 0xFFFFFFFF
        ack_ok = after(sack, (receiver.td_end - maxackwin - 1) & 0xFFFFFFFF)
        in_recv_win = receiver.td_maxwin and after(end, (sender.td_end - receiver.td_maxwin - 1) & 0xFFFFFFFF)
        if in_recv_win and ack_ok and overshot <= receiver.td_maxwin and before(sack, receiver.td_end + 1):
            # More than the receive window allowed: remember it so the peer's ACK still fits.
            sender.td_end = end
            sender.flags |= IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED
            return NFCT_TCP_ACCEPT if liberal else NFCT_TCP_IGNORE
        return NFCT_TCP_ACCEPT if liberal else NFCT_TCP_INVALID  # SEQ over the upper bound
    if not before(sack, (receiver.td_end + 1) & 0xFFFFFFFF):
        return NFCT_TCP_ACCEPT if liberal else NFCT_TCP_INVALID  # ACK for data not seen yet
    if receiver.td_maxwin and not after(end, (sender.td_end - receiver.td_maxwin - 1) & 0xFFFFFFFF):
        return NFCT_TCP_ACCEPT if liberal else NFCT_TCP_IGNORE  # already ACKed data retransmitted
    if not after(sack, (receiver.td_end - maxackwin - 1) & 0xFFFFFFFF):
        return NFCT_TCP_ACCEPT if liberal else NFCT_TCP_IGNORE  # overly delayed ACK
    if not flags & _SYN:
        win = (win << sender.td_scale) & 0xFFFFFFFF
    swin = (win + (sack - ack)) & 0xFFFFFFFF
    sender.td_maxwin = max(sender.td_maxwin, swin)
    if after(end, sender.td_end):
        sender.td_end = end
        sender.flags |= IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED
    if flags & _ACK:
        if not sender.flags & IP_CT_TCP_FLAG_MAXACK_SET:
            sender.td_maxack = ack
            sender.flags |= IP_CT_TCP_FLAG_MAXACK_SET
        elif after(ack, sender.td_maxack):
            sender.td_maxack = ack
    if receiver.td_maxwin != 0 and after(end, sender.td_maxend):
        receiver.td_maxwin = (receiver.td_maxwin + end - sender.td_maxend) & 0xFFFFFFFF
    if after((sack + win) & 0xFFFFFFFF, (receiver.td_maxend - 1) & 0xFFFFFFFF):
        receiver.td_maxend = (sack + win + (1 if win == 0 else 0)) & 0xFFFFFFFF
    if ack == receiver.td_end:
        receiver.flags &= ~IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED
    if index == TCP_ACK_SET:
        last = (tcp.last_dir, tcp.last_seq, tcp.last_ack, tcp.last_end, tcp.last_win)
        if last == (dir, seq, ack, end, seg.win):
            tcp.retrans += 1
        else:
            tcp.last_dir, tcp.last_seq, tcp.last_ack, tcp.last_end, tcp.last_win = dir, seq, ack, end, seg.win
            tcp.retrans = 0
    return NFCT_TCP_ACCEPT


def nf_tcp_handle_invalid(ct: NfConn, dir: int, index: int, now_ns: int) -> None:
    """Linux: nf_tcp_handle_invalid: an out-of-window FIN/RST answering the peer's FIN/RST shortens
    an assured entry's timeout to the unacknowledged one, so dead connections leave sooner."""
    tcp = ct.proto
    if (
        not ct.status & IPS_ASSURED
        or ct.status & IPS_FIXED_TIMEOUT
        or index not in (TCP_RST_SET, TCP_FIN_SET)
    ):
        return
    if tcp.last_dir != dir and tcp.last_index in (TCP_FIN_SET, TCP_RST_SET):
        expires = ct.timeout_ns - now_ns
        if expires < 120 * _S:
            return
        if expires > TCP_TIMEOUTS_NS[TcpConntrack.UNACK]:
            ct.timeout_ns = now_ns + TCP_TIMEOUTS_NS[TcpConntrack.UNACK]
    else:
        tcp.last_index, tcp.last_dir = index, dir


def nf_conntrack_tcp_set_closing(ct: NfConn, now_ns: int) -> None:
    """Force CLOSE with the CLOSE timeout (the flowtable's teardown of a closing flow calls this).

    Linux: nf_conntrack_proto_tcp.c › nf_conntrack_tcp_set_closing.
    """
    if not nf_ct_is_confirmed(ct):
        return
    old_state = ct.proto.state
    ct.proto.state = sCL
    if old_state == sCL or ct.status & IPS_FIXED_TIMEOUT:
        return
    ct.timeout_ns = now_ns + TCP_TIMEOUTS_NS[sCL]


def tcp_error(skb: SkBuff, thoff: int, check_csum: bool) -> bool:
    """True when the segment is INVALID before any state is looked at.

    Linux: tcp_error: truncated header, bad checksum (PRE_ROUTING only), invalid flag combination.
    """
    b = skb.buf
    doff = (int(b[thoff + L.TCPH.doff_res]) >> 4) * 4
    if doff < L.TCPH.size or b.shape[0] - thoff < doff:
        return True
    if check_csum and nf_l4_checksum_bad(skb, thoff, L.IPPROTO_TCP):
        return True
    return (int(b[thoff + L.TCPH.flags]) & ~(L.TCPHDR_ECE | L.TCPHDR_CWR | _PSH)) not in TCP_VALID_FLAGS


def tcp_new(ct: NfConn, seg: TcpSeg) -> bool:
    """Start tracking: False when the first segment cannot open a connection.

    Linux: tcp_new. A SYN opens SYN_SENT; anything the table maps to a state from NONE (a bare ACK) is
    picked up mid-stream with liberal window checking (nf_conntrack_tcp_loose=1).
    """
    new_state = TCP_CONNTRACKS[0][get_conntrack_index(seg.flags)][sNO]
    if new_state >= sIV:
        return False
    ct.proto = IpCtTcp()  # zeroes the connection's protocol words
    tcp = ct.proto
    first = tcp.seen[0]
    first.td_end = seg.end
    first.td_maxwin = seg.win or 1
    if new_state == sSS:
        first.td_maxend = first.td_end
        tcp_options(seg, first)
    else:
        first.td_maxend = (first.td_end + first.td_maxwin) & 0xFFFFFFFF
        tcp.seen[0].flags = tcp.seen[1].flags = IP_CT_TCP_FLAG_SACK_PERM | IP_CT_TCP_FLAG_BE_LIBERAL
    tcp.last_index = TCP_NONE_SET
    return True


def _tcp_ignore(tcp: IpCtTcp, dir: int, index: int, old_state: int, seg: TcpSeg) -> int:
    """The IGNORE case of nf_conntrack_tcp_packet: remember the segment, let it pass, keep the state."""
    tcp.last_index, tcp.last_dir = index, dir
    tcp.last_seq, tcp.last_end, tcp.last_win = seg.seq, seg.end, seg.win
    if index == TCP_SYN_SET and dir == IP_CT_DIR_ORIGINAL:
        # A SYN we are not in sync with: note its options in case the SYN/ACK proves it right.
        seen = IpCtTcpState()
        tcp_options(seg, seen)
        tcp.last_flags = seen.flags & (IP_CT_TCP_FLAG_WINDOW_SCALE | IP_CT_TCP_FLAG_SACK_PERM)
        tcp.last_wscale = seen.td_scale if seen.flags & IP_CT_TCP_FLAG_WINDOW_SCALE else 0
        if old_state == sLA:
            tcp.last_flags |= IP_CT_EXP_CHALLENGE_ACK
    if old_state == sSS and index == TCP_ACK_SET and dir == IP_CT_DIR_REPLY:
        tcp.last_ack = seg.ack_seq  # possible challenge ACK answering the SYN
    return NF_ACCEPT


def _tcp_resync(tcp: IpCtTcp, dir: int) -> None:
    """A SYN/ACK acknowledging a SYN we ignored: take the ignored SYN's annotations as the truth."""
    side = tcp.seen[tcp.last_dir]
    side.td_end = side.td_maxend = tcp.last_end
    side.td_maxwin = tcp.last_win or 1
    side.td_scale = tcp.last_wscale
    tcp.last_flags &= ~IP_CT_EXP_CHALLENGE_ACK
    side.flags = tcp.last_flags
    other = tcp.seen[dir]  # nf_ct_tcp_state_reset
    other.td_end = other.td_maxend = other.td_maxwin = other.td_maxack = other.td_scale = 0
    other.flags &= IP_CT_TCP_FLAG_BE_LIBERAL


def _tcp_close_rst(ct: NfConn, dir: int, old_state: int, seg: TcpSeg) -> tuple[int, bool | None]:
    """The RST checks of the CLOSE case: (new_state adjustment, skip_window) or invalid (None)."""
    tcp = ct.proto
    if tcp_can_early_drop(ct):
        return sCL, True
    new_state = sCL
    peer = tcp.seen[1 - dir]
    if peer.flags & IP_CT_TCP_FLAG_MAXACK_SET and tcp.last_index != TCP_SYN_SET:
        seq = seg.seq
        if seq == 0 and not nf_conntrack_tcp_established(ct):
            return new_state, False
        if before(seq, peer.td_maxack):
            return new_state, None  # invalid RST (nf_conntrack_tcp_ignore_invalid_rst=0)
        if not nf_conntrack_tcp_established(ct) or seq == peer.td_maxack:
            return new_state, False
        if tcp.last_index == TCP_ACK_SET and tcp.last_dir == dir and seq == tcp.last_end:
            return new_state, False  # RST closing a train of segments
        new_state = old_state  # inexact: keep the state for a possible challenge ACK
    if (
        (ct.status & IPS_SEEN_REPLY and tcp.last_index == TCP_SYN_SET)
        or (not ct.status & IPS_ASSURED and tcp.last_index == TCP_ACK_SET)
    ) and seg.ack_seq == tcp.last_end:
        return new_state, True  # RST answering a SYN or ACK we let through
    if old_state == sSS and tcp.last_index == TCP_ACK_SET and tcp.last_dir == IP_CT_DIR_REPLY:
        if seg.seq == tcp.last_ack:
            return new_state, True  # RST answering a challenge ACK
    return new_state, False


def nf_conntrack_tcp_packet(ct: NfConn, skb: SkBuff, thoff: int, dir: int, check_csum: bool) -> int:
    """Run one segment through the state machine.

    Linux: nf_conntrack_tcp_packet. Returns NF_ACCEPT, -NF_ACCEPT (INVALID: the packet goes on without
    a ct), -NF_REPEAT (a SYN reopens a closed connection: kill it and look up again) or NF_DROP.
    """
    if tcp_error(skb, thoff, check_csum):
        return -NF_ACCEPT
    seg = TcpSeg(skb.buf, thoff)
    if not nf_ct_is_confirmed(ct) and not tcp_new(ct, seg):
        return -NF_ACCEPT
    tcp = ct.proto
    old_state = tcp.state
    index = get_conntrack_index(seg.flags)
    new_state = TCP_CONNTRACKS[dir][index][old_state]
    skip_window = False

    if new_state == sSS and old_state >= sTW:
        # RFC 1122 4.2.2.13: a SYN may reopen a connection in TIME_WAIT; an aborted one too.
        if (tcp.seen[dir].flags | tcp.seen[1 - dir].flags) & IP_CT_TCP_FLAG_CLOSE_INIT or (
            tcp.last_dir == dir and tcp.last_index == TCP_RST_SET
        ):
            return -NF_REPEAT
    if new_state == sIG or (new_state == sSS and old_state >= sTW):
        if (
            index == TCP_SYNACK_SET
            and tcp.last_index == TCP_SYN_SET
            and tcp.last_dir != dir
            and seg.ack_seq == tcp.last_end
        ):
            old_state, new_state = sSS, sSR
            _tcp_resync(tcp, dir)
        else:
            return _tcp_ignore(tcp, dir, index, old_state, seg)
    elif new_state == sIV:
        return -NF_ACCEPT
    elif new_state == sTW:
        if (
            old_state == sLA
            and index == TCP_ACK_SET
            and tcp.last_dir != dir
            and tcp.last_index == TCP_SYN_SET
            and tcp.last_flags & IP_CT_EXP_CHALLENGE_ACK
        ):
            tcp.last_flags &= ~IP_CT_EXP_CHALLENGE_ACK  # RFC 5961 challenge ACK, not the last ACK
            return NF_ACCEPT
    elif new_state == sS2:
        tcp.last_flags |= IP_CT_TCP_SIMULTANEOUS_OPEN
    elif new_state == sSR:
        if dir == IP_CT_DIR_REPLY and index == TCP_ACK_SET and tcp.last_flags & IP_CT_TCP_SIMULTANEOUS_OPEN:
            new_state = sES
    elif new_state == sCL and index == TCP_RST_SET:
        new_state, skip = _tcp_close_rst(ct, dir, old_state, seg)
        if skip is None:
            return -NF_ACCEPT
        skip_window = skip

    if not skip_window:
        res = tcp_in_window(tcp, dir, index, seg)
        if res == NFCT_TCP_IGNORE:
            return NF_ACCEPT
        if res == NFCT_TCP_INVALID:
            nf_tcp_handle_invalid(ct, dir, index, skb.ts_ns)
            return -NF_ACCEPT

    tcp.last_index, tcp.last_dir = index, dir
    tcp.state = new_state
    if old_state != new_state and new_state == sFW:
        tcp.seen[dir].flags |= IP_CT_TCP_FLAG_CLOSE_INIT

    t = TCP_TIMEOUTS_NS
    if tcp.retrans >= TCP_MAX_RETRANS and t[new_state] > t[TcpConntrack.RETRANS]:
        timeout = t[TcpConntrack.RETRANS]
    elif index == TCP_RST_SET:
        timeout = t[sCL]
    elif (tcp.seen[0].flags | tcp.seen[1].flags) & IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED and t[new_state] > t[
        TcpConntrack.UNACK
    ]:
        timeout = t[TcpConntrack.UNACK]
    elif tcp.last_win == 0 and t[new_state] > t[TcpConntrack.RETRANS]:
        timeout = t[TcpConntrack.RETRANS]
    else:
        timeout = t[new_state]

    if not ct.status & IPS_SEEN_REPLY:
        if seg.flags & _RST:
            # Only a RST as answer: no connection; delete the entry at once (nf_ct_kill_acct).
            nf_ct_acct_update(ct, dir, skb.l3len)
            if ct.net is not None and nf_ct_is_confirmed(ct):
                ct.net.nf_ct_kill(ct)
            return NF_ACCEPT
        if index == TCP_SYN_SET and old_state == sSS:
            return NF_ACCEPT  # no refresh on SYN retransmits, so port reuse cannot keep it alive
        if new_state == sES and timeout > t[TcpConntrack.UNACK]:
            timeout = t[TcpConntrack.UNACK]  # mid-stream pickup without a reply yet
    elif not ct.status & IPS_ASSURED and old_state in (sSR, sES) and new_state == sES:
        ct.status |= IPS_ASSURED
    nf_ct_refresh_acct(ct, dir, skb.ts_ns, skb.l3len, timeout)
    return NF_ACCEPT


__all__ = [
    "TcpConntrack",
    "TCP_CONNTRACKS",
    "TCP_CONNTRACK_NAMES",
    "TCP_TIMEOUTS_NS",
    "get_conntrack_index",
    "nf_conntrack_tcp_established",
    "nf_conntrack_tcp_packet",
    "nf_conntrack_tcp_set_closing",
    "tcp_new",
]
