"""The compiled classic lane against the Python classic path it stands for (flowpath/inet/
classic_lane.py): with and without it, every interface carries the same bytes in the same order,
the counters give every packet the same disposition, and conntrack ends with the same entries.
The lane must also really carry the traffic: most of an established flow's packets."""

from __future__ import annotations

import re

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
    ct = w.conntrack
    fts = [ft.entries() for ft, _ in w.flowtables.values()]  # flow add's entries, timeouts and all
    return frames, res.stats, (ct.listing(w.now_ns, acct=True), w.net.nft.rule_counters(), dict(ct.stat), fts)


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
    assert pl == cll  # conntrack entries with their counters, the rules' counters, conntrack's stats,
    # the flowtables' entries
    assert ps["classic_lane"]["packets"] == 0
    return cs, cll[2]


@pytest.mark.parametrize("batch_size", [1, 16, 256])
def test_lane_emits_what_the_python_path_emits(tmp_path, batch_size):
    _trace(tmp_path, seed=7)
    cs, _ = _same(tmp_path, batch_size, flowtable=False, batch_size=batch_size)
    lane = cs["classic_lane"]
    assert lane["packets"] > cs["rx_packets"] * 3 // 4, lane  # the lane carried most of the traffic
    if batch_size == 1:  # no earlier punt in a batch: every new connection is the lane's to open
        assert "no_ct" not in lane["punted"], lane


@pytest.mark.parametrize("flowtable", [False, True])
def test_lane_counts_and_drops_as_the_rules_say(tmp_path, flowtable):
    _trace(tmp_path, seed=5)
    cs, _ = _same(tmp_path, "rules", flowtable=flowtable, batch_size=64, rules_file=LANE_RULES)
    _, _, (_, counters, _, _) = _run(tmp_path, "again", True, flowtable=flowtable, batch_size=64, rules_file=LANE_RULES)
    assert sum(c.packets for c in counters) > cs["rx_packets"]  # the rules did count
    assert cs["drops"].get("netfilter_drop", 0) > 0
    assert cs["classic_lane"]["packets"] > 0


@pytest.mark.parametrize("batch_size", [1, 64])
def test_lane_with_the_flowtable(tmp_path, batch_size):
    """`flow add` in the lane (classic_lane_offload.py): the same flows offloaded, entry for entry."""
    _trace(tmp_path, seed=3)
    cs, _ = _same(tmp_path, f"ft{batch_size}", flowtable=True, batch_size=batch_size)
    assert cs["fastpath_packets"] > 0 and cs["flows_offloaded"] > 0
    assert "offload" not in cs["classic_lane"]["punted"], cs["classic_lane"]  # the lane offloaded them all


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


NAT_RULES = EXAMPLES.parent / "tests" / "data" / "gateway" / "natlane.nft"


