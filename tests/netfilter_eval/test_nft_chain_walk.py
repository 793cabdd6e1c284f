"""Chain walk semantics of nft_do_chain (net/netfilter/nf_tables_core.c) and the load-time checks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from scapy.layers.inet import TCP, UDP

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import eval_rule, ip4, ip6, make_pkt, run_hook, runtime  # noqa: E402

from flowpath.errors import ConfigError  # noqa: E402
from flowpath.netfilter import constants as C  # noqa: E402
from flowpath.netfilter.nf_tables import nft_do_chain  # noqa: E402
from flowpath.packet.reason import Reason  # noqa: E402

T = {"table": {"family": "ip", "name": "t"}}


def chain(name, hook=None, prio=0, policy="accept", type_="filter", family="ip", table="t"):
    c = {"family": family, "table": table, "name": name}
    if hook:
        c.update(type=type_, hook=hook, prio=prio, policy=policy)
    return {"chain": c}


def rule(chain_name, *expr, handle=0, family="ip", table="t"):
    return {
        "rule": {"family": family, "table": table, "chain": chain_name, "handle": handle, "expr": list(expr)}
    }


def dport(p, op="=="):
    return {"match": {"op": op, "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": p}}


def mark_set(v):
    return {"mangle": {"key": {"meta": {"key": "mark"}}, "value": v}}


def mark_is(v):
    return {"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": v}}


COUNT = {"counter": {"packets": 0, "bytes": 0}}
ACCEPT, DROP, RETURN, CONTINUE = {"accept": None}, {"drop": None}, {"return": None}, {"continue": None}


def jump(t):
    return {"jump": {"target": t}}


def goto(t):
    return {"goto": {"target": t}}


def fwd(port=80):
    return make_pkt(ip4() / TCP(dport=port))


def test_policy_applies_after_last_rule():
    """nft_do_chain: no verdict from any rule -> the base chain's policy (NF_DROP here)."""
    rt = runtime([T, chain("f", "forward", policy="drop"), rule("f", dport(22), ACCEPT)])
    pkt = fwd(80)
    assert nft_do_chain(rt.chain("ip", "t", "f"), pkt) == C.NF_DROP
    assert pkt.reason == Reason.NETFILTER_DROP
    assert nft_do_chain(rt.chain("ip", "t", "f"), fwd(22)) == C.NF_ACCEPT


def test_jump_returns_at_end_of_regular_chain_and_continues():
    """A regular chain's end pops the jump stack: the caller's next rule runs."""
    rt = runtime([T, chain("f", "forward", policy="drop"), chain("sub"),
                  rule("f", jump("sub"), handle=1), rule("f", mark_is(7), ACCEPT, handle=2),
                  rule("sub", mark_set(7), handle=3)])  # fmt: skip
    pkt = fwd()
    assert nft_do_chain(rt.chain("ip", "t", "f"), pkt) == C.NF_ACCEPT
    assert pkt.skb.mark == 7


def test_return_pops_and_skips_rest_of_regular_chain():
    rt = runtime([T, chain("f", "forward"), chain("sub"),
                  rule("f", jump("sub")), rule("f", mark_is(1), DROP),
                  rule("sub", dport(80), RETURN), rule("sub", mark_set(1))])  # fmt: skip
    assert nft_do_chain(rt.chain("ip", "t", "f"), fwd(80)) == C.NF_ACCEPT  # returned before mark set
    assert nft_do_chain(rt.chain("ip", "t", "f"), fwd(81)) == C.NF_DROP


def test_goto_does_not_return():
    """goto: no push, so the end of the target ends the base chain with its policy."""
    rt = runtime([T, chain("f", "forward", policy="drop"), chain("sub"),
                  rule("f", goto("sub")), rule("f", ACCEPT),
                  rule("sub", dport(22), ACCEPT)])  # fmt: skip
    assert nft_do_chain(rt.chain("ip", "t", "f"), fwd(80)) == C.NF_DROP
    assert nft_do_chain(rt.chain("ip", "t", "f"), fwd(22)) == C.NF_ACCEPT


def test_goto_then_return_goes_back_to_last_jump():
    rt = runtime([T, chain("f", "forward", policy="drop"), chain("a"), chain("b"),
                  rule("f", jump("a")), rule("f", mark_is(9), ACCEPT),
                  rule("a", goto("b")), rule("a", mark_set(1)),
                  rule("b", mark_set(9)), rule("b", RETURN)])  # fmt: skip
    pkt = fwd()
    assert nft_do_chain(rt.chain("ip", "t", "f"), pkt) == C.NF_ACCEPT
    assert pkt.skb.mark == 9  # `a`'s second rule never ran


