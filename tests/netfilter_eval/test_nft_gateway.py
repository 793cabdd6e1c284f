"""A gateway ruleset (gateway.nft, JSON from real nft) through whole hooks: filter, NAT, reject, raw, netdev.

Linux: nf_tables_core.c › nft_do_chain; nft_nat.c, nft_masq.c, nft_redir.c (NAT requests), nft_reject_inet.c,
nft_notrack (nft_ct.c), nft_meta.c › nft_meta_set_eval, nft_ct.c › nft_ct_set_eval.
"""

from __future__ import annotations

import sys
from pathlib import Path

from scapy.layers.inet import ICMP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6ND_NS, ICMPv6ND_RA

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import FakeCt, ip4, ip6, load_fixture, make_pkt, run_hook  # noqa: E402

from flowpath.netfilter import constants as C  # noqa: E402
from flowpath.netfilter import nat_range as N  # noqa: E402
from flowpath.netfilter.nf_tables import nft_do_chain  # noqa: E402
from flowpath.netfilter.nft_stmt import nft_reject_resolve  # noqa: E402
from flowpath.packet.reason import Reason  # noqa: E402

NEW, EST = C.IP_CT_NEW, C.IP_CT_ESTABLISHED
IN, FWD = C.NF_INET_LOCAL_IN, C.NF_INET_FORWARD


def inp(p, iifname="wan0", ct=True, ctinfo=NEW, **kw):
    return make_pkt(p, hooknum=IN, iifname=iifname, ct=FakeCt() if ct else None, ctinfo=ctinfo, **kw)


def test_input_chain_verdicts():
    rt = load_fixture("gateway.json")
    cases = [
        (inp(ip4() / TCP(dport=22), ctinfo=EST), C.NF_ACCEPT),  # ct state established,related
        (inp(ip4() / TCP(dport=22), ct=False), C.NF_DROP),  # no conntrack: invalid
        (inp(ip4() / TCP(dport=9), iifname="lo"), C.NF_ACCEPT),
        (inp(ip4(src="8.8.8.8") / TCP(dport=22), iifname="eth3"), C.NF_ACCEPT),  # eth* ssh
        (inp(ip4(src="8.8.8.8") / TCP(dport=443)), C.NF_ACCEPT),  # @ports
        (inp(ip4() / ICMP(type=8)), C.NF_ACCEPT),
        (inp(ip6() / ICMPv6EchoRequest()), C.NF_ACCEPT),
        (inp(ip6() / ICMPv6ND_NS(tgt="2001:db8::1")), C.NF_ACCEPT),
        (inp(ip4(src="8.8.8.8") / TCP(dport=9)), C.NF_DROP),  # ip saddr != 10.1.0.0/16 log drop
        (inp(ip4(src="10.1.2.3") / TCP(dport=9)), C.NF_DROP),  # falls through to policy drop
        (inp(ip4(src="10.1.2.3", dst="1.2.3.4") / UDP(dport=7000)), C.NF_DROP),  # meta l4proto udp reject
    ]
    for pkt, want in cases:
        assert run_hook(rt, pkt) == want, pkt.skb


def test_jump_to_chain_with_return_and_set_lookup():
    """tcp flags & (syn|ack) == syn ip saddr @allowed jump tcp_chk: 8080 accepted there, ttl < 10 dropped."""
    rt = load_fixture("gateway.json")
    assert run_hook(rt, inp(ip4(src="192.168.1.20") / TCP(dport=8080, flags="S"))) == C.NF_ACCEPT
    assert run_hook(rt, inp(ip4(src="192.168.1.20", ttl=5) / TCP(dport=80, flags="S"))) == C.NF_DROP
    # SYN/ACK does not jump; ttl 5 then hits nothing special and 80 is in @ports
    assert run_hook(rt, inp(ip4(src="192.168.1.20", ttl=5) / TCP(dport=80, flags="SA"))) == C.NF_ACCEPT
    # not in @allowed: no jump, 8080 is not in @ports -> ip saddr != 10.1.0.0/16 -> drop
    assert run_hook(rt, inp(ip4(src="192.168.1.51") / TCP(dport=8080, flags="S"))) == C.NF_DROP


