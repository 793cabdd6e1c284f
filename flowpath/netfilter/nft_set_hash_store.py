"""The store of the sets the packet path updates: their arrays (nft_set_hash.py), made when a ruleset
is compiled and grown between polls, and the closures' access to their elements.

Linux: net/netfilter/nft_set_hash.c (the rhashtable grows by itself; here the arrays are rebuilt outside
compiled code, as other flowpath tables grow), nf_tables_api.c › nf_tables_dump_setelem (the elements
`nft list set` prints).
"""

from __future__ import annotations

import numpy as np

from flowpath.netfilter.nft_compile_expr import Comp, Punt, SetTables, Val
from flowpath.netfilter.nft_limit import LIM_COLS
from flowpath.netfilter.nft_set_hash import (
    DS_CAP,
    DS_COLS,
    DS_KEY0,
    DS_KLEN,
    DS_NEXT_EXP,
    DS_SIZE,
    DS_SLOT0,
    DYN_BREAK,
    DYN_F_PY,
    DYN_F_PYSTMT,
    DYN_GROW,
    DYNSET_SIZE_DEFAULT,
    NEVER,
    NFT_DYNSET_OP_ADD,
    SL_BYTES,
    SL_COLS,
    SL_COUNTER,
    SL_EXPIRES,
    SL_LIVE,
    SL_PACKETS,
    SL_PY,
    SL_STATE,
    UNDO_W,
    nft_dynset_eval,
    nft_rhash_lookup,
    nft_rhash_move,
)
from flowpath.packet.pages import commit_pages

_NO_UNDO = np.zeros((0, UNDO_W), np.int64)  # the closures' calls: nothing to undo


_TYPE_BYTES = {"ipv4_addr": 4, "ipv6_addr": 16, "ether_addr": 6, "inet_service": 2, "inet_proto": 1,
               "mark": 4, "ifname": 16}  # fmt: skip


