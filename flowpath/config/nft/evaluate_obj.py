"""Stateful objects and the statements that use them: counter, quota, limit, ct helper, ct timeout,
ct expectation and synproxy objects; the `quota` and `synproxy` statements; `counter name "c1"`, its
map form `counter name tcp dport map { 443 : "c1" }`, and `ct helper set "h"`.

Linux: nftables src/parser_bison.y (counter_config, quota_config, limit_config, ct_helper_block,
ct_timeout_block, ct_expect_block, synproxy_config, objref_stmt), src/evaluate.c › obj_evaluate and
stmt_evaluate_objref, src/ct.c › timeout_protocol (the states each protocol's policy names) and
src/datatype.c › time_parse. An object's body is read as a token list (nft.lark › obj_group); its JSON
fields are the ones `nft -j list ruleset` prints, e.g. {"bytes": 26214400, "used": 0, "inv": false}.
"""

from __future__ import annotations

import re
from typing import Any

from lark import Token, Tree

from flowpath.config.nft import evaluate as ev
from flowpath.config.nft.ast import Ctx, number, rhs_ast
from flowpath.errors import ConfigError

OBJ_KINDS = ("counter", "quota", "limit", "ct helper", "ct timeout", "ct expectation", "synproxy")
# the objects a rule names with `KIND name ...`, and those it names with `ct KEY set ...`
OBJREF_STMT = ("counter", "quota", "limit", "synproxy")
CT_OBJREF = ("helper", "timeout", "expectation")
# Linux: src/ct.c › tcp_timeout_names, udp_timeout_names, icmp_timeout_names (in the kernel's order,
# which the policy is listed in)
CT_TIMEOUT_STATES = {
    "tcp": ("syn_sent", "syn_recv", "established", "fin_wait", "close_wait", "last_ack", "time_wait",
            "close", "syn_sent2", "retrans", "unacknowledged"),
    "udp": ("unreplied", "replied"),
    "icmp": ("timeout",),
}  # fmt: skip
# the conntrack helpers Linux has (net/netfilter/nf_conntrack_*.c), with their transport protocol
CT_HELPERS = {"ftp": "tcp", "irc": "tcp", "pptp": "tcp", "sane": "tcp", "amanda": "udp", "tftp": "udp",
              "sip": "udp", "snmp": "udp", "netbios-ns": "udp"}  # fmt: skip
SYNPROXY_FLAGS = ("timestamp", "sack-perm")
_L3PROTO = ("ip", "ip6", "inet")
_TIME_UNITS = {"d": 86400000, "h": 3600000, "m": 60000, "s": 1000, "ms": 1}
ENOENT = "Could not process rule: No such file or directory"
# the words of object bodies that are keywords in nft's scanner (its syntax errors name them)
_KEYWORDS = ("packets", "bytes", "over", "until", "used", "rate", "burst", "type", "protocol", "l3proto",
             "policy", "dport", "timeout", "size", "mss", "wscale", "timestamp", "sack-perm")  # fmt: skip


def obj_tokens(nodes: list) -> list[Token]:
    """The tokens of an object's body in order, separators dropped."""
    out: list[Token] = []
    for n in nodes:
        if isinstance(n, Tree):
            out += obj_tokens(n.children)
        elif n not in (";", "\n") and n.type != "_NL":
            out.append(n)
    return out


def obj_kind(ctx: Ctx, t: Tree) -> tuple[str, Token]:
    """`counter`, `ct helper`, ... from an obj_kind subtree, and the token to mark; nft's syntax error
    at its last word for any other `ct WORD` (only helper, timeout and expectation are objects)."""
    toks = t.children
    kind = " ".join(str(x) for x in toks)
    if kind not in OBJ_KINDS:
        raise _syntax_error(ctx, toks[-1])
    return kind, toks[-1]


class _Syntax(Exception):
    """A token nft's grammar does not take where it is (the caller turns it into nft's syntax error)."""

    def __init__(self, tok: Any):
        super().__init__()
        self.tok = tok


class _Reader:
    """A cursor over an object's tokens, erring as nft's parser does at the first unexpected one."""

    def __init__(self, toks: list[Token], end: Any, body: Any = None):
        self.toks, self.i, self.end = toks, 0, end
        self.body = body if body is not None else end  # what nft marks for an error in the whole body

    def peek(self) -> str | None:
        return str(self.toks[self.i]) if self.i < len(self.toks) else None

    def take(self, *words: str) -> Token:
        if self.i >= len(self.toks):
            raise _Syntax(self.end)
        tok = self.toks[self.i]
        if words and str(tok) not in words:
            raise _Syntax(tok)
        self.i += 1
        return tok

    def opt(self, word: str) -> bool:
        if self.peek() == word:
            self.i += 1
            return True
        return False

    def num(self) -> int:
        tok = self.take()
        if tok.type != "NUMBER":
            raise _Syntax(tok)
        return number(tok)

    def done(self) -> None:
        if self.i < len(self.toks):
            raise _Syntax(self.toks[self.i])


