"""IPv6 extension header and TCP option selectors, and `reset tcp option`, as nft reads them.

Linux: nftables src/parser_bison.y › exthdr_expr (hbh_hdr_expr ... mh_hdr_expr, rt_hdr_expr beside
rt_expr), exthdr_exists_expr, tcp_hdr_expr's TCP OPTION forms, tcp_hdr_option_type and optstrip_stmt;
src/evaluate.c › expr_evaluate_exthdr (an IPv6 header needs the ip6 network header: refused in an ip
table) and __expr_evaluate_exthdr (the TCP option length bound). The JSON is what nft lists (exthdr.py).
"""

from __future__ import annotations

from lark import Token, Tree

from flowpath.config.nft import exthdr as X
from flowpath.config.nft.ast import Ctx, number


def exthdr_selector(ctx: Ctx, t: Tree) -> tuple[dict, str]:
    """`hbh nexthdr`, `srh sid[1]`, `rt seg-left` (rt_sel with a routing header field), `exthdr frag`."""
    if t.data == "exthdr_exists_sel":
        name, field, at = str(t.children[1]), None, t.children[1]
    elif t.data == "rt_sel":
        name, field, at = "rt", str(t.children[1]), t.children[1]
    else:
        name, at = str(t.children[0].children[0]), t.children[1]
        field = str(at) + (f"[{t.children[2]}]" if len(t.children) > 2 else "")
        allowed = X.EXTHDR_GRAMMAR.get(name, X.EXTHDR[name][1])
        if field.split("[")[0] not in {f.split("[")[0] for f in allowed}:
            raise ctx.error(at, "syntax error, unexpected string")
        if field not in X.EXTHDR[name][1]:  # an index past the templates nft has, or rt2's empty ones
            return {"exthdr": {"name": name, "field": field}}, "invalid"  # the value is refused
    if ctx.table.family == "ip":  # the network header is IPv4: expr_evaluate_exthdr
        raise ctx.error(t, "cannot use exthdr with ip")
    left = X.exthdr_json(name, field)
    return left, X.exthdr_type(left["exthdr"])


def tcpopt_kind(ctx: Ctx, tok: Token) -> tuple[int, int]:
    """parser_bison.y › tcp_hdr_option_type: (kind, sack block) of a name or a number up to 255."""
    if tok.type == "NUMBER":
        kind = number(tok)
        if kind > 255:
            raise ctx.error(tok, "value too large")
        return kind, 0
    if str(tok) in X.TCPOPT_SACK:
        return X.TCPOPT_KIND["sack"], X.TCPOPT_SACK[str(tok)]
    if str(tok) not in X.TCPOPT_KIND:
        raise ctx.error(tok, "syntax error, unexpected string")
    return X.TCPOPT_KIND[str(tok)], 0


def tcpopt_selector(ctx: Ctx, t: Tree) -> tuple[dict, str]:
    """`tcp option NAME [FIELD]` (no field: whether it is there) and `tcp option @KIND,OFFSET,LENGTH`."""
    if t.data == "tcpopt_raw_sel":
        (kind, _), off, n = (
            tcpopt_kind(ctx, t.children[1].children[0]),
            number(t.children[2]),
            number(t.children[3]),
        )
        left = X.tcpopt_json(kind, off, n)
        tmpl_len = n if "field" in left["tcp option"] else 0  # the unknown template's length is 0
    else:
        tok = t.children[1].children[0]
        kind, block = tcpopt_kind(ctx, tok)
        if len(t.children) < 3:
            return X.tcpopt_json(kind, 0, 8, present=True), "boolean"
        field = t.children[2]
        name = X.TCPOPT.get(kind, ("",))[0]
        if str(field) not in X.TCPOPT_GRAMMAR.get(name, ()) + ("length",) or (
            tok.type == "NUMBER" and str(field) != "length"
        ):
            what = (
                str(field) if str(field) in X.TCPOPT_FIELDS + tuple(X.TCPOPT_KIND) else "string"
            )  # nft keywords
            raise ctx.error(field, f"syntax error, unexpected {what}")
        tmpl = X.tcpopt_template(kind, str(field), block)
        if tmpl is None:  # `tcp option eol length`: a template nft leaves empty; the value is refused
            return {"tcp option": {"name": name, "field": str(field)}}, "invalid"
        (off, n), tmpl_len = tmpl, tmpl[1]
        left = X.tcpopt_json(kind, off, n)
    if off + tmpl_len > X.MAX_TCPOPTLEN:
        raise ctx.error(t, f"offset and size {off + tmpl_len} exceeds max tcp headerlen ({X.MAX_TCPOPTLEN})")
    if n == 0:
        raise ctx.error(t, "tcp option length must be > 0")
    return left, f"integer{n}"


def tcpopt_set_check(ctx: Ctx, t: Tree, opt: dict) -> None:
    """Linux: net/netfilter/nft_exthdr.c › nft_exthdr_tcp_set_init: whole 2- or 4-byte fields past the
    option's kind and length only (EOPNOTSUPP, which nft reports at the statement). `tcp option NAME`
    without a field is its kind byte there, which the kernel refuses the same way."""
    if "field" not in opt and "base" not in opt:
        raise ctx.error(t, "Could not process rule: Operation not supported")
    _, off, n = X.tcpopt_bits(opt)
    if off % 8 or n not in (16, 32) or off < 16:
        raise ctx.error(t, "Could not process rule: Operation not supported")


def stmt_optstrip(ctx: Ctx, t: Tree, prev: list) -> dict:
    """`reset tcp option NAME|KIND`: the option overwritten with NOPs (kernel: nft_exthdr_tcp_strip_eval)."""
    kind, _ = tcpopt_kind(ctx, t.children[1].children[0])
    return X.reset_json(kind)
