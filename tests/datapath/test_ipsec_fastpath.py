"""IPsec on the flowtable fast path: XMIT_XFRM out, ESP input at early ingress, Scapy as the far gateway.

Linux: nf_flow_table_ip.c › nf_flow_xmit_xfrm; the ESP input side follows the bulking RFC's tunnel tuples
(the flowtable bulk-forwarding test notes). Oracles: Scapy's SecurityAssociation decrypts what flowpath
sends and encrypts what it receives; the classic path (`replay --no-flowtable`) must emit byte-identical
output; the fwd policy check must hold for decrypted packets that the fast path forwards.
"""

from __future__ import annotations

import itertools
import os

import pytest
from gateway import run
from scapy.all import ICMP, IP, UDP, Ether, IPOption, Raw
from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6
from scapy.layers.ipsec import ESP, SecurityAssociation

from flowpath.config.ipbatch import parse_network
from flowpath.config.nft import parse_ruleset
from flowpath.xfrm import evp

pytestmark = pytest.mark.skipif(not evp.evp_load(), reason="the compiled ESP path needs libcrypto")

GW_LAN, GW_WAN, PEER_MAC, HOST_MAC = (
    "02:00:00:00:01:01",
    "02:00:00:00:02:01",
    "02:00:00:00:02:02",
    "02:00:00:00:01:05",
)
ALGS = {  # name: (ip xfrm aead, key + salt, Scapy name)
    "gcm128": ("rfc4106(gcm(aes))", bytes(range(1, 17)) + b"\xca\xfe\xba\xbe", "AES-GCM"),
    "gcm256": ("rfc4106(gcm(aes))", bytes(range(1, 33)) + b"\x01\x02\x03\x04", "AES-GCM"),
    "chacha": (
        "rfc7539esp(chacha20,poly1305)",
        bytes(range(0x80, 0xA0)) + b"\x07\x00\x00\x00",
        "CHACHA20-POLY1305",
    ),
}
OUTER = {4: ("192.0.2.1", "192.0.2.2", 24), 6: ("2001:db8:f::1", "2001:db8:f::2", 64)}
# These traces mix fast and slow packets within small polls: replay fills each poll up to its budget
# (coalescing far longer than a trace), as it did before polls followed arrival times.
FILL = 10**6  # rx_usecs

INNER = {  # gateway's LAN address, host, local net, remote net, remote host
    4: ("10.1.0.1/16", "10.1.0.5", "10.1.0.0/16", "10.2.0.0/16", "10.2.0.7"),
    6: ("fd01::1/64", "fd01::5", "fd01::/64", "fd02::/64", "fd02::7"),
}
RULES = """\
table inet f {
	flowtable ft {
		hook ingress priority filter
		devices = { lan0, wan0 }
	}

	chain fw {
		type filter hook forward priority filter; policy accept;
		meta l4proto { tcp, udp } flow add @ft
	}
}
"""


def net_text(alg="gcm128", outer=4, inner=4, natt=False, esn=False) -> str:
    aead, key, _ = ALGS[alg]
    gw, peer, plen = OUTER[outer]
    lan, host, lnet, rnet, _ = INNER[inner]
    extra = " encap espinudp 4500 4500 0.0.0.0" if natt else ""
    window = "replay-window 128 flag esn" if esn else "replay-window 32"
    sa = f"mode tunnel {window} aead '{aead}' 0x{key.hex()} 128{extra}"
    return f"""\
link add lan0 address {GW_LAN}
link add wan0 address {GW_WAN}
link set lan0 up
link set wan0 up
addr add {lan} dev lan0
addr add {gw}/{plen} dev wan0
route add {rnet} dev wan0
neigh add {peer} lladdr {PEER_MAC} dev wan0
neigh add {host} lladdr {HOST_MAC} dev lan0
xfrm state add src {gw} dst {peer} proto esp spi 0x1001 reqid 1 {sa}
xfrm state add src {peer} dst {gw} proto esp spi 0x2002 reqid 2 {sa}
xfrm policy add src {lnet} dst {rnet} dir out tmpl src {gw} dst {peer} proto esp reqid 1 mode tunnel
xfrm policy add src {rnet} dst {lnet} dir fwd tmpl src {peer} dst {gw} proto esp reqid 2 mode tunnel
xfrm policy add src {rnet} dst {lnet} dir in tmpl src {peer} dst {gw} proto esp reqid 2 mode tunnel
"""


