"""Prefetching for the compiled classic lane: the conntrack lines a packet will touch, fetched while
the packets before it are processed.

No Linux counterpart (the kernel walks one skb at a time; its NAPI loops prefetch the next skb's
data). Each of a new connection's steps misses the caches on its own line, one after the other: the
index slot of its tuple (nf_ct_find), of the inverted tuple (NAT's null binding at PREROUTING looks
it up), the by-source bucket (find_appropriate_src), the row it is given; an established packet's
are its tuple's slot and its entry's rows. At the conntrack limit, early_drop's eviction adds the
victim's: its rows, the index slots of both its tuples, its by-source links and bucket.
classic_lane_batch runs three stages ahead of the packet it processes, as the flowtable's hook does
(flowtable/ip.py › nf_flow_offload_ip_range), each needing what the one before fetched:

1. packet j + 3D is hashed and its slots and by-source bucket prefetched;
2. packet j + 2D has its entry's rows prefetched: the entry its slot's tag names, or the row off the
   free stack a new connection will take; with the table at its limit, the rows of the first entry
   in its home slots, which early_drop will most likely evict and whose row the new connection then
   takes (that victim kept in the ring);
3. packet j + D, if it has a victim: the index slots of the victim's two tuples and its by-source
   bucket, hashed from the key rows stage 2 fetched.

Only hints: nothing here changes a table or a result, and a prefetch never faults (a row the hash
names may be stale by the time the packet comes; the lane then misses as it would have anyway).
IPv4 TCP/UDP only, the lane's common case.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flowpath.flowtable.ip import FLOW_FORWARD, nf_flow_tuple_ip_words
from flowpath.flowtable.key import (
    IDX_EMPTY,
    IDX_TOMBSTONE,
    flow_offload_hash_ipv4,
    flow_offload_probe_tag,
    ports_dst,
    ports_src,
    record_entry,
)
from flowpath.flowtable.prefetch import prefetch
from flowpath.inet.classic_lane_state import CFG_EVICT_SLOTS, CFG_MAX_ENTRIES
from flowpath.netfilter.ct_layout import CT_HOT_ROW, CT_PROTO
from flowpath.netfilter.nf_conntrack_table import CTR_FREE_TOP, CTR_NCONFIRMED, hash_conntrack
from flowpath.netfilter.nf_nat_core import nat_src_bucket, nf_nat_bysource_bucket
from flowpath.packet import layout as L
from flowpath.packet.csum import ld16

PF_DISTANCE = 2  # packets between the stages (D above)
PF_RING = 8  # packets kept: a power of two > 3 * PF_DISTANCE
PF_RING_WORDS = 2 * PF_RING  # the ring: each packet's tuple hash, then each one's likely victim
HOT_LINE_WORDS = 8  # a hot row's int64 words per 64-byte cache line


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def lane_prefetch_slots(pk, i, j, ct, ring):
    """Stage 1 for packet i, the batch's j-th for the lane: the index slots of its tuple and of the
    inverted tuple, and its by-source bucket; its tuple's hash into ring (-1: not IPv4 TCP/UDP)."""
    data, head, length = pk[0], pk[1], pk[2]
    ri = j & (PF_RING - 1)
    ring[ri] = -1
    h0, n = np.int64(head[i]), np.int64(length[i])
    f = data[i]
    if n < L.ETH_HLEN + L.IPH.size or ld16(f, h0 + 12) != L.ETH_P_IP:
        return
    r, proto, saddr, daddr, ports = nf_flow_tuple_ip_words(f, h0 + L.ETH_HLEN, n - L.ETH_HLEN)
    if r != FLOW_FORWARD:
        return
    index, seed, mask = ct[0][0], ct[0][5], ct[0][3]
    z = np.int64(0)
    h = flow_offload_hash_ipv4(z, proto, saddr, daddr, ports, z, z, seed)  # a plain key: no encap term
    prefetch(index, h & mask)
    inv = (ports_dst(ports) << 16) | ports_src(ports)
    prefetch(index, flow_offload_hash_ipv4(z, proto, daddr, saddr, inv, z, z, seed) & mask)
    bhead = ct[7][0]
    prefetch(bhead[nat_src_bucket(bhead, proto, saddr, z, z, z, ports_src(ports), seed)], 0)
    ring[ri] = h


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def lane_prefetch_rows(j, ct, ring, ahead):
    """Stage 2 for the lane's j-th packet: the rows of the entry its slot's tag names; with none, the rows the
    free stack will give it, if the `ahead` packets before it open connections too; at the limit, the
    likely victim's rows and by-source links, the victim kept in the ring for stage 3."""
    ri = j & (PF_RING - 1)
    ring[PF_RING + ri] = -1
    h = ring[ri]
    if h < 0:
        return
    index, key, hot, mask, maxp = ct[0][0], ct[0][1], ct[0][2], ct[0][3], ct[0][4]
    e = flow_offload_probe_tag(index, mask, maxp, h)
    free, ctr, cfg = ct[6][2], ct[6][3], ct[9]
    if e >= 0:
        r = e >> 1
    elif ctr[CTR_NCONFIRMED] >= cfg[CFG_MAX_ENTRIES]:  # early_drop's likely victim (nf_ct_early_drop_slot)
        r, slot = -1, h & mask
        for _ in range(min(cfg[CFG_EVICT_SLOTS], mask + 1)):
            rec = index[slot]
            if rec != IDX_EMPTY and rec != IDX_TOMBSTONE:
                r = record_entry(rec) >> 1
                break
            slot = (slot + 1) & mask
        if r < 0:
            return
        prefetch(key[2 * r + 1], 0)
        for w in range(2 * HOT_LINE_WORDS, CT_HOT_ROW, HOT_LINE_WORDS):  # the eviction zeroes the whole row
            prefetch(hot[r], w)
        prefetch(ct[7][1][r], 0)  # its by-source links, which may straddle two lines
        prefetch(ct[7][1][r], 2)
        ring[PF_RING + ri] = r
    else:
        top = ctr[CTR_FREE_TOP] - 1 - ahead
        if top < 0:
            return
        r = free[top]
        prefetch(key[2 * r + 1], 0)
    prefetch(key[2 * r], 0)
    prefetch(hot[r], 0)
    prefetch(hot[r], CT_PROTO)  # the protocol's state starts on the second line


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def lane_prefetch_victim(j, ct, ring):
    """Stage 3 for the lane's j-th packet: what early_drop's eviction of its likely victim touches past
    the victim's rows, found from its key rows: the index slots of both tuples (nf_ct_hash_remove) and
    its by-source bucket (nf_nat_bysource_del)."""
    r = ring[PF_RING + (j & (PF_RING - 1))]
    if r < 0:
        return
    index, key, mask, seed = ct[0][0], ct[0][1], ct[0][3], ct[0][5]
    prefetch(index, hash_conntrack(key[2 * r], seed) & mask)
    prefetch(index, hash_conntrack(key[2 * r + 1], seed) & mask)
    bhead = ct[7][0]
    prefetch(bhead[nf_nat_bysource_bucket(bhead, key, 2 * r, seed)], 0)


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def lane_prefetch_step(pk, idx, t, ct, ring):
    """The pipeline's step before the lane's packet t (from t = -3D, filling it): each stage for its
    packet, if that one is in the batch."""
    m, d = idx.shape[0], PF_DISTANCE
    if 0 <= t + 3 * d < m:
        lane_prefetch_slots(pk, idx[t + 3 * d], t + 3 * d, ct, ring)
    if 0 <= t + 2 * d < m:
        lane_prefetch_rows(t + 2 * d, ct, ring, 2 * d + min(t, 0))  # the packets before it still to run
    if 0 <= t + d < m:
        lane_prefetch_victim(t + d, ct, ring)
