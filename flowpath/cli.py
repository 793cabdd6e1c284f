"""The `flowpath` command: thin wrappers that parse options, call one library function, print.

One handler maps errors to exit codes (httpie's main/program split): ConfigError and UsageError -> 2,
anything else -> 1; `--traceback`, before or after the command, re-raises instead. An injected
Environment (httpie's) holds the output streams, so tests run the CLI in-process.
"""

from __future__ import annotations

import enum
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Optional, TextIO

import typer

try:  # typer >= 0.20 vendors click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover
    from click import exceptions as click_exc

from flowpath import __version__, numba_cache
from flowpath.bench.scenario import SCENARIOS
from flowpath.progress import NO_METER, Meter
from flowpath.units import si

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="flowpath: a software gateway with a netfilter-style flowtable fast path. "
    "Configure it with `ip -batch` network files and `nft -f` rulesets; forward captures with `replay`.",
)
PIPE_WIDTH = 1 << 12  # columns of a rich console on a pipe: wider than any table, so nothing is cut


@dataclass
class Environment:
    """Where the command writes (httpie's Environment); tests pass their own streams."""

    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)

    def console(self):
        """A rich console on stdout: the terminal's width, or on a pipe or file as wide as the output
        (rich would cut lines at 80 columns there, and shorten numbers with an ellipsis)."""
        from rich.console import Console

        tty = getattr(self.stdout, "isatty", lambda: False)()
        return Console(file=self.stdout, width=None if tty else PIPE_WIDTH)

    def err_console(self):
        from rich.console import Console

        return Console(file=self.stderr)

    def stderr_is_terminal(self) -> bool:
        return getattr(self.stderr, "isatty", lambda: False)()


_env = Environment()  # the running command's; main() sets it
_live = None  # the rich Progress drawing on stderr, if any: other stderr lines go through its console
_fast_exit = False  # set by `run`: console_main ends the process with os._exit
_undo: list = []  # what main() undoes when the command ends (listeners registered with numba)
COMPILE_COLD = "flowpath: compiling the datapath (first run after install or upgrade, 2-4 minutes)…"
COMPILE_MORE = "flowpath: compiling kernels this command has not used before (once, up to 3 minutes)…"


def _note(line: str) -> None:
    """One line on stderr, above the progress display when one is drawn."""
    if _live is not None:
        _live.console.print(line, highlight=False, markup=False, soft_wrap=True)
    else:
        print(line, file=_env.stderr, flush=True)


def _notice_compiles() -> None:
    """Say once on stderr that numba is compiling, when it starts to: its "numba:compile" event fires
    on a cache miss only, so a cached run says nothing. The first compile of a source tree (an
    empty cache) takes the whole datapath; later ones the kernels of paths not taken before."""
    from numba.core import event

    line = COMPILE_MORE if numba_cache.has_kernels() else COMPILE_COLD

    class Notice(event.Listener):
        said = False

        def on_start(self, ev) -> None:
            if not self.said:
                self.said = True
                _note(line)

        def on_end(self, ev) -> None:
            pass

    notice = Notice()
    event.register("numba:compile", notice)
    _undo.append(lambda: event.unregister("numba:compile", notice))


class _Bar(Meter):
    """flowpath.progress.Meter drawn by rich on stderr: per phase a bar, the packets so far, the
    elapsed and the remaining time."""

    def __init__(self, console):
        self.console, self.prog, self.task, self.done, self.packets = console, None, None, 0, 0

    def begin(self, what: str, total: int | None = None) -> None:
        global _live
        from rich import progress as rp

        if self.prog is None:
            self.prog = rp.Progress(rp.TextColumn("{task.description}"), rp.BarColumn(), rp.TaskProgressColumn(),
                                    rp.TextColumn("{task.fields[packets]:,} packets"), rp.TimeElapsedColumn(),
                                    rp.TimeRemainingColumn(), console=self.console)  # fmt: skip
            self.prog.start()
            _live = self.prog
        self._finish()
        self.task, self.done, self.packets = self.prog.add_task(what, total=total, packets=0), 0, 0

    def advance(self, units: int, packets: int = 0) -> None:
        self.done += units
        self.packets += packets
        self.prog.update(self.task, completed=self.done, packets=self.packets)

    def _finish(self) -> None:
        if self.task is not None:  # estimated totals (bytes, a duration's packets) end where they end
            self.prog.update(self.task, total=max(self.done, 1), completed=max(self.done, 1))

    def stop(self) -> None:
        global _live
        if self.prog is not None:
            self._finish()
            self.prog.stop()
            _live = None


