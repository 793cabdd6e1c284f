"""ct keys with a direction, numgen and hash, bitwise and shift expressions, and statement values.

Linux: nftables src/parser_bison.y › ct_expr (ct_key_dir, ct_key_dir_optional), numgen_expr, hash_expr,
and the binop rules of stmt_expr; src/evaluate.c › expr_evaluate_ct (an address takes the family the
rule's context gives it), expr_evaluate_binop (constants folded, a constant xor on the left of a match
moved to the right: `meta mark xor 3 == 1` is `meta mark 2`), expr_evaluate_map (a data map's keys and
values take the types of its key and of the statement), src/ct.c › ct_expr_json and the kernel's
nft_ct_get_dump (l3proto and protocol are dumped without their direction, so nft lists them so).
"""

from __future__ import annotations

from typing import Any

from lark import Token, Tree

from flowpath.config.nft import datatype as dt
from flowpath.config.nft.ast import Ctx, ListX, Sym, number, rhs_ast
from flowpath.config.nft.evaluate import selector
from flowpath.config.nft.evaluate_set import map_lookup
from flowpath.config.nft.evaluate_value import sym_value

# src/expression.c › binop: the JSON operator of each grammar alias
BINOPS = {"bit_or": "|", "bit_xor": "^", "bit_and": "&", "bit_lshift": "<<", "bit_rshift": ">>"}
_FOLD = {"|": int.__or__, "^": int.__xor__, "&": int.__and__, "<<": int.__lshift__, ">>": int.__rshift__}
# Linux: nftables src/ct.c › ct_templates: the keys only a direction's tuple has
_DIR_REQUIRED = ("saddr", "daddr", "proto-src", "proto-dst")
# what nft_ct_get_dump leaves out: these keys read the same in both directions' tuples
_DIR_DROPPED = ("l3proto", "protocol")
_NFPROTO_L3 = {"ipv4": "ip", "ipv6": "ip6"}


def ct_selector(ctx: Ctx, t: Tree) -> tuple[dict, str]:
    """`ct KEY` and `ct original|reply [ip|ip6] KEY`."""
    if t.data == "ct_sel":
        key = t.children[1]
        if str(key) not in dt.CT_KEYS:
            raise ctx.error(key, "syntax error, unexpected string")
        return {"ct": {"key": str(key)}}, dt.CT_KEYS[str(key)]
    dir_, rest = str(t.children[1]), t.children[2:]
    key = rest[-1]
    if str(key) not in dt.CT_DIR_KEYS:
        raise ctx.error(key, "syntax error, unexpected string")
    sel: dict[str, Any] = {"key": str(key)}
    if dt.CT_DIR_KEYS[str(key)] is None:  # an address: its family written, or the rule's
        fam = str(rest[0]) if len(rest) == 2 else None
        fam = fam or (ctx.table.family if ctx.table.family in ("ip", "ip6") else ctx.l3)
        if fam is None:
            raise ctx.error(t, "Cannot determine address family, use ct ip or ct ip6")
        known = ctx.table.family if ctx.table.family in ("ip", "ip6") else ctx.l3
        if known is not None and fam != known:
            raise ctx.error(t, f"conflicting protocols specified: {known} vs. {fam}")
        sel["key"] = f"{fam} {key}"  # src/ct.c › ct_expr_json names the family in the key
    elif len(rest) == 2:
        raise ctx.error(rest[0], "syntax error, unexpected " + str(rest[0]))
    if str(key) not in _DIR_DROPPED:
        sel["dir"] = dir_
    return {"ct": sel}, dt.selector_type({"ct": sel})


def rt_selector(ctx: Ctx, t: Tree) -> tuple[dict, str]:
    """`rt [ip|ip6] KEY`. Linux: nftables src/rt.c › rt_expr_print, json.c › rt_expr_json (the next hop's
    family is named: written, or the rule's as for a ct address)."""
    key, fam = t.children[-1], (str(t.children[1]) if len(t.children) == 3 else None)
    if str(key) not in dt.RT_KEYS:
        raise ctx.error(key, "syntax error, unexpected string")
    if str(key) != "nexthop":
        if fam is not None:
            raise ctx.error(t.children[1], f"syntax error, unexpected {fam}")
        return {"rt": {"key": str(key)}}, dt.RT_KEYS[str(key)]
    known = ctx.table.family if ctx.table.family in ("ip", "ip6") else ctx.l3
    fam = fam or known
    if fam is None:
        raise ctx.error(t, "Cannot determine address family, use rt ip or rt ip6")
    if known is not None and fam != known:
        raise ctx.error(t, f"conflicting protocols specified: {known} vs. {fam}")
    return {"rt": {"key": "nexthop", "family": fam}}, dt.IPSEC_ADDR[fam]