def obj_spec(ctx: Ctx, kind: str, toks: list[Token], name: Token, end: Any, body: Any = None) -> dict:
    """The JSON fields of a `kind` object declared with these body tokens (table ctx.table); `end` is
    the token after them, `body` the whole body (`{ ... }`)."""
    r = _Reader(toks, end, body)
    try:
        spec = _SPEC[kind](ctx, r, name)
        r.done()
    except _Syntax as e:
        raise _syntax_error(ctx, e.tok) from None
    return spec


def _syntax_error(ctx: Ctx, tok: Any) -> ConfigError:
    """nft's `syntax error, unexpected ...` at tok, naming it as bison does."""
    s = str(tok)
    what = "newline" if s == "\n" else f"'{s}'" if s in "{}:=,;/-" else s if s in _KEYWORDS else "string"
    return ctx.error(tok, f"syntax error, unexpected {what}")


def _counter(ctx: Ctx, r: _Reader, name: Token) -> dict:
    """parser_bison.y › counter_config: `packets N bytes N` (or bytes first), or nothing."""
    n = {"packets": 0, "bytes": 0}
    if r.peek() in n:
        first = str(r.take())
        n[first] = r.num()
        second = "bytes" if first == "packets" else "packets"
        r.take(second)
        n[second] = r.num()
    return n


def _bytes(ctx: Ctx, r: _Reader, at: Any) -> tuple[int, Token]:
    """`N unit` of a quota: bytes, kbytes or mbytes (src/datatype.c › data_unit_parse; nft marks the
    statement, or an object's body, `at`)."""
    n = r.num()
    unit = r.take()
    if str(unit) not in ev._BYTE_UNITS:
        raise ctx.error(at, "Wrong rate format")
    return n * ev._BYTE_UNITS[str(unit)], unit


def _quota(ctx: Ctx, r: _Reader, name: Token) -> dict:
    """parser_bison.y › quota_config: [over | until] N unit [used N unit]."""
    inv = r.peek() == "over"
    if r.peek() in ("over", "until"):
        r.take()
    total, _ = _bytes(ctx, r, r.body)
    used = _bytes(ctx, r, r.body)[0] if r.opt("used") else 0
    return {"bytes": total, "used": used, "inv": inv}


def _limit(ctx: Ctx, r: _Reader, name: Token) -> dict:
    """parser_bison.y › limit_config: the limit statement's arguments, checked as the statement's."""
    kids: list = []
    r.take("rate")
    if r.opt("over"):
        kids.append(Token("OVER", "over"))
    kids.append(r.take())
    if r.peek() != "/":
        kids.append(r.take())
    kids += [r.take("/"), r.take()]
    if r.opt("burst"):
        burst = [r.take()]
        if r.peek() is not None:
            burst.append(r.take())
        kids.append(Tree("limit_burst", burst))
    for k in kids:
        if isinstance(k, Token) and k.type not in ("NUMBER", "SLASH", "OVER") and k.type != "WORD":
            raise _Syntax(k)
    return ev._st_limit(ctx, Tree("limit_stmt", kids), [])["limit"]


def _l3proto(ctx: Ctx, tok: Token, name: Token) -> str:
    """nf_tables_api.c: an object of an ip or ip6 table for the other family is EINVAL."""
    fam = ctx.table.family
    if str(tok) not in _L3PROTO:
        raise _Syntax(tok)
    if fam in ("ip", "ip6") and str(tok) != fam:
        raise ctx.error(name, "Could not process rule: Invalid argument")
    return str(tok)


def _ct_helper(ctx: Ctx, r: _Reader, name: Token) -> dict:
    """parser_bison.y › ct_helper_block: `type "ftp" protocol tcp` and `l3proto ip`, in any order."""
    spec: dict[str, Any] = {}
    while r.peek() is not None:
        word = r.take("type", "l3proto")
        if str(word) == "type":
            tok = r.take()
            if tok.type != "STRING":
                raise _Syntax(tok)
            r.take("protocol")
            spec["type"], spec["protocol"] = tok[1:-1], str(r.take("tcp", "udp"))
            if CT_HELPERS.get(spec["type"]) != spec["protocol"]:  # nf_conntrack_helper_try_module_get
                raise ctx.error(name, ENOENT)
        else:
            spec["l3proto"] = _l3proto(ctx, r.take(), name)
    if "type" not in spec:
        raise ctx.error(name, "missing options")
    spec.setdefault("l3proto", ctx.table.family)
    return {"type": spec["type"], "protocol": spec["protocol"], "l3proto": spec["l3proto"]}


