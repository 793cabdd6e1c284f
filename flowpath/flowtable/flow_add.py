"""flow_offload_add's insertion and flow_offload_del, compiled: one flow's two entries into and out
of a flowtable's arrays, and GC's choice of the flows to delete.

Linux: net/netfilter/nf_flow_table_core.c › flow_offload_add (both tuplehashes into the rhashtable;
-EEXIST when a tuple is offloaded already). One implementation for both callers: the Python owner
(flowpath/flowtable/core.py › Flowtable.flow_offload_add builds the rows from FlowTuple and
FlowRoute, and grows the table or rebuilds its index when this says so) and the compiled classic lane
(flowpath/inet/classic_lane_offload.py, which builds the rows from the conntrack entry and punts the
packet to the Python path on any result but a flow id).

The table's arrays, as `fa`: (index, key, val, nat6, used, xfrm_sa, nexthop, free, ctr, ct_row)
  free    int64[cap / 2]  the free flow ids, a stack: ctr[FT_FREE_TOP] of them, the next on top
  ctr     int64[FT_CTR_WORDS]  the counts below
  ct_row  int64[cap / 2, 2]  the conntrack row of each flow and that row's seq (-1: none given)
fp: int64[5], the FP_* words below. The new rows, as `ent`: (ek uint32[2, KEY_ROW] key rows
with their V_FLAGS word, ev int64[2, VAL_ROW], e6 uint8[2, NAT6_ROW], nh uint32[2, NH_ROW], xs
int64[2] XMIT_XFRM SA or -1, cref int64[2] (conntrack row, seq)); index 0 the ORIGINAL direction.
"""

from __future__ import annotations

from numba import njit

from flowpath.flowtable.key import (
    F_TEARDOWN,
    V_FLAGS,
    V_TIMEOUT,
    flow_index_insert,
    flow_index_remove,
    flow_offload_hash,
    flow_offload_probe,
)

# ctr words
FT_NUSED = 0  # entries in use
FT_NTOMB = 1  # tombstones in the index
FT_FREE_TOP = 2  # free flow ids on the stack
FT_NXFRM = 3  # entries in use with XMIT_XFRM
FT_NEIGH_STALE = 4  # 1: the compiled lane added flows since the owner last counted its neighbours
FT_CTR_WORDS = 8
# fp words: (max_probes, seed, tun_hash), then the offload timeouts that the lane and the GC read
FP_MAX_PROBES, FP_SEED, FP_TUN_HASH, FP_TIMEOUT_TCP, FP_TIMEOUT_UDP = range(5)
# results besides a flow id; FLOW_ADD_FULL (-1) and FLOW_ADD_EXISTS (-2) are core.py's
FLOW_ADD_EXISTS = -2  # a tuple is offloaded already
FLOW_ADD_NO_FREE = -3  # no free flow id: the owner grows the table
FLOW_ADD_REBUILD = -4  # two more records would fill the index past 3/4: the owner rebuilds it
FLOW_ADD_PROBE = -5  # no free slot within max_probes of a home slot (bad luck): the owner tries a larger index