def nfproto_update(ctx: Ctx, left: dict, op: str | None, rhs: Any) -> None:
    """`meta nfproto ipv4` pins the rule's network protocol (nft's PROTO_BASE_NETWORK_HDR context)."""
    if left == {"meta": {"key": "nfproto"}} and op in (None, "==") and isinstance(rhs, Sym):
        ctx.l3 = _NFPROTO_L3.get(str(dt.parse_value("nf_proto", rhs.text)), ctx.l3)


def numgen_selector(ctx: Ctx, t: Tree) -> tuple[dict, str]:
    """`numgen inc|random mod N [offset M]`. Linux: src/numgen.c › numgen_expr_json."""
    mode, mod = t.children[1], _mod(ctx, t.children[2])
    if str(mode) not in ("inc", "random"):
        raise ctx.error(mode, "syntax error, unexpected string, expecting inc or random")
    off = _offset(t.children[3:])
    return {"numgen": {"mode": str(mode), "mod": mod, "offset": off}}, "integer32"


def hash_selector(ctx: Ctx, t: Tree) -> tuple[dict, str]:
    """`jhash EXPR mod N [seed S] [offset M]`, `symhash mod N [offset M]`. Linux: src/hash.c ›
    hash_expr_json (seed when written, offset when not 0)."""
    kids = t.children[1:]
    out: dict[str, Any] = {}
    expr = None
    if t.data == "jhash_sel":
        keys = [selector(ctx, s)[0] for s in kids[0].children]
        expr = keys[0] if len(keys) == 1 else {"concat": keys}
        kids = kids[1:]
    out["mod"] = _mod(ctx, kids[0])
    for k in kids[1:]:
        if k.data == "hash_seed":
            out["seed"] = _u32(ctx, k.children[0])
    off = _offset(kids[1:])
    if off:
        out["offset"] = off
    if expr is not None:
        out["expr"] = expr
    return {"jhash" if expr is not None else "symhash": out}, "integer32"


def _mod(ctx: Ctx, tok: Token) -> int:
    n = _u32(ctx, tok)
    if n == 0:  # nft_hash.c › nft_jhash_init, nft_numgen.c: a modulus of 0 is ERANGE
        raise ctx.error(tok, "Could not process rule: Numerical result out of range")
    return n


def _u32(ctx: Ctx, tok: Token) -> int:
    n = number(tok)
    if n >= 1 << 32:
        raise ctx.error(tok, "value too large")
    return n


def _offset(kids: list) -> int:
    return next((number(k.children[0]) for k in kids if k.data == "hash_offset"), 0)


# --- a match with a bitwise or shift on its left ----------------------------------------------------------
def binop_match(ctx: Ctx, left: dict, dtype: str, t: Tree, op: str | None, rhs: Any) -> dict:
    """`meta mark or 3 == 1`, `ct mark xor 3 != 1`, `ct mark >> 8 == 1` (children: bitop, value)."""
    binop = BINOPS[t.children[1].data]
    const = rhs_ast(t.children[2], ctx.defines, ctx.error)
    c = _int_operand(ctx, dtype, binop, const)
    if not isinstance(rhs, Sym):
        raise ctx.error(rhs, "a bitwise expression compares with a single value")
    if binop == "^" and op in (None, "==", "!="):  # evaluate.c › binop_transfer: x ^ c == v is x == v ^ c
        v = dt.value_num(dtype, sym_value(ctx.error, dtype, rhs))
        return {"match": {"op": op or "==", "left": left, "right": dt.num_value(dtype, v ^ c)}}
    right = sym_value(ctx.error, dtype, rhs)
    return {"match": {"op": op or "==", "left": {binop: [left, c]}, "right": right}}


def _int_operand(ctx: Ctx, dtype: str, binop: str, s: Any) -> int:
    """A bitwise operand in the left's type (a shift's is a plain number)."""
    if not isinstance(s, Sym):
        raise ctx.error(s, "a bitwise operand must be a single value")
    if binop in ("<<", ">>"):
        return sym_value(ctx.error, "integer32", s)
    return dt.value_num(dtype, sym_value(ctx.error, dtype, s))


