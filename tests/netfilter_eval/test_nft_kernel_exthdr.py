"""Differential oracle for IPv6 extension headers and TCP options: Linux's input hook and flowpath (root only).

Linux: nft_exthdr.c › nft_exthdr_ipv6_eval (ipv6_find_hdr), nft_exthdr_tcp_eval, nft_exthdr_tcp_set_eval
and nft_exthdr_tcp_strip_eval, run by NF_INET_LOCAL_IN in the receiving namespace of
test_nft_kernel_diff.py's veth pair. No conntrack is used, so no defragmentation: fragments reach the hook
as sent. Each rule counts, and the kernel's counters must equal the evaluator's for the same frames; the
rules after `reset tcp option` and `... set 1360` see the rewritten options in both.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import (
    MIP6MH_BU,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    IPv6ExtHdrSegmentRouting,
)
from scapy.layers.ipsec import AH

sys.path.insert(0, str(Path(__file__).parent))
from test_nft_kernel_diff import assert_kernel_counts, kernel_replay, veth_pair  # noqa: E402, F401  (a fixture)

pytestmark = pytest.mark.root

RULES = """table inet x {
	chain in {
		type filter hook input priority filter; policy accept;
		ip6 saddr fe80::/10 accept
		icmpv6 type { mld-listener-report, mld2-listener-report, nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } accept
		exthdr hbh exists counter
		exthdr hbh missing counter
		hbh nexthdr 60 counter
		hbh hdrlength 0 counter
		exthdr rt exists counter
		rt type 4 counter
		rt type 0 rt seg-left 1 counter
		rt nexthdr udp counter
		srh last-entry 1 counter
		srh tag 0x1234 counter
		srh sid[1] 2001:db8:7::77 counter
		srh sid[2] 2001:db8:7::2 counter
		exthdr frag exists counter
		frag more-fragments 1 counter
		frag more-fragments 0 counter
		frag frag-off 185 counter
		frag id 0xabcdef01 counter
		frag nexthdr 60 counter
		exthdr dst exists counter
		exthdr dst != exists counter
		dst nexthdr 17 counter
		exthdr mh exists counter
		mh type binding-update counter
		mh nexthdr 59 counter
		tcp option maxseg size 1400 counter
		tcp option maxseg exists counter
		tcp option sack-perm exists counter
		tcp option window count 7 counter
		tcp option timestamp tsecr 22 counter
		tcp option sack1 left 300 counter
		tcp option sack right 200 counter
		tcp option 200 missing counter
		tcp option @8,16,32 11 counter
		tcp option mptcp subtype 2 counter
		reset tcp option sack-perm counter
		tcp option sack-perm missing counter
		tcp option maxseg size set 1360 counter
		tcp option maxseg size 1360 counter
		tcp option timestamp tsval set 77 counter
		tcp option timestamp tsval 77 counter
	}
}
"""
B6, A6 = "2001:db8:7::2", "2001:db8:7::1"
OPTS = [("MSS", 1400), ("NOP", None), ("WScale", 7), ("SAckOK", b""), ("Timestamp", (11, 22)),
        ("SAck", (100, 200, 300, 400)), ("NOP", None), ("NOP", None)]  # fmt: skip
FRAMES = [
    IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / UDP(sport=9, dport=9),
    IPv6(src=A6, dst=B6)
    / IPv6ExtHdrSegmentRouting(addresses=["2001:db8:7::77", B6], segleft=1, lastentry=1, tag=0x1234)
    / UDP(sport=9, dport=9),  # fmt: skip
    IPv6(src=A6, dst=B6) / IPv6ExtHdrRouting(addresses=["2001:db8:7::5"], segleft=1) / UDP(sport=9, dport=9),
    IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(m=1, id=0xABCDEF01) / UDP(sport=9, dport=9) / (b"f" * 16),
    IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(nh=60, offset=185, id=9) / IPv6ExtHdrDestOpt() / (b"g" * 8),
    IPv6(src=A6, dst=B6) / MIP6MH_BU(),
    IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop() / MIP6MH_BU(),
    IPv6(src=A6, dst=B6) / AH(nh=60, payloadlen=4, spi=1, icv=bytes(12)) / IPv6ExtHdrDestOpt(nh=17) / UDP(),
    IP(src="10.7.0.1", dst="10.7.0.2") / TCP(sport=1000, dport=9, flags="S", options=OPTS),
    IPv6(src=A6, dst=B6) / TCP(sport=1001, dport=9, flags="S", options=OPTS),
    IPv6(src=A6, dst=B6) / TCP(sport=1002, dport=9, flags="S", options=[(30, b"\x21\x05"), ("MSS", 1200)]),
    IPv6(src=A6, dst=B6) / UDP(sport=9, dport=10),
]


def test_exthdr_and_tcp_option_counters_match_the_kernel(veth_pair):  # noqa: F811
    rt = kernel_replay(veth_pair, RULES, FRAMES, ct=False, accept=True)
    assert_kernel_counts(veth_pair[1], rt)