@contextmanager
def _meter():
    """A progress bar on stderr when it is a terminal; nothing on a pipe or file (tests, scripts)."""
    if not _env.stderr_is_terminal():
        yield NO_METER
        return
    bar = _Bar(_env.err_console())
    try:
        yield bar
    finally:
        bar.stop()


def _version(value: bool) -> None:
    if value:
        print(f"flowpath {__version__}", file=_env.stdout)
        raise typer.Exit()


@app.callback()
def _root(
    traceback: Annotated[  # never set: main() takes --traceback out of the arguments, wherever it is
        bool, typer.Option("--traceback", help="Show the Python traceback on errors (anywhere on the line).")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    pass


NetOpt = Annotated[
    Path, typer.Option("-n", "--net", help="Network file in `ip -batch` syntax.", show_default=False)
]
RulesOpt = Annotated[
    Optional[Path], typer.Option("-r", "--rules", help="Ruleset in `nft -f` syntax or libnftables JSON.")
]


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
    no_classic_lane: Annotated[
        bool,
        typer.Option(
            "--no-classic-lane",
            help="Every classic-path packet takes the Python path, none the compiled lane (to compare them).",
        ),
    ] = False,
    batch_size: Annotated[
        int,
        typer.Option("--batch", min=1, max=65536, help="Poll budget: at most this many packets per poll (NAPI weight)."),
    ] = 256,
    rx_usecs: Annotated[
        int,
        typer.Option(
            "--rx-usecs",
            min=0,
            max=10_000_000,
            help="Interrupt coalescing (ethtool -C rx-usecs): a poll runs this long after the first packet "
            "it finds waiting, and holds what had arrived by then.",
        ),
    ] = 50,
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
            "net.netfilter.nf_flowtable_udp_timeout, in seconds (default 30); "
            "net.netfilter.nf_conntrack_max, entries (default 262144).",
        ),
    ] = None,  # type: ignore[assignment]
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            max=256,
            help="Steer the packets over N workers (threads, one per CPU), as `run --workers N` "
            "would: same steering hash, deterministic output.",
        ),
    ] = 1,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No summary.")] = False,
) -> None:
    """Forward captured traffic through the gateway, as a Linux box configured the same way would."""
    from flowpath.replay import ReplayOptions, run_replay

    _notice_compiles()
    opts = ReplayOptions(net, rules, inputs or [], out_dir, outs or [], stats, flowtable=not no_flowtable,
                         bulk=not no_bulk, batch_size=batch_size, rx_usecs=rx_usecs, dump_conntrack=dump_conntrack,
                         dump_flowtable=dump_flowtable, dump_xfrm=dump_xfrm, sysctl=sysctl or [],
                         workers=workers, classic_lane=not no_classic_lane)  # fmt: skip
    with _meter() as meter:
        res = run_replay(opts, meter)
    if not quiet:
        _env.console().print(res.summary())


class RxRing(str, enum.Enum):
    """`flowpath run --rx-ring`: AfPacketPort's receive ring version."""

    v2 = "v2"
    v3 = "v3"