def _nat_trace(d):
    """New connections that make NAT search: two LAN hosts using the same source ports (masquerade
    must move one), ports below 512 and 1024 (their own ranges), a 4-port SNAT range for 12 clients,
    SNAT and DNAT address ranges, a port forward; ordered in time across both captures."""
    from scapy.all import IP, TCP, UDP, Ether, Raw

    lan, wan, t = [], [], 1_700_000_000.0
    hosts = (("192.168.1.10", "02:00:00:00:01:0a"), ("192.168.1.11", "02:00:00:00:01:0b"))
    for k in range(48):
        host, mac = hosts[k % 2]
        sport = (100, 700, 20000, 20001)[(k // 2) % 4] if k < 16 else 30000 + k // 2
        dport = (7000, 7001, 5000)[k % 3] if k >= 16 else 5000
        l4 = TCP(sport=sport, dport=80, flags="S", seq=k) if k % 5 == 0 else UDP(sport=sport, dport=dport)
        p = Ether(src=mac, dst="02:00:00:00:01:01") / IP(src=host, dst=f"198.51.100.{1 + k % 3}") / l4 / Raw(b"x" * 8)
        t += 0.001
        p.time = t
        lan.append(p)
        if k % 4 == 0:
            l4 = TCP(sport=3000 + k, dport=2222, flags="S", seq=k) if k % 8 == 0 else UDP(sport=3000 + k, dport=6000 + k % 10)
            q = Ether(src="02:00:00:00:02:fe", dst="02:00:00:00:02:01") / IP(src=f"198.51.100.{200 + k % 7}", dst="203.0.113.1") / l4
            t += 0.001
            q.time = t
            wan.append(q)
    wrpcap(str(d / "lan.pcap"), lan)
    wrpcap(str(d / "wan.pcap"), wan)


@pytest.mark.parametrize("batch_size", [1, 64])
def test_lane_nat_bindings(tmp_path, batch_size):
    _nat_trace(tmp_path)
    cs, stat = _same(tmp_path, f"nat{batch_size}", flowtable=False, batch_size=batch_size, rules_file=NAT_RULES)
    lane = cs["classic_lane"]
    assert cs["drops"].get("nat_no_ports", 0) > 0  # the 4-port range ran out
    assert stat["insert"] > 30, stat
    assert cs["tx_packets"] > 40
    if batch_size == 1:  # every binding made in the lane
        assert lane["packets"] == cs["rx_packets"] and not lane["punted"], lane


@pytest.mark.parametrize("batch_size", [1, 64])
def test_lane_at_the_conntrack_limit(tmp_path, monkeypatch, batch_size):
    """A limit below the trace's connections: early_drop evicts unassured entries as the lane opens
    new ones. Its victim depends on the index's layout, hence on the hash seed, random per table as
    in Linux: both runs get the same one here."""
    from flowpath.netfilter import nf_conntrack_table

    monkeypatch.setattr(nf_conntrack_table.secrets, "randbits", lambda n: 0x5EED)
    _trace(tmp_path, seed=9, n_udp=40, n_tcp=8, rounds=3)
    limit = {"net.netfilter.nf_conntrack_max": 24}
    cs, stat = _same(tmp_path, f"limit{batch_size}", flowtable=False, batch_size=batch_size, sysctl=limit)
    assert cs["classic_lane"]["packets"] > cs["rx_packets"] // 2
    assert stat["early_drop"] > 0, stat


def _ping(d, **kw):
    from tracegen import ping_trace

    lan, wan = ping_trace(**kw)
    wrpcap(str(d / "lan.pcap"), lan)
    wrpcap(str(d / "wan.pcap"), wan)
    return lan, wan


def _echo_count(pkts) -> int:
    from scapy.all import ICMP, IP, ICMPv6EchoReply, ICMPv6EchoRequest, IPv6

    n = 0
    for p in pkts:
        if ICMP in p and p[ICMP].type in (0, 8) and p[IP].ttl > 1 and p[IP].dst not in ("192.168.1.1", "203.0.113.1"):
            n += p[ICMP].id not in (0x7777, 0x7778) and p[ICMP].chksum != 0x1234
        elif ICMP in p and p[ICMP].type in (0, 8):
            n += p[ICMP].type == 0 and p[IP].dst == "203.0.113.1" and p[ICMP].id != 0x7777  # replies to pings
        elif (ICMPv6EchoRequest in p or ICMPv6EchoReply in p) and p[IPv6].hlim > 1:
            n += 1
    return n


@pytest.mark.parametrize("batch_size", [1, 64])
def test_lane_carries_echo(tmp_path, batch_size):
    """ICMP and ICMPv6 echo alone through masquerade (nf_conntrack_proto_icmp.c, nf_nat_proto.c ›
    icmp_manip_pkt): the lane opens, tracks and NATs them all as the Python path does, an id clash
    moved by NAT included."""
    lan, wan = _ping(tmp_path, seed=2, mixed=False, errors=False)
    py, _, (listing, _, _, _) = _run(tmp_path, f"py-echo{batch_size}", False, flowtable=False, batch_size=batch_size)
    cs, stat = _same(tmp_path, f"echo{batch_size}", flowtable=False, batch_size=batch_size)
    lane = cs["classic_lane"]
    assert re.search(r"type=0 code=0 id=16385 packets=[1-9]", listing), listing  # the moved id's answers came back
    assert stat["insert"] >= 16, stat  # every round's pings, opened again after the idle gap
    assert cs["tx_packets"] > len(lan)  # requests and answers forwarded
    if batch_size == 1:
        assert lane["packets"] == cs["rx_packets"] and not lane["punted"], lane
    else:  # the only punts: answers to ping 1 NAT moved, reaching ping 0's entry, are none here
        assert lane["packets"] > cs["rx_packets"] * 9 // 10, lane


@pytest.mark.parametrize("batch_size", [1, 64])
def test_lane_echo_among_errors(tmp_path, batch_size):
    """Echo with what stays the Python path's: ICMP errors (RELATED, their inner packet translated),
    time exceeded, a neighbour solicitation, a bad checksum, unsolicited replies, pings of the
    gateway, timestamp queries. The lane carries the echo and punts the rest, counted as icmp,
    csum, header or route (nf_conntrack_proto_icmp.c › icmp_error, icmpv6_error)."""
    lan, wan = _ping(tmp_path, seed=4, mixed=False, errors=True)
    cs, _ = _same(tmp_path, f"err{batch_size}", flowtable=False, batch_size=batch_size)
    lane, echo = cs["classic_lane"], _echo_count(lan + wan)
    punted = lane["punted"]
    assert punted.get("icmp", 0) > 0 and punted.get("csum", 0) > 0, lane  # errors, ND; the bad checksum
    assert cs["rx_packets"] > echo + 50  # the trace holds plenty of packets the lane must leave
    if batch_size == 1:  # nothing but the Python path's packets punted; the echo all carried
        # l2: the solicitation's multicast MAC; no_ct: a gateway ping's expired entry in the way
        assert not set(punted) - {"icmp", "csum", "header", "route", "ct_state", "l2", "no_ct"}, lane
        assert lane["packets"] >= echo * 9 // 10, (lane, echo)
    else:  # a punted ICMPv6 packet punts the rest of its batch (classic_lane_batch's barrier)
        assert lane["packets"] > echo // 2, (lane, echo)


@pytest.mark.parametrize("flowtable", [False, True])
@pytest.mark.parametrize("batch_size", [1, 64])
def test_lane_echo_with_tcp_udp(tmp_path, batch_size, flowtable):
    """Echo and its errors amid mixed_trace's TCP and UDP, with and without the flowtable (which
    offloads TCP/UDP only: nft_flow_offload_eval)."""
    _ping(tmp_path, seed=6, mixed=True, errors=True)
    cs, stat = _same(tmp_path, f"mix{batch_size}{flowtable}", flowtable=flowtable, batch_size=batch_size)
    assert cs["classic_lane"]["packets"] > cs["rx_packets"] // 2, cs["classic_lane"]
    assert cs["classic_lane"]["punted"].get("icmp", 0) > 0


ICMP_NAT_RULES = EXAMPLES.parent / "tests" / "data" / "gateway" / "icmplane.nft"


@pytest.mark.parametrize("batch_size", [1, 64])
def test_lane_echo_nat(tmp_path, batch_size):
    """ICMP queries through SNAT and DNAT in the lane (nf_nat_proto.c › icmp_manip_pkt,
    icmpv6_manip_pkt: the id and the checksum, ICMPv6's with its pseudo-header's address):
    IPv4 masquerade, IPv6 SNAT, echo requests DNATed to a LAN host, with errors about them."""
    _ping(tmp_path, seed=8, mixed=False, errors=True, reply6="2001:db8:ff::1", inbound=True)
    cs, stat = _same(tmp_path, f"nat{batch_size}", flowtable=False, batch_size=batch_size, rules_file=ICMP_NAT_RULES)
    _, _, (listing, _, _, _) = _run(tmp_path, f"l{batch_size}", True, flowtable=False, batch_size=batch_size,
                                    rules_file=ICMP_NAT_RULES)  # fmt: skip
    assert "dst=2001:db8:ff::1 type=129" in listing and "src=192.168.1.11 dst=198.51.100" in listing, listing
    assert "[UNREPLIED] src=2001:db8" not in listing  # the SNATed IPv6 answers found their entries
    lane = cs["classic_lane"]
    if batch_size == 1:
        assert lane["packets"] > cs["rx_packets"] // 2 and "nat" not in lane["punted"], lane