def _ct_timeout(ctx: Ctx, r: _Reader, name: Token) -> dict:
    """parser_bison.y › ct_timeout_block: `protocol P`, `l3proto F`, `policy = { state : seconds, ... }`."""
    proto, l3, policy, at = None, ctx.table.family, {}, []
    while r.peek() is not None:
        word = r.take("protocol", "l3proto", "policy")
        if str(word) == "protocol":
            proto = str(r.take(*CT_TIMEOUT_STATES))
        elif str(word) == "l3proto":
            l3 = _l3proto(ctx, r.take(), name)
        else:
            r.take("=")
            r.take("{")
            while True:
                state = r.take()
                r.take(":")
                at.append((state, r.num()))
                if r.take(",", "}") == "}":
                    break
    if proto is None:
        raise ctx.error(name, "missing options")
    states = CT_TIMEOUT_STATES[proto]
    for state, secs in at:
        if str(state) not in states:  # src/ct.c › timeout_str2num
            raise ctx.error(state, "invalid state for this protocol")
        policy[str(state)] = secs
    return {"protocol": proto, "l3proto": l3, "policy": {s: policy[s] for s in states if s in policy}}


def _ct_expectation(ctx: Ctx, r: _Reader, name: Token) -> dict:
    """parser_bison.y › ct_expect_block; evaluate.c › ct_expect_obj_evaluate: all four are needed."""
    spec: dict[str, Any] = {}
    while r.peek() is not None:
        word = str(r.take("protocol", "dport", "timeout", "size", "l3proto"))
        if word == "protocol":
            spec[word] = str(r.take("tcp", "udp"))
        elif word == "timeout":
            spec[word] = time_parse(ctx, r)
        elif word == "l3proto":
            spec[word] = _l3proto(ctx, r.take(), name)
        else:
            spec[word] = r.num()
    if any(k not in spec for k in ("protocol", "dport", "timeout", "size")):
        raise ctx.error(name, "missing options")
    if "l3proto" not in spec:
        if ctx.table.family == "inet":  # nf_ct_expect_obj_init: NFPROTO_INET names no family
            raise ctx.error(name, "Could not process rule: Address family not supported by protocol")
        spec["l3proto"] = ctx.table.family
    return {k: spec[k] for k in ("protocol", "dport", "timeout", "size", "l3proto")}


