"""ip6tnl on the classic path (IPv4 and IPv6 inside IPv6), through `replay`, checked with Scapy.

Linux: net/ipv6/ip6_tunnel.c (ipxip6_tnl_xmit, ip6_tnl_xmit, ip6_tnl_parse_tlv_enc_lim, ipxip6_rcv,
ip6_tnl_lookup), net/ipv6/tunnel6.c (port unreachable when no tunnel takes the packet),
include/net/inet_ecn.h (RFC 6040), RFC 2473 (the encapsulation limit option).
The gateway: h1 (10.1.0.5, 2001:db8:1::5) on lan0; the peer gateway 2001:db8:ff::2 on wan0 at the
other end of t6, with 10.2.0.0/16 and 2001:db8:2::/48 behind it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.all import (
    ICMP,
    IP,
    UDP,
    Ether,
    ICMPv6DestUnreach,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    IPerror,
    IPerror6,
    IPv6,
    IPv6ExtHdrDestOpt,
    Raw,
    wrpcap,
)

from flowpath.config.ipbatch import parse_network
from flowpath.config.nft import parse_ruleset
from flowpath.ports.pcap import read_capture
from flowpath.replay import replay

GW_LAN, GW_WAN, H1, PEER = "02:00:00:00:01:01", "02:00:00:00:02:01", "02:00:00:00:01:05", "02:00:00:00:02:02"
STRANGER = "02:00:00:00:02:09"
GW6, PEER6, STRANGER6 = "2001:db8:ff::1", "2001:db8:ff::2", "2001:db8:ff::9"
TUNNEL = f"link add t6 type ip6tnl mode any local {GW6} remote {PEER6}"
NET = f"""\
link add lan0 address {GW_LAN}
link add wan0 address {GW_WAN}
link set lan0 up
link set wan0 up
addr add 10.1.0.1/24 dev lan0
addr add 2001:db8:1::1/64 dev lan0
addr add {GW6}/64 dev wan0
neigh add 10.1.0.5 lladdr {H1} dev lan0
neigh add 2001:db8:1::5 lladdr {H1} dev lan0
neigh add {PEER6} lladdr {PEER} dev wan0
neigh add {STRANGER6} lladdr {STRANGER} dev wan0
{TUNNEL}
link set t6 up
route add 10.2.0.0/16 dev t6
route add 2001:db8:2::/48 dev t6
"""
RULES = """\
table inet filter {
	chain forward {
		type filter hook forward priority filter; policy drop;
		iifname "lan0" oifname "t6" accept
		iifname "t6" oifname "lan0" accept
	}
}
"""


def run(tmp_path: Path, packets, net_text: str = NET, rules_text: str = RULES, **kw):
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
    res = replay(net, parse_ruleset(rules_text, "gw.nft"), inputs, tmp_path / "out", **kw)
    out = {name: [Ether(r.data) for r in read_capture(p)] for name, p in res.outputs.items()}
    return out, res.stats


def tunnel(opts: str) -> str:
    return NET.replace(TUNNEL, TUNNEL + " " + opts)


def from_h1(dst="10.2.0.7", ttl=30, tos=0, flags=0, size=100):
    return (
        Ether(src=H1, dst=GW_LAN)
        / IP(src="10.1.0.5", dst=dst, ttl=ttl, tos=tos, flags=flags)
        / UDP(sport=1000, dport=2000)
        / Raw(b"x" * size)
    )


def from_h1_v6(dst="2001:db8:2::7", hlim=30, tc=0, fl=0, size=100, src="2001:db8:1::5", encap_limit=None):
    """An IPv6 packet from h1; with encap_limit, one that left another tunnel (the option inside)."""
    l4 = UDP(sport=1000, dport=2000) / Raw(b"x" * size)
    if encap_limit is None:
        return Ether(src=H1, dst=GW_LAN) / IPv6(src=src, dst=dst, hlim=hlim, tc=tc, fl=fl) / l4
    ip6 = IPv6(src=src, dst=dst, hlim=hlim, tc=tc, fl=fl, nh=60) / Raw(dest_opt(17, encap_limit) + bytes(l4))
    return Ether(src=H1, dst=GW_LAN) / IPv6(bytes(ip6))


def dest_opt(nh: int, encap_limit: int) -> bytes:
    """The destination options header ip6tnl sends (init_tel_txopt): the limit option, then PadN."""
    return bytes((nh, 0)) + bytes((4, 1, encap_limit, 1, 1, 0))


def from_peer(inner, src=PEER6, tc=0, mac=PEER, encap_limit=4):
    """The peer's outer packet: an IPv6 header, the encapsulation limit option as ip6tnl adds it
    (None: without it), the inner packet."""
    nh = 4 if IP in inner else 41
    if encap_limit is None:
        outer = IPv6(src=src, dst=GW6, tc=tc, hlim=64, nh=nh) / Raw(bytes(inner))
    else:
        outer = IPv6(src=src, dst=GW6, tc=tc, hlim=64, nh=60) / Raw(dest_opt(nh, encap_limit) + bytes(inner))
    return Ether(src=mac, dst=GW_WAN) / IPv6(bytes(outer))


def inner_to_h1(ttl=20, tos=0):
    return IP(src="10.2.0.7", dst="10.1.0.5", ttl=ttl, tos=tos) / UDP(sport=2000, dport=1000) / Raw(b"y" * 50)


def inner6_to_h1(hlim=20, tc=0):
    return (
        IPv6(src="2001:db8:2::7", dst="2001:db8:1::5", hlim=hlim, tc=tc)
        / UDP(sport=2000, dport=1000)
        / Raw(b"y" * 50)
    )


def outer_of(e):
    """(IPv6 outer header, destination options bytes or None, inner bytes) of a frame from the gateway."""
    o = e[IPv6]
    if o.nh == 60:
        d = o[IPv6ExtHdrDestOpt]
        raw = bytes(d)[: (d.len + 1) * 8]
        return o, raw, bytes(d)[len(raw) :]
    return o, None, bytes(o.payload)


# ---- transmit ----


def test_ipip6_encap_pushes_ipv6_and_the_encap_limit_option(tmp_path):
    """ip4ip6 through ip6_tnl_xmit: saddr local, daddr remote, hop limit 64 (the default), the 8-byte
    destination options header with limit 4 (init_tel_txopt) then next header 4; the inner IPv4 packet
    forwarded (TTL - 1); the ECN field copied from the inner TOS, the DSCP 0 (tclass 0)."""
    out, stats = run(tmp_path, [("lan0", from_h1(ttl=30, tos=0xB9))])
    [e] = out["wan0"]
    assert (e.src, e.dst) == (GW_WAN, PEER)
    o, opt, inner = outer_of(e)
    assert (o.src, o.dst, o.hlim, o.tc, o.fl, o.plen) == (GW6, PEER6, 64, 0x01, 0, 8 + 128)
    assert opt == dest_opt(4, 4)
    tel, pad = o[IPv6ExtHdrDestOpt].options  # Scapy names type 4 "Tunnel Encapsulation Limit"
    assert (tel.otype, tel.optdata, pad.otype, o[IPv6ExtHdrDestOpt].nh) == (4, b"\x04", 1, 4)
    i = IP(inner)
    assert (i.src, i.dst, i.ttl, i.tos, bytes(i[Raw])) == ("10.1.0.5", "10.2.0.7", 29, 0xB9, b"x" * 100)
    assert stats["reasons"] == {"tx": 1}


def test_ip6ip6_encap(tmp_path):
    """ip6ip6: next header 41 after the option; the inner IPv6 packet forwarded (hop limit - 1)."""
    out, _ = run(tmp_path, [("lan0", from_h1_v6(hlim=30, tc=0x02))])
    [e] = out["wan0"]
    o, opt, inner = outer_of(e)
    assert (o.src, o.dst, o.hlim, o.tc, o.fl) == (GW6, PEER6, 64, 0x02, 0)
    assert opt == dest_opt(41, 4)
    i = IPv6(inner)
    assert (i.src, i.dst, i.hlim, bytes(i[Raw])) == ("2001:db8:1::5", "2001:db8:2::7", 29, b"x" * 100)


def test_hoplimit_tclass_and_flowlabel_inherit(tmp_path):
    """hoplimit inherit: the forwarded inner TTL / hop limit; tclass inherit: the inner DS field, CE
    sent as ECT(0) (INET_ECN_encapsulate); flowlabel inherit: an IPv6 inner packet's label, 0 for IPv4."""
    net = tunnel("hoplimit inherit tclass inherit flowlabel inherit")
    out, _ = run(
        tmp_path,
        [("lan0", from_h1_v6(hlim=30, tc=0xBB, fl=0x12345)), ("lan0", from_h1(ttl=40, tos=0x2B))],
        net,
    )
    o6, o4 = (outer_of(e)[0] for e in out["wan0"])
    assert (o6.hlim, o6.tc, o6.fl) == (29, 0xBA, 0x12345)
    assert (o4.hlim, o4.tc, o4.fl) == (39, 0x2A, 0)


