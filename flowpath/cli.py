"""The `flowpath` command: thin wrappers that parse options, call one library function, print.

One handler maps errors to exit codes (httpie's main/program split): ConfigError and UsageError -> 2,
anything else -> 1; `--traceback` re-raises instead.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

try:  # typer >= 0.20 vendors click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover
    from click import exceptions as click_exc

from flowpath import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="flowpath: a software gateway with a netfilter-style flowtable fast path. "
    "Configure it with `ip -batch` network files and `nft -f` rulesets; forward captures with `replay`.",
)
_state = {"traceback": False}


def _version(value: bool) -> None:
    if value:
        print(f"flowpath {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    traceback: Annotated[
        bool, typer.Option("--traceback", help="Show the Python traceback on errors.")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    _state["traceback"] = traceback


NetOpt = Annotated[
    Path, typer.Option("-n", "--net", help="Network file in `ip -batch` syntax.", show_default=False)
]
RulesOpt = Annotated[
    Optional[Path], typer.Option("-r", "--rules", help="Ruleset in `nft -f` syntax or libnftables JSON.")
]


def _load(net_path: Path, rules_path: Path | None):
    from flowpath.config.ipbatch import load_network
    from flowpath.config.nft import load_ruleset

    net = load_network(net_path)
    return net, (load_ruleset(rules_path) if rules_path is not None else None)


@app.command()
def replay(
    net: NetOpt,
    rules: RulesOpt = None,
    inputs: Annotated[
        list[str],
        typer.Option(
            "--in",
            metavar="IF=FILE",
            help="IF=FILE: a pcap/pcapng capture received on interface IF (repeatable; "
            "merged by timestamp). A bare pcapng FILE uses its own interface names.",
        ),
    ] = None,  # type: ignore[assignment]
    out_dir: Annotated[
        Optional[Path], typer.Option("--out-dir", help="Write DIR/IF.pcap per egress interface.")
    ] = None,
    outs: Annotated[
        list[str],
        typer.Option("--out", metavar="IF=FILE", help="IF=FILE: write interface IF's output to FILE."),
    ] = None,  # type: ignore[assignment]
    stats: Annotated[Optional[Path], typer.Option("--stats", help="Write counters as JSON.")] = None,
    no_flowtable: Annotated[
        bool, typer.Option("--no-flowtable", help="Every packet takes the classic path.")
    ] = False,
    no_bulk: Annotated[
        bool, typer.Option("--no-bulk", help="Transmit one packet per call (no grouping).")
    ] = False,
    batch_size: Annotated[
        int, typer.Option("--batch", min=1, max=65536, help="Packets per poll batch.")
    ] = 256,
    dump_conntrack: Annotated[
        Optional[Path], typer.Option("--dump-conntrack", help="Write the final `conntrack -L` listing.")
    ] = None,
    dump_flowtable: Annotated[
        Optional[Path], typer.Option("--dump-flowtable", help="Write the final flowtable listing.")
    ] = None,
    dump_xfrm: Annotated[
        Optional[Path],
        typer.Option(
            "--dump-xfrm", help="Write the final `ip -s xfrm state` and `ip -s xfrm policy` listings."
        ),
    ] = None,
    sysctl: Annotated[
        list[str],
        typer.Option(
            "--sysctl",
            metavar="KEY=VALUE",
            help="net.netfilter.nf_flowtable_tcp_timeout or "
            "net.netfilter.nf_flowtable_udp_timeout, in seconds (default 30).",
        ),
    ] = None,  # type: ignore[assignment]
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No summary.")] = False,
) -> None:
    """Forward captured traffic through the gateway, as a Linux box configured the same way would."""
    from flowpath.errors import UsageError
    from flowpath.replay import parse_in_specs
    from flowpath.replay import replay as run

    if not inputs:
        raise UsageError("replay needs at least one --in IF=FILE")
    if out_dir is None and not outs:
        raise UsageError("replay needs --out-dir DIR or --out IF=FILE")
    out_map = {}
    for spec in outs or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--out {spec!r}: expected IF=FILE")
        out_map[name] = Path(path)
    sysctls = {}
    for spec in sysctl or []:
        key, sep, value = spec.partition("=")
        if not sep or not value.strip().isdigit():
            raise UsageError(f"--sysctl {spec!r}: expected KEY=SECONDS")
        sysctls[key.strip()] = int(value)
    network, ruleset = _load(net, rules)
    res = run(network, ruleset, parse_in_specs(inputs), out_dir, out_map, flowtable=not no_flowtable,
              bulk=not no_bulk, batch_size=batch_size, stats_path=stats, sysctl=sysctls)  # fmt: skip
    if dump_flowtable is not None:
        dump_flowtable.write_text(res.worker.flowtable_listing())
    if dump_xfrm is not None:
        dump_xfrm.write_text(res.worker.xfrm_listing())
    if dump_conntrack is not None:
        dump_conntrack.write_text(res.worker.conntrack.listing(res.worker.now_ns))
    if not quiet:
        _print_summary(res)


def _print_summary(res) -> None:
    from rich.console import Console
    from rich.table import Table

    s = res.stats
    con = Console()
    con.print(
        f"rx {s['rx_packets']}  tx {s['tx_packets']}  dropped {s['dropped_packets']}  local {s['local_packets']}"
        f"  fast path {s['fastpath_packets']}  slow path {s['slowpath_packets']}"
        f"  flows offloaded {s['flows_offloaded']}"
    )
    t = Table("interface", "rx packets", "rx bytes", "tx packets", "tx bytes", "output", box=None)
    for name, c in s["interfaces"].items():
        out = res.outputs.get(name)
        t.add_row(name, str(c["rx_packets"]), str(c["rx_bytes"]), str(c["tx_packets"]), str(c["tx_bytes"]),
                  str(out) if out else "")  # fmt: skip
    con.print(t)
    if s["drops"]:
        d = Table("drop reason", "packets", box=None)
        for k, v in sorted(s["drops"].items(), key=lambda kv: -kv[1]):
            d.add_row(k, str(v))
        con.print(d)


@app.command(
    context_settings={"allow_extra_args": False},
    help="nft-compatible front end: `nft -c -f FILE` checks a ruleset; "
    "`nft list ruleset -f FILE [--json]` prints its canonical listing or libnftables JSON.",
)
def nft(
    words: Annotated[Optional[list[str]], typer.Argument(help="`list ruleset` (or nothing with -c).")] = None,
    file: Annotated[Path, typer.Option("-f", "--file", help="Ruleset file (nft syntax or JSON).")] = ...,  # type: ignore[assignment]
    check: Annotated[
        bool, typer.Option("-c", "--check", help="Check only; print nothing on success.")
    ] = False,
    json_: Annotated[bool, typer.Option("-j", "--json", help="Print libnftables JSON.")] = False,
) -> None:
    import json

    from flowpath.config.nft import load_ruleset
    from flowpath.errors import UsageError

    words = words or []
    if not file.is_file():
        raise UsageError(f"Could not process rule: No such file or directory: {file}")
    rs = load_ruleset(file)
    if check:
        if words:
            raise UsageError("-c takes no command words")
        return
    if words != ["list", "ruleset"]:
        raise UsageError("supported: `nft -c -f FILE` and `nft list ruleset -f FILE [--json]`")
    print(json.dumps(rs.to_json()) if json_ else rs.list(), end="" if not json_ else "\n")


@app.command()
def trafgen(
    profile: Annotated[Path, typer.Argument(help="Traffic profile (TOML, see examples/profiles/).")],
    out: Annotated[Path, typer.Option("--out", help="Write the generated frames to this pcap.")] = ...,  # type: ignore[assignment]
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No summary.")] = False,
) -> None:
    """Generate a profile's streams (with a per-packet signature) into a capture for `replay`."""
    from flowpath.errors import UsageError
    from flowpath.trafgen.profile import trafgen as run

    if not profile.is_file():
        raise UsageError(f"no such profile: {profile}")
    res = run(profile, out)
    if not quiet:
        from rich.console import Console
        from rich.table import Table

        t = Table("stream", "name", "port", "packets", "bytes", "first ts (ns)", "last ts (ns)", box=None,
                  title=f"{res['packets']} packets -> {out}")  # fmt: skip
        for st in res["streams"]:
            t.add_row(str(st["stream_id"]), st["name"], st["port"], str(st["packets"]), str(st["bytes"]),
                      str(st["first_ts_ns"]), str(st["last_ts_ns"]))  # fmt: skip
        Console().print(t)


