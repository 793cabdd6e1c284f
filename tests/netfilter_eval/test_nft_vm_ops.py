"""nft_vm opcodes one at a time, against hand-computed results (nf_tables_core.c and the nft_*_eval it calls)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import raw

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import runtime  # noqa: E402

from flowpath.netfilter import constants as C  # noqa: E402
from flowpath.netfilter import nat_range as N  # noqa: E402
from flowpath.netfilter import nft_vm as V  # noqa: E402
from flowpath.netfilter.nft_compile import nat_request, no_fib_views  # noqa: E402
from flowpath.packet.skb import frame_array, skb_parse  # noqa: E402

T = {"table": {"family": "inet", "name": "t"}}


def chain(name, hook="forward", policy="accept", type_="filter"):
    c = {"family": "inet", "table": "t", "name": name}
    if hook:
        c.update(type=type_, hook=hook, prio=0, policy=policy)
    return {"chain": c}


def rule(chain_name, *expr):
    return {"rule": {"family": "inet", "table": "t", "chain": chain_name, "expr": list(expr)}}


def match(left, right, op="=="):
    return {"match": {"op": op, "left": left, "right": right}}


def pl(proto, field):
    return {"payload": {"protocol": proto, "field": field}}


def meta(key):
    return {"meta": {"key": key}}


ACCEPT, DROP = {"accept": None}, {"drop": None}


def vm_run(rt, pkt_bytes, name="c", **pmv):
    """Run chain `name` on a frame with pktmeta from the parsed frame and pmv; returns (verdict, pm, out)."""
    skb = skb_parse(frame_array(pkt_bytes), 1)
    pm = np.zeros(V.PM_SIZE, np.int64)
    pm[[V.PM_NFPROTO, V.PM_L3PROTO, V.PM_L4PROTO, V.PM_NHOFF, V.PM_THOFF, V.PM_LEN, V.PM_BUFLEN]] = (
        C.NFPROTO_IPV6 if skb.is_ipv6 else C.NFPROTO_IPV4, skb.l3proto, skb.l4proto, skb.nhoff, skb.thoff,
        skb.len - skb.nhoff, skb.len)  # fmt: skip
    pm[V.PM_IIFNAME] = pm[V.PM_OIFNAME] = -1
    pm[V.PM_CTSTATE] = 1
    for k, v in pmv.items():
        pm[getattr(V, k)] = v
    out = np.zeros(V.OUT_SIZE, np.int64)
    cid = rt.vm.chain_id[id(rt.chain("inet", "t", name))]
    return V.nft_vm_run(rt.vm.progs, cid, skb.buf, pm, out, no_fib_views()), pm, out


def tcp4(dport=80, flags="S", src="10.0.0.1", **kw):
    return raw(Ether() / IP(src=src, dst="192.0.2.1", **kw) / TCP(dport=dport, flags=flags))


def test_payload_cmp_is_big_endian_and_breaks_past_the_end():
    """nft_payload_eval loads wire order; a load past the frame's end is NFT_BREAK (policy here)."""
    rt = runtime([T, chain("c", policy="drop"), rule("c", match(pl("tcp", "dport"), 0x1234), ACCEPT)])
    assert vm_run(rt, tcp4(0x1234))[0] == C.NF_ACCEPT
    assert vm_run(rt, tcp4(0x3412))[0] == C.NF_DROP
    assert vm_run(rt, tcp4(0x1234), PM_BUFLEN=14 + 20 + 3)[0] == C.NF_DROP  # dport bytes cut off
    assert vm_run(rt, tcp4(0x1234), PM_THOFF=-1)[0] == C.NF_DROP  # a later fragment has no ports


def test_meta_mark_is_host_order_with_byteorder_before_ranges():
    """meta mark sits host-order in the register; `meta mark 256-511` needs nft's byteorder step."""
    rt = runtime([T, chain("c", policy="drop"),
                  rule("c", match(meta("mark"), {"range": [256, 511]}), ACCEPT)])  # fmt: skip
    code = rt.vm.progs[0]
    assert V.OP_BYTEORDER in code[:, 0]
    assert [vm_run(rt, tcp4(), PM_MARK=m)[0] for m in (255, 256, 300, 511, 512, 0x100_0000)] == [
        0,
        1,
        1,
        1,
        0,
        0,
    ]