@app.command(
    epilog="Example: ip netns exec west flowpath run -n west.ip -r gateway.nft --stats /tmp/west.json\n\n"
    "Each `link add NAME` of the network file is a port on the kernel interface NAME (its MAC and MTU "
    "when the line gives none); the interface must carry no IP address: flowpath answers ARP/ND and owns "
    "the addresses. SIGTERM/SIGINT stop it (counters to --stats), SIGHUP reloads both files; "
    "`flowpath ctl` talks to it while it runs."
)
def run(
    net: NetOpt,
    rules: RulesOpt = None,
    ctl: Annotated[
        Optional[Path],
        typer.Option("--ctl", help="Control socket path (default: /run/flowpath/net-<netns inode>.sock)."),
    ] = None,
    ctl_mode: Annotated[
        str, typer.Option("--ctl-mode", metavar="OCTAL", help="Control socket permissions (root only: 600).")
    ] = "600",
    stats: Annotated[Optional[Path], typer.Option("--stats", help="Write the counters as JSON at exit.")] = None,
    workers: Annotated[
        int,
        typer.Option("--workers", min=1, help="Worker threads, one per CPU, fed by the ports' PACKET_FANOUT "
                     "steering (both directions of a connection reach one worker)."),  # fmt: skip
    ] = 1,
    busy_poll: Annotated[
        bool, typer.Option("--busy-poll", help="Spin on the rings instead of sleeping in poll(2) when idle.")
    ] = False,
    no_flowtable: Annotated[
        bool, typer.Option("--no-flowtable", help="Every packet takes the classic path.")
    ] = False,
    rx_ring: Annotated[
        RxRing,
        typer.Option(
            "--rx-ring",
            help="Receive ring: v2 hands each packet over at once (low latency); "
            "v3 hands over blocks, when full or after 1-4 ms.",
        ),
    ] = RxRing.v2,
    batch_size: Annotated[
        int, typer.Option("--batch", min=1, max=4096, help="Poll budget per port (NAPI weight).")
    ] = 256,
    profile_phases: Annotated[
        bool,
        typer.Option("--profile-phases", help="Time the loop's phases (ring read, poll, ring write, kick); "
                     "ns/packet in `ctl stats --json` and at exit."),  # fmt: skip
    ] = False,
) -> None:
    """Run the gateway live on this network namespace's interfaces until SIGTERM/SIGINT."""
    from flowpath.errors import UsageError
    from flowpath.live.gateway import RunOptions, run_gateway

    try:
        mode = int(ctl_mode, 8)
    except ValueError:
        raise UsageError(f"--ctl-mode {ctl_mode!r}: expected octal permissions such as 600") from None
    if stats is not None:
        from flowpath.outputs import check_writable

        check_writable(stats, "--stats")
    _notice_compiles()
    opts = RunOptions(net, rules, ctl, mode, stats, flowtable=not no_flowtable, busy_poll=busy_poll,
                      rx_ring=rx_ring.value, batch_size=batch_size, workers=workers,
                      profile_phases=profile_phases)  # fmt: skip

    def ready(gw) -> None:
        names = ", ".join(gw.ports)
        where = f"; control socket {gw.ctl.path}" if gw.ctl is not None else ""
        _note(f"flowpath: running on {names}{where}")

    s = run_gateway(opts, _note, ready)
    global _fast_exit
    _fast_exit = True  # everything is written: skip the interpreter's teardown (see console_main)
    _note(f"flowpath: stopped: rx {s['rx_packets']}  forwarded {s['forwarded_packets']}  "
          f"dropped {s['dropped_packets']}  local {s['local_packets']}")  # fmt: skip
    if "phases" in s:
        from flowpath.bench.phases import PollPhases, format_phases, phase_delta

        _note("flowpath: " + format_phases(phase_delta(PollPhases().as_dict(), s["phases"])))


