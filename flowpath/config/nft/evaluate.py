"""Rule statements to libnftables JSON, with nft's checks and the normal form `nft list` shows.

Linux: nftables src/evaluate.c (types, set and NAT checks, dependencies such as `reject with tcp reset`
needing `meta l4proto tcp`), src/netlink_delinearize.c and src/payload.c › payload_dependency_kill
(a `meta l4proto tcp` right before `tcp dport` is implied and not listed), src/segtree.c (intervals).
"""

from __future__ import annotations

from typing import Any

from lark import Token, Tree

from flowpath.config.nft import datatype as dt
from flowpath.config.nft import evaluate_payload as evp
from flowpath.config.nft.ast import Ctx, ListX, Masked, Prefix, Range, SetRef, SetX, Sym, number, rhs_ast
from flowpath.config.nft.evaluate_exthdr import (
    exthdr_selector,
    stmt_optstrip,
    tcpopt_selector,
    tcpopt_set_check,
)
from flowpath.config.nft.evaluate_fib import fib_selector, ipsec_selector
from flowpath.config.nft.evaluate_value import _bits, _int, _prefix, _range, sym_value
from flowpath.config.nft.exthdr import EXTHDR
from flowpath.config.nft.payload import dependency_kill
from flowpath.config.nft.payload_ll import link_update
from flowpath.config.nft.segtree import elem_bounds, interval_elems, is_interval_elem
from flowpath.errors import ConfigError

_OPS = {"NEG": "!", "EQ": "==", "NE": "!=", "LT": "<", "GT": ">", "LE": "<=", "GE": ">=", "EQ_W": "==", "NE_W": "!=",
        "LT_W": "<", "GT_W": ">", "LE_W": "<=", "GE_W": ">="}  # fmt: skip
# Linux: src/statement.c and evaluate.c › stmt_evaluate_verdict: statements flagged STMT_F_TERMINAL
_TERMINAL = ("reject_stmt", "nat_stmt", "masq_stmt", "redir_stmt")
_NOT_TERMINAL_VERDICTS = ("CONTINUE",)
NFTNL_UDATA_COMMENT_MAXLEN = 128  # libnftnl udata.h; parser_bison.y › comment_spec
_SETTABLE = {("meta", "mark"), ("meta", "priority"), ("ct", "mark"), ("meta", "pkttype"), ("meta", "nftrace"),
             ("ct", "zone"), ("ct", "label"), ("ct", "event")}  # fmt: skip


def _match(op: str, left: Any, right: Any) -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


# --- selectors ---------------------------------------------------------------------------------------
def selector(ctx: Ctx, t: Tree) -> tuple[dict, str]:
    """JSON selector and its datatype for meta_sel / meta_unq_sel / ct_sel / payload_sel."""
    fam = ctx.table.family
    if t.data == "concat_expr":
        return _es.concat_selector(ctx, t)
    if t.data == "meta_unq_sel":
        key = str(t.children[0].children[0])
        return {"meta": {"key": key}}, dt.META_KEYS[key]
    if t.data == "meta_sel":
        key = t.children[1]
        name = dt.META_ALIASES.get(str(key), str(key))
        if name not in dt.META_KEYS:
            raise ctx.error(key, "syntax error, unexpected string")
        if name == "nfproto" and fam != "inet":
            raise ctx.error(t, "meta nfproto is only useful in the inet family")
        if name in dt.META_BRIDGE and fam != "bridge":  # nft_meta_bridge.c: the bridge family's keys
            raise ctx.error(t, "Could not process rule: Operation not supported")
        return {"meta": {"key": name}}, dt.META_KEYS[name]
    if t.data in ("ct_sel", "ct_dir_sel"):
        return _keys.ct_selector(ctx, t)
    if t.data == "numgen_sel":
        return _keys.numgen_selector(ctx, t)
    if t.data in ("jhash_sel", "symhash_sel"):
        return _keys.hash_selector(ctx, t)
    if t.data == "fib_sel":
        return fib_selector(ctx, t)
    if t.data == "ipsec_sel":
        return ipsec_selector(ctx, t)
    if t.data in ("exthdr_sel", "exthdr_exists_sel") or (t.data == "rt_sel" and str(t.children[1]) in EXTHDR["rt"][1]):
        return exthdr_selector(ctx, t)
    if t.data == "rt_sel":
        return _keys.rt_selector(ctx, t)
    if t.data in ("tcpopt_sel", "tcpopt_raw_sel"):
        return tcpopt_selector(ctx, t)
    if t.data == "arp_addr_sel":  # `arp saddr ip`: the field is both words, as nft -j names it
        t = Tree("payload_sel", [Tree("proto", [t.children[0]]), " ".join(t.children[1].split())], t.meta)
    if t.data == "sctp_chunk_sel":
        return evp.sctp_chunk_selector(ctx, t)
    if t.data == "raw_sel":
        left, dtype, _ = evp.raw_selector(ctx, t)
        return left, dtype
    if t.data in ("socket_sel", "osf_sel"):
        return _stmt.socket_osf_selector(ctx, t)
    proto, field = str(t.children[0].children[0]), t.children[1]
    field = dt.PAYLOAD_ALIASES.get((proto, str(field)), field)
    if str(field) not in dt.PAYLOAD_FIELDS[proto]:
        raise ctx.error(field, "syntax error, unexpected string")
    l3 = {"ip": "ip", "ip6": "ip6"}.get(proto)  # icmp, icmpv6, igmp: an l4proto, in either family (as nft)
    if l3 and fam in ("ip", "ip6") and l3 != fam:
        raise ctx.error(t, f"conflicting protocols specified: {fam} vs. {l3}")
    if l3 and fam == "inet" and ctx.l3 and l3 != ctx.l3:  # `meta nfproto ipv6 ip saddr ...`
        raise ctx.error(t, f"conflicting protocols specified: {ctx.l3} vs. {l3}")
    return {"payload": {"protocol": proto, "field": str(field)}}, dt.PAYLOAD_FIELDS[proto][str(field)]


