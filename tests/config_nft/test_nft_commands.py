"""`nft -f` commands and includes: rule handles and positions, deletions, `create`, `include` errors.

Linux: net/netfilter/nf_tables_api.c (nf_tables_alloc_handle, nf_tables_newrule, nf_tables_delrule),
nftables src/parser_bison.y (the commands) and src/scanner.l (include). Listings with handles are
compared with `nft -a list ruleset` in test_nft_corpus.py; these pin the rules one by one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from flowpath.cli import main
from flowpath.config.nft import load_ruleset, parse_ruleset, ruleset_from_json
from flowpath.config.nft.printer import rule_print
from flowpath.errors import ConfigError

TABLE = """table ip t {
	chain c {
		type filter hook input priority filter; policy accept;
		tcp dport 1 drop
		tcp dport 2 drop
	}
}
"""


def rules(rs, chain: str = "c", table: str = "t") -> list[tuple[int, str]]:
    """(handle, the rule as listed) of a chain, in order."""
    c = rs.table("ip", table).chains[chain]
    return [(r.handle, rule_print("ip", r.expr, r.comment)) for r in c.rules]


def load(cmds: str, base: str = TABLE):
    return parse_ruleset(base + cmds, "t.nft")


def error(cmds: str, base: str = TABLE) -> ConfigError:
    with pytest.raises(ConfigError) as ei:
        load(cmds, base)
    return ei.value


# --- handles ------------------------------------------------------------------------------------------
def test_handles_count_per_table_in_batch_order():
    """chain c took 1, the block's rules 2 and 3; each new rule the next handle, wherever it goes."""
    rs = load("insert rule ip t c tcp dport 3 drop\nadd rule ip t c tcp dport 4 drop\n"
              "add table ip u\nadd chain ip u d\nadd rule ip u d accept\n")  # fmt: skip
    assert rules(rs) == [(4, "tcp dport 3 drop"), (2, "tcp dport 1 drop"), (3, "tcp dport 2 drop"),
                         (5, "tcp dport 4 drop")]  # fmt: skip
    assert (rs.tables[0].handle, rs.tables[1].handle) == (1, 2)
    assert rules(rs, "d", "u") == [(2, "accept")]  # a new table counts from 1 again


def test_an_anonymous_set_takes_the_handle_before_its_rule():
    rs = load("add rule ip t c tcp dport { 5, 6 } drop\nadd rule ip t c tcp dport 7 drop\n")
    assert [h for h, _ in rules(rs)] == [2, 3, 5, 6]


def test_replace_keeps_the_handle_and_delete_frees_none():
    rs = load("replace rule ip t c handle 2 tcp dport 9 accept\ndelete rule ip t c handle 3\n"
              "add rule ip t c tcp dport 10 drop\n")  # fmt: skip
    assert rules(rs) == [(2, "tcp dport 9 accept"), (4, "tcp dport 10 drop")]


def test_position_and_handle_are_the_same_reference():
    """`add ... position N` / `handle N`: after the rule of handle N; `insert`: before it."""
    rs = load("add rule ip t c position 2 tcp dport 3 drop\ninsert rule ip t c handle 3 tcp dport 4 drop\n")
    assert [h for h, _ in rules(rs)] == [2, 4, 5, 3]


def test_index_counts_the_rules_as_built_so_far():
    rs = load("add rule ip t c index 0 tcp dport 3 drop\ninsert rule ip t c index 0 tcp dport 4 drop\n"
              "insert rule ip t c index 3 tcp dport 5 drop\n")  # fmt: skip
    assert [h for h, _ in rules(rs)] == [5, 2, 4, 6, 3]


