"""nft dynamic sets: `add|update|delete @set { key [timeout T] [stmt...] }`, meters, and data map lookups.

Linux: net/netfilter/nft_dynset.c › nft_dynset_eval and nft_dynset_new (an element made on the packet
path, its expressions cloned from the statement's), nft_set_hash.c › nft_rhash_update (find the live
element or insert a new one, unless the set is full), nf_tables_api.c › nft_set_elem_expired (an
element past its deadline is not found) and nft_lookup.c (a data map's value loaded for `meta mark set
ip saddr map { ... }`).

Times are packet time (skb.ts_ns, DESIGN.md §3), as nft_limit.py's token bucket: an element added at t
with timeout T is gone for a packet at t + T or later. These statements run in the closures: the VM's
set tables are frozen when a ruleset is compiled, so a rule with one punts (nft_compile.py counts it in
NftVm.fallback) and a lookup in a set the path updates punts too (nft_compile_expr.SetTables.add).
"""

from __future__ import annotations

from flowpath.netfilter import constants as C
from flowpath.netfilter.nft_cmp import resolve_set
from flowpath.netfilter.nft_expr import Load, NftCtx, Op, build_load
from flowpath.netfilter.nft_set import NftSet, parse_key
from flowpath.netfilter.nft_types import NftBuildError

NFT_CONTINUE, NFT_BREAK = C.NFT_CONTINUE, C.NFT_BREAK
NFT_DYNSET_OP_ADD, NFT_DYNSET_OP_UPDATE, NFT_DYNSET_OP_DELETE = 0, 1, 2  # uapi nf_tables.h
_OPS = {"add": NFT_DYNSET_OP_ADD, "update": NFT_DYNSET_OP_UPDATE, "delete": NFT_DYNSET_OP_DELETE}


def _key(elem: object) -> tuple[object, int | None]:
    """The key expression of a set statement and its own timeout in seconds (None: the set's)."""
    if isinstance(elem, dict) and "elem" in elem:
        return elem["elem"]["val"], elem["elem"].get("timeout")
    return elem, None


def _element_stmts(stmts: list, build) -> list:
    """Each statement of the element, built afresh (nft_dynset_new clones the statement's expressions:
    every element has its own limit bucket and counter)."""
    return [build(s) for s in stmts]


def nft_dynset(s: NftSet, load: Load, op: int, timeout_ns: int, new_stmts) -> Op:
    """nft_dynset_eval: NFT_BREAK when the key cannot be loaded or the set is full, else the element's
    statements (a limit over its rate breaks the rule)."""
    fn = load.fn

    def eval_dynset(pkt):
        key = fn(pkt)
        if key is None:
            return NFT_BREAK
        now = pkt.skb.ts_ns
        if op == NFT_DYNSET_OP_DELETE:  # nft_dynset_eval: delete, and the rule goes on
            s.remove(key)
            return NFT_CONTINUE
        if s.lookup(key, now) is None:  # nft_rhash_update: insert, unless full (nft_dynset_new)
            if s.size and len(s.exact) >= s.size:
                for k in [k for k, t in s.expires.items() if t <= now]:  # what GC would have taken
                    s.remove(k)
                if len(s.exact) >= s.size:
                    return NFT_BREAK
            s.exact[key] = True
            if timeout_ns:
                s.expires[key] = now + timeout_ns
            s.elem_stmts[key] = new_stmts()
        elif op == NFT_DYNSET_OP_UPDATE and key in s.expires:
            s.expires[key] = now + timeout_ns
        for stmt in s.elem_stmts.get(key, ()):  # the element's, whichever rule made it
            if stmt(pkt) == NFT_BREAK:
                return NFT_BREAK
        return NFT_CONTINUE

    return eval_dynset


def build_dynset(arg: dict, ctx: NftCtx, build_stmt) -> Op:
    """{"set": {"op", "elem", "set", "stmt"}}: `build_stmt(stmt)` builds one element statement."""
    op = _OPS.get(arg.get("op"))
    if op is None:
        raise NftBuildError(f"unsupported set statement op {arg.get('op')!r}")
    expr, timeout = _key(arg.get("elem"))
    load = build_load(expr, ctx)
    s = resolve_set(arg.get("set"), ctx, load.dtype, load.bits)
    if s.data_type is not None:
        raise NftBuildError(f"set statement on map {s.name!r}: flowpath updates sets only")
    s.dynamic = True
    stmts = arg.get("stmt", [])
    _element_stmts(stmts, build_stmt)  # refuse what cannot be built now, not on the first packet
    timeout_ns = timeout * 10**9 if timeout is not None else s.timeout_ns
    return nft_dynset(s, load, op, timeout_ns, lambda: _element_stmts(stmts, build_stmt))


def build_meter(arg: dict, ctx: NftCtx, build_stmt) -> Op:
    """{"meter": {"key", "stmt", "size", "name"}}: a dynset of its own, updated (parser_bison.y ›
    meter_stmt_alloc: NFT_DYNSET_OP_UPDATE on an anonymous dynamic set)."""
    expr, timeout = _key(arg.get("key"))
    load = build_load(expr, ctx)
    name = str(arg.get("name", ""))
    s = ctx.sets.get(name)
    if s is None:  # one meter's set, whatever rules use its name
        s = ctx.sets[name] = NftSet(name, load.dtype, load.bits)
        s.dynamic, s.size = True, int(arg.get("size", 0))
    stmts = [arg["stmt"]] if "stmt" in arg else []
    _element_stmts(stmts, build_stmt)
    timeout_ns = (timeout or 0) * 10**9
    return nft_dynset(s, load, NFT_DYNSET_OP_UPDATE, timeout_ns, lambda: _element_stmts(stmts, build_stmt))


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
