"""nft dynamic sets: `add|update|delete @set { key [timeout T] [stmt...] }`, meters, and data map lookups.

Linux: net/netfilter/nft_dynset.c › nft_dynset_init (the element's expressions: at most a limit and a
counter kept in the set's arrays), nft_dynset_eval and nft_dynset_new, nft_set_hash.c › nft_rhash_update,
nf_tables_api.c › nft_set_elem_expired, and nft_lookup.c (a data map's value loaded for `meta mark set
ip saddr map { ... }`).

The elements a set statement adds live in the arrays the compiled VM updates too (nft_set_hash.py: the
closures call the same nft_dynset_eval on them through the set's SetHash, bound when the ruleset is
compiled), so both evaluators see one set: what one adds the other finds, one bucket per element.
Times are packet time (skb.ts_ns, DESIGN.md §3): an element added at t with timeout T is gone for a
packet at t + T or later. An element statement other than a limit and a counter (quota, log, ...) is
run by the closures only: the element is marked, and the VM punts a packet that reaches it.
"""

from __future__ import annotations

from flowpath.netfilter import constants as C
from flowpath.netfilter.nft_cmp import resolve_set
from flowpath.netfilter.nft_expr import Load, NftCtx, Op, build_load
from flowpath.netfilter.nft_limit import limit_from_stmt
from flowpath.netfilter.nft_set import NftSet, parse_key
from flowpath.netfilter.nft_set_hash import (
    DYN_DELETED,
    NFT_DYNSET_OP_ADD,
    NFT_DYNSET_OP_DELETE,
    NFT_DYNSET_OP_UPDATE,
)
from flowpath.netfilter.nft_types import NftBuildError

NFT_CONTINUE, NFT_BREAK = C.NFT_CONTINUE, C.NFT_BREAK
_OPS = {"add": NFT_DYNSET_OP_ADD, "update": NFT_DYNSET_OP_UPDATE, "delete": NFT_DYNSET_OP_DELETE}


def _key(elem: object) -> tuple[object, int | None]:
    """The key expression of a set statement and its own timeout in seconds (None: the set's)."""
    if isinstance(elem, dict) and "elem" in elem:
        return elem["elem"]["val"], elem["elem"].get("timeout")
    return elem, None


def elem_split(stmts: list) -> tuple[dict | None, int, list]:
    """A set statement's element statements as the table keeps them: the limit's JSON (None: none),
    the counter (SL_COUNTER: 1 after the limit, 2 before it or alone, 0 none), the rest (closures only)."""
    limit, counter, rest = None, 0, []
    for st in stmts:
        (kind, arg), = st.items() if isinstance(st, dict) and len(st) == 1 else ((None, None),)  # fmt: skip
        if kind == "limit" and isinstance(arg, dict) and limit is None:
            limit = arg
        elif kind == "counter" and not isinstance(arg, str) and not counter:
            counter = 1 if limit is not None else 2
        else:
            rest.append(st)
    return limit, counter, rest


class ElemStmts:
    """What nft_dynset_new clones into a new element (elem_split): a limit (its template NftLimit, bound to
    a row of the VM's limits, recorded in the rule's RuleInfo.limits), a counter, and the statements only
    the closures run (`py`, built afresh per element)."""

    def __init__(self, stmts: list, info, build):
        limit, self.counter, self.py = elem_split(stmts)
        self.limit = limit_from_stmt(limit) if limit is not None else None
        if self.limit is not None:
            info.limits.append(self.limit)
        self._build = build
        [build(st) for st in self.py]  # refuse what cannot be built now, not on the first packet

    def tmpl(self) -> int:
        return self.limit.row if self.limit is not None else -1

    def new_py(self) -> list:
        return [self._build(st) for st in self.py]


def nft_dynset(s: NftSet, load: Load, op: int, timeout_ns: int, elem: ElemStmts) -> Op:
    """nft_dynset_eval through the set's table (nft_set_hash.nft_dynset_eval), then the element's
    closures-only statements."""
    fn = load.fn

    def eval_dynset(pkt):
        key = fn(pkt)
        if key is None:
            return NFT_BREAK
        skb, t = pkt.skb, s.table
        now = skb.ts_ns
        new = bool(elem.py) and op != NFT_DYNSET_OP_DELETE and not t.lookup(key, now)
        r = t.dynset(key, op, timeout_ns, elem.tmpl(), elem.counter, now, skb.skb_len, new)
        if r == DYN_DELETED:
            return NFT_CONTINUE
        if r < 0:
            return NFT_BREAK
        if new:
            t.py_stmts[r] = elem.new_py()
        for stmt in t.py_stmts.get(r, ()) if t.has_py(r) else ():  # the element's, whichever rule made it
            if stmt(pkt) == NFT_BREAK:
                return NFT_BREAK
        return NFT_CONTINUE

    return eval_dynset


