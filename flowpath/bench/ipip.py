"""The IPIP flowtable patch's experiment (Lorenzo Bianconi's "IPIP SW acceleration" for the netfilter
flowtable, 2025): RX (decapsulation) and TX (encapsulation) through an IPIP tunnel, with the flowtable
and through the classic path, side by side in one run; and the review's debate measured: the outer
addresses as a perfect key (Linux 6.19) or hashed into one word (the v6 patch), with the bytes per
flow each design takes.

No Linux counterpart (the cover letter's veth pair and iperf3 against net-next). The gateway is the
cover letter's: LAN clients on lan0, tun0 (local 198.51.100.1, remote 198.51.100.2) over wan0, routes
into the tunnel, a flowtable on lan0 and wan0, no NAT. Flows are UDP client ports 1024.. from
10.1.0.2 to 10.2.0.7:5001, established through the classic path first (a packet each way, then one
more). `frame_size` is the LAN-side (inner) frame on the wire with its FCS; the tunnel side's frames
are 20 bytes longer. Mpps and Gbit/s count the frames received (RX: the tunnel side's, TX: the
LAN side's), L2 with FCS. Timing as flowpath/bench/flowtable.py: Worker.poll over one port batch
refilled before each poll (setup.PortFeed), best and median of the passes. Each direction's output of
the first batch is compared byte for byte between the two modes, so a fast figure for wrong bytes
cannot go unnoticed.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

import numpy as np

from flowpath import __version__
from flowpath.bench.scenario import BenchOptions, Progress, ScenarioResult, no_ipsec_options
from flowpath.bench.setup import PortFeed, time_port, udp_frame
from flowpath.errors import UsageError
from flowpath.flowtable.core import TUNNEL_KEYS
from flowpath.packet import layout as L
from flowpath.packet.batch import PacketBatch
from flowpath.packet.csum import ip_fast_csum, st16
from flowpath.packet.skb import frame_array

NET = """\
link add lan0 address 02:00:00:00:01:01
link add wan0 address 02:00:00:00:02:01
link set lan0 up
link set wan0 up
addr add 10.1.0.1/16 dev lan0
addr add 198.51.100.1/24 dev wan0
neigh add 10.1.0.2 lladdr 02:00:00:00:01:02 dev lan0
neigh add 198.51.100.2 lladdr 02:00:00:00:02:02 dev wan0
link add tun0 type ipip local 198.51.100.1 remote 198.51.100.2 ttl inherit tos inherit
link set tun0 up
addr add 192.168.100.1/30 dev tun0
route add 10.2.0.0/16 dev tun0
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
		iifname "lan0" oifname "tun0" accept
		iifname "tun0" oifname "lan0" accept
	}
}
"""
LAN_IF, WAN_IF = 2, 3
CLIENT, SERVER = 0x0A010002, 0x0A020007  # 10.1.0.2, 10.2.0.7
LOCAL, REMOTE = 0xC6336401, 0xC6336402  # 198.51.100.1, 198.51.100.2
CLIENT_MAC, GW_LAN = bytes.fromhex("020000000102"), bytes.fromhex("020000000101")
PEER_MAC, GW_WAN = bytes.fromhex("020000000202"), bytes.fromhex("020000000201")
BASE_PORT, DPORT = 1024, 5001
FCS_LEN = 4
FLOWS = (1, 10, 1000, 10000)
FLOWS_QUICK = (1, 100)
BATCH = 256
EST_TS_NS, RUN_TS_NS = 1_000_000_000, 2_000_000_000
DIRECTIONS = ("rx", "tx")  # rx: from the tunnel (decapsulation), tx: into it (encapsulation)
MODES = ("flowtable", "classic")


def ipip_frame(inner: bytes, smac: bytes, dmac: bytes) -> bytes:
    """inner (an Ethernet/IPv4 frame) inside the tunnel's outer header from REMOTE to LOCAL."""
    ip = inner[L.ETH_HLEN :]
    hdr = frame_array(struct.pack(">BBHHHBBHII", 0x45, 0, L.IPH.size + len(ip), 0, L.IP_DF, 64, L.IPPROTO_IPIP,
                                  0, REMOTE, LOCAL))  # fmt: skip
    st16(hdr, L.IPH.check, ip_fast_csum(hdr, 0, L.IPH.size))
    return dmac + smac + struct.pack(">H", L.ETH_P_IP) + hdr.tobytes() + ip


