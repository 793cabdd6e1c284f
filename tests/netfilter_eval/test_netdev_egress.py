"""netdev egress chains in the datapath: every frame a device transmits meets them, once per device.

Linux: include/linux/netfilter_netdev.h › nf_hook_egress, run by net/core/dev.c › __dev_queue_xmit
before the qdisc (no input device; skb->len from the MAC header): forwarded frames of the classic path
and of the flowtable's fast path (nf_flow_queue_xmit), and what the gateway originates (ARP requests,
ICMP errors). A VLAN device's frame meets the VLAN device's chains without its tag, then its real
device's (vlan_dev_hard_start_xmit -> dev_queue_xmit). A Worker built from an `ip -batch` network and
an nft ruleset; Scapy frames in and out; the counters must give every received packet one disposition.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw, raw

from flowpath.config.ipbatch import parse_network
from flowpath.config.nft import parse_ruleset
from flowpath.datapath import Worker
from flowpath.packet.batch import PacketBatch

MAC_A, MAC_GA, MAC_GC, MAC_C = "02:00:00:00:0a:01", "02:00:00:00:0a:02", "02:00:00:00:0c:02", "02:00:00:00:0c:01"
NETWORK = f"""link add ga address {MAC_GA}
link add gc address {MAC_GC}
link add link gc name gc.5 type vlan id 5
link set ga up
link set gc up
link set gc.5 up
addr add 10.7.0.2/24 dev ga
addr add 10.8.0.2/24 dev gc
addr add 10.9.0.2/24 dev gc.5
neigh add 10.7.0.1 lladdr {MAC_A} dev ga
neigh add 10.8.0.1 lladdr {MAC_C} dev gc
neigh add 10.9.0.1 lladdr {MAC_C} dev gc.5
"""
FLOWTABLE = "\tflowtable ft {\n\t\thook ingress priority filter\n\t\tdevices = { ga, gc }\n\t}\n"
FORWARD = """table inet f {
%s	chain forward {
		type filter hook forward priority filter; policy accept;
		ip saddr 10.7.0.1 counter
		meta l4proto udp flow add @ft
	}
}
"""


def _worker(egress: str, flowtable: bool = True, lane: bool = True) -> Worker:
    fwd = FORWARD % (FLOWTABLE if flowtable else "")
    if not flowtable:
        fwd = fwd.replace("\t\tmeta l4proto udp flow add @ft\n", "")
    rules = parse_ruleset(fwd + "table netdev e {\n" + egress + "}\n", "g.nft")
    return Worker(parse_network(NETWORK, "g.ip"), rules, flowtable=flowtable, classic_lane=lane)


def _udp(dport: int, k: int = 0, dst: str = "10.8.0.1", ttl: int = 64) -> bytes:
    return raw(Ether(src=MAC_A, dst=MAC_GA) / IP(src="10.7.0.1", dst=dst, ttl=ttl) / UDP(sport=4000, dport=dport)
               / Raw(bytes(k + 1)))  # fmt: skip


def _poll(w: Worker, frames: list[bytes], iif: str = "ga", t0: int = 10**9) -> list[tuple[str, Ether]]:
    b = PacketBatch(max(len(frames), 1))
    for k, f in enumerate(frames):
        b.append(f, w.net.link_by_name(iif).ifindex, t0 + k)
    return [(w.ifname(ifx), Ether(f)) for ifx, f, _ in w.rx_batch(b)]


def _counters(w: Worker, chain: str) -> list[tuple[int, int]]:
    out = []
    for item in w.net.nft.list_ruleset_json()["nftables"]:
        rule = item.get("rule")
        if rule and rule["chain"] == chain:
            out += [(s["counter"]["packets"], s["counter"]["bytes"]) for s in rule["expr"] if "counter" in s]
    return out


def _one_disposition(w: Worker) -> dict:
    """rx = forwarded + dropped + local + held; tx = the interfaces' tx; every drop has a reason."""
    st = w.stats.as_dict(w.ifname)
    assert st["rx_packets"] == st["forwarded_packets"] + st["dropped_packets"] + st["local_packets"] + st["held_packets"]
    assert st["tx_packets"] == sum(i["tx_packets"] for i in st["interfaces"].values())
    assert int(w.stats.reasons.sum()) == st["rx_packets"]
    return st


