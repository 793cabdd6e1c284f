"""The neighbour subsystem's steps on a `net` alone: resolution (an INCOMPLETE entry, its queue, the
ARP request), learning from the reply, and the timers (REACHABLE -> STALE -> DELAY -> PROBE, FAILED).

Linux: net/core/neighbour.c (__neigh_event_send, neigh_update, neigh_timer_handler), net/ipv4/arp.c
(arp_solicit, arp_process). The gateway is the bundled example without its upstream neighbour entry,
with a ruleset that forwards everything and translates nothing.
"""

import pytest
from example_gateway import EXAMPLES, GW_LAN, GW_WAN, H10, T0, UPSTREAM, WAN0, example_net, rx
from scapy.all import ARP, IP, UDP, Ether

from flowpath.inet.neigh_output import neigh_timers
from flowpath.inet.output_queue import OutputQueue
from flowpath.packet.reason import Reason

SEC = 10**9
ACCEPT = "table inet filter {\n chain forward {\n  type filter hook forward priority filter; policy accept;\n }\n}\n"


@pytest.fixture
def net():
    text = (EXAMPLES / "gateway.ip").read_text().replace("neigh add 203.0.113.254 lladdr 02:00:00:00:02:fe dev wan0\n", "")
    return example_net(text, ACCEPT)


def udp(sport=1000):
    return (
        Ether(src=H10, dst=GW_LAN) / IP(src="192.168.1.10", dst="198.51.100.7") / UDP(sport=sport, dport=53)
    )


def reply(dst=GW_WAN):
    return Ether(src=UPSTREAM, dst=dst) / ARP(
        op=2, hwsrc=UPSTREAM, psrc="203.0.113.254", hwdst=GW_WAN, pdst="203.0.113.1"
    )


def test_unresolved_next_hop_queues_the_packet_and_broadcasts_a_request(net):
    """__neigh_event_send: an INCOMPLETE entry, the packet queued (held), arp_solicit broadcast from the
    output device's address; `ip neigh show` lists it INCOMPLETE, without lladdr."""
    reason, q, [(ifx, e)] = rx(net, udp())
    assert reason == Reason.NEIGH_QUEUED and ifx == WAN0 and q.generated == 1 and q.held == []
    assert e.dst == "ff:ff:ff:ff:ff:ff" and e.src == GW_WAN and e[ARP].op == 1
    assert (e[ARP].hwsrc, e[ARP].psrc, e[ARP].hwdst, e[ARP].pdst) == (
        GW_WAN,
        "203.0.113.1",
        "00:00:00:00:00:00",
        "203.0.113.254",
    )
    assert "203.0.113.254 dev wan0 INCOMPLETE\n" in net.dev.show_neigh()


def test_the_reply_sends_the_queue_in_order_with_the_learnt_address(net):
    """neigh_update: the reply makes the entry REACHABLE and its queue leaves at once, in order; each
    queued packet's fate is TX through q.held."""
    for sport in (1, 2, 3):
        assert rx(net, udp(sport))[0] == Reason.NEIGH_QUEUED
    reason, q, out = rx(net, reply(), WAN0, T0 + SEC // 2)
    assert reason == Reason.LOCAL_IN and q.held == [(Reason.TX, Reason.NEIGH_QUEUED)] * 3
    assert [(ifx, e.dst, e.src, e[UDP].sport, e[IP].ttl) for ifx, e in out] == [
        (WAN0, UPSTREAM, GW_WAN, s, 63) for s in (1, 2, 3)
    ]
    assert "203.0.113.254 dev wan0 lladdr 02:00:00:00:02:fe REACHABLE\n" in net.dev.show_neigh()
    reason, q, [(ifx, e)] = rx(net, udp(4), ts_ns=T0 + SEC)
    assert reason == Reason.TX and e.dst == UPSTREAM  # resolved: no request, no queue


def test_a_broadcast_reply_or_a_request_teaches_stale(net):
    """arp_process: a reply that was not unicast to us, or the host's request for our address
    (neigh_event_ns), update the entry STALE; the queue leaves as well."""
    rx(net, udp())
    reason, q, out = rx(net, reply("ff:ff:ff:ff:ff:ff"), WAN0)
    assert [e[UDP].sport for _, e in out] == [
        1000
    ] and "lladdr 02:00:00:00:02:fe STALE" in net.dev.show_neigh()
    req = Ether(src=H10, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=H10, psrc="192.168.1.77", pdst="192.168.1.1"
    )
    rx(net, req)
    assert "192.168.1.77 dev lan0 lladdr 02:00:00:00:01:0a STALE\n" in net.dev.show_neigh()


def test_requests_every_second_then_failed_with_host_unreachable(net):
    """neigh_timer_handler: retrans_time 1 s, mcast_solicit 3; then neigh_invalidate drops the queue
    (NEIGH_FAILED) with an ICMP host unreachable each (arp_error_report)."""
    rx(net, udp())
    sent = []
    for t in (1, 2):
        q = OutputQueue()
        neigh_timers(net, q, T0 + t * SEC)
        sent += [Ether(f)[ARP].pdst for _, f in q.frames]
        assert q.generated == 1 and not q.held
    assert sent == ["203.0.113.254"] * 2
    q = OutputQueue()
    neigh_timers(net, q, T0 + 3 * SEC)
    assert q.held == [(Reason.NEIGH_FAILED, Reason.NEIGH_QUEUED)] and q.frames == []
    [err] = q.local_out
    e = Ether(err.tobytes())
    assert (e[IP].src, e[IP].dst, e["ICMP"].type, e["ICMP"].code) == ("192.168.1.1", "192.168.1.10", 3, 1)
    assert "203.0.113.254 dev wan0 FAILED\n" in net.dev.show_neigh()


def test_reachable_goes_stale_then_delay_then_a_unicast_probe(net):
    """REACHABLE for base_reachable_time (30 s exactly here), then STALE, still used: DELAY, and after
    delay_first_probe_time (5 s) a unicast request to the known address (PROBE)."""
    rx(net, udp())
    rx(net, reply(), WAN0)
    neigh_timers(net, OutputQueue(), T0 + 29 * SEC)
    assert "REACHABLE" in net.dev.show_neigh()
    neigh_timers(net, OutputQueue(), T0 + 30 * SEC)
    assert "lladdr 02:00:00:00:02:fe STALE" in net.dev.show_neigh()
    reason, q, [(_, e)] = rx(net, udp(), ts_ns=T0 + 31 * SEC)
    assert reason == Reason.TX and e.dst == UPSTREAM and "DELAY" in net.dev.show_neigh()
    q = OutputQueue()
    neigh_timers(net, q, T0 + 36 * SEC)
    [(ifx, e)] = [(ifx, Ether(f)) for ifx, f in q.frames]
    assert (
        e.dst == UPSTREAM
        and e[ARP].op == 1
        and e[ARP].pdst == "203.0.113.254"
        and "PROBE" in net.dev.show_neigh()
    )
    rx(net, reply(), WAN0, T0 + 36 * SEC + 1)
    assert "REACHABLE" in net.dev.show_neigh()


def test_permanent_entries_never_change(net):
    """`neigh add` entries: no timers, no learning."""
    before = net.dev.show_neigh()
    rx(
        net,
        Ether(src="02:00:00:00:09:09", dst=GW_LAN)
        / ARP(op=2, hwsrc="02:00:00:00:09:09", psrc="192.168.1.10", pdst="192.168.1.1"),
    )
    neigh_timers(net, OutputQueue(), T0 + 100 * SEC)
    assert net.dev.show_neigh() == before