def tunnel_frames(flows: int, size: int) -> tuple[list[bytes], list[bytes]]:
    """Per flow k: the LAN frame into the tunnel (size bytes without FCS) and its reply from the
    tunnel (the inner reply, size bytes, inside the outer header: size + 20)."""
    up, down = [], []
    for k in range(flows):
        sport = BASE_PORT + k
        up.append(udp_frame(CLIENT, SERVER, sport, DPORT, size, CLIENT_MAC, GW_LAN))
        reply = udp_frame(SERVER, CLIENT, DPORT, sport, size, PEER_MAC, GW_WAN)
        down.append(ipip_frame(reply, PEER_MAC, GW_WAN))
    return up, down


def gateway(flowtable: bool, tunnel_key: str):
    """A Worker on the tunnel gateway; its flowtable keys tunnels as tunnel_key says."""
    from flowpath.config.ipbatch import parse_network
    from flowpath.config.nft import parse_ruleset
    from flowpath.datapath import Worker

    w = Worker(parse_network(NET, "<bench ipip>"), parse_ruleset(RULES, "<bench ipip>"), flowtable=flowtable)
    for ft, _ in w.flowtables.values():
        ft.set_tunnel_key(tunnel_key)
    return w


def establish(worker, up: list[bytes], down: list[bytes], flowtable: bool) -> None:
    """Each flow's first packet, its reply from the tunnel (the flow is offloaded then), and one more."""
    seq = [(f, LAN_IF) for f in up] + [(f, WAN_IF) for f in down] + [(f, LAN_IF) for f in up]
    b = PacketBatch(BATCH, slot=_slot(max(len(f) for f, _ in seq)))
    for k in range(0, len(seq), BATCH):
        b.clear()
        for f, iif in seq[k : k + BATCH]:
            b.append(f, iif, EST_TS_NS)
        worker.poll(b)
    if flowtable:
        ft = next(iter(worker.flowtables.values()))[0]
        if len(ft) != len(up):
            raise RuntimeError(f"expected {len(up)} offloaded flows after setup, found {len(ft)}")


def _slot(size: int) -> int:
    return 1 << max(8, (size + 128 - 1).bit_length())


def first_batch_output(worker, feed: PortFeed) -> list[bytes]:
    """What one poll of the feed's first batch transmits, in order: the frames compared between modes."""
    tx = worker.poll(feed.fill(0, RUN_TS_NS))
    return [f for _, f, _ in tx.frames()]


def memory(tunnel_key: str) -> dict:
    """Bytes per flow of the key design: flowpath's (the table's arrays per entry, two entries a flow;
    both designs use the same 128-byte entry) and the tunnel's share of the key."""
    from flowpath.flowtable import Flowtable

    per_entry = sum(Flowtable("m", tunnel_key=tunnel_key).entry_bytes().values())
    return {
        "tunnel_key": tunnel_key,
        "bytes_per_flow": round(2 * per_entry, 1),
        # what the outer pair takes in the key of the tunnel side's entry: both IPv4 addresses
        # (K_TUN_SADDR, K_TUN_DADDR) or the one hashed word (K_ENCAP); Linux's perfect `tun` member
        # is 2 x 16-byte address unions + l3proto per tuple, the v6 hash fit the u16 encap id
        "key_bytes_for_the_outer_pair": 8 if tunnel_key == "perfect" else 4,
    }


