"""The flowtable bulk-forwarding test notes' "Forwarding Tests (IPsec, Multi-Flow)", on the pCPU test
report's topology (2025 Linux IPsec pCPU testing, RFC 9611): many UDP flows (source port varied, as
TRex streams) over one SA pair, encap and decap Mpps and Gbps per core, bulk on vs off.

No Linux counterpart (TRex against two Linux gateways in the notes and the report). Two Workers in
one process play the gateways: sunset (10.1.0.5) -> west ==ESP== east -> sunrise (10.2.0.7). Every flow is established
first (untimed, one packet each way and one more, so that `flow add @ft` has offloaded it), then two
things are timed separately: west.poll over a pool of LAN frames (encap) and east.poll over the ESP
frames west produced for that pool (decap), each twice: "cold" (the whole pool restored first, so
every batch comes from memory) and "warm" (each batch restored just before its poll, as a port's copy
into the batch leaves it in the caches). Pools are restored outside the timed region; before each
decap repetition the inbound SA's replay window is reset, or every repetition after the first would be
dropped as replay. The first pass of each direction is untimed and verified: west emits one ESP frame
of the right SA per packet, and east emits exactly the inner traffic (addresses, TTL, ports, payload);
every timed repetition is checked against the Workers' counters (all transmitted, no drop), and any
mismatch raises: a benchmark that measures drops is worthless. Sizes follow flowpath/bench/bulking.py:
wire frames with the 4-byte FCS; Gbps count the inner L2 frame (with FCS), L1 adds 20 bytes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from flowpath import __version__
from flowpath.bench.bulking import EST_TS_NS, RUN_TS_NS, rates
from flowpath.bench.scenario import BenchOptions, Progress, ScenarioResult
from flowpath.bench.setup import PoolState, flow_ports, time_pool, udp_frame
from flowpath.errors import UsageError
from flowpath.packet import layout as L
from flowpath.packet.batch import DEFAULT_HEADROOM, PacketBatch
from flowpath.packet.counters import TX_PACKETS
from flowpath.packet.reason import REASON_KIND, reason_label
from flowpath.trafgen.imix import ETH_FCS_LEN

FLOWS = (1, 10, 100, 1000, 10000)
FLOWS_QUICK = (1, 10, 100, 1000)
SIZES = (64, 128, 512, 1400)
SIZES_FLOWS = (1, 1000)
PACKETS, PACKETS_QUICK = 16384, 2048  # packets per timed repetition (a pool)
REPS, REPS_QUICK = 20, 3  # at most; a measurement stops after MIN_REPS once its time budget is spent
BUDGET_S, BUDGET_S_QUICK = 3.0, 0.5
MIN_REPS = 2
TAILROOM = 64  # slot bytes past the frame: ESP pad, pad length, next header and ICV (at most 35)

# name -> (xfrm aead algorithm, cipher key bytes); the key on the line adds a 4-byte salt (RFC 4106 §8.1,
# RFC 7634 §2)
ALGS = {"gcm": ("rfc4106(gcm(aes))", 16), "chacha": ("rfc7539esp(chacha20,poly1305)", 32)}
SUNSET, SUNRISE = "10.1.0.5", "10.2.0.7"
SUNSET_MAC, SUNRISE_MAC = "02:00:00:00:01:05", "02:00:00:00:03:07"
SPI_WE, SPI_EW = 0x1001, 0x2002  # west -> east, east -> west
INNER_TTL = 64
# per gateway: lan MAC, wan MAC, lan prefix and own address, wan address, peer's LAN, host, host MAC
SIDES = {
    "west": ("02:00:00:00:01:01", "02:00:00:00:02:01", "10.1.0.1/16", "192.0.2.1", "10.2.0.0/16",
             SUNSET, SUNSET_MAC),
    "east": ("02:00:00:00:03:01", "02:00:00:00:02:02", "10.2.0.1/16", "192.0.2.2", "10.1.0.0/16",
             SUNRISE, SUNRISE_MAC),
}  # fmt: skip
RULES = """\
table inet filter {
	flowtable ft {
		hook ingress priority filter
		devices = { lan0, wan0 }
	}

	chain forward {
		type filter hook forward priority filter; policy accept;
		meta l4proto { tcp, udp } flow add @ft
	}
}
"""


def sa_key(alg: str, spi: int) -> str:
    """The AEAD key (with its salt) of SA `spi` in the benchmark's network files, as hex."""
    n = ALGS[alg][1] + 4
    return bytes((spi + i) & 0xFF for i in range(n)).hex()


