"""nf_flow_offload_hook over Scapy-built frames: hits rewrite exactly as the Scapy reference says,
every exception leaves the packet untouched with its reason (nf_flow_table_ip.c)."""

from __future__ import annotations

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether

from flowpath.flowtable import F_CLOSING, F_TEARDOWN, Flowtable, FlowTuple
from flowpath.flowtable.ip import SLOW_MALFORMED
from flowpath.packet.reason import Reason

NAT_CASES = {
    "none": {},
    "snat": {"snat": ("192.0.2.1", 61000)},
    "dnat": {"dnat": ("10.9.9.9", 8053)},
    "both": {"snat": ("192.0.2.1", 61000), "dnat": ("10.9.9.9", 8053)},
}
NAT6_CASES = {
    "none": {},
    "snat": {"snat": ("2001:db8:ffff::1", 61000)},
    "both": {"snat": ("2001:db8:ffff::1", 61000), "dnat": ("fd00::99", 8053)},
}


def _run(ftk, ft, frame, iif, now_ns=0):
    b = ftk.batch_of(frame, iif=iif)
    res = ftk.hook(b, ft, now_ns)
    return b, res


def _check_hit(ftk, ft, t: FlowTuple, frame, iif):
    e = ft.lookup(t)
    assert e >= 0
    b, res = _run(ftk, ft, frame, iif)
    assert b.verdict[0] == Reason.FLOW_FORWARD, Reason(b.verdict[0]).name
    assert res.forwarded == 1 and b.flow[0] == e
    out = b.frame_bytes(0)
    assert out == ftk.ref_forward(bytes(frame), ft, e)
    assert b.oif[0] == ft.entries()[[d["entry"] for d in ft.entries()].index(e)]["oifidx"]
    return Ether(out)


@pytest.mark.parametrize("l4", [6, 17])
@pytest.mark.parametrize("nat", list(NAT_CASES))
def test_ipv4_hit_rewrites_as_scapy_says_both_directions(ftk, l4, nat):
    """nf_flow_offload_forward: NAT from the opposite tuple (ports, then addresses), ip_decrease_ttl,
    cached MACs; Scapy's full recompute agrees with the incremental checksums."""
    ft = Flowtable("t")
    _, orig, reply = ftk.flow(ft, l4=l4, **NAT_CASES[nat])
    p = _check_hit(ftk, ft, orig, ftk.pkt(orig), ftk.IIF_C)
    assert p[IP].ttl == 63 and p.dst == ftk.MAC_S and p.src == ftk.MAC_GW_OUT
    if nat in ("snat", "both"):
        assert (p[IP].src, p[IP].payload.sport) == ("192.0.2.1", 61000)
    if nat in ("dnat", "both"):
        assert (p[IP].dst, p[IP].payload.dport) == ("10.9.9.9", 8053)
    q = _check_hit(ftk, ft, reply, ftk.pkt(reply), ftk.IIF_S)  # the reply is un-NATed
    assert (q[IP].src, q[IP].dst, q[IP].payload.sport, q[IP].payload.dport) == (
        "198.51.100.7",
        "10.0.0.2",
        53,
        40000,
    )
    assert q.dst == ftk.MAC_C


@pytest.mark.parametrize("l4", [6, 17])
@pytest.mark.parametrize("nat", list(NAT6_CASES))
def test_ipv6_hit_rewrites_as_scapy_says(ftk, l4, nat):
    """nf_flow_offload_ipv6_hook: hop_limit - 1, NAT via inet_proto_csum_replace16."""
    ft = Flowtable("t6")
    _, orig, reply = ftk.flow(ft, l3=6, l4=l4, c="2001:db8::2", s="2001:db8:1::7", **NAT6_CASES[nat])
    p = _check_hit(ftk, ft, orig, ftk.pkt(orig), ftk.IIF_C)
    assert p[IPv6].hlim == 63
    _check_hit(ftk, ft, reply, ftk.pkt(reply), ftk.IIF_S)


@pytest.mark.parametrize("l3", [4, 6])
def test_udp_zero_checksum_stays_zero(ftk, l3):
    """nf_flow_nat_port_udp / nf_flow_nat_ipv6_udp: only a non-zero UDP checksum is updated."""
    ft = Flowtable("z")
    kw = {"c": "2001:db8::2", "s": "2001:db8:1::7", "snat": ("2001:db8:ffff::1", 61000)} if l3 == 6 else {}
    if l3 == 4:
        kw["snat"] = ("192.0.2.1", 61000)
    _, orig, _ = ftk.flow(ft, l3=l3, **kw)
    p = _check_hit(ftk, ft, orig, ftk.pkt(orig, udp0=True), ftk.IIF_C)
    assert p[UDP].chksum == 0