def test_listing_with_handles_is_nft_a(capsys, tmp_path):
    """`nft -a list ruleset` marks each object with `# handle N`; so does `flowpath nft -a`."""
    text = load("add rule ip t c tcp dport 3 drop comment \"x\"\n").list(handles=True)
    assert text.split("\n")[:2] == ["table ip t { # handle 1", "\tchain c { # handle 1"]
    assert '\t\ttcp dport 3 drop comment "x" # handle 4' in text
    f = tmp_path / "r.nft"
    f.write_text(TABLE)
    assert main(["nft", "list", "ruleset", "-a", "-f", str(f)]) == 0
    assert "tcp dport 2 drop # handle 3\n" in capsys.readouterr().out
    assert main(["nft", "list", "ruleset", "-j", "-f", str(f)]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert [o["rule"]["handle"] for o in obj["nftables"] if "rule" in o] == [2, 3]


# --- errors: nft's messages, at the handle, position or name it could not find --------------------------
@pytest.mark.parametrize(
    ("cmd", "col", "width", "msg"),
    [
        ("delete rule ip t c handle 7", 27, 1, "Could not process rule: No such file or directory"),
        ("replace rule ip t c handle 17 drop", 28, 2, "Could not process rule: No such file or directory"),
        ("add rule ip t c position 7 drop", 17, 10, "Could not process rule: No such file or directory"),
        ("add rule ip t c handle 7 drop", 24, 1, "Could not process rule: No such file or directory"),
        ("insert rule ip t c index 2 drop", 20, 7, "Could not process rule: No such file or directory"),
        ("add rule ip t nosuch drop", 15, 6, "Could not process rule: No such file or directory"),
        ("delete chain ip t nosuch", 19, 6, "Could not process rule: No such file or directory"),
        ("flush chain ip t nosuch", 18, 6, "Could not process rule: No such file or directory"),
        ("delete table ip nosuch", 17, 6, "Could not process rule: No such file or directory"),
        ("flush set ip t nosuch", 16, 6, "No such file or directory"),
        ("create table ip t", 17, 1, "Could not process rule: File exists"),
        ("create chain ip t c", 19, 1, "Could not process rule: File exists"),
    ],
)
def test_command_errors_name_file_line_col(cmd, col, width, msg):
    e = error(cmd + "\n")
    assert (e.path, e.line, e.col, e.length, e.msg) == ("t.nft", 8, col, width, msg)


def test_a_handle_deleted_earlier_is_the_kernels_error_on_the_whole_command():
    e = error("delete rule ip t c handle 2\nreplace rule ip t c handle 2 accept\n")
    assert (e.line, e.col, e.length) == (9, 1, 36)


def test_what_a_rule_uses_cannot_be_deleted():
    base = TABLE.replace("tcp dport 2 drop", "jump sub\n\t\tip saddr @s drop") + (
        "add chain ip t sub\nadd set ip t s { type ipv4_addr; }\n"
    )
    base = "table ip t {\n\tchain sub {\n\t}\n\tset s {\n\t\ttype ipv4_addr\n\t}\n}\n" + base
    for cmd, col in (("delete chain ip t sub", 19), ("delete set ip t s", 17)):
        e = error(cmd + "\n", base)
        assert (e.col, e.msg) == (col, "Could not process rule: Device or resource busy")
    # sub 1, s 2 (the first block's chains, then sets), c 3, then c's rules: jump sub is 5
    rs = load("delete rule ip t c handle 5\ndelete chain ip t sub\n", base)
    assert "sub" not in rs.table("ip", "t").chains


def test_elements_added_deleted_and_created():
    base = "table ip t {\n\tset s {\n\t\ttype ipv4_addr\n\t\telements = { 192.0.2.1, 192.0.2.2 }\n\t}\n}\n"
    rs = load("delete element ip t s { 192.0.2.1 }\nadd element ip t s { 192.0.2.9 }\n", base)
    assert rs.table("ip", "t").sets["s"].elem == ["192.0.2.2", "192.0.2.9"]
    e = error("delete element ip t s { 192.0.2.7 }\n", base)
    assert (e.line, e.col, e.msg) == (7, 25, "Could not process rule: No such file or directory")
    e = error("create element ip t s { 192.0.2.2 }\n", base)
    assert (e.line, e.col, e.msg) == (7, 25, "Could not process rule: File exists")
    assert load("flush set ip t s\n", base).table("ip", "t").sets["s"].elem == []


def test_flush_ruleset_midway_keeps_counting_table_handles():
    rs = load("flush ruleset\nadd table ip t\n")
    assert rs.tables[0].handle == 2


# --- include --------------------------------------------------------------------------------------------
def test_include_pattern_reads_sorted_files_and_shares_defines(tmp_path):
    d = tmp_path / "conf.d"
    d.mkdir()
    (d / "20-rules.nft").write_text("add rule ip t c iifname $lan accept\n")
    (d / "10-table.nft").write_text("table ip t {\n\tchain c {\n\t}\n}\n")
    (d / "skip.txt").write_text("junk\n")
    main_file = tmp_path / "main.nft"
    main_file.write_text('define lan = "lan0"\ninclude "conf.d/*.nft"\ninclude "conf.d/none*.nft"\n')
    assert load_ruleset(main_file).list() == 'table ip t {\n\tchain c {\n\t\tiifname "lan0" accept\n\t}\n}\n'


def test_include_names_relative_to_the_including_file(tmp_path):
    """./ and a plain name from the including file's folder; a plain name also from the top file's."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.nft").write_text('include "./two.nft"\ninclude "a/three.nft"\n')
    (tmp_path / "a" / "two.nft").write_text("table ip two {\n}\n")
    (tmp_path / "a" / "three.nft").write_text("table ip three {\n}\n")
    (tmp_path / "main.nft").write_text('include "a/one.nft"\n')
    assert [t.name for t in load_ruleset(tmp_path / "main.nft").tables] == ["two", "three"]


def test_include_path_is_searched_for_plain_names(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "common.nft").write_text("table ip common {\n}\n")
    rs = parse_ruleset('include "common.nft"\n', str(tmp_path / "main.nft"), (str(tmp_path / "lib"),))
    assert rs.tables[0].name == "common"


def test_cli_include_path(tmp_path, capsys):
    """`flowpath nft -I DIR`, as `nft -I DIR`: a plain include name is looked up there too."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "common.nft").write_text("table ip common {\n}\n")
    (tmp_path / "main.nft").write_text('include "common.nft"\n')
    assert main(["nft", "-c", "-f", str(tmp_path / "main.nft")]) == 2
    assert "File not found: common.nft" in capsys.readouterr().err
    assert main(["nft", "list", "ruleset", "-I", str(tmp_path / "lib"), "-f", str(tmp_path / "main.nft")]) == 0
    assert capsys.readouterr().out == "table ip common {\n}\n"


def test_an_error_in_an_included_file_names_that_file(tmp_path):
    inc = tmp_path / "inc.nft"
    inc.write_text("table ip t {\n\tchain c {\n\t\ttcp dport 22 acept\n\t}\n}\n")
    (tmp_path / "main.nft").write_text('\ninclude "inc.nft"\n')
    with pytest.raises(ConfigError) as ei:
        load_ruleset(tmp_path / "main.nft")
    assert (ei.value.path, ei.value.line) == (str(inc), 3)
    # nft's form: the include that led there first, its caret width the statement's and its newline
    assert str(ei.value).startswith(f"In file included from {tmp_path / 'main.nft'}:2:1-18:\n{inc}:3:")


def test_a_kernel_error_in_an_included_file_names_that_file(tmp_path):
    """Errors found after the whole file is read (here a jump loop) still name the file of the rule."""
    inc = tmp_path / "inc.nft"
    inc.write_text("add rule ip t a jump b\nadd rule ip t b jump a\n")
    (tmp_path / "main.nft").write_text('table ip t {\n\tchain a {\n\t}\n\tchain b {\n\t}\n}\ninclude "inc.nft"\n')
    with pytest.raises(ConfigError) as ei:
        load_ruleset(tmp_path / "main.nft")
    assert (ei.value.path, ei.value.line, ei.value.source) == (str(inc), 2, "add rule ip t b jump a")
    assert ei.value.included_from == [f"{tmp_path / 'main.nft'}:7:1-18"]


def test_include_errors_name_the_include_statement(tmp_path):
    main_file = tmp_path / "main.nft"
    main_file.write_text('table ip t {\n}\ninclude "missing.nft"\n')
    with pytest.raises(ConfigError) as ei:
        load_ruleset(main_file)
    e = ei.value
    assert (e.path, e.line, e.col, e.length, e.msg) == (str(main_file), 3, 1, 22, "File not found: missing.nft")
    main_file.write_text('include "main.nft"\n')
    with pytest.raises(ConfigError) as ei:
        load_ruleset(main_file)
    assert ei.value.msg == "Include nested too deeply, max 16 levels"


@pytest.mark.parametrize("name", ["a\x00b.nft", "./\x00include.d/*.nft", "/etc/\x00*"])
def test_an_include_name_holding_a_nul_names_no_file(tmp_path, name):
    """A NUL, which no path holds (found by the fuzz test: the OS calls raised ValueError): a plain name
    is not found, a pattern matches nothing."""
    text = f'table ip t {{\n}}\ninclude "{name}"\n'
    if "*" in name:
        assert [t.name for t in parse_ruleset(text, str(tmp_path / "main.nft")).tables] == ["t"]
        return
    with pytest.raises(ConfigError) as ei:
        parse_ruleset(text, str(tmp_path / "main.nft"))
    assert (ei.value.line, ei.value.msg) == (3, f"File not found: {name}")


# --- JSON commands ---------------------------------------------------------------------------------------
JSON_COMMANDS = Path(__file__).resolve().parents[1] / "data" / "nft" / "json_commands.json"
# nft 1.0.6's `nft -a list ruleset` after `nft -j -f json_commands.json` (the table's handle left out);
# test_nft_corpus.py compares with the live nft
JSON_COMMANDS_LISTED = """table ip t {
	set s { # handle 2
		type ipv4_addr
	}

	chain c { # handle 1
		type filter hook input priority filter; policy accept;
		tcp dport 1 drop # handle 3
		tcp dport 6 accept # handle 4
	}
}
"""


def _no_table_handle(text: str) -> str:
    return re.sub(r"^(table .*) # handle \d+$", r"\1", text, flags=re.M)


def test_json_commands_insert_replace_delete_and_flush():
    assert _no_table_handle(load_ruleset(JSON_COMMANDS).list(handles=True)) == JSON_COMMANDS_LISTED


def test_json_commands_errors_name_the_object():
    add = {"add": {"rule": {"family": "ip", "table": "t", "chain": "c", "handle": 3, "expr": [{"accept": None}]}}}
    base = [{"add": {"table": {"family": "ip", "name": "t"}}},
            {"add": {"chain": {"family": "ip", "table": "t", "name": "c"}}}]  # fmt: skip
    with pytest.raises(ConfigError) as ei:
        ruleset_from_json({"nftables": [*base, add]}, "j.json")
    assert 'JSON object 2 (rule ip t c): add places a rule at the end or the start only' in ei.value.msg
    gone = {"delete": {"rule": {"family": "ip", "table": "t", "chain": "c", "handle": 9}}}
    with pytest.raises(ConfigError) as ei:
        ruleset_from_json({"nftables": [*base, gone]}, "j.json")
    assert ei.value.msg == "Could not process rule: No such file or directory"
    flush = {"flush": {"chain": {"family": "ip", "table": "t", "name": "nosuch"}}}
    with pytest.raises(ConfigError) as ei:
        ruleset_from_json({"nftables": [*base, flush]}, "j.json")
    assert ei.value.msg.endswith("Could not process rule: No such file or directory")
