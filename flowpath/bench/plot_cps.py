"""Plots of the connection benches, `cps` and `ct-pressure` (matplotlib, Agg): units, legend, title,
conditions.

No Linux counterpart. `cps`: connections/s of the gateway with and without the flowtable (bars),
and every round's rate (the spread a shared machine gives). `ct-pressure`: the time per packet along
the flood, 1x and 4x the conntrack limit, the limit marked.
"""

from __future__ import annotations

from pathlib import Path

from flowpath.bench.plot_scenarios import _label_bar_feet, _legend_below, _plt

_LABELS = {"flowtable": "flowtable (`flow add @ft`)", "no_flowtable": "--no-flowtable (classic path only)"}


def _footer(fig, r: dict, extra: str) -> None:
    fig.text(0.01, 0.01, f"flowpath {r['flowpath_version']}, 1 core, batch {r['batch_size']}, run "
             f"{r['duration_s']:.0f} s; {extra}; in memory (no NIC)", fontsize=7, color="0.35")  # fmt: skip


def plot_cps(r: dict, path: Path) -> None:
    """Left: connections/s per gateway (median round), the rate over all rounds marked; right: each
    round's rate."""
    plt = _plt()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.8), dpi=110, gridspec_kw={"width_ratios": (1, 1.6)})
    tags = list(r["results"])
    med = [r["results"][t]["connections_per_s"] for t in tags]
    bars = ax.bar(range(len(tags)), med, 0.6, color=["C0", "C1"][: len(tags)])
    _label_bar_feet(ax, bars, "%.0f")
    ax.plot(range(len(tags)), [r["results"][t]["connections_per_s_all"] for t in tags], "k_", markersize=24,
            label="all rounds")  # fmt: skip
    ax.set_xticks(range(len(tags)), ["flowtable", "--no-flowtable"][: len(tags)])
    ax.set_ylabel("new TCP connections per second")
    ax.set_ylim(0, max(med) * 1.25)
    ax.set_title("median round", fontsize=9)
    _legend_below(ax, 1)
    for i, t in enumerate(tags):
        ys = r["results"][t]["connections_per_s_rounds"]
        ax2.plot(range(1, len(ys) + 1), ys, "o-" if i == 0 else "s--", color=f"C{i}", label=_LABELS.get(t, t))
    ax2.xaxis.get_major_locator().set_params(integer=True)
    ax2.set_xlabel("round")
    ax2.set_ylabel("connections per second in the round")
    ax2.set_ylim(bottom=0)
    ax2.grid(True, alpha=0.3)
    ax2.set_title("every round", fontsize=9)
    _legend_below(ax2, 2)
    fig.suptitle(f"New TCP connections through NAT, {r['flows_in_flight']} in flight, "
                 f"{r['packets_per_connection']} packets each (SYN ... FIN, ACK)")  # fmt: skip
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    _footer(fig, r, f"{r['rounds']} rounds, Worker.poll timed")
    fig.savefig(path)
    plt.close(fig)


def plot_ct_pressure(r: dict, path: Path) -> None:
    """Time per packet along the flood (x: packets sent / the limit), one line per regime's median
    run, the limit marked, and the per-packet figures in the legend."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5.0), dpi=110)
    for i, (tag, x) in enumerate(r["regimes"].items()):
        xs, ys = zip(*x["profile_us"], strict=True)
        ax.plot(xs, ys, "o-" if i == 0 else "s--", color=f"C{i}",
                label=f"{tag} the limit ({x['packets']:,} packets): {x['us_per_packet']:.1f} µs/packet")  # fmt: skip
    ax.axvline(1.0, color="0.4", linestyle=":", linewidth=1)
    ax.annotate(f"nf_conntrack_max {r['conntrack_max']:,}: early drop from here", (1.0, 0), xytext=(4, 6),
                textcoords="offset points", fontsize=7, color="0.3", xycoords=("data", "axes fraction"))  # fmt: skip
    ax.set_xlabel("new flows sent / conntrack limit")
    ax.set_ylabel("time per packet [µs] (Worker.poll)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0, top=max(y for x in r["regimes"].values() for _, y in x["profile_us"]) * 1.2)
    ax.grid(True, alpha=0.3)
    ax.set_title(f"Conntrack pressure: one-way new UDP flows, 4x/1x per packet {r['per_packet_ratio']:.2f}")
    _legend_below(ax, 1)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    _footer(fig, r, f"{r['frame_size']}-byte frames, median of {r['repetitions']} runs per regime")
    fig.savefig(path)
    plt.close(fig)
