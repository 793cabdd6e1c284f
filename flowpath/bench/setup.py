"""A benchmark gateway and its traffic: a two-port NAT gateway with a flowtable, UDP flows over many
source ports (TRex-style streams), frames prebuilt in pools of PacketBatch slots.

No Linux counterpart.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
from numba import njit

from flowpath.flowtable.hook import jit_entry
from flowpath.packet import layout as L
from flowpath.packet.batch import PacketBatch
from flowpath.packet.csum import ip_fast_csum, l4_csum, st16
from flowpath.packet.skb import frame_array

NET = """\
link add lan0 address 02:00:00:00:01:01
link add wan0 address 02:00:00:00:02:01
link set lan0 up
link set wan0 up
addr add 10.0.0.1/16 dev lan0
addr add 203.0.113.1/24 dev wan0
route add default via 203.0.113.254 dev wan0
neigh add 203.0.113.254 lladdr 02:00:00:00:02:fe dev wan0
neigh add 10.0.0.2 lladdr 02:00:00:00:01:02 dev lan0
"""
RULES = """\
table inet filter {
	flowtable ft {
		hook ingress priority filter
		devices = { lan0, wan0 }
	}

	chain forward {
		type filter hook forward priority filter; policy drop;
		meta l4proto { tcp, udp } flow add @ft
		ct state established,related accept
		iifname "lan0" oifname "wan0" accept
	}
}

table ip nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan0" masquerade
	}
}
"""
LAN_IF, WAN_IF = 2, 3
CLIENT, SERVER, WAN_ADDR = 0x0A000002, 0xC6336407, 0xCB007101  # 10.0.0.2, 198.51.100.7, 203.0.113.1
GW_LAN = bytes.fromhex("020000000101")
GW_WAN = bytes.fromhex("020000000201")
CLIENT_MAC = bytes.fromhex("020000000102")
UPSTREAM_MAC = bytes.fromhex("0200000002fe")
BASE_PORT = 1024
PORTS_PER_SERVER_PORT = 64000


def udp_frame(src: int, dst: int, sport: int, dport: int, size: int, smac: bytes, dmac: bytes) -> bytes:
    """An Ethernet/IPv4/UDP frame of `size` bytes (without FCS) with valid checksums."""
    plen = size - L.ETH_HLEN - L.IPH.size - L.UDPH.size
    if plen < 0:
        raise ValueError(f"frame size {size} is below the {L.ETH_HLEN + 28}-byte Ethernet/IPv4/UDP minimum")
    ip = struct.pack(">BBHHHBBHII", 0x45, 0, size - L.ETH_HLEN, 0, 0, 64, L.IPPROTO_UDP, 0, src, dst)
    udp = struct.pack(">HHHH", sport, dport, L.UDPH.size + plen, 0)
    b = frame_array(
        dmac + smac + struct.pack(">H", L.ETH_P_IP) + ip + udp + bytes(range(256)) * (plen // 256 + 1)
    )
    b = b[:size]
    nh, th = L.ETH_HLEN, L.ETH_HLEN + L.IPH.size
    st16(b, nh + L.IPH.check, ip_fast_csum(b, nh, L.IPH.size))
    st16(b, th + L.UDPH.check, l4_csum(b, nh, th, size - th, False, L.IPPROTO_UDP, L.UDPH.check))
    return b.tobytes()


def flow_ports(k: int) -> tuple[int, int]:
    """Flow k's (source port, server port): source ports first (as TRex streams vary them), then the
    server port, so more than 64000 flows stay distinct and masquerade keeps every source port."""
    return BASE_PORT + k % PORTS_PER_SERVER_PORT, 5001 + k // PORTS_PER_SERVER_PORT


def flow_frames(flows: int, size: int) -> tuple[list[bytes], list[bytes]]:
    """Per flow k: the LAN->Internet frame and its reply (to the masqueraded address)."""
    up, down = [], []
    for k in range(flows):
        sport, dport = flow_ports(k)
        up.append(udp_frame(CLIENT, SERVER, sport, dport, size, CLIENT_MAC, GW_LAN))
        down.append(udp_frame(SERVER, WAN_ADDR, dport, sport, size, UPSTREAM_MAC, GW_WAN))
    return up, down


def _picks(nframes: int, n_packets: int, seed: int) -> np.ndarray:
    """The frame of each packet: a flow drawn uniformly at random."""
    if nframes == 1:
        return np.zeros(n_packets, np.int64)
    return np.random.default_rng(seed).integers(0, nframes, n_packets)


def _slot(size: int) -> int:
    return 1 << max(8, (size + 128 - 1).bit_length())  # the frame after the default 128-byte headroom


def pool(frames: list[bytes], iif: int, n_packets: int, batch_size: int, seed: int = 1) -> list[PacketBatch]:
    """n_packets frames, each of a flow drawn uniformly at random, in batches of batch_size."""
    which = _picks(len(frames), n_packets, seed)
    size = len(frames[0])
    slot = _slot(size)
    out = []
    for start in range(0, n_packets, batch_size):
        b = PacketBatch(batch_size, slot=slot)
        for k in which[start : start + batch_size]:
            b.append(frames[int(k)], iif, 0)
        out.append(b)
    return out


class PoolState:
    """The pristine bytes and columns of a pool, restored between repetitions outside the timing."""

    def __init__(self, batches: list[PacketBatch]):
        self.batches = batches
        self.saved = [(b.data.copy(), b.head.copy(), b.len.copy(), b.verdict.copy()) for b in batches]

    def restore(self, ts_ns: int = 0) -> None:
        for k in range(len(self.batches)):
            self.restore_one(k, ts_ns)

    def restore_one(self, k: int, ts_ns: int = 0) -> None:
        """Batch k as it was: what a port's copy into the batch does just before a poll."""
        b, (d, h, n, v) = self.batches[k], self.saved[k]
        b.data[:] = d
        b.head[:] = h
        b.len[:] = n
        b.verdict[:] = v
        b.oif[:] = 0
        b.flow[:] = -1
        b.ts_ns[:] = ts_ns


