"""Make the example captures lan.pcap and wan.pcap (needs scapy: pip install -e .[dev]).

The traffic a LAN behind examples/gateway.ip would see: UDP and TCP flows to the Internet with their
replies (addressed to the gateway's masqueraded address), pings, a TTL-1 packet, an oversize DF packet,
a packet to fragment, a rejected telnet SYN, IPv6 traffic, an unsolicited inbound SYN and a runt frame.
"""

from __future__ import annotations

import sys
from pathlib import Path

from scapy.all import ICMP, IP, TCP, UDP, Ether, ICMPv6EchoRequest, IPv6, Raw, wrpcap

GW_LAN, GW_WAN = "02:00:00:00:01:01", "02:00:00:00:02:01"
H10, H11, UPSTREAM = "02:00:00:00:01:0a", "02:00:00:00:01:0b", "02:00:00:00:02:fe"
WAN_IP, SERVER = "203.0.113.1", "198.51.100.7"


def build(t0: float = 1_700_000_000.0):
    lan, wan = [], []
    t = t0

    def at(lst, pkt, dt=0.001):
        nonlocal t
        t += dt
        pkt.time = t
        lst.append(pkt)

    def pad(n):
        return Raw((bytes(range(256)) * 8)[: max(0, n)])

    # 8 UDP flows, 20 packets each way, 128-byte frames
    for k in range(20):
        for f in range(8):
            sport = 40000 + f
            up = Ether(src=H10, dst=GW_LAN) / IP(src="192.168.1.10", dst=SERVER) / UDP(sport=sport, dport=5001)
            at(lan, up / Raw(bytes(128 - 42)))
            dn = Ether(src=UPSTREAM, dst=GW_WAN) / IP(src=SERVER, dst=WAN_IP) / UDP(sport=5001, dport=sport)
            at(wan, dn / Raw(bytes(128 - 42)))
    # a TCP connection with a handshake, data and an orderly close
    c, s = dict(sport=50000, dport=80), dict(sport=80, dport=50000)
    ip_c = IP(src="192.168.1.11", dst="198.51.100.80")
    ip_s = IP(src="198.51.100.80", dst=WAN_IP)
    at(lan, Ether(src=H11, dst=GW_LAN) / ip_c / TCP(flags="S", seq=1000, **c))
    at(wan, Ether(src=UPSTREAM, dst=GW_WAN) / ip_s / TCP(flags="SA", seq=5000, ack=1001, **s))
    at(lan, Ether(src=H11, dst=GW_LAN) / ip_c / TCP(flags="A", seq=1001, ack=5001, **c))
    for k in range(10):
        at(lan, Ether(src=H11, dst=GW_LAN) / ip_c / TCP(flags="PA", seq=1001 + 100 * k, ack=5001, **c) / pad(100))
        at(wan, Ether(src=UPSTREAM, dst=GW_WAN) / ip_s / TCP(flags="A", seq=5001, ack=1101 + 100 * k, **s))
    at(lan, Ether(src=H11, dst=GW_LAN) / ip_c / TCP(flags="FA", seq=2001, ack=5001, **c))
    at(wan, Ether(src=UPSTREAM, dst=GW_WAN) / ip_s / TCP(flags="FA", seq=5001, ack=2002, **s))
    at(lan, Ether(src=H11, dst=GW_LAN) / ip_c / TCP(flags="A", seq=2002, ack=5002, **c))
    # pings: to the gateway, and through it
    at(lan, Ether(src=H10, dst=GW_LAN) / IP(src="192.168.1.10", dst="192.168.1.1") / ICMP(id=7, seq=1))
    at(lan, Ether(src=H10, dst=GW_LAN) / IP(src="192.168.1.10", dst=SERVER) / ICMP(id=8, seq=1))
    at(wan, Ether(src=UPSTREAM, dst=GW_WAN) / IP(src=SERVER, dst=WAN_IP) / ICMP(type=0, id=8, seq=1))
    # exceptions: TTL 1, DF over the 1400-byte route MTU, one to fragment, telnet (rejected)
    udp = UDP(sport=40100, dport=33434)
    at(lan, Ether(src=H10, dst=GW_LAN) / IP(src="192.168.1.10", dst=SERVER, ttl=1) / udp / pad(32))
    at(lan, Ether(src=H10, dst=GW_LAN) / IP(src="192.168.1.10", dst=SERVER, flags="DF") / udp / pad(1422))
    at(lan, Ether(src=H10, dst=GW_LAN) / IP(src="192.168.1.10", dst=SERVER) / udp / pad(1422))
    at(lan, Ether(src=H11, dst=GW_LAN) / IP(src="192.168.1.11", dst=SERVER) / TCP(sport=50001, dport=23, flags="S"))
    # IPv6, routed without NAT
    v6 = IPv6(src="2001:db8:1::10", dst="2001:db8:2::99")
    at(lan, Ether(src=H10, dst=GW_LAN) / v6 / UDP(sport=41000, dport=5001) / pad(60))
    at(wan, Ether(src=UPSTREAM, dst=GW_WAN) / IPv6(src="2001:db8:2::99", dst="2001:db8:1::10")
       / UDP(sport=5001, dport=41000) / pad(60))  # fmt: skip
    at(lan, Ether(src=H10, dst=GW_LAN) / IPv6(src="2001:db8:1::10", dst="2001:db8:1::1") / ICMPv6EchoRequest(id=9))
    # unsolicited inbound SSH (input policy drop) and a runt frame (counted as truncated)
    at(wan, Ether(src=UPSTREAM, dst=GW_WAN) / IP(src="198.51.100.66", dst=WAN_IP) / TCP(dport=22, flags="S"))
    at(lan, Ether(bytes(Ether(src=H10, dst=GW_LAN) / IP(src="192.168.1.10", dst=SERVER) / UDP())[:30]))
    lan[-1].time = t + 0.001
    return lan, wan


def main(out: Path) -> None:
    lan, wan = build()
    wrpcap(str(out / "lan.pcap"), lan)
    wrpcap(str(out / "wan.pcap"), wan)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
