"""IPIP flows offloaded end to end (examples/ipip with the cover letter's flowtable), through `replay`:
the flowtable decapsulates and encapsulates what the classic path's tunnel device would, and an outer
header from anyone but the tunnel's remote never reaches the entry.

Linux 6.19: nft_flow_offload.c (the tunnel route, DEV_PATH_TUN), nf_flow_table_ip.c (the hook).
"""

from __future__ import annotations

from pathlib import Path

from scapy.all import IP, UDP, Ether, Raw, wrpcap

from flowpath.config.ipbatch import parse_network
from flowpath.config.nft import parse_ruleset
from flowpath.ports.pcap import read_capture
from flowpath.replay import replay

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ipip"
GW_LAN, GW_WAN, H1, PEER = "02:00:00:00:01:01", "02:00:00:00:02:01", "02:00:00:00:01:05", "02:00:00:00:02:02"


def _run(tmp_path: Path, packets, flowtable: bool):
    per_if: dict[str, list] = {}
    for k, (name, pkt) in enumerate(packets):
        pkt.time = 1_700_000_000 + k / 1000
        per_if.setdefault(name, []).append(pkt)
    inputs = []
    for name, pkts in per_if.items():
        wrpcap(str(tmp_path / f"in-{name}.pcap"), pkts)
        inputs.append((name, tmp_path / f"in-{name}.pcap"))
    net = parse_network((EXAMPLE / "gw.ip").read_text(), "gw.ip")
    rules = parse_ruleset((EXAMPLE / "gw-flowtable.nft").read_text(), "gw-flowtable.nft")
    out_dir = tmp_path / ("ft" if flowtable else "classic")
    res = replay(net, rules, inputs, out_dir, flowtable=flowtable)
    return {n: [r.data for r in read_capture(p)] for n, p in res.outputs.items()}, res.stats


def _up(k):
    return Ether(src=H1, dst=GW_LAN) / IP(src="10.1.0.5", dst="10.2.0.7", ttl=30, tos=0x12) / UDP(
        sport=1000, dport=2000) / Raw(b"u%d" % k)  # fmt: skip


def _down(k, outer_src="198.51.100.2"):
    return Ether(src=PEER, dst=GW_WAN) / IP(src=outer_src, dst="198.51.100.1", tos=1) / IP(
        src="10.2.0.7", dst="10.1.0.5", ttl=20, tos=0x22) / UDP(sport=2000, dport=1000) / Raw(b"d%d" % k)  # fmt: skip


def test_offloaded_tunnel_flow_is_forwarded_by_the_flowtable_as_by_the_tunnel_device(tmp_path):
    """Both directions of a UDP flow through tun0: after the first exchange the flowtable carries them,
    and each frame is the one the classic path (ipip_rcv, ip_tunnel_xmit) emits: outer header
    stripped, inner TTL - 1 and ECN as RFC 6040 on the way in; on the way out the outer header with
    the tunnel's addresses, inherited TTL and TOS (ECN encapsulated), DF (pmtudisc) and id 0."""
    pkts = []
    for k in range(8):
        pkts += [("lan0", _up(k)), ("wan0", _down(k))]
    fast, fs = _run(tmp_path, pkts, True)
    classic, cs = _run(tmp_path, pkts, False)
    assert fast == classic and len(fast["wan0"]) == len(fast["lan0"]) == 8
    assert fs["fastpath_packets"] >= 12 and cs["fastpath_packets"] == 0
    out = Ether(fast["wan0"][-1])
    outer, inner = out.getlayer(IP, 1), out.getlayer(IP, 2)
    assert (outer.src, outer.dst, outer.proto, outer.ttl, outer.tos, int(outer.flags), outer.id) == (
        "198.51.100.1",
        "198.51.100.2",
        4,
        29,
        0x12,
        2,
        0,
    )
    assert (inner.ttl, inner.tos, out.dst) == (29, 0x12, PEER)
    back = Ether(fast["lan0"][-1])
    assert IP not in back[IP].payload and (back[IP].ttl, back[IP].tos, back.dst) == (19, 0x21, H1)


def test_forged_outer_source_never_rides_the_entry(tmp_path):
    """A packet with the offloaded inner tuple inside an outer header from a stranger misses the entry
    (its key holds the remote's address): the classic path finds no tunnel for it and drops it, with
    the flowtable as without; nothing reaches the LAN."""
    pkts = [("lan0", _up(0)), ("wan0", _down(0)), ("lan0", _up(1)), ("wan0", _down(1))]
    pkts += [("wan0", _down(k, outer_src="198.51.100.9")) for k in range(2, 6)]
    fast, fs = _run(tmp_path, pkts, True)
    classic, cs = _run(tmp_path, pkts, False)
    assert fast == classic and len(fast["lan0"]) == 2
    assert fs["drops"].get("ip_tunnel_nomatch") == cs["drops"].get("ip_tunnel_nomatch") == 4
