"""NAT to a whole prefix: `dnat to [2001:db8:1::]/64` (tests/py/ip6/dnat.t) is the range of the prefix;
`snat ip prefix to ... map` (ip/snat.t) maps a network onto another, host bits kept.

Linux: nftables src/evaluate.c › stmt_evaluate_nat (a prefix becomes NF_NAT_RANGE_MAP_IPS from its first to its
last address); net/netfilter/nft_nat.c › nft_nat_eval fills nf_nat_range2 with them.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import pytest
from scapy.all import TCP

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import FakeCt, ip6, make_pkt  # noqa: E402

from flowpath.config.nft import parse_ruleset  # noqa: E402
from flowpath.netfilter import constants as C  # noqa: E402
from flowpath.netfilter import nat_range as N  # noqa: E402
from flowpath.netfilter.nf_tables import NftRuntime, nft_do_chain, nft_do_chain_closures  # noqa: E402

RULES = """table ip6 t {
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		dnat to [2001:db8:1::]/64
	}
}
"""


@pytest.mark.parametrize("do_chain", [nft_do_chain, nft_do_chain_closures], ids=["vm", "closures"])
def test_dnat_to_an_ipv6_prefix_is_its_address_range(do_chain):
    rs = parse_ruleset(RULES, "<rules>")
    assert rs.list().split("\n")[3].strip() == "dnat to 2001:db8:1::/64"  # as nft 1.0.6 lists it
    rt = NftRuntime.from_json(rs.to_json())
    pkt = make_pkt(ip6() / TCP(dport=80), hooknum=C.NF_INET_PRE_ROUTING, ct=FakeCt())
    (chain,) = rt.base_chains(C.NFPROTO_IPV6, C.NF_INET_PRE_ROUTING)
    assert do_chain(chain, pkt) == C.NF_ACCEPT
    lo, hi = (int(ipaddress.IPv6Address(a)) for a in ("2001:db8:1::", "2001:db8:1:0:ffff:ffff:ffff:ffff"))
    assert pkt.nat.maniptype == C.NF_NAT_MANIP_DST
    assert pkt.nat.range == N.NfNatRange(N.NF_NAT_RANGE_MAP_IPS, lo, hi)


NETMAP = """table ip t {
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		snat ip prefix to ip saddr map { 192.168.1.0/24 : 198.51.100.0/24 }
	}
}
"""


def test_snat_prefix_map_keeps_the_host_bits_through_a_worker():
    """`snat ip prefix to ip saddr map { 192.168.1.0/24 : 198.51.100.0/24 }` (ip/snat.t): NF_NAT_RANGE_NETMAP
    (nft_nat.c › nft_nat_setup_netmap: the range's network part, the old address's host part), so
    192.168.1.10 leaves as 198.51.100.10 and 192.168.1.11 as 198.51.100.11."""
    from scapy.all import IP, Ether, raw

    from flowpath.config.ipbatch import parse_network
    from flowpath.datapath import Worker
    from flowpath.packet.batch import PacketBatch

    rs = parse_ruleset(NETMAP, "<rules>")
    assert rs.list().split("\n")[3].strip() == "snat ip prefix to ip saddr map { 192.168.1.0/24 : 198.51.100.0/24 }"
    root = Path(__file__).resolve().parents[2]
    w = Worker(parse_network((root / "examples" / "gateway.ip").read_text(), "<net>"), rs, flowtable=False)
    lan0 = w.net.dev.link_by_name("lan0").ifindex
    b = PacketBatch(2)
    for host, sport in (("192.168.1.10", 4000), ("192.168.1.11", 4001)):
        f = Ether(src="02:00:00:00:01:0a", dst="02:00:00:00:01:01") / IP(src=host, dst="198.18.0.9") / TCP(
            sport=sport, dport=443)
        b.append(raw(f), lan0, 10**9)
    out = sorted((Ether(f)[IP].src, Ether(f)[TCP].sport) for _, f, _ in w.poll(b).frames())
    assert out == [("198.51.100.10", 4000), ("198.51.100.11", 4001)]