@app.command(
    context_settings={"allow_extra_args": False},
    help="nft-compatible front end: `nft -c -f FILE` checks a ruleset; "
    "`nft list ruleset -f FILE [--json] [-a]` prints its canonical listing (with handles) or libnftables JSON.",
)
def nft(
    words: Annotated[Optional[list[str]], typer.Argument(help="`list ruleset` (or nothing with -c).")] = None,
    file: Annotated[Path, typer.Option("-f", "--file", help="Ruleset file (nft syntax or JSON).")] = ...,  # type: ignore[assignment]
    check: Annotated[
        bool, typer.Option("-c", "--check", help="Check only; print nothing on success.")
    ] = False,
    json_: Annotated[bool, typer.Option("-j", "--json", help="Print libnftables JSON.")] = False,
    handle: Annotated[
        bool, typer.Option("-a", "--handle", help="Show each object's handle (`# handle N`), as `nft -a`.")
    ] = False,
    includepath: Annotated[
        Optional[list[str]],
        typer.Option("-I", "--includepath", help="Look a plain `include` name up here too (after /etc)."),
    ] = None,
    stateless: Annotated[
        bool, typer.Option("-s", "--stateless", help="Counters without their packets and bytes, as `nft -s` (text and JSON).")
    ] = False,
    numeric_protocol: Annotated[
        bool, typer.Option("-p", "--numeric-protocol", help="Layer 4 protocols as numbers, as `nft -p` (text and JSON).")
    ] = False,
) -> None:
    import json

    from flowpath.config.nft import load_ruleset
    from flowpath.config.nft.include import INCLUDE_PATH
    from flowpath.config.nft.output import output_options
    from flowpath.errors import UsageError

    words = words or []
    if not file.is_file():
        raise UsageError(f"Could not process rule: No such file or directory: {file}")
    rs = load_ruleset(file, (*INCLUDE_PATH, *(includepath or ())))
    if check:
        if words:
            raise UsageError("-c takes no command words")
        return
    if words != ["list", "ruleset"]:
        raise UsageError("supported: `nft -c -f FILE` and `nft list ruleset -f FILE [--json]`")
    with output_options(stateless, numeric_protocol):
        if json_:
            print(json.dumps(rs.to_json()), file=_env.stdout)
        else:
            print(rs.list(handle), end="", file=_env.stdout)


@app.command()
def trafgen(
    profile: Annotated[Path, typer.Argument(help="Traffic profile (TOML, see examples/profiles/).")],
    out: Annotated[
        Optional[Path], typer.Option("--out", help="Write the generated frames to this pcap.")
    ] = None,
    live: Annotated[
        Optional[str], typer.Option("--live", help="Send on this interface (AF_PACKET ring) instead.")
    ] = None,
    duration: Annotated[
        Optional[float], typer.Option("--duration", help="--live: stop every stream after S seconds.")
    ] = None,
    rate: Annotated[
        Optional[str],
        typer.Option("--rate", help="--live: `max` sends flat out instead of at the profile's rates."),
    ] = None,
    json_path: Annotated[
        Optional[Path], typer.Option("--json", help="--live: write what was sent as JSON.")
    ] = None,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No summary.")] = False,
) -> None:
    """Generate a profile's streams (with a per-packet signature) into a capture for `replay`, or
    send them live on an interface (--live)."""
    from flowpath.errors import UsageError
    from flowpath.outputs import check_writable
    from flowpath.trafgen.profile import trafgen as run

    if not profile.is_file():
        raise UsageError(f"no such profile: {profile}")
    if (out is None) == (live is None):
        raise UsageError("give one of --out FILE.pcap and --live IF")
    if live is None and (duration is not None or rate is not None or json_path is not None):
        raise UsageError("--duration, --rate and --json go with --live")
    if live is not None:
        _trafgen_live(profile, live, duration, rate, json_path, quiet)
        return
    check_writable(out, "--out")
    with _meter() as meter:
        res = run(profile, out, meter)
    if not quiet:
        from rich.table import Table

        t = Table("stream", "name", "port", "packets", "bytes", "first ts (ns)", "last ts (ns)", box=None,
                  title=f"{res['packets']} packets -> {out}")  # fmt: skip
        for st in res["streams"]:
            t.add_row(str(st["stream_id"]), st["name"], st["port"], str(st["packets"]), str(st["bytes"]),
                      str(st["first_ts_ns"]), str(st["last_ts_ns"]))  # fmt: skip
        _env.console().print(t)


