"""The log, reject, queue, tproxy and dup statements, with nft's checks; the socket and osf expressions.

Linux: nftables src/evaluate.c › stmt_evaluate_log, stmt_evaluate_reject, stmt_evaluate_queue,
stmt_evaluate_tproxy and stmt_evaluate_dup; src/statement.c › log_stmt_print, queue_stmt_print,
tproxy_stmt_print, dup_stmt_print (printer_stmt.py lists them); src/socket.c and src/osf.c (parser_bison.y ›
socket_expr, osf_expr, osf_ttl).
"""

from __future__ import annotations

from typing import Any

from lark import Token, Tree

from flowpath.config.nft import datatype as dt
from flowpath.config.nft.ast import Ctx, Sym, number, rhs_ast
from flowpath.config.nft.evaluate import _is_l4_sel, _match, selector
from flowpath.config.nft.evaluate_nat import _l3_context, _nat_port
from flowpath.config.nft.evaluate_set import map_lookup
from flowpath.config.nft.evaluate_value import sym_value
from flowpath.config.nft.payload_ll import reject_evaluate

REJECT_DEFAULT = {"ip": "icmp", "ip6": "icmpv6", "inet": "icmpx", "bridge": "icmpx", "netdev": "icmpx"}
QUEUE_FLAGS = ("bypass", "fanout")  # NFT_QUEUE_FLAG_BYPASS, NFT_QUEUE_FLAG_CPU_FANOUT, as nft lists them
_ADDR_TYPE = {"ip": "ipv4_addr", "ip6": "ipv6_addr"}


# Linux: include/uapi/linux/netfilter/nf_log.h (NF_LOG_TCPSEQ ... NF_LOG_MACDECODE), in the order
# src/statement.c › log_stmt_print lists them; `flags all` is every one (NF_LOG_MASK)
LOG_FLAGS = ("tcp sequence", "tcp options", "ip options", "skuid", "ether")
_LOG_ARGS = {"log_group": ("group", 16), "log_snaplen": ("snaplen", 32), "log_qthreshold": ("queue-threshold", 16)}


def stmt_log(ctx: Ctx, t: Tree, prev: list) -> dict:
    args: dict[str, Any] = {}
    flags: set[str] = set()
    for a in t.children:
        tok = a.children[0]
        if a.data == "log_prefix":
            v = rhs_ast(Tree("value", [tok]), ctx.defines, ctx.error)
            args["prefix"] = v.text
        elif a.data in _LOG_ARGS:
            key, bits = _LOG_ARGS[a.data]
            if number(tok) >= 1 << bits:
                raise ctx.error(tok, f"value too large for {key}")
            args[key] = number(tok)
        elif a.data == "log_flags":
            flags |= _log_flags(ctx, a)
        else:
            if str(tok) not in dt.LOG_LEVEL:
                raise ctx.error(tok, f"invalid log level: {tok}")
            args["level"] = str(tok)
    # evaluate.c › stmt_evaluate_log; nft marks `log`
    at = Token("WORD", "log", line=t.meta.line, column=t.meta.column, end_column=t.meta.column + 3)
    if any(k in args for k in ("group", "snaplen", "queue-threshold")):
        if "level" in args:
            raise ctx.error(at, "level and group are mutually exclusive")
        if flags:
            raise ctx.error(at, "flags and group are mutually exclusive")
    if args.get("level") == "audit" and (len(args) > 1 or flags):
        # an audit log has no prefix, group or flags
        raise ctx.error(at, "log level audit doesn't support any further options")
    if args.get("level") == "warn":  # the default level is not listed
        del args["level"]
    if flags:
        listed = [f for f in LOG_FLAGS if f in flags]
        args["flags"] = "all" if len(listed) == len(LOG_FLAGS) else listed[0] if len(listed) == 1 else listed
    return {"log": args or None}


