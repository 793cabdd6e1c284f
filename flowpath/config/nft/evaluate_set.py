"""Sets and maps past single values: concatenations, typeof, data maps, catch-all elements, element
options, and the statements that update a set from the packet path (add/update/delete @set, meter).

Linux: nftables src/evaluate.c › expr_evaluate_concat, set_evaluate, stmt_evaluate_set,
stmt_evaluate_meter, expr_evaluate_map; src/parser_bison.y › set_elem_options, meter_stmt;
src/datatype.c › time_print; src/segtree.c (a concatenation's ranges are kept per element, not merged:
nft_set_pipapo.c holds them as written).
"""

from __future__ import annotations

from typing import Any

from lark import Token, Tree

from flowpath.config.nft import datatype as dt
from flowpath.config.nft import evaluate as ev
from flowpath.config.nft.ast import CatchAll, Concat, Ctx, ElemOpts, number, rhs_ast, time_ms
from flowpath.config.nft.segtree import elem_bounds, interval_elems, is_interval_elem
from flowpath.errors import ConfigError

CONCAT_SEP = " . "
NFT_SET_DEFAULT_SIZE = 65535  # nftables include/rule.h: a dynamic set without `size`
_SET_STMT_OPS = {"ADD": "add", "UPDATE": "update"}  # no token: `delete`


def concat_types(dtype: str) -> list[str]:
    return dtype.split(CONCAT_SEP)


def is_concat(dtype: str) -> bool:
    return CONCAT_SEP in dtype


def concat_desc(dtype: str) -> str:
    """How nft names a type in its messages: `concatenation of (IPv4 address, ...)` for a concat."""
    if not is_concat(dtype):
        return dt.type_desc(dtype)
    return "concatenation of (" + ", ".join(dt.type_desc(t) for t in concat_types(dtype)) + ")"


# --- time (src/datatype.c › time_print) --------------------------------------------------------------------
def time_str(seconds: int) -> str:
    """`1h30m`: each unit that is not zero, largest first (JSON carries whole seconds)."""
    return time_str_ms(seconds * 1000)


def time_str_ms(ms: int) -> str:
    """Linux: src/datatype.c › time_print: 1d2h3m4s5ms, the parts that are not 0."""
    out = ""
    for unit, n in (("d", 86400000), ("h", 3600000), ("m", 60000), ("s", 1000), ("ms", 1)):
        if ms >= n:
            out += f"{ms // n}{unit}"
            ms %= n
    return out or "0s"


def time_seconds(t: Tree) -> int:
    """A time_spec subtree in seconds. Deviation: JSON holds whole seconds, so `500ms` rounds down."""
    return time_ms(t.children[0]) // 1000


# --- keys: `ip saddr . tcp dport` ----------------------------------------------------------------------------
def concat_selector(ctx: Ctx, t: Tree) -> tuple[dict, str]:
    """Linux: evaluate.c › expr_evaluate_concat: each part a selector, the type their concatenation."""
    for c in t.children:
        key_typed(ctx, c)
    parts = [ev.selector(ctx, c) for c in t.children]
    return {"concat": [j for j, _ in parts]}, CONCAT_SEP.join(d for _, d in parts)


def key_typed(ctx: Ctx, t: Tree) -> None:
    """A set's, map's or concatenation's key is typed by its expression alone: a `ct original|reply`
    address must name its family there (evaluate.c › expr_evaluate_ct; a plain match takes it from the
    value)."""
    if t.data == "ct_dir_sel" and len(t.children) == 3 and str(t.children[2]) in ("saddr", "daddr"):
        raise ctx.error(t, "specify either ip or ip6 for address matching")


def key_parts(left: dict) -> list[dict]:
    return left["concat"] if isinstance(left, dict) and "concat" in left else [left]