def _trafgen_live(profile: Path, ifname: str, duration, rate, json_path, quiet: bool) -> None:
    import json

    from flowpath.errors import UsageError
    from flowpath.outputs import check_writable
    from flowpath.trafgen.livetx import send_live
    from flowpath.trafgen.profile import load_profile

    if rate not in (None, "max"):
        raise UsageError(f"--rate {rate!r}: only `max` (the profile sets the rates otherwise)")
    if json_path is not None:
        check_writable(json_path, "--json")
    res = send_live(load_profile(profile), ifname, duration, rate == "max")
    if json_path is not None:
        json_path.write_text(json.dumps(res, indent=2) + "\n")
    if quiet:
        return
    from rich.table import Table

    title = (f"{res['packets']} packets on {ifname} in {res['duration_s']:.3f} s: {si(res['pps'])}pps, "
             f"{si(res['l2_bps'])}bit/s" + (" (interrupted)" if res["interrupted"] else ""))  # fmt: skip
    t = Table("stream", "name", "packets", "bytes", "pps", "target pps", "L2 bit/s", box=None, title=title)
    for st in res["streams"]:
        t.add_row(str(st["stream_id"]), st["name"] or "", str(st["packets"]), str(st["bytes"]), si(st["pps"]),
                  si(st["target_pps"]) if st["target_pps"] else "max", si(st["l2_bps"]))  # fmt: skip
    _env.console().print(t)