def test_fixed_hoplimit_tclass_and_flowlabel(tmp_path):
    """hoplimit 10 tclass 0x28 flowlabel 0xbeef: fixed outer fields; the ECN field is the inner's."""
    net = tunnel("hoplimit 10 tclass 0x28 flowlabel 0xbeef")
    out, _ = run(tmp_path, [("lan0", from_h1_v6(tc=0xB9, fl=0x777))], net)
    o = outer_of(out["wan0"][0])[0]
    assert (o.hlim, o.tc, o.fl) == (10, 0x29, 0xBEEF)


def test_encaplimit_none_sends_no_option_and_the_mtu_is_1460(tmp_path):
    """encaplimit none (IP6_TNL_F_IGN_ENCAP_LIMIT): the inner packet follows the IPv6 header at once,
    and the device MTU is 1500 - 40 = 1460; with the option it is 1452 (ip6_tnl_link_config)."""
    net = tunnel("encaplimit none")
    fits, too_big = from_h1(flags="DF", size=1460 - 28), from_h1(flags="DF", size=1461 - 28)
    out, stats = run(tmp_path, [("lan0", fits), ("lan0", too_big)], net)
    [e] = out["wan0"]
    o, opt, inner = outer_of(e)
    assert opt is None and o.nh == 4 and o.plen == 1460 and len(inner) == 1460
    [icmp] = out["lan0"]
    assert (icmp[ICMP].type, icmp[ICMP].code, icmp[ICMP].nexthopmtu) == (3, 4, 1460)
    assert stats["drops"] == {"pkt_too_big_df": 1}


