"""`replay --workers N` (flowpath/workers.py): the packets steered over N workers leave as they leave one
worker - the same frames on every interface (as a multiset), each flow's in the same order - and the
counters still give every received packet one final disposition. Mixed traces of NAT'd TCP/UDP flows,
DNAT port forwards (whose two directions may steer to different workers and then stay on the shared
classic path), IPv6, TTL edges, oversize packets and idle gaps; hypothesis draws the mix.

Where NAT must change a source port (the masqueraded port clashes), N workers choose among the ports
that keep the connection's worker, so the port may differ from one worker's choice (README, "Workers"):
those frames are compared with the port left out, and the same flows must have needed it. The IP ID
of what the gateway originates (ICMP errors) follows the order the workers' classic paths run in, so
it is left out too.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
from gateway import EXAMPLES
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scapy.all import ICMP, IP, TCP, UDP, Ether, IPv6, wrpcap
from tracegen import mixed_trace

from flowpath.config.ipbatch import load_network
from flowpath.config.nft import load_ruleset
from flowpath.ports.pcap import read_capture
from flowpath.replay import replay

DNAT_RULES = EXAMPLES.parent / "tests" / "data" / "gateway" / "dnat.nft"
ENCAP_NET = EXAMPLES.parent / "tests" / "data" / "gateway" / "encap.ip"
ENCAP_RULES = EXAMPLES.parent / "tests" / "data" / "gateway" / "encap.nft"
KEYS = ("rx_packets", "forwarded_packets", "dropped_packets", "local_packets", "held_packets", "tx_packets",
        "generated_packets", "drops")  # fmt: skip


def _flow(frame: bytes):
    """A frame's flow on the wire: (addresses, protocol, ports) or the frame itself for non-IP."""
    p = Ether(frame)
    ip = p[IP] if IP in p else p[IPv6] if IPv6 in p else None
    if ip is None:
        return ("other", frame)
    l4 = p[TCP] if TCP in p else p[UDP] if UDP in p else None
    ports = (l4.sport, l4.dport) if l4 is not None else ()
    return (ip.src, ip.dst, ip.proto if IP in p else ip.nh, *ports)


WAN_ADDR = "203.0.113.1"
GW_ADDRS = {WAN_ADDR, "192.168.1.1"}


def _lan_ports(d) -> set:
    """(dst, protocol, dport, sport) of every LAN input packet: a NATed frame whose source port is not
    among them had its port changed by NAT."""
    out = set()
    for r in read_capture(d / "lan.pcap"):
        p = Ether(r.data)
        l4 = p[TCP] if TCP in p else p[UDP] if UDP in p else None
        if IP in p and l4 is not None:
            out.add((p[IP].dst, p[IP].proto, l4.dport, l4.sport))
    return out


def _canon(frames: list[bytes], lan_ports: set) -> tuple[list[bytes], int]:
    """frames with the source port and L4 checksum zeroed where NAT changed the port; how many."""
    out, n = [], 0
    for f in frames:
        p = Ether(f)
        if IP in p and ICMP in p and p[IP].src in GW_ADDRS:
            p[IP].id, p[IP].chksum = 0, 0
            f = bytes(p)
        l4 = p[TCP] if TCP in p else p[UDP] if UDP in p else None
        if IP in p and l4 is not None and p[IP].src == WAN_ADDR:
            if (p[IP].dst, p[IP].proto, l4.dport, l4.sport) not in lan_ports:
                l4.sport, l4.chksum = 0, 0
                f, n = bytes(p), n + 1
        out.append(f)
    return out, n


def _run(d, tag: str, workers: int, batch_size: int = 64, net_file=EXAMPLES / "gateway.ip", rules_file=DNAT_RULES):
    net, rules = load_network(net_file), load_ruleset(rules_file)
    res = replay(net, rules, [("lan0", d / "lan.pcap"), ("wan0", d / "wan.pcap")], d / tag, workers=workers,
                 batch_size=batch_size)  # fmt: skip
    return {name: [r.data for r in read_capture(p)] for name, p in res.outputs.items()}, res.stats


