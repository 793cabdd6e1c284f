"""TCP tracking: nf_conntrack_proto_tcp.c's state table, timeouts and INVALID cases with real segments."""

import pytest
from ct_helpers import SEC, skb_of
from scapy.all import IP, TCP, IPv6

from flowpath.netfilter.conntrack import Conntrack, ct_state_name
from flowpath.netfilter.conntrack_proto_tcp import TCP_CONNTRACKS, TCP_TIMEOUTS_NS, TcpConntrack
from flowpath.netfilter.constants import (
    IP_CT_ESTABLISHED,
    IP_CT_ESTABLISHED_REPLY,
    IP_CT_NEW,
    IPS_ASSURED,
    IPS_SEEN_REPLY,
    NF_INET_LOCAL_OUT,
    NF_INET_PRE_ROUTING,
)

C, S = "10.0.0.2", "192.168.1.9"


def c2s(flags, seq=1000, ack=0, load=b"", **kw):
    p = IP(src=C, dst=S) / TCP(sport=40000, dport=80, flags=flags, seq=seq, ack=ack, **kw)
    return p / load if load else p


def s2c(flags, seq=5000, ack=0, load=b"", **kw):
    p = IP(src=S, dst=C) / TCP(sport=80, dport=40000, flags=flags, seq=seq, ack=ack, **kw)
    return p / load if load else p


def step(table, pkt, ts_ns=0, hook=NF_INET_PRE_ROUTING):
    skb = skb_of(pkt, ts_ns)
    verdict = table.nf_conntrack_in(skb, hook)
    assert verdict == (1, None)
    table.nf_conntrack_confirm(skb)
    return skb


def handshake(table, t0=0):
    a = step(table, c2s("S"), t0)
    b = step(table, s2c("SA", ack=1001), t0 + 1)
    c = step(table, c2s("A", seq=1001, ack=5001), t0 + 2)
    return a, b, c


def test_state_table_rows_match_linux():
    """nf_conntrack_proto_tcp.c › tcp_conntracks: spot-check the rows that matter most."""
    T = TcpConntrack
    assert TCP_CONNTRACKS[0][0][T.NONE] == T.SYN_SENT  # SYN opens
    assert TCP_CONNTRACKS[0][3][T.NONE] == T.ESTABLISHED  # loose pickup on ACK
    assert TCP_CONNTRACKS[1][1][T.SYN_SENT] == T.SYN_RECV  # SYN/ACK reply
    assert TCP_CONNTRACKS[0][3][T.SYN_RECV] == T.ESTABLISHED
    assert TCP_CONNTRACKS[1][3][T.SYN_SENT] == T.IGNORE  # ACK reply to a SYN: maybe half-open
    assert TCP_CONNTRACKS[0][2][T.FIN_WAIT] == T.LAST_ACK
    assert TCP_CONNTRACKS[0][3][T.LAST_ACK] == T.TIME_WAIT
    assert all(r == T.MAX for r in TCP_CONNTRACKS[0][5])  # no flags at all: always invalid
    assert all(TCP_CONNTRACKS[d][4][s] == T.CLOSE for d in (0, 1) for s in range(1, 10))


def test_handshake_states_ctinfo_and_assured(ctt):
    """resolve_normal_ct sets NEW / ESTABLISHED_REPLY / ESTABLISHED; the ACK after SYN_RECV assures."""
    a, b, c = handshake(ctt)
    assert (a.ctinfo, ct_state_name(a)) == (IP_CT_NEW, "new")
    assert (b.ctinfo, ct_state_name(b)) == (IP_CT_ESTABLISHED_REPLY, "established")
    assert (c.ctinfo, ct_state_name(c)) == (IP_CT_ESTABLISHED, "established")
    ct = c.ct
    assert a.ct is b.ct is ct and len(ctt) == 1
    assert ct.proto.state == TcpConntrack.ESTABLISHED
    assert ct.status & IPS_ASSURED and ct.status & IPS_SEEN_REPLY
    assert ct.timeout_ns == 2 + 5 * 86400 * SEC
    assert ct.packets == [2, 1]
    assert ct.bytes == [80, 40]  # IP lengths (skb->len at the network header)


def test_syn_sent_and_syn_recv_timeouts(ctt):
    a = step(ctt, c2s("S"), 0)
    assert a.ct.proto.state == TcpConntrack.SYN_SENT and a.ct.timeout_ns == 120 * SEC
    b = step(ctt, s2c("SA", ack=1001), 5 * SEC)
    assert b.ct.proto.state == TcpConntrack.SYN_RECV and b.ct.timeout_ns == 65 * SEC


