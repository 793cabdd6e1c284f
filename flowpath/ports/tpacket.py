"""The packet socket's memory-mapped rings: a TPACKET_V3 or TPACKET_V2 receive ring and a TPACKET_V2
transmit ring, walked by compiled kernels.

Linux: net/packet/af_packet.c › tpacket_rcv and the prb_* block ring (what the kernel writes),
tpacket_snd (what it reads); layouts from include/uapi/linux/if_packet.h.
Receive: the ring is blocks of block_size bytes; the kernel fills one block with packets
(struct tpacket3_hdr, each followed by its frame at tp_mac) and hands the whole block over by
setting block_status to TP_STATUS_USER (when full, or after tp_retire_blk_tov ms). We give it back
(TP_STATUS_KERNEL) only when every packet in it is copied into a batch; a batch can fill up in the
middle of a block, or in the middle of a GSO packet's segments, so the position is kept in `st`.
The V2 receive ring is fixed frames, one packet each (struct tpacket2_hdr, the frame at tp_mac),
handed over one by one with tp_status = TP_STATUS_USER as tpacket_rcv finishes each: no block
waits for its retire timer, so a lone packet is ours at once. Both walkers copy a packet with the
same rx_skb.
With st[RX_VNET] = RX_VNET_GSO a TCP super-packet that fits a slot is not segmented: it takes one
slot with its gso word (PacketBatch.gso), its checksum left partial as the sender's stack left it.
Transmit: fixed frames; we fill one, set TP_STATUS_SEND_REQUEST, and a send() makes the kernel
walk them in order; its skb destructor sets each back to TP_STATUS_AVAILABLE. With PACKET_VNET_HDR
(st[TX_VNET_LEN]) each frame's data starts with a struct virtio_net_hdr: zeros, or a super-packet's
(tpacket_snd passes it to virtio_net_hdr_to_skb, and frames may then exceed the MTU).
The host must be little-endian (the ring's fields are the host's u32/u16, the vnet header is
virtio-legacy little-endian): AfPacketPort checks.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.core import config, types
from numba.extending import intrinsic

from flowpath.packet.batch import GSO_SIZE_MASK, GSO_TYPE_SHIFT
from flowpath.packet.layout import (
    ETH,
    ETH_HLEN,
    ETH_P_8021Q,
    IP6H,
    IPPROTO_TCP,
    TCPH,
    UDPH,
    VLAN,
    field_offsets,
)
from flowpath.packet.reason import Reason
from flowpath.packet.unaligned import get_unaligned_le64, put_unaligned_le64
from flowpath.ports.gso import (
    VIRTIO_NET_HDR,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_NONE,
    gso_parse,
    gso_segment,
    skb_checksum_help,
)

TPACKET_BLOCK_DESC = np.dtype([  # struct tpacket_block_desc with its struct tpacket_hdr_v1
    ("version", "<u4"), ("offset_to_priv", "<u4"),
    ("block_status", "<u4"), ("num_pkts", "<u4"), ("offset_to_first_pkt", "<u4"), ("blk_len", "<u4"),
    ("seq_num", "<u8"),
    ("ts_first_pkt_sec", "<u4"), ("ts_first_pkt_nsec", "<u4"),
    ("ts_last_pkt_sec", "<u4"), ("ts_last_pkt_nsec", "<u4"),
])  # fmt: skip
TPACKET3_HDR = np.dtype([  # struct tpacket3_hdr, with struct tpacket_hdr_variant1
    ("tp_next_offset", "<u4"), ("tp_sec", "<u4"), ("tp_nsec", "<u4"),
    ("tp_snaplen", "<u4"),  # bytes in the ring
    ("tp_len", "<u4"),  # bytes the packet had
    ("tp_status", "<u4"), ("tp_mac", "<u2"), ("tp_net", "<u2"),
    ("tp_rxhash", "<u4"), ("tp_vlan_tci", "<u4"), ("tp_vlan_tpid", "<u2"), ("tp_padding", "<u2"),
    ("tp_padding2", "u1", 8),
])  # fmt: skip
TPACKET2_HDR = np.dtype([  # struct tpacket2_hdr
    ("tp_status", "<u4"), ("tp_len", "<u4"), ("tp_snaplen", "<u4"), ("tp_mac", "<u2"), ("tp_net", "<u2"),
    ("tp_sec", "<u4"), ("tp_nsec", "<u4"), ("tp_vlan_tci", "<u2"), ("tp_vlan_tpid", "<u2"),
    ("tp_padding", "u1", 4),
])  # fmt: skip
BD = field_offsets("BD", TPACKET_BLOCK_DESC)
T3 = field_offsets("T3", TPACKET3_HDR)
T2 = field_offsets("T2", TPACKET2_HDR)
VH = field_offsets("VH", VIRTIO_NET_HDR)
assert (BD.size, T3.size, T2.size, VH.size) == (48, 48, 32, 10)
SOCKADDR_LL_SIZE = 20
# a TX frame's data starts at TPACKET2_HDRLEN - sizeof(struct sockaddr_ll) (af_packet.c ›
# tpacket_parse_header, without PACKET_TX_HAS_OFF): TPACKET_ALIGN(32) + 20 - 20
TX_DATA_OFF = T2.size

# tp_status bits (include/uapi/linux/if_packet.h)
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1 << 0
TP_STATUS_COPY = 1 << 1
TP_STATUS_LOSING = 1 << 2
TP_STATUS_CSUMNOTREADY = 1 << 3
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_BLK_TMO = 1 << 5
TP_STATUS_VLAN_TPID_VALID = 1 << 6
TP_STATUS_CSUM_VALID = 1 << 7
TP_STATUS_AVAILABLE = 0
TP_STATUS_SEND_REQUEST = 1 << 0
TP_STATUS_SENDING = 1 << 1
TP_STATUS_WRONG_FORMAT = 1 << 2

# st, the receive ring's position and shape (int64[8])
RX_BLOCK, RX_PKT, RX_OFF, RX_SEG, RX_NBLOCKS, RX_BLOCK_SIZE, RX_VNET = range(7)
# the TPACKET_V2 receive ring's: the frame at the head, how many, their size (RX_SEG, RX_VNET shared)
RX_FRAME, RX_NFRAMES, RX_FRAME_SIZE = RX_BLOCK, RX_NBLOCKS, RX_BLOCK_SIZE
# st[RX_VNET]: frames come without a virtio_net_hdr, with one, or with one and TCP super-packets are
# kept whole (PacketBatch.gso) instead of segmented
RX_VNET_OFF, RX_VNET_ON, RX_VNET_GSO = range(3)
# st, the transmit ring's (int64[8]); TX_MTU bounds a frame as tpacket_snd does; TX_VNET_LEN: 0, or
# the virtio_net_hdr's size when the socket has PACKET_VNET_HDR (each frame's data starts with one)
TX_HEAD, TX_NFRAMES, TX_FRAME_SIZE, TX_MTU, TX_PENDING, TX_VNET_LEN = range(6)
# cnt, the port's counters (int64[16])
(C_RX_PACKETS, C_RX_BYTES, C_RX_GSO_PACKETS, C_RX_GSO_SEGMENTS, C_RX_CSUM_COMPLETED,
 C_TX_PACKETS, C_TX_BYTES, C_TX_ERRORS) = range(8)  # fmt: skip
N_COUNTERS = 16
# verdicts as plain ints: a kernel variable holds either one of them or 0
R_PKT_TOO_BIG = int(Reason.PKT_TOO_BIG)
R_SKB_GSO_SEG = int(Reason.SKB_GSO_SEG)
R_SKB_CSUM = int(Reason.SKB_CSUM)
R_PACKET_RX_TRUNCATED = int(Reason.PACKET_RX_TRUNCATED)


@intrinsic
def _fence(typingctx):
    """A full memory barrier (LLVM `fence seq_cst`): neither the compiler nor the CPU moves a ring
    access across it. Linux pairs smp_wmb()/smp_rmb() with the status words the same way."""

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


def _fence_py() -> None:
    """With the JIT off, each ring access is a separate numpy call: nothing to order."""


smp_mb = _fence_py if config.DISABLE_JIT else _fence


@njit(cache=True, nogil=True, inline="always", _nrt=False)
def _memcpy_jit(dst, do, src, so, n):
    """dst[do : do + n] = src[so : so + n] for arrays that do not overlap, eight bytes at a time
    (numba's slice assignment makes two views and checks for overlap: several times slower on
    128-byte frames). The caller keeps both ranges inside their arrays."""
    if n < 8:
        for j in range(n):
            dst[do + j] = src[so + j]
        return
    for j in range(0, n - 7, 8):
        put_unaligned_le64(dst, do + j, get_unaligned_le64(src, so + j))
    put_unaligned_le64(dst, do + n - 8, get_unaligned_le64(src, so + n - 8))  # the tail, overlapping


def _memcpy_py(dst, do, src, so, n) -> None:
    """With the JIT off: one numpy slice copy."""
    dst[do : do + n] = src[so : so + n]


memcpy = _memcpy_py if config.DISABLE_JIT else _memcpy_jit


@njit(cache=True, nogil=True, _nrt=False)
def _le16(b, off):
    return np.int64(b[off]) | (np.int64(b[off + 1]) << 8)


@njit(cache=True, nogil=True, _nrt=False)
def _le32(b, off):
    return _le16(b, off) | (_le16(b, off + 2) << 16)


@njit(cache=True, nogil=True, _nrt=False)
def copy_frame(src, so, n, tag, row, do, limit):
    """Copy the n-byte frame src[so:] to row[do:], putting the VLAN tag back after the MAC addresses
    when tag >= 0 (tag = tpid << 16 | tci, as the kernel stripped it into tp_vlan_tci); at most
    `limit` bytes are written. Returns the bytes written. Linux: skb_vlan_push's layout."""
    if tag < 0 or n < 2 * 6:
        m = min(n, limit)
        memcpy(row, do, src, so, m)
        return m
    m = min(n + VLAN.size, limit)
    memcpy(row, do, src, so, min(ETH.h_proto, m))
    for j in range(ETH.h_proto, min(ETH.h_proto + VLAN.size, m)):
        row[do + j] = (tag >> (8 * (ETH.h_proto + 3 - j))) & 0xFF
    if m > ETH.h_proto + VLAN.size:
        memcpy(row, do + ETH.h_proto + VLAN.size, src, so + ETH.h_proto, m - ETH.h_proto - VLAN.size)
    return m