def test_reject_variants():
    rt = load_fixture("gateway.json")
    pkt = inp(ip4(src="10.1.0.1") / UDP(dport=1500))
    assert run_hook(rt, pkt) == C.NF_DROP
    assert (pkt.reject, pkt.reason) == (("icmp", 1), Reason.NETFILTER_REJECT)  # host-unreachable
    pkt = inp(ip4(src="10.1.0.1") / TCP(dport=23))
    assert run_hook(rt, pkt) == C.NF_DROP and pkt.reject == ("tcp reset", 0)
    pkt = inp(ip6() / UDP(dport=9))  # plain `reject` in inet: icmpx port-unreachable
    assert run_hook(rt, pkt) == C.NF_DROP and pkt.reject == ("icmpx", 1)
    assert nft_reject_resolve(pkt.reject, C.NFPROTO_IPV6) == ("icmpv6", 4)
    assert nft_reject_resolve(pkt.reject, C.NFPROTO_IPV4) == ("icmp", 3)
    pkt = inp(ip4(src="10.1.0.1", dst="1.2.3.4") / TCP(dport=9))  # reject with icmpx admin-prohibited
    assert run_hook(rt, pkt) == C.NF_DROP and nft_reject_resolve(pkt.reject, C.NFPROTO_IPV4) == ("icmp", 13)


def test_goto_sets_marks_and_ends_with_policy():
    """meta mark 0x10 goto other: marks set there; oifname wan0 accepts, otherwise the base policy drops."""
    rt = load_fixture("gateway.json")
    ct = FakeCt(mark=1)
    pkt = make_pkt(ip4(src="10.1.0.1") / TCP(dport=9), hooknum=IN, iifname="wan0", oifname="wan0", ct=ct,
                   ctinfo=NEW, mark=0x10)  # fmt: skip
    assert run_hook(rt, pkt) == C.NF_ACCEPT
    assert (pkt.skb.mark, ct.mark) == (0x20, 5)
    pkt = make_pkt(ip4(src="10.1.0.1") / TCP(dport=9), hooknum=IN, ct=FakeCt(), ctinfo=NEW, mark=0x10)
    assert run_hook(rt, pkt) == C.NF_DROP


def test_forward_chain():
    rt = load_fixture("gateway.json")

    def fwd(p, **kw):
        return make_pkt(p, hooknum=FWD, ct=kw.pop("ct", FakeCt()), **kw)

    assert run_hook(rt, fwd(ip4() / UDP() / (b"x" * 1000))) == C.NF_DROP  # ip length > 1000
    assert run_hook(rt, fwd(ip6() / UDP() / (b"x" * 1000))) == C.NF_ACCEPT  # not IPv4
    assert run_hook(rt, fwd(ip4() / UDP(), oif=1, oifname="lo")) == C.NF_DROP  # meta oif "lo" by name


def test_nat_requests():
    """dnat/redirect/snat/masquerade fill pkt.nat with nf_nat_range2 values and accept."""
    rt = load_fixture("gateway.json")

    def nat(p, hook, **kw):
        pkt = make_pkt(p, hooknum=hook, ct=FakeCt(), **kw)
        for chain in rt.base_chains(C.NFPROTO_IPV4, hook):
            if chain.type == "nat":
                assert nft_do_chain(chain, pkt) == C.NF_ACCEPT
        return pkt.nat

    pre, post = C.NF_INET_PRE_ROUTING, C.NF_INET_POST_ROUTING
    r = nat(ip4() / TCP(dport=80), pre, iifname="wan0")
    assert (r.maniptype, r.masquerade, r.redirect) == (C.NF_NAT_MANIP_DST, False, False)
    assert r.range == N.NfNatRange(N.NF_NAT_RANGE_MAP_IPS | N.NF_NAT_RANGE_PROTO_SPECIFIED, 0xC0A8010A, 0xC0A8010A,
                                   8080, 8080)  # fmt: skip
    assert nat(ip4() / TCP(dport=80), pre, iifname="lan0") is None
    r = nat(ip4() / TCP(dport=2222), pre)
    assert r.redirect and r.range == N.NfNatRange(N.NF_NAT_RANGE_PROTO_SPECIFIED, 0, 0, 22, 22)
    r = nat(ip4() / UDP(dport=53), pre)
    assert (r.range.min_addr, r.range.max_addr, r.range.min_proto, r.range.max_proto) == (
        0xC0A8010A, 0xC0A80114, 5300, 5310)  # fmt: skip
    r = nat(ip4() / UDP(), post, oifname="wan0")
    assert r.masquerade and r.maniptype == C.NF_NAT_MANIP_SRC and r.range.flags == 0
    r = nat(ip4(src="10.1.2.3") / TCP(), post, oifname="lan1")  # the next rule would match too
    assert r.range == N.NfNatRange(N.NF_NAT_RANGE_MAP_IPS, 0x01020304, 0x01020304)  # first match wins
    r = nat(ip4(src="172.16.0.1") / UDP(), post, oifname="wan1")
    assert (
        r.masquerade and r.range.flags == N.NF_NAT_RANGE_PROTO_SPECIFIED | N.NF_NAT_RANGE_PROTO_RANDOM_FULLY
    )
    assert (r.range.min_proto, r.range.max_proto) == (1024, 65535)
    # a fresh request per packet: the datapath fills masquerade addresses in place
    a, b = nat(ip4() / UDP(), post, oifname="wan0"), nat(ip4() / UDP(), post, oifname="wan0")
    assert a is not b and a.range is not b.range


