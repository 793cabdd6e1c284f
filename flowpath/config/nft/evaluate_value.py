"""Constant values of a rule: a symbol parsed for the datatype of what it is matched with, a prefix, a range.

Linux: nftables src/evaluate.c › expr_evaluate_symbol (symbol_parse with the left-hand side's datatype),
expr_evaluate_prefix, expr_evaluate_range, and expr_evaluate_list (flags OR-ed into one bitmask value).
"""

from __future__ import annotations

from typing import Any

from flowpath.config.nft import datatype as dt
from flowpath.config.nft.ast import ListX, Range, Sym


def sym_value(ctx_err: Any, dtype: str, s: Any) -> Any:
    if not isinstance(s, Sym):
        raise ctx_err(s, "expected a single value")
    try:
        return dt.parse_value(dtype, s.text, s.quoted)
    except dt.DatatypeError as e:
        raise ctx_err(s.tok, str(e)) from None


def _prefix(err: Any, dtype: str, addr: Sym, length: int, tok: Any) -> Any:
    width = dt.type_width(dtype)
    if not dt.prefix_ok(dtype):
        raise err(tok, "Prefix expression is not valid for this type")
    if length > width:
        raise err(tok, f"Prefix length {length} is invalid for type of {width} bits width")
    v = dt.value_num(dtype, sym_value(err, dtype, addr))
    v &= ((1 << width) - 1) ^ ((1 << (width - length)) - 1)
    if length == width:
        return dt.num_value(dtype, v)
    return {"prefix": {"addr": dt.num_value(dtype, v), "len": length}}


def _range(err: Any, dtype: str, r: Range) -> dict:
    lo, hi = sym_value(err, dtype, r.lo), sym_value(err, dtype, r.hi)
    if dt.value_num(dtype, lo) > dt.value_num(dtype, hi):
        raise err(r.tok, "Range has zero or negative size")
    return {"range": [lo, hi]}


def _int(err: Any, s: Sym) -> int:
    try:
        return int(s.text, 0)
    except ValueError:
        raise err(s.tok, f"invalid prefix length {s.text}") from None


def _bits(err: Any, dtype: str, x: Any) -> Any:
    items = x.items if isinstance(x, ListX) else [x]
    vals = {}
    for i in items:
        v = sym_value(err, dtype, i)
        vals[dt.value_num(dtype, v)] = v
    out = [vals[k] for k in sorted(vals)]
    return out[0] if len(out) == 1 else out