@njit(cache=True, nogil=True, _nrt=False)
def _slot_init(cols, ts_ns, i, flen, reason, meta):
    """PacketBatch.append's bookkeeping for slot i (a frame of flen bytes, before truncation);
    returns the bytes the slot keeps. meta: (headroom, iif, now_ns)."""
    data, head, length, iifc, oif, verdict, flow, encap, gso = cols
    hr, iif, now_ns = meta
    max_frame = data.shape[1] - hr
    n = min(flen, max_frame)
    if reason == 0 and flen > max_frame:
        reason = R_PKT_TOO_BIG
    verdict[i] = reason
    head[i], length[i] = hr, n
    iifc[i], oif[i], flow[i], encap[i], gso[i], ts_ns[i] = iif, 0, -1, 0, 0, now_ns
    return n


@njit(cache=True, nogil=True, _nrt=False)
def _rx_gso_whole(ring, mac, flen, vh, info, room):
    """True when the GSO packet at ring[mac:] can stay whole in a slot: a TCP super-packet with its
    checksum partial at the TCP header (no IPv6 extension headers), of at most `room` bytes."""
    l4proto, is_ipv6, nhoff, thoff = info[0], info[1], info[2], info[3]
    if l4proto != IPPROTO_TCP or flen > room or not ring[vh + VH.flags] & VIRTIO_NET_HDR_F_NEEDS_CSUM:
        return False
    if is_ipv6 and ring[mac + nhoff + IP6H.nexthdr] != IPPROTO_TCP:
        return False
    return _le16(ring, vh + VH.csum_start) == thoff and _le16(ring, vh + VH.csum_offset) == TCPH.check


