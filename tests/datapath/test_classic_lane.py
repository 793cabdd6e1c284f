"""The compiled classic lane against the Python classic path it stands for (flowpath/inet/
classic_lane.py): with and without it, every interface carries the same bytes in the same order,
the counters give every packet the same disposition, and conntrack ends with the same entries.
The lane must also really carry the traffic: most of an established flow's packets."""

from __future__ import annotations

import pytest
from gateway import EXAMPLES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import wrpcap
from tracegen import mixed_trace

from flowpath.config.ipbatch import load_network
from flowpath.config.nft import load_ruleset
from flowpath.ports.pcap import read_capture
from flowpath.replay import replay

DNAT_RULES = EXAMPLES.parent / "tests" / "data" / "gateway" / "dnat.nft"
ENCAP_NET = EXAMPLES.parent / "tests" / "data" / "gateway" / "encap.ip"
ENCAP_RULES = EXAMPLES.parent / "tests" / "data" / "gateway" / "encap.nft"
LANE_RULES = EXAMPLES.parent / "tests" / "data" / "gateway" / "lane.nft"
_LANE_ONLY = ("classic_lane", "slowpath_packets")  # what the lane changes in the counters: nothing else


def _run(d, tag, lane: bool, net_file=EXAMPLES / "gateway.ip", rules_file=DNAT_RULES, **kw):
    net, rules = load_network(net_file), load_ruleset(rules_file)
    res = replay(net, rules, [("lan0", d / "lan.pcap"), ("wan0", d / "wan.pcap")], d / tag, classic_lane=lane, **kw)
    frames = {name: [r.data for r in read_capture(p)] for name, p in res.outputs.items()}
    w = res.worker
    return frames, res.stats, (w.conntrack.listing(w.now_ns, acct=True), w.net.nft.rule_counters())


def _trace(d, **kw):
    lan, wan = mixed_trace(**kw)
    wrpcap(str(d / "lan.pcap"), lan)
    wrpcap(str(d / "wan.pcap"), wan)


def _same(d, tag, **kw):
    py, ps, pl = _run(d, f"py{tag}", False, **kw)
    cl, cs, cll = _run(d, f"lane{tag}", True, **kw)
    assert set(py) == set(cl)
    for name in py:
        assert len(py[name]) == len(cl[name]), name
        for k, (a, b) in enumerate(zip(py[name], cl[name], strict=True)):
            assert a == b, f"{name} frame {k}"
    assert {k: v for k, v in ps.items() if k not in _LANE_ONLY} == {k: v for k, v in cs.items() if k not in _LANE_ONLY}
    assert pl == cll  # conntrack entries with their counters, and the rules' counters
    assert ps["classic_lane"]["packets"] == 0
    return cs


@pytest.mark.parametrize("batch_size", [1, 16, 256])
def test_lane_emits_what_the_python_path_emits(tmp_path, batch_size):
    _trace(tmp_path, seed=7)
    cs = _same(tmp_path, batch_size, flowtable=False, batch_size=batch_size)
    lane = cs["classic_lane"]
    assert lane["packets"] > cs["rx_packets"] // 2, lane  # the lane carried most of the traffic
    assert lane["punted"].get("no_ct", 0) > 0  # new connections went to Python


@pytest.mark.parametrize("flowtable", [False, True])
def test_lane_counts_and_drops_as_the_rules_say(tmp_path, flowtable):
    _trace(tmp_path, seed=5)
    cs = _same(tmp_path, "rules", flowtable=flowtable, batch_size=64, rules_file=LANE_RULES)
    _, _, (_, counters) = _run(tmp_path, "again", True, flowtable=flowtable, batch_size=64, rules_file=LANE_RULES)
    assert sum(c.packets for c in counters) > cs["rx_packets"]  # the rules did count
    assert cs["drops"].get("netfilter_drop", 0) > 0
    assert cs["classic_lane"]["packets"] > 0


def test_lane_with_the_flowtable(tmp_path):
    _trace(tmp_path, seed=3)
    cs = _same(tmp_path, "ft", flowtable=True, batch_size=64)
    assert cs["fastpath_packets"] > 0


def test_lane_with_vlans_and_tunnels(tmp_path):
    _trace(tmp_path, seed=11, n_udp=10, n_tcp=5, rounds=8, encap=True)
    _same(tmp_path, "encap", flowtable=False, batch_size=32, net_file=ENCAP_NET, rules_file=ENCAP_RULES)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), n_udp=st.integers(1, 12), n_tcp=st.integers(0, 6),
       batch=st.sampled_from([1, 7, 64]), flowtable=st.booleans())  # fmt: skip
def test_lane_property(tmp_path_factory, seed, n_udp, n_tcp, batch, flowtable):
    d = tmp_path_factory.mktemp("lane")
    _trace(d, seed=seed, n_udp=n_udp, n_tcp=n_tcp, rounds=4)
    _same(d, "p", flowtable=flowtable, batch_size=batch)