def test_vlan_out_pushes_a_tag(ftk):
    """The reverse tuple's VLAN tag is pushed (nf_flow_encap_push, skb_vlan_push): head moves back 4
    bytes, len grows by 4."""
    ft = Flowtable("v")
    _, orig, _ = ftk.flow(ft, vlan_out=(3 << 13) | 42)
    b = ftk.batch_of(ftk.pkt(orig))
    head0, len0 = int(b.head[0]), int(b.len[0])
    ftk.hook(b, ft, 0)
    assert (b.head[0], b.len[0]) == (head0 - 4, len0 + 4)
    p = Ether(b.frame_bytes(0))
    assert p[Dot1Q].vlan == 42 and p[Dot1Q].prio == 3 and p[Dot1Q].type == 0x0800
    assert b.frame_bytes(0) == ftk.ref_forward(bytes(ftk.pkt(orig)), ft, ft.lookup(orig))


def test_ethernet_padding_is_trimmed_on_a_hit(ftk):
    """Deviation (documented): like ip_rcv's trim on the classic path, a hit drops Ethernet padding."""
    ft = Flowtable("p")
    _, orig, _ = ftk.flow(ft, l4=6)
    frame = bytes(ftk.pkt(orig, payload=b"")) + b"\0" * 6  # 54 bytes + padding to 60
    b, _ = _run(ftk, ft, frame, ftk.IIF_C)
    assert b.verdict[0] == Reason.FLOW_FORWARD and b.len[0] == 54


def _slow_cases(ftk, orig):
    ip = dict(src="10.0.0.2", dst="198.51.100.7")
    udp = UDP(sport=40000, dport=53)
    eth = Ether(dst=ftk.MAC_GW_IN)
    return {
        "arp": (eth / ARP(), Reason.SLOW_NOT_IP),
        "vlan": (eth / Dot1Q(vlan=5) / IP(**ip) / udp, Reason.SLOW_NO_ENTRY),  # parsed: the tag is key
        "three_tags": (eth / Dot1AD(vlan=5) / Dot1Q(vlan=6) / Dot1Q(vlan=7) / IP(**ip) / udp, Reason.SLOW_NOT_IP),
        "ad_inside_q": (eth / Dot1Q(vlan=5) / Dot1AD(vlan=6) / IP(**ip) / udp, Reason.SLOW_NOT_IP),
        "vlan_truncated": (bytes(eth / Dot1Q(vlan=5) / IP(**ip) / udp)[:16], SLOW_MALFORMED),
        "options": (eth / IP(**ip, options=[IPOption_RR()]) / udp, Reason.SLOW_IP_OPTIONS),
        "mf": (eth / IP(**ip, flags="MF") / udp, Reason.SLOW_FRAGMENT),
        "offset": (eth / IP(**ip, frag=10, proto=17) / (b"x" * 16), Reason.SLOW_FRAGMENT),
        "ttl1": (eth / IP(**ip, ttl=1) / udp, Reason.SLOW_TTL),
        "ttl0": (eth / IP(**ip, ttl=0) / udp, Reason.SLOW_TTL),
        "icmp": (eth / IP(**ip) / ICMP(), Reason.SLOW_L4PROTO),
        "miss": (eth / IP(**ip) / UDP(sport=40001, dport=53), Reason.SLOW_NO_ENTRY),
        "wrong_iif_is_a_miss": (None, Reason.SLOW_NO_ENTRY),
        "truncated_l4": (bytes(eth / IP(**ip) / udp)[:38], SLOW_MALFORMED),
        "truncated_ip": (bytes(eth / IP(**ip) / udp)[:30], SLOW_MALFORMED),
        "tot_len_over_frame": (eth / IP(**ip, len=200) / udp, SLOW_MALFORMED),
        "bad_version": (bytes(eth / IP(**ip) / udp)[:14] + b"\x65" + bytes(eth / IP(**ip) / udp)[15:], SLOW_MALFORMED),
        "runt": (b"\x02" * 10, SLOW_MALFORMED),
        "v6_hlim1": (eth / IPv6(src="2001:db8::2", dst="2001:db8:1::7", hlim=1) / udp, Reason.SLOW_TTL),
        "v6_hbh": (eth / IPv6(src="2001:db8::2", dst="2001:db8:1::7") / IPv6ExtHdrHopByHop() / udp, Reason.SLOW_EXTHDR),
        "v6_frag": (eth / IPv6(src="2001:db8::2", dst="2001:db8:1::7") / IPv6ExtHdrFragment() / udp, Reason.SLOW_FRAGMENT),
        "v6_truncated": (bytes(eth / IPv6(src="2001:db8::2", dst="2001:db8:1::7") / udp)[:60], SLOW_MALFORMED),
    }  # fmt: skip


