"""`flowpath rxstats --live IF --duration S`: frames received on an interface through an AF_PACKET
receive ring, measured with the capture mode's statistics (rxstats.stats_table).

No Linux counterpart (TRex's rx side: per-port counters and flow-stats/latency streams).
A compiled loop (liverx_walk) reads each packet's tpacket3_hdr straight from the ring: the receive
timestamp tp_sec/tp_nsec (CLOCK_REALTIME, set by the stack when the frame arrived: ring.py), the
frame's length, and the signature found by the same scan as signature.sig_find; it appends one row
per frame to columns and gives each block back. No frame is copied. Latency is that timestamp minus
the signature's send time, which the live generator stamps from CLOCK_REALTIME too: both ends on one
machine, no hardware timestamps needed. Loss comes from the signatures' sequence numbers (highest +
1 expected, as the capture mode without --tx), so a stream's tail loss is not seen. Frames the ring
had no room for are counted by the kernel (tp_drops: `ring_drops`) and show up as loss as well.
Memory: 40 bytes per received frame, at most MAX_ROWS frames (more are counted in `not_recorded`).
"""

from __future__ import annotations

import select
import time

import numpy as np
from numba import njit

from flowpath.ports.tpacket import (
    BD,
    RX_BLOCK,
    RX_BLOCK_SIZE,
    RX_NBLOCKS,
    T3,
    TP_STATUS_KERNEL,
    TP_STATUS_USER,
    TP_STATUS_VLAN_VALID,
    smp_mb,
)
from flowpath.trafgen.clock import NSEC_PER_SEC
from flowpath.trafgen.imix import ETH_FCS_LEN
from flowpath.trafgen.rxstats import stats_table
from flowpath.trafgen.signature import SIG_LEN, SIG_MAGIC, SIG_SCAN_FROM

TP_STATUS_TS_SOFTWARE = 1 << 29  # include/uapi/linux/if_packet.h
# rows int64[cap, N_COLS]
R_RX_TS, R_WIRE, R_STREAM, R_SEQ, R_TX_TS = range(5)
N_COLS = 5
# cnt int64[4]
K_ROWS, K_COARSE_TS, K_NOT_RECORDED, K_MAX_ROWS = range(4)
MAX_ROWS = 1 << 24
POLL_MS = 10


@njit(cache=True, nogil=True)
def _be(b, off, n):
    v = np.int64(0)
    for j in range(n):
        v = (v << 8) | np.int64(b[off + j])
    return v


@njit(cache=True, nogil=True)
def _sig_scan(ring, mac, flen):
    """Offset of the first signature magic in the frame ring[mac : mac + flen] (as sig_find), or -1."""
    for i in range(mac + SIG_SCAN_FROM, mac + flen - SIG_LEN + 1):
        if ring[i] == 0xF1 and _be(ring, i, 4) == SIG_MAGIC:
            return i
    return -1


@njit(cache=True, nogil=True)
def liverx_walk(ring, ring32, st, rows, cnt):
    """Append a row per frame of every ready block of the TPACKET_V3 ring and give the block back;
    stop when no block is ready or rows has no room for a whole block. Returns the rows added.

    ring uint8[size], ring32 uint32[size / 4], st int64[8]: an RxRing (RX_* position and shape)
    rows int64[cap, N_COLS]: R_* columns, cnt[K_ROWS] rows in use; cnt int64[4] the K_* counters and
    K_MAX_ROWS, the most rows the caller will allocate
    """
    bsize = st[RX_BLOCK_SIZE]
    n0 = cnt[K_ROWS]
    while True:
        boff = st[RX_BLOCK] * bsize
        if (ring32[(boff + BD.block_status) >> 2] & TP_STATUS_USER) == 0:
            break
        smp_mb()  # the block's packets are read after its status
        num = ring32[(boff + BD.num_pkts) >> 2]
        if cnt[K_ROWS] + num > rows.shape[0] and rows.shape[0] < cnt[K_MAX_ROWS]:
            break  # the caller grows rows first; at K_MAX_ROWS the rest is counted, not recorded
        p = boff + ring32[(boff + BD.offset_to_first_pkt) >> 2]
        for _ in range(num):
            if p < boff + BD.size or p + T3.size > boff + bsize:
                break  # a bad offset: skip the rest of the block
            status = ring32[(p + T3.tp_status) >> 2]
            mac = p + (np.int64(ring32[(p + T3.tp_mac) >> 2]) & 0xFFFF)
            flen = max(0, min(np.int64(ring32[(p + T3.tp_snaplen) >> 2]), boff + bsize - mac))
            wire = (
                np.int64(ring32[(p + T3.tp_len) >> 2])
                + ETH_FCS_LEN
                + (4 if status & TP_STATUS_VLAN_VALID else 0)
            )
            if (status & TP_STATUS_TS_SOFTWARE) == 0:
                cnt[K_COARSE_TS] += 1
            k = cnt[K_ROWS]
            if k >= rows.shape[0]:
                cnt[K_NOT_RECORDED] += 1
            else:
                rows[k, R_RX_TS] = (
                    np.int64(ring32[(p + T3.tp_sec) >> 2]) * NSEC_PER_SEC + ring32[(p + T3.tp_nsec) >> 2]
                )
                rows[k, R_WIRE] = wire
                i = _sig_scan(ring, mac, flen)
                if i >= 0:
                    rows[k, R_STREAM] = _be(ring, i + 4, 2)
                    rows[k, R_SEQ] = _be(ring, i + 6, 4)
                    rows[k, R_TX_TS] = _be(ring, i + 10, 8)
                else:
                    rows[k, R_STREAM], rows[k, R_SEQ], rows[k, R_TX_TS] = -1, 0, 0
                cnt[K_ROWS] = k + 1
            p += ring32[(p + T3.tp_next_offset) >> 2]
        smp_mb()  # every read of the block before it goes back
        ring32[(boff + BD.block_status) >> 2] = TP_STATUS_KERNEL
        st[RX_BLOCK] = (st[RX_BLOCK] + 1) % st[RX_NBLOCKS]
    return cnt[K_ROWS] - n0