@app.command()
def rxstats(
    captures: Annotated[
        list[str], typer.Argument(help="Received captures: FILE (port = file stem) or PORT=FILE.")
    ],
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the statistics as JSON.")] = None,
    tx: Annotated[
        Optional[list[Path]],
        typer.Option("--tx", help="The generator's capture(s): sent counts per stream, so tail loss counts."),
    ] = None,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No tables.")] = False,
) -> None:
    """Per port and per stream packets, rates, loss, reordering, duplicates and latency of captures."""
    import json

    from flowpath.trafgen.rxstats import parse_rx_inputs, rx_stats_captures

    res = rx_stats_captures(parse_rx_inputs(captures), tx or None)
    if json_path is not None:
        json_path.write_text(json.dumps(res, indent=2) + "\n")
    if quiet:
        return
    from rich.console import Console
    from rich.table import Table

    con = Console()
    t = Table("port", "packets", "bytes", "pps", "L2 bit/s", "L1 bit/s", "signed", box=None)
    for name, p in [*res["ports"].items(), ("total", res["total"])]:
        t.add_row(name, str(p["packets"]), str(p["bytes"]), f"{p['pps']:.6g}", f"{p['l2_bps']:.6g}",
                  f"{p['l1_bps']:.6g}", str(p["signed_packets"]))  # fmt: skip
    con.print(t)
    t = Table(
        "stream", "packets", "lost", "dup", "reorder", "lat min/avg/max (ns)", "jitter (ns)", "pps", box=None
    )
    for sid, st in res["streams"].items():
        lat = st["latency_ns"]
        t.add_row(sid, str(st["packets"]), f"{st['lost']} ({st['loss_ratio']:.2%})", str(st["duplicates"]),
                  str(st["reordered"]), f"{lat['min']}/{lat['avg']:.0f}/{lat['max']}" if lat else "-",
                  f"{lat['jitter']:.1f}" if lat else "-", f"{st['pps']:.6g}")  # fmt: skip
    con.print(t)


