"""`flowpath bench live`: forwarded Mpps and Gbit/s at sunrise per flow count, flowpath against the
Linux kernel as the gateways of the IPsec testbed (sunset -- west ==ESP== east -- sunrise), plain
and through the ESP tunnel, with iperf3 TCP and ping beside them, one run.

No Linux counterpart (the pCPU test report drives TRex against two Linux gateways). Each (gateway kind, mode) gets
a fresh `flowpath testbed` (flowpath/testbed/sites.py) with a unique prefix, torn down after it, also
on failure or Ctrl-C; the same generator measures them all (flowpath/bench/live.py: flows opened
first, `trafgen --live --rate max` from sunset, sunrise drops at netdev ingress and counts). The
kernel's ESP is used where the kernel has it; this one's has not, which the result says, and Linux is
then measured plain only. `--topology gateway` measures the three-box h1 -- gw -- h2 instead (plain,
through the masquerade; benchmarks/live_forward.py's topology).

The flowpath gateways run with --profile-phases: each UDP window also yields their loop's ns per
packet by phase (flowpath/bench/phases.py), and the CPU accounting gives the rest (the gateway CPU's
softirq share: the kernel's veth and packet-socket work that RPS moved there).
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

from flowpath import __version__
from flowpath.bench import live
from flowpath.bench.phases import phase_delta
from flowpath.bench.scenario import BenchOptions, Progress, ScenarioResult, no_ipsec_options
from flowpath.errors import UsageError

FLOWS, FLOWS_QUICK = (1, 10, 1000), (10,)
SECONDS, SECONDS_QUICK = 3.0, 1.0  # each timed window (UDP) and iperf3 run
WARMUP_S, WARMUP_S_QUICK = 1.0, 0.5
SENDER_BOUND = 0.98  # received / sent at or above this: sender-bound
TCP_MIN_S = 2.0  # iperf3 -t (after -O 1): through ESP the first second is path MTU discovery
TOPOLOGIES = ("sites", "gateway")
MAX_LIVE_FLOWS = 10_000  # each flow is opened by a real socket round trip first
NAME = {"flowpath": "flowpath", "linux": "kernel"}  # JSON key prefixes, as live_forward.py's


def check(opts: BenchOptions) -> None:
    no_ipsec_options(opts)
    if opts.batch_size is not None:
        raise UsageError("live: --batch does not apply (the gateways use `flowpath run`'s poll budget)")
    if opts.workers is not None and len(opts.workers) != 1:
        raise UsageError("live: one --workers count (the gateways' `flowpath run --workers N`)")
    if (opts.topology or "sites") not in TOPOLOGIES:
        raise UsageError(f"--topology {opts.topology!r}: one of {', '.join(TOPOLOGIES)}")
    if opts.flows and max(opts.flows) > MAX_LIVE_FLOWS:
        raise UsageError(f"live: at most {MAX_LIVE_FLOWS} flows (each is opened by a socket first)")
    if not 64 <= (opts.frame_size or 128) <= 1500:
        raise UsageError("live: --frame-size 64..1500 (the testbed's MTU is 1500)")
    reason = live_reason()
    if reason:
        raise UsageError(f"live: {reason}")


def live_reason() -> str | None:
    from flowpath.testbed.netns import require_netns

    return require_netns()


# ---- the beds ------------------------------------------------------------------------------------
@contextmanager
def sites_bed(kind: str, esp: bool, workers: int | None, say):
    """A fresh four-box testbed; yields (LivePath, {gateway name: FlowpathGateway}, the Sites)."""
    from flowpath.testbed import sites

    prefix = f"fpbl{os.getpid()}{kind[0]}{'e' if esp else 'p'}"
    tb = sites.Sites(prefix, kind, workers, say=lambda _m: None, esp=esp,
                     run_args=("--profile-phases",) if kind == "flowpath" else ())  # fmt: skip
    try:
        say(f"{kind} gateways, {'ESP' if esp else 'plain'}: testbed {prefix} up")
        tb.up()
        ns = tb.ns
        gws = dict(tb.gateways) if kind == "flowpath" else {}
        host_mac = {ns_a: mac for ns_a, _, mac, *_ in sites.LINKS}
        lp = live.LivePath(ns["sunset"], "eth0", host_mac["sunset"], sites.HOSTS["sunset"][0], sites.LINKS[0][5],
                           ns["sunrise"], "eth0", sites.HOSTS["sunrise"][0],
                           [(ns[g], d) for g in sites.GATEWAYS for d in ("lan0", "wan0")],
                           [g.proc.pid for g in gws.values()], tb.dir)  # fmt: skip
        yield lp, gws, tb
    finally:
        sites.down(prefix, say=lambda _m: None)


@contextmanager
def gateway_bed(kind: str, esp: bool, workers: int | None, say):
    """h1 -- gw -- h2 (flowpath.testbed.gateway), plain only."""
    from flowpath.testbed.gateway import H1_MAC, H1_V4, H2_V4, LAN_MAC, GatewayTopology

    run_args = ["--profile-phases"] + (["--workers", str(workers)] if workers else [])
    say(f"{kind} gateway: h1 -- gw -- h2 up")
    with GatewayTopology(kind, run_args=run_args if kind == "flowpath" else (), prefix="fpbl") as t:
        gws = {"gw": t.gateway} if kind == "flowpath" else {}
        lp = live.LivePath(t.h1, "eth0", H1_MAC, H1_V4, LAN_MAC, t.h2, "eth0", H2_V4,
                           [(t.gw, "lan0"), (t.gw, "wan0")], [g.proc.pid for g in gws.values()],
                           t.workdir)  # fmt: skip
        yield lp, gws, None


def phases_of(gws: dict) -> dict:
    """Each flowpath gateway's loop phases now (ctl stats --json)."""
    from flowpath.ctl.client import ctl_call

    return {name: json.loads(ctl_call(str(g.ctl_path), {"argv": ["stats", "--json"]}, timeout_s=10)["out"])
            .get("phases") for name, g in gws.items()}  # fmt: skip


