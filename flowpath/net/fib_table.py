"""The FIB's lookup side, compiled: route rows, a DIR-16-8-8 trie for IPv4, per-length hashing for IPv6.

Linux: net/ipv4/fib_trie.c › fib_table_lookup (the LC-trie walk, check_leaf's scope and oif filters)
and net/ipv6/ip6_fib.c › fib6_node_lookup. The control plane (flowpath.net.fib's FibTable: insert,
remove, listing) stays in Python; this module turns the tables a lookup consults into arrays (FibViews:
a route that opens a new prefix goes in place, any other change rebuilds them whole; routes change
rarely, and benchmarks/fib_lookup.py times both), and holds the one lookup both the compiled classic
path and the Python callers run.

Rows and prefixes (both families):
  rt   int64[nrows, RT_COLS]  one route per row (the RT_* columns); the routes of one prefix are
                              consecutive, in the order the lookup prefers them: the tables in the
                              order given (local before main), each in metric order
  pfx  int64[nprefixes, PFX_COLS]  one distinct prefix: its first row, row count, parent (the longest
                              shorter prefix that covers it, -1 none: what check_leaf's filters fall
                              back to when no row of the prefix passes), length, and table slot (IPv6)
Rows are one int64 array rather than a column per field: a hit reads type, oif, flags, mtu and the
gateway words, the first 64 bytes of its row, in one cache line.

IPv4, a DIR-16-8-8 multibit trie (VPP's ip4_mtrie shape; DPDK's rte_lpm is DIR-24-8):
  tbl16 uint32[65536]      indexed by the top 16 bits of daddr
  tbl8  uint32[ngroups*256] 256-entry groups for the next 8 bits, then the last 8
An entry is 0 (no route), prefix + 1, or LEAF_PLY | group (look one level further). A lookup is one to
three dependent loads and never loops. Why not DIR-24-8: its first level alone is 2**24 entries, 64 MiB
for any table, even the four routes of a small gateway, zeroed and filled again at every rebuild;
DIR-16-8-8 costs 256 KiB plus 1 KiB per /16 that holds a longer prefix (and per /24 with one longer than
/24), for one more load, and its 256 KiB first level stays in L2. Inserting a prefix overwrites the
entries of its range that name a shorter prefix (or none) and leaves those naming a longer one; a leaf
in the way of a longer prefix becomes a group seeded with it. The depth DPDK stores in each entry is
the length of the prefix the entry names (pfx's PFX_LEN).

Local and main are collapsed into one trie, as Linux does without policy rules (fib_trie.c, "FIB
Local/MAIN table collapse"): one longest prefix match over both, the local table's routes first on an
equal prefix. IPv6 asks its tables in turn (fib6_rules: local, then main), so each table slot is hashed
on its own:
  index6 int64[icap]        open addressing (linear probe, load <= 1/2) of prefix + 1, 0 empty
  key6   uint32[np, 4]      the prefix's address words (most significant first, as ld32 loads them)
  lens6  int64[nslots, 130] per slot: how many distinct lengths, then the lengths, longest first
  mask6  uint32[129, 4]     the netmask words of each length
A lookup probes the slot's non-empty lengths from the longest: a handful for real tables (/128 local
routes, /64 links, /48, a default); DPDK's rte_lpm6 trie would bound it at 14 loads, at many MiB.

`fib_lookup4(fv, daddr)` and `fib_lookup6(fv, w0, w1, w2, w3)` return the row of the route a packet
takes, -1 for none; `fib4_lookup_match` / `fib6_lookup_match` add check_leaf's filters (table, lowest
scope, oif), which the nexthop checks of `ip route add` use. Every function here is @njit and takes
only arrays and ints, so that the compiled classic path can call it on a batch.
"""

from __future__ import annotations

import itertools

import numpy as np
from numba import njit

from flowpath.net.inetdev import RT_SCOPE_LINK
from flowpath.net.link import LK_MTU