def ipip_bench(
    flows: tuple[int, ...] | None = None,
    frame_size: int = 128,
    *,
    tunnel_key: str = "perfect",
    quick: bool = False,
    packets: int | None = None,
    classic_packets: int | None = None,
    reps: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Points (direction, mode, flows) with Mpps and Gbit/s, and the key design's memory; JSON-able."""
    say = progress or (lambda _msg: None)
    flows = tuple(flows or (FLOWS_QUICK if quick else FLOWS))
    reps = reps or (3 if quick else 7)
    packets = packets or (1 << 15 if quick else 1 << 18)
    classic_packets = classic_packets or (1024 if quick else 8192)
    size = frame_size - FCS_LEN
    points, checks = [], []
    t_start = time.perf_counter()
    for n in flows:
        say(f"{n} flows: building traffic")
        up, down = tunnel_frames(n, size)
        workers = {}
        for mode in MODES:
            say(f"{n} flows: establishing ({mode})")
            workers[mode] = gateway(mode == "flowtable", tunnel_key)
            establish(workers[mode], up, down, mode == "flowtable")
        for direction in DIRECTIONS:
            frames, iif = (down, WAN_IF) if direction == "rx" else (up, LAN_IF)
            wire = len(frames[0]) + FCS_LEN
            out = {}
            for mode in MODES:
                w = workers[mode]
                count = packets if mode == "flowtable" else classic_packets
                feed = PortFeed(frames, iif, count, BATCH)
                out[mode] = first_batch_output(w, feed)
                say(f"{n} flows: {direction} ({mode})")
                fp0, tx0 = w.stats.fastpath_packets, w.stats.tx_packets
                secs = time_port(w.poll, feed, reps, RUN_TS_NS)
                sent = (w.stats.tx_packets - tx0) / reps
                hits = (w.stats.fastpath_packets - fp0) / reps
                if sent != count:
                    raise RuntimeError(f"{direction} {mode}: {sent} of {count} packets forwarded")
                best, med = count / min(secs) / 1e6, count / float(np.median(secs)) / 1e6
                points.append({
                    "direction": direction, "mode": mode, "flows": n, "frame_size": frame_size,
                    "mpps": round(best, 4), "mpps_median": round(med, 4),
                    "gbps": round(best * wire * 8 / 1e3, 4), "wire_bytes": wire,
                    "fastpath_hit_fraction": round(hits / count, 4),
                })  # fmt: skip
            want_len = len(frames[0]) + (20 if direction == "tx" else -20)
            checks.append({
                "direction": direction, "flows": n, "identical_output": out["flowtable"] == out["classic"],
                "frames": len(out["flowtable"]), "frame_bytes_ok": all(len(f) == want_len for f in out["flowtable"]),
            })  # fmt: skip
    return {
        "scenario": "ipip",
        "flowpath_version": __version__,
        "cores": 1,
        "batch_size": BATCH,
        "frame_size": frame_size,
        "frame_size_note": "the LAN-side (inner) frame with FCS; tunnel-side frames are 20 bytes longer",
        "tunnel_key": tunnel_key,
        "packets": packets,
        "packets_per_repetition": packets,
        "classic_packets": classic_packets,
        "duration_s": round(time.perf_counter() - t_start, 2),
        "repetitions": reps,
        "quick": quick,
        "flows": list(flows),
        "points": points,
        "ratios": _ratios(points),
        "memory": memory(tunnel_key),
        "output_checks": checks,
    }


def _ratios(points: list[dict]) -> list[dict]:
    """flowtable / classic Mpps per direction and flow count (the patch's "with patch" / "net-next")."""
    by = {(p["direction"], p["mode"], p["flows"]): p["mpps"] for p in points}
    return [
        {
            "direction": d,
            "flows": n,
            "flowtable_over_classic": round(by[d, "flowtable", n] / by[d, "classic", n], 2),
        }
        for (d, m, n) in by
        if m == "flowtable"
    ]


class IpipResult(ScenarioResult):
    """`ipip` results: RX and TX, flowtable and classic, per flow count; Gbit/s against flows."""

    def table(self):
        from rich.table import Table

        r = self.data
        t = Table("direction", "flows", "classic Mpps", "flowtable Mpps", "classic Gbit/s", "flowtable Gbit/s",
                  "ratio", title=f"ipip, {r['frame_size']}-byte inner frames, {r['tunnel_key']} key, "
                  f"{r['memory']['bytes_per_flow']:.0f} B/flow, 1 core")  # fmt: skip
        by = {(p["direction"], p["mode"], p["flows"]): p for p in r["points"]}
        for x in r["ratios"]:
            c, f = by[x["direction"], "classic", x["flows"]], by[x["direction"], "flowtable", x["flows"]]
            t.add_row(x["direction"].upper(), f"{x['flows']:,}", f"{c['mpps']:.4f}", f"{f['mpps']:.3f}",
                      f"{c['gbps']:.3f}", f"{f['gbps']:.3f}", f"{x['flowtable_over_classic']:.1f}x")  # fmt: skip
        return t

    def plot(self, path):
        from flowpath.bench.plot_scenarios import plot_ipip

        return plot_ipip(self.data, path)


class Ipip:
    """`flowpath bench ipip`: the options it takes, and one run."""

    name = "ipip"

    def check(self, opts: BenchOptions) -> None:
        no_ipsec_options(opts)
        if opts.key not in TUNNEL_KEYS:
            raise UsageError(f"--key: one of {', '.join(TUNNEL_KEYS)}")
        if opts.batch_size is not None:
            raise UsageError("--batch does not apply to `bench ipip` (batches of 256)")

    def run(self, opts: BenchOptions, progress: Progress) -> IpipResult:
        progress.start(self.name)
        r = ipip_bench(opts.flows, opts.frame_size or 128, tunnel_key=opts.key, quick=opts.quick,
                       progress=progress.say)  # fmt: skip
        progress.done()
        return IpipResult(r)
