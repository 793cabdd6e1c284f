"""Targeted behaviours of the nft front end: JSON shapes, listings nft documents, errors, the API.

Linux: nftables src/json.c, src/rule.c › flowtable_print / prio2str, src/evaluate.c, src/erec.c;
Documentation/networking/nf_flowtable.rst for the flowtable listing.
"""

from __future__ import annotations

import json

import pytest

from flowpath.config.nft import load_ruleset, parse_ruleset, ruleset_from_json
from flowpath.config.nft.printer import prio2str
from flowpath.errors import ConfigError


def rule_json(body: str, family: str = "inet", chain_head: str = "") -> list:
    rs = parse_ruleset(f"table {family} t {{\n chain c {{\n {chain_head}\n {body}\n }}\n}}\n")
    return rs.tables[0].chains["c"].rules[0].expr


def test_tcp_dport_is_a_payload_match():
    """The shape `nft -j` prints for `tcp dport 22` (libnftables-json(5), MATCH)."""
    assert rule_json("tcp dport ssh accept") == [
        {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 22}},
        {"accept": None},
    ]


def test_implied_l4proto_dependency_is_not_listed():
    """payload_dependency_kill: `meta l4proto tcp` right before `tcp dport` is implied."""
    assert rule_json("meta l4proto tcp tcp dport 80") == rule_json("tcp dport 80")
    assert len(rule_json("meta l4proto tcp counter tcp dport 80")) == 3


def test_ct_state_list_is_an_in_match():
    assert rule_json("ct state related,established accept")[0] == {
        "match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}
    }


def test_tcp_flags_mask_forms_agree():
    a = rule_json("tcp flags & (syn|ack) == syn")
    assert a == rule_json("tcp flags syn / syn,ack")
    assert a[0]["match"]["left"] == {
        "&": [{"payload": {"protocol": "tcp", "field": "flags"}}, ["syn", "ack"]]
    }


def test_reject_with_tcp_reset_adds_its_dependency():
    """evaluate.c › stmt_evaluate_reject_inet: tcp reset needs `meta l4proto tcp`."""
    assert rule_json("reject with tcp reset")[0]["match"]["right"] == "tcp"


FT = """table inet x {
  flowtable f { hook ingress priority 0; devices = { eth0, eth1 }; counter; flags offload; }
  chain y { type filter hook forward priority 0; policy accept;
            meta l4proto { tcp, udp } flow offload @f
  }
}
"""


def test_flowtable_listing_as_documented():
    """nf_flowtable.rst: `hook ingress priority filter` and `devices = { eth0, eth1 }`."""
    text = parse_ruleset(FT).list()
    assert "\tflowtable f {\n\t\thook ingress priority filter\n\t\tdevices = { eth0, eth1 }\n" in text
    assert "\t\tcounter\n\t\tflags offload\n\t}\n" in text
    assert "meta l4proto { tcp, udp } flow add @f\n" in text


def test_flowtable_json_and_flow_statement():
    obj = parse_ruleset(FT).to_json()["nftables"]
    ft = next(o["flowtable"] for o in obj if "flowtable" in o)
    assert (ft["hook"], ft["prio"], ft["dev"]) == ("ingress", 0, ["eth0", "eth1"])
    rule = next(o["rule"] for o in obj if "rule" in o)
    assert rule["expr"][-1] == {"flow": {"op": "add", "flowtable": "@f"}}


@pytest.mark.parametrize(
    ("family", "hook", "prio", "text"),
    [("ip", "input", 0, "filter"), ("ip", "input", -150, "mangle"), ("ip", "prerouting", -100, "dstnat"),
     ("ip", "output", -90, "-90"), ("ip", "postrouting", 105, "srcnat + 5"), ("ip", "input", 100, "100"),
     ("inet", "forward", -310, "raw - 10"), ("ip", "input", 11, "11"), ("netdev", "ingress", -150, "-150")],
)  # fmt: skip
def test_priority_names(family, hook, prio, text):
    """rule.c › prio2str: a name valid for the hook, +/- at most 10, else the number."""
    assert prio2str(family, hook, prio) == text


def test_error_names_file_line_col_and_marks_the_token():
    with pytest.raises(ConfigError) as ei:
        parse_ruleset("table ip t {\n\tchain c {\n\t\tip saddr $nope drop\n\t}\n}\n", "r.nft")
    assert (
        str(ei.value)
        == "r.nft:3:13: Error: unknown identifier 'nope'\n\t\tip saddr $nope drop\n" + "\t\t" + " " * 10 + "^^^^"
    )


def test_include_is_refused_clearly():
    with pytest.raises(ConfigError, match="include"):
        parse_ruleset('include "other.nft"\n')


def test_snat_needs_a_nat_chain_at_the_right_hook():
    head = "type nat hook prerouting priority dstnat;"
    with pytest.raises(ConfigError, match="Operation not supported"):
        rule_json("snat ip to 10.0.0.1", "inet", head)
    assert rule_json("dnat ip to 10.0.0.1", "inet", head) == [{"dnat": {"family": "ip", "addr": "10.0.0.1"}}]


def test_duplicate_identical_declarations_merge():
    rs = parse_ruleset("table ip t {\n set s { type ipv4_addr; elements = { 1.1.1.1 } }\n"
                       " set s { type ipv4_addr; elements = { 2.2.2.2 } }\n}\n")  # fmt: skip
    assert rs.tables[0].sets["s"].elem == ["1.1.1.1", "2.2.2.2"]


def test_json_loader_reads_equivalent_rules_in_normal_form():
    """`"op": "in"` with one port is nft's `==` once evaluated (test_nft_json.py checks it against nft)."""
    good = parse_ruleset("table ip t {\n chain c {\n tcp dport 22\n }\n}\n").to_json()
    other = json.loads(json.dumps(good))
    other["nftables"][-1]["rule"]["expr"][0]["match"]["op"] = "in"
    assert ruleset_from_json(other).to_json() == ruleset_from_json(good).to_json() == good


def test_load_ruleset_reports_bad_json_position(tmp_path):
    f = tmp_path / "r.json"
    f.write_text('{"nftables": [\n  {"table": }\n]}\n')
    with pytest.raises(ConfigError) as ei:
        load_ruleset(f)
    assert (ei.value.line, ei.value.col) == (2, 13)