# --- values ------------------------------------------------------------------------------------------
def elem_value(err: Any, dtype: str, x: Any) -> Any:
    """JSON of one set element: value, range or prefix (concatenations and `*`: evaluate_set.py)."""
    if _es.needs_ext(dtype, [x]):
        return _es.elem_value(err, dtype, x)
    if isinstance(x, Sym):
        return sym_value(err, dtype, x)
    if isinstance(x, Range):
        return _range(err, dtype, x)
    if isinstance(x, Prefix):
        return _prefix(err, dtype, x.addr, x.length, x.tok)
    if isinstance(x, Masked) and isinstance(x.mask, Sym) and isinstance(x.value, Sym):
        return _prefix(err, dtype, x.value, _int(err, x.mask), x.tok)
    if isinstance(x, ListX) and dt.is_bitmask(dtype):  # flags OR-ed into one element: syn | ack
        out = sym_value(err, dtype, x.items[0])
        for i in x.items[1:]:
            out = {"|": [out, sym_value(err, dtype, i)]}
        return out
    raise err(x, "invalid set element")


def set_json(err: Any, dtype: str, elems: list[Any], anonymous: bool, merge: bool, interval: bool) -> list:
    """Elements of a set in the order nft lists them (sorted; intervals merged as segtree.c does)."""
    if _es.needs_ext(dtype, elems):
        return _es.set_json(err, dtype, elems, anonymous, merge, interval)
    values = [elem_value(err, dtype, x) for x in elems]
    if interval or any(is_interval_elem(v) for v in values):
        if not interval and not anonymous:
            raise err(elems[0], "You must add 'flags interval' to your set declaration if you want "
                      "to add prefix elements")  # fmt: skip
        return interval_elems(dtype, values, merge=anonymous or merge, err=lambda m: err(elems[0], m))
    out: dict[int, Any] = {}
    for v in values:
        out.setdefault(dt.value_num(dtype, v), v)
    return [out[k] for k in sorted(out)]


def set_elements(s: Any, existing: list, ast: Any, err: Any) -> list:
    """Elements of named set `s` after adding `ast` (a SetX) to `existing` JSON elements."""
    if not isinstance(ast, SetX):
        raise err(ast, "expected a set of elements")
    merged = [_json_to_ast(v) for v in existing] + list(ast.elems)
    out = set_json(err, s.type, merged, False, "auto-merge" in s.flags, "interval" in s.flags)
    if s.size is not None and len(out) > s.size and "interval" not in s.flags:
        # nf_tables_api.c › nft_add_set_elem: -ENFILE for the element past the set's size, in the
        # order written. (An interval set counts both ends of each interval: not modelled.)
        seen = {dt.value_num(s.type, v) for v in existing}
        for x in ast.elems:
            seen.add(dt.value_num(s.type, elem_value(err, s.type, x)))
            if len(seen) > s.size:
                raise err(x, "Could not process rule: Too many open files in system")
    return out


