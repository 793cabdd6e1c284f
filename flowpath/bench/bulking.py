"""The flowtable bulk-forwarding test notes' "Forwarding Tests (no IPsec)": RX Gbps and Mpps against
the number of flows (UDP source ports 1 ... 10 000), bulk forwarding on and off, 128-byte frames, one
core.

No Linux counterpart (TRex against a Linux gateway in the notes). Sizes are wire frames with the 4-byte
FCS (a slot holds size - 4 bytes); L2 Gbps counts the frame with FCS, L1 adds 20 bytes of preamble,
SFD and inter-frame gap. Measured as flowpath/bench/flowtable.py does: flows are established through
the slow path first, then Worker.poll is timed over a pool of batches that all hit the flowtable, best
and median of many passes; the pool's pristine bytes are restored, untimed, before each pass. The
traffic comes from flowpath.trafgen.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from flowpath import __version__
from flowpath.bench.scenario import BenchOptions, Progress, ScenarioResult, no_ipsec_options
from flowpath.bench.setup import (
    BASE_PORT,
    CLIENT,
    CLIENT_MAC,
    GW_LAN,
    LAN_IF,
    NET,
    RULES,
    SERVER,
    WAN_IF,
    PoolState,
    flow_frames,
)  # fmt: skip
from flowpath.packet.batch import PacketBatch
from flowpath.trafgen.field import FieldVar
from flowpath.trafgen.imix import ETH_FCS_LEN, ETH_L1_OVERHEAD
from flowpath.trafgen.stream import Rate, Stream, build_stream

EST_TS_NS = 1_000_000_000
RUN_TS_NS = 2_000_000_000
FLOWS = (1, 3, 10, 30, 100, 300, 1000, 3000, 10000)
FLOWS_QUICK = (1, 10, 100, 1000)  # 10 000 flows take ~25 s of slow path to establish
POOL_PACKETS = 48 * 341  # packets per timed pass (whole IMIX cycles); small enough at 1518 bytes


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def bench_stream(flows: int, size, packets: int) -> Stream:
    """The bench gateway's LAN client sending to SERVER over `flows` UDP source ports (inc, as TRex's
    flow var), the same 5-tuples as flowpath.bench.setup.flow_frames."""
    return Stream(saddr=CLIENT, daddr=SERVER, sport=FieldVar(BASE_PORT, BASE_PORT + flows - 1, "inc"),
                  dport=5001, size=size, count=packets, rate=Rate(percent=100, line_bps=100e9),
                  src_mac=_mac(CLIENT_MAC), dst_mac=_mac(GW_LAN), port="lan0")  # fmt: skip


def gateway(bulk: bool = True):
    """A Worker on the bench gateway (flowpath.bench.setup NET and RULES)."""
    from flowpath.config.ipbatch import parse_network
    from flowpath.config.nft import parse_ruleset
    from flowpath.datapath import Worker

    return Worker(parse_network(NET, "<bench>"), parse_ruleset(RULES, "<bench>"), bulk=bulk)


def establish(worker, flows: int, batch_size: int = 256) -> None:
    """Each flow's first packet, its reply (the flow is offloaded then), and one more packet."""
    up, down = flow_frames(flows, 64)
    seq = [(f, LAN_IF) for f in up] + [(f, WAN_IF) for f in down] + [(f, LAN_IF) for f in up]
    b = PacketBatch(batch_size)
    for k in range(0, len(seq), batch_size):
        b.clear()
        for f, iif in seq[k : k + batch_size]:
            b.append(f, iif, EST_TS_NS)
        worker.poll(b)
    ft = next(iter(worker.flowtables.values()))[0]
    if len(ft) != flows:
        raise RuntimeError(f"expected {flows} offloaded flows after setup, found {len(ft)}")


def traffic_pool(stream: Stream, batch_size: int) -> tuple[PoolState, np.ndarray]:
    """The stream's frames in PacketBatches (slots sized for its largest frame) and their wire sizes."""
    fr = build_stream(stream, 0)
    slot = 1 << max(8, int(fr.caplen.max() + 128 - 1).bit_length())
    batches = []
    for lo in range(0, len(fr), batch_size):
        b = PacketBatch(batch_size, slot=slot)
        for i in range(lo, min(len(fr), lo + batch_size)):
            b.append(fr.frame(i), LAN_IF, 0)
        batches.append(b)
    return PoolState(batches), fr.caplen + ETH_FCS_LEN


def time_passes(worker, state: PoolState, reps: int) -> tuple[list[float], float]:
    """Seconds of Worker.poll per pass over the pool (restored untimed before each), and the fraction
    of packets that hit the flowtable in the last pass. Short passes, best and median of many: on a
    shared machine, a long repetition nearly always catches some other process's time slice."""
    out = []
    for _ in range(reps):
        state.restore(RUN_TS_NS)
        t0 = time.perf_counter()
        for b in state.batches:
            worker.poll(b)
        out.append(time.perf_counter() - t0)
    n = sum(b.n for b in state.batches)
    hits = sum(int(np.count_nonzero(b.verdict[: b.n] == 0)) for b in state.batches)
    return out, hits / n


