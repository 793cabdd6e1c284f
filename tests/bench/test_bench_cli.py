"""`flowpath bench classic-vs-flowtable --quick` end to end: JSON fields, a real PNG, sane numbers."""

from __future__ import annotations

import json

from flowpath.cli import main


def test_classic_vs_flowtable_quick_writes_json_and_png(tmp_path):
    j, p = tmp_path / "r.json", tmp_path / "r.png"
    rc = main(["bench", "classic-vs-flowtable", "--quick", "--flows", "1,50", "--frame-size", "128",
               "--json", str(j), "--plot", str(p)])  # fmt: skip
    assert rc == 0
    r = json.loads(j.read_text())
    for key in (
        "classic_mpps",
        "flowtable_mpps",
        "frame_size",
        "flows",
        "kernel_mpps",
        "cores",
        "flowpath_version",
    ):
        assert key in r
    assert r["frame_size"] == 128 and [x["flows"] for x in r["results"]] == [1, 50]
    assert r["batch_size"] == 1024  # the scenario's default poll size
    for x in r["results"]:
        assert x["fastpath_hit_fraction"] == 1.0  # every measured packet really took the flowtable
        assert x["flowtable_mpps"] > x["classic_mpps"] > x["python_classic_mpps"] > 0
        assert x["classic_lane_fraction"] == 1.0  # every measured classic packet took the compiled lane
        assert x["linux_ratio"] == 2.75
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000


def test_unknown_scenario_is_a_usage_error(capsys):
    assert main(["bench", "nope"]) == 2
    assert "classic-vs-flowtable" in capsys.readouterr().err


def test_port_feed_delivers_the_pools_packets():
    """A PortFeed's batches hold the same frames, in the same order, as the pool of batches."""
    import numpy as np

    from flowpath.bench.setup import LAN_IF, PortFeed, flow_frames, pool

    up, _ = flow_frames(7, 124)
    batches, feed = pool(up, LAN_IF, 100, 16), PortFeed(up, LAN_IF, 100, 16)
    assert feed.polls == len(batches) == 7
    for k, want in enumerate(batches):
        got = feed.fill(k, 5)
        assert got.n == want.n == (16 if k < 6 else 4)
        assert [got.frame_bytes(i) for i in range(got.n)] == [want.frame_bytes(i) for i in range(want.n)]
        assert np.all(got.iif[: got.n] == LAN_IF) and np.all(got.ts_ns[: got.n] == 5)
        assert np.all(got.verdict[: got.n] == 0) and np.all(got.flow[: got.n] == -1)


def test_first_forward_takes_the_flowtable_path():
    """What compile_times times in a fresh interpreter: one packet forwarded by the flowtable."""
    from flowpath.bench.flowtable import first_forward

    first_forward()  # raises when the packet did not take the flowtable path


def test_fresh_interpreter_times_reports_both_runs_and_failures():
    import pytest

    from flowpath.bench.setup import fresh_interpreter_times

    t = fresh_interpreter_times("import os", "os.environ['NUMBA_CACHE_DIR']")
    assert set(t) == {"cold_s", "cached_s"} and all(0 <= v < 10 for v in t.values())
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        fresh_interpreter_times("x = 0", "1 / x")
