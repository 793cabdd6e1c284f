"""`flowpath bench ct-pressure`: one-way new UDP flows at 1x and 4x conntrack's limit, the time per
packet in each regime and their ratio (the target: past the limit, early drop makes room at no extra
cost, so 4x the packets take no more than 4x the time).

No Linux counterpart (a SYN/UDP flood against a gateway whose nf_conntrack_max is reached). The
gateway is the benches' NAT gateway (flowpath/bench/setup.py) with `net.netfilter.nf_conntrack_max`
set to the limit: 16384 (4096 with --quick), below Linux's 262144, so that a run takes seconds
(its new flows take the compiled classic lane; what it punts, the Python path); `--flows N` sets
another. Every packet is a new tuple (client source
port and server port varied as setup.flow_ports) and nothing answers, so no entry is ever assured:
past the limit each new entry takes an unassured one's place (early_drop) and no packet may be
dropped. Each regime runs on a fresh gateway: 1x sends `limit` packets into an empty table, 4x sends
4 x limit; the regimes alternate, 7 times (`--reps N`; 1 with --quick), and the median run of each
is reported.

Timed: Worker.poll alone, in polls of `--batch` (256) packets, the packet clock CLOCK_MONOTONIC
read before each poll (conntrack's GC runs once a second, as live). Every packet must leave on the
WAN side, masqueraded (address 203.0.113.1, any source port), with TTL - 1, right checksums and the
rest unchanged (flowpath/bench/peers.py); the frames are told apart by the packet number in their
payload, not by order or port. A drop, a missing or wrong frame, an entry gone other than by early
drop, or a table not full at the end (down to 95 % of it, where the GC's own early drop may have run
last) fails the run.
"""

from __future__ import annotations

import struct
import time

import numpy as np

from flowpath import __version__
from flowpath.bench.peers import Mismatch, check_forwarded, parse, udp_frame
from flowpath.bench.scenario import BenchOptions, Progress, ScenarioResult, no_ipsec_options
from flowpath.bench.setup import (
    CLIENT,
    CLIENT_MAC,
    GW_LAN,
    GW_WAN,
    LAN_IF,
    NET,
    RULES,
    SERVER,
    UPSTREAM_MAC,
    WAN_ADDR,
    WAN_IF,
    flow_ports,
)
from flowpath.errors import UsageError
from flowpath.packet import layout as L
from flowpath.packet.batch import PacketBatch
from flowpath.packet.reason import REASON_KIND, reason_label
from flowpath.trafgen.imix import ETH_FCS_LEN

LIMIT, LIMIT_QUICK = 16384, 4096
MIN_LIMIT, MAX_LIMIT = 256, 65536  # 4 x the limit distinct tuples: setup.flow_ports has them
REGIMES = (1, 4)  # multiples of the limit
REPS, REPS_QUICK = 7, 1  # a run's time varies by a tenth or more on a shared machine: the median of 7
BATCH = 256
FRAME_SIZE = 64  # with the FCS
PROFILE_POINTS = 4  # time per packet over each quarter of the limit (whole polls), for the profile
SIGNATURE = struct.Struct(">Q")  # the packet's number, first in its payload


def flood_frames(n: int, frame_size: int) -> list[bytes]:
    """Packet k of the flood: client port and server port of setup.flow_ports(k), k in the payload."""
    pad = frame_size - ETH_FCS_LEN - L.ETH_HLEN - L.IPH.size - L.UDPH.size - SIGNATURE.size
    out = []
    for k in range(n):
        sport, dport = flow_ports(k)
        out.append(
            udp_frame(CLIENT_MAC, GW_LAN, CLIENT, SERVER, sport, dport, SIGNATURE.pack(k) + bytes(pad))
        )
    return out


def gateway(limit: int):
    """A Worker on the bench gateway with nf_conntrack_max = limit."""
    from flowpath.config.ipbatch import parse_network
    from flowpath.config.nft import parse_ruleset
    from flowpath.datapath import Worker

    return Worker(parse_network(NET, "<bench>"), parse_ruleset(RULES, "<bench>"),
                  sysctl={"net.netfilter.nf_conntrack_max": limit})  # fmt: skip


