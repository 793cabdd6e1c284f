"""The conntrack hash table: rows, the tuple keys, the hash index, the compiled lookup.

Linux: net/netfilter/nf_conntrack_core.c (hash_conntrack_raw, ____nf_conntrack_find,
__nf_conntrack_hash_insert, nf_ct_delete_from_lists, __nf_conntrack_alloc / nf_conntrack_free,
early_drop's bucket walk). Linux allocates one struct nf_conn per connection and chains its two
tuplehash members into the buckets; here a connection is row r of structure-of-arrays:

    key   uint32[2*cap, 16]  the tuple of direction d of row r in key row ed = 2*r + d, in the
                             flowtable key layout (flowpath/flowtable/key.py; K_IIFIDX = the zone, 0)
    hot   int64[cap, 32]     what a packet reads and writes (flowpath/netfilter/ct_layout.py)
    state uint8[cap]         CT_ROW_FREE, CT_ROW_UNCONFIRMED (allocated, on a packet only) or
                             CT_ROW_CONFIRMED (in the index, reachable by both tuples)
    seq   int64[cap]         insertion order of confirmed rows (conntrack -L lists in this order)
    free  int64[cap]         the free rows, a stack (its top at ctr[CTR_FREE_TOP]; lowest row on top)
    viewed uint8[cap]        1 while a Python view of the row (NfConn) exists: the compiled lane
                             leaves such a row to Python rather than free it under the view
    ctr   int64[CTR_WORDS]   the counts: confirmed rows, index tombstones, next seq, free stack top

Rows are allocated, freed, indexed and unlinked by the compiled functions below, which the Python
owner and the compiled classic lane (flowpath/inet/classic_lane.py) both call: one implementation.

The index is the flowtable's open-addressing index (flow_offload_hash, flow_index_insert/remove,
flow_offload_probe) over the key rows, with the tunnel words left out (tun_hash 1) and a random seed,
as Linux seeds nf_conntrack_hash_rnd. Only this table adds or removes rows and index records.
"""

from __future__ import annotations

import secrets
import sys

import numpy as np
from numba import njit

from flowpath.flowtable.hook import jit_entry
from flowpath.flowtable.key import (
    IDX_EMPTY,
    IDX_TOMBSTONE,
    K_DADDR,
    K_ENCAP,
    K_PORTS,
    K_PROTO,
    K_SADDR,
    KEY_ROW,
    flow_index_insert,
    flow_index_remove,
    flow_index_remove_at,
    flow_offload_hash,
    flow_offload_probe,
    flow_proto,
    record_entry,
)
from flowpath.netfilter.constants import IPS_ASSURED, IPS_OFFLOAD
from flowpath.netfilter.ct_layout import CT_HOT_ROW, CT_STATUS, CT_TIMEOUT
from flowpath.packet.csum import ld16, ld32
from flowpath.packet.layout import ICMPH, IP6H, IPH, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP
from flowpath.packet.pages import commit_pages, zeros_reserved

CT_ROW_FREE, CT_ROW_UNCONFIRMED, CT_ROW_CONFIRMED = 0, 1, 2
CT_MAX_PROBES = 32
CT_INDEX_SLOTS = 8  # index slots per initial row: 4 per tuple, as the flowtable's (load 0.25 when full)
CT_TUN_HASH = 1  # flow_offload_hash / flow_key_equal: no tunnel words in a conntrack key
NF_CT_EVICTION_RANGE = 8  # nf_conntrack_core.c: buckets early_drop looks at
CT_INITIAL_ROWS = 1024
# ed results of nf_ct_find (>= 0: found and live)
NF_CT_NOT_FOUND = -1  # <= -2: found but expired, at entry -2 - result (nf_ct_find_expired_ed)
# ctr words
CTR_NCONFIRMED, CTR_NTOMB, CTR_NEXT_SEQ, CTR_FREE_TOP, CTR_WORDS = 0, 1, 2, 3, 4


