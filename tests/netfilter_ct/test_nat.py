"""NAT: binding, port selection and packet rewriting, checked byte by byte with Scapy.

Linux: nf_nat_core.c (nf_nat_setup_info, get_unique_tuple), nf_nat_proto.c (manip and checksums).
Every rewritten packet is re-dissected by Scapy and its checksums recomputed; they must match ours.
"""

import ipaddress

import pytest
from ct_helpers import SEC, Path, assert_csums_ok, inet_csum, l3, skb_of
from scapy.all import (
    ICMP,
    IP,
    TCP,
    UDP,
    Ether,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6TimeExceeded,
    IPerror,
    IPv6,
    TCPerror,
    raw,
)

from flowpath.netfilter.conntrack import Conntrack
from flowpath.netfilter.constants import (
    IPS_DST_NAT,
    IPS_DST_NAT_DONE,
    IPS_SRC_NAT,
    IPS_SRC_NAT_DONE,
    NF_DROP,
    NF_INET_POST_ROUTING,
    NF_INET_PRE_ROUTING,
    NF_NAT_MANIP_DST,
    NF_NAT_MANIP_SRC,
)
from flowpath.netfilter.nat import nf_nat_inet_fn
from flowpath.netfilter.nat_range import (
    NF_NAT_RANGE_MAP_IPS,
    NF_NAT_RANGE_PROTO_RANDOM,
    NF_NAT_RANGE_PROTO_SPECIFIED,
    NatRequest,
    NfNatRange,
)
from flowpath.packet.reason import Reason

C, C2, S, G = "10.0.0.2", "10.0.0.3", "192.168.1.9", "198.51.100.1"
C6, S6, G6 = "fd00::2", "2001:db8:1::9", "2001:db8::1"


def ip(a: str) -> int:
    return int(ipaddress.ip_address(a))


def masq(addr=G):
    return lambda skb: NatRequest(NF_NAT_MANIP_SRC, NfNatRange(0, ip(addr), ip(addr)), masquerade=True)


def snat(lo, hi=None, flags=NF_NAT_RANGE_MAP_IPS, pmin=0, pmax=0):
    rng = NfNatRange(flags, ip(lo), ip(hi or lo), pmin, pmax)
    return lambda skb: NatRequest(NF_NAT_MANIP_SRC, rng)


def dnat(addr, port=None):
    flags = NF_NAT_RANGE_MAP_IPS | (NF_NAT_RANGE_PROTO_SPECIFIED if port else 0)
    rng = NfNatRange(flags, ip(addr), ip(addr), port or 0, port or 0)
    return lambda skb: NatRequest(NF_NAT_MANIP_DST, rng)


def test_masquerade_tcp_both_directions_and_listing(ctt):
    path = Path(ctt, snat=masq())
    syn = path.forward(IP(src=C, dst=S) / TCP(sport=40000, dport=80, flags="S", seq=1) / b"hello", 0)
    p = l3(syn)
    assert (p.src, p.dst, p[TCP].sport, p[TCP].dport) == (G, S, 40000, 80)  # source port kept
    assert p[TCP].load == b"hello"
    assert_csums_ok(syn)
    assert syn.ct.status & IPS_SRC_NAT and not syn.ct.status & IPS_DST_NAT
    assert syn.ct.status & IPS_SRC_NAT_DONE and syn.ct.status & IPS_DST_NAT_DONE
    assert (syn.saddr, syn.sport) == (ip(G), 40000)  # the skb view follows the rewrite

    synack = path.forward(IP(src=S, dst=G) / TCP(sport=80, dport=40000, flags="SA", ack=2), SEC)
    p = l3(synack)
    assert (p.src, p.dst, p[TCP].sport, p[TCP].dport) == (S, C, 80, 40000)
    assert_csums_ok(synack)
    path.forward(IP(src=C, dst=S) / TCP(sport=40000, dport=80, flags="A", seq=2, ack=1), 2 * SEC)
    assert ctt.listing(3 * SEC) == (
        "tcp      6 431999 ESTABLISHED src=10.0.0.2 dst=192.168.1.9 sport=40000 dport=80 "
        "src=192.168.1.9 dst=198.51.100.1 sport=80 dport=40000 [ASSURED] mark=0 use=1\n"
    )