# --- a statement's value: ct mark set ct mark and 0xffff or 0x10 ----------------------------------------------
def set_value(ctx: Ctx, t: Tree, dtype: str) -> Any:
    """JSON of the value a mangle statement writes: constants folded in the target's type (nft's
    constant folding in evaluate.c › expr_evaluate_binop), a bitmask list as a list of names."""
    items = t.children
    if len(items) > 1 or dt.is_bitmask(dtype):
        if not dt.is_bitmask(dtype):
            raise ctx.error(t, "a list of values is only valid for bitmask types")
        bits = 0
        for x in items:
            v = _value(ctx, x, dtype)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ctx.error(x, "a bitmask is set to constants only")
            bits |= v
        return _bitmask_json(dtype, bits)
    v = _value(ctx, items[0], dtype)
    return dt.num_value(dtype, v) if isinstance(v, int) and not _keeps_int(dtype) else v


def _keeps_int(dtype: str) -> bool:
    return dtype == "mark" or dtype.startswith("integer")


def _bitmask_json(dtype: str, bits: int) -> Any:
    names = [n for n, b in dt.SYMBOLIC[dtype][0].items() if b and bits & b == b]
    covered = 0
    out = []
    for n in sorted(names, key=lambda n: dt.SYMBOLIC[dtype][0][n]):
        b = dt.SYMBOLIC[dtype][0][n]
        if not covered & b:
            out.append(n)
            covered |= b
    if covered != bits or not out:
        return bits
    return out[0] if len(out) == 1 else out


def _value(ctx: Ctx, t: Any, dtype: str) -> Any:
    """An int for a constant (folded), else the expression's JSON."""
    if isinstance(t, Tree) and t.data == "set_const":
        s = rhs_ast(Tree("value", t.children, meta=t.meta), ctx.defines, ctx.error)
        if isinstance(s, ListX) or not isinstance(s, Sym):
            raise ctx.error(t, "expected a single value")
        v = sym_value(ctx.error, dtype, s)
        return dt.value_num(dtype, v) if _foldable(dtype) else v
    if isinstance(t, Tree) and t.data in ("set_expr", "set_ref"):
        raise ctx.error(t, "a set is not a value a statement can write")
    if isinstance(t, Tree) and t.data.startswith("set_bit_"):
        binop = BINOPS[t.data[4:]]
        a = _value(ctx, t.children[0], dtype)
        b = _value(ctx, t.children[1], "integer32" if binop in ("<<", ">>") else dtype)
        if isinstance(b, dict):
            raise ctx.error(t.children[1], "the right of a bitwise expression must be a constant")
        if not isinstance(b, int):
            b = dt.value_num(dtype, b)
        if isinstance(a, int):  # both constant: fold in the target's width
            return _FOLD[binop](a, b) & ((1 << dt.type_width(dtype)) - 1)
        return {binop: [a, b]}
    if isinstance(t, Tree) and t.data == "map_lookup":  # `ip saddr map { ... }`, `... map @m`
        return map_lookup(ctx, t, dtype)
    if isinstance(t, Tree) and t.data == "masked_map_lookup":  # `ip6 saddr & ::ffff map { ... }`
        sel, mask, data = t.children
        if not isinstance(sel, Tree) or sel.data.startswith("set_") or sel.data == "map_lookup":
            raise ctx.error(t, "the key of a map is a selector and a mask")
        mask_v = _value(ctx, mask, selector(ctx, sel)[1])
        return map_lookup(ctx, Tree("map_lookup", [sel, data], t.meta), dtype, mask_v)
    left, _ = selector(ctx, t)
    return left


def _foldable(dtype: str) -> bool:
    return _keeps_int(dtype) or dt.is_bitmask(dtype)


def ct_count(ctx: Ctx, t: Tree) -> dict:
    """`ct count [over] N`. Linux: src/statement.c › connlimit_stmt_json."""
    kids = [c for c in t.children if isinstance(c, Token)]
    inv = any(k.type == "OVER" for k in kids)
    out: dict[str, Any] = {"val": number(kids[-1])}
    if inv:
        out["inv"] = True
    return {"ct count": out}
