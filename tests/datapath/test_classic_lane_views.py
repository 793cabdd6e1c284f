"""The compiled classic lane keeps its arguments from poll to poll (classic_lane_views.py ›
ClassicLane.run's stamp): a change to a table it views between two polls must reach the next one.
Here a route replaced and a new neighbour (the FIB's and the neighbour table's views), and the
conntrack table grown past its first rows (its views), each followed by the lane's next packets."""

from __future__ import annotations

from pathlib import Path

from scapy.all import IP, UDP, Ether, raw

from flowpath.config.ipbatch import parse_network, read_commands, run_command
from flowpath.config.nft import parse_ruleset
from flowpath.datapath import Worker
from flowpath.packet.batch import PacketBatch

NET = (Path(__file__).resolve().parents[2] / "examples" / "gateway.ip").read_text()
RULES = """table inet filter {
  chain forward { type filter hook forward priority filter; policy accept; }
}
"""
LAN_MAC, GW_LAN_MAC = "02:00:00:00:01:0a", "02:00:00:00:01:01"


def _frame(sport: int) -> bytes:
    return raw(Ether(src=LAN_MAC, dst=GW_LAN_MAC) / IP(src="192.168.1.10", dst="198.51.100.7", ttl=64)
               / UDP(sport=sport, dport=53) / b"q")  # fmt: skip


def _poll(w: Worker, sports, now_ns: int) -> list[bytes]:
    lan = w.net.dev.link_by_name("lan0").ifindex
    b = PacketBatch(max(len(sports), 1))
    for sp in sports:
        b.append(_frame(sp), lan, now_ns)
    return [f for _, f, _ in w.poll(b).frames()]


def _ip(w: Worker, line: str) -> None:
    for tokens in read_commands(line + "\n"):
        run_command(w.net.dev, "<runtime>", tokens)


def test_the_lane_follows_a_route_and_a_neighbour_changed_between_polls():
    w = Worker(parse_network(NET, "<net>"), parse_ruleset(RULES, "<rules>"), flowtable=False)
    out = _poll(w, [1000], 10**9)
    assert [Ether(f).dst for f in out] == ["02:00:00:00:02:fe"]
    lane = w.stats.lane_packets
    assert lane == 1
    _ip(w, "neigh add 203.0.113.253 lladdr 02:00:00:00:02:fd dev wan0")
    _ip(w, "route replace 198.51.100.0/24 via 203.0.113.253 dev wan0")
    out = _poll(w, [1000], 2 * 10**9)
    assert [Ether(f).dst for f in out] == ["02:00:00:00:02:fd"]
    assert w.stats.lane_packets == lane + 1  # the lane took it, with the new route and neighbour


def test_the_lane_follows_the_conntrack_table_as_it_grows():
    w = Worker(parse_network(NET, "<net>"), parse_ruleset(RULES, "<rules>"), flowtable=False)
    rows = w.conntrack.capacity
    sent = 0
    for k in range(0, 3 * rows, 256):  # new connections, 256 a poll, past the first rows twice
        out = _poll(w, range(1024 + k, 1024 + k + 256), 10**9 + k)
        sent += len(out)
    assert sent == 3 * rows and w.conntrack.capacity >= 3 * rows
    assert w.stats.lane_packets == 3 * rows and len(w.conntrack) == 3 * rows
    out = _poll(w, range(1024, 1024 + 256), 5 * 10**9)  # the first connections again, found
    assert len(out) == 256 and w.conntrack.stat["found"] >= 256
