"""nft sets and maps: element keys (values, prefixes, ranges, concatenations) and lookups.

Linux: net/netfilter/nft_lookup.c with the set backends chosen by what a set holds: nft_set_hash.c
(exact keys), nft_set_rbtree.c (intervals: prefixes and ranges), nft_set_pipapo.c (concatenations
with intervals; here a scan). Interface wildcards ("eth*") in sets are scanned too. The catch-all
element `*` answers when nothing else does (nf_tables_api.c › nft_set_catchall_lookup). Elements the packet
path adds (nft_dynset.py) live in the arrays the compiled VM reads too (`table`, nft_set_hash_store.py's
SetHash, bound when the ruleset is compiled): they may expire, and a lookup at or after an element's
deadline in packet time does not find it (nft_set_elem_expired). An element declared with a timeout (its
own, or the set's: nf_tables_api.c › nft_add_set_elem) expires too, from when it was added; a ruleset
loaded before any packet has no packet time yet, so its clock starts with the first packet (ElemClock).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Callable, NamedTuple

from flowpath.netfilter.nft_types import NftBuildError, parse_value, set_type

_WIDTH = {
    "ipv4_addr": 32,
    "ipv6_addr": 128,
    "ether_addr": 48,
    "inet_service": 16,
    "inet_proto": 8,
    "mark": 32,
}


class Interval(NamedTuple):
    lo: int
    hi: int


def parse_key(dtype: str | tuple, bits: int, v: object) -> object:
    """One set element key or match operand: a scalar, an Interval (prefix/range) or a tuple (concat)."""
    if isinstance(v, dict) and "elem" in v:
        v = v["elem"]["val"]
    if isinstance(dtype, tuple):
        if not (isinstance(v, dict) and "concat" in v) or len(v["concat"]) != len(dtype):
            raise NftBuildError(f"expected a concatenation of {len(dtype)}, got {v!r}")
        return tuple(parse_key(t, 0, x) for t, x in zip(dtype, v["concat"], strict=True))
    if isinstance(v, dict) and "prefix" in v:
        width = _WIDTH.get(dtype, bits)
        base, plen = parse_value(dtype, v["prefix"]["addr"]), int(v["prefix"]["len"])
        if not isinstance(base, int) or not 0 <= plen <= width:
            raise NftBuildError(f"bad prefix {v!r}")
        host = (1 << (width - plen)) - 1
        return Interval(base & ~host, (base & ~host) | host)
    if isinstance(v, dict) and "range" in v:
        lo, hi = (parse_value(dtype, x) for x in v["range"])
        if not (isinstance(lo, int) and isinstance(hi, int)) or lo > hi:
            raise NftBuildError(f"bad range {v!r}")
        return Interval(lo, hi)
    return parse_value(dtype, v)


def is_wild(k: object) -> bool:
    return isinstance(k, str) and k.endswith("*") and not k.endswith("\\*")


def _component_match(k: object, v: object) -> bool:
    if isinstance(k, Interval):
        return k.lo <= v <= k.hi
    if is_wild(k):
        return v.startswith(k[:-1])
    return k == v


class NftSet:
    """A named or anonymous set or map: exact keys hashed, intervals bisected, the rest scanned.

    `get(key)` returns the element's data (True for a plain set) or None when absent.
    """

    def __init__(self, name: str, keytype: str | tuple, bits: int = 0, data_type: str | None = None):
        self.name, self.keytype, self.bits, self.data_type = name, keytype, bits, data_type
        self.catchall: object = None  # the `*` element's data (True in a plain set)
        self.dynamic = False  # flags dynamic/timeout, or updated from the packet path
        self.updated = False  # a set statement or meter updates it: its elements go to `table`
        self.table = None  # nft_set_hash_store.SetHash: the elements, once the ruleset is compiled
        self.timeout_ns = 0  # NFTA_SET_TIMEOUT: the default lifetime of an element the path adds
        self.size = 0  # NFTA_SET_DESC_SIZE (0: nft's default for a dynamic set)
        self.expires: dict = {}  # key -> deadline (ns of packet time) of a declared element that expires
        self.lifetimes: dict = {}  # key -> timeout (ns) of a declared element whose clock has not started
        self.clock: ElemClock | None = None  # what starts them (the runtime's)
        self.exact: dict = {}
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.datas: list = []
        self.scan: list[tuple] = []  # (key, data): wildcards and concatenations with intervals

    def add(self, key: object, data: object = True) -> None:
        if isinstance(key, Interval):
            i = bisect_right(self.starts, key.lo)
            self.starts.insert(i, key.lo)
            self.ends.insert(i, key.hi)
            self.datas.insert(i, data)
        elif is_wild(key) or (
            isinstance(key, tuple) and any(isinstance(k, Interval) or is_wild(k) for k in key)
        ):
            self.scan.append((key, data))
        else:
            self.exact[key.replace("\\*", "*") if isinstance(key, str) else key] = data

    def add_elements(self, elems: list, parse_data: Callable[[object], object] | None = None) -> None:
        for el in elems:
            key, data = el, True
            if parse_data is not None:
                if not (isinstance(el, list) and len(el) == 2):
                    raise NftBuildError(f"map element must be [key, data]: {el!r}")
                key, data = el[0], parse_data(el[1])
            timeout_ns = self.timeout_ns
            if isinstance(key, dict) and "elem" in key:
                if key["elem"].get("timeout") is not None:
                    timeout_ns = round(float(key["elem"]["timeout"]) * 10**9)
                key = key["elem"]["val"]
            if key == "*":
                self.catchall = data
                continue
            k = parse_key(self.keytype, self.bits, key)
            self.add(k, data)
            if timeout_ns:
                if k not in self.exact:  # lookup() expires the exact key it was asked for
                    raise NftBuildError(f"element {key!r} with a timeout in an interval set: flowpath "
                                        "expires exact elements only")  # fmt: skip
                self.lifetimes[k] = timeout_ns
                self.dynamic = True  # it changes with packet time: the VM leaves its lookups to the closures

    def get(self, key: object) -> object:
        d = self.exact.get(key)
        if d is not None:
            return d
        starts = self.starts
        if starts:
            i = bisect_right(starts, key) - 1
            # overlapping intervals only come from user JSON; scan back over starts <= key then
            while i >= 0:
                if key <= self.ends[i]:
                    return self.datas[i]
                i -= 1
        for k, d in self.scan:
            if isinstance(k, tuple):
                if all(_component_match(a, b) for a, b in zip(k, key, strict=False)):
                    return d
            elif key.startswith(k[:-1]):
                return d
        return self.catchall

    def elem_clock_start(self, now_ns: int) -> None:
        """Declared elements' deadlines counted from now_ns, when they were added in packet time (in the
        table, for a set the packet path updates)."""
        for k, t in self.lifetimes.items():
            if self.table is not None:
                self.table.set_deadline(k, now_ns + t)
            else:
                self.expires[k] = now_ns + t
        self.lifetimes.clear()

    def lookup(self, key: object, now_ns: int) -> object:
        """get(), in the packet path's elements when it updates the set; an element past its deadline is
        gone (nft_set_elem_expired; GC removes it)."""
        if self.lifetimes and self.clock is not None:  # the first packet, when no hook started the clock
            self.clock.start(now_ns)
        if self.table is not None:
            return True if self.table.lookup(key, now_ns) else None
        t = self.expires.get(key)
        if t is not None and t <= now_ns:
            self.exact.pop(key, None)
            del self.expires[key]
        return self.get(key)

    def __len__(self) -> int:
        return len(self.exact) + len(self.starts) + len(self.scan) + (self.catchall is not None)


class ElemClock:
    """When a ruleset's declared element timeouts start: Linux's at the commit, here the Worker's clock
    at load or, for a ruleset loaded before any packet, the first packet's time (the packet clock starts
    there, DESIGN.md §3). No Linux counterpart: the kernel's jiffies run before any packet.
    """

    def __init__(self):
        self.sets: list[NftSet] = []

    def add(self, s: NftSet) -> None:
        if s.lifetimes and s.clock is None:
            s.clock = self
            self.sets.append(s)

    def start(self, now_ns: int) -> None:
        for s in self.sets:
            s.elem_clock_start(now_ns)
        self.sets.clear()


def set_from_json(s: dict) -> NftSet:
    """A named set or map object of `nft -j list ruleset` (its elements are added by the caller for maps)."""
    keytype = set_type(s["type"])
    data = s.get("map")
    out = NftSet(s["name"], keytype, 0, data if data in (None, "verdict") else set_type(data))
    flags = s.get("flags", [])
    flags = [flags] if isinstance(flags, str) else flags
    out.dynamic = "dynamic" in flags or "timeout" in flags
    out.timeout_ns = int(s.get("timeout", 0)) * 10**9
    out.size = int(s.get("size", 0))
    return out
