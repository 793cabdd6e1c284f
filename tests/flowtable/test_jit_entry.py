"""jit_entry (flowpath/flowtable/hook.py): a kernel's entry point resolved once per kernel and
argument types; arguments of other types (dtype, dimensions, layout, mutability, a tuple's members,
an int past int64) resolve their own."""

from __future__ import annotations

import numpy as np
import pytest
from numba import config, njit

from flowpath.flowtable.hook import _type_key, jit_entry

pytestmark = pytest.mark.skipif(config.DISABLE_JIT, reason="with the JIT off jit_entry returns the kernel itself")


@njit(cache=False)
def _sum(t, k):
    a, b = t
    return a.sum() + b.sum() + k


def _ro(a):
    a.flags.writeable = False
    return a


def test_same_types_share_one_entry_point_and_it_computes():
    args = ((np.arange(4, dtype=np.int64), np.ones((2, 2))), 3)
    e = jit_entry(_sum, args)
    assert jit_entry(_sum, ((np.zeros(9, np.int64), np.zeros((5, 1))), 7)) is e  # a grown table: same types
    assert e(*args) == 6 + 4 + 3


@pytest.mark.parametrize("other", [
    ((np.arange(4, dtype=np.int32), np.ones((2, 2))), 3),  # dtype
    ((np.arange(4, dtype=np.int64), np.ones(4)), 3),  # dimensions
    ((np.arange(8, dtype=np.int64)[::2], np.ones((2, 2))), 3),  # layout (strided: 'A')
    ((_ro(np.arange(4, dtype=np.int64)), np.ones((2, 2))), 3),  # read-only
    ((np.arange(4, dtype=np.int64), np.ones((2, 2))), 1 << 63),  # typeof: uint64
    ((np.arange(4, dtype=np.int64), np.ones((2, 2))), 2.5),  # float
])
def test_other_types_resolve_their_own_entry_point(other):
    """Each computes right: an entry point shared with the int64/C arrays' would read these wrong."""
    base = ((np.arange(4, dtype=np.int64), np.ones((2, 2))), 3)
    jit_entry(_sum, base)
    assert _type_key(other) != _type_key(base)
    assert jit_entry(_sum, other)(*other) == _sum.py_func(*other)


def test_values_typeof_does_not_cover_are_resolved_each_time_not_cached():
    assert _type_key((np.zeros(2), "x")) is None and _type_key([np.zeros(2)]) is None