# --- elements ------------------------------------------------------------------------------------------------
def elem_value(err: Any, dtype: str, x: Any) -> Any:
    """JSON of an element evaluate.elem_value does not read: a concatenation, `*`, one with options."""
    if isinstance(x, ElemOpts):
        out: dict[str, Any] = {"val": ev.elem_value(err, dtype, x.value)}
        if x.timeout is not None:
            out["timeout"] = x.timeout
        if x.comment is not None:
            out["comment"] = x.comment
        return {"elem": out}
    if isinstance(x, CatchAll):
        return "*"
    types = concat_types(dtype)
    parts = x.parts if isinstance(x, Concat) else [x]
    if len(types) == 1:  # a concatenation where one value goes (nft's words for it)
        raise err(parts[0], "Can't parse symbolic invalid expressions")
    if len(parts) != len(types):
        raise err(x, f"invalid data type, expected {concat_desc(dtype)}")
    out = []
    for t, p in zip(types, parts, strict=True):
        v = ev.elem_value(err, t, p)
        if isinstance(v, dict) and "range" in v:  # an aligned range is listed as its prefix
            v = interval_elems(t, [v], False, lambda m, p=p: err(p, m))[0]
        out.append(v)
    return {"concat": out}


def bare(v: Any) -> Any:
    """An element's key without its options ({"elem": {"val": ...}})."""
    return v["elem"]["val"] if isinstance(v, dict) and "elem" in v else v


def sort_key(dtype: str, v: Any) -> tuple:
    """Where nft lists an element: by value (a concatenation component by component), `*` last."""
    v = bare(v)
    if v == "*":
        return (1,)
    if isinstance(v, dict) and "concat" in v:
        return (0, tuple(elem_bounds(t, p) for t, p in zip(concat_types(dtype), v["concat"], strict=True)))
    return (0, elem_bounds(dtype, v))


def needs_ext(dtype: str, elems: list) -> bool:
    """Whether set_json/map_json must go through here: concatenations, `*` or element options."""
    return is_concat(dtype) or any(isinstance(x, (Concat, CatchAll, ElemOpts)) for x in elems)


def set_json(err: Any, dtype: str, elems: list, anonymous: bool, merge: bool, interval: bool) -> list:
    """evaluate.set_json for concatenations, catch-all elements and elements with options: plain keys go
    through the interval code as before, and get their options back when the interval survived."""
    if is_concat(dtype):
        values = [elem_value(err, dtype, x) for x in elems]
        if not interval and not anonymous:
            for x, v in zip(elems, values, strict=True):
                if any(is_interval_elem(p) for p in bare(v)["concat"]):
                    raise err(x, "You must add 'flags interval' to your set declaration if you want "
                              "to add prefix elements")  # fmt: skip
        return _dedup(dtype, values)
    plain, extra, opts = [], [], {}
    for x in elems:
        v = x.value if isinstance(x, ElemOpts) else x
        if isinstance(v, CatchAll):
            extra = [elem_value(err, dtype, x)]  # one catch-all: the last one written
            continue
        if isinstance(v, Concat):
            elem_value(err, dtype, v)  # refused: a concatenation where one value goes
        plain.append(v)
        if isinstance(x, ElemOpts):
            opts[elem_bounds(dtype, ev.elem_value(err, dtype, v))] = elem_value(err, dtype, x)["elem"]
    out = ev.set_json(err, dtype, plain, anonymous, merge, interval) if plain else []
    out = [{"elem": {**opts[b], "val": v}} if (b := elem_bounds(dtype, v)) in opts else v for v in out]
    return out + extra


def _dedup(dtype: str, values: list) -> list:
    """Each key once (the last one written wins its options), in the order written: pipapo lists its
    elements so. Deviation: a hash set's order is its hash's; flowpath lists those as written too."""
    seen: dict[tuple, int] = {}
    out: list = []
    for v in values:
        k = sort_key(dtype, v)
        if k in seen:
            out[seen[k]] = v
        else:
            seen[k] = len(out)
            out.append(v)
    return out


def map_json(err: Any, dtype: str, pairs: list, interval: bool) -> list:
    """evaluate.map_json for concatenated keys, `*` and keys with options: sorted, `*` last, a key
    written twice refused as the kernel does."""
    out, seen = [], set()
    for key, data in pairs:
        k = elem_value(err, dtype, key) if needs_ext(dtype, [key]) else ev.elem_value(err, dtype, key)
        b = bare(k)
        if not is_concat(dtype) and is_interval_elem(b):
            if not interval:
                raise err(key, "You must add 'flags interval' to your set declaration if you want "
                          "to add prefix elements")  # fmt: skip
            b = interval_elems(dtype, [b], False, lambda m, key=key: err(key, m))[0]
            k = {"elem": {**k["elem"], "val": b}} if isinstance(k, dict) and "elem" in k else b
        s = sort_key(dtype, k)
        if s in seen:
            raise err(key, "Could not process rule: File exists")
        seen.add(s)
        out.append((s, k, data))
    out.sort(key=lambda x: x[0])
    return [[k, v] for _, k, v in out]


