"""Fragments through the gateway: reassembled before conntrack, NATed whole, cut again as they came.

Linux: net/ipv4/netfilter/nf_defrag_ipv4.c, net/ipv4/ip_fragment.c (ip_defrag, ip_expire),
net/ipv6/netfilter/nf_conntrack_reasm.c, net/ipv4/ip_output.c › ip_do_fragment (frag_list),
net/ipv6/ip6_output.c › ip6_fragment. Every scenario goes through `replay` with Scapy-built fragments;
the sizes and bytes expected are what Linux 6.18 forwarded in network namespaces (nft masquerade) for
the same input, and Scapy reassembles what leaves.

The gateway is the bundled example: lan0 192.168.1.1/24 and 2001:db8:1::1/64, wan0 203.0.113.1 and
2001:db8:ff::1; 198.51.100.0/24 through a route of MTU 1400, the rest through 1500.
"""

from __future__ import annotations

import pytest
from gateway import EXAMPLES, GW_LAN, GW_WAN, H10, UPSTREAM, WAN_IP, run
from scapy.all import (
    ICMP,
    IP,
    UDP,
    Ether,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrFragment,
    Raw,
    defragment,
    defragment6,
    fragment,
    wrpcap,
)

from flowpath.config.ipbatch import load_network
from flowpath.config.nft import load_ruleset, parse_ruleset
from flowpath.ports.pcap import read_capture
from flowpath.replay import replay

T0 = 1_700_000_000.0
HOST, SERVER, SERVER_1400 = "192.168.1.10", "192.0.2.7", "198.51.100.7"
HOST6, SERVER6, WAN6 = "2001:db8:1::10", "2001:db8:2::7", "2001:db8:ff::1"
DATA = bytes(range(256)) * 12  # 3072 bytes: with UDP, 3080 bytes of IP data


def at(t: float, frame):
    """A frame with its capture time (the packet clock), T0 + t seconds."""
    frame.time = T0 + t
    frame._fp_time_set = True
    return frame


def lan(pkt, t: float):
    return ("lan0", at(t, Ether(src=H10, dst=GW_LAN) / pkt))


def wan(pkt, t: float):
    return ("wan0", at(t, Ether(src=UPSTREAM, dst=GW_WAN) / pkt))