def time_parse(ctx: Ctx, r: _Reader) -> int:
    """Linux: nftables src/datatype.c › time_parse: `1h30m`, `2m`, `500ms` to milliseconds. The scanner
    splits `2m` into a number and a word: the tokens written without a space between are one time."""
    first = r.take()
    text, end = str(first), first.end_column
    while r.peek() is not None and r.toks[r.i].column == end and r.toks[r.i].line == first.line:
        tok = r.take()
        text, end = text + str(tok), tok.end_column
    parts = re.findall(r"(\d+)(ms|d|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ctx.error(first, "Wrong time format")
    return sum(int(n) * _TIME_UNITS[u] for n, u in parts)


def _synproxy(ctx: Ctx, r: _Reader, name: Token) -> dict:
    """parser_bison.y › synproxy_config: `mss N wscale N` (both or neither), then timestamp, sack-perm."""
    spec = {"mss": 0, "wscale": 0}
    flags = []
    if r.opt("mss"):
        spec["mss"] = _synproxy_num(ctx, r, "mss")
        r.take("wscale")
        spec["wscale"] = _synproxy_num(ctx, r, "wscale")
    for f in SYNPROXY_FLAGS:  # in this order
        if r.opt(f):
            flags.append(f)
    if flags:
        spec["flags"] = [f for f in SYNPROXY_FLAGS if f in flags]
    return spec


def _synproxy_num(ctx: Ctx, r: _Reader, word: str) -> int:
    tok = r.toks[r.i] if r.i < len(r.toks) else r.end
    n = r.num()
    if n >= (1 << 16 if word == "mss" else 1 << 8):  # NFTA_SYNPROXY_MSS is u16, WSCALE u8
        raise ctx.error(tok, f"value too large for {word}")
    return n


_SPEC = {"counter": _counter, "quota": _quota, "limit": _limit, "ct helper": _ct_helper,
         "ct timeout": _ct_timeout, "ct expectation": _ct_expectation, "synproxy": _synproxy}  # fmt: skip


# --- statements --------------------------------------------------------------------------------------
def stmt_quota(ctx: Ctx, t: Tree, prev: list) -> dict:
    """`quota [over|until] N unit [used N unit]`; listed with the largest unit that divides the bytes
    (src/statement.c › quota_stmt_print)."""
    toks = [str(x) for x in t.children]
    inv = toks[0] == "over"
    r = _Reader([x for x in t.children if x.type != "UNTIL" and x.type != "OVER"], t)
    total, unit = _bytes(ctx, r, t)
    out: dict[str, Any] = {}
    out["val"], out["val_unit"] = ev._byte_rate(total)
    if inv:
        out["inv"] = True
    if r.peek() is not None:
        used, _ = _bytes(ctx, r, t)
        if used:
            out["used"], out["used_unit"] = ev._byte_rate(used)
    return {"quota": out}


def stmt_synproxy(ctx: Ctx, t: Tree, prev: list) -> dict:
    """`synproxy [mss N] [wscale N] [timestamp] [sack-perm]` (src/statement.c › synproxy_stmt_print)."""
    out: dict[str, Any] = {}
    flags = []
    for a in t.children:
        if a.data in ("synproxy_mss", "synproxy_wscale"):
            word = a.data.split("_")[1]
            out[word] = _synproxy_num(ctx, _Reader(a.children, a), word)
        else:
            flags.append("timestamp" if a.data == "synproxy_ts" else "sack-perm")
    if flags:
        out["flags"] = [f for f in SYNPROXY_FLAGS if f in flags]
    return {"synproxy": out or None}


def stmt_objref(ctx: Ctx, t: Tree, prev: list) -> dict:
    """`counter name "c1"` or `counter name tcp dport map { 443 : "c1" }` (evaluate.c ›
    stmt_evaluate_objref; a name the table lacks is the kernel's ENOENT)."""
    kind = str(t.children[0].children[0])
    return {kind: objref(ctx, kind, t.children[1:])}


def stmt_ct_objref(ctx: Ctx, t: Tree, prev: list) -> dict:
    """`ct helper set "ftp1"`, `ct timeout set "t"`, `ct expectation set "e"`, or a map of them."""
    key = str(t.children[0].children[1])
    val = t.children[1]  # set_value: one constant, or `selector map { ... }` (map_lookup)
    x = val.children[0] if len(val.children) == 1 else val
    if isinstance(x, Tree) and x.data == "map_lookup":
        return {f"ct {key}": objref(ctx, f"ct {key}", x.children)}
    v = rhs_ast(Tree("value", x.children, meta=x.meta), ctx.defines, ctx.error) if x.data == "set_const" else None
    if not hasattr(v, "text"):
        raise ctx.error(val, "expected an object name")
    return {f"ct {key}": _obj_name(ctx, f"ct {key}", v.text, v.tok)}


def is_ct_objref(t: Tree) -> bool:
    """Whether a mangle statement sets a ct helper, timeout or expectation (an object, not a key)."""
    sel = t.children[0]
    return sel.data == "ct_sel" and str(sel.children[1]) in CT_OBJREF


def objref(ctx: Ctx, kind: str, args: list) -> Any:
    """The object name, or {"map": {"key", "data": {"set": [[key, name], ...]}}} for a map of names."""
    if len(args) == 1:
        v = rhs_ast(Tree("value", [args[0]]), ctx.defines, ctx.error)
        return _obj_name(ctx, kind, v.text, args[0])
    left, dtype = ev.selector(ctx, args[0])
    pairs = []
    for e in args[1].children:  # nft marks the key of an element whose object does not exist
        v = rhs_ast(e.children[1], ctx.defines, ctx.error)
        name = _obj_name(ctx, kind, getattr(v, "text", ""), e.children[0])
        pairs.append((rhs_ast(e.children[0], ctx.defines, ctx.error), name))
    return {"map": {"key": left, "data": {"set": ev.map_json(ctx.error, dtype, pairs, True)}}}


def _obj_name(ctx: Ctx, kind: str, name: str, tok: Any) -> str:
    if (kind, name) not in ctx.table.objs:
        raise ctx.error(tok, ENOENT)
    return name


__all__ = ["OBJ_KINDS", "obj_kind", "obj_spec", "obj_tokens", "stmt_objref", "stmt_quota", "stmt_synproxy"]
