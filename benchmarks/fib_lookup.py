#!/usr/bin/env python3
"""The compiled FIB lookup (flowpath/net/fib_table.py): ns per lookup, build time, memory; against the
dict-per-length scan it replaced.

No Linux counterpart. For each table size, random routes in the main table (IPv4: a BGP-like mix of
lengths, mostly /24 and /16-/23, a few longer than /24; IPv6: /32-/64 and some /128), then:
  njit ns      fib4_lookup / fib6_lookup in a compiled loop over --lookups addresses (half inside a
               random route, half uniform), the lane's cost per packet
  python ns    FibTable.lookup from Python (one compiled call per lookup: the classic path's cost)
  old ns       the replaced Python lookup (one dict per prefix length, scanned from the longest),
               re-created here as the comparison point
  build ms     a full rebuild (after a removal); append us: one new prefix added in place (config load)
  MiB          the arrays
Results vary on the shared VM; run twice and keep the lower figures.

    python benchmarks/fib_lookup.py [--lookups 1000000] [--sizes 10,1000,100000] [--v6 1000] [--json F]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from numba import njit

from flowpath.net import fib_table as F
from flowpath.net.fib import RT_TABLE_MAIN, FibAlias, FibTable
from flowpath.net.inetdev import inet_mask


@njit(cache=True, nogil=True)
def _loop4(fib4, addrs):
    s = 0
    for i in range(addrs.shape[0]):
        s += F.fib4_lookup(fib4, addrs[i])
    return s


@njit(cache=True, nogil=True)
def _loop6(fib6, words):
    s = 0
    for i in range(words.shape[0]):
        s += F.fib6_lookup(fib6, words[i, 0], words[i, 1], words[i, 2], words[i, 3])
    return s


def _plen4(rng) -> int:
    x = rng.random()
    if x < 0.55:
        return 24
    if x < 0.75:
        return int(rng.integers(16, 24))
    if x < 0.97:
        return int(rng.integers(8, 16))
    return int(rng.integers(25, 33))


def routes(family: int, n: int, rng) -> list[FibAlias]:
    seen, out = set(), []
    out.append(FibAlias(family, 0, 0, oif=1))  # a default route
    while len(out) < n:
        if family == 4:
            plen = _plen4(rng)
            a = int(rng.integers(0, 1 << 32))
        else:
            plen = int(rng.choice([32, 40, 48, 56, 64, 64, 64, 128]))
            a = 0x2000 << 112 | int(rng.integers(0, 1 << 62)) << 50 | int(rng.integers(0, 1 << 50))
        prefix = a & inet_mask(family, plen)
        if (prefix, plen) not in seen:
            seen.add((prefix, plen))
            out.append(FibAlias(family, prefix, plen, oif=1 + len(out) % 7, metric=len(out) % 3))
    return out[:n] if n else []


def addresses(family: int, rs: list[FibAlias], count: int, rng) -> list[int]:
    bits = 32 if family == 4 else 128
    out = []
    for i in range(count):
        if i % 2:
            out.append(
                int(rng.integers(0, 1 << 62)) << (bits - 62) if family == 6 else int(rng.integers(0, 1 << 32))
            )
        else:
            fa = rs[int(rng.integers(0, len(rs)))]
            host = int(rng.integers(0, 1 << 62)) & ((1 << (bits - fa.prefixlen)) - 1)
            out.append(fa.prefix | host)
    return out


class OldTable:
    """The replaced lookup (flowpath/net/fib.py before the compiled FIB): one dict per prefix length,
    the non-empty lengths scanned from the longest."""

    def __init__(self, family: int, rs: list[FibAlias]):
        self._by_len: dict[int, dict[int, list[FibAlias]]] = {}
        for fa in rs:
            self._by_len.setdefault(fa.prefixlen, {}).setdefault(fa.prefix, []).append(fa)
        self._lens = sorted(self._by_len, reverse=True)
        self._masks = [inet_mask(family, n) for n in range(33 if family == 4 else 129)]

    def lookup(self, daddr: int) -> FibAlias | None:
        masks = self._masks
        for plen in self._lens:
            fas = self._by_len[plen].get(daddr & masks[plen])
            if fas:
                return fas[0]
        return None


def _per_call_ns(fn, args, rounds: int) -> float:
    t = time.perf_counter()
    for a in args[:rounds]:
        fn(a)
    return (time.perf_counter() - t) / min(rounds, len(args)) * 1e9


def measure(family: int, n: int, lookups: int, rng) -> dict:
    rs = routes(family, n, rng)
    table = FibTable(family, RT_TABLE_MAIN)
    for fa in rs:
        table.insert(fa)
    fib = F.FibViews(family, [table])
    t = time.perf_counter()
    views = fib.get()
    build_ms = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    fib.invalidate()
    views = fib.get()
    build_ms = min(build_ms, (time.perf_counter() - t) * 1e3)
    addrs = addresses(family, rs, lookups, rng)
    if family == 4:
        arr = np.array(addrs, np.int64)
        _loop4(views, arr[:10])
        t = time.perf_counter()
        _loop4(views, arr)
    else:
        arr = np.array([F.addr6_words(a) for a in addrs], np.int64).reshape(len(addrs), 4)
        _loop6(views, arr[:10])
        t = time.perf_counter()
        _loop6(views, arr)
    njit_ns = (time.perf_counter() - t) / lookups * 1e9
    old = OldTable(family, rs)
    for a in addrs[:2000]:  # the two lookups agree (same routes, one table)
        got = table.lookup(a)
        assert got is old.lookup(a), hex(a)
    table.lookup(addrs[0])
    python_ns = _per_call_ns(table.lookup, addrs, 20000)
    old_ns = _per_call_ns(old.lookup, addrs, 20000)
    # in place: fresh prefixes into the built views, as `ip route add` lines do
    extra = [
        fa
        for fa in routes(family, n + 200, np.random.default_rng(99))
        if not table.find(fa.prefix, fa.prefixlen)
    ]
    extra = extra[:100]
    t = time.perf_counter()
    for fa in extra:
        table.insert(fa)
    fib.get()
    append_us = (time.perf_counter() - t) / max(len(extra), 1) * 1e6
    return {"family": family, "routes": n, "prefixes": fib._npfx, "njit_ns": round(njit_ns, 1),
            "python_ns": round(python_ns), "old_python_ns": round(old_ns), "build_ms": round(build_ms, 2),
            "append_us": round(append_us, 1), "MiB": round(fib.nbytes() / 2**20, 2)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lookups", type=int, default=1_000_000)
    ap.add_argument("--sizes", default="10,1000,10000,100000")
    ap.add_argument("--v6", default="1000")
    ap.add_argument("--json")
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    rows = [measure(4, int(n), args.lookups, rng) for n in args.sizes.split(",")]
    rows += [measure(6, int(n), args.lookups, rng) for n in args.v6.split(",") if n]
    head = f"{'fam':>3} {'routes':>7} {'njit ns':>8} {'python ns':>9} {'old ns':>7} {'build ms':>9} {'append us':>9} {'MiB':>6}"
    print(head)
    for r in rows:
        print(f"{r['family']:>3} {r['routes']:>7} {r['njit_ns']:>8} {r['python_ns']:>9} {r['old_python_ns']:>7} "
              f"{r['build_ms']:>9} {r['append_us']:>9} {r['MiB']:>6}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
