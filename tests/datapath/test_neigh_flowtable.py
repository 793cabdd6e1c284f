"""Flowtable entries follow their next hop's neighbour: a new address is written into the entries at
once (the next fast-path frame carries it, still a hit), and a neighbour that fails or is deleted tears
its flows down, so their next packet takes the classic path and resolves it again.

Linux: net/netfilter/nf_flow_table_ip.c › nf_flow_offload_ip_hook (FLOW_OFFLOAD_XMIT_NEIGH: neigh_xmit
per packet, so a changed lladdr applies at once and an invalid neighbour queues and solicits),
net/core/neighbour.c › __neigh_update, neigh_timer_handler, neigh_update_notify (NETEVENT_NEIGH_UPDATE),
net/ipv4/arp.c › arp_process (a gratuitous ARP updates an existing entry), net/ipv6/ndisc.c ›
ndisc_recv_na (an unsolicited NA with the override flag replaces the address; without it, not).
"""

from __future__ import annotations

import ipaddress

import pytest
from gateway import EXAMPLES, GW_LAN, GW_WAN, H10, UPSTREAM, example_rules
from scapy.all import ARP, IP, UDP, Ether, ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6, Raw

from flowpath.config.ipbatch import parse_network, read_commands, run_command
from flowpath.datapath import Worker
from flowpath.flowtable import FlowTuple
from flowpath.net.neighbour import NUD_FAILED, NUD_STALE
from flowpath.netfilter import constants as C
from flowpath.packet.batch import PacketBatch
from flowpath.packet.reason import Reason

T0 = 1_700_000_000 * 10**9
NEW_MAC = "02:00:00:00:02:99"
NEW_H10 = "02:00:00:00:01:99"
LAN0, WAN0 = 2, 3


def net_without_upstream():
    """The example gateway, its upstream router's neighbours removed: resolution learns them."""
    text = (EXAMPLES / "gateway.ip").read_text()
    for line in ("neigh add 203.0.113.254 lladdr 02:00:00:00:02:fe dev wan0\n",
                 "neigh add 2001:db8:ff::fe lladdr 02:00:00:00:02:fe dev wan0\n"):  # fmt: skip
        assert line in text
        text = text.replace(line, "")
    return parse_network(text, "gateway.ip")


class Gateway:
    """A Worker polled one small batch at a time: poll(t, (ifindex, pkt), ...) returns the frames it
    transmitted as [(ifindex, Ether)] and leaves the batch's verdicts in self.verdict."""

    def __init__(self):
        self.w = Worker(net_without_upstream(), example_rules())
        self.ft = self.w.flowtables["ft"][0]

    def poll(self, t: float, *frames):
        batch = PacketBatch(max(1, len(frames)))
        for ifx, pkt in frames:
            batch.append(bytes(pkt), ifx, T0 + int(t * 1e9))
        tx = self.w.poll(batch)
        self.verdict = [Reason(int(v)) for v in batch.verdict[: batch.n]]
        return [(ifx, Ether(f)) for ifx, f, _ in tx.frames()]

    @property
    def stats(self):
        return self.w.stats.as_dict(self.w.ifname)


def up4(sport=1000, payload=b"q" * 40):
    return (
        Ether(src=H10, dst=GW_LAN)
        / IP(src="192.168.1.10", dst="198.51.100.7")
        / UDP(sport=sport, dport=53)
        / Raw(payload)
    )


def down4(dport, payload=b"r" * 30):
    return (
        Ether(src=UPSTREAM, dst=GW_WAN)
        / IP(src="198.51.100.7", dst="203.0.113.1")
        / UDP(sport=53, dport=dport)
        / Raw(payload)
    )


def arp(op, hwsrc, dst, pdst="203.0.113.1", hwdst=GW_WAN):
    return Ether(src=hwsrc, dst=dst) / ARP(op=op, hwsrc=hwsrc, psrc="203.0.113.254", hwdst=hwdst, pdst=pdst)


