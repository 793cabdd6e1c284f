"""`flowpath bench cps`: new TCP connections per second through the NAT gateway of the benches
(flowpath/bench/setup.py: LAN -> WAN masquerade, `flow add @ft`, a stateful forward chain), with the
flowtable and without it (`--no-flowtable`), side by side in one run, one core, in memory.

No Linux counterpart (a connection-rate test, as TRex's ASTF mode or `ab`/`wrk` against a server
behind the gateway). Each connection is a new tuple (client 10.0.0.2, source port and server port
varied as setup.flow_ports, so none meets an earlier one's conntrack entry) and makes the whole
exchange, 8 packets: SYN, SYN-ACK, ACK, a data segment each way, the client's FIN, the server's FIN
(which ACKs the client's), the client's last ACK. Conntrack leaves each in TIME_WAIT.

Pattern, as a loaded gateway sees it: `--flows` connections (256) are in flight in each round; a
round is 8 phases, one per packet of the exchange, and each phase sends the packet of every
connection at once in polls of up to `--batch` packets (256): all the SYNs, then all the SYN-ACKs,
and so on. The peers (flowpath/bench/peers.py) answer what the gateway emitted: the server replies
to the address and port the SYN left with (the NAT binding the gateway chose, whatever it is), each
side acknowledges the sequence numbers it received. Every emitted frame is checked against the one
it came from (NATed addresses and ports, MACs, TTL - 1, checksums, the rest unchanged); a missing,
extra or wrong frame, or a drop counted by the gateway, fails the run.

Timed: Worker.poll alone (building the peers' frames, filling the batch and checking the output are
the hosts' and the port's work). The packet clock is CLOCK_MONOTONIC read before each poll, as
`flowpath run` reads it, so conntrack's and the flowtable's GC run once a second of the run, as on
a live gateway, inside some rounds. Every kernel, the GC's included, is loaded on a throwaway
gateway first; the two measured gateways take their rounds in turn, after an untimed warm-up round
each. connections_per_s is the median round's rate (a round on a shared machine sometimes meets
another process's time slice, or the GC); connections_per_s_all is every timed connection over all
their poll time, the GC runs included.
"""

from __future__ import annotations

import statistics
import time

from flowpath import __version__
from flowpath.bench.peers import Mismatch, Seg, TcpEndpoint, check_forwarded, parse
from flowpath.bench.scenario import BenchOptions, Progress, ScenarioResult, no_ipsec_options
from flowpath.bench.setup import (
    CLIENT,
    CLIENT_MAC,
    GW_LAN,
    GW_WAN,
    LAN_IF,
    NET,
    RULES,
    SERVER,
    UPSTREAM_MAC,
    WAN_ADDR,
    WAN_IF,
    flow_ports,
)
from flowpath.errors import UsageError
from flowpath.packet import layout as L
from flowpath.packet.batch import PacketBatch
from flowpath.packet.reason import REASON_KIND, reason_label

FLOWS = 256  # connections in flight per round
BATCH = 256  # packets per poll: a NAPI budget (netdev_budget's 300 is per softirq, 64 per device)
ROUNDS, ROUNDS_QUICK = 24, 3
KERNEL_WARMUP = 640  # connections through a throwaway gateway first: its flowtable (1024 entries) grows once
WARMUP = 64  # connections of the untimed first round (numba's cache loaded, Python's first calls made)
DATA = bytes(range(64)) * 2  # each side's data segment: 128 bytes
# conntrack holds every connection of a run in TIME_WAIT (120 s), and its limit (nf_conntrack_max) is
# 262144: a run stays below it so that no SYN finds the table full
MAX_CONNECTIONS = 262144