@njit(cache=True, nogil=True, _nrt=False)
def _rx_gso(ring, mac, flen, tag, vh, seg, cols, ts_ns, n, meta, cnt, whole):
    """Segments seg.. of the GSO packet at ring[mac:], one per free slot from n; returns (n, the next
    segment to emit, 0 when all are out). A packet that cannot be segmented takes one slot with
    verdict SKB_GSO_SEG. whole: a TCP super-packet that fits a slot goes into one, with its gso word
    and its checksum left partial (csum_start and csum_offset are found again from the headers)."""
    data, hr = cols[0], meta[0]
    ins = VLAN.size if tag >= 0 else 0
    gso_size = _le16(ring, vh + VH.gso_size)
    info = gso_parse(ring, mac, flen, ring[vh + VH.gso_type], ring[vh + VH.flags],
                     _le16(ring, vh + VH.csum_start), gso_size)  # fmt: skip
    if info[0] == 0:
        m = _slot_init(cols, ts_ns, n, flen + ins, R_SKB_GSO_SEG, meta)
        copy_frame(ring, mac, flen, tag, data[n], hr, m)
        return n + 1, 0
    hdrlen, nsegs = info[4], info[5]
    if seg == 0 and whole and _rx_gso_whole(ring, mac, flen, vh, info, data.shape[1] - hr - ins):
        m = _slot_init(cols, ts_ns, n, flen + ins, 0, meta)
        copy_frame(ring, mac, flen, tag, data[n], hr, m)
        cols[8][n] = (np.int64(ring[vh + VH.gso_type]) << GSO_TYPE_SHIFT) | gso_size
        cnt[C_RX_GSO_PACKETS] += 1
        cnt[C_RX_GSO_SEGMENTS] += nsegs
        return n + 1, 0
    if seg == 0:
        cnt[C_RX_GSO_PACKETS] += 1
    while seg < nsegs and n < data.shape[0]:
        off = hdrlen + seg * gso_size
        plen = min(gso_size, flen - off)
        seglen = hdrlen + ins + plen
        m = _slot_init(cols, ts_ns, n, seglen, 0, meta)
        row = data[n]
        h = copy_frame(ring, mac, hdrlen, tag, row, hr, m)
        memcpy(row, hr + h, ring, mac + off, m - h)
        if m == seglen:  # a truncated (PKT_TOO_BIG) segment is dropped anyway
            gso_segment(row, hr, ins, info, seg, gso_size, seglen)
        seg += 1
        n += 1
        cnt[C_RX_GSO_SEGMENTS] += 1
    return n, (seg if seg < nsegs else 0)