def gateway_net(side: str, alg: str = "gcm") -> str:
    """The `ip -batch` network file of `west` or `east`: one SA pair (SPI_WE, SPI_EW) and the out,
    fwd and in policies of the two LANs, as tests/datapath/test_ipsec_gateway.py (mirrored for east)."""
    lan_mac, wan_mac, lan_addr, me, peer_lan, host, host_mac = SIDES[side]
    other = SIDES["east" if side == "west" else "west"]
    peer, peer_mac = other[3], other[1]
    my_lan = other[4]
    name = ALGS[alg][0]
    sa_out, sa_in = (SPI_WE, SPI_EW) if side == "west" else (SPI_EW, SPI_WE)
    return f"""\
link add lan0 address {lan_mac}
link add wan0 address {wan_mac}
link set lan0 up
link set wan0 up
addr add {lan_addr} dev lan0
addr add {me}/24 dev wan0
route add {peer_lan} via {peer} dev wan0
neigh add {peer} lladdr {peer_mac} dev wan0
neigh add {host} lladdr {host_mac} dev lan0
xfrm state add src {me} dst {peer} proto esp spi {sa_out:#x} reqid {sa_out} mode tunnel aead '{name}' 0x{sa_key(alg, sa_out)} 128
xfrm state add src {peer} dst {me} proto esp spi {sa_in:#x} reqid {sa_in} mode tunnel replay-window 32 aead '{name}' 0x{sa_key(alg, sa_in)} 128
xfrm policy add src {my_lan} dst {peer_lan} dir out tmpl src {me} dst {peer} proto esp reqid {sa_out} mode tunnel
xfrm policy add src {peer_lan} dst {my_lan} dir fwd tmpl src {peer} dst {me} proto esp reqid {sa_in} mode tunnel
xfrm policy add src {peer_lan} dst {my_lan} dir in tmpl src {peer} dst {me} proto esp reqid {sa_in} mode tunnel
"""  # noqa: E501


def _ip4(a: str) -> int:
    return int.from_bytes(bytes(int(x) for x in a.split(".")), "big")


def _mac(a: str) -> bytes:
    return bytes.fromhex(a.replace(":", ""))


@dataclass
class IpsecPair:
    """The two gateways and what the benchmark needs to know about them.

    No Linux counterpart. `west`, `east` are flowpath.datapath.Worker; `lan`, `wan` the ifindexes of
    lan0 and wan0 (the same on both, the network files add the links in the same order).
    """

    west: object
    east: object
    lan: int
    wan: int
    alg: str
    bulk: bool

    @classmethod
    def build(cls, bulk: bool = True, alg: str = "gcm") -> IpsecPair:
        from flowpath.config.ipbatch import parse_network
        from flowpath.config.nft import parse_ruleset
        from flowpath.datapath import Worker

        if alg not in ALGS:
            raise UsageError(f"unknown --alg {alg!r}; choose from: {', '.join(ALGS)}")
        ws = []
        for side in ("west", "east"):
            net = parse_network(gateway_net(side, alg), f"<{side}>")
            ws.append(Worker(net, parse_ruleset(RULES, f"<{side}.nft>"), bulk=bulk))
        links = ws[0].net
        return cls(*ws, links.link_by_name("lan0").ifindex, links.link_by_name("wan0").ifindex, alg, bulk)

    def sa(self, side: str, spi: int):
        """The xfrm state `spi` in `side`'s SAD (SPI_WE goes to east, SPI_EW to west)."""
        from flowpath.xfrm.state import xfrm_state_lookup

        w = self.west if side == "west" else self.east
        return xfrm_state_lookup(w.xfrm, SIDES["east" if spi == SPI_WE else "west"][3], spi)

    def max_frame_size(self) -> int:
        """The largest wire frame (with FCS) whose ESP packet fits wan0's MTU (no fragmentation)."""
        from flowpath.xfrm.esp import xfrm_state_mtu

        mtu = self.west.net.links[self.wan].mtu
        return xfrm_state_mtu(self.sa("west", SPI_WE), mtu) + L.ETH_HLEN + ETH_FCS_LEN


