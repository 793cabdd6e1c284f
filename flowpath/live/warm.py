"""Load the datapath's compiled kernels before a live gateway says it is ready.

No Linux counterpart (a kernel module is linked before it is loaded). numba compiles a kernel, or
loads it from its cache, on its first call in a process: left to the first live packets, that holds
a ping for a second (several minutes of backlog on a cold cache). So `flowpath run` forwards a few
flows through the benchmark gateway (flowpath.bench.setup: NAT, a flowtable) in memory first, both
ways, slow path then fast path, which brings in the kernels every forwarded packet uses.
"""

from __future__ import annotations

from flowpath.packet.batch import PacketBatch

WARM_FLOWS = 4


def warm_datapath(bulk: bool = True) -> None:
    """Forward WARM_FLOWS UDP flows both ways through an in-memory NAT gateway, until they are
    offloaded and hit the flowtable."""
    from flowpath.bench.setup import LAN_IF, NET, RULES, WAN_IF, flow_frames
    from flowpath.config.ipbatch import parse_network
    from flowpath.config.nft import parse_ruleset
    from flowpath.datapath import Worker

    w = Worker(parse_network(NET, "<warm>"), parse_ruleset(RULES, "<warm>"), bulk=bulk)
    up, down = flow_frames(WARM_FLOWS, 128)
    batch = PacketBatch(2 * WARM_FLOWS)
    ts = 1_000_000_000
    for _ in range(3):  # new (classic path), the reply offloads, then hits both ways
        for frames, iif in ((up, LAN_IF), (down, WAN_IF)):
            batch.clear()
            for f in frames:
                batch.append(f, iif, ts)
            w.poll(batch).frames()
            ts += 1_000_000
