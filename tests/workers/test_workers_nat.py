"""NAT with several workers (netfilter/nat.py › nf_nat_steers_here): masquerade keeps a client's port,
as Linux, and a port it must change (a clash) is one whose replies steer to the connection's worker."""

from __future__ import annotations

from scapy.all import IP, UDP, Ether, raw

from flowpath.bench.scaling import _relay
from flowpath.bench.setup import LAN_IF, NET, RULES
from flowpath.config.ipbatch import parse_network
from flowpath.config.nft import parse_ruleset
from flowpath.packet.steer import flow_steer_tuple, port_word
from flowpath.workers import Workers

GW_LAN, CLIENT_MAC = "02:00:00:00:01:01", "02:00:00:00:01:02"
SERVER, WAN = "198.51.100.7", "203.0.113.1"


def _cpu(sport: int, dport: int, n: int) -> int:
    return flow_steer_tuple(4, 17, 0, 0, port_word(17, sport, dport, 0), n)


def test_masquerade_keeps_ports_and_steers_the_ports_it_must_change():
    n = 2
    ws = Workers(parse_network(NET + "neigh add 10.0.0.3 lladdr 02:00:00:00:01:03 dev lan0\n", "<net>"),
                 parse_ruleset(RULES, "<rules>"), n=n)  # fmt: skip
    frames = []
    for k in range(40):  # two clients, the same source ports: the second one's clash
        for client in ("10.0.0.2", "10.0.0.3"):
            p = Ether(src=CLIENT_MAC, dst=GW_LAN) / IP(src=client, dst=SERVER) / UDP(sport=40000 + k, dport=53)
            frames.append(raw(p / b"q"))
    out = [Ether(f) for ifx, f in _relay(ws, frames, LAN_IF)]
    assert len(out) == 80 and all(p[IP].src == WAN for p in out)
    ports = [p[UDP].sport for p in out]
    assert len(set(ports)) == 80  # every connection has its own mapping
    kept = [sp for sp in ports if 40000 <= sp < 40040]
    changed = [sp for sp in ports if not 40000 <= sp < 40040]
    assert sorted(kept) == list(range(40000, 40040)) and len(changed) == 40  # Linux keeps the first's
    # each changed port keeps its connection's worker: the worker its client's own port steers to
    assert sorted(_cpu(sp, 53, n) for sp in changed) == sorted(_cpu(40000 + k, 53, n) for k in range(40))
    # and the replies find their connections: each client gets its own port back
    wan = ws.net.link_by_name("wan0").ifindex
    replies = [raw(Ether(src="02:00:00:00:02:fe", dst="02:00:00:00:02:01") / IP(src=SERVER, dst=WAN)
                   / UDP(sport=53, dport=sp) / b"a") for sp in ports]  # fmt: skip
    back = [Ether(f) for ifx, f in _relay(ws, replies, wan) if ifx == LAN_IF]
    assert sorted((p[IP].dst, p[UDP].dport) for p in back) == sorted(
        (c, 40000 + k) for k in range(40) for c in ("10.0.0.2", "10.0.0.3"))
    ws.close()