# ---- the key ----------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def nf_ct_tuple_key(out, l3, l4proto, saddr, daddr, sport, dport, type_, code):
    """Write the conntrack key of a tuple into out (uint32[16]).

    Linux: nf_ct_get_tuple's per-protocol pkt_to_tuple. l3 4 or 6; saddr, daddr the address words as
    4-tuples of int64 (IPv4 in word 0, the others 0; wire-order values as ld32 returns them); sport, dport
    host-order ports (ICMP/ICMPv6: the echo id in sport); type_, code the ICMP type and code.
    TCP and UDP keep their ports; ICMP/ICMPv6 id << 16 | id, and type << 8 | code in K_ENCAP; every
    other protocol is tracked on addresses alone (conntrack_proto.py's Deviation): ports 0.
    """
    out[:] = 0
    out[K_PROTO] = flow_proto(l3, l4proto)
    for w in range(4):
        out[K_SADDR + w] = saddr[w]
        out[K_DADDR + w] = daddr[w]
    if l4proto == IPPROTO_TCP or l4proto == IPPROTO_UDP:
        out[K_PORTS] = (sport << 16) | dport
    elif l4proto == IPPROTO_ICMP or l4proto == IPPROTO_ICMPV6:
        out[K_PORTS] = (sport << 16) | sport
        out[K_ENCAP] = (type_ << 8) | code


@njit(cache=True, nogil=True)
def nf_ct_pkt_key(out, buf, nhoff, thoff, l3, l4proto):
    """The key of the packet in buf (uint8[n]) whose IP header is at nhoff and whose L4 header
    (protocol l4proto) is at thoff, into out (uint32[16]); 0 when the L4 header is too short for
    its tuple (no tuple: INVALID), else 1.

    Linux: nf_ct_get_tuple (ipv4_pkt_to_tuple / ipv6_pkt_to_tuple and the l4 pkt_to_tuple); the
    compiled form of conntrack_proto.nf_ct_get_tuple, which the tests hold it to.
    """
    end = buf.shape[0]
    if l4proto == IPPROTO_TCP or l4proto == IPPROTO_UDP:
        if thoff + 4 > end:
            return 0
    elif l4proto == IPPROTO_ICMP or l4proto == IPPROTO_ICMPV6:
        if thoff + ICMPH.size > end:
            return 0
    if l3 == 4:
        z = np.int64(0)
        s = (ld32(buf, nhoff + IPH.saddr), z, z, z)
        d = (ld32(buf, nhoff + IPH.daddr), z, z, z)
    else:
        a, b = nhoff + IP6H.saddr, nhoff + IP6H.daddr
        s = (ld32(buf, a), ld32(buf, a + 4), ld32(buf, a + 8), ld32(buf, a + 12))
        d = (ld32(buf, b), ld32(buf, b + 4), ld32(buf, b + 8), ld32(buf, b + 12))
    sport = dport = type_ = code = 0
    if l4proto == IPPROTO_TCP or l4proto == IPPROTO_UDP:
        sport, dport = ld16(buf, thoff), ld16(buf, thoff + 2)
    elif l4proto == IPPROTO_ICMP or l4proto == IPPROTO_ICMPV6:
        sport, type_, code = ld16(buf, thoff + ICMPH.id), np.int64(buf[thoff]), np.int64(buf[thoff + 1])
    nf_ct_tuple_key(out, l3, l4proto, s, d, sport, dport, type_, code)
    return 1


# ---- lookup -----------------------------------------------------------------------------------
@njit(cache=True, nogil=True, inline="always")
def hash_conntrack(k, seed):
    """The index hash of key k (a uint32[16] row). Linux: hash_conntrack_raw."""
    return flow_offload_hash(k, 0, seed, CT_TUN_HASH)


@njit(cache=True, nogil=True, _nrt=False)  # tuples of arrays: see classic_lane.py
def nf_ct_find(views, k, now_ns):
    """The entry ed (2*row + dir) whose key equals k (uint32[16]), NF_CT_NOT_FOUND (-1) when none.

    Linux: ____nf_conntrack_find. An expired entry is not returned: the result is then -2 - ed
    (<= -2), and the Python owner removes it (nf_ct_gc_expired), as the kernel's lookup does.
    views: Conntrack.views() = (index int64[icap], key uint32[2*cap, 16], hot int64[cap, 32],
    mask icap - 1, max_probes, seed).
    """
    index, key, hot, mask, max_probes, seed = views
    h = hash_conntrack(k, seed)
    e = flow_offload_probe(index, key, mask, max_probes, k, 0, h, CT_TUN_HASH)
    if e < 0:
        return NF_CT_NOT_FOUND
    if hot[e >> 1, CT_TIMEOUT] - now_ns <= 0:  # nf_ct_is_expired
        return -2 - e
    return e