def dynset_parts(kind: str, arg: dict, ctx: NftCtx, dtype, bits: int) -> tuple[NftSet, int, int, list]:
    """A `set` statement's or meter's set, op, element timeout in ns (the statement's, else the set's;
    0: none) and element statements, for a key of dtype/bits (the closures' and the VM's compiler's)."""
    if kind == "meter":  # parser_bison.y › meter_stmt_alloc: NFT_DYNSET_OP_UPDATE on an anonymous set
        _, timeout = _key(arg.get("key"))
        name = str(arg.get("name", ""))
        s = ctx.sets.get(name)
        if s is None:  # one meter's set, whatever rules use its name
            s = ctx.sets[name] = NftSet(name, dtype, bits)
            s.size = int(arg.get("size", 0))
        s.dynamic = s.updated = True
        return s, NFT_DYNSET_OP_UPDATE, (timeout or 0) * 10**9, [arg["stmt"]] if "stmt" in arg else []
    op = _OPS.get(arg.get("op"))
    if op is None:
        raise NftBuildError(f"unsupported set statement op {arg.get('op')!r}")
    _, timeout = _key(arg.get("elem"))
    s = resolve_set(arg.get("set"), ctx, dtype, bits)
    if s.data_type is not None:
        raise NftBuildError(f"set statement on map {s.name!r}: flowpath updates sets only")
    s.dynamic = s.updated = True
    timeout_ns = timeout * 10**9 if timeout is not None else s.timeout_ns
    return s, op, timeout_ns, arg.get("stmt", [])


def dynset_key(kind: str, arg: dict) -> object:
    """The key expression of a `set` statement or meter."""
    return _key(arg.get("key") if kind == "meter" else arg.get("elem"))[0]


def build_dynset(kind: str, arg: dict, ctx: NftCtx, info, build_stmt) -> Op:
    """{"set": {"op", "elem", "set", "stmt"}} or {"meter": {"key", "stmt", "size", "name"}}:
    `build_stmt(stmt)` builds one element statement."""
    load = build_load(dynset_key(kind, arg), ctx)
    s, op, timeout_ns, stmts = dynset_parts(kind, arg, ctx, load.dtype, load.bits)
    return nft_dynset(s, load, op, timeout_ns, ElemStmts(stmts, info, build_stmt))


def build_map_load(m: dict, ctx: NftCtx, data_dtype: str) -> Load:
    """`ip saddr map { 1.1.1.1 : 0x1, * : 0x2 }` or `... map @m` as a value: the data of the element
    the key finds, None (NFT_BREAK) when there is none (nft_lookup_eval with a dreg)."""
    load = build_load(m["key"], ctx)
    fn, get = load.fn, data_map_set(m, ctx, load.dtype, load.bits, data_dtype).get

    def map_load(pkt):
        k = fn(pkt)
        return None if k is None else get(k)

    return Load(map_load, data_dtype, 0)


def named_data_map(name: str, ctx: NftCtx, key_dtype, key_bits: int) -> NftSet:
    """A named map whose data is not a verdict (`... map @m`)."""
    s = resolve_set(name, ctx, key_dtype, key_bits)
    if s.data_type in (None, "verdict"):
        raise NftBuildError(f"{name} is not a data map")
    return s


def data_map_set(m: dict, ctx: NftCtx, key_dtype, key_bits: int, data_dtype: str) -> NftSet:
    """The map of a `map` value: a named data map, or the anonymous one written in place (its data of
    `data_dtype`). The closures and the VM's compiler both look up in it."""
    data = m["data"]
    if isinstance(data, str):
        return named_data_map(data, ctx, key_dtype, key_bits)
    s = NftSet("", key_dtype, key_bits, data_dtype)
    s.add_elements(data["set"], lambda v: parse_key(data_dtype, 0, v))
    return s
