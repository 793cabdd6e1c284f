"""IPIP on the classic path, through `replay` (the public API), checked with Scapy dissection.

Linux: net/ipv4/ipip.c (ipip_rcv, ipip_tunnel_xmit), net/ipv4/ip_tunnel.c (ip_tunnel_rcv,
ip_tunnel_xmit, tnl_update_pmtu), net/ipv4/tunnel4.c (tunnel4_rcv's port unreachable),
include/net/inet_ecn.h (RFC 6040). The gateway is examples/ipip: h1 10.1.0.5 on lan0, the peer
gateway 198.51.100.2 on wan0 at the other end of tun0, 10.2.0.0/16 behind it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.all import ICMP, IP, UDP, Ether, IPerror, Raw, defragment, wrpcap

from flowpath.config.ipbatch import parse_network
from flowpath.config.nft import parse_ruleset
from flowpath.ports.pcap import read_capture
from flowpath.replay import replay

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ipip"
NET = (EXAMPLE / "gw.ip").read_text()
RULES = (EXAMPLE / "gw.nft").read_text()
GW_LAN, GW_WAN, H1, PEER = "02:00:00:00:01:01", "02:00:00:00:02:01", "02:00:00:00:01:05", "02:00:00:00:02:02"
STRANGER = "02:00:00:00:02:09"


def run(tmp_path: Path, packets, net_text: str = NET, rules_text: str = RULES):
    """Replay [(ifname, scapy packet), ...] 1 ms apart; ({ifname: [Ether, ...]}, stats)."""
    per_if: dict[str, list] = {}
    for k, (name, pkt) in enumerate(packets):
        pkt.time = 1_700_000_000 + k / 1000
        per_if.setdefault(name, []).append(pkt)
    inputs = []
    for name, pkts in per_if.items():
        wrpcap(str(tmp_path / f"in-{name}.pcap"), pkts)
        inputs.append((name, tmp_path / f"in-{name}.pcap"))
    net = parse_network(net_text, "gw.ip")
    res = replay(net, parse_ruleset(rules_text, "gw.nft"), inputs, tmp_path / "out")
    out = {name: [Ether(r.data) for r in read_capture(p)] for name, p in res.outputs.items()}
    return out, res.stats


def from_h1(dst="10.2.0.7", ttl=30, tos=0, flags=0, size=100):
    return (
        Ether(src=H1, dst=GW_LAN)
        / IP(src="10.1.0.5", dst=dst, ttl=ttl, tos=tos, flags=flags)
        / UDP(sport=1000, dport=2000)
        / Raw(b"x" * size)
    )


def from_peer(inner, src="198.51.100.2", tos=0, mac=PEER):
    return Ether(src=mac, dst=GW_WAN) / IP(src=src, dst="198.51.100.1", tos=tos) / inner


def inner_to_h1(ttl=20, tos=0, src="10.2.0.7"):
    return IP(src=src, dst="10.1.0.5", ttl=ttl, tos=tos) / UDP(sport=2000, dport=1000) / Raw(b"y" * 50)


def test_decap_forwards_the_inner_packet_to_h1(tmp_path):
    """ipip_rcv: the outer header goes, the inner packet is forwarded by inner routing (TTL - 1)."""
    inner = inner_to_h1()
    out, stats = run(tmp_path, [("wan0", from_peer(inner))])
    [e] = out["lan0"]
    assert (e.src, e.dst) == (GW_LAN, H1)
    want = IP(bytes(inner))
    want.ttl -= 1
    del want.chksum
    assert bytes(e[IP]) == bytes(IP(bytes(want)))
    assert stats["reasons"] == {"tx": 1} and not out["wan0"]


def test_encap_pushes_the_outer_header_toward_the_peer(tmp_path):
    """ip_tunnel_xmit: saddr = local, daddr = remote, protocol 4, TTL inherited from the forwarded
    inner packet, TOS inherited (ECN: ECT(0) copied), DF from pmtudisc (ident 0, ip_select_ident)."""
    out, _ = run(tmp_path, [("lan0", from_h1(ttl=30, tos=0x2A))])
    [e] = out["wan0"]
    o = e[IP]
    assert (e.src, e.dst) == (GW_WAN, PEER)
    assert (o.src, o.dst, o.proto, o.ttl, o.tos, o.flags.DF, o.id) == (
        "198.51.100.1", "198.51.100.2", 4, 29, 0x2A, True, 0,
    )  # fmt: skip
    assert o.chksum == IP(bytes(o.copy())).chksum and o.len == 20 + 128
    i = o.payload
    assert (i.src, i.dst, i.ttl, i.tos, bytes(i[Raw])) == ("10.1.0.5", "10.2.0.7", 29, 0x2A, b"x" * 100)


def test_fixed_ttl_and_tos(tmp_path):
    """ttl 64 and tos 0x10: the outer header takes them; the ECN field is still the inner's
    (INET_ECN_encapsulate), and CE inside becomes ECT(0) outside (RFC 6040 §4.1)."""
    net = NET.replace("ttl inherit tos inherit", "ttl 64 tos 0x10")
    out, _ = run(tmp_path, [("lan0", from_h1(ttl=30, tos=0x03))], net)
    o = out["wan0"][0][IP]
    assert (o.ttl, o.tos, o.payload.tos) == (64, 0x12, 0x03)


# RFC 6040 §4.2, Figure 4: the inner ECN field after decapsulation, by (inner, outer); None = drop
NOT_ECT, ECT1, ECT0, CE = 0, 1, 2, 3
RFC6040 = {
    NOT_ECT: {NOT_ECT: NOT_ECT, ECT0: NOT_ECT, ECT1: NOT_ECT, CE: None},
    ECT0: {NOT_ECT: ECT0, ECT0: ECT0, ECT1: ECT1, CE: CE},
    ECT1: {NOT_ECT: ECT1, ECT0: ECT1, ECT1: ECT1, CE: CE},
    CE: {NOT_ECT: CE, ECT0: CE, ECT1: CE, CE: CE},
}


@pytest.mark.parametrize("inner_ecn", [NOT_ECT, ECT1, ECT0, CE])
@pytest.mark.parametrize("outer_ecn", [NOT_ECT, ECT1, ECT0, CE])
def test_decap_ecn_follows_rfc6040(tmp_path, inner_ecn, outer_ecn):
    """INET_ECN_decapsulate: the table of RFC 6040 §4.2; the inner DSCP is kept; a CE outer on a
    not-ECT inner is dropped and counted; checksum valid after the change."""
    inner = inner_to_h1(tos=0xB8 | inner_ecn)
    out, stats = run(tmp_path, [("wan0", from_peer(inner, tos=0x20 | outer_ecn))])
    want = RFC6040[inner_ecn][outer_ecn]
    if want is None:
        assert not out["lan0"] and stats["drops"] == {"ip_tunnel_ecn": 1}
        return
    [e] = out["lan0"]
    assert e[IP].tos == 0xB8 | want
    check = IP(bytes(e[IP]))
    del check.chksum
    assert IP(bytes(check)).chksum == e[IP].chksum


def test_no_tunnel_matches_sends_port_unreachable(tmp_path):
    """tunnel4_rcv: no handler takes the packet -> ICMP port unreachable from the outer destination,
    quoting the outer packet; counted as ip_tunnel_nomatch."""
    net = NET + "neigh add 198.51.100.9 lladdr 02:00:00:00:02:09 dev wan0\n"
    out, stats = run(tmp_path, [("wan0", from_peer(inner_to_h1(), src="198.51.100.9", mac=STRANGER))], net)
    [e] = out["wan0"]
    assert e.dst == STRANGER and (e[IP].src, e[IP].dst) == ("198.51.100.1", "198.51.100.9")
    assert (e[ICMP].type, e[ICMP].code) == (3, 3)
    assert (e[IPerror].src, e[IPerror].proto) == ("198.51.100.9", 4)
    assert stats["drops"] == {"ip_tunnel_nomatch": 1} and not out["lan0"]


def test_without_ipip_devices_ipip_is_an_unknown_protocol(tmp_path):
    """No ipip device, no tunnel4 handler: ip_protocol_deliver_rcu answers protocol unreachable."""
    net = "\n".join(line for line in NET.splitlines() if "tun0" not in line) + "\n"
    out, stats = run(tmp_path, [("wan0", from_peer(inner_to_h1()))], net, RULES.replace('"tun0"', '"wan0"'))
    [e] = out["wan0"]
    assert (e[ICMP].type, e[ICMP].code) == (3, 2) and stats["drops"] == {"ip_noproto": 1}


def test_wildcard_local_tunnel_takes_the_packet(tmp_path):
    """ip_tunnel_lookup's second step: a tunnel with only `remote` matches any outer destination of ours."""
    net = NET.replace("local 198.51.100.1 remote 198.51.100.2", "remote 198.51.100.2")
    out, _ = run(tmp_path, [("wan0", from_peer(inner_to_h1()))], net)
    assert len(out["lan0"]) == 1 and out["lan0"][0][IP].src == "10.2.0.7"