def receive_live(ifname: str, duration_s: float, names: dict[int, str] | None = None,
                 max_rows: int = MAX_ROWS) -> dict:  # fmt: skip
    """Receive on `ifname` for `duration_s` (or until SIGINT) and return stats_table's statistics of
    what arrived, port named `ifname`, plus `live`: interface, duration_s, interrupted, ring_drops,
    coarse_timestamps (frames the ring stamped without skb->tstamp), not_recorded."""
    from flowpath.errors import UsageError
    from flowpath.trafgen.ring import RxRing

    if not duration_s > 0:
        raise UsageError("--duration must be positive")
    rows = np.zeros((1 << 16, N_COLS), np.int64)
    cnt = np.zeros(4, np.int64)
    cnt[K_MAX_ROWS] = max_rows
    # compile (or load) the walker before the socket opens: frames a compile would leave in the ring
    # meanwhile could overflow it (an empty in-memory ring of the same types: its block is the kernel's)
    blank = np.zeros(1 << 12, np.uint8)
    st = np.zeros(8, np.int64)
    st[RX_BLOCK_SIZE], st[RX_NBLOCKS] = blank.shape[0], 1
    liverx_walk(blank, blank.view(np.uint32), st, rows, cnt)
    rx = RxRing(ifname)
    try:
        poller = select.poll()
        poller.register(rx.fileno(), select.POLLIN)
        interrupted = False
        t0 = time.monotonic()
        end = t0 + duration_s
        try:
            while True:
                liverx_walk(rx.ring, rx.ring32, rx.st, rows, cnt)
                if cnt[K_ROWS] + rx.st[RX_BLOCK_SIZE] // 64 > rows.shape[0] and rows.shape[0] < max_rows:
                    rows = np.concatenate([rows, np.zeros((min(rows.shape[0], max_rows - rows.shape[0]), N_COLS),
                                                          np.int64)])  # fmt: skip
                left = end - time.monotonic()
                if left <= 0:
                    break
                poller.poll(min(POLL_MS, max(1, int(left * 1000))))
        except KeyboardInterrupt:
            interrupted = True
        elapsed = time.monotonic() - t0
        liverx_walk(rx.ring, rx.ring32, rx.st, rows, cnt)  # what is already in the ring
        drops = rx.ring_drops()
    finally:
        rx.close()
    r = rows[: cnt[K_ROWS]]
    res = stats_table([ifname], np.zeros(len(r), np.int64), *(np.ascontiguousarray(r[:, c]) for c in range(N_COLS)),
                      None, names)  # fmt: skip
    res["live"] = {"interface": ifname, "duration_s": elapsed, "interrupted": interrupted, "ring_drops": drops,
                   "coarse_timestamps": int(cnt[K_COARSE_TS]), "not_recorded": int(cnt[K_NOT_RECORDED]),
                   "clock": "rx: the ring's tp_sec/tp_nsec (CLOCK_REALTIME); tx: the signature"}  # fmt: skip
    return res
