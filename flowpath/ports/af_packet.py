"""AfPacketPort: a kernel interface as a flowpath Port, through two packet sockets with mapped rings.

Linux: net/packet/af_packet.c (packet_setsockopt, packet_set_ring, packet_mmap, packet_do_bind,
packet_poll, packet_notifier); Documentation/networking/packet_mmap.rst.
Receive: a SOCK_RAW socket bound to the interface for ETH_P_ALL with a TPACKET_V2 ring (fixed
frames, each handed over as soon as tpacket_rcv has written it: a lone ping or TCP ACK waits for
nothing) or a TPACKET_V3 ring (`rx_ring="v3"`: packets packed into blocks, a block handed over when
full or when its retire timer fires; tp_retire_blk_tov is 1 ms but the timer counts jiffies, so with
HZ=250 a lone packet waits up to 4 ms), PACKET_IGNORE_OUTGOING (our own
transmits never come back), PACKET_VNET_HDR (so frames the local stack left to checksum offload or
TSO/USO can be finished here: ports/gso.py, or, with `gso`, TCP super-packets kept whole) and PACKET_MR_ALLMULTI (IPv6 neighbour discovery's
multicast). Transmit: a second socket of protocol 0 (it is never given a received frame) with a
TPACKET_V2 ring, PACKET_QDISC_BYPASS (straight to the driver, as a NIC queue would be used) and
PACKET_LOSS (a frame the kernel refuses is skipped instead of stopping the ring; ours are checked
first and counted in tx_errors); with `gso`, PACKET_VNET_HDR too, so that a super-packet leaves whole
with its virtio_net_hdr (segmented by the kernel only where the device needs it, as VPP's af_packet
does) in frames of 64 KiB. The compiled ring walkers are in ports/tpacket.py.
benchmarks/af_packet.py measures both directions and the TX ring against sendmmsg(2): for 128-byte
frames over veth they came out level in wall-clock time, sendmmsg a few per cent cheaper in CPU time
(figures in that script's docstring). The ring is kept: tx_burst only copies, the one kick per poll
sends what every burst queued (a batch is free again at once), and on a NIC tpacket_snd hands the
ring's pages to the driver where sendmmsg copies each frame into a new skb.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import select
import socket
import struct
import sys
import time

import numpy as np

from flowpath.errors import PortError
from flowpath.packet.batch import PacketBatch
from flowpath.ports.fanout import PACKET_FANOUT_MAX, sock_fprog, steer_program
from flowpath.ports.kernel_if import IFNAMSIZ, KernelLink, kernel_link
from flowpath.ports.tpacket import (
    BD,
    C_RX_BYTES,
    C_RX_CSUM_COMPLETED,
    C_RX_GSO_PACKETS,
    C_RX_GSO_SEGMENTS,
    C_RX_PACKETS,
    C_TX_BYTES,
    C_TX_ERRORS,
    C_TX_PACKETS,
    N_COUNTERS,
    RX_BLOCK,
    RX_BLOCK_SIZE,
    RX_FRAME_SIZE,
    RX_NBLOCKS,
    RX_NFRAMES,
    RX_VNET,
    RX_VNET_GSO,
    RX_VNET_OFF,
    RX_VNET_ON,
    T2,
    TP_STATUS_AVAILABLE,
    TP_STATUS_SEND_REQUEST,
    TP_STATUS_USER,
    TX_DATA_OFF,
    TX_FRAME_SIZE,
    TX_HEAD,
    TX_MTU,
    TX_NFRAMES,
    TX_PENDING,
    TX_VNET_LEN,
    VH,
    tpacket_v2_rcv,
    tpacket_v2_refill,
    tpacket_v2_snd,
    tpacket_v2_snd_one,
    tpacket_v3_rcv,
    tx_size_ok,
)

# include/uapi/linux/if_packet.h, if_ether.h, socket.h
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_TX_RING = 13
PACKET_LOSS = 14
PACKET_VNET_HDR = 15
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23
PACKET_FANOUT = 18
PACKET_FANOUT_DATA = 22
PACKET_FANOUT_CBPF = 6
PACKET_FANOUT_FLAG_UNIQUEID = 0x2000
PACKET_FANOUT_FLAG_IGNORE_OUTGOING = 0x4000  # Linux 6.2; older kernels ignore the bit
PACKET_MR_PROMISC = 1
PACKET_MR_ALLMULTI = 2
TPACKET_V2 = 1
TPACKET_V3 = 2
ETH_P_ALL = 0x0003
SO_BUSY_POLL = 46
SO_PREFER_BUSY_POLL = 69
SO_BUSY_POLL_BUDGET = 70
SO_SNDBUFFORCE = 32
SIOCGIFNAME = 0x8910
BUSY_POLL_US = 50
RETIRE_BLK_TOV_MS = 1
ERROR_CHECK_NS = 1_000_000
PAGE_SIZE = mmap.PAGESIZE
_TPACKET_REQ = struct.Struct("IIII")  # struct tpacket_req: block_size, block_nr, frame_size, frame_nr
_TPACKET_REQ3 = struct.Struct("IIIIIII")  # + retire_blk_tov, sizeof_priv, feature_req_word
_PACKET_MREQ = struct.Struct("iHH8s")  # struct packet_mreq: ifindex, type, alen, address
_TPACKET_STATS = struct.Struct("II")  # tp_packets, tp_drops (V3 adds tp_freeze_q_cnt)
_GONE = (errno.ENXIO, errno.ENODEV, errno.ENETDOWN)
GSO_TX_FRAMES = 256  # 64 KiB frames with gso: 16 MiB of ring, a full batch of super-packets
RX_RINGS = ("v2", "v3")
RX_RING_BYTES = 1 << 24  # the receive ring's default size, either version (V3: 64 x 256 KiB)
GSO_RX_FRAME = 1 << 16  # a V2 frame that holds a GSO super-packet (64 KiB with its headers)


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


class AfPacketPort:
    """One kernel interface, `kernel_name` (default: `name`), as flowpath's port `name`/`ifindex`.

    rx_ring    "v2" (default: each packet handed over at once) or "v3" (blocks: a lone packet
               waits for the block's retire timer, but the ring's room is counted in bytes, so it
               buffers many more small packets in a flood; V2's is rx_frames packets, whatever
               their size: benchmarks/af_packet.py compares them)
    rx_frames x rx_frame_size  the V2 receive ring (rx_frame_size a power of two in 2 KiB..64 KiB;
                               a frame holds rx_frame_size - 76 bytes of packet, longer ones arrive
                               cut, PACKET_RX_TRUNCATED); default RX_RING_BYTES of 64 KiB frames
                               with vnet_hdr (a GSO super-packet fits one), else of 2 KiB frames
    ring_blocks x block_size   the V3 receive ring (block_size a power of two, at least a page;
                               a frame or GSO packet must fit in one block); default 64 x 256 KiB
    tx_frames x tx_frame_size  the transmit ring (tx_frame_size a power of two; a frame holds
                               tx_frame_size - 32 bytes, 10 fewer with gso); default 1024 x 2 KiB,
                               with gso GSO_TX_FRAMES x 64 KiB
    vnet_hdr   receive with a virtio_net_hdr: frames from the local stack get their checksum and
               segmentation done here; without it such a frame is dropped as SKB_CSUM
    gso        (with vnet_hdr) keep TCP super-packets whole in a slot (PacketBatch.gso; the batch needs
               slots that hold one, GSO_SLOT) and transmit them whole with a virtio_net_hdr
    promisc    receive frames for any MAC (PACKET_MR_PROMISC while the socket is open)
    busy_poll  SO_BUSY_POLL / SO_PREFER_BUSY_POLL on the receive socket (where the driver supports it)
    fanout     (group_id, nr_cpus): the receive socket joins PACKET_FANOUT group group_id of this
               interface, whose program (ports/fanout.py) hands each frame to member
               flow_hash_frame(frame) % nr_cpus, members numbered in the order they joined (the
               first to join is worker 0's). group_id None asks the kernel for an unused id
               (PACKET_FANOUT_FLAG_UNIQUEID); fanout_id tells it, for the other members to join with.
    The link must be up (kernel_if.prepare_port brings it up). Raises PortError when it cannot open.
    """

    def __init__(self, name: str, ifindex: int, kernel_name: str | None = None, *, rx_ring: str = "v2",
                 rx_frames: int | None = None, rx_frame_size: int | None = None,
                 ring_blocks: int | None = None, block_size: int | None = None,
                 tx_frames: int | None = None, tx_frame_size: int | None = None,
                 vnet_hdr: bool = True, gso: bool = False, promisc: bool = False,
                 busy_poll: bool = False,
                 fanout: tuple[int | None, int] | None = None):  # fmt: skip
        self.name, self.ifindex = name, int(ifindex)
        self.fanout_id: int | None = None
        self.gso = gso = bool(gso and vnet_hdr)
        if rx_ring not in RX_RINGS:
            raise PortError(name, f"rx_ring {rx_ring!r}: expected one of {', '.join(RX_RINGS)}")
        self.rx_ring = rx_ring
        if rx_ring == "v2":
            if ring_blocks is not None or block_size is not None:
                raise PortError(
                    name, "ring_blocks and block_size shape a V3 ring; V2 takes rx_frames, rx_frame_size"
                )
            if rx_frame_size is None:
                rx_frame_size = GSO_RX_FRAME if vnet_hdr else 2048
            if rx_frames is None:
                rx_frames = max(2, RX_RING_BYTES // rx_frame_size)
            if rx_frames < 2 or not _pow2(rx_frame_size) or not 2048 <= rx_frame_size <= 1 << 16:
                raise PortError(name, f"receive ring: rx_frame_size {rx_frame_size} must be a power of two "
                                      f"in 2048..65536, rx_frames >= 2 (got {rx_frames})")  # fmt: skip
        elif rx_frames is not None or rx_frame_size is not None:
            raise PortError(
                name, "rx_frames and rx_frame_size shape a V2 ring; V3 takes ring_blocks, block_size"
            )
        else:
            ring_blocks = 64 if ring_blocks is None else ring_blocks
            block_size = 1 << 18 if block_size is None else block_size
        if tx_frames is None:
            tx_frames = GSO_TX_FRAMES if gso else 1024
        if tx_frame_size is None:
            tx_frame_size = 1 << 16 if gso else 2048
        self.kernel_name = kernel_name or name
        self._rx_sock = self._tx_sock = self._rx_map = self._tx_map = None
        self._rx_missed, self._checked_ns = 0, 0
        if sys.byteorder != "little":
            raise PortError(name, "AF_PACKET rings are read as little-endian; this host is big-endian")
        if rx_ring == "v3" and (ring_blocks < 2 or not _pow2(block_size) or block_size < PAGE_SIZE):
            raise PortError(name, f"receive ring: need >= 2 blocks of a power-of-two size >= {PAGE_SIZE} "
                                  f"(got {ring_blocks} x {block_size})")  # fmt: skip
        if tx_frames < 1 or not _pow2(tx_frame_size) or not 64 <= tx_frame_size <= 1 << 16:
            raise PortError(name, f"transmit ring: tx_frame_size {tx_frame_size} must be a power of two "
                                  f"in 64..65536 (frames then tile the blocks), tx_frames >= 1")  # fmt: skip
        link = kernel_link(self.kernel_name)
        if link is None:
            raise PortError(name, f"no kernel interface {self.kernel_name!r} in this network namespace")
        if not link.up:
            raise PortError(name, f"link {self.kernel_name} is down (prepare_port brings it up)")
        self.link: KernelLink = link
        self.cnt = np.zeros(N_COUNTERS, np.int64)
        try:
            if rx_ring == "v2":
                self._open_rx_v2(rx_frames, rx_frame_size, vnet_hdr)
            else:
                self._open_rx_v3(ring_blocks, block_size, vnet_hdr)
            self._bind_rx(promisc, busy_poll)
            if fanout is not None:
                self._join_fanout(*fanout)
            self._open_tx(tx_frames, tx_frame_size, gso)
        except OSError as e:
            self.close()
            raise PortError(name, f"cannot open packet sockets on {self.kernel_name}: {e.strerror}") from None
        except BaseException:
            self.close()
            raise
        self._poll = select.poll()
        self._poll.register(self._rx_sock.fileno(), select.POLLIN)

    # ---- setup -------------------------------------------------------------------------------

    def _rx_socket(self, version: int, vnet_hdr: bool) -> socket.socket:
        # Protocol 0 until everything is set: a socket hooked to ETH_P_ALL from the start would queue
        # frames of every interface before it is bound and has its ring.
        s = self._rx_sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        s.setsockopt(SOL_PACKET, PACKET_VERSION, version)
        if vnet_hdr:
            s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)  # before the ring (else EBUSY)
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        self._rx_st = np.zeros(8, np.int64)
        self._rx_st[RX_VNET] = (RX_VNET_GSO if self.gso else RX_VNET_ON) if vnet_hdr else RX_VNET_OFF
        return s

    def _rx_map_ring(self, size: int) -> None:
        self._rx_map = mmap.mmap(
            self._rx_sock.fileno(), size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
        )
        self._rx_ring = np.frombuffer(self._rx_map, np.uint8)
        self._rx_ring32 = self._rx_ring.view(np.uint32)

    def _open_rx_v2(self, frames: int, frame_size: int, vnet_hdr: bool) -> None:
        s = self._rx_socket(TPACKET_V2, vnet_hdr)
        block = max(frame_size, PAGE_SIZE)  # frames tile the blocks: frame i is at i * frame_size
        per_block = block // frame_size
        nblocks = -(-frames // per_block)
        frames = per_block * nblocks
        s.setsockopt(SOL_PACKET, PACKET_RX_RING, _TPACKET_REQ.pack(block, nblocks, frame_size, frames))
        self._rx_map_ring(block * nblocks)
        st = self._rx_st
        st[RX_NFRAMES], st[RX_FRAME_SIZE] = frames, frame_size
        self._rx_status_off, self._rx_rcv = T2.tp_status, tpacket_v2_rcv

    def _open_rx_v3(self, blocks: int, block_size: int, vnet_hdr: bool) -> None:
        s = self._rx_socket(TPACKET_V3, vnet_hdr)
        frame_size = 2048  # V3 ignores it, but packet_set_ring checks frame_nr against it
        req = _TPACKET_REQ3.pack(block_size, blocks, frame_size, block_size // frame_size * blocks,
                                 RETIRE_BLK_TOV_MS, 0, 0)  # fmt: skip
        s.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        self._rx_map_ring(blocks * block_size)
        st = self._rx_st
        st[RX_NBLOCKS], st[RX_BLOCK_SIZE] = blocks, block_size
        self._rx_status_off, self._rx_rcv = BD.block_status, tpacket_v3_rcv

    def _bind_rx(self, promisc: bool, busy_poll: bool) -> None:
        s = self._rx_sock
        s.bind((self.kernel_name, ETH_P_ALL))
        for mr_type in (PACKET_MR_ALLMULTI,) + ((PACKET_MR_PROMISC,) if promisc else ()):
            s.setsockopt(
                SOL_PACKET, PACKET_ADD_MEMBERSHIP, _PACKET_MREQ.pack(self.link.ifindex, mr_type, 0, b"")
            )
        if busy_poll:
            s.setsockopt(socket.SOL_SOCKET, SO_BUSY_POLL, BUSY_POLL_US)
            s.setsockopt(socket.SOL_SOCKET, SO_PREFER_BUSY_POLL, 1)
        s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # an ENETDOWN from a flap before bind
        s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)  # counts from now on (V3's struct is 12 bytes)

    def _join_fanout(self, group_id: int | None, nr_cpus: int) -> None:
        """Join the group, then give it the steering program (PACKET_FANOUT_DATA needs a member;
        every member sets the same program, so the order of joining does not matter for it). While
        a gateway opens its ports a frame may be steered wrong or twice: a socket receives on its own
        from bind (fanout_add wants a running socket) until it joins, and until all nr_cpus members
        have joined the kernel's % num_members sends frames to the members present."""
        if group_id is not None and not 0 <= group_id <= 0xFFFF:
            raise PortError(
                self.name, f"fanout group id {group_id}: expected 0..65535 (or None: any free one)"
            )
        if not 1 <= nr_cpus <= PACKET_FANOUT_MAX:
            raise PortError(self.name, f"fanout over {nr_cpus} sockets: expected 1..{PACKET_FANOUT_MAX}")
        # Not PACKET_FANOUT_FLAG_ROLLOVER: a full ring would send a flow to another worker.
        # Not PACKET_FANOUT_FLAG_DEFRAG: fragments steer by addresses already, and the gateway reassembles.
        type_flags = PACKET_FANOUT_CBPF | PACKET_FANOUT_FLAG_IGNORE_OUTGOING
        if group_id is None:
            type_flags |= PACKET_FANOUT_FLAG_UNIQUEID
        s = self._rx_sock
        what = f"fanout group {'(new)' if group_id is None else group_id} on {self.kernel_name}"
        try:
            s.setsockopt(SOL_PACKET, PACKET_FANOUT, (group_id or 0) | type_flags << 16)
        except OSError as e:
            hint = {
                errno.EINVAL: ": the group exists with other flags, type or protocol (another program's?), "
                "or this kernel has no PACKET_FANOUT_CBPF (Linux 4.3)",
                errno.ENOSPC: ": the group is full",
            }.get(e.errno, "")
            raise PortError(self.name, f"cannot join {what}: {e.strerror}{hint}") from None
        self.fanout_id = s.getsockopt(SOL_PACKET, PACKET_FANOUT) & 0xFFFF
        fprog, keep = sock_fprog(steer_program(nr_cpus))
        try:
            s.setsockopt(SOL_PACKET, PACKET_FANOUT_DATA, fprog)
        except OSError as e:
            raise PortError(
                self.name, f"the kernel refused the steering program of {what}: {e.strerror}"
            ) from None
        del keep

    def _open_tx(self, frames: int, frame_size: int, vnet_hdr: bool) -> None:
        s = self._tx_sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
        if vnet_hdr:
            s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)  # before the ring (else EBUSY)
        s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        s.setsockopt(SOL_PACKET, PACKET_LOSS, 1)
        block = PAGE_SIZE
        while block < frame_size:
            block *= 2
        per_block = block // frame_size
        nblocks = -(-frames // per_block)
        s.setsockopt(
            SOL_PACKET, PACKET_TX_RING, _TPACKET_REQ.pack(block, nblocks, frame_size, per_block * nblocks)
        )
        size = block * nblocks
        self._tx_map = mmap.mmap(s.fileno(), size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._tx_ring = np.frombuffer(self._tx_map, np.uint8)
        self._tx_ring32 = self._tx_ring.view(np.uint32)
        self._tx_st = np.zeros(8, np.int64)
        st = self._tx_st
        st[TX_NFRAMES], st[TX_FRAME_SIZE], st[TX_MTU] = per_block * nblocks, frame_size, self.link.mtu
        st[TX_VNET_LEN] = VH.size if vnet_hdr else 0
        try:  # the ring bounds what is in flight, not the socket's send buffer
            s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, size * 2)
        except PermissionError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size * 2)
        s.bind((self.kernel_name, 0))  # protocol 0: never hooked for receive

    # ---- the Port interface --------------------------------------------------------------------

    def fileno(self) -> int:
        return self._rx_sock.fileno() if self._rx_sock is not None else -1

    def rx_burst(self, batch: PacketBatch, now_ns: int) -> int:
        """Append up to batch.capacity - batch.n received frames (iif = ifindex, ts_ns = now_ns)."""
        if self._rx_sock is None:
            raise PortError(self.name, "port is closed")
        n0, st = batch.n, self._rx_st
        # an empty ring costs one load here instead of the call's ~2 us of argument unboxing
        # (the head block's block_status, or the head frame's tp_status)
        if (
            self._rx_ring32[(st[RX_BLOCK] * st[RX_BLOCK_SIZE] + self._rx_status_off) >> 2] & TP_STATUS_USER
        ) == 0:
            if time.monotonic_ns() - self._checked_ns >= ERROR_CHECK_NS:
                self._check_rx_error()
            return 0
        n = self._rx_rcv(self._rx_ring, self._rx_ring32, st, self.cnt, batch.cols, batch.ts_ns, n0,
                           batch.headroom, self.ifindex, now_ns)  # fmt: skip
        batch.n = n
        return n - n0

    def tx_burst(self, batch: PacketBatch, idx: np.ndarray) -> int:
        """Queue slots idx (int32, in order); returns how many were taken (queued, or refused as
        malformed for the device and counted in tx_errors). A full ring is kicked and retried once."""
        if self._tx_sock is None:
            raise PortError(self.name, "port is closed")
        args = (self._tx_ring, self._tx_ring32, self._tx_st, self.cnt, batch.data, batch.head, batch.len,
                batch.gso, idx)  # fmt: skip
        k = tpacket_v2_snd(*args, 0)
        if k < idx.shape[0]:
            self.flush()
            k += tpacket_v2_snd(*args, k)
        return k

    def warm(self, batch: PacketBatch) -> None:
        """Compile (or load from numba's cache) the ring kernels now, receiving and sending nothing:
        the walker runs with no room in the batch, the senders with no slots and a frame they refuse,
        counting into scratch counters. A gateway calls it before it says it is ready."""
        scratch = np.zeros_like(self.cnt)
        st = self._rx_st
        self._rx_rcv(self._rx_ring, self._rx_ring32, st, scratch, batch.cols, batch.ts_ns, batch.capacity,
                     batch.headroom, self.ifindex, 0)  # fmt: skip
        tx = (self._tx_ring, self._tx_ring32, self._tx_st, scratch)
        tpacket_v2_snd(*tx, batch.data, batch.head, batch.len, batch.gso, np.empty(0, np.int32), 0)
        empty = np.frombuffer(b"", np.uint8)
        tpacket_v2_snd_one(*tx, empty)

    def tx_frame(self, frame: bytes | bytearray | memoryview) -> bool:
        """Queue one frame; False when the ring is full even after a kick. A frame the device would
        refuse (shorter than 14 bytes, over the MTU) is taken and counted in tx_errors."""
        if self._tx_sock is None:
            raise PortError(self.name, "port is closed")
        arr = np.frombuffer(frame, np.uint8)
        if arr.flags.writeable:
            arr = arr.view()
            arr.flags.writeable = False  # one compiled signature for bytes and bytearrays
        args = (self._tx_ring, self._tx_ring32, self._tx_st, self.cnt, arr)
        r = tpacket_v2_snd_one(*args)
        if r == 0:
            self.flush()
            r = tpacket_v2_snd_one(*args)
        return r != 0

    def flush(self) -> None:
        """Kick the transmit ring. Frames the kernel could not take yet (no skb memory, driver busy)
        stay queued and go at the next flush."""
        if self._tx_sock is None:
            raise PortError(self.name, "port is closed")
        st = self._tx_st
        last = ((st[TX_HEAD] - 1) % st[TX_NFRAMES]) * st[TX_FRAME_SIZE]
        if st[TX_PENDING] == 0 and self._tx_ring32[last >> 2] != TP_STATUS_SEND_REQUEST:
            return
        st[TX_PENDING] = 0
        try:
            self._tx_sock.send(b"", socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            if e.errno != errno.ENOBUFS:
                raise PortError(self.name, self._why(e.errno)) from None

    def counters(self) -> dict[str, int]:
        if self._rx_sock is not None:
            self._rx_missed += _TPACKET_STATS.unpack_from(
                self._rx_sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12))[1]  # fmt: skip
        c = self.cnt
        return {
            "rx_packets": int(c[C_RX_PACKETS]),
            "rx_bytes": int(c[C_RX_BYTES]),
            "rx_missed": self._rx_missed,
            "rx_gso_packets": int(c[C_RX_GSO_PACKETS]),
            "rx_gso_segments": int(c[C_RX_GSO_SEGMENTS]),
            "rx_csum_completed": int(c[C_RX_CSUM_COMPLETED]),
            "tx_packets": int(c[C_TX_PACKETS]),
            "tx_bytes": int(c[C_TX_BYTES]),
            "tx_errors": int(c[C_TX_ERRORS]),
        }

    def close(self) -> None:
        """Unmap the rings and close both sockets; safe to call twice."""
        for sock_attr, map_attr, arrays in (("_rx_sock", "_rx_map", ("_rx_ring", "_rx_ring32")),
                                            ("_tx_sock", "_tx_map", ("_tx_ring", "_tx_ring32"))):  # fmt: skip
            for a in arrays:
                self.__dict__.pop(a, None)
            m = getattr(self, map_attr)
            if m is not None:
                try:
                    m.close()
                except BufferError:  # a caller still holds a view of the ring; unmapped when it goes
                    pass
                setattr(self, map_attr, None)
            s = getattr(self, sock_attr)
            if s is not None:
                s.close()
                setattr(self, sock_attr, None)

    def __enter__(self) -> AfPacketPort:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- errors ----------------------------------------------------------------------------------

    def _check_rx_error(self) -> None:
        """packet_notifier sets sk_err = ENETDOWN when the link goes down or is unregistered, and
        poll reports POLLERR: the port is unusable until the gateway takes it up again. Asked at
        most every ERROR_CHECK_NS of an idle ring (a syscall)."""
        self._checked_ns = time.monotonic_ns()
        for _, ev in self._poll.poll(0):
            if ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                err = self._rx_sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                raise PortError(self.name, self._why(err or errno.ENETDOWN))

    def _why(self, err: int) -> str:
        """Tell a vanished interface from one that went down, asking through the port's own socket
        (it stays in the namespace it was opened in)."""
        what = os.strerror(err)
        if err in _GONE:
            req = bytearray(struct.pack("16si", b"", self.link.ifindex).ljust(40, b"\0"))
            try:
                fcntl.ioctl(self._rx_sock.fileno(), SIOCGIFNAME, req)
            except OSError as e:
                if e.errno == errno.ENODEV:
                    return f"interface {self.kernel_name} vanished ({what})"
            else:
                now = req[:IFNAMSIZ].rstrip(b"\0").decode(errors="replace")
                return f"link {now} went down ({what})"
        return f"packet socket error on {self.kernel_name}: {what}"