def test_syn_retransmit_does_not_refresh(ctt):
    """Port reuse must not keep an unanswered entry alive: no refresh on a SYN retransmit."""
    step(ctt, c2s("S"), 0)
    again = step(ctt, c2s("S"), 100 * SEC)
    assert again.ctinfo == IP_CT_NEW
    assert again.ct.timeout_ns == 120 * SEC


def test_fin_teardown_reaches_time_wait(ctt):
    *_, c = handshake(ctt)
    ct = c.ct
    t = 10 * SEC
    step(ctt, c2s("FA", seq=1001, ack=5001), t)
    assert ct.proto.state == TcpConntrack.FIN_WAIT and ct.timeout_ns == t + 120 * SEC
    step(ctt, s2c("A", seq=5001, ack=1002), t + 1)
    assert ct.proto.state == TcpConntrack.CLOSE_WAIT and ct.timeout_ns == t + 1 + 60 * SEC
    step(ctt, s2c("FA", seq=5001, ack=1002), t + 2)
    assert ct.proto.state == TcpConntrack.LAST_ACK and ct.timeout_ns == t + 2 + 30 * SEC
    step(ctt, c2s("A", seq=1002, ack=5002), t + 3)
    assert ct.proto.state == TcpConntrack.TIME_WAIT and ct.timeout_ns == t + 3 + 120 * SEC
    assert "TIME_WAIT" in ctt.listing(t + 3)
    assert ctt.gc(t + 3 + 120 * SEC - 1) == 0
    assert ctt.gc(t + 3 + 120 * SEC) == 1 and len(ctt) == 0


def test_rst_closes_with_close_timeout(ctt):
    *_, c = handshake(ctt)
    step(ctt, s2c("R", seq=5001), 7 * SEC)
    assert c.ct.proto.state == TcpConntrack.CLOSE
    assert c.ct.timeout_ns == 7 * SEC + TCP_TIMEOUTS_NS[TcpConntrack.CLOSE] == 17 * SEC


def test_rst_as_only_answer_deletes_entry(ctt):
    """ "If only reply is a RST ... we can delete the conntrack immediately." (nf_conntrack_tcp_packet)"""
    step(ctt, c2s("S"), 0)
    skb = step(ctt, s2c("RA", seq=0, ack=1001), 1)
    assert skb.ct is not None and skb.ctinfo == IP_CT_ESTABLISHED_REPLY
    assert len(ctt) == 0


@pytest.mark.parametrize(
    "pkt",
    [
        c2s("SA", ack=1),  # SYN/ACK opening nothing
        c2s("F"),  # FIN without ACK: not a valid flag combination
        c2s("FA"),  # FIN with no entry
        c2s("R"),  # RST with no entry
        c2s(""),  # no flags
        c2s("SF"),  # SYN+FIN
        c2s("SR"),  # SYN+RST
    ],
)
def test_invalid_without_entry(ctt, pkt):
    skb = skb_of(pkt)
    assert ctt.nf_conntrack_in(skb, NF_INET_PRE_ROUTING) == (1, None)
    assert skb.ct is None and ct_state_name(skb) == "invalid"
    ctt.nf_conntrack_confirm(skb)
    assert len(ctt) == 0


def test_bad_checksum_is_invalid_only_at_prerouting(ctt):
    """tcp_error checks the checksum at PRE_ROUTING; locally generated packets are trusted."""
    bad = c2s("S", chksum=0x1234)
    skb = skb_of(bad)
    ctt.nf_conntrack_in(skb, NF_INET_PRE_ROUTING)
    assert skb.ct is None
    skb = skb_of(bad)
    ctt.nf_conntrack_in(skb, NF_INET_LOCAL_OUT)
    assert skb.ctinfo == IP_CT_NEW


def test_lone_ack_is_picked_up_midstream(ctt):
    """nf_conntrack_tcp_loose=1: an ACK with no entry opens ESTABLISHED, capped at 5 min until a reply."""
    a = step(ctt, c2s("A", ack=77), 0)
    assert a.ctinfo == IP_CT_NEW and a.ct.proto.state == TcpConntrack.ESTABLISHED
    assert a.ct.timeout_ns == 300 * SEC and not a.ct.status & IPS_ASSURED
    b = step(ctt, s2c("A", ack=1000), SEC)
    assert b.ctinfo == IP_CT_ESTABLISHED_REPLY
    c = step(ctt, c2s("A", ack=5000), 2 * SEC)
    assert c.ct.status & IPS_ASSURED and c.ct.timeout_ns == 2 * SEC + 5 * 86400 * SEC


