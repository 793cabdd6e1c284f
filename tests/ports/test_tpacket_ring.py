"""The TPACKET_V3 and TPACKET_V2 receive walkers over rings built in memory, against plain-Python
references and each other.

Linux: net/packet/af_packet.c › tpacket_rcv / prb_fill_curr_block (the layout written here),
net/ipv4/tcp_offload.c › tcp_gso_segment, net/ipv4/udp_offload.c › __udp_gso_segment,
net/core/dev.c › skb_checksum_help. No root needed: the ring is a numpy array laid out as the kernel
lays it, so budgets ending mid-block and mid-GSO-packet, VLAN tags, truncation and checksum offload
are all reachable on demand. The live socket is tested in test_af_packet.py.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import IP, TCP, UDP, Ether, IPv6, Raw

from flowpath.packet.batch import GSO_SLOT, PacketBatch
from flowpath.packet.reason import Reason
from flowpath.ports.gso import (
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP,
    VIRTIO_NET_HDR_GSO_UDP_L4,
)
from flowpath.ports.tpacket import (
    BD,
    N_COUNTERS,
    RX_BLOCK,
    RX_BLOCK_SIZE,
    RX_FRAME,
    RX_FRAME_SIZE,
    RX_NBLOCKS,
    RX_NFRAMES,
    RX_VNET,
    T2,
    T3,
    TP_STATUS_CSUMNOTREADY,
    TP_STATUS_KERNEL,
    TP_STATUS_USER,
    TP_STATUS_VLAN_TPID_VALID,
    TP_STATUS_VLAN_VALID,
    tpacket_v2_rcv,
    tpacket_v3_rcv,
)

MAC_OFF = 96  # where tpacket_rcv puts the frame after the header, sockaddr_ll and vnet header
MACS = bytes.fromhex("0200000000010200000000fe")


@dataclass
class Pkt:
    """One packet as tpacket_rcv would write it: the frame without a stripped tag, and its metadata."""

    frame: bytes
    wire_len: int | None = None  # tp_len; more than len(frame) when the ring cut it
    tag: tuple[int, int | None] | None = None  # (tci, tpid or None when TPID_VALID is not set)
    vnet: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)  # flags, gso_type, gso_size, csum_start, csum_off
    status: int = 0


def _status_tag(pkt: Pkt) -> tuple[int, int, int]:
    """tp_status, tp_vlan_tci and tp_vlan_tpid as tpacket_rcv writes them for pkt."""
    status = TP_STATUS_USER | pkt.status
    tci = tpid = 0
    if pkt.tag is not None:
        tci, tpid = pkt.tag[0], pkt.tag[1] or 0
        status |= TP_STATUS_VLAN_VALID | (TP_STATUS_VLAN_TPID_VALID if pkt.tag[1] else 0)
    return status, tci, tpid


def _put_frame(ring, p: int, pkt: Pkt) -> None:
    """The virtio_net_hdr and the frame of the packet whose header is at ring[p] (tp_mac = MAC_OFF)."""
    flags, gso_type, gso_size, cstart, coff = pkt.vnet
    vh = struct.pack("<BBHHHH", flags, gso_type, 0, gso_size, cstart, coff)
    ring[p + MAC_OFF - 10 : p + MAC_OFF] = np.frombuffer(vh, np.uint8)
    ring[p + MAC_OFF : p + MAC_OFF + len(pkt.frame)] = np.frombuffer(pkt.frame, np.uint8)


def build_ring(blocks: list[list[Pkt]], block_size: int = 1 << 16, nblocks: int | None = None):
    """A ring whose first len(blocks) blocks are handed to user space, as prb_close_block leaves them."""
    nblocks = nblocks or len(blocks) + 1
    ring = np.zeros(block_size * nblocks, np.uint8)
    for b, pkts in enumerate(blocks):
        boff, p = b * block_size, b * block_size + BD.size
        for pkt in pkts:
            status, tci, tpid = _status_tag(pkt)
            nxt = (MAC_OFF + len(pkt.frame) + 7) & ~7
            assert p + nxt <= boff + block_size
            hdr = struct.pack("<IIIIIIHHIIHH8x", nxt, 0, 0, len(pkt.frame), pkt.wire_len or len(pkt.frame),
                              status, MAC_OFF, MAC_OFF, 0, tci, tpid, 0)  # fmt: skip
            ring[p : p + T3.size] = np.frombuffer(hdr, np.uint8)
            _put_frame(ring, p, pkt)
            p += nxt
        bd = struct.pack("<IIIIII", 3, 0, TP_STATUS_USER, len(pkts), BD.size, p - boff)
        ring[boff : boff + 24] = np.frombuffer(bd, np.uint8)
    st_ = np.zeros(8, np.int64)
    st_[RX_NBLOCKS], st_[RX_BLOCK_SIZE], st_[RX_VNET] = nblocks, block_size, 1
    return ring, st_


def build_ring_v2(pkts: list[Pkt], frame_size: int = 1 << 14, nframes: int | None = None):
    """A TPACKET_V2 ring whose first len(pkts) frames are handed to user space, one packet each, as
    tpacket_rcv leaves them (struct tpacket2_hdr, then the vnet header and the frame at tp_mac)."""
    nframes = nframes or len(pkts) + 1
    ring = np.zeros(frame_size * nframes, np.uint8)
    for i, pkt in enumerate(pkts):
        p = i * frame_size
        assert MAC_OFF + len(pkt.frame) <= frame_size
        status, tci, tpid = _status_tag(pkt)
        hdr = struct.pack("<IIIHHIIHH4x", status, pkt.wire_len or len(pkt.frame), len(pkt.frame), MAC_OFF,
                          MAC_OFF, 0, 0, tci, tpid)  # fmt: skip
        ring[p : p + T2.size] = np.frombuffer(hdr, np.uint8)
        _put_frame(ring, p, pkt)
    st_ = np.zeros(8, np.int64)
    st_[RX_NFRAMES], st_[RX_FRAME_SIZE], st_[RX_VNET] = nframes, frame_size, 1
    return ring, st_


def drain(ring, st_, capacity: int, slot: int = 2048, headroom: int = 128, limit: int = 10_000,
          rcv=tpacket_v3_rcv, gso: bool = False):  # fmt: skip
    """Call the walker with fresh batches of `capacity` until it returns nothing; every slot's
    (bytes, verdict) in order (with gso, (bytes, verdict, gso word)), and the counters."""
    cnt = np.zeros(N_COUNTERS, np.int64)
    out = []
    for _ in range(limit):
        b = PacketBatch(capacity, slot, headroom)
        n = rcv(ring, ring.view(np.uint32), st_, cnt, b.cols, b.ts_ns, 0, headroom, 7, 99)
        b.n = n
        assert (b.iif[:n] == 7).all() and (b.ts_ns[:n] == 99).all() and (b.flow[:n] == -1).all()
        assert (b.oif[:n] == 0).all() and (b.encap[:n] == 0).all() and (b.head[:n] == headroom).all()
        out += [(b.frame_bytes(i), int(b.verdict[i])) + ((int(b.gso[i]),) if gso else ()) for i in range(n)]
        if n == 0:
            return out, cnt
    raise AssertionError("the walker never ran dry")


# ---- plain-Python references ---------------------------------------------------------------


def with_tag(frame: bytes, tag) -> bytes:
    if tag is None:
        return frame
    return frame[:12] + struct.pack(">HH", tag[1] or 0x8100, tag[0]) + frame[12:]


def ref_csum_help(frame: bytes, start: int, off: int) -> bytes:
    """skb_checksum_help: sum from start to the end (the field holds the pseudo-header sum)."""
    data = frame[start:] + b"\0" * (len(frame[start:]) % 2)
    c = (
        ~fold(sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))) & 0xFFFF
    ) or 0xFFFF
    return frame[: start + off] + c.to_bytes(2, "big") + frame[start + off + 2 :]


def ref_segments(frame: bytes, mss: int) -> list[bytes]:
    """tcp_gso_segment / __udp_gso_segment with Scapy: each segment rebuilt, lengths and checksums
    recomputed by Scapy."""
    pkt = Ether(frame)
    l4 = pkt[TCP] if TCP in pkt else pkt[UDP]
    payload = bytes(l4.payload)
    chunks = [payload[i : i + mss] for i in range(0, len(payload), mss)]
    out = []
    for k, chunk in enumerate(chunks):
        seg = pkt.copy()
        s4 = seg[TCP] if TCP in seg else seg[UDP]
        s4.remove_payload()
        s4.add_payload(Raw(chunk))
        del s4.chksum
        if TCP in seg:
            seg[TCP].seq = (pkt[TCP].seq + k * mss) % 2**32
            flags = int(pkt[TCP].flags)
            if k != len(chunks) - 1:
                flags &= ~0x09  # FIN, PSH
            if k != 0:
                flags &= ~0x80  # CWR
            seg[TCP].flags = flags
        else:
            del seg[UDP].len
        if IP in seg:
            seg[IP].id = (pkt[IP].id + k) % 2**16
            del seg[IP].len, seg[IP].chksum
        else:
            del seg[IPv6].plen
        out.append(bytes(seg))
    return out


def fold(s: int) -> int:
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def super_packet(ipv6: bool, udp: bool, payload: bytes, flags: int = 0x18, seq: int = 1000) -> bytes:
    """A frame as the local stack hands it over with CHECKSUM_PARTIAL: lengths of the whole, the L4
    check field holding the folded pseudo-header sum (tcp_v4_send_check / udp6_hwcsum_outgoing)."""
    l3 = IPv6(src="2001:db8::1", dst="2001:db8::2") if ipv6 else IP(src="10.0.0.1", dst="10.0.0.2", id=65530)
    l4 = UDP(sport=5000, dport=53) if udp else TCP(sport=5000, dport=80, seq=seq, flags=flags)
    frame = bytearray(bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:fe") / l3 / l4 / Raw(payload)))
    nh, th = 14, 14 + (40 if ipv6 else 20)
    addrs = frame[nh + 8 : nh + 40] if ipv6 else frame[nh + 12 : nh + 20]
    l4len = len(frame) - th
    pseudo = sum(int.from_bytes(addrs[i : i + 2], "big") for i in range(0, len(addrs), 2))
    coff = th + (6 if udp else 16)
    frame[coff : coff + 2] = fold(pseudo + (17 if udp else 6) + l4len).to_bytes(2, "big")
    return bytes(frame)


# ---- tests -----------------------------------------------------------------------------------


def test_plain_frames_copied_in_order_and_block_given_back():
    """Frames of one block land in order with PacketBatch.append's bookkeeping; the block goes back
    to the kernel (TP_STATUS_KERNEL) once all its packets are copied, and the walker moves on."""
    frames = [MACS + b"\x88\xb5" + bytes([i]) * (46 + 37 * i) for i in range(10)]
    ring, st_ = build_ring([[Pkt(f) for f in frames[:6]], [Pkt(f) for f in frames[6:]]])
    out, cnt = drain(ring, st_, capacity=4)
    assert out == [(f, 0) for f in frames]
    assert ring.view(np.uint32)[BD.block_status // 4] == TP_STATUS_KERNEL
    assert st_[RX_BLOCK] == 2 and cnt[0] == 10


def test_block_kept_while_a_batch_ends_inside_it():
    """A budget that ends mid-block keeps the block user-owned (its frames are still to be read)."""
    frames = [MACS + b"\x88\xb5" + bytes([i]) * 50 for i in range(5)]
    ring, st_ = build_ring([[Pkt(f) for f in frames]])
    b = PacketBatch(3)
    assert tpacket_v3_rcv(ring, ring.view(np.uint32), st_, np.zeros(N_COUNTERS, np.int64), b.cols, b.ts_ns,
                          0, b.headroom, 1, 0) == 3  # fmt: skip
    assert ring.view(np.uint32)[BD.block_status // 4] == TP_STATUS_USER
    b2 = PacketBatch(8)
    b2.n = tpacket_v3_rcv(ring, ring.view(np.uint32), st_, np.zeros(N_COUNTERS, np.int64), b2.cols, b2.ts_ns,
                          0, b2.headroom, 1, 0)  # fmt: skip
    assert [b2.frame_bytes(i) for i in range(b2.n)] == frames[3:]
    assert ring.view(np.uint32)[BD.block_status // 4] == TP_STATUS_KERNEL


def test_appends_after_frames_already_in_the_batch():
    """rx_burst appends: slots before batch.n are left alone."""
    ring, st_ = build_ring([[Pkt(MACS + b"\x88\xb5" + b"x" * 50)]])
    b = PacketBatch(4)
    b.append(b"y" * 60, 3, 5)
    n = tpacket_v3_rcv(ring, ring.view(np.uint32), st_, np.zeros(N_COUNTERS, np.int64), b.cols, b.ts_ns, 1,
                       b.headroom, 1, 0)  # fmt: skip
    b.n = n
    assert n == 2 and b.frame_bytes(0) == b"y" * 60 and b.frame_bytes(1) == MACS + b"\x88\xb5" + b"x" * 50


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(14, 1600), min_size=1, max_size=24),
    tags=st.lists(st.sampled_from([None, (5, None), (0x2064, 0x88A8), (0xFFF, 0x8100)]), min_size=24, max_size=24),
    cut=st.lists(st.booleans(), min_size=24, max_size=24),
    capacity=st.integers(1, 9),
)  # fmt: skip
def test_frames_tags_truncation_and_too_big_match_the_reference(sizes, tags, cut, capacity):
    """VLAN tags go back in front of the ethertype (TPID 0x8100 unless TPID_VALID), a frame the ring
    cut (tp_snaplen < tp_len) is PACKET_RX_TRUNCATED, one over the slot is PKT_TOO_BIG and truncated
    (PacketBatch.append), whatever the batch budget."""
    slot, hr = 1024, 64
    pkts = [Pkt(MACS + b"\x88\xb5" + bytes([i % 251]) * max(0, n - 14), wire_len=n + 100 if cut[i] else None,
                tag=tags[i]) for i, n in enumerate(sizes)]  # fmt: skip
    per = 5
    ring, st_ = build_ring([pkts[i : i + per] for i in range(0, len(pkts), per)], block_size=1 << 14)
    want = []
    for p in pkts:
        full = with_tag(p.frame, p.tag)
        v = Reason.PACKET_RX_TRUNCATED if p.wire_len else Reason.PKT_TOO_BIG if len(full) > slot - hr else 0
        want.append((full[: slot - hr], int(v)))
    out, _ = drain(ring, st_, capacity, slot, hr)
    assert out == want


def test_local_stack_checksum_completed():
    """NEEDS_CSUM: the sum from csum_start (from the mac header, before a tag is put back) to the end
    is folded into csum_start + csum_offset, as skb_checksum_help does; a bad offset is SKB_CSUM."""
    udp = super_packet(False, True, b"hello world!")
    tcp6 = super_packet(True, False, b"x" * 301)
    pkts = [
        Pkt(udp, vnet=(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 34, 6), status=TP_STATUS_CSUMNOTREADY),
        Pkt(tcp6, vnet=(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 54, 16), tag=(7, None)),
        Pkt(udp, vnet=(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 34, len(udp))),  # field past the frame
    ]
    ring, st_ = build_ring([pkts])
    out, cnt = drain(ring, st_, 8)
    assert out[0] == (ref_csum_help(udp, 34, 6), 0)
    assert out[1] == (with_tag(ref_csum_help(tcp6, 54, 16), (7, None)), 0)
    assert out[2][1] == Reason.SKB_CSUM
    for frame, _ in out[:2]:
        e = Ether(frame)
        l4 = e[UDP] if UDP in e else e[TCP]
        got = l4.chksum
        del l4.chksum
        assert Ether(bytes(e))[type(l4)].chksum == got  # Scapy agrees
    assert cnt[4] == 2  # rx_csum_completed


@settings(max_examples=60, deadline=None)
@given(
    ipv6=st.booleans(),
    udp=st.booleans(),
    plen=st.integers(1, 5000),
    mss=st.integers(64, 1460),
    tag=st.sampled_from([None, (10, None), (0x123, 0x88A8)]),
    tcp_flags=st.sampled_from([0x10, 0x18, 0x19, 0x98, 0xD1]),
    ecn=st.booleans(),
    capacity=st.integers(1, 7),
)
def test_gso_segments_match_the_reference(ipv6, udp, plen, mss, tag, tcp_flags, ecn, capacity):
    """A TSO/USO super-packet becomes gso_size segments (seq, id, lengths, FIN/PSH on the last only,
    CWR on the first only, full checksums), each in its own slot, also when the batch fills up in the
    middle of the packet; the frame after it follows the last segment."""
    payload = bytes((i * 7) % 256 for i in range(plen))
    frame = super_packet(ipv6, udp, payload, flags=tcp_flags, seq=2**32 - 3000)
    gso = VIRTIO_NET_HDR_GSO_UDP_L4 if udp else VIRTIO_NET_HDR_GSO_TCPV6 if ipv6 else VIRTIO_NET_HDR_GSO_TCPV4
    thoff = 14 + (40 if ipv6 else 20)
    vnet = (
        VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso | (VIRTIO_NET_HDR_GSO_ECN if ecn else 0),
        mss,
        thoff,
        6 if udp else 16,
    )
    after = MACS + b"\x88\xb5" + b"after" * 12
    ring, st_ = build_ring([[Pkt(frame, vnet=vnet, tag=tag), Pkt(after)]])
    out, cnt = drain(ring, st_, capacity, slot=2048)
    segs = ref_segments(frame, mss)
    assert out == [(with_tag(s, tag), 0) for s in segs] + [(after, 0)]
    assert cnt[2] == 1 and cnt[3] == len(segs)  # rx_gso_packets, rx_gso_segments


def test_gso_it_cannot_segment_is_a_counted_drop():
    """UFO (GSO_UDP: IP fragmentation), a TCPv4 type on an IPv6 frame, a zero gso_size, and headers
    past the frame each take one slot with verdict SKB_GSO_SEG."""
    tcp4 = super_packet(False, False, b"z" * 3000)
    udp4 = super_packet(False, True, b"z" * 3000)
    tcp6 = super_packet(True, False, b"z" * 3000)
    pkts = [
        Pkt(udp4, vnet=(1, VIRTIO_NET_HDR_GSO_UDP, 1000, 34, 6)),
        Pkt(tcp6, vnet=(1, VIRTIO_NET_HDR_GSO_TCPV4, 1000, 54, 16)),
        Pkt(tcp4, vnet=(1, VIRTIO_NET_HDR_GSO_TCPV4, 0, 34, 16)),
        Pkt(tcp4[:40], vnet=(1, VIRTIO_NET_HDR_GSO_TCPV4, 1000, 34, 16)),
        Pkt(tcp4, vnet=(1, VIRTIO_NET_HDR_GSO_NONE + 99, 1000, 34, 16)),
    ]
    ring, st_ = build_ring([pkts])
    out, _ = drain(ring, st_, 8)
    assert [v for _, v in out] == [Reason.SKB_GSO_SEG] * 5
    assert [f for f, _ in out] == [p.frame[:1920] for p in pkts]


def test_gso_segment_larger_than_the_slot_is_too_big():
    """A segment over the slot keeps PacketBatch.append's rule: truncated, PKT_TOO_BIG."""
    frame = super_packet(False, False, b"q" * 4000)
    ring, st_ = build_ring([[Pkt(frame, vnet=(1, VIRTIO_NET_HDR_GSO_TCPV4, 1500, 34, 16))]])
    out, _ = drain(ring, st_, 8, slot=1024, headroom=64)
    assert [v for _, v in out] == [Reason.PKT_TOO_BIG] * 3 and all(len(f) == 960 for f, _ in out)


