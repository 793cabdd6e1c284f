"""Payload selectors beyond the plain `proto field` ones, and the forms nft gives payload matches.

Linux: nftables src/parser_bison.y › payload_raw_expr and sctp_chunk_expr (src/sctp_chunk.c),
src/payload.c › payload_gen_icmp_dependency (an ICMP field that means something for some types only),
src/netlink_delinearize.c › relational_binop_postprocess (how `x & mask op value` reads back: flags
tests, prefixes, a mask that keeps every bit) and src/payload.c › payload_expr_complete (a raw `@th`
load that is a known field of the transport header nft knows is there).
"""

from __future__ import annotations

from typing import Any

from lark import Tree

from flowpath.config.nft import datatype as dt
from flowpath.config.nft.ast import Ctx, Sym, number

# Linux: include/payload.h › enum proto_bases; `ih` is the inner header (NFT_PAYLOAD_INNER_HEADER)
RAW_BASES = ("ll", "nh", "th", "ih")
# Linux: src/proto.c › proto_th: the fields every transport header shares, as (bit offset, bits)
_TH_FIELDS = {(0, 16): "sport", (16, 16): "dport"}
NFT_REG_SIZE_BITS = 128  # a raw load fills at most one 16-byte register (NFT_REG_SIZE)


def sctp_chunk_selector(ctx: Ctx, t: Tree) -> tuple[dict, str]:
    """`sctp chunk NAME FIELD`: {"sctp chunk": {"name", "field"}}, an integer of the field's width."""
    name, field = t.children[1], t.children[2]
    if str(name) not in dt.SCTP_CHUNKS:
        raise ctx.error(name, "syntax error, unexpected string")
    where = dt.sctp_chunk_field(str(name), str(field))
    if where is None:
        raise ctx.error(field, "syntax error, unexpected string")
    return {"sctp chunk": {"name": str(name), "field": str(field)}}, f"integer{where[1]}"


def sctp_chunk_exists(ctx: Ctx, t: Tree) -> dict:
    """`sctp chunk NAME exists|missing`: NFT_EXTHDR_F_PRESENT on the chunk's type."""
    name = t.children[1]
    if str(name) not in dt.SCTP_CHUNKS:
        raise ctx.error(name, "syntax error, unexpected string")
    left = {"sctp chunk": {"name": str(name)}}
    return {"match": {"op": "==", "left": left, "right": t.children[2].type == "EXISTS"}}


def raw_selector(ctx: Ctx, t: Tree) -> tuple[dict, str, int]:
    """`@base,offset,len`: the JSON load, its type (an integer listed in hex) and the mask a load not on
    byte bounds needs (0: none). nft widens such a load to whole bytes and masks it:
    `@ll,0,1 1` reads back as `@ll,0,8 & 0x80 == 0x80`."""
    base, off_t, len_t = t.children
    if str(base) not in RAW_BASES:
        raise ctx.error(base, "syntax error, unexpected string")
    off, n = number(off_t), number(len_t)
    if n == 0 or n > NFT_REG_SIZE_BITS:
        raise ctx.error(len_t, f"raw payload length {n} is invalid: 1 to {NFT_REG_SIZE_BITS} bits")
    if str(base) == "th" and ctx.l4 is not None and (off, n) in _TH_FIELDS:
        return {"payload": {"protocol": "th", "field": _TH_FIELDS[off, n]}}, "inet_service", 0
    if off % 8 == 0 and n % 8 == 0:
        return {"payload": {"base": str(base), "offset": off, "len": n}}, f"hex{n}", 0
    first, last = off // 8, (off + n - 1) // 8
    width = (last - first + 1) * 8
    shift = width - (off % 8) - n
    left = {"payload": {"base": str(base), "offset": first * 8, "len": width}}
    return left, f"hex{n}", ((1 << n) - 1) << shift


def raw_match(ctx: Ctx, sel: Tree, rhs: Tree, m: dict) -> dict:
    """A raw selector's match: off byte bounds, the widened load masked and the value moved to its bits."""
    left, _, mask = raw_selector(ctx, sel)
    if not mask:
        return m
    value = m["match"]["right"]
    if not isinstance(value, int):
        raise ctx.error(rhs, "a raw payload off byte bounds compares with a single value only")
    shift = (mask & -mask).bit_length() - 1
    return {"match": {"op": m["match"]["op"], "left": {"&": [left, mask]}, "right": value << shift}}


