"""The plots of the committed results (examples/profiles/results/*.json), drawn again: no legend over
a data point, no value label over another label or over a marker."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from flowpath.bench import plot_scenarios as ps  # noqa: E402
from flowpath.bench.plot import plot_classic_vs_flowtable  # noqa: E402

RESULTS = Path(__file__).resolve().parents[2] / "examples" / "profiles" / "results"
PLOTS = {
    "bulking": lambda r, p: ps.plot_bulking(r, p),
    "frame-sizes": lambda r, p: ps.plot_frame_sizes(r, p),
    "ipsec-flows": lambda r, p: ps.plot_ipsec_flows(r, p),
    "ipsec-sizes": lambda r, p: ps.plot_ipsec_sizes(r, p),
    "classic-vs-flowtable": lambda r, p: plot_classic_vs_flowtable(r["results"], p),
}


@pytest.fixture
def figures(monkeypatch):
    """Every figure saved while the test runs, drawn and kept open for inspection."""
    saved = []
    real = Figure.savefig

    def savefig(self, *a, **kw):
        real(self, *a, **kw)
        saved.append(self)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return saved


def _renderer(fig):
    """A drawn Agg canvas's renderer (pyplot.close() left the figure a bare canvas)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _markers(fig) -> list[tuple[float, float, float]]:
    """(x, y, radius) in pixels of every marker drawn in the figure's axes."""
    out = []
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_marker() in (None, "None", "", " "):
                continue
            r = line.get_markersize() * fig.dpi / 72 / 2
            out += [(x, y, r) for x, y in ax.transData.transform(line.get_xydata())]
    return out


def _labels(fig) -> list[Bbox]:
    """Window extents of the value labels in the axes (texts and annotations)."""
    r = _renderer(fig)
    return [t.get_window_extent(r) for ax in fig.axes for t in ax.texts if t.get_text().strip()]


def _legends(fig) -> list[Bbox]:
    r = _renderer(fig)
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
    return [lg.get_window_extent(r) for lg in legends]


def _hits(box: Bbox, x: float, y: float, radius: float) -> bool:
    return box.x0 - radius < x < box.x1 + radius and box.y0 - radius < y < box.y1 + radius


@pytest.mark.parametrize("name", sorted(PLOTS))
def test_committed_results_plot_without_overlaps(name, figures, tmp_path):
    PLOTS[name](json.loads((RESULTS / f"{name}.json").read_text()), tmp_path / f"{name}.png")
    assert figures
    for fig in figures:
        markers, labels = _markers(fig), _labels(fig)
        for box in _legends(fig):
            assert not [m for m in markers if _hits(box, *m)], f"{name}: the legend covers data points"
        for k, box in enumerate(labels):
            assert not [m for m in markers if _hits(box, *m)], f"{name}: label {k} over a marker"
            assert not [o for o in labels[k + 1 :] if box.overlaps(o)], (
                f"{name}: label {k} over another label"
            )