# ---- route row columns (rt int64[nrows, RT_COLS]) ----
RT_TYPE = 0  # RouteType (RTN_*)
RT_OIF = 1  # the nexthop's device, 0 for reject routes
RT_FLAGS = 2  # RTF_* below
RT_MTU = 3  # the route's mtu, 0: the device's (link views' LK_MTU)
RT_GW = 4  # 4 words: the gateway the packet goes to (RTF_GATEWAY), IPv4 in word 0
RT_SCOPE = 8  # RT_SCOPE_*
RT_TABLE = 9  # RT_TABLE_* id
RT_METRIC = 10
RT_PREFIXLEN = 11
RT_PREFSRC = 12  # 4 words: the configured `src` (RTF_PREFSRC)
RT_COLS = 16
# RT_FLAGS bits (no Linux counterpart as bits: fib_nh's fields, flattened)
RTF_GATEWAY = 1  # a gateway that is used: fib_nh_gw_family set and nh_scope link (rt_set_nexthop)
RTF_PREFSRC = 2  # fib_prefsrc configured
RTF_ONLINK = 4  # RTNH_F_ONLINK
RTF_MTU_LOCK = 8  # RTAX_LOCK of RTAX_MTU

# RouteType values (flowpath.net.fib's, which imports this module)
_UNICAST, _BROADCAST, _MULTICAST, _BLACKHOLE, _UNREACHABLE, _PROHIBIT = 1, 3, 5, 6, 7, 8

# ---- prefix columns (pfx int64[nprefixes, PFX_COLS]) ----
PFX_FIRST = 0
PFX_NROWS = 1
PFX_PARENT = 2
PFX_LEN = 3
PFX_SLOT = 4  # which table slot (IPv6: the position of the table in the lookup order)
PFX_COLS = 5

# ---- trie entries (tbl16, tbl8) ----
LEAF_PLY = 0x80000000  # the entry names a 256-entry group of tbl8, not a prefix
LEAF_IDX = 0x7FFFFFFF
PLY_SIZE = 256
TBL16_SIZE = 1 << 16
LENS6_COLS = 130  # count + up to 129 lengths (0..128)


# ---- IPv4 ----
@njit(cache=True, nogil=True, inline="always")
def fib4_trie_lookup(tbl16, tbl8, daddr):
    """The longest prefix containing daddr (an int < 2**32, the value ld32 loads): its index, -1 none."""
    d = np.int64(daddr)
    e = np.int64(tbl16[d >> 16])
    if e & LEAF_PLY:
        e = np.int64(tbl8[((e & LEAF_IDX) << 8) | ((d >> 8) & 0xFF)])
        if e & LEAF_PLY:
            e = np.int64(tbl8[((e & LEAF_IDX) << 8) | (d & 0xFF)])
    return e - 1


@njit(cache=True, nogil=True, _nrt=False)  # tuples of arrays: see classic_lane.py
def fib4_lookup(fib4, daddr):
    """Linux: fib_trie.c › fib_table_lookup with no filter: the first row of the longest prefix.

    fib4   (tbl16, tbl8, pfx, rt), see the module docstring
    daddr  int < 2**32
    Returns the route's row, or -1 when no route matches.
    """
    tbl16, tbl8, pfx, rt = fib4
    p = fib4_trie_lookup(tbl16, tbl8, daddr)
    if p < 0:
        return -1
    return pfx[p, PFX_FIRST]


@njit(cache=True, nogil=True, inline="always")
def rt_match(rt, r, table, min_scope, oif):
    """check_leaf's filters on row r: in `table` (0: any), scope at least `min_scope`, through `oif`
    (0: any device)."""
    return (
        (table == 0 or rt[r, RT_TABLE] == table)
        and rt[r, RT_SCOPE] >= min_scope
        and (oif == 0 or rt[r, RT_OIF] == oif)
    )


@njit(cache=True, nogil=True)
def fib_walk_match(pfx, rt, p, table, min_scope, oif):
    """From prefix p towards shorter ones (parents): the first row rt_match accepts, -1 for none."""
    while p >= 0:
        first = pfx[p, PFX_FIRST]
        for r in range(first, first + pfx[p, PFX_NROWS]):
            if rt_match(rt, r, table, min_scope, oif):
                return r
        p = pfx[p, PFX_PARENT]
    return -1


@njit(cache=True, nogil=True)
def fib4_lookup_match(fib4, daddr, table, min_scope, oif):
    """Linux: fib_table_lookup's check_leaf filters (fib_check_nh_v4_gw asks for a route of scope
    link or wider, through the given device): the longest prefix that has a row passing rt_match,
    that row. Returns -1 when none does."""
    tbl16, tbl8, pfx, rt = fib4
    return fib_walk_match(pfx, rt, fib4_trie_lookup(tbl16, tbl8, daddr), table, min_scope, oif)


