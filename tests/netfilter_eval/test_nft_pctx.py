"""A payload match after an explicit protocol match: the dependency nft does not repeat (nft_pctx.py).

Linux: nftables src/payload.c › payload_gen_special_dependency (tests/py/inet/icmpX.t.payload: `ip protocol
ipv6-icmp icmpv6 type 1` loads the type with no check of its own); net/netfilter/nft_payload.c ›
nft_payload_eval reads the transport header of any protocol. The VM and the closures must both match
ICMPv6 carried by IPv4 after `ip protocol ipv6-icmp`, and the kernel counts the same frames.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6PacketTooBig, IPv6

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import HERE, make_pkt  # noqa: E402
from test_nft_kernel_diff import assert_kernel_counts, kernel_replay, veth_pair  # noqa: E402, F401

from flowpath.config.nft import load_ruleset  # noqa: E402
from flowpath.netfilter import constants as C  # noqa: E402
from flowpath.netfilter.nf_tables import NftRuntime, nft_do_chain, nft_do_chain_closures  # noqa: E402

B4, B6 = "10.7.0.2", "2001:db8:7::2"
FRAMES = {
    "icmpv6 in ipv4": IP(src="10.7.0.1", dst=B4, proto=58) / ICMPv6EchoRequest(id=1),
    "icmpv6": IPv6(src="2001:db8:7::1", dst=B6) / ICMPv6EchoRequest(id=2),
    "too big in ipv4": IP(src="10.7.0.1", dst=B4, proto=58) / ICMPv6PacketTooBig(mtu=1280),
    "icmp in ipv6": IPv6(src="2001:db8:7::1", dst=B6, nh=1) / ICMP(type=8, id=3),
    "icmp": IP(src="10.7.0.1", dst=B4) / ICMP(type=8, id=4),
}
# pctx.nft's rules in order -> the frames each one matches (what the kernel counts: test below)
EXPECT = [
    {"icmpv6 in ipv4"},  # ip protocol ipv6-icmp icmpv6 type echo-request: no nfproto ipv6, no l4proto
    {"icmpv6 in ipv4"},  # meta nfproto ipv4 icmpv6 type echo-request: meta l4proto 58 only
    {"icmpv6"},  # icmpv6 type echo-request: meta nfproto ipv6, meta l4proto 58
    {"too big in ipv4"},  # ... icmpv6 mtu 1280 behind its type (packet-too-big) dependency
    {"icmp in ipv6"},  # meta nfproto ipv6 icmp type echo-request
    {"icmp in ipv6"},  # ip6 nexthdr icmp icmp type echo-request
    {"icmpv6 in ipv4"},  # ip saddr 10.7.0.1 icmpv6 type echo-request
]


def _runtime() -> NftRuntime:
    return NftRuntime.from_json(load_ruleset(HERE / "pctx.nft").to_json())


@pytest.mark.parametrize("do_chain", [nft_do_chain, nft_do_chain_closures], ids=["vm", "closures"])
def test_explicit_protocol_match_is_the_dependency(do_chain):
    for name, frame in FRAMES.items():
        rt = _runtime()
        pkt = make_pkt(frame, hooknum=C.NF_INET_LOCAL_IN)
        (chain,) = rt.base_chains(pkt.nfproto, C.NF_INET_LOCAL_IN)
        assert do_chain(chain, pkt) == C.NF_ACCEPT
        got = [c.packets for c in rt.rule_counters()]
        assert got == [1 if name in want else 0 for want in EXPECT], name
        if do_chain is nft_do_chain:
            assert rt.vm_stats()[0][1:] == (len(EXPECT), len(EXPECT), 0)  # the VM ran every rule itself


@pytest.mark.root
def test_explicit_protocol_match_counts_as_the_kernel(veth_pair):  # noqa: F811  (the fixture imported above)
    rt = kernel_replay(veth_pair, (HERE / "pctx.nft").read_text(), list(FRAMES.values()), accept=True)
    assert_kernel_counts(veth_pair[1], rt)
