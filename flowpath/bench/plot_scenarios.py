"""Plots of the bulking, frame-sizes and ipsec-* scenarios (matplotlib, Agg): units, legend, title,
conditions.

No Linux counterpart. `bulking` writes two files like the bulk-forwarding test notes' rx-gbps.png
and rx-mpps.png: PATH (RX Gbps) and PATH-mpps.png (RX Mpps); so does `ipsec-flows` (encap and
decap). `frame-sizes` and `ipsec-sizes` write one figure with two panels (Mpps, Gbps).

Legends go below the axes and bar values inside the bars' feet, so that neither can cover a point,
a marker or another label whatever the measured values are.
"""

from __future__ import annotations

from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _footer(fig, r: dict, extra: str) -> None:
    fig.text(0.01, 0.01, f"flowpath {r['flowpath_version']}, {r['cores']} core, batch {r['batch_size']}, "
             f"{r['packets_per_repetition']:,} packets x best of {r['repetitions']}, run {r['duration_s']:.0f} s; "
             f"{extra}; in memory (no NIC)", fontsize=7, color="0.35")  # fmt: skip


def _legend_below(ax, ncol: int) -> None:
    """The axes' legend under its x label, outside the data."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=ncol, fontsize=8, frameon=False)


def _label_bar_feet(ax, bars, fmt: str = "%.2f") -> None:
    """Each bar's value written inside its foot (white on the bar): above the bars a label meets the
    line-rate markers and lines drawn there."""
    for rect in bars:
        ax.text(rect.get_x() + rect.get_width() / 2, 0.015, fmt % rect.get_height(), ha="center", va="bottom",
                fontsize=8, color="white", fontweight="bold", transform=ax.get_xaxis_transform())  # fmt: skip


def mpps_path(path: Path) -> Path:
    """PATH-mpps.png next to PATH.png."""
    path = Path(path)
    return path.with_name(f"{path.stem}-mpps{path.suffix or '.png'}")


def plot_bulking(r: dict, path: Path) -> list[Path]:
    """RX Gbps (L2) and RX Mpps against flows, bulk on vs off, log x; returns the files written."""
    plt = _plt()
    flows = [x["flows"] for x in r["results"]]
    out = []
    for key, unit, ylabel, target in (
        ("gbps_l2", "Gbps", "RX throughput [Gbit/s], L2 (frame with FCS)", Path(path)),
        ("mpps", "Mpps", "RX packet rate [Mpps]", mpps_path(path)),
    ):
        fig, ax = plt.subplots(figsize=(8, 5.2), dpi=110)
        for tag, label, style, dy in (
            ("bulk", "bulk forwarding on", "o-", 7),
            ("no_bulk", "bulk forwarding off", "s--", -13),  # labels below the line: no overlap
        ):
            ys = [x[tag][key] for x in r["results"]]
            ax.plot(flows, ys, style, label=label)
            for x, y in zip(flows, ys, strict=True):
                ax.annotate(
                    f"{y:.2f}", (x, y), textcoords="offset points", xytext=(0, dy), ha="center", fontsize=7
                )
        ax.set_xscale("log")
        ax.set_xticks(flows, [f"{n:,}" for n in flows])
        ax.set_xlabel("number of flows (UDP source ports)")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0, top=max(max(x["bulk"][key], x["no_bulk"][key]) for x in r["results"]) * 1.2)
        ax.grid(True, alpha=0.3)
        ax.set_title(f"Forwarding (no IPsec), {r['frame_size']}-byte frames: RX {unit} vs flows, bulk on/off")
        _legend_below(ax, 2)
        fig.tight_layout(rect=(0, 0.04, 1, 1))
        _footer(fig, r, "NAT + flowtable, flows established first")
        fig.savefig(target)
        plt.close(fig)
        out.append(target)
    return out


def plot_frame_sizes(r: dict, path: Path) -> list[Path]:
    """Two panels: Mpps per frame size with each size's line-rate Mpps, and L1 Gbps with 10/25/100 GbE
    as reference lines."""
    import numpy as np

    plt = _plt()
    res = r["results"]
    labels = [
        str(x["frame_size"]).upper() if x["frame_size"] == "imix" else f"{x['frame_size']} B" for x in res
    ]
    x = np.arange(len(res))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 5.4), dpi=110)
    bars = a1.bar(x, [q["mpps"] for q in res], 0.6, label="flowpath (1 core)", color="tab:blue")
    _label_bar_feet(a1, bars)
    styles = {"10GbE": ("tab:green", "v"), "25GbE": ("tab:orange", "^"), "100GbE": ("tab:red", "D")}
    for name, (color, marker) in styles.items():
        a1.plot(x, [q["line_rate_mpps"][name] for q in res], marker=marker, ls=":", color=color,
                label=f"{name} line rate")  # fmt: skip
    a1.set_yscale("log")
    a1.set_xticks(x, labels)
    a1.set_xlabel("frame size (wire bytes with FCS; IMIX: FD.io CSIT's 28x64/16x570/4x1518)")
    a1.set_ylabel("packet rate [Mpps], log scale")
    a1.set_title("Packet rate per frame size")
    top = max(max(q["mpps"], q["line_rate_mpps"]["100GbE"]) for q in res)
    low = min(min(q["mpps"], q["line_rate_mpps"]["10GbE"]) for q in res)
    a1.set_ylim(low / 3, top * 3)
    _legend_below(a1, 2)
    a1.grid(True, axis="y", alpha=0.3, which="both")
    bars = a2.bar(
        x, [q["gbps_l1"] for q in res], 0.6, label="flowpath, L1 (+20 B preamble/IFG)", color="tab:blue"
    )
    _label_bar_feet(a2, bars)
    for name, (color, _) in styles.items():
        a2.axhline(r["line_rates_bps"][name] / 1e9, color=color, ls="--", lw=1, label=f"{name}")
    a2.set_yscale("log")
    a2.set_xticks(x, labels)
    a2.set_xlabel("frame size")
    a2.set_ylabel("throughput [Gbit/s], L1, log scale")
    a2.set_title("Throughput per frame size vs Ethernet line rates")
    a2.set_ylim(min(q["gbps_l1"] for q in res) / 4, max(q["gbps_l1"] for q in res + [{"gbps_l1": 100}]) * 3)
    _legend_below(a2, 2)
    a2.grid(True, axis="y", alpha=0.3, which="both")
    fig.suptitle(f"Frame sizes: forwarding through NAT + flowtable, {r['flows']:,} flows, bulk on")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    _footer(
        fig,
        r,
        "line rates count 20 B preamble+SFD+IFG per frame; frames are not copied, so Mpps barely depends on size",
    )
    fig.savefig(path)
    plt.close(fig)
    return [Path(path)]


def _ipsec_share(r: dict) -> str:
    fast = sum(x[d]["fastpath_packets"] for x in r["results"] for d in ("encap", "decap"))
    slow = sum(x[d]["slowpath_packets"] for x in r["results"] for d in ("encap", "decap"))
    return f"{fast / (fast + slow):.0%} of timed packets on the fast path" if fast + slow else "no packets"


COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple")
IPSEC_LINES = (  # (direction, bulk, label, style, color): a colour per direction, a line style per bulk
    ("encap", True, "encap (west), bulk on", "o-", "tab:blue"),
    ("encap", False, "encap (west), bulk off", "s--", "tab:blue"),
    ("decap", True, "decap (east), bulk on", "^-", "tab:red"),
    ("decap", False, "decap (east), bulk off", "v--", "tab:red"),
)


def plot_ipsec_flows(r: dict, path: Path) -> list[Path]:
    """Encap and decap Gbps (inner L2) and Mpps against flows, bulk on vs off, log x: PATH and
    PATH-mpps.png, as plot_bulking; returns the files written."""
    plt = _plt()
    flows = r["flows"]
    out = []
    for key, unit, ylabel, target in (
        ("gbps", "Gbps", "throughput per core [Gbit/s], inner L2 frame with FCS", Path(path)),
        ("mpps", "Mpps", "packet rate per core [Mpps]", mpps_path(path)),
    ):
        fig, ax = plt.subplots(figsize=(8, 5.2), dpi=110)
        top = 0.0
        for d, bulk, label, style, color in IPSEC_LINES:
            pts = [x for x in r["results"] if x["bulk"] == bulk]
            ys = [x[f"{d}_{key}"] for x in pts]
            top = max(top, *ys)
            ax.plot([x["flows"] for x in pts], ys, style, color=color, label=label)
            if bulk:  # four close lines: label one per direction, above encap and below decap
                for x, y in zip(pts, ys, strict=True):
                    ax.annotate(f"{y:.3g}", (x["flows"], y), textcoords="offset points", ha="center",
                                xytext=(0, 7 if d == "encap" else -13), fontsize=7, color=color)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xticks(flows, [f"{n:,}" for n in flows])
        ax.set_xlabel("number of flows (UDP source ports) over one SA pair")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0, top=top * 1.25 or 1)
        ax.grid(True, alpha=0.3)
        ax.set_title(f"IPsec ({r['alg']}), {r['frame_size']}-byte frames: {unit} vs flows, bulk on/off")
        _legend_below(ax, 2)
        fig.tight_layout(rect=(0, 0.04, 1, 1))
        _footer(fig, r, _ipsec_share(r))
        fig.savefig(target)
        plt.close(fig)
        out.append(target)
    return out


def plot_ipsec_sizes(r: dict, path: Path) -> list[Path]:
    """Two panels against frame size: Gbps (inner L2) and Mpps, encap and decap at each flow count."""
    plt = _plt()
    sizes = r["frame_sizes"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2), dpi=110)
    for ax, key, ylabel in ((axes[0], "gbps", "throughput per core [Gbit/s], inner L2"),
                            (axes[1], "mpps", "packet rate per core [Mpps]")):  # fmt: skip
        top = 0.0
        for n, color in zip(r["flows"], COLORS * (len(r["flows"]) // len(COLORS) + 1), strict=False):
            for d, style in (("encap", "o-"), ("decap", "s--")):
                pts = [x for x in r["results"] if x["flows"] == n]
                ys = [x[f"{d}_{key}"] for x in pts]
                top = max(top, *ys)
                ax.plot([x["frame_size"] for x in pts], ys, style, color=color,
                        label=f"{d}, {n:,} flow{'s' if n > 1 else ''}")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xticks(sizes, [f"{s} B" for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("inner frame size (wire bytes with FCS)")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0, top=top * 1.25 or 1)
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()  # both panels draw the same lines
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.045), ncol=len(labels), fontsize=8,
               frameon=False)  # fmt: skip
    fig.suptitle(f"IPsec ({r['alg']}) per frame size: encap (west) and decap (east), bulk on")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    _footer(fig, r, _ipsec_share(r))
    fig.savefig(path)
    plt.close(fig)
    return [Path(path)]


LIVE_LINES = {  # (kind, mode): label, style, colour, label offset (points; above or below the marker)
    ("flowpath", "plain"): ("flowpath gateways, plain forwarding", "o-", "tab:blue", 7),
    ("flowpath", "esp"): ("flowpath gateways, ESP tunnel", "^-", "tab:red", -13),
    ("linux", "plain"): ("Linux gateways, plain forwarding", "s--", "tab:gray", -13),
    ("linux", "esp"): ("Linux gateways, ESP tunnel", "v--", "tab:orange", -13),
}


def plot_live(r: dict, path: Path) -> list[Path]:
    """`bench live`: Gbit/s (L2 with FCS) and Mpps at the receiver against flows, a line per gateway
    kind and mode: PATH and PATH-mpps.png, as plot_ipsec_flows; returns the files written."""
    plt = _plt()
    flows = r["flows"]
    out = []
    for key, unit, ylabel, target in (
        ("gbps", "Gbps", "received at the far host [Gbit/s], L2 with FCS", Path(path)),
        ("mpps", "Mpps", "received at the far host [Mpps]", mpps_path(path)),
    ):
        fig, ax = plt.subplots(figsize=(8, 5.2), dpi=110)
        top = 0.0
        for k, (label, style, color, dy) in LIVE_LINES.items():
            pts = [p for p in r["points"] if (p["kind"], p["mode"]) == k]
            if not pts:
                continue
            ys = [p[key] for p in pts]
            top = max(top, *ys)
            ax.plot([p["flows"] for p in pts], ys, style, color=color, label=label)
            for p, y in zip(pts, ys, strict=True):
                ax.annotate(f"{y:.3g}", (p["flows"], y), textcoords="offset points", ha="center",
                            xytext=(0, dy), fontsize=7, color=color)  # fmt: skip
        if len(flows) > 1:
            ax.set_xscale("log")
        ax.set_xticks(flows, [f"{n:,}" for n in flows])
        ax.minorticks_off()
        ax.set_xlabel("number of flows (UDP source ports), opened first")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0, top=top * 1.25 or 1)
        ax.grid(True, alpha=0.3)
        topo = "sunset -- west == east -- sunrise" if r["topology"] == "sites" else "h1 -- gw -- h2"
        ax.set_title(f"Live forwarding, {topo}, {r['frame_size']}-byte frames: {unit} vs flows", fontsize=11)
        _legend_below(ax, 2)
        fig.tight_layout(rect=(0, 0.06, 1, 1))
        cpus = r["cpus"]
        where = (f"sender on CPU {cpus['sender']}, gateways on CPU {cpus['gateways']}" if cpus
                 else "placement left to the scheduler")  # fmt: skip
        note = "" if r["kernel_esp"] else "; this kernel has no ESP: Linux measured plain only"
        fig.text(0.01, 0.01, f"flowpath {r['flowpath_version']}, veth in network namespaces, {where},\nbetter of "
                 f"{'/'.join(r['placements'])} placement, {r['seconds']:g} s windows{note}", fontsize=7,
                 color="0.35")  # fmt: skip
        fig.savefig(target)
        plt.close(fig)
        out.append(target)
    return out


def plot_ipip(r: dict, path: Path) -> list[Path]:
    """Gbit/s against flows: RX (decapsulation) and TX (encapsulation), flowtable and classic path,
    log-log (the two paths are orders of magnitude apart); returns the files written."""
    plt = _plt()
    flows = sorted({p["flows"] for p in r["points"]})
    by = {(p["direction"], p["mode"], p["flows"]): p["gbps"] for p in r["points"]}
    fig, ax = plt.subplots(figsize=(8, 5.2), dpi=110)
    for (d, m), style in ((("rx", "flowtable"), "o-"), (("tx", "flowtable"), "s-"), (("rx", "classic"), "o--"),
                          (("tx", "classic"), "s--")):  # fmt: skip
        ys = [by[d, m, n] for n in flows]
        ax.plot(flows, ys, style, label=f"{d.upper()} ({'decap' if d == 'rx' else 'encap'}), {m}")
        for x, y in zip(flows, ys, strict=True):
            dy = 6 if d == "rx" else -12  # TX labels under their line: the two close lines keep apart
            ax.annotate(
                f"{y:.3g}", (x, y), textcoords="offset points", xytext=(0, dy), ha="center", fontsize=7
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(flows, [f"{n:,}" for n in flows])
    ax.set_xlabel("number of flows (UDP source ports)")
    ax.set_ylabel("throughput [Gbit/s], L2 (received frames with FCS)")
    ax.grid(True, alpha=0.3, which="both")
    ax.set_title(f"IPIP tunnel, {r['frame_size']}-byte inner frames, {r['tunnel_key']} key: RX and TX")
    _legend_below(ax, 2)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    _footer(fig, r, f"{r['memory']['bytes_per_flow']:.0f} B/flow")
    fig.savefig(path)
    plt.close(fig)
    return [Path(path)]
