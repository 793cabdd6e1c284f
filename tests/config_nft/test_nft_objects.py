"""Stateful objects in the front end: nft's JSON read back, `nft -s` listings, `add` commands, errors.

Linux: nftables src/rule.c › obj_print_data (a stateless listing drops counter values and quota `used`),
src/parser_bison.y › obj_spec and the add commands, net/netfilter/nf_tables_api.c › nft_objref_init
(a rule names an object the batch made before it). The listings and JSON compared here are the real
nft's (tests/data/nft/stateful_objects.nft.*, made by regen.sh), or live when root.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_nft_corpus import Netns, have_nft  # noqa: E402

from flowpath.config.nft import load_ruleset, parse_ruleset, ruleset_from_json
from flowpath.config.nft.output import output_options
from flowpath.errors import ConfigError

DATA = Path(__file__).resolve().parents[1] / "data" / "nft"
OBJECTS = DATA / "stateful_objects.nft"


def test_nft_json_of_objects_reads_back_to_nfts_listing():
    """`nft -j list ruleset` of the objects file (counters with values, quotas with used) loads, and
    lists as `nft list ruleset` did."""
    stored = json.loads(OBJECTS.with_name(OBJECTS.name + ".json").read_text())
    rs = ruleset_from_json(stored, "objects.json")
    assert rs.list() == OBJECTS.with_name(OBJECTS.name + ".list").read_text()


def test_stateless_listing_drops_counts_and_used():
    """nft -s: `counter c1 {` with an empty body, `over 25 mbytes` without its used bytes."""
    rs = load_ruleset(OBJECTS)
    with output_options(stateless=True):
        text = rs.list()
    assert "\tcounter c1 {\n\t}\n" in text
    assert "\tquota q1 {\n\t\tover 25 mbytes\n\t}\n" in text
    assert "quota over 2 kbytes\n" in text and " used " not in text and "packets" not in text
    full = rs.list()
    assert "\t\tpackets 3 bytes 100\n" in full and "over 25 mbytes used 1000 bytes" in full


@pytest.mark.root
def test_stateless_listing_as_live_nft_s():
    if not have_nft():
        pytest.skip("needs root, ip and nft")
    ns = Netns()
    try:
        assert ns.load(OBJECTS).returncode == 0
        live = ns.nft("-s", "list", "ruleset").stdout
    finally:
        ns.close()
    with output_options(stateless=True):
        assert load_ruleset(OBJECTS).list() == live


def test_add_commands_make_objects_as_a_table_block_does():
    """`add quota t q 25 mbytes` (no braces), `add ct helper t h { ... }`: the same objects and JSON."""
    a = parse_ruleset(
        'table ip t {\n\tquota q { over 25 mbytes }\n\tct helper h { type "ftp" protocol tcp; }\n'
        "\tlimit l { rate 400/minute }\n\tcounter c { packets 1 bytes 2 }\n}\n",
        "a",
    )
    b = parse_ruleset(
        'table ip t\nadd quota ip t q over 25 mbytes\nadd ct helper t h { type "ftp" protocol tcp; }\n'
        "add limit t l rate 400/minute\nadd counter ip t c packets 1 bytes 2\n",
        "b",
    )
    assert a.to_json() == b.to_json()


@pytest.mark.parametrize(
    "text, where, msg",
    [
        ('table ip t {\n\tquota q { 1 gbytes }\n}\n', (2, 10), "Wrong rate format"),
        ("table ip t {\n\tsynproxy s { wscale 7 }\n}\n", (2, 15), "syntax error, unexpected wscale"),
        ("table ip t {\n\tsynproxy s { mss 1460 wscale 7 sack-perm timestamp }\n}\n", (2, 43),
         "syntax error, unexpected timestamp"),
        ("table ip t {\n\tct timeout x { protocol tcp; policy = { estalbished:100 }; }\n}\n", (2, 42),
         "invalid state for this protocol"),
        ("table ip t {\n\tct expectation e { protocol udp; }\n}\n", (2, 17), "missing options"),
        ("table inet t {\n\tct expectation e { protocol tcp; dport 1; timeout 2m; size 1; }\n}\n", (2, 17),
         "Could not process rule: Address family not supported by protocol"),
        ('table ip t {\n\tct helper h { type "nosuch" protocol tcp; }\n}\n', (2, 12),
         "Could not process rule: No such file or directory"),
        ("table ip t {\n\tcounter c { packets 1 }\n}\n", (2, 24), "syntax error, unexpected '}'"),
        ("table ip t\nadd quota ip t q\n", (2, 17), "syntax error, unexpected newline"),
        # `ct WORD` other than helper, timeout, expectation (the fuzz found it escaping as an internal error)
        ('table ip t {\n\tct elper h { type "ftp" protocol tcp; }\n}\n', (2, 5), "syntax error, unexpected string"),
        ("table ip t\nadd ct elper t h\n", (2, 8), "syntax error, unexpected string"),
        # a rule naming an object the batch makes after it (nft marks the name, flowpath the rule)
        ('table ip t {\n\tchain c {\n\t\tcounter name "c3"\n\t}\n}\nadd counter ip t c3\n', (3, 3),
         "Could not process rule: No such file or directory"),
        ('table ip t {\n\tquota q { 1 kbytes }\n\tchain c {\n\t\tquota name tcp dport map { 22 : "q", 80 : "r" }\n'
         "\t}\n}\n", (4, 40), "Could not process rule: No such file or directory"),
    ],
)  # fmt: skip
def test_object_errors_at_nfts_position(text, where, msg):
    with pytest.raises(ConfigError) as ei:
        parse_ruleset(text, "objs.nft")
    assert (ei.value.line, ei.value.col) == where
    assert ei.value.msg.startswith(msg)


def test_create_of_an_existing_object_is_eexist_and_add_keeps_it():
    base = "table ip t {\n\tcounter c { packets 1 bytes 2 }\n}\n"
    rs = parse_ruleset(base + "add counter ip t c packets 9 bytes 9\n", "x")
    assert rs.tables[0].objs["counter", "c"].spec == {"packets": 1, "bytes": 2}
    with pytest.raises(ConfigError, match="File exists"):
        parse_ruleset(base + "create counter ip t c\n", "x")
