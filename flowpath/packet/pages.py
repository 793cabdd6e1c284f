"""Table memory committed when a table is made or grows, not when the datapath first writes a row;
and room reserved for a table to grow into without being copied.

numpy's zeros are mapped lazily (calloc over fresh pages): the first write to each page faults and the
kernel clears the page then. A table that grows into such memory makes its datapath take those faults
one new row at a time, inside polls. No Linux counterpart as such (the kernel's slab pages are
allocated outside the packet's path; DPDK prefaults its hugepages at start).
"""

from __future__ import annotations

import mmap

import numpy as np


def zeros_reserved(shape: int | tuple, dtype) -> np.ndarray:
    """np.zeros(shape, dtype) over an anonymous mapping of its own: address space only, each page
    taken (zeroed by the kernel) when first written. A growing table reserves its largest size so
    and takes its rows as leading slices: growing commits the new rows' pages (commit_pages) and
    copies nothing. (calloc maps large blocks so too, but serves blocks below its mmap threshold,
    which rises as blocks are freed, from the heap, clearing them all at once.)"""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    dt = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64))
    buf = mmap.mmap(-1, max(n * dt.itemsize, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # as malloc's
    return np.frombuffer(buf, dt, count=n).reshape(shape)


def commit_pages(*arrays: np.ndarray) -> None:
    """Write zeros over every page of each array (views allowed: only their bytes), so that no later
    write faults. For arrays that hold nothing yet: it clears them."""
    for a in arrays:
        a[...] = 0