def test_ct_state_flags_bitwise_then_cmp():
    """`ct state established,related`: bitwise mask, cmp != 0; NF_CT_STATE_BIT from ctinfo."""
    rt = runtime([T, chain("c", policy="drop"), rule("c", match({"ct": {"key": "state"}}, ["established", "related"],
                                                                 op="in"), ACCEPT)])  # fmt: skip
    bit = [V.nf_ct_state_bit(True, ci) for ci in (0, 1, 2, 3, 4)] + [
        V.nf_ct_state_bit(False, 2),
        V.nf_ct_state_bit(True, 7),
    ]
    assert bit == [2, 4, 8, 2, 4, 1, 64]
    assert [vm_run(rt, tcp4(), PM_CT=1, PM_CTSTATE=b)[0] for b in bit] == [1, 1, 0, 1, 1, 0, 0]


def test_lookup_exact_interval_concat_and_wildcard_sets():
    rt = runtime([T, chain("c", policy="drop"),
                  rule("c", match(pl("ip", "saddr"), {"set": [{"prefix": {"addr": "10.0.0.0", "len": 8}},
                                                               "192.168.1.7"]}), ACCEPT),
                  rule("c", match({"concat": [pl("ip", "daddr"), pl("tcp", "dport")]},
                                  {"set": [{"concat": ["192.0.2.1", 22]}]}), ACCEPT),
                  rule("c", match(meta("iifname"), {"set": ["ppp*", "lan0"]}), ACCEPT)])  # fmt: skip
    assert vm_run(rt, tcp4(src="10.200.0.1"))[0] == C.NF_ACCEPT  # the prefix
    assert vm_run(rt, tcp4(src="192.168.1.7"))[0] == C.NF_ACCEPT  # the exact key
    assert vm_run(rt, tcp4(src="192.168.1.8"))[0] == C.NF_DROP
    assert vm_run(rt, tcp4(src="11.0.0.1", dport=22))[0] == C.NF_ACCEPT  # daddr . dport
    names = np.zeros((3, 16), np.uint8)
    for row, n in ((0, b"ppp12"), (1, b"lan0"), (2, b"lan01")):
        names[row, : len(n)] = np.frombuffer(n, np.uint8)
    rt.vm.progs = rt.vm.progs[:-1] + (names,)
    assert [vm_run(rt, tcp4(src="11.0.0.1"), PM_IIFNAME=r)[0] for r in (0, 1, 2, -1)] == [1, 1, 0, 0]


def test_vmap_jump_return_goto_and_policy():
    """Jump pushes the next rule, return pops it, goto does not push; the end of a base chain is its policy."""
    rt = runtime([T, chain("c", policy="drop"), chain("sub", hook=None), chain("g", hook=None),
                  rule("c", {"vmap": {"key": pl("tcp", "dport"),
                                      "data": {"set": [[22, {"jump": {"target": "sub"}}],
                                                       [80, {"goto": {"target": "g"}}], [443, ACCEPT]]}}}),
                  rule("c", {"mangle": {"key": meta("mark"), "value": 7}}),
                  rule("sub", match(pl("tcp", "sport"), 20), {"return": None}),
                  rule("sub", {"counter": None}),
                  rule("g", {"mangle": {"key": meta("mark"), "value": 9}})])  # fmt: skip
    v, pm, out = vm_run(rt, tcp4(22))  # sport 20: return before the counter, then mark 7, policy drop
    assert (v, pm[V.PM_MARK], pm[V.PM_WRITES], out[V.OUT_NCNT]) == (C.NF_DROP, 7, V.PM_WROTE_MARK, 0)
    v, pm, out = vm_run(rt, tcp4(80))  # goto: the end of g ends the base chain, mark 7 never set
    assert (v, pm[V.PM_MARK]) == (C.NF_DROP, 9)
    assert vm_run(rt, tcp4(443))[0] == C.NF_ACCEPT


def test_counter_hits_apply_only_on_commit():
    rt = runtime(
        [T, chain("c"), rule("c", {"counter": {"packets": 0, "bytes": 0}}, {"counter": None}, ACCEPT)]
    )
    v, pm, out = vm_run(rt, tcp4())
    counters = rt.vm.progs[8]
    assert (v, out[V.OUT_NCNT], counters.sum()) == (C.NF_ACCEPT, 2, 0)  # recorded, not applied
    assert V.nft_vm_commit(rt.vm.progs, out) == 2
    assert [(c.packets, c.bytes) for c in rt.chain("inet", "t", "c").rules[0].counters] == [(1, 40), (1, 40)]
    assert rt.rule_counters()[0].bytes == 40


