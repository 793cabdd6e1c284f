"""UDP, ICMP and generic tracking, RELATED ICMP errors, GC in packet time and the listing format."""

from ct_helpers import SEC, skb_of
from scapy.all import (
    ICMP,
    IP,
    TCP,
    UDP,
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    IPv6,
    fragment,
    raw,
)

from flowpath.netfilter.conntrack import ct_state_name
from flowpath.netfilter.conntrack_tuple import nf_ct_refresh
from flowpath.netfilter.constants import (
    IP_CT_ESTABLISHED,
    IP_CT_ESTABLISHED_REPLY,
    IP_CT_NEW,
    IP_CT_RELATED,
    IP_CT_RELATED_REPLY,
    IP_CT_UNTRACKED,
    IPS_ASSURED,
    IPS_OFFLOAD,
    NF_INET_PRE_ROUTING,
)

C, S = "10.0.0.2", "192.168.1.9"


def step(table, pkt, ts_ns=0):
    skb = skb_of(pkt, ts_ns)
    assert table.nf_conntrack_in(skb, NF_INET_PRE_ROUTING) == (1, None)
    table.nf_conntrack_confirm(skb)
    return skb


def udp_c2s(**kw):
    return IP(src=C, dst=S) / UDP(sport=5000, dport=53, **kw) / b"query"


def udp_s2c(**kw):
    return IP(src=S, dst=C) / UDP(sport=53, dport=5000, **kw) / b"answer"


def test_udp_unreplied_then_replied_then_assured_stream(ctt):
    """nf_conntrack_udp_packet: 30 s until two-way traffic outlives 2 s, then 120 s and ASSURED."""
    a = step(ctt, udp_c2s(), 0)
    assert a.ctinfo == IP_CT_NEW and a.ct.timeout_ns == 30 * SEC
    assert "[UNREPLIED]" in ctt.listing(0)
    b = step(ctt, udp_s2c(), SEC)
    assert b.ctinfo == IP_CT_ESTABLISHED_REPLY and b.ct.timeout_ns == 31 * SEC
    c = step(ctt, udp_c2s(), SEC + 1)  # two-way, but within 2 s of the first packet
    assert c.ctinfo == IP_CT_ESTABLISHED and c.ct.timeout_ns == SEC + 1 + 30 * SEC
    assert not c.ct.status & IPS_ASSURED
    d = step(ctt, udp_s2c(), 3 * SEC)
    assert d.ct.status & IPS_ASSURED and d.ct.timeout_ns == 123 * SEC
    line = ctt.listing(3 * SEC)
    assert line == (
        "udp      17 120 src=10.0.0.2 dst=192.168.1.9 sport=5000 dport=53 "
        "src=192.168.1.9 dst=10.0.0.2 sport=53 dport=5000 [ASSURED] mark=0 use=1\n"
    )


def test_udp_expires_in_packet_time(ctt):
    step(ctt, udp_c2s(), 0)
    assert ctt.gc(30 * SEC - 1) == 0 and len(ctt) == 1
    assert ctt.gc(30 * SEC) == 1 and len(ctt) == 0
    assert step(ctt, udp_c2s(), 31 * SEC).ctinfo == IP_CT_NEW


def test_expired_entry_is_not_found_before_gc(ctt):
    """____nf_conntrack_find drops an expired entry it meets: the next packet is NEW."""
    step(ctt, udp_c2s(), 0)
    skb = step(ctt, udp_s2c(), 40 * SEC)
    assert skb.ctinfo == IP_CT_NEW  # a fresh entry for the other direction
    assert skb.ct.tuplehash[0].src == int.from_bytes(bytes([192, 168, 1, 9]), "big")


def test_udp_truncated_and_bad_checksum_invalid(ctt):
    skb = skb_of(IP(src=C, dst=S) / UDP(sport=1, dport=2, len=200) / b"x")
    ctt.nf_conntrack_in(skb, NF_INET_PRE_ROUTING)
    assert skb.ct is None
    skb = skb_of(IP(src=C, dst=S) / UDP(sport=1, dport=2, chksum=0xBEEF) / b"x")
    ctt.nf_conntrack_in(skb, NF_INET_PRE_ROUTING)
    assert skb.ct is None
    skb = skb_of(IP(src=C, dst=S) / UDP(sport=1, dport=2, chksum=0) / b"x")  # no checksum: fine
    ctt.nf_conntrack_in(skb, NF_INET_PRE_ROUTING)
    assert skb.ctinfo == IP_CT_NEW


