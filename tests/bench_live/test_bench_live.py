"""`flowpath bench live --quick` end to end: fresh testbeds, flowpath and Linux gateways, JSON and plot."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flowpath.cli import main
from flowpath.testbed.gateway import flowpath_env
from flowpath.testbed.netns import require_netns

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.root
@pytest.mark.skipif(require_netns() is not None, reason=str(require_netns()))
def test_bench_live_quick(tmp_path):
    out, plot = tmp_path / "live.json", tmp_path / "live.png"
    p = subprocess.run([sys.executable, "-m", "flowpath", "bench", "live", "--quick", "--json", str(out),
                        "--plot", str(plot)], capture_output=True, text=True, timeout=600, cwd=REPO,
                       env=flowpath_env())  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())
    for key in ("flowpath_mpps", "kernel_mpps", "flowpath_tcp_gbps", "kernel_tcp_gbps", "frame_size", "flows",
                "flowpath_esp_mpps", "flowpath_esp_gbps", "flowpath_esp_tcp_gbps", "points", "kernel_esp"):  # fmt: skip
        assert key in r, key
    assert r["frame_size"] == 128 and len(r["flows"]) == 1
    modes = {(x["kind"], x["mode"]) for x in r["points"]}
    assert {("flowpath", "plain"), ("flowpath", "esp"), ("linux", "plain")} <= modes
    for x in r["points"]:
        assert x["flows"] == r["flows"][0]
        if x["kind"] == "flowpath":  # flowpath forwarded something in every mode, UDP and TCP
            assert x["mpps"] > 0 and x["tcp_gbps"] > 0, x
            ph = x["by_placement"][x["placement"]]["phases"]
            assert all(g["packets"] > 0 for g in ph.values()), ph
    if not r["kernel_esp"]:  # said so in the output and in the JSON
        assert any("no ESP" in n for n in r["notes"]) and "no ESP" in " ".join(p.stdout.split())
    assert plot.exists() and plot.with_name("live-mpps.png").exists()
    # every testbed is gone again
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "fpbl" not in left


def test_live_options_refused_elsewhere(capsys):
    assert main(["bench", "bulking", "--topology", "gateway"]) == 2
    assert "--topology applies to `bench live` only" in capsys.readouterr().err
    assert main(["bench", "bulking", "--workers", "2"]) == 2
    assert "--workers applies to `bench live` and `bench scaling` only" in capsys.readouterr().err


def test_live_bad_topology(capsys):
    assert main(["bench", "live", "--topology", "mesh"]) == 2
    err = capsys.readouterr().err
    assert "--topology" in err or "needs root" in err


@pytest.mark.root
@pytest.mark.skipif(require_netns() is not None, reason=str(require_netns()))
def test_bench_live_gateway_topology_has_no_esp(tmp_path):
    """--topology gateway: h1 -- gw -- h2, plain only (no point claims a tunnel there is not)."""
    from flowpath.bench.live_sites import live_bench

    r = live_bench([1], quick=True, topology="gateway")
    assert {(x["kind"], x["mode"]) for x in r["points"]} == {("flowpath", "plain"), ("linux", "plain")}
    assert r["flowpath_mpps"] > 0 and "flowpath_esp_mpps" not in r