@njit(cache=True, nogil=True, _nrt=False)
def _rx_vlan_tag(status, tci, tpid):
    """The tag the kernel stripped (tpid << 16 | tci), or -1: from a tp_status and the header's
    tp_vlan_tci and tp_vlan_tpid (the same meaning in tpacket2_hdr and tpacket3_hdr)."""
    if not status & TP_STATUS_VLAN_VALID:
        return np.int64(-1)
    tpid = tpid if status & TP_STATUS_VLAN_TPID_VALID else ETH_P_8021Q
    return (np.int64(tpid) << 16) | (np.int64(tci) & 0xFFFF)


@njit(cache=True, nogil=True, _nrt=False)
def rx_skb(ring, pkt, seg, vnet, cols, ts_ns, n, meta, cnt):
    """Copy one received packet into slot n (or its GSO segments into slots n..); returns (n after
    it, the next GSO segment or 0 when the packet is done). The one per-packet step of both ring
    walkers (V2 and V3 differ only in where the header and the frame are).

    pkt (mac, flen, wire_len, tag, status): the frame at ring[mac:], flen bytes of it in the ring
    (already bounded by the frame or block), wire_len the bytes it had (tp_len), tag as
    _rx_vlan_tag gives it, status its tp_status; with vnet its virtio_net_hdr is just before mac.
    meta: (headroom, iif, now_ns)."""
    mac, flen, wire_len, tag, status = pkt
    ins = VLAN.size if tag >= 0 and flen >= ETH.h_proto else 0
    vh = mac - VH.size
    flags = ring[vh + VH.flags] if vnet else 0
    if seg == 0:
        cnt[C_RX_PACKETS] += 1
        cnt[C_RX_BYTES] += flen + ins
    if flen < wire_len or flen < ETH_HLEN:
        reason = R_PACKET_RX_TRUNCATED
    elif vnet and ring[vh + VH.gso_type] != VIRTIO_NET_HDR_GSO_NONE:
        return _rx_gso(ring, mac, flen, tag, vh, seg, cols, ts_ns, n, meta, cnt, vnet == RX_VNET_GSO)
    elif not vnet and status & TP_STATUS_CSUMNOTREADY:
        reason = R_SKB_CSUM  # no csum_start without the vnet header
    else:
        reason = 0
    row, hr = cols[0][n], meta[0]
    m = _slot_init(cols, ts_ns, n, flen + ins, reason, meta)
    copy_frame(ring, mac, flen, tag, row, hr, m)
    if reason == 0 and flags & VIRTIO_NET_HDR_F_NEEDS_CSUM and m == flen + ins:
        start = _le16(ring, vh + VH.csum_start) + ins
        coff = start + _le16(ring, vh + VH.csum_offset)
        if coff + 2 <= m and start < m:
            skb_checksum_help(row, hr + start, hr + m, hr + coff)
            cnt[C_RX_CSUM_COMPLETED] += 1
        else:
            cols[5][n] = R_SKB_CSUM
    return n + 1, 0


