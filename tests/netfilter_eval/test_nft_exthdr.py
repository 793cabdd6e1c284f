"""TCP MSS clamping and TCP option matches (nft_exthdr.c, nft_rt.c › get_tcpmss) on mss.nft's JSON.

Oracle: Scapy re-dissects the rewritten frame; its TCP checksum must equal the one Scapy computes afresh.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import eval_rule, ip4, ip6, load_fixture, make_pkt, runtime  # noqa: E402

from flowpath.errors import ConfigError  # noqa: E402
from flowpath.netfilter import constants as C  # noqa: E402

RT = load_fixture("mss.json")
RT_MSS, CONST_MSS, MSS_RANGE, MSS_EXISTS, BCAST, PKTTYPE_SET = 2, 3, 4, 5, 6, 8


def syn(l3, mss=1460, flags="S"):
    return l3 / TCP(
        sport=40000, dport=443, flags=flags, options=[("NOP", None), ("MSS", mss), ("SAckOK", b"")]
    )


def after(pkt):
    """The frame as Scapy reads it, and the checksum Scapy computes for the same bytes."""
    eth = Ether(pkt.skb.buf.tobytes())
    fresh = eth.copy()
    del fresh[TCP].chksum
    return dict(eth[TCP].options)["MSS"], eth[TCP].chksum, Ether(bytes(fresh))[TCP].chksum


@pytest.mark.parametrize(
    ("l3", "mtu", "want"),
    [(ip4(), 1400, 1360), (ip6(), 1400, 1340), (ip4(), 1500, 1460), (ip4(), 9000, 1460), (ip4(), 40, 536)],
)
def test_set_rt_mtu_lowers_only(l3, mtu, want):
    """`tcp option maxseg size set rt mtu`: MTU minus headers (TCP_MSS_DEFAULT when silly), never raised."""
    pkt = make_pkt(syn(l3))
    pkt.mtu = mtu
    assert eval_rule(RT, "inet", "m", "f", RT_MSS, pkt) == C.NFT_CONTINUE
    mss, check, fresh = after(pkt)
    assert mss == min(want, 1460) and check == fresh


@pytest.mark.parametrize(
    "options", [[("MSS", 1460)], [("NOP", None), ("MSS", 1460)], [("NOP", None)] * 2 + [("MSS", 1460)]]
)
def test_checksum_right_at_even_and_odd_offsets(options):
    """The MSS value at an even or an odd offset: the incremental checksum must equal a full recompute."""
    pkt = make_pkt(ip4() / TCP(flags="S", options=options))
    assert eval_rule(RT, "inet", "m", "f", CONST_MSS, pkt) == C.NFT_CONTINUE
    mss, check, fresh = after(pkt)
    assert (mss, check) == (1360, fresh)


def test_no_route_breaks_and_non_syn_is_untouched():
    pkt = make_pkt(syn(ip4()))
    assert eval_rule(RT, "inet", "m", "f", RT_MSS, pkt) == C.NFT_BREAK  # pkt.mtu 0: no dst
    assert after(pkt)[0] == 1460
    pkt = make_pkt(syn(ip4(), flags="A"))
    pkt.mtu = 1280
    assert eval_rule(RT, "inet", "m", "f", RT_MSS, pkt) == C.NFT_BREAK  # tcp flags syn fails first


def test_constant_mss_and_missing_option():
    pkt = make_pkt(syn(ip4(), mss=1460))
    assert eval_rule(RT, "inet", "m", "f", CONST_MSS, pkt) == C.NFT_CONTINUE
    mss, check, fresh = after(pkt)
    assert (mss, check) == (1360, fresh)
    bare = ip4() / TCP(flags="S")
    pkt = make_pkt(bare)
    assert eval_rule(RT, "inet", "m", "f", CONST_MSS, pkt) == C.NFT_CONTINUE
    assert pkt.skb.buf.tobytes() == bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / bare)


def test_option_matches():
    assert eval_rule(RT, "inet", "m", "f", MSS_RANGE, make_pkt(syn(ip4(), mss=1200))) == C.NFT_CONTINUE
    assert eval_rule(RT, "inet", "m", "f", MSS_RANGE, make_pkt(syn(ip4(), mss=1461))) == C.NFT_BREAK
    assert eval_rule(RT, "inet", "m", "f", MSS_RANGE, make_pkt(ip4() / TCP())) == C.NFT_BREAK  # absent
    assert eval_rule(RT, "inet", "m", "f", MSS_EXISTS, make_pkt(syn(ip6()))) == C.NFT_CONTINUE
    assert eval_rule(RT, "inet", "m", "f", MSS_EXISTS, make_pkt(ip6() / TCP())) == C.NFT_BREAK
    assert eval_rule(RT, "inet", "m", "f", MSS_EXISTS, make_pkt(ip4() / UDP())) == C.NFT_BREAK


def test_meta_pkttype():
    bcast = Ether(dst="ff:ff:ff:ff:ff:ff") / IP(src="10.0.0.1", dst="10.0.0.255") / UDP()
    mcast = Ether(dst="01:00:5e:00:00:fb") / IP(src="10.0.0.1", dst="224.0.0.251") / UDP()
    v6mcast = Ether(dst="33:33:00:00:00:01") / IPv6(src="fe80::1", dst="ff02::1") / UDP()
    assert eval_rule(RT, "inet", "m", "f", BCAST, make_pkt(bcast)) == C.NF_DROP
    assert eval_rule(RT, "inet", "m", "f", BCAST, make_pkt(mcast)) == C.NFT_BREAK
    for p, want in ((mcast, C.NFT_CONTINUE), (v6mcast, C.NFT_CONTINUE), (ip4() / UDP(), C.NFT_CONTINUE),
                    (bcast, C.NFT_BREAK)):  # fmt: skip
        assert eval_rule(RT, "inet", "m", "f", PKTTYPE_SET, make_pkt(p)) == want


def test_rt_mtu_outside_routed_hooks_is_refused():
    """nft_rt_validate: NFT_RT_TCPMSS only at forward, output and postrouting."""
    stmt = {
        "mangle": {
            "key": {"tcp option": {"name": "maxseg", "field": "size"}},
            "value": {"rt": {"key": "mtu"}},
        }
    }
    items = [{"table": {"family": "ip", "name": "t"}},
             {"chain": {"family": "ip", "table": "t", "name": "i", "type": "filter", "hook": "input", "prio": 0}},
             {"rule": {"family": "ip", "table": "t", "chain": "i", "handle": 2, "expr": [stmt]}}]  # fmt: skip
    with pytest.raises(ConfigError, match="rt mtu is only valid at hooks forward, output, postrouting"):
        runtime(items)
