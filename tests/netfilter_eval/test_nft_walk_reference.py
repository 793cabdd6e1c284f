"""nft_do_chain's jump stack against a naive recursive reference, on random chain graphs (hypothesis).

Linux: nf_tables_core.c › nft_do_chain. The reference reads jump as a call that comes back unless the
callee decided, and goto as a tail call: whatever ends the callee ends the caller too.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import UDP

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import ip4, make_pkt, make_skb, runtime  # noqa: E402

from flowpath.netfilter import constants as C  # noqa: E402
from flowpath.netfilter.nf_tables import nft_do_chain  # noqa: E402

N_CHAINS = 6
SKB = make_skb(ip4() / UDP())


@st.composite
def rulesets(draw):
    """chains[i] = list of (mark condition or None, mark to set or None, verdict); jumps go to j > i only."""
    chains = []
    for i in range(N_CHAINS):
        kinds = ["none", "accept", "drop", "return", "continue"] + (
            ["jump", "goto"] if i + 1 < N_CHAINS else []
        )
        rules = []
        for _ in range(draw(st.integers(0, 4))):
            cond = draw(st.none() | st.integers(0, 3))
            setm = draw(st.none() | st.integers(0, 3))
            kind = draw(st.sampled_from(kinds))
            target = draw(st.integers(i + 1, N_CHAINS - 1)) if kind in ("jump", "goto") else None
            rules.append((cond, setm, kind, target))
        chains.append(rules)
    return chains, draw(st.sampled_from(["accept", "drop"])), draw(st.integers(0, 3))


def to_json(chains, policy):
    items = [{"table": {"family": "ip", "name": "t"}}]
    for i in range(N_CHAINS):
        c = {"family": "ip", "table": "t", "name": f"c{i}"}
        if i == 0:
            c.update(type="filter", hook="forward", prio=0, policy=policy)
        items.append({"chain": c})
    for i, rules in enumerate(chains):
        for cond, setm, kind, target in rules:
            expr = []
            if cond is not None:
                expr.append({"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": cond}})
            if setm is not None:
                expr.append({"mangle": {"key": {"meta": {"key": "mark"}}, "value": setm}})
            if kind in ("jump", "goto"):
                expr.append({kind: {"target": f"c{target}"}})
            elif kind != "none":
                expr.append({kind: None})
            items.append({"rule": {"family": "ip", "table": "t", "chain": f"c{i}", "expr": expr}})
    return items


def reference(chains, policy, mark):
    state = {"mark": mark}

    def run(i):  # -> "accept" | "drop" | "back" (return or end of chain)
        for cond, setm, kind, target in chains[i]:
            if cond is not None and state["mark"] != cond:
                continue
            if setm is not None:
                state["mark"] = setm
            if kind in ("accept", "drop"):
                return kind
            if kind == "return":
                return "back"
            if kind == "jump":
                r = run(target)
                if r != "back":
                    return r
            if kind == "goto":
                return run(target)
        return "back"

    r = run(0)
    return (r if r != "back" else policy), state["mark"]


@settings(max_examples=200, deadline=None)
@given(rulesets())
def test_walk_matches_recursive_reference(case):
    chains, policy, mark = case
    rt = runtime(to_json(chains, policy))
    SKB.mark = mark
    pkt = make_pkt(SKB)
    v = nft_do_chain(rt.chain("ip", "t", "c0"), pkt)
    want, want_mark = reference(chains, policy, mark)
    assert (v, pkt.skb.mark) == ({"accept": C.NF_ACCEPT, "drop": C.NF_DROP}[want], want_mark)
