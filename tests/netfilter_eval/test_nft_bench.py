"""A small timing of the slow path's rule walk (printed, bounded loosely; ratios belong to `flowpath bench`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from scapy.layers.inet import TCP

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import FakeCt, ip4, load_fixture, make_skb  # noqa: E402

from flowpath.netfilter import constants as C  # noqa: E402
from flowpath.netfilter.nf_tables import NftPktinfo, nft_do_chain  # noqa: E402


def test_chain_walk_cost(capsys):
    """The input chain of gateway.json: an early accept and a walk through all 16 rules to the policy."""
    rt = load_fixture("gateway.json")
    chain = rt.chain("inet", "filter", "input")
    early = make_skb(ip4() / TCP(dport=22), ct=FakeCt(), ctinfo=C.IP_CT_ESTABLISHED)
    full = make_skb(ip4(src="10.1.0.1") / TCP(dport=9), ct=FakeCt(), ctinfo=C.IP_CT_NEW)
    n, lines = 3000, []
    for name, skb, want in (
        ("established accept", early, C.NF_ACCEPT),
        ("all rules to policy", full, C.NF_DROP),
    ):
        nft_do_chain(chain, NftPktinfo(skb=skb, hooknum=C.NF_INET_LOCAL_IN, nfproto=C.NFPROTO_IPV4))  # compiles
        t0 = time.perf_counter()  # the VM when numba's cache is cold: not part of the walk
        for _ in range(n):
            v = nft_do_chain(chain, NftPktinfo(skb=skb, hooknum=C.NF_INET_LOCAL_IN, nfproto=C.NFPROTO_IPV4))
        us = (time.perf_counter() - t0) / n * 1e6
        assert v == want
        assert us < 1000, f"{name}: {us:.1f} us per packet"  # an order of magnitude above anything sane
        lines.append(f"nft_do_chain {name}: {us:.2f} us/packet")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
