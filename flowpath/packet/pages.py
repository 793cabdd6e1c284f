"""Table memory committed when a table is made or grows, not when the datapath first writes a row;
room reserved for a table to grow into without being copied; huge pages for large random-access tables.

numpy's zeros are mapped lazily (calloc over fresh pages): the first write to each page faults and the
kernel clears the page then. A table that grows into such memory makes its datapath take those faults
one new row at a time, inside polls. No Linux counterpart as such (the kernel's slab pages are
allocated outside the packet's path; DPDK prefaults its hugepages at start).
"""

from __future__ import annotations

import mmap

import numpy as np

HPAGE_SIZE = 1 << 21  # a transparent huge page: the span of one PMD entry with 4 KiB pages (x86-64, arm64)


def zeros_reserved(shape: int | tuple, dtype, huge: bool = False) -> np.ndarray:
    """np.zeros(shape, dtype) over an anonymous mapping of its own: address space only, each page
    taken (zeroed by the kernel) when first written. A growing table reserves its largest size so
    and takes its rows as leading slices: growing commits the new rows' pages (commit_pages) and
    copies nothing. (calloc maps large blocks so too, but serves blocks below its mmap threshold,
    which rises as blocks are freed, from the heap, clearing them all at once.)

    huge: a buffer of HPAGE_SIZE bytes or more starts on a huge-page boundary and is advised
    MADV_HUGEPAGE. Where the kernel allows transparent huge pages (/sys/kernel/mm/
    transparent_hugepage/enabled "always" or "madvise"), each 2 MiB of it becomes one page when
    first written, so that a table read at random over megabytes (conntrack's rows and index, NAT's
    by-source lists: early_drop's victim is anywhere) misses the TLB far less: on 4 KiB pages
    nearly every such access walks the page tables. The price: memory taken 2 MiB at a time. Where
    the kernel says no, the pages are 4 KiB."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    dt = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64))
    nbytes = max(n * dt.itemsize, 1)
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS  # as malloc's
    if not huge or nbytes < HPAGE_SIZE:
        return np.frombuffer(mmap.mmap(-1, nbytes, flags=flags), dt, count=n).reshape(shape)
    buf = mmap.mmap(-1, nbytes + HPAGE_SIZE, flags=flags)  # room to start on a boundary
    try:
        buf.madvise(mmap.MADV_HUGEPAGE)
    except (AttributeError, OSError):  # no THP in this kernel (EINVAL), or not Linux
        pass
    off = -np.frombuffer(buf, np.uint8, count=1).ctypes.data % HPAGE_SIZE
    return np.frombuffer(buf, dt, count=n, offset=off).reshape(shape)


def commit_pages(*arrays: np.ndarray) -> None:
    """Write zeros over every page of each array (views allowed: only their bytes), so that no later
    write faults. For arrays that hold nothing yet: it clears them."""
    for a in arrays:
        a[...] = 0