@njit(cache=True, nogil=True, inline="always")
def nf_ct_find_expired_ed(r):
    """The entry an nf_ct_find result <= -2 found expired."""
    return -2 - r


@njit(cache=True, nogil=True, _nrt=False)
def nf_ct_confirm_check(views, r, now_ns):
    """What stands in the way of confirming row r: the ed of a live entry holding one of its tuples
    (the original's first), else an expired one's as -2 - ed (the owner removes it and asks again),
    else NF_CT_NOT_FOUND.

    Linux: __nf_conntrack_confirm's walk of both tuples' chains (nf_ct_key_equal).
    """
    expired = NF_CT_NOT_FOUND
    for d in range(2):
        ed = nf_ct_find(views, views[1][2 * r + d], now_ns)
        if ed >= 0:
            return ed
        if ed < NF_CT_NOT_FOUND and expired == NF_CT_NOT_FOUND:
            expired = ed
    return expired


@njit(cache=True, nogil=True, _nrt=False)
def nf_ct_hash_insert(views, r):
    """Index both tuples of row r (key rows 2r, 2r + 1). Returns the tombstones reused (0..2), or -1
    when a tuple found no slot within max_probes (the owner rebuilds the index larger)."""
    index, key, hot, mask, max_probes, seed = views
    reused = 0
    for ed in range(2 * r, 2 * r + 2):
        got = flow_index_insert(index, mask, max_probes, hash_conntrack(key[ed], seed), ed)
        if got == 0:
            return -1
        reused += got == 2
    return reused


@njit(cache=True, nogil=True)
def nf_ct_index_build(views, state):
    """Index every confirmed row (state uint8[cap] == CT_ROW_CONFIRMED) into views' index, emptied
    first; returns how many rows found no slot (0 on success). As flowtable/key.py's flow_index_build,
    over row pairs (its own signature, so the flowtable's stays single)."""
    index = views[0]
    index[:] = IDX_EMPTY
    failed = 0
    for r in range(state.shape[0]):
        if state[r] == CT_ROW_CONFIRMED:
            failed += nf_ct_hash_insert(views, r) < 0
    return failed


@njit(cache=True, nogil=True, _nrt=False)
def nf_ct_hash_remove(views, r):
    """Take row r's two tuples out of the index; returns the change in its tombstones
    (flow_index_remove)."""
    index, key, hot, mask, max_probes, seed = views
    n = 0
    for ed in range(2 * r, 2 * r + 2):
        n += flow_index_remove(index, mask, max_probes, hash_conntrack(key[ed], seed), ed)
    return n


@njit(cache=True, nogil=True, _nrt=False)
def nf_ct_hash_remove_at(views, slot):
    """nf_ct_hash_remove of the row one of whose tuples has its record at slot (early_drop's scan
    found it there): that record taken out where it is, the other tuple's looked up. The index ends
    the same whichever record goes first (a slot is emptied when the records after it up to an empty
    slot are all gone, else tombstoned), so it is the same as nf_ct_hash_remove's, one hash and probe
    run fewer."""
    index, key, hot, mask, max_probes, seed = views
    other = record_entry(index[slot]) ^ 1
    n = flow_index_remove_at(index, mask, slot)
    return n + flow_index_remove(index, mask, max_probes, hash_conntrack(key[other], seed), other)


@njit(cache=True, nogil=True, _nrt=False)
def nf_ct_early_drop_slot(views, k, nslots, now_ns):
    """The index slot, among the nslots from k's home slot, of the first record whose row early_drop
    may evict: expired, or neither ASSURED nor offloaded; -1 when none.

    Linux: early_drop / early_drop_list over NF_CT_EVICTION_RANGE buckets from the new tuple's.
    """
    index, key, hot, mask, max_probes, seed = views
    slot = hash_conntrack(k, seed) & mask
    for _ in range(min(nslots, mask + 1)):
        rec = index[slot]
        if rec != IDX_EMPTY and rec != IDX_TOMBSTONE:
            r = record_entry(rec) >> 1
            if hot[r, CT_TIMEOUT] - now_ns <= 0 or hot[r, CT_STATUS] & (IPS_ASSURED | IPS_OFFLOAD) == 0:
                return slot
        slot = (slot + 1) & mask
    return -1