def offload4(gw: Gateway) -> int:
    """A UDP flow from 192.168.1.10 through the dynamically resolved upstream, offloaded; returns the
    masqueraded source port."""
    [(ifx, req)] = gw.poll(0.0, (LAN0, up4()))
    assert ifx == WAN0 and req[ARP].op == 1 and req.dst == "ff:ff:ff:ff:ff:ff"
    [(ifx, fwd)] = gw.poll(0.1, (WAN0, arp(2, UPSTREAM, GW_WAN)))
    assert ifx == WAN0 and fwd.dst == UPSTREAM
    port = fwd[UDP].sport
    [(ifx, back)] = gw.poll(0.2, (WAN0, down4(port)))
    assert ifx == LAN0 and back.dst == H10
    assert gw.stats["flows_offloaded"] == 1 and len(gw.ft) == 1
    return port


def fast(gw: Gateway, t: float, ifx: int, pkt) -> Ether:
    """One frame that must be a fast-path hit; returns what it became."""
    before = gw.w.stats.fastpath_packets
    [(_, out)] = gw.poll(t, (ifx, pkt))
    assert gw.verdict == [Reason.FLOW_FORWARD] and gw.w.stats.fastpath_packets == before + 1
    return out


@pytest.mark.parametrize(
    "announce",
    [
        arp(1, NEW_MAC, "ff:ff:ff:ff:ff:ff", pdst="203.0.113.254", hwdst="00:00:00:00:00:00"),  # gratuitous
        arp(2, NEW_MAC, GW_WAN),  # a reply to us: REACHABLE
    ],
    ids=["gratuitous-request", "reply"],
)
def test_new_mac_is_written_into_the_entry_and_the_flow_stays_fast(announce):
    gw = Gateway()
    port = offload4(gw)
    before = fast(gw, 0.3, LAN0, up4())
    assert before.dst == UPSTREAM
    assert gw.poll(0.4, (WAN0, announce)) == []
    s = gw.stats  # the WAN-bound direction's entry only
    assert s["flow_entries_neigh_updated"] == 1 and s["flows_neigh_teardown"] == 0
    after = fast(gw, 0.5, LAN0, up4())
    assert after.dst == NEW_MAC
    assert bytes(after)[6:] == bytes(before)[6:]  # only the destination MAC changed
    back = fast(gw, 0.6, WAN0, down4(port))  # the other direction's next hop did not change
    assert back.dst == H10
    [orig, reply] = gw.ft.entries()
    assert orig["h_dest"] == bytes.fromhex(NEW_MAC.replace(":", "")) and orig["nexthop"] == "203.0.113.254"
    assert reply["h_dest"] == bytes.fromhex(H10.replace(":", "")) and reply["nexthop"] == "192.168.1.10"


def up6(payload=b"s" * 40):
    return (
        Ether(src=H10, dst=GW_LAN)
        / IPv6(src="2001:db8:1::10", dst="2001:db8:2::7")
        / UDP(sport=9, dport=53)
        / Raw(payload)
    )


def down6(payload=b"t" * 30):
    return (
        Ether(src=UPSTREAM, dst=GW_WAN)
        / IPv6(src="2001:db8:2::7", dst="2001:db8:1::10")
        / UDP(sport=53, dport=9)
        / Raw(payload)
    )


def na(mac, solicited, override, dst="ff02::1", dst_mac="33:33:00:00:00:01"):
    return (Ether(src=mac, dst=dst_mac) / IPv6(src="2001:db8:ff::fe", dst=dst, hlim=255)
            / ICMPv6ND_NA(tgt="2001:db8:ff::fe", R=1, S=solicited, O=override) / ICMPv6NDOptDstLLAddr(lladdr=mac))  # fmt: skip


