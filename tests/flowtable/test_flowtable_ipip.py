"""IPIP and VLAN encapsulation on the flowtable fast path, checked with Scapy.

Linux 6.19: nf_flow_table_ip.c › nf_flow_ip4_tunnel_proto (outer checks), nf_flow_tuple_encap (the
outer pair in tuple.tun, the VLAN tags in encap[]), nf_flow_encap_pop (decapsulation on a hit),
nf_flow_tunnel_ipip_push and nf_flow_encap_push (the reverse tuple's encapsulation on transmit). The
reference for the outer header is the classic path's ip_tunnel_xmit (ttl and tos inherit or fixed, ECN
as RFC 6040 §4.1, DF from pmtudisc or the inner header, id 0 with DF).
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether

from flowpath.flowtable import F_SNAT, FlowRoute, Flowtable, FlowTuple, nf_flow_offload_hook
from flowpath.flowtable.key import tun_addr_hash
from flowpath.packet.batch import PacketBatch
from flowpath.packet.reason import Reason

IIF_LAN, IIF_WAN = 1, 2
MAC_LAN_GW, MAC_H1 = "02:00:00:00:01:01", "02:00:00:00:01:05"
MAC_WAN_GW, MAC_PEER = "02:00:00:00:02:01", "02:00:00:00:02:02"
LOCAL, REMOTE = "198.51.100.1", "198.51.100.2"
H1, SERVER = "10.1.0.5", "10.2.0.7"


def ip(s: str) -> int:
    return int.from_bytes(bytes(int(x) for x in s.split(".")), "big")


def mac(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


def tunnel_flow(ft, remote=REMOTE, snat=None, ttl=0, tos=1, pmtudisc=True, mtu=1480, sport=1000, vlan=()):
    """Offload h1:sport -> server:2000 through an IPIP tunnel (local LOCAL, remote `remote`) on the WAN
    port, as nft_flow_offload_eval builds it: the reply tuple arrives inside the outer pair (and vlan
    tags on the WAN port), the original direction pushes them. snat: the tunnel-side source h1 is
    translated to. Returns (flow id, orig, reply)."""
    n_addr = snat or H1
    orig = FlowTuple(IIF_LAN, 4, 17, ip(H1), ip(SERVER), sport, 2000)
    reply = FlowTuple(
        IIF_WAN, 4, 17, ip(SERVER), ip(n_addr), 2000, sport, vlan=vlan, tun=(ip(remote), ip(LOCAL))
    )
    r_orig = FlowRoute(
        IIF_WAN, mtu, mac(MAC_WAN_GW), mac(MAC_PEER), tun_ttl=ttl, tun_tos=tos, tun_pmtudisc=pmtudisc
    )
    r_reply = FlowRoute(IIF_LAN, 1500, mac(MAC_LAN_GW), mac(MAC_H1))
    fid = ft.flow_offload_add(orig, reply, r_orig, r_reply, F_SNAT if snat else 0, "ct", 0)
    assert fid >= 0
    return fid, orig, reply


def from_h1(sport=1000, ttl=30, tos=0, df=True, size=64):
    return (Ether(src=MAC_H1, dst=MAC_LAN_GW) / IP(src=H1, dst=SERVER, ttl=ttl, tos=tos, flags="DF" if df else 0)
            / UDP(sport=sport, dport=2000) / (b"x" * size))  # fmt: skip


def from_peer(
    dst=H1, outer_src=REMOTE, outer_ttl=64, outer_tos=0, ttl=20, tos=0, sport=1000, tags=(), **outer
):
    eth = Ether(src=MAC_PEER, dst=MAC_WAN_GW)
    for proto, vid in tags:
        eth = eth / (Dot1AD if proto == 0x88A8 else Dot1Q)(vlan=vid)
    return (eth / IP(src=outer_src, dst=LOCAL, ttl=outer_ttl, tos=outer_tos, **outer)
            / IP(src=SERVER, dst=dst, ttl=ttl, tos=tos) / UDP(sport=2000, dport=sport) / (b"y" * 40))  # fmt: skip


def hook(ft, frame, iif):
    b = PacketBatch(4, slot=512, headroom=64)
    b.append(bytes(frame), iif, 0)
    nf_flow_offload_hook(b, ft, 1_000)
    return b, int(b.verdict[0])


def assert_checksums_valid(p):
    """Every IPv4 header checksum verifies (its one's complement sum is 0xFFFF) and the UDP checksum
    is the one Scapy computes over the innermost header."""
    raw = Ether(bytes(p))
    for i in (1, 2):
        hdr = raw.getlayer(IP, i)
        if hdr is not None:
            h = bytes(hdr)[: hdr.ihl * 4]
            s = sum(int.from_bytes(h[k : k + 2], "big") for k in range(0, len(h), 2))
            while s >> 16:
                s = (s & 0xFFFF) + (s >> 16)
            assert s == 0xFFFF, f"IP header {i}"
    c = raw[UDP].chksum
    raw[UDP].chksum = None
    assert Ether(bytes(raw))[UDP].chksum == c


@pytest.mark.parametrize("key", ["perfect", "hash"])
def test_decap_hit_strips_the_outer_header_and_forwards_the_inner(key):
    """RX: nf_flow_ip4_tunnel_proto skips the outer header, the key matches the inner tuple with the
    outer pair, the hit pops the outer header; the inner packet leaves with TTL - 1, its SNAT undone,
    valid checksums, behind the LAN next hop's link-layer header."""
    ft = Flowtable("t", tunnel_key=key)
    tunnel_flow(ft, snat="192.168.100.1")
    b, v = hook(ft, from_peer(dst="192.168.100.1"), IIF_WAN)
    assert v == Reason.FLOW_FORWARD and b.oif[0] == IIF_LAN
    p = Ether(b.frame_bytes(0))
    assert (p.src, p.dst, p.type) == (MAC_LAN_GW, MAC_H1, 0x0800)
    inner = p[IP]
    assert IP not in inner.payload  # one IP header left: the outer one is gone
    assert (inner.src, inner.dst, inner.ttl, inner.proto) == (SERVER, H1, 19, 17)
    assert p[UDP].dport == 1000 and bytes(p[UDP].payload) == b"y" * 40
    assert_checksums_valid(p)


@pytest.mark.parametrize(
    ("parms", "inner", "want"),
    [
        ({"ttl": 0, "tos": 1, "pmtudisc": True}, {"ttl": 30, "tos": 0x11}, {"ttl": 29, "tos": 0x11, "flags": 2}),
        ({"ttl": 0, "tos": 1, "pmtudisc": True}, {"ttl": 30, "tos": 0x13}, {"ttl": 29, "tos": 0x12, "flags": 2}),
        ({"ttl": 64, "tos": 0x28, "pmtudisc": True}, {"ttl": 30, "tos": 0x01}, {"ttl": 64, "tos": 0x29, "flags": 2}),
        ({"ttl": 0, "tos": 0, "pmtudisc": False}, {"ttl": 9, "tos": 0}, {"ttl": 8, "tos": 0, "flags": 2}),
    ],
)  # fmt: skip
def test_encap_hit_pushes_the_outer_header_of_the_reverse_tuple(parms, inner, want):
    """TX: the outer header from the reverse tuple (saddr its tun.dst, daddr its tun.src), protocol 4,
    ttl/tos inherited or fixed with RFC 6040 ECN (CE becomes ECT(0)), DF from pmtudisc or the inner DF,
    id 0, checksum valid; the inner packet forwarded (TTL - 1) behind it, then the WAN header."""
    ft = Flowtable("t")
    tunnel_flow(ft, **parms)
    b, v = hook(ft, from_h1(ttl=inner["ttl"], tos=inner["tos"], df=True), IIF_LAN)
    assert v == Reason.FLOW_FORWARD and b.oif[0] == IIF_WAN
    p = Ether(b.frame_bytes(0))
    assert (p.src, p.dst, p.type) == (MAC_WAN_GW, MAC_PEER, 0x0800)
    outer, inn = p.getlayer(IP, 1), p.getlayer(IP, 2)
    assert (outer.src, outer.dst, outer.proto, outer.ihl, outer.id, outer.frag) == (LOCAL, REMOTE, 4, 5, 0, 0)
    assert (outer.ttl, outer.tos, int(outer.flags)) == (want["ttl"], want["tos"], want["flags"])
    assert outer.len == 20 + inn.len and len(b.frame_bytes(0)) == 14 + outer.len
    assert (inn.src, inn.dst, inn.ttl, inn.tos) == (H1, SERVER, inner["ttl"] - 1, inner["tos"])
    assert_checksums_valid(p)


def test_push_without_df_goes_to_the_classic_path_untouched():
    """nopmtudisc and an inner packet without DF: the outer header has no DF, and the classic path
    numbers it (its id counter); the fast path leaves the packet as it came."""
    ft = Flowtable("t")
    tunnel_flow(ft, pmtudisc=False)
    frame = bytes(from_h1(df=False))
    b, v = hook(ft, frame, IIF_LAN)
    assert v == Reason.SLOW_TUNNEL_ID and b.frame_bytes(0) == frame


def test_outer_source_not_the_tunnels_remote_never_hits():
    """A perfect key holds both outer addresses: an outer header from anyone but the tunnel's remote
    (a forged one included) misses the entry and takes the classic path, untouched."""
    ft = Flowtable("t")
    tunnel_flow(ft)
    for forged in (from_peer(outer_src="198.51.100.9"), from_peer(outer_src="203.0.113.5")):
        frame = bytes(forged)
        b, v = hook(ft, frame, IIF_WAN)
        assert v == Reason.SLOW_NO_ENTRY and b.frame_bytes(0) == frame
    plain = bytes(Ether(bytes(from_peer()))[IP].payload)  # the inner packet without its tunnel
    b, v = hook(ft, Ether(src=MAC_PEER, dst=MAC_WAN_GW) / IP(plain), IIF_WAN)
    assert v == Reason.SLOW_NO_ENTRY
    assert hook(ft, from_peer(), IIF_WAN)[1] == Reason.FLOW_FORWARD  # the remote itself hits


@njit(cache=True)
def _hashes(base, n, daddr):
    out = np.empty(n, np.int64)
    for i in range(n):
        out[i] = tun_addr_hash(base + i, daddr)
    return out


def _colliding_sources(daddr: int) -> tuple[int, int]:
    """Two outer sources whose (source, daddr) pairs hash alike (a birthday search: 2**18 sources
    against a 32-bit hash give about eight pairs)."""
    base = ip("100.64.0.0")
    h = _hashes(base, 1 << 18, daddr)
    order = np.argsort(h, kind="stable")
    same = np.flatnonzero(h[order][1:] == h[order][:-1])
    assert same.size, "no colliding pair in the search space"
    i, j = order[same[0]], order[same[0] + 1]
    return base + int(i), base + int(j)


def test_hashed_outer_key_lets_a_crafted_pair_hit_another_tunnels_entry():
    """The v6 patch's design, measured: with the outer pair folded into one hashed word, an outer
    source crafted to collide (found offline: the hash is unseeded, __ipv4_addr_hash) rides the entry
    of a tunnel it is not; the perfect key (Linux 6.19) refuses the same packet."""
    s_tunnel, s_forged = _colliding_sources(ip(LOCAL))
    assert s_tunnel != s_forged and tun_addr_hash(s_tunnel, ip(LOCAL)) == tun_addr_hash(s_forged, ip(LOCAL))
    addr = lambda x: ".".join(str(x >> s & 0xFF) for s in (24, 16, 8, 0))  # noqa: E731
    forged = bytes(from_peer(outer_src=addr(s_forged)))
    verdicts = {}
    for key in ("perfect", "hash"):
        ft = Flowtable("t", tunnel_key=key)
        tunnel_flow(ft, remote=addr(s_tunnel))
        assert hook(ft, from_peer(outer_src=addr(s_tunnel)), IIF_WAN)[1] == Reason.FLOW_FORWARD
        b, verdicts[key] = hook(ft, forged, IIF_WAN)
    assert verdicts == {"perfect": Reason.SLOW_NO_ENTRY, "hash": Reason.FLOW_FORWARD}


@pytest.mark.parametrize(
    ("outer", "want"),
    [
        ({"outer_ttl": 1}, Reason.SLOW_TTL),
        ({"flags": "MF"}, Reason.SLOW_FRAGMENT),
        ({"options": [b"\x01\x01\x01\x00"]}, Reason.SLOW_IP_OPTIONS),
        ({"outer_tos": 3}, Reason.SLOW_TUNNEL_ECN),  # CE over a not-ECT inner: the classic path drops it
    ],
)  # fmt: skip
def test_outer_exceptions_go_slow_untouched(outer, want):
    """nf_flow_ip4_tunnel_proto: an outer fragment, options or ttl <= 1 takes the classic path; so does
    what RFC 6040 decapsulation drops. Nothing is written before the decision."""
    ft = Flowtable("t")
    tunnel_flow(ft)
    frame = bytes(from_peer(**outer))
    b, v = hook(ft, frame, IIF_WAN)
    assert v == want and b.frame_bytes(0) == frame


def test_ecn_decapsulation_as_rfc_6040():
    """ECT(1) outer over an ECT(0) inner: the inner leaves ECT(1); CE outer over ECT inner: CE."""
    ft = Flowtable("t")
    tunnel_flow(ft)
    for outer_tos, inner_tos, want in ((1, 2, 1), (3, 2, 3), (3, 1, 3), (2, 0, 0), (0, 1, 1)):
        b, v = hook(ft, from_peer(outer_tos=outer_tos, tos=0x20 | inner_tos), IIF_WAN)
        p = Ether(b.frame_bytes(0))
        assert v == Reason.FLOW_FORWARD and p[IP].tos == 0x20 | want
        assert_checksums_valid(p)


def test_two_tunnel_levels_go_slow():
    """One tunnel level: IPIP inside IPIP is not the flowtable's (SLOW_L4PROTO for the inner one)."""
    ft = Flowtable("t")
    tunnel_flow(ft)
    inner = Ether(bytes(from_peer()))[IP].payload
    frame = (
        Ether(src=MAC_PEER, dst=MAC_WAN_GW) / IP(src=REMOTE, dst=LOCAL) / IP(src=REMOTE, dst=LOCAL) / inner
    )
    assert hook(ft, frame, IIF_WAN)[1] == Reason.SLOW_L4PROTO


QINQ = ((0x88A8, 100), (0x8100, 200))


def test_qinq_tags_are_popped_on_receive_and_pushed_on_transmit():
    """encap[]: an 802.1ad service tag then an 802.1Q tag are part of the key (a frame with other tags
    or none misses), popped on a hit, and pushed, outer first, by the direction that leaves there."""
    ft = Flowtable("t")
    orig = FlowTuple(IIF_LAN, 4, 17, ip(H1), ip(SERVER), 1000, 2000)
    reply = FlowTuple(IIF_WAN, 4, 17, ip(SERVER), ip(H1), 2000, 1000, vlan=QINQ)
    ft.flow_offload_add(orig, reply, FlowRoute(IIF_WAN, 1500, mac(MAC_WAN_GW), mac(MAC_PEER)),
                        FlowRoute(IIF_LAN, 1500, mac(MAC_LAN_GW), mac(MAC_H1)), 0, "ct", 0)  # fmt: skip
    b, v = hook(ft, from_h1(), IIF_LAN)
    p = Ether(b.frame_bytes(0))
    assert v == Reason.FLOW_FORWARD and p.type == 0x88A8
    assert (p[Dot1AD].vlan, p[Dot1AD].type, p[Dot1Q].vlan, p[Dot1Q].type) == (100, 0x8100, 200, 0x0800)
    assert p[IP].ttl == 29 and len(b.frame_bytes(0)) == 14 + 8 + p[IP].len
    tagged = Ether(src=MAC_PEER, dst=MAC_WAN_GW) / Dot1AD(vlan=100) / Dot1Q(vlan=200) / IP(
        src=SERVER, dst=H1, ttl=20) / UDP(sport=2000, dport=1000) / (b"z" * 30)  # fmt: skip
    b, v = hook(ft, tagged, IIF_WAN)
    p = Ether(b.frame_bytes(0))
    assert v == Reason.FLOW_FORWARD and p.type == 0x0800 and Dot1Q not in p and p[IP].ttl == 19
    for other in (QINQ[:1], ((0x8100, 100), (0x8100, 200)), ((0x88A8, 100), (0x8100, 201)), ()):
        eth = Ether(src=MAC_PEER, dst=MAC_WAN_GW)
        for proto, vid in other:
            eth = eth / (Dot1AD if proto == 0x88A8 else Dot1Q)(vlan=vid)
        assert hook(ft, eth / tagged[IP], IIF_WAN)[1] == Reason.SLOW_NO_ENTRY


def test_ipip_over_a_vlan():
    """Both encapsulations at once (a tunnel whose outer route leaves through a VLAN): the reverse
    tuple has the tag and the outer pair; transmit pushes the IPIP header, then the tag."""
    ft = Flowtable("t")
    tunnel_flow(ft, vlan=((0x8100, 7),))
    b, v = hook(ft, from_h1(), IIF_LAN)
    p = Ether(b.frame_bytes(0))
    assert v == Reason.FLOW_FORWARD and p[Dot1Q].vlan == 7 and p[Dot1Q].type == 0x0800
    assert p.getlayer(IP, 1).proto == 4 and p.getlayer(IP, 2).dst == SERVER
    b, v = hook(ft, from_peer(tags=((0x8100, 7),)), IIF_WAN)
    assert v == Reason.FLOW_FORWARD and Dot1Q not in Ether(b.frame_bytes(0))
    assert hook(ft, from_peer(), IIF_WAN)[1] == Reason.SLOW_NO_ENTRY  # untagged: another encap