OUT = """	chain out {
		type filter hook egress device "gc" priority filter; policy accept;
		udp dport 1007 counter drop
		ip saddr 10.7.0.1 ip ttl 63 counter
		meta iifname != "ga" meta oifname "gc" counter
	}
"""


@pytest.mark.parametrize(("flowtable", "lane"), [(True, True), (False, True), (False, False)],
                         ids=["flowtable", "lane", "python"])  # fmt: skip
@pytest.mark.parametrize("batched", [False, True], ids=["poll-each", "one-poll"])
def test_egress_drops_and_counts_forwarded_frames(flowtable, lane, batched):
    """Four packets of each of two flows: the egress chain of gc sees all eight (after the TTL
    decrement, skb->len with the Ethernet header, no input device), drops one flow's; the forward
    chain sees only what the flowtable did not take (with the flowtable: the third and fourth of each
    flow are its hits, and meet the chain too, in their slots)."""
    w = _worker(OUT, flowtable, lane)
    frames = [_udp(d, k) for k in range(4) for d in (1000, 1007)]
    if batched:
        out = _poll(w, frames[:4]) + _poll(w, frames[4:], t0=2 * 10**9)
    else:
        out = [o for k, f in enumerate(frames) for o in _poll(w, [f], t0=10**9 + k * 1000)]
    assert [(dev, p[UDP].dport, len(p[Raw].load), p[IP].ttl) for dev, p in out] == [
        ("gc", 1000, k + 1, 63) for k in range(4)
    ]
    assert _counters(w, "out") == [(4, 4 * 42 + 10), (4, 4 * 42 + 10), (4, 4 * 42 + 10)]
    st = _one_disposition(w)
    assert st["drops"] == {"netfilter_egress": 4} and st["forwarded_packets"] == 4
    assert st["interfaces"]["gc"]["tx_packets"] == 4 and st["tx_packets"] == 4
    assert st["fastpath_packets"] == (4 if flowtable else 0)  # offloaded by its second packet, dropped or not
    assert _counters(w, "forward")[0][0] == 8 - st["fastpath_packets"]


def test_no_egress_chain_costs_nothing_on_the_fast_paths():
    """Without egress chains the Worker has no egress table to consult and the compiled lane runs."""
    w = _worker("\tchain i {\n\t\ttype filter hook ingress device \"gc\" priority 10;\n\t}\n", flowtable=False)
    assert w._egress is None
    assert _worker(OUT)._egress is not None


def test_egress_chain_changes_the_frame_in_its_slot():
    """A payload statement at egress changes what leaves, on the fast path's hits as on the classic
    path's frames (its checksum updated as nft_payload_set_eval does)."""
    w = _worker("\tchain out {\n\t\ttype filter hook egress device \"gc\" priority 0;\n\t\tip dscp set cs1\n\t}\n")
    out = [o for k in range(4) for o in _poll(w, [_udp(1000, k)], t0=10**9 + k * 1000)]
    assert w.stats.fastpath_packets == 2
    for _, p in out:
        assert p[IP].tos == 0x20
        q = IP(bytes(p[IP]))
        del q.chksum
        assert IP(raw(q)).chksum == p[IP].chksum


def test_egress_sees_the_gateways_own_frames():
    """The ARP request for an unresolved next hop and an ICMP time exceeded meet the egress chains of
    their devices: the request dropped there is a generated packet's drop, not the received packet's
    (that one waits for its neighbour: held); the ICMP error is counted on ga's chain."""
    net = NETWORK.replace(f"neigh add 10.8.0.1 lladdr {MAC_C} dev gc\n", "")
    egress = ("\tchain out {\n\t\ttype filter hook egress device \"gc\" priority 0;\n"
              "\t\tether type arp counter drop\n\t}\n"
              "\tchain back {\n\t\ttype filter hook egress device \"ga\" priority 0;\n"
              "\t\ticmp type time-exceeded counter\n\t}\n")  # fmt: skip
    rules = parse_ruleset(FORWARD.replace("%s", "").replace("\t\tmeta l4proto udp flow add @ft\n", "")
                          + "table netdev e {\n" + egress + "}\n", "g.nft")  # fmt: skip
    w = Worker(parse_network(net, "g.ip"), rules, flowtable=False)
    out = _poll(w, [_udp(1000), _udp(1001, ttl=1)])
    assert [(dev, p.haslayer(ICMP)) for dev, p in out] == [("ga", True)]
    assert _counters(w, "out") == [(1, 42)] and _counters(w, "back") == [(1, 14 + 20 + 8 + 29)]
    st = _one_disposition(w)
    assert st["held_packets"] == 1 and st["drops"] == {"ttl_expired": 1}
    assert st["generated_packets"] == 1 and st["generated_dropped"] == {"netfilter_egress": 1}