def test_port_clash_picks_another_port(ctt):
    """get_unique_tuple: a second client with the same source port gets the next free port."""
    path = Path(ctt, snat=masq())
    a = path.forward(IP(src=C, dst=S) / TCP(sport=40000, dport=80, flags="S"))
    b = path.forward(IP(src=C2, dst=S) / TCP(sport=40000, dport=80, flags="S"))
    assert l3(a)[TCP].sport == 40000
    assert l3(b)[TCP].sport == 40001
    assert_csums_ok(b)
    back = path.forward(IP(src=S, dst=G) / TCP(sport=80, dport=40001, flags="SA"))
    assert (l3(back).dst, l3(back)[TCP].dport) == (C2, 40000)
    assert_csums_ok(back)


def test_low_ports_stay_low(ctt):
    """nf_nat_l4proto_unique_tuple: a clashing port below 1024 is remapped below 1024."""
    path = Path(ctt, snat=masq())
    path.forward(IP(src=C, dst=S) / UDP(sport=123, dport=123))
    b = path.forward(IP(src=C2, dst=S) / UDP(sport=123, dport=123))
    assert 1 <= l3(b)[UDP].sport <= 511 and l3(b)[UDP].sport != 123


def test_dnat_with_port_both_directions(ctt):
    path = Path(ctt, dnat=dnat("10.0.0.5", 80))
    req = path.forward(IP(src="203.0.113.7", dst=G) / TCP(sport=5555, dport=8080, flags="S"))
    p = l3(req)
    assert (p.dst, p[TCP].dport, p.src, p[TCP].sport) == ("10.0.0.5", 80, "203.0.113.7", 5555)
    assert (req.daddr, req.dport) == (ip("10.0.0.5"), 80)  # routing after DNAT sees the new address
    assert_csums_ok(req)
    assert req.ct.status & IPS_DST_NAT and not req.ct.status & IPS_SRC_NAT
    rep = path.forward(IP(src="10.0.0.5", dst="203.0.113.7") / TCP(sport=80, dport=5555, flags="SA"))
    p = l3(rep)
    assert (p.src, p[TCP].sport) == (G, 8080)
    assert_csums_ok(rep)


def test_udp_zero_checksum_stays_zero_and_nonzero_verifies(ctt):
    """__udp_manip_pkt: no checksum (0) means none; a real one is patched, never to 0."""
    path = Path(ctt, snat=masq())
    z = path.forward(IP(src=C, dst=S) / UDP(sport=5000, dport=53, chksum=0) / b"q")
    assert l3(z).src == G and l3(z)[UDP].chksum == 0
    n = path.forward(IP(src=C, dst=S) / UDP(sport=5001, dport=53) / b"q")
    assert l3(n)[UDP].chksum != 0
    assert_csums_ok(n)
    r = path.forward(IP(src=S, dst=G) / UDP(sport=53, dport=5001) / b"a")
    assert (l3(r).dst, l3(r)[UDP].dport) == (C, 5001)
    assert_csums_ok(r)


def test_icmp_echo_id_is_translated_on_clash(ctt):
    path = Path(ctt, snat=masq())
    a = path.forward(IP(src=C, dst=S) / ICMP(id=7, seq=1) / b"ping")
    b = path.forward(IP(src=C2, dst=S) / ICMP(id=7, seq=1) / b"ping")
    assert l3(a)[ICMP].id == 7 and l3(b)[ICMP].id != 7
    assert_csums_ok(b)
    new_id = l3(b)[ICMP].id
    r = path.forward(IP(src=S, dst=G) / ICMP(type=0, id=new_id, seq=1) / b"ping")
    assert (l3(r).dst, l3(r)[ICMP].id) == (C2, 7)
    assert_csums_ok(r)
    assert f"type=0 code=0 id={new_id} mark=0" in ctt.listing(0)


