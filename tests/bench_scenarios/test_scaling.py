"""`flowpath bench scaling`: the JSON the issue names, a real PNG, every mode on 1 and 2 workers with
tiny counts, each flow on one worker, and usage errors that exit 2. No timing assertions: the figures
depend on the machine (they are in the closing notes and examples/profiles/results/)."""

from __future__ import annotations

import json

import pytest

from flowpath.bench.scaling import MODES, measure
from flowpath.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def test_bench_scaling_quick_writes_points_for_every_mode_and_worker_count(tmp_path):
    js, png = tmp_path / "s.json", tmp_path / "s.png"
    assert main(["bench", "scaling", "--quick", "--workers", "1,2", "--flows", "64", "--batch", "128",
                 "--json", str(js), "--plot", str(png)]) == 0  # fmt: skip
    data = json.loads(js.read_text())
    pts = data["points"]
    assert [(p["mode"], p["workers"]) for p in pts] == [(m, n) for m in MODES for n in (1, 2)]
    for p in pts:
        assert p["mpps"] > 0 and p["gbps"] > 0
        assert sum(p["flows_per_worker"]) == 64 and len(p["flows_per_worker"]) == p["workers"]
        assert abs(p["gbps"] - p["mpps"] * 128 * 8 / 1e3) < 0.01 + p["gbps"] * 0.01
    assert png.read_bytes()[:8] == PNG


def test_scaling_point_counts_only_fast_path_packets_without_drops():
    p = measure("esp-pcpu", 2, flows=16, frame_size=256, polls=4, reps=1, batch_size=64)
    assert p["packets"] == 4 * 64 * sum(1 for n in p["flows_per_worker"] if n)


@pytest.mark.parametrize(("args", "says"), [
    (["--workers", "0"], "--workers: at least 1"),
    (["--workers", "a"], "--workers 'a': expected"),
    (["--flows", "1,2"], "one --flows count"),
    (["--alg", "chacha"], "--alg, --packets and --reps apply"),
    (["--topology", "sites"], "--topology applies to `bench live` only"),
])  # fmt: skip
def test_bench_scaling_usage_errors_exit_2(args, says, capsys):
    assert main(["bench", "scaling", "--quick", *args]) == 2
    assert says in capsys.readouterr().err
