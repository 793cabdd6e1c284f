"""Live forwarding, flowpath against the Linux kernel, on the same veth topology and the same sender:
128-byte UDP frames h1 -> h2 (Mpps received at h2) and iperf3 TCP (one stream, then -P 4), through
flowpath.testbed.gateway's h1 -- gw -- h2 with each kind of gateway in turn, one run:

    python benchmarks/live_forward.py [--seconds 3] [--json out.json] [--kinds flowpath,linux]

Root only (network namespaces). The measurements are flowpath.bench.live's, which `flowpath bench
live` (the four-box testbed) shares; this is its three-box form. The UDP sender is `flowpath trafgen
--live --rate max` on h1 (its transmit ring, one UDP flow per source port, each frame signed; `--sender iperf3` uses iperf3 -u -b 0
instead, several times slower here). Each flow is first opened as a real one: a socket on h1 sends
from the flow's source port and a responder on h2 answers through the masquerade, so conntrack sees
the reply and `flow add` offloads it, as for any UDP conversation; then h2 drops the port's
datagrams at ingress (netdev hook) and counts what reaches its interface: the veth's rx_packets over
the timed window, after a warm-up. The rate h1 sent in the same window is printed beside it: a
gateway that forwards everything it is given is sender-bound.

On a machine with two CPUs or more, the sender runs on one CPU and the gateway's work on another for
both kinds (`--cpus SENDER,GATEWAY`): RPS on gw's lan0 and wan0 moves the kernel gateway's receive
processing (forwarding, conntrack, NAT; for flowpath, the packet socket's copy into its ring) off
the sender's CPU, where a veth would otherwise run it inline, and flowpath's process is pinned to the
gateway's CPU.
Frame sizes count the 4-byte FCS as `flowpath bench frame-sizes` does (RFC 2544): a 128-byte frame
carries 82 bytes of UDP payload. All of it shares the machine's cores: sender, gateway and receiver
compete, so the numbers are the ratio of one run, not either gateway's ceiling.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this source tree's flowpath

from flowpath.bench import live  # noqa: E402
from flowpath.testbed.gateway import H1_MAC, H1_V4, H2_V4, KINDS, LAN_MAC, GatewayTopology  # noqa: E402
from flowpath.testbed.netns import require_netns  # noqa: E402


def live_path(t: GatewayTopology) -> live.LivePath:
    """h1 sends, h2 receives, gw's lan0 and wan0 forward."""
    pids = [t.gateway.proc.pid] if t.kind == "flowpath" else []
    return live.LivePath(t.h1, "eth0", H1_MAC, H1_V4, LAN_MAC, t.h2, "eth0", H2_V4,
                         [(t.gw, "lan0"), (t.gw, "wan0")], pids, t.workdir)  # fmt: skip


def measure(kind: str, args, rps: bool) -> dict:
    with GatewayTopology(kind, run_args=args.flowpath_arg) as t:
        lp = live_path(t)
        if args.cpus:
            live.pin(lp, args.cpus[1])
            live.rps(lp, args.cpus[1] if rps else None)
        udp = live.udp_flood if args.sender == "trafgen" else live.iperf3_udp
        u = udp(lp, args.frame_size, args.flows, args.seconds, args.cpus[0] if args.cpus else None)
        gw_busy = u["cpu"][args.cpus[1]]["busy"] if args.cpus else None
        mpps = u["mpps"]
        return {
            "mpps": mpps,
            "sender_mpps": u["sender_mpps"],
            # the gateway CPU's busy share in the window: below 1.0 the gateway had time to spare, and
            # mpps / busy estimates what it would forward per CPU given enough traffic
            "gateway_cpu_busy": gw_busy,
            "mpps_per_gateway_cpu": mpps / gw_busy if gw_busy and gw_busy > 0.2 else None,  # else it ran elsewhere
            "ping_avg_ms": live.ping_avg_ms(lp),
            "tcp_gbps": live.tcp_gbps(lp, 1, args.seconds),
            "tcp4_gbps": live.tcp_gbps(lp, 4, args.seconds),
        }


# Each gateway is measured in both placements (flowpath.bench.live.PLACEMENTS); the headline
# figures are each one's better placement.
PLACEMENTS = {"rps": True, "inline": False}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="timed window of each measurement")
    ap.add_argument("--frame-size", type=int, default=128, help="UDP frame size with FCS (bytes)")
    ap.add_argument("--flows", type=int, default=1, help="UDP flows (source ports)")
    ap.add_argument("--sender", choices=("trafgen", "iperf3"), default="trafgen", help="UDP sender on h1")
    ap.add_argument("--kinds", default=",".join(KINDS), help="gateways to measure, in order")
    ap.add_argument("--flowpath-arg", action="append", default=[], help="extra `flowpath run` option")
    ap.add_argument("--cpus", default=",".join(map(str, live.default_cpus() or ())),
                    help="SENDER,GATEWAY CPUs ('' to leave placement to the scheduler)")  # fmt: skip
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    args.cpus = [int(c) for c in args.cpus.split(",")] if args.cpus else None
    reason = require_netns()
    if reason:
        print(f"live_forward: {reason}", file=sys.stderr)
        return 2
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    places = list(PLACEMENTS) if args.cpus else ["inline"]
    res = {}
    for kind in kinds:
        for place in places:
            try:
                res[kind, place] = measure(kind, args, PLACEMENTS[place])
            except (RuntimeError, subprocess.SubprocessError, OSError) as e:
                print(f"live_forward: {kind}: {e}", file=sys.stderr)
                return 1
    cols = list(res)
    print(f"{args.frame_size}-byte UDP frames, {args.flows} flow(s), {args.seconds:g} s windows, "
          f"sender {args.sender}")  # fmt: skip
    print(f"{'':24}" + "".join(f"{f'{k} ({p})':>20}" for k, p in cols))
    for key, label in (("mpps", "UDP Mpps at h2"), ("sender_mpps", "  sent by h1 (Mpps)"),
                       ("gateway_cpu_busy", "  gateway CPU busy"), ("mpps_per_gateway_cpu", "  Mpps per gw CPU"),
                       ("ping_avg_ms", "ping RTT avg (ms)"),
                       ("tcp_gbps", "TCP 1 stream Gbit/s"), ("tcp4_gbps", "TCP 4 streams Gbit/s")):  # fmt: skip
        print(f"{label:24}" + "".join(f"{res[c][key]:20.3f}" if res[c][key] is not None else f"{'-':>20}"
                                      for c in cols))  # fmt: skip
    out = {"frame_size": args.frame_size, "flows": args.flows, "seconds": args.seconds, "sender": args.sender,
           "cpus": args.cpus}  # fmt: skip
    for kind, name in (("flowpath", "flowpath"), ("linux", "kernel")):
        mine = {p: r for (k, p), r in res.items() if k == kind}
        if not mine:
            continue
        best = max(mine, key=lambda p: mine[p]["mpps"])
        out.update({f"{name}_{k}": v for k, v in mine[best].items()})
        out[f"{name}_placement"] = best
        for p, r in mine.items():
            out.update({f"{name}_{p}_{k}": v for k, v in r.items()})
    if "flowpath_mpps" in out and "kernel_mpps" in out:
        print(f"flowpath / kernel, each in its better placement: {out['flowpath_mpps'] / out['kernel_mpps']:.2f}x "
              f"packets, {out['flowpath_tcp_gbps'] / out['kernel_tcp_gbps']:.2f}x TCP")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