_SYN, _ACK, _FIN, _PSH = L.TCPHDR_SYN, L.TCPHDR_ACK, L.TCPHDR_FIN, L.TCPHDR_PSH
CLIENT_SIDE, SERVER_SIDE = 0, 1
# (name, sender, flags, payload): the exchange, one phase per packet
PHASES = (
    ("SYN", CLIENT_SIDE, _SYN, b""),
    ("SYN-ACK", SERVER_SIDE, _SYN | _ACK, b""),
    ("ACK", CLIENT_SIDE, _ACK, b""),
    ("data", CLIENT_SIDE, _PSH | _ACK, DATA),
    ("data", SERVER_SIDE, _PSH | _ACK, DATA),
    ("FIN", CLIENT_SIDE, _FIN | _ACK, b""),
    ("FIN", SERVER_SIDE, _FIN | _ACK, b""),  # the server's FIN acknowledges the client's
    ("ACK", CLIENT_SIDE, _ACK, b""),
)
PACKETS_PER_CONNECTION = len(PHASES)
VARIANTS = (("flowtable", True), ("no_flowtable", False))
LABELS = (("flowtable", "flowtable"), ("no_flowtable", "--no-flowtable"))


def isn(k: int, side: int) -> int:
    """Connection k's initial sequence number on one side: distinct for every k (an odd multiplier is
    a bijection mod 2**32), so the server tells SYNs apart by it whatever port NAT gave them."""
    return (k * 2654435761 + 0x1000 + side * 0x7FFF_0000) & 0xFFFFFFFF


class Conn:
    """One connection of the bench: its two endpoints and the NAT binding the gateway chose."""

    __slots__ = ("k", "client", "server", "nat_port", "sent")

    def __init__(self, k: int):
        cport, sport = flow_ports(k)
        self.k = k
        self.client = TcpEndpoint(CLIENT_MAC, GW_LAN, CLIENT, cport, isn(k, CLIENT_SIDE), SERVER, sport)
        self.server = TcpEndpoint(UPSTREAM_MAC, GW_WAN, SERVER, sport, isn(k, SERVER_SIDE))
        self.nat_port: int | None = None
        self.sent: Seg | None = None  # what was last sent into the gateway, for the check of its output


class Gateway:
    """One Worker on the bench gateway and what the run counted on it: the poll times per round, the
    polls and packets, the NAT tuples it handed out (each must be new: conntrack still holds every
    earlier one, in TIME_WAIT)."""

    def __init__(self, flowtable: bool, batch_size: int, rules: str = RULES):
        from flowpath.config.ipbatch import parse_network
        from flowpath.config.nft import parse_ruleset
        from flowpath.datapath import Worker

        self.worker = Worker(
            parse_network(NET, "<bench>"), parse_ruleset(rules, "<bench>"), flowtable=flowtable
        )
        self.batch = PacketBatch(batch_size)
        self.round_s: list[float] = []
        self.polls = self.packets = self.nat_ports_changed = 0
        self.nat_tuples: set[tuple[int, int]] = set()

    def through(self, frames: list[bytes], iif: int) -> tuple[float, list[tuple[int, bytes]]]:
        """The frames through Worker.poll in polls of the batch size; the seconds in poll and what
        it transmitted, as (ifindex, frame)."""
        w, b, out, dt = self.worker, self.batch, [], 0.0
        for lo in range(0, len(frames), b.capacity):
            b.clear()
            ts_ns = time.monotonic_ns()
            for f in frames[lo : lo + b.capacity]:
                b.append(f, iif, ts_ns)
            t0 = time.perf_counter()
            tx = w.poll(b)
            dt += time.perf_counter() - t0
            out += [(ifx, f) for ifx, f, _ in tx.frames()]
            self.polls += 1
            self.packets += b.n
        return dt, out

    def round(self, ks: range) -> float:
        """Connections ks through the gateway, phase by phase (see the module docstring); the seconds
        in poll. Mismatch on any missing, extra or wrong frame."""
        conns = [Conn(k) for k in ks]
        by_isn = {c.client.snd_nxt: c for c in conns}
        to_server: dict[tuple[int, int], Conn] = {}
        to_client = {(c.server.port, c.client.port): c for c in conns}
        dt = 0.0
        for name, side, flags, payload in PHASES:
            frames = []
            for c in conns:
                f = (c.client if side == CLIENT_SIDE else c.server).segment(flags, payload)
                c.sent = parse(f)
                frames.append(f)
            iif, oif = (LAN_IF, WAN_IF) if side == CLIENT_SIDE else (WAN_IF, LAN_IF)
            secs, out = self.through(frames, iif)
            dt += secs
            if len(out) != len(frames) or any(ifx != oif for ifx, _ in out):
                raise Mismatch(f"{name} phase: {len(frames)} packets in, {len(out)} frames out, on interfaces "
                               f"{sorted({ifx for ifx, _ in out})} (want {oif})")  # fmt: skip
            for _, f in out:
                seg = parse(f)
                if side == CLIENT_SIDE:
                    self._to_server(name, seg, by_isn, to_server)
                else:
                    self._to_client(seg, to_client)
        for c in conns:
            if not (c.client.all_acked and c.server.all_acked):
                raise Mismatch(f"connection {c.k}: not every segment acknowledged at the end")
        return dt

    def _to_server(self, phase: str, seg: Seg, by_isn: dict, to_server: dict) -> None:
        """A frame the gateway sent to the server: the SYN makes the NAT binding known (checked new)."""
        if phase == "SYN":
            c = by_isn.pop(seg.seq, None)
            if c is None:
                raise Mismatch(f"a SYN the bench did not send, or sent twice: seq {seg.seq}")
            key = (seg.sport, seg.dport)
            if key in self.nat_tuples or seg.sport == 0:
                raise Mismatch(f"connection {c.k}: NAT port {seg.sport} to {seg.dport} already in use")
            self.nat_tuples.add(key)
            to_server[key] = c
            c.nat_port = seg.sport
            self.nat_ports_changed += seg.sport != c.client.port
        else:
            c = to_server.get((seg.sport, seg.dport))
            if c is None:
                raise Mismatch(f"a frame to the server from NAT port {seg.sport}, which no connection has")
        check_forwarded(c.sent, seg, dmac=UPSTREAM_MAC, smac=GW_WAN, saddr=WAN_ADDR, sport=c.nat_port)
        c.server.receive(seg)

    def _to_client(self, seg: Seg, to_client: dict) -> None:
        c = to_client.get((seg.sport, seg.dport))
        if c is None or seg.daddr != CLIENT:
            raise Mismatch(
                f"a frame to {seg.daddr:#x}:{seg.dport} from port {seg.sport}, which no connection has"
            )
        check_forwarded(c.sent, seg, dmac=CLIENT_MAC, smac=GW_LAN, daddr=CLIENT, dport=c.client.port)
        c.client.receive(seg)


