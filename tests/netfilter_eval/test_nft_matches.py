"""Expressions against Scapy packets, rule by rule, on the JSON real nft printed for matches.nft.

Linux: nft_payload.c, nft_meta.c, nft_ct.c, nft_cmp.c, nft_bitwise.c, nft_lookup.c, nft_range.c; the
bytecode checked with `nft -d netlink` (implicit dependencies, `in` = flag test on bitmask types).
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrFragment

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import FakeCt, eval_rule, ip4, ip6, load_fixture, make_pkt, runtime  # noqa: E402

from flowpath.netfilter import constants as C  # noqa: E402
from flowpath.netfilter.nf_tables import nft_do_chain  # noqa: E402

ACC, DRP, BRK, JMP = C.NF_ACCEPT, C.NF_DROP, C.NFT_BREAK, C.NFT_JUMP
EST, NEW, REL, EST_REPLY = C.IP_CT_ESTABLISHED, C.IP_CT_NEW, C.IP_CT_RELATED, C.IP_CT_ESTABLISHED_REPLY
RT = load_fixture("matches.json")

CASES = [  # (rule handle, scapy packet, make_pkt keywords, expected code)
    # tcp flags syn / syn,ack  -> (flags & (syn|ack)) == syn
    (5, ip4() / TCP(flags="S"), {}, ACC),
    (5, ip4() / TCP(flags="SE"), {}, ACC),
    (5, ip4() / TCP(flags="SA"), {}, BRK),
    (5, ip4() / UDP(), {}, BRK),  # implicit meta l4proto tcp
    # tcp flags == syn: exact
    (6, ip4() / TCP(flags="S"), {}, ACC),
    (6, ip4() / TCP(flags="SE"), {}, BRK),
    # ct state established,new: implicit op on a bitmask = flag test
    (7, ip4() / TCP(), {"ct": FakeCt(), "ctinfo": NEW}, ACC),
    (7, ip4() / TCP(), {"ct": FakeCt(), "ctinfo": EST_REPLY}, ACC),
    (7, ip4() / TCP(), {"ct": FakeCt(), "ctinfo": REL}, BRK),
    (7, ip4() / TCP(), {"ct": None}, BRK),  # invalid
    (9, ip4() / TCP(), {"ct": FakeCt(), "ctinfo": EST}, ACC),
    (9, ip4() / TCP(), {"ct": None, "ctinfo": C.IP_CT_UNTRACKED}, BRK),
    # ct state != invalid: plain cmp neq
    (10, ip4() / TCP(), {"ct": FakeCt(), "ctinfo": REL}, ACC),
    (10, ip4() / TCP(), {"ct": None}, BRK),
    (10, ip4() / TCP(), {"ct": None, "ctinfo": C.IP_CT_UNTRACKED}, ACC),
    # ip saddr != { 1.1.1.1, 2.2.2.0/24 }
    (12, ip4(src="2.2.2.77") / TCP(), {}, BRK),
    (12, ip4(src="1.1.1.1") / TCP(), {}, BRK),
    (12, ip4(src="2.2.3.1") / TCP(), {}, ACC),
    (12, ip6() / TCP(), {}, BRK),  # implicit meta nfproto ipv4 in an inet table
    # iifname != "eth*"; iifname { "lo", "eth0" }
    (13, ip4() / TCP(), {"iifname": "eth12"}, BRK),
    (13, ip4() / TCP(), {"iifname": "wlan0"}, ACC),
    (13, ip4() / TCP(), {"iifname": "et"}, ACC),
    (15, ip4() / TCP(), {"iifname": "eth0"}, ACC),
    (15, ip4() / TCP(), {"iifname": "eth01"}, BRK),
    # icmp type echo-request icmp code 0
    (16, ip4() / ICMP(type=8, code=0), {}, ACC),
    (16, ip4() / ICMP(type=8, code=1), {}, BRK),
    (16, ip4() / ICMP(type=0), {}, BRK),
    (16, ip4() / UDP(sport=8, dport=0), {}, BRK),
    # ip daddr . tcp dport { 1.1.1.1 . 22, 2.2.2.2 . 80 }
    (18, ip4(dst="2.2.2.2") / TCP(dport=80), {}, ACC),
    (18, ip4(dst="2.2.2.2") / TCP(dport=22), {}, BRK),
    (18, ip4(dst="2.2.2.2") / UDP(dport=80), {}, BRK),
    # meta protocol ip6; meta length > 1500
    (19, ip6() / UDP(), {}, ACC),
    (19, ip4() / UDP(), {}, BRK),
    (20, ip4() / UDP() / (b"x" * 1473), {}, ACC),  # 20 + 8 + 1473 = 1501
    (20, ip4() / UDP() / (b"x" * 1472), {}, BRK),
    # ct mark 5; ct mark & 0xf == 1; meta mark & 0xff0 != 0
    (21, ip4() / UDP(), {"ct": FakeCt(mark=5)}, ACC),
    (21, ip4() / UDP(), {"ct": None}, BRK),
    (22, ip4() / UDP(), {"ct": FakeCt(mark=0x31)}, ACC),
    (22, ip4() / UDP(), {"ct": FakeCt(mark=0x32)}, BRK),
    (23, ip4() / UDP(), {"mark": 0x10}, ACC),
    (23, ip4() / UDP(), {"mark": 0x100F}, BRK),
    # ip6 hoplimit 1
    (24, ip6(hlim=1) / UDP(), {}, DRP),
    (24, ip6(hlim=2) / UDP(), {}, BRK),
    (24, ip4(ttl=1) / UDP(), {}, BRK),
    # udp dport vmap { 53 : accept, 123 : drop }
    (27, ip4() / UDP(dport=53), {}, ACC),
    (27, ip4() / UDP(dport=123), {}, DRP),
    (27, ip4() / UDP(dport=124), {}, BRK),
    (27, ip4() / TCP(dport=53), {}, BRK),
    # ip dscp cs1
    (28, ip4(tos=8 << 2) / UDP(), {}, ACC),
    (28, ip4(tos=(8 << 2) | 3) / UDP(), {}, ACC),  # ECN bits are masked off
    (28, ip4(tos=10 << 2) / UDP(), {}, BRK),
    # the classic 5-tuple
    (29, ip4("1.2.3.4", "5.6.7.8") / UDP(sport=1, dport=2), {}, ACC),
    (29, ip4("1.2.3.4", "5.6.7.8") / UDP(sport=1, dport=3), {}, BRK),
    (29, ip4("1.2.3.4", "5.6.7.8") / TCP(sport=1, dport=2), {}, BRK),
    (30, ip6(src="::1") / UDP(), {}, ACC),
    (30, ip6(src="::2") / UDP(), {}, BRK),
    # tcp sport != 1-1024
    (31, ip4() / TCP(sport=1025), {}, ACC),
    (31, ip4() / TCP(sport=1024), {}, BRK),
    (31, ip4() / UDP(sport=2000), {}, BRK),
    # icmpv6 type echo-request
    (32, ip6() / ICMPv6EchoRequest(), {}, ACC),
    (32, ip4() / ICMP(type=128), {}, BRK),
    # th sport 7: no protocol dependency, only a transport header
    (33, ip4() / UDP(sport=7), {}, ACC),
    (33, ip4() / TCP(sport=7), {}, ACC),
    (33, ip4(frag=10, proto=17) / (b"\x00\x07" + b"x" * 14), {}, BRK),  # a later fragment
    # ip protocol { tcp, udp }; meta l4proto != icmp
    (35, ip4() / UDP(), {}, ACC),
    (35, ip4() / ICMP(), {}, BRK),
    (36, ip6() / UDP(), {}, ACC),
    (36, ip4() / ICMP(), {}, BRK),
    # ct direction original; ct status snat,dnat; ct status & dnat == dnat
    (37, ip4() / UDP(), {"ct": FakeCt(), "ctinfo": EST}, ACC),
    (37, ip4() / UDP(), {"ct": FakeCt(), "ctinfo": EST_REPLY}, BRK),
    (37, ip4() / UDP(), {"ct": None}, BRK),
    (38, ip4() / UDP(), {"ct": FakeCt(status=C.IPS_SRC_NAT | C.IPS_CONFIRMED)}, ACC),
    (38, ip4() / UDP(), {"ct": FakeCt(status=C.IPS_CONFIRMED)}, BRK),
    (39, ip4() / UDP(), {"ct": FakeCt(status=C.IPS_DST_NAT)}, ACC),
    (39, ip4() / UDP(), {"ct": FakeCt(status=C.IPS_SRC_NAT)}, BRK),
    # udp length 8
    (40, ip4() / UDP(), {}, ACC),
    (40, ip4() / UDP() / b"x", {}, BRK),
    # tcp flags != syn / fin,syn,rst,ack
    (41, ip4() / TCP(flags="SA"), {}, DRP),
    (41, ip4() / TCP(flags="SP"), {}, BRK),
    # meta nfproto ipv4
    (42, ip4() / UDP(), {}, ACC),
    (42, ip6() / UDP(), {}, BRK),
    # ip frag-off & 0x1fff != 0
    (46, ip4(frag=10, proto=17) / (b"x" * 16), {}, DRP),
    (46, ip4(flags="MF") / UDP(), {}, BRK),
    # oifname "wan*" oifname != "wan9"; no output device yet: oifname is ""
    (47, ip4() / UDP(), {"oifname": "wan0"}, ACC),
    (47, ip4() / UDP(), {"oifname": "wan9"}, BRK),
    (47, ip4() / UDP(), {"oifname": "wa"}, BRK),
    (47, ip4() / UDP(), {"oifname": ""}, BRK),
]


@pytest.mark.parametrize(("handle", "p", "kw", "want"), CASES)
def test_rule_matches(handle, p, kw, want):
    assert eval_rule(RT, "inet", "t", "c", handle, make_pkt(p, **kw)) == want


def test_named_verdict_map_jumps():
    """tcp dport vmap @m: 22 accepts, 80 jumps to chain web, others break."""
    assert eval_rule(RT, "inet", "t", "c", 25, make_pkt(ip4() / TCP(dport=22))) == ACC
    pkt = make_pkt(ip4() / TCP(dport=80))
    assert eval_rule(RT, "inet", "t", "c", 25, pkt) == JMP and pkt.chain_target.name == "web"
    assert eval_rule(RT, "inet", "t", "c", 25, make_pkt(ip4() / TCP(dport=81))) == BRK


def test_ipv6_fragment_has_no_transport_header():
    """A later IPv6 fragment: meta l4proto still says UDP, but payload loads at the transport header fail."""
    first = (
        IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(offset=0, m=1, nh=17) / UDP(sport=7)
    )
    later = (
        IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(offset=8, nh=17) / (b"\x00\x07" * 4)
    )
    assert eval_rule(RT, "inet", "t", "c", 33, make_pkt(first)) == ACC
    assert eval_rule(RT, "inet", "t", "c", 33, make_pkt(later)) == BRK
    assert eval_rule(RT, "inet", "t", "c", 36, make_pkt(later)) == ACC  # l4proto udp != icmp


def test_limit_is_a_token_bucket_in_packet_time():
    """nft_limit: rate 10/second burst 5 passes 5 at once, then one per 100 ms of packet time."""
    rt = load_fixture("matches.json")
    ok = []
    for ts_ms in (0, 0, 0, 0, 0, 0, 50, 100, 150, 200, 210):
        pkt = make_pkt(ip4() / UDP(), ts_ns=ts_ms * 10**6)
        ok.append(eval_rule(rt, "inet", "t", "c", 45, pkt) == ACC)
    assert ok == [True] * 5 + [False, False, True, False, True, False]


def test_named_sets_with_prefixes_ranges_and_intervals():
    """A named interval set of the gateway fixture: prefix, range and a single address."""
    rt = load_fixture("gateway.json")
    s = rt.set("inet", "filter", "allowed")
    for addr, want in (("10.255.0.1", True), ("11.0.0.0", False), ("192.168.1.1", True),
                       ("192.168.1.50", True), ("192.168.1.51", False), ("172.16.0.1", True),
                       ("172.16.0.2", False)):  # fmt: skip
        assert (s.get(int(ipaddress.IPv4Address(addr))) is not None) == want, addr


def test_log_prefix_and_line():
    rt = load_fixture("gateway.json")
    pkt = make_pkt(ip4("10.9.9.9", "192.0.2.1") / TCP(sport=1234, dport=9), hooknum=C.NF_INET_LOCAL_IN,
                   iifname="wan0", ct=FakeCt(), ctinfo=NEW)  # fmt: skip
    eval_rule(rt, "inet", "filter", "input", 20, pkt)
    assert pkt.logs == ["bad: IN=wan0 OUT= SRC=10.9.9.9 DST=192.0.2.1 LEN=40 PROTO=TCP SPT=1234 DPT=9"]


def test_meta_iif_oif_by_index_and_by_name():
    """meta oif "lo": nft resolves the name to an ifindex at load; without a map we compare names."""
    item = [{"table": {"family": "ip", "name": "t"}},
            {"chain": {"family": "ip", "table": "t", "name": "f", "type": "filter", "hook": "forward", "prio": 0,
                       "policy": "accept"}},
            {"rule": {"family": "ip", "table": "t", "chain": "f", "handle": 2, "expr": [
                {"match": {"op": "==", "left": {"meta": {"key": "oif"}}, "right": "lo"}}, {"drop": None}]}}]  # fmt: skip
    by_index = runtime(item, ifindex={"lo": 1, "eth0": 2})
    by_name = runtime(item)
    for rt in (by_index, by_name):
        assert nft_do_chain(rt.chain("ip", "t", "f"), make_pkt(ip4() / UDP(), oif=1, oifname="lo")) == DRP
        assert nft_do_chain(rt.chain("ip", "t", "f"), make_pkt(ip4() / UDP(), oif=2, oifname="eth0")) == ACC
    with pytest.raises(Exception, match="interface 'lo' does not exist"):
        runtime(item, ifindex={"eth0": 2})