def blast(port: AfPacketPort, frame: bytes, seconds: float) -> int:
    """Send `frame` flat out for `seconds`: every transmit frame is filled once, then a compiled
    loop marks the free ones for sending again and the ring is kicked. Returns the frames queued
    (port.counters() counts them in tx_packets). A load generator for benchmarks; No Linux
    counterpart (pktgen's role, from user space)."""
    arr = np.frombuffer(frame, np.uint8)
    st, ring, ring32 = port._tx_st, port._tx_ring, port._tx_ring32
    n, fs, nframes = arr.shape[0], int(st[TX_FRAME_SIZE]), int(st[TX_NFRAMES])
    d = TX_DATA_OFF + int(st[TX_VNET_LEN])  # a vnet header of zeros before the frame, if any
    if not tx_size_ok(arr, 0, n, st[TX_MTU]) or n > fs - d:
        raise PortError(port.name, f"a {n}-byte frame does not fit the link (MTU {int(st[TX_MTU])}) or ring")
    deadline = time.monotonic() + 1.0
    while (ring32[:: fs // 4][:nframes] != TP_STATUS_AVAILABLE).any():  # frames still in flight
        port.flush()
        if time.monotonic() > deadline:
            raise PortError(port.name, "transmit ring does not drain")
    for f in range(nframes):
        ring[f * fs + TX_DATA_OFF : f * fs + d] = 0
        ring[f * fs + d : f * fs + d + n] = arr
        ring32[(f * fs + T2.tp_len) >> 2] = n + d - TX_DATA_OFF
    sent, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        sent += tpacket_v2_refill(ring32, st, port.cnt, n)
        port.flush()
    port.flush()
    return sent