@njit(cache=True, nogil=True, _nrt=False)
def flow_offload_add_rows(fa, fp, ent):
    """Insert the flow whose rows are `ent`; its flow id, or a FLOW_ADD_* result with the table as it
    was (a tombstone aside, when the second entry found no slot after the first took one)."""
    index, key, val, nat6, used, xfrm_sa, nexthop, free, ctr, ct_row = fa
    ek, ev, e6, nh, xs, cref = ent
    max_probes, seed, tun_hash = fp[FP_MAX_PROBES], fp[FP_SEED], fp[FP_TUN_HASH]
    mask = index.shape[0] - 1
    h0 = flow_offload_hash(ek[0], 0, seed, tun_hash)
    h1 = flow_offload_hash(ek[1], 0, seed, tun_hash)
    if (flow_offload_probe(index, key, mask, max_probes, ek[0], 0, h0, tun_hash) >= 0
            or flow_offload_probe(index, key, mask, max_probes, ek[1], 0, h1, tun_hash) >= 0):  # fmt: skip
        return FLOW_ADD_EXISTS
    top = ctr[FT_FREE_TOP]
    if top == 0:
        return FLOW_ADD_NO_FREE
    if (ctr[FT_NUSED] + ctr[FT_NTOMB] + 2) * 4 > (mask + 1) * 3:
        return FLOW_ADD_REBUILD
    fid = free[top - 1]
    e0 = 2 * fid
    r0 = flow_index_insert(index, mask, max_probes, h0, e0)
    if r0 == 0:
        return FLOW_ADD_PROBE
    r1 = flow_index_insert(index, mask, max_probes, h1, e0 + 1)
    if r1 == 0:
        ctr[FT_NTOMB] += flow_index_remove(index, mask, max_probes, h0, e0) - (r0 == 2)
        return FLOW_ADD_PROBE
    ctr[FT_FREE_TOP] = top - 1
    for d in range(2):
        e = e0 + d
        for j in range(key.shape[1]):
            key[e, j] = ek[d, j]
        for j in range(val.shape[1]):
            val[e, j] = ev[d, j]
        for j in range(nat6.shape[1]):
            nat6[e, j] = e6[d, j]
        for j in range(nexthop.shape[1]):
            nexthop[e, j] = nh[d, j]
        xfrm_sa[e] = xs[d]
        ctr[FT_NXFRM] += xs[d] >= 0
        used[e] = True
    ctr[FT_NUSED] += 2
    ctr[FT_NTOMB] -= (r0 == 2) + (r1 == 2)
    ct_row[fid, 0], ct_row[fid, 1] = cref[0], cref[1]
    return fid



@njit(cache=True, nogil=True, _nrt=False)
def flow_offload_del_rows(fa, fp, fid, neigh_counted):
    """flow_offload_del of flow fid on the arrays: both entries out of the index, freed, the id back
    on the free stack. neigh_counted 0: the owner's neighbour counts are left to be counted again
    (FT_NEIGH_STALE), as after the lane's adds; 1: the owner takes the entries off them itself."""
    index, key, val, nat6, used, xfrm_sa, nexthop, free, ctr, ct_row = fa
    mask = index.shape[0] - 1
    for e in range(2 * fid, 2 * fid + 2):
        if not used[e]:
            continue
        h = flow_offload_hash(key[e], 0, fp[FP_SEED], fp[FP_TUN_HASH])
        ctr[FT_NTOMB] += flow_index_remove(index, mask, fp[FP_MAX_PROBES], h, e)
        used[e] = False
        ctr[FT_NUSED] -= 1
        ctr[FT_NXFRM] -= xfrm_sa[e] >= 0
        xfrm_sa[e] = -1
        if nexthop[e, 0] and not neigh_counted:
            ctr[FT_NEIGH_STALE] = 1
        for j in range(nexthop.shape[1]):
            nexthop[e, j] = 0
    ct_row[fid, 0], ct_row[fid, 1] = -1, -1
    free[ctr[FT_FREE_TOP]] = fid
    ctr[FT_FREE_TOP] += 1


@njit(cache=True, nogil=True, _nrt=False)
def flow_offload_gc_dead(fa, now_ns, out):
    """nf_flow_offload_gc_step's choice: the flows in use that expired (both directions' timeouts
    passed) or are torn down, marked TEARDOWN and written to out (ascending); returns how many."""
    key, val, used = fa[1], fa[2], fa[4]
    n = 0
    for fid in range(used.shape[0] // 2):
        e = 2 * fid
        if not used[e]:
            continue
        expired = max(val[e, V_TIMEOUT], val[e + 1, V_TIMEOUT]) - now_ns <= 0
        if expired or key[e, V_FLAGS] & F_TEARDOWN:
            key[e, V_FLAGS] |= F_TEARDOWN
            key[e + 1, V_FLAGS] |= F_TEARDOWN
            out[n] = fid
            n += 1
    return n