@njit(cache=True, nogil=True, inline="always")
def _fib4_cover(pfx, e, leaf, n):
    """What entry e becomes under a new prefix of length n: the new leaf where e held a shorter prefix
    or none, e itself where it held a longer one (prefixes in a trie are distinct)."""
    if e == 0 or pfx[e - 1, PFX_LEN] < n:
        return leaf
    return e


@njit(cache=True, nogil=True)
def _fib4_cover_range(tbl, base, start, count, tbl8, pfx, leaf, n):
    """_fib4_cover over tbl[base + start : base + start + count], into the groups below."""
    for i in range(base + start, base + start + count):
        e = np.int64(tbl[i])
        if not e & LEAF_PLY:
            tbl[i] = _fib4_cover(pfx, e, leaf, n)
            continue
        g = (e & LEAF_IDX) * PLY_SIZE
        for j in range(g, g + PLY_SIZE):
            e2 = np.int64(tbl8[j])
            if not e2 & LEAF_PLY:
                tbl8[j] = _fib4_cover(pfx, e2, leaf, n)
                continue
            g2 = (e2 & LEAF_IDX) * PLY_SIZE  # a third-level group holds leaves only
            for k in range(g2, g2 + PLY_SIZE):
                tbl8[k] = _fib4_cover(pfx, np.int64(tbl8[k]), leaf, n)


@njit(cache=True, nogil=True)
def _fib4_ply(tbl, i, tbl8, ngroups):
    """The group below entry tbl[i], made (seeded with the prefix the entry held) if the entry was a
    leaf: (its tbl8 base, groups in use), or (-1, ngroups) when tbl8 has no room. The group is filled
    before the entry points to it, so a concurrent lookup sees the old prefix or the new group."""
    e = np.int64(tbl[i])
    if e & LEAF_PLY:
        return (e & LEAF_IDX) * PLY_SIZE, ngroups
    if (ngroups + 1) * PLY_SIZE > tbl8.shape[0]:
        return -1, ngroups
    base = ngroups * PLY_SIZE
    for j in range(base, base + PLY_SIZE):
        tbl8[j] = e
    tbl[i] = LEAF_PLY | ngroups
    return base, ngroups + 1


@njit(cache=True, nogil=True)
def fib4_insert(fib4, key4, ngroups, npfx, p, reparent):
    """Insert prefix p (pfx[p] and key4[p] written, no row of it reachable yet) into the trie.

    fib4      (tbl16, tbl8, pfx, rt)
    key4      int64[cap]  prefix values
    ngroups   tbl8 groups in use; npfx prefixes in use (p among them)
    reparent  1: prefixes already in the trie that p now covers first get p as their parent (not
              needed when prefixes arrive shortest first, as in a rebuild)
    Returns the groups in use after, or -1 when tbl8 is full (the caller rebuilds with more room).
    """
    tbl16, tbl8, pfx, rt = fib4
    a, n = key4[p], pfx[p, PFX_LEN]
    q = fib4_trie_lookup(tbl16, tbl8, a)
    while q >= 0 and pfx[q, PFX_LEN] >= n:
        q = pfx[q, PFX_PARENT]
    pfx[p, PFX_PARENT] = q
    if reparent:
        mask = ((1 << n) - 1) << (32 - n)
        for c in range(npfx):
            if pfx[c, PFX_LEN] > n and pfx[c, PFX_PARENT] == q and key4[c] & mask == a:
                pfx[c, PFX_PARENT] = p
    leaf = p + 1
    if n <= 16:
        _fib4_cover_range(tbl16, 0, a >> 16, 1 << (16 - n), tbl8, pfx, leaf, n)
        return ngroups
    base, ngroups = _fib4_ply(tbl16, a >> 16, tbl8, ngroups)
    if base < 0:
        return -1
    if n <= 24:
        _fib4_cover_range(tbl8, base, (a >> 8) & 0xFF, 1 << (24 - n), tbl8, pfx, leaf, n)
        return ngroups
    base, ngroups = _fib4_ply(tbl8, base + ((a >> 8) & 0xFF), tbl8, ngroups)
    if base < 0:
        return -1
    _fib4_cover_range(tbl8, base, a & 0xFF, 1 << (32 - n), tbl8, pfx, leaf, n)
    return ngroups