def test_default_mtu_1452_frag_needed_and_packet_too_big(tmp_path):
    """The tunnel MTU with the option, 1452: an IPv4 packet with DF one byte over gets fragmentation
    needed (1452) from ip_forward, an IPv6 one a packet too big (1452) from ip6_forward."""
    pkts = [
        ("lan0", from_h1(flags="DF", size=1452 - 28)),
        ("lan0", from_h1(flags="DF", size=1453 - 28)),
        ("lan0", from_h1_v6(size=1452 - 48)),
        ("lan0", from_h1_v6(size=1453 - 48)),
    ]
    out, stats = run(tmp_path, pkts)
    assert [len(outer_of(e)[2]) for e in out["wan0"]] == [1452, 1452]
    assert [e[IPv6].plen for e in out["wan0"]] == [1460, 1460]
    icmp4, icmp6 = out["lan0"]
    assert (icmp4[ICMP].type, icmp4[ICMP].code, icmp4[ICMP].nexthopmtu) == (3, 4, 1452)
    assert icmp6[ICMPv6PacketTooBig].mtu == 1452 and icmp6[IPv6].dst == "2001:db8:1::5"
    assert stats["drops"] == {"pkt_too_big_df": 2}


def test_path_mtu_below_the_tunnel_mtu(tmp_path):
    """ip6_tnl_xmit: the outer route's MTU (1280) less 48 is the limit, but never below IPV6_MIN_MTU
    for an IPv6 inner packet (1280) nor IPV4_MIN_MTU for an IPv4 one (68, so 1232 here). Past it:
    packet too big / fragmentation needed, the latter even without DF ("send ICMP error even if DF is
    not set"). An IPv6 inner packet of exactly 1280 fits that limit but makes a 1328-byte outer
    packet: skb_scrub_packet cleared ignore_df, so ip6_fragment refuses it (fail_toobig)."""
    net = NET.replace("\nlink add t6", f"\nroute add {PEER6}/128 dev wan0 mtu 1280\nlink add t6")
    pkts = [
        ("lan0", from_h1_v6(size=1300 - 48)),
        ("lan0", from_h1(size=1300 - 28)),
        ("lan0", from_h1(size=1232 - 28)),
        ("lan0", from_h1_v6(size=1280 - 48)),
    ]
    out, stats = run(tmp_path, pkts, net)
    ptb, frag_needed = out["lan0"]
    assert ptb[ICMPv6PacketTooBig].mtu == 1280 and ptb[IPerror6].plen == 1300 - 40
    assert (frag_needed[ICMP].type, frag_needed[ICMP].code, frag_needed[ICMP].nexthopmtu) == (3, 4, 1232)
    assert not frag_needed[IPerror].flags.DF
    [e] = out["wan0"]
    assert e[IPv6].plen == 1232 + 8
    assert stats["drops"] == {"pkt_too_big_df": 2, "ip_frag_failed": 1}