@njit(cache=True, nogil=True, _nrt=False)
def _tpacket3_pkt(ring, ring32, p, end):
    """rx_skb's pkt for the tpacket3_hdr at ring[p], in a block that ends at `end`."""
    status = ring32[(p + T3.tp_status) >> 2]
    mac = p + _le16(ring, p + T3.tp_mac)
    flen = max(np.int64(0), min(np.int64(ring32[(p + T3.tp_snaplen) >> 2]), end - mac))  # never past the block
    tag = _rx_vlan_tag(status, _le32(ring, p + T3.tp_vlan_tci), _le16(ring, p + T3.tp_vlan_tpid))
    return mac, flen, np.int64(ring32[(p + T3.tp_len) >> 2]), tag, np.int64(status)


@njit(cache=True, nogil=True, _nrt=False)
def _tpacket2_pkt(ring, ring32, p, end):
    """rx_skb's pkt for the tpacket2_hdr at ring[p], in a frame that ends at `end`."""
    status = ring32[(p + T2.tp_status) >> 2]
    mac = p + _le16(ring, p + T2.tp_mac)
    flen = max(np.int64(0), min(np.int64(ring32[(p + T2.tp_snaplen) >> 2]), end - mac))  # never past the frame
    tag = _rx_vlan_tag(status, _le16(ring, p + T2.tp_vlan_tci), _le16(ring, p + T2.tp_vlan_tpid))
    return mac, flen, np.int64(ring32[(p + T2.tp_len) >> 2]), tag, np.int64(status)


@njit(cache=True, nogil=True, _nrt=False)
def tpacket_v3_rcv(ring, ring32, st, cnt, cols, ts_ns, n, hr, iif, now_ns):
    """Copy received frames from the TPACKET_V3 ring into batch slots n.. until the batch is full or
    no block is ready; give back each block whose packets are all copied. Returns the new n.

    ring uint8[size], ring32 uint32[size / 4]: the mapping; st int64[8]: RX_* position and shape
    cols PacketBatch.cols; ts_ns int64[cap]; hr headroom; iif flowpath's ifindex; cnt int64[16]
    """
    cap = cols[0].shape[0]
    bsize = st[RX_BLOCK_SIZE]
    meta = (np.int64(hr), np.int64(iif), np.int64(now_ns))
    while n < cap:
        boff = st[RX_BLOCK] * bsize
        if (ring32[(boff + BD.block_status) >> 2] & TP_STATUS_USER) == 0:
            break
        smp_mb()  # the block's packets are read after its status (tpacket_rcv: smp_wmb before it)
        num = ring32[(boff + BD.num_pkts) >> 2]
        if st[RX_PKT] == 0 and st[RX_SEG] == 0:
            st[RX_OFF] = boff + ring32[(boff + BD.offset_to_first_pkt) >> 2]
        while st[RX_PKT] < num and n < cap:
            p = st[RX_OFF]
            if p < boff + BD.size or p + T3.size > boff + bsize:  # a bad offset: skip the rest
                st[RX_PKT] = num
                break
            pkt = _tpacket3_pkt(ring, ring32, p, boff + bsize)
            n, seg = rx_skb(ring, pkt, st[RX_SEG], st[RX_VNET], cols, ts_ns, n, meta, cnt)
            st[RX_SEG] = seg
            if seg != 0:
                break  # the batch filled up inside a GSO packet
            st[RX_PKT] += 1
            st[RX_OFF] = p + ring32[(p + T3.tp_next_offset) >> 2]
        if st[RX_PKT] < num:
            break
        smp_mb()  # every read of the block before it goes back
        ring32[(boff + BD.block_status) >> 2] = TP_STATUS_KERNEL
        st[RX_BLOCK] = (st[RX_BLOCK] + 1) % st[RX_NBLOCKS]
        st[RX_PKT] = 0
    return n


