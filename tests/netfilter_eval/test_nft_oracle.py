"""Oracles from the real nft and kernel in a private network namespace (root only).

- the JSON fixtures are exactly what `nft -j list ruleset` prints for the .nft text beside them;
- the kernel and the evaluator agree on which rulesets load (jump depth, loops, NAT outside nat chains);
- the flowtable fixture is valid libnftables JSON (nft parses it; only this kernel lacks flowtables).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import HERE, runtime  # noqa: E402

from flowpath.errors import ConfigError  # noqa: E402
from flowpath.netfilter.nf_tables import NftRuntime  # noqa: E402

pytestmark = pytest.mark.root


def _listed(ns, text: str) -> dict:
    r = ns.nft("-f", "-", stdin=text)
    assert r.returncode == 0, r.stderr
    out = ns.nft("-j", "list", "ruleset")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("name", ["gateway", "matches", "maps"])
def test_fixture_is_what_nft_prints(netns, name):
    listed = _listed(netns, (HERE / f"{name}.nft").read_text())
    assert listed == json.loads((HERE / f"{name}.json").read_text())
    NftRuntime.from_json(listed)  # and it builds


def _ours_loads(items: list) -> bool:
    try:
        runtime(items)
    except ConfigError:
        return False
    return True


def _depth_text(n: int) -> str:
    lines = ["table ip t {", " chain base { type filter hook forward priority 0;", " jump c1", " }"]
    for i in range(1, n + 1):
        lines += [f" chain c{i} {{", f" jump c{i + 1}" if i < n else " accept", " }"]
    return "\n".join(lines + ["}", ""])


def _depth_json(n: int) -> list:
    items = [{"table": {"family": "ip", "name": "t"}},
             {"chain": {"family": "ip", "table": "t", "name": "base", "type": "filter", "hook": "forward",
                        "prio": 0, "policy": "accept"}},
             {"rule": {"family": "ip", "table": "t", "chain": "base", "expr": [{"jump": {"target": "c1"}}]}}]  # fmt: skip
    for i in range(1, n + 1):
        items.append({"chain": {"family": "ip", "table": "t", "name": f"c{i}"}})
        stmt = {"jump": {"target": f"c{i + 1}"}} if i < n else {"accept": None}
        items.append({"rule": {"family": "ip", "table": "t", "chain": f"c{i}", "expr": [stmt]}})
    return items


@pytest.mark.parametrize("n", [15, 16])
def test_jump_depth_limit_agrees_with_kernel(netns, n):
    kernel_ok = netns.nft("-f", "-", stdin=_depth_text(n)).returncode == 0
    assert kernel_ok == (n == 15)
    assert _ours_loads(_depth_json(n)) == kernel_ok
    if kernel_ok:  # the JSON we wrote by hand is the one nft prints
        listed = json.loads(netns.nft("-j", "list", "ruleset").stdout)["nftables"][1:]  # after metainfo
        strip = [
            {k: {f: v for f, v in o.items() if f != "handle"} for k, o in item.items()} for item in listed
        ]
        assert sorted(map(json.dumps, strip)) == sorted(
            map(json.dumps, _depth_json(n))
        )  # nft lists chains first


RULESETS_REFUSED = {
    "loop": (
        "table ip t {\n chain base { type filter hook forward priority 0;\n jump a\n }\n"
        " chain a {\n goto b\n }\n chain b {\n jump a\n }\n}\n",
        [{"table": {"family": "ip", "name": "t"}},
         {"chain": {"family": "ip", "table": "t", "name": "base", "type": "filter", "hook": "forward", "prio": 0}},
         {"chain": {"family": "ip", "table": "t", "name": "a"}}, {"chain": {"family": "ip", "table": "t", "name": "b"}},
         {"rule": {"family": "ip", "table": "t", "chain": "base", "expr": [{"jump": {"target": "a"}}]}},
         {"rule": {"family": "ip", "table": "t", "chain": "a", "expr": [{"goto": {"target": "b"}}]}},
         {"rule": {"family": "ip", "table": "t", "chain": "b", "expr": [{"jump": {"target": "a"}}]}}],
    ),
    "snat_in_filter_chain": (
        "table ip t {\n chain f { type filter hook postrouting priority 0;\n snat to 1.2.3.4\n }\n}\n",
        [{"table": {"family": "ip", "name": "t"}},
         {"chain": {"family": "ip", "table": "t", "name": "f", "type": "filter", "hook": "postrouting", "prio": 0}},
         {"rule": {"family": "ip", "table": "t", "chain": "f", "expr": [{"snat": {"addr": "1.2.3.4"}}]}}],
    ),
    "dnat_behind_jump_from_postrouting": (
        "table ip t {\n chain p { type nat hook postrouting priority 100;\n jump x\n }\n"
        " chain x {\n dnat to 1.2.3.4\n }\n}\n",
        [{"table": {"family": "ip", "name": "t"}},
         {"chain": {"family": "ip", "table": "t", "name": "p", "type": "nat", "hook": "postrouting", "prio": 100}},
         {"chain": {"family": "ip", "table": "t", "name": "x"}},
         {"rule": {"family": "ip", "table": "t", "chain": "p", "expr": [{"jump": {"target": "x"}}]}},
         {"rule": {"family": "ip", "table": "t", "chain": "x", "expr": [{"dnat": {"addr": "1.2.3.4"}}]}}],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(RULESETS_REFUSED))
def test_refused_by_kernel_and_by_us(netns, name):
    text, items = RULESETS_REFUSED[name]
    assert netns.nft("-f", "-", stdin=text).returncode != 0
    assert not _ours_loads(items)


def test_flowtable_fixture_parses_in_nft(netns):
    """nft accepts the hand-written JSON and the .nft text alike; only the kernel refuses the flowtable."""
    for args, stdin in ((("-j", "-f", "-"), (HERE / "flowtable.json").read_text()),
                        (("-f", "-"), (HERE / "flowtable.nft").read_text())):  # fmt: skip
        r = netns.nft(*args, stdin=stdin)
        errors = [ln for ln in r.stderr.splitlines() if "Error:" in ln]
        if r.returncode == 0:
            continue  # a kernel with flowtable support and these devices
        assert errors and all("Could not process rule" in ln for ln in errors), r.stderr
