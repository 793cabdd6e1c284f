"""fib and ipsec selectors: `fib FLAG [. FLAG] RESULT` and `ipsec in|out [spnum N] KEY`, as nft reads them.

Linux: nftables src/parser_bison.y › fib_expr, fib_tuple, xfrm_expr and xfrm_spnum (the checks nft makes
while parsing), src/fib.c and src/xfrm.c (the JSON and listing forms). The hooks each may run at are
the kernel's checks (validate.py › expr_hooks).
"""

from __future__ import annotations

from lark import Tree

from flowpath.config.nft import datatype as dt
from flowpath.config.nft.ast import Ctx, number

XFRM_MAX_DEPTH = 6  # include/net/xfrm.h


def fib_selector(ctx: Ctx, t: Tree) -> tuple[dict, str]:
    """`fib FLAG [. FLAG ...] RESULT`. Linux: nftables src/parser_bison.y › fib_expr (the flag checks,
    marking the tuple) and src/fib.c; the flags are listed in their NFTA_FIB_F_* bit order."""
    tup, result = t.children[1], t.children[2]
    words = tup.children if isinstance(tup, Tree) else [tup]
    flags = set()
    for w in words:
        if str(w) not in dt.FIB_FLAGS:
            raise ctx.error(w, "syntax error, unexpected string, expecting saddr or daddr or mark or iif or oif")
        flags.add(str(w))
    if str(result) not in dt.FIB_RESULT:
        raise ctx.error(result, "syntax error, unexpected string, expecting type or oif or oifname")
    if not flags & {"saddr", "daddr"}:
        raise ctx.error(tup, "fib: need either saddr or daddr")
    if {"saddr", "daddr"} <= flags:
        raise ctx.error(tup, "fib: saddr and daddr are mutually exclusive")
    if {"iif", "oif"} <= flags:
        raise ctx.error(tup, "fib: iif and oif are mutually exclusive")
    ordered = [f for f in dt.FIB_FLAGS if f in flags]
    return {"fib": {"result": str(result), "flags": ordered}}, dt.FIB_RESULT[str(result)]


def ipsec_selector(ctx: Ctx, t: Tree) -> tuple[dict, str]:
    """`ipsec in|out [spnum N] KEY`. Linux: nftables src/parser_bison.y › xfrm_expr, src/xfrm.c."""
    dir_, rest = t.children[1], t.children[2:]
    if str(dir_) not in ("in", "out"):
        raise ctx.error(dir_, "Could not parse boolean type")  # nft's wording: the direction is a boolean
    spnum = 0
    if rest[0].data == "ipsec_spnum":
        spnum = number(rest[0].children[0])
        if spnum > 255:  # parser_bison.y › xfrm_spnum
            raise ctx.error(rest[0], "value too large")
        if spnum >= XFRM_MAX_DEPTH:
            # nft_xfrm.c › nft_xfrm_get_init: ERANGE, which nft marks on the expression. Deviation: raised
            # as the rule is evaluated, where nft would first report the file's other evaluation errors
            raise ctx.error(t, "Could not process rule: Numerical result out of range")
        rest = rest[1:]
    key = rest[0].children
    if len(key) == 2:
        fam, field = str(key[0]), key[1]
        if str(field) not in ("saddr", "daddr"):
            raise ctx.error(field, "syntax error, unexpected string, expecting saddr or daddr")
        sel = {"key": str(field), "family": fam, "dir": str(dir_), "spnum": spnum}
        return {"ipsec": sel}, dt.IPSEC_ADDR[fam]
    name = key[0]
    if str(name) not in ("reqid", "spi"):
        raise ctx.error(name, f"syntax error, unexpected {name}, expecting ip or ip6 or spi or reqid")
    return {"ipsec": {"key": str(name), "dir": str(dir_), "spnum": spnum}}, dt.IPSEC_KEYS[str(name)]
