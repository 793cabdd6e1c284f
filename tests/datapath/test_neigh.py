"""Neighbour resolution through the public interface (replay): ARP and ND requests, the queue leaving
with the learnt address, overflow, failure with host unreachable, our NA to an NS; every run conserves
packets (rx = forwarded + dropped + local + held). Scapy checks the bytes and the checksums.

Linux: net/core/neighbour.c, net/ipv4/arp.c (arp_solicit, arp_process, arp_error_report),
net/ipv6/ndisc.c (ndisc_send_ns, ndisc_recv_ns, ndisc_recv_na, ndisc_error_report).
"""

from gateway import EXAMPLES, GW_LAN, GW_WAN, H10, UPSTREAM, run
from scapy.all import (
    ARP,
    ICMP,
    IP,
    UDP,
    Ether,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    Raw,
)

from flowpath.config.ipbatch import parse_network
from flowpath.config.nft import parse_ruleset

T = 1_700_000_000.0
ACCEPT = "table inet filter {\n chain forward {\n  type filter hook forward priority filter; policy accept;\n }\n}\n"


def net_without_upstream():
    text = (EXAMPLES / "gateway.ip").read_text()
    for line in ("neigh add 203.0.113.254 lladdr 02:00:00:00:02:fe dev wan0\n",
                 "neigh add 2001:db8:ff::fe lladdr 02:00:00:00:02:fe dev wan0\n"):  # fmt: skip
        text = text.replace(line, "")
    return parse_network(text, "gateway.ip")


def at(t, iface, pkt):
    pkt.time, pkt._fp_time_set = T + t, True
    return (iface, pkt)


def go(tmp_path, packets):
    out, s, res = run(
        tmp_path, packets, net=net_without_upstream(), rules=parse_ruleset(ACCEPT, "accept.nft")
    )
    assert (
        s["rx_packets"]
        == s["forwarded_packets"] + s["dropped_packets"] + s["local_packets"] + s["held_packets"]
    )
    return out, s, res


def udp4(sport, payload=b"x" * 20):
    return (
        Ether(src=H10, dst=GW_LAN)
        / IP(src="192.168.1.10", dst="198.51.100.7")
        / UDP(sport=sport, dport=53)
        / Raw(payload)
    )


def arp_reply():
    return Ether(src=UPSTREAM, dst=GW_WAN) / ARP(
        op=2, hwsrc=UPSTREAM, psrc="203.0.113.254", hwdst=GW_WAN, pdst="203.0.113.1"
    )


def test_arp_request_then_the_queue_leaves_in_order_with_the_learnt_mac(tmp_path):
    pkts = [at(0.001 * k, "lan0", udp4(k)) for k in (1, 2, 3)] + [at(0.5, "wan0", arp_reply())]
    out, s, res = go(tmp_path, pkts)
    req, *fwd = out["wan0"]
    assert req.dst == "ff:ff:ff:ff:ff:ff" and req.src == GW_WAN and req[ARP].op == 1
    assert (req[ARP].hwsrc, req[ARP].psrc, req[ARP].pdst) == (GW_WAN, "203.0.113.1", "203.0.113.254")
    assert [(e.dst, e[UDP].sport, e[IP].ttl) for e in fwd] == [(UPSTREAM, k, 63) for k in (1, 2, 3)]
    assert s["forwarded_packets"] == 3 and s["local_packets"] == 1 and s["held_packets"] == 0
    assert s["generated_packets"] == 1 and s["drops"] == {}
    assert "203.0.113.254 dev wan0 lladdr 02:00:00:00:02:fe REACHABLE" in res.worker.net.dev.show_neigh()


def test_queue_overflow_drops_the_oldest(tmp_path):
    """unres_qlen_bytes 212992: of 163 packets of 1328 bytes 160 fit; the 3 oldest go (NEIGH_QUEUEFULL)."""
    pkts = [at(0.0001 * k, "lan0", udp4(k, b"x" * 1300)) for k in range(163)] + [at(0.5, "wan0", arp_reply())]
    out, s, _ = go(tmp_path, pkts)
    assert s["drops"] == {"neigh_queuefull": 3} and s["forwarded_packets"] == 160
    assert [e[UDP].sport for e in out["wan0"][1:]] == list(range(3, 163))


def test_resolution_fails_after_three_requests_with_host_unreachable(tmp_path):
    """3 requests 1 s apart, then FAILED: the queued packet is dropped (neigh_failed) and its sender
    gets an ICMP host unreachable (arp_error_report); packets on the LAN carry packet time along."""
    ping = Ether(src=H10, dst=GW_LAN) / IP(src="192.168.1.10", dst="192.168.1.1") / ICMP()
    pkts = [at(0, "lan0", udp4(7))] + [at(t, "lan0", ping.copy()) for t in (1.2, 2.4, 3.6)]
    out, s, res = go(tmp_path, pkts)
    reqs = [e for e in out["wan0"] if ARP in e]
    assert len(reqs) == 3 and len(out["wan0"]) == 3
    [err] = [e for e in out["lan0"] if ICMP in e and e[ICMP].type == 3]
    assert (err[IP].src, err[IP].dst, err[ICMP].code) == ("192.168.1.1", "192.168.1.10", 1)
    assert err["IPerror"].dst == "198.51.100.7" and err["UDPerror"].sport == 7
    assert s["drops"] == {"neigh_failed": 1} and s["held_packets"] == 0 and s["local_packets"] == 3
    assert "203.0.113.254 dev wan0 FAILED" in res.worker.net.dev.show_neigh()


