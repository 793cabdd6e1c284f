"""The per-poll fixed cost of Worker.poll: one offloaded UDP flow of the bundled example gateway, polls
of 1 and of 1024 packets, best of 5 rounds (µs per poll). Run it in two checkouts to compare them:

    python benchmarks/poll_cost.py
"""

from __future__ import annotations

import time
from pathlib import Path

from scapy.all import IP, UDP, Ether, Raw

from flowpath.config.ipbatch import parse_network
from flowpath.config.nft import parse_ruleset
from flowpath.datapath import Worker
from flowpath.packet.batch import PacketBatch

EX = Path(__file__).resolve().parents[1] / "examples"


def main() -> None:
    w = Worker(parse_network((EX / "gateway.ip").read_text(), "gateway.ip"),
               parse_ruleset((EX / "gateway.nft").read_text(), "gateway.nft"))  # fmt: skip
    up = bytes(Ether(src="02:00:00:00:01:0a", dst="02:00:00:00:01:01") / IP(src="192.168.1.10", dst="198.51.100.7")
               / UDP(sport=5000, dport=53) / Raw(b"q" * 70))  # fmt: skip
    down = bytes(Ether(src="02:00:00:00:02:fe", dst="02:00:00:00:02:01") / IP(src="198.51.100.7", dst="203.0.113.1")
                 / UDP(sport=53, dport=5000) / Raw(b"r" * 70))  # fmt: skip
    t = 1_700_000_000_000_000_000
    for frame, ifindex in ((up, 2), (down, 3), (up, 2)):  # the reply offloads the flow
        b = PacketBatch(4)
        b.append(frame, ifindex, t)
        w.poll(b)
        t += 1000
    for n, polls in ((1, 20000), (1024, 400)):
        b, best = PacketBatch(n), float("inf")
        for _ in range(5):
            spent = 0.0
            for _ in range(polls):
                b.clear()
                for _ in range(n):
                    b.append(up, 2, t)
                t0 = time.perf_counter()
                w.poll(b)
                spent += time.perf_counter() - t0
                t += 1000
            best = min(best, spent / polls)
        print(f"{n:5}-packet poll: {best * 1e6:6.2f} us")
    assert w.stats.fastpath_packets > 0


if __name__ == "__main__":
    main()