def test_icmp_echo_tracks_with_reply_type(ctt):
    """icmp_pkt_to_tuple / invmap: the reply tuple of an echo request carries type 0."""
    a = step(ctt, IP(src=C, dst=S) / ICMP(type=8, id=77, seq=1), 0)
    assert a.ctinfo == IP_CT_NEW and a.ct.timeout_ns == 30 * SEC
    orig, repl = a.ct.tuplehash
    assert (orig.type, orig.sport, repl.type, repl.sport) == (8, 77, 0, 77)
    b = step(ctt, IP(src=S, dst=C) / ICMP(type=0, id=77, seq=1), SEC)
    assert b.ct is a.ct and b.ctinfo == IP_CT_ESTABLISHED_REPLY
    assert ctt.listing(SEC) == (
        "icmp     1 30 src=10.0.0.2 dst=192.168.1.9 type=8 code=0 id=77 "
        "src=192.168.1.9 dst=10.0.0.2 type=0 code=0 id=77 mark=0 use=1\n"
    )


def test_icmp_echo_reply_alone_is_invalid(ctt):
    skb = step(ctt, IP(src=S, dst=C) / ICMP(type=0, id=5))
    assert skb.ct is None and len(ctt) == 0


def test_icmp_unknown_type_is_invalid(ctt):
    skb = step(ctt, IP(src=S, dst=C) / ICMP(type=40))
    assert skb.ct is None


def test_icmp_error_about_tcp_is_related_reply(ctt):
    """icmp_error_message: the inner packet's inverted tuple finds the connection (reply side)."""
    step(ctt, IP(src=C, dst=S) / TCP(sport=40000, dport=80, flags="S"))
    inner = IP(src=C, dst=S) / TCP(sport=40000, dport=80, flags="S")
    err = IP(src="172.16.0.1", dst=C) / ICMP(type=3, code=1) / raw(inner)[:28]
    skb = step(ctt, err)
    assert skb.ctinfo == IP_CT_RELATED_REPLY and ct_state_name(skb) == "related"
    assert skb.ct.tuplehash[0].sport == 40000


def test_icmp_error_about_udp_in_original_direction(ctt):
    step(ctt, udp_c2s())
    inner = IP(src=S, dst=C) / UDP(sport=53, dport=5000)
    err = IP(src="172.16.0.9", dst=S) / ICMP(type=11, code=0) / raw(inner)
    skb = step(ctt, err)
    assert skb.ctinfo == IP_CT_RELATED


def test_icmp_error_without_connection_or_wrong_outer_daddr_is_invalid(ctt):
    inner = IP(src=C, dst=S) / UDP(sport=5000, dport=53)
    skb = step(ctt, IP(src="172.16.0.1", dst=C) / ICMP(type=3, code=3) / raw(inner))
    assert skb.ct is None
    step(ctt, udp_c2s())
    skb = step(ctt, IP(src="172.16.0.1", dst="10.9.9.9") / ICMP(type=3, code=3) / raw(inner))
    assert skb.ct is None  # outer daddr is not where the connection's reply goes
    assert len(ctt) == 1


def test_icmpv6_echo_and_error_related(ctt):
    c6, s6 = "2001:db8::2", "2001:db8:1::9"
    a = step(ctt, IPv6(src=c6, dst=s6) / ICMPv6EchoRequest(id=9))
    assert a.ctinfo == IP_CT_NEW and a.ct.tuplehash[1].type == 129
    b = step(ctt, IPv6(src=s6, dst=c6) / ICMPv6EchoReply(id=9))
    assert b.ctinfo == IP_CT_ESTABLISHED_REPLY
    step(ctt, IPv6(src=c6, dst=s6) / UDP(sport=7, dport=8))
    inner = IPv6(src=c6, dst=s6) / UDP(sport=7, dport=8)
    err = step(ctt, IPv6(src="2001:db8:ff::1", dst=c6) / ICMPv6DestUnreach(code=4) / raw(inner))
    assert err.ctinfo == IP_CT_RELATED_REPLY
    assert "icmpv6   58 30 src=2001:db8::2 dst=2001:db8:1::9 type=128 code=0 id=9" in ctt.listing(0)


def test_neighbour_discovery_is_untracked(ctt):
    """icmpv6_error › noct_valid_new: ND and MLD get IP_CT_UNTRACKED."""
    skb = step(ctt, IPv6(src="fe80::1", dst="ff02::1:ff00:2") / ICMPv6ND_NS(tgt="2001:db8::2"))
    assert skb.ct is None and skb.ctinfo == IP_CT_UNTRACKED and ct_state_name(skb) == "untracked"