def _type_val(s) -> Val:
    """A key layout from the set's type: big-endian components at 4-byte register offsets."""
    dtypes = s.keytype if isinstance(s.keytype, tuple) else (s.keytype,)
    comps, off = [], 0
    for dt in dtypes:
        w = _TYPE_BYTES.get(dt, (s.bits + 7) // 8 if s.bits and len(dtypes) == 1 else 16)
        comps.append(Comp(off, w, False))
        off += (w + 3) & ~3
    return Val(tuple(comps), s.keytype, s.bits)


def _capacity(n: int) -> int:
    """Slots for n elements at most 1/2 full (a power of 2, at least 8)."""
    cap = 8
    while cap < 2 * n:
        cap *= 2
    return cap


class SetHashStore:
    """The arrays of one ruleset's updated sets (see the module), shared by its VM programs (`dyn`) and
    the closures (each set's SetHash). No Linux counterpart as such (the kernel's rhashtable grows by
    itself). `on_grow` callbacks learn of new arrays (NftVm puts them in its programs)."""

    def __init__(self, limits: np.ndarray | None = None):
        self.tables: list[SetHash] = []
        self.limits = limits if limits is not None else np.zeros((1, LIM_COLS), np.int64)
        self.dyn = (np.zeros((1, DS_COLS), np.int64), np.zeros((1, SL_COLS), np.int64),
                    np.zeros(1, np.uint8), self.limits)  # fmt: skip
        self.on_grow: list = []

    def bind(self, s, val: Val | None = None) -> int:
        """The row of a set the packet path updates (an NftSet), its keys laid out in the registers as
        val says (None: as its type says, when no compiled rule loads them); its declared elements move
        into the table (their own timeouts are set there when the set's ElemClock starts). Raises Punt when
        the VM cannot use the set: a key laid out otherwise than the first rule's, intervals."""
        if s.table is not None:
            if val is not None and [c[:2] for c in val.comps] != [c[:2] for c in s.table.val.comps]:
                raise Punt("a set loaded with two key layouts")
            return s.table.ds
        if s.starts or s.scan or s.catchall is not None:
            raise Punt("a set the packet path updates, with intervals")
        t = SetHash(self, len(self.tables), val or _type_val(s), s.size or DYNSET_SIZE_DEFAULT)
        self.tables.append(t)
        self._layout([min(t.size, 128) if x is t else None for x in self.tables])
        for key in list(s.exact):  # a declared element whose clock started: its deadline (now 0 + it)
            t.dynset(key, NFT_DYNSET_OP_ADD, s.expires.pop(key, 0), -1, 0, 0, 0)
        s.exact, s.table = {}, t
        return t.ds

    def set_limits(self, limits: np.ndarray) -> None:
        self.limits = limits
        self.dyn = self.dyn[:3] + (limits,)

    def _layout(self, want: list, now_ns: int = 0) -> None:
        """New arrays: each set's slots for want[i] elements (None: as many as it has now), its live
        elements moved over."""
        old = self.dyn
        caps = [_capacity(w) if w is not None else int(old[0][i, DS_CAP]) for i, w in enumerate(want)]
        dsets = np.zeros((len(self.tables), DS_COLS), np.int64)
        slot0 = key0 = 0
        for i, t in enumerate(self.tables):
            klen = t.val.klen
            dsets[i, [DS_KLEN, DS_CAP, DS_SLOT0, DS_KEY0, DS_SIZE, DS_NEXT_EXP]] = (
                klen,
                caps[i],
                slot0,
                key0,
                t.size,
                NEVER,
            )
            slot0 += caps[i]
            key0 += caps[i] * klen
        dslot, dkey = np.zeros((max(slot0, 1), SL_COLS), np.int64), np.zeros(max(key0, 1), np.uint8)
        commit_pages(dslot, dkey)  # the lane's inserts must not fault pages in
        new = (dsets, dslot, dkey, self.limits)
        for i, t in enumerate(self.tables):
            if i < old[0].shape[0] and old[0][i, DS_CAP]:
                moved = np.zeros(int(old[0][i, DS_CAP]), np.int64)
                nft_rhash_move(old, i, new, i, now_ns, moved)
                s0 = int(old[0][i, DS_SLOT0])
                t.py_stmts = {int(moved[sl - s0]): v for sl, v in t.py_stmts.items() if moved[sl - s0] >= 0}
        self.dyn = new
        for fn in self.on_grow:
            fn(new)


class SetHash:
    """One set in a SetHashStore: its row, its key layout, and the closures' access to its elements
    (keys as nft_set.NftSet's: ints, strings, tuples). py_stmts: slot -> the element's statements only
    the closures run (nft_dynset_new's clones of quota, log, ...)."""

    def __init__(self, store: SetHashStore, ds: int, val, size: int):
        self.store, self.ds, self.val, self.size = store, ds, val, size
        self.py_stmts: dict[int, list] = {}

    def has_py(self, sl: int) -> bool:
        return bool(self.store.dyn[1][sl, SL_PY])

    def key_bytes(self, key: object) -> np.ndarray | None:
        """The key as the registers hold it for a lookup; None when no load can hold it."""
        b = SetTables._key(key, self.val, 0)
        return None if b is None else np.frombuffer(b, np.uint8).copy()

    def lookup(self, key: object, now_ns: int) -> bool:
        b = self.key_bytes(key)
        d = self.store.dyn
        return b is not None and nft_rhash_lookup(d[0], d[1], d[2], self.ds, b, 0, now_ns) >= 0

    def set_deadline(self, key: object, deadline_ns: int) -> None:
        """A declared element's expiration, set when its clock starts (nft_add_set_elem's, which an
        update cannot add: the element went in without one)."""
        b = self.key_bytes(key)
        d = self.store.dyn
        sl = -1 if b is None else nft_rhash_lookup(d[0], d[1], d[2], self.ds, b, 0, 0)
        if sl >= 0:
            d[1][sl, SL_EXPIRES] = deadline_ns
            d[0][self.ds, DS_NEXT_EXP] = min(int(d[0][self.ds, DS_NEXT_EXP]), deadline_ns)

    def dynset(
        self,
        key: object,
        op: int,
        timeout_ns: int,
        tmpl: int,
        cnt: int,
        now_ns: int,
        length: int,
        pystmts: bool = False,
    ) -> int:
        """nft_dynset_eval for the closures (see nft_dynset_eval), the table grown when it must be."""
        b = self.key_bytes(key)
        if b is None:
            return DYN_BREAK
        op |= DYN_F_PY | (DYN_F_PYSTMT if pystmts else 0)
        while True:
            r = nft_dynset_eval(
                self.store.dyn, self.ds, b, 0, op, timeout_ns, tmpl, cnt, now_ns, length, _NO_UNDO
            )
            if r != DYN_GROW:
                return r
            self.grow(now_ns)

    def grow(self, now_ns: int) -> None:
        """Room for more elements: twice the slots (the dead and the expired ones left behind)."""
        cap = int(self.store.dyn[0][self.ds, DS_CAP])
        self.store._layout([cap if x is self else None for x in self.store.tables], now_ns)

    def elements(self, now_ns: int) -> list[tuple[object, int, int | None, int | None]]:
        """(key, deadline ns or 0, packets, bytes) of each live, unexpired element (`nft list set`);
        packets and bytes None for an element without a counter."""
        dsets, dslot, dkey, _ = self.store.dyn
        klen, s0, k0 = (int(dsets[self.ds, c]) for c in (DS_KLEN, DS_SLOT0, DS_KEY0))
        out = []
        for i in range(int(dsets[self.ds, DS_CAP])):
            row = dslot[s0 + i]
            if row[SL_STATE] == SL_LIVE and not (row[SL_EXPIRES] and row[SL_EXPIRES] <= now_ns):
                key = self._decode(bytes(dkey[k0 + i * klen : k0 + (i + 1) * klen]))
                pk, by = (int(row[SL_PACKETS]), int(row[SL_BYTES])) if row[SL_COUNTER] else (None, None)
                out.append((key, int(row[SL_EXPIRES]), pk, by))
        return out

    def _decode(self, b: bytes) -> object:
        dtypes = self.val.dtype if isinstance(self.val.dtype, tuple) else (self.val.dtype,)
        parts = []
        for comp, dt in zip(self.val.comps, dtypes, strict=True):
            x = b[comp.off : comp.off + comp.width]
            parts.append(x.rstrip(b"\0").decode() if dt == "ifname" else int.from_bytes(x, "big"))
        return tuple(parts) if len(parts) > 1 else parts[0]