def _counters(w) -> dict:
    s = w.stats
    return {"fast": s.fastpath_packets, "slow": s.slowpath_packets, "offloaded": s.flows_offloaded,
            "generated": s.generated_packets, "reasons": s.reasons.copy()}  # fmt: skip


def conntrack_states(w) -> dict[str, int]:
    """Conntrack entries by TCP state as `conntrack -L` names it, with [OFFLOAD] for offloaded ones
    (other protocols by number)."""
    from flowpath.netfilter.conntrack_proto_tcp import TCP_CONNTRACK_NAMES
    from flowpath.netfilter.constants import IPS_OFFLOAD

    out: dict[str, int] = {}
    for ct in w.conntrack:
        name = TCP_CONNTRACK_NAMES[ct.proto.state] if ct.l4proto == L.IPPROTO_TCP else f"proto {ct.l4proto}"
        name += " [OFFLOAD]" if ct.status & IPS_OFFLOAD else ""
        out[name] = out.get(name, 0) + 1
    return out


def flowtable_flows(w) -> dict[str, int] | None:
    """The flowtables' flows by state (CLOSING: a FIN or RST was seen), None without a flowtable."""
    from flowpath.flowtable import F_CLOSING

    fts = [ft for ft, _ in w.flowtables.values()]
    if not fts:
        return None
    flags = [e["flags"] for ft in fts for e in ft.entries() if e["dir"] == 0]
    closing = sum(1 for f in flags if f & F_CLOSING)
    return {"flows": len(flags), "closing": closing}


def after_idle(w) -> dict[str, int]:
    """Conntrack's entries once the gateway has been idle past the flowtable's TCP timeout: the
    flowtable's GC gives every offloaded connection back to conntrack (flow_offload_fixup_ct)."""
    idle_ns = (w.net.sysctl["net.netfilter.nf_flowtable_tcp_timeout"] + 1) * 1_000_000_000
    if w.timers(time.monotonic_ns() + idle_ns):
        raise RuntimeError("the gateway's timers sent frames while idle")
    return conntrack_states(w)


