"""The classic path's steps driven on a `net` alone, without a Worker: what each step returns, what it
transmits (checked with Scapy) and what it asks of the layer above (an offload, a tunnel tuple).

The gateway is the bundled example (examples/gateway.ip, examples/gateway.nft): LAN 192.168.1.0/24
masqueraded to 203.0.113.1 on wan0, `flow add @ft` for TCP/UDP, telnet rejected with a reset.
"""

import numpy as np
import pytest
from example_gateway import GW_LAN, GW_WAN, H10, LAN0, T0, UPSTREAM, WAN0, example_net, rx
from scapy.all import ARP, ICMP, IP, TCP, UDP, Ether, Raw

from flowpath.inet.dev import local_out_flush, netif_receive_skb
from flowpath.inet.ip_forward import ip_forward
from flowpath.inet.output_queue import OutputQueue
from flowpath.packet.reason import Reason
from flowpath.packet.skb import frame_array, skb_parse


@pytest.fixture
def net():
    return example_net()


def test_forward_masquerades_and_asks_for_the_offload(net):
    pkt = (
        Ether(src=H10, dst=GW_LAN)
        / IP(src="192.168.1.10", dst="198.51.100.7", ttl=64)
        / UDP(sport=5000, dport=53)
    )
    reason, q, out = rx(net, pkt / Raw(b"q" * 20))
    assert reason == Reason.TX
    [(ifx, e)] = out
    assert ifx == WAN0 and e.src == GW_WAN and e.dst == UPSTREAM
    assert e[IP].src == "203.0.113.1" and e[IP].ttl == 63 and e[UDP].dport == 53
    e2 = Ether(bytes(e))
    del e2[IP].chksum, e2[UDP].chksum
    assert bytes(Ether(bytes(e2))) == bytes(e)  # checksums as Scapy computes them
    assert not q.offload and not q.local_out and not q.generated_drops  # not confirmed yet: no offload
    reply = (
        Ether(src=UPSTREAM, dst=GW_WAN)
        / IP(src="198.51.100.7", dst="203.0.113.1")
        / UDP(sport=53, dport=5000)
    )
    reason, q, [(ifx, e)] = rx(net, reply, WAN0)
    assert reason == Reason.TX and ifx == LAN0 and e[IP].dst == "192.168.1.10" and e[UDP].dport == 5000
    [(skb, name)] = q.offload  # adding the flow is the Worker's job: the classic path only asks
    assert name == "ft" and skb.ct is not None and net.flowtables["ft"][0].nused == 0


def test_ip_forward_alone_on_a_parsed_skb(net):
    """ip_forward needs a routed skb and a net, nothing else."""
    pkt = (
        Ether(src=H10, dst=GW_LAN) / IP(src="192.168.1.10", dst="198.51.100.7", ttl=1) / UDP(sport=1, dport=2)
    )
    skb = skb_parse(frame_array(bytes(pkt)), LAN0, T0)
    q = OutputQueue()
    fib = net.fib_lookup(4, skb.daddr)
    assert ip_forward(net, q, skb, fib) == Reason.TTL_EXPIRED
    assert not q.frames and len(q.local_out) == 1  # the error waits for the packet's path to end
    local_out_flush(net, q)
    [(ifx, f)] = q.frames
    e = Ether(f)
    assert ifx == LAN0 and e.dst == H10 and e[IP].src == "192.168.1.1" and e[IP].dst == "192.168.1.10"
    assert e[ICMP].type == 11 and e[ICMP].code == 0
    assert bytes(e[ICMP].payload)[:20] == bytes(pkt[IP])[:20]  # the offending header, quoted as received


def test_frag_needed_quotes_the_route_mtu(net):
    pkt = (
        Ether(src=H10, dst=GW_LAN)
        / IP(src="192.168.1.10", dst="198.51.100.7", flags="DF")
        / UDP()
        / Raw(b"x" * 1400)
    )
    reason, q, out = rx(net, pkt)
    assert reason == Reason.PKT_TOO_BIG_DF
    [(ifx, e)] = out
    assert ifx == LAN0 and e[ICMP].type == 3 and e[ICMP].code == 4 and e[ICMP].nexthopmtu == 1400


