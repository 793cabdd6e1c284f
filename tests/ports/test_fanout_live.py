"""AfPacketPort fanout groups on a real veth pair: the kernel runs the steering program, and every
frame must reach the socket flow_hash_frame names, computed on the bytes the port delivered.

Linux: net/packet/af_packet.c › fanout_add, packet_rcv_fanout, fanout_demux_bpf; net/core/dev.c ›
__netif_receive_skb_core (skb_vlan_untag before the taps). The ports sit on `fpa0` in namespace a,
joined in order (socket index = join order); a raw socket on `fpb0` in namespace b sends the frames
of tests/ports/steer_frames.py. What the receive side sees of tags: the kernel strips the outer one
into tp_vlan_tci, the port puts it back, so the delivered bytes are the sent bytes. Root only.
"""

from __future__ import annotations

import itertools
import os
import socket
import sys
import time
from collections import Counter

import numpy as np
import pytest

from flowpath.errors import PortError
from flowpath.packet.batch import PacketBatch
from flowpath.packet.steer import flow_hash_frame
from flowpath.ports.af_packet import AfPacketPort

sys.path.insert(0, os.path.dirname(__file__))
from steer_frames import PEER_MAC, PORT_MAC, steer_frames  # noqa: E402
from veth_netns import VethPair, have_netns, inside, sh  # noqa: E402

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not have_netns(), reason="needs root and iproute2 (ip)"),
]
_pairs = itertools.count()
FRAMES = steer_frames()
RING = dict(rx_frames=1024, rx_frame_size=2048, tx_frames=8)


@pytest.fixture
def pair():
    v = VethPair(f"fo{next(_pairs)}")
    try:
        sh("ip", "-n", v.a, "link", "set", v.pa, "address", PORT_MAC)
        sh("ip", "-n", v.b, "link", "set", v.pb, "address", PEER_MAC)
        v.up()
        yield v
    finally:
        v.close()


def open_group(v: VethPair, n: int, **kw) -> list[AfPacketPort]:
    """n ports on fpa0 in one fanout group, the first asking the kernel for a free id (rings: kw, else RING)."""
    kw = kw or RING
    ports: list[AfPacketPort] = []
    try:
        with inside(v.a):
            for c in range(n):
                gid = ports[0].fanout_id if ports else None
                ports.append(AfPacketPort(f"lan0.{c}", 7, v.pa, **kw, fanout=(gid, n)))
    except BaseException:
        for p in ports:
            p.close()
        raise
    return ports


def peer_socket(v: VethPair) -> socket.socket:
    with inside(v.b):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.bind((v.pb, 0))
    return s


def drain(ports: list[AfPacketPort], want: int, timeout: float = 5.0) -> list[tuple[int, bytes]]:
    """(socket index, frame) for everything the ports receive, until `want` frames or the timeout."""
    out, end = [], time.monotonic() + timeout
    b = PacketBatch(256)
    while len(out) < want and time.monotonic() < end:
        idle = True
        for c, p in enumerate(ports):
            b.clear()
            if p.rx_burst(b, time.monotonic_ns()):
                idle = False
                out += [(c, b.frame_bytes(i)) for i in range(b.n)]
        if idle:
            time.sleep(0.001)
    time.sleep(0.05)  # and anything late (a duplicate would show here)
    for c, p in enumerate(ports):
        b.clear()
        p.rx_burst(b, time.monotonic_ns())
        out += [(c, b.frame_bytes(i)) for i in range(b.n)]
    return out


def steer_cpu(frame: bytes, n: int) -> int:
    h = flow_hash_frame(np.frombuffer(frame, np.uint8), 0, len(frame))
    return 0 if h < 0 else int(h) % n


