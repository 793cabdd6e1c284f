"""Ethernet header matches in an ip chain (ip/ether.t), and the L2 families the datapath does not run.

Linux: net/netfilter/nft_payload.c › nft_payload_eval (NFT_PAYLOAD_LL_HEADER: from skb_mac_header), as
the bytecode of `ether saddr ... ip daddr ...` loads it (nftables tests/py/inet/ether.t.payload.ip).
"""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether

from flowpath.config.nft import parse_ruleset
from flowpath.errors import ConfigError
from flowpath.netfilter import constants as C
from flowpath.netfilter.nf_tables import NftRuntime, nft_do_chain, nft_do_chain_closures
from tests.netfilter_eval.nfeval_util import make_pkt

RULES = """table ip f {
	chain c_in {
		type filter hook input priority filter; policy accept;
		ether saddr 00:0f:54:0c:11:04 ip daddr 1.2.3.4 drop
		ether type ip ether daddr 02:00:00:00:00:99 drop
	}
}
"""


def frame(src: str, dst: str = "02:00:00:00:00:02", daddr: str = "1.2.3.4"):
    return Ether(src=src, dst=dst) / IP(src="10.0.0.1", dst=daddr) / UDP(dport=53)


@pytest.mark.parametrize("walk", [nft_do_chain, nft_do_chain_closures], ids=["vm", "closures"])
@pytest.mark.parametrize(
    ("pkt", "want"),
    [
        (frame("00:0f:54:0c:11:04"), C.NF_DROP),
        (frame("00:0f:54:0c:11:05"), C.NF_ACCEPT),  # another source MAC
        (frame("00:0f:54:0c:11:04", daddr="1.2.3.5"), C.NF_ACCEPT),  # the same MAC, another address
        (frame("00:0f:54:0c:11:05", dst="02:00:00:00:00:99"), C.NF_DROP),  # the second rule's daddr
    ],
)
def test_ether_addresses_match_in_an_ip_input_chain(walk, pkt, want):
    """The compiled program and the Python evaluator load the MAC addresses from the frame's header."""
    rt = NftRuntime.from_json(parse_ruleset(RULES).to_json())
    (chain,) = rt.base_chains(C.NFPROTO_IPV4, C.NF_INET_LOCAL_IN)
    assert walk(chain, make_pkt(pkt, hooknum=C.NF_INET_LOCAL_IN)) == want
    assert set(rt.nft_fallback().values()) == {0}  # the compiled program ran it, nothing was punted


VLAN_RULES = """table inet f {
	chain c_in {
		type filter hook input priority filter; policy accept;
		vlan id 10 vlan pcp 3 drop
		ether type 8021ad vlan id 1 vlan type 8021q vlan id 2 ip saddr 10.0.0.9 drop
		vlan id { 20, 30-39 } vlan dei 1 drop
	}
}
"""
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
IPUDP = IP(src="10.0.0.9", dst="1.2.3.4") / UDP(dport=53)


@pytest.mark.parametrize("walk", [nft_do_chain, nft_do_chain_closures], ids=["vm", "closures"])
@pytest.mark.parametrize(
    ("pkt", "want"),
    [
        (ETH / Dot1Q(vlan=10, prio=3) / IPUDP, C.NF_DROP),
        (ETH / Dot1Q(vlan=10, prio=2) / IPUDP, C.NF_ACCEPT),  # another priority code point
        (ETH / Dot1Q(vlan=11, prio=3) / IPUDP, C.NF_ACCEPT),
        (ETH / IPUDP, C.NF_ACCEPT),  # untagged: the `ether type 8021q` dependency fails
        (ETH / Dot1AD(vlan=1) / Dot1Q(vlan=2) / IPUDP, C.NF_DROP),  # the inner tag at link header + 18
        (ETH / Dot1AD(vlan=1) / Dot1Q(vlan=3) / IPUDP, C.NF_ACCEPT),
        (ETH / Dot1Q(vlan=1) / Dot1Q(vlan=2) / IPUDP, C.NF_ACCEPT),  # the outer tag is not 802.1ad
        (ETH / Dot1Q(vlan=35, dei=1) / IPUDP, C.NF_DROP),  # a set with a range, and dei
        (ETH / Dot1Q(vlan=35, dei=0) / IPUDP, C.NF_ACCEPT),
    ],
)
def test_vlan_fields_match_as_their_bytecode_loads_them(walk, pkt, want):
    """tests/py/bridge/vlan.t.payload: `vlan id` is 12 bits at link header + 14 behind `ether type
    8021q`; after `vlan type 8021q` the next vlan header is 4 bytes further."""
    rt = NftRuntime.from_json(parse_ruleset(VLAN_RULES).to_json())
    (chain,) = rt.base_chains(C.NFPROTO_IPV4, C.NF_INET_LOCAL_IN)
    assert walk(chain, make_pkt(pkt, hooknum=C.NF_INET_LOCAL_IN)) == want
    assert set(rt.nft_fallback().values()) == {0}  # the compiled program ran it, nothing was punted


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        ("table bridge b {\n chain c {\n type filter hook input priority 0;\n }\n}\n", "unsupported family"),
        ("table arp a {\n chain c {\n type filter hook input priority 0;\n }\n}\n", "unsupported family"),
    ],
)  # fmt: skip
def test_what_the_datapath_cannot_run_is_a_load_time_error(text, msg):
    """`flowpath nft -c` accepts these; the runtime refuses them when the ruleset is loaded, naming them."""
    rs = parse_ruleset(text)
    with pytest.raises(ConfigError, match=msg):
        NftRuntime.from_json(rs.to_json())