def verdict_json(t: Tree) -> dict:
    """{"accept": null} or {"jump": {"target": name}} from a verdict_stmt subtree (no chain check)."""
    kw = t.children[0]
    if kw.type in ("JUMP", "GOTO"):
        return {str(kw): {"target": str(t.children[1])}}
    return {str(kw): None}


def map_json(err: Any, dtype: str, pairs: list, interval: bool) -> list:
    """[key, data] elements sorted by key; interval keys as nft lists them, overlaps refused."""
    if _es.needs_ext(dtype, [k for k, _ in pairs]):
        return _es.map_json(err, dtype, pairs, interval)
    out = []
    for key, verdict in pairs:
        k = elem_value(err, dtype, key)
        if is_interval_elem(k):
            if not interval:
                raise err(key, "You must add 'flags interval' to your set declaration if you want "
                          "to add prefix elements")  # fmt: skip
            k = interval_elems(dtype, [k], False, lambda m, key=key: err(key, m))[0]
        out.append((elem_bounds(dtype, k), k, verdict))
    out.sort(key=lambda x: x[0])
    for a, b in zip(out, out[1:], strict=False):
        if b[0][0] <= a[0][1]:
            if a[0] == b[0]:
                raise err(pairs[0][0], "Could not process rule: File exists")
            raise err(pairs[0][0], "conflicting intervals specified")
    return [[k, v] for _, k, v in out]


def map_elements(m: Any, existing: list, pairs: list, err: Any, defines: dict | None = None) -> list:
    """Elements of map `m` after adding (key ast, verdict or data tree) pairs."""
    old = [(_json_to_ast(k), v) for k, v in existing]
    if m.map == "verdict":
        new = [(k, verdict_json(v)) for k, v in pairs]
    else:
        new = [(k, _es.map_data(err, m, v, defines or {})) for k, v in pairs]
    return map_json(err, m.type, old + new, "interval" in m.flags)


def _st_vmap(ctx: Ctx, t: Tree, prev: list) -> dict:
    _es.key_typed(ctx, t.children[0])
    left, dtype = selector(ctx, t.children[0])
    data = t.children[1]
    if data.data == "set_ref":
        return {"vmap": {"key": left, "data": "@" + _es.named_map(ctx, data, dtype, verdict=True).name}}
    pairs = []
    for e in data.children:
        verdict = e.children[1]
        if verdict.data != "verdict_stmt":
            raise ctx.error(verdict, "datatype mismatch, expected verdict, expression has type "
                            f"{dt.type_desc(dtype)}")  # fmt: skip
        if len(verdict.children) == 2 and str(verdict.children[1]) not in ctx.table.chains:
            # nft marks the element's key
            raise ctx.error(e.children[0], "Could not process rule: No such file or directory")
        pairs.append((rhs_ast(e.children[0], ctx.defines, ctx.error), verdict_json(verdict)))
    return {"vmap": {"key": left, "data": {"set": map_json(ctx.error, dtype, pairs, True)}}}


def _json_to_ast(v: Any) -> Any:
    if v == "*" or (isinstance(v, dict) and ("concat" in v or "elem" in v)):
        return _es.json_to_ast(v)
    if isinstance(v, dict) and "range" in v:
        a, b = v["range"]
        return Range(Sym(str(a), None), Sym(str(b), None), None)
    if isinstance(v, dict) and "prefix" in v:
        return Prefix(Sym(str(v["prefix"]["addr"]), None), v["prefix"]["len"], None)
    return Sym(str(v), None, quoted=isinstance(v, str))


