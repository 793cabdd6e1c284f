"""IPv6 extension header and TCP option forms in the nft front end: what nft 1.0.6 lists, and its errors.

Linux: nftables src/exthdr.c › exthdr_init_raw and src/tcpopt.c › tcpopt_init_raw (a field reads back as the
first template with its offset and length), src/parser_bison.y (tcp_hdr_option_type, exthdr_exists_expr)
and src/evaluate.c › expr_evaluate_exthdr. The corpus (tests/data/nft/exthdr_tcpopt.nft, invalid/tcpopt_*,
srh_*, exthdr_*, frag_*, optstrip_*) compares whole listings, JSON and errors; these are single forms.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from flowpath.config.nft import parse_ruleset
from flowpath.errors import ConfigError

# (family, rule as written, as nft 1.0.6 lists it; checked with nft on Linux 6.18 and by the root test below)
FORMS = [
    ("ip6", "tcp option sack0 left 1", "tcp option sack left 1"),
    ("ip6", "tcp option sack2 length 1", "tcp option sack length 1"),
    ("ip6", "tcp option sack2 exists", "tcp option sack exists"),
    ("ip6", "tcp option echo exists", "tcp option timestamp exists"),
    ("ip6", "tcp option maxseg 1", "tcp option maxseg exists"),
    ("ip6", "tcp option maxseg != exists", "tcp option maxseg != exists"),
    ("ip6", "tcp option @2,0,8 1", "tcp option maxseg kind 1"),
    ("ip6", "tcp option @5,80,32 1", "tcp option sack1 left 1"),
    ("ip6", "tcp option @6,0,8 1", "tcp option @6,0,8 1"),
    ("ip6", "tcp option 6 exists", "tcp option 6 exists"),
    ("ip", "reset tcp option 2", "reset tcp option maxseg"),
    ("ip", "meta l4proto tcp tcp option sack-perm exists", "tcp option sack-perm exists"),
    ("ip6", "rt0 addr[2] ::1", "srh sid[2] ::1"),
    ("ip6", "srh tag 0xffff", "srh tag 65535"),
    ("ip6", "exthdr hbh 1", "exthdr hbh exists"),
    ("ip6", "exthdr hbh != 1", "exthdr hbh != exists"),
    ("ip6", "exthdr frag == missing", "exthdr frag missing"),
    ("ip6", "mh type 12", "mh type home-agent-switch-message"),
    ("ip6", "mh nexthdr { udplite, tcp }", "mh nexthdr { tcp, udplite }"),
    ("ip6", "rt nexthdr icmp rt seg-left 0-2", "rt nexthdr icmp rt seg-left 0-2"),
    ("inet", "meta nfproto ipv6 hbh nexthdr 6", "hbh nexthdr tcp"),
]
ERRORS = [
    ("ip6", "tcp option eol length 1", "No symbol type information", "1"),
    ("ip6", "tcp option sack window 1", "syntax error, unexpected window", "window"),
    ("ip6", "rt2 addr ::1", "No symbol type information", "::1"),
    ("ip6", "srh sid[3] ::1", "No symbol type information", "::1"),
    ("ip6", "frag more-fragments 2", "Value 2 exceeds valid range 0-1", "2"),
    ("ip6", "tcp option mptcp subtype 16", "Value 16 exceeds valid range 0-15", "16"),
    ("ip", "exthdr hbh exists", "cannot use exthdr with ip", "exthdr hbh"),
    ("ip6", "reset tcp option 256", "value too large", "256"),
    (
        "ip6",
        "tcp option window count set 5",
        "Could not process rule: Operation not supported",
        "tcp option window count set 5",
    ),
    (  # no field: the kind byte, which the kernel does not set either (a fuzz case, once a crash)
        "ip6",
        "tcp option maxseg set 2",
        "Could not process rule: Operation not supported",
        "tcp option maxseg set 2",
    ),
    (
        "ip6",
        "tcp option @6,8,16 set 6",
        "Could not process rule: Operation not supported",
        "tcp option @6,8,16 set 6",
    ),
]


def _table(family: str, rules: list[str]) -> str:
    body = "".join(f"\t\t{r}\n" for r in rules)
    return f"table {family} t {{\n\tchain c {{\n\t\ttype filter hook input priority filter; policy accept;\n{body}\t}}\n}}\n"


@pytest.mark.parametrize(("family", "rule", "listed"), FORMS)
def test_forms_list_as_nft_lists_them(family, rule, listed):
    out = parse_ruleset(_table(family, [rule])).list()
    assert out.splitlines()[3].strip() == listed
    if " kind " not in listed:  # nft lists `maxseg kind` but its grammar has no such field to read back
        assert parse_ruleset(out).list() == out


@pytest.mark.parametrize(("family", "rule", "msg", "marked"), ERRORS)
def test_errors_as_nft_gives_them(family, rule, msg, marked):
    """nft's message, and the caret under the same text."""
    with pytest.raises(ConfigError) as ei:
        parse_ruleset(_table(family, [rule]))
    e = ei.value
    assert e.msg == msg
    assert e.source[e.col - 1 : e.col - 1 + e.length] == marked


@pytest.mark.root
def test_live_nft_lists_the_forms_the_same():
    """Each family's FORMS loaded by the real nft in a namespace: the same listing, rule for rule."""
    if os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("ip") is None:
        pytest.skip("needs root, ip and nft")
    ns = f"fpexthdr_{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for family in sorted({f for f, _, _ in FORMS}):
            text = _table(family, [r for f, r, _ in FORMS if f == family])
            run = ["ip", "netns", "exec", ns, "nft"]
            subprocess.run([*run, "flush", "ruleset"], check=True)
            res = subprocess.run([*run, "-f", "-"], input=text, capture_output=True, text=True, check=False)
            assert res.returncode == 0, res.stderr
            listed = subprocess.run([*run, "list", "ruleset"], capture_output=True, text=True, check=True)
            assert parse_ruleset(text).list() == listed.stdout
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
