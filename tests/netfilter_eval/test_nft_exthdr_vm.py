"""TCP options and IPv6 extension headers loaded by the compiled VM, in the classic lane.

Linux: net/netfilter/nft_exthdr.c › nft_exthdr_tcp_eval, nft_exthdr_ipv6_eval (ipv6_find_hdr); flowpath:
nft_exthdr_find.py (the walks the VM's OP_EXTHDR and the closures share). The packets go through a
Worker; the lane must finish them (no punt to the Python path) with the verdicts and counters the rules say.
"""

from __future__ import annotations

from pathlib import Path

from scapy.all import IP, TCP, UDP, Ether, IPv6, raw

from flowpath.config.ipbatch import parse_network
from flowpath.config.nft import parse_ruleset
from flowpath.datapath import Worker
from flowpath.packet.batch import PacketBatch
from flowpath.packet.reason import PUNT_NFT

ROOT = Path(__file__).resolve().parents[2]
GW_LAN, HOST = "02:00:00:00:01:01", "02:00:00:00:01:0a"
RULES = """table inet x {
	chain forward {
		type filter hook forward priority filter; policy accept;
		tcp option maxseg size 1460 counter drop
		tcp option sack-perm exists counter drop
		exthdr frag exists counter drop
		meta nfproto ipv6 exthdr hbh missing counter accept
		counter accept
	}
}
"""


def test_tcp_options_and_extension_headers_in_the_lane():
    """A SYN with MSS 1460 is dropped, one with MSS 1400 and SACK permitted by the second rule, one with
    MSS 1400 alone passes; an IPv6 datagram without a hop-by-hop header matches `exthdr hbh missing`
    (ipv6_find_hdr: ENOENT) and not `exthdr frag exists`. The lane finished all four, the VM never punted."""
    w = Worker(parse_network((ROOT / "examples" / "gateway.ip").read_text()), parse_ruleset(RULES),
               flowtable=False)  # fmt: skip
    frames = [
        Ether(src=HOST, dst=GW_LAN)
        / IP(src="192.168.1.10", dst="198.18.0.9")
        / TCP(sport=1000 + i, dport=443, flags="S", options=opts)
        for i, opts in enumerate([[("MSS", 1460)], [("MSS", 1400), ("SAckOK", b"")], [("MSS", 1400)]])
    ] + [
        Ether(src=HOST, dst=GW_LAN)
        / IPv6(src="2001:db8:1::10", dst="2001:db8:99::1")
        / UDP(sport=5, dport=53)
    ]
    b = PacketBatch(len(frames))
    for f in frames:
        b.append(raw(f), w.net.dev.link_by_name("lan0").ifindex, 10**9)
    out = [Ether(f) for _, f, _ in w.poll(b).frames()]
    assert [(TCP in f and f[TCP].sport) or f[UDP].sport for f in out] == [1002, 5]
    assert [c.packets for c in w.net.nft.rule_counters()] == [1, 1, 0, 1, 1]
    assert int(w.stats.lane_punts[PUNT_NFT]) == 0 and sum(w.net.nft.nft_fallback().values()) == 0
    assert w.stats.lane_packets == 4