def json_to_ast(v: Any) -> Any:
    """A listed element back to what rhs_ast makes (elements added to a set that already has some)."""
    if isinstance(v, dict) and "elem" in v:
        e = v["elem"]
        return ElemOpts(json_to_ast(e["val"]), e.get("timeout"), e.get("comment"), None)
    if v == "*":
        return CatchAll(None)
    if isinstance(v, dict) and "concat" in v:
        return Concat([ev._json_to_ast(p) for p in v["concat"]], None)
    return ev._json_to_ast(v)


def map_data(err: Any, m: Any, tree: Tree, defines: dict) -> Any:
    """A named data map's element data (`: 0x1`, `: 10.0.1.10 . 80`) as JSON of the map's data type."""
    if tree.data == "verdict_stmt":
        raise err(tree, f"datatype mismatch, expected {concat_desc(m.map)}, expression has type verdict")
    return data_value(err, m.map, rhs_ast(tree, defines, err))


def data_value(err: Any, dtype: str, x: Any) -> Any:
    if isinstance(x, (Concat, ElemOpts, CatchAll)) or is_concat(dtype):
        return elem_value(err, dtype, x)
    return ev.elem_value(err, dtype, x)


# --- declarations: type, typeof, timeouts ------------------------------------------------------------------
def type_name(err: Any, t: Tree, known: tuple) -> str:
    """`type a . b` (type_spec): each part a type flowpath knows."""
    for w in t.children:
        if str(w) not in known:
            raise err(w, f"unknown datatype {w}")
    return CONCAT_SEP.join(str(w) for w in t.children)


def flags_print(flags: list[str], timeout: int | None) -> list[str]:
    """The `flags` line of a set listing (empty: none): nft 1.0.6 lists it when the set is constant,
    interval or dynamic, or has the timeout flag without a `timeout` of its own."""
    shown = [f for f in ("constant", "dynamic", "interval", "timeout") if f in flags]
    if any(f in flags for f in ("constant", "dynamic", "interval")) or ("timeout" in flags and not timeout):
        return shown
    return []


# --- statements: add/update/delete @set, meter ------------------------------------------------------------
def _stmt_key(ctx: Ctx, t: Tree, kids: list, dtype: str | None, where: Any) -> tuple[Any, list]:
    """The key of a set statement or meter, wrapped with its timeout, and its statements' JSON."""
    key, kdtype = ev.selector(ctx, kids[0])
    if dtype is not None and kdtype != dtype:
        raise ctx.error(kids[0], f"datatype mismatch: expected {concat_desc(dtype)}, expression has type "
                        f"{concat_desc(kdtype)}")  # fmt: skip
    timeout = None
    stmts: list = []
    for k in kids[1:]:
        if k.data == "elem_timeout":
            timeout = time_seconds(k.children[0])
        elif k.data == "elem_comment":
            raise ctx.error(k, "comment is not valid in a set statement")
        elif k.data == "counter_stmt":
            stmts.append({"counter": None})  # one per element, listed without values
        else:
            stmts.append(ev._STMT[k.data](ctx, k, []))
    if timeout is not None:
        key = {"elem": {"val": key, "timeout": timeout}}
    return key, stmts


def stmt_set(ctx: Ctx, t: Tree, prev: list) -> dict:
    """`add @s { ip saddr timeout 10s limit rate 10/second }`: nft_dynset. nft makes the set dynamic
    (NFT_SET_EVAL) and gives it the default size when it has none."""
    kids = list(t.children)
    op = "delete"
    if isinstance(kids[0], Token) and kids[0].type in _SET_STMT_OPS:
        op = _SET_STMT_OPS[kids.pop(0).type]
    name = kids.pop(0)
    s = ctx.table.sets.get(str(name))
    if s is None or s.map is not None:
        raise ctx.error(name, f"No such file or directory (set '{name}')")
    key, stmts = _stmt_key(ctx, t, kids, s.type, name)
    if "constant" in s.flags:  # nft_dynset_init: a constant set takes no update
        raise ctx.error(t, "Could not process rule: Device or resource busy")
    if (
        "interval" in s.flags
    ):  # the dynamic flag nft adds: no interval backend updates (EOPNOTSUPP at the set)
        loc = s.loc
        if loc is None or (loc.path or ctx.path) != ctx.path:
            raise ctx.error(t, "Could not process rule: Operation not supported")
        raise ConfigError(ctx.path, loc.line, loc.col, "Could not process rule: Operation not supported",
                          source=ctx.lines[loc.line - 1], length=loc.length)  # fmt: skip
    if isinstance(key, dict) and "elem" in key and "timeout" not in s.flags:
        raise ctx.error(t, "Could not process rule: Operation not supported (set without flags timeout)")
    set_stmt_dynamic(s)
    out: dict[str, Any] = {"op": op, "elem": key, "set": "@" + str(name)}
    if stmts:
        out["stmt"] = stmts
    return {"set": out}