def kernel_esp_missing(tb) -> str | None:
    """Why the Linux gateways' kernel cannot do the tunnel (sites.kernel_esp), None when it can."""
    from flowpath.testbed import sites

    return sites.kernel_esp(tb.ns["west"], sites.tunnel_sas()["west>east"])


# ---- one bed ---------------------------------------------------------------------------------------
def measure_bed(lp, gws, kind: str, mode: str, flows, frame_size: int, *, seconds: float, warmup_s: float,
                placements, cpus, say) -> list[dict]:  # fmt: skip
    """A point per flow count: the better placement's figures, and each placement's."""
    if cpus:
        live.pin(lp, cpus[1])
    points = []
    for n in flows:
        by_place = {}
        for place in placements:
            if cpus:
                live.rps(lp, cpus[1] if place == "rps" else None)
            say(f"{kind} {mode}: {n} flow(s), {place}: UDP flood")
            snap = {}

            def during(when, snap=snap):
                if gws:
                    snap[when] = phases_of(gws)

            u = live.udp_flood(lp, frame_size, n, seconds, cpus[0] if cpus else None, warmup_s, during)
            by_place[place] = summarize(u, snap, cpus)
        best = max(by_place, key=lambda p: by_place[p]["mpps"])
        b = by_place[best]
        points.append({"kind": kind, "mode": mode, "flows": n, "placement": best,
                       **{k: b[k] for k in ("mpps", "gbps", "sender_mpps")},
                       # the gateways forwarded all they were given: the figure is the sender's, not theirs
                       "sender_bound": b["mpps"] >= SENDER_BOUND * b["sender_mpps"],
                       "by_placement": by_place})  # fmt: skip
    say(f"{kind} {mode}: ping, iperf3 TCP")
    if cpus:  # in the placement that forwarded most at the last flow count
        live.rps(lp, cpus[1] if points[-1]["placement"] == "rps" else None)
    rtt = live.ping_avg_ms(lp)
    tcp_s = max(seconds, TCP_MIN_S)
    tcp1, tcp4 = live.tcp_gbps(lp, 1, tcp_s), live.tcp_gbps(lp, 4, tcp_s)
    for p in points:
        p.update(ping_avg_ms=rtt, tcp_gbps=tcp1, tcp4_gbps=tcp4, tcp_placement=points[-1]["placement"])
    return points


def summarize(u: dict, snap: dict, cpus) -> dict:
    """A UDP window's figures, the gateway CPU's accounting per forwarded packet and the loop phases."""
    out = {k: u[k] for k in ("mpps", "gbps", "sender_mpps")}
    pkts = u["mpps"] * 1e6 * u["seconds"]
    if cpus:
        c = u["cpu"][cpus[1]]
        out["gateway_cpu_busy"] = c["busy"]
        out["gateway_cpu_softirq"] = c["softirq"]
        # all gateways' work on their CPU, per packet sunrise got: loops + the kernel's share there
        out["gateway_cpu_ns_per_packet"] = c["busy"] * u["seconds"] * 1e9 / pkts if pkts else None
        out["gateway_softirq_ns_per_packet"] = c["softirq"] * u["seconds"] * 1e9 / pkts if pkts else None
    if u["proc_cpu_s"]:
        out["flowpath_proc_ns_per_packet"] = sum(u["proc_cpu_s"].values()) * 1e9 / pkts if pkts else None
    if snap.get("start") and snap.get("end"):
        out["phases"] = {gw: phase_delta(snap["start"][gw], snap["end"][gw]) for gw in snap["end"]
                         if snap["start"][gw] and snap["end"][gw]}  # fmt: skip
    return out