def rates(packets: int, seconds: list[float], wire, digits: int = 4) -> dict:
    """Mpps and Gbps (L2 with FCS, L1 with 20 more bytes per frame), best and median repetition.
    wire: the frames' wire sizes (an array, or one size); digits: rounding."""
    mean_wire = float(np.mean(wire))
    best, med = packets / min(seconds) / 1e6, packets / float(np.median(seconds)) / 1e6
    return {
        "mpps": round(best, digits),
        "mpps_median": round(med, digits),
        "gbps_l2": round(best * mean_wire * 8 / 1e3, digits),
        "gbps_l1": round(best * (mean_wire + ETH_L1_OVERHEAD) * 8 / 1e3, digits),
        "gbps_l2_median": round(med * mean_wire * 8 / 1e3, digits),
    }


def conditions(scenario: str, quick: bool, batch_size: int, reps: int) -> dict:
    return {
        "scenario": scenario,
        "flowpath_version": __version__,
        "cores": 1,
        "batch_size": batch_size,
        "packets_per_repetition": POOL_PACKETS,
        "repetitions": reps,
        "quick": quick,
        "traffic": "UDP 10.0.0.2 -> 198.51.100.7:5001, source ports 1024.. (inc), LAN -> WAN through NAT "
        "(masquerade) with a flowtable; flows established first; in memory, no NIC",
        "size_convention": "frame sizes are wire frames with the 4-byte FCS; L1 adds 20 B preamble+SFD+IFG",
    }


def bulking(
    flows: tuple[int, ...] | None = None,
    frame_size: int = 128,
    *,
    quick: bool = False,
    batch_size: int = 256,
    reps: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """RX Mpps and Gbps per flow count, bulk forwarding on and off; a JSON-able dict."""
    say = progress or (lambda _msg: None)
    flows = tuple(flows or (FLOWS_QUICK if quick else FLOWS))
    reps = reps or (8 if quick else 60)
    results = []
    t_start = time.perf_counter()
    for n in flows:
        say(f"{n} flows: building traffic")
        state, wire = traffic_pool(bench_stream(n, frame_size, POOL_PACKETS), batch_size)
        row = {"flows": n}
        for bulk in (True, False):
            tag = "bulk" if bulk else "no_bulk"
            say(f"{n} flows: establishing ({tag})")
            w = gateway(bulk)
            establish(w, n, batch_size)
            state.restore(RUN_TS_NS)
            w.poll(state.batches[0])  # first call: numba compile or cache load, untimed
            say(f"{n} flows: timing ({tag})")
            secs, hit = time_passes(w, state, reps)
            row[tag] = {**rates(POOL_PACKETS, secs, wire), "fastpath_hit_fraction": round(hit, 4)}
        row["bulk_gain"] = round(row["bulk"]["mpps"] / row["no_bulk"]["mpps"], 3)
        results.append(row)
    return {
        **conditions("bulking", quick, batch_size, reps),
        "frame_size": frame_size,
        "flows": list(flows),
        "duration_s": round(time.perf_counter() - t_start, 2),
        "results": results,
    }


class BulkingResult(ScenarioResult):
    """`bulking` results: a row per flow count, bulk on and off; two figures (Gbit/s and Mpps)."""

    def table(self):
        from rich.table import Table

        r = self.data
        t = Table("flows", "bulk Mpps", "no-bulk Mpps", "bulk Gbit/s (L2)", "no-bulk Gbit/s (L2)", "bulk gain",
                  title=f"bulking, {r['frame_size']}-byte frames, 1 core, batch {r['batch_size']}")  # fmt: skip
        for x in r["results"]:
            t.add_row(f"{x['flows']:,}", f"{x['bulk']['mpps']:.3f}", f"{x['no_bulk']['mpps']:.3f}",
                      f"{x['bulk']['gbps_l2']:.3f}", f"{x['no_bulk']['gbps_l2']:.3f}", f"{x['bulk_gain']:.2f}x")  # fmt: skip
        return t

    def plot(self, path):
        from flowpath.bench.plot_scenarios import plot_bulking

        return plot_bulking(self.data, path)


class Bulking:
    """`flowpath bench bulking`: the options it takes, and one run."""

    name = "bulking"

    def check(self, opts: BenchOptions) -> None:
        no_ipsec_options(opts)

    def run(self, opts: BenchOptions, progress: Progress) -> BulkingResult:
        progress.start(self.name)
        r = bulking(opts.flows, opts.frame_size or 128, quick=opts.quick, batch_size=opts.batch_size or 256,
                    progress=progress.say)  # fmt: skip
        progress.done()
        return BulkingResult(r)