def inner_frames(flows: int, frame_size: int) -> tuple[list[bytes], list[bytes]]:
    """Per flow k: sunset -> sunrise (UDP source port varied, flowpath.bench.setup.flow_ports) as
    west's LAN receives it, and sunrise's reply as east's LAN receives it. frame_size counts the FCS."""
    size = frame_size - ETH_FCS_LEN
    up, down = [], []
    w_lan, e_lan = _mac(SIDES["west"][0]), _mac(SIDES["east"][0])
    for k in range(flows):
        sport, dport = flow_ports(k)
        up.append(udp_frame(_ip4(SUNSET), _ip4(SUNRISE), sport, dport, size, _mac(SUNSET_MAC), w_lan))
        down.append(udp_frame(_ip4(SUNRISE), _ip4(SUNSET), dport, sport, size, _mac(SUNRISE_MAC), e_lan))
    return up, down


def batches(frames: list[bytes], iif: int, batch_size: int, ts_ns: int = 0) -> list[PacketBatch]:
    """frames in PacketBatches whose slots leave TAILROOM past the largest frame (encap grows it)."""
    longest = max(len(f) for f in frames)
    slot = 1 << max(8, (DEFAULT_HEADROOM + longest + TAILROOM - 1).bit_length())
    out = []
    for lo in range(0, len(frames), batch_size):
        b = PacketBatch(batch_size, slot=slot)
        for f in frames[lo : lo + batch_size]:
            b.append(f, iif, ts_ns)
        out.append(b)
    return out


def transmitted(worker, bs: list[PacketBatch]) -> list[tuple[int, bytes]]:
    """Poll every batch once (untimed); what the worker transmitted, as (ifindex, frame)."""
    out = []
    for b in bs:
        out.extend((ifx, f) for ifx, f, _ in worker.poll(b).frames())
    return out


def _only_on(out: list[tuple[int, bytes]], ifindex: int, expect: int, what: str) -> list[bytes]:
    frames = [f for ifx, f in out if ifx == ifindex]
    if len(frames) != expect or len(out) != expect:
        raise RuntimeError(f"{what}: expected {expect} frames on ifindex {ifindex}, got {len(frames)} "
                           f"there and {len(out) - len(frames)} elsewhere")  # fmt: skip
    return frames


def establish(pair: IpsecPair, flows: int, batch_size: int = 256) -> None:
    """Each flow's first packet sunset -> sunrise, the reply, then one more packet (as
    flowpath/bench/bulking.py), relayed west -> east and back; every packet must arrive."""
    up, down = inner_frames(flows, 64)
    w, e, lan, wan = pair.west, pair.east, pair.lan, pair.wan
    for frames, first, second, what in ((up, w, e, "up"), (down, e, w, "reply"), (up, w, e, "up again")):
        esp = _only_on(transmitted(first, batches(frames, lan, batch_size, EST_TS_NS)), wan, flows,
                       f"establishing ({what}): encap")  # fmt: skip
        _only_on(transmitted(second, batches(esp, wan, batch_size, EST_TS_NS)), lan, flows,
                 f"establishing ({what}): decap")  # fmt: skip


def replay_window_reset(x) -> None:
    """Forget the SA's received sequence numbers (as benchmarks/esp_crypto.py does between passes)."""
    x.tab.replay_top[x.index] = 0
    x.tab.replay_bmp[x.index] = 0