def test_continue_moves_to_next_rule():
    rt = runtime([T, chain("f", "forward", policy="drop"),
                  rule("f", COUNT, CONTINUE, handle=1), rule("f", COUNT, ACCEPT, handle=2)])  # fmt: skip
    assert nft_do_chain(rt.chain("ip", "t", "f"), fwd()) == C.NF_ACCEPT
    assert [(c.handle, c.packets) for c in rt.rule_counters()] == [(1, 1), (2, 1)]


def test_verdict_in_jumped_chain_is_final():
    """accept/drop inside a regular chain end the whole base chain (no return to the caller)."""
    rt = runtime([T, chain("f", "forward"), chain("sub"),
                  rule("f", jump("sub")), rule("f", ACCEPT), rule("sub", DROP)])  # fmt: skip
    assert nft_do_chain(rt.chain("ip", "t", "f"), fwd()) == C.NF_DROP


def test_counter_counts_only_evaluated_packets_and_l3_bytes():
    """nft_counter_do_eval: skb->len from the network header; a counter after a failed match does not run."""
    rt = runtime([T, chain("f", "forward"), rule("f", dport(22), COUNT, handle=5)])
    for port in (22, 22, 80):
        nft_do_chain(rt.chain("ip", "t", "f"), fwd(port))
    (c,) = rt.rule_counters()
    assert (c.handle, c.packets, c.bytes) == (5, 2, 2 * len(ip4() / TCP(dport=22)))
    listed = rt.list_ruleset_json()["nftables"][-1]["rule"]["expr"][1]
    assert listed == {"counter": {"packets": 2, "bytes": 80}}


def test_base_chains_sorted_by_priority_and_accept_moves_on():
    """nf_hook_slow: chains by priority; accept passes the packet on, the first drop ends the hook."""
    rt = runtime([T, chain("late", "forward", prio=10), chain("early", "forward", prio=-10),
                  chain("mid", "forward", prio=0),
                  rule("early", mark_set(1), ACCEPT), rule("mid", mark_is(1), mark_set(2), ACCEPT),
                  rule("late", mark_is(2), DROP)])  # fmt: skip
    names = [c.name for c in rt.base_chains(C.NFPROTO_IPV4, C.NF_INET_FORWARD)]
    assert names == ["early", "mid", "late"]
    pkt = fwd()
    assert run_hook(rt, pkt) == C.NF_DROP and pkt.skb.mark == 2


def test_families_select_hooks():
    """ip applies to IPv4 only, ip6 to IPv6 only, inet to both; netdev to the ingress hook."""
    items = [T, {"table": {"family": "ip6", "name": "t"}}, {"table": {"family": "inet", "name": "t"}},
             {"table": {"family": "netdev", "name": "t"}},
             chain("c4", "forward"), chain("c6", "forward", family="ip6"), chain("cx", "forward", family="inet"),
             {"chain": {"family": "netdev", "table": "t", "name": "ing", "type": "filter", "hook": "ingress",
                        "prio": 0, "policy": "accept", "dev": "eth1"}}]  # fmt: skip
    rt = runtime(items)

    def names(nfproto, hook, dev=None):
        return [f"{c.family}/{c.name}" for c in rt.base_chains(nfproto, hook, dev)]

    assert names(C.NFPROTO_IPV4, C.NF_INET_FORWARD) == ["ip/c4", "inet/cx"]
    assert names(C.NFPROTO_IPV6, C.NF_INET_FORWARD) == ["ip6/c6", "inet/cx"]
    assert names(C.NFPROTO_NETDEV, C.NF_NETDEV_INGRESS) == ["netdev/ing"]
    assert names(C.NFPROTO_NETDEV, C.NF_NETDEV_INGRESS, "eth0") == []
    assert names(C.NFPROTO_IPV4, C.NF_INET_LOCAL_IN) == []


def test_ip_match_in_inet_table_ignores_ipv6():
    """nft adds `meta nfproto ipv4` before `ip saddr` in inet tables: an IPv6 packet breaks the rule."""
    src = {
        "match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "1.1.1.1"}
    }
    rt = runtime([{"table": {"family": "inet", "name": "t"}}, chain("f", "forward", family="inet", table="t"),
                  rule("f", src, DROP, family="inet", table="t", handle=3)])  # fmt: skip
    assert eval_rule(rt, "inet", "t", "f", 3, make_pkt(ip4() / UDP())) == C.NF_DROP
    assert eval_rule(rt, "inet", "t", "f", 3, make_pkt(ip6() / UDP())) == C.NFT_BREAK


def _depth_ruleset(n: int) -> list:
    items = [T, chain("base", "forward"), rule("base", jump("c1"))]
    for i in range(1, n + 1):
        items += [chain(f"c{i}"), rule(f"c{i}", jump(f"c{i + 1}") if i < n else ACCEPT)]
    return items


