"""Right-hand-side expressions as parsed, before they meet a datatype; `define` variables expanded.

Linux: nftables include/expression.h (EXPR_SYMBOL, EXPR_RANGE, EXPR_PREFIX, EXPR_SET, EXPR_LIST) and
src/parser_bison.y › variable_expr (a `$name` is replaced by the value of its `define`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lark import Token, Tree

from flowpath.errors import ConfigError


@dataclass
class Sym:
    """One symbol as written: word, number, address or string (quoted=True)."""

    text: str
    tok: Any
    quoted: bool = False


@dataclass
class Range:
    lo: Sym
    hi: Sym
    tok: Any


@dataclass
class Prefix:
    addr: Sym
    length: int
    tok: Any


@dataclass
class SetX:
    elems: list[Any]
    tok: Any


@dataclass
class SetRef:
    name: str
    tok: Any


@dataclass
class ListX:
    """`a,b` or `a|b`: a bitmask value (ct state established,related)."""

    items: list[Any]
    tok: Any


@dataclass
class Masked:
    """`value / mask` (tcp flags syn / syn,ack); a prefix when the type is not a bitmask."""

    value: Any
    mask: Any
    tok: Any


@dataclass
class Concat:
    """`a . b`: one element of a concatenated type, a value, range or prefix per component."""

    parts: list[Any]
    tok: Any


@dataclass
class CatchAll:
    """`*`: the element a lookup finds when no other does (NFT_SET_ELEM_CATCHALL)."""

    tok: Any


@dataclass
class ElemOpts:
    """An element with its own options: `1.2.3.4 timeout 30s comment "x"` (timeout in seconds)."""

    value: Any
    timeout: int | None
    comment: str | None
    tok: Any


# Linux: nftables src/datatype.c › time_parse: d, h, m, s, ms units, in that order
TIME_UNITS_MS = {"d": 86400000, "h": 3600000, "m": 60000, "s": 1000, "ms": 1}


def time_ms(tok: Any) -> int:
    """A time_spec token: a TIME (`1h30m`) or a plain NUMBER of seconds, in milliseconds."""
    text = str(tok)
    if text.isdigit():
        return int(text) * 1000
    return sum(int(n) * TIME_UNITS_MS[u] for n, u in re.findall(r"(\d+)(ms|d|h|m|s)", text))


@dataclass
class Ctx:
    """Where a rule sits: file, source lines, its table and chain, the defines seen before it."""

    path: str
    lines: list[str]
    table: Any
    chain: Any
    defines: dict[str, Any] = field(default_factory=dict)
    rule: Any = None  # the rule's parse tree, for errors that mark the whole rule
    l4: str | None = None  # the transport protocol the rule's matches so far pin down (evaluate.py)
    link: Any = None  # the link-layer and network protocol context (payload_ll.LinkCtx)
    l3: str | None = None  # ip or ip6 once `meta nfproto` pins it down (ct original saddr, evaluate_keys.py)

    def error(self, node: Any, msg: str) -> ConfigError:
        return ast_error(self.path, self.lines, node, msg)


def ast_error(path: str, lines: list[str], node: Any, msg: str) -> ConfigError:
    """ConfigError at a lark Token or Tree (nft marks the whole token or expression)."""
    line, col, length = 1, 1, 1
    if isinstance(node, Token) and node.line is not None:
        line, col = node.line, node.column
        same_line = node.end_line in (None, node.line)
        length = max(1, (node.end_column or col + 1) - col) if same_line else 1
    elif isinstance(node, Tree) and getattr(node.meta, "line", None) is not None:
        line, col = node.meta.line, node.meta.column
        if node.meta.end_line == line:
            length = max(1, node.meta.end_column - col)
    elif isinstance(node, (Sym, Range, Prefix, SetX, SetRef, ListX, Masked, Concat, CatchAll, ElemOpts)):
        return ast_error(path, lines, node.tok, msg)
    src = lines[line - 1] if 0 < line <= len(lines) else None
    return ConfigError(path, line, col, msg, source=src, length=length)


ErrFn = Callable[[Any, str], ConfigError]


def number(tok: Any) -> int:
    """A NUMBER token: 0x-prefixed hex or decimal (a leading zero is not octal here)."""
    text = str(tok)
    return int(text, 16) if text[:2].lower() == "0x" else int(text, 10)


def _value(t: Tree, defines: dict[str, Any], err: ErrFn) -> Any:
    tok = t.children[0]
    if isinstance(tok, Tree):  # proto / meta_unq keyword used as a value (tcp, mark)
        tok = tok.children[0]
    if tok.type == "VARIABLE":
        name = tok[1:]
        if name not in defines:  # nft marks the name after the '$'
            at = Token("VARIABLE", name, line=tok.line, column=tok.column + 1, end_column=tok.end_column)
            raise err(at, f"unknown identifier '{name}'")
        return defines[name]
    if tok.type == "STRING":
        return Sym(tok[1:-1], tok, quoted=True)
    return Sym(str(tok), tok)


def rhs_ast(t: Any, defines: dict[str, Any], err: ErrFn) -> Any:
    """Convert an rhs / rhs_list / set_expr / value subtree to the AST above."""
    kind = t.data
    if kind == "rhs":
        parts = [c for c in t.children if isinstance(c, Tree)]
        value = rhs_ast(parts[0], defines, err)
        if len(parts) == 1:
            return value
        return Masked(value, rhs_ast(parts[1], defines, err), t)
    if kind in ("rhs_list", "flag_or"):
        items: list[Any] = []
        for c in t.children:  # `(syn | ack)` in a list is its flags
            x = rhs_ast(c, defines, err)
            items.extend(x.items if isinstance(x, ListX) else [x])
        return items[0] if len(items) == 1 else ListX(items, t)
    if kind == "value":
        return _value(t, defines, err)
    if kind == "range":
        lo, hi = _value(t.children[0], defines, err), _value(t.children[2], defines, err)
        if not isinstance(lo, Sym) or not isinstance(hi, Sym):
            raise err(t, "range bounds must be single values")
        return Range(lo, hi, t)
    if kind == "set_ref":
        return SetRef(str(t.children[0]), t)
    if kind == "set_expr":
        elems: list[Any] = []
        for e in t.children:
            x = rhs_ast(e, defines, err)
            # a variable holding a set is spliced into the enclosing set (nft does the same)
            elems.extend(x.elems if isinstance(x, SetX) else [x])
        return SetX(elems, t)
    if kind == "set_elem":  # parts of a concatenation, each `value[/len]` or a range, then options
        kids = [c for c in t.children if not (isinstance(c, Tree) and c.data.startswith("elem_"))]
        parts: list[Any] = []
        i = 0
        while i < len(kids):
            x = rhs_ast(kids[i], defines, err)
            if i + 1 < len(kids) and isinstance(kids[i + 1], Token) and kids[i + 1].type == "SLASH":
                if not isinstance(x, Sym):
                    raise err(t, "prefix must follow an address")
                x, i = Prefix(x, number(kids[i + 2]), t), i + 2
            parts.append(x)
            i += 1
        return _elem_opts(parts[0] if len(parts) == 1 else Concat(parts, t), t)
    if kind == "rhs_concat":
        return Concat([rhs_ast(c, defines, err) for c in t.children], t)
    if kind == "catchall_elem":
        return _elem_opts(CatchAll(t), t)
    raise err(t, f"unexpected {kind}")


def _elem_opts(x: Any, t: Tree) -> Any:
    """parser_bison.y › set_elem_options: `timeout`, `expires` (ignored: the kernel counts it down)
    and `comment` after an element."""
    timeout = comment = None
    for o in t.children:
        if isinstance(o, Tree) and o.data == "elem_timeout":
            timeout = time_ms(o.children[0].children[0]) // 1000
        elif isinstance(o, Tree) and o.data == "elem_comment":
            comment = o.children[0][1:-1]
    return x if timeout is None and comment is None else ElemOpts(x, timeout, comment, t)
