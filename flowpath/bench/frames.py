"""Frame sizes: forwarding rate of 64, 128, 512 and 1518-byte frames and CSIT IMIX (the mix of FD.io
CSIT, VPP's performance test suite) at a fixed flow count, in Mpps and Gbps, next to the Ethernet line rates (RFC 2544 §9.1 frame sizes).

No Linux counterpart. Conventions and method as flowpath/bench/bulking.py: sizes are wire frames with
FCS; L1 Gbps adds 20 bytes of preamble, SFD and inter-frame gap per frame, which is what a line rate
limits, so `line_rate_mpps` of a size is line_bps / ((size + 20) * 8).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flowpath.bench.bulking import (
    POOL_PACKETS,
    RUN_TS_NS,
    bench_stream,
    conditions,
    establish,
    gateway,
    rates,
    time_passes,
    traffic_pool,
)  # fmt: skip
from flowpath.bench.scenario import BenchOptions, Progress, ScenarioResult, no_ipsec_options
from flowpath.errors import UsageError
from flowpath.trafgen.imix import ETH_L1_OVERHEAD, mean_size

SIZES = (64, 128, 512, 1518, "imix")
LINE_RATES_BPS = {"10GbE": 10e9, "25GbE": 25e9, "100GbE": 100e9}


def line_rate_mpps(size, line_bps: float) -> float:
    """Frames per second (in millions) a link of line_bps carries at this size or IMIX."""
    return line_bps / ((mean_size(size) + ETH_L1_OVERHEAD) * 8) / 1e6


def frame_sizes_scenario(
    flows: int = 1000,
    sizes: tuple = SIZES,
    *,
    quick: bool = False,
    batch_size: int = 256,
    reps: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Mpps and Gbps per frame size at `flows` established flows, bulk on; a JSON-able dict."""
    say = progress or (lambda _msg: None)
    reps = reps or (8 if quick else 60)
    t_start = time.perf_counter()
    say(f"establishing {flows} flows")
    w = gateway(True)
    establish(w, flows, batch_size)
    results = []
    for size in sizes:
        say(f"{size}: building traffic")
        state, wire = traffic_pool(bench_stream(flows, size, POOL_PACKETS), batch_size)
        state.restore(RUN_TS_NS)
        w.poll(state.batches[0])  # first call per slot width: numba compile or cache load, untimed
        say(f"{size}: timing")
        secs, hit = time_passes(w, state, reps)
        r = {"frame_size": size, "mean_frame_bytes": round(float(wire.mean()), 2),
             **rates(POOL_PACKETS, secs, wire), "fastpath_hit_fraction": round(hit, 4)}  # fmt: skip
        r["line_rate_mpps"] = {k: round(line_rate_mpps(size, v), 4) for k, v in LINE_RATES_BPS.items()}
        results.append(r)
    return {
        **conditions("frame-sizes", quick, batch_size, reps),
        "flows": flows,
        "frame_sizes": [str(s) for s in sizes],
        "imix": "CSIT IMIX 28 x 64, 16 x 570, 4 x 1518 bytes, interleaved (mean 353.83 B)",
        "line_rates_bps": LINE_RATES_BPS,
        "duration_s": round(time.perf_counter() - t_start, 2),
        "results": results,
    }


class FrameSizesResult(ScenarioResult):
    """`frame-sizes` results: a row per frame size, next to the line rates; one two-panel figure."""

    def table(self):
        from rich.table import Table

        r = self.data
        t = Table("frame size", "Mpps", "Gbit/s (L2)", "Gbit/s (L1)", "10GbE Mpps", "100GbE Mpps",
                  title=f"frame-sizes, {r['flows']:,} flows, 1 core, batch {r['batch_size']}")  # fmt: skip
        for x in r["results"]:
            t.add_row(str(x["frame_size"]), f"{x['mpps']:.3f}", f"{x['gbps_l2']:.3f}", f"{x['gbps_l1']:.3f}",
                      f"{x['line_rate_mpps']['10GbE']:.2f}", f"{x['line_rate_mpps']['100GbE']:.2f}")  # fmt: skip
        return t

    def plot(self, path):
        from flowpath.bench.plot_scenarios import plot_frame_sizes

        return plot_frame_sizes(self.data, path)


class FrameSizes:
    """`flowpath bench frame-sizes`: one flow count, every size of SIZES."""

    name = "frame-sizes"

    def check(self, opts: BenchOptions) -> None:
        no_ipsec_options(opts)
        if opts.flows is not None and len(opts.flows) != 1:
            raise UsageError("frame-sizes runs at one flow count: --flows N")
        if opts.frame_size is not None:
            raise UsageError("frame-sizes measures 64, 128, 512, 1518 and IMIX; it takes no --frame-size")

    def run(self, opts: BenchOptions, progress: Progress) -> FrameSizesResult:
        progress.start(self.name)
        r = frame_sizes_scenario(opts.flows[0] if opts.flows else 1000, quick=opts.quick,
                                 batch_size=opts.batch_size or 256, progress=progress.say)  # fmt: skip
        progress.done()
        return FrameSizesResult(r)
