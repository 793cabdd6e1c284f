"""The fuzzing campaign (tests/fuzz/campaign.py), small: no crash, and every received packet accounted
once, on hostile packets, captures, network files and rulesets."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # the campaign module (importlib import mode)

from campaign import campaign  # noqa: E402


def test_a_small_campaign_finds_no_crash_and_conservation_holds(tmp_path):
    res = campaign(cases=60, seed=7, keep=tmp_path)
    for kind, r in res.items():
        assert r["crashes"] == 0, (kind, r, sorted(p.name for p in tmp_path.iterdir()))
        assert r["cases"] == 60
    assert res["packets"]["conservation failures"] == 0 and res["packets"]["packets"] > 60
    assert res["networks"]["config errors"] > 0 and res["rulesets"]["config errors"] > 0  # mutations bite