def esp_seq(frame: bytes) -> int:
    """The ESP sequence number of an Ethernet/IPv4/ESP frame."""
    off = L.ETH_HLEN + L.IPH.size + L.ESPH.seq_no
    return int.from_bytes(frame[off : off + 4], "big")


def verify_encap(esp: list[bytes], spi: int) -> None:
    """Every frame is ESP from west's to east's WAN address with SPI `spi`, to east's MAC."""
    saddr, daddr = _ip4(SIDES["west"][3]), _ip4(SIDES["east"][3])
    for f in esp:
        eth = np.frombuffer(f, L.ETHHDR, 1)[0]
        ip = np.frombuffer(f, L.IPHDR, 1, L.ETH_HLEN)[0]
        esph = np.frombuffer(f, L.ESPHDR, 1, L.ETH_HLEN + L.IPH.size)[0]
        if (eth["h_dest"].tobytes(), int(ip["protocol"]), int(ip["saddr"]), int(ip["daddr"]),
                int(esph["spi"])) != (_mac(SIDES["east"][1]), L.IPPROTO_ESP, saddr, daddr, spi):  # fmt: skip
            raise RuntimeError(
                f"encap: west emitted a frame that is not ESP to east on SA {spi:#x}: {f[:54].hex()}"
            )


def verify_decap(out: list[bytes], sent: list[bytes]) -> None:
    """East's LAN output is exactly the inner traffic sent: to sunrise's MAC, addresses kept, TTL down
    by one per gateway, and the same UDP headers and payloads (as a multiset: ESP order may differ)."""
    l4 = L.ETH_HLEN + L.IPH.size
    for f in out:
        eth = np.frombuffer(f, L.ETHHDR, 1)[0]
        ip = np.frombuffer(f, L.IPHDR, 1, L.ETH_HLEN)[0]
        got = (eth["h_dest"].tobytes(), int(ip["saddr"]), int(ip["daddr"]), int(ip["ttl"]), len(f))
        want = (_mac(SUNRISE_MAC), _ip4(SUNSET), _ip4(SUNRISE), INNER_TTL - 2, len(sent[0]))
        if got != want:
            raise RuntimeError(f"decap: east emitted {got} on lan0, expected {want}")
    if Counter(f[l4:] for f in out) != Counter(f[l4:] for f in sent):
        raise RuntimeError("decap: east's lan0 output differs from the traffic sent (UDP header or payload)")


class _Snap:
    """A Worker's counters at one moment; `delta` says what a timed run did. No Linux counterpart."""

    def __init__(self, worker):
        s = worker.stats
        self.rx, self.fast, self.slow, self.reasons, self.ifc = (
            s.rx_packets, s.fastpath_packets, s.slowpath_packets, s.reasons.copy(), s.ifc.copy(),
        )  # fmt: skip

    def delta(self, worker, oif: int) -> dict:
        now = _Snap(worker)
        d = now.reasons - self.reasons
        drops = {reason_label(r): int(c) for r, c in enumerate(d) if c and REASON_KIND[r] == "drop"}
        fast, slow = now.fast - self.fast, now.slow - self.slow
        return {
            "rx_packets": int(now.rx - self.rx),  # polled packets: a decrypted one is not counted twice
            "tx_packets": int(now.ifc[oif, TX_PACKETS] - self.ifc[oif, TX_PACKETS]),
            "fastpath_packets": int(fast),
            "slowpath_packets": int(slow),
            "fastpath_share": round(fast / (fast + slow), 4) if fast + slow else 0.0,
            "drops": drops,
        }