def rhs_json(ctx: Ctx, left: dict, dtype: str, op: str | None, rhs: Any) -> dict:
    """The match statement for `left op rhs` (op None = implicit)."""
    err = ctx.error
    if isinstance(rhs, Masked) and dt.is_bitmask(dtype):
        mask = _bits(err, dtype, rhs.mask)
        return _match(op or "==", {"&": [left, mask]}, _bits(err, dtype, rhs.value))
    if op == "!" and not dt.has_bitmask_base(dtype):  # evaluate.c › expr_evaluate_relational (OP_NEG)
        raise err(rhs, "negation can only be used with singleton bitmask values")
    if isinstance(rhs, (Sym, ListX)) and dt.has_bitmask_base(dtype):
        return evp.binop_postprocess(dtype, {"op": op or "in", "left": left, "right": _bits(err, dtype, rhs)})
    if isinstance(rhs, SetRef):
        s = ctx.table.sets.get(rhs.name)
        if s is None or s.map is not None:
            raise err(rhs.tok, f"No such file or directory (set '{rhs.name}')")
        if s.type != dtype and not (s.type == "ifname" and dtype == "ifname"):
            raise err(rhs.tok, f"datatype mismatch, expected {dtype}, set has type {s.type}")
        return _match(op or "==", left, "@" + rhs.name)
    if isinstance(rhs, SetX):
        if op not in (None, "==", "!="):
            raise err(rhs.tok, "Relational expression with a set requires == or !=")
        if len(rhs.elems) == 1 and "concat" not in left:  # nft turns a one-element anonymous set into a
            # plain value (not a concatenation's: that stays a set)
            return _match(op or "==", left, elem_value(err, dtype, rhs.elems[0]))
        return _match(op or "==", left, {"set": set_json(err, dtype, rhs.elems, True, True, False)})
    if isinstance(rhs, ListX):
        raise err(rhs.tok, "a list of values is only valid for bitmask types; use a set { a, b }")
    return _match(op or "==", left, elem_value(err, dtype, rhs))


# --- statements --------------------------------------------------------------------------------------
def rule_evaluate(ctx: Ctx, t: Tree) -> tuple[list, str | None]:
    """JSON statements and comment of one rule, in nft's listed form."""
    out: list[dict] = []
    comment = None
    ctx.rule = t
    terminal = None
    for st in t.children:
        if st.data == "rule_comment":
            comment = st.children[0][1:-1]
            if len(comment) > NFTNL_UDATA_COMMENT_MAXLEN:
                raise ctx.error(st.children[0], f"comment too long, {NFTNL_UDATA_COMMENT_MAXLEN} characters "
                                "maximum allowed")  # fmt: skip
            continue
        if terminal is not None:  # evaluate.c › rule_evaluate
            raise ctx.error(st, "Statement after terminal statement has no effect")
        if st.data in _TERMINAL or (
            st.data == "verdict_stmt" and st.children[0].type not in _NOT_TERMINAL_VERDICTS
        ):
            terminal = st
        stmt = _STMT[st.data](ctx, st, out)
        if stmt is not None:
            out.append(stmt)
    return dependency_kill(ctx.table.family, out), comment


def _st_match(ctx: Ctx, t: Tree, prev: list) -> dict:
    left, dtype = selector(ctx, t.children[0])
    for part in _es.key_parts(left):
        _l4_conflict(ctx, t.children[0], part)
    evp.payload_dependency(ctx, t.children[0], left, prev)
    op = None
    rest = t.children[1:]
    if isinstance(rest[0], Tree) and rest[0].data == "relop":
        op, rest = _OPS[rest[0].children[0].type], rest[1:]
    rhs = rhs_ast(rest[0], ctx.defines, ctx.error)
    if isinstance(rhs, (SetRef, SetX)):
        _es.key_typed(ctx, t.children[0])
    m = rhs_json(ctx, left, dtype, op, rhs)
    if t.children[0].data == "raw_sel":
        m = evp.raw_match(ctx, t.children[0], rest[0], m)
    if "concat" in left:  # each part's header pins its protocol (a set's elements do not)
        if not isinstance(rhs, (SetRef, SetX)):  # evaluate.c › expr_evaluate_relational
            raise ctx.error(t.children[0], "Use concatenations with sets and maps, not singleton values")
        for part in left["concat"]:
            _l4_update(ctx, part, "&", None, t.children[0])
    else:
        _l4_update(ctx, left, op, rhs, t.children[0])
    link_update(ctx, t.children[0], left, op, m["match"]["right"])
    _keys.nfproto_update(ctx, left, op, rhs)
    return m


def _st_binop(ctx: Ctx, t: Tree, prev: list) -> dict:
    left, dtype = selector(ctx, t.children[0])
    op, rest = None, t.children[3:]
    if isinstance(rest[0], Tree) and rest[0].data == "relop":
        op, rest = _OPS[rest[0].children[0].type], rest[1:]
    return _keys.binop_match(ctx, left, dtype, t, op, rhs_ast(rest[0], ctx.defines, ctx.error))