@app.command()
def rxstats(
    captures: Annotated[
        Optional[list[str]], typer.Argument(help="Received captures: FILE (port = file stem) or PORT=FILE.")
    ] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the statistics as JSON.")] = None,
    tx: Annotated[
        Optional[list[Path]],
        typer.Option("--tx", help="The generator's capture(s): sent counts per stream, so tail loss counts."),
    ] = None,
    profile: Annotated[
        Optional[Path], typer.Option("--profile", help="The generator's profile (TOML): streams by name.")
    ] = None,
    live: Annotated[
        Optional[str], typer.Option("--live", help="Receive on this interface (AF_PACKET ring) instead.")
    ] = None,
    duration: Annotated[
        Optional[float], typer.Option("--duration", help="--live: receive for S seconds.")
    ] = None,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No tables.")] = False,
) -> None:
    """Per port and per stream packets, rates, loss, reordering, duplicates and latency of captures,
    or of what arrives on an interface (--live IF --duration S)."""
    import json

    from flowpath.errors import UsageError
    from flowpath.outputs import check_writable
    from flowpath.trafgen.rxstats import parse_rx_inputs, rx_stats_captures, stream_names

    if bool(captures) == (live is not None):
        raise UsageError("give captures, or --live IF --duration S")
    if live is not None and (duration is None or tx):
        raise UsageError("--live needs --duration S (and takes no --tx: loss comes from sequence numbers)")
    if live is None and duration is not None:
        raise UsageError("--duration goes with --live")
    inputs = parse_rx_inputs(captures) if captures else []
    for path, option in [(p, "--tx") for p in tx or []] + [(profile, "--profile")] * (profile is not None):
        if not path.is_file():
            raise UsageError(f"{option}: no such file: {path}")
    if json_path is not None:
        check_writable(json_path, "--json")
    if live is not None:
        from flowpath.trafgen.liverx import receive_live

        res = receive_live(live, duration, stream_names(profile) if profile is not None else None)
    else:
        with _meter() as meter:
            res = rx_stats_captures(inputs, tx or None, profile, meter)
    if json_path is not None:
        json_path.write_text(json.dumps(res, indent=2) + "\n")
    if quiet:
        return
    from rich.table import Table

    con = _env.console()
    t = Table("port", "packets", "bytes", "pps", "L2 bit/s", "L1 bit/s", "signed", box=None)
    for name, p in [*res["ports"].items(), ("total", res["total"])]:
        t.add_row(name, str(p["packets"]), str(p["bytes"]), si(p["pps"]), si(p["l2_bps"]), si(p["l1_bps"]),
                  str(p["signed_packets"]))  # fmt: skip
    con.print(t)
    t = Table(
        "stream", "packets", "lost", "dup", "reorder", "lat min/avg/max (ns)", "jitter (ns)", "pps", box=None
    )
    for sid, st in res["streams"].items():
        lat = st["latency_ns"]
        t.add_row(st["name"] or sid, str(st["packets"]), f"{st['lost']} ({st['loss_ratio']:.2%})",
                  str(st["duplicates"]), str(st["reordered"]),
                  f"{lat['min']}/{lat['avg']:.0f}/{lat['max']}" if lat else f"n/a ({st['latency_note']})",
                  f"{lat['jitter']:.1f}" if lat else "n/a", si(st["pps"]))  # fmt: skip
    con.print(t)
    if "live" in res:
        lv = res["live"]
        con.print(f"{lv['interface']}: {lv['duration_s']:.3f} s, ring drops {lv['ring_drops']}"
                  + (" (interrupted)" if lv["interrupted"] else ""))  # fmt: skip


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
            help="Frame size in bytes on the wire, FCS included (default 64; bulking, ipsec-flows 128; "
            "not cps).",
        ),
    ] = None,
    flows: Annotated[
        Optional[str],
        typer.Option(
            "--flows",
            help="Comma-separated flow counts (default 1000; bulking, ipsec-flows 1..10000; ipsec-sizes 1,1000). "
            "cps: connections in flight per round (default 256); ct-pressure: the conntrack limit, "
            "nf_conntrack_max (default 16384, 4096 with --quick).",
        ),
    ] = None,
    batch_size: Annotated[
        Optional[int],
        typer.Option(
            "--batch",
            min=1,
            max=65536,
            help="Packets per poll (default 256; classic-vs-flowtable 1024, where a poll's fixed Python cost "
            "is amortized and the batch still fits the L2 cache; cps, ct-pressure 256).",
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
        Optional[int],
        typer.Option("--reps", min=1, max=10_000, help="ipsec-*: repetitions at most; ct-pressure: runs of each "
                     "regime, the median reported (default 7, 1 with --quick)."),  # fmt: skip
    ] = None,
    workers: Annotated[
        Optional[str],
        typer.Option("--workers", help="live: N, `flowpath run --workers N` of the gateways; scaling: counts to "
                     "measure, e.g. 1,2 (default 1 .. the CPUs)."),  # fmt: skip
    ] = None,
    topology: Annotated[
        Optional[str],
        typer.Option("--topology", help="live: sites (sunset -- west ==ESP== east -- sunrise, the default) or "
                     "gateway (h1 -- gw -- h2, plain)."),  # fmt: skip
    ] = None,
    key: Annotated[
        str,
        typer.Option("--key", help="ipip: the flowtable's tunnel key, perfect (both outer addresses, Linux "
                     "6.19) or hash (the v6 patch's hashed word)."),  # fmt: skip
    ] = "perfect",
) -> None:
    """Run a benchmark scenario (the flowtable test notes' and workshop slides' experiments) in memory on
    one core and report Mpps side by side; `scaling` the fast path on 1..N workers; `ipip` IPIP decap and
    encap, flowtable and classic path; `cps` new TCP connections per second through NAT (flowtable on
    and off), `ct-pressure` one-way new flows at 1x and 4x the conntrack limit; `live` measures flowpath
    and Linux gateways on the testbed (root)."""
    from flowpath.bench.scenario import BenchOptions, parse_flows, parse_workers, run_bench

    opts = BenchOptions(quick, parse_flows(flows), frame_size, batch_size, alg, packets, reps, parse_workers(workers),
                        topology, key)  # fmt: skip
    _notice_compiles()
    with _SpinnerProgress(_env.err_console()) as progress:
        done = run_bench(scenario, opts, json_path=json_path, plot_path=plot, progress=progress)
    _env.console().print(done.result.table())
    for p in done.plots:
        _env.err_console().print(f"wrote {p}")


class _SpinnerProgress:
    """flowpath.bench.scenario.Progress drawn by rich on stderr: a line per task, a spinner and the
    elapsed time; nothing until the first task (a usage error shows no spinner)."""

    def __init__(self, console):
        self.console, self.prog, self.task, self.name = console, None, None, ""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        global _live
        if self.prog is not None:
            self.prog.stop()
            _live = None

    def start(self, name: str) -> None:
        global _live
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        if self.prog is None:
            self.prog = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                 console=self.console)  # fmt: skip
            self.prog.start()
            _live = self.prog
        self.task, self.name = self.prog.add_task(name, total=None), name

    def say(self, msg: str) -> None:
        self.prog.update(self.task, description=f"{self.name}: {msg}")

    def done(self, text: str | None = "done") -> None:
        self.prog.update(self.task, description=f"{self.name}: {text}" if text else self.name, completed=1,
                         total=1)  # fmt: skip


