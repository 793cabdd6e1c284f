#!/usr/bin/env python3
"""A per-source meter in the forward chain: packets per second through the compiled classic lane, and
through the Python classic path, for the same frames (every one a new UDP connection from one of 64
LAN hosts, so each runs the meter: `meter perhost { ip saddr limit rate over 100000/second } drop` and
`update @seen { ip saddr counter }`). Reports the lane's punts: none, once the meter runs in the VM.

    python benchmarks/nft_meter_lane.py [--packets N] [--batch N] [--reps N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from scapy.all import IP, UDP, Ether, raw

from flowpath.config.ipbatch import parse_network
from flowpath.config.nft import parse_ruleset
from flowpath.datapath import Worker
from flowpath.packet.batch import PacketBatch
from flowpath.packet.reason import PUNT_NFT

ROOT = Path(__file__).resolve().parent.parent
RULES = """table inet lt {
	set seen {
		type ipv4_addr
		flags dynamic,timeout
		timeout 1m
	}

	chain forward {
		type filter hook forward priority filter; policy accept;
		meter perhost { ip saddr limit rate over 100000/second } counter drop
		update @seen { ip saddr counter } counter accept
	}
}
"""


def _frames(n: int) -> list[bytes]:
    gw = "02:00:00:00:01:01"
    return [raw(Ether(src="02:00:00:00:01:0a", dst=gw) / IP(src=f"192.168.1.{10 + i % 64}", dst="198.18.0.9")
                / UDP(sport=1024 + i // 64, dport=53) / (b"q" * 60)) for i in range(n)]  # fmt: skip


def run(frames: list[bytes], batch: int, lane: bool) -> tuple[float, int, int]:
    """(packets per second, forwarded, lane punts for nft) for one fresh Worker over the frames."""
    w = Worker(parse_network((ROOT / "examples" / "gateway.ip").read_text()), parse_ruleset(RULES),
               flowtable=False, classic_lane=lane)  # fmt: skip
    lan0 = w.net.dev.link_by_name("lan0").ifindex
    warm = PacketBatch(1)
    warm.append(
        raw(Ether(dst="02:00:00:00:01:01") / IP(src="192.168.1.200", dst="198.18.0.9") / UDP()), lan0, 0
    )
    w.poll(warm)  # compiles outside the timing
    batches = []
    for j in range(0, len(frames), batch):
        b = PacketBatch(batch)
        for f in frames[j : j + batch]:
            b.append(f, lan0, 10**9 + j * 1000)  # 1 us apart
        batches.append(b)
    sent = 0
    t0 = time.perf_counter()
    for b in batches:
        sent += len(list(w.poll(b).frames()))
    dt = time.perf_counter() - t0
    return len(frames) / dt, sent, int(w.stats.lane_punts[PUNT_NFT])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args(argv)
    frames = _frames(a.packets)
    res = {}
    for lane in (True, False):
        best = max((run(frames, a.batch, lane) for _ in range(a.reps)), key=lambda r: r[0])
        res[lane] = best
        name = "classic lane (compiled)" if lane else "Python classic path"
        print(f"  {name:26s} {best[0]:10,.0f} pps  forwarded {best[1]}/{a.packets}  lane nft punts {best[2]}")
    print(
        f"meter ruleset, new connections, batch {a.batch}: lane/Python = {res[True][0] / res[False][0]:.1f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