def _st_masked(ctx: Ctx, t: Tree, prev: list) -> dict:
    left, dtype = selector(ctx, t.children[0])
    _l4_conflict(ctx, t.children[0], left)
    evp.payload_dependency(ctx, t.children[0], left, prev)
    _l4_update(ctx, left, "&", None, t.children[0])
    link_update(ctx, t.children[0], left, "&", None)
    mask_items = [rhs_ast(v, ctx.defines, ctx.error) for v in t.children[1].children]
    mask = ListX(mask_items, t.children[1]) if len(mask_items) > 1 else mask_items[0]
    op = None
    rest = t.children[2:]
    if isinstance(rest[0], Tree) and rest[0].data == "relop":
        op, rest = _OPS[rest[0].children[0].type], rest[1:]
    if op == "!":  # evaluate.c › expr_evaluate_relational; nft marks the binop
        raise ctx.error(t, "cannot combine negation with binary expression")
    value = rhs_ast(rest[0], ctx.defines, ctx.error)
    if op == "!":  # evaluate.c › expr_evaluate_relational: OP_NEG takes a flags selector, not an expression
        raise ctx.error(t, "Relational expression with ! requires a bitmask selector")
    if dt.is_bitmask(dtype):
        mask_v = _bits(ctx.error, dtype, mask)
        if isinstance(value, SetX):
            right = {"set": set_json(ctx.error, dtype, value.elems, True, True, False)}
        else:
            right = _bits(ctx.error, dtype, value)
        return evp.binop_postprocess(dtype, {"op": op or "==", "left": {"&": [left, mask_v]}, "right": right})
    m = sym_value(ctx.error, dtype, evp.binop_operand(dtype, mask))
    v = sym_value(ctx.error, dtype, evp.binop_operand(dtype, value))
    return evp.binop_postprocess(dtype, {"op": op or "==", "left": {"&": [left, m]}, "right": v})



def _st_exists(ctx: Ctx, t: Tree, prev: list) -> dict:
    """`fib ... oif exists`, `meta ipsec missing`, `rt ipsec exists`: a boolean the expression yields.

    Linux: nftables src/evaluate.c › a boolean right-hand side on fib's oif sets NFTA_FIB_F_PRESENT
    (nft_fib.c stores whether a route was found); `meta ipsec` and `rt ipsec` are booleans themselves.
    """
    left, dtype = selector(ctx, t.children[0])
    kind = next(iter(left))
    if kind == "fib" and left["fib"]["result"] != "oif":
        # nft sets NFTA_FIB_F_PRESENT; nft_fib.c › nft_fib_init takes it with the oif result only
        raise ctx.error(t.children[0], "Could not process rule: Invalid argument")
    if dtype != "boolean" and kind != "fib":
        raise ctx.error(t.children[1], f"datatype mismatch, expected {dt.type_desc(dtype)}, expression has type boolean type")
    return _match("==", left, t.children[1].type == "EXISTS")


def _st_mangle(ctx: Ctx, t: Tree, prev: list) -> dict:
    if _obj.is_ct_objref(t):  # `ct helper set "ftp1"` names an object
        return _obj.stmt_ct_objref(ctx, t, prev)
    left, dtype = selector(ctx, t.children[0])
    kind, key = next(iter(left.items()))
    if kind == "tcp option":
        tcpopt_set_check(ctx, t, key)
    elif kind == "payload" and "base" in key:
        raise ctx.error(t.children[0], "a raw payload cannot be set by flowpath")
    elif kind != "payload" and (kind, key.get("key")) not in _SETTABLE:
        raise ctx.error(t.children[0], "this expression cannot be set by flowpath")
    value = _keys.set_value(ctx, t.children[1], dtype)
    if isinstance(value, dict) and "rt" in value and (kind != "tcp option" or value["rt"]["key"] != "mtu"):
        raise ctx.error(t.children[1], "rt mtu can only set a tcp option")
    return {"mangle": {"key": left, "value": value}}


_LIMIT_PER = ("second", "minute", "hour", "day", "week")
_BYTE_UNITS = {"bytes": 1, "kbytes": 1024, "mbytes": 1024 * 1024}