def test_echo_reply_and_port_unreachable_from_the_gateway(net):
    ping = (
        Ether(src=H10, dst=GW_LAN)
        / IP(src="192.168.1.10", dst="192.168.1.1")
        / ICMP(id=7, seq=1)
        / Raw(b"hi")
    )
    reason, _, [(ifx, e)] = rx(net, ping)
    assert reason == Reason.LOCAL_IN and ifx == LAN0
    assert e[IP].src == "192.168.1.1" and e[ICMP].type == 0 and e[ICMP].id == 7 and bytes(e[Raw]) == b"hi"
    udp = Ether(src=H10, dst=GW_LAN) / IP(src="192.168.1.10", dst="192.168.1.1") / UDP(sport=9, dport=9)
    reason, q, [(ifx, e)] = rx(net, udp)
    assert reason == Reason.LOCAL_IN and e[ICMP].type == 3 and e[ICMP].code == 3
    assert not q.local_out


def test_reject_with_tcp_reset(net):
    syn = (
        Ether(src=H10, dst=GW_LAN)
        / IP(src="192.168.1.10", dst="198.51.100.7")
        / TCP(sport=4000, dport=23, seq=100)
    )
    reason, q, [(ifx, e)] = rx(net, syn)
    assert reason == Reason.NETFILTER_REJECT and ifx == LAN0
    assert e[IP].src == "198.51.100.7" and e[TCP].flags == "RA" and e[TCP].ack == 101 and e[TCP].dport == 4000
    assert not q.offload and not q.generated_drops and q.generated == 1


def test_arp_reply_for_our_address_only(net):
    req = Ether(src=H10, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=H10, psrc="192.168.1.10", pdst="192.168.1.1"
    )
    reason, _, [(ifx, e)] = rx(net, req)
    assert reason == Reason.LOCAL_IN and ifx == LAN0
    assert e[ARP].op == 2 and e[ARP].hwsrc == GW_LAN and e[ARP].psrc == "192.168.1.1" and e.dst == H10
    other = req.copy()
    other[ARP].pdst = "192.168.1.77"
    assert rx(net, other)[2] == []


def test_an_error_that_cannot_be_sent_is_reported_as_generated(net):
    """The route back exists but its neighbour is unresolved: the error waits on the neighbour's queue
    behind an ARP request (neigh_resolve_output); when resolution fails (3 requests, 3 s) its failure
    goes to q.generated_drops, apart from the received packet's own reason (Linux: neigh_invalidate)."""
    from flowpath.inet.neigh_output import neigh_timers

    pkt = Ether(src=H10, dst=GW_LAN) / IP(src="192.168.1.50", dst="198.51.100.7", ttl=1) / UDP()
    reason, q, out = rx(net, pkt)
    assert reason == Reason.TTL_EXPIRED and [e[ARP].pdst for _, e in out] == ["192.168.1.50"]
    assert q.generated_drops == [] and q.generated == 1  # the ARP request
    q = OutputQueue()
    neigh_timers(net, q, T0 + 3 * 10**9)
    assert q.generated_drops == [Reason.NEIGH_FAILED] and q.held == []


def test_other_host_frames_and_unknown_ethertypes_are_refused_at_l2(net):
    pkt = Ether(src=H10, dst="02:00:00:00:09:09") / IP(src="192.168.1.10", dst="198.51.100.7") / UDP()
    assert rx(net, pkt)[0] == Reason.MAC_MISMATCH
    assert rx(net, Ether(src=H10, dst=GW_LAN, type=0x88B5) / Raw(b"\0" * 46))[0] == Reason.UNHANDLED_PROTO
    q = OutputQueue()
    assert netif_receive_skb(net, q, np.zeros(60, np.uint8), 99, T0) == Reason.NO_LINK
