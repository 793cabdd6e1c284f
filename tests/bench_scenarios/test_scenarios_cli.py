"""`flowpath bench bulking|frame-sizes --quick` end to end: conditions in the JSON, real PNGs, every
timed packet on the flowtable path, line rates from the L1 arithmetic (20 B preamble+SFD+IFG)."""

from __future__ import annotations

import json

import pytest

from flowpath.bench.frames import line_rate_mpps
from flowpath.cli import main

PNG = b"\x89PNG\r\n\x1a\n"
CONDITIONS = ("scenario", "flowpath_version", "cores", "batch_size", "packets_per_repetition", "repetitions",
              "duration_s", "flows")  # fmt: skip


def _png(path):
    data = path.read_bytes()
    return data[:8] == PNG and len(data) > 20_000


def test_bulking_quick_writes_json_and_two_pngs(tmp_path):
    j, p = tmp_path / "b.json", tmp_path / "rx-gbps.png"
    assert main(["bench", "bulking", "--quick", "--flows", "1,64", "--json", str(j), "--plot", str(p)]) == 0
    r = json.loads(j.read_text())
    for key in (*CONDITIONS, "frame_size"):
        assert key in r
    assert r["scenario"] == "bulking" and r["frame_size"] == 128 and r["flows"] == [1, 64]
    for row in r["results"]:
        for tag in ("bulk", "no_bulk"):
            x = row[tag]
            assert x["fastpath_hit_fraction"] == 1.0 and x["mpps"] > 0
            assert x["gbps_l2"] == pytest.approx(x["mpps"] * 128 * 8 / 1e3, rel=1e-3)
            assert x["gbps_l1"] == pytest.approx(x["mpps"] * 148 * 8 / 1e3, rel=1e-3)
    assert _png(p) and _png(tmp_path / "rx-gbps-mpps.png")


def test_frame_sizes_quick_writes_json_and_png(tmp_path):
    j, p = tmp_path / "f.json", tmp_path / "f.png"
    assert main(["bench", "frame-sizes", "--quick", "--flows", "32", "--json", str(j), "--plot", str(p)]) == 0
    r = json.loads(j.read_text())
    for key in CONDITIONS:
        assert key in r
    assert [x["frame_size"] for x in r["results"]] == [64, 128, 512, 1518, "imix"]
    assert all(x["fastpath_hit_fraction"] == 1.0 for x in r["results"])
    assert r["results"][0]["line_rate_mpps"]["10GbE"] == pytest.approx(14.8810, abs=1e-4)
    assert r["results"][3]["line_rate_mpps"]["100GbE"] == pytest.approx(8.1274, abs=1e-4)
    assert _png(p)


def test_line_rate_of_imix_uses_the_weighted_mean():
    mean = (28 * 64 + 16 * 570 + 4 * 1518) / 48
    assert line_rate_mpps("imix", 10e9) == pytest.approx(10e9 / ((mean + 20) * 8) / 1e6)


def test_frame_sizes_takes_one_flow_count(capsys):
    assert main(["bench", "frame-sizes", "--quick", "--flows", "1,2"]) == 2
    assert "one flow count" in capsys.readouterr().err