def binop_operand(dtype: str, s: Any) -> Any:
    """A number where an address is expected, as in `ip saddr & 0xff == 1` (nft takes the integer)."""
    if isinstance(s, Sym) and dtype in ("ipv4_addr", "ipv6_addr") and s.text[:1].isdigit():
        try:
            n = int(s.text, 0)
        except ValueError:
            return s
        if 0 <= n < 1 << dt.type_width(dtype):
            return Sym(str(dt.num_value(dtype, n)), s.tok)
    return s


def payload_dependency(ctx: Ctx, sel: Tree, left: dict, prev: list) -> None:
    """The dependencies nft writes before a payload match and lists (payload.c, evaluate.c)."""
    icmp_dependency(ctx, sel, left, prev)
    igmp_dependency(ctx, left, prev)


def icmp_dependency(ctx: Ctx, sel: Tree, left: dict, prev: list) -> None:
    """Linux: src/payload.c › payload_gen_icmp_dependency: echo's id and sequence need `icmp type
    { echo-reply, echo-request }` (nft lists it), mtu, gateway and max-delay one type (nft does not
    list it; the datapath checks it, nft_expr.py). A type matched before, other than theirs, conflicts."""
    p = left.get("payload", {})
    dep = dt.ICMP_DEP.get((p.get("protocol"), p.get("field")))
    if dep is None:
        return
    type_left = {"payload": {"protocol": p["protocol"], "field": "type"}}
    typed = [s["match"] for s in prev if s.get("match", {}).get("left") == type_left]
    if isinstance(dep, tuple):
        if not typed:
            prev.append({"match": {"op": "==", "left": type_left, "right": {"set": list(dep)}}})
        return
    for m in typed:
        if m["op"] == "==" and isinstance(m["right"], (str, int)) and m["right"] != dep:
            raise ctx.error(
                sel, f"conflicting protocols specified: {p['protocol']} type {m['right']} vs. {dep}"
            )


def igmp_dependency(ctx: Ctx, left: dict, prev: list) -> None:
    """In an inet table, igmp needs `meta nfproto ipv4`, which nft 1.0.6 lists (unlike icmp's)."""
    if ctx.table.family != "inet" or left.get("payload", {}).get("protocol") != "igmp":
        return
    dep = {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv4"}}
    if dep not in prev:
        prev.append(dep)


def _or_tree(flags: list) -> Any:
    """nft's JSON for OR-ed flags in a binop: {"|": [{"|": [a, b]}, c]}."""
    out = flags[0]
    for f in flags[1:]:
        out = {"|": [out, f]}
    return out


def _flags_num(dtype: str, v: Any) -> int:
    n = 0
    for f in v if isinstance(v, list) else [v]:
        n |= dt.value_num(dtype, f)
    return n


def binop_postprocess(dtype: str, m: dict) -> dict:
    """A match as nft reads it back from the kernel (netlink_delinearize.c › relational_binop_postprocess).

    For a bitmask type, `x & flags != 0` is the implicit flags test (`tcp flags syn,ack`), `x & flags ==
    0` its negation (`tcp flags ! syn,ack`), and a mask that keeps every bit goes away (`tcp flags ==
    0xff`); several tcp flags compared with == or != are one number (`tcp flags == 0x12`). For an address,
    a mask that is a prefix makes a prefix (`ip saddr 255.255.0.0/16`).
    """
    op, left, right = m["op"], m["left"], m["right"]
    if "&" not in left:
        if dtype == "tcp_flag" and op in ("==", "!=") and isinstance(right, list):
            right = dt.num_value(dtype, _flags_num(dtype, right))
        return {"match": {"op": op, "left": left, "right": right}}
    sel, mask = left["&"]
    if dt.is_bitmask(dtype):
        full = (1 << dt.type_width(dtype)) - 1
        mask_n = _flags_num(dtype, mask)
        if right == 0 and op in ("==", "!="):
            return {"match": {"op": "in" if op == "!=" else "!", "left": sel, "right": mask}}
        if mask_n == full and not isinstance(right, dict):
            return binop_postprocess(dtype, {"op": op, "left": sel, "right": right})
        if isinstance(right, dict) and "set" in right and isinstance(mask, list):
            return {"match": {"op": op, "left": {"&": [sel, _or_tree(mask)]}, "right": right}}
        return {"match": m}
    if dt.prefix_ok(dtype) and op == "==" and not isinstance(right, dict):
        width, n = dt.type_width(dtype), dt.value_num(dtype, mask)
        length = bin(n).count("1")
        if n == ((1 << width) - 1) ^ ((1 << (width - length)) - 1) and not dt.value_num(dtype, right) & ~n:
            return {"match": {"op": op, "left": sel, "right": {"prefix": {"addr": right, "len": length}}}}
    return {"match": m}
