"""What fuzzing and a new user found wrong, each driven through `replay` with Scapy-built packets and
checked against what Linux does (net/ipv4/ip_input.c, route.c, ip_options.c; net/ipv6/ip6_input.c).

The gateway is the bundled example: lan0 192.168.1.1/24 and 2001:db8:1::1/64, wan0 203.0.113.1.
"""

from __future__ import annotations

import pytest
from gateway import GW_LAN, H10, run
from scapy.all import ARP, ICMP, IP, UDP, Ether, ICMPv6EchoRequest, ICMPv6ParamProblem, IPv6, Raw
from scapy.utils import checksum

LAN = dict(src=H10, dst=GW_LAN)


def lan(pkt):
    return ("lan0", Ether(**LAN) / pkt)


def one(tmp_path, pkt):
    """Replay one LAN packet: (frames sent back on lan0, frames sent on wan0, drops)."""
    out, stats, _ = run(tmp_path, [pkt])
    return out.get("lan0", []), out.get("wan0", []), stats["drops"]


# -- 1. a packet to the gateway with an empty payload ------------------------------------------------


def test_ipv4_unknown_protocol_without_payload_gets_protocol_unreachable(tmp_path):
    """ip_protocol_deliver_rcu: no handler for protocol 0 -> ICMP protocol unreachable, IP_NOPROTO."""
    back, fwd, drops = one(tmp_path, lan(IP(src="192.168.1.10", dst="192.168.1.1", proto=0)))
    assert fwd == [] and drops == {"ip_noproto": 1}
    [e] = back
    assert (e[ICMP].type, e[ICMP].code, e[IP].src) == (3, 2, "192.168.1.1")


def test_ipv6_no_next_header_is_discarded_quietly(tmp_path):
    """inet6_protos[IPPROTO_NONE] is dst_discard: no answer, no crash."""
    back, fwd, drops = one(tmp_path, lan(IPv6(src="2001:db8:1::10", dst="2001:db8:1::1", nh=59)))
    assert back == fwd == [] and drops == {}


def test_ipv6_unknown_next_header_gets_a_parameter_problem_at_its_byte(tmp_path):
    back, _, drops = one(
        tmp_path, lan(IPv6(src="2001:db8:1::10", dst="2001:db8:1::1", nh=253) / Raw(b"x" * 8))
    )
    assert drops == {"ip_noproto": 1}
    [e] = back
    assert e[ICMPv6ParamProblem].code == 1 and e[ICMPv6ParamProblem].ptr == 6  # ipv6hdr.nexthdr


# -- 3. martians ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pkt",
    [
        IP(src="192.168.1.10", dst="127.0.0.1") / ICMP(),
        IP(src="192.168.1.10", dst="0.0.0.0") / UDP(sport=53, dport=53),
        IP(src="192.168.1.10", dst="0.1.2.3") / UDP(),
        IP(src="127.0.0.1", dst="198.51.100.7") / UDP(),
        IP(src="224.0.0.5", dst="198.51.100.7") / UDP(),
        IPv6(src="2001:db8:1::10", dst="::1") / UDP(),
        IPv6(src="::1", dst="2001:db8:ff::9") / UDP(),
        IPv6(src="::ffff:192.168.1.10", dst="2001:db8:1::1") / ICMPv6EchoRequest(),
        IPv6(src="2001:db8:1::10", dst="ff01::1") / UDP(),
    ],
    ids=["echo-to-127.0.0.1", "udp-to-0.0.0.0", "to-0/8", "from-loopback", "from-multicast", "udp-to-::1",
         "from-::1", "v4-mapped-source", "interface-local-multicast"],
)  # fmt: skip
def test_martians_are_dropped_unanswered(tmp_path, pkt):
    back, fwd, drops = one(tmp_path, lan(pkt))
    assert back == fwd == [] and drops == {"ip_inaddrerrors": 1}


def test_dhcp_discover_from_0_0_0_0_is_broadcast_input_not_a_martian(tmp_path):
    back, fwd, drops = one(tmp_path, ("lan0", Ether(src=H10, dst="ff:ff:ff:ff:ff:ff") /
                                      IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67)))  # fmt: skip
    assert back == fwd == [] and drops == {}


# -- 5. IPv4 options --------------------------------------------------------------------------------


