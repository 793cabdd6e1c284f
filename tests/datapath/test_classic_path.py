"""The classic forwarding path end to end, through `replay` with Scapy-built packets and Scapy as the oracle.

Linux: net/ipv4/ip_forward.c, ip_output.c, icmp.c; net/netfilter/nf_nat_core.c (masquerade keeps ports).
"""

from __future__ import annotations

from gateway import GW_LAN, GW_WAN, H10, H11, UPSTREAM, WAN_IP, run
from scapy.all import (
    ICMP,
    IP,
    TCP,
    UDP,
    Ether,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    ICMPv6TimeExceeded,
    IPerror,
    IPv6,
    Raw,
    defragment,
)

SERVER = "198.51.100.7"


def lan(ip, l4, payload=b"x" * 20, src=H10):
    return Ether(src=src, dst=GW_LAN) / ip / l4 / Raw(payload)


def wan(ip, l4, payload=b"y" * 20):
    return Ether(src=UPSTREAM, dst=GW_WAN) / ip / l4 / Raw(payload)


def assert_checksums_valid(pkt):
    """Scapy recomputes every checksum; the bytes must not change."""
    clone = pkt.copy()
    for layer in (IP, UDP, TCP, ICMP, IPerror):
        if clone.haslayer(layer) and hasattr(clone[layer], "chksum"):
            del clone[layer].chksum
    assert bytes(Ether(bytes(clone))) == bytes(pkt)


def test_masquerade_udp_both_directions(tmp_path):
    up = lan(IP(src="192.168.1.10", dst=SERVER, ttl=64), UDP(sport=40000, dport=5001))
    down = wan(IP(src=SERVER, dst=WAN_IP, ttl=50), UDP(sport=5001, dport=40000))
    out, stats, _ = run(tmp_path, [("lan0", up), ("wan0", down)])
    (o,) = out["wan0"]
    assert (o.src, o.dst) == (GW_WAN, UPSTREAM)
    assert (o[IP].src, o[IP].dst, o[IP].ttl) == (WAN_IP, SERVER, 63)
    assert (o[UDP].sport, o[UDP].dport) == (40000, 5001)  # masquerade keeps the source port
    assert_checksums_valid(o)
    (r,) = out["lan0"]
    assert (r.src, r.dst) == (GW_LAN, H10)
    assert (r[IP].src, r[IP].dst, r[IP].ttl) == (SERVER, "192.168.1.10", 49)
    assert r[UDP].dport == 40000 and bytes(r[Raw]) == b"y" * 20
    assert_checksums_valid(r)
    assert stats["tx_packets"] == 2 and stats["drops"] == {}


def test_masquerade_port_clash_picks_another_port(tmp_path):
    a = lan(IP(src="192.168.1.10", dst=SERVER), UDP(sport=40000, dport=5001))
    b = lan(IP(src="192.168.1.11", dst=SERVER), UDP(sport=40000, dport=5001), src=H11)
    out, _, _ = run(tmp_path, [("lan0", a), ("lan0", b)])
    p1, p2 = out["wan0"]
    assert p1[UDP].sport == 40000 and p2[UDP].sport != 40000
    assert p2[IP].src == WAN_IP
    assert_checksums_valid(p2)


def test_udp_zero_checksum_stays_zero_after_nat(tmp_path):
    up = lan(IP(src="192.168.1.10", dst=SERVER), UDP(sport=40001, dport=5001, chksum=0))
    out, _, _ = run(tmp_path, [("lan0", up)])
    assert out["wan0"][0][UDP].chksum == 0


def test_ttl_1_gets_time_exceeded_from_the_gateway(tmp_path):
    p = lan(IP(src="192.168.1.10", dst=SERVER, ttl=1), UDP(sport=40002, dport=33434))
    out, stats, _ = run(tmp_path, [("lan0", p)])
    assert out["wan0"] == []
    (e,) = out["lan0"]
    assert (e[IP].src, e[IP].dst) == ("192.168.1.1", "192.168.1.10")
    assert (e[ICMP].type, e[ICMP].code) == (11, 0)
    assert e[IPerror].dst == SERVER and e[IPerror].ttl == 1
    assert_checksums_valid(e)
    assert stats["drops"] == {"ttl_expired": 1}


