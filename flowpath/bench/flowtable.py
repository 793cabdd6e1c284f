"""The flowtable workshop slides' "Flowtable bypass (4)": the classic forwarding path against the
flowtable, one core, small frames, established flows, side by side in one run (Linux: 1.85 vs 5.16
Mpps, 2.75x).

No Linux counterpart (pktgen_bench_xmit_mode_netif_receive.sh in the slides).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from flowpath import __version__
from flowpath.bench.scenario import BenchOptions, Progress, ScenarioResult, no_ipsec_options
from flowpath.bench.setup import (
    LAN_IF,
    NET,
    RULES,
    WAN_IF,
    PoolState,
    PortFeed,
    flow_frames,
    fresh_interpreter_times,
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
# the flowtable workshop slides' "Flowtable bypass (4)": Mpps per CPU and the ratio they report
LINUX_CLASSIC_MPPS, LINUX_FLOWTABLE_MPPS, LINUX_RATIO = 1.85, 5.16, 2.75


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

    All through one port batch refilled before each poll (setup.PortFeed: the frames in the caches,
    as a port's copy leaves them): flowtable_mpps, Worker.poll over batches that all hit (compiled
    hook, bulk transmit groups and the per-batch counters); kernel_mpps, the compiled hook alone;
    classic_mpps, Worker.poll with the flowtable off (every packet through the classic path: its
    compiled lane, flowpath/inet/classic_lane.py); python_classic_mpps, the same with the lane off
    (the Python classic path, per packet: what classic_mpps was before the lane).
    flowtable_mpps_cold: Worker.poll over a pool of distinct batches restored first, so that each
    comes cold from memory (and the pool, larger than the caches, sweeps the flowtable out of them).
    """
    from flowpath.config.ipbatch import parse_network
    from flowpath.config.nft import parse_ruleset
    from flowpath.datapath import Worker
    from flowpath.flowtable import nf_flow_offload_hook

    say = progress or (lambda _msg: None)
    reps = reps or (3 if quick else 5)
    packets = packets or (1 << 17 if quick else 1 << 20)
    classic_packets = classic_packets or (1 << 16 if quick else 1 << 18)
    python_packets = 2048 if quick else 8192
    net, rules = parse_network(NET, "<bench>"), parse_ruleset(RULES, "<bench>")
    say(f"building {flows} flows of {frame_size}-byte frames")
    up, down = flow_frames(flows, frame_size - FCS_LEN)  # RFC 2544 sizes count the FCS; memory holds the rest
    fast, classic = Worker(net, rules), Worker(net, rules, flowtable=False)
    python = Worker(net, rules, flowtable=False, classic_lane=False)
    say("establishing flows (slow path)")
    for w in (fast, classic, python):
        _establish(w, up, down, batch_size)
    ft = next(iter(fast.flowtables.values()))[0]
    if len(ft) != flows:
        raise RuntimeError(f"expected {flows} offloaded flows after setup, found {len(ft)}")

    feed = PortFeed(up, LAN_IF, packets, batch_size)
    say("flowtable path")
    fp0 = fast.stats.fastpath_packets
    t_fast = time_port(fast.poll, feed, reps, RUN_TS_NS)
    hits = (fast.stats.fastpath_packets - fp0) / len(t_fast)
    say("compiled hook alone")
    t_kernel = time_port(lambda b: nf_flow_offload_hook(b, ft, RUN_TS_NS, True), feed, reps, RUN_TS_NS)
    say("classic path")
    lane0 = classic.stats.lane_packets
    t_classic = time_port(classic.poll, PortFeed(up, LAN_IF, classic_packets, batch_size, seed=2), reps,
                          RUN_TS_NS)  # fmt: skip
    lane = (classic.stats.lane_packets - lane0) / len(t_classic)
    say("Python classic path")
    t_python = time_port(python.poll, PortFeed(up, LAN_IF, python_packets, batch_size, seed=2),
                         max(1, reps // 2), RUN_TS_NS)  # fmt: skip
    say("flowtable path, cold batches")
    cold_pool = PoolState(pool(up, LAN_IF, packets, batch_size))
    fp0 = fast.stats.fastpath_packets
    t_cold = time_pool(fast.poll, cold_pool, reps, RUN_TS_NS)
    hits_cold = (fast.stats.fastpath_packets - fp0) / len(t_cold)

    def mpps(n: int, ts: list[float]) -> tuple[float, float]:
        return n / min(ts) / 1e6, n / float(np.median(ts)) / 1e6

    f_best, f_med = mpps(packets, t_fast)
    d_best, d_med = mpps(packets, t_cold)
    k_best, k_med = mpps(packets, t_kernel)
    c_best, c_med = mpps(classic_packets, t_classic)
    p_best, p_med = mpps(python_packets, t_python)
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
        "classic_lane_fraction": round(lane / classic_packets, 4),  # of the timed classic packets
        "python_packets": python_packets,
        "python_classic_mpps": round(p_best, 4),
        "python_classic_mpps_median": round(p_med, 4),
        "lane_speedup": round(c_best / p_best, 1),
        "flowtable_mpps": round(f_best, 3),
        "flowtable_mpps_median": round(f_med, 3),
        "flowtable_mpps_cold": round(d_best, 3),
        "flowtable_mpps_cold_median": round(d_med, 3),
        "kernel_mpps": round(k_best, 3),
        "kernel_mpps_median": round(k_med, 3),
        "ratio": round(f_best / c_best, 2),
        # the flowtable workshop slides' measurement, one core of Linux: 1.85 vs 5.16 Mpps
        "linux_classic_mpps": LINUX_CLASSIC_MPPS,
        "linux_flowtable_mpps": LINUX_FLOWTABLE_MPPS,
        "linux_ratio": LINUX_RATIO,
        "flowtable_gbps_l2": round(f_best * frame_size * 8 / 1e3, 3),
        "fastpath_hit_fraction": round(min(hits, hits_cold) / packets, 4),  # of both timed Worker paths
        "bytes_per_flow_entry": round(per_entry, 1),
        "bytes_per_flow": round(2 * per_entry, 1),
    }


def first_forward() -> None:
    """Build the benchmark gateway, offload one flow and forward one packet on the flowtable path
    (what compile_times times in a fresh interpreter)."""
    from flowpath.config.ipbatch import parse_network
    from flowpath.config.nft import parse_ruleset
    from flowpath.datapath import Worker

    w = Worker(parse_network(NET, "<bench>"), parse_ruleset(RULES, "<bench>"))
    up, down = flow_frames(1, 124)
    _establish(w, up, down, 4)
    before = w.stats.fastpath_packets
    w.poll(PortFeed(up, LAN_IF, 1, 1).fill(0, RUN_TS_NS))
    if w.stats.fastpath_packets != before + 1:
        raise RuntimeError("the packet did not take the flowtable path")


def compile_times() -> dict:
    """Seconds from a fresh interpreter (imports done) to the first packet forwarded on the flowtable
    path: with an empty numba cache (every kernel compiled: cold) and with the cache that run wrote."""
    return fresh_interpreter_times("from flowpath.bench.flowtable import first_forward", "first_forward()")


class ClassicVsFlowtableResult(ScenarioResult):
    """`classic-vs-flowtable` results: the first flow count's figures at the top of the JSON (and the
    compile times, when measured), every flow count under "results"; one bar chart."""

    def __init__(self, results: list[dict], compiled: dict):
        super().__init__({**results[0], **compiled, "results": results})
        self.results, self.compiled = results, compiled

    def table(self):
        from rich.table import Table

        r0, compiled = self.results[0], self.compiled
        caption = "port batches; cold: a pool of batches restored first (frames and flowtable from memory)"
        if compiled:
            caption += (f"; first packet from a fresh interpreter: {compiled['compile_cold_s']:.1f} s compiling, "
                        f"{compiled['compile_cached_s']:.2f} s from numba's cache")  # fmt: skip
        caption += f"; Linux (the flowtable workshop slides): {r0['linux_ratio']:.2f}x"
        t = Table("flows", "classic Mpps", "Python classic", "flowtable Mpps", "cold", "hook alone", "ratio",
                  "Gbit/s (L2)", "B/flow", title=f"classic-vs-flowtable, {r0['frame_size']}-byte frames, 1 core, "
                  f"batch {r0['batch_size']}", caption=caption)  # fmt: skip
        for r in self.results:
            t.add_row(f"{r['flows']:,}", f"{r['classic_mpps']:.3f}", f"{r['python_classic_mpps']:.4f}",
                      f"{r['flowtable_mpps']:.2f}", f"{r['flowtable_mpps_cold']:.2f}", f"{r['kernel_mpps']:.2f}",
                      f"{r['ratio']:.2f}x", f"{r['flowtable_gbps_l2']:.2f}", f"{r['bytes_per_flow']:.0f}")  # fmt: skip
        return t

    def plot(self, path):
        from flowpath.bench.plot import plot_classic_vs_flowtable

        plot_classic_vs_flowtable(self.results, path)
        return [path]


class ClassicVsFlowtable:
    """`flowpath bench classic-vs-flowtable`: compile times first (not with --quick), then each flow
    count."""

    name = "classic-vs-flowtable"

    def check(self, opts: BenchOptions) -> None:
        no_ipsec_options(opts)

    def run(self, opts: BenchOptions, progress: Progress) -> ClassicVsFlowtableResult:
        compiled = {}
        if not opts.quick:  # every kernel the first packet needs, compiled in a fresh interpreter
            progress.start("numba compile times (fresh interpreters)")
            compiled = {f"compile_{k}": round(v, 3) for k, v in compile_times().items()}
            progress.done(None)
        results = []
        for n in opts.flows or (1000,):
            progress.start(f"{n} flows")
            results.append(classic_vs_flowtable(opts.frame_size or 64, n, quick=opts.quick,
                                                batch_size=opts.batch_size or BATCH, progress=progress.say))  # fmt: skip
            progress.done()
        return ClassicVsFlowtableResult(results, compiled)