def test_icmp_error_inner_packet_translated(ctt):
    """nf_nat_icmp_reply_translation: the embedded (masqueraded) segment goes back to the client's view."""
    path = Path(ctt, snat=masq())
    path.forward(IP(src=C, dst=S) / TCP(sport=40000, dport=80, flags="S"))
    b = path.forward(IP(src=C2, dst=S) / TCP(sport=40000, dport=80, flags="S"))  # mapped to 40001
    sent = l3(b)
    err = IP(src="172.16.0.1", dst=G) / ICMP(type=11, code=0) / raw(sent)[:28]
    skb = path.forward(err)
    p = l3(skb)
    assert (p.src, p.dst) == ("172.16.0.1", C2)
    inner = p[IPerror]
    assert (inner.src, inner.dst, inner[TCPerror].sport, inner[TCPerror].dport) == (C2, S, 40000, 80)
    assert inet_csum(raw(inner)[:20]) == 0xFFFF  # inner IPv4 header checksum patched
    # Scapy would pad the 8-byte inner TCP header when rebuilding, so sum the bytes directly.
    frame = skb.tobytes()[14:]
    assert inet_csum(frame[:20]) == 0xFFFF and inet_csum(frame[20:]) == 0xFFFF  # outer IP, ICMP


def test_icmp_error_full_inner_tcp_checksum(ctt):
    """With the whole inner TCP header present its checksum is patched too (tcp_manip_pkt hdrsize)."""
    path = Path(ctt, dnat=dnat("10.0.0.5", 80))
    path.forward(IP(src="203.0.113.7", dst=G) / TCP(sport=5555, dport=8080, flags="S"))
    inner = IP(src="203.0.113.7", dst="10.0.0.5") / TCP(
        sport=5555, dport=80, flags="S"
    )  # as the server got it
    err = IP(src="10.0.0.5", dst="203.0.113.7") / ICMP(type=3, code=3) / raw(inner)
    skb = path.forward(err)
    assert skb.ct is not None
    p = l3(skb)
    assert (p.src, p.dst) == (G, "203.0.113.7")  # from the address the client talked to
    fixed = IP(raw(p[IPerror]))
    assert (fixed.dst, fixed[TCP].dport, fixed.src, fixed[TCP].sport) == (G, 8080, "203.0.113.7", 5555)
    check = fixed[TCP].chksum
    del fixed[TCP].chksum
    assert IP(raw(fixed))[TCP].chksum == check  # Scapy's own TCP checksum agrees
    assert_csums_ok(skb)


def test_null_binding_leaves_packet_alone(ctt):
    path = Path(ctt)
    pkt = IP(src=C, dst=S) / TCP(sport=1234, dport=80, flags="S")
    skb = path.forward(pkt)
    assert raw(l3(skb)) == raw(pkt)
    assert skb.ct.status & (IPS_SRC_NAT_DONE | IPS_DST_NAT_DONE) == IPS_SRC_NAT_DONE | IPS_DST_NAT_DONE
    assert not skb.ct.status & (IPS_SRC_NAT | IPS_DST_NAT)


def test_null_binding_clash_remaps_port(ctt):
    """A connection without NAT whose reply would clash with a masqueraded one moves its port (Linux)."""
    path = Path(ctt, snat=lambda skb: masq()(skb) if skb.saddr == ip(C) else None)
    path.forward(IP(src=C, dst=S) / TCP(sport=40000, dport=80, flags="S"))
    b = path.forward(IP(src=G, dst=S) / TCP(sport=40000, dport=80, flags="S"))
    assert l3(b).src == G and l3(b)[TCP].sport != 40000
    assert_csums_ok(b)


def test_port_range_exhausted_drops(ctt):
    req = snat(G, flags=NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED, pmin=1000, pmax=1001)
    path = Path(ctt, snat=req)
    ports = {
        l3(path.forward(IP(src=f"10.0.0.{i}", dst=S) / UDP(sport=9, dport=9)))[UDP].sport for i in (2, 3)
    }
    assert ports == {1000, 1001}
    skb = skb_of(IP(src="10.0.0.4", dst=S) / UDP(sport=9, dport=9))
    ctt.nf_conntrack_in(skb, NF_INET_PRE_ROUTING)
    v = nf_nat_inet_fn(ctt, skb, NF_INET_POST_ROUTING, req)
    assert v == NF_DROP and v.reason == Reason.NAT_NO_PORTS