def test_csum_not_ready_without_vnet_header_is_a_counted_drop():
    """Without PACKET_VNET_HDR there is no csum_start: a CHECKSUM_PARTIAL frame is SKB_CSUM."""
    udp = super_packet(False, True, b"hello")
    ring, st_ = build_ring([[Pkt(udp, status=TP_STATUS_CSUMNOTREADY), Pkt(udp)]])
    st_[RX_VNET] = 0
    out, _ = drain(ring, st_, 8)
    assert out == [(udp, Reason.SKB_CSUM), (udp, 0)]


def test_ring_wraps_around():
    """After the last block the walker goes back to block 0 when the kernel hands it over again."""
    f1, f2 = MACS + b"\x88\xb5" + b"1" * 50, MACS + b"\x88\xb5" + b"2" * 50
    ring, st_ = build_ring([[Pkt(f1)], [Pkt(f1)]], block_size=4096, nblocks=2)
    assert [f for f, _ in drain(ring, st_, 4)[0]] == [f1, f1]
    assert st_[RX_BLOCK] == 0
    ring2, _ = build_ring([[Pkt(f2)]], block_size=4096, nblocks=2)
    ring[:4096] = ring2[:4096]  # the kernel refilled block 0
    assert [f for f, _ in drain(ring, st_, 4)[0]] == [f2]