@pytest.mark.parametrize(
    "case",
    ["arp", "vlan", "three_tags", "ad_inside_q", "vlan_truncated", "options", "mf", "offset", "ttl1", "ttl0", "icmp", "miss", "wrong_iif_is_a_miss",
     "truncated_l4", "truncated_ip", "tot_len_over_frame", "bad_version", "runt", "v6_hlim1", "v6_hbh",
     "v6_frag", "v6_truncated"],
)  # fmt: skip
def test_exception_goes_slow_untouched(ftk, case):
    """nf_flow_tuple_ip/ipv6 exceptions: the packet goes to the classic path byte for byte as it came
    (all checks run before any write), with the reason that names the exception."""
    ft = Flowtable("x")
    _, orig, _ = ftk.flow(ft)
    ftk.flow(ft, l3=6, c="2001:db8::2", s="2001:db8:1::7")
    frame, reason = _slow_cases(ftk, orig)[case]
    iif = ftk.IIF_C
    if frame is None:
        frame, iif = ftk.pkt(orig), ftk.IIF_S
    frame = bytes(frame)
    b = ftk.batch_of(frame, iif=iif)
    b.flow[0] = 1234  # a stale value from an earlier batch is overwritten
    head, ln, data = b.head.copy(), b.len.copy(), b.data.copy()
    res = ftk.hook(b, ft, 0)
    assert b.verdict[0] == reason, Reason(b.verdict[0]).name
    assert res.slow == 1 and res.forwarded == 0 and res.ngroups == 0
    assert np.array_equal(b.data, data) and np.array_equal(b.head, head) and np.array_equal(b.len, ln)
    assert b.oif[0] == 0 and b.flow[0] == -1


def test_mtu_exceeded_goes_slow_with_its_entry(ftk):
    """nf_flow_exceeds_mtu: L3 length over the cached MTU -> classic path (it sends the ICMP error)."""
    ft = Flowtable("m")
    _, orig, _ = ftk.flow(ft, mtu=100)
    big, small = ftk.pkt(orig, payload=b"x" * 73), ftk.pkt(orig, payload=b"x" * 72)  # 101 and 100 bytes
    b = ftk.batch_of(big, small)
    data = b.data[0].copy()
    ftk.hook(b, ft, 0)
    assert list(b.verdict[:2]) == [Reason.SLOW_MTU, Reason.FLOW_FORWARD]
    assert np.array_equal(b.data[0], data) and b.flow[0] == ft.lookup(orig)


def test_packets_already_off_the_fast_path_are_skipped(ftk):
    """Only verdict FLOW_FORWARD packets are looked at (stages narrow the set by writing verdict)."""
    ft = Flowtable("s")
    _, orig, _ = ftk.flow(ft)
    b = ftk.batch_of(ftk.pkt(orig), ftk.pkt(orig))
    b.verdict[0] = Reason.PKT_TOO_BIG
    data = b.data[0].copy()
    res = ftk.hook(b, ft, 0)
    assert b.verdict[0] == Reason.PKT_TOO_BIG and np.array_equal(b.data[0], data)
    assert res.forwarded == 1 and res.slow == 0


def test_fin_and_rst_set_closing_and_stay_fast(ftk):
    """Linux 6.14 nf_flow_state_check: FIN/RST set NF_FLOW_CLOSING on the flow; the packet is forwarded."""
    for flags in ("FA", "R"):
        ft = Flowtable("c")
        _, orig, reply = ftk.flow(ft, l4=6)
        b, res = _run(ftk, ft, ftk.pkt(orig, l4flags=flags), ftk.IIF_C)
        assert b.verdict[0] == Reason.FLOW_FORWARD
        assert all(d["flags"] & F_CLOSING for d in ft.entries())  # both directions
        assert ft.lookup(reply) >= 0