def test_random_range_is_seeded():
    """NF_NAT_RANGE_PROTO_RANDOM uses the table's seeded PRNG: same seed, same ports."""
    flags = NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_RANDOM

    def ports(seed):
        table = Conntrack(seed=seed)
        path = Path(table, snat=snat(G, flags=flags))
        return [
            l3(path.forward(IP(src=C, dst=S) / UDP(sport=5000 + i, dport=53)))[UDP].sport for i in range(4)
        ]

    assert ports(1) == ports(1)
    assert ports(1) != ports(2)
    assert all(1024 <= p <= 65535 for p in ports(1))
    assert ports(1) != [5000, 5001, 5002, 5003]


def test_same_source_keeps_its_mapping(ctt):
    """find_appropriate_src: a client keeps its mapped address and port towards another server."""
    path = Path(ctt, snat=snat("198.51.100.10", "198.51.100.20"))
    a = path.forward(IP(src=C, dst=S) / UDP(sport=5000, dport=53))
    b = path.forward(IP(src=C, dst="192.168.7.7") / UDP(sport=5000, dport=53))
    assert (l3(a).src, l3(a)[UDP].sport) == (l3(b).src, l3(b)[UDP].sport)
    assert l3(a).src.startswith("198.51.100.")


def test_do_chain_verdicts_and_single_call(ctt):
    calls = []

    def chain(skb):
        calls.append(skb)
        return NF_DROP

    skb = skb_of(IP(src=C, dst=S) / UDP(sport=1, dport=2))
    ctt.nf_conntrack_in(skb, NF_INET_PRE_ROUTING)
    v = nf_nat_inet_fn(ctt, skb, NF_INET_PRE_ROUTING, chain)
    assert v == NF_DROP and v.reason == Reason.NETFILTER_DROP

    counted = []
    path = Path(ctt, snat=lambda skb: counted.append(1) or masq()(skb))
    path.forward(IP(src=C, dst=S) / UDP(sport=3, dport=4))
    path.forward(IP(src=C, dst=S) / UDP(sport=3, dport=4))
    path.forward(IP(src=S, dst=G) / UDP(sport=4, dport=3))
    assert len(counted) == 1  # only the first packet runs the nat chain


def test_masquerade_without_address_drops(ctt):
    skb = skb_of(IP(src=C, dst=S) / UDP(sport=1, dport=2))
    ctt.nf_conntrack_in(skb, NF_INET_PRE_ROUTING)
    req = NatRequest(NF_NAT_MANIP_SRC, NfNatRange(), masquerade=True)
    assert nf_nat_inet_fn(ctt, skb, NF_INET_POST_ROUTING, lambda s: req) == NF_DROP


def test_ipv6_masquerade_tcp_and_echo(ctt):
    path = Path(ctt, snat=masq(G6))
    syn = path.forward(IPv6(src=C6, dst=S6) / TCP(sport=40000, dport=443, flags="S") / b"x")
    assert (l3(syn).src, l3(syn)[TCP].sport) == (G6, 40000)
    assert_csums_ok(syn)
    back = path.forward(IPv6(src=S6, dst=G6) / TCP(sport=443, dport=40000, flags="SA"))
    assert l3(back).dst == C6
    assert_csums_ok(back)
    ping = path.forward(IPv6(src=C6, dst=S6) / ICMPv6EchoRequest(id=5, seq=1))
    assert l3(ping).src == G6
    assert_csums_ok(ping)
    pong = path.forward(IPv6(src=S6, dst=G6) / ICMPv6EchoReply(id=5, seq=1))
    assert l3(pong).dst == C6
    assert_csums_ok(pong)
    assert "src=2001:db8:1::9 dst=2001:db8::1 sport=443 dport=40000" in ctt.listing(0)