def test_unsolicited_na_with_override_rewrites_the_entry_without_override_not():
    """ndisc_recv_na: an unsolicited NA with O set replaces the address (STALE); one without O leaves
    a valid entry's address alone (NEIGH_UPDATE_F_WEAK_OVERRIDE), so the entries keep theirs."""
    gw = Gateway()
    [(_, ns)] = gw.poll(0.0, (LAN0, up6()))
    assert ns[IPv6].dst == "ff02::1:ff00:fe"
    [(_, fwd)] = gw.poll(0.1, (WAN0, na(UPSTREAM, 1, 1, "2001:db8:ff::1", GW_WAN)))
    assert fwd.dst == UPSTREAM and fwd[IPv6].hlim == 63
    [(_, back)] = gw.poll(0.2, (WAN0, down6()))
    assert back.dst == H10 and gw.stats["flows_offloaded"] == 1
    before = fast(gw, 0.3, LAN0, up6())
    assert before.dst == UPSTREAM
    assert gw.poll(0.4, (WAN0, na("02:00:00:00:02:77", 0, 0))) == []  # no override: ignored
    assert fast(gw, 0.5, LAN0, up6()).dst == UPSTREAM and gw.stats["flow_entries_neigh_updated"] == 0
    assert gw.poll(0.6, (WAN0, na(NEW_MAC, 0, 1))) == []
    after = fast(gw, 0.7, LAN0, up6())
    assert after.dst == NEW_MAC and bytes(after)[6:] == bytes(before)[6:]
    assert gw.stats["flow_entries_neigh_updated"] == 1 and gw.stats["flows_neigh_teardown"] == 0
    n = gw.w.net.neigh.neigh_lookup(6, int(ipaddress.ip_address("2001:db8:ff::fe")), WAN0)
    assert n.nud_state == NUD_STALE and n.ha == bytes.fromhex(NEW_MAC.replace(":", ""))


def _ip(s: str) -> int:
    return int(ipaddress.ip_address(s))


def _assert_back_on_the_classic_path(gw: Gateway, out, ct) -> None:
    """The flow is gone from the flowtable (deleted, or hidden until the GC deletes it), its conntrack
    entry given back (IPS_OFFLOAD cleared), and its packet waits on the neighbour's queue behind a
    broadcast ARP request."""
    assert gw.ft.lookup(FlowTuple(LAN0, 4, 17, _ip("192.168.1.10"), _ip("198.51.100.7"), 1000, 53)) < 0
    assert not ct.status & C.IPS_OFFLOAD
    assert gw.verdict != [Reason.FLOW_FORWARD]
    req = out[-1][1]
    assert out[-1][0] == WAN0 and req[ARP].op == 1 and req.dst == "ff:ff:ff:ff:ff:ff"
    assert req[ARP].pdst == "203.0.113.254"
    s = gw.stats
    assert s["flows_neigh_teardown"] == 1 and s["held_packets"] == 1
    assert (
        s["rx_packets"]
        == s["forwarded_packets"] + s["dropped_packets"] + s["local_packets"] + s["held_packets"]
    )


def test_neighbour_failing_on_its_timers_tears_the_flow_down():
    """STALE (a gratuitous ARP) -> DELAY (a classic-path packet uses it) -> PROBE (5 s unconfirmed)
    -> three unicast probes unanswered -> FAILED (neigh_timer_handler): the flow through it is torn
    down at once, and its next packet goes through neigh_resolve_output, which queues it and solicits."""
    gw = Gateway()
    offload4(gw)
    ct = gw.ft.flow_ct(0)
    gw.poll(
        0.3, (WAN0, arp(1, NEW_MAC, "ff:ff:ff:ff:ff:ff", pdst="203.0.113.254", hwdst="00:00:00:00:00:00"))
    )
    [(_, other)] = gw.poll(1.0, (LAN0, up4(sport=2000)))  # a new connection: classic path, DELAY
    assert other.dst == NEW_MAC and other[UDP].dport == 53
    assert fast(gw, 2.0, LAN0, up4()).dst == NEW_MAC  # offloaded traffic does not confirm the neighbour
    out = gw.poll(9.5, (LAN0, up4()))
    probes = [e for _, e in out[:-1]]
    assert [(e[ARP].op, e.dst) for e in probes] == [(1, NEW_MAC)] * 3  # ucast_solicit, to the known address
    n = gw.w.net.neigh.neigh_lookup(4, _ip("203.0.113.254"), WAN0)
    assert n.nud_state != NUD_FAILED  # the packet restarted resolution: INCOMPLETE
    assert len(gw.ft) == 0  # the GC that ran the timers deleted it
    _assert_back_on_the_classic_path(gw, out, ct)


