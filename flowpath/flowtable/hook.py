"""net/netfilter/nf_flow_table_ip.c › nf_flow_offload_ip_hook: the whole fast path over one batch.

One Python call, one compiled call: `_nf_flow_offload_hook` runs the stages of flowtable/ip.py and
flowtable/bulk.py in the order of nf_flow_offload_ip_hook (lookup, forward, then transmit), so the
per-batch cost of crossing into numba is paid once.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from flowpath.flowtable.bulk import (
    HDR_ROW,
    flow_bulk_group_finish,
    flow_bulk_group_range,
    flow_neigh_xmit_range,
)
from flowpath.flowtable.core import Flowtable
from flowpath.flowtable.ip import PREFETCH_MIN_ENTRIES, PREFETCH_RING, nf_flow_offload_ip_range
from flowpath.flowtable.key import KEY_ROW, FlowtableViews
from flowpath.packet.batch import PacketBatch


class OffloadScratch(NamedTuple):
    """Per-batch-capacity work arrays, allocated once (nothing is allocated per batch).

    pkey uint32[G, 16] keys, phash int64[G] hashes (G = PREFETCH_RING); group, group_start, group_count, order,
    gfirst int32[cap] (bulk.py); gtab int32[2**k >= 2 * cap] zeroed hash; hdr uint8[cap, HDR_ROW].
    """

    pkey: np.ndarray
    phash: np.ndarray
    group: np.ndarray
    group_start: np.ndarray
    group_count: np.ndarray
    order: np.ndarray
    gfirst: np.ndarray
    gtab: np.ndarray
    hdr: np.ndarray

    @classmethod
    def alloc(cls, capacity: int) -> OffloadScratch:
        i32 = [np.zeros(capacity, np.int32) for _ in range(5)]
        gcap = 1 << max(1, 2 * capacity - 1).bit_length()
        return cls(np.zeros((PREFETCH_RING, KEY_ROW), np.uint32), np.zeros(PREFETCH_RING, np.int64), *i32,
                   np.zeros(gcap, np.int32), np.zeros((capacity, HDR_ROW), np.uint8))  # fmt: skip


class OffloadResult(NamedTuple):
    """What the hook did to a batch. The arrays are the scratch arrays themselves (not copied, not
    sliced, to keep the per-batch cost down), valid until the next call on the same batch:

    forwarded  packets left with verdict FLOW_FORWARD (rewritten, oif set, flow = entry)
    slow       packets this call sent to the slow path (verdict SLOW_*; bytes untouched)
    ngroups    number of transmit groups
    group      int32[cap], valid [:n]: group of each packet (-1: not forwarded)
    group_start, group_count  int32[cap], valid [:ngroups]
    order      int32[cap], valid [:forwarded]: packet indices, group by group, batch order inside
    """

    forwarded: int
    slow: int
    ngroups: int
    group: np.ndarray
    group_start: np.ndarray
    group_count: np.ndarray
    order: np.ndarray


HOOK_CHUNK = 256  # packets looked up, grouped and given their headers at a time (entry rows fit L1/L2)
HOOK_CHUNK_CACHED = 2048  # the same for a table that stays in the caches (the chunk's frames fit L2)


# The table and the scratch cross into numba as plain tuples and are regrouped inside: numba types a
# plain tuple in C, a NamedTuple argument in Python on every call.
@njit(cache=True, nogil=True, _nrt=False)
def _nf_flow_offload_hook(cols, n, ft, sc, now_ns, bulk):
    """All stages over packets 0..n-1; returns (forwarded, slow, ngroups).

    cols  a PacketBatch's columns (PacketBatch.cols); ft Flowtable.cols (FlowtableViews as a plain
    tuple); sc an OffloadScratch as a plain tuple; now_ns packet time; bulk 1 groups hits by
    link-layer header, 0 makes a group per hit.
    """
    ft = FlowtableViews(*ft)
    ring, grp = sc[:2], sc[2:]  # (pkey, phash) for ip.py, the grouping's arrays for bulk.py
    group = grp[0]
    # Lookup, grouping and the header copy run chunk by chunk, so that grouping reads each hit's entry
    # while the lookup left it in L1/L2 and the copy writes frames the lookup left there: over a whole
    # large batch each stage read every entry, or every frame, from DRAM again.
    chunk = HOOK_CHUNK if ft.key.shape[0] >= PREFETCH_MIN_ENTRIES else HOOK_CHUNK_CACHED
    slow, fwd, ng, last = 0, 0, np.int64(0), np.int64(-1)  # int64, not literals: one signature per callee
    for c0 in range(0, n, chunk):
        c1 = min(n, c0 + chunk)
        slow += nf_flow_offload_ip_range(cols, c0, c1, ft, ring, now_ns)
        ng, last = flow_bulk_group_range(cols[5], cols[6], c0, c1, ft, bulk, grp, ng, last)
        fwd += flow_neigh_xmit_range(cols[0], cols[1], cols[2], group, c0, c1, grp[6])
    flow_bulk_group_finish(n, ng, ft, bulk, grp)
    return fwd, slow, int(ng)  # a Python int with the JIT off too (ng starts as np.int64)


def scratch_for(batch: PacketBatch) -> OffloadScratch:
    """The scratch arrays of a batch, allocated on first use and kept with the batch."""
    sc = batch.scratch.get("offload")
    if sc is None:
        sc = batch.scratch["offload"] = OffloadScratch.alloc(batch.capacity)
    return sc


def nf_flow_offload_hook(
    batch: PacketBatch,
    flowtable: Flowtable | FlowtableViews,
    now_ns: int,
    bulk: bool = True,
    scratch: OffloadScratch | None = None,
) -> OffloadResult:
    """Run the flowtable fast path over batch[0:n].

    In: packets with verdict FLOW_FORWARD (others are skipped and left alone). Out: hits keep
    FLOW_FORWARD, are rewritten (NAT, TTL, checksums, link-layer header), have oif = out.ifidx and
    flow = entry index, and sit in transmit groups; misses and exceptions get a SLOW_* verdict and
    keep their bytes, head and len (flow = entry index after a lookup hit, else -1).
    now_ns is packet time for timeout refresh.
    """
    table = flowtable.cols if isinstance(flowtable, Flowtable) else flowtable
    if scratch is not None:
        if scratch.group.shape[0] < batch.n:  # the kernels do not bounds-check
            raise ValueError(f"scratch for {scratch.group.shape[0]} packets, batch has {batch.n}")
        sc = scratch
    else:
        sc = scratch_for(batch)
    # the plain tuples and the entry point, kept with the batch for the next call with this table
    c = batch.scratch.get("offload_call")
    if c is None or c[0] is not table or c[1] is not sc:
        args = (batch.cols, batch.n, tuple(table), tuple(sc), int(now_ns), bool(bulk))
        entry = jit_entry(_nf_flow_offload_hook, args)
        c = batch.scratch["offload_call"] = (table, sc, args[2], args[3], entry)
    fwd, slow, ng = c[4](batch.cols, batch.n, c[2], c[3], int(now_ns), bool(bulk))
    return OffloadResult(fwd, slow, ng, sc.group, sc.group_start, sc.group_count, sc.order)


def jit_entry(kernel, args: tuple):
    """kernel's compiled entry point for the types of args (loaded from numba's cache or compiled
    now); the kernel itself with the JIT off. No Linux counterpart.

    Why: numba's dispatcher types every argument on every call, and a tuple of arrays costs it more
    than the same arrays one by one; the entry point only unboxes. It does not check types: resolve
    it for argument tuples built once and call it with arguments of the same types (a PacketBatch's
    columns have the dtypes PacketBatch gives them).

    Resolved once per kernel and argument types (_type_key): a table that grows gives new arrays of
    the same types, and typing them again with numba's typeof cost a third of a millisecond inside
    the poll that grew it.
    """
    compile_ = getattr(kernel, "compile", None)
    if compile_ is None:  # NUMBA_DISABLE_JIT=1
        return kernel
    key = _type_key(args)
    entry = _RESOLVED.get((kernel, key)) if key is not None else None
    if entry is None:
        entry = compile_(tuple(kernel.typeof_pyval(a) for a in args))
        if key is not None:
            _RESOLVED[(kernel, key)] = entry
    return entry


_RESOLVED: dict = {}
_I64_MIN, _I64_END = -(1 << 63), 1 << 63


def _type_key(a):
    """What numba's typeof makes of a, as a hashable key (None: a value it does not cover): an
    array's dtype, dimensions, layout, mutability and alignment; a scalar's type (a Python int's by
    its range, as typeof picks int64 or uint64); a tuple's elements'."""
    t = type(a)
    if t is np.ndarray:
        f = a.flags
        return (a.dtype, a.ndim, f.c_contiguous, f.f_contiguous, f.writeable, f.aligned)
    if t is tuple:
        keys = tuple(_type_key(x) for x in a)
        return None if None in keys else (tuple, keys)
    if t is int:
        return (int, _I64_MIN <= a < _I64_END)
    if t is bool or t is float or isinstance(a, np.generic):
        return t
    return None


def warm(capacity: int = 4) -> None:
    """Compile (or load from cache) every kernel on a tiny batch of the real dtypes."""
    ft = Flowtable("warm", capacity=4)
    nf_flow_offload_hook(PacketBatch(capacity), ft, 0)