def test_ipv6_udp_and_icmpv6_error_translation(ctt):
    path = Path(ctt, snat=masq(G6))
    out = path.forward(IPv6(src=C6, dst=S6) / UDP(sport=7000, dport=53) / b"q")
    assert_csums_ok(out)
    err = IPv6(src="2001:db8:ff::1", dst=G6) / ICMPv6TimeExceeded() / raw(l3(out))
    skb = path.forward(err)
    p = l3(skb)
    assert p.dst == C6
    inner = IPv6(raw(p[ICMPv6TimeExceeded].payload))
    assert (inner.src, inner[UDP].sport) == (C6, 7000)
    check = inner[UDP].chksum
    del inner[UDP].chksum
    assert IPv6(raw(inner))[UDP].chksum == check  # inner UDP checksum patched for the new address
    assert_csums_ok(skb)  # the ICMPv6 checksum over the new outer pseudo-header


@pytest.mark.parametrize("hook", [NF_INET_PRE_ROUTING, NF_INET_POST_ROUTING])
def test_request_for_wrong_manip_type_is_a_caller_bug(ctt, hook):
    skb = skb_of(IP(src=C, dst=S) / UDP(sport=1, dport=2))
    ctt.nf_conntrack_in(skb, NF_INET_PRE_ROUTING)
    wrong = dnat(S) if hook == NF_INET_POST_ROUTING else masq()
    with pytest.raises(ValueError):
        nf_nat_inet_fn(ctt, skb, hook, wrong)


def test_timeouts_unchanged_by_nat(ctt):
    path = Path(ctt, snat=masq())
    skb = path.forward(IP(src=C, dst=S) / UDP(sport=1, dport=2), 5 * SEC)
    assert skb.ct.timeout_ns == 35 * SEC


def test_fragmented_datagram_is_masqueraded_whole(ctt):
    """nf_defrag runs before conntrack (-400), so NAT rewrites the whole datagram: address, port and the
    UDP checksum over all of it. Scapy verifies the result."""
    from scapy.all import fragment

    from flowpath.netfilter.constants import NF_ACCEPT, NF_STOLEN
    from flowpath.netfilter.nf_defrag import NfDefrag

    defrag = NfDefrag()
    frags = fragment(IP(src=C, dst=S, id=7) / UDP(sport=5000, dport=53) / (b"z" * 200), fragsize=64)
    for f in frags[:-1]:
        assert defrag.nf_defrag(skb_of(f), NF_INET_PRE_ROUTING) == (NF_STOLEN, Reason.IP_DEFRAG_QUEUED)
    skb = skb_of(frags[-1])
    assert defrag.nf_defrag(skb, NF_INET_PRE_ROUTING) == (NF_ACCEPT, None)
    whole = l3(Path(ctt, snat=masq()).forward(Ether(skb.tobytes())))
    assert (whole.src, whole[UDP].sport, bytes(whole[UDP].payload)) == (G, 5000, b"z" * 200)
    assert inet_csum(raw(whole)[:20]) == 0xFFFF
    check = whole[UDP].chksum
    del whole[UDP].chksum
    assert IP(raw(whole))[UDP].chksum == check


def test_netmap_prefix_keeps_host_part(ctt):
    """nft_nat_setup_netmap: `snat ip prefix to 198.51.100.0/24` maps 10.0.0.2 to 198.51.100.2."""
    from flowpath.netfilter.nat_range import NF_NAT_RANGE_NETMAP

    path = Path(
        ctt, snat=snat("198.51.100.0", "198.51.100.255", flags=NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_NETMAP)
    )
    a = path.forward(IP(src="10.0.0.2", dst=S) / UDP(sport=1, dport=2))
    b = path.forward(IP(src="10.0.0.77", dst=S) / UDP(sport=1, dport=2))
    assert (l3(a).src, l3(b).src) == ("198.51.100.2", "198.51.100.77")
    assert_csums_ok(b)


def test_many_clients_on_one_source_port_all_get_ports(ctt):
    """Past the first NF_NAT_MAX_ATTEMPTS probes the search jumps elsewhere in the range, so 400
    clients sharing source port 40000 towards one server are all mapped (none dropped)."""
    path = Path(ctt, snat=masq())
    ports = set()
    for i in range(400):
        skb = path.forward(IP(src=f"10.1.{i // 250}.{i % 250 + 1}", dst=S) / UDP(sport=40000, dport=53))
        ports.add(l3(skb)[UDP].sport)
    assert len(ports) == 400 and all(1024 <= p <= 65535 for p in ports)
