"""Sets the packet path updates, in arrays: one store for the compiled VM and the closures.

Linux: net/netfilter/nft_set_hash.c › nft_rhash_lookup, nft_rhash_update, nft_rhash_remove (a hash
table of exact keys) and nft_rhash_gc (expired elements taken out); nft_dynset.c › nft_dynset_eval and
nft_dynset_new (the set's size, the element's timeout, its expressions cloned from the statement's: a
limit and a counter, nft_set_elem_update_expr in their order); nf_tables_api.c › nft_set_elem_expired.

The arrays (flat; per set a row of dsets, its slots and key bytes a run of dslot and dkey):
    dsets  int64[nsets, DS_COLS]   DS_KLEN key bytes, DS_CAP slots (a power of 2), DS_SLOT0 first slot,
                                   DS_KEY0 first key byte, DS_COUNT elements (expired ones until GC, as
                                   set->nelems), DS_USED live + deleted slots, DS_SIZE the size limit,
                                   DS_NEXT_EXP the earliest deadline (a bound: GC runs only after it)
    dslot  int64[nslots, SL_COLS]  SL_STATE (SL_EMPTY, SL_LIVE, SL_DEAD), SL_EXPIRES (0: never), SL_LIMIT the
                                   element limit's template row in `limits` (-1: none), SL_TOKENS/SL_LAST its
                                   bucket, SL_COUNTER (0 none, 1 after the limit, 2 before it), SL_PACKETS,
                                   SL_BYTES, SL_PY (1: statements only the closures run, in SetHash.py_stmts)
    dkey   uint8[...]              the keys as the registers hold them for a lookup (big-endian components
                                   at their register offsets: nft_compile_expr.to_big_endian's layout)
    limits int64[n, LIM_COLS]      nft_limit.py's rows: OP_LIMIT's buckets and the element templates
Open addressing with linear probing; deleted slots stay dead until the table is rebuilt.

What the packet path writes is logged first in an undo log (int64[UNDO_MAX + 1, UNDO_W], undo[0, 0] the
count; a log with no rows logs nothing): a VM run that punts, or a lane packet punted after its chains ran,
is undone (nft_dyn_undo), so the closures that take the packet again find every set and bucket as it was.
Taking expired elements out is not logged: a lookup does not find them either way.
The table grows outside compiled code: an insert that would fill it past 3/4 answers DYN_GROW (the VM punts),
and the closures' SetHash.grow (nft_set_hash_store.py) rebuilds the arrays (the VM's programs and the lane's
arguments follow).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flowpath.netfilter.nft_limit import LIM_COLS, LIM_LAST, LIM_TOKENS, nft_limit_eval

DS_KLEN, DS_CAP, DS_SLOT0, DS_KEY0, DS_COUNT, DS_USED, DS_SIZE, DS_NEXT_EXP = range(8)
DS_COLS = 8
SL_STATE, SL_EXPIRES, SL_LIMIT, SL_TOKENS, SL_LAST, SL_COUNTER, SL_PACKETS, SL_BYTES, SL_PY = range(9)
SL_COLS = 9
SL_EMPTY, SL_LIVE, SL_DEAD = 0, 1, 2
NFT_DYNSET_OP_ADD, NFT_DYNSET_OP_UPDATE, NFT_DYNSET_OP_DELETE = 0, 1, 2  # uapi nf_tables.h
DYN_F_PY = 4  # op flag: the caller is the closures (an element with SL_PY is theirs to run)
DYN_F_PYSTMT = 8  # op flag: a new element gets statements only the closures run (SL_PY)
# nft_dynset_eval's answers besides a slot (>= 0: the rule goes on, the element's)
DYN_BREAK, DYN_GROW, DYN_PUNT, DYN_DELETED = -1, -2, -3, -4
UNDO_SLOT, UNDO_DSET, UNDO_LIMIT = 1, 2, 3
UNDO_MAX = 32
UNDO_W = 2 + max(SL_COLS, DS_COLS, LIM_COLS)
NEVER = np.iinfo(np.int64).max
DYNSET_SIZE_DEFAULT = 65535  # nft's size for a dynamic set or meter without one


@njit(cache=True, nogil=True)
def undo_log(undo, kind, idx, row):
    """Save row (of dslot, dsets or limits) before it is written; False: the log is full (punt)."""
    if undo.shape[0] == 0:
        return True
    n = undo[0, 0]
    if n >= UNDO_MAX:
        return False
    e = n + 1
    undo[e, 0], undo[e, 1] = kind, idx
    for j in range(row.shape[0]):
        undo[e, 2 + j] = row[j]
    undo[0, 0] = n + 1
    return True


@njit(cache=True, nogil=True, _nrt=False)
def nft_dyn_undo(dyn, undo):
    """Restore what the logged writes changed, newest first, and empty the log."""
    dsets, dslot, _, limits = dyn
    for e in range(undo[0, 0], 0, -1):
        kind, idx = undo[e, 0], undo[e, 1]
        if kind == UNDO_SLOT:
            for j in range(SL_COLS):
                dslot[idx, j] = undo[e, 2 + j]
        elif kind == UNDO_DSET:
            for j in range(DS_COLS):
                dsets[idx, j] = undo[e, 2 + j]
        else:
            for j in range(LIM_COLS):
                limits[idx, j] = undo[e, 2 + j]
    undo[0, 0] = 0


@njit(cache=True, nogil=True)
def _hash(regs, r, klen):
    """FNV-1a over the key. Deviation: nft_rhash_key is jhash with a random seed; which slot an
    element takes is not visible, so any good spread will do."""
    h = np.uint64(0xCBF29CE484222325)
    for i in range(klen):
        h = (h ^ np.uint64(regs[r + i])) * np.uint64(0x100000001B3)
    return np.int64(h >> np.uint64(1))


@njit(cache=True, nogil=True)
def _key_eq(dkey, koff, regs, r, klen):
    for i in range(klen):
        if dkey[koff + i] != regs[r + i]:
            return False
    return True


@njit(cache=True, nogil=True)
def _probe(dsets, dslot, dkey, ds, regs, r):
    """(slot holding the key, live or expired, -1: none; first free slot a new element may take)."""
    klen, cap, s0, k0 = dsets[ds, DS_KLEN], dsets[ds, DS_CAP], dsets[ds, DS_SLOT0], dsets[ds, DS_KEY0]
    i = _hash(regs, r, klen) & (cap - 1)
    free = -1
    for _ in range(cap):
        sl = s0 + i
        st = dslot[sl, SL_STATE]
        if st == SL_EMPTY:
            return -1, sl if free < 0 else free
        if st == SL_LIVE:
            if _key_eq(dkey, k0 + i * klen, regs, r, klen):
                return sl, free
        elif free < 0 and dslot[sl, SL_PY] == 0:  # a dead slot the closures keep statements for waits
            free = sl
        i = (i + 1) & (cap - 1)
    return -1, free


@njit(cache=True, nogil=True)
def _expired(dslot, sl, now_ns):
    t = dslot[sl, SL_EXPIRES]
    return t != 0 and t <= now_ns  # nft_set_elem_expired


@njit(cache=True, nogil=True)
def nft_rhash_lookup(dsets, dslot, dkey, ds, regs, r, now_ns):
    """nft_rhash_lookup: the live, unexpired element with the key at regs[r], or -1."""
    sl, _ = _probe(dsets, dslot, dkey, ds, regs, r)
    if sl >= 0 and _expired(dslot, sl, now_ns):
        return -1
    return sl


@njit(cache=True, nogil=True)
def nft_rhash_gc(dsets, dslot, ds, now_ns):
    """nft_rhash_gc: expired elements out (not logged: see the module); DS_NEXT_EXP made exact."""
    s0, nxt = dsets[ds, DS_SLOT0], NEVER
    for sl in range(s0, s0 + dsets[ds, DS_CAP]):
        if dslot[sl, SL_STATE] == SL_LIVE and dslot[sl, SL_EXPIRES] != 0:
            if dslot[sl, SL_EXPIRES] <= now_ns:
                dslot[sl, SL_STATE] = SL_DEAD
                dsets[ds, DS_COUNT] -= 1
            else:
                nxt = min(nxt, dslot[sl, SL_EXPIRES])
    dsets[ds, DS_NEXT_EXP] = nxt


@njit(cache=True, nogil=True)
def _new_elem(dyn, ds, regs, r, sl, stale, timeout_ns, tmpl, cnt, py, now_ns):
    """nft_dynset_new into slot sl (stale: it held this key, expired): key, deadline, cloned statements."""
    dsets, dslot, dkey, _ = dyn
    klen = dsets[ds, DS_KLEN]
    koff = dsets[ds, DS_KEY0] + (sl - dsets[ds, DS_SLOT0]) * klen
    for i in range(klen):
        dkey[koff + i] = regs[r + i]
    if dslot[sl, SL_STATE] == SL_EMPTY:
        dsets[ds, DS_USED] += 1
    if not stale:
        dsets[ds, DS_COUNT] += 1
    dslot[sl, SL_STATE] = SL_LIVE
    dslot[sl, SL_EXPIRES] = now_ns + timeout_ns if timeout_ns else 0
    if timeout_ns:
        dsets[ds, DS_NEXT_EXP] = min(dsets[ds, DS_NEXT_EXP], now_ns + timeout_ns)
    dslot[sl, SL_LIMIT], dslot[sl, SL_TOKENS], dslot[sl, SL_LAST] = tmpl, 0, -1  # nft_limit_clone: full
    dslot[sl, SL_COUNTER], dslot[sl, SL_PACKETS], dslot[sl, SL_BYTES] = cnt, 0, 0
    dslot[sl, SL_PY] = py


@njit(cache=True, nogil=True, _nrt=False)
def nft_dynset_eval(dyn, ds, regs, r, op, timeout_ns, tmpl, cnt, now_ns, length, undo):
    """nft_dynset_eval for the key at regs[r] in set ds (dyn: dsets, dslot, dkey, limits).

    op         NFT_DYNSET_OP_* with DYN_F_* flags
    timeout_ns the element's timeout (the statement's, else the set's; 0: none)
    tmpl, cnt  a new element's limit (its template's row in limits, -1: none) and counter (SL_COUNTER)
    length     skb->len, for the element's counter and a bytes limit
    undo       the undo log (see the module)
    Returns the element's slot (the rule goes on), DYN_DELETED (it goes on), DYN_BREAK (a full set, or
    the element's limit over its rate), DYN_GROW (the table must grow first) or DYN_PUNT (the undo log
    is full, or the element has statements only the closures run). Nothing is written unless a slot or
    DYN_DELETED is returned, or DYN_BREAK for a limit over its rate (its bucket still moves, as nft_limit_eval).
    """
    dsets, dslot, _, limits = dyn
    if undo.shape[0] and undo[0, 0] + 2 > UNDO_MAX:
        return DYN_PUNT
    kind = op & 3
    sl, free = _probe(dsets, dslot, dyn[2], ds, regs, r)
    if kind == NFT_DYNSET_OP_DELETE:  # nft_rhash_remove, and the rule goes on
        if sl >= 0:
            if dslot[sl, SL_PY] and not op & DYN_F_PY:
                return DYN_PUNT
            undo_log(undo, UNDO_SLOT, sl, dslot[sl])
            undo_log(undo, UNDO_DSET, ds, dsets[ds])
            dslot[sl, SL_STATE] = SL_DEAD
            dsets[ds, DS_COUNT] -= 1
        return DYN_DELETED
    stale = sl >= 0 and _expired(dslot, sl, now_ns)
    if sl >= 0 and dslot[sl, SL_PY] and not op & DYN_F_PY:
        return DYN_PUNT
    if sl < 0 or stale:  # nft_rhash_update: a new element, unless the set is full
        if sl < 0:
            size = dsets[ds, DS_SIZE]
            if size and dsets[ds, DS_COUNT] >= size and now_ns >= dsets[ds, DS_NEXT_EXP]:
                nft_rhash_gc(dsets, dslot, ds, now_ns)  # what the GC worker would have taken by now
                sl, free = _probe(dsets, dslot, dyn[2], ds, regs, r)
            if size and dsets[ds, DS_COUNT] >= size:
                return DYN_BREAK  # nft_dynset_new: atomic_add_unless(&set->nelems, 1, set->size) failed
            if free < 0 or (
                dslot[free, SL_STATE] == SL_EMPTY and (dsets[ds, DS_USED] + 1) * 4 > dsets[ds, DS_CAP] * 3
            ):
                return DYN_GROW
            sl = free
        undo_log(undo, UNDO_SLOT, sl, dslot[sl])
        undo_log(undo, UNDO_DSET, ds, dsets[ds])
        _new_elem(dyn, ds, regs, r, sl, stale, timeout_ns, tmpl, cnt, 1 if op & DYN_F_PYSTMT else 0, now_ns)
    else:
        undo_log(undo, UNDO_SLOT, sl, dslot[sl])
        if kind == NFT_DYNSET_OP_UPDATE and dslot[sl, SL_EXPIRES] != 0:  # NFT_SET_EXT_TIMEOUT: refreshed
            dslot[sl, SL_EXPIRES] = now_ns + timeout_ns
    # nft_set_elem_update_expr: the element's expressions in order, until one breaks
    if dslot[sl, SL_COUNTER] == 2:
        dslot[sl, SL_PACKETS] += 1
        dslot[sl, SL_BYTES] += length
    t = dslot[sl, SL_LIMIT]
    if t >= 0:
        over, dslot[sl, SL_TOKENS], dslot[sl, SL_LAST] = nft_limit_eval(
            limits, t, dslot[sl, SL_TOKENS], dslot[sl, SL_LAST], now_ns, length
        )
        if over:
            return DYN_BREAK
    if dslot[sl, SL_COUNTER] == 1:
        dslot[sl, SL_PACKETS] += 1
        dslot[sl, SL_BYTES] += length
    return sl


@njit(cache=True, nogil=True, _nrt=False)
def nft_limit_run(limits, row, now_ns, length, undo):
    """OP_LIMIT: nft_limit_eval on a limit's own bucket, logged. 1: over (the rule breaks), 0: not, -1:
    the undo log is full (punt)."""
    if not undo_log(undo, UNDO_LIMIT, row, limits[row]):
        return -1
    over, limits[row, LIM_TOKENS], limits[row, LIM_LAST] = nft_limit_eval(
        limits, row, limits[row, LIM_TOKENS], limits[row, LIM_LAST], now_ns, length
    )
    return 1 if over else 0


@njit(cache=True, nogil=True, _nrt=False)
def nft_rhash_move(old, od, new, nd, now_ns, moved):
    """Every live, unexpired element of old's set od into new's set nd (a rebuilt table), slot columns
    and key as they were; moved int64[old slots]: the new slot of each old one (-1: not moved)."""
    odsets, odslot, odkey, _ = old
    ndsets, ndslot, ndkey, _ = new
    klen, s0, k0 = odsets[od, DS_KLEN], odsets[od, DS_SLOT0], odsets[od, DS_KEY0]
    nxt = NEVER
    for i in range(odsets[od, DS_CAP]):
        sl = s0 + i
        moved[i] = -1
        if odslot[sl, SL_STATE] != SL_LIVE or _expired(odslot, sl, now_ns):
            continue
        _, free = _probe(ndsets, ndslot, ndkey, nd, odkey, k0 + i * klen)
        for j in range(SL_COLS):
            ndslot[free, j] = odslot[sl, j]
        koff = ndsets[nd, DS_KEY0] + (free - ndsets[nd, DS_SLOT0]) * klen
        for j in range(klen):
            ndkey[koff + j] = odkey[k0 + i * klen + j]
        moved[i] = free
        ndsets[nd, DS_COUNT] += 1
        ndsets[nd, DS_USED] += 1
        if ndslot[free, SL_EXPIRES]:
            nxt = min(nxt, ndslot[free, SL_EXPIRES])
    ndsets[nd, DS_NEXT_EXP] = nxt