def _timed(
    worker, state: PoolState, oif: int, packets: int, frame_size: int, reps, budget_s, before, what, warm=False
) -> dict:
    snap = _Snap(worker)
    secs = time_pool(worker.poll, state, reps, RUN_TS_NS, warm=warm, before=before, budget_s=budget_s,
                     min_reps=MIN_REPS)  # fmt: skip
    c = snap.delta(worker, oif)
    want = packets * len(secs)
    if c["drops"] or c["tx_packets"] != want or c["rx_packets"] != want:
        raise RuntimeError(f"{what}: timed run received {c['rx_packets']} and sent {c['tx_packets']} of "
                           f"{want} packets; drops {c['drops'] or 'none'}")  # fmt: skip
    # 6 decimals: the classic path runs at ~0.01 Mpps
    return {**rates(packets, secs, frame_size, digits=6), "repetitions": len(secs), **c}


def measure(pair: IpsecPair, flows: int, frame_size: int, *, packets: int, reps: int, budget_s: float,
            batch_size: int = 256, say: Callable[[str], None] = lambda _m: None) -> dict:  # fmt: skip
    """Encap (west) and decap (east) rates of `packets`-packet pools over `flows` established flows.

    The LAN pool sends flow k % flows as packet k (TRex's "inc" flow variable); the decap pool is
    west's ESP output of its first (untimed, verified) pass, in sequence-number order.
    """
    up, _ = inner_frames(flows, frame_size)
    sent = [up[k % flows] for k in range(packets)]
    lan_state = PoolState(batches(sent, pair.lan, batch_size, RUN_TS_NS))
    lan_state.restore(RUN_TS_NS)
    say("encap: first pass (verified)")
    esp = _only_on(transmitted(pair.west, lan_state.batches), pair.wan, packets, "encap")
    verify_encap(esp, SPI_WE)
    esp.sort(key=esp_seq)
    esp_state = PoolState(batches(esp, pair.wan, batch_size, RUN_TS_NS))
    x_in = pair.sa("east", SPI_WE)
    replay_window_reset(x_in)
    say("decap: first pass (verified)")
    verify_decap(_only_on(transmitted(pair.east, esp_state.batches), pair.lan, packets, "decap"), sent)
    say("encap: timing")
    enc = _timed(pair.west, lan_state, pair.wan, packets, frame_size, reps, budget_s, lambda: None, "encap")
    say("decap: timing")
    dec = _timed(pair.east, esp_state, pair.lan, packets, frame_size, reps, budget_s,
                 lambda: replay_window_reset(x_in), "decap")  # fmt: skip
    say("encap and decap, warm batches: timing")
    enc_w = _timed(pair.west, lan_state, pair.wan, packets, frame_size, reps, budget_s, lambda: None, "encap",
                   warm=True)  # fmt: skip
    dec_w = _timed(pair.east, esp_state, pair.lan, packets, frame_size, reps, budget_s,
                   lambda: replay_window_reset(x_in), "decap", warm=True)  # fmt: skip
    fast = enc["fastpath_packets"] + dec["fastpath_packets"]
    total = fast + enc["slowpath_packets"] + dec["slowpath_packets"]
    return {
        "flows": flows,
        "frame_size": frame_size,
        "bulk": pair.bulk,
        "encap_mpps": enc["mpps"],
        "encap_gbps": enc["gbps_l2"],
        "decap_mpps": dec["mpps"],
        "decap_gbps": dec["gbps_l2"],
        "encap_mpps_warm": enc_w["mpps"],
        "encap_gbps_warm": enc_w["gbps_l2"],
        "decap_mpps_warm": dec_w["mpps"],
        "decap_gbps_warm": dec_w["gbps_l2"],
        "fastpath_share": round(fast / total, 4) if total else 0.0,
        "verified": True,
        "drops": 0,
        "esp_frame_bytes": len(esp[0]) + ETH_FCS_LEN,
        "flows_offloaded": {"west": pair.west.stats.flows_offloaded, "east": pair.east.stats.flows_offloaded},
        "encap": enc,
        "decap": dec,
        "encap_warm": enc_w,
        "decap_warm": dec_w,
    }