def test_ip6_raw_notrack_and_counter():
    rt = load_fixture("gateway.json")
    pre = C.NF_INET_PRE_ROUTING
    pkt = make_pkt(ip6(src="fe80::1") / UDP(), hooknum=pre, ct=None, ctinfo=0)
    assert run_hook(rt, pkt) == C.NF_ACCEPT and pkt.skb.ctinfo == C.IP_CT_UNTRACKED
    pkt = make_pkt(ip6(dst="2001:db8::1") / UDP() / b"abcd", hooknum=pre, ct=None, ctinfo=0)
    assert run_hook(rt, pkt) == C.NF_DROP and pkt.skb.ctinfo == 0
    assert [(c.table, c.packets, c.bytes) for c in rt.rule_counters() if c.family == "ip6"] == [
        ("raw", 1, 52)
    ]
    assert run_hook(rt, make_pkt(ip6() / ICMPv6ND_RA(), hooknum=pre)) == C.NF_ACCEPT
    # the ip nat prerouting chain is not an IPv6 chain
    assert [c.table for c in rt.base_chains(C.NFPROTO_IPV6, pre)] == ["raw"]


def test_netdev_ingress():
    rt = load_fixture("gateway.json")
    (chain,) = rt.base_chains(C.NFPROTO_NETDEV, C.NF_NETDEV_INGRESS)
    assert (chain.prio, chain.devices) == (-500, ())  # nft 1.0.6 -j omits the device

    def ing(p):
        return make_pkt(p, hooknum=C.NF_NETDEV_INGRESS, nfproto=C.NFPROTO_NETDEV, ct=None)

    assert nft_do_chain(chain, ing(ip4(src="127.0.0.2") / UDP())) == C.NF_DROP
    assert nft_do_chain(chain, ing(ip4(src="127.0.0.3") / UDP())) == C.NF_ACCEPT
    assert nft_do_chain(chain, ing(ip6() / UDP())) == C.NF_ACCEPT  # implicit meta protocol ip


def test_nat_with_maps():
    """dnat to <key> map { ... } (maps.nft): the looked-up address/port; a miss breaks the rule (nft_lookup)."""
    rt = load_fixture("maps.json")
    pre = C.NF_INET_PRE_ROUTING
    (chain,) = rt.base_chains(C.NFPROTO_IPV4, pre)

    def nat(p):
        pkt = make_pkt(p, hooknum=pre, ct=FakeCt())
        assert nft_do_chain(chain, pkt) == C.NF_ACCEPT
        r = pkt.nat
        return None if r is None else (r.range.flags, r.range.min_addr, r.range.max_addr, r.range.min_proto)

    ips, proto = N.NF_NAT_RANGE_MAP_IPS, N.NF_NAT_RANGE_PROTO_SPECIFIED
    assert nat(ip4() / TCP(dport=443)) == (ips, 0xC0A80103, 0xC0A80103, 0)
    assert nat(ip4() / UDP(dport=8080)) == (ips, 0xC0A80109, 0xC0A80109, 0)  # named map @pf
    assert nat(ip4() / TCP(dport=81)) == (ips | proto, 0xC0A80102, 0xC0A80102, 8081)  # port map
    assert nat(ip4(src="10.0.0.1") / TCP(dport=90)) == (ips | proto, 0xC0A80104, 0xC0A80104, 9090)  # concat
    assert nat(ip4(src="10.0.0.2") / TCP(dport=90)) is None  # every map misses
    assert nat(ip4() / UDP(dport=80)) is None  # tcp dport map: a UDP packet has no tcp dport


def test_ct_state_vmap_and_named_counter():
    rt = load_fixture("maps.json")
    chain = rt.chain("inet", "f", "c")
    counter = rt.tables["inet", "f"].counters["cnt"]
    for ct, ctinfo, want in ((FakeCt(), EST, C.NF_ACCEPT), (FakeCt(), C.IP_CT_RELATED, C.NF_ACCEPT),
                             (None, 0, C.NF_DROP), (FakeCt(), NEW, C.NF_ACCEPT)):  # fmt: skip
        assert nft_do_chain(chain, make_pkt(ip4() / UDP(), hooknum=IN, ct=ct, ctinfo=ctinfo)) == want
    assert (counter.packets, counter.bytes) == (1, 28)  # only the NEW packet got past the vmap
    (obj,) = [o["counter"] for o in rt.list_ruleset_json()["nftables"] if "counter" in o]
    assert (obj["name"], obj["packets"], obj["bytes"]) == ("cnt", 1, 28)
