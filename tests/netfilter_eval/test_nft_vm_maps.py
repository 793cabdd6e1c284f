"""The VM's set lookups with catch-all elements and concatenated keys, and its punt on sets the packet
path updates (nft_vm.nft_set_find; Linux: nf_tables_api.c › nft_set_catchall_lookup, nft_set_pipapo.c)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import runtime  # noqa: E402
from test_nft_vm_ops import ACCEPT, DROP, T, chain, match, pl, rule, tcp4, vm_run  # noqa: E402

from flowpath.netfilter import constants as C  # noqa: E402
from flowpath.netfilter import nft_vm as V  # noqa: E402

SADDR_DPORT = {"concat": [pl("ip", "saddr"), pl("tcp", "dport")]}


def test_catch_all_answers_when_no_element_does():
    """`ip saddr vmap { 1.1.1.1 : drop, * : accept }` in a policy-drop chain: the catch-all accepts."""
    vmap = {"vmap": {"key": pl("ip", "saddr"), "data": {"set": [["1.1.1.1", DROP], ["*", ACCEPT]]}}}
    rt = runtime([T, chain("c", policy="drop"), rule("c", vmap)])
    assert vm_run(rt, tcp4(src="1.1.1.1"))[0] == C.NF_DROP
    assert vm_run(rt, tcp4(src="1.1.1.2"))[0] == C.NF_ACCEPT
    without = {"vmap": {"key": pl("ip", "saddr"), "data": {"set": [["1.1.1.1", ACCEPT]]}}}
    rt = runtime([T, chain("c", policy="drop"), rule("c", without)])
    assert vm_run(rt, tcp4(src="1.1.1.2"))[0] == C.NF_DROP  # no element, no catch-all: the rule breaks


def test_concatenated_interval_vmap_and_catch_all():
    """A prefix . range element matches per component (pipapo); the rest goes to the catch-all."""
    elems = [
        [{"concat": [{"prefix": {"addr": "10.0.0.0", "len": 8}}, {"range": [20, 30]}]}, ACCEPT],
        ["*", DROP],
    ]
    rt = runtime(
        [T, chain("c", policy="accept"), rule("c", {"vmap": {"key": SADDR_DPORT, "data": {"set": elems}}})]
    )
    assert vm_run(rt, tcp4(22, src="10.1.2.3"))[0] == C.NF_ACCEPT
    assert vm_run(rt, tcp4(31, src="10.1.2.3"))[0] == C.NF_DROP
    assert vm_run(rt, tcp4(22, src="11.0.0.1"))[0] == C.NF_DROP


def test_lookup_in_a_set_the_path_updates_punts():
    """A set with flags timeout may change between two packets: its lookup is the closures' (NFT_PUNT)."""
    s = {"set": {"family": "inet", "table": "t", "name": "s", "type": "ipv4_addr", "flags": ["timeout"],
                 "timeout": 60, "elem": ["10.0.0.1"]}}  # fmt: skip
    static = {"set": {**s["set"], "name": "k", "flags": [], "timeout": 0}}
    rt = runtime([T, s, static, chain("c", policy="drop"), rule("c", match(pl("ip", "saddr"), "@s"), ACCEPT),
                  rule("c", match(pl("ip", "saddr"), "@k"), ACCEPT)])  # fmt: skip
    assert vm_run(rt, tcp4(src="10.0.0.1"))[0] == V.NFT_PUNT
    stats = {name: (rules, whole) for name, rules, whole, _ in rt.vm_stats()}
    assert stats["inet t c"] == (2, 1)


def test_mark_set_from_a_concatenated_map_with_a_catch_all():
    """`meta mark set ip saddr . tcp dport map { 10.0.0.1 . 22 : 0x1, * : 0x2 }`: OP_MAP puts the element's
    value in the register (nft_lookup_eval's dreg), OP_MARK_SET stores it; a key with neither breaks."""
    value = {"map": {"key": SADDR_DPORT, "data": {"set": [[{"concat": ["10.0.0.1", 22]}, 1], ["*", 2]]}}}
    mangle = {"mangle": {"key": {"meta": {"key": "mark"}}, "value": value}}
    rt = runtime([T, chain("c"), rule("c", mangle)])
    assert [vm_run(rt, tcp4(22, src=s))[1][V.PM_MARK] for s in ("10.0.0.1", "10.0.0.2")] == [1, 2]
    assert rt.vm_stats()[0][1:3] == (1, 1)  # compiled whole
    no_catchall = {"map": {"key": SADDR_DPORT, "data": {"set": [[{"concat": ["10.0.0.1", 22]}, 1]]}}}
    rt = runtime(
        [T, chain("c"), rule("c", {"mangle": {"key": {"meta": {"key": "mark"}}, "value": no_catchall}})]
    )
    verdict, pm, _ = vm_run(rt, tcp4(23, src="10.0.0.1"))
    assert (verdict, pm[V.PM_MARK], pm[V.PM_WRITES]) == (C.NF_ACCEPT, 0, 0)