def with_options(opts: bytes, dst="198.51.100.7"):
    """An IPv4/UDP packet whose header carries `opts` (a multiple of 4 bytes) as they are."""
    udp = bytes(UDP(sport=1000, dport=2000) / Raw(b"payload!"))
    ihl = 5 + len(opts) // 4
    hdr = bytearray(bytes(IP(src="192.168.1.10", dst=dst, ihl=ihl, len=ihl * 4 + len(udp), proto=17))[:20])
    hdr += opts
    hdr[10:12] = b"\0\0"
    hdr[10:12] = checksum(bytes(hdr)).to_bytes(2, "big")
    return ("lan0", Ether(**LAN, type=0x0800) / Raw(bytes(hdr) + udp))


@pytest.mark.parametrize(
    ("opts", "pointer"),
    [
        (b"\x07\x00\x00\x00", 20),  # record route of length 0
        (b"\x44\x10\x05\x00", 20),  # timestamp longer than the header
        (b"\x07\x03\x01\x00", 22),  # record route pointer below 4
        (b"\x01\x01\x01\x94", 23),  # router alert: a length byte missing at the end
    ],
    ids=["length-0", "past-the-header", "bad-pointer", "truncated"],
)  # fmt: skip
def test_malformed_options_get_a_parameter_problem_pointing_at_the_byte(tmp_path, opts, pointer):
    back, fwd, drops = one(tmp_path, with_options(opts))
    assert fwd == [] and drops == {"ip_inhdr": 1}
    [e] = back
    assert (e[ICMP].type, e[ICMP].code, e[ICMP].ptr) == (12, 0, pointer) and e[IP].dst == "192.168.1.10"


def test_source_routed_packets_are_dropped(tmp_path):
    """accept_source_route is 0 on a router: LSRR/SSRR are dropped without an answer."""
    lsrr = b"\x83\x07\x04" + bytes([198, 51, 100, 9]) + b"\x00"
    back, fwd, drops = one(tmp_path, with_options(lsrr))
    assert back == fwd == [] and drops == {"ip_source_route": 1}


def test_well_formed_options_are_forwarded(tmp_path):
    rr = b"\x07\x07\x04" + bytes(4) + b"\x00"  # record route with room for one address
    back, fwd, drops = one(tmp_path, with_options(rr))
    assert back == [] and drops == {} and len(fwd) == 1
    assert bytes(fwd[0][IP])[20:28] == rr  # Deviation: not filled in (inet/ip_options.py)


# -- 10. replay windows wider than 32 without ESN ----------------------------------------------------


def test_replay_window_64_without_esn_runs_a_64_packet_bitmap(tmp_path):
    """iproute2 sends `replay-window 64` as XFRMA_REPLAY_ESN_VAL; the kernel runs that bitmap on 32-bit
    sequence numbers (XFRM_REPLAY_MODE_BMP). A packet 40 behind the newest is inside it, 70 is not."""
    from test_ipsec_gateway import GW_WAN, NET, PEER_MAC, RULES, sa

    from flowpath.config.ipbatch import parse_network
    from flowpath.config.nft import parse_ruleset

    net = parse_network(
        NET.replace("reqid 2 mode tunnel replay-window 32", "reqid 2 mode tunnel replay-window 64")
    )
    peer = sa(0x2002, "192.0.2.2", "192.0.2.1")
    inner = IP(src="10.2.0.7", dst="10.1.0.5") / UDP(sport=2222, dport=1111) / Raw(b"late")
    esp = {}
    for seq in (30, 60, 100):
        peer.seq_num = seq
        esp[seq] = Ether(src=PEER_MAC, dst=GW_WAN) / peer.encrypt(inner)
    order = [esp[100], esp[60], esp[30]]  # 40 and 70 behind the newest
    out, stats, res = run(tmp_path, [("wan0", p) for p in order], net=net, rules=parse_ruleset(RULES))
    assert len(out["lan0"]) == 2 and stats["drops"] == {"xfrm_in_replay_window": 1}
    [block] = [b for b in res.worker.xfrm_listing().split("src ") if "spi 0x00002002" in b]
    assert (
        "replay-window 0" in block and "replay_window 64, bitmap-length 2" in block
    )  # as `ip -s xfrm state`


# -- 6. expiry across a gap in the capture -----------------------------------------------------------


def at(t: float, pkt):
    pkt.time, pkt._fp_time_set = t, True
    return pkt