def test_forward_chain_sees_iifname_of_the_tunnel(tmp_path):
    """The decapsulated packet is received on tun0: FORWARD's iifname is "tun0"."""
    rules = RULES.replace(
        'iifname "tun0" oifname "lan0" accept',
        'iifname "tun0" ip saddr 10.2.0.66 drop\n\t\tiifname "tun0" oifname "lan0" accept',
    )
    pkts = [("wan0", from_peer(inner_to_h1(src="10.2.0.66"))), ("wan0", from_peer(inner_to_h1()))]
    out, stats = run(tmp_path, pkts, rules_text=rules)
    assert [e[IP].src for e in out["lan0"]] == ["10.2.0.7"]
    assert stats["drops"] == {"netfilter_drop": 1}


def test_df_larger_than_the_tunnel_mtu_gets_frag_needed_1480(tmp_path):
    """ip_forward on the tunnel route (MTU 1480 = 1500 - 20): fragmentation needed, mtu 1480, to h1."""
    out, stats = run(tmp_path, [("lan0", from_h1(flags="DF", size=1481 - 28))])
    [e] = out["lan0"]
    assert (e[ICMP].type, e[ICMP].code, e[ICMP].nexthopmtu) == (3, 4, 1480) and e[IP].dst == "10.1.0.5"
    assert not out["wan0"] and stats["drops"] == {"pkt_too_big_df": 1}
    out, _ = run(tmp_path, [("lan0", from_h1(flags="DF", size=1480 - 28))])
    assert len(out["wan0"]) == 1 and out["wan0"][0][IP].len == 1500