@njit(cache=True, nogil=True, _nrt=False)
def nf_ct_early_drop_scan(views, k, nslots, now_ns):
    """The row early_drop may evict for key k (nf_ct_early_drop_slot's record's), -1 when none."""
    slot = nf_ct_early_drop_slot(views, k, nslots, now_ns)
    return -1 if slot < 0 else record_entry(views[0][slot]) >> 1


# ---- rows: allocation, confirmation, unlinking (rowv = (state, seq, free, ctr, viewed)) ----------
@njit(cache=True, nogil=True, _nrt=False)
def nf_ct_row_alloc(rowv):
    """A zeroed row off the free stack, now CT_ROW_UNCONFIRMED; -1 when none is free (the Python owner
    grows the table). Linux: __nf_conntrack_alloc."""
    state, seq, free, ctr, viewed = rowv
    top = ctr[CTR_FREE_TOP]
    if top == 0:
        return -1
    r = free[top - 1]
    ctr[CTR_FREE_TOP] = top - 1
    state[r] = CT_ROW_UNCONFIRMED
    return r


@njit(cache=True, nogil=True, _nrt=False)
def nf_ct_row_free(rowv, hot, key, r):
    """Row r (unconfirmed or unlinked) back on the free stack, zeroed. Linux: nf_conntrack_free."""
    state, seq, free, ctr, viewed = rowv
    for j in range(hot.shape[1]):
        hot[r, j] = 0
    for d in range(2):
        for j in range(key.shape[1]):
            key[2 * r + d, j] = 0
    state[r] = CT_ROW_FREE
    viewed[r] = 0
    top = ctr[CTR_FREE_TOP]
    free[top] = r
    ctr[CTR_FREE_TOP] = top + 1


@njit(cache=True, nogil=True, _nrt=False)
def nf_ct_row_confirm(views, rowv, r):
    """Index row r's tuples (__nf_conntrack_hash_insert): CONFIRMED, next in insertion order. Returns
    0, or -1 when a tuple found no slot within max_probes (the row is left CONFIRMED but possibly
    half indexed: the Python owner rebuilds the index larger, the lane unlinks it and punts)."""
    state, seq, free, ctr, viewed = rowv
    state[r] = CT_ROW_CONFIRMED
    seq[r] = ctr[CTR_NEXT_SEQ]
    ctr[CTR_NEXT_SEQ] += 1
    ctr[CTR_NCONFIRMED] += 1
    got = nf_ct_hash_insert(views, r)
    if got < 0:
        return -1
    ctr[CTR_NTOMB] -= got
    return 0


@njit(cache=True, nogil=True, _nrt=False)
def nf_ct_row_unlink(views, rowv, r, slot):
    """Take a confirmed row's tuples out of the index (nf_ct_delete_from_lists): UNCONFIRMED again.
    slot: where the caller found one of its records (early_drop's scan), else -1."""
    state, seq, free, ctr, viewed = rowv
    ctr[CTR_NTOMB] += nf_ct_hash_remove(views, r) if slot < 0 else nf_ct_hash_remove_at(views, slot)
    ctr[CTR_NCONFIRMED] -= 1
    state[r] = CT_ROW_UNCONFIRMED


@njit(cache=True, nogil=True)
def nf_ct_index_has_room(nconfirmed, ntomb, icap, n):
    """Can n more rows be confirmed without the owner rebuilding the index? Records and tombstones
    stay at half the slots or below. The index is sized by the confirmed entries alone, never by
    the rows (which the lane may add ahead of need), so its layout, which early_drop's bucket walk
    sees, is the same whoever confirms."""
    return (2 * (nconfirmed + n) + ntomb) * 2 <= icap