CTL_HELP = """Ask the running gateway (`flowpath run`) of this network namespace: counters, connections,
flowtables, the ruleset and the SAs, printed as conntrack, nft and ip print them; `nft -f` and
`ip xfrm` change it while it forwards. The exit code is the command's.

\b
Examples:
  flowpath ctl stats                      counters per interface, drops by reason (--json)
  flowpath ctl top                        rates per port, fast-path share, drops (--once, --count N)
  flowpath ctl conntrack -L               connections; offloaded ones say [OFFLOAD]
  flowpath ctl flowtable list             the flowtables' entries
  flowpath ctl nft list ruleset           the live ruleset, counters included
  flowpath ctl nft -f rules.nft           replace the ruleset at once (this client reads the file)
  flowpath ctl ip route show              also: ip -6 route, ip neigh, ip addr, ip link
  flowpath ctl ip -s xfrm state           also: ip xfrm state|policy add|delete|deleteall|flush ...
  flowpath ctl ip xfrm monitor            the ACQUIREs raised since start (per-CPU SAs)
  ip netns exec gw1 flowpath ctl stats    the gateway of namespace gw1

The socket is /run/flowpath/net-<inode of the namespace>.sock unless --ctl says otherwise."""


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help=CTL_HELP,
    short_help="Ask or change the running gateway: stats, top, conntrack, nft, ip.",
    options_metavar="[--ctl PATH] COMMAND [ARGS]...",
)
def ctl(
    ctx: typer.Context,
    ctl_path: Annotated[
        Optional[Path], typer.Option("--ctl", metavar="PATH", help="The gateway's control socket.")
    ] = None,
) -> None:
    from flowpath.ctl.client import ctl_call, ctl_request
    from flowpath.ctl.server import default_ctl_path
    from flowpath.errors import UsageError

    if not ctx.args:
        raise UsageError("ctl: a command is needed (stats, top, conntrack, flowtable, nft, ip; see --help)")
    path = ctl_path or default_ctl_path()
    if ctx.args[0] == "top":
        from flowpath.ctl.top import run_top

        run_top(path, ctx.args[1:], _env.console())
        return
    r = ctl_call(path, ctl_request(ctx.args))
    print(r["out"], end="", file=_env.stdout)
    print(r["err"], end="", file=_env.stderr)
    raise typer.Exit(r["rc"])


TESTBED_ACTIONS = ("up", "down", "status")


@app.command(
    epilog="Example: flowpath testbed up && ip netns exec fp-sunset ping -c 3 10.2.0.7 && flowpath testbed "
    "status && flowpath testbed down\n\n"
    "Namespaces PREFIX-sunset, -west, -east, -sunrise: sunset 10.1.0.5/16 -- west ==ESP== east -- sunrise "
    "10.2.0.7/16. The gateways' network files (AES-GCM SAs, keys and SPIs new for each `up`) and ruleset are "
    "written 0600 to /run/flowpath/testbed/PREFIX/ with state.json (namespaces, pids); `down` removes "
    "everything, also after a crash.",
)
def testbed(
    action: Annotated[str, typer.Argument(metavar="up|down|status", help="Build, tear down or inspect.")],
    gateways: Annotated[
        str, typer.Option("--gateways", help="flowpath (ESP on the fast path) or linux (the kernel forwards).")
    ] = "flowpath",
    workers: Annotated[
        Optional[int], typer.Option("--workers", help="Passed to `flowpath run --workers`.")
    ] = None,
    mtu: Annotated[
        Optional[int], typer.Option("--mtu", min=576, max=65535, help="MTU of the west--east link.")
    ] = None,
    prefix: Annotated[str, typer.Option("--prefix", help="Namespace name prefix.")] = "fp",
    plain: Annotated[
        bool, typer.Option("--plain", help="up: plain routing between the sites, no SAs or policies.")
    ] = False,
) -> None:
    """The four-box IPsec testbed in network namespaces: sunset -- west ==ESP== east -- sunrise."""
    from flowpath.errors import UsageError
    from flowpath.testbed import sites
    from flowpath.testbed.netns import TestbedError

    if action not in TESTBED_ACTIONS:
        raise UsageError(f"testbed: {action!r} is not an action (up, down, status)")
    try:
        sites.check_prefix(prefix)
        if action == "up":
            tb = sites.Sites(prefix, gateways, workers, mtu, say=_note, esp=not plain)
            _note(f"flowpath testbed: starting {gateways} gateways in {prefix}-west and {prefix}-east…")
            tb.up()
            print(tb.summary(), file=_env.stdout)
        elif action == "down":
            if not sites.down(prefix, say=lambda line: print(line, file=_env.stdout)):
                print(f"testbed {prefix!r}: nothing to tear down", file=_env.stdout)
        else:
            report, ok = sites.status(prefix)
            print(report, file=_env.stdout)
            raise typer.Exit(0 if ok else 1)
    except ValueError as e:
        raise UsageError(str(e)) from None
    except TestbedError as e:
        print(f"flowpath: error: {e}", file=_env.stderr)
        raise typer.Exit(1) from None