def scapy_sa(spi, alg="gcm128", outer=4, natt=False, esn=False, towards_gw=True) -> SecurityAssociation:
    _, key, name = ALGS[alg]
    gw, peer, _ = OUTER[outer]
    s, d = (peer, gw) if towards_gw else (gw, peer)
    tunnel = IP(src=s, dst=d) if outer == 4 else IPv6(src=s, dst=d)
    return SecurityAssociation(ESP, spi=spi, crypt_algo=name, crypt_key=key, tunnel_header=tunnel,
                               nat_t_header=UDP(sport=4500, dport=4500) if natt else None, esn_en=esn)  # fmt: skip


def inner_ip(ver, src, dst, ttl=64, **kw):
    return IP(src=src, dst=dst, ttl=ttl, **kw) if ver == 4 else IPv6(src=src, dst=dst, hlim=ttl, **kw)


def trace(alg="gcm128", outer=4, inner=4, natt=False, esn=False, n=10):
    """n packets each way of one UDP flow, interleaved: host -> remote (plain on lan0) and the far
    gateway's ESP of remote -> host (on wan0)."""
    _, host, _, _, remote = INNER[inner]
    peer = scapy_sa(0x2002, alg, outer, natt, esn)
    pkts = []
    for k in range(n):
        up = inner_ip(inner, host, remote) / UDP(sport=1111, dport=2222) / Raw(b"up%02d" % k)
        down = inner_ip(inner, remote, host, ttl=40) / UDP(sport=2222, dport=1111) / Raw(b"dn%02d" % k)
        pkts.append(("lan0", Ether(src=HOST_MAC, dst=GW_LAN) / up))
        pkts.append(("wan0", Ether(src=PEER_MAC, dst=GW_WAN) / peer.encrypt(down)))
    return pkts


def gw(**kw):
    return parse_network(net_text(**kw), "ipsec.ip"), parse_ruleset(RULES)


def _outer_ip(p, outer):
    return p[IP] if outer == 4 else p[IPv6]


def _bytes(out):
    return {k: [bytes(p) for p in v] for k, v in out.items()}


def test_offloaded_flow_is_encrypted_and_decrypted_on_the_fast_path(tmp_path):
    net, rules = gw()
    out, stats, res = run(tmp_path, trace(), net=net, rules=rules, batch_size=4, rx_usecs=FILL)
    # replay's first poll holds one packet (up0, then the first GC tick); the next batch (dn0, up1, dn1,
    # up2) takes the classic path and dn0 offloads the flow; the rest is fast, both ways
    assert stats["slowpath_packets"] == 5 and stats["fastpath_packets"] == 15, stats
    assert stats["drops"] == {}
    mine = scapy_sa(0x1001, towards_gw=False)
    wan = out["wan0"]
    assert len(wan) == 10
    for k, o in enumerate(wan):
        assert (o.src, o.dst) == (GW_WAN, PEER_MAC)
        assert (o[IP].src, o[IP].dst, o[IP].proto, o[ESP].spi, o[ESP].seq) == (
            "192.0.2.1",
            "192.0.2.2",
            50,
            0x1001,
            k + 1,
        )
        plain = mine.decrypt(o[IP])
        assert (plain[IP].src, plain[IP].dst, plain[IP].ttl) == ("10.1.0.5", "10.2.0.7", 63)
        assert bytes(plain[Raw]) == b"up%02d" % k
        assert plain[UDP].chksum == UDP(bytes(plain[UDP])).chksum  # still valid after the forward
    lan = out["lan0"]
    assert [bytes(p[Raw]) for p in lan] == [b"dn%02d" % k for k in range(10)]
    for p in lan:
        assert (p.src, p.dst, p[IP].ttl, p[IP].dst) == (GW_LAN, HOST_MAC, 39, "10.1.0.5")
        assert IP(bytes(p[IP])).chksum == p[IP].chksum
    listing = res.worker.flowtable_listing()
    entries = res.worker.flowtables["ft"][0].entries()
    xmit = {(e["dir"], e["xmit_type"], e["encap"] != 0, e["xfrm"] >= 0) for e in entries}
    assert xmit == {(0, 3, False, False), (1, 2, False, True)} or xmit == {
        (0, 2, False, True),
        (1, 3, True, False),
    }
    assert "xfrm-out:sa0" in listing and "xfrm-in:sa1" in listing