@pytest.mark.parametrize("flowtable", [True, False], ids=["flowtable", "classic"])
def test_a_reply_400_s_after_the_exchange_finds_no_connection(tmp_path, flowtable):
    """GC runs as if every second had passed: the offloaded flow expires 30 s after its last packet
    and hands conntrack back a timeout counted from then, which has run out by the late reply.
    With and without the flowtable the late reply is not NATed back. (The exchange lasts over 2 s,
    so conntrack has given the UDP flow its stream timeout, as udp_packet does.)"""
    from gateway import UPSTREAM

    t0 = 1_700_000_000.0
    out_ = IP(src="192.168.1.10", dst="198.51.100.7") / UDP(sport=5000, dport=53)
    back = IP(src="198.51.100.7", dst="203.0.113.1") / UDP(sport=53, dport=5000)
    wan = dict(src=UPSTREAM, dst="02:00:00:00:02:01")
    pkts = [("lan0", at(t0, Ether(**LAN) / out_)), ("wan0", at(t0 + 0.01, Ether(**wan) / back)),
            ("lan0", at(t0 + 3, Ether(**LAN) / out_)), ("wan0", at(t0 + 3.01, Ether(**wan) / back)),
            ("wan0", at(t0 + 400, Ether(**wan) / back))]  # fmt: skip
    out, stats, _ = run(tmp_path, pkts, flowtable=flowtable)
    assert len(out.get("lan0", [])) == 2  # the late reply is not forwarded to 192.168.1.10
    if flowtable:
        assert stats["flows_expired"] == 1


@pytest.mark.parametrize("workers", [1, 2])
def test_an_offloaded_connection_refreshed_by_the_classic_path_outlives_a_gap(tmp_path, workers):
    """An oversize packet of an offloaded flow takes the classic path, whose udp_packet sets the entry's
    timeout 30 s ahead, a day no more. The GC run of the next second pins it again (a day), before the
    flow expires at 31.6 s, so the teardown at 32.2 s hands conntrack 90 s (replied, less the 30 s of
    offload timeout spent) and the reply at 46 s is still NATed back. Across the idle gap, replay must
    run that GC too, not only the ones in which a flow expires (worker 0's clock runs at t0, t0+1.2,
    t0+2.2...; with two workers the flow is one worker's)."""
    from gateway import UPSTREAM

    t0 = 1_700_000_000.0
    out_ = IP(src="192.168.1.10", dst="198.51.100.7") / UDP(sport=5000, dport=53)
    back = IP(src="198.51.100.7", dst="203.0.113.1") / UDP(sport=53, dport=5000)
    wan = dict(src=UPSTREAM, dst="02:00:00:00:02:01")
    pkts = [("lan0", at(t0, Ether(**LAN) / out_)), ("wan0", at(t0 + 0.01, Ether(**wan) / back)),  # offloaded
            ("lan0", at(t0 + 0.5, Ether(**LAN) / out_)), ("wan0", at(t0 + 0.51, Ether(**wan) / back)),
            ("lan0", at(t0 + 1.2, Ether(**LAN) / out_ / Raw(b"x" * 1600))),  # oversize: classic, fragmented
            ("lan0", at(t0 + 1.6, Ether(**LAN) / out_)), ("wan0", at(t0 + 1.61, Ether(**wan) / back)),
            ("wan0", at(t0 + 46, Ether(**wan) / back / Raw(b"late")))]  # fmt: skip
    out, stats, res = run(tmp_path, pkts, workers=workers)
    assert stats["flows_expired"] == 1 and stats["fastpath_packets"] == 4
    assert [bytes(p[UDP].payload) for p in out["lan0"]] == [b""] * 3 + [b"late"]  # NATed back to .10
    assert not [p for p in out["wan0"] if ICMP in p]  # not delivered to the gateway (port unreachable)
    [line] = res.worker.conntrack.listing(int((t0 + 46) * 1e9)).splitlines()
    assert "sport=5000 dport=53 src=198.51.100.7 dst=203.0.113.1 sport=53 dport=5000" in line


# -- 9. replay's polls follow arrival times ------------------------------------------------------------


def small_capture(n=45, span_s=0.05):
    """n packets of one UDP exchange spread over span_s, LAN and WAN alternating."""
    from gateway import UPSTREAM

    t0, out = 1_700_000_000.0, []
    for k in range(n):
        if k % 2 == 0:
            p = Ether(**LAN) / IP(src="192.168.1.10", dst="198.51.100.7") / UDP(sport=5000, dport=53)
        else:
            p = Ether(src=UPSTREAM, dst="02:00:00:00:02:01") / IP(src="198.51.100.7", dst="203.0.113.1")
            p = p / UDP(sport=53, dport=5000)
        out.append(("lan0" if k % 2 == 0 else "wan0", at(t0 + k * span_s / n, p / Raw(b"%02d" % k))))
    return out


