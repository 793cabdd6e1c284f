"""`redirect to :tcp dport map { 22 : 8000 }`: the port a map picks by key (nft_redir.c with the map's
register, as nft_nat.c › nft_nat_setup_proto takes NFTA_REDIR_REG_PROTO_MIN), in the VM and the closures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from scapy.all import TCP

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import ip4, make_pkt  # noqa: E402

from flowpath.config.nft import load_ruleset  # noqa: E402
from flowpath.netfilter import constants as C  # noqa: E402
from flowpath.netfilter.nf_tables import NftRuntime, nft_do_chain, nft_do_chain_closures  # noqa: E402

CORPUS = Path(__file__).resolve().parents[1] / "data" / "nft" / "nat_port_maps.nft"


@pytest.mark.parametrize("run", [nft_do_chain, nft_do_chain_closures], ids=["vm", "closures"])
def test_redirect_takes_the_port_its_map_gives(run):
    rt = NftRuntime.from_json(load_ruleset(CORPUS).to_json())
    chain = rt.chain("ip", "t", "c")
    for dport, want in ((22, 8000), (80, 8080)):
        p = make_pkt(ip4() / TCP(dport=dport), hooknum=C.NF_INET_PRE_ROUTING)
        assert run(chain, p) == C.NF_ACCEPT
        assert p.nat is not None and p.nat.redirect
        assert (p.nat.range.min_proto, p.nat.range.max_proto) == (want, want)
    p = make_pkt(ip4() / TCP(dport=443), hooknum=C.NF_INET_PRE_ROUTING)
    assert run(chain, p) == C.NF_ACCEPT and p.nat is None  # no element: the rule does not match