def check_options(alg: str, frame_sizes, flows) -> None:
    """UsageError unless the algorithm is known, every ESP packet fits the MTU and the flow counts are
    sane; cheap, so the CLI calls it before starting."""
    pair = IpsecPair.build(True, alg)
    top = pair.max_frame_size()
    for s in frame_sizes:
        if not 64 <= s <= top:
            raise UsageError(f"frame size {s}: between 64 and {top} bytes with {ALGS[pair.alg][0]} (the ESP "
                             f"packet must fit wan0's MTU {pair.west.net.links[pair.wan].mtu})")  # fmt: skip
    if not flows or min(flows) < 1 or max(flows) > 1_000_000:
        raise UsageError("flows: between 1 and 1000000")


def conditions(
    scenario: str, alg: str, quick: bool, batch_size: int, packets: int, reps: int, budget_s
) -> dict:
    return {
        "scenario": scenario,
        "flowpath_version": __version__,
        "cores": 1,
        "alg": ALGS[alg][0],
        "batch_size": batch_size,
        "packets_per_repetition": packets,
        "repetitions": reps,
        "min_repetitions": MIN_REPS,
        "time_budget_s": budget_s,
        "quick": quick,
        "traffic": f"UDP {SUNSET} -> {SUNRISE}:5001, source ports 1024.. (inc), sunset -> west ==ESP== east "
        "-> sunrise over one SA pair, flowtable on lan0 and wan0; flows established first; in memory, no NIC",
        "size_convention": "frame sizes are inner wire frames with the 4-byte FCS; Gbps count the inner "
        "L2 frame (encap and decap alike); L1 adds 20 B preamble+SFD+IFG",
    }


def _params(quick: bool, packets, reps, budget_s) -> tuple[int, int, float]:
    """Packets per repetition, repetitions at most, time budget per measurement: given or defaults."""
    return (packets or (PACKETS_QUICK if quick else PACKETS), reps or (REPS_QUICK if quick else REPS),
            budget_s if budget_s is not None else (BUDGET_S_QUICK if quick else BUDGET_S))  # fmt: skip


def ipsec_flows(flows=None, frame_size: int = 128, *, alg: str = "gcm", quick: bool = False,
                batch_size: int = 256, packets: int | None = None, reps: int | None = None,
                budget_s: float | None = None, progress: Callable[[str], None] | None = None) -> dict:  # fmt: skip
    """Encap and decap Mpps and Gbps per flow count, bulk forwarding on and off; a JSON-able dict."""
    say = progress or (lambda _msg: None)
    flows = tuple(flows or (FLOWS_QUICK if quick else FLOWS))
    packets, reps, budget_s = _params(quick, packets, reps, budget_s)
    check_options(alg, (frame_size,), flows)
    t_start = time.perf_counter()
    results = []
    for n in flows:
        for bulk in (True, False):
            tag = f"{n} flows, bulk {'on' if bulk else 'off'}"
            say(f"{tag}: establishing")
            pair = IpsecPair.build(bulk, alg)
            establish(pair, n, batch_size)
            results.append(measure(pair, n, frame_size, packets=packets, reps=reps, budget_s=budget_s,
                                   batch_size=batch_size, say=lambda m, t=tag: say(f"{t}: {m}")))  # fmt: skip
    return {
        **conditions("ipsec-flows", alg, quick, batch_size, packets, reps, budget_s),
        "frame_size": frame_size,
        "flows": list(flows),
        "duration_s": round(time.perf_counter() - t_start, 2),
        "results": results,
    }