SCENARIOS = ("classic-vs-flowtable", "bulking", "frame-sizes", "ipsec-flows", "ipsec-sizes")
IPSEC_SCENARIOS = ("ipsec-flows", "ipsec-sizes")


@app.command()
def bench(
    scenario: Annotated[str, typer.Argument(help=f"One of: {', '.join(SCENARIOS)}.")],
    quick: Annotated[
        bool, typer.Option("--quick", help="Short run (under a minute): fewer packets and reps.")
    ] = False,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the results as JSON.")] = None,
    plot: Annotated[
        Optional[Path],
        typer.Option(
            "--plot", help="Write a PNG plot (bulking, ipsec-flows: F.png in Gbit/s and F-mpps.png in Mpps)."
        ),
    ] = None,
    frame_size: Annotated[
        Optional[int],
        typer.Option(
            "--frame-size",
            min=64,
            max=1518,
            help="Frame size in bytes on the wire, FCS included (default 64; bulking, ipsec-flows 128).",
        ),
    ] = None,
    flows: Annotated[
        Optional[str],
        typer.Option(
            "--flows",
            help="Comma-separated flow counts (default 1000; bulking, ipsec-flows 1..10000; ipsec-sizes 1,1000).",
        ),
    ] = None,
    batch_size: Annotated[
        Optional[int],
        typer.Option(
            "--batch",
            min=1,
            max=65536,
            help="Packets per poll (default 256; classic-vs-flowtable 1024, where a poll's fixed Python cost "
            "is amortized and the batch still fits the L2 cache).",
        ),
    ] = None,
    alg: Annotated[
        str, typer.Option("--alg", help="ipsec-*: gcm (rfc4106(gcm(aes)), 128-bit) or chacha (rfc7539esp).")
    ] = "gcm",
    packets: Annotated[
        Optional[int],
        typer.Option("--packets", min=1, max=10_000_000, help="ipsec-*: packets per timed repetition."),
    ] = None,
    reps: Annotated[
        Optional[int], typer.Option("--reps", min=1, max=10_000, help="ipsec-*: repetitions at most.")
    ] = None,
) -> None:
    """Run one of the seeds' experiments in memory on one core and report Mpps side by side."""
    import json

    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from flowpath.errors import UsageError

    if scenario not in SCENARIOS:
        raise UsageError(f"unknown scenario {scenario!r}; choose from: {', '.join(SCENARIOS)}")
    try:
        counts = [int(x) for x in (flows or "1000").split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--flows {flows!r}: expected comma-separated integers") from None
    if not counts or min(counts) < 1 or max(counts) > 1_000_000:
        raise UsageError("--flows: between 1 and 1000000 flows")
    if batch_size is None and scenario == "classic-vs-flowtable":
        from flowpath.bench.flowtable import BATCH as batch_size
    batch_size = batch_size or 256
    if scenario in IPSEC_SCENARIOS:
        return _bench_ipsec(scenario, quick, json_path, plot, frame_size, counts if flows else None,
                            batch_size, alg, packets, reps)  # fmt: skip
    if alg != "gcm" or packets is not None or reps is not None:
        raise UsageError(f"--alg, --packets and --reps apply to {' and '.join(IPSEC_SCENARIOS)} only")
    if scenario != "classic-vs-flowtable":
        return _bench_scenario(
            scenario, quick, json_path, plot, frame_size, counts if flows else None, batch_size
        )
    frame_size = frame_size or 64
    from flowpath.bench.flowtable import classic_vs_flowtable, compile_times

    con = Console(stderr=True)
    results = []
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=con
    ) as prog:
        compiled = {}
        if not quick:  # about 30 s: every kernel the first packet needs, compiled in a fresh interpreter
            task = prog.add_task("numba compile times (fresh interpreters)", total=None)
            compiled = {f"compile_{k}": round(v, 3) for k, v in compile_times().items()}
            prog.update(task, completed=1, total=1)
        for n in counts:
            task = prog.add_task(f"{n} flows", total=None)
            say = lambda msg, t=task, n=n: prog.update(t, description=f"{n} flows: {msg}")  # noqa: E731
            results.append(
                classic_vs_flowtable(frame_size, n, quick=quick, batch_size=batch_size, progress=say)
            )
            prog.update(task, description=f"{n} flows: done", completed=1, total=1)
    caption = "port batches; cold: a pool of batches restored first (frames and flowtable from memory)"
    if compiled:
        caption += (f"; first packet from a fresh interpreter: {compiled['compile_cold_s']:.1f} s compiling, "
                    f"{compiled['compile_cached_s']:.2f} s from numba's cache")  # fmt: skip
    t = Table("flows", "classic Mpps", "flowtable Mpps", "cold", "hook alone", "ratio", "Gbit/s (L2)",
              "B/flow", title=f"{scenario}, {frame_size}-byte frames, 1 core, batch {batch_size}",
              caption=caption)  # fmt: skip
    for r in results:
        t.add_row(f"{r['flows']:,}", f"{r['classic_mpps']:.4f}", f"{r['flowtable_mpps']:.2f}",
                  f"{r['flowtable_mpps_cold']:.2f}", f"{r['kernel_mpps']:.2f}", f"{r['ratio']:.0f}x",
                  f"{r['flowtable_gbps_l2']:.2f}", f"{r['bytes_per_flow']:.0f}")  # fmt: skip
    Console().print(t)
    if json_path is not None:
        doc = {**results[0], **compiled, "results": results}
        json_path.write_text(json.dumps(doc, indent=2) + "\n")
    if plot is not None:
        from flowpath.bench.plot import plot_classic_vs_flowtable

        plot_classic_vs_flowtable(results, plot)


