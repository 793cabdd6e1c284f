"""libnftables JSON in and out: what it keeps (set size, chain comment, table flags), how it reads flags,
and how it reports an object it cannot read.

Linux: nftables src/json.c and src/parser_json.c (json_parse_flags_array takes a string or a list);
listings as nft 1.0.6 prints them (src/rule.c › table_print, chain_print, set_print_declaration).
"""

from __future__ import annotations

import json
import re

import pytest

from flowpath.cli import main
from flowpath.config.nft import load_ruleset, parse_ruleset, ruleset_from_json
from flowpath.errors import ConfigError

# nft 1.0.6's `list ruleset` of this file, verbatim (Linux 6.18, in a namespace)
KEPT = """table ip t {
	flags dormant

	set s {
		type ipv4_addr
		size 100
		flags interval
		auto-merge
		comment "sc"
		elements = { 1.2.3.4 }
	}

	chain c {
		comment "ab"
	}
}
"""
# what newer libnftables writes (nft 1.0.6 writes "flags": "ip" for the table and no chain comment)
KEPT_JSON = {"nftables": [
    {"table": {"family": "ip", "name": "t", "flags": "dormant"}},
    {"set": {"family": "ip", "name": "s", "table": "t", "type": "ipv4_addr", "comment": "sc", "size": 100,
             "flags": "interval", "auto-merge": True, "elem": ["1.2.3.4"]}},
    {"chain": {"family": "ip", "table": "t", "name": "c", "comment": "ab"}},
]}  # fmt: skip


WRITTEN = """table ip t {
	flags dormant
	set s {
		type ipv4_addr
		comment "sc"
		auto-merge
		flags interval
		size 100
		elements = { 1.2.3.4 }
	}
	chain c {
		comment "ab"
	}
	chain c {
		comment "a later comment is not taken"
	}
}
"""


def test_table_flags_set_size_and_chain_comment_list_as_nft():
    assert parse_ruleset(WRITTEN).list() == KEPT