def test_deleted_neighbour_tears_the_flow_down():
    """`ip neigh del` at runtime (neigh_delete: the entry marked dead, then notified)."""
    gw = Gateway()
    offload4(gw)
    ct = gw.ft.flow_ct(0)
    fast(gw, 0.3, LAN0, up4())
    gw.w.net.dev.neigh_del(4, _ip("203.0.113.254"), WAN0)
    assert gw.stats["flows_neigh_teardown"] == 1 and not ct.status & C.IPS_OFFLOAD
    out = gw.poll(0.4, (LAN0, up4()))
    assert len(out) == 1
    _assert_back_on_the_classic_path(gw, out, ct)
    # the reply to the request releases the queue; once the GC deleted the torn-down entries (a tuple
    # still in the table cannot be added: flow_offload_add's -EEXIST), the flow is offloaded again
    [(_, fwd)] = gw.poll(0.5, (WAN0, arp(2, NEW_MAC, GW_WAN)))
    assert fwd.dst == NEW_MAC and bytes(fwd[UDP].payload) == b"q" * 40
    gw.poll(0.6, (WAN0, down4(fwd[UDP].sport)))
    assert gw.stats["flows_offloaded"] == 1
    gw.poll(2.0, (WAN0, down4(fwd[UDP].sport)))
    assert gw.stats["flows_offloaded"] == 2 and fast(gw, 2.1, LAN0, up4()).dst == NEW_MAC


def test_neigh_change_at_runtime_rewrites_the_reply_direction():
    """`neigh change` of the LAN host's permanent entry (neigh_add with NLM_F_REPLACE): the entry of
    the direction towards it takes the new address; the other direction is untouched."""
    gw = Gateway()
    port = offload4(gw)
    before = fast(gw, 0.3, WAN0, down4(port))
    for tokens in read_commands(f"neigh change 192.168.1.10 lladdr {NEW_H10} dev lan0\n"):
        run_command(gw.w.net.dev, "<runtime>", tokens)
    assert gw.stats["flow_entries_neigh_updated"] == 1
    after = fast(gw, 0.4, WAN0, down4(port))
    assert after.dst == NEW_H10 and bytes(after)[6:] == bytes(before)[6:]
    assert fast(gw, 0.5, LAN0, up4()).dst == UPSTREAM
    # the same address again: nothing to rewrite
    for tokens in read_commands(f"neigh replace 192.168.1.10 lladdr {NEW_H10} dev lan0\n"):
        run_command(gw.w.net.dev, "<runtime>", tokens)
    assert gw.stats["flow_entries_neigh_updated"] == 1


def test_link_down_tears_down_the_flows_through_its_neighbours():
    """neigh_ifdown: every neighbour of the link goes, and so do the flows through them."""
    gw = Gateway()
    offload4(gw)
    gw.w.net.dev.link_set(gw.w.net.dev.link_by_name("lan0"), up=False)
    assert gw.stats["flows_neigh_teardown"] == 1 and len(gw.ft) == 1  # deleted at the next GC
    gw.poll(1.5, (WAN0, arp(2, UPSTREAM, GW_WAN)))
    assert len(gw.ft) == 0