def test_syn_in_established_is_ignored(ctt):
    """A SYN on an established connection is sIG: accepted, state and timeout untouched."""
    *_, c = handshake(ctt)
    before = c.ct.timeout_ns
    skb = step(ctt, c2s("S", seq=99), 50 * SEC)
    assert skb.ct is c.ct and c.ct.proto.state == TcpConntrack.ESTABLISHED
    assert c.ct.timeout_ns == before


def test_synack_from_client_is_invalid_on_entry(ctt):
    handshake(ctt)
    skb = skb_of(c2s("SA", ack=5001))
    ctt.nf_conntrack_in(skb, NF_INET_PRE_ROUTING)
    assert skb.ct is None


def test_syn_reopens_time_wait(ctt):
    """RFC 1122: a SYN in TIME_WAIT after a FIN close kills the old entry and opens a new one."""
    *_, c = handshake(ctt)
    old = c.ct
    step(ctt, c2s("FA", seq=1001, ack=5001), 1)
    step(ctt, s2c("FA", seq=5001, ack=1002), 2)
    step(ctt, c2s("A", seq=1002, ack=5002), 3)
    assert old.proto.state == TcpConntrack.TIME_WAIT
    skb = step(ctt, c2s("S", seq=9000), 4 * SEC)
    assert skb.ct is not old and skb.ctinfo == IP_CT_NEW
    assert skb.ct.proto.state == TcpConntrack.SYN_SENT and len(ctt) == 1


def test_ipv6_handshake(ctt):
    c6, s6 = "2001:db8::2", "2001:db8:1::9"
    step(ctt, IPv6(src=c6, dst=s6) / TCP(sport=1, dport=2, flags="S"))
    step(ctt, IPv6(src=s6, dst=c6) / TCP(sport=2, dport=1, flags="SA"))
    skb = step(ctt, IPv6(src=c6, dst=s6) / TCP(sport=1, dport=2, flags="A"))
    assert skb.ctinfo == IP_CT_ESTABLISHED and skb.ct.status & IPS_ASSURED
    assert "src=2001:db8::2 dst=2001:db8:1::9 sport=1 dport=2" in ctt.listing(0)


def test_table_full_drops_after_early_drop_fails():
    """__nf_conntrack_alloc: at the maximum, early_drop evicts an unassured entry, else table full."""
    from flowpath.packet.reason import Reason

    table = Conntrack(max_entries=1)
    handshake(table)  # one assured entry
    skb = skb_of(IP(src=C, dst=S) / TCP(sport=40001, dport=80, flags="S"))
    assert table.nf_conntrack_in(skb, NF_INET_PRE_ROUTING) == (0, Reason.CT_TABLE_FULL)
    table2 = Conntrack(max_entries=1)
    step(table2, c2s("S"))  # unassured: evicted
    skb = step(table2, IP(src=C, dst=S) / TCP(sport=40001, dport=80, flags="S"))
    assert skb.ctinfo == IP_CT_NEW and len(table2) == 1 and table2.stat["early_drop"] == 1


def test_unacknowledged_data_shortens_timeout_until_acked(ctt):
    """tcp_in_window sets DATA_UNACKNOWLEDGED; the timeout is 5 min until the peer ACKs the data."""
    *_, c = handshake(ctt)
    ct = c.ct
    step(ctt, c2s("PA", seq=1001, ack=5001, load=b"hello"), SEC)
    assert ct.timeout_ns == SEC + TCP_TIMEOUTS_NS[TcpConntrack.UNACK]
    step(ctt, s2c("A", seq=5001, ack=1006), 2 * SEC)
    assert ct.timeout_ns == 2 * SEC + 5 * 86400 * SEC


def test_ack_for_unseen_data_is_invalid(ctt):
    """tcp_in_window: "ACK is over upper bound (ACKed data not seen yet)"."""
    *_, c = handshake(ctt)
    skb = skb_of(s2c("A", seq=5001, ack=900000))
    ctt.nf_conntrack_in(skb, NF_INET_PRE_ROUTING)
    assert skb.ct is None
    assert c.ct.proto.state == TcpConntrack.ESTABLISHED


def test_retransmitted_acks_shorten_timeout(ctt):
    """Three repeats of the same ACK segment (tcp_max_retrans) cap the timeout at 5 min."""
    *_, c = handshake(ctt)  # its last ACK is the first of the series
    for i in range(2):
        step(ctt, c2s("A", seq=1001, ack=5001), (i + 1) * SEC)
    assert c.ct.proto.retrans == 2 and c.ct.timeout_ns == 2 * SEC + 5 * 86400 * SEC
    step(ctt, c2s("A", seq=1001, ack=5001), 3 * SEC)
    assert c.ct.proto.retrans == 3
    assert c.ct.timeout_ns == 3 * SEC + TCP_TIMEOUTS_NS[TcpConntrack.RETRANS]


