"""`flowpath bench ipip --quick` end to end through the CLI: the JSON schema the issue asks for, and
that what was timed was forwarded right (each direction's first batch is the same bytes through the
flowtable as through the classic path, and 20 bytes longer or shorter than what came in)."""

from __future__ import annotations

import json

import pytest

from flowpath.cli import main


@pytest.mark.parametrize("key", ["perfect", "hash"])
def test_bench_ipip_quick_writes_points_memory_and_checks(tmp_path, key):
    j = tmp_path / "ipip.json"
    rc = main(["bench", "ipip", "--quick", "--flows", "1,10", "--frame-size", "128", "--key", key,
               "--json", str(j)])  # fmt: skip
    assert rc == 0
    r = json.loads(j.read_text())
    assert r["scenario"] == "ipip" and r["tunnel_key"] == key and r["frame_size"] == 128
    pts = r["points"]
    assert {(p["direction"], p["mode"], p["flows"]) for p in pts} == {
        (d, m, n) for d in ("rx", "tx") for m in ("flowtable", "classic") for n in (1, 10)
    }
    for p in pts:
        assert set(p) >= {"direction", "mode", "flows", "frame_size", "mpps", "gbps"}
        assert p["frame_size"] == 128 and p["mpps"] > 0 and p["gbps"] > 0
        # RX frames carry the 20-byte outer header: Gbit/s from the frames received, FCS included
        assert p["gbps"] == pytest.approx(
            p["mpps"] * (148 if p["direction"] == "rx" else 128) * 8 / 1e3, rel=1e-3, abs=1e-4
        )
        assert p["fastpath_hit_fraction"] == (1.0 if p["mode"] == "flowtable" else 0.0)
    for x in r["ratios"]:
        assert x["flowtable_over_classic"] > 1
    assert r["memory"]["tunnel_key"] == key and r["memory"]["bytes_per_flow"] > 256
    assert r["memory"]["key_bytes_for_the_outer_pair"] == (8 if key == "perfect" else 4)
    assert len(r["output_checks"]) == 4
    for c in r["output_checks"]:
        assert c["identical_output"] and c["frame_bytes_ok"] and c["frames"] > 0


def test_key_option_is_for_ipip_only(capsys):
    assert main(["bench", "bulking", "--quick", "--key", "hash"]) == 2
    assert "--key" in capsys.readouterr().err
    assert main(["bench", "ipip", "--key", "sloppy"]) == 2
