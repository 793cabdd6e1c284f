"""The arp, bridge and netdev families and the ether, vlan and arp headers (listings checked with nft 1.0.6).

Linux: nftables src/rule.c › std_prio_family_hook_compat and bridge_std_prios, src/evaluate.c ›
chain_evaluate, src/proto.c (proto_eth, proto_vlan, proto_arp), src/payload.c ›
payload_dependency_kill and resolve_protocol_conflict, src/evaluate.c › stmt_evaluate_reject_bridge_family.
"""

from __future__ import annotations

import json

import pytest

from flowpath.config.nft import parse_ruleset, ruleset_from_json
from flowpath.config.nft.printer import prio2str, rule_print
from flowpath.errors import ConfigError


def listed(body: str, family: str = "bridge") -> str:
    rs = parse_ruleset(f"table {family} t {{\n chain c {{\n {body}\n }}\n}}\n")
    return rule_print(family, rs.tables[0].chains["c"].rules[0].expr)


def error(text: str) -> tuple[int, int, str]:
    with pytest.raises(ConfigError) as ei:
        parse_ruleset(text)
    return ei.value.line, ei.value.col, ei.value.msg


@pytest.mark.parametrize(
    ("family", "hook", "prio", "want"),
    [
        ("bridge", "prerouting", -300, "dstnat"),
        ("bridge", "input", -300, "-300"),  # dstnat is prerouting's only
        ("bridge", "input", -200, "filter"),
        ("bridge", "input", 0, "0"),
        ("bridge", "output", 110, "out + 10"),
        ("bridge", "postrouting", 297, "srcnat - 3"),
        ("arp", "input", 10, "filter + 10"),
        ("arp", "output", -300, "-300"),  # arp and netdev know `filter` only
        ("netdev", "egress", 5, "filter + 5"),
    ],
)
def test_priority_names_per_family(family, hook, prio, want):
    """nft -s list ruleset in a namespace printed each of these."""
    assert prio2str(family, hook, prio) == want


def test_netdev_devices_listed_sorted_and_back_from_json():
    text = "table netdev n {\n chain c {\n type filter hook ingress devices = { lo, d0 } priority 5;\n }\n}\n"
    rs = parse_ruleset(text)
    assert "type filter hook ingress devices = { d0, lo } priority filter + 5; policy accept;" in rs.list()
    back = ruleset_from_json(json.loads(json.dumps(rs.to_json())), "json")
    assert back.list() == rs.list()


@pytest.mark.parametrize(
    ("rule", "family", "want"),
    [
        ("ether type vlan vlan id 4094", "bridge", "vlan id 4094"),
        ("ether type vlan vlan type ip ip saddr 1.1.1.1", "bridge", "ether type 8021q ip saddr 1.1.1.1"),
        ("ether type 8021ad vlan id 1 vlan type 8021q vlan id 2 vlan type ip ip protocol 6", "bridge",
         "ether type 8021ad vlan id 1 vlan type 8021q vlan id 2 ip protocol tcp"),
        ("meta protocol ip ip saddr 1.2.3.4", "bridge", "ip saddr 1.2.3.4"),
        ("ether type ip6 tcp dport 22", "bridge", "ether type ip6 tcp dport 22"),
        ("ether type arp arp operation request", "bridge", "arp operation request"),
        ("vlan id 1 vlan type arp arp htype 1", "netdev", "vlan id 1 arp htype 1"),
        ("vlan pcp 3 vlan cfi 1 vlan type arp", "bridge", "vlan pcp 3 vlan dei 1 vlan type arp"),
        ("ether type 0x0800", "bridge", "ether type ip"),
        ("ether type 0x1234", "arp", "ether type 0x1234"),
        ("arp operation { 1-2, 8 }", "arp", "arp operation { 1-2, inrequest }"),  # a range lists its numbers
        ("arp ptype 0x0800-0x0806", "arp", "arp ptype 0x0800-0x0806"),
        ("ether saddr 0:f:54:c:11:4", "ip", "ether saddr 00:0f:54:0c:11:04"),
        ("arp saddr ip 192.168.1.1 arp daddr ether fe:ed:00:c0:ff:ee", "arp",
         "arp saddr ip 192.168.1.1 arp daddr ether fe:ed:00:c0:ff:ee"),
        ("ether type ip reject", "bridge", "reject with icmp port-unreachable"),
        ("meta protocol ip6 reject", "netdev", "reject with icmpv6 port-unreachable"),
        ("ether type vlan reject", "bridge", "ether type 8021q reject"),
        ("ether type ip reject with icmpx admin-prohibited", "bridge",
         "ether type ip reject with icmpx admin-prohibited"),
        ("meta ibrname \"br0\"", "bridge", "meta ibrname \"br0\""),
    ],
)  # fmt: skip
def test_listing_leaves_out_implied_dependencies(rule, family, want):
    """Each `want` is what nft 1.0.6 listed for `rule` (nft -s list chain, in a namespace)."""
    assert listed(rule, family) == want