def _summary(g: Gateway, flows: int, before: dict, warmup: int) -> dict:
    """One gateway's figures over its timed rounds; RuntimeError on any drop or originated packet."""
    w, after = g.worker, _counters(g.worker)
    drops = {reason_label(r): int(after["reasons"][r] - before["reasons"][r]) for r in range(len(after["reasons"]))
             if after["reasons"][r] != before["reasons"][r] and REASON_KIND[r] == "drop"}  # fmt: skip
    if drops or after["generated"] != before["generated"]:
        raise RuntimeError(f"the gateway dropped packets {drops} or sent packets of its own "
                           f"({after['generated'] - before['generated']})")  # fmt: skip
    conns = flows * len(g.round_s)
    packets = conns * PACKETS_PER_CONNECTION
    fast, slow = after["fast"] - before["fast"], after["slow"] - before["slow"]
    if fast + slow != packets:
        raise RuntimeError(f"{fast} fast-path + {slow} slow-path packets, {packets} sent")
    total = sum(g.round_s)
    per_round = [flows / s for s in g.round_s]
    return {
        "connections": conns,
        "connections_per_s": round(statistics.median(per_round), 1),
        "connections_per_s_all": round(conns / total, 1),
        "connections_per_s_rounds": [round(x, 1) for x in per_round],
        "packets_per_s": round(packets / total, 1),
        "us_per_connection": round(total / conns * 1e6, 2),
        "poll_s": round(total, 4),
        "fastpath_packets": fast,
        "slowpath_packets": slow,
        "fastpath_fraction": round(fast / packets, 4),
        "flows_offloaded": after["offloaded"] - before["offloaded"],
        "conntrack_entries": len(w.conntrack),  # the warm-up's connections included
        "conntrack_states": conntrack_states(w),
        "flowtable": flowtable_flows(w),
        "conntrack_states_after_idle": after_idle(w),
        "nat_ports_changed": g.nat_ports_changed,
        "warmup_connections": warmup,
        "polls": g.polls,
        "packets_per_poll": round(g.packets / g.polls, 1),
    }


def _one_syn(batch: PacketBatch) -> PacketBatch:
    """batch holding the SYN of a connection no round uses."""
    name, side, flags, payload = PHASES[0]
    batch.clear()
    batch.append(Conn(1 << 20).client.segment(flags, payload), LAN_IF, time.monotonic_ns())
    return batch


def cps(flows: int = FLOWS, rounds: int = ROUNDS, *, batch_size: int = BATCH, quick: bool = False,
        progress=lambda _m: None) -> dict:  # fmt: skip
    """Both gateways (flowtable on and off), an untimed warm-up round each, then `rounds` rounds of
    `flows` connections each, the gateways in turn; a JSON-able dict (see the module docstring)."""
    t_start = time.perf_counter()
    warmup = min(flows, WARMUP)
    for tag, on in VARIANTS:  # every kernel the run calls, compiled or loaded first: the GC's, and the
        progress(f"loading the datapath's kernels ({tag})")  # flowtable's growth past 512 flows
        g = Gateway(on, batch_size)
        # one SYN first, unchecked: a cold numba cache compiles here for minutes, longer than a
        # SYN_SENT entry lives on the packet clock, so the rounds below start with compiled kernels
        g.worker.poll(_one_syn(g.batch))
        g = Gateway(on, batch_size)
        for lo in range(0, KERNEL_WARMUP, flows):
            g.round(range(lo, min(lo + flows, KERNEL_WARMUP)))
        g.worker.timers(g.worker.next_gc_ns)
    gws = {tag: Gateway(on, batch_size) for tag, on in VARIANTS}
    before = {}
    for tag, g in gws.items():
        progress(f"warm-up round ({tag})")
        g.round(range(warmup))
        g.polls = g.packets = 0
        before[tag] = _counters(g.worker)
    k = warmup
    for r in range(rounds):
        progress(f"round {r + 1} of {rounds}")
        for g in gws.values():
            g.round_s.append(g.round(range(k, k + flows)))
        k += flows
    res = {tag: _summary(g, flows, before[tag], warmup) for tag, g in gws.items()}
    ft, cl = res["flowtable"], res["no_flowtable"]
    return {
        "scenario": "cps",
        "flowpath_version": __version__,
        "cores": 1,
        "quick": quick,
        "connections_per_s": ft["connections_per_s"],
        "connections_per_s_no_flowtable": cl["connections_per_s"],
        "flowtable_gain": round(ft["connections_per_s"] / cl["connections_per_s"], 3),
        "flows_in_flight": flows,
        "rounds": rounds,
        "batch_size": batch_size,
        "packets_per_connection": PACKETS_PER_CONNECTION,
        "data_bytes_each_way": len(DATA),
        "duration_s": round(time.perf_counter() - t_start, 2),
        "pattern": f"{flows} connections in flight per round; 8 phases per round (SYN, SYN-ACK, ACK, data "
                   "each way, FIN, FIN-ACK, ACK), each phase one packet of every connection, in polls of up to "
                   f"{batch_size}; replies built from the frames the gateway emitted",
        "traffic": "TCP 10.0.0.2 -> 198.51.100.7 through masquerade (203.0.113.1), client source port 1024.. and "
                   "server port 5001.. varied: every connection a new tuple; in memory, no NIC",
        "timing": "Worker.poll only; packet clock CLOCK_MONOTONIC; connections_per_s the median round's, "
                  "connections_per_s_all over all timed rounds",
        "results": res,
    }  # fmt: skip


