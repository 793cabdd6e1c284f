"""PacketBatch: fixed-size slots plus parallel per-packet columns.

No Linux counterpart (closest: a NAPI poll's skb list; in DPDK/VPP a vector of mbufs).
A packet's bytes sit at data[i, head[i] : head[i] + len[i]]; the headroom before head[i] leaves space
to push outer headers (ESP, IPIP) without copying. Stages narrow the active set by writing `verdict`
(a `Reason`), never by compacting arrays, so an index stays valid from stage to stage.
"""

from __future__ import annotations

import numpy as np

from flowpath.packet.reason import Reason

DEFAULT_SLOT = 2048
DEFAULT_HEADROOM = 128
# A slot for a whole GSO super-packet (64 KiB of TCP payload and headers): head and len are uint16, and
# a multiple of 64 bytes keeps rows cache-line aligned. Only the live gateway's batch uses it.
GSO_SLOT = 0x10000 - 64
# gso word: 0 for an ordinary frame; a GSO super-packet holds gso_type << 16 | gso_size (virtio_net_hdr
# values, ports/gso.py), its L4 checksum CHECKSUM_PARTIAL (the field holds the pseudo-header sum)
GSO_SIZE_MASK = 0xFFFF
GSO_TYPE_SHIFT = 16


class PacketBatch:
    """A batch of up to `capacity` packets.

    data     uint8[capacity, slot]  slots
    head     uint16[capacity]       offset of the first byte (Ethernet header) in the slot
    len      uint16[capacity]       frame length in bytes
    iif      int32[capacity]        input ifindex
    oif      int32[capacity]        output ifindex (0 = none yet)
    verdict  uint8[capacity]        Reason; FLOW_FORWARD (0) = still on the fast path
    flow     int32[capacity]        flowtable entry index of a hit, -1 otherwise
    encap    uint32[capacity]       flowtable key's encap word: 0, or the SA index + 1 of a packet that
                                    ESP input decrypted at early ingress (flowtable/xfrm.py)
    gso      uint32[capacity]       0, or gso_type << 16 | gso_size of a GSO super-packet kept whole
                                    (skb_shinfo's gso_type/gso_size; its checksum is partial)
    ts_ns    int64[capacity]        packet time (capture time in replay)
    n        number of packets in use
    cols     (data, head, len, iif, oif, verdict, flow, encap, gso): the arguments of the compiled stages
    """

    def __init__(self, capacity: int = 256, slot: int = DEFAULT_SLOT, headroom: int = DEFAULT_HEADROOM):
        if headroom >= slot:
            raise ValueError("headroom must be smaller than the slot")
        if slot > 0xFFFF:
            raise ValueError(f"slot {slot} too large: head and len are uint16 (at most 65535 bytes)")
        self.capacity, self.slot, self.headroom = capacity, slot, headroom
        self.data = np.zeros((capacity, slot), np.uint8)
        self.head = np.zeros(capacity, np.uint16)
        self.len = np.zeros(capacity, np.uint16)
        self.iif = np.zeros(capacity, np.int32)
        self.oif = np.zeros(capacity, np.int32)
        self.verdict = np.zeros(capacity, np.uint8)
        self.flow = np.full(capacity, -1, np.int32)
        self.encap = np.zeros(capacity, np.uint32)
        self.gso = np.zeros(capacity, np.uint32)
        self.ts_ns = np.zeros(capacity, np.int64)
        self.slow_idx = np.zeros(capacity, np.int64)  # the packets the classic path takes (EarlyIngress.run)
        self.n = 0
        # The columns in the order the compiled stages take them (they never change, so the tuple
        # is built once: a poll passes it on without a Python attribute load per column).
        self.cols = (self.data, self.head, self.len, self.iif, self.oif, self.verdict, self.flow, self.encap,
                     self.gso)  # fmt: skip
        self.scratch: dict[str, object] = {}  # per-batch work arrays of the stages, allocated on first use

    @property
    def max_frame(self) -> int:
        """The largest frame a slot holds after the headroom."""
        return self.slot - self.headroom

    def clear(self) -> None:
        self.n = 0

    def append(self, frame: bytes | bytearray | memoryview, iif: int, ts_ns: int) -> int:
        """Copy one frame in; return its index. A frame over max_frame is kept truncated with
        verdict PKT_TOO_BIG so that it is counted, not lost."""
        i = self.n
        if i >= self.capacity:
            raise IndexError("batch full")
        n = len(frame)
        h = self.headroom
        if n > self.max_frame:
            self.verdict[i] = Reason.PKT_TOO_BIG
            n = self.max_frame
        else:
            self.verdict[i] = Reason.FLOW_FORWARD
        self.data[i, h : h + n] = np.frombuffer(frame, np.uint8, n)
        self.head[i], self.len[i] = h, n
        self.iif[i], self.oif[i], self.flow[i], self.ts_ns[i] = iif, 0, -1, ts_ns
        self.encap[i] = self.gso[i] = 0
        self.n = i + 1
        return i

    def frame(self, i: int) -> np.ndarray:
        """A writable view of packet i's bytes."""
        h = int(self.head[i])
        return self.data[i, h : h + int(self.len[i])]

    def frame_bytes(self, i: int) -> bytes:
        return self.frame(i).tobytes()

    def __len__(self) -> int:
        return self.n