@pytest.mark.parametrize(
    "alg,outer,inner,natt,esn",
    [("gcm128", o, i, False, False) for o, i in itertools.product((4, 6), (4, 6))]
    + [
        ("gcm256", 6, 4, True, False),
        ("chacha", 4, 6, False, True),
        ("chacha", 6, 6, True, True),
        ("gcm128", 4, 4, True, True),
    ],  # fmt: skip
)
def test_fast_path_matches_the_classic_path_and_scapy(tmp_path, alg, outer, inner, natt, esn):
    """Every algorithm, IPv4/IPv6 inside and outside, NAT-T, ESN: the fast path emits what the classic
    path emits, byte for byte, and Scapy decrypts it."""
    kw = dict(alg=alg, outer=outer, inner=inner, natt=natt, esn=esn)
    pk = trace(**kw)
    for sub in ("fast", "slow"):
        (tmp_path / sub).mkdir()
    out_fast, s_fast, _ = run(tmp_path / "fast", pk, net=gw(**kw)[0], rules=gw(**kw)[1], batch_size=4, rx_usecs=FILL)
    out_slow, s_slow, _ = run(
        tmp_path / "slow", trace(**kw), net=gw(**kw)[0], rules=gw(**kw)[1], flowtable=False
    )
    assert s_fast["fastpath_packets"] == 15 and s_slow["fastpath_packets"] == 0
    assert s_fast["drops"] == s_slow["drops"] == {}
    assert _bytes(out_fast) == _bytes(out_slow)
    mine = scapy_sa(0x1001, alg, outer, natt, esn, towards_gw=False)
    _, host, _, _, remote = INNER[inner]
    for k, o in enumerate(out_fast["wan0"]):
        if natt:
            assert o[UDP].dport == 4500
        plain = mine.decrypt(_outer_ip(o, outer))
        assert (plain.src, plain.dst) == (host, remote) and bytes(plain[Raw]) == b"up%02d" % k
    assert [bytes(p[Raw]) for p in out_fast["lan0"]] == [b"dn%02d" % k for k in range(10)]


def test_decrypted_traffic_still_needs_the_policy_and_bad_esp_is_counted(tmp_path):
    """After the flow is offloaded: the same inner tuple in plaintext is refused (the entry is keyed on
    the SA), a replay, a corrupted ICV and a truncated packet are dropped by the fast path's ESP input
    with distinct reasons, an unknown SPI goes to the classic path (no state)."""
    net, rules = gw()
    pk = trace(n=4)
    peer = scapy_sa(0x2002)
    down = IP(src="10.2.0.7", dst="10.1.0.5", ttl=40) / UDP(sport=2222, dport=1111) / Raw(b"late")
    for _ in range(4):
        peer.encrypt(down)  # skip seq 5..8
    esp = Ether(src=PEER_MAC, dst=GW_WAN) / peer.encrypt(down)  # seq 9
    raw = bytearray(bytes(Ether(src=PEER_MAC, dst=GW_WAN) / peer.encrypt(down)))  # seq 10: not a replay
    raw[-3] ^= 0x40
    bad_icv = Ether(bytes(raw))
    short = Ether(bytes(esp)[: 14 + 20 + 12])
    short[IP].len = 32
    short = Ether(bytes(short))
    alien = Ether(src=PEER_MAC, dst=GW_WAN) / scapy_sa(0x7777).encrypt(down)
    plain = Ether(src=PEER_MAC, dst=GW_WAN) / down
    extra = [("wan0", p) for p in (plain, esp, Ether(bytes(esp)), bad_icv, short, alien, plain)]
    out, stats, _ = run(tmp_path, pk + extra, net=net, rules=rules, batch_size=4, rx_usecs=FILL)
    assert [bytes(p[Raw]) for p in out["lan0"]] == [b"dn00", b"dn01", b"dn02", b"dn03", b"late"]
    assert stats["drops"] == {"xfrm_policy": 2, "xfrm_in_replay": 1, "xfrm_in_icv": 1, "xfrm_in_hdr": 1,
                              "xfrm_no_state": 1}, stats["drops"]  # fmt: skip