def _bench_scenario(scenario, quick, json_path, plot, frame_size, counts, batch_size) -> None:
    """bulking and frame-sizes: one library call each, a summary table, JSON, plots."""

    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from flowpath.bench import plot_scenarios
    from flowpath.errors import UsageError

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=Console(stderr=True)) as prog:  # fmt: skip
        task = prog.add_task(scenario, total=None)
        say = lambda msg: prog.update(task, description=f"{scenario}: {msg}")  # noqa: E731
        if scenario == "bulking":
            from flowpath.bench.bulking import bulking

            r = bulking(counts and tuple(counts), frame_size or 128, quick=quick, batch_size=batch_size,
                        progress=say)  # fmt: skip
        else:
            from flowpath.bench.frames import frame_sizes_scenario

            if counts is not None and len(counts) != 1:
                raise UsageError("frame-sizes runs at one flow count: --flows N")
            if frame_size is not None:
                raise UsageError("frame-sizes measures 64, 128, 512, 1518 and IMIX; it takes no --frame-size")
            r = frame_sizes_scenario(counts[0] if counts else 1000, quick=quick, batch_size=batch_size,
                                     progress=say)  # fmt: skip
        prog.update(task, description=f"{scenario}: done", completed=1, total=1)
    if scenario == "bulking":
        t = Table("flows", "bulk Mpps", "no-bulk Mpps", "bulk Gbit/s (L2)", "no-bulk Gbit/s (L2)", "bulk gain",
                  title=f"bulking, {r['frame_size']}-byte frames, 1 core, batch {batch_size}")  # fmt: skip
        for x in r["results"]:
            t.add_row(f"{x['flows']:,}", f"{x['bulk']['mpps']:.3f}", f"{x['no_bulk']['mpps']:.3f}",
                      f"{x['bulk']['gbps_l2']:.3f}", f"{x['no_bulk']['gbps_l2']:.3f}", f"{x['bulk_gain']:.2f}x")  # fmt: skip
    else:
        t = Table("frame size", "Mpps", "Gbit/s (L2)", "Gbit/s (L1)", "10GbE Mpps", "100GbE Mpps",
                  title=f"frame-sizes, {r['flows']:,} flows, 1 core, batch {batch_size}")  # fmt: skip
        for x in r["results"]:
            t.add_row(str(x["frame_size"]), f"{x['mpps']:.3f}", f"{x['gbps_l2']:.3f}", f"{x['gbps_l1']:.3f}",
                      f"{x['line_rate_mpps']['10GbE']:.2f}", f"{x['line_rate_mpps']['100GbE']:.2f}")  # fmt: skip
    Console().print(t)
    fn = plot_scenarios.plot_bulking if scenario == "bulking" else plot_scenarios.plot_frame_sizes
    _bench_write(r, json_path, plot, fn)