def set_stmt_dynamic(s: Any) -> None:
    """A set a rule updates is dynamic (NFT_SET_EVAL), with the default size when it has none."""
    if "dynamic" not in s.flags:
        s.flags.append("dynamic")
    if s.size is None:
        s.size = NFT_SET_DEFAULT_SIZE


def stmt_meter(ctx: Ctx, t: Tree, prev: list) -> dict:
    """`meter NAME [size N] { key [timeout T] stmt }`: a dynamic set of its own, not listed with the
    table's sets; one statement (parser_bison.y › meter_stmt_alloc)."""
    kids = list(t.children)
    name = kids.pop(0)
    size = number(kids.pop(0)) if isinstance(kids[0], Token) else NFT_SET_DEFAULT_SIZE
    key, stmts = _stmt_key(ctx, t, kids, None, name)
    if len(stmts) != 1:
        raise ctx.error(t, "meter statement must have exactly one statement")
    return {"meter": {"key": key, "stmt": stmts[0], "size": size, "name": str(name)}}


def named_map(ctx: Ctx, ref: Tree, kdtype: str, verdict: bool) -> Any:
    """The map `@name` names, a verdict map or a data map as asked, keyed by `kdtype` (nft's errors)."""
    name = str(ref.children[0])
    m = ctx.table.sets.get(name)
    if m is None:
        raise ctx.error(ref, f"No such file or directory (map '{name}')")
    if m.map is None or (m.map == "verdict") != verdict:
        raise ctx.error(ref, "Expression is not a map")
    if m.type != kdtype:
        raise ctx.error(ref, f"datatype mismatch, expected {kdtype}, map has type {m.type}")
    return m


def map_lookup(ctx: Ctx, t: Tree, vtype: str, mask: Any = None) -> dict:
    """`ip saddr map { 1.1.1.1 : 0x1, * : 0x2 }` or `... map @m` as a value of type `vtype`; `mask`: the key
    is the selector's bitwise and with it (`ip6 saddr & ::ffff map { ... }`)."""
    key_typed(ctx, t.children[0])
    key, kdtype = ev.selector(ctx, t.children[0])
    if mask is not None:
        key = {"&": [key, mask]}
    data = t.children[1]
    if data.data == "set_ref":
        m = named_map(ctx, data, kdtype, verdict=False)
        name = m.name
        if m.map != vtype and not (vtype.startswith("ipv") and m.map.split(CONCAT_SEP)[0] == vtype):
            raise ctx.error(data, f"datatype mismatch, expected {concat_desc(vtype)}, map has type {m.map}")
        return {"map": {"key": key, "data": "@" + name}}
    pairs = []
    for e in data.children:
        if e.children[1].data == "verdict_stmt":
            raise ctx.error(e.children[1], f"datatype mismatch, expected {concat_desc(vtype)}, expression "
                            "has type verdict")  # fmt: skip
        x = rhs_ast(e.children[1], ctx.defines, ctx.error)
        dtype = (
            vtype + CONCAT_SEP + "inet_service"
            if isinstance(x, Concat) and vtype.startswith("ipv")
            else vtype
        )
        pairs.append((rhs_ast(e.children[0], ctx.defines, ctx.error), data_value(ctx.error, dtype, x)))
    return {"map": {"key": key, "data": {"set": ev.map_json(ctx.error, kdtype, pairs, True)}}}


__all__ = ["concat_selector", "map_lookup", "set_json", "stmt_meter", "stmt_set"]