def test_generic_protocol_600s(ctt):
    skb = step(ctt, IP(src=C, dst=S, proto=50) / b"\0\0\0\1\0\0\0\1esp")
    assert skb.ctinfo == IP_CT_NEW and skb.ct.timeout_ns == 600 * SEC
    assert ctt.listing(0).startswith("unknown  50 600 src=10.0.0.2 dst=192.168.1.9 [UNREPLIED] src=")


def test_gre_tracker_30s_then_180s_assured(ctt):
    """nf_conntrack_gre_packet: GRE without PPTP keys; replied flows get 180 s and ASSURED."""
    a = step(ctt, IP(src=C, dst=S, proto=47) / b"\0\0\x08\0payload")
    assert a.ctinfo == IP_CT_NEW and a.ct.timeout_ns == 30 * SEC
    step(ctt, IP(src=S, dst=C, proto=47) / b"\0\0\x08\0payload", SEC)
    c = step(ctt, IP(src=C, dst=S, proto=47) / b"\0\0\x08\0payload", 2 * SEC)
    assert c.ct.status & IPS_ASSURED and c.ct.timeout_ns == 182 * SEC
    assert ctt.listing(2 * SEC) == (
        "gre      47 180 src=10.0.0.2 dst=192.168.1.9 srckey=0x0 dstkey=0x0 "
        "src=192.168.1.9 dst=10.0.0.2 srckey=0x0 dstkey=0x0 [ASSURED] mark=0 use=1\n"
    )


def test_fragments_that_reach_conntrack_are_invalid(ctt):
    """nf_defrag hands conntrack whole datagrams (tests/netfilter_ct/test_nf_defrag.py). A fragment that
    still reaches it is what Linux makes of it: a later one has no tuple (get_l4proto), a first UDP one
    fails udp_error (its length counts the whole datagram). INVALID both, nothing tracked."""
    frags = fragment(IP(src=C, dst=S, id=99) / UDP(sport=5000, dport=53) / (b"x" * 100), fragsize=48)
    for f in (frags[1], frags[0], frags[2]):
        skb = step(ctt, f)
        assert skb.ct is None and ct_state_name(skb) == "invalid"
    assert len(ctt) == 0 and ctt.stat["invalid"] == 3


def test_unconfirmed_entry_of_a_dropped_packet_is_forgotten(ctt):
    skb = skb_of(udp_c2s())
    ctt.nf_conntrack_in(skb, NF_INET_PRE_ROUTING)
    assert skb.ct is not None and len(ctt) == 0  # dropped before confirm: never inserted
    again = step(ctt, udp_c2s())
    assert again.ctinfo == IP_CT_NEW and len(ctt) == 1


def test_offload_listing_and_gc_skip(ctt):
    """ct_seq_show: an offloaded entry shows neither timeout nor state and says [OFFLOAD]."""
    step(ctt, IP(src=C, dst=S) / TCP(sport=1, dport=2, flags="S"))
    step(ctt, IP(src=S, dst=C) / TCP(sport=2, dport=1, flags="SA"))
    ct = step(ctt, IP(src=C, dst=S) / TCP(sport=1, dport=2, flags="A")).ct
    ct.status |= IPS_OFFLOAD
    nf_ct_refresh(ct, 0, 86400 * SEC)
    assert ctt.listing(0) == (
        "tcp      6 src=10.0.0.2 dst=192.168.1.9 sport=1 dport=2 "
        "src=192.168.1.9 dst=10.0.0.2 sport=2 dport=1 [OFFLOAD] mark=0 use=1\n"
    )
    assert ctt.gc(10 * 86400 * SEC) == 0  # the flowtable owns its timeout
    ct.status &= ~IPS_OFFLOAD
    assert ctt.gc(10 * 86400 * SEC) == 1


def test_listing_with_accounting(ctt):
    step(ctt, udp_c2s())
    assert "sport=5000 dport=53 packets=1 bytes=33 [UNREPLIED]" in ctt.listing(0, acct=True)


def test_iteration_and_len(ctt):
    step(ctt, udp_c2s())
    step(ctt, IP(src=C, dst=S) / ICMP(id=3))
    assert len(ctt) == 2
    assert {ct.l4proto for ct in ctt} == {17, 1}