def _byte_rate(n: int) -> tuple[int, str]:
    """Linux: nftables src/statement.c › get_rate: the largest unit that divides the byte count."""
    for unit in ("mbytes", "kbytes"):
        if n and n % _BYTE_UNITS[unit] == 0:
            return n // _BYTE_UNITS[unit], unit
    return n, "bytes"


def _st_limit(ctx: Ctx, t: Tree, prev: list) -> dict:
    """Linux: src/statement.c › limit_stmt_print / json.c › limit_stmt_json."""
    kids = list(t.children)
    inv = bool(kids) and isinstance(kids[0], Token) and kids[0].type == "OVER"
    if inv:
        kids = kids[1:]
    burst_t = kids.pop() if isinstance(kids[-1], Tree) else None
    rate, per = number(kids[0]), kids[-1]
    unit = str(kids[1]) if kids[1].type == "WORD" else "packets"
    if str(per) not in _LIMIT_PER:
        raise ctx.error(per, f"wrong rate format: {per}")
    if unit != "packets" and unit not in _BYTE_UNITS:
        raise ctx.error(kids[1], f"wrong rate format: {unit}")
    if rate == 0:
        raise ctx.error(kids[0], "limit rate must be > 0")
    burst, burst_unit = (5, "packets") if unit == "packets" else (0, "bytes")
    if burst_t is not None:
        burst = number(burst_t.children[0])
        burst_unit = str(burst_t.children[1]) if len(burst_t.children) > 1 else "packets"
        if (unit == "packets") != (burst_unit == "packets") or (
            unit != "packets" and burst_unit not in _BYTE_UNITS
        ):
            raise ctx.error(burst_t, "burst unit does not match the rate")
    out: dict[str, Any] = {"rate": rate, "burst": burst, "per": str(per)}
    if unit != "packets":
        out["rate"], unit = _byte_rate(rate * _BYTE_UNITS[unit])
        out["burst"], burst_unit = _byte_rate(burst * _BYTE_UNITS[burst_unit])
    if inv:
        out["inv"] = True
    if unit != "packets":
        out.update(rate_unit=unit, burst_unit=burst_unit)
    return {"limit": out}


def _st_counter(ctx: Ctx, t: Tree, prev: list) -> dict:
    n = [number(c) for c in t.children]
    if t.data == "counter_bp":  # `counter bytes N packets N`
        n.reverse()
    return {"counter": {"packets": n[0] if n else 0, "bytes": n[1] if n else 0}}


def _st_verdict(ctx: Ctx, t: Tree, prev: list) -> dict:
    kw = t.children[0]
    if kw.type in ("JUMP", "GOTO"):
        target = t.children[1]
        chain = ctx.table.chains.get(str(target))
        if chain is None:
            raise ctx.error(target, "Could not process rule: No such file or directory")
        if chain.is_base:
            raise ctx.error(target, "Could not process rule: Operation not supported")
        return {str(kw): {"target": str(target)}}
    return {str(kw): None}


# Linux: nftables src/proto.c: the transport headers nft knows by name (others are "unknown")
_L4_DESC = {"tcp": "tcp", "udp": "udp", "udplite": "udplite", "sctp": "sctp", "dccp": "dccp", "icmp": "icmp",
            "icmpv6": "icmpv6", "ipv6-icmp": "icmpv6", "igmp": "igmp", "ah": "ah", "esp": "esp", "comp": "comp"}  # fmt: skip


def _l4_update(ctx: Ctx, left: dict, op: str | None, rhs: Any, sel: Tree) -> None:
    """The transport protocol the rule's matches so far pin down (nft's PROTO_BASE_TRANSPORT_HDR context).

    A payload of tcp, udp, icmp or icmpv6 sets it; so does `meta l4proto`, `ip protocol` or `ip6 nexthdr`
    == a value, or each value of a set in the order written (the last one stays). `th`, tcp options,
    `!=`, ranges and named sets leave it alone. Linux: nftables src/payload.c › payload_expr_pctx_update,
    src/meta.c › meta_expr_pctx_update, src/expression.c › relational_expr_pctx_update.
    """
    if "&" in left:
        left = left["&"][0]
    p = left.get("payload", {}).get("protocol")
    if "sctp chunk" in left:
        p = "sctp"
    if p in dt.L4_PROTO:
        ctx.l4 = p
    elif _is_l4_sel(left) and op in (None, "=="):
        if isinstance(rhs, Sym) and ctx.l4 in dt.L4_PROTO:
            v = sym_value(ctx.error, "inet_proto", rhs)
            if isinstance(v, str) and _L4_DESC.get(v, "unknown") != ctx.l4:
                # deviation: nft takes it (a rule that never matches); its listing folds both
                # protocol matches into their headers' dependencies, and those then conflict
                raise ctx.error(sel, f"conflicting protocols specified: {ctx.l4} vs. {_L4_DESC.get(v, v)}")
        for x in rhs.elems if isinstance(rhs, SetX) else [rhs]:
            if isinstance(x, Sym):
                v = sym_value(ctx.error, "inet_proto", x)
                ctx.l4 = _L4_DESC.get(v, "unknown") if isinstance(v, str) else "unknown"


