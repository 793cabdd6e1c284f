"""Table memory committed when a table is made or grows, not when the datapath first writes a row.

numpy's zeros are mapped lazily (calloc over fresh pages): the first write to each page faults and the
kernel clears the page then. A table that grows into such memory makes its datapath take those faults
one new row at a time, inside polls. No Linux counterpart as such (the kernel's slab pages are
allocated outside the packet's path; DPDK prefaults its hugepages at start).
"""

from __future__ import annotations

import numpy as np


def commit_pages(*arrays: np.ndarray) -> None:
    """Write zeros over every page of each array (views allowed: only their bytes), so that no later
    write faults. For arrays that hold nothing yet: it clears them."""
    for a in arrays:
        a[...] = 0
