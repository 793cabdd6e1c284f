"""`flowpath replay`: forward captured traffic through a gateway and write what it transmits.

No Linux counterpart (it plays tcpreplay into a gateway plus one tcpdump per egress port).
Inputs are merged by capture timestamp, which is the packet clock (DESIGN.md §3).
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from flowpath.errors import CaptureError, UsageError
from flowpath.outputs import check_writable, make_output_dir
from flowpath.packet.batch import PacketBatch
from flowpath.progress import NO_METER, PCAP_RECORD_HLEN, Meter

RX_USECS = 50  # replay's default interrupt coalescing (next_poll_ns)


@dataclass
class ReplayResult:
    stats: dict
    outputs: dict[str, Path] = field(default_factory=dict)
    worker: object = None

    def summary(self):
        """The counters as `flowpath replay` prints them: one line, then tables per interface and per
        drop reason (a rich renderable)."""
        from rich.console import Group
        from rich.table import Table

        s = self.stats
        line = (f"rx {s['rx_packets']}  tx {s['tx_packets']}  dropped {s['dropped_packets']}  "
                f"local {s['local_packets']}  fast path {s['fastpath_packets']}  slow path {s['slowpath_packets']}"
                f"  flows offloaded {s['flows_offloaded']}")  # fmt: skip
        t = Table("interface", "rx packets", "rx bytes", "tx packets", "tx bytes", "output", box=None)
        for name, c in s["interfaces"].items():
            out = self.outputs.get(name)
            t.add_row(name, str(c["rx_packets"]), str(c["rx_bytes"]), str(c["tx_packets"]), str(c["tx_bytes"]),
                      str(out) if out else "")  # fmt: skip
        parts = [line, t]
        if s["drops"]:
            d = Table("drop reason", "packets", box=None)
            for k, v in sorted(s["drops"].items(), key=lambda kv: -kv[1]):
                d.add_row(k, str(v))
            parts.append(d)
        return Group(*parts)


@dataclass
class ReplayOptions:
    """What `flowpath replay` was asked, as typed: IF=FILE specs, KEY=VALUE sysctls, output paths."""

    net: Path
    rules: Path | None = None
    inputs: list[str] = field(default_factory=list)
    out_dir: Path | None = None
    outs: list[str] = field(default_factory=list)
    stats: Path | None = None
    flowtable: bool = True
    bulk: bool = True
    batch_size: int = 256
    rx_usecs: int = RX_USECS
    dump_conntrack: Path | None = None
    dump_flowtable: Path | None = None
    dump_xfrm: Path | None = None
    sysctl: list[str] = field(default_factory=list)
    workers: int = 1
    classic_lane: bool = True


def parse_out_specs(specs: list[str]) -> dict[str, Path]:
    """`--out IF=FILE` pairs."""
    out = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--out {spec!r}: expected IF=FILE")
        out[name] = Path(path)
    return out


def parse_sysctls(specs: list[str]) -> dict[str, int]:
    """`--sysctl KEY=SECONDS` pairs."""
    out = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not value.strip().isdigit():
            raise UsageError(f"--sysctl {spec!r}: expected KEY=SECONDS")
        out[key.strip()] = int(value)
    return out


def run_replay(opts: ReplayOptions, meter: Meter = NO_METER) -> ReplayResult:
    """`flowpath replay`: check the options, load the network and the ruleset, check every output
    path, forward the captures, then write the stats and the listings asked for.

    Everything that can fail with a UsageError or ConfigError (exit 2) runs before the forwarding:
    an unwritable path must not be found after the work. `meter` follows the forwarding (replay()).
    """
    from flowpath.config.ipbatch import load_network
    from flowpath.config.nft import load_ruleset

    if not opts.inputs:
        raise UsageError("replay needs at least one --in IF=FILE")
    if opts.out_dir is None and not opts.outs:
        raise UsageError("replay needs --out-dir DIR or --out IF=FILE")
    outs, sysctl = parse_out_specs(opts.outs), parse_sysctls(opts.sysctl)
    net = load_network(opts.net)
    ruleset = load_ruleset(opts.rules) if opts.rules is not None else None
    inputs = parse_in_specs(opts.inputs)
    if opts.out_dir is not None:
        make_output_dir(opts.out_dir, "--out-dir")
    dumps = (("--dump-flowtable", opts.dump_flowtable, lambda w: w.flowtable_listing()),
             ("--dump-xfrm", opts.dump_xfrm, lambda w: w.xfrm_listing()),
             ("--dump-conntrack", opts.dump_conntrack, lambda w: w.conntrack.listing(w.now_ns)))  # fmt: skip
    targets = [(f"--out {name}", path) for name, path in outs.items()] + [("--stats", opts.stats)]
    for option, path in targets + [(option, path) for option, path, _ in dumps]:
        if path is not None:
            check_writable(path, option)
    res = replay(net, ruleset, inputs, opts.out_dir, outs, flowtable=opts.flowtable, bulk=opts.bulk,
                 batch_size=opts.batch_size, rx_usecs=opts.rx_usecs, stats_path=opts.stats, sysctl=sysctl,
                 meter=meter, workers=opts.workers, classic_lane=opts.classic_lane)  # fmt: skip
    for _, path, listing in dumps:
        if path is not None:
            path.write_text(listing(res.worker))
    return res


def parse_in_specs(specs: list[str]) -> list[tuple[str | None, Path]]:
    """`IF=FILE` pairs; a bare FILE takes interface names from its pcapng interface blocks."""
    out = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = None, spec
        if sep and not name:
            raise UsageError(f"--in {spec!r}: expected IF=FILE")
        if not Path(path).is_file():
            raise UsageError(f"--in {spec!r}: no such file: {path}")
        out.append((name, Path(path)))
    return out


def _records(net, ifname: str | None, path: Path, order: int) -> Iterator[tuple[int, int, int, int, bytes]]:
    from flowpath.ports.pcap import read_capture

    for seq, rec in enumerate(read_capture(path)):
        name = ifname or rec.if_name
        if name is None:
            raise UsageError(f"{path}: packet {seq} has no interface name; use --in IF={path}")
        try:
            link = net.link_by_name(name)
        except KeyError:
            raise UsageError(f"{path}: interface {name!r} is not in the network file") from None
        yield rec.ts_ns, order, seq, link.ifindex, rec.data


def replay(
    net,
    ruleset,
    inputs: list[tuple[str | None, Path]],
    out_dir: Path | None = None,
    outs: dict[str, Path] | None = None,
    *,
    flowtable: bool = True,
    bulk: bool = True,
    batch_size: int = 256,
    rx_usecs: int = RX_USECS,
    stats_path: Path | None = None,
    sysctl: dict[str, int] | None = None,
    meter: Meter = NO_METER,
    workers: int = 1,
    classic_lane: bool = True,
) -> ReplayResult:
    """Forward every packet of `inputs`; write DIR/IF.pcap (or the `outs` files); return the counters.

    The packets reach the Worker in polls as a NAPI driver would deliver them (poll_times). `meter`
    gets one phase whose units are the input files' bytes (each packet counts its frame and a pcap
    record header), advanced after every poll. workers > 1: the packets are steered over that many
    workers (flowpath.workers), deterministically. classic_lane False: the classic path's packets all
    take the Python path (the compiled lane's oracle, `--no-classic-lane`)."""
    from flowpath.datapath import Worker
    from flowpath.ports.pcap import PcapWriter
    from flowpath.workers import Workers

    if workers < 1:
        raise UsageError(f"--workers {workers}: at least 1")

    for name in outs or {}:
        try:
            net.link_by_name(name)
        except KeyError:
            raise UsageError(f"--out {name}=...: interface {name!r} is not in the network file") from None
    if workers > 1:
        worker = Workers(net, ruleset, n=workers, flowtable=flowtable, bulk=bulk, sysctl=sysctl,
                         classic_lane=classic_lane)  # fmt: skip
    else:
        worker = Worker(net, ruleset, flowtable=flowtable, bulk=bulk, sysctl=sysctl, classic_lane=classic_lane)
    paths: dict[str, Path] = dict(outs or {})
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for link in net.links.values():
            if link.kind not in ("vlan", "ipip", "ip6tnl") and link.name != "lo" and link.name not in paths:
                paths[link.name] = out_dir / f"{link.name}.pcap"
    writers = {name: PcapWriter(p, nanosecond=True) for name, p in paths.items()}
    error = None
    meter.begin("replay", sum(path.stat().st_size for _, path in inputs))
    try:
        streams = [_records(net, name, path, k) for k, (name, path) in enumerate(inputs)]
        batch = PacketBatch(batch_size)
        poll_ns = -1  # the time of the poll being filled, or of the last one
        nbytes = 0  # input bytes of the packets in the batch (for the meter)
        try:
            for ts_ns, _, _, ifindex, data in heapq.merge(*streams):
                # later than the poll, or past a GC run (1 s of packet time)
                if batch.n and (ts_ns > poll_ns or ts_ns >= worker.next_gc_ns):
                    nbytes = _run(worker, batch, writers, meter, nbytes)
                if not batch.n:
                    poll_ns = next_poll_ns(poll_ns, ts_ns, rx_usecs * 1000)
                batch.append(data, ifindex, ts_ns)
                nbytes += len(data) + PCAP_RECORD_HLEN
                if batch.n == batch.capacity:
                    nbytes = _run(worker, batch, writers, meter, nbytes)
        except CaptureError as e:  # a capture broken in the middle: what came before it is forwarded
            error = e
        if batch.n:
            _run(worker, batch, writers, meter, nbytes)
        _write(worker, worker.drain(), writers)
    finally:
        for w in writers.values():
            w.close()
    stats = worker.stats.as_dict(worker.ifname)
    if stats_path is not None:
        stats_path.write_text(json.dumps(stats, indent=2) + "\n")
    if error is not None:
        kept = f"; the counters are in {stats_path}" if stats_path is not None else ""
        raise CaptureError(error.path, error.offset, f"{error.msg} (replay stopped there: the outputs hold what "
                           f"the {stats['rx_packets']} packets read before it gave{kept})") from None  # fmt: skip
    return ReplayResult(stats, paths, worker)


def next_poll_ns(last_poll_ns: int, ts_ns: int, coalesce_ns: int) -> int:
    """When the poll that takes a packet arriving at ts_ns runs: right away (NAPI polls again) when the
    packet was already waiting at the last poll, which had used its whole budget; else coalesce_ns
    after it arrived (the interrupt that ethtool's rx-usecs delays). A poll holds, up to its budget,
    the packets that had arrived by its time. No Linux counterpart as such (napi_poll, the driver's
    interrupt moderation); it makes replay's polls look like a loaded gateway's."""
    return last_poll_ns if ts_ns <= last_poll_ns else ts_ns + coalesce_ns


def _run(worker, batch: PacketBatch, writers: dict, meter: Meter, nbytes: int) -> int:
    """One poll of the batch; its output written. Returns 0, the input bytes of the next batch."""
    _write(worker, worker.rx_batch(batch), writers)
    meter.advance(nbytes, batch.n)
    batch.clear()
    return 0


def _write(worker, frames: list[tuple[int, bytes, int]], writers: dict) -> None:
    for ifindex, frame, ts_ns in frames:
        w = writers.get(worker.ifname(ifindex))
        if w is not None:
            w.write(frame, ts_ns)
