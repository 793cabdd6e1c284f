"""A GSO super-packet (PacketBatch.gso) that misses the fast path: the Worker segments it before the
classic path, and the counters count its segments (rx = forwarded + dropped + local + held).

Linux: net/core/gso.c › skb_gso_segment (validate_xmit_skb's software fallback).
"""

from __future__ import annotations

import os
import sys

import numpy as np
from scapy.all import IP, TCP, Ether

from flowpath.datapath import Worker
from flowpath.packet.batch import GSO_SLOT, PacketBatch
from flowpath.packet.csum import l4_pseudo_sum
from flowpath.ports.gso import VIRTIO_NET_HDR_GSO_TCPV4, skb_checksum_help

sys.path.insert(0, os.path.dirname(__file__))
from gateway import GW_LAN, GW_WAN, H10, UPSTREAM, WAN_IP, example_net, example_rules  # noqa: E402

MSS = 1000


def _partial(frame: bytes) -> bytes:
    b = np.frombuffer(bytearray(frame), np.uint8).copy()
    b[14 + 20 + 16 : 14 + 20 + 18] = 0
    ps = l4_pseudo_sum(b, 14, False, 6, len(b) - 34)
    b[50], b[51] = ps >> 8, ps & 0xFF
    return b.tobytes()


def _poll(w: Worker, frames: list[bytes]):
    b = PacketBatch(8, slot=GSO_SLOT)
    for k, (f, gso) in enumerate(frames):
        b.append(f, w.net.dev.link_by_name("lan0").ifindex, 10**9 + k)
        b.gso[k] = gso
    return b, w.poll(b).frames()


def _handshake(w: Worker) -> int:
    """SYN from 192.168.1.10:40000 to 8.8.8.8:80, SYN-ACK back: conntrack's connection is established
    (replies seen). Returns the masqueraded source port."""
    syn = (
        Ether(src=H10, dst=GW_LAN)
        / IP(src="192.168.1.10", dst="8.8.8.8")
        / TCP(sport=40000, dport=80, flags="S")
    )
    _, out = _poll(w, [(bytes(syn), 0)])
    nport = Ether(out[0][1])[TCP].sport
    synack = (
        Ether(src=UPSTREAM, dst=GW_WAN)
        / IP(src="8.8.8.8", dst=WAN_IP)
        / TCP(sport=80, dport=nport, flags="SA", ack=1)
    )
    b = PacketBatch(8, slot=GSO_SLOT)
    b.append(bytes(synack), w.net.dev.link_by_name("wan0").ifindex, 10**9 + 5)
    assert len(w.poll(b).frames()) == 1
    return nport


def _data(payload: bytes) -> bytes:
    return _partial(bytes(Ether(src=H10, dst=GW_LAN) / IP(src="192.168.1.10", dst="8.8.8.8", id=9)
                          / TCP(sport=40000, dport=80, flags="PA", seq=1, ack=1) / payload))  # fmt: skip


def test_gso_packet_on_the_classic_path_is_segmented_and_counted_as_its_segments():
    """A 4500-byte super-packet on the classic path (no flowtable) goes through it as five segments
    of at most MSS bytes, each forwarded (masqueraded) with checksums Scapy accepts; the Worker
    counts five received packets for it, all forwarded: rx = forwarded + dropped + local + held."""
    w = Worker(example_net(), example_rules(), flowtable=False)
    nport = _handshake(w)
    payload = bytes(i % 253 for i in range(4500))
    _, out = _poll(w, [(_data(payload), VIRTIO_NET_HDR_GSO_TCPV4 << 16 | MSS)])
    s = w.stats.as_dict(w.ifname)
    assert s["rx_packets"] == 2 + 5 and s["slowpath_packets"] == 7
    assert (
        s["rx_packets"]
        == s["forwarded_packets"] + s["dropped_packets"] + s["local_packets"] + s["held_packets"]
    )
    segs = [Ether(f) for _, f, _ in out]
    assert s["forwarded_packets"] == 7 and len(segs) == 5
    got = b""
    for k, p in enumerate(segs):
        again = Ether(bytes(p))
        del again[TCP].chksum, again[IP].chksum
        again = Ether(bytes(again))
        assert (again[TCP].chksum, again[IP].chksum) == (p[TCP].chksum, p[IP].chksum)
        assert p[TCP].seq == 1 + k * MSS and p[IP].id == 9 + k and len(p[TCP].payload) <= MSS
        assert (p[IP].src, p[TCP].sport) == (WAN_IP, nport)
        got += bytes(p[TCP].payload)
    assert got == payload
    assert s["interfaces"]["lan0"]["rx_packets"] == 1 + 5


def test_offloaded_gso_packet_leaves_whole_with_its_checksum_partial():
    """Once the connection is offloaded, the super-packet is a fast-path hit: one packet, sent from
    its slot with its gso word, masqueraded; finished as a NIC would, its checksum is the one Scapy
    computes for the masqueraded packet."""
    w = Worker(example_net(), example_rules())
    nport = _handshake(w)
    ack = Ether(src=H10, dst=GW_LAN) / IP(src="192.168.1.10", dst="8.8.8.8") / TCP(sport=40000, dport=80, flags="A",
                                                                              seq=1, ack=1)  # fmt: skip
    _poll(w, [(bytes(ack), 0)])  # the ACK that `flow add` offloads
    assert w.stats.flows_offloaded == 1
    payload = bytes(i % 251 for i in range(4500))
    b, out = _poll(w, [(_data(payload), VIRTIO_NET_HDR_GSO_TCPV4 << 16 | MSS)])
    assert (
        w.stats.fastpath_packets == 1 and len(out) == 1 and b.gso[0] == VIRTIO_NET_HDR_GSO_TCPV4 << 16 | MSS
    )
    f = np.frombuffer(bytearray(out[0][1]), np.uint8).copy()
    skb_checksum_help(f, 34, len(f), 50)
    p = Ether(f.tobytes())
    assert (p[IP].src, p[TCP].sport, bytes(p[TCP].payload)) == (WAN_IP, nport, payload)
    again = Ether(f.tobytes())
    del again[TCP].chksum, again[IP].chksum
    again = Ether(bytes(again))
    assert (again[TCP].chksum, again[IP].chksum) == (p[TCP].chksum, p[IP].chksum)