def test_oversize_inner_packet_gets_frag_needed_with_the_esp_overhead(tmp_path):
    """PMTU through the tunnel: an offloaded flow's DF packet over the SA's MTU leaves the fast path
    and the classic path answers with ICMP frag-needed / packet-too-big carrying the inner MTU: for
    AES-GCM (16-byte ICV) in IPv4 tunnel mode on a 1500-byte link, ((1500 - 20 - 8 - 8 - 16) & ~3) - 2
    = 1446 (Linux esp4_get_mtu); over an IPv6 outer, ((1500 - 40 - 8 - 8 - 16) & ~3) - 2 = 1426."""
    for outer, inner, mtu in ((4, 4, 1446), (6, 6, 1426), (4, 6, 1446)):
        _, host, _, _, remote = INNER[inner]
        net, rules = gw(outer=outer, inner=inner)
        big = inner_ip(inner, host, remote, **({"flags": "DF"} if inner == 4 else {}))
        big = (
            Ether(src=HOST_MAC, dst=GW_LAN)
            / big
            / UDP(sport=1111, dport=2222)
            / Raw(bytes(mtu - 28 + 1 - (20 if inner == 6 else 0)))
        )
        ok = Ether(src=HOST_MAC, dst=GW_LAN) / inner_ip(
            inner, host, remote, **({"flags": "DF"} if inner == 4 else {})
        )
        ok = ok / UDP(sport=1111, dport=2222) / Raw(bytes(mtu - 28 - (20 if inner == 6 else 0)))
        pk = trace(outer=outer, inner=inner, n=4) + [("lan0", big), ("lan0", ok)]
        (tmp_path / f"{outer}{inner}").mkdir()
        out, stats, _ = run(tmp_path / f"{outer}{inner}", pk, net=net, rules=rules, batch_size=4, rx_usecs=FILL)
        icmp = [p for p in out["lan0"] if p.haslayer(ICMP) or p.haslayer(ICMPv6PacketTooBig)]
        assert len(icmp) == 1, out["lan0"]
        if inner == 4:
            assert (icmp[0][ICMP].type, icmp[0][ICMP].code, icmp[0][ICMP].nexthopmtu) == (3, 4, mtu)
        else:
            assert icmp[0][ICMPv6PacketTooBig].mtu == mtu
        assert stats["drops"] == {"pkt_too_big_df": 1}
        assert stats["fastpath_packets"] == 4  # dn2, up3, dn3 and `ok`: the oversize one went slow
        sent = [p for p in out["wan0"]]
        assert len(sent) == 5  # the 4 flow packets and the one that fits exactly, fast-path encrypted
        assert len(bytes(_outer_ip(sent[-1], outer))) <= 1500