@njit(cache=True, nogil=True, _nrt=False)
def tpacket_v2_rcv(ring, ring32, st, cnt, cols, ts_ns, n, hr, iif, now_ns):
    """Copy received frames from the TPACKET_V2 ring into batch slots n.. until the batch is full or
    the frame at the head is still the kernel's; give each frame back as soon as it is copied (a GSO
    packet's when its last segment is out). Returns the new n. Arguments as tpacket_v3_rcv's, with
    st's RX_FRAME, RX_NFRAMES and RX_FRAME_SIZE."""
    cap = cols[0].shape[0]
    fsize = st[RX_FRAME_SIZE]
    meta = (np.int64(hr), np.int64(iif), np.int64(now_ns))
    while n < cap:
        p = st[RX_FRAME] * fsize
        if (ring32[(p + T2.tp_status) >> 2] & TP_STATUS_USER) == 0:
            break
        smp_mb()  # the frame is read after its status (tpacket_rcv: smp_wmb before __packet_set_status)
        pkt = _tpacket2_pkt(ring, ring32, p, p + fsize)
        n, seg = rx_skb(ring, pkt, st[RX_SEG], st[RX_VNET], cols, ts_ns, n, meta, cnt)
        st[RX_SEG] = seg
        if seg != 0:
            break  # the batch filled up inside a GSO packet
        smp_mb()  # every read of the frame before it goes back
        ring32[(p + T2.tp_status) >> 2] = TP_STATUS_KERNEL
        st[RX_FRAME] = (st[RX_FRAME] + 1) % st[RX_NFRAMES]
    return n


@njit(cache=True, nogil=True, _nrt=False)
def tx_size_ok(b, off, n, mtu):
    """What tpacket_snd accepts: at least an Ethernet header, at most mtu + 14 (mtu + 18 with an
    802.1Q tag: packet_extra_vlan_len_allowed)."""
    if n < ETH_HLEN:
        return False
    return n <= mtu + ETH_HLEN or (n <= mtu + ETH_HLEN + VLAN.size and
                                   (np.int64(b[off + ETH.h_proto]) << 8 | b[off + ETH.h_proto + 1]) == ETH_P_8021Q)  # fmt: skip


@njit(cache=True, nogil=True, _nrt=False)
def tx_frame_claim(ring32, st, cnt):
    """The byte offset of the next free TX frame, or -1 when the ring is full."""
    f = st[TX_HEAD] * st[TX_FRAME_SIZE]
    status = ring32[f >> 2]
    if status == TP_STATUS_WRONG_FORMAT:  # refused by tpacket_snd (PACKET_LOSS off); reuse it
        cnt[C_TX_ERRORS] += 1
    elif status != TP_STATUS_AVAILABLE:
        return -1
    smp_mb()  # the frame is ours from its status on (the destructor's smp_wmb)
    return f


@njit(cache=True, nogil=True, _nrt=False)
def tx_vnet_hdr(ring, at, flags, gso_type, hdr_len, gso_size, csum_start, csum_offset):
    """Write a struct virtio_net_hdr (little-endian) at ring[at]: what tpacket_snd hands to
    virtio_net_hdr_to_skb for the frame after it."""
    ring[at + VH.flags], ring[at + VH.gso_type] = flags, gso_type
    for off, v in ((VH.hdr_len, hdr_len), (VH.gso_size, gso_size), (VH.csum_start, csum_start),
                   (VH.csum_offset, csum_offset)):  # fmt: skip
        ring[at + off], ring[at + off + 1] = v & 0xFF, (v >> 8) & 0xFF


@njit(cache=True, nogil=True, _nrt=False)
def tx_gso_check(b, off, n, gso, mtu):
    """What the virtio_net_hdr of the GSO frame b[off : off + n] (gso: its PacketBatch.gso word) says
    besides gso_type and gso_size: (hdr_len, csum_start, csum_offset), NEEDS_CSUM at the L4 checksum;
    hdr_len 0 when its headers do not hold together or a segment would exceed mtu.
    Linux: include/linux/virtio_net.h › virtio_net_hdr_from_skb (what a GSO skb's header says)."""
    gso_type, gso_size = (gso >> GSO_TYPE_SHIFT) & 0xFF, gso & GSO_SIZE_MASK
    info = gso_parse(b, off, n, gso_type, VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, gso_size)
    if info[0] == 0 or info[4] - info[2] + gso_size > mtu:
        return np.int64(0), np.int64(0), np.int64(0)
    return (
        np.int64(info[4]),
        np.int64(info[3]),
        np.int64(TCPH.check if info[0] == IPPROTO_TCP else UDPH.check),
    )