def time_pool(
    poll: Callable[[PacketBatch], object],
    state: PoolState,
    reps: int,
    ts_ns: int,
    *,
    warm: bool = False,
    before: Callable[[], None] = lambda: None,
    budget_s: float = float("inf"),
    min_reps: int = 1,
) -> list[float]:
    """Seconds of poll per pass over the pool (at most reps passes; after min_reps, none starts once
    budget_s has gone by); the restores and `before` run untimed.

    warm False: the whole pool is restored first, so each batch comes cold from memory; warm True:
    each batch is restored just before its poll, as a port's copy into the batch leaves it in the
    caches (the method of benchmarks/esp_crypto.py)."""
    out = []
    t_end = time.perf_counter() + budget_s
    for _ in range(reps):
        if not warm:
            state.restore(ts_ns)
        before()
        dt = 0.0
        if warm:
            for k, b in enumerate(state.batches):
                state.restore_one(k, ts_ns)
                t0 = time.perf_counter()
                poll(b)
                dt += time.perf_counter() - t0
        else:
            t0 = time.perf_counter()
            for b in state.batches:
                poll(b)
            dt = time.perf_counter() - t0
        out.append(dt)
        if len(out) >= min_reps and time.perf_counter() > t_end:
            break
    return out


class PortFeed:
    """The packets of `pool(frames, iif, n_packets, batch_size, seed)` (the same ones, in the same
    order) as a port delivers them: one batch, refilled before each poll with a copy of the next
    batch_size frames. The copy is a gather from the flows' frames (each flow's packets are the same
    bytes, as a TRex stream's template), so the frames are in the caches at the poll, as after a
    port's copy from its ring, and a pool much larger than the caches does not sweep the flowtable
    out of them between polls (what `time_pool(..., warm=True)` over distinct batches does)."""

    def __init__(self, frames: list[bytes], iif: int, n_packets: int, batch_size: int, seed: int = 1,
                 tailroom: int = 0):  # fmt: skip
        size = len(frames[0])
        self.frames = np.frombuffer(b"".join(frames), np.uint8).reshape(len(frames), size)
        self.which = _picks(len(frames), n_packets, seed)
        self.iif, self.size, self.batch_size = iif, size, batch_size
        self.batch = b = PacketBatch(batch_size, slot=_slot(size + tailroom))  # tailroom: what ESP output adds
        self.polls = -(-n_packets // batch_size)
        # the compiled entry point, resolved once: numba's dispatcher types a tuple of arrays on every
        # call, under the GIL other workers' threads want (flowpath.flowtable.hook.jit_entry)
        self._fill = jit_entry(port_fill, (self.frames, self.which, 0, b.cols, iif, b.headroom))

    def fill(self, k: int, ts_ns: int) -> PacketBatch:
        """The batch holding packets k * batch_size ... (the port's copy; not timed)."""
        b = self.batch
        b.n = self._fill(self.frames, self.which, k * self.batch_size, b.cols, self.iif, b.headroom)
        b.ts_ns[: b.n] = ts_ns
        return b


@njit(cache=True, nogil=True)
def port_fill(frames, which, lo, cols, ifindex, headroom):
    """Copy frames[which[lo + i]] into slot i of a batch's columns (PacketBatch.cols), as a port's copy
    into its batch, without the GIL (the workers of `bench scaling` fill side by side); how many."""
    data, head, length, iif, oif, verdict, flow, encap, gso = cols
    n = max(0, min(data.shape[0], which.shape[0] - lo))
    size = frames.shape[1]
    for i in range(n):
        data[i, headroom : headroom + size] = frames[which[lo + i]]
        head[i], length[i], iif[i] = headroom, size, ifindex
        verdict[i], oif[i], flow[i], encap[i], gso[i] = 0, 0, -1, 0, 0
    return n


def time_port(poll: Callable[[PacketBatch], object], feed: PortFeed, reps: int, ts_ns: int) -> list[float]:
    """Seconds of poll per pass over a PortFeed (reps passes); the refills run untimed."""
    out = []
    for _ in range(reps):
        dt = 0.0
        for k in range(feed.polls):
            b = feed.fill(k, ts_ns)
            t0 = time.perf_counter()
            poll(b)
            dt += time.perf_counter() - t0
        out.append(dt)
    return out


def fresh_interpreter_times(setup: str, stmt: str) -> dict:
    """Seconds of `stmt` after `setup` in a fresh interpreter, with an empty numba cache (cold_s: every
    kernel it calls compiled) and again with the cache that run wrote (cached_s). The user's own
    caches are neither read nor written: NUMBA_CACHE_DIR is a temporary directory, in which
    `import flowpath` uses flowpath/<key> (flowpath/numba_cache.py), the same in both runs."""
    code = f"import time\n{setup}\nt = time.perf_counter()\n{stmt}\nprint(time.perf_counter() - t)"
    out = {}
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, NUMBA_CACHE_DIR=d)
        for name in ("cold_s", "cached_s"):
            r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
            if r.returncode:
                raise RuntimeError(f"timing {stmt!r} in a fresh interpreter failed:\n{r.stderr[-2000:]}")
            out[name] = float(r.stdout.strip().splitlines()[-1])
    return out