def test_vlan_frame_meets_the_vlan_device_then_its_real_device():
    """Out through gc.5: gc.5's chain sees the frame untagged (`vlan id` does not match, `ether type
    ip` does), gc's sees the tag; a drop on gc.5 spares gc's chain; the frame leaves gc tagged."""
    egress = ("\tchain v {\n\t\ttype filter hook egress device \"gc.5\" priority 0;\n"
              "\t\tvlan id 5 counter\n\t\tether type ip counter\n\t\tudp dport 1007 drop\n\t}\n"
              "\tchain r {\n\t\ttype filter hook egress device \"gc\" priority 0;\n"
              "\t\tvlan id 5 counter\n\t\tether type 8021q counter\n\t}\n")  # fmt: skip
    w = _worker(egress, flowtable=False, lane=False)
    out = _poll(w, [_udp(1000, dst="10.9.0.1"), _udp(1007, dst="10.9.0.1")])
    assert [(dev, p[Dot1Q].vlan, p[UDP].dport) for dev, p in out] == [("gc", 5, 1000)]
    assert _counters(w, "v") == [(0, 0), (2, 2 * 43)] and _counters(w, "r") == [(1, 43), (1, 43)]
    assert _one_disposition(w)["drops"] == {"netfilter_egress": 1}


def test_arp_reply_dropped_at_egress_is_a_generated_drop():
    """arp_rcv's reply goes through dev_queue_xmit like any frame: dropped by ga's egress chain, it
    is counted among the generated packets' drops; the request itself was delivered (local)."""
    egress = "\tchain back {\n\t\ttype filter hook egress device \"ga\" priority 0;\n\t\tether type arp drop\n\t}\n"
    w = _worker(egress, flowtable=False)
    req = raw(Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=MAC_A, psrc="10.7.0.1", pdst="10.7.0.2"))
    assert _poll(w, [req]) == []
    st = _one_disposition(w)
    assert (st["local_packets"], st["generated_packets"], st["generated_dropped"]) == (1, 0, {"netfilter_egress": 1})


def test_tunnel_device_egress_sees_the_inner_packet_then_wan_the_outer():
    """Out through the ipip device tun0 (examples/ipip): tun0's egress chain sees the inner packet
    (no link header: skb->len from the IP header) and may drop it; what it lets go is encapsulated and
    meets wan0's chain as the outer packet (ipip_tunnel_xmit -> ip_local_out -> dev_queue_xmit)."""
    ex = Path(__file__).resolve().parents[2] / "examples" / "ipip"
    egress = ("table netdev e {\n\tchain t {\n\t\ttype filter hook egress device \"tun0\" priority 0;\n"
              "\t\tudp dport 7 counter drop\n\t\tip daddr 10.2.0.7 counter\n\t}\n"
              "\tchain w {\n\t\ttype filter hook egress device \"wan0\" priority 0;\n"
              "\t\tip protocol ipencap counter\n\t}\n}\n")  # fmt: skip
    w = Worker(parse_network((ex / "gw.ip").read_text(), "gw.ip"),
               parse_ruleset((ex / "gw.nft").read_text() + egress, "gw.nft"), flowtable=False)  # fmt: skip
    lan = w.net.link_by_name("lan0").ifindex
    up = [raw(Ether(src="02:00:00:00:01:05", dst="02:00:00:00:01:01") / IP(src="10.1.0.5", dst="10.2.0.7")
              / UDP(sport=1000, dport=d) / Raw(b"u")) for d in (2000, 7)]  # fmt: skip
    b = PacketBatch(2)
    for f in up:
        b.append(f, lan, 10**9)
    out = [(w.ifname(x), Ether(f)) for x, f, _ in w.rx_batch(b)]
    assert [(dev, p[IP].proto, p[IP][1][UDP].dport) for dev, p in out] == [("wan0", 4, 2000)]
    assert _counters(w, "t") == [(1, 29), (1, 29)] and _counters(w, "w") == [(1, 14 + 20 + 29)]
    assert _one_disposition(w)["drops"] == {"netfilter_egress": 1}
