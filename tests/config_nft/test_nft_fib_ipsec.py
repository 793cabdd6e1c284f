"""fib and IPsec matches in the nft front end: flowpath's JSON is what nft itself accepts, and a few forms.

Linux: nftables src/fib.c, src/xfrm.c, src/meta.c (`meta secpath` is `meta ipsec`), src/rt.c and their
JSON in src/json.c / src/parser_json.c. The corpus (tests/data/nft/fib_ipsec.nft and invalid/fib_*,
invalid/ipsec_*) compares listings, JSON and errors with nft 1.0.6; this adds JSON in the other direction.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from flowpath.config.nft import load_ruleset, parse_ruleset

DATA = Path(__file__).resolve().parents[1] / "data" / "nft"


def _nft(ns: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, "nft", *args], input=stdin, capture_output=True, text=True,
                          check=False)  # fmt: skip


@pytest.mark.root
def test_live_nft_loads_flowpaths_json_and_lists_the_same():
    """`nft -j -f` takes flowpath's JSON of fib_ipsec.nft and lists exactly flowpath's listing."""
    if os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("ip") is None:
        pytest.skip("needs root, ip and nft")
    rs = load_ruleset(DATA / "fib_ipsec.nft")
    ns = f"fpfib_{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        res = _nft(ns, "-j", "-f", "-", stdin=json.dumps(rs.to_json()))
        assert res.returncode == 0, res.stderr
        assert _nft(ns, "list", "ruleset").stdout == rs.list()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


@pytest.mark.parametrize(
    ("rule", "listed"),
    [
        ("fib saddr . iif oif eq 0 drop", "fib saddr . iif oif 0 drop"),
        ("fib iif . mark . saddr oif ne 0", "fib saddr . mark . iif oif != 0"),  # flags in bit order
        ("fib saddr . saddr oif missing", "fib saddr oif missing"),
        ("meta secpath exists", "meta ipsec exists"),
        ("ipsec in spnum 0 spi 0x10", "ipsec in spi 16"),
        ("ipsec in spnum 2 ip saddr 10.0.0.0/8", "ipsec in spnum 2 ip saddr 10.0.0.0/8"),
    ],
)
def test_forms_list_as_nft_lists_them(rule, listed):
    """Each pair checked with nft 1.0.6 on Linux 6.18 (`nft -f`, then `nft list ruleset`)."""
    text = f"table ip t {{\n\tchain c {{\n\t\ttype filter hook prerouting priority filter; policy accept;\n\t\t{rule}\n\t}}\n}}\n"
    out = parse_ruleset(text).list()
    assert out.splitlines()[3].strip() == listed
    assert parse_ruleset(out).list() == out
