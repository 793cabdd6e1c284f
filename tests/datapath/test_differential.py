"""Two paths, one truth (DESIGN.md §1): with and without the flowtable, every interface carries the same
bytes in the same order, for mixed traces of NAT'd TCP/UDP flows with handshakes, FIN/RST, TTL edges,
oversize packets and idle gaps longer than the flowtable timeout.
"""

from __future__ import annotations

import pytest
from gateway import EXAMPLES
from scapy.all import wrpcap
from tracegen import mixed_trace

from flowpath.config.ipbatch import load_network
from flowpath.config.nft import load_ruleset
from flowpath.ports.pcap import read_capture
from flowpath.replay import replay

DNAT_RULES = EXAMPLES.parent / "tests" / "data" / "gateway" / "dnat.nft"


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    d = tmp_path_factory.mktemp("trace")
    lan, wan = mixed_trace(seed=7)
    wrpcap(str(d / "lan.pcap"), lan)
    wrpcap(str(d / "wan.pcap"), wan)
    return d


def _run(d, tag: str, **kw):
    net, rules = load_network(EXAMPLES / "gateway.ip"), load_ruleset(DNAT_RULES)
    out = d / tag
    res = replay(net, rules, [("lan0", d / "lan.pcap"), ("wan0", d / "wan.pcap")], out, **kw)
    frames = {name: [r.data for r in read_capture(p)] for name, p in res.outputs.items()}
    return frames, res.stats


@pytest.mark.parametrize("batch_size", [16, 256])
def test_flowtable_and_classic_emit_identical_bytes(trace, batch_size):
    classic, cs = _run(trace, f"classic{batch_size}", flowtable=False, batch_size=batch_size)
    fast, fs = _run(trace, f"fast{batch_size}", flowtable=True, batch_size=batch_size)
    nobulk, ns = _run(trace, f"nobulk{batch_size}", flowtable=True, bulk=False, batch_size=batch_size)
    for name in ("lan0", "wan0"):
        assert len(fast[name]) == len(classic[name]) > 100
        assert fast[name] == classic[name], name
        assert nobulk[name] == classic[name], name
    assert fs["drops"] == cs["drops"] and fs["tx_packets"] == cs["tx_packets"]
    assert fs["fastpath_packets"] > fs["rx_packets"] // 3  # the flowtable really carried the traffic
    assert fs["flows_offloaded"] >= 40 and fs["flows_expired"] > 0  # the idle gap expired flows
    assert cs["fastpath_packets"] == 0 and cs["flows_offloaded"] == 0
    assert fs["tx_bursts"] < ns["tx_bursts"]  # bulk transmit groups packets
    for s in (cs, fs, ns):  # every received packet has exactly one final disposition
        assert s["rx_packets"] == s["forwarded_packets"] + s["dropped_packets"] + s["local_packets"] + s["held_packets"]
        assert s["tx_packets"] >= s["forwarded_packets"] + s["generated_packets"] > 0  # frames: fragments count
    assert fs["forwarded_packets"] == cs["forwarded_packets"] and fs["generated_packets"] == cs["generated_packets"]


def test_offloaded_connection_shows_offload_in_conntrack_listing(trace):
    net, rules = load_network(EXAMPLES / "gateway.ip"), load_ruleset(DNAT_RULES)
    lan, wan = mixed_trace(seed=3, n_udp=4, n_tcp=2, rounds=3)
    lan, wan = [p for p in lan if p.time < 1_700_000_040], [p for p in wan if p.time < 1_700_000_040]
    wrpcap(str(trace / "l3.pcap"), lan)
    wrpcap(str(trace / "w3.pcap"), wan)
    res = replay(
        net, rules, [("lan0", trace / "l3.pcap"), ("wan0", trace / "w3.pcap")], trace / "o3", batch_size=8
    )
    listing = res.worker.conntrack.listing(res.worker.now_ns)
    assert "[OFFLOAD]" in listing
    ft = res.worker.flowtable_listing()
    assert "flowtable ft" in ft and "lan0" in ft
