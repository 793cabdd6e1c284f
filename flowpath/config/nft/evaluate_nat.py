"""NAT statements: snat, dnat, masquerade and redirect, with nft's family checks.

The chain type and hook a NAT statement needs are the kernel's check, on every path from a base chain
(validate.py › stmt_allowed).

Linux: nftables src/evaluate.c › stmt_evaluate_nat, nat_evaluate_family, stmt_evaluate_nat_map and
evaluate_addr (the address family an inet rule implies); src/statement.c › nat_stmt_print.
"""

from __future__ import annotations

from typing import Any

from lark import Token, Tree

from flowpath.config.nft.ast import Ctx, Sym, number, rhs_ast
from flowpath.config.nft.evaluate import _is_l4_sel
from flowpath.config.nft.evaluate_set import key_parts, map_lookup
from flowpath.config.nft.evaluate_value import _prefix, sym_value
from flowpath.config.nft.segtree import interval_elems

_NAT_FLAGS = ("random", "fully-random", "persistent")  # the order nft prints them in


def _has_transport(prev: list) -> bool:
    for s in prev:
        m = s.get("match")
        if m and (
            _is_l4_sel(m["left"]) or m["left"].get("payload", {}).get("protocol") in ("tcp", "udp", "th")
        ):
            return True
    return False


def _nat_flags(t: Tree | None) -> Any:
    if t is None:
        return None
    got = {str(f.children[0]) for f in t.children}
    flags = [f for f in _NAT_FLAGS if f in got]
    return flags[0] if len(flags) == 1 else flags


def _nat_port(ctx: Ctx, t: Tree, prev: list) -> Any:
    if not _has_transport(prev):
        raise ctx.error(t, "transport protocol mapping is only valid after transport protocol match")
    vals = [sym_value(ctx.error, "inet_service", rhs_ast(v, ctx.defines, ctx.error)) for v in t.children
            if isinstance(v, Tree)]  # fmt: skip
    return vals[0] if len(vals) == 1 else {"range": vals}


def stmt_nat(ctx: Ctx, t: Tree, prev: list) -> dict:
    kind = str(t.children[0]).lower()
    kids = t.children[1:]
    family = None
    if isinstance(kids[0], Token):
        family, kids = str(kids[0]), kids[1:]
    netmap = isinstance(kids[0], Tree) and kids[0].data == "nat_prefix"
    kids = kids[1:] if netmap else kids
    to, flags = kids[0], (kids[1] if len(kids) > 1 else None)
    fam = ctx.table.family
    if family is not None and fam in ("ip", "ip6") and family != fam:
        raise ctx.error(t, f"conflicting protocols specified: {fam} vs. {family}")
    args: dict[str, Any] = {}
    if to.data == "nat_port_only":
        args["port"] = _nat_port(ctx, to.children[0], prev)
    elif to.data == "nat_map":  # dnat to tcp dport map { 80 : 192.168.1.2 } | map @m
        if family is None:
            family = fam if fam in ("ip", "ip6") else _l3_context(prev)
        if family is None:
            raise ctx.error(t.children[0], "ip or ip6 must be specified with address for inet tables.")
        args["addr"] = map_lookup(ctx, to, "ipv4_addr" if family == "ip" else "ipv6_addr")
        data = args["addr"]["map"]["data"]
        ports = " . " in ctx.table.sets[data[1:]].map if isinstance(data, str) else any(
            isinstance(v, dict) and "concat" in v for _, v in data["set"])  # fmt: skip
        key_l4 = [k for k in key_parts(args["addr"]["map"]["key"])
                  if k.get("payload", {}).get("protocol") in ("tcp", "udp")]  # fmt: skip
        if ports and not _has_transport(prev) and not key_l4:  # a tcp/udp key brings its dependency
            raise ctx.error(to, "transport protocol mapping is only valid after transport protocol match")
    else:
        addr = to.children[0]
        syms = [rhs_ast(v, ctx.defines, ctx.error) if isinstance(v, Tree) else Sym(str(v), v)
                for v in addr.children if isinstance(v, Tree) or v.type == "IPV6"]  # fmt: skip
        if family is None:
            family = fam if fam in ("ip", "ip6") else _l3_context(prev)
        if family is None:
            raise ctx.error(t.children[0], "ip or ip6 must be specified with address for inet tables.")
        dtype = "ipv4_addr" if family == "ip" else "ipv6_addr"
        slash = [c for c in addr.children if isinstance(c, Token) and c.type == "SLASH"]
        vals = [sym_value(ctx.error, dtype, s) for s in syms]
        if slash:
            args["addr"] = _prefix(ctx.error, dtype, syms[0], number(addr.children[-1]), addr)
        elif len(vals) == 1:
            args["addr"] = vals[0]
        else:  # an aligned range is listed as a prefix (segtree.c › interval_map_decompose)
            args["addr"] = interval_elems(dtype, [{"range": vals}], False, lambda m: ctx.error(addr, m))[0]
        if len(to.children) > 1:
            args["port"] = _nat_port(ctx, to.children[1], prev)
    f = _nat_flags(flags)
    # parser_bison.y › nat_stmt_args: flags written after `prefix to` replace its NF_NAT_RANGE_NETMAP, and
    # the listing (from the kernel's flags) has no prefix then
    netmap = netmap and not f
    if f or netmap:
        args["flags"] = f or "netmap"  # json.c › nat_flags_json
    if netmap:
        args["type_flags"] = "prefix"  # json.c › nat_type_flags_json
    if fam == "inet" or _family_listed(ctx, args.get("addr")):
        args = {"family": family, **args}
    return {kind: args}


def _family_listed(ctx: Ctx, addr: Any) -> bool:
    """nft lists the family of a NAT map whose data is an address . port concatenation or an
    interval (STMT_NAT_F_CONCAT, STMT_NAT_F_INTERVAL) in every table."""
    if not (isinstance(addr, dict) and "map" in addr):
        return False
    data = addr["map"]["data"]
    if isinstance(data, str):
        m = ctx.table.sets[data[1:]]
        return " . " in m.map or "interval" in m.flags
    return any(isinstance(v, dict) for _, v in data["set"])


def _l3_context(prev: list) -> str | None:
    """The network protocol earlier matches in the rule pin down (evaluate.c › nat_evaluate_family)."""
    for s in reversed(prev):
        m = s.get("match")
        if not m:
            continue
        left = m["left"]
        proto = left.get("payload", {}).get("protocol")
        if proto in ("ip", "icmp"):
            return "ip"
        if proto in ("ip6", "icmpv6"):
            return "ip6"
        if left == {"meta": {"key": "nfproto"}} and m["right"] in ("ipv4", "ipv6"):
            return {"ipv4": "ip", "ipv6": "ip6"}[m["right"]]
    return None


def stmt_masq_redir(kind: str) -> Any:
    def stmt(ctx: Ctx, t: Tree, prev: list) -> dict:
        args: dict[str, Any] = {}
        for c in (c for c in t.children if isinstance(c, Tree)):  # not the REDIRECT keyword
            if c.data == "nat_port":
                args["port"] = _nat_port(ctx, c, prev)
            elif c.data == "nat_port_map":
                if not _has_transport(prev):
                    raise ctx.error(c, "transport protocol mapping is only valid after transport protocol match")
                args["port"] = map_lookup(ctx, c, "inet_service")
            elif c.data == "nat_flags":
                args["flags"] = _nat_flags(c)
        return {kind: args or None}

    return stmt