def test_df_packet_over_route_mtu_gets_frag_needed(tmp_path):
    p = lan(IP(src="192.168.1.10", dst=SERVER, flags="DF"), UDP(sport=40003, dport=9), b"z" * 1422)
    out, stats, _ = run(tmp_path, [("lan0", p)])
    (e,) = out["lan0"]
    assert (e[ICMP].type, e[ICMP].code, e[ICMP].nexthopmtu) == (3, 4, 1400)
    assert stats["drops"] == {"pkt_too_big_df": 1}


def test_packet_without_df_is_fragmented(tmp_path):
    p = lan(IP(src="192.168.1.10", dst=SERVER, id=777), UDP(sport=40004, dport=9), bytes(range(256)) * 6)
    out, _, _ = run(tmp_path, [("lan0", p)])
    frags = out["wan0"]
    assert len(frags) == 2 and all(len(f[IP]) <= 1400 for f in frags)
    whole = defragment([f[IP] for f in frags])[0]
    assert whole[IP].src == WAN_IP and bytes(whole[Raw]) == bytes(range(256)) * 6


def test_echo_request_to_gateway_is_answered(tmp_path):
    p = lan(IP(src="192.168.1.10", dst="192.168.1.1"), ICMP(id=7, seq=3), b"ping")
    p6 = (
        Ether(src=H10, dst=GW_LAN) / IPv6(src="2001:db8:1::10", dst="2001:db8:1::1") / ICMPv6EchoRequest(id=9)
    )
    out, _, _ = run(tmp_path, [("lan0", p), ("lan0", p6)])
    r4, r6 = out["lan0"]
    assert (r4[IP].src, r4[IP].dst, r4[ICMP].type, r4[ICMP].id, r4[ICMP].seq) == (
        "192.168.1.1", "192.168.1.10", 0, 7, 3)  # fmt: skip
    assert bytes(r4[Raw]) == b"ping" and r4.dst == H10
    assert_checksums_valid(r4)
    assert r6.haslayer(ICMPv6EchoReply) and r6[IPv6].dst == "2001:db8:1::10"
    assert r6[ICMPv6EchoReply].cksum == ICMPv6EchoReply(bytes(r6[ICMPv6EchoReply])).cksum
    c = r6.copy()
    del c[ICMPv6EchoReply].cksum
    assert bytes(Ether(bytes(c))) == bytes(r6)


def test_ipv6_forwarding_decrements_hop_limit(tmp_path):
    p = Ether(src=H10, dst=GW_LAN) / IPv6(src="2001:db8:1::10", dst="2001:db8:2::99", hlim=9) / UDP(
        sport=41000, dport=5001) / Raw(b"v6")  # fmt: skip
    out, _, _ = run(tmp_path, [("lan0", p)])
    (o,) = out["wan0"]
    assert o[IPv6].hlim == 8 and (o.src, o.dst) == (GW_WAN, UPSTREAM)
    assert o[UDP].chksum == Ether(bytes(p))[UDP].chksum  # no NAT for IPv6 in the example


def test_ipv6_hop_limit_1_and_packet_too_big(tmp_path):
    hl = Ether(src=H10, dst=GW_LAN) / IPv6(src="2001:db8:1::10", dst="2001:db8:2::99", hlim=1) / UDP()
    big = Ether(src=H10, dst=GW_LAN) / IPv6(src="2001:db8:1::10", dst="2001:db8:2::99") / UDP() / Raw(
        b"b" * 1500)  # fmt: skip
    out, stats, _ = run(tmp_path, [("lan0", hl), ("lan0", big)])
    e1, e2 = out["lan0"]
    assert e1.haslayer(ICMPv6TimeExceeded) and e1[IPv6].src == "2001:db8:1::1"
    assert e2.haslayer(ICMPv6PacketTooBig) and e2[ICMPv6PacketTooBig].mtu == 1500
    assert stats["drops"] == {"ttl_expired": 1, "pkt_too_big_df": 1}


def test_policy_drop_is_counted(tmp_path):
    p = wan(IP(src="198.51.100.66", dst=WAN_IP), TCP(dport=22, flags="S"))
    q = wan(IP(src="198.51.100.66", dst="192.168.1.10"), TCP(dport=22, flags="S"))
    out, stats, _ = run(tmp_path, [("wan0", p), ("wan0", q)])
    assert out["lan0"] == [] and out["wan0"] == []
    assert stats["drops"] == {"netfilter_drop": 2}


