#!/usr/bin/env python3
"""The live traffic generator's ceiling: `flowpath trafgen PROFILE --live IF --rate max` into a sink,
at 64, 128 and 1400-byte frames (sizes with FCS, as trafgen counts them), in Mpps and Gbit/s.

No Linux counterpart. Two private network namespaces joined by a veth pair; the sink's end drops
every frame at its netdev ingress hook (an nft `policy drop` chain), and its rx_packets over the
generator's run is what arrived. The generator is the CLI itself in the other namespace (one UDP
stream, signatures stamped per frame); the rate it reports (frames queued over its run) is printed
beside the sink's. A veth delivers on the sender's CPU, so by default the sink's receive work (up to
the ingress drop) is paid by the generator's CPU; `--rps` moves it to the other CPU (RPS on the
sink's veth), the setting benchmarks/live_forward.py gives its gateways.
Gbit/s are L2 (frame bytes with FCS); L1 adds 20 bytes per frame.

Measured 2026-12-06 (shared 2-vCPU KVM guest, load average 2.2-3.0 from other tenants; five runs of
3 s, sink inline or with --rps, which made no consistent difference): trafgen 64 B 0.46-0.61 Mpps
(0.23-0.31 Gbit/s), 128 B 0.34-0.56 Mpps (0.35-0.57 Gbit/s), 1400 B 0.39-0.53 Mpps (4.3-5.9 Gbit/s);
a sender of one prebuilt frame (since removed) 0.26-0.66 Mpps in the same runs: neither ahead beyond
the noise, the kernel's per-frame tpacket_snd + veth + ingress work dominates both. Every frame sent reached the sink. The same day
benchmarks/live_forward.py forwarded 128-byte frames at 0.11 (flowpath, RPS) / 0.40 (flowpath, inline,
sender-bound) / 0.39 / 0.29 Mpps (kernel), so the generator is ahead of the forwarders by 1.4x or so at
best: a veth delivers on the sender's CPU, so on this machine every live figure shares one or two cores.

    python benchmarks/trafgen_live.py [--seconds 3] [--sizes 64,128,1400] [--rps] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this source tree's flowpath

from flowpath.testbed.netns import Testbed, require_netns  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROFILE = """[[stream]]
name = "max"
size = {size}
duration_s = 3600.0
"""


def rx_packets(ns, dev: str) -> int:
    return int(ns.link(dev)["stats64"]["rx"]["packets"])


def run_trafgen(gen, size: int, seconds: float, tmp: Path) -> dict:
    prof, out = tmp / f"max{size}.toml", tmp / f"tx{size}.json"
    prof.write_text(PROFILE.format(size=size))
    gen.run("env", f"PYTHONPATH={ROOT}", sys.executable, "-m", "flowpath", "trafgen", prof, "--live", "gen0",
            "--rate", "max", "--duration", seconds, "--json", out, "-q", timeout=seconds + 120)  # fmt: skip
    return json.loads(out.read_text())


def measure(tb, gen, sink, size: int, seconds: float, sender: str, tmp: Path) -> dict:
    before = rx_packets(sink, "sink0")
    t0 = time.monotonic()
    res = run_trafgen(gen, size, seconds, tmp)
    wall = time.monotonic() - t0
    got = rx_packets(sink, "sink0") - before
    d = res["duration_s"]
    sent_pps = res["packets"] / d
    sink_pps = got / d
    return {"sender": sender, "frame_size": size, "seconds": d, "sent": res["packets"], "received": got,
            "sent_mpps": sent_pps / 1e6, "sink_mpps": sink_pps / 1e6, "sink_gbps": sink_pps * size * 8 / 1e9,
            "sink_l1_gbps": sink_pps * (size + 20) * 8 / 1e9, "wall_s": wall}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--sizes", default="64,128,1400")
    ap.add_argument("--rps", action="store_true", help="the sink's receive work on the other CPU")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    why = require_netns()
    if why:
        print(f"trafgen_live: {why}", file=sys.stderr)
        return 2
    rows = []
    with Testbed("fpb") as tb, tempfile.TemporaryDirectory() as tmpd:
        gen, sink = tb.add_netns("gen"), tb.add_netns("sink")
        tb.veth(gen, "gen0", sink, "sink0", a_mac="02:00:00:00:01:0a", b_mac="02:00:00:00:01:01")
        for ns, dev in ((gen, "gen0"), (sink, "sink0")):
            ns.sysctl(f"net.ipv6.conf.{dev}.disable_ipv6=1")
        sink.run("nft", "-f", "-", input="table netdev sink {\n chain in {\n type filter hook ingress device sink0 "
                                         "priority 0; policy drop;\n }\n}\n")  # fmt: skip
        if a.rps and (os.cpu_count() or 1) > 1:
            sink.run("sh", "-c", "echo 2 > /sys/class/net/sink0/queues/rx-0/rps_cpus")
            gen.run("sh", "-c", "echo 1 > /sys/class/net/gen0/queues/rx-0/rps_cpus")
        senders = ["trafgen"]
        for size in [int(x) for x in a.sizes.split(",")]:
            for sender in senders:
                r = measure(tb, gen, sink, size, a.seconds, sender, Path(tmpd))
                r["rps"] = a.rps
                rows.append(r)
                print(f"{sender:8s} {size:5d} B: sent {r['sent_mpps']:.3f} Mpps, sink {r['sink_mpps']:.3f} Mpps "
                      f"= {r['sink_gbps']:.2f} Gbit/s L2 ({r['sink_l1_gbps']:.2f} L1)", flush=True)  # fmt: skip
    if a.json:
        a.json.write_text(json.dumps({"runs": rows, "loadavg": os.getloadavg()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
