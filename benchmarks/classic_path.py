#!/usr/bin/env python3
"""Classic-path (slow path) forwarding rate: 128-byte UDP frames through the NAT gateway, one core.

Every packet takes the full Python path of a Linux gateway: parse, PREROUTING (conntrack, DNAT hook),
routing, FORWARD rules, POSTROUTING (masquerade), TTL, neighbour, transmit. Flows are established
first, so this is the steady state the flowtable workshop slides' "classic forwarding path
(baseline)" measures.

    python benchmarks/classic_path.py [--flows N] [--packets N] [--frame-size B] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from flowpath.bench.flowtable import RUN_TS_NS, _establish
from flowpath.bench.setup import LAN_IF, NET, RULES, PoolState, flow_frames, pool
from flowpath.config.ipbatch import parse_network
from flowpath.config.nft import parse_ruleset
from flowpath.datapath import Worker


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=100)
    ap.add_argument("--packets", type=int, default=20000)
    ap.add_argument("--frame-size", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", dest="json_path")
    a = ap.parse_args(argv)
    w = Worker(parse_network(NET), parse_ruleset(RULES), flowtable=False)
    up, down = flow_frames(a.flows, a.frame_size)
    _establish(w, up, down, 256)
    st = PoolState(pool(up, LAN_IF, a.packets, 256))
    times = []
    for _ in range(a.reps):
        st.restore(RUN_TS_NS)
        t0 = time.perf_counter()
        for b in st.batches:
            w.poll(b)
        times.append(time.perf_counter() - t0)
    best, med = a.packets / min(times), a.packets / float(np.median(times))
    res = {"path": "classic", "frame_size": a.frame_size, "flows": a.flows, "packets": a.packets,
           "pps_best": round(best), "pps_median": round(med), "us_per_packet": round(1e6 / best, 2)}  # fmt: skip
    print(f"classic path, {a.frame_size}-byte UDP, {a.flows} flows, 1 core: {best:,.0f} pps best "
          f"({med:,.0f} median), {1e6 / best:.1f} us/packet")  # fmt: skip
    if a.json_path:
        with open(a.json_path, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