def test_reject_with_tcp_reset(tmp_path):
    p = lan(IP(src="192.168.1.11", dst=SERVER), TCP(sport=50001, dport=23, flags="S", seq=99), b"", src=H11)
    out, stats, _ = run(tmp_path, [("lan0", p)])
    (r,) = out["lan0"]
    assert r[TCP].flags == "RA" and r[TCP].ack == 100 and (r[TCP].sport, r[TCP].dport) == (23, 50001)
    assert (r[IP].src, r[IP].dst) == (SERVER, "192.168.1.11")
    assert_checksums_valid(r)
    assert stats["drops"] == {"netfilter_reject": 1}


def test_tcp_connection_through_masquerade(tmp_path):
    c, s = dict(sport=50000, dport=80), dict(sport=80, dport=50000)
    ipc, ips = IP(src="192.168.1.11", dst="198.51.100.80"), IP(src="198.51.100.80", dst=WAN_IP)
    seq = [
        ("lan0", lan(ipc, TCP(flags="S", seq=1000, **c), b"", src=H11)),
        ("wan0", wan(ips, TCP(flags="SA", seq=5000, ack=1001, **s), b"")),
        ("lan0", lan(ipc, TCP(flags="A", seq=1001, ack=5001, **c), b"", src=H11)),
        ("lan0", lan(ipc, TCP(flags="PA", seq=1001, ack=5001, **c), b"GET /", src=H11)),
        ("wan0", wan(ips, TCP(flags="A", seq=5001, ack=1006, **s), b"")),
    ]
    out, stats, res = run(tmp_path, seq, flowtable=False)
    assert len(out["wan0"]) == 3 and len(out["lan0"]) == 2
    for p in out["wan0"] + out["lan0"]:
        assert_checksums_valid(p)
    assert out["lan0"][0][TCP].flags == "SA" and out["lan0"][0][IP].dst == "192.168.1.11"
    listing = res.worker.conntrack.listing(res.worker.now_ns)
    assert "ESTABLISHED" in listing and "src=192.168.1.11" in listing and f"dst={WAN_IP}" in listing


def test_arp_request_for_gateway_address_is_answered(tmp_path):
    from scapy.all import ARP

    req = Ether(src=H10, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=H10, psrc="192.168.1.10", pdst="192.168.1.1"
    )
    other = Ether(src=H10, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=H10, psrc="192.168.1.10", pdst="192.168.1.99"
    )
    out, stats, _ = run(tmp_path, [("lan0", req), ("lan0", other)])
    (r,) = out["lan0"]
    assert r[ARP].op == 2 and r[ARP].hwsrc == GW_LAN and r[ARP].psrc == "192.168.1.1"
    assert r[ARP].hwdst == H10 and r.dst == H10
    assert stats["local_packets"] == 2


def test_vlan_subinterfaces_route_between_tags(tmp_path):
    """A router on a stick: 802.1Q VID 10 in, VID 20 out (vlan_do_receive, vlan_dev_hard_header)."""
    from scapy.all import Dot1Q

    from flowpath.config.ipbatch import parse_network
    from flowpath.config.nft import parse_ruleset

    net = parse_network(
        "link add trunk0 address 02:00:00:00:09:01\nlink set trunk0 up\n"
        "link add link trunk0 name trunk0.10 type vlan id 10\nlink add link trunk0 name trunk0.20 type vlan id 20\n"
        "link set trunk0.10 up\nlink set trunk0.20 up\n"
        "addr add 10.10.0.1/24 dev trunk0.10\naddr add 10.20.0.1/24 dev trunk0.20\n"
        "neigh add 10.20.0.5 lladdr 02:00:00:00:20:05 dev trunk0.20\n", "vlan.ip")  # fmt: skip
    rules = parse_ruleset(
        "table inet f {\n\tchain fw {\n\t\ttype filter hook forward priority 0; policy accept;\n\t}\n}\n"
    )
    p = Ether(src="02:00:00:00:10:05", dst="02:00:00:00:09:01") / Dot1Q(vlan=10) / IP(
        src="10.10.0.5", dst="10.20.0.5", ttl=9) / UDP(sport=1, dport=2) / Raw(b"tagged")  # fmt: skip
    wrong = (
        Ether(src="02:00:00:00:10:05", dst="02:00:00:00:09:01") / Dot1Q(vlan=30) / IP(dst="10.20.0.5") / UDP()
    )
    out, stats, _ = run(tmp_path, [("trunk0", p), ("trunk0", wrong)], net=net, rules=rules)
    (o,) = out["trunk0"]
    assert o[Dot1Q].vlan == 20 and o.dst == "02:00:00:00:20:05" and o[IP].ttl == 8
    assert bytes(o[Raw]) == b"tagged"
    assert stats["drops"] == {"vlan_unknown": 1}
