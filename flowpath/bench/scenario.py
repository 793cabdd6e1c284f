"""What every `flowpath bench` scenario shares: its options, its result (table, JSON, plot), the
registry of scenarios, and `run_bench`, the one call the CLI makes.

No Linux counterpart. A scenario module (bulking, frames, flowtable, ipsec, cps, ...) defines a class with
`name`, `check(opts)` (cheap: a UsageError before any work) and `run(opts, progress) -> result`,
and a `ScenarioResult` subclass that knows its table and plots; the CLI only prints what it gets.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from flowpath.errors import UsageError
from flowpath.outputs import check_writable

if TYPE_CHECKING:
    from rich.table import Table

# name -> "module:class"; imported on use, so that the CLI starts without numba
SCENARIOS = {
    "classic-vs-flowtable": "flowpath.bench.flowtable:ClassicVsFlowtable",
    "bulking": "flowpath.bench.bulking:Bulking",
    "frame-sizes": "flowpath.bench.frames:FrameSizes",
    "ipsec-flows": "flowpath.bench.ipsec:IpsecFlows",
    "ipsec-sizes": "flowpath.bench.ipsec:IpsecSizes",
    "live": "flowpath.bench.live_sites:LiveBench",
    "scaling": "flowpath.bench.scaling:Scaling",
    "cps": "flowpath.bench.cps:Cps",
    "ct-pressure": "flowpath.bench.ct_pressure:CtPressure",
    "ipip": "flowpath.bench.ipip:Ipip",
}
IPSEC_SCENARIOS = ("ipsec-flows", "ipsec-sizes")
MAX_FLOWS = 1_000_000


@dataclass(frozen=True)
class BenchOptions:
    """What `flowpath bench` was asked; None leaves the choice to the scenario."""

    quick: bool = False
    flows: tuple[int, ...] | None = None
    frame_size: int | None = None
    batch_size: int | None = None
    alg: str = "gcm"  # ipsec-* only, as packets and reps
    packets: int | None = None
    reps: int | None = None
    workers: tuple[int, ...] | None = None  # live (one count) and scaling (several); topology: live only
    topology: str | None = None
    key: str = "perfect"  # ipip only: the flowtable's tunnel_key


def parse_flows(text: str | None) -> tuple[int, ...] | None:
    """`--flows 1,10,1000` as a tuple; None when not given."""
    if text is None:
        return None
    try:
        counts = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"--flows {text!r}: expected comma-separated integers") from None
    if not counts or min(counts) < 1 or max(counts) > MAX_FLOWS:
        raise UsageError("--flows: between 1 and 1000000 flows")
    return counts


def parse_workers(text: str | None) -> tuple[int, ...] | None:
    """`--workers 1,2,4` as a tuple; None when not given."""
    if text is None:
        return None
    try:
        counts = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"--workers {text!r}: expected a worker count or comma-separated counts") from None
    if not counts or min(counts) < 1:
        raise UsageError("--workers: at least 1")
    return counts


def no_ipsec_options(opts: BenchOptions, reps: bool = False) -> None:
    """UsageError when an option that only the ipsec-* scenarios read was given; reps: the caller
    reads --reps too."""
    if opts.alg != "gcm" or opts.packets is not None or (opts.reps is not None and not reps):
        which = "--alg and --packets" if reps else "--alg, --packets and --reps"
        raise UsageError(f"{which} apply to {' and '.join(IPSEC_SCENARIOS)} only")


class Progress:
    """Where a scenario says what it is doing: `start` a task, `say` its current stage, `done`.

    This one says nothing; the CLI passes one that draws a spinner on stderr.
    """

    def start(self, name: str) -> None:
        """A new task (classic-vs-flowtable starts one per flow count)."""

    def say(self, msg: str) -> None:
        """The current task's stage."""

    def done(self, text: str | None = "done") -> None:
        """The current task is over; `text` follows its name (None: the name alone)."""


class ScenarioResult:
    """A scenario's results: `data` is the JSON document; subclasses give the table and the plots."""

    def __init__(self, data: dict):
        self.data = data

    def table(self) -> Table:
        raise NotImplementedError

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2) + "\n"

    def plot(self, path: Path) -> list[Path]:
        """Write the scenario's figure(s) at `path` (some add PATH-mpps.png); the files written."""
        raise NotImplementedError


class Scenario(Protocol):
    name: str

    def check(self, opts: BenchOptions) -> None: ...

    def run(self, opts: BenchOptions, progress: Progress) -> ScenarioResult: ...


def scenario(name: str) -> Scenario:
    """The scenario called `name`, or a UsageError listing them."""
    if name not in SCENARIOS:
        raise UsageError(f"unknown scenario {name!r}; choose from: {', '.join(SCENARIOS)}")
    module, cls = SCENARIOS[name].split(":")
    return getattr(importlib.import_module(module), cls)()


@dataclass
class BenchRun:
    """What `run_bench` did: the result, and the plot files it wrote."""

    result: ScenarioResult
    plots: list[Path]


def run_bench(
    name: str,
    opts: BenchOptions,
    *,
    json_path: Path | None = None,
    plot_path: Path | None = None,
    progress: Progress | None = None,
) -> BenchRun:
    """Check the options and the output paths, run the scenario, write its JSON and plots.

    Every check runs before the measurement, so a bad option or an unwritable path costs nothing.
    """
    sc = scenario(name)
    if name != "live" and opts.topology is not None:
        raise UsageError("--topology applies to `bench live` only")
    if name not in ("live", "scaling") and opts.workers is not None:
        raise UsageError("--workers applies to `bench live` and `bench scaling` only")
    if name != "ipip" and opts.key != "perfect":
        raise UsageError("--key applies to `bench ipip` only")
    sc.check(opts)
    for option, path in (("--json", json_path), ("--plot", plot_path)):
        if path is not None:
            check_writable(path, option)
    result = sc.run(opts, progress or Progress())
    if json_path is not None:
        json_path.write_text(result.to_json())
    return BenchRun(result, result.plot(plot_path) if plot_path is not None else [])