def test_fragments_of_the_inner_packet_are_checked_one_by_one(tmp_path):
    """ip_finish_output cuts a 1728-byte IPv4 packet without DF to the tunnel MTU (1452 + 296); with
    a path MTU of 1280 the first piece is over ip6_tnl_xmit's 1232: fragmentation needed quoting that
    fragment (MF, 1452 bytes), while the second piece is encapsulated and sent."""
    net = NET.replace("\nlink add t6", f"\nroute add {PEER6}/128 dev wan0 mtu 1280\nlink add t6")
    out, stats = run(tmp_path, [("lan0", from_h1(size=1700))], net)
    [icmp] = out["lan0"]
    assert icmp[ICMP].nexthopmtu == 1232 and (icmp[IPerror].len, icmp[IPerror].flags.MF) == (1452, True)
    [e] = out["wan0"]
    i = IP(outer_of(e)[2])
    assert (i.len, i.frag, i.flags.MF) == (296, 1432 // 8, False)
    assert stats["drops"] == {"pkt_too_big_df": 1}


def test_mode_mismatch_on_transmit(tmp_path):
    """ipxip6_tnl_xmit: an ip6ip6 tunnel refuses IPv4, an ipip6 tunnel IPv6 (tx_errors)."""
    out, stats = run(tmp_path, [("lan0", from_h1())], NET.replace("mode any", "mode ip6ip6"))
    assert not out["wan0"] and stats["drops"] == {"ip_tunnel_proto": 1}
    out, stats = run(tmp_path, [("lan0", from_h1_v6())], NET.replace("mode any", "mode ipip6"))
    assert not out["wan0"] and stats["drops"] == {"ip_tunnel_proto": 1}


def test_inner_encap_limit_is_decremented_and_zero_is_refused(tmp_path):
    """ip6_tnl_parse_tlv_enc_lim on an IPv6 inner packet that left another tunnel: its limit 3 gives
    the outer option 2; a limit of 0 is answered with a parameter problem (code 0, pointer at the
    limit byte: 40 + 2 + 2) and dropped (RFC 2473 §4.1.1)."""
    pkts = [("lan0", from_h1_v6(encap_limit=3)), ("lan0", from_h1_v6(encap_limit=0))]
    out, stats = run(tmp_path, pkts, tunnel("encaplimit none"))
    [e] = out["wan0"]
    assert outer_of(e)[1] == dest_opt(41, 2)
    [pp] = out["lan0"]
    assert (pp[ICMPv6ParamProblem].code, pp[ICMPv6ParamProblem].ptr) == (0, 44)
    assert stats["drops"] == {"ip6_tnl_encap_limit": 1}


def test_inner_source_equal_to_the_remote_is_a_loop(tmp_path):
    """ip6_tnl_addr_conflict: an IPv6 packet from the tunnel's remote end is not sent back into it."""
    out, stats = run(tmp_path, [("lan0", from_h1_v6(src=PEER6))])
    assert not out["wan0"] and stats["drops"] == {"ip_tunnel_loop": 1}


def test_local_end_not_ours_is_a_link_failure(tmp_path):
    """ip6_tnl_xmit_ctl: a local address we do not have cannot send; dst_link_failure tells the inner
    source (ICMP host unreachable / ICMPv6 address unreachable)."""
    net = NET.replace(f"local {GW6}", "local 2001:db8:ff::77")
    out, stats = run(tmp_path, [("lan0", from_h1()), ("lan0", from_h1_v6())], net)
    icmp4, icmp6 = out["lan0"]
    assert (icmp4[ICMP].type, icmp4[ICMP].code) == (3, 1)
    assert (icmp6[ICMPv6DestUnreach].code, icmp6[IPv6].dst) == (3, "2001:db8:1::5")
    assert not out["wan0"] and stats["drops"] == {"ip6_tnl_xmit_ctl": 2}


# ---- receive ----


@pytest.mark.parametrize("encap_limit", [4, None])
def test_decap_ipip6_and_ip6ip6(tmp_path, encap_limit):
    """ipxip6_rcv: the outer header and its destination options go; the inner packet, received on t6,
    is forwarded by inner routing (TTL / hop limit - 1), unchanged otherwise."""
    pkts = [("wan0", from_peer(inner_to_h1(), encap_limit=encap_limit)),
            ("wan0", from_peer(inner6_to_h1(), encap_limit=encap_limit))]  # fmt: skip
    out, stats = run(tmp_path, pkts)
    e4, e6 = out["lan0"]
    assert (e4.src, e4.dst, e6.src, e6.dst) == (GW_LAN, H1, GW_LAN, H1)
    want = IP(bytes(inner_to_h1()))
    want.ttl -= 1
    del want.chksum
    assert bytes(e4[IP]) == bytes(IP(bytes(want)))
    want6 = IPv6(bytes(inner6_to_h1()))
    want6.hlim -= 1
    assert bytes(e6[IPv6]) == bytes(want6)
    assert stats["reasons"] == {"tx": 2} and not out["wan0"]


def test_mode_mismatch_on_receive_is_dropped_silently(tmp_path):
    """ipxip6_rcv: a tunnel whose proto is not the packet's drops it (no ICMP)."""
    net = NET.replace("mode any", "mode ipip6")
    out, stats = run(tmp_path, [("wan0", from_peer(inner6_to_h1())), ("wan0", from_peer(inner_to_h1()))], net)
    assert len(out["lan0"]) == 1 and IP in out["lan0"][0] and not out["wan0"]
    assert stats["drops"] == {"ip_tunnel_proto": 1}


def test_no_tunnel_matches_sends_port_unreachable(tmp_path):
    """tunnel6_rcv / tunnel46_rcv: no handler takes the packet -> ICMPv6 destination unreachable,
    port unreachable, from the outer destination; counted as ip_tunnel_nomatch."""
    pkts = [("wan0", from_peer(inner6_to_h1(), src=STRANGER6, mac=STRANGER)),
            ("wan0", from_peer(inner_to_h1(), src=STRANGER6, mac=STRANGER))]  # fmt: skip
    out, stats = run(tmp_path, pkts)
    for e in out["wan0"]:
        assert e.dst == STRANGER and (e[IPv6].src, e[IPv6].dst) == (GW6, STRANGER6)
        assert e[ICMPv6DestUnreach].code == 4 and e[IPerror6].src == STRANGER6
    assert len(out["wan0"]) == 2 and stats["drops"] == {"ip_tunnel_nomatch": 2} and not out["lan0"]


def test_without_ip6tnl_devices_the_next_header_is_unknown(tmp_path):
    """No ip6tnl device, no tunnel6 handler: ip6_protocol_deliver_rcu's parameter problem (code 1)
    pointing at the next header byte (the destination options header's, offset 40)."""
    net = "\n".join(line for line in NET.splitlines() if "t6" not in line) + "\n"
    out, stats = run(tmp_path, [("wan0", from_peer(inner_to_h1()))], net, RULES.replace('"t6"', '"wan0"'))
    [e] = out["wan0"]
    assert (e[ICMPv6ParamProblem].code, e[ICMPv6ParamProblem].ptr) == (1, 40)
    assert stats["drops"] == {"ip_noproto": 1}


LOOKUP_NET = NET.replace(
    TUNNEL,
    f"link add tl type ip6tnl local {GW6}\nlink set tl up\n"
    f"link add tr type ip6tnl remote {STRANGER6}\nlink set tr up\n" + TUNNEL,
)


def test_wildcard_lookup_prefers_the_local_only_tunnel(tmp_path):
    """ip6_tnl_lookup: exact first (t6 for the peer), then a tunnel with our local end and any remote
    (tl), then one with the remote and any local (tr): the reverse of ip_tunnel_lookup's IPv4 order."""
    rules = RULES.replace(
        'iifname "t6" oifname "lan0" accept', 'iifname { "t6", "tl" } oifname "lan0" accept'
    )
    pkts = [
        ("wan0", from_peer(inner_to_h1(ttl=20))),
        ("wan0", from_peer(inner_to_h1(ttl=21), src=STRANGER6, mac=STRANGER)),
    ]
    out, stats = run(tmp_path, pkts, LOOKUP_NET, rules)
    assert [e[IP].ttl for e in out["lan0"]] == [19, 20] and stats["reasons"] == {"tx": 2}
    # without tl, the stranger's packet lands on tr, which FORWARD does not accept
    net = LOOKUP_NET.replace(f"link add tl type ip6tnl local {GW6}\nlink set tl up\n", "")
    out, stats = run(tmp_path, pkts, net, rules.replace('"tl"', '"t6"'))
    assert [e[IP].ttl for e in out["lan0"]] == [19] and stats["drops"] == {"netfilter_drop": 1}


def test_nbma_tunnel_sends_ipv6_to_the_route_gateway(tmp_path):
    """A tunnel without a remote (tl) sends an IPv6 packet to its inner route's next hop
    (ip6_tnl_xmit: dst_neigh_lookup); an IPv4 packet has no IPv6 next hop there: a link failure."""
    net = LOOKUP_NET + f"route add 2001:db8:3::/48 via {PEER6} dev tl onlink\nroute add 10.3.0.0/16 dev tl\n"
    rules = RULES.replace('oifname "t6"', 'oifname { "t6", "tl" }')
    out, stats = run(
        tmp_path, [("lan0", from_h1_v6(dst="2001:db8:3::7")), ("lan0", from_h1(dst="10.3.0.7"))], net, rules
    )
    [e] = out["wan0"]
    assert (e.dst, e[IPv6].src, e[IPv6].dst, IPv6(outer_of(e)[2]).dst) == (PEER, GW6, PEER6, "2001:db8:3::7")
    [icmp] = out["lan0"]
    assert (icmp[ICMP].type, icmp[ICMP].code) == (3, 1) and stats["drops"] == {"ip6_tnl_xmit_ctl": 1}


def test_outer_source_of_ours_is_refused(tmp_path):
    """ip6_tnl_rcv_ctl: a tunnel does not take a packet whose outer source is one of our addresses
    (here lan0's, matched by the local-only tunnel tl); dropped without an ICMP error."""
    pkt = from_peer(inner_to_h1(), src="2001:db8:1::1", mac=STRANGER)
    out, stats = run(tmp_path, [("wan0", pkt)], LOOKUP_NET)
    assert not out["lan0"] and not out["wan0"] and stats["drops"] == {"ip6_tnl_rcv_ctl": 1}


def test_forward_chain_sees_iifname_of_the_tunnel(tmp_path):
    """The decapsulated packet is received on t6 (gro_cells_receive): FORWARD's iifname is "t6"."""
    rules = RULES.replace('iifname "t6" oifname "lan0" accept', 'iifname "wan0" oifname "lan0" accept')
    out, stats = run(tmp_path, [("wan0", from_peer(inner6_to_h1()))], rules_text=rules)
    assert not out["lan0"] and stats["drops"] == {"netfilter_drop": 1}


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
def test_decap_ecn_follows_rfc6040_under_an_ipv6_outer(tmp_path, inner_ecn, outer_ecn):
    """IP6_ECN_decapsulate: the outer traffic class's ECN field over an IPv4 inner TOS (checksum
    updated) and an IPv6 inner traffic class; the inner DSCP kept; CE over not-ECT dropped."""
    pkts = [("wan0", from_peer(inner_to_h1(tos=0xB8 | inner_ecn), tc=0x20 | outer_ecn)),
            ("wan0", from_peer(inner6_to_h1(tc=0xB8 | inner_ecn), tc=0x20 | outer_ecn))]  # fmt: skip
    out, stats = run(tmp_path, pkts)
    want = RFC6040[inner_ecn][outer_ecn]
    if want is None:
        assert not out["lan0"] and stats["drops"] == {"ip_tunnel_ecn": 2}
        return
    e4, e6 = out["lan0"]
    assert e4[IP].tos == 0xB8 | want and e6[IPv6].tc == 0xB8 | want
    check = IP(bytes(e4[IP]))
    del check.chksum
    assert IP(bytes(check)).chksum == e4[IP].chksum


# ---- the flowtable leaves ip6tnl to the classic path ----

FT_RULES = """\
table inet filter {
	flowtable ft {
		hook ingress priority filter
		devices = { lan0, wan0 }
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		meta l4proto udp flow add @ft
		iifname "lan0" oifname "t6" accept
		iifname "t6" oifname "lan0" accept
		iifname "lan0" oifname "wan0" accept
		iifname "wan0" oifname "lan0" accept
	}
}
"""


def test_flows_through_ip6tnl_are_not_offloaded(tmp_path):
    """The flowtable's tunnel support is IPv4-in-IPv4 only (Linux 6.19: ipip_fill_forward_path;
    ip6tnl has no ndo_fill_forward_path): `flow add @ft` on a flow through t6 offloads nothing, and
    both directions are forwarded by the classic path, byte for byte as with --no-flowtable. A plain
    IPv6 flow between lan0 and wan0 in the same trace is offloaded: the rule does offload."""
    plain_reply = (
        Ether(src=STRANGER, dst=GW_WAN)
        / IPv6(src=STRANGER6, dst="2001:db8:1::5")
        / UDP(sport=2000, dport=1000)
    )
    pkts = []
    for k in range(4):
        pkts += [("lan0", from_h1(ttl=30 + k)), ("wan0", from_peer(inner_to_h1(ttl=20 + k))),
                 ("lan0", from_h1_v6(hlim=30 + k)), ("wan0", from_peer(inner6_to_h1(hlim=20 + k))),
                 ("lan0", from_h1_v6(dst=STRANGER6)), ("wan0", plain_reply.copy())]  # fmt: skip
    (tmp_path / "fast").mkdir()
    (tmp_path / "classic").mkdir()
    fast, fs = run(tmp_path / "fast", pkts, rules_text=FT_RULES)
    classic, cs = run(tmp_path / "classic", pkts, rules_text=FT_RULES, flowtable=False)
    assert fs["flows_offloaded"] == 1 and fs["fastpath_packets"] == 6  # the plain flow after its first reply
    assert len(fast["wan0"]) == len(fast["lan0"]) == 12
    assert [bytes(e) for e in fast["wan0"]] == [bytes(e) for e in classic["wan0"]]
    assert [bytes(e) for e in fast["lan0"]] == [bytes(e) for e in classic["lan0"]]
    assert fs["drops"] == cs["drops"] == {}