@njit(cache=True, nogil=True)
def fib4_build(fib4, key4, npfx):
    """Insert prefixes 0..npfx-1 (sorted by length) into a zeroed trie: groups in use, -1 if full."""
    ngroups = 0
    for p in range(npfx):
        ngroups = fib4_insert(fib4, key4, ngroups, npfx, p, 0)
        if ngroups < 0:
            return -1
    return ngroups


# ---- IPv6 ----
@njit(cache=True, nogil=True, inline="always")
def mix32(h, w):
    # h, w < 2**32 and the multiplier < 2**31: the product stays below 2**63 (numba's int64 may
    # assume no signed overflow), as flowtable/key.py's hash does.
    h = ((h ^ w) * 0x6A09E667) & 0xFFFFFFFF
    return h ^ (h >> 15)


@njit(cache=True, nogil=True, inline="always")
def fib6_hash(slot, plen, w0, w1, w2, w3):
    """32-bit hash of a (slot, length, masked address) key. No Linux counterpart (fib6 walks a tree)."""
    h = mix32(np.int64(0x2545F491), (np.int64(slot) << 8) | np.int64(plen))
    h = mix32(h, np.int64(w0))
    h = mix32(h, np.int64(w1))
    h = mix32(h, np.int64(w2))
    h = mix32(h, np.int64(w3))
    h = ((h ^ (h >> 16)) * 0x45D9F3B) & 0xFFFFFFFF  # final avalanche: the home slot is the low bits
    return h ^ (h >> 16)


@njit(cache=True, nogil=True)
def fib6_probe(index6, pfx, key6, slot, plen, w0, w1, w2, w3):
    """The prefix (slot, plen, w0..w3) (words already masked): its index, -1 when absent."""
    mask = index6.shape[0] - 1
    i = fib6_hash(slot, plen, w0, w1, w2, w3) & mask
    while True:
        rec = index6[i]
        if rec == 0:
            return -1
        p = rec - 1
        if (pfx[p, PFX_LEN] == plen and pfx[p, PFX_SLOT] == slot and key6[p, 0] == w0
                and key6[p, 1] == w1 and key6[p, 2] == w2 and key6[p, 3] == w3):  # fmt: skip
            return p
        i = (i + 1) & mask


@njit(cache=True, nogil=True, _nrt=False)  # tuples of arrays: see classic_lane.py
def fib6_slot_lookup(fib6, slot, w0, w1, w2, w3, below):
    """The longest prefix of table slot `slot` shorter than `below` containing the address: its index,
    -1 for none."""
    index6, pfx, key6, lens6, mask6, rt = fib6
    for k in range(lens6[slot, 0]):
        n = lens6[slot, 1 + k]
        if n >= below:
            continue
        p = fib6_probe(index6, pfx, key6, slot, n, w0 & mask6[n, 0], w1 & mask6[n, 1],
                       w2 & mask6[n, 2], w3 & mask6[n, 3])  # fmt: skip
        if p >= 0:
            return p
    return -1


@njit(cache=True, nogil=True, _nrt=False)  # tuples of arrays: see classic_lane.py
def fib6_lookup(fib6, w0, w1, w2, w3):
    """Linux: ip6_fib.c › fib6_lookup under the default rules: the local table, then main; in each,
    the first row of the longest prefix.

    fib6    (index6, pfx, key6, lens6, mask6, rt), see the module docstring
    w0..w3  the address words, most significant first (ints < 2**32)
    Returns the route's row, or -1 when no route matches.
    """
    pfx = fib6[1]
    for slot in range(fib6[3].shape[0]):
        p = fib6_slot_lookup(fib6, slot, w0, w1, w2, w3, 129)
        if p >= 0:
            return pfx[p, PFX_FIRST]
    return -1


@njit(cache=True, nogil=True)
def fib6_lookup_match(fib6, w0, w1, w2, w3, table, min_scope, oif):
    """fib6_lookup where only rows passing rt_match count (ip6_route_check_nh's RT6_LOOKUP_F_IFACE:
    through `oif`; `table` asks one table alone). Returns the row, -1 for none."""
    pfx, rt = fib6[1], fib6[5]
    for slot in range(fib6[3].shape[0]):
        r = fib_walk_match(pfx, rt, fib6_slot_lookup(fib6, slot, w0, w1, w2, w3, 129), table, min_scope, oif)
        if r >= 0:
            return r
    return -1


