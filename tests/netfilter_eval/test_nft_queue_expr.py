"""`queue to EXPR`: a queue number computed per packet (numgen, jhash, symhash or a map lookup).

Linux: nftables src/parser_bison.y › queue_stmt_expr; net/netfilter/nft_queue.c › nft_queue_sreg_eval
(the number from a register) behind nft_lookup_eval (a map without an element for the key breaks the
rule before the queue); nf_queue.c: no listener on any queue, so the packet is dropped (NETFILTER_QUEUE),
or goes on with `bypass`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from scapy.all import UDP

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import ip4, make_pkt, run_hook  # noqa: E402

from flowpath.config.nft import parse_ruleset  # noqa: E402
from flowpath.netfilter import constants as C  # noqa: E402
from flowpath.netfilter.nf_tables import NftRuntime  # noqa: E402
from flowpath.packet.reason import Reason  # noqa: E402

RULES = """table inet t {
	chain fwd {
		type filter hook forward priority 0; policy accept;
		udp dport 1 queue to iifname map { "eth0" : 2, "eth1" : 3 }
		udp dport 1 drop
		udp dport 2 queue flags bypass to numgen inc mod 4
		udp dport 2 drop
		udp dport 3 queue to symhash mod 65536
		udp dport 4 queue to jhash ip saddr . udp sport mod 32 offset 4
	}
}
"""


@pytest.fixture(scope="module")
def rt() -> NftRuntime:
    return NftRuntime.from_json(parse_ruleset(RULES, "<rules>").to_json())


@pytest.mark.parametrize(
    "dport, iifname, verdict, reason",
    [
        (1, "eth0", C.NF_DROP, Reason.NETFILTER_QUEUE),  # queue 2: no listener
        (1, "wan9", C.NF_DROP, Reason.NETFILTER_DROP),  # no map element: the rule breaks, the next drops
        (2, "eth0", C.NF_ACCEPT, None),  # bypass: on with the next hook function, past the chain's drop
        (3, "eth0", C.NF_DROP, Reason.NETFILTER_QUEUE),
        (4, "eth0", C.NF_DROP, Reason.NETFILTER_QUEUE),
    ],
)
def test_queue_to_an_expression(rt, dport, iifname, verdict, reason):
    p = make_pkt(ip4() / UDP(sport=1000, dport=dport), iifname=iifname)
    assert run_hook(rt, p) == verdict
    assert p.reason == reason
