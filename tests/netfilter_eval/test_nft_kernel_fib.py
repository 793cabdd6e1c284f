"""Differential oracle for `fib`: the same frames through Linux's PREROUTING and through flowpath (root only).

Linux: nft_fib_ipv4.c / nft_fib_ipv6.c against the receiving namespace's FIB; flowpath against a network
file that mirrors it (vb 10.7.0.2/24 and 2001:db8:7::2/64, a default route via 10.7.0.1, a blackhole
route for 10.66.0.0/16). The frames leave the sender's veth (AF_PACKET, as test_nft_kernel_diff.py
sends them); each rule only counts, and the kernel's counters must equal the evaluator's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import raw

sys.path.insert(0, str(Path(__file__).parent))
from test_nft_kernel_diff import _SEND, _frame, _sh, assert_kernel_counts, veth_pair  # noqa: E402, F401  (a fixture)

from flowpath.config.ipbatch import parse_network  # noqa: E402
from flowpath.netfilter import constants as C  # noqa: E402
from flowpath.netfilter.nf_tables import NftPktinfo, NftRuntime, nft_do_chain  # noqa: E402
from flowpath.netns import Net  # noqa: E402
from flowpath.packet.skb import frame_array, skb_parse  # noqa: E402

pytestmark = pytest.mark.root

RULES = """table inet r {
	chain pre {
		type filter hook prerouting priority raw; policy accept;
		ip6 saddr fe80::/10 accept
		icmpv6 type { mld-listener-report, mld2-listener-report, nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } accept
		fib saddr . iif oif missing counter
		fib saddr . iif oif exists counter
		fib saddr oif missing counter
		fib saddr . iif oifname "vb" counter
		fib daddr type local counter
		fib daddr . iif type local counter
		fib daddr type broadcast counter
		fib daddr type multicast counter
		fib daddr type unicast counter
		fib daddr . iif type != { local, broadcast, multicast } counter
		fib daddr oif missing counter
	}
}
"""
FRAMES = [
    IP(src="10.7.0.1", dst="10.7.0.2") / UDP(sport=9, dport=9),
    IP(src="10.66.0.5", dst="10.7.0.2") / UDP(sport=9, dport=9),  # the route back is a blackhole
    IP(src="198.51.100.1", dst="10.7.0.2") / UDP(sport=9, dport=9),  # back by the default route: on vb
    IP(src="10.7.0.2", dst="10.7.0.2") / UDP(sport=9, dport=9),  # our own address as source
    Ether(dst="ff:ff:ff:ff:ff:ff") / IP(src="10.7.0.1", dst="10.7.0.255") / UDP(sport=9, dport=9),
    Ether(dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67),
    Ether(dst="01:00:5e:00:00:05") / IP(src="10.7.0.1", dst="224.0.0.5") / UDP(sport=9, dport=9),
    IP(src="10.7.0.1", dst="8.8.8.8") / UDP(sport=9, dport=9),
    IP(src="10.7.0.1", dst="10.66.1.1") / UDP(sport=9, dport=9),
    IPv6(src="2001:db8:7::1", dst="2001:db8:7::2") / UDP(sport=9, dport=9),
    IPv6(src="2001:db8:66::1", dst="2001:db8:7::2") / UDP(sport=9, dport=9),  # no IPv6 route back
    IPv6(src="2001:db8:7::1", dst="2001:db8:9::9") / UDP(sport=9, dport=9),
    Ether(dst="33:33:00:00:00:fb") / IPv6(src="2001:db8:7::1", dst="ff02::fb") / UDP(sport=9, dport=9),
]


def test_fib_counters_match_the_kernel(veth_pair):  # noqa: F811
    a, b = veth_pair
    _sh("ip", "-n", b, "route", "add", "blackhole", "10.66.0.0/16")
    _sh("ip", "netns", "exec", b, "nft", "-f", "-", input=RULES)
    listing = json.loads(_sh("ip", "netns", "exec", b, "nft", "-j", "list", "ruleset").stdout)
    rt = NftRuntime.from_json(listing)
    vb = json.loads(_sh("ip", "-n", b, "-j", "link", "show", "vb").stdout)[0]
    va = json.loads(_sh("ip", "-n", a, "-j", "link", "show", "va").stdout)[0]
    net = Net(parse_network(
        f"link add vb address {vb['address']}\nlink set vb up\naddr add 10.7.0.2/24 dev vb\n"
        "addr add 2001:db8:7::2/64 dev vb\nroute add default via 10.7.0.1 dev vb\n"
        "route add blackhole 10.66.0.0/16\n", "b.ip"))  # fmt: skip
    ifindex = net.link_by_name("vb").ifindex
    frames = [raw(_frame(p, va["address"], vb["address"])) for p in FRAMES]

    _sh("ip", "netns", "exec", a, sys.executable, "-c", _SEND, input="\n".join(f.hex() for f in frames))
    for f in frames:
        skb = skb_parse(frame_array(f), ifindex)
        nfproto = C.NFPROTO_IPV6 if skb.is_ipv6 else C.NFPROTO_IPV4
        pkt = NftPktinfo(skb=skb, hooknum=C.NF_INET_PRE_ROUTING, nfproto=nfproto, iifname="vb", iif=ifindex,
                         net=net)  # fmt: skip
        for chain in rt.base_chains(nfproto, C.NF_INET_PRE_ROUTING):
            assert nft_do_chain(chain, pkt) == C.NF_ACCEPT
    assert_kernel_counts(b, rt)
