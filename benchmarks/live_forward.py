"""Live forwarding, flowpath against the Linux kernel, on the same veth topology and the same sender:
128-byte UDP frames h1 -> h2 (Mpps received at h2) and iperf3 TCP (one stream, then -P 4), through
flowpath.testbed.gateway's h1 -- gw -- h2 with each kind of gateway in turn, one run:

    python benchmarks/live_forward.py [--seconds 3] [--json out.json] [--kinds flowpath,linux]

Root only (network namespaces). The UDP sender is `flowpath trafgen --live --rate max` on h1 (its
transmit ring, one UDP flow per source port, each frame signed; `--sender iperf3` uses iperf3 -u -b 0
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
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this source tree's flowpath

from flowpath.testbed.gateway import (  # noqa: E402
    H1_MAC,
    H1_V4,
    H2_V4,
    KINDS,
    LAN_MAC,
    GatewayTopology,
    flowpath_env,
)
from flowpath.testbed.netns import require_netns  # noqa: E402

ETH_FCS_LEN, ETH_HLEN, IPV4_HLEN, UDP_HLEN = 4, 14, 20, 8
UDP_PORT, TCP_PORT, BLAST_PORT, BLAST_SPORT = 5201, 5202, 9, 20000

# h2: answer the first datagram of each of N flows from where it came (the masqueraded tuple).
RESPONDER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2]))); s.settimeout(10)
seen = set()
while len(seen) < int(sys.argv[3]):
    data, src = s.recvfrom(2048)
    seen.add(src); s.sendto(data, src)
"""
# h1: open each flow from its source port and wait for h2's answer.
OPENER = """
import socket, sys
for sport in range(int(sys.argv[3]), int(sys.argv[3]) + int(sys.argv[4])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[5], sport)); s.settimeout(5)
    s.sendto(b"open", (sys.argv[1], int(sys.argv[2])))
    s.recvfrom(2048)
"""
SINK = """table netdev sink {
	chain ingress {
		type filter hook ingress device "eth0" priority 0; policy accept;
		udp dport %d drop
	}
}
"""


def rx_tx(t: GatewayTopology) -> tuple[int, int]:
    """(packets h2's eth0 received, packets h1's eth0 sent)."""
    return t.h2.link("eth0")["stats64"]["rx"]["packets"], t.h1.link("eth0")["stats64"]["tx"]["packets"]


PROFILE = """[[stream]]
name = "udp"
src_mac = "{src_mac}"
dst_mac = "{dst_mac}"
saddr = "{saddr}"
daddr = "{daddr}"
sport = {{ min = {sport}, max = {sport_max}, op = "inc" }}
dport = {dport}
size = {size}
duration_s = 3600.0
"""