def _menu() -> list[Pkt]:
    """One of each kind of packet a walker meets: plain, tagged, cut, checksum-partial, GSO (TCPv4
    tagged, TCPv6, UDP), GSO it cannot segment."""
    tcp4, tcp6 = super_packet(False, False, b"a" * 3000), super_packet(True, False, b"b" * 2500)
    udp = super_packet(False, True, b"c" * 2000)
    return [
        Pkt(MACS + b"\x88\xb5" + b"p" * 46),
        Pkt(MACS + b"\x88\xb5" + b"t" * 300, tag=(0x2064, 0x88A8)),
        Pkt(MACS + b"\x88\xb5" + b"c" * 200, wire_len=900),
        Pkt(super_packet(False, True, b"sum"), vnet=(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 34, 6), tag=(3, None)),
        Pkt(tcp4, vnet=(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 1000, 34, 16), tag=(9, None)),
        Pkt(tcp6, vnet=(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV6, 700, 54, 16)),
        Pkt(udp, vnet=(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_UDP_L4, 900, 34, 6)),
        Pkt(tcp4, vnet=(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 0, 34, 16)),
    ]


@settings(max_examples=60, deadline=None)
@given(
    kinds=st.lists(st.integers(0, 7), min_size=1, max_size=14),
    capacity=st.integers(1, 9),
    whole=st.booleans(),
)
def test_v2_walker_hands_out_what_the_v3_walker_does(kinds, capacity, whole):
    """The same packets in a V2 ring (one per frame) and a V3 ring (blocks of 4) give the same slots,
    verdicts, gso words and counters for any budget, GSO packets segmented (also across batches) or
    kept whole (RX_VNET_GSO): both walkers copy with rx_skb. The V2 walker gives every frame back."""
    menu = _menu()
    pkts = [menu[k] for k in kinds]
    r3, s3 = build_ring([pkts[i : i + 4] for i in range(0, len(pkts), 4)])
    r2, s2 = build_ring_v2(pkts)
    s3[RX_VNET] = s2[RX_VNET] = 2 if whole else 1
    slot = GSO_SLOT if whole else 2048
    out3, cnt3 = drain(r3, s3, capacity, slot, rcv=tpacket_v3_rcv, gso=True)
    out2, cnt2 = drain(r2, s2, capacity, slot, rcv=tpacket_v2_rcv, gso=True)
    assert out2 == out3 and (cnt2 == cnt3).all()
    assert len(out2) >= len(pkts) and any(g for *_, g in out2) == (whole and bool({4, 5} & set(kinds)))
    status = r2.view(np.uint32)[:: (1 << 14) // 4]
    assert (status == TP_STATUS_KERNEL).all() and s2[RX_FRAME] == len(pkts)


def test_v2_ring_wraps_around_and_stops_at_a_kernel_frame():
    """The V2 walker stops at the first frame still the kernel's, takes it up there once it is
    handed over, and goes from the last frame back to frame 0."""
    f = [MACS + b"\x88\xb5" + bytes([i]) * 50 for i in range(5)]
    ring, st_ = build_ring_v2([Pkt(f[0]), Pkt(f[1])], frame_size=2048, nframes=3)
    assert [x for x, _ in drain(ring, st_, 8, rcv=tpacket_v2_rcv)[0]] == f[:2]
    assert st_[RX_FRAME] == 2
    later, _ = build_ring_v2([Pkt(f[2]), Pkt(f[3]), Pkt(f[4])], frame_size=2048, nframes=3)
    ring[4096:] = later[:2048]  # the kernel fills frame 2, then 0 and 1
    assert [x for x, _ in drain(ring, st_, 8, rcv=tpacket_v2_rcv)[0]] == f[2:3]
    ring[:4096] = later[2048:]
    assert [x for x, _ in drain(ring, st_, 1, rcv=tpacket_v2_rcv)[0]] == f[3:5]
    assert st_[RX_FRAME] == 2
