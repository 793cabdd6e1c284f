"""`flowpath bench scaling`: fast-path Mpps per worker count, the pCPU test report's experiment (2025
Linux IPsec pCPU testing, RFC 9611: IPsec throughput grows linearly with CPUs once each CPU has its own
SA, about 3.3 Gbit/s per flow there).

No Linux counterpart (TRex against two Linux gateways in the report). Three modes, each on N workers
(flowpath/workers.py, one pinned thread each) for every N asked:

- forward: the NAT gateway of classic-vs-flowtable (flowpath/bench/setup.py), LAN -> WAN hits;
- esp-pcpu: the west gateway of the ipsec benches with one outbound SA per CPU (`pcpu-num C`) and a
  policy with XFRM_POLICY_CPU_ACQUIRE: each worker encrypts with its own SA, no lock;
- esp-shared-sa: the same gateway with one outbound SA for all: its sequence numbers serialise the
  workers (xfrm_lock, as x->lock does Linux's CPUs) - why RFC 9611 exists.

Each run: the flows are established through the workers (steered as replay steers, so each flow's
entry is on the worker its packets reach; the ESP replies come back through east and west); then each
worker's thread polls a port batch refilled, by a compiled copy that releases the GIL, with the frames
of the flows steered to it, for the same number of polls. `mpps` is the fast path's: all packets over
the time the busiest worker spent in its polls (the refills are a NIC's DMA; the polls of the workers
run side by side, so waits for the GIL or a lock count); `mpps_with_port_copy` is all packets over the
wall time from the common start to the last thread's end, copies included. Every timed run is checked: each worker
transmitted every packet it polled, on the fast path, with no drop, and in the ESP modes the first
(untimed) pass is checked frame by frame: each worker's ESP carries the SPI of the SA it must use.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
from numba import njit

from flowpath import __version__
from flowpath.bench import ipsec as IP
from flowpath.bench.bulking import rates
from flowpath.bench.scenario import BenchOptions, Progress, ScenarioResult
from flowpath.bench.setup import LAN_IF, NET, RULES, PortFeed, flow_frames
from flowpath.errors import UsageError
from flowpath.packet.batch import DEFAULT_HEADROOM, PacketBatch
from flowpath.packet.reason import REASON_KIND
from flowpath.packet.steer import flow_steer_batch
from flowpath.trafgen.imix import ETH_FCS_LEN

MODES = ("forward", "esp-pcpu", "esp-shared-sa")
FLOWS = 1000
BATCH = 1024  # as classic-vs-flowtable: a poll's fixed Python cost amortised, the batch still in L2
POLLS, POLLS_QUICK = 512, 96  # per worker and repetition
REPS, REPS_QUICK = 5, 2
EST_TS_NS, RUN_TS_NS = 1_000_000_000, 2_000_000_000
SPI_PCPU = 0x3000  # west's outbound SA of CPU c: SPI_PCPU + c (SPI_WE stays the fallback)


@njit(cache=True, nogil=True)
def ceiling_work(a, reps):
    """A compute-bound loop over an array in L2 (no GIL, no shared data): what N CPUs of this machine
    give N threads when nothing else is shared; the ceiling of every mode's ratio. (On a VM whose
    vCPUs are the hyperthreads of one core, far below N.)"""
    s = np.uint64(0)
    for _ in range(reps):
        for i in range(a.shape[0]):
            s += (a[i] * np.uint64(2654435761)) ^ (a[i] >> np.uint64(7))
    return s


def _pinned_work(c: int, a, reps: int) -> None:
    os.sched_setaffinity(0, {c % (os.cpu_count() or 1)})
    ceiling_work(a, reps)


def machine_ceiling(n: int, seconds: float = 0.3) -> float:
    """ceiling_work's speedup on n pinned threads against one pinned thread (best times of three)."""
    arrs = [np.arange(32768, dtype=np.uint64) for _ in range(n)]  # 256 KiB each
    ceiling_work(arrs[0], 1)
    t0 = time.perf_counter()
    ceiling_work(arrs[0], 10)
    reps = max(10, int(seconds / max(time.perf_counter() - t0, 1e-9) * 10))

    def timed(k: int) -> float:  # on k new pinned threads: the caller's own CPU set stays as it is
        threads = [threading.Thread(target=_pinned_work, args=(c, arrs[c], reps)) for c in range(k)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - t0

    ones, alls = [], []
    for _ in range(3):
        ones.append(timed(1))
        alls.append(timed(n))
    return round(n * min(ones) / min(alls), 2)


def steer_frames(frames: list[bytes], n: int) -> list[int]:
    """The worker each frame steers to (flowpath.packet.steer, as the workers' own steering)."""
    b = PacketBatch(len(frames), slot=1 << max(8, (DEFAULT_HEADROOM + max(map(len, frames))).bit_length()))
    for f in frames:
        b.append(f, 0, 0)
    out = np.zeros(b.n, np.int64)
    flow_steer_batch(b.data, b.head, b.len, b.n, n, out)
    return [int(c) for c in out]


def _relay(workers, frames: list[bytes], iif: int, batch_size: int = 256) -> list[tuple[int, bytes]]:
    """frames through `workers` (Workers or a Worker) as one steered stream; what they transmitted."""
    out = []
    b = PacketBatch(batch_size, slot=1 << max(8, (DEFAULT_HEADROOM + max(map(len, frames)) + IP.TAILROOM).bit_length()))
    for lo in range(0, len(frames), batch_size):
        b.clear()
        for f in frames[lo : lo + batch_size]:
            b.append(f, iif, EST_TS_NS)
        out += [(ifx, f) for ifx, f, _ in workers.rx_batch(b)]
    out += [(ifx, f) for ifx, f, _ in workers.drain()]
    return out


def pcpu_west_net(n: int, alg: str = "gcm") -> str:
    """West's network file with one outbound SA per CPU 0..n-1 (`pcpu-num`) besides the fallback SA,
    and its out policy flagged XFRM_POLICY_CPU_ACQUIRE (0x4)."""
    lines = IP.gateway_net("west", alg).splitlines()
    me, peer = IP.SIDES["west"][3], IP.SIDES["east"][3]
    name = IP.ALGS[alg][0]
    extra = [f"xfrm state add src {me} dst {peer} proto esp spi {SPI_PCPU + c:#x} reqid {IP.SPI_WE} mode tunnel "
             f"pcpu-num {c} aead '{name}' 0x{IP.sa_key(alg, SPI_PCPU + c)} 128" for c in range(n)]  # fmt: skip
    out = []
    for ln in lines:
        if " dir out " in ln:
            ln = ln.replace(" dir out ", " dir out flag 0x4 ")
        out.append(ln)
        if ln.startswith("xfrm state add") and f"spi {IP.SPI_WE:#x}" in ln:
            out += extra
    return "\n".join(out) + "\n"


def pcpu_east_net(n: int, alg: str = "gcm") -> str:
    """East's network file: west's per-CPU SAs as inbound SAs (same reqid as the fallback)."""
    lines = IP.gateway_net("east", alg).splitlines()
    me, peer = IP.SIDES["east"][3], IP.SIDES["west"][3]
    name = IP.ALGS[alg][0]
    extra = [f"xfrm state add src {peer} dst {me} proto esp spi {SPI_PCPU + c:#x} reqid {IP.SPI_WE} mode tunnel "
             f"replay-window 32 aead '{name}' 0x{IP.sa_key(alg, SPI_PCPU + c)} 128" for c in range(n)]  # fmt: skip
    return "\n".join(lines + extra) + "\n"


class _Setup:
    """A mode's gateway on n workers with its flows established: the Workers, what each worker's
    thread sends (frames of its flows), the interface it sends to, and each frame's size."""

    def __init__(self, mode: str, n: int, flows: int, frame_size: int, alg: str = "gcm"):
        from flowpath.config.ipbatch import parse_network
        from flowpath.config.nft import parse_ruleset
        from flowpath.datapath import Worker
        from flowpath.workers import Workers

        self.mode, self.n = mode, n
        if mode == "forward":
            self.workers = Workers(parse_network(NET, "<bench>"), parse_ruleset(RULES, "<bench>"), n=n)
            up, down = flow_frames(flows, frame_size - ETH_FCS_LEN)
            wan = self.workers.net.link_by_name("wan0").ifindex
            for frames, iif in ((up, LAN_IF), (down, wan), (up, LAN_IF)):
                _relay(self.workers, frames, iif)
            self.out_if, self.lan = wan, LAN_IF
        else:
            pcpu = mode == "esp-pcpu"
            wnet = pcpu_west_net(n, alg) if pcpu else IP.gateway_net("west", alg)
            enet = pcpu_east_net(n, alg) if pcpu else IP.gateway_net("east", alg)
            self.workers = Workers(parse_network(wnet, "<west>"), parse_ruleset(IP.RULES, "<west.nft>"), n=n)
            east = Worker(parse_network(enet, "<east>"), parse_ruleset(IP.RULES, "<east.nft>"))
            lan = self.workers.net.link_by_name("lan0").ifindex
            wan = self.workers.net.link_by_name("wan0").ifindex
            up, down = IP.inner_frames(flows, frame_size)
            for frames, first, second in ((up, self.workers, east), (down, east, self.workers),
                                          (up, self.workers, east)):  # fmt: skip
                esp = [f for ifx, f in _relay(first, frames, lan) if ifx == wan]
                _relay(second, esp, wan)
            self.out_if, self.lan = wan, lan
        got = sum(len(ft) for w in self.workers.workers for ft, _ in w.flowtables.values())
        if got != flows:
            raise RuntimeError(f"{mode} on {n} workers: {got} of {flows} flows offloaded after setup")
        self.up = up
        cpus = steer_frames(up, n)
        self.per_worker = [[f for f, c in zip(up, cpus, strict=True) if c == w] for w in range(n)]

    def check_spis(self) -> None:
        """Each worker's first packets leave as ESP with its own SA's SPI (esp-pcpu) or the shared one."""
        if self.mode == "forward":
            return
        for c, frames in enumerate(self.per_worker):
            if not frames:
                continue
            b = PacketBatch(len(frames), slot=1 << max(8, (DEFAULT_HEADROOM + len(frames[0]) + IP.TAILROOM).bit_length()))
            for f in frames:
                b.append(f, self.lan, RUN_TS_NS)
            tx = self.workers.poll(c, b).frames()
            want = SPI_PCPU + c if self.mode == "esp-pcpu" else IP.SPI_WE
            esp = [f for ifx, f, _ in tx if ifx == self.out_if]
            if len(esp) != len(frames):
                raise RuntimeError(f"{self.mode}: worker {c} sent {len(esp)} ESP frames of {len(frames)}")
            IP.verify_encap(esp, want)


def _timed(setup: _Setup, polls: int, batch_size: int) -> tuple[float, float, int]:
    """One repetition: every worker's thread polls its feed `polls` times from a common start.
    Returns (seconds in the polls of the busiest worker, wall seconds with the refills, packets)."""
    ws, n = setup.workers, setup.n
    feeds = [PortFeed(fr, setup.lan, polls * batch_size, batch_size, seed=c + 1, tailroom=IP.TAILROOM) if fr else None
             for c, fr in enumerate(setup.per_worker)]  # fmt: skip
    start = threading.Barrier(n + 1)
    ends, busy = [0.0] * n, [0.0] * n
    errors: list[BaseException] = []
    clock = time.perf_counter

    def run(c: int) -> None:
        try:
            ws.thread_init(c)
            feed, poll, spent = feeds[c], ws.poll, 0.0
            start.wait()
            if feed is not None:
                for k in range(polls):
                    b = feed.fill(k, RUN_TS_NS)
                    t0 = clock()
                    poll(c, b)
                    spent += clock() - t0
            ends[c], busy[c] = clock(), spent
        except BaseException as e:  # noqa: BLE001 - raised again by the caller
            errors.append(e)
            ends[c] = clock()

    threads = [threading.Thread(target=run, args=(c,), name=f"flowpath-worker-{c}") for c in range(n)]
    for t in threads:
        t.start()
    start.wait()
    t0 = clock()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    packets = sum(polls * batch_size for f in feeds if f is not None)
    return max(busy), max(ends) - t0, packets


def measure(mode: str, n: int, *, flows: int, frame_size: int, polls: int, reps: int, batch_size: int,
            say=lambda _m: None) -> dict:  # fmt: skip
    """One point: `mode` on n workers (see the module docstring)."""
    say(f"{mode}, {n} worker(s): establishing {flows} flows")
    setup = _Setup(mode, n, flows, frame_size)
    setup.check_spis()
    stats0 = setup.workers.stats
    say(f"{mode}, {n} worker(s): timing")
    secs, walls, packets = [], [], 0
    for _ in range(reps):
        dt, wall, packets = _timed(setup, polls, batch_size)
        secs.append(dt)
        walls.append(wall)
    s = setup.workers.stats
    fast = s.fastpath_packets - stats0.fastpath_packets
    drops = {int(r): int(c) for r, c in enumerate(s.reasons - stats0.reasons) if c and REASON_KIND[r] == "drop"}
    if drops or fast != packets * reps:
        raise RuntimeError(f"{mode} on {n} workers: {fast} of {packets * reps} packets on the fast path; "
                           f"drops {drops or 'none'}")  # fmt: skip
    r, rw = rates(packets, secs, frame_size), rates(packets, walls, frame_size)
    setup.workers.close()
    share = [len(f) for f in setup.per_worker]
    return {"mode": mode, "workers": n, "mpps": r["mpps"], "gbps": r["gbps_l2"], "mpps_median": r["mpps_median"],
            "mpps_with_port_copy": rw["mpps"], "flows_per_worker": share, "packets": packets,
            "repetitions": reps}  # fmt: skip


class ScalingResult(ScenarioResult):
    def table(self):
        from rich.table import Table

        pts = self.data["points"]
        one = {p["mode"]: p["mpps"] for p in pts if p["workers"] == 1}
        t = Table("mode", "workers", "Mpps", "Gbit/s (L2)", "x 1 worker", "Mpps with port copy", "flows per worker",
                  box=None)  # fmt: skip
        for p in pts:
            base = one.get(p["mode"])
            t.add_row(p["mode"], str(p["workers"]), f"{p['mpps']:.2f}", f"{p['gbps']:.2f}",
                      f"{p['mpps'] / base:.2f}" if base else "", f"{p['mpps_with_port_copy']:.2f}",
                      ",".join(map(str, p["flows_per_worker"])))  # fmt: skip
        ceil = self.data.get("machine_ceiling") or {}
        if ceil:
            t.caption = "machine ceiling (compute-bound loop, N threads vs 1): " + ", ".join(
                f"{n} CPUs x{x}" for n, x in ceil.items())
        return t

    def plot(self, path):
        from flowpath.bench.plot import plot_scaling

        plot_scaling(self.data, path)
        return [path]


class Scaling:
    """The `scaling` scenario (see the module docstring)."""

    name = "scaling"

    def check(self, opts: BenchOptions) -> None:
        if opts.flows is not None and len(opts.flows) != 1:
            raise UsageError("scaling: one --flows count (default 1000)")
        for n in opts.workers or ():
            if n > 64:
                raise UsageError(f"--workers {n}: at most 64")
        if opts.alg != "gcm" or opts.packets is not None or opts.reps is not None:
            raise UsageError("--alg, --packets and --reps apply to the ipsec-* scenarios only")

    def run(self, opts: BenchOptions, progress: Progress) -> ScalingResult:
        ncpu = len(os.sched_getaffinity(0))
        workers = opts.workers or tuple(range(1, ncpu + 1))
        flows = opts.flows[0] if opts.flows else FLOWS
        frame_size = opts.frame_size or 128
        batch = opts.batch_size or BATCH
        polls, reps = (POLLS_QUICK, REPS_QUICK) if opts.quick else (POLLS, REPS)
        progress.start("machine ceiling (a compute-bound loop on 1 and N pinned threads)")
        ceiling = {n: machine_ceiling(n) for n in workers if n > 1}
        progress.done(", ".join(f"{n} CPUs x{x}" for n, x in ceiling.items()) or "one worker")
        points = []
        for mode in MODES:
            for n in workers:
                progress.start(f"{mode}, {n} worker(s)")
                p = measure(mode, n, flows=flows, frame_size=frame_size, polls=polls, reps=reps, batch_size=batch,
                            say=progress.say)  # fmt: skip
                points.append(p)
                progress.done(f"{p['mpps']:.2f} Mpps")
        return ScalingResult({
            "scenario": "scaling", "flowpath_version": __version__, "cpus": ncpu, "flows": flows,
            "frame_size": frame_size, "frame_size_includes_fcs": True, "batch_size": batch, "quick": opts.quick,
            "polls_per_worker": polls,
            "traffic": "UDP flows LAN -> WAN (forward: NAT gateway; esp-*: west encrypting to east), established "
                       "first; each worker's thread polls the flows steered to it; in memory, no NIC",
            "machine_ceiling": {str(n): x for n, x in ceiling.items()},
            "points": points,
        })  # fmt: skip