@njit(cache=True, nogil=True, _nrt=False)
def tx_frame_commit(ring32, st, cnt, f, n):
    ring32[(f + T2.tp_len) >> 2] = n + st[TX_VNET_LEN]
    smp_mb()  # the frame's bytes before the status that lets the kernel read them
    ring32[(f + T2.tp_status) >> 2] = TP_STATUS_SEND_REQUEST
    st[TX_HEAD] = (st[TX_HEAD] + 1) % st[TX_NFRAMES]
    st[TX_PENDING] += 1
    cnt[C_TX_PACKETS] += 1
    cnt[C_TX_BYTES] += n


@njit(cache=True, nogil=True, _nrt=False)
def tpacket_v2_snd(ring, ring32, st, cnt, data, head, length, gso, idx, k):
    """Queue the frames of slots idx[k:] into free TX frames, in order, until the ring is full.
    A frame the kernel would refuse (tx_size_ok) is counted in tx_errors and skipped, so it never
    stalls the ring. With a vnet header (st[TX_VNET_LEN]) each frame gets one: zeros, or for a GSO
    super-packet (gso[i] != 0) its segmentation and partial checksum (tx_gso_hdr); without one a
    super-packet exceeds the MTU and is refused. Returns how many of idx[k:] were taken."""
    k0 = k
    vl = st[TX_VNET_LEN]
    room = st[TX_FRAME_SIZE] - TX_DATA_OFF - vl
    while k < idx.shape[0]:
        i = idx[k]
        h, n, g = np.int64(head[i]), np.int64(length[i]), np.int64(gso[i])
        hdr_len = cstart = coff = np.int64(0)
        if g != 0 and vl != 0:
            hdr_len, cstart, coff = tx_gso_check(data[i], h, n, g, st[TX_MTU])
            ok = hdr_len != 0 and n <= room
        else:
            ok = n <= room and tx_size_ok(data[i], h, n, st[TX_MTU])
        if not ok:
            cnt[C_TX_ERRORS] += 1
            k += 1
            continue
        f = tx_frame_claim(ring32, st, cnt)
        if f < 0:
            break
        if vl:
            flags = VIRTIO_NET_HDR_F_NEEDS_CSUM if g != 0 else 0
            tx_vnet_hdr(ring, f + TX_DATA_OFF, flags, (g >> GSO_TYPE_SHIFT) & 0xFF, hdr_len, g & GSO_SIZE_MASK,
                        cstart, coff)  # fmt: skip
        memcpy(ring, f + TX_DATA_OFF + vl, data[i], h, n)
        tx_frame_commit(ring32, st, cnt, f, n)
        k += 1
    return k - k0


@njit(cache=True, nogil=True, _nrt=False)
def tpacket_v2_snd_one(ring, ring32, st, cnt, frame):
    """tpacket_v2_snd for one frame uint8[n]: 1 queued, 0 ring full, -1 refused (tx_errors)."""
    n, vl = frame.shape[0], st[TX_VNET_LEN]
    if not tx_size_ok(frame, 0, n, st[TX_MTU]) or n > st[TX_FRAME_SIZE] - TX_DATA_OFF - vl:
        cnt[C_TX_ERRORS] += 1
        return -1
    f = tx_frame_claim(ring32, st, cnt)
    if f < 0:
        return 0
    if vl:
        tx_vnet_hdr(ring, f + TX_DATA_OFF, 0, 0, 0, 0, 0, 0)
    memcpy(ring, f + TX_DATA_OFF + vl, frame, 0, n)
    tx_frame_commit(ring32, st, cnt, f, n)
    return 1


@njit(cache=True, nogil=True, _nrt=False)
def tpacket_v2_refill(ring32, st, cnt, n):
    """Mark every free TX frame from the head on for sending again, their bytes (n of them) left
    in place by an earlier fill: the blaster's loop. Returns how many were marked."""
    marked = 0
    while marked < st[TX_NFRAMES]:
        f = tx_frame_claim(ring32, st, cnt)
        if f < 0:
            break
        tx_frame_commit(ring32, st, cnt, f, n)
        marked += 1
    return marked