def cut(pkt, sizes: list[int], df: bool = False):
    """pkt's IPv4 payload cut into fragments of these data sizes (the rest in a last one), in order."""
    body, out, pos = bytes(pkt[IP].payload), [], 0
    for n in sizes + [len(body) - sum(sizes)]:
        more = pos + n < len(body)
        ip = IP(src=pkt[IP].src, dst=pkt[IP].dst, id=pkt[IP].id, proto=pkt[IP].proto, ttl=pkt[IP].ttl,
                flags=(1 if more else 0) | (2 if df else 0), frag=pos // 8)  # fmt: skip
        out.append(ip / Raw(body[pos : pos + n]))
        pos += n
    return out


def cut6(pkt, sizes: list[int], ident: int = 0x1234):
    """pkt's IPv6 payload cut into fragments (fragment header after the IPv6 header), in order."""
    body, out, pos = bytes(pkt[IPv6].payload), [], 0
    for n in sizes + [len(body) - sum(sizes)]:
        fh = IPv6ExtHdrFragment(nh=pkt[IPv6].nh, id=ident, offset=pos // 8, m=int(pos + n < len(body)))
        out.append(
            IPv6(src=pkt[IPv6].src, dst=pkt[IPv6].dst, hlim=pkt[IPv6].hlim) / fh / Raw(body[pos : pos + n])
        )
        pos += n
    return out


def natted(pkt, **fields):
    """What the gateway makes of a whole datagram: new addresses, TTL - 1, checksums recomputed."""
    q = pkt.copy()
    for k, v in fields.items():
        setattr(q[IP] if IP in q else q[IPv6], k, v)
    if IP in q:
        q[IP].ttl -= 1
        del q[IP].chksum
    else:
        q[IPv6].hlim -= 1
    del q[UDP].chksum
    return type(q)(bytes(q))


def assert_ip_checksums(frames):
    for e in frames:
        c = e[IP].copy()
        del c.chksum
        assert IP(bytes(c)).chksum == e[IP].chksum


# -- 1. in order: masqueraded, cut as they came --------------------------------------------------------


def test_in_order_fragments_leave_masqueraded_cut_as_they_came(tmp_path):
    """Every fragment leaves with the WAN address; where the route's MTU allows, with the sizes it came
    with (ip_do_fragment's frag_list), IP id kept, DF cleared; through the 1400-byte route, 1480-byte
    fragments are cut again at the MTU (1396 + 1396 + 348 bytes: what Linux sent). The fragmented
    reply comes back to the host the same way."""
    d1 = IP(src=HOST, dst=SERVER, id=0x4242) / UDP(sport=5555, dport=9) / Raw(DATA)
    d2 = IP(src=HOST, dst=SERVER_1400, id=0x4343) / UDP(sport=5556, dport=9) / Raw(DATA)
    reply = IP(src=SERVER, dst=WAN_IP, id=0x77) / UDP(sport=9, dport=5555) / Raw(DATA[::-1])
    sent = [lan(f, 0.001 * k) for k, f in enumerate(cut(d1, [600, 1200, 600], df=True) + fragment(d2, 1480))]
    sent += [wan(f, 0.1 + 0.001 * k) for k, f in enumerate(fragment(reply, 1000))]
    out, stats, _ = run(tmp_path, sent)
    up, down = out["wan0"], out["lan0"]
    assert [e[IP].src for e in up] == [WAN_IP] * 7
    assert [len(e[IP]) for e in up] == [620, 1220, 620, 700] + [1396, 1396, 348]
    assert [(e[IP].id, int(e[IP].flags), e[IP].frag) for e in up[:4]] == [
        (0x4242, 1, 0), (0x4242, 1, 75), (0x4242, 1, 225), (0x4242, 0, 300)]  # fmt: skip
    assert_ip_checksums(up + down)
    assert bytes(defragment(up[:4])[0][IP]) == bytes(natted(d1, src=WAN_IP, flags=0))
    assert bytes(defragment(up[4:])[0][IP]) == bytes(natted(d2, src=WAN_IP))
    assert [e[IP].dst for e in down] == [HOST] * 4 and [len(e[IP]) for e in down] == [1020] * 3 + [100]
    assert bytes(defragment(down)[0][IP]) == bytes(natted(reply, dst=HOST))
    assert stats["forwarded_packets"] == stats["rx_packets"] == 4 + 3 + 4 and stats["held_packets"] == 0
    assert stats["drops"] == {}  # each fragment shares its datagram's fate: forwarded


# -- 2. out of order, or never complete: nothing leaks -------------------------------------------------


def test_reversed_fragments_leave_masqueraded_in_order(tmp_path):
    """Held until the first one comes, then sent as one datagram cut as it came, in offset order."""
    d = IP(src=HOST, dst=SERVER, id=0x4242) / UDP(sport=5555, dport=9) / Raw(DATA)
    out, stats, _ = run(tmp_path, [lan(f, 0.001 * k) for k, f in enumerate(reversed(fragment(d, 1000)))])
    up = out["wan0"]
    assert [(e[IP].src, e[IP].frag, len(e[IP])) for e in up] == [
        (WAN_IP, 0, 1020), (WAN_IP, 125, 1020), (WAN_IP, 250, 1020), (WAN_IP, 375, 100)]  # fmt: skip
    assert bytes(defragment(up)[0][IP]) == bytes(natted(d, src=WAN_IP))
    assert stats["forwarded_packets"] == 4 and stats["held_packets"] == 0


@pytest.mark.parametrize(("last_s", "expired"), [(29.5, 0), (31.0, 3)])
def test_fragments_without_their_first_are_held_then_expire(tmp_path, last_s, expired):
    """A datagram whose first fragment never comes: nothing goes out (no private source upstream); its
    fragments are held for ipfrag_time (30 s of packet time), then dropped and counted once each.
    A forwarded datagram's queue expires silently (frag_expire_skip_icmp)."""
    d = IP(src=HOST, dst=SERVER, id=0x4242) / UDP(sport=5555, dport=9) / Raw(DATA)
    later = [lan(f, 0.001 * k) for k, f in enumerate(fragment(d, 1000)[1:])]
    other = lan(IP(src=HOST, dst=SERVER) / UDP(sport=6000, dport=53) / Raw(b"q"), last_s)  # time passes
    out, stats, _ = run(tmp_path, later + [other])
    assert [(e[IP].src, e[UDP].sport) for e in out["wan0"]] == [(WAN_IP, 6000)]
    assert out.get("lan0", []) == []
    assert stats["held_packets"] == 3 - expired  # still waiting, or dropped once each
    assert stats["drops"] == ({"frag_reasm_timeout": 3} if expired else {})
    assert stats["rx_packets"] == stats["forwarded_packets"] + stats["dropped_packets"] + stats["held_packets"]


# -- 3. overlaps and duplicates -------------------------------------------------------------------------


def test_overlapping_fragment_drops_the_datagram(tmp_path):
    """RFC 5722: a fragment overlapping one held drops the whole datagram: itself as a drop, the one
    held dropped with it (Linux frees it as consumed and counts ReasmOverlaps 1: here it is a drop too,
    so that every fragment has its disposition); the fragments after it start a new queue that never
    completes. Nothing leaves."""
    body = bytes((IP(src=HOST, dst=SERVER) / UDP(sport=5555, dport=9) / Raw(DATA))[IP].payload)
    frags = [
        IP(src=HOST, dst=SERVER, id=0x4545, proto=17, flags=mf, frag=off // 8) / Raw(body[off : off + n])
        for off, n, mf in ((0, 1000, 1), (992, 1000, 1), (1000, 1000, 1), (2000, 1080, 0))
    ]
    out, stats, _ = run(tmp_path, [lan(f, 0.001 * k) for k, f in enumerate(frags)])
    assert out.get("wan0", []) == []
    assert stats["drops"] == {"ip_frag_overlap": 2} and stats["held_packets"] == 2


def test_duplicate_fragment_is_dropped_and_the_datagram_completes(tmp_path):
    d = IP(src=HOST, dst=SERVER, id=0x4646) / UDP(sport=5555, dport=9) / Raw(DATA)
    f = fragment(d, 1000)
    out, stats, _ = run(tmp_path, [lan(x, 0.001 * k) for k, x in enumerate([f[0], f[1], f[1], f[2], f[3]])])
    assert [len(e[IP]) for e in out["wan0"]] == [1020, 1020, 1020, 100]
    assert stats["drops"] == {"dup_frag": 1}


# -- 4. IPv6 -----------------------------------------------------------------------------------------------

NAT6_RULES = (EXAMPLES / "gateway.nft").read_text().replace("table ip nat", "table inet nat")


def test_ipv6_fragments_reassembled_masqueraded_and_cut_as_they_came(tmp_path):
    """nf_ct_frag6_gather before conntrack: reversed fragments of a LAN datagram leave masqueraded, in
    offset order, with the sizes they came with (Linux: the same; its fragment id is drawn anew,
    ours is kept)."""
    d = IPv6(src=HOST6, dst=SERVER6) / UDP(sport=5555, dport=9) / Raw(DATA)
    frags = cut6(d, [600, 1200, 600])
    out, stats, _ = run(tmp_path, [lan(f, 0.001 * k) for k, f in enumerate(reversed(frags))],
                        rules=parse_ruleset(NAT6_RULES, "nat6.nft"))  # fmt: skip
    up = out["wan0"]
    assert [e[IPv6].src for e in up] == [WAN6] * 4
    assert [(e[IPv6ExtHdrFragment].offset * 8, e[IPv6].plen, e[IPv6ExtHdrFragment].id) for e in up] == [
        (0, 608, 0x1234), (600, 1208, 0x1234), (1800, 608, 0x1234), (2400, 688, 0x1234)]  # fmt: skip
    assert bytes(defragment6([e[IPv6] for e in up])) == bytes(natted(d, src=WAN6)[IPv6])
    assert stats["forwarded_packets"] == 4 and stats["held_packets"] == 0 and stats["drops"] == {}


def test_ipv6_incomplete_datagram_expires_after_60_s_with_time_exceeded(tmp_path):
    """nf_conntrack_frag6_timeout is 60 s; the expiry answers with ICMPv6 time exceeded, fragment
    reassembly time exceeded, even for a forwarded datagram (ip6frag_expire_frag_queue has no
    frag_expire_skip_icmp; Linux sent it from the LAN address), quoting the first fragment."""
    d = IPv6(src=HOST6, dst=SERVER6) / UDP(sport=5555, dport=9) / Raw(DATA)
    frags = cut6(d, [600, 1200, 600])[:-1]
    other = lan(IPv6(src=HOST6, dst=SERVER6) / UDP(sport=6000, dport=53) / Raw(b"q"), 61.0)
    out, stats, _ = run(tmp_path, [lan(f, 0.001 * k) for k, f in enumerate(frags)] + [other],
                        rules=parse_ruleset(NAT6_RULES, "nat6.nft"))  # fmt: skip
    assert [e[UDP].sport for e in out["wan0"]] == [6000]
    [e] = out["lan0"]
    assert (e[IPv6].src, e[IPv6].dst, e[ICMPv6TimeExceeded].code) == ("2001:db8:1::1", HOST6, 1)
    assert bytes(e[ICMPv6TimeExceeded])[8:] == bytes(frags[0])  # the first fragment as it came
    assert stats["drops"] == {"frag_reasm_timeout": 3}


# -- 5. to the gateway itself ------------------------------------------------------------------------------


def test_fragment_to_the_gateway_that_never_completes_gets_time_exceeded(tmp_path):
    """ip_expire: a datagram for this host whose first fragment came gets ICMP time exceeded, code 1
    (fragment reassembly time exceeded), from the address it was sent to, quoting that fragment up to
    576 bytes (what Linux sent). It leaves at the GC run after the deadline, ahead of the packets of
    that poll (Linux sends it from the timer)."""
    d = IP(src=HOST, dst="192.168.1.1", id=0x4343) / UDP(sport=5555, dport=9) / Raw(DATA)
    first = fragment(d, 1000)[:-1]
    ping = lan(IP(src=HOST, dst="192.168.1.1") / ICMP(id=1), 31.0)
    out, stats, _ = run(tmp_path, [lan(f, 0.001 * k) for k, f in enumerate(first)] + [ping])
    te, echo = out["lan0"]
    assert echo[ICMP].type == 0
    assert (te[IP].src, te[IP].dst, te[ICMP].type, te[ICMP].code, len(te[IP])) == (
        "192.168.1.1", HOST, 11, 1, 576)  # fmt: skip
    assert bytes(te[ICMP])[8:] == bytes(first[0])[:548]  # the first fragment as it came
    assert stats["drops"] == {"frag_reasm_timeout": 3}


# -- 6. the fast path: an offloaded flow's fragments still take the classic path --------------------------


def _flow_trace():
    """A masqueraded UDP flow: a request and a reply (offloaded from then on), small packets both ways,
    then a fragmented datagram each way (fragments are SLOW_FRAGMENT), then small packets again."""
    up = lambda p, n: IP(src=HOST, dst=SERVER, id=n) / UDP(sport=5555, dport=9) / Raw(p)  # noqa: E731
    down = lambda p, n: IP(src=SERVER, dst=WAN_IP, id=n) / UDP(sport=9, dport=5555) / Raw(p)  # noqa: E731
    pkts, t = [], 0.0
    for k in range(4):
        pkts += [lan(up(b"a" * 50, k), t), wan(down(b"b" * 60, k), t + 0.0005)]
        t += 0.001
    t = 1.5  # a GC run (every second) ends a poll: the flow is offloaded by then
    for k, f in enumerate(reversed(fragment(up(DATA, 0x4242), 1000))):
        pkts.append(lan(f, t + 0.0001 * k))
    for k, f in enumerate(fragment(down(DATA[::-1], 0x4343), 1000)):
        pkts.append(wan(f, t + 0.0005 + 0.0001 * k))
    t = 3.0
    for k in range(4, 8):
        pkts += [lan(up(b"c" * 50, k), t), wan(down(b"d" * 60, k), t + 0.0005)]
        t += 0.001
    return pkts


@pytest.mark.parametrize("batch_size", [4, 256])
def test_offloaded_flow_fragments_take_the_classic_path_identically(tmp_path, batch_size):
    """DESIGN.md §1 for fragments: with and without the flowtable, the same bytes on every interface;
    the fragments of an offloaded flow leave masqueraded (and come back de-NATed) either way."""
    pkts = _flow_trace()
    per_if = {}
    for name, p in pkts:
        per_if.setdefault(name, []).append(p)
    inputs = []
    for name, ps in per_if.items():
        wrpcap(str(tmp_path / f"{name}.pcap"), ps)
        inputs.append((name, tmp_path / f"{name}.pcap"))
    got = {}
    for tag, ft in (("classic", False), ("fast", True)):
        net, rules = load_network(EXAMPLES / "gateway.ip"), load_ruleset(EXAMPLES / "gateway.nft")
        res = replay(net, rules, inputs, tmp_path / tag, flowtable=ft, batch_size=batch_size)
        got[tag] = ({n: [r.data for r in read_capture(p)] for n, p in res.outputs.items()}, res.stats)
    (classic, cs), (fast, fs) = got["classic"], got["fast"]
    assert fast == classic and fs["drops"] == cs["drops"] == {}
    assert fs["fastpath_packets"] >= 8 and fs["flows_offloaded"] >= 1 and cs["fastpath_packets"] == 0
    up = [Ether(f) for f in fast["wan0"] if IPv6 not in Ether(f)]
    frags = [e for e in up if e[IP].flags.MF or e[IP].frag]
    assert len(frags) == 4 and all(e[IP].src == WAN_IP for e in up)
    down = [Ether(f) for f in fast["lan0"]]
    assert all(e[IP].dst == HOST for e in down) and sum(1 for e in down if e[IP].flags.MF or e[IP].frag) == 4