@njit(cache=True, nogil=True)
def fib6_insert(fib6, npfx, p, reparent):
    """Insert prefix p (pfx[p] and key6[p] written, no row of it reachable yet): its length into its
    slot's lengths, its parent, then its index record (last: a concurrent lookup finds it complete).
    reparent as fib4_insert. Returns 0, or -1 when the index would pass half full (rebuild)."""
    index6, pfx, key6, lens6, mask6, rt = fib6
    mask = index6.shape[0] - 1
    if 2 * npfx > index6.shape[0]:
        return -1
    slot, n = pfx[p, PFX_SLOT], pfx[p, PFX_LEN]
    w0, w1, w2, w3 = key6[p, 0], key6[p, 1], key6[p, 2], key6[p, 3]
    q = fib6_slot_lookup(fib6, slot, w0, w1, w2, w3, n)
    pfx[p, PFX_PARENT] = q
    if reparent:
        for c in range(npfx):
            if (pfx[c, PFX_SLOT] == slot and pfx[c, PFX_LEN] > n and pfx[c, PFX_PARENT] == q
                    and key6[c, 0] & mask6[n, 0] == w0 and key6[c, 1] & mask6[n, 1] == w1
                    and key6[c, 2] & mask6[n, 2] == w2 and key6[c, 3] & mask6[n, 3] == w3):  # fmt: skip
                pfx[c, PFX_PARENT] = p
    _lens6_add(lens6, slot, n)
    i = fib6_hash(slot, n, w0, w1, w2, w3) & mask
    while index6[i] != 0:
        i = (i + 1) & mask
    index6[i] = p + 1
    return 0


@njit(cache=True, nogil=True)
def _lens6_add(lens6, slot, n):
    """Length n into the slot's list (longest first) unless there."""
    count = lens6[slot, 0]
    k = 0
    while k < count and lens6[slot, 1 + k] > n:
        k += 1
    if k < count and lens6[slot, 1 + k] == n:
        return
    for j in range(count, k, -1):
        lens6[slot, 1 + j] = lens6[slot, j]
    lens6[slot, 1 + k] = n
    lens6[slot, 0] = count + 1


@njit(cache=True, nogil=True)
def fib6_build(fib6, npfx):
    """Insert prefixes 0..npfx-1 (sorted by slot and length) into a zeroed index: 0, -1 if too full."""
    for p in range(npfx):
        if fib6_insert(fib6, npfx, p, 0) < 0:
            return -1
    return 0


# ---- the views the datapath takes: fv = (fib4, fib6, genid) ----
@njit(cache=True, nogil=True, _nrt=False)  # tuples of arrays: see classic_lane.py
def fib_lookup4(fv, daddr):
    """The route row for IPv4 daddr over net.fib_views(), -1 for none (fib4_lookup)."""
    return fib4_lookup(fv[0], daddr)


@njit(cache=True, nogil=True, _nrt=False)  # tuples of arrays: see classic_lane.py
def fib_lookup6(fv, w0, w1, w2, w3):
    """The route row for the IPv6 address w0..w3 over net.fib_views(), -1 for none (fib6_lookup)."""
    return fib6_lookup(fv[1], w0, w1, w2, w3)


@njit(cache=True, nogil=True, _nrt=False)  # tuples of arrays: see classic_lane.py
def inet_addr_type_fv(fv, addr):
    """Linux: fib_frontend.c › __inet_dev_addr_type with no device: the type (RTN_*) of the route to
    the IPv4 address addr over net.fib_views(); unicast when there is none, or a reject route (whose
    lookup fails). route.py › inet_addr_type and nft `fib ... type` (nft_fib.py) ask it."""
    if addr == 0 or addr == 0xFFFFFFFF:  # ipv4_is_zeronet / ipv4_is_lbcast (0/8 is unicast since 5.3)
        return _BROADCAST
    if addr >> 28 == 0xE:
        return _MULTICAST
    r = fib_lookup4(fv, addr)
    if r < 0:
        return _UNICAST
    t = fv[0][3][r, RT_TYPE]
    return _UNICAST if t == _BLACKHOLE or t == _UNREACHABLE or t == _PROHIBIT else t