def test_a_small_capture_reaches_the_fast_path(tmp_path):
    """45 packets over 50 ms: each poll holds what had arrived by then (50 us of coalescing), so once
    the reply offloads the flow the rest is forwarded by the flowtable, as on a gateway."""
    out, stats, _ = run(tmp_path, small_capture())
    assert stats["slowpath_packets"] == 2 and stats["fastpath_packets"] == 43  # out, then the reply offloads
    assert len(out["wan0"]) == 23 and len(out["lan0"]) == 22
    (tmp_path / "one-poll").mkdir()
    _, batched, _ = run(tmp_path / "one-poll", small_capture(), rx_usecs=10**6)  # a poll of 256 holds all
    assert batched["fastpath_packets"] == 0


def test_next_poll_follows_napi():
    from flowpath.replay import next_poll_ns

    assert next_poll_ns(-1, 1000, 50_000) == 51_000  # idle: the interrupt comes rx-usecs later
    assert next_poll_ns(51_000, 40_000, 50_000) == 51_000  # still waiting after a full poll: polled again now
    assert next_poll_ns(51_000, 60_000, 0) == 60_000  # no coalescing


# -- 10b. what the flowtable forwards and the classic path drops, as in Linux ----------------------------
# nf_flow_offload_ip_hook (net/netfilter/nf_flow_table_ip.c) runs at netdev ingress, before ip_rcv and
# conntrack: it checks neither checksums nor the UDP length nor conntrack's TCP rules nor pkt_type.
# An established flow's packet with such a defect is forwarded by Linux's flowtable and dropped by
# its classic path; flowpath does the same, and the README says so next to the byte-identity claim.


def _udp_flow(defect):
    """LAN->WAN, the reply (which offloads the flow), then `defect` (a LAN frame's bytes)."""
    from gateway import UPSTREAM

    o = Ether(**LAN) / IP(src="192.168.1.10", dst="198.51.100.7") / UDP(sport=5000, dport=53) / Raw(b"q" * 10)
    r = Ether(src=UPSTREAM, dst="02:00:00:00:02:01") / IP(src="198.51.100.7", dst="203.0.113.1")
    r = r / UDP(sport=53, dport=5000) / Raw(b"r" * 10)
    return [("lan0", o), ("wan0", r), ("lan0", Ether(defect(bytearray(bytes(o)))))]


def _flip(off):
    def defect(b):
        b[off] ^= 0xFF
        return bytes(b)

    return defect


def _udp_len_past_the_datagram(b):
    b[38:40] = (200).to_bytes(2, "big")  # udphdr.len; the checksum no longer matters to the flowtable
    return bytes(b)


def _other_mac(b):
    b[0:6] = bytes.fromhex("020000000909")
    return bytes(b)


@pytest.mark.parametrize(
    ("defect", "classic_drop"),
    [(_flip(24), "ip_csum"), (_flip(40), "netfilter_drop"), (_udp_len_past_the_datagram, "netfilter_drop"),
     (_other_mac, "mac_mismatch")],
    ids=["bad-ip-checksum", "bad-udp-checksum", "udp-length-past-datagram", "unicast-to-another-mac"],
)  # fmt: skip
def test_flowtable_forwards_what_linux_flowtable_forwards(tmp_path, defect, classic_drop):
    (tmp_path / "ft").mkdir(), (tmp_path / "classic").mkdir()
    fast, s_fast, _ = run(tmp_path / "ft", _udp_flow(defect))
    slow, s_slow, _ = run(tmp_path / "classic", _udp_flow(defect), flowtable=False)
    assert len(fast["wan0"]) == 2 and s_fast["fastpath_packets"] == 1 and s_fast["drops"] == {}
    assert len(slow["wan0"]) == 1 and s_slow["drops"] == {classic_drop: 1}
    sent = fast["wan0"][1]
    assert sent[IP].src == "203.0.113.1" and sent[IP].ttl == 63  # NATed and TTL decremented like any hit