def _bench_write(r: dict, json_path, plot, plot_fn) -> None:
    """A scenario's results: --json F, and --plot F.png through plot_fn (which may write several)."""
    import json

    from rich.console import Console

    if json_path is not None:
        json_path.write_text(json.dumps(r, indent=2) + "\n")
    if plot is not None:
        for p in plot_fn(r, plot):
            Console(stderr=True).print(f"wrote {p}")


def _bench_ipsec(
    scenario, quick, json_path, plot, frame_size, counts, batch_size, alg, packets, reps
) -> None:
    """ipsec-flows and ipsec-sizes: one library call each, a summary table, JSON, plots."""

    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from flowpath.bench import ipsec, plot_scenarios
    from flowpath.errors import UsageError

    if scenario == "ipsec-sizes" and frame_size is not None:
        raise UsageError(
            f"ipsec-sizes measures {', '.join(map(str, ipsec.SIZES))}-byte frames; it takes no --frame-size"
        )
    ipsec.check_options(
        alg, ipsec.SIZES if scenario == "ipsec-sizes" else (frame_size or 128,), counts or [1]
    )
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=Console(stderr=True)) as prog:  # fmt: skip
        task = prog.add_task(scenario, total=None)
        say = lambda msg: prog.update(task, description=f"{scenario}: {msg}")  # noqa: E731
        kw = dict(alg=alg, quick=quick, batch_size=batch_size, packets=packets, reps=reps, progress=say)
        if scenario == "ipsec-flows":
            r = ipsec.ipsec_flows(counts, frame_size or 128, **kw)
        else:
            r = ipsec.ipsec_sizes(counts, **kw)
        prog.update(task, description=f"{scenario}: done", completed=1, total=1)
    t = Table("flows", "size", "bulk", "enc Mpps", "enc Gb/s", "dec Mpps", "dec Gb/s", "enc/dec Mpps warm",
              "timed fast/slow", title=f"{scenario}, {r['alg']}, 1 core, batch {batch_size}",
              caption="Gb/s of the inner L2 frames (FCS counted); cold: the pool restored first, warm: each "
              "batch just before its poll; packets per path of encap + decap (cold)")  # fmt: skip
    for x in r["results"]:
        e, d = x["encap"], x["decap"]
        t.add_row(f"{x['flows']:,}", str(x["frame_size"]), "on" if x["bulk"] else "off", f"{x['encap_mpps']:.4g}",
                  f"{x['encap_gbps']:.4g}", f"{x['decap_mpps']:.4g}", f"{x['decap_gbps']:.4g}",
                  f"{x['encap_mpps_warm']:.4g} / {x['decap_mpps_warm']:.4g}",
                  f"{e['fastpath_packets'] + d['fastpath_packets']:,}/{e['slowpath_packets'] + d['slowpath_packets']:,}")  # fmt: skip
    Console().print(t)
    fn = plot_scenarios.plot_ipsec_flows if scenario == "ipsec-flows" else plot_scenarios.plot_ipsec_sizes
    _bench_write(r, json_path, plot, fn)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (0 ok, 1 runtime failure, 2 usage/configuration error)."""
    from flowpath.errors import CaptureError, ConfigError, UsageError

    args = list(sys.argv[1:] if argv is None else argv)
    tb = "--traceback" in args
    if not args:
        args = ["--help"]
    try:
        rv = app(args=args, prog_name="flowpath", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        print("Aborted.", file=sys.stderr)
        return 1
    except click_exc.ClickException as e:
        if tb:
            raise
        e.show()
        return 2
    except (ConfigError, UsageError) as e:
        if tb:
            raise
        print(f"{e}" if isinstance(e, ConfigError) else f"flowpath: error: {e}", file=sys.stderr)
        return 2
    except CaptureError as e:
        if tb:
            raise
        print(f"flowpath: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - the one place that turns any failure into exit 1
        if tb:
            raise
        print(f"flowpath: error: {type(e).__name__}: {e} (run with --traceback for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