def check_output(out: list[tuple[int, bytes, int]], lo: int, n: int, frames: list[bytes]) -> None:
    """Mismatch unless `out` is packets lo .. lo+n-1 forwarded, each once (any order)."""
    if len(out) != n:
        raise Mismatch(f"packets {lo}..{lo + n - 1}: {n} in, {len(out)} frames out")
    seen = set()
    for ifx, f, _ in out:
        seg = parse(f)
        k = SIGNATURE.unpack_from(seg.payload)[0] if len(seg.payload) >= SIGNATURE.size else -1
        if ifx != WAN_IF or not lo <= k < lo + n or k in seen or seg.sport == 0:
            raise Mismatch(f"frame on interface {ifx} with packet number {k} (sent {lo}..{lo + n - 1}), "
                           f"source port {seg.sport}")  # fmt: skip
        seen.add(k)
        check_forwarded(
            parse(frames[k]), seg, dmac=UPSTREAM_MAC, smac=GW_WAN, saddr=WAN_ADDR, sport=seg.sport
        )


def flood(limit: int, packets: int, frames: list[bytes], batch_size: int, warm_up: bool = False) -> dict:
    """`packets` of the flood through a fresh gateway with the given limit; seconds in poll per
    packet range (the profile), the table at the end; RuntimeError on any drop or mismatch.

    warm_up: entries may also have expired. Its polls compile the datapath on a first run, minutes
    of packet clock during which the first entries outlive UDP's timeout and the GC removes them."""
    w = gateway(limit)
    b = PacketBatch(batch_size)
    poll_s = np.zeros(-(-packets // batch_size))
    for p, lo in enumerate(range(0, packets, batch_size)):
        b.clear()
        ts_ns = time.monotonic_ns()
        for f in frames[lo : lo + batch_size]:
            b.append(f, LAN_IF, ts_ns)
        t0 = time.perf_counter()
        tx = w.poll(b)
        poll_s[p] = time.perf_counter() - t0
        check_output(tx.frames(), lo, b.n, frames)
    s, ct = w.stats, w.conntrack
    drops = {reason_label(r): int(c) for r, c in enumerate(s.reasons) if c and REASON_KIND[r] == "drop"}
    if drops or s.generated_packets:
        raise RuntimeError(f"{packets} new flows at limit {limit}: drops {drops}, {s.generated_packets} packets "
                           "of the gateway's own")  # fmt: skip
    # every packet made an entry and every entry that went was evicted; the GC's own early drop
    # (gc_worker, from 95 % full) may have run last, leaving the table below the limit
    top = min(packets, limit)
    gone = packets - len(ct) - ct.stat["early_drop"]  # entries gone other than by early drop: expired
    low = 0 if warm_up else top // 100 * 95
    if gone < 0 or (gone and not warm_up) or not low <= len(ct) <= top:
        raise RuntimeError(f"{packets} new flows at limit {limit}: {len(ct)} conntrack entries, "
                           f"{ct.stat['early_drop']} early drops")  # fmt: skip
    starts = np.arange(len(poll_s)) * batch_size  # each poll's first packet
    counts = np.minimum(batch_size, packets - starts)
    past = starts >= limit  # the polls after the table filled
    per = max(1, limit // PROFILE_POINTS // batch_size)  # polls per point of the profile
    profile = [[round(float(starts[q] + counts[q : q + per].sum()) / limit, 4),
                round(float(poll_s[q : q + per].sum() / counts[q : q + per].sum()) * 1e6, 2)]
               for q in range(0, len(poll_s), per)]  # fmt: skip
    return {
        "packets": packets,
        "poll_s": float(poll_s.sum()),
        "past_limit_s": float(poll_s[past].sum()),
        "past_limit_packets": int(counts[past].sum()),
        "profile_us": profile,  # [packets sent / limit, µs per packet over the polls up to there]
        "conntrack_entries": len(ct),
        "early_drop": ct.stat["early_drop"],
        "fastpath_packets": s.fastpath_packets,
        "slowpath_packets": s.slowpath_packets,
        "polls": len(poll_s),
    }


def ct_pressure(limit: int = LIMIT, *, reps: int = REPS, batch_size: int = BATCH, frame_size: int = FRAME_SIZE,
                quick: bool = False, progress=lambda _m: None) -> dict:  # fmt: skip
    """1x and 4x the limit, `reps` times each in turn; a JSON-able dict (see the module docstring)."""
    t_start = time.perf_counter()
    top = max(REGIMES) * limit
    progress(f"building {top:,} frames")
    # bytes only: parsed objects kept for the whole run would make every collection of Python's cyclic
    # GC during the timed polls longer (the gateway's own objects are its cost; the bench's are not)
    frames = flood_frames(top, frame_size)
    progress("warm-up (a small table, early drop included)")
    flood(64, 4 * 64, frames, batch_size, warm_up=True)
    runs: dict[int, list[dict]] = {m: [] for m in REGIMES}
    for r in range(reps):
        for m in REGIMES:
            progress(f"{m}x the limit, run {r + 1} of {reps}")
            runs[m].append(flood(limit, m * limit, frames, batch_size))
    regimes = {}
    for m, rs in runs.items():
        med = sorted(rs, key=lambda x: x["poll_s"])[len(rs) // 2]
        past = med["past_limit_packets"]
        regimes[f"{m}x"] = {
            **med,
            "us_per_packet": round(med["poll_s"] / med["packets"] * 1e6, 3),
            "us_per_packet_past_limit": round(med["past_limit_s"] / past * 1e6, 3) if past else None,
            "us_per_packet_runs": [round(x["poll_s"] / x["packets"] * 1e6, 3) for x in rs],
            "packets_per_s": round(med["packets"] / med["poll_s"], 1),
        }
    one, four = regimes["1x"], regimes["4x"]
    return {
        "scenario": "ct-pressure",
        "flowpath_version": __version__,
        "cores": 1,
        "quick": quick,
        "conntrack_max": limit,
        "frame_size": frame_size,
        "frame_size_includes_fcs": True,
        "batch_size": batch_size,
        "repetitions": reps,
        "us_per_packet_1x": one["us_per_packet"],
        "us_per_packet_4x": four["us_per_packet"],
        "us_per_packet_past_limit": four["us_per_packet_past_limit"],
        "per_packet_ratio": round(four["us_per_packet"] / one["us_per_packet"], 3),
        "time_ratio": round(four["poll_s"] / one["poll_s"], 3),
        "duration_s": round(time.perf_counter() - t_start, 2),
        "traffic": "one-way UDP 10.0.0.2 -> 198.51.100.7, every packet a new tuple (source port 1024.., server "
                   "port 5001..), LAN -> WAN through masquerade; nothing answers; in memory, no NIC",
        "timing": "Worker.poll only; packet clock CLOCK_MONOTONIC; each regime on a fresh gateway, the median of "
                  "its runs",
        "regimes": regimes,
    }  # fmt: skip


class CtPressureResult(ScenarioResult):
    """`ct-pressure` results: a row per regime; a figure of the time per packet along the flood."""

    def table(self):
        from rich.table import Table

        r = self.data
        t = Table("new flows", "µs/packet", "past the limit", "kpps", "conntrack", "early drops", "runs (µs/packet)",
                  title=f"ct-pressure: one-way new UDP flows, nf_conntrack_max {r['conntrack_max']:,}, 1 core, "
                  f"batch {r['batch_size']}", caption=f"4x / 1x per packet: {r['per_packet_ratio']:.2f} "
                  f"(time {r['time_ratio']:.2f} for 4x the packets)")  # fmt: skip
        for tag, x in r["regimes"].items():
            past = x["us_per_packet_past_limit"]
            t.add_row(f"{tag} ({x['packets']:,})", f"{x['us_per_packet']:.1f}", "-" if past is None else f"{past:.1f}",
                      f"{x['packets_per_s'] / 1e3:.1f}", f"{x['conntrack_entries']:,}", f"{x['early_drop']:,}",
                      ", ".join(f"{u:.1f}" for u in x["us_per_packet_runs"]))  # fmt: skip
        return t

    def plot(self, path):
        from flowpath.bench.plot_cps import plot_ct_pressure

        plot_ct_pressure(self.data, path)
        return [path]


class CtPressure:
    """`flowpath bench ct-pressure` (see the module docstring)."""

    name = "ct-pressure"

    def check(self, opts: BenchOptions) -> None:
        no_ipsec_options(opts, reps=True)
        if opts.flows is not None and (len(opts.flows) != 1 or not MIN_LIMIT <= opts.flows[0] <= MAX_LIMIT):
            raise UsageError(
                f"--flows: ct-pressure takes one count, the conntrack limit ({MIN_LIMIT}..{MAX_LIMIT})"
            )

    def run(self, opts: BenchOptions, progress: Progress) -> CtPressureResult:
        progress.start(self.name)
        limit = opts.flows[0] if opts.flows else (LIMIT_QUICK if opts.quick else LIMIT)
        reps = opts.reps or (REPS_QUICK if opts.quick else REPS)
        r = ct_pressure(limit, reps=reps, batch_size=opts.batch_size or BATCH,
                        frame_size=opts.frame_size or FRAME_SIZE, quick=opts.quick, progress=progress.say)  # fmt: skip
        progress.done(f"{r['us_per_packet_1x']:.1f} / {r['us_per_packet_4x']:.1f} µs per packet")
        return CtPressureResult(r)
