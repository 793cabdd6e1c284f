"""Seed 002, "Flowtable bypass (4)": the classic forwarding path against the flowtable, one core,
small frames, established flows, side by side in one run (Linux: 1.85 vs 5.16 Mpps, 2.75x).

No Linux counterpart (pktgen_bench_xmit_mode_netif_receive.sh in the seed).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from flowpath import __version__
from flowpath.bench.setup import (
    LAN_IF,
    NET,
    RULES,
    WAN_IF,
    PoolState,
    PortFeed,
    flow_frames,
    pool,
    time_pool,
    time_port,
)
from flowpath.packet.batch import PacketBatch

# Packets per poll. A poll pays a few microseconds of Python and of crossing into numba whatever its
# size, and its frames (256-byte slots) should stay in L2 with the flowtable's hot lines; measured on
# a 2-vCPU VM (port batches, Mpps at 1 / 100000 flows): 256 23-25 / 15-16, 512 27 / 17,
# 1024 30-31 / 18-19, 2048 33 / 16-18, 4096 31 / 16-17.
BATCH = 1024
EST_TS_NS = 1_000_000_000
FCS_LEN = 4
RUN_TS_NS = 2_000_000_000


def _establish(worker, up: list[bytes], down: list[bytes], batch_size: int) -> None:
    """Each flow's first packet, its reply (the flow is offloaded then), and one more packet."""
    seq = [(f, LAN_IF) for f in up]
    seq += [(f, WAN_IF) for f in down]
    seq += [(f, LAN_IF) for f in up]
    b = PacketBatch(batch_size)
    for k in range(0, len(seq), batch_size):
        b.clear()
        for f, iif in seq[k : k + batch_size]:
            b.append(f, iif, EST_TS_NS)
        worker.poll(b)


def classic_vs_flowtable(
    frame_size: int = 128,
    flows: int = 1000,
    *,
    quick: bool = False,
    batch_size: int = BATCH,
    packets: int | None = None,
    classic_packets: int | None = None,
    reps: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Measure both paths on the same gateway and traffic; return the results as a JSON-able dict.

    flowtable_mpps: Worker.poll over batches that all hit (compiled hook, bulk transmit groups and the
    per-batch counters), the whole pool restored first so that each batch comes cold from memory;
    flowtable_mpps_warm: the same packets through one port batch refilled before each poll
    (setup.PortFeed: the frames in the caches, as a port's copy leaves them, and the flowtable not
    swept out of them by the pool); kernel_mpps: the compiled hook alone (cold); classic_mpps:
    Worker.poll with the flowtable off (every packet through the Python slow path).
    """
    from flowpath.config.ipbatch import parse_network
    from flowpath.config.nft import parse_ruleset
    from flowpath.datapath import Worker
    from flowpath.flowtable import nf_flow_offload_hook

    say = progress or (lambda _msg: None)
    reps = reps or (3 if quick else 5)
    packets = packets or (1 << 17 if quick else 1 << 20)
    classic_packets = classic_packets or (4096 if quick else 16384)
    net, rules = parse_network(NET, "<bench>"), parse_ruleset(RULES, "<bench>")
    say(f"building {flows} flows of {frame_size}-byte frames")
    up, down = flow_frames(flows, frame_size - FCS_LEN)  # RFC 2544 sizes count the FCS; memory holds the rest
    fast, classic = Worker(net, rules), Worker(net, rules, flowtable=False)
    say("establishing flows (slow path)")
    _establish(fast, up, down, batch_size)
    _establish(classic, up, down, batch_size)
    ft = next(iter(fast.flowtables.values()))[0]
    if len(ft) != flows:
        raise RuntimeError(f"expected {flows} offloaded flows after setup, found {len(ft)}")

    fast_pool = PoolState(pool(up, LAN_IF, packets, batch_size))
    t0 = time.perf_counter()
    fast_pool.restore(RUN_TS_NS)
    fast.poll(fast_pool.batches[0])  # first call: numba compile or cache load
    compile_s = time.perf_counter() - t0
    say("flowtable path")
    t_fast = time_pool(fast.poll, fast_pool, reps, RUN_TS_NS)
    hits = sum(int(np.count_nonzero(b.verdict[: b.n] == 0)) for b in fast_pool.batches)
    say("flowtable path, port batch")
    fp0 = fast.stats.fastpath_packets
    t_warm = time_port(fast.poll, PortFeed(up, LAN_IF, packets, batch_size), reps, RUN_TS_NS)
    hits_warm = (fast.stats.fastpath_packets - fp0) / len(t_warm)
    say("compiled hook alone")
    t_kernel = time_pool(lambda b: nf_flow_offload_hook(b, ft, RUN_TS_NS, True), fast_pool, reps, RUN_TS_NS)
    say("classic path")
    classic_pool = PoolState(pool(up, LAN_IF, classic_packets, batch_size, seed=2))
    t_classic = time_pool(classic.poll, classic_pool, max(1, reps // 2), RUN_TS_NS)

    def mpps(n: int, ts: list[float]) -> tuple[float, float]:
        return n / min(ts) / 1e6, n / float(np.median(ts)) / 1e6

    f_best, f_med = mpps(packets, t_fast)
    w_best, w_med = mpps(packets, t_warm)
    k_best, k_med = mpps(packets, t_kernel)
    c_best, c_med = mpps(classic_packets, t_classic)
    per_entry = sum(ft.entry_bytes().values())
    return {
        "scenario": "classic-vs-flowtable",
        "flowpath_version": __version__,
        "frame_size": frame_size,
        "frame_size_includes_fcs": True,
        "flows": flows,
        "cores": 1,
        "batch_size": batch_size,
        "packets": packets,
        "classic_packets": classic_packets,
        "repetitions": reps,
        "classic_mpps": round(c_best, 4),
        "classic_mpps_median": round(c_med, 4),
        "flowtable_mpps": round(f_best, 3),
        "flowtable_mpps_median": round(f_med, 3),
        "flowtable_mpps_warm": round(w_best, 3),
        "flowtable_mpps_warm_median": round(w_med, 3),
        "kernel_mpps": round(k_best, 3),
        "kernel_mpps_median": round(k_med, 3),
        "ratio": round(f_best / c_best, 2),
        "flowtable_gbps_l2": round(f_best * frame_size * 8 / 1e3, 3),
        "fastpath_hit_fraction": round(min(hits, hits_warm) / packets, 4),  # of both timed paths
        "first_call_s": round(compile_s, 3),
        "bytes_per_flow_entry": round(per_entry, 1),
        "bytes_per_flow": round(2 * per_entry, 1),
    }
