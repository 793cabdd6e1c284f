"""Plots of benchmark results (matplotlib, Agg): units on axes, a legend, a title, the conditions."""

from __future__ import annotations

from pathlib import Path


def plot_classic_vs_flowtable(results: list[dict], path: Path) -> None:
    """Grouped bars: the Python classic path, the classic path (its compiled lane) and the flowtable path
    (port and cold batches), Mpps per flow count (log scale), the flowtable/classic ratio on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    flows = [r["flows"] for r in results]
    x = np.arange(len(flows))
    fig, ax = plt.subplots(figsize=(8, 5.0), dpi=110)
    w = 0.21
    p = ax.bar(x - 1.5 * w, [r["python_classic_mpps"] for r in results], w, label="classic path, Python only")
    c = ax.bar(x - 0.5 * w, [r["classic_mpps"] for r in results], w, label="classic path (compiled lane)")
    f = ax.bar(x + 0.5 * w, [r["flowtable_mpps"] for r in results], w,
               label="flowtable path (compiled, bulk), port batch")  # fmt: skip
    d = ax.bar(x + 1.5 * w, [r["flowtable_mpps_cold"] for r in results], w, label="flowtable path, cold batches")
    ax.bar_label(p, fmt="%#.2g", fontsize=7)
    ax.bar_label(c, fmt="%#.3g", fontsize=7)  # '#': 27.0, not 27, beside 29.2
    ax.bar_label(f, labels=[f"{r['flowtable_mpps']:#.3g}\n({r['ratio']:.2f}x)" for r in results], fontsize=7)
    ax.bar_label(d, fmt="%#.3g", fontsize=7)
    ax.set_yscale("log")
    ax.set_xticks(x, [f"{n:,}" for n in flows])
    ax.set_xlabel("concurrent flows (UDP source ports)")
    ax.set_ylabel("forwarded packets per second [Mpps], log scale")
    r0 = results[0]
    ax.set_title(f"Classic path vs flowtable bypass, {r0['frame_size']}-byte frames, 1 core")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8, frameon=False)
    ax.set_ylim(top=max(r["flowtable_mpps"] for r in results) * 4)  # room for the two-line labels
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    # below the legend, where no bar or label can reach it (inside the axes it met tall bars' labels)
    fig.text(0.01, 0.01, f"flowpath {r0['flowpath_version']}, 1 core, batch {r0['batch_size']}, in memory (no "
             "NIC); Linux in the flowtable workshop slides: 1.85 vs 5.16 Mpps (2.75x)", fontsize=7, color="0.35")  # fmt: skip
    fig.savefig(path)
    plt.close(fig)


def plot_scaling(data: dict, path: Path) -> None:
    """The pCPU test report's figure: total throughput against the number of CPUs (workers). Left, ESP
    encapsulation in Gbit/s with per-CPU SAs and with one shared SA; right, plain forwarding in Mpps.
    Dashed: linear in the CPUs from each mode's one-worker figure; dotted: the machine's ceiling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.6), dpi=110)
    labels = {"forward": "forward (NAT, flowtable)", "esp-pcpu": "per-CPU SAs (RFC 9611)",
              "esp-shared-sa": "one shared SA"}  # fmt: skip
    ceiling = {int(n): x for n, x in (data.get("machine_ceiling") or {}).items()}
    panels = ((ax, ("esp-pcpu", "esp-shared-sa"), "gbps", "Gbit/s", "ESP tunnel encapsulation (west)"),
              (ax2, ("forward",), "mpps", "Mpps", "Plain forwarding through NAT"))  # fmt: skip
    for a, modes, key, unit, title in panels:
        for k, mode in enumerate(modes):
            pts = sorted((p for p in data["points"] if p["mode"] == mode), key=lambda p: p["workers"])
            if not pts:
                continue
            xs = [p["workers"] for p in pts]
            line = a.plot(xs, [p[key] for p in pts], marker="o", label=labels.get(mode, mode))[0]
            base = next((p[key] for p in pts if p["workers"] == 1), None)
            if base:
                a.plot(xs, [base * x for x in xs], linestyle="--", color=line.get_color(), alpha=0.4, linewidth=1)
                if ceiling and k == 0:
                    cx = [1] + sorted(ceiling)
                    a.plot(cx, [base] + [base * ceiling[x] for x in cx[1:]], linestyle=":", color="0.4",
                           linewidth=1, label="machine ceiling")  # fmt: skip
            for x, p in zip(xs, pts, strict=True):
                a.annotate(f"{p[key]:.3g}", (x, p[key]), textcoords="offset points", xytext=(0, 7 if k == 0 else -13),
                           ha="center", fontsize=7)  # fmt: skip
        a.set_title(title, fontsize=10)
        a.set_ylabel(f"total throughput [{unit}]")
        a.set_xlabel("workers (CPUs, one pinned thread each)")
        a.set_xticks(sorted({p["workers"] for p in data["points"]}))
        a.set_ylim(bottom=0)
        a.grid(alpha=0.3)
        a.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"Fast-path scaling with workers, {data['frame_size']}-byte frames, {data['flows']} flows "
                 "(dashed: linear in the CPUs)")  # fmt: skip
    fig.text(0.01, 0.01, f"flowpath {data['flowpath_version']}, {data['cpus']} CPUs, batch {data['batch_size']}, in "
             "memory (no NIC); the pCPU report: about 3.3 Gbit/s per flow and CPU, linear", fontsize=7, color="0.35")  # fmt: skip
    fig.tight_layout(rect=(0, 0.04, 1, 0.94))
    fig.savefig(path)
    plt.close(fig)
