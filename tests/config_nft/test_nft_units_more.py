"""Rules of nftables' tests/py that need more than a table entry: listed as the .t files say nft 1.0.6
lists them, refused with nft's error where nft refuses them.

Linux: nftables src/parser_bison.y › queue_stmt_expr, src/evaluate.c › stmt_evaluate_queue,
payload_gen_dependency (conflicting protocols), src/statement.c › queue_stmt_print.
"""

from __future__ import annotations

import pytest

from flowpath.config.nft import parse_ruleset
from flowpath.errors import ConfigError

HEAD = "type filter hook output priority 0;"


def listed(rule: str, family: str = "ip", head: str = HEAD) -> str:
    rs = parse_ruleset(f"table {family} t {{\n chain c {{\n {head}\n {rule}\n }}\n}}\n", "<t>")
    return rs.list().split("\n")[3].strip()


@pytest.mark.parametrize(
    "rule, want",
    [  # any/queue.t
        ("queue to symhash mod 65536", None),
        ("queue flags bypass to numgen inc mod 65536", None),
        ("queue to jhash oif . meta mark mod 32", None),
        ('queue flags bypass to oifname map { "eth0" : 0, "ppp0" : 2, "eth1" : 2 }', None),
    ],
)
def test_listing_as_nft(rule, want):
    assert listed(rule) == (want or rule)


@pytest.mark.parametrize(
    "rule, want",
    [  # ip6/vmap.t (nft lists the elements sorted): scanner.l's longest IPv6 address leaves `::accept` its ":"
        ("ip6 saddr vmap {1234:1234:1234:1234:1234:1234:aaaa:::accept, ::bbbb : drop}",
         "ip6 saddr vmap { ::bbbb : drop, 1234:1234:1234:1234:1234:1234:aaaa:0 : accept }"),
        ("ip6 saddr vmap {1234:1234:1234:1234:1234:1234:aaaa:::accept,::dddd: drop}",
         "ip6 saddr vmap { ::dddd : drop, 1234:1234:1234:1234:1234:1234:aaaa:0 : accept }"),
        ("ip6 saddr { ::ffff:1.2.3.4, 1::2:3 }", "ip6 saddr { ::ffff:1.2.3.4, 1::2:3 }"),
    ],
)
def test_ipv6_address_then_colon(rule, want):
    assert listed(rule, "ip6") == want


@pytest.mark.parametrize(
    "rule, col, msg",
    [
        ("queue to symhash mod 2 offset 65536", 11, "queue expression max value exceeds 65535"),
        ("queue flags fanout to symhash mod 65536", 24, "fanout requires a range to be specified"),
        ('queue to oifname map { "eth0" : 70000 }', 34, "Value 70000 exceeds valid range 0-65535"),
        ("queue to oif", 11, "syntax error, unexpected newline, expecting . or map"),
    ],
)
def test_refused_as_nft(rule, col, msg):
    """nft 1.0.6's message and column (the rule line starts with one space, as in the nft runs)."""
    with pytest.raises(ConfigError) as ei:
        listed(rule)
    assert (ei.value.line, ei.value.col, ei.value.msg) == (4, col, msg)


@pytest.mark.parametrize(
    "family, rule, want",
    [  # ip/ether.t, ip6/ether.t, bridge/ether.t, inet/ether.t; the last two checked with nft 1.0.6
        ("ip", "tcp dport 22 iiftype ether ip daddr 1.2.3.4 ether saddr 00:0f:54:0c:11:4 accept",
         "tcp dport 22 ip daddr 1.2.3.4 ether saddr 00:0f:54:0c:11:04 accept"),
        ("ip6", "tcp dport 22 iiftype ether ip6 daddr 1::2 ether saddr 00:0f:54:0c:11:4 accept",
         "tcp dport 22 ip6 daddr 1::2 ether saddr 00:0f:54:0c:11:04 accept"),
        ("bridge", "tcp dport 22 iiftype ether ip daddr 1.2.3.4 ether saddr 00:0f:54:0c:11:4 accept",
         "tcp dport 22 ip daddr 1.2.3.4 ether saddr 00:0f:54:0c:11:04 accept"),
        ("inet", "tcp dport 22 iiftype ether ether saddr 00:0f:54:0c:11:4 accept",
         "tcp dport 22 ether saddr 00:0f:54:0c:11:04 accept"),
        ("ip", "iiftype ether ip daddr 1.2.3.4 counter ether saddr 00:0f:54:0c:11:4",
         "meta iiftype ether ip daddr 1.2.3.4 counter packets 0 bytes 0 ether saddr 00:0f:54:0c:11:04"),
        ("ip", "iiftype ether ip daddr 1.2.3.4 meta mark 1 ether saddr 00:0f:54:0c:11:4",
         "ip daddr 1.2.3.4 meta mark 0x00000001 ether saddr 00:0f:54:0c:11:04"),
    ],
)
def test_iiftype_is_the_link_layer_dependency(family, rule, want):
    """Unqualified `iiftype` after a match, and the dependency a later ether match kills (not across a
    counter: rule_maybe_reset_payload_deps)."""
    assert listed(rule, family, "type filter hook input priority 0;") == want


@pytest.mark.parametrize(
    "family, rule, want",
    [  # ip6/map.t, ip6/dnat.t
        ("ip6", "mark set ip6 saddr and ::ffff map { ::2 : 0x0000002a, ::ffff : 0x00000017}",
         "meta mark set ip6 saddr & ::ffff map { ::2 : 0x0000002a, ::ffff : 0x00000017 }"),
        ("ip", "meta mark set meta mark and 0xff", "meta mark set meta mark & 0x000000ff"),
    ],
)
def test_masked_map_key(family, rule, want):
    assert listed(rule, family) == want


def test_dnat_to_a_bracketed_ipv6_prefix():
    head = "type nat hook prerouting priority 0;"
    assert listed("dnat to [2001:838:35f:1::]/64", "ip6", head) == "dnat to 2001:838:35f:1::/64"


@pytest.mark.parametrize(
    "rule, want",
    [  # ip/snat.t; checked with nft 1.0.6: flags after `prefix to` replace its netmap (nat_stmt_args)
        ("snat ip prefix to ip saddr map { 10.141.11.0/24 : 192.168.2.0/24 }", None),
        ("snat ip prefix to ip saddr map { 10.141.11.0/24 : 192.168.2.0/24 } persistent",
         "snat ip to ip saddr map { 10.141.11.0/24 : 192.168.2.0/24 } persistent"),
    ],
)
def test_snat_prefix(rule, want):
    head = "type nat hook postrouting priority 0;"
    assert listed(rule, "ip", head) == (want or rule)
    chain = parse_ruleset(f"table ip t {{\n chain c {{\n {head}\n {rule}\n }}\n}}\n", "<t>").tables[0].chains["c"]
    snat = chain.rules[0].expr[0]["snat"]
    assert (snat["flags"], snat.get("type_flags")) == (("netmap", "prefix") if want is None else ("persistent", None))