def _l4_conflict(ctx: Ctx, sel: Tree, left: dict) -> None:
    """Linux: nftables src/evaluate.c › resolve_protocol_conflict: a transport header after a match that
    pinned another transport protocol."""
    if "&" in left:
        left = left["&"][0]
    p = left.get("payload", {}).get("protocol")
    if "sctp chunk" in left:
        p = "sctp"
    if p in dt.L4_PROTO and ctx.l4 not in (None, p):
        raise ctx.error(sel, f"conflicting protocols specified: {ctx.l4} vs. {p}")


def _is_l4_sel(left: dict) -> bool:
    return left == {"meta": {"key": "l4proto"}} or left in (
        {"payload": {"protocol": "ip", "field": "protocol"}},
        {"payload": {"protocol": "ip6", "field": "nexthdr"}},
    )


def _st_notrack(ctx: Ctx, t: Tree, prev: list) -> dict:
    if ctx.chain.hook not in (None, "prerouting", "output"):
        raise ctx.error(
            t, "Could not process rule: Operation not supported (notrack outside prerouting/output)"
        )
    return {"notrack": None}


def _st_flow(ctx: Ctx, t: Tree, prev: list) -> dict:
    name = t.children[1]
    if str(name) not in ctx.table.flowtables:
        raise ctx.error(t, "Could not process rule: No such file or directory")
    # the forward hook is the kernel's check (validate.py), on every path from a base chain
    return {"flow": {"op": "add", "flowtable": "@" + str(name)}}


_STMT = {
    "match_stmt": _st_match,
    "vmap_stmt": _st_vmap,
    "masked_match": _st_masked,
    "binop_match": _st_binop,
    "mangle_stmt": _st_mangle,
    "optstrip_stmt": stmt_optstrip,
    "sctp_chunk_exists": lambda ctx, t, prev: evp.sctp_chunk_exists(ctx, t),
    "exists_stmt": _st_exists,
    "counter_stmt": _st_counter,
    "limit_stmt": _st_limit,
    "verdict_stmt": _st_verdict,
    "notrack_stmt": _st_notrack,
    "flow_stmt": _st_flow,
}


from flowpath.config.nft import evaluate_keys as _keys  # noqa: E402  (it reads this module's helpers)
from flowpath.config.nft import evaluate_nat as _nat  # noqa: E402  (it reads this module's helpers)
from flowpath.config.nft import evaluate_obj as _obj  # noqa: E402
from flowpath.config.nft import evaluate_set as _es  # noqa: E402  (so does this one)
from flowpath.config.nft import evaluate_stmt as _stmt  # noqa: E402

_STMT.update(set_stmt=_es.stmt_set, meter_stmt=_es.stmt_meter)
_STMT.update(nat_stmt=_nat.stmt_nat, masq_stmt=_nat.stmt_masq_redir("masquerade"),
             redir_stmt=_nat.stmt_masq_redir("redirect"), ct_count_stmt=lambda ctx, t, prev: _keys.ct_count(ctx, t))  # fmt: skip
_STMT.update(log_stmt=_stmt.stmt_log, reject_stmt=_stmt.stmt_reject)
_STMT.update(counter_bp=_st_counter, quota_stmt=_obj.stmt_quota,
             objref_stmt=_obj.stmt_objref, synproxy_stmt=_obj.stmt_synproxy, queue_stmt=_stmt.stmt_queue,
             tproxy_stmt=_stmt.stmt_tproxy, dup_stmt=_stmt.stmt_dup, fwd_stmt=_stmt.stmt_dup)  # fmt: skip

__all__ = ["rule_evaluate", "set_elements", "ConfigError"]
