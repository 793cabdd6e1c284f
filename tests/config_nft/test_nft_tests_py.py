"""The nftables tests/py runner (benchmarks/nft_tests_py.py) and the listing options it relies on.

The runner is what measures issue 18's conformance; here it runs over a small `.t` file written in the
same format, whose outcomes are known, so a runner that passes everything (or nothing) fails.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from flowpath.cli import main

_RUNNER = Path(__file__).parents[2] / "benchmarks" / "nft_tests_py.py"

T_FILE = """\
:input;type filter hook input priority 0

*ip;test-ip4;input
*inet;test-inet;input

!set1 type ipv4_addr;ok
?set1 192.168.3.4;ok
!set2 type not_a_type;fail

ip protocol 6;ok
ip saddr @set1 counter;ok
ip saddr @set2;fail
tcp dport 22 counter accept;ok;tcp dport 22 counter drop
tcp dport { 22, 23 } accept;ok;tcp dport { 23, 22 } accept
tcp dport 70000;fail
tcp dport 22;fail
"""


# nft-test.py -j's input (`.t.json`) and, where nft lists it otherwise, the listing (`.t.json.output`)
T_JSON = """\
# ip protocol 6
[{"match": {"left": {"payload": {"field": "protocol", "protocol": "ip"}}, "op": "==", "right": 6}}]

# tcp dport 22 counter accept
[{"match": {"left": {"payload": {"field": "dport", "protocol": "tcp"}}, "op": "==", "right": 22}},
 {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]

# tcp dport { 22, 23 } accept
[{"match": {"left": {"payload": {"field": "dport", "protocol": "tcp"}}, "op": "==", "right": {"set": [22, 23]}}},
 {"accept": null}]
"""
T_JSON_OUTPUT = """\
# tcp dport { 22, 23 } accept
[{"match": {"left": {"payload": {"field": "dport", "protocol": "tcp"}}, "op": "==", "right": {"set": [23, 22]}}},
 {"accept": null}]
"""


def _runner():
    spec = importlib.util.spec_from_file_location("nft_tests_py", _RUNNER)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_the_runner_scores_a_t_file(tmp_path: Path) -> None:
    d = tmp_path / "py" / "ip"
    d.mkdir(parents=True)
    (d / "mini.t").write_text(T_FILE)
    (d / "mini.t.json").write_text(T_JSON)
    (d / "mini.t.json.output").write_text(T_JSON_OUTPUT)
    out = tmp_path / "r.json"
    assert _runner().main(["--tests", str(tmp_path / "py"), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    s = r["summary"]["all"]
    # 4 valid rules x 2 tables: the counter-drop listing differs; 3 invalid x 2: `tcp dport 22` is taken
    assert (s["valid"], s["valid_listed"], s["valid_differs"]) == (8, 6, 2)
    assert (s["invalid"], s["invalid_refused"], s["crashes"]) == (6, 4, 0)
    assert r["declarations"] == {"as expected": 3}
    # JSON: `ip protocol 6` lists as given, the counter as `nft -j -s` lists it (null) differs from its
    # input, the set's listing is not the .json.output's order; `ip saddr @set1 counter` has no JSON form
    assert (s["json"], s["json_listed"]) == (6, 2)
    bad = {(u["rule"], u["outcome"], u["json"]) for u in r["failing"]}
    assert bad == {
        ("tcp dport 22 counter accept", "differs", "differs"),
        ("tcp dport 22", "accepted", ""),
        ("tcp dport { 22, 23 } accept", "pass", "differs"),
    }


def test_nft_list_stateless_and_numeric_protocol(tmp_path: Path, capsys) -> None:
    f = tmp_path / "r.nft"
    f.write_text("table ip t {\n\tchain c {\n\t\tip protocol tcp counter packets 3 bytes 9 accept\n\t}\n}\n")
    assert main(["nft", "list", "ruleset", "-f", str(f)]) == 0
    assert "\t\tip protocol tcp counter packets 3 bytes 9 accept\n" in capsys.readouterr().out
    assert main(["nft", "list", "ruleset", "-s", "-p", "-f", str(f)]) == 0
    assert "\t\tip protocol 6 counter accept\n" in capsys.readouterr().out
    assert main(["nft", "list", "ruleset", "-f", str(f)]) == 0  # the options do not stick
    assert "ip protocol tcp counter packets 3" in capsys.readouterr().out


def test_nft_list_json_stateless_and_numeric_protocol(tmp_path: Path, capsys) -> None:
    """`nft -j -s -p`: the JSON as real nft 1.0.6 prints it for this rule (counter null, protocol 6)."""
    f = tmp_path / "r.nft"
    f.write_text("table ip t {\n\tchain c {\n\t\tip protocol { tcp, udp } counter packets 3 bytes 9 accept\n\t}\n}\n")
    assert main(["nft", "list", "ruleset", "-j", "-s", "-p", "-f", str(f)]) == 0
    rule = [o["rule"] for o in json.loads(capsys.readouterr().out)["nftables"] if "rule" in o][0]
    assert rule["expr"] == [
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "protocol"}},
                   "right": {"set": [6, 17]}}},
        {"counter": None},
        {"accept": None},
    ]  # fmt: skip
    assert main(["nft", "list", "ruleset", "-j", "-f", str(f)]) == 0
    rule = [o["rule"] for o in json.loads(capsys.readouterr().out)["nftables"] if "rule" in o][0]
    assert rule["expr"][1] == {"counter": {"packets": 3, "bytes": 9}}
    assert rule["expr"][0]["match"]["right"] == {"set": ["tcp", "udp"]}