def test_punt_where_the_statement_sits_leaves_no_trace():
    """`log` is not compiled: a packet that reaches it punts, one that breaks before it does not."""
    rt = runtime([T, chain("c"), rule("c", {"counter": None}, {"mangle": {"key": meta("mark"), "value": 3}},
                                      match(pl("tcp", "dport"), 23), {"log": None}, DROP)])  # fmt: skip
    v, pm, out = vm_run(rt, tcp4(23))
    assert v == V.NFT_PUNT and rt.vm.progs[8].sum() == 0
    assert vm_run(rt, tcp4(80))[0] == C.NF_ACCEPT
    assert rt.vm_stats() == [("inet t c", 1, 0, 0)]


def test_nat_request_in_out():
    """snat to 192.0.2.0/24 ports 1000-2000 with flags; masquerade; the family guard of nft_nat_inet_eval."""
    rt = runtime([T, chain("c", hook="postrouting", type_="nat"),
                  rule("c", match(pl("tcp", "dport"), 25), {"masquerade": {"flags": "random"}}),
                  rule("c", {"snat": {"family": "ip", "addr": {"prefix": {"addr": "192.0.2.0", "len": 24}},
                                      "port": {"range": [1000, 2000]}, "flags": "persistent"}})])  # fmt: skip
    v, pm, out = vm_run(rt, tcp4())
    assert v == C.NF_ACCEPT
    r = nat_request(out)
    assert (r.maniptype, r.masquerade, r.range) == (C.NF_NAT_MANIP_SRC, False, N.NfNatRange(
        N.NF_NAT_RANGE_MAP_IPS | N.NF_NAT_RANGE_PROTO_SPECIFIED | N.NF_NAT_RANGE_PERSISTENT,
        0xC0000200, 0xC00002FF, 1000, 2000))  # fmt: skip
    r = nat_request(vm_run(rt, tcp4(25))[2])
    assert (r.masquerade, r.range.flags) == (True, N.NF_NAT_RANGE_PROTO_RANDOM)
    six = raw(Ether() / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP())
    v, pm, out = vm_run(rt, six)  # the IPv4 snat does nothing for IPv6: the rule goes on, policy accept
    assert (v, out[V.OUT_NAT]) == (C.NF_ACCEPT, 0)


def test_flow_add_checks_and_id():
    """nft_flow_offload_eval: TCP needs ASSURED + ESTABLISHED and no FIN/RST; IPS_CONFIRMED always."""
    rt = runtime([T, {"flowtable": {"family": "inet", "table": "t", "name": "ft", "hook": "ingress", "prio": 0,
                                    "dev": ["eth0"]}}, chain("c"),
                  rule("c", {"flow": {"op": "add", "flowtable": "@ft"}})])  # fmt: skip
    ok = dict(PM_CT=1, PM_CTSTATE=2, PM_CTSTATUS=C.IPS_ASSURED | C.IPS_CONFIRMED, PM_CTTCPSTATE=3)
    assert vm_run(rt, tcp4(flags="A"), **ok)[2][V.OUT_FLOW] == 0
    assert rt.vm.ft_names == ["ft"]
    assert vm_run(rt, tcp4(flags="FA"), **ok)[2][V.OUT_FLOW] == -1
    assert vm_run(rt, tcp4(flags="A"), **{**ok, "PM_CTTCPSTATE": 1})[2][V.OUT_FLOW] == -1
    assert vm_run(rt, tcp4(flags="A"), **{**ok, "PM_CTSTATUS": C.IPS_ASSURED})[2][V.OUT_FLOW] == -1
    assert vm_run(rt, tcp4(flags="A", options=[]), **{**ok, "PM_CT": 0})[2][V.OUT_FLOW] == -1


@pytest.mark.parametrize("op,want", [("<", [1, 1]), (">", [0, 0]), ("==", [0, 0]), ("!=", [1, 1])])
def test_constants_wider_than_the_field_compare_like_python_ints(op, want):
    """`ip ttl < 300`: no 8-bit value reaches 300; the VM answers as the closures' int compare does."""
    rt = runtime([T, chain("c", policy="drop"), rule("c", match(pl("ip", "ttl"), 300, op=op), ACCEPT)])
    assert [vm_run(rt, tcp4(ttl=t))[0] for t in (1, 255)] == want


def test_dscp_shift_and_mask():
    """ip dscp: (tos >> 2) & 0x3f, as nft's payload + bitwise (+ shift) expressions."""
    rt = runtime([T, chain("c", policy="drop"), rule("c", match(pl("ip", "dscp"), "cs1"), ACCEPT)])
    assert [vm_run(rt, tcp4(tos=t))[0] for t in (0x20, 0x23, 0x24, 0x00)] == [1, 1, 0, 0]
