"""`flowpath ctl top`: the running gateway's rates, refreshed every second, for a person.

No Linux counterpart (in the spirit of `ip -s link` read twice and divided, as bmon or nload do).
The client asks for `stats --json` each interval and divides the counters' differences by the
difference of the gateway's own CLOCK_MONOTONIC readings (`mono_ns`), so a late poll does not skew
a rate.
"""

from __future__ import annotations

import time
from pathlib import Path

from flowpath.ctl.client import ctl_call
from flowpath.errors import CtlError, UsageError
from flowpath.units import si

TOP_USAGE = "top [--once | --count N] [--interval SECONDS]"
_DIRS = (("rx", "rx_packets", "rx_bytes"), ("tx", "tx_packets", "tx_bytes"))


def top_options(args: list[str]) -> tuple[int | None, float]:
    """(count, interval_s) from `top`'s words: count None = until interrupted."""
    count, interval, k = None, 1.0, 0
    while k < len(args):
        a, val = args[k], args[k + 1] if k + 1 < len(args) else None
        try:
            if a == "--once":
                count = 1
            elif a in ("--count", "-n") and val is not None and int(val) >= 1:
                count, k = int(val), k + 1
            elif a in ("--interval", "-d") and val is not None and 0.05 <= float(val) <= 3600:
                interval, k = float(val), k + 1
            else:
                raise ValueError
        except ValueError:
            raise UsageError(f'ctl top: bad option "{" ".join(args[k : k + 2])}" ({TOP_USAGE}; N >= 1, '
                             "0.05 <= SECONDS <= 3600)") from None  # fmt: skip
        k += 1
    return count, interval


def top_rates(prev: dict, cur: dict) -> dict:
    """Rates between two `stats --json` payloads: per interface rx/tx packets/s and bit/s (frames as
    received and sent, Ethernet header included), the fast path's share of the packets the datapath
    decided, drops per second by reason, and the ports' own counters per second."""
    dt = (cur["mono_ns"] - prev["mono_ns"]) / 1e9
    if dt <= 0 or cur["uptime_ns"] < prev["uptime_ns"]:  # another gateway since: nothing to divide
        prev, dt = {"stats": {}, "ports": {}}, max(cur["uptime_ns"] / 1e9, 1e-9)
    s, ps = cur["stats"], prev["stats"]

    def per_s(now: int, before: int) -> float:
        return max(now - before, 0) / dt

    ifaces = {}
    for name, c in s["interfaces"].items():
        p = ps.get("interfaces", {}).get(name, {})
        ifaces[name] = {f"{d}_{u}": per_s(c[k], p.get(k, 0)) * m
                        for d, kp, kb in _DIRS for u, k, m in (("pps", kp, 1), ("bps", kb, 8))}  # fmt: skip
    fast = s["fastpath_packets"] - ps.get("fastpath_packets", 0)
    slow = s["slowpath_packets"] - ps.get("slowpath_packets", 0)
    drops = {r: per_s(n, ps.get("drops", {}).get(r, 0)) for r, n in s["drops"].items()}
    ports = {name: {k: per_s(v, prev["ports"].get(name, {}).get(k, 0)) for k, v in c.items()}
             for name, c in cur["ports"].items()}  # fmt: skip
    return {
        "interval_s": dt,
        "interfaces": ifaces,
        "fastpath_pps": fast / dt,
        "slowpath_pps": slow / dt,
        "fastpath_share": fast / (fast + slow) if fast + slow > 0 else None,
        "drops_per_s": drops,
        "drops_total": dict(s["drops"]),
        "ports_per_s": ports,
    }


def top_view(rates: dict, cur: dict):
    """The rates as rich tables: interfaces, paths, drops (with totals since start)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    s = cur["stats"]
    up = cur["uptime_ns"] // 1_000_000_000
    share = rates["fastpath_share"]
    title = (f"flowpath  up {up // 3600}:{up % 3600 // 60:02}:{up % 60:02}  fast path "
             f"{'-' if share is None else f'{share:.1%}'} ({si(rates['fastpath_pps'])} pps fast, "
             f"{si(rates['slowpath_pps'])} pps slow)  flows {s['flows_offloaded'] - s['flows_expired']}"
             f"  conntrack {cur['conntrack_entries']}")  # fmt: skip
    port_keys = sorted({k for c in rates["ports_per_s"].values() for k in c})
    t = Table("interface", "rx pps", "rx bit/s", "tx pps", "tx bit/s", *(f"{k}/s" for k in port_keys),
              box=None)  # fmt: skip
    for name in sorted(set(rates["interfaces"]) | set(rates["ports_per_s"])):
        r, p = rates["interfaces"].get(name, {}), rates["ports_per_s"].get(name, {})
        t.add_row(name, *(si(r.get(k, 0.0)) for k in ("rx_pps", "rx_bps", "tx_pps", "tx_bps")),
                  *(si(p[k]) if k in p else "-" for k in port_keys))  # fmt: skip
    d = Table("drop reason", "per second", "since start", box=None)
    for reason, total in sorted(rates["drops_total"].items(), key=lambda kv: -kv[1]):
        d.add_row(reason, si(rates["drops_per_s"].get(reason, 0.0)), str(total))
    return Group(Text(title), t, *([d] if rates["drops_total"] else []))


def run_top(path: str | Path, args: list[str], console) -> None:
    """Draw the view every interval: in place on a terminal, one after the other elsewhere (and with
    --once / --count N, which end after that many)."""
    count, interval = top_options(args)
    prev = _stats(path)
    if count is None and console.is_terminal:
        from rich.live import Live

        with Live(console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                cur = _stats(path)
                live.update(top_view(top_rates(prev, cur), cur), refresh=True)
                prev = cur
    k = 0
    while count is None or k < count:
        time.sleep(interval)
        cur = _stats(path)
        console.print(top_view(top_rates(prev, cur), cur))
        prev, k = cur, k + 1


def _stats(path: str | Path) -> dict:
    r = ctl_call(path, {"argv": ["stats", "--json"]})
    if r["rc"] != 0 or not isinstance(r.get("json"), dict):
        raise CtlError(f"the gateway at {path} refused `stats --json`: {r['err'].strip()}")
    return r["json"]