@pytest.mark.parametrize(
    ("rule", "family", "col", "msg"),
    [
        ("ether type ip vlan id 2", "bridge", 15, "conflicting protocols specified: ether vs. vlan"),
        ("meta protocol vlan vlan id 3", "netdev", 20, "conflicting protocols specified: ether vs. vlan"),
        ("meta protocol ip6 ip saddr 1.2.3.4", "netdev", 19, "conflicting protocols specified: ip6 vs. ip"),
        ("ip saddr 1.1.1.1 ip6 saddr ::1", "bridge", 18, "conflicting protocols specified: ip vs. ip6"),
        ("ip saddr 1.1.1.1", "arp", 1, "conflicting protocols specified: arp vs. ip"),
        ("arp htype 1", "ip", 1, "conflicting protocols specified: ip vs. arp"),
        ("ether type arp reject", "bridge", 16, "cannot reject this network family"),
        ("ether type ip reject with icmpv6 no-route", "bridge", 27, "conflicting protocols specified: ip vs ip6"),
        ("reject", "arp", 1, "cannot use reject with arp"),
        ("meta ibrname \"br0\"", "inet", 1, "Could not process rule: Operation not supported"),
        ("vlan id 4096", "bridge", 9, "Value 4096 exceeds valid range 0-4095"),
        ("ether type foo", "bridge", 12, "Could not parse Ethernet protocol"),
    ],
)  # fmt: skip
def test_protocol_conflicts_refused_as_nft(rule, family, col, msg):
    """nft's message and column for each (its first error; the rule is on line 3)."""
    assert error(f"table {family} t {{\n chain c {{\n{rule}\n }}\n}}\n") == (3, col, msg)


@pytest.mark.parametrize(
    ("family", "spec", "col", "msg"),
    [
        ("bridge", "type filter hook ingress priority 0;", 18, "The bridge family does not support this hook"),
        ("ip", "type filter hook egres priority 0;", 18, "unknown chain hook"),
        ("ip", "type filter hook input device lo priority 0;", 24, "This chain type cannot be bound to device"),
        ("netdev", "type filter hook egress priority 0;", 1, "Missing `device' in this chain definition"),
        ("bridge", "type filter hook input priority raw;", 24, "invalid priority expression value in this context."),
        ("arp", "type filter hook input priority dstnat;", 24, "invalid priority expression value in this context."),
        ("bridge", "type nat hook prerouting priority 0;", 6, "Could not process rule: No such file or directory"),
        ("netdev", "type route hook ingress device lo priority 0;", 6,
         "Could not process rule: No such file or directory"),
    ],
)  # fmt: skip
def test_chain_errors_as_nft(family, spec, col, msg):
    assert error(f"table {family} t {{\nchain c {{\n{spec}\n}}\n}}\n") == (3, col, msg)


def test_arp_forward_chain_is_refused_by_the_kernel():
    """nft_chain_filter_arp's hook_mask has NF_ARP_IN and NF_ARP_OUT only: EOPNOTSUPP at the chain's name."""
    text = "table arp a {\nchain c {\ntype filter hook forward priority 0;\n}\n}\n"
    assert error(text) == (2, 7, "Could not process rule: Operation not supported")
