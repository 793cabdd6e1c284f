"""Rulesets built by `nft -f` commands, driven through `replay`: what the commands leave is what runs.

Linux: net/netfilter/nf_tables_api.c (nf_tables_table_disable: a dormant table's base chains are
unregistered from their hooks; nf_tables_newrule / nf_tables_delrule: where a rule goes, which one
a handle deletes). The gateway is the bundled example: lan0 192.168.1.1/24, wan0 203.0.113.1.
"""

from __future__ import annotations

import pytest
from gateway import GW_LAN, H10, run
from scapy.all import IP, UDP, Ether

from flowpath.config.nft import parse_ruleset

BASE = """table ip f {{
{flags}	chain forward {{
		type filter hook forward priority filter; policy accept;
		udp dport 9 drop comment "the drop"
	}}
}}
{cmds}"""


def forward_one(tmp_path, rules: str) -> tuple[int, dict]:
    """One UDP packet to port 9 from the LAN to the WAN: (frames sent on wan0, drops by reason)."""
    pkt = Ether(src=H10, dst=GW_LAN) / IP(src="192.168.1.10", dst="198.51.100.7") / UDP(sport=1000, dport=9)
    out, stats, _ = run(tmp_path, [("lan0", pkt)], rules=parse_ruleset(rules, "<test>"))
    return len(out.get("wan0", [])), stats["drops"]


def test_the_drop_rule_drops(tmp_path):
    assert forward_one(tmp_path, BASE.format(flags="", cmds="")) == (0, {"netfilter_drop": 1})


def test_a_dormant_tables_drop_rule_does_not_drop(tmp_path):
    """`flags dormant`: the table is loaded and listed, its chains are on no hook."""
    rules = BASE.format(flags="\tflags dormant\n\n", cmds="")
    assert "flags dormant" in parse_ruleset(rules).list()
    assert forward_one(tmp_path, rules) == (1, {})


@pytest.mark.parametrize(
    ("cmds", "wan", "drops"),
    [
        ("insert rule ip f forward udp dport 9 accept\n", 1, {}),  # before the drop
        ("add rule ip f forward udp dport 9 accept\n", 0, {"netfilter_drop": 1}),  # after it
        ("add rule ip f forward position 2 udp dport 9 accept\n", 0, {"netfilter_drop": 1}),
        ("insert rule ip f forward position 2 udp dport 9 accept\n", 1, {}),
        ("insert rule ip f forward index 0 udp dport 9 accept\n", 1, {}),
        ("replace rule ip f forward handle 2 udp dport 9 accept\n", 1, {}),
        ("delete rule ip f forward handle 2\n", 1, {}),
        ("flush chain ip f forward\n", 1, {}),
        ("flush table ip f\n", 1, {}),
        ("delete table ip f\n", 1, {}),
    ],
)
def test_commands_decide_what_runs(tmp_path, cmds, wan, drops):
    """The drop rule has handle 2 (the chain took 1); each command changes whether it drops."""
    assert forward_one(tmp_path, BASE.format(flags="", cmds=cmds)) == (wan, drops)
