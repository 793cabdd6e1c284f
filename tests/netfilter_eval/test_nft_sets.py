"""Set and map lookups (nft_lookup.c over hash / rbtree / pipapo-like backends) against naive references."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import TCP, UDP

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import eval_rule, ip4, make_pkt, runtime  # noqa: E402

from flowpath.errors import ConfigError  # noqa: E402
from flowpath.netfilter import constants as C  # noqa: E402
from flowpath.netfilter.nft_set import Interval, NftSet, parse_key  # noqa: E402
from flowpath.netfilter.nft_types import parse_value  # noqa: E402

addr = st.integers(0, 2**32 - 1).map(lambda x: str(ipaddress.IPv4Address(x & 0xFFFF00FF)))  # a small space
element = st.one_of(
    addr,
    st.tuples(addr, addr).map(lambda t: {"range": sorted(t, key=lambda a: int(ipaddress.IPv4Address(a)))}),
    st.tuples(addr, st.integers(8, 32)).map(lambda t: {"prefix": {"addr": t[0], "len": t[1]}}),
)


def naive_member(elems: list, a: int) -> bool:
    for e in elems:
        if isinstance(e, str) and int(ipaddress.IPv4Address(e)) == a:
            return True
        if isinstance(e, dict) and "range" in e:
            lo, hi = (int(ipaddress.IPv4Address(x)) for x in e["range"])
            if lo <= a <= hi:
                return True
        if isinstance(e, dict) and "prefix" in e:
            net = ipaddress.IPv4Network(f"{e['prefix']['addr']}/{e['prefix']['len']}", strict=False)
            if ipaddress.IPv4Address(a) in net:
                return True
    return False


@settings(max_examples=200, deadline=None)
@given(st.lists(element, max_size=12), st.lists(addr, min_size=1, max_size=20))
def test_interval_set_matches_naive_membership(elems, queries):
    s = NftSet("s", "ipv4_addr", 32)
    s.add_elements(elems)
    for q in queries + [e for e in elems if isinstance(e, str)]:
        a = int(ipaddress.IPv4Address(q))
        assert (s.get(a) is not None) == naive_member(elems, a), (elems, q)


def test_concatenation_with_intervals_and_ifname_wildcards():
    s = NftSet("c", ("ifname", "ipv4_addr", "inet_service"))
    s.add_elements([{"concat": ["eth*", {"prefix": {"addr": "10.0.0.0", "len": 8}}, {"range": [1000, 2000]}]},
                    {"concat": ["lo", "127.0.0.1", 22]}])  # fmt: skip
    ip = lambda a: int(ipaddress.IPv4Address(a))  # noqa: E731
    assert s.get(("eth3", ip("10.1.2.3"), 1500)) is True
    assert s.get(("eth3", ip("10.1.2.3"), 2001)) is None
    assert s.get(("wlan0", ip("10.1.2.3"), 1500)) is None
    assert s.get(("lo", ip("127.0.0.1"), 22)) is True


def test_symbolic_values_resolve_at_build_time():
    assert parse_value("inet_service", "ssh") == 22 and parse_value("inet_service", "https") == 443
    assert parse_value("inet_proto", "ipv6-icmp") == 58 and parse_value("inet_proto", "esp") == 50
    assert parse_value("icmpv6_type", "nd-neighbor-solicit") == 135
    assert parse_value("tcp_flag", ["syn", "ack"]) == 0x12
    assert parse_value("ct_state", {"|": ["established", "related"]}) == 6
    assert parse_value("mark", "0x10") == 16
    assert parse_key("ipv6_addr", 128, {"prefix": {"addr": "2001:db8::", "len": 32}}) == Interval(
        0x20010DB8 << 96, (0x20010DB8 << 96) | (2**96 - 1)
    )


def _rule_items(expr: list, extra: list = ()) -> list:
    return [{"table": {"family": "inet", "name": "t"}}, *extra,
            {"chain": {"family": "inet", "table": "t", "name": "f", "type": "filter", "hook": "forward", "prio": 0,
                       "policy": "accept"}},
            {"rule": {"family": "inet", "table": "t", "chain": "f", "handle": 7, "expr": expr}}]  # fmt: skip


def test_named_set_filled_by_element_objects_and_command_lists():
    """{"add": {...}} command lists and separate {"element": ...} objects load like a listing."""
    sset = {
        "set": {"family": "inet", "table": "t", "name": "svc", "type": "inet_service", "flags": ["interval"]}
    }
    elem = {
        "element": {"family": "inet", "table": "t", "name": "svc", "elem": [{"range": [8000, 8100]}, "ssh"]}
    }
    match = {
        "match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": "@svc"}
    }
    items = [{"add": item} for item in _rule_items([match, {"drop": None}], [sset])] + [{"add": elem}]
    rt = runtime(items)
    for port, want in ((22, C.NF_DROP), (8050, C.NF_DROP), (8101, C.NFT_BREAK)):
        assert eval_rule(rt, "inet", "t", "f", 7, make_pkt(ip4() / TCP(dport=port))) == want
    assert eval_rule(rt, "inet", "t", "f", 7, make_pkt(ip4() / UDP(dport=22))) == C.NFT_BREAK


@pytest.mark.parametrize(
    ("expr", "msg"),
    [
        ([{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": "@nope"}}],
         "set 'nope' does not exist"),
        ([{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": "nosuchsvc"}}],
         "unknown service"),
        ([{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "1.2.3"}}],
         "not an IPv4 address"),
        ([{"match": {"op": "<", "left": {"meta": {"key": "mark"}}, "right": {"set": [1, 2]}}}], "operator '<' on a set"),
        ([{"mangle": {"key": {"payload": {"protocol": "sctp", "field": "vtag"}}, "value": 64}}],
         "cannot set an sctp field"),
        ([{"secmark": "s1"}], "unsupported statement 'secmark'"),  # queue is modelled (nft_objref.py)
        ([{"match": {"op": "==", "left": {"meta": {"key": "skuidx"}}, "right": 0}}], "unsupported meta key 'skuidx'"),
    ],
)  # fmt: skip
def test_unsupported_or_bad_rules_fail_at_build_time(expr, msg):
    with pytest.raises(ConfigError, match=f"rule inet t f handle 7: .*{msg}"):
        runtime(_rule_items(expr))