@njit(cache=True, nogil=True, inline="always")
def fib_result_mtu(rt, r, lk):
    """The route's mtu, else its device's: FibResult.mtu (route.py › fib_result) from row r and the
    link rows lk (flowpath.net.link › link_views); 0 for a reject route."""
    mtu = rt[r, RT_MTU]
    oif = rt[r, RT_OIF]
    if mtu or not oif:
        return mtu
    return lk[oif, LK_MTU]


# ---- building (control plane, Python) ----
def addr6_words(a: int) -> tuple[int, int, int, int]:
    """An IPv6 address as four 32-bit words, most significant first (the order ld32 loads them)."""
    return (a >> 96) & 0xFFFFFFFF, (a >> 64) & 0xFFFFFFFF, (a >> 32) & 0xFFFFFFFF, a & 0xFFFFFFFF


def _words(family: int, a: int) -> tuple[int, int, int, int]:
    return (a, 0, 0, 0) if family == 4 else addr6_words(a)


def _rt_row(fa) -> tuple:
    """One route's row (a FibAlias of flowpath.net.fib)."""
    flags = 0
    gw = prefsrc = (0, 0, 0, 0)
    if fa.gateway is not None and fa.nh_scope == RT_SCOPE_LINK:  # route.py › fib_result's rule
        flags |= RTF_GATEWAY
        gw = _words(fa.family, fa.gateway)
    if fa.prefsrc is not None:
        flags |= RTF_PREFSRC
        prefsrc = _words(fa.family, fa.prefsrc)
    flags |= (RTF_ONLINK if fa.onlink else 0) | (RTF_MTU_LOCK if fa.mtu_lock else 0)
    return (int(fa.type), fa.oif, flags, fa.mtu, *gw, fa.scope, fa.table, fa.metric, fa.prefixlen, *prefsrc)