def test_rst_with_wrong_seq_keeps_state_for_challenge_ack(ctt):
    """A RST whose seq is in window but not exact keeps ESTABLISHED (RFC 5961 challenge ACK)."""
    *_, c = handshake(ctt)
    step(ctt, s2c("A", seq=5001, ack=1001), 1)
    skb = step(ctt, c2s("R", seq=1005), 2)
    assert skb.ct is c.ct and c.ct.proto.state == TcpConntrack.ESTABLISHED
    assert c.ct.timeout_ns == 2 + TCP_TIMEOUTS_NS[TcpConntrack.CLOSE]  # RST timeout all the same
    step(ctt, c2s("R", seq=1001), 3)
    assert c.ct.proto.state == TcpConntrack.CLOSE


def test_rst_below_window_is_invalid(ctt):
    *_, c = handshake(ctt)
    skb = skb_of(s2c("R", seq=4000))
    ctt.nf_conntrack_in(skb, NF_INET_PRE_ROUTING)
    assert skb.ct is None and c.ct.proto.state == TcpConntrack.ESTABLISHED


def test_simultaneous_open(ctt):
    """SYN both ways: SYN_SENT2, then SYN/ACKs to SYN_RECV, then ESTABLISHED."""
    step(ctt, c2s("S"))
    b = step(ctt, s2c("S", seq=5000))
    assert b.ct.proto.state == TcpConntrack.SYN_SENT2
    step(ctt, s2c("SA", seq=5000, ack=1001))
    assert b.ct.proto.state == TcpConntrack.SYN_RECV
    step(ctt, c2s("SA", seq=1000, ack=5001))
    step(ctt, s2c("A", seq=5001, ack=1001))
    assert b.ct.proto.state == TcpConntrack.ESTABLISHED


def test_set_closing_for_the_flowtable(ctt):
    from flowpath.netfilter.conntrack_proto_tcp import nf_conntrack_tcp_set_closing

    *_, c = handshake(ctt)
    nf_conntrack_tcp_set_closing(c.ct, 100 * SEC)
    assert c.ct.proto.state == TcpConntrack.CLOSE and c.ct.timeout_ns == 110 * SEC


def test_window_scale_option_is_recorded(ctt):
    a = step(ctt, c2s("S", options=[("WScale", 7), ("SAckOK", b"")]))
    step(ctt, s2c("SA", ack=1001, options=[("WScale", 3)]))
    seen = a.ct.proto.seen
    assert (seen[0].td_scale, seen[1].td_scale) == (7, 3)


def _closed_connection(table, sport: int, t: int) -> None:
    """One whole TCP connection from client port sport, closed by FINs both ways (TIME_WAIT)."""
    def c(flags, seq, ack=0):
        return IP(src=C, dst=S) / TCP(sport=sport, dport=80, flags=flags, seq=seq, ack=ack)

    def s(flags, seq, ack=0):
        return IP(src=S, dst=C) / TCP(sport=80, dport=sport, flags=flags, seq=seq, ack=ack)

    for k, p in enumerate((c("S", 1000), s("SA", 5000, 1001), c("A", 1001, 5001), c("FA", 1001, 5001),
                           s("FA", 5001, 1002), c("A", 1002, 5002))):  # fmt: skip
        step(table, p, t + k)


def test_gc_evicts_closed_connections_when_the_table_is_95_percent_full():
    """gc_worker at nf_conntrack_max95: TIME_WAIT entries (tcp_can_early_drop) are evicted until the
    table is below 95 % full; the established, assured connection stays. Nothing has expired."""
    table = Conntrack(max_entries=100)
    handshake(table)  # one established, assured connection (port 40000)
    for k in range(98):
        _closed_connection(table, 41000 + k, 10 * k)
    assert len(table) == 99
    evicted = table.gc(2000)
    assert evicted == 5 and table.stat["early_drop"] == 5 and len(table) == 94  # 95 = max95: one below
    left = list(table)
    assert sum(ct.proto.state == TcpConntrack.ESTABLISHED for ct in left) == 1
    assert sum(ct.proto.state == TcpConntrack.TIME_WAIT for ct in left) == 93


def test_gc_below_95_percent_keeps_closed_connections_until_they_expire():
    table = Conntrack(max_entries=100)
    for k in range(90):
        _closed_connection(table, 41000 + k, 10 * k)
    assert table.gc(2000) == 0 and len(table) == 90 and table.stat["early_drop"] == 0
