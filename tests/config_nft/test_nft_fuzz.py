"""Random input never escapes as anything but ConfigError (nft reports, it does not crash).

Linux: nftables src/erec.c › every error becomes an error record with a location.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowpath.config.nft import parse_ruleset, ruleset_from_json
from flowpath.errors import ConfigError

DATA = Path(__file__).resolve().parents[1] / "data" / "nft"
CORPUS_TEXT = [p.read_text() for p in sorted(DATA.glob("*.nft"))]
WORDS = (
    "table ip ip6 inet netdev chain set flowtable type filter nat hook input forward output prerouting "
    "postrouting ingress priority policy accept drop jump goto return continue counter log prefix level "
    "reject with icmp icmpx icmpv6 tcp udp th reset meta ct state status mark direction l4proto nfproto "
    "iifname oifname iif oif saddr daddr dport sport flags protocol nexthdr snat dnat masquerade redirect to "
    "random persistent fully-random notrack flow add offload define include flush ruleset elements interval "
    "comment devices device established related new invalid syn ack ssh http 22 0x10 1024-65535 10.0.0.0/8 "
    'fe80::1 ::1 192.0.2.1:80 [2001:db8::1]:80 $x @s { } ; , / - + == != < > <= >= & | ( ) : = " \n \t'
).split(" ")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(WORDS), max_size=40).map(" ".join))
def test_token_soup_raises_only_config_error(text):
    try:
        parse_ruleset(text, "junk.nft")
    except ConfigError as e:
        assert e.line >= 1 and e.col >= 1
        str(e)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CORPUS_TEXT), st.integers(0, 10**6), st.integers(0, 12), st.text(max_size=6))
def test_mutated_corpus_raises_only_config_error(text, pos, cut, insert):
    """Cutting and splicing real rulesets reaches deep parser and evaluator states."""
    i = pos % (len(text) + 1)
    mutated = text[:i] + insert + text[i + cut :]
    try:
        rs = parse_ruleset(mutated, "mutated.nft")
    except ConfigError:
        return
    rs.list()
    ruleset_from_json(json.loads(json.dumps(rs.to_json())))


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.sampled_from(
    ["ip", "inet", "t", "c", "tcp", "dport", "saddr", "==", "in", "@s", "10.0.0.1", "syn", "filter",
     "input", "accept", "mark", "state", "l4proto", "payload", "meta", "match"]))  # fmt: skip
json_any = st.recursive(
    json_leaf,
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(st.sampled_from(
        ["nftables", "table", "chain", "rule", "set", "family", "name", "table", "expr", "match", "left",
         "right", "op", "payload", "protocol", "field", "meta", "key", "type", "hook", "prio", "elem",
         "accept", "jump", "target", "set", "range", "prefix", "addr", "len", "counter"]), kids, max_size=4)),
    max_leaves=25,
)  # fmt: skip


# what an error message must not show: Python's own words for a value of the wrong shape, or a repr
PYTHON_INTERNALS = re.compile(r"__format__|object has no attribute|not subscriptable|unhashable|indices must|"
                              r"NoneType|not iterable|unpack|\{'\w+': |<class")  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(json_any)
def test_random_json_raises_only_config_error(obj):
    for candidate in (obj, {"nftables": obj if isinstance(obj, list) else [obj]}):
        try:
            ruleset_from_json(candidate, "junk.json").list()
        except ConfigError as e:
            assert not PYTHON_INTERNALS.search(e.msg), e.msg


CORPUS_JSON = [json.loads(p.read_text()) for p in sorted(DATA.glob("*.nft.json"))]


def _nodes(obj, path=()):
    yield path
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _nodes(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _nodes(v, (*path, i))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(CORPUS_JSON), st.integers(0, 10**6), json_any)
def test_mutated_corpus_json_raises_only_config_error(obj, pick, value):
    """One value anywhere in nft's own JSON replaced by junk: loaded or refused, never a crash."""
    obj = json.loads(json.dumps(obj))
    paths = list(_nodes(obj))[1:]
    path = paths[pick % len(paths)]
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    parent[path[-1]] = value
    try:
        rs = ruleset_from_json(obj, "mutated.json")
    except ConfigError as e:
        assert not PYTHON_INTERNALS.search(e.msg), e.msg
        return
    rs.list()
    rs.to_json()
