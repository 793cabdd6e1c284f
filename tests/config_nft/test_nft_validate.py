"""The kernel's checks at `nft -c` time: jumps (depth, loops), hooks per statement, chain types, names.

Linux: net/netfilter/nf_tables_api.c › nft_table_validate / nft_chain_validate (NFT_JUMP_STACK_SIZE 16),
nf_tables_newchain, the NFT_NAME_MAXLEN netlink policies; nft_reject*.c, nft_nat.c, nft_rt.c ›
*_validate. Expected answers are those of nft 1.0.6 on Linux 6.18 in a namespace (tests/data/nft/invalid
holds the files with nft's own errors); the flowtable device check has no live oracle (the kernel here
has no flowtable support).
"""

from __future__ import annotations

import pytest

from flowpath.cli import main
from flowpath.config.nft import load_ruleset, parse_ruleset
from flowpath.errors import ConfigError
from flowpath.netfilter.nf_tables import NftRuntime


def chains(*bodies: str, family: str = "ip") -> str:
    """A table whose first chain is an input base chain; each body is `name: rule; rule`."""
    out = [f"table {family} t {{"]
    for i, body in enumerate(bodies):
        name, _, rules = body.partition(":")
        out.append(f"\tchain {name.strip()} {{")
        if i == 0:
            out.append("\t\ttype filter hook input priority filter; policy accept;")
        out += [f"\t\t{r.strip()}" for r in rules.split(";") if r.strip()]
        out.append("\t}")
    return "\n".join(out) + "\n}\n"


def check(tmp_path, text: str, capsys) -> tuple[int, str]:
    """`flowpath nft -c -f FILE`: the exit code and the first line of stderr."""
    path = tmp_path / "r.nft"
    path.write_text(text)
    rc = main(["nft", "-c", "-f", str(path)])
    return rc, capsys.readouterr().err.split("\n")[0].replace(f"{path}:", "")


def deep(n: int) -> str:
    """A base chain and n chains, each jumping to the next: the last one is n jumps deep."""
    return chains("input: jump c1", *(f"c{i}: jump c{i + 1}" for i in range(1, n)), f"c{n}: accept")


def test_jumps_16_deep_are_refused_at_check_time(tmp_path, capsys):
    """nft_chain_validate: a chain reached at level NFT_JUMP_STACK_SIZE (16) is -EMLINK; nft marks the
    rule whose addition made the path (here the jump into c16, line 49)."""
    assert check(tmp_path, deep(15), capsys) == (0, "")
    rc, err = check(tmp_path, deep(16), capsys)
    assert (rc, err) == (2, "49:3: Error: Could not process rule: Too many links")


def test_loop_reached_from_a_base_chain_is_too_many_links(tmp_path, capsys):
    """A loop is a path of unbounded depth: the first rule after which a base chain reaches it."""
    text = chains("input: jump a", "a: jump b", "b: counter; jump a")
    rc, err = check(tmp_path, text, capsys)
    assert (rc, err) == (2, "11:3: Error: Could not process rule: Too many links")


def test_loop_no_base_chain_reaches_is_refused_where_it_closes(tmp_path, capsys):
    """Deviation: Linux 6.18 keeps a loop no base chain reaches; flowpath's runtime refuses every loop
    (as nf_tables_check_loops did, ELOOP), so `nft -c` refuses it, at the jump that closes it."""
    text = chains("input: counter", "a: jump b", "b: counter; goto a")
    rc, err = check(tmp_path, text, capsys)
    assert (rc, err) == (2, "11:3: Error: Could not process rule: Too many levels of symbolic links")
    rc, err = check(tmp_path, chains("input: counter", "a: jump a"), capsys)
    assert (rc, err) == (2, "7:3: Error: Could not process rule: Too many levels of symbolic links")


def test_verdict_maps_jump_too(tmp_path, capsys):
    """nft_lookup_validate / nft_setelem_validate: a verdict map's jumps are walked like a rule's."""
    inline = chains("input: tcp dport vmap { 22 : jump a, 23 : drop }", "a: jump b", "b: tcp dport 22 jump a")
    rc, err = check(tmp_path, inline, capsys)
    assert (rc, err) == (2, "10:3: Error: Could not process rule: Too many links")
    named = inline.replace("tcp dport vmap { 22 : jump a, 23 : drop }", "tcp dport vmap @m")
    named = named.replace("table ip t {", "table ip t {\n\tmap m {\n\t\ttype inet_service : verdict\n"
                          "\t\telements = { 22 : jump a }\n\t}")  # fmt: skip
    rc, err = check(tmp_path, named, capsys)
    assert (rc, err) == (2, "14:3: Error: Could not process rule: Too many links")