def test_syn_on_closing_tears_down_and_goes_slow(ftk):
    """nf_flow_state_check: SYN while CLOSING -> flow_offload_teardown, slow path; later packets of
    the flow in the same batch go slow too, and gc() deletes the flow."""
    ft = Flowtable("c")
    fid, orig, reply = ftk.flow(ft, l4=6)
    b = ftk.batch_of(ftk.pkt(orig, l4flags="FA"), ftk.pkt(orig, l4flags="S"), ftk.pkt(orig, l4flags="A"))
    data = b.data[1:3].copy()
    ftk.hook(b, ft, 0)
    assert list(b.verdict[:3]) == [Reason.FLOW_FORWARD, Reason.SLOW_TCP_STATE, Reason.SLOW_TEARDOWN]
    assert np.array_equal(b.data[1:3], data)
    assert all(d["flags"] & F_TEARDOWN for d in ft.entries())
    assert ft.lookup(orig) == -1 and ft.lookup(reply) == -1
    assert ft.gc(0) == [fid] and len(ft) == 0


def test_syn_without_closing_stays_fast(ftk):
    ft = Flowtable("c")
    _, orig, _ = ftk.flow(ft, l4=6)
    b, _ = _run(ftk, ft, ftk.pkt(orig, l4flags="S"), ftk.IIF_C)
    assert b.verdict[0] == Reason.FLOW_FORWARD


def test_counters_only_with_the_counter_flag(ftk):
    """NF_FLOWTABLE_COUNTER: per-direction packets and bytes (skb->len, the L3 length)."""
    for counter in (True, False):
        ft = Flowtable("n", counter=counter)
        _, orig, reply = ftk.flow(ft)
        frames = [ftk.pkt(orig, payload=b"x" * k) for k in (10, 20, 30)]
        ftk.hook(ftk.batch_of(*frames), ft, 0)
        ftk.hook(ftk.batch_of(ftk.pkt(reply), iif=ftk.IIF_S), ft, 0)
        by_dir = {d["dir"]: d for d in ft.entries()}
        want = (
            [(3, sum(len(f[IP]) for f in frames)), (1, len(ftk.pkt(reply)[IP]))]
            if counter
            else [(0, 0), (0, 0)]
        )
        assert [(by_dir[k]["packets"], by_dir[k]["bytes"]) for k in (0, 1)] == want


def test_timeout_refresh_moves_only_by_more_than_a_second(ftk):
    """flow_offload_refresh: timeout = now + offload timeout, written only if it moves > HZ."""
    ft = Flowtable("r", timeout_udp_ns=30e9, timeout_tcp_ns=50e9)
    _, orig, _ = ftk.flow(ft, now_ns=0)
    e = ft.lookup(orig)
    tmo = lambda: ft.entries()[[d["entry"] for d in ft.entries()].index(e)]["timeout_ns"]  # noqa: E731
    assert tmo() == 30e9
    ftk.hook(ftk.batch_of(ftk.pkt(orig)), ft, 900_000_000)
    assert tmo() == 30e9
    ftk.hook(ftk.batch_of(ftk.pkt(orig)), ft, 1_500_000_000)
    assert tmo() == 31_500_000_000
    ft2 = Flowtable("r", timeout_udp_ns=30e9, timeout_tcp_ns=50e9)
    _, o2, _ = ftk.flow(ft2, l4=6)
    ftk.hook(ftk.batch_of(ftk.pkt(o2)), ft2, 5_000_000_000)
    assert max(d["timeout_ns"] for d in ft2.entries()) == 55e9


def test_slow_path_helpers_build_the_same_key(ftk):
    """The slow path gets the kernel's key and hash from the same @njit helpers (one truth)."""
    from flowpath.flowtable.ip import nf_flow_tuple
    from flowpath.flowtable.key import flow_offload_hash

    ft = Flowtable("k")
    _, orig, _ = ftk.flow(ft, l4=6)
    frame = np.frombuffer(bytes(ftk.pkt(orig)), np.uint8).copy()
    k = np.zeros(16, np.uint32)
    assert nf_flow_tuple(frame, 0, frame.shape[0], ftk.IIF_C, k, 0, 0) == Reason.FLOW_FORWARD
    assert np.array_equal(k[:15], orig.words()[:15])
    assert flow_offload_hash(k, 0, ft.seed, 0) == flow_offload_hash(orig.words(), 0, ft.seed, 0)


def test_tcp_header_too_short_goes_slow(ftk):
    ft = Flowtable("d")
    _, orig, _ = ftk.flow(ft, l4=6)
    p = ftk.pkt(orig)
    p[TCP].dataofs = 4
    b, _ = _run(ftk, ft, bytes(p), ftk.IIF_C)
    assert b.verdict[0] == SLOW_MALFORMED
