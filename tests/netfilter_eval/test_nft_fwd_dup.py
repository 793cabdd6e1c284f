"""netdev's fwd and dup statements in the datapath: frames out of another device, as they are or through
a neighbour.

Linux: net/netfilter/nft_fwd_netdev.c (nft_fwd_netdev_eval: NF_STOLEN, the frame out of the device;
nft_fwd_neigh_eval: its TTL less one, to the neighbour through neigh_xmit, queued while unresolved),
nft_dup_netdev.c and nf_dup_netdev.c (a clone out of the device, the packet goes on; nested transmits
past NF_RECURSION_LIMIT freed). The Worker and network of test_netdev_egress.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw, raw

sys.path.insert(0, str(Path(__file__).parent))
from test_netdev_egress import MAC_C, MAC_GA, MAC_GC, _counters, _one_disposition, _poll, _udp, _worker  # noqa: E402


def _ingress(rules: str, dev: str = "ga") -> str:
    return f"\tchain in {{\n\t\ttype filter hook ingress device \"{dev}\" priority 10;\n{rules}\t}}\n"


def _egress(rules: str, dev: str = "gc") -> str:
    return f"\tchain out {{\n\t\ttype filter hook egress device \"{dev}\" priority 0;\n{rules}\t}}\n"


def test_fwd_sends_the_frame_as_it_is_and_steals_it():
    """`fwd to "gc"` at ga's ingress: the received bytes leave gc unchanged (no routing, no TTL
    decrement, the forward chain never sees them); the packet counts as transmitted."""
    w = _worker(_ingress("\t\tudp dport 1000 counter fwd to \"gc\"\n"), flowtable=False)
    frame = _udp(1000)
    out = _poll(w, [frame])
    assert [(dev, raw(p)) for dev, p in out] == [("gc", frame)]
    assert _counters(w, "in") == [(1, 29)] and _counters(w, "forward") == [(0, 0)]
    st = _one_disposition(w)
    assert (st["forwarded_packets"], st["interfaces"]["gc"]["tx_packets"], st["generated_packets"]) == (1, 1, 0)


def test_dup_sends_a_copy_and_the_original_goes_on():
    """`dup to "gc"`: a copy of the received bytes leaves gc first, then the packet is routed and
    forwarded as usual; the copy is counted as an originated packet."""
    w = _worker(_ingress("\t\tudp dport 1000 dup to \"gc\"\n\t\tcounter\n"), flowtable=False)
    frame = _udp(1000)
    out = _poll(w, [frame])
    assert [(dev, p[IP].ttl, p.dst) for dev, p in out] == [("gc", 64, MAC_GA), ("gc", 63, MAC_C)]
    assert raw(out[0][1]) == frame and _counters(w, "in") == [(1, 29)]
    st = _one_disposition(w)
    assert (st["forwarded_packets"], st["generated_packets"], st["tx_packets"]) == (1, 1, 2)


def test_fwd_device_from_a_map_and_no_element_ends_the_rule():
    """`fwd to udp dport map {...}`: the device the key finds; a key the map lacks ends the rule
    (the lookup's NFT_BREAK) and the frame goes on through the stack."""
    w = _worker(_ingress("\t\tfwd to udp dport map { 1000 : \"gc\", 1001 : \"ga\" }\n"), flowtable=False)
    out = _poll(w, [_udp(1000), _udp(1001), _udp(1002)])
    assert [(dev, p[UDP].dport, p[IP].ttl) for dev, p in out] == [("gc", 1000, 64), ("ga", 1001, 64), ("gc", 1002, 63)]
    assert _one_disposition(w)["forwarded_packets"] == 3


def test_fwd_ip_goes_through_the_neighbour():
    """`fwd ip to 10.8.0.1 device "gc"`: the link header of gc towards the neighbour's address, TTL
    less one with its checksum patched; an IPv6 `fwd ip6` does not take an IPv4 frame (NFT_BREAK)."""
    w = _worker(_ingress("\t\tfwd ip6 to 2001:db8::1 device \"gc\"\n\t\tfwd ip to 10.8.0.1 device \"gc\"\n"),
                flowtable=False)  # fmt: skip
    out = _poll(w, [_udp(1000, dst="192.0.2.9")])  # no route: only the fwd sends it
    (dev, p), = out  # fmt: skip
    assert (dev, p.src, p.dst, p[IP].ttl, p[IP].dst) == ("gc", MAC_GC, MAC_C, 63, "192.0.2.9")
    q = IP(bytes(p[IP]))
    del q.chksum
    assert IP(raw(q)).chksum == p[IP].chksum
    assert _one_disposition(w)["forwarded_packets"] == 1


def test_fwd_ip_to_an_unresolved_neighbour_waits_for_it():
    """neigh_xmit on an unknown address: the frame waits on the new entry's queue (held) and an ARP
    request goes out of gc; the reply releases it, and the packet is then forwarded."""
    w = _worker(_ingress("\t\tfwd ip to 10.8.0.77 device \"gc\"\n"), flowtable=False)
    out = _poll(w, [_udp(1000)])
    assert [(dev, p[ARP].op, p[ARP].pdst) for dev, p in out] == [("gc", 1, "10.8.0.77")]
    st = _one_disposition(w)
    assert (st["held_packets"], st["generated_packets"]) == (1, 1)
    mac = "02:00:00:00:0c:77"
    reply = raw(Ether(src=mac, dst=MAC_GC) / ARP(op=2, hwsrc=mac, psrc="10.8.0.77", hwdst=MAC_GC, pdst="10.8.0.2"))
    out = _poll(w, [reply], iif="gc", t0=10**9 + 10**6)  # before the request is sent again
    assert [(dev, p.dst, p[IP].ttl) for dev, p in out] == [("gc", mac, 63)]
    st = _one_disposition(w)
    assert (st["held_packets"], st["forwarded_packets"], st["local_packets"]) == (0, 1, 1)


def test_fwd_from_a_vlan_device_sends_it_without_the_tag():
    """At gc.5's ingress the tag is off the frame (vlan_do_receive): `fwd to "ga"` sends it untagged."""
    w = _worker(_ingress("\t\tfwd to \"ga\"\n", dev="gc.5"), flowtable=False)
    body = IP(src="10.9.0.1", dst="10.7.0.1") / UDP(sport=1, dport=2) / Raw(b"x")
    out = _poll(w, [raw(Ether(src=MAC_C, dst=MAC_GC) / Dot1Q(vlan=5) / body)], iif="gc")
    assert [(dev, raw(p)) for dev, p in out] == [("ga", raw(Ether(src=MAC_C, dst=MAC_GC) / body))]


def test_dup_and_fwd_in_an_egress_chain():
    """In gc's egress chain (nft_fwd_validate allows both hooks): `dup to "ga"` copies every frame gc
    sends, fast-path hits included; `fwd to "ga"` sends gc's frames out of ga instead."""
    w = _worker(_egress("\t\tdup to \"ga\"\n"))
    out = [o for k in range(4) for o in _poll(w, [_udp(1000, k)], t0=10**9 + k * 1000)]
    assert [dev for dev, _ in out] == ["ga", "gc"] * 4 and all(raw(a[1]) == raw(b[1]) for a, b in zip(out[::2], out[1::2], strict=True))
    st = _one_disposition(w)
    assert (st["fastpath_packets"], st["forwarded_packets"], st["generated_packets"], st["tx_packets"]) == (2, 4, 4, 8)
    w = _worker(_egress("\t\tfwd to \"ga\"\n"))
    out = [o for k in range(4) for o in _poll(w, [_udp(1000, k)], t0=10**9 + k * 1000)]
    assert [(dev, p[IP].ttl) for dev, p in out] == [("ga", 63)] * 4
    st = _one_disposition(w)
    assert (st["forwarded_packets"], st["interfaces"]["ga"]["tx_packets"], st["tx_packets"]) == (4, 4, 4)
    assert "gc" not in st["interfaces"] or st["interfaces"]["gc"]["tx_packets"] == 0


def test_dup_to_its_own_device_stops_at_the_recursion_limit():
    """`dup to "gc"` in gc's egress chain: each copy meets the chain again; the fourth nested copy
    is freed (nf_dup_skb_recursion > NF_RECURSION_LIMIT): three copies and the frame leave."""
    w = _worker(_egress("\t\tdup to \"gc\"\n"), flowtable=False)
    out = _poll(w, [_udp(1000)])
    assert [dev for dev, _ in out] == ["gc"] * 4
    st = _one_disposition(w)
    assert (st["generated_packets"], st["generated_dropped"]) == (3, {"nf_dup_recursion": 1})
