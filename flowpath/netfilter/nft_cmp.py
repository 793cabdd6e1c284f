"""nft match expressions: cmp, range, bitmask and set lookups on a left-hand side nft_expr.py loads.

Linux: net/netfilter/nft_cmp.c › nft_cmp_eval, nft_range.c › nft_range_eval, nft_lookup.c › nft_lookup_eval
(nftables src/netlink_linearize.c › netlink_gen_relational: which of them a `match` becomes).

A {"match": ...} statement compiles once into op(pkt) -> NFT_CONTINUE | NFT_BREAK; a load that failed
(None) never matches, whatever the operator. resolve_set, the NftSet a set reference names, is shared
with the statements (nft_stmt.py, nft_dynset.py) and the VM's compiler (nft_compile*.py).
"""

from __future__ import annotations

import operator

from flowpath.netfilter import constants as C
from flowpath.netfilter.nft_expr import Load, NftCtx, Op, build_load, build_meta
from flowpath.netfilter.nft_exthdr import build_tcpopt_load
from flowpath.netfilter.nft_fib import build_fib
from flowpath.netfilter.nft_set import Interval, NftSet, is_wild, parse_key
from flowpath.netfilter.nft_types import BITMASK_TYPES, NftBuildError

NFT_CONTINUE, NFT_BREAK = C.NFT_CONTINUE, C.NFT_BREAK  # module globals: closures read them per packet
_ORDER = {"<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge}


def _m_eq(load, c):
    def op(pkt):
        return NFT_CONTINUE if load(pkt) == c else NFT_BREAK  # None never equals c

    return op


def _m_ne(load, c):
    def op(pkt):
        v = load(pkt)
        return NFT_CONTINUE if v is not None and v != c else NFT_BREAK

    return op


def _m_order(load, cmp, c):
    def op(pkt):
        v = load(pkt)
        return NFT_CONTINUE if v is not None and cmp(v, c) else NFT_BREAK

    return op


def _m_flags(load, mask, want_any):
    """Bitmask implicit op: `ct state established,related` is (state & mask) != 0; `!` is == 0."""

    def op(pkt):
        v = load(pkt)
        return NFT_CONTINUE if v is not None and bool(v & mask) == want_any else NFT_BREAK

    return op


def _m_range(load, lo, hi, inv):
    def op(pkt):
        v = load(pkt)
        return NFT_CONTINUE if v is not None and (lo <= v <= hi) != inv else NFT_BREAK

    return op


def _m_prefix(load, p, inv):  # ifname wildcard: `iifname "eth*"` compares the first len("eth") bytes
    def op(pkt):
        v = load(pkt)
        return NFT_CONTINUE if v is not None and v.startswith(p) != inv else NFT_BREAK

    return op


def _m_lookup(load, s: NftSet, inv):
    """nft_lookup_eval. A set the packet path updates is looked up in its table, one whose declared
    elements expire through NftSet.lookup: what the path adds is found, and what expired is not."""
    if not s.starts and not s.scan and s.catchall is None:
        exact = s.exact  # a hash set: the common case gets a direct membership test

        def op_hash(pkt):
            v = load(pkt)
            if v is None:
                return NFT_BREAK
            # s.table is bound after the rules are built (a later rule may update the set)
            if s.table is None and not s.expires and not s.lifetimes:
                found = v in exact
            else:  # its table, or declared elements that expire
                found = s.lookup(v, pkt.skb.ts_ns) is not None
            return NFT_CONTINUE if found != inv else NFT_BREAK

        return op_hash

    def op(pkt):
        v = load(pkt)
        return NFT_CONTINUE if v is not None and (s.lookup(v, pkt.skb.ts_ns) is not None) != inv else NFT_BREAK

    return op


def resolve_set(ref: object, ctx: NftCtx, keytype: str | tuple, bits: int) -> NftSet:
    """`@name` (a named set of this table) or {"set": [...]} (an anonymous set) as an NftSet."""
    if isinstance(ref, str) and ref.startswith("@"):
        s = ctx.sets.get(ref[1:])
        if s is None:
            raise NftBuildError(f"set {ref[1:]!r} does not exist in table {ctx.family} {ctx.table}")
        return s
    s = NftSet("", keytype, bits)
    s.add_elements(ref["set"] if isinstance(ref["set"], list) else [ref["set"]])
    return s


def _ifindex_operand(right: object, ctx: NftCtx) -> object:
    """Interface names on the right of `meta iif`/`oif` become ifindexes (nft resolves them at load)."""

    def idx(name: object) -> object:
        if not isinstance(name, str):
            return name
        if name not in ctx.ifindex:
            raise NftBuildError(f"interface {name!r} does not exist")
        return ctx.ifindex[name]

    if isinstance(right, dict) and "set" in right:
        items = right["set"] if isinstance(right["set"], list) else [right["set"]]
        return {"set": [idx(x) for x in items]}
    return idx(right)


def _ifindex_numbers(right: object) -> object:
    """nft lists an ifindex no device has as its number ("0": no device): as an int, for the compare."""

    def num(v: object) -> object:
        return int(v) if isinstance(v, str) and v.isdigit() else v

    if isinstance(right, dict) and "set" in right:
        items = right["set"] if isinstance(right["set"], list) else [right["set"]]
        return {"set": [num(x) for x in items]}
    return num(right)


def _fib_operand(arg: dict, right: object, ctx: NftCtx) -> Load:
    """The load of `fib ... oif|oifname|type` for this right-hand side: exists/missing reads whether a
    device was found (NFTA_FIB_F_PRESENT); an oif compared with names reads the device's name when no
    ifindex map is given (as `meta oif` does), with numbers its index."""
    if isinstance(right, bool):
        return Load(*build_fib(arg, present=True))
    items = right["set"] if isinstance(right, dict) and isinstance(right.get("set"), list) else [right]
    names = arg.get("result") == "oif" and any(isinstance(x, str) and not x.isdigit() for x in items)
    if names and not all(isinstance(x, str) and not x.isdigit() for x in items):
        raise NftBuildError("fib oif compared with both names and numbers")
    if names and ctx.ifindex is not None:
        return Load(*build_fib(arg))._replace(dtype="iface_index")
    return Load(*build_fib(arg, by_name=names))


def build_match(m: dict, ctx: NftCtx) -> Op:
    """Compile {"match": {"op", "left", "right"}} into op(pkt) -> NFT_CONTINUE | NFT_BREAK."""
    opname, left, right = m.get("op", "=="), m.get("left"), m.get("right")
    if isinstance(left, dict) and "fib" in left:
        fn, dtype, bits = _fib_operand(left["fib"], right, ctx)
        right = _ifindex_numbers(right) if dtype == "integer" else right
    elif isinstance(left, dict) and "tcp option" in left and isinstance(right, bool):
        fn, dtype, bits = build_tcpopt_load(left["tcp option"], present=True)  # `tcp option 200 missing`
    else:
        fn, dtype, bits = build_load(left, ctx)
    if dtype == "iface_index":
        if ctx.ifindex is None:  # Deviation: no ifindex map given, so `meta iif "eth0"` compares names
            fn, dtype, bits = build_meta({"key": "iifname" if left["meta"]["key"] == "iif" else "oifname"})
            if isinstance(right, str) and not right.startswith("@"):
                right = {"set": [right]}  # an exact name, never a wildcard
        else:
            right, dtype = _ifindex_operand(right, ctx), "integer"
    if (isinstance(right, str) and right.startswith("@")) or (isinstance(right, dict) and "set" in right):
        if opname not in ("==", "!=", "in"):
            raise NftBuildError(f"operator {opname!r} on a set")
        return _m_lookup(fn, resolve_set(right, ctx, dtype, bits), opname == "!=")
    c = parse_key(dtype, bits, right)
    if isinstance(c, Interval):
        if opname not in ("==", "!=", "in"):
            raise NftBuildError(f"operator {opname!r} on a range or prefix")
        return _m_range(fn, c.lo, c.hi, opname == "!=")
    if is_wild(c):
        if opname not in ("==", "!=", "in"):
            raise NftBuildError(f"operator {opname!r} on an interface wildcard")
        return _m_prefix(fn, c[:-1], opname == "!=")
    if isinstance(c, str):
        c = c.replace("\\*", "*")
    if opname == "in" and dtype in BITMASK_TYPES:
        return _m_flags(fn, c, True)
    if opname == "!":
        return _m_flags(fn, c, False)
    if opname in ("==", "in"):
        return _m_eq(fn, c)
    if opname == "!=":
        return _m_ne(fn, c)
    if opname in _ORDER and isinstance(c, int):
        return _m_order(fn, _ORDER[opname], c)
    raise NftBuildError(f"unsupported operator {opname!r}")