@njit(cache=True, nogil=True)
def nf_ct_index_size(nconfirmed, icap):
    """The index size a rebuild makes room with: icap, or larger until the confirmed tuples (and
    the next one) fill a quarter of it at most."""
    while 2 * (nconfirmed + 1) * 4 > icap:
        icap *= 2
    return icap


# ---- entry points for the Python owner ----------------------------------------------------------
_ENTRIES: dict = {}


def ct_entry(kernel, args: tuple):
    """kernel's compiled entry point for the types of args, resolved once per process: the Python
    owner's calls skip the dispatcher's typing of each argument (half the cost of a call; see
    flowtable/hook.py › jit_entry). Call it only with arguments of those types: an array of another
    dtype or layout raises TypeError (the callers that may see one fall back to the kernel)."""
    e = _ENTRIES.get(kernel)
    if e is None:
        e = _ENTRIES[kernel] = jit_entry(kernel, args)
    return e


# ---- the table --------------------------------------------------------------------------------
def _pow2(n: int) -> int:
    return 1 << max(1, int(n) - 1).bit_length()


class NfConntrackTable:
    """Rows, index and free list of one conntrack table (the storage half of struct net's ct).

    Rows are allocated to an entry when it is created (unconfirmed), indexed on confirmation and freed
    when it dies, or at the end of the packet that created it when that packet did not confirm it.
    The table grows by doubling when no row is free; nf_conntrack_max is the caller's policy (it counts
    confirmed rows, as len() does). `_conn[row]` caches the Python view of a row (conntrack_tuple.NfConn),
    so that a row gives the same object while its entry lives.
    """

    def __init__(self, capacity: int = CT_INITIAL_ROWS, hash_seed: int | None = None, hot_rows: int = 0):
        self.hash_seed = secrets.randbits(32) if hash_seed is None else hash_seed & 0xFFFFFFFF
        cap = _pow2(max(2, capacity))
        self.key = np.zeros((2 * cap, KEY_ROW), np.uint32)
        # hot has rows for hot_rows entries from the start (nf_conntrack_max), so that it does not move
        # when the table grows: the Python views keep pointing into it (rebinding thousands of them cost
        # 5 % of a connection-rate benchmark). np.zeros maps zero pages: untouched rows cost no memory.
        self.hot = np.zeros((_pow2(max(cap, hot_rows)), CT_HOT_ROW), np.int64)
        commit_pages(self.hot[:cap])  # the rows in use, each time the table grows (pages.py)
        # the other row arrays are leading slices of buffers reserved for as many rows: growing up
        # to nf_conntrack_max copies nothing (_grow)
        self._bufs: tuple = ()
        self._reserve(self.hot.shape[0])
        self._take_rows(0, cap)
        self.index = np.zeros(CT_INDEX_SLOTS * cap, np.int64)
        self.ctr = np.zeros(CTR_WORDS, np.int64)
        self.free[:] = np.arange(cap - 1, -1, -1)  # rows, lowest on top
        self.ctr[CTR_FREE_TOP] = cap
        self._set_rowv()
        self._conn: list = [None] * cap
        self._rebuild(self.index.shape[0])
        self._warm()

    def _warm(self) -> None:
        """Load every kernel on this table's arrays now, not in the middle of the first packets."""
        k, v = np.zeros(KEY_ROW, np.uint32), self._views
        ct_entry(nf_ct_tuple_key, (k, 4, IPPROTO_TCP, (0, 0, 0, 0), (0, 0, 0, 0), 0, 0, 0, 0))
        self._pkt_key = ct_entry(nf_ct_pkt_key, (k, np.zeros(64, np.uint8), 0, 20, 4, IPPROTO_TCP))
        self._find_e = ct_entry(nf_ct_find, (v, k, 0))
        self._confirm_check = ct_entry(nf_ct_confirm_check, (v, 0, 0))
        self._early_drop_scan = ct_entry(nf_ct_early_drop_scan, (v, k, 1, 0))
        self._hash_insert = ct_entry(nf_ct_hash_insert, (v, 0))
        self._hash_remove = ct_entry(nf_ct_hash_remove, (v, 0))
        rv = self._rowv
        self._row_alloc = ct_entry(nf_ct_row_alloc, (rv,))
        self._row_free = ct_entry(nf_ct_row_free, (rv, self.hot, self.key, 0))
        self._row_confirm = ct_entry(nf_ct_row_confirm, (v, rv, 0))
        self._row_unlink = ct_entry(nf_ct_row_unlink, (v, rv, 0, 0))
        self._has_room = ct_entry(nf_ct_index_has_room, (0, 0, 8, 1))  # index_make_room's, which the
        self._index_size = ct_entry(nf_ct_index_size, (0, 8))  # lane's first rebuild calls mid-traffic
        for f, args in ((self._pkt_key, (k, np.zeros(64, np.uint8), 0, 20, 4, IPPROTO_TCP)), (self._find_e, (v, k, 0)),
                        (self._confirm_check, (v, 0, 0)), (self._early_drop_scan, (v, k, 1, 0)),
                        (self._hash_remove, (v, 0))):  # fmt: skip
            f(*args)

    @property
    def capacity(self) -> int:
        return int(self.state.shape[0])

    @property
    def nconfirmed(self) -> int:
        return int(self.ctr[CTR_NCONFIRMED])

    @property
    def ntomb(self) -> int:
        return int(self.ctr[CTR_NTOMB])

    def rowv(self) -> tuple:
        """(state, seq, free, ctr, viewed): what the compiled row functions take; a new tuple when the table
        grows (fetch it once per batch, with views())."""
        return self._rowv

    def _set_rowv(self) -> None:
        self._rowv = (self.state, self.seq, self.free, self.ctr, self.viewed)

    def views(self) -> tuple:
        """(index, key, hot, mask, max_probes, seed): what nf_ct_find and the compiled lane take; a
        new tuple when the table grows or its index is rebuilt (fetch it once per batch)."""
        return self._views

    def _set_views(self) -> None:
        self._views = (self.index, self.key, self.hot, self.index.shape[0] - 1, CT_MAX_PROBES, self.hash_seed)

    def rows_in_use(self) -> int:
        """Rows allocated: confirmed entries plus unconfirmed ones still on a packet."""
        return self.capacity - int(self.ctr[CTR_FREE_TOP])

    # ---- rows ---------------------------------------------------------------------------------
    def row_alloc(self) -> int:
        """A zeroed row, now CT_ROW_UNCONFIRMED (Linux: __nf_conntrack_alloc)."""
        if self.ctr[CTR_FREE_TOP] == 0:
            self._grow()
        return int(self._row_alloc(self._rowv))

    def row_free(self, r: int) -> None:
        """Give row r back (Linux: nf_conntrack_free). A Python view of it that someone still holds
        keeps a copy of the row (as a reference keeps a dead nf_conn); one nobody holds just goes."""
        c = self._conn[r]
        if c is not None:
            self._conn[r] = None
            if sys.getrefcount(c) > 2:  # more than `c` and getrefcount's own argument
                c._detach()
            del c
        self._row_free(self._rowv, self.hot, self.key, r)

    def _reserve(self, rows: int) -> None:
        """Buffers for `rows` rows of key, state, seq, viewed and free (pages.zeros_reserved), the
        rows in use copied over."""
        had, self._bufs = bool(self._bufs), (
            zeros_reserved((2 * rows, KEY_ROW), np.uint32), zeros_reserved(rows, np.uint8),
            zeros_reserved(rows, np.int64), zeros_reserved(rows, np.uint8), zeros_reserved(rows, np.int64))
        if had:
            cap = self.capacity
            for a, b in zip(self._bufs, (self.key, self.state, self.seq, self.viewed, self.free), strict=True):
                a[: b.shape[0]] = b
            self._take_rows(cap, cap)

    def _take_rows(self, cap: int, new: int) -> None:
        """Rows cap..new-1 (pages committed) added to those in use: the arrays become the buffers'
        first new rows (key's first 2 * new)."""
        key, state, seq, viewed, free = self._bufs
        self.key, self.state, self.seq, self.viewed, self.free = key[: 2 * new], state[:new], seq[:new], viewed[:new], free[:new]
        commit_pages(self.key[2 * cap :], self.state[cap:], self.seq[cap:], self.viewed[cap:], self.free[cap:])

    def _grow(self) -> None:
        cap = self.capacity
        new = 2 * cap
        if new > self._bufs[1].shape[0]:  # past the rows reserved (nf_conntrack_max's): copied once
            self._reserve(new)
        moved = new > self.hot.shape[0]  # past the rows made for nf_conntrack_max: the views follow
        if moved:
            hot = np.zeros((new, CT_HOT_ROW), np.int64)
            hot[:cap] = self.hot
            self.hot = hot
        commit_pages(self.hot[cap:new])
        top = int(self.ctr[CTR_FREE_TOP])  # the new rows under the free ones: lowest still on top
        self._take_rows(cap, new)
        free = self.free
        free[cap : cap + top] = free[:top].copy()
        free[:cap] = np.arange(new - 1, cap - 1, -1)
        self._conn.extend([None] * cap)
        self.ctr[CTR_FREE_TOP] = cap + top
        self._set_rowv()
        self._set_views()  # the same index: it is sized by confirmed entries (nf_ct_index_size)
        for c in self._conn[:cap] if moved else ():
            if c is not None:
                c._bind(self.hot)

    def _rebuild(self, icap: int) -> None:
        """Rebuild the index at icap slots or more (drops tombstones), as Flowtable._rebuild."""
        while True:
            index = np.zeros(icap, np.int64)
            views = (index, self.key, self.hot, icap - 1, CT_MAX_PROBES, self.hash_seed)
            if nf_ct_index_build(views, self.state) == 0:
                break
            icap *= 2
        self.index = index
        self.ctr[CTR_NTOMB] = 0
        self._set_views()

    # ---- the index ----------------------------------------------------------------------------
    def hash_insert(self, r: int) -> None:
        """Index both tuples of row r (Linux: __nf_conntrack_hash_insert); it becomes CONFIRMED."""
        self.index_make_room()
        if self._row_confirm(self._views, self._rowv, r) < 0:
            self.index_grow()  # a probe run full at load <= 0.5: bad luck

    def index_grow(self) -> None:
        """Rebuild the index twice as large: a tuple found no slot within its probe run."""
        self._rebuild(2 * self.index.shape[0])

    def index_make_room(self) -> None:
        """Rebuild the index (dropping tombstones, larger if need be) unless one more row fits; what
        hash_insert does first, and what the classic lane asks for when it stops at a confirm."""
        c, icap = self.ctr, self.index.shape[0]
        if not self._has_room(int(c[CTR_NCONFIRMED]), int(c[CTR_NTOMB]), icap, 1):
            self._rebuild(self._index_size(int(c[CTR_NCONFIRMED]), icap))

    def hash_remove(self, r: int) -> None:
        """Take both tuples of a confirmed row out of the index (nf_ct_delete_from_lists)."""
        self._row_unlink(self._views, self._rowv, r, -1)

    def find(self, k: np.ndarray, now_ns: int) -> int:
        """nf_ct_find from Python: ed, NF_CT_NOT_FOUND, or <= -2 for an expired entry."""
        return self._find_e(self._views, k, now_ns)

    def early_drop_candidate(self, k: np.ndarray, max_entries: int, now_ns: int) -> int:
        """The row early_drop evicts for a new tuple with key k, or -1.

        Buckets: nf_conntrack_buckets is nf_conntrack_max rounded up to a power of two (Linux's
        default sizing keeps the two equal), so a bucket is index-size / buckets slots, at least one,
        and its chain holds two tuples on average when the table is full, as in Linux.
        """
        return self._early_drop_scan(self._views, k, self.early_drop_slots(max_entries), now_ns)

    def early_drop_slots(self, max_entries: int) -> int:
        """The index slots early_drop looks at: NF_CT_EVICTION_RANGE buckets (early_drop_candidate)."""
        return NF_CT_EVICTION_RANGE * max(1, self.index.shape[0] // _pow2(max(1, max_entries)))

    def confirmed_rows(self) -> np.ndarray:
        """The confirmed rows in insertion order (int64)."""
        rows = np.flatnonzero(self.state == CT_ROW_CONFIRMED)
        return rows[np.argsort(self.seq[rows], kind="stable")]
