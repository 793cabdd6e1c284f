"""flowpath/packet/pages.py: reserved table memory, committed when asked, on huge pages when asked and large."""

from __future__ import annotations

import os

import numpy as np
import pytest

from flowpath.packet.pages import HPAGE_SIZE, commit_pages, zeros_reserved

THP = "/sys/kernel/mm/transparent_hugepage/enabled"


def _vma_flags(addr: int) -> list[str]:
    """VmFlags of the mapping holding addr (/proc/self/smaps)."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= addr < hi
            elif inside and head == "VmFlags:":
                return line.split()[1:]
    raise AssertionError(f"no mapping holds {addr:#x}")


@pytest.mark.parametrize("huge", [False, True])
@pytest.mark.parametrize("shape, dtype", [((7, 3), np.int64), (1000, np.uint8), ((HPAGE_SIZE // 64 + 5, 16), np.uint32)])
def test_reserved_is_zeros_of_the_shape_and_writable(shape, dtype, huge):
    a = zeros_reserved(shape, dtype, huge=huge)
    assert a.shape == (shape if isinstance(shape, tuple) else (shape,)) and a.dtype == dtype
    assert a.flags.writeable and a.flags.c_contiguous and not a.any()
    a[-1] = 7
    commit_pages(a[:1])
    assert a[-1].all() and not a[:1].any()


def test_a_large_table_asked_huge_starts_on_a_huge_page_and_is_advised_so():
    small = zeros_reserved(HPAGE_SIZE // 2, np.uint8, huge=True)
    large = zeros_reserved(HPAGE_SIZE // 8 + 1, np.int64, huge=True)
    plain = zeros_reserved(HPAGE_SIZE // 8 + 1, np.int64)
    assert large.ctypes.data % HPAGE_SIZE == 0
    if not os.path.exists(THP) or "[never]" in open(THP).read():
        pytest.skip("no transparent huge pages on this kernel")
    assert "hg" in _vma_flags(large.ctypes.data)  # MADV_HUGEPAGE
    assert "hg" not in _vma_flags(small.ctypes.data) and "hg" not in _vma_flags(plain.ctypes.data)


def test_conntrack_tables_are_asked_huge():
    from flowpath.netfilter.conntrack import Conntrack

    ct = Conntrack(max_entries=262144)
    for a in (ct.hot, ct.key, ct.bys[0], ct.bys[1]):
        assert a.ctypes.data % HPAGE_SIZE == 0