@pytest.mark.parametrize(
    ("family", "hook"),
    [("ip", "prerouting"), ("ip6", "prerouting"), ("inet", "prerouting"), ("ip", "forward"), ("ip", "output")],
)  # fmt: skip
def test_reject_where_linux_allows_it(family, hook):
    """nft_reject_validate allows prerouting as well as input, forward and output (Linux 6.18 loads
    `reject` in an ip prerouting chain)."""
    text = f"table {family} t {{\n chain c {{\n  type filter hook {hook} priority 0; policy accept;\n  reject\n }}\n}}\n"
    NftRuntime.from_json(parse_ruleset(text).to_json())  # and the runtime takes it too


@pytest.mark.parametrize(
    ("hook", "rule"),
    [("postrouting", "reject"), ("input", "tcp dport 80 dnat to 192.0.2.1"),
     ("input", "tcp flags syn tcp option maxseg size set rt mtu")],
)  # fmt: skip
def test_statement_hooks_are_checked_through_jumps(hook, rule):
    """nft_chain_validate checks each expression against the base chain the path starts at."""
    text = chains("input: jump sub", f"sub: counter; {rule}").replace("hook input", f"hook {hook}")
    with pytest.raises(ConfigError) as ei:
        parse_ruleset(text, "r.nft")
    assert (ei.value.line, ei.value.col, ei.value.msg) == (
        8,
        3,
        "Could not process rule: Operation not supported",
    )


@pytest.mark.parametrize(
    ("decl", "line", "col"),
    [("type nat hook forward priority 0; policy accept;", 2, 8),  # nft_chain_nat: no forward hook
     ("type route hook input priority 0; policy accept;", 2, 8),  # nft_chain_route: output only
     ("policy drop;", 3, 2)],  # nf_tables_newchain: a regular chain has no policy
)  # fmt: skip
def test_chain_type_hook_and_policy(decl, line, col):
    with pytest.raises(ConfigError) as ei:
        parse_ruleset(f"table ip t {{\n\tchain c {{\n\t{decl}\n\t}}\n}}\n", "r.nft")
    assert (ei.value.line, ei.value.col, ei.value.msg) == (
        line,
        col,
        "Could not process rule: Operation not supported",
    )


def test_names_of_256_characters_are_refused_by_the_kernel():
    """NFT_NAME_MAXLEN is 256 with the NUL: 255 characters load, 256 are -ERANGE at the name."""
    for kind, decl in [("chain", "chain {} {{\n\t}}"), ("set", "set {} {{\n\t\ttype ipv4_addr\n\t}}"),
                       ("map", "map {} {{\n\t\ttype ipv4_addr : verdict\n\t}}")]:  # fmt: skip
        parse_ruleset(f"table ip t {{\n\t{decl.format('n' * 255)}\n}}\n")
        with pytest.raises(ConfigError) as ei:
            parse_ruleset(f"table ip t {{\n\t{decl.format('n' * 256)}\n}}\n")
        assert (ei.value.line, ei.value.col, ei.value.length) == (2, 3 + len(kind), 256), kind
        assert ei.value.msg == "Could not process rule: Numerical result out of range"
    with pytest.raises(ConfigError, match="Numerical result out of range"):
        parse_ruleset(f"table ip {'t' * 256} {{\n}}\n")


def test_checked_rulesets_build_in_the_runtime():
    """What `nft -c` accepts, the datapath's runtime builds (replay no longer fails at <ruleset>:0:0)."""
    for text in (deep(15), chains("input: jump a; jump b", "a: jump b", "b: accept")):
        NftRuntime.from_json(parse_ruleset(text).to_json())


FT = "table inet f {\n\tflowtable ft {\n\t\thook ingress priority 0\n\t\tdevices = { wan0, lan9 }\n\t}\n}\n"


def test_flowtable_device_missing_from_the_network_is_marked(tmp_path):
    """nft_netdev_hook_alloc: a device that does not exist is -ENOENT. The IR keeps where each device
    was written, so the datapath's check can name file:line:col and show the caret."""
    path = tmp_path / "r.nft"
    path.write_text(FT)
    rs = load_ruleset(path)
    rs.check_flowtable_devices({"wan0", "lan9"})
    with pytest.raises(ConfigError) as ei:
        rs.check_flowtable_devices({"wan0", "lan0"})
    assert str(ei.value) == (
        f"{path}:4:21: Error: Could not process rule: No such file or directory (flowtable ft: device lan9 "
        "is not in the network file)\n\t\tdevices = { wan0, lan9 }\n\t\t                  ^^^^"
    )