class FibViews:
    """The compiled views of one family's tables (`tables`, in lookup order: local, then main), kept
    in step with them. No Linux counterpart: fib_trie.c updates its trie in place.

    A table tells its listeners of each change (FibTable.listeners): a route that opens a new prefix
    is appended in place (a row, a prefix, its trie or index entries: `ip route add` lines loading a
    large table cost one insert each, not one rebuild each); anything else (a removal, a second
    route of a prefix, a route changed in place) drops the views, rebuilt at the next `get`.
    `genid` moves on every change; `fas` gives the FibAlias of each row.
    """

    def __init__(self, family: int, tables: list) -> None:
        self.family, self.tables = family, tables
        self.views: tuple | None = None
        self.fas: list = []
        self._state: tuple = ((), [])  # (views, fas) as one value: see current()
        self.genid = 0
        self._key = np.zeros(0, np.int64)  # IPv4 prefix values (IPv6 keeps its words in key6)
        self._nrows = self._npfx = self._ngroups = 0
        for t in tables:
            t.listeners.append(self)

    def get(self) -> tuple:
        """The views: fib4 (tbl16, tbl8, pfx, rt) or fib6 (index6, pfx, key6, lens6, mask6, rt)."""
        views = self.views
        return views if views is not None else self._rebuild()[0]

    def current(self) -> tuple[tuple, list]:
        """(views, the FibAlias of each row), read together: a rebuild by another thread between
        the lookup and the row's FibAlias cannot pair one's row with the other's list."""
        state = self._state
        return state if self.views is not None and state[0] is self.views else self._rebuild()

    def invalidate(self) -> None:
        self.views = None
        self.genid += 1

    def route_added(self, table, fa, new_prefix: bool) -> None:
        """FibTable.insert's news: fa is in `table`, alone at its prefix when new_prefix."""
        self.genid += 1
        if self.views is None:
            return
        collapsed = self.family == 4 and any(
            t is not table and t.find(fa.prefix, fa.prefixlen) for t in self.tables
        )
        if not new_prefix or collapsed or not self._append(self.tables.index(table), fa):
            self.views = None

    def _append(self, slot: int, fa) -> bool:
        """fa as a new prefix, in place; False when an array is full (then the caller rebuilds)."""
        views = self.views
        pfx, rt = views[1] if self.family == 6 else views[2], views[-1]
        p, r = self._npfx, self._nrows
        if p >= pfx.shape[0] or r >= rt.shape[0]:
            return False
        rt[r] = _rt_row(fa)
        pfx[p, PFX_FIRST], pfx[p, PFX_NROWS], pfx[p, PFX_LEN] = r, 1, fa.prefixlen
        pfx[p, PFX_SLOT] = slot if self.family == 6 else 0
        if self.family == 4:
            self._key[p] = fa.prefix
            ngroups = fib4_insert(views, self._key, self._ngroups, p + 1, p, 1)
            if ngroups < 0:
                return False
            self._ngroups = ngroups
        else:
            views[2][p] = addr6_words(fa.prefix)
            if fib6_insert(views, p + 1, p, 1) < 0:
                return False
        self._npfx, self._nrows = p + 1, r + 1
        self.fas.append(fa)
        return True

    def _rebuild(self) -> tuple:
        """Every table's routes into new arrays, with room for as many again added in place."""
        v6 = self.family == 6
        groups: dict[tuple[int, int, int], list] = {}
        for slot, table in enumerate(self.tables):
            for plen, prefix, fas in table.prefixes():
                groups.setdefault((slot if v6 else 0, plen, prefix), []).extend(fas)
        keys = sorted(groups)  # slot, then length (the build inserts shortest first), then prefix
        fas_all, counts = [], []
        for k in keys:
            fas = groups[k]
            fas_all += fas
            counts.append(len(fas))
        np_, nr = len(keys), len(fas_all)
        pfx = np.zeros((max(16, 2 * np_), PFX_COLS), np.int64)
        rt = np.zeros((max(16, 2 * nr), RT_COLS), np.int64)
        rows = itertools.chain.from_iterable(map(_rt_row, fas_all))
        rt[:nr] = np.fromiter(rows, np.int64, nr * RT_COLS).reshape(nr, RT_COLS)
        pfx[:np_, PFX_NROWS] = counts
        pfx[:np_, PFX_FIRST] = np.cumsum(pfx[:np_, PFX_NROWS]) - pfx[:np_, PFX_NROWS]
        if np_ and not v6:
            karr = np.array(keys, np.int64)  # IPv4 prefixes fit; IPv6 ones do not
            pfx[:np_, PFX_SLOT], pfx[:np_, PFX_LEN] = karr[:, 0], karr[:, 1]
        elif np_:
            pfx[:np_, PFX_SLOT] = [k[0] for k in keys]
            pfx[:np_, PFX_LEN] = [k[1] for k in keys]
        if v6:
            key6 = np.zeros((pfx.shape[0], 4), np.uint32)
            key6[:np_] = np.array([addr6_words(k[2]) for k in keys], np.uint32).reshape(np_, 4)
            icap = 16
            while icap < 2 * pfx.shape[0]:
                icap *= 2
            lens6 = np.zeros((max(len(self.tables), 1), LENS6_COLS), np.int64)
            views = (np.zeros(icap, np.int64), pfx, key6, lens6, _mask6(), rt)
            fib6_build(views, np_)  # the index holds twice the prefixes' room: cannot fill
        else:
            self._key = np.zeros(pfx.shape[0], np.int64)
            key, plen = self._key[:np_], pfx[:np_, PFX_LEN]
            if np_:
                key[:] = karr[:, 2]
            # the groups the prefixes split (a /16 holding a longer prefix, a /24 holding one longer
            # than /24), and half as many again for prefixes added in place
            need = np.unique(key[plen > 16] >> 16).shape[0] + np.unique(key[plen > 24] >> 8).shape[0]
            room = 16 + need + need // 2
            views = (np.zeros(TBL16_SIZE, np.uint32), np.zeros(room * PLY_SIZE, np.uint32), pfx, rt)
            self._ngroups = fib4_build(views, self._key, np_)  # room for every group: cannot fill
        self._npfx, self._nrows, self.fas = np_, nr, fas_all
        self._state = (views, fas_all)
        self.views = views
        return self._state

    def nbytes(self) -> int:
        """Bytes the arrays take (the shared IPv6 mask table left out)."""
        return sum(a.nbytes for a in self.get() if a is not _MASK6)


_MASK6 = None


def _mask6() -> np.ndarray:
    global _MASK6
    if _MASK6 is None:  # built on first use: imports allocate nothing
        m = np.zeros((129, 4), np.uint32)
        for n in range(129):
            m[n] = addr6_words(((1 << 128) - 1) ^ ((1 << (128 - n)) - 1))
        _MASK6 = m
    return _MASK6