def trafgen_mpps(t: GatewayTopology, frame_size: int, flows: int, seconds: float, cpu: int | None,
                 warmup_s: float = 1.0):  # fmt: skip
    """(Mpps received at h2, Mpps sent by h1, CPU busy shares) over `seconds` of `flowpath trafgen
    --live --rate max` from h1 (one UDP flow per source port), after warmup_s."""
    args = (H2_V4, BLAST_PORT, flows)
    responder = t.h2.popen(sys.executable, "-c", RESPONDER, *args, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while not t.h2.run("ss", "-Hlun", f"sport = :{BLAST_PORT}", check=False).stdout.strip():
        if time.monotonic() > deadline:
            raise RuntimeError("the UDP responder does not listen on h2")
        time.sleep(0.05)
    t.h1.run(sys.executable, "-c", OPENER, *args[:2], BLAST_SPORT, flows, H1_V4, timeout=30)
    responder.wait(10)
    t.h2.run("nft", "-f", "-", input=SINK % BLAST_PORT)
    profile = t.workdir / "udp.toml"
    profile.write_text(PROFILE.format(src_mac=H1_MAC, dst_mac=LAN_MAC, saddr=H1_V4, daddr=H2_V4, sport=BLAST_SPORT,
                                      sport_max=BLAST_SPORT + flows - 1, dport=BLAST_PORT, size=frame_size))  # fmt: skip
    total = warmup_s + seconds + 1.0
    taskset = ("taskset", "-c", cpu) if cpu is not None else ()
    gen = t.h1.popen(*taskset, sys.executable, "-m", "flowpath", "trafgen", profile, "--live", "eth0", "--rate", "max",
                     "--duration", f"{total:.1f}", "-q", stderr=subprocess.PIPE, env=flowpath_env())  # fmt: skip
    res = _window(t, warmup_s, seconds)
    _, err = gen.communicate(timeout=total + 60)
    if gen.returncode != 0:
        raise RuntimeError(f"trafgen --live: {err.decode()}")
    t.h2.run("nft", "delete", "table", "netdev", "sink")
    return res


def cpu_times() -> dict[int, tuple[int, int]]:
    """Per CPU (busy, total) jiffies from /proc/stat (idle and iowait are not busy)."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *vals = line.split()
        if name.startswith("cpu") and name != "cpu":
            v = [int(x) for x in vals]
            out[int(name[3:])] = (sum(v) - v[3] - v[4], sum(v))
    return out


def _window(t: GatewayTopology, warmup_s: float, seconds: float) -> tuple[float, float, dict[int, float]]:
    """(Mpps received at h2, Mpps sent by h1, busy share of each CPU) over `seconds`."""
    time.sleep(warmup_s)
    rx0, tx0 = rx_tx(t)
    c0 = cpu_times()
    t0 = time.monotonic()
    time.sleep(seconds)
    rx1, tx1 = rx_tx(t)
    c1 = cpu_times()
    dt = time.monotonic() - t0
    busy = {c: (c1[c][0] - c0[c][0]) / max(1, c1[c][1] - c0[c][1]) for c in c1 if c in c0}
    return (rx1 - rx0) / dt / 1e6, (tx1 - tx0) / dt / 1e6, busy


def iperf3_mpps(t: GatewayTopology, frame_size: int, flows: int, seconds: float, cpu: int | None,
                warmup_s: float = 1.0):  # fmt: skip
    """(Mpps received at h2, Mpps sent by h1) over `seconds` of iperf3 -u -b 0, after warmup_s."""
    payload = frame_size - ETH_FCS_LEN - ETH_HLEN - IPV4_HLEN - UDP_HLEN
    server = t.h2.popen("iperf3", "-s", "-1", "-p", UDP_PORT, "-B", H2_V4)
    _wait_listening(t, UDP_PORT)
    total = warmup_s + seconds + 1.0
    taskset = ("taskset", "-c", cpu) if cpu is not None else ()
    client = t.h1.popen(*taskset, "iperf3", "-c", H2_V4, "-p", UDP_PORT, "-u", "-b", "0", "-l", payload,
                        "-P", flows, "-t", f"{total:.1f}")  # fmt: skip
    res = _window(t, warmup_s, seconds)
    for p in (client, server):
        p.wait(total + 10)
    return res


def tcp_gbps(t: GatewayTopology, streams: int, seconds: float) -> float:
    """iperf3 TCP h1 -> h2 with `streams` parallel streams: the receiver's Gbit/s."""
    server = t.h2.popen("iperf3", "-s", "-1", "-p", TCP_PORT, "-B", H2_V4)
    _wait_listening(t, TCP_PORT)
    p = t.h1.run("iperf3", "-c", H2_V4, "-p", TCP_PORT, "-P", streams, "-t", seconds, "-O", "1", "-J",
                 timeout=seconds + 30)  # fmt: skip
    server.wait(10)
    return json.loads(p.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9


def ping_avg_ms(t: GatewayTopology, count: int = 20) -> float | None:
    """The average round trip of `ping` h1 -> h2 through the idle gateway (ms)."""
    p = t.h1.run("ping", "-q", "-c", count, "-i", "0.05", H2_V4, check=False, timeout=count + 10)
    for line in p.stdout.splitlines():
        if line.startswith("rtt"):
            return float(line.split("=")[1].split("/")[1])
    return None


def _wait_listening(t: GatewayTopology, port: int) -> None:
    deadline = time.monotonic() + 10
    while not t.h2.run("ss", "-Hltn", f"sport = :{port}", check=False).stdout.strip():
        if time.monotonic() > deadline:
            raise RuntimeError(f"iperf3 does not listen on h2:{port}")
        time.sleep(0.05)


def pin(t: GatewayTopology, gateway_cpu: int, rps: bool) -> None:
    """flowpath's threads onto gateway_cpu, and with rps the gateway's receive work too (RPS)."""
    if rps:
        for dev in ("lan0", "wan0"):
            t.gw.run("sh", "-c", f"echo {1 << gateway_cpu:x} > /sys/class/net/{dev}/queues/rx-0/rps_cpus")
    if t.kind == "flowpath":
        subprocess.run(["taskset", "-a", "-p", "-c", str(gateway_cpu), str(t.gateway.proc.pid)],
                       check=True, capture_output=True)  # fmt: skip


def measure(kind: str, args, rps: bool) -> dict:
    with GatewayTopology(kind, run_args=args.flowpath_arg) as t:
        if args.cpus:
            pin(t, args.cpus[1], rps)
        udp = trafgen_mpps if args.sender == "trafgen" else iperf3_mpps
        mpps, sent, busy = udp(t, args.frame_size, args.flows, args.seconds, args.cpus[0] if args.cpus else None)
        gw_busy = busy.get(args.cpus[1]) if args.cpus else None
        return {
            "mpps": mpps,
            "sender_mpps": sent,
            # the gateway CPU's busy share in the window: below 1.0 the gateway had time to spare, and
            # mpps / busy estimates what it would forward per CPU given enough traffic
            "gateway_cpu_busy": gw_busy,
            "mpps_per_gateway_cpu": mpps / gw_busy if gw_busy and gw_busy > 0.2 else None,  # else it ran elsewhere
            "ping_avg_ms": ping_avg_ms(t),
            "tcp_gbps": tcp_gbps(t, 1, args.seconds),
            "tcp4_gbps": tcp_gbps(t, 4, args.seconds),
        }


# Where each gateway's receive work runs. "rps": RPS moves it to the gateway's CPU: the kernel's
# whole forwarding, and for flowpath the packet socket's copy into its ring, which then competes
# with flowpath's own thread there (a flood the ring cannot take still costs that copy: receive
# livelock). "inline": it runs where the veth delivers, in the sender's softirq, as a NIC's DMA and
# interrupt would take it off the gateway's CPU. Each gateway is measured both ways; the headline
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
    ap.add_argument("--cpus", default="0,1" if (os.cpu_count() or 1) >= 2 else "",
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