def main(args: list[str] | None = None, env: Environment | None = None) -> int:
    """Run the CLI; return the exit code (0 ok, 1 runtime failure, 2 usage/configuration error).

    The one place that turns exceptions into exit codes and messages (httpie's core.main);
    `--traceback`, anywhere before a `--`, re-raises them instead.
    """
    global _env
    args = list(sys.argv[1:] if args is None else args)
    end = args.index("--") if "--" in args else len(args)
    traceback = "--traceback" in args[:end]
    args = [a for a in args[:end] if a != "--traceback"] + args[end:]
    saved, _env = _env, env or Environment()
    try:
        numba_cache.prune()
        _show_config_warnings()
        rv = app(args=args or ["--help"], prog_name="flowpath", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except typer.Exit as e:
        return e.exit_code
    except (Exception, KeyboardInterrupt) as e:  # mapped to an exit code, or re-raised with --traceback
        if traceback and not isinstance(e, typer.Abort):
            raise
        return _exit_status(e, _env)
    finally:
        while _undo:
            _undo.pop()()
        _env = saved


def console_main() -> None:
    """The `flowpath` executable: main(), then exit. After `run` the process ends at once instead of
    tearing the interpreter down (numba's and LLVM's modules take about half a second), so a
    gateway stops within a second of SIGTERM; its outputs are all closed by then."""
    code = main()
    if _fast_exit:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _show_config_warnings() -> None:
    """Until the command ends, every ConfigWarning (a key file others can read...) is one line on
    stderr, `file: Warning: msg`, as often as the file is read; other warnings go their usual way."""
    import warnings

    from flowpath.errors import ConfigWarning

    saved = warnings.catch_warnings()
    saved.__enter__()
    _undo.append(lambda: saved.__exit__(None, None, None))
    warnings.simplefilter("always", ConfigWarning)
    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, ConfigWarning):
            _note(str(message))
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning


def _exit_status(e: BaseException, env: Environment) -> int:
    """The message and exit code of an exception: 2 for what the user must fix, 1 otherwise."""
    from flowpath.errors import CaptureError, ConfigError, CtlError, UsageError

    err = env.stderr
    if isinstance(e, typer.Abort):
        print("Aborted.", file=err)
        return 1
    if isinstance(e, click_exc.ClickException):
        e.show(file=err)
        return 2
    if isinstance(e, ConfigError):
        print(e, file=err)
        return 2
    if isinstance(e, UsageError):
        print(f"flowpath: error: {e}", file=err)
        return 2
    if isinstance(e, (CaptureError, CtlError)):
        print(f"flowpath: error: {e}", file=err)
        return 1
    if isinstance(e, KeyboardInterrupt):
        return 130
    print(f"flowpath: error: {type(e).__name__}: {e} (run with --traceback for details)", file=err)
    return 1


if __name__ == "__main__":
    sys.exit(main())