# ---- the run -----------------------------------------------------------------------------------------
def live_bench(flows=None, frame_size: int = 128, *, quick: bool = False, workers: int | None = None,
               topology: str = "sites", progress=None) -> dict:  # fmt: skip
    say = progress or (lambda _m: None)
    flows = tuple(flows or (FLOWS_QUICK if quick else FLOWS))
    seconds, warmup_s = (SECONDS_QUICK, WARMUP_S_QUICK) if quick else (SECONDS, WARMUP_S)
    cpus = live.default_cpus()
    # --quick: inline only (here RPS onto the gateways' CPU loses for both kinds: the receive work
    # starves the gateways, see live.PLACEMENTS); the full run measures both and keeps the better
    placements = live.PLACEMENTS if cpus and not quick else ("inline",)
    bed = sites_bed if topology == "sites" else gateway_bed
    t_start = time.perf_counter()
    points, notes, kernel_esp = [], [], False
    beds = [("flowpath", "plain"), ("flowpath", "esp"), ("linux", "plain")]
    if topology != "sites":  # h1 -- gw -- h2 has no tunnel
        beds.remove(("flowpath", "esp"))
    for kind, mode in beds:
        with bed(kind, mode == "esp", workers, say) as (lp, gws, tb):
            if tb is not None and kind == "linux":  # ESP in this kernel? then Linux through the tunnel too
                why = kernel_esp_missing(tb)
                if why:
                    notes.append(f"this kernel has no ESP ({why}): Linux gateways measured plain only")
                    say(notes[-1])
                else:
                    kernel_esp = True
                    beds.append(("linux", "esp"))
            points += measure_bed(lp, gws, kind, mode, flows, frame_size, seconds=seconds, warmup_s=warmup_s,
                                  placements=placements, cpus=cpus, say=say)  # fmt: skip
    out = {
        "scenario": "live",
        "flowpath_version": __version__,
        "topology": topology,
        "quick": quick,
        "frame_size": frame_size,
        "flows": list(flows),
        "headline_flows": max(flows),
        "seconds": seconds,
        "warmup_s": warmup_s,
        "workers": workers or 1,
        "cpus": {"sender": cpus[0], "gateways": cpus[1]} if cpus else None,
        "placements": list(placements),
        "kernel_esp": kernel_esp,
        "notes": notes,
        "traffic": "UDP one flow per source port from 20000, flows opened first (offloaded), flowpath trafgen "
        "--live --rate max from the sender, dropped at netdev ingress on the receiver and counted there",
        "size_convention": "frame sizes are wire frames with the 4-byte FCS; Gbit/s count the L2 frame with "
        "FCS (inner frame through ESP)",
        "points": points,
    }
    out.update(headline(points, max(flows)))
    out["duration_s"] = round(time.perf_counter() - t_start, 1)
    return out


def headline(points: list[dict], n: int) -> dict:
    """flowpath_mpps, kernel_mpps, flowpath_esp_mpps... at n flows; TCP and ping per (kind, mode)."""
    out = {}
    for p in points:
        if p["flows"] != n:
            continue
        key = NAME[p["kind"]] + ("_esp" if p["mode"] == "esp" else "")
        out.update({f"{key}_{k}": p[k] for k in ("mpps", "gbps", "sender_mpps", "sender_bound", "tcp_gbps",
                                                 "tcp4_gbps", "ping_avg_ms", "placement")})  # fmt: skip
    if out.get("kernel_mpps"):
        out["flowpath_vs_kernel_mpps"] = out["flowpath_mpps"] / out["kernel_mpps"]
    return out


class LiveResult(ScenarioResult):
    def table(self):
        from rich.table import Table

        r = self.data
        t = Table("gateways", "mode", "flows", "Mpps", "Gb/s", "sent Mpps", "placement", "gw CPU ns/pkt",
                  "TCP Gb/s (1 / 4)", "ping ms",
                  title=f"bench live ({r['topology']}), {r['frame_size']}-byte frames, {r['seconds']:g} s windows",
                  caption="; ".join(r["notes"] + ["*: sender-bound (everything sent arrived)"]))  # fmt: skip
        for p in r["points"]:
            b = p["by_placement"][p["placement"]]
            ns = b.get("gateway_cpu_ns_per_packet")
            star = "*" if p.get("sender_bound") else ""
            t.add_row(p["kind"], p["mode"], f"{p['flows']:,}", f"{p['mpps']:.3f}{star}", f"{p['gbps']:.3f}",
                      f"{p['sender_mpps']:.3f}", p["placement"], f"{ns:.0f}" if ns else "-",
                      f"{p['tcp_gbps']:.2f} / {p['tcp4_gbps']:.2f}",
                      f"{p['ping_avg_ms']:.3f}" if p["ping_avg_ms"] is not None else "-")  # fmt: skip
        return t

    def plot(self, path):
        from flowpath.bench.plot_scenarios import plot_live

        return plot_live(self.data, Path(path))


class LiveBench:
    """`flowpath bench live`: the testbed's gateways, flowpath and Linux, per flow count."""

    name = "live"

    def check(self, opts: BenchOptions) -> None:
        check(opts)

    def run(self, opts: BenchOptions, progress: Progress) -> LiveResult:
        progress.start(self.name)
        r = live_bench(opts.flows, opts.frame_size or 128, quick=opts.quick,
                       workers=opts.workers[0] if opts.workers else None,
                       topology=opts.topology or "sites", progress=progress.say)  # fmt: skip
        progress.done()
        return LiveResult(r)
