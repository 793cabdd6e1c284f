"""`flowpath ctl top`: rates from two `stats --json` readings divided by the gateway's own clock."""

from __future__ import annotations

import pytest
from ctlgw import LAN0, QUERY, T0, example_gateway, poll, serving
from ctlgw import ctl as run_ctl

from flowpath.ctl.commands import stats_payload
from flowpath.ctl.top import top_options, top_rates
from flowpath.errors import UsageError


def test_rates_are_counter_differences_over_the_gateways_clock():
    gw = example_gateway()
    w = gw.worker
    prev = stats_payload(gw)
    poll(w, [(LAN0, QUERY)] * 10, T0 + 3000)  # 10 fast-path hits, 62 bytes each
    gw.ports["lan0"].missed += 4
    cur = stats_payload(gw)
    cur["mono_ns"] = prev["mono_ns"] + 2_000_000_000  # as if read two seconds later
    r = top_rates(prev, cur)
    assert r["interval_s"] == 2.0
    assert r["interfaces"]["lan0"]["rx_pps"] == 5.0 and r["interfaces"]["lan0"]["rx_bps"] == 5 * 62 * 8
    assert r["interfaces"]["wan0"]["tx_pps"] == 5.0 and r["interfaces"]["wan0"]["rx_pps"] == 0.0
    assert r["fastpath_share"] == 1.0 and r["fastpath_pps"] == 5.0 and r["slowpath_pps"] == 0.0
    assert r["ports_per_s"]["lan0"]["rx_missed"] == 2.0
    assert top_rates(cur, cur | {"mono_ns": cur["mono_ns"] + 10**9})["fastpath_share"] is None  # idle


def test_top_once_prints_the_view():
    gw = example_gateway()
    with serving(gw) as srv:
        rc, out, err = run_ctl(srv, "top", "--once", "--interval", "0.05")
        assert (rc, err) == (0, "")
        assert "fast path" in out and "rx_missed/s" in out
        assert [line.split()[0] for line in out.splitlines() if line.split()[:1] in (["lan0"], ["wan0"])] == [
            "lan0", "wan0"]  # fmt: skip
        rc, out, _ = run_ctl(srv, "top", "--count", "2", "--interval", "0.05")
        assert rc == 0 and out.count("interface") == 2


@pytest.mark.parametrize("args", [["--count", "0"], ["--interval", "x"], ["--bogus"], ["--count"]])
def test_top_options_are_checked(args):
    with pytest.raises(UsageError, match="ctl top"):
        top_options(args)