def test_sa_lifetime_ends_on_the_fast_path_and_flows_are_torn_down(tmp_path):
    """`limit packet-soft 3 limit packet-hard 6` on the outbound SA: the fast path sends 6 packets
    through it, the soft then the hard expire event fire, the flow is torn down, and every later packet
    is dropped, like on the classic path (which has no SA to find any more)."""
    text = net_text().replace("spi 0x1001 reqid 1 mode tunnel replay-window 32", "spi 0x1001 reqid 1 mode tunnel "
                              "replay-window 32 limit packet-soft 3 limit packet-hard 6")  # fmt: skip
    assert "packet-hard 6" in text
    outs = {}
    for ft in (True, False):
        (tmp_path / str(ft)).mkdir()
        net, rules = parse_network(text, "ipsec.ip"), parse_ruleset(RULES)
        out, stats, res = run(tmp_path / str(ft), trace(), net=net, rules=rules, batch_size=4, rx_usecs=FILL, flowtable=ft)
        assert len(out["wan0"]) == 6 and [p[ESP].seq for p in out["wan0"]] == [1, 2, 3, 4, 5, 6]
        assert len(out["lan0"]) == 10  # the inbound SA has no limit
        drops = stats["drops"]
        assert sum(drops.values()) == 4 and set(drops) <= {"xfrm_no_state", "xfrm_state_expired"}, drops
        events = [(e.state.spi, e.hard) for e in res.worker.xfrm.events]
        assert events == [(0x1001, False), (0x1001, True)], events
        outs[ft] = _bytes(out)
        if ft:
            # fast: dn2 up3 dn3 up4 dn4 up5 dn5; up6 is refused in the bulk that ends the SA, which
            # tears the flow down: later packets take the classic path (dn* still decrypted at ingress)
            assert stats["fastpath_packets"] == 7
            (e,) = [e for e in res.worker.flowtables["ft"][0].entries() if e["xfrm"] >= 0] or [None]
            assert e is None or e["flags"] & 8  # NF_FLOW_TEARDOWN, or already deleted by the GC
    assert outs[True] == outs[False]


def test_sequence_numbers_follow_the_wire_order_with_several_groups_on_one_sa(tmp_path):
    """IPv4 and IPv6 inner flows through one SA land in different transmit groups (the link-layer
    header differs); ESP output still numbers the SA's packets in the order they leave, so the far
    end's replay window sees no reordering."""
    text = net_text(inner=4) + "".join(
        ln + "\n"
        for ln in net_text(inner=6).splitlines()
        if ln.startswith(("addr add fd", "route add fd", "neigh add fd", "xfrm policy"))
    )
    net, rules = parse_network(text, "dual.ip"), parse_ruleset(RULES)
    peer = scapy_sa(0x2002)
    pk = []
    for k in range(40):
        inner = (4, 6)[k % 2]
        _, host, _, _, remote = INNER[inner]
        sport = 1000 + k % 6
        up = inner_ip(inner, host, remote) / UDP(sport=sport, dport=2222) / Raw(b"up%02d" % k)
        pk.append(("lan0", Ether(src=HOST_MAC, dst=GW_LAN) / up))
        if k < 6:  # one reply per flow: offloaded from then on
            dn = inner_ip(inner, remote, host) / UDP(sport=2222, dport=sport) / Raw(b"dn")
            pk.append(("wan0", Ether(src=PEER_MAC, dst=GW_WAN) / peer.encrypt(dn)))
    out, stats, _ = run(tmp_path, pk, net=net, rules=rules, batch_size=8, rx_usecs=FILL)
    assert stats["fastpath_packets"] > 20 and stats["drops"] == {}
    wan = out["wan0"]
    assert [p[ESP].seq for p in wan] == list(range(1, 41))
    mine = scapy_sa(0x1001, towards_gw=False)
    assert [bytes(mine.decrypt(p[IP])[Raw]) for p in wan] == [b"up%02d" % k for k in range(40)]


def test_several_flowtables_give_the_same_bytes(tmp_path):
    """With a second flowtable (on another device) the Worker runs the per-flowtable hook path; the
    IPsec fast path must emit the same bytes there, parked hits included."""
    text = net_text() + "link add dmz0 address 02:00:00:00:03:01\nlink set dmz0 up\n"
    two = RULES.replace("\tchain fw {", "\tflowtable other {\n\t\thook ingress priority filter\n"
                        "\t\tdevices = { dmz0 }\n\t}\n\n\tchain fw {")  # fmt: skip
    pk = trace(n=12)
    pk.insert(
        9, ("lan0", Ether(src=HOST_MAC, dst=GW_LAN) / IP(src="10.1.0.5", dst="10.2.0.9") / UDP() / Raw(b"x"))
    )
    outs = []
    for k, rules in enumerate((RULES, two)):
        (tmp_path / str(k)).mkdir()
        out, stats, res = run(tmp_path / str(k), pk, net=parse_network(text, "n.ip"), rules=parse_ruleset(rules),
                              batch_size=8, rx_usecs=FILL)  # fmt: skip
        assert len(res.worker.flowtables) == k + 1 and stats["drops"] == {}
        assert stats["fastpath_packets"] > 10
        outs.append(_bytes(out))
        assert [p[ESP].seq for p in out["wan0"]] == list(range(1, 14))
    assert outs[0] == outs[1]


