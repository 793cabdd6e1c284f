"""meta and ct keys, bitwise and shift expressions, numgen and hash in the nft front end.

Linux: nftables src/meta.c, src/ct.c, src/numgen.c, src/hash.c, src/expression.c (binop_expr_print) and
their JSON in src/json.c. Every listing below was checked with nft 1.0.6 (`nft -f`, then `nft list
ruleset` and `nft -j list ruleset`); the live test loads flowpath's JSON into nft and compares both.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from flowpath.config.nft import parse_ruleset, ruleset_from_json
from flowpath.errors import ConfigError

# (rule as written, as nft 1.0.6 lists it); all in `table ip t`, an output filter chain
FORMS = [
    ("meta mark and 0x03 == 0x01", "meta mark & 0x00000003 == 0x00000001"),
    ("meta mark or 0x03 != 0x01", "meta mark | 0x00000003 != 0x00000001"),
    ("meta mark xor 0x03 == 0x01", "meta mark 0x00000002"),  # folded to the right
    ("meta priority 0x87654321", "meta priority 8765:4321"),
    ("meta priority root", "meta priority root"),
    ("meta priority bcad:dada-bcad:dadc", "meta priority bcad:dada-bcad:dadc"),
    ("meta priority set cafe:beef", "meta priority set cafe:beef"),
    ("meta protocol { ip, vlan }", "meta protocol { ip, 8021q }"),
    ("meta iiftype ether", "meta iiftype ether"),
    ('meta skuid "root"', "meta skuid 0"),
    ("meta cpu { 2-3, 5-7 }", "meta cpu { 2-3, 5-7 }"),
    ("meta iifgroup 0", 'iifgroup "default"'),
    ('iifgroup {"default", 11}', 'iifgroup { "default", 11 }'),
    ("meta cgroup 1048577", "meta cgroup 1048577"),
    ("meta random gt 1000000", "meta random > 1000000"),
    ("pkttype { broadcast, multicast } accept", "meta pkttype { broadcast, multicast } accept"),
    ('meta day 6 drop', 'meta day "Saturday" drop'),
    ('meta hour "17:00:00" drop', 'meta hour "17:00" drop'),
    ('time < "2022-07-01 11:00:00" accept', 'meta time < "2022-07-01 11:00:00" accept'),
    ('meta rtclassid "cosmos"', 'meta rtclassid "cosmos"'),
    ("meta mark set 0xffffffc8 xor 0x16", "meta mark set 0xffffffde"),
    ("ct mark set ct mark or 0x00000001", "ct mark set ct mark | 0x00000001"),
    ("ct mark set (meta mark | 0x10) << 8", "ct mark set (meta mark | 0x00000010) << 8"),
    ("meta mark set ct mark >> 8", "meta mark set ct mark >> 8"),
    ("ct mark set mark map { 2 : 20, 1 : 10 }", "ct mark set meta mark map { 0x00000001 : 0x0000000a, 0x00000002 : 0x00000014 }"),
    ("ct zone set mark map { 1 : 1 }", "ct zone set meta mark map { 0x00000001 : 1 }"),
    ("ct status ! dnat", "ct status ! dnat"),
    ("ct expiration 30000ms", "ct expiration 30s"),
    ("ct expiration != 233", "ct expiration != 3m53s"),
    ("ct expiration 1m-1h", "ct expiration 60s-3600s"),  # a range lists plain seconds
    ('ct helper "ftp"', 'ct helper "ftp"'),
    ("ct original bytes > 100000", "ct original bytes > 100000"),
    ("ct avgpkt > 200", "ct avgpkt > 200"),
    ("ct event set new | related | destroy | label", "ct event set new,related,destroy,label"),
    ("ct event set 1", "ct event set new"),
    ("ct event set 0x0", "ct event set 0x0"),
    ("ct label 127", "ct label 127"),
    ("ct original zone 1", "ct original zone 1"),
    ("ct reply zone set 1", "ct reply zone set 1"),
    ("ct id 12345", "ct id 12345"),
    ("ct count over 3", "ct count over 3"),
    ("ct original ip saddr 192.168.1.0/24", "ct original ip saddr 192.168.1.0/24"),
    ("ct l3proto ipv4", "ct l3proto ipv4"),
    ("ct original protocol 17 ct reply proto-src 53", "ct protocol udp ct reply proto-src 53"),
    ("ct mark set numgen inc mod 2 offset 100", "ct mark set numgen inc mod 2 offset 100"),
    ("ct mark set jhash ip saddr mod 2 seed 0xdeadbeef offset 100",
     "ct mark set jhash ip saddr mod 2 seed 0xdeadbeef offset 100"),
    ("ct mark set symhash mod 2", "ct mark set symhash mod 2"),
    ('rt classid "cosmos"', 'rt classid "cosmos"'),
    ("rt nexthop 192.168.0.1", "rt ip nexthop 192.168.0.1"),
]  # fmt: skip

REFUSED = [
    ('meta iifname ""', "Empty string is not allowed"),
    ("meta pkttype broadcastttt", "Could not parse"),
    ("meta day 7 drop", "Day number must be in range 0-6"),
    ('meta hour "24:00" drop', "Hour must be in range"),
    ('meta ibrname "br0"', "Operation not supported"),
    ("meta mark set {0xffff, 0xcc}", "set is not a value"),
    ("ct expiration 1d-1h", "Range has zero or negative size"),
    ('ct helper "12345678901234567"', "String exceeds maximum length of 16"),
    ("ct label 128", "label too high"),
    ("ct zone 65536", "exceeds valid range"),
    ("ct original mark 42", "syntax error"),
    ("ct both bytes gt 1", "syntax error"),
    ("ct reply ip daddr dead::beef", "Could not resolve hostname"),
    ("ct event set new or related or foobar", "Could not parse conntrack event bits"),
    ("tcp flags & (fin | syn) ! syn", "cannot combine negation with binary expression"),
    ("rt ip6 nexthop fd00::1", "conflicting protocols specified: ip vs. ip6"),
]


def _table(rule: str, family: str = "ip") -> str:
    return f"table {family} t {{\n\tchain c {{\n\t\ttype filter hook output priority filter; policy accept;\n\t\t{rule}\n\t}}\n}}\n"


@pytest.mark.parametrize(("rule", "listed"), FORMS)
def test_keys_list_as_nft_lists_them(rule, listed):
    """The listing nft 1.0.6 gives; it reads back to itself, and its JSON back to the same ruleset."""
    rs = parse_ruleset(_table(rule))
    out = rs.list()
    assert out.splitlines()[3].strip() == listed
    assert parse_ruleset(out).list() == out
    assert ruleset_from_json(json.loads(json.dumps(rs.to_json()))).list() == out


@pytest.mark.parametrize(("rule", "msg"), REFUSED)
def test_bad_keys_are_config_errors(rule, msg):
    """nft refuses these (nftables tests/py any/meta.t, any/ct.t); flowpath says where and why."""
    with pytest.raises(ConfigError) as e:
        parse_ruleset(_table(rule))
    assert msg in str(e.value)
    assert e.value.line == 4


def test_ct_address_family_comes_from_nfproto_in_inet():
    """src/evaluate.c › expr_evaluate_ct: `meta nfproto ipv4` types `ct original saddr`, and nft lists
    the address with its family (the nfproto match implied by it is not listed); another family
    conflicts."""
    out = parse_ruleset(_table("meta nfproto ipv4 ct original saddr 1.2.3.4", "inet")).list()
    assert out.splitlines()[3].strip() == "ct original ip saddr 1.2.3.4"
    with pytest.raises(ConfigError, match="conflicting protocols specified: ip6 vs. ip"):
        parse_ruleset(_table("meta nfproto ipv6 ct original ip saddr 1.2.3.4", "inet"))
    with pytest.raises(ConfigError, match="use ct ip or ct ip6"):
        parse_ruleset(_table("ct original saddr 1.2.3.4", "inet"))
    with pytest.raises(ConfigError, match="use rt ip or rt ip6"):
        parse_ruleset(_table("rt nexthop 192.168.0.1", "inet"))
    out = parse_ruleset(_table("meta nfproto ipv4 rt nexthop 192.168.0.1", "inet")).list()
    assert out.splitlines()[3].strip() == "meta nfproto ipv4 rt ip nexthop 192.168.0.1"


def _nft(ns: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, "nft", *args], input=stdin, capture_output=True, text=True,
                          check=False)  # fmt: skip


@pytest.mark.root
def test_live_nft_takes_flowpaths_json_of_each_key():
    """`nft -j -f` takes flowpath's JSON of each rule, then lists it as flowpath does and prints the
    same JSON (`nft -j list ruleset`). Rules the kernel refuses (a module it lacks) are skipped."""
    if os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("ip") is None:
        pytest.skip("needs root, ip and nft")
    ns = f"fpkeys_{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    checked = 0
    try:
        for rule, listed in FORMS:
            doc = parse_ruleset(_table(rule)).to_json()
            _nft(ns, "flush", "ruleset")
            if _nft(ns, "-j", "-f", "-", stdin=json.dumps(doc)).returncode != 0:
                continue
            assert _nft(ns, "list", "ruleset").stdout.splitlines()[3].strip() == listed
            theirs = json.loads(_nft(ns, "-j", "list", "ruleset").stdout)["nftables"]
            mine = [o["rule"]["expr"] for o in doc["nftables"] if "rule" in o]
            assert [o["rule"]["expr"] for o in theirs if "rule" in o] == mine, rule
            checked += 1
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert checked >= len(FORMS) // 2  # most of these run on a stock kernel
