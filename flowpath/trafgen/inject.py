"""In-process injection: generated frames through a chain of gateways (sender -> gw1 -> gw2 -> ...
-> receiver), each a Worker, with receive statistics at the end.

No Linux counterpart (it plays the cables of the sunset -> west -> east -> sunrise chain of the pCPU
test report, 2025 Linux IPsec pCPU testing).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from flowpath.packet.batch import PacketBatch
from flowpath.trafgen.rxstats import rx_stats
from flowpath.trafgen.stream import Frames


@dataclass
class Hop:
    """One gateway of a chain: what it transmits on `oif` goes to the next hop (or the receiver).
    `iif` is where it receives from the previous hop; the first hop takes each frame's own port."""

    worker: object
    oif: str
    iif: str | None = None


@dataclass
class ChainResult:
    stats: dict  # rx_stats() of the receiver, port name "rx"
    received: list[tuple[int, bytes]] = field(default_factory=list)
    elsewhere: int = 0  # frames a hop sent out of another interface than its `oif`


def _ifindex(worker, name: str) -> int:
    return worker.net.link_by_name(name).ifindex


def inject(frames: Frames, hops: list[Hop], batch_size: int = 256, wall_clock: bool = False) -> ChainResult:
    """Send `frames` in transmit-time order through the hops, one batch at a time.

    Receive times are the packet clock (the frame's timestamp: gateways forward in zero packet time)
    or, with wall_clock, that plus the wall-clock time the batch took through the whole chain, so
    latency shows processing time (per batch, as a NIC's interrupt moderation would)."""
    if not hops:
        raise ValueError("a chain has at least one hop")
    first_iif = [_ifindex(hops[0].worker, p) for p in frames.ports]
    hop_iif = [None] + [_ifindex(h.worker, h.iif or h.oif) for h in hops[1:]]
    hop_oif = [_ifindex(h.worker, h.oif) for h in hops]
    slot = 1 << max(11, int(frames.caplen.max(initial=0) + 256).bit_length())
    batch = PacketBatch(batch_size, slot=slot)
    res = ChainResult({})
    for lo in range(0, len(frames), batch_size):
        hi = min(len(frames), lo + batch_size)
        t0 = time.perf_counter_ns()
        cur = [(first_iif[int(frames.port[i])], frames.frame(i), int(frames.ts_ns[i])) for i in range(lo, hi)]
        for k, hop in enumerate(hops):
            nxt = []
            for start in range(0, len(cur), batch_size):
                batch.clear()
                for ifx, frame, ts in cur[start : start + batch_size]:
                    batch.append(frame, ifx if k == 0 else hop_iif[k], ts)
                for ifx, frame, ts in hop.worker.rx_batch(batch):
                    if ifx == hop_oif[k]:
                        nxt.append((ifx, frame, ts))
                    else:
                        res.elsewhere += 1
            cur = nxt
        dt = time.perf_counter_ns() - t0 if wall_clock else 0
        res.received.extend((ts + dt, frame) for _, frame, ts in cur)
    sent = np.bincount(frames.stream_id, minlength=1) if len(frames) else np.zeros(0, np.int64)
    expected = {int(s): int(c) for s, c in enumerate(sent) if c}
    res.stats = rx_stats({"rx": res.received}, expected)
    return res