def test_no_bulk_gives_the_same_bytes(tmp_path):
    """`--no-bulk`: ESP input and output one packet per call; the bytes do not change."""
    outs = []
    for k, kw in enumerate(({"bulk": True}, {"bulk": False}, {"flowtable": False})):
        (tmp_path / str(k)).mkdir()
        net, rules = gw(outer=6, inner=4)
        out, stats, _ = run(
            tmp_path / str(k), trace(outer=6, inner=4), net=net, rules=rules, batch_size=4, rx_usecs=FILL, **kw
        )
        assert stats["drops"] == {} and stats["fastpath_packets"] == (0 if k == 2 else 15)
        outs.append(_bytes(out))
    assert outs[0] == outs[1] == outs[2]


def test_inbound_rekey_moves_the_flow_to_the_new_sa(tmp_path):
    """The far end rekeys: SA 0x2002 ends after 6 packets (`limit packet-hard 6`) and it sends with
    0x2003 (same reqid) from then on. The flow is torn down with the old SA and, after the next GC
    tick, offloaded again keyed on the new one: nothing is lost, the bytes equal the classic path's,
    and the later packets take the fast path again."""
    text = net_text().replace(
        "spi 0x2002 reqid 2 mode tunnel replay-window 32",
        "spi 0x2002 reqid 2 mode tunnel replay-window 32 limit packet-hard 6",
    )
    key = "0x" + ALGS["gcm128"][1].hex()
    text += (f"xfrm state add src 192.0.2.2 dst 192.0.2.1 proto esp spi 0x2003 reqid 2 mode tunnel replay-window 32 "
             f"aead 'rfc4106(gcm(aes))' {key} 128\n")  # fmt: skip
    old, new = scapy_sa(0x2002), scapy_sa(0x2003)
    pk, t = [], 1_700_000_000.0
    for k in range(16):
        t += 2.0 if k == 8 else 0.001  # a GC tick after the switch deletes the torn-down flow
        up = (
            Ether(src=HOST_MAC, dst=GW_LAN)
            / IP(src="10.1.0.5", dst="10.2.0.7")
            / UDP(sport=1111, dport=2222)
            / Raw(b"up%02d" % k)
        )
        dn = IP(src="10.2.0.7", dst="10.1.0.5", ttl=40) / UDP(sport=2222, dport=1111) / Raw(b"dn%02d" % k)
        dn = Ether(src=PEER_MAC, dst=GW_WAN) / (old if k < 6 else new).encrypt(dn)
        for p, dt in ((up, 0.0), (dn, 0.0005)):
            p.time, p._fp_time_set = t + dt, True
        pk += [("lan0", up), ("wan0", dn)]
    outs = []
    for k, ft in enumerate((True, False)):
        (tmp_path / str(k)).mkdir()
        out, stats, res = run(tmp_path / str(k), pk, net=parse_network(text, "rekey.ip"), rules=parse_ruleset(RULES),
                              batch_size=4, rx_usecs=FILL, flowtable=ft)  # fmt: skip
        assert stats["drops"] == {}, stats["drops"]
        assert [bytes(p[Raw]) for p in out["lan0"]] == [b"dn%02d" % k for k in range(16)]
        outs.append(_bytes(out))
        if ft:
            assert stats["flows_offloaded"] == 2 and stats["flows_expired"] == 1
            encaps = {e["encap"] for e in res.worker.flowtables["ft"][0].entries() if e["encap"]}
            assert encaps == {3}  # SA index 2 (0x2003) + 1
            assert stats["fastpath_packets"] >= 12
    assert outs[0] == outs[1]


