"""A data map looked up with a masked key: `meta mark set ip6 saddr & ::ffff map { ... }` (ip6/map.t).

Linux: nftables src/parser_bison.y › map_expr (its key a concat_expr, so a bitwise and too);
net/netfilter/nft_bitwise.c then nft_lookup.c with a dreg. The VM and the closures mark as the kernel does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import make_pkt  # noqa: E402
from test_nft_kernel_diff import assert_kernel_counts, kernel_replay, veth_pair  # noqa: E402, F401

from flowpath.config.nft import parse_ruleset  # noqa: E402
from flowpath.netfilter import constants as C  # noqa: E402
from flowpath.netfilter.nf_tables import NftRuntime, nft_do_chain, nft_do_chain_closures  # noqa: E402

RULES = """table ip6 t {
	chain c {
		type filter hook input priority filter; policy accept;
		meta mark set ip6 saddr & ::ffff map { ::2 : 0x0000002a, ::ffff : 0x00000017 }
		meta mark 0x0000002a counter
		meta mark 0x00000017 counter
	}
}
"""
B6 = "2001:db8:7::2"
FRAMES = [IPv6(src=s, dst=B6) / UDP(sport=9, dport=9) for s in ("2001:db8:7::1", "2001:db8:7::2", "2001:db8:7::ffff")]


@pytest.mark.parametrize("do_chain", [nft_do_chain, nft_do_chain_closures], ids=["vm", "closures"])
def test_mark_from_a_map_of_the_masked_address(do_chain):
    rs = parse_ruleset(RULES, "<rules>")
    assert rs.list().split("\n")[3].strip() == RULES.split("\n")[3].strip()  # as nft 1.0.6 lists it
    rt = NftRuntime.from_json(rs.to_json())
    (chain,) = rt.base_chains(C.NFPROTO_IPV6, C.NF_INET_LOCAL_IN)
    marks = []
    for f in FRAMES:
        pkt = make_pkt(f, hooknum=C.NF_INET_LOCAL_IN)
        assert do_chain(chain, pkt) == C.NF_ACCEPT
        marks.append(pkt.skb.mark)
    assert marks == [0, 0x2A, 0x17]  # ::1 & ::ffff has no element: the rule breaks, the mark stays


@pytest.mark.root
def test_masked_map_marks_as_the_kernel(veth_pair):  # noqa: F811  (the fixture imported above)
    rt = kernel_replay(veth_pair, RULES, FRAMES, accept=True)
    assert_kernel_counts(veth_pair[1], rt)