def _csum_ok(e):
    e2 = Ether(bytes(e))
    del e2["IPv6"].payload.cksum
    return bytes(Ether(bytes(e2))) == bytes(e)


def test_neighbour_solicitation_then_advertisement_releases_the_queue(tmp_path):
    udp6 = (
        Ether(src=H10, dst=GW_LAN) / IPv6(src="2001:db8:1::10", dst="2001:db8:2::7") / UDP(sport=9, dport=53)
    )
    na = (Ether(src=UPSTREAM, dst=GW_WAN) / IPv6(src="2001:db8:ff::fe", dst="2001:db8:ff::1", hlim=255)
          / ICMPv6ND_NA(tgt="2001:db8:ff::fe", R=1, S=1, O=1) / ICMPv6NDOptDstLLAddr(lladdr=UPSTREAM))  # fmt: skip
    out, s, res = go(tmp_path, [at(0, "lan0", udp6), at(0.3, "wan0", na)])
    ns, fwd = out["wan0"]
    assert ns.dst == "33:33:ff:00:00:fe" and ns.src == GW_WAN
    assert (ns[IPv6].src, ns[IPv6].dst, ns[IPv6].hlim) == ("2001:db8:ff::1", "ff02::1:ff00:fe", 255)
    assert (
        ns[ICMPv6ND_NS].tgt == "2001:db8:ff::fe"
        and ns[ICMPv6NDOptSrcLLAddr].lladdr == GW_WAN
        and _csum_ok(ns)
    )
    assert fwd.dst == UPSTREAM and fwd[UDP].sport == 9 and fwd[IPv6].hlim == 63
    assert s["forwarded_packets"] == 1 and s["local_packets"] == 1 and s["generated_packets"] == 1
    assert "2001:db8:ff::fe dev wan0 lladdr 02:00:00:00:02:fe REACHABLE" in res.worker.net.dev.show_neigh()


def test_nd_failure_sends_address_unreachable(tmp_path):
    udp6 = (
        Ether(src=H10, dst=GW_LAN) / IPv6(src="2001:db8:1::10", dst="2001:db8:2::7") / UDP(sport=9, dport=53)
    )
    ping = Ether(src=H10, dst=GW_LAN) / IP(src="192.168.1.10", dst="192.168.1.1") / ICMP()
    out, s, _ = go(tmp_path, [at(0, "lan0", udp6)] + [at(t, "lan0", ping.copy()) for t in (1.2, 2.4, 3.6)])
    assert len([e for e in out["wan0"] if ICMPv6ND_NS in e]) == 3
    [err] = [e for e in out["lan0"] if IPv6 in e]
    assert err[IPv6].dst == "2001:db8:1::10" and err["ICMPv6DestUnreach"].code == 3
    assert s["drops"] == {"neigh_failed": 1}


def test_our_advertisement_answers_a_solicitation(tmp_path):
    """ndisc_recv_ns: a solicited, override (and router) NA from the target, to the sender's address,
    with our link-layer address; the sender's entry is learnt STALE."""
    ns = (Ether(src=UPSTREAM, dst="33:33:ff:00:00:01") / IPv6(src="2001:db8:ff::fe", dst="ff02::1:ff00:1", hlim=255)
          / ICMPv6ND_NS(tgt="2001:db8:ff::1") / ICMPv6NDOptSrcLLAddr(lladdr=UPSTREAM))  # fmt: skip
    out, s, res = go(tmp_path, [at(0, "wan0", ns)])
    [na] = out["wan0"]
    assert na.dst == UPSTREAM and na.src == GW_WAN
    assert (na[IPv6].src, na[IPv6].dst, na[IPv6].hlim) == ("2001:db8:ff::1", "2001:db8:ff::fe", 255)
    assert (na[ICMPv6ND_NA].tgt, na[ICMPv6ND_NA].R, na[ICMPv6ND_NA].S, na[ICMPv6ND_NA].O) == (
        "2001:db8:ff::1",
        1,
        1,
        1,
    )
    assert na[ICMPv6NDOptDstLLAddr].lladdr == GW_WAN and _csum_ok(na)
    assert s["local_packets"] == 1 and s["generated_packets"] == 1
    assert "2001:db8:ff::fe dev wan0 lladdr 02:00:00:00:02:fe STALE" in res.worker.net.dev.show_neigh()