@pytest.mark.skipif(
    os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="no compiled signatures without the JIT"
)
def test_the_esp_driver_has_one_compiled_signature(tmp_path):
    """flowtable/ingress.py › nf_hook_ingress_xfrm, after ESP input and output with one and with two
    flowtables, bulk on and off: one signature (the entry point the Worker calls is resolved for it)."""
    from flowpath.flowtable.ingress import nf_hook_ingress_xfrm

    text = net_text() + "link add dmz0 address 02:00:00:00:03:01\nlink set dmz0 up\n"
    two = RULES.replace("\tchain fw {", "\tflowtable other {\n\t\thook ingress priority filter\n"
                        "\t\tdevices = { dmz0 }\n\t}\n\n\tchain fw {")  # fmt: skip
    for k, (rules, bulk) in enumerate(((RULES, True), (two, False))):
        (tmp_path / str(k)).mkdir()
        _, stats, _ = run(tmp_path / str(k), trace(), net=parse_network(text, "n.ip"), rules=parse_ruleset(rules),
                          batch_size=4, bulk=bulk)  # fmt: skip
        assert stats["fastpath_packets"] > 10
    assert len(nf_hook_ingress_xfrm.signatures) == 1, nf_hook_ingress_xfrm.signatures


def test_same_sequence_number_in_one_poll_the_first_arrival_wins_on_both_paths(tmp_path):
    """Reliability issue, item 7: two ESP packets with one sequence number in one poll, the first in a
    frame only the classic path takes (an IPv4 header with options), the second an ordinary one. The
    first to arrive is accepted and the second is a replay, with the flowtable as without: ESP input
    leaves the poll's later ESP to the classic path once an earlier one goes there."""
    _, host, _, _, remote = INNER[4]
    peer = scapy_sa(0x2002)
    inner = lambda tag: inner_ip(4, remote, host, ttl=40) / UDP(sport=2222, dport=1111) / Raw(tag)  # noqa: E731
    t0 = 1_700_000_000.0
    pkts = []
    for k, tag in enumerate((b"warm-up-1", b"warm-up-2")):  # the classic path decrypts: the tunnel tuple is known
        p = Ether(src=PEER_MAC, dst=GW_WAN) / peer.encrypt(inner(tag))
        p.time, p._fp_time_set = t0 + k * 0.01, True
        pkts.append(("wan0", p))
    first = peer.encrypt(inner(b"first"))
    peer.seq_num -= 1
    second = peer.encrypt(inner(b"second"))
    assert first[ESP].seq == second[ESP].seq
    first = IP(bytes(first))
    first.options = [IPOption(b"\x01\x01\x01\x01")]  # four NOPs: well formed, the fast path declines them
    del first.ihl, first.len, first.chksum
    for p in (first, second):
        f = Ether(src=PEER_MAC, dst=GW_WAN) / IP(bytes(p))
        f.time, f._fp_time_set = t0 + 0.5, True  # one poll
        pkts.append(("wan0", f))
    outs = {}
    for ft in (True, False):
        (tmp_path / str(ft)).mkdir()
        net, rules = gw()
        out, stats, _ = run(tmp_path / str(ft), pkts, net=net, rules=rules, flowtable=ft)
        outs[ft] = [bytes(o[Raw]) for o in out["lan0"]]
        assert stats["drops"] == {"xfrm_in_replay": 1}, stats
    assert outs[True] == outs[False] == [b"warm-up-1", b"warm-up-2", b"first"]


def test_interface_counters_count_frames_as_received_and_sent(tmp_path):
    """Reliability issue, item 8: rx bytes are the frames as received (ESP before decryption, plaintext
    before encryption) and tx bytes as sent, whether the flowtable forwarded them or not."""
    per = {}
    for ft in (True, False):
        (tmp_path / str(ft)).mkdir()
        net, rules = gw()
        pk = trace(n=30)
        _, stats, _ = run(tmp_path / str(ft), pk, net=net, rules=rules, flowtable=ft)
        per[ft] = stats["interfaces"]
        if ft:
            assert stats["fastpath_packets"] > 50
    rx = {name: sum(len(p) for n, p in trace(n=30) if n == name) for name in ("lan0", "wan0")}
    assert per[True] == per[False]
    assert {k: per[True][k]["rx_bytes"] for k in rx} == rx