def _log_flags(ctx: Ctx, a: Tree) -> set[str]:
    """parser_bison.y › log_flags: `tcp sequence,options`, `ip options`, `skuid`, `ether`, `all`."""
    kids = a.children
    if kids[0].type == "TCP":
        out = set()
        for w in kids[1:]:
            if str(w) not in ("sequence", "options"):
                raise ctx.error(w, "syntax error, unexpected string")
            out.add(f"tcp {w}")
        return out
    if kids[0].type == "IP":
        if str(kids[1]) != "options":
            raise ctx.error(kids[1], "syntax error, unexpected string")
        return {"ip options"}
    if str(kids[0]) == "all":
        return set(LOG_FLAGS)
    if str(kids[0]) not in ("skuid", "ether"):
        raise ctx.error(kids[0], "syntax error, unexpected string")
    return {str(kids[0])}


def stmt_reject(ctx: Ctx, t: Tree, prev: list) -> dict | None:
    """Linux: nftables src/evaluate.c › stmt_evaluate_reject (and _inet_family, _reset): in inet and
    netdev tables the network protocol of earlier matches picks icmp or icmpv6, and `meta nfproto` in
    front of a reject of that family is its dependency, not listed (netlink_delinearize.c ›
    stmt_reject_postprocess); `tcp reset` depends on `meta l4proto tcp` there, put at the rule's head."""
    fam = ctx.table.family
    if fam == "arp":  # evaluate.c › stmt_evaluate_reject_family
        at = Token("WORD", "reject", line=t.meta.line, column=t.meta.column, end_column=t.meta.column + 6)
        raise ctx.error(at, "cannot use reject with arp")
    if fam in ("bridge", "netdev"):  # the link layer's protocol context picks the type (payload_ll.py)
        stmt = reject_evaluate(ctx, t, prev)
        if stmt is not None:
            return stmt
    l3 = _l3_context(prev) if fam in ("inet", "netdev") else None
    if not t.children:
        kind = {"ip": "icmp", "ip6": "icmpv6"}.get(l3 or "", REJECT_DEFAULT[fam])
        _reject_dependency_kill(prev, kind)
        return _reject(fam, kind, None)
    w = t.children[0]
    if w.data == "reject_tcp":
        if ctx.l4 not in (None, "tcp"):  # evaluate.c › stmt_evaluate_reset; nft marks `reject`
            at = Token("WORD", "reject", line=t.meta.line, column=t.meta.column, end_column=t.meta.column + 6)
            raise ctx.error(at, "you cannot use tcp reset with this protocol")
        if fam in ("inet", "netdev") and not _has_l4(prev, "tcp"):
            prev.insert(0, _match("==", {"meta": {"key": "l4proto"}}, "tcp"))
        return {"reject": {"type": "tcp reset"}}
    kind, code = str(w.children[0]), w.children[-1]
    if kind in ("icmp", "icmpv6") and fam in ("ip", "ip6") and kind != REJECT_DEFAULT[fam]:
        raise ctx.error(w, f"conflicting protocols specified: {fam} vs. {kind}")
    if kind in ("icmp", "icmpv6") and l3 is not None and {"ip": "icmp", "ip6": "icmpv6"}[l3] != kind:
        # stmt_evaluate_reject_inet_family; nft marks the code
        raise ctx.error(code, f"conflicting protocols specified: {'ip6' if kind == 'icmpv6' else 'ip'} vs {l3}")
    if kind == "icmpx" and fam in ("ip", "ip6"):
        raise ctx.error(w, "icmpx is only valid in the inet and netdev families")
    table = {"icmp": dt.ICMP_CODE, "icmpv6": dt.ICMPV6_CODE, "icmpx": dt.ICMPX_CODE}[kind]
    name = next((k for k, v in table.items() if str(v) == str(code)), str(code))  # `reject with icmp 3`
    if name not in table:
        raise ctx.error(code, f"Could not parse {kind} code")
    _reject_dependency_kill(prev, kind)
    return _reject(fam, kind, name)


def _reject_dependency_kill(prev: list, kind: str) -> None:
    nfproto = {"icmp": "ipv4", "icmpv6": "ipv6"}.get(kind)
    dep = _match("==", {"meta": {"key": "nfproto"}}, nfproto)
    if nfproto is not None and dep in prev:
        prev.remove(dep)