def test_jump_depth_limit_matches_kernel():
    """nft_chain_validate: a chain at level NFT_JUMP_STACK_SIZE (16) is refused (-EMLINK)."""
    rt = runtime(_depth_ruleset(15))
    assert nft_do_chain(rt.chain("ip", "t", "base"), fwd()) == C.NF_ACCEPT
    with pytest.raises(ConfigError, match="too many nested jumps"):
        runtime(_depth_ruleset(16))


def test_loop_is_refused():
    """nf_tables_check_loops: a -> b -> a cannot be loaded."""
    items = [T, chain("base", "forward"), chain("a"), chain("b"),
             rule("base", jump("a")), rule("a", goto("b")), rule("b", jump("a"))]  # fmt: skip
    with pytest.raises(ConfigError, match="loop"):
        runtime(items)


def test_unknown_jump_target_and_unsupported_expression_name_the_rule():
    with pytest.raises(ConfigError, match="rule ip t f handle 4: chain 'nope' does not exist"):
        runtime([T, chain("f", "forward"), rule("f", jump("nope"), handle=4)])
    sock = {"match": {"op": "==", "left": {"socket": {"key": "transparent"}}, "right": 1}}
    with pytest.raises(
        ConfigError, match=r"<ruleset>:0:0: Error: rule ip t f handle 9: socket: flowpath has no local sockets"
    ):
        runtime([T, chain("f", "forward"), rule("f", sock, DROP, handle=9)])
    fib = {"match": {"op": "==", "left": {"fib": {"flags": ["saddr", "iif"], "result": "oif"}}, "right": False}}
    with pytest.raises(ConfigError, match=r"fib is only valid at hooks prerouting, input, forward"):
        runtime([T, chain("f", "output"), rule("f", fib, DROP, handle=9)])


def test_nat_outside_nat_chain_is_refused():
    """nft_nat_validate: NAT statements need a nat chain at the right hook, also behind a jump."""
    snat = {"snat": {"addr": "1.2.3.4"}}
    with pytest.raises(ConfigError, match="snat is only valid in a nat chain"):
        runtime([T, chain("f", "forward"), rule("f", snat)])
    with pytest.raises(ConfigError, match="reached from prerouting"):
        runtime([T, chain("pre", "prerouting", type_="nat", prio=-100), chain("sub"),
                 rule("pre", jump("sub")), rule("sub", snat)])  # fmt: skip
    rt = runtime([T, chain("post", "postrouting", type_="nat", prio=100), chain("sub"),
                  rule("post", jump("sub")), rule("sub", snat)])  # fmt: skip
    pkt = make_pkt(ip4() / UDP(), hooknum=C.NF_INET_POST_ROUTING)
    assert nft_do_chain(rt.chain("ip", "t", "post"), pkt) == C.NF_ACCEPT
    assert pkt.nat.range.min_addr == 0x01020304


def test_loop_between_unattached_chains_is_refused():
    """nf_tables_check_loops runs on every jump, also between chains no base chain reaches."""
    items = [T, chain("a"), chain("b"), rule("a", jump("b")), rule("b", goto("a"))]
    with pytest.raises(ConfigError, match="loop"):
        runtime(items)


def test_wide_jump_graph_validates_quickly():
    """Every chain of a layer jumps to every chain of the next: validation must not walk every path."""
    import time

    items, layers, width = [T, chain("base", "forward")], 8, 6
    items += [rule("base", jump(f"l0c{j}")) for j in range(width)]
    for i in range(layers):
        for j in range(width):
            items.append(chain(f"l{i}c{j}"))
            if i + 1 < layers:
                items += [rule(f"l{i}c{j}", jump(f"l{i + 1}c{k}")) for k in range(width)]
    t0 = time.perf_counter()
    runtime(items)
    assert time.perf_counter() - t0 < 2.0  # 6**8 paths without memoisation


def test_mark_set_from_expressions():
    """`meta mark set ct mark` and `ct mark set meta mark | 0x10`, in the JSON shape nft prints them."""
    from nfeval_util import FakeCt

    meta_from_ct = {"mangle": {"key": {"meta": {"key": "mark"}}, "value": {"ct": {"key": "mark"}}}}
    ct_from_meta = {
        "mangle": {"key": {"ct": {"key": "mark"}}, "value": {"|": [{"meta": {"key": "mark"}}, 16]}}
    }
    rt = runtime([T, chain("f", "forward"), rule("f", meta_from_ct), rule("f", ct_from_meta)])
    ct = FakeCt(mark=0x101)
    pkt = make_pkt(ip4() / UDP(), ct=ct, mark=7)
    assert nft_do_chain(rt.chain("ip", "t", "f"), pkt) == C.NF_ACCEPT
    assert (pkt.skb.mark, ct.mark) == (0x101, 0x111)
    pkt = make_pkt(ip4() / UDP(), ct=None, mark=7)  # no conntrack: the ct mark load breaks the first rule
    assert nft_do_chain(rt.chain("ip", "t", "f"), pkt) == C.NF_ACCEPT and pkt.skb.mark == 7