def test_json_keeps_set_size_chain_comment_and_table_flags(tmp_path, capsys):
    """They were dropped on the way in; now JSON -> listing -> JSON gives them back."""
    path = tmp_path / "r.json"
    path.write_text(json.dumps(KEPT_JSON))
    assert load_ruleset(path).list() == KEPT
    assert main(["nft", "list", "ruleset", "-f", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["nftables"]
    table, s, chain = (next(o[k] for o in out if k in o) for k in ("table", "set", "chain"))
    assert table["flags"] == "dormant" and chain["comment"] == "ab"
    assert (s["size"], s["comment"], s["flags"]) == (100, "sc", ["interval"])
    # nft 1.0.6 writes no "auto-merge" (tests/config_nft/test_nft_corpus.py › _json_lossy); nor do we
    assert ruleset_from_json({"nftables": out}).list() == KEPT.replace("\t\tauto-merge\n", "")


@pytest.mark.parametrize("flags", ["interval", ["interval"]])
def test_set_flags_may_be_one_string_or_a_list(flags):
    """json_parse_flags_array: "flags": "interval" is one flag, not eight letters."""
    obj = {"nftables": [{"table": {"family": "inet", "name": "t"}},
                        {"set": {"family": "inet", "table": "t", "name": "n", "type": "ipv4_addr",
                                 "flags": flags, "elem": [{"prefix": {"addr": "10.0.0.0", "len": 8}}]}}]}  # fmt: skip
    s = ruleset_from_json(obj).tables[0].sets["n"]
    assert s.flags == ["interval"]
    assert "\t\tflags interval\n\t\telements = { 10.0.0.0/8 }\n" in ruleset_from_json(obj).list()


BASE = [{"table": {"family": "ip", "name": "t"}}, {"chain": {"family": "ip", "table": "t", "name": "c"}}]
PYTHON_INTERNALS = re.compile(r"__format__|object has no attribute|not subscriptable|unhashable|indices must|"
                              r"NoneType|not iterable|unpack|\{'\w+': |<class")  # fmt: skip


@pytest.mark.parametrize(
    ("obj", "msg"),
    [({"rule": {"family": "ip", "table": "t", "chain": "c",
                "expr": [{"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": {"x": 1}}}]}},
      'statement 1 is not one flowpath reads: {"match": {"op": "==", "left": {"meta": {"key": "mark"}}, '
      '"right": {"x": 1}}}'),
     ({"rule": {"family": "ip", "table": "t", "chain": "c", "expr": [{"jump": {"target": {"a": 1}}}]}},
      'statement 1 is not one flowpath reads: {"jump": {"target": {"a": 1}}}'),
     ({"rule": {"family": "ip", "table": "t", "chain": "c", "expr": "accept"}}, '"expr" must be a list, not "accept"'),
     ({"rule": {"family": "ip", "table": "t", "chain": "c", "expr": [{"goto": {"target": "nope"}}]}},
      "statement 1: goto to chain nope, which does not exist"),
     ({"chain": {"family": "ip", "table": "t", "name": "d", "policy": "drop"}},
      '"policy" is only valid for a base chain (one with a "hook")'),
     ({"set": {"family": "ip", "table": "t", "name": "s", "type": "mark", "flags": ["interval", 3]}},
      '"flags" must be a string or a list of strings, not ["interval", 3]'),
     ({"set": {"family": "ip", "table": "t", "name": "s", "type": "mark", "elem": [{"a": 1}]}},
      'set "elem" must hold values of type mark: [{"a": 1}]'),
     ({"table": {"family": "ip", "name": "u", "flags": "sleepy"}}, 'unknown flag "sleepy" (known: dormant, owner)'),
     ({"chain": {"family": "ip", "table": "t", "name": "b", "type": "filter", "hook": "input", "prio": "x"}},
      '"prio" must be an integer, not "x"')],
)  # fmt: skip
def test_json_errors_name_the_object_in_json_terms(tmp_path, obj, msg):
    """No Python exception text or dict repr: the object's index, kind and names, its line and column."""
    path = tmp_path / "r.json"
    path.write_text('{"nftables": [\n' + ",\n".join(json.dumps(o) for o in [*BASE, obj]) + "\n]}\n")
    with pytest.raises(ConfigError) as ei:
        load_ruleset(path)
    e = ei.value
    ((kind, body),) = obj.items()
    names = [body[k] for k in ("family", "table", "chain" if kind == "rule" else "name") if k in body]
    if kind == "table":
        names = [body["family"], body["name"]]
    assert (e.line, e.col) == (4, 1)
    assert e.msg == f"JSON object 2 ({' '.join([kind, *names])}): " + msg.removeprefix("set ")
    assert not PYTHON_INTERNALS.search(e.msg)


def test_json_is_evaluated_as_nft_evaluates_it(tmp_path):
    """An equivalent form is read and listed in nft's normal form: real nft 1.0.6 lists this JSON rule
    (op "in" with one value, protocol 17) as `ip protocol udp ip daddr 10.0.0.1 accept`."""
    obj = parse_ruleset("table ip t {\n chain c {\n ip protocol udp ip daddr 10.0.0.1 accept\n }\n}\n").to_json()
    expr = obj["nftables"][-1]["rule"]["expr"]
    expr[0]["match"]["right"] = 17
    expr[1]["match"]["op"] = "in"
    path = tmp_path / "r.json"
    path.write_text(json.dumps(obj, indent=1))
    rs = load_ruleset(path)
    assert "\t\tip protocol udp ip daddr 10.0.0.1 accept\n" in rs.list()
    got = rs.to_json()["nftables"][-1]["rule"]["expr"]
    assert got[0]["match"] == {
        "op": "==", "left": {"payload": {"protocol": "ip", "field": "protocol"}}, "right": "udp"}  # fmt: skip
    assert got[1]["match"]["op"] == "=="


def test_json_value_nft_refuses_names_the_object(tmp_path):
    obj = parse_ruleset("table ip t {\n chain c {\n tcp dport 22 accept\n }\n}\n").to_json()
    obj["nftables"][-1]["rule"]["expr"][0]["match"]["right"] = 70000
    path = tmp_path / "r.json"
    path.write_text(json.dumps(obj, indent=1))
    with pytest.raises(ConfigError) as ei:
        load_ruleset(path)
    assert ei.value.msg.startswith("JSON object 3 (rule ip t c): not valid: ")
    assert "tcp dport 70000 accept" in ei.value.msg
    lines = json.dumps(obj, indent=1).split("\n")
    assert (ei.value.line, ei.value.col) == (lines.index('   "rule": {'), 3)  # the line above, 1-based


def test_json_fields_nft_fills_in(tmp_path):
    """What nft's JSON parser defaults: a null counter, a limit without burst (packets: nft 1.0.6 lists
    burst 5 in JSON, no burst in text) or unit, a mark written as a hex string. Real nft lists this rule
    as `ct mark 0x00000032 counter limit rate over 20/second limit rate 1 kbytes/second`."""
    obj = parse_ruleset("table ip t {\n chain c {\n }\n}\n").to_json()
    expr = [
        {"match": {"left": {"ct": {"key": "mark"}}, "op": "==", "right": "0x00000032"}},
        {"counter": None},
        {"limit": {"inv": True, "per": "second", "rate": 20}},
        {"limit": {"per": "second", "rate": 1, "rate_unit": "kbytes"}},
    ]
    obj["nftables"].append({"add": {"rule": {"family": "ip", "table": "t", "chain": "c", "expr": expr}}})
    path = tmp_path / "r.json"
    path.write_text(json.dumps(obj))
    rs = load_ruleset(path)
    want = "ct mark 0x00000032 counter packets 0 bytes 0 limit rate over 20/second limit rate 1 kbytes/second"
    assert f"\t\t{want}\n" in rs.list()
    got = rs.to_json()["nftables"][-1]["rule"]["expr"]
    assert got[0]["match"]["right"] == 50
    assert got[2] == {"limit": {"rate": 20, "burst": 5, "per": "second", "inv": True}}
    assert got[3] == {"limit": {"rate": 1, "burst": 0, "per": "second", "rate_unit": "kbytes", "burst_unit": "bytes"}}