def _reject(fam: str, kind: str, code: str | None) -> dict:
    return {"reject": {"type": kind, "expr": code or "port-unreachable"}}


def _has_l4(prev: list, proto: str) -> bool:
    for s in prev:
        m = s.get("match")
        if not m:
            continue
        left = m["left"]
        if "payload" in left and left["payload"]["protocol"] in (proto, "th"):
            return True
        if _is_l4_sel(left) and (m["right"] == proto or isinstance(m["right"], dict)):
            return True
    return False


def _queue_expr(ctx: Ctx, t: Tree) -> dict:
    """`queue to numgen|jhash|symhash ...` or `queue to KEY map { ... }` (parser_bison.y › queue_stmt_expr):
    a queue number of 16 bits the kernel computes per packet (stmt_evaluate_queue's maxval check)."""
    if t.data == "map_lookup":
        return map_lookup(ctx, t, "integer16")
    if t.data not in ("numgen_sel", "jhash_sel", "symhash_sel"):
        raise ctx.error(t, "syntax error, unexpected newline, expecting . or map")
    expr = selector(ctx, t)[0]
    (arg,) = expr.values()
    if arg["mod"] + arg.get("offset", 0) - 1 > 0xFFFF:
        raise ctx.error(t, "queue expression max value exceeds 65535")
    return expr


def stmt_queue(ctx: Ctx, t: Tree, prev: list) -> dict:
    """`queue [flags bypass,fanout] [to N[-M] | to EXPR]` or `queue num N[-M] [bypass] [fanout]`; no number is
    queue 0 (evaluate.c › stmt_evaluate_queue), and fanout needs a range."""
    flags = [str(f.children[0]) for f in t.children if f.data == "queue_flag"]
    num_t = next((c for c in t.children if c.data == "queue_num"), None)
    num: Any = 0
    expr_t = next((c for c in t.children if c.data not in ("queue_flag", "queue_num")), None)
    if expr_t is not None:
        num = _queue_expr(ctx, expr_t)
        if "fanout" in flags:
            raise ctx.error(expr_t, "fanout requires a range to be specified")
    if num_t is not None:
        nums = [number(n) for n in num_t.children if n.type == "NUMBER"]
        for n, tok in zip(nums, num_t.children[::2], strict=True):
            if n > 0xFFFF:  # NFTA_QUEUE_NUM is a u16
                raise ctx.error(tok, "queue number out of range")
        if len(nums) == 2 and nums[0] > nums[1]:
            raise ctx.error(num_t, "Range has zero or negative size")
        num = nums[0] if len(nums) == 1 else {"range": nums}
    if "fanout" in flags and not isinstance(num, dict):
        raise ctx.error(num_t or t, "fanout requires a range to be specified")
    out: dict[str, Any] = {"num": num}
    listed = [f for f in QUEUE_FLAGS if f in flags]
    if listed:
        out["flags"] = listed[0] if len(listed) == 1 else listed
    return {"queue": out}


