"""Shared test helpers: run packets through a gateway via the public API and dissect the output with Scapy."""

from __future__ import annotations

from pathlib import Path

from scapy.all import Ether, wrpcap

from flowpath.config.ipbatch import parse_network
from flowpath.config.nft import parse_ruleset
from flowpath.replay import replay

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GW_LAN, GW_WAN = "02:00:00:00:01:01", "02:00:00:00:02:01"
H10, H11, UPSTREAM = "02:00:00:00:01:0a", "02:00:00:00:01:0b", "02:00:00:00:02:fe"
WAN_IP = "203.0.113.1"


def example_net():
    return parse_network((EXAMPLES / "gateway.ip").read_text(), str(EXAMPLES / "gateway.ip"))


def example_rules():
    return parse_ruleset((EXAMPLES / "gateway.nft").read_text(), str(EXAMPLES / "gateway.nft"))


def run(tmp_path: Path, packets: list[tuple[str, object]], net=None, rules=None, **kw):
    """Replay [(ifname, scapy_pkt), ...] (timestamps from pkt.time or 1 ms apart); return
    ({ifname: [Ether, ...]}, stats dict, ReplayResult)."""
    net = net if net is not None else example_net()
    rules = rules if rules is not None else example_rules()
    per_if: dict[str, list] = {}
    t = 1_700_000_000.0
    for name, pkt in packets:
        t += 0.001
        if not getattr(pkt, "_fp_time_set", False):
            pkt.time = t
        per_if.setdefault(name, []).append(pkt)
    inputs = []
    for name, pkts in per_if.items():
        p = tmp_path / f"in-{name}.pcap"
        wrpcap(str(p), pkts)
        inputs.append((name, p))
    out = tmp_path / "out"
    res = replay(net, rules, inputs, out, **kw)
    frames = {}
    for name, path in res.outputs.items():
        from flowpath.ports.pcap import read_capture

        frames[name] = [Ether(r.data) for r in read_capture(path)]
    return frames, res.stats, res
