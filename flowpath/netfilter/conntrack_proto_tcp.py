"""TCP connection tracking: the state table, timeouts and the per-packet state machine.

Linux: net/netfilter/nf_conntrack_proto_tcp.c (tcp_conntracks, tcp_timeouts, get_conntrack_index,
tcp_error, tcp_new, nf_conntrack_tcp_packet). Defaults as Linux: nf_conntrack_tcp_loose=1 (mid-stream
pickup), nf_conntrack_tcp_be_liberal=0, nf_conntrack_checksum=1.

Deviation: tcp_in_window is not implemented; every segment counts as in window (as if both sides had
IP_CT_TCP_FLAG_BE_LIBERAL). So out-of-window segments and RSTs are not INVALID, DATA_UNACKNOWLEDGED and
max_retrans never shorten the timeout, and a RST in CLOSE skips the td_maxack checks. The state table,
the IGNORE/INVALID cases, reopening from TIME_WAIT/CLOSE and the SYN/ACK resync work as in Linux.
"""

from __future__ import annotations

from enum import IntEnum

from flowpath.netfilter.conntrack_proto import nf_l4_checksum_bad
from flowpath.netfilter.conntrack_tuple import (
    NSEC_PER_SEC,
    IpCtTcp,
    NfConn,
    nf_ct_acct_update,
    nf_ct_is_confirmed,
    nf_ct_refresh_acct,
)
from flowpath.netfilter.constants import (
    IPS_ASSURED,
    IPS_SEEN_REPLY,
    NF_ACCEPT,
    NF_DROP,
    NF_REPEAT,
)
from flowpath.packet import layout as L
from flowpath.packet.csum import ld16, ld32


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


def nf_conntrack_tcp_established(ct: NfConn) -> bool:
    """Linux: nf_conntrack_tcp_established (also used by the flowtable to allow offload)."""
    return ct.proto.state == TcpConntrack.ESTABLISHED and bool(ct.status & IPS_ASSURED)


def _segment_end(b, thoff: int, flags: int) -> int:
    """Linux: segment_seq_plus_len: seq + payload length + SYN + FIN."""
    doff = (int(b[thoff + L.TCPH.doff_res]) >> 4) * 4
    plen = b.shape[0] - thoff - doff
    return (
        ld32(b, thoff + L.TCPH.seq) + plen + (1 if flags & _SYN else 0) + (1 if flags & _FIN else 0)
    ) & 0xFFFFFFFF


def tcp_error(skb, thoff: int, check_csum: bool) -> bool:
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


def tcp_new(ct: NfConn, flags: int) -> bool:
    """Start tracking: False when the first segment cannot open a connection.

    Linux: tcp_new. A SYN opens SYN_SENT; anything the table maps to a state from NONE (a bare ACK) is
    picked up mid-stream with liberal window checking (nf_conntrack_tcp_loose=1).
    """
    new_state = TCP_CONNTRACKS[0][get_conntrack_index(flags)][sNO]
    if new_state >= sIV:
        return False
    ct.proto = IpCtTcp()
    if new_state != sSS:
        ct.proto.seen[0].flags = ct.proto.seen[1].flags = IP_CT_TCP_FLAG_SACK_PERM | IP_CT_TCP_FLAG_BE_LIBERAL
    ct.proto.last_index = TCP_NONE_SET
    return True