def stmt_tproxy(ctx: Ctx, t: Tree, prev: list) -> dict:
    """`tproxy [ip|ip6] to addr[:port]` or `tproxy [ip|ip6] to :port`: after a transport protocol
    match; in an inet table an address needs its family, which must agree with the rule's matches."""
    fam = ctx.table.family
    kids = t.children
    family = str(kids[0]) if isinstance(kids[0], Token) else None
    to = kids[-1]
    if ctx.l4 is None:
        raise ctx.error(t, "Transparent proxy support requires transport protocol match")
    if family is not None and fam in ("ip", "ip6") and family != fam:
        raise ctx.error(t, f"conflicting protocols specified: {fam} vs. {family}")
    l3 = _l3_context(prev)
    if family is not None and l3 is not None and family != l3:
        raise ctx.error(t, f"conflicting protocols specified: {l3} vs. {family}")
    out: dict[str, Any] = {}
    if fam == "inet" and family is not None:
        out["family"] = family
    if to.data == "nat_map":
        raise ctx.error(to, "tproxy to a map: flowpath does not take it")
    if to.data == "nat_port_only":
        out["port"] = _nat_port(ctx, to.children[0], prev)
        return {"tproxy": out}
    addr = to.children[0]
    vals = [c for c in addr.children if isinstance(c, Tree) or c.type == "IPV6"]
    if len(vals) != 1 or any(isinstance(c, Token) and c.type == "SLASH" for c in addr.children):
        raise ctx.error(addr, "Address ranges are not supported for transparent proxy.")
    a = vals[0]
    sym = rhs_ast(a, ctx.defines, ctx.error) if isinstance(a, Tree) else Sym(str(a), a)
    l3 = family or (fam if fam != "inet" else None)
    if l3 is None:
        raise ctx.error(t, "Transparent proxy address needs ip or ip6 in an inet table")
    out["addr"] = sym_value(ctx.error, _ADDR_TYPE[l3], sym)
    if len(to.children) > 1:
        out["port"] = _nat_port(ctx, to.children[1], prev)
    return {"tproxy": out}


def stmt_dup(ctx: Ctx, t: Tree, prev: list) -> dict:
    """Linux: nftables src/parser_bison.y › dup_stmt, fwd_stmt. `dup to ADDR [device DEV]` in ip and ip6
    tables; in netdev `dup|fwd to DEV` or `fwd ip|ip6 to ADDR device DEV`; the address or device may
    come from a map."""
    kind, fam = t.data.removesuffix("_stmt"), ctx.table.family
    kids = list(t.children)
    family = str(kids.pop(0)) if isinstance(kids[0], Token) else None
    if fam == "netdev":
        dtype = _ADDR_TYPE[family] if family else "ifname"
    elif kind == "dup" and fam in _ADDR_TYPE and family is None:
        dtype = _ADDR_TYPE[fam]
    else:
        raise ctx.error(t, "unsupported family")
    target = kids[0]
    if target.data == "map_lookup":
        value = map_lookup(ctx, target, dtype)
    else:
        v = rhs_ast(target, ctx.defines, ctx.error)
        value = v.text if dtype == "ifname" else sym_value(ctx.error, dtype, v)
    dev = rhs_ast(Tree("value", [kids[1]]), ctx.defines, ctx.error).text if len(kids) > 1 else None
    if dtype == "ifname":  # nft -j: dup names the device "addr", fwd "dev"
        if dev is not None:
            raise ctx.error(kids[1], "syntax error, unexpected device")
        return {kind: {"addr" if kind == "dup" else "dev": value}}
    if family and dev is None:
        raise ctx.error(t, f"{kind} to an address in netdev needs its device")
    if kind == "fwd":  # src/json.c › fwd_stmt_json's order
        return {"fwd": {"dev": dev, "family": family, "addr": value}}
    return {"dup": {"addr": value, **({"dev": dev} if dev is not None else {})}}


def socket_osf_selector(ctx: Ctx, t: Tree) -> tuple[dict, str]:
    """`socket transparent|mark|wildcard`, `osf [ttl loose|skip] name|version`: JSON and datatype."""
    if t.data == "socket_sel":
        key = t.children[0]
        if str(key) not in dt.SOCKET_KEYS:
            raise ctx.error(key, "syntax error, unexpected string")
        return {"socket": {"key": str(key)}}, dt.SOCKET_KEYS[str(key)]
    *ttl, key = t.children
    if ttl and str(ttl[0]) not in dt.OSF_TTL:
        raise ctx.error(ttl[0], "invalid ttl option")
    if str(key) not in dt.OSF_KEYS:
        raise ctx.error(key, "syntax error, unexpected string")
    osf = {"key": str(key), **({"ttl": str(ttl[0])} if ttl else {})}
    return {"osf": osf}, dt.OSF_KEYS[str(key)]


__all__ = ["LOG_FLAGS", "stmt_dup", "stmt_log", "stmt_queue", "stmt_reject", "stmt_tproxy"]
