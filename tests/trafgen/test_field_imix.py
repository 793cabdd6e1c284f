"""Field engine and IMIX distributions, exactly (TRex STLVmFlowVar semantics; CSIT/TRex IMIX ratios)."""

from __future__ import annotations

import numpy as np
import pytest

from flowpath.trafgen.field import FieldVar
from flowpath.trafgen.imix import IMIX, frame_sizes, imix_pattern, mean_size


def test_inc_wraps_from_max_to_min_with_step():
    """TRex "inc": init (default min), then +step, wrapping past max back into the range."""
    assert FieldVar(10, 14, "inc").values(12) == [10, 11, 12, 13, 14, 10, 11, 12, 13, 14, 10, 11]
    assert FieldVar(10, 14, "inc", step=2).values(6) == [10, 12, 14, 11, 13, 10]
    assert FieldVar(10, 14, "inc", init=13).values(4) == [13, 14, 10, 11]


def test_dec_starts_at_max_and_wraps_to_max():
    assert FieldVar(10, 14, "dec").values(7) == [14, 13, 12, 11, 10, 14, 13]
    assert FieldVar(10, 14, "dec", step=3, init=11).values(4) == [11, 13, 10, 12]


def test_fixed_and_single_value_ranges():
    assert FieldVar.fixed(5001).values(3) == [5001] * 3
    assert FieldVar(7, 7, "random").values(2) == [7, 7]


def test_random_is_seeded_uniform_and_in_range():
    v = FieldVar(1024, 1024 + 99, "random", seed=42)
    a = v.offsets(100_000)
    assert np.array_equal(a, FieldVar(1024, 1123, "random", seed=42).offsets(100_000))
    assert not np.array_equal(a, FieldVar(1024, 1123, "random", seed=43).offsets(100_000))
    assert a.min() == 0 and a.max() == 99
    counts = np.bincount(a, minlength=100)
    chi2 = float(((counts - 1000) ** 2 / 1000).sum())
    assert chi2 < 160  # 99 degrees of freedom: p ~ 1e-4


def test_ipv6_sized_ranges_keep_python_ints():
    lo = 0x20010DB8000000010000000000000010
    assert FieldVar(lo, lo + 2, "inc").values(4) == [lo, lo + 1, lo + 2, lo]


@pytest.mark.parametrize("bad", [dict(min=5, max=4), dict(min=1, max=2, op="up"), dict(min=1, max=2, init=3)])
def test_bad_field_vars_are_refused(bad):
    with pytest.raises(ValueError):
        FieldVar(**bad)


def test_csit_imix_is_28_16_4_in_every_cycle_of_48():
    s = frame_sizes("imix", 48 * 50)
    for cycle in s.reshape(50, 48):
        sizes, counts = np.unique(cycle, return_counts=True)
        assert dict(zip(sizes.tolist(), counts.tolist(), strict=True)) == {64: 28, 570: 16, 1518: 4}
    assert mean_size("csit-imix") == pytest.approx((28 * 64 + 16 * 570 + 4 * 1518) / 48)


def test_trex_imix_sizes_are_60_590_1514_plus_fcs_in_28_16_4():
    s = frame_sizes("trex-imix", 480)
    sizes, counts = np.unique(s, return_counts=True)
    assert dict(zip(sizes.tolist(), counts.tolist(), strict=True)) == {64: 280, 594: 160, 1518: 40}
    assert IMIX["trex"] == ((64, 28), (594, 16), (1518, 4))


def test_imix_spreads_large_frames_and_prefix_is_the_cycle():
    cyc = imix_pattern(IMIX["csit"])
    big = np.flatnonzero(cyc == 1518)
    assert np.diff(big).min() >= 10  # never two jumbo-ish frames back to back
    assert np.array_equal(frame_sizes("imix", 50), np.concatenate([cyc, cyc[:2]]))


def test_size_ranges_use_the_field_engine():
    assert frame_sizes(FieldVar(64, 66, "inc"), 5).tolist() == [64, 65, 66, 64, 65]
    assert frame_sizes(((100, 1), (200, 3)), 8).tolist().count(200) == 6
    with pytest.raises(ValueError):
        frame_sizes("nope-imix", 4)