def ipsec_sizes(flows=None, sizes=SIZES, *, alg: str = "gcm", quick: bool = False, batch_size: int = 256,
                packets: int | None = None, reps: int | None = None, budget_s: float | None = None,
                progress: Callable[[str], None] | None = None) -> dict:  # fmt: skip
    """Encap and decap Mpps and Gbps per frame size at each flow count, bulk on; a JSON-able dict."""
    say = progress or (lambda _msg: None)
    flows = tuple(flows or SIZES_FLOWS)
    packets, reps, budget_s = _params(quick, packets, reps, budget_s)
    check_options(alg, sizes, flows)
    t_start = time.perf_counter()
    results = []
    for n in flows:
        say(f"{n} flows: establishing")
        pair = IpsecPair.build(True, alg)
        establish(pair, n, batch_size)
        for size in sizes:
            tag = f"{n} flows, {size} B"
            results.append(measure(pair, n, size, packets=packets, reps=reps, budget_s=budget_s,
                                   batch_size=batch_size, say=lambda m, t=tag: say(f"{t}: {m}")))  # fmt: skip
    return {
        **conditions("ipsec-sizes", alg, quick, batch_size, packets, reps, budget_s),
        "frame_sizes": list(sizes),
        "flows": list(flows),
        "duration_s": round(time.perf_counter() - t_start, 2),
        "results": results,
    }


class IpsecResult(ScenarioResult):
    """`ipsec-flows` and `ipsec-sizes` results: a row per point, encap and decap; ipsec-flows draws
    two figures (Gbit/s and Mpps), ipsec-sizes one with two panels."""

    def table(self):
        from rich.table import Table

        r = self.data
        t = Table("flows", "size", "bulk", "enc Mpps", "enc Gb/s", "dec Mpps", "dec Gb/s", "enc/dec Mpps warm",
                  "timed fast/slow", title=f"{r['scenario']}, {r['alg']}, 1 core, batch {r['batch_size']}",
                  caption="Gb/s of the inner L2 frames (FCS counted); cold: the pool restored first, warm: each "
                  "batch just before its poll; packets per path of encap + decap (cold)")  # fmt: skip
        for x in r["results"]:
            e, d = x["encap"], x["decap"]
            t.add_row(f"{x['flows']:,}", str(x["frame_size"]), "on" if x["bulk"] else "off",
                      f"{x['encap_mpps']:.4g}", f"{x['encap_gbps']:.4g}", f"{x['decap_mpps']:.4g}",
                      f"{x['decap_gbps']:.4g}", f"{x['encap_mpps_warm']:.4g} / {x['decap_mpps_warm']:.4g}",
                      f"{e['fastpath_packets'] + d['fastpath_packets']:,}/"
                      f"{e['slowpath_packets'] + d['slowpath_packets']:,}")  # fmt: skip
        return t

    def plot(self, path):
        from flowpath.bench import plot_scenarios

        if self.data["scenario"] == "ipsec-flows":
            return plot_scenarios.plot_ipsec_flows(self.data, path)
        return plot_scenarios.plot_ipsec_sizes(self.data, path)


def _kw(opts: BenchOptions, progress: Progress) -> dict:
    return dict(alg=opts.alg, quick=opts.quick, batch_size=opts.batch_size or 256, packets=opts.packets,
                reps=opts.reps, progress=progress.say)  # fmt: skip


class IpsecFlows:
    """`flowpath bench ipsec-flows`: one frame size, each flow count, bulk on and off."""

    name = "ipsec-flows"

    def check(self, opts: BenchOptions) -> None:
        check_options(opts.alg, (opts.frame_size or 128,), opts.flows or [1])

    def run(self, opts: BenchOptions, progress: Progress) -> IpsecResult:
        progress.start(self.name)
        r = ipsec_flows(opts.flows, opts.frame_size or 128, **_kw(opts, progress))
        progress.done()
        return IpsecResult(r)


class IpsecSizes:
    """`flowpath bench ipsec-sizes`: every size of SIZES at each flow count, bulk on."""

    name = "ipsec-sizes"

    def check(self, opts: BenchOptions) -> None:
        if opts.frame_size is not None:
            raise UsageError(f"ipsec-sizes measures {', '.join(map(str, SIZES))}-byte frames; it takes no "
                             "--frame-size")  # fmt: skip
        check_options(opts.alg, SIZES, opts.flows or [1])

    def run(self, opts: BenchOptions, progress: Progress) -> IpsecResult:
        progress.start(self.name)
        r = ipsec_sizes(opts.flows, **_kw(opts, progress))
        progress.done()
        return IpsecResult(r)
