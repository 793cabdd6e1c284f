"""Malformed rulesets: every mutation of a real `nft -j` listing builds or raises ConfigError, never crashes.

DESIGN.md §7 (errors are data): a bad configuration is reported with a ConfigError, and exit code 2.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import HERE, ip4, ip6, make_pkt, make_skb  # noqa: E402
from scapy.layers.inet import TCP, UDP  # noqa: E402

from flowpath.errors import ConfigError  # noqa: E402
from flowpath.netfilter import constants as C  # noqa: E402
from flowpath.netfilter.nf_tables import NftRuntime, nft_do_chain  # noqa: E402

FIXTURES = [json.loads((HERE / f"{n}.json").read_text()) for n in ("gateway", "matches", "maps", "flowtable")]
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.text(max_size=6),
                 st.lists(st.integers(0, 3), max_size=2), st.dictionaries(st.text(max_size=4), st.none(), max_size=1))  # fmt: skip


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _mutate(doc, path, how, junk):
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    if how == "drop" and isinstance(parent, dict):
        del parent[key]
    else:
        parent[key] = junk


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(FIXTURES) - 1), st.data(), st.sampled_from(["drop", "replace"]), JUNK)
def test_mutated_listing_builds_or_raises_config_error(which, data, how, junk):
    doc = copy.deepcopy(FIXTURES[which])
    paths = [p for p in _paths(doc) if p]
    _mutate(doc, data.draw(st.sampled_from(paths)), how, junk)
    try:
        rt = NftRuntime.from_json(doc)
    except ConfigError as e:
        assert str(e).startswith("<ruleset>:0:0: Error: ")
        return
    for skb in (make_skb(ip4() / TCP(flags="S")), make_skb(ip6() / UDP())):  # and packets never crash it
        nfproto = C.NFPROTO_IPV6 if skb.is_ipv6 else C.NFPROTO_IPV4
        for hook in range(C.NF_INET_POST_ROUTING + 1):
            for chain in rt.base_chains(nfproto, hook):
                pkt = make_pkt(skb, hooknum=hook, nfproto=nfproto)
                pkt.mtu = 1400
                assert nft_do_chain(chain, pkt) in (C.NF_ACCEPT, C.NF_DROP)