def _neigh_trace():
    """UDP flows (masqueraded IPv4, IPv6) through the upstream router, which is resolved first (ARP,
    ND) and then announces a new address (a gratuitous ARP, an unsolicited NA with override) between
    two rounds; a LAN host's gratuitous ARP for its configured entry changes nothing. Each
    announcement has a poll of its own (1 ms apart from its neighbours)."""
    t = [1_700_000_000.0]
    pkts = []

    def at(dt, ifname, pkt):
        t[0] += dt
        pkt.time, pkt._fp_time_set = t[0], True
        pkts.append((ifname, pkt))

    flows = [(up4(sport=1000 + k, payload=bytes([k]) * (20 + 37 * k)), 1000 + k) for k in range(6)]
    v6 = [up6(bytes([k]) * (30 + 11 * k)) for k in range(2)]
    for k, p in enumerate(v6):
        p[UDP].sport = 9 + k
    at(0.001, "lan0", flows[0][0].copy())
    at(0.001, "lan0", v6[0].copy())
    at(0.001, "wan0", arp(2, UPSTREAM, GW_WAN))
    at(0.001, "wan0", na(UPSTREAM, 1, 1, "2001:db8:ff::1", GW_WAN))
    for r in range(8):
        if r == 4:
            at(
                0.001,
                "wan0",
                arp(1, NEW_MAC, "ff:ff:ff:ff:ff:ff", pdst="203.0.113.254", hwdst="00:00:00:00:00:00"),
            )
            at(0.001, "wan0", na(NEW_MAC, 0, 1))
            lan_garp = Ether(src=NEW_H10, dst="ff:ff:ff:ff:ff:ff") / ARP(
                op=1, hwsrc=NEW_H10, psrc="192.168.1.10", pdst="192.168.1.10", hwdst="00:00:00:00:00:00"
            )
            at(0.001, "lan0", lan_garp)
            at(0.001, "lan0", up4(sport=1000, payload=b"after"))
        for pkt, port in flows:
            at(0.00002, "lan0", pkt.copy())
            at(0.00002, "wan0", down4(port, b"d" * (10 + port % 7)))
        for k, pkt in enumerate(v6):
            at(0.00002, "lan0", pkt.copy())
            back = down6()
            back[UDP].dport = 9 + k
            at(0.00002, "wan0", back)
        t[0] += 0.2
    return pkts


@pytest.mark.parametrize("batch_size", [4, 256])
def test_neighbour_changes_keep_the_two_paths_identical(tmp_path, batch_size):
    """DESIGN.md §1 across neighbour changes: with and without the flowtable, the same bytes leave,
    the announced address on every frame after the announcement, fast-path hits included."""
    from gateway import run

    out = {}
    for ft in (False, True):
        (tmp_path / f"ft{ft}").mkdir()
        frames, s, _ = run(tmp_path / f"ft{ft}", _neigh_trace(), net=net_without_upstream(), rules=example_rules(),
                           flowtable=ft, batch_size=batch_size)  # fmt: skip
        out[ft] = ({k: [bytes(e) for e in v] for k, v in frames.items()}, s)
    (classic, cs), (fast_, fs) = out[False], out[True]
    assert classic == fast_ and len(classic["wan0"]) > 60
    assert fs["fastpath_packets"] > fs["rx_packets"] // 2 and cs["fastpath_packets"] == 0
    assert fs["flow_entries_neigh_updated"] == 8 and fs["flows_neigh_teardown"] == 0  # 6 IPv4 + 2 IPv6 flows
    wan_udp = [Ether(f) for f in fast_["wan0"]]
    wan_udp = [e for e in wan_udp if UDP in e]
    k = next(i for i, e in enumerate(wan_udp) if bytes(e[UDP].payload) == b"after")
    assert {e.dst for e in wan_udp[:k]} == {UPSTREAM} and {e.dst for e in wan_udp[k:]} == {NEW_MAC}
    assert {e.dst for e in map(Ether, fast_["lan0"]) if UDP in e} == {H10}


def test_after_a_reload_the_worker_follows_the_new_neighbour_table_only():
    """Worker.reload runs on a new network model: its neighbours' changes reach the new flowtables,
    the old model's no longer reach the Worker."""
    gw = Gateway()
    old_dev = gw.w.net.dev
    gw.w.reload(net_without_upstream(), example_rules())
    gw.ft = gw.w.flowtables["ft"][0]
    offload4(gw)  # through the new model's upstream
    old_dev.neigh_del(4, _ip("192.168.1.10"), LAN0)
    assert gw.stats["flows_neigh_teardown"] == 0
    gw.w.net.dev.neigh_del(4, _ip("192.168.1.10"), LAN0)
    assert gw.stats["flows_neigh_teardown"] == 1
