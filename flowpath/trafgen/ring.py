"""The live generator's and receiver's packet sockets: one TPACKET_V2 transmit ring, or one TPACKET_V3
receive ring with software receive timestamps, on one interface.

Linux: net/packet/af_packet.c (packet_set_ring, tpacket_snd, tpacket_rcv › tpacket_get_timestamp),
net/core/dev.c › net_timestamp_check. The ring layouts and the frame claim/commit steps are
ports/tpacket.py's; this module only opens sockets shaped for traffic generation: a gateway port
(ports/af_packet.py) opens both directions and a vnet header, which a generator does not want
(every frame it would receive on its own link costs the sending CPU a copy).
Receive timestamps: tpacket_rcv stamps tp_sec/tp_nsec from skb->tstamp, which the stack sets
(CLOCK_REALTIME, in netif_rx / netif_receive_skb) only while some socket asked for timestamps;
otherwise the ring falls back to a jiffies-coarse clock. So the receive socket sets SO_TIMESTAMPNS,
and each packet's TP_STATUS_TS_SOFTWARE bit says which it got.
"""

from __future__ import annotations

import errno
import mmap
import socket
import struct
import sys

import numpy as np

from flowpath.errors import UsageError
from flowpath.ports.af_packet import (
    ETH_P_ALL,
    PACKET_IGNORE_OUTGOING,
    PACKET_LOSS,
    PACKET_QDISC_BYPASS,
    PACKET_RX_RING,
    PACKET_STATISTICS,
    PACKET_TX_RING,
    PACKET_VERSION,
    PAGE_SIZE,
    SO_SNDBUFFORCE,
    SOL_PACKET,
    TPACKET_V2,
    TPACKET_V3,
)
from flowpath.ports.kernel_if import kernel_link
from flowpath.ports.tpacket import N_COUNTERS, RX_BLOCK_SIZE, RX_NBLOCKS, TX_FRAME_SIZE, TX_MTU, TX_NFRAMES

SO_TIMESTAMPNS = 35  # include/uapi/asm-generic/socket.h (SO_TIMESTAMPNS_OLD)
RETIRE_BLK_TOV_MS = 1
_TPACKET_STATS_V3 = struct.Struct("III")


def _link(ifname: str):
    """The interface, up, or a UsageError naming what is wrong (exit 2)."""
    if sys.byteorder != "little":
        raise UsageError("AF_PACKET rings are read as little-endian; this host is big-endian")
    link = kernel_link(ifname)
    if link is None:
        raise UsageError(f"no interface {ifname!r} in this network namespace")
    if not link.up:
        raise UsageError(f"interface {ifname} is down (ip link set dev {ifname} up)")
    return link


def pow2_at_least(n: int, floor: int) -> int:
    p = floor
    while p < n:
        p *= 2
    return p


class TxRing:
    """A TPACKET_V2 transmit ring of `frames` frames of `frame_size` bytes on `ifname`, with
    PACKET_QDISC_BYPASS (straight to the driver) and PACKET_LOSS (a refused frame is skipped).
    ring/ring32/st/cnt are what ports/tpacket.py's tx_frame_claim/tx_frame_commit walk."""

    def __init__(self, ifname: str, frames: int = 4096, frame_size: int = 2048):
        self.link = _link(ifname)
        self.ifname, self._map = ifname, None
        s = self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        try:
            s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
            s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
            s.setsockopt(SOL_PACKET, PACKET_LOSS, 1)
            block = pow2_at_least(frame_size, PAGE_SIZE)
            per_block = block // frame_size
            nblocks = -(-frames // per_block)
            s.setsockopt(SOL_PACKET, PACKET_TX_RING,
                         struct.pack("IIII", block, nblocks, frame_size, per_block * nblocks))  # fmt: skip
            size = block * nblocks
            self._map = mmap.mmap(s.fileno(), size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            try:  # the ring bounds what is in flight, not the send buffer
                s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, size * 2)
            except PermissionError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size * 2)
            s.bind((ifname, 0))  # protocol 0: this socket receives nothing
        except OSError as e:
            self.close()
            raise UsageError(f"cannot open a transmit ring on {ifname}: {e.strerror}") from None
        self.ring = np.frombuffer(self._map, np.uint8)
        self.ring32 = self.ring.view(np.uint32)
        self.st = np.zeros(8, np.int64)
        self.st[TX_NFRAMES], self.st[TX_FRAME_SIZE], self.st[TX_MTU] = (
            per_block * nblocks,
            frame_size,
            self.link.mtu,
        )
        self.cnt = np.zeros(N_COUNTERS, np.int64)

    def kick(self) -> None:
        """send(): the kernel transmits every frame marked TP_STATUS_SEND_REQUEST (tpacket_snd)."""
        try:
            self.sock.send(b"", socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            if e.errno != errno.ENOBUFS:
                raise UsageError(f"transmit on {self.ifname}: {e.strerror}") from None

    def in_flight(self) -> int:
        """Frames not yet given back by the kernel (status other than TP_STATUS_AVAILABLE)."""
        fs, n = int(self.st[TX_FRAME_SIZE]), int(self.st[TX_NFRAMES])
        return int(np.count_nonzero(self.ring32[:: fs // 4][:n]))

    def close(self) -> None:
        self.__dict__.pop("ring", None)
        self.__dict__.pop("ring32", None)
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                pass
            self._map = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class RxRing:
    """A TPACKET_V3 receive ring of `blocks` x `block_size` on `ifname` (all protocols, not our own
    transmits), with software receive timestamps (SO_TIMESTAMPNS) and `promisc` optional."""

    def __init__(self, ifname: str, blocks: int = 128, block_size: int = 1 << 18, promisc: bool = True):
        self.link = _link(ifname)
        self.ifname, self._map = ifname, None
        # protocol 0 until the ring is ready, as AfPacketPort._open_rx does
        s = self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        try:
            s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)  # net_enable_timestamp: skb->tstamp is set
            s.setsockopt(SOL_PACKET, PACKET_RX_RING, struct.pack(
                "IIIIIII", block_size, blocks, 2048, block_size // 2048 * blocks, RETIRE_BLK_TOV_MS, 0, 0))  # fmt: skip
            self._map = mmap.mmap(
                s.fileno(), blocks * block_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
            )
            s.bind((ifname, ETH_P_ALL))
            if promisc:  # PACKET_ADD_MEMBERSHIP, PACKET_MR_PROMISC: frames for any MAC
                s.setsockopt(SOL_PACKET, 1, struct.pack("iHH8s", self.link.ifindex, 1, 0, b""))
            s.getsockopt(SOL_PACKET, PACKET_STATISTICS, _TPACKET_STATS_V3.size)  # count from now on
        except OSError as e:
            self.close()
            raise UsageError(f"cannot open a receive ring on {ifname}: {e.strerror}") from None
        self.ring = np.frombuffer(self._map, np.uint8)
        self.ring32 = self.ring.view(np.uint32)
        self.st = np.zeros(8, np.int64)
        self.st[RX_NBLOCKS], self.st[RX_BLOCK_SIZE] = blocks, block_size
        self.drops = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def ring_drops(self) -> int:
        """Frames the kernel dropped because the ring was full (tp_drops), accumulated."""
        self.drops += _TPACKET_STATS_V3.unpack(self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS,
                                                                    _TPACKET_STATS_V3.size))[1]  # fmt: skip
        return self.drops

    close = TxRing.close