@pytest.mark.parametrize("n,ring", [(2, "v2"), (3, "v2"), (2, "v3")])
def test_every_frame_reaches_the_socket_its_flow_hash_names_exactly_once(pair, n, ring):
    """Frames of every kind (flows both ways, fragments, options, echo, ESP, 802.1Q/802.1ad/three tags,
    ARP, IPv6 extension headers, cut-short headers) each arrive once, byte-identical, at socket
    flow_hash_frame(delivered bytes) % n; every socket gets some."""
    kw = dict(rx_ring="v3", ring_blocks=16, block_size=1 << 16, tx_frames=8) if ring == "v3" else {}
    ports = open_group(pair, n, **kw)
    peer = peer_socket(pair)
    try:
        assert len({p.fanout_id for p in ports}) == 1
        got: list[tuple[int, bytes]] = []
        for k in range(0, len(FRAMES), 200):  # chunks that fit every ring
            for f in FRAMES[k : k + 200]:
                peer.send(f)
            got += drain(ports, len(FRAMES[k : k + 200]))
        ours = [(c, f) for c, f in got if f[6:12] == bytes.fromhex(PEER_MAC.replace(":", ""))]
        assert Counter(f for _, f in ours) == Counter(FRAMES)
        wrong = [(c, steer_cpu(f, n), f.hex()) for c, f in ours if c != steer_cpu(f, n)]
        assert wrong == []
        assert {c for c, _ in ours} == set(range(n))
        assert all(p.counters()["rx_missed"] == 0 for p in ports)
    finally:
        peer.close()
        for p in ports:
            p.close()


def test_tagged_frame_is_stripped_by_the_kernel_and_put_back_by_the_port(pair):
    """What the receive side sees of an 802.1Q frame: the fanout program ran without the tag in the
    data (else the inner IPv4 header would be read 4 bytes off and the steering of most such frames
    would differ), and the port delivers the frame as sent."""
    ports = open_group(pair, 2)
    peer = peer_socket(pair)
    tagged = [f for f in FRAMES if f[12:14] == b"\x81\x00" and f[16:18] == b"\x08\x00"]
    try:
        for f in tagged:
            peer.send(f)
        got = drain(ports, len(tagged))
        assert sorted(f for _, f in got if f in tagged) == sorted(tagged)
        assert all(c == steer_cpu(f, 2) for c, f in got if f in tagged)
    finally:
        peer.close()
        for p in ports:
            p.close()


def test_second_group_on_the_port_gets_another_id_and_the_same_frames(pair):
    """Two gateways' worth of groups on one interface (UNIQUEID: no clash): each group receives every
    frame once, at the same index."""
    g1, g2 = open_group(pair, 2), open_group(pair, 2)
    peer = peer_socket(pair)
    try:
        assert g1[0].fanout_id != g2[0].fanout_id
        frames = FRAMES[:100]
        for f in frames:
            peer.send(f)
        got1, got2 = drain(g1, len(frames)), drain(g2, len(frames))
        assert sorted(got1) == sorted(got2) == sorted((steer_cpu(f, 2), f) for f in frames)
    finally:
        peer.close()
        for p in g1 + g2:
            p.close()


def test_joining_a_group_of_another_kind_is_a_clear_error(pair):
    """A group id held by a PACKET_FANOUT_HASH group (another program on the box): PortError naming the
    group, not a traceback from setsockopt."""
    with inside(pair.a):
        other = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    other.bind((pair.pa, 0x0003))
    other.setsockopt(263, 18, 4242)  # PACKET_FANOUT, PACKET_FANOUT_HASH, id 4242
    try:
        with inside(pair.a), pytest.raises(PortError, match="cannot join fanout group 4242 on fpa0"):
            AfPacketPort("lan0", 7, pair.pa, **RING, fanout=(4242, 2))
        with inside(pair.a), pytest.raises(PortError, match="0..65535"):
            AfPacketPort("lan0", 7, pair.pa, **RING, fanout=(70000, 2))
        with inside(pair.a), pytest.raises(PortError, match="1..256"):
            AfPacketPort("lan0", 7, pair.pa, **RING, fanout=(None, 0))
    finally:
        other.close()