def test_path_mtu_below_the_tunnel_mtu_gets_frag_needed_from_the_tunnel(tmp_path):
    """tnl_update_pmtu: with pmtudisc the outer route's MTU (1400 here) less 20 is the limit for an
    inner packet with DF: fragmentation needed with mtu 1380."""
    net = NET.replace("\nlink add tun0", "\nroute add 198.51.100.2/32 dev wan0 mtu 1400\nlink add tun0")
    out, stats = run(tmp_path, [("lan0", from_h1(flags="DF", size=1450 - 28))], net)
    [e] = out["lan0"]
    assert (e[ICMP].type, e[ICMP].code, e[ICMP].nexthopmtu) == (3, 4, 1380)
    assert stats["drops"] == {"pkt_too_big_df": 1}


def test_inner_without_df_is_fragmented_to_the_tunnel_mtu(tmp_path):
    """ip_finish_output on the tunnel route cuts the inner packet to 1480; each piece is encapsulated
    (the outer DF from pmtudisc); the pieces reassemble to the forwarded packet."""
    out, _ = run(tmp_path, [("lan0", from_h1(size=1700))])
    frames = out["wan0"]
    assert len(frames) == 2 and all(e[IP].len <= 1500 and e[IP].flags.DF for e in frames)
    assert frames[0][IP].len == 20 + 20 + 1456  # outer + a first fragment of 8-byte units within 1480
    inner = defragment([IP(bytes(e[IP].payload)) for e in frames])
    assert len(inner) == 1 and bytes(inner[0][Raw]) == b"x" * 1700 and inner[0].ttl == 29


def test_outer_is_fragmented_when_df_is_clear(tmp_path):
    """nopmtudisc and an inner packet without DF: the outer header has no DF, and an outer packet past
    the path MTU (a tunnel MTU set above it) leaves in fragments (ip_fragment) that reassemble to it."""
    net = NET.replace("ttl inherit tos inherit", "nopmtudisc") + "link set tun0 mtu 1600\n"
    out, _ = run(tmp_path, [("lan0", from_h1(size=1550))], net)
    frames = out["wan0"]
    assert len(frames) == 2 and not any(e[IP].flags.DF for e in frames)
    [outer] = defragment([e[IP] for e in frames])
    outer = IP(bytes(outer))
    assert outer.proto == 4 and outer.len == 20 + 20 + 8 + 1550
    assert bytes(outer.payload[Raw]) == b"x" * 1550


def test_outer_df_too_big_is_not_fragmented(tmp_path):
    """pmtudisc on, inner without DF, outer past the path MTU: the outer keeps DF and ip_fragment
    refuses it (IP_FRAG_FAILED), as Linux's local output does."""
    net = NET + "link set tun0 mtu 1600\n"
    out, stats = run(tmp_path, [("lan0", from_h1(size=1550))], net)
    assert not out["wan0"] and stats["drops"] == {"ip_frag_failed": 1}