def _same_forwarding(d, one, many, s1, sn) -> None:
    ports = _lan_ports(d)
    for name in ("lan0", "wan0"):
        (one[name], n1), (many[name], nn) = _canon(one[name], ports), _canon(many[name], ports)
        assert nn == n1, name  # the same frames had their port changed
        assert Counter(many[name]) == Counter(one[name]), name  # no frame lost, none duplicated
        per_flow_1, per_flow_n = defaultdict(list), defaultdict(list)
        for f in one[name]:
            per_flow_1[_flow(f)].append(f)
        for f in many[name]:
            per_flow_n[_flow(f)].append(f)
        assert per_flow_n == per_flow_1, name  # each flow's frames in the same order
    for k in KEYS:
        assert sn[k] == s1[k], k
    s = sn
    assert s["rx_packets"] == s["forwarded_packets"] + s["dropped_packets"] + s["local_packets"] + s["held_packets"]
    assert s["reasons"].get("rps_handoff", 0) == 0  # nothing left handed over


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    d = tmp_path_factory.mktemp("wtrace")
    lan, wan = mixed_trace(seed=11)
    wrpcap(str(d / "lan.pcap"), lan)
    wrpcap(str(d / "wan.pcap"), wan)
    return d


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_forward_what_one_worker_forwards(trace, workers):
    one, s1 = _run(trace, "w1", 1)
    many, sn = _run(trace, f"w{workers}", workers)
    assert len(one["lan0"]) > 100 and len(one["wan0"]) > 100
    _same_forwarding(trace, one, many, s1, sn)
    assert sn["fastpath_packets"] > sn["rx_packets"] // 4  # the workers' flowtables carried the traffic


def test_workers_replay_is_deterministic(trace):
    a, sa = _run(trace, "wa", 2)
    b, sb = _run(trace, "wb", 2)
    assert a == b and sa == sb


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), n_udp=st.integers(1, 12), n_tcp=st.integers(0, 6), rounds=st.integers(2, 6),
       batch=st.sampled_from([1, 7, 64]))  # fmt: skip
@example(seed=214, n_udp=10, n_tcp=6, rounds=6, batch=1)  # an offloaded entry refreshed by the classic path
def test_workers_lose_and_duplicate_nothing_in_any_mix(tmp_path_factory, seed, n_udp, n_tcp, rounds, batch):
    d = tmp_path_factory.mktemp("hmix")
    lan, wan = mixed_trace(seed=seed, n_udp=n_udp, n_tcp=n_tcp, rounds=rounds)
    wrpcap(str(d / "lan.pcap"), lan)
    wrpcap(str(d / "wan.pcap"), wan)
    one, s1 = _run(d, "w1", 1, batch)
    many, sn = _run(d, "w2", 2, batch)
    _same_forwarding(d, one, many, s1, sn)


def test_workers_forward_vlan_qinq_and_ipip_flows_as_one_worker(tmp_path_factory):
    """802.1Q, QinQ and IPIP flows: steering skips the tags and hashes IPIP on its inner header, so a
    tunnelled flow's two directions meet on one worker (tests/data/gateway/encap.*)."""
    d = tmp_path_factory.mktemp("wencap")
    lan, wan = mixed_trace(seed=11, n_udp=10, n_tcp=5, rounds=8, encap=True)
    wrpcap(str(d / "lan.pcap"), lan)
    wrpcap(str(d / "wan.pcap"), wan)
    files = {"net_file": ENCAP_NET, "rules_file": ENCAP_RULES}
    one, s1 = _run(d, "w1", 1, 32, **files)
    many, sn = _run(d, "w2", 2, 32, **files)
    _same_forwarding(d, one, many, s1, sn)
    assert sn["fastpath_packets"] > sn["rx_packets"] // 3