class CpsResult(ScenarioResult):
    """`cps` results: a row per gateway (flowtable on, off); a figure of connections/s."""

    def table(self):
        from rich.table import Table

        r = self.data
        idle = "; ".join(f"{label}: " + (", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none")
                         for label, states in ((lb, r["results"][tag]["conntrack_states_after_idle"])
                                               for tag, lb in LABELS))  # fmt: skip
        t = Table("gateway", "conn/s", "conn/s (all)", "kpps", "fast path", "conntrack", "flowtable", "polls",
                  title=f"cps: new TCP connections through NAT, 1 core, {r['flows_in_flight']} in flight, batch "
                  f"{r['batch_size']}", caption=f"{r['rounds']} rounds of {PACKETS_PER_CONNECTION}-packet connections; "
                  f"conn/s: the median round; conntrack and flowtable: entries at the end; idle past the "
                  f"flowtable timeout, conntrack holds {idle}")  # fmt: skip
        for tag, label in LABELS:
            x = r["results"][tag]
            states = ", ".join(f"{n} {s}" for s, n in sorted(x["conntrack_states"].items()))
            t.add_row(label, f"{x['connections_per_s']:,.0f}", f"{x['connections_per_s_all']:,.0f}",
                      f"{x['packets_per_s'] / 1e3:.1f}", f"{x['fastpath_fraction']:.0%}", states,
                      "-" if x["flowtable"] is None else f"{x['flowtable']['flows']:,} ({x['flowtable']['closing']:,} closing)",
                      f"{x['polls']:,} x {x['packets_per_poll']:.0f}")  # fmt: skip
        return t

    def plot(self, path):
        from flowpath.bench.plot_cps import plot_cps

        plot_cps(self.data, path)
        return [path]


class Cps:
    """`flowpath bench cps` (see the module docstring)."""

    name = "cps"

    def check(self, opts: BenchOptions) -> None:
        no_ipsec_options(opts)
        if opts.frame_size is not None:
            raise UsageError("--frame-size does not apply to cps (SYN 58 bytes, data 182 bytes)")
        if opts.flows is not None and len(opts.flows) != 1:
            raise UsageError("--flows: cps takes one count, the connections in flight per round")
        rounds = ROUNDS_QUICK if opts.quick else ROUNDS
        if opts.flows is not None and (opts.flows[0] * (rounds + 1) > MAX_CONNECTIONS):
            raise UsageError(f"--flows {opts.flows[0]}: at most {MAX_CONNECTIONS // (rounds + 1)} in flight")

    def run(self, opts: BenchOptions, progress: Progress) -> CpsResult:
        progress.start(self.name)
        r = cps(opts.flows[0] if opts.flows else FLOWS, ROUNDS_QUICK if opts.quick else ROUNDS,
                batch_size=opts.batch_size or BATCH, quick=opts.quick, progress=progress.say)  # fmt: skip
        progress.done(f"{r['connections_per_s']:,.0f} connections/s")
        return CpsResult(r)