def nf_conntrack_tcp_packet(ct: NfConn, skb, thoff: int, dir: int, check_csum: bool) -> int:
    """Run one segment through the state machine.

    Linux: nf_conntrack_tcp_packet. Returns NF_ACCEPT, -NF_ACCEPT (INVALID: the packet goes on without
    a ct), -NF_REPEAT (a SYN reopens a closed connection: kill it and look up again) or NF_DROP.
    """
    b = skb.buf
    if tcp_error(skb, thoff, check_csum):
        return -NF_ACCEPT
    flags = int(b[thoff + L.TCPH.flags])
    if not nf_ct_is_confirmed(ct) and ct.proto is None and not tcp_new(ct, flags):
        return -NF_ACCEPT
    tcp = ct.proto
    old_state = tcp.state
    index = get_conntrack_index(flags)
    new_state = TCP_CONNTRACKS[dir][index][old_state]
    seq, ack_seq = ld32(b, thoff + L.TCPH.seq), ld32(b, thoff + L.TCPH.ack_seq)

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
            and ack_seq == tcp.last_end
        ):
            # The SYN/ACK answers a SYN we ignored: client and server are in sync, we were not.
            old_state, new_state = sSS, sSR
        else:
            tcp.last_index, tcp.last_dir = index, dir
            tcp.last_seq, tcp.last_end = seq, _segment_end(b, thoff, flags)
            tcp.last_win = ld16(b, thoff + L.TCPH.window)
            return NF_ACCEPT  # "invalid packet ignored": accepted, state untouched
    elif new_state == sIV:
        return -NF_ACCEPT
    elif new_state == sTW:
        # RFC 5961 challenge ACK after a spurious SYN must not count as the ACK of the last FIN.
        if (
            old_state == sLA
            and index == TCP_ACK_SET
            and tcp.last_dir != dir
            and tcp.last_index == TCP_SYN_SET
            and tcp.seen[dir].flags & IP_CT_TCP_FLAG_CLOSE_INIT
        ):
            tcp.last_index, tcp.last_dir = index, dir
            return NF_ACCEPT
    # Deviation: tcp_in_window always accepts (see the module docstring).

    tcp.last_index, tcp.last_dir = index, dir
    tcp.last_seq, tcp.last_ack = seq, ack_seq
    tcp.last_end = _segment_end(b, thoff, flags)
    tcp.last_win = ld16(b, thoff + L.TCPH.window)
    tcp.state = new_state
    if old_state != new_state and new_state == sFW:
        tcp.seen[dir].flags |= IP_CT_TCP_FLAG_CLOSE_INIT

    if index == TCP_RST_SET:
        timeout = TCP_TIMEOUTS_NS[sCL]
    elif tcp.last_win == 0 and TCP_TIMEOUTS_NS[new_state] > TCP_TIMEOUTS_NS[TcpConntrack.RETRANS]:
        timeout = TCP_TIMEOUTS_NS[TcpConntrack.RETRANS]
    else:
        timeout = TCP_TIMEOUTS_NS[new_state]

    if not ct.status & IPS_SEEN_REPLY:
        if flags & _RST:
            # Only a RST as answer: no connection; delete the entry at once.
            nf_ct_acct_update(ct, dir, skb.l3len)
            if ct.net is not None and nf_ct_is_confirmed(ct):
                ct.net.nf_ct_kill(ct)
            return NF_ACCEPT
        if index == TCP_SYN_SET and old_state == sSS:
            return NF_ACCEPT  # no refresh on SYN retransmits, so port reuse cannot keep it alive
        if new_state == sES and timeout > TCP_TIMEOUTS_NS[TcpConntrack.UNACK]:
            timeout = TCP_TIMEOUTS_NS[TcpConntrack.UNACK]  # mid-stream pickup without a reply yet
    elif not ct.status & IPS_ASSURED and old_state in (sSR, sES) and new_state == sES:
        ct.status |= IPS_ASSURED
    nf_ct_refresh_acct(ct, dir, skb.ts_ns, skb.l3len, timeout)
    return NF_ACCEPT


__all__ = [
    "TcpConntrack",
    "TCP_CONNTRACKS",
    "TCP_CONNTRACK_NAMES",
    "TCP_TIMEOUTS_NS",
    "NF_DROP",
    "NF_REPEAT",
    "get_conntrack_index",
    "nf_conntrack_tcp_established",
    "nf_conntrack_tcp_packet",
    "tcp_new",
]
