#!/usr/bin/env python3
"""Ping through the masquerading gateway: ICMP echo request/reply pairs via Worker.poll, the compiled
classic lane against the Python classic path (`classic_lane=False`), side by side in one run.

A LAN client pings servers on the Internet: --ids echo ids (each a conntrack entry, opened by its
first request, masqueraded with the id as its "port"), --pairs request/reply pairs spread over them,
each reply right after its request, in polls of --batch packets. Each repetition starts from a fresh
Worker (new entries again); the best of --reps is reported. No flowtable: ICMP is never offloaded.

    python benchmarks/classic_lane_icmp.py [--pairs N] [--ids N] [--batch N] [--reps N] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from scapy.all import ICMP, IP, Ether, Raw, raw

from flowpath.bench.setup import GW_LAN, GW_WAN, LAN_IF, NET, RULES, WAN_IF
from flowpath.config.ipbatch import parse_network
from flowpath.config.nft import parse_ruleset
from flowpath.datapath import Worker
from flowpath.packet.batch import PacketBatch

T0_NS = 1_700_000_000 * 10**9


def echo_frames(pairs: int, ids: int) -> list[tuple[bytes, int]]:
    """(frame, iif): request k from 10.0.0.2, then its reply to the masquerade address."""
    out = []
    for k in range(pairs):
        eid, server = 0x1000 + k % ids, f"198.51.100.{1 + k % ids % 250}"
        req = Ether(src="02:00:00:00:01:02", dst=GW_LAN.hex(":")) / IP(src="10.0.0.2", dst=server) / ICMP(
            type=8, id=eid, seq=k // ids) / Raw(bytes(56))  # fmt: skip
        rep = Ether(src="02:00:00:00:02:fe", dst=GW_WAN.hex(":")) / IP(src=server, dst="203.0.113.1") / ICMP(
            type=0, id=eid, seq=k // ids) / Raw(bytes(56))  # fmt: skip
        out += [(raw(req), LAN_IF), (raw(rep), WAN_IF)]
    return out


def batches(frames: list[tuple[bytes, int]], size: int) -> list[PacketBatch]:
    out = []
    for start in range(0, len(frames), size):
        b = PacketBatch(size)
        for j, (f, iif) in enumerate(frames[start : start + size]):
            b.append(f, iif, T0_NS + (start + j) * 1000)
        out.append(b)
    return out


def run(frames, size: int, lane: bool) -> tuple[float, dict]:
    """Seconds for one pass through a fresh Worker (polls only), and its lane counters."""
    w = Worker(parse_network(NET), parse_ruleset(RULES), flowtable=False, classic_lane=lane)
    bs = batches(frames, size)
    t0 = time.perf_counter()
    for b in bs:
        w.poll(b)
    dt = time.perf_counter() - t0
    st = w.stats
    return dt, {"tx": st.tx_packets, "lane": st.lane_packets, "punted": int(st.lane_punts.sum())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--ids", type=int, default=50)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", dest="json_path")
    a = ap.parse_args(argv)
    frames = echo_frames(a.pairs, a.ids)
    res = {"pairs": a.pairs, "ids": a.ids, "batch": a.batch}
    for lane in (True, False):
        _, c = run(frames, a.batch, lane)  # warm: compiled code loaded, first-use costs paid
        best = min(run(frames, a.batch, lane)[0] for _ in range(a.reps))
        name = "lane" if lane else "python"
        res[f"{name}_pps"], res[f"{name}_counts"] = round(len(frames) / best), c
        print(f"{name:>6}: {len(frames) / best:>10,.0f} pps ({1e6 * best / len(frames):.2f} us/packet)  {c}")
    print(f"ratio lane/python: {res['lane_pps'] / res['python_pps']:.1f}x")
    if a.json_path:
        with open(a.json_path, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
