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
ENCAP_NET = EXAMPLES.parent / "tests" / "data" / "gateway" / "encap.ip"
ENCAP_RULES = EXAMPLES.parent / "tests" / "data" / "gateway" / "encap.nft"


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    d = tmp_path_factory.mktemp("trace")
    lan, wan = mixed_trace(seed=7)
    wrpcap(str(d / "lan.pcap"), lan)
    wrpcap(str(d / "wan.pcap"), wan)
    return d


def _run(d, tag: str, net_file=EXAMPLES / "gateway.ip", rules_file=DNAT_RULES, **kw):
    net, rules = load_network(net_file), load_ruleset(rules_file)
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


@pytest.fixture(scope="module")
def encap_trace(tmp_path_factory):
    d = tmp_path_factory.mktemp("encap")
    lan, wan = mixed_trace(seed=11, n_udp=10, n_tcp=5, rounds=8, encap=True)
    wrpcap(str(d / "lan.pcap"), lan)
    wrpcap(str(d / "wan.pcap"), wan)
    return d


@pytest.mark.parametrize("batch_size", [32])
def test_vlan_qinq_and_ipip_flows_emit_identical_bytes(encap_trace, batch_size):
    """The same promise with 802.1Q, QinQ (802.1ad + 802.1Q) and IPIP flows mixed in: tags popped and
    pushed, outer headers stripped and built, by the flowtable exactly as the classic path's VLAN
    devices and ip_tunnel_xmit do (Linux: nf_flow_encap_pop/push, nf_flow_tunnel_ipip_push)."""
    files = {"net_file": ENCAP_NET, "rules_file": ENCAP_RULES, "batch_size": batch_size}
    classic, cs = _run(encap_trace, "classic", flowtable=False, **files)
    fast, fs = _run(encap_trace, "fast", flowtable=True, **files)
    nobulk, _ = _run(encap_trace, "nobulk", flowtable=True, bulk=False, **files)
    for name in ("lan0", "wan0"):
        assert len(fast[name]) == len(classic[name]) > 100
        assert fast[name] == classic[name], name
        assert nobulk[name] == classic[name], name
    assert fs["drops"] == cs["drops"] and fs["tx_packets"] == cs["tx_packets"]
    assert fs["fastpath_packets"] > fs["rx_packets"] // 3
    tagged = [f for f in fast["lan0"] if f[12:14] in (b"\x81\x00", b"\x88\xa8")]
    qinq = [f for f in tagged if f[12:14] == b"\x88\xa8" and f[16:18] == b"\x81\x00"]
    ipip = [f for f in fast["wan0"] if f[12:14] == b"\x08\x00" and f[23] == 4]
    assert len(tagged) > 50 and len(qinq) > 20 and len(ipip) > 20  # the encapsulations were exercised