def test_flowtable_forwards_a_tcp_segment_conntrack_calls_invalid(tmp_path):
    """nf_flow_state_check only looks for FIN/RST: a segment without flags is forwarded on the fast
    path, where the classic path's `ct state invalid drop` refuses it (tcp_error: invalid flags)."""
    from gateway import UPSTREAM
    from scapy.all import TCP

    wan = dict(src=UPSTREAM, dst="02:00:00:00:02:01")
    syn = IP(src="192.168.1.10", dst="198.51.100.7") / TCP(sport=4000, dport=80, flags="S", seq=1000)
    synack = IP(src="198.51.100.7", dst="203.0.113.1") / TCP(
        sport=80, dport=4000, flags="SA", seq=5000, ack=1001
    )
    ack = IP(src="192.168.1.10", dst="198.51.100.7") / TCP(
        sport=4000, dport=80, flags="A", seq=1001, ack=5001
    )
    null = IP(src="192.168.1.10", dst="198.51.100.7") / TCP(
        sport=4000, dport=80, flags="", seq=1001, ack=5001
    )
    pkts = lambda: [lan(syn), ("wan0", Ether(**wan) / synack), lan(ack), lan(null)]  # noqa: E731
    (tmp_path / "ft").mkdir(), (tmp_path / "classic").mkdir()
    fast, s_fast, _ = run(tmp_path / "ft", pkts())
    slow, s_slow, _ = run(tmp_path / "classic", pkts(), flowtable=False)
    assert len(fast["wan0"]) == 3 and s_fast["fastpath_packets"] == 1
    assert len(slow["wan0"]) == 2 and s_slow["drops"] == {"netfilter_drop": 1}


def test_a_dormant_table_registers_no_hook(tmp_path):
    """`flags dormant` (nf_tables_table_disable): the table's chains and flowtables do not run."""
    from flowpath.config.nft import parse_ruleset

    rules = parse_ruleset("table inet f {\n\tflags dormant\n\tflowtable ft {\n\t\thook ingress priority 0\n"
                          "\t\tdevices = { lan0, wan0 }\n\t}\n\tchain fw {\n\t\ttype filter hook forward priority 0;"
                          " policy drop;\n\t\tflow add @ft\n\t}\n}\n")  # fmt: skip
    pkt = lan(IP(src="192.168.1.10", dst="198.51.100.7") / UDP(sport=1, dport=2))
    out, stats, res = run(tmp_path, [pkt], rules=rules)
    assert len(out["wan0"]) == 1 and stats["drops"] == {} and res.worker.flowtables == {}


# -- 2. one final disposition per received packet -------------------------------------------------------


def test_the_bundled_example_conserves_packets(tmp_path):
    """rx = forwarded + dropped + local; what the gateway originates is counted apart (generated)."""
    from gateway import EXAMPLES, example_net, example_rules

    from flowpath.replay import replay

    inputs = [("lan0", EXAMPLES / "lan.pcap"), ("wan0", EXAMPLES / "wan.pcap")]
    s = replay(example_net(), example_rules(), inputs, tmp_path).stats
    assert (
        s["rx_packets"]
        == s["forwarded_packets"] + s["dropped_packets"] + s["local_packets"] + s["held_packets"]
    )
    assert s["generated_packets"] > 0 and s["local_packets"] > 0 and s["dropped_packets"] > 0


def test_an_error_that_cannot_be_sent_is_not_a_second_disposition(tmp_path):
    """A TTL-expired packet from a host without a neighbour entry: the packet is one drop (ttl_expired);
    its time-exceeded waits for the host's address behind ARP requests (arp_solicit) and, unsendable
    once resolution fails 3 s later (a packet 4 s on runs the timers), is a generated packet's drop
    (neigh_failed), apart."""
    late = lan(IP(src="192.168.1.10", dst="192.168.1.1") / ICMP())
    at(1_700_000_004.0, late[1])
    out, stats, _ = run(tmp_path, [lan(IP(src="192.168.1.50", dst="198.51.100.7", ttl=1) / UDP()), late])
    assert stats["drops"] == {"ttl_expired": 1} and stats["dropped_packets"] == 1 and stats["rx_packets"] == 2
    assert stats["generated_dropped"] == {"neigh_failed": 1} and stats["held_packets"] == 0
    requests = [e for e in out["lan0"] if ARP in e and e[ARP].pdst == "192.168.1.50"]
    assert len(requests) == 3 and stats["generated_packets"] == 3 + 1  # the requests and the echo reply
