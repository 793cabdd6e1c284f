#!/usr/bin/env python3
"""Cold start: seconds of a `flowpath` command in a fresh interpreter with an empty numba cache, then
with the cache it filled, and what numba compiled in between, kernel by kernel.

No Linux counterpart. The default command is README's quick start (the example gateway's replay).
Each compiled signature is timed around numba's Dispatcher.compile: "own" excludes the kernels it
compiled while typing its body (its callees), "with callees" includes them; numba inlines
`inline="always"` helpers into the caller's IR, so their cost shows in the caller's own time.

    python benchmarks/cold_start.py [--top 15] [--json F] [-- replay -n NET -r RULES --in ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def quick_start(out_dir: str) -> list[str]:
    ex = REPO / "examples"
    return ["replay", "-n", str(ex / "gateway.ip"), "-r", str(ex / "gateway.nft"), "--in", f"lan0={ex / 'lan.pcap'}",
            "--in", f"wan0={ex / 'wan.pcap'}", "--out-dir", out_dir, "-q"]  # fmt: skip


def child(report: str, args: list[str]) -> int:
    """Run the command in this interpreter, each compile timed; write the rows to `report`."""
    from numba.core.dispatcher import Dispatcher

    import flowpath  # noqa: F401  (points numba at the source tree's cache directory)

    compile_, stack, rows = Dispatcher.compile, [], []

    def timed(self, sig):
        t0, misses = time.perf_counter(), sum(self._cache_misses.values())
        stack.append(0.0)
        try:
            return compile_(self, sig)
        finally:
            dt, inner = time.perf_counter() - t0, stack.pop()
            if stack:
                stack[-1] += dt
            if sum(self._cache_misses.values()) > misses:  # compiled, not loaded from the cache
                f = self.py_func
                rows.append({"kernel": f"{f.__module__}.{f.__qualname__}", "signature": str(sig),
                             "own_s": dt - inner, "with_callees_s": dt})  # fmt: skip

    Dispatcher.compile = timed
    from flowpath.cli import main

    rc = main(args)
    Path(report).write_text(json.dumps(rows))
    return rc


def run(args: list[str], cache: str) -> tuple[float, list[dict]]:
    with tempfile.NamedTemporaryFile(suffix=".json") as rep:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(REPO))
        env.pop("_FLOWPATH_NUMBA_CACHE_DIR", None)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--child", rep.name, "--", *args], env=env, check=True)
        return time.perf_counter() - t0, json.loads(Path(rep.name).read_text() or "[]")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--top", type=int, default=15, help="kernels listed, by own compile time")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("command", nargs="*", help="flowpath arguments (default: README's quick start)")
    a = ap.parse_args(argv)
    if a.child:
        return child(a.child, a.command)
    with tempfile.TemporaryDirectory() as tmp:
        args = a.command or quick_start(os.path.join(tmp, "out"))
        cache = os.path.join(tmp, "numba")
        cold_s, rows = run(args, cache)
        cached_s, again = run(args, cache)
    rows.sort(key=lambda r: -r["own_s"])
    print(f"cold (empty cache): {cold_s:.1f} s, {len(rows)} signatures compiled, "
          f"{sum(r['own_s'] for r in rows):.1f} s compiling")  # fmt: skip
    print(f"cached:             {cached_s:.1f} s, {len(again)} signatures compiled")
    print(f"{'own s':>7} {'with callees':>12}  kernel (signature)")
    for r in rows[: a.top]:
        print(f"{r['own_s']:7.2f} {r['with_callees_s']:12.2f}  {r['kernel']} {r['signature'][:60]}")
    if a.json:
        Path(a.json).write_text(json.dumps({"command": args, "cold_s": cold_s, "cached_s": cached_s,
                                            "compiled": rows}, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
