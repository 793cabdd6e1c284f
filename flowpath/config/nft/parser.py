"""`nft -f` text to a Ruleset: lark LALR parse, then commands, blocks and variables.

Linux: nftables src/parser_bison.y (grammar actions) and src/scanner.l (tokens, `define`, `include`).
Rule statements are evaluated in evaluate.py; this module owns tables and chains, parser_block.py
sets, maps, flowtables and stateful objects.
"""

from __future__ import annotations

import os
from functools import cache
from importlib import resources
from pathlib import Path

import lark
from lark import Token, Tree

from flowpath.config.nft import evaluate as ev
from flowpath.config.nft.ast import Ctx, Prefix, Range, SetRef, SetX, Sym, ast_error, number, rhs_ast
from flowpath.config.nft.cmd import EEXIST, Commands, is_create, whole_command
from flowpath.config.nft.commit import ENOENT, Batch, RulePos, batch_commit
from flowpath.config.nft.family import (
    CHAIN_TYPES,
    FAMILIES,
    HOOK_NAMES,
    HOOKS,
    needs_device,
    prio_name_ok,
    std_prios,
)
from flowpath.config.nft.include import INCLUDE_PATH, MAX_INCLUDE_DEPTH, include_files
from flowpath.config.nft.ir import Chain, Loc, Rule, Ruleset, Table
from flowpath.config.nft.parser_block import Blocks
from flowpath.config.nft.validate import NFT_NAME_MAXLEN, kernel_check
from flowpath.errors import ConfigError

# Linux: src/rule.c › table_flags_name, in the order nft lists them
TABLE_FLAGS = ("dormant", "owner")


@cache
def _lalr() -> lark.Lark:
    grammar = resources.files("flowpath.config.nft").joinpath("nft.lark").read_text()
    return lark.Lark(grammar, parser="lalr", lexer="contextual", propagate_positions=True, cache=False)


def parse_ruleset(text: str, path: str = "<stdin>", include_path: tuple[str, ...] = INCLUDE_PATH) -> Ruleset:
    """Parse `nft -f` text; raise ConfigError (file:line:col) on the first error, as nft reports it.

    `include "NAME"` reads the files include.py finds: a plain name in the including file's folder, the
    top file's, then `include_path`.
    """
    p = _Builder(path, text.split("\n"), include_path)
    p.rs.lines = p.lines
    try:
        p.read(text)
        p.finish()
    except ConfigError as e:  # found after the file was read: the first way to the file the error is in
        if not e.included_from and e.path != path:
            e.included_from = p.included_from.get(e.path, [])
        raise
    return p.rs


def _parse_tree(text: str, path: str, lines: list[str]) -> Tree:
    if not text.endswith("\n"):
        text += "\n"
    try:
        return _lalr().parse(text)
    except lark.exceptions.UnexpectedInput as e:
        raise _syntax_error(e, path, lines) from None


_TOKEN_DESC = {"_NL": "newline", "SEMICOLON": "semicolon", "$END": "end of file", "LBRACE": "'{'",
               "RBRACE": "'}'", "COMMA": "comma", "STRING": "quoted string", "NUMBER": "number",
               "WORD": "string", "VARIABLE": "variable reference"}  # fmt: skip


def _syntax_error(e: lark.exceptions.UnexpectedInput, path: str, lines: list[str]) -> ConfigError:
    line, col = max(1, e.line), max(1, e.column)
    src = lines[line - 1] if 0 < line <= len(lines) else ""
    length = 1
    if isinstance(e, lark.exceptions.UnexpectedToken):
        tok = e.token
        if tok.type == "$END":
            what, line, col, src = "end of file", len(lines), 1, lines[-1] if lines else ""
        elif tok.type in ("_NL", "SEMICOLON", "LBRACE", "RBRACE", "COMMA"):
            what = _TOKEN_DESC[tok.type]
        elif tok.type in ("STRING", "NUMBER", "VARIABLE"):
            what, length = _TOKEN_DESC[tok.type], len(tok)
        elif tok.type == "WORD":
            what, length = "string", len(tok)
        else:
            what, length = str(tok), len(tok)
        expect = sorted(_TOKEN_DESC[t] for t in e.expected if t in ("_NL", "SEMICOLON"))
        msg = f"syntax error, unexpected {what}"
        if expect and len(expect) == len(e.expected):
            msg += ", expecting " + " or ".join(expect)
        return ConfigError(path, line, col, msg, source=src, length=length)
    ch = src[col - 1] if col - 1 < len(src) else "?"
    return ConfigError(path, line, col, f"syntax error, unexpected '{ch}'", source=src)


class _Builder(Commands, Blocks):
    """Walks the parse tree in order, like nft's parser actions plus the command expansion."""

    def __init__(self, path: str, lines: list[str], include_path: tuple[str, ...] = INCLUDE_PATH):
        self.path, self.lines = path, lines
        self.rs = Ruleset(path=path)
        self.include_path = include_path
        self.includes: list[str] = []  # `file:line:col` of the include statements being read
        self.included_from: dict[str, list[str]] = {}  # file -> its includes, innermost first
        self.defines: dict[str, object] = {}
        self.pending: list[tuple[Table, Chain, Rule, Ctx]] = []
        # jump/goto in map elements, checked at the end (with the file they are in)
        self.verdicts: list[tuple[Table, Tree, str, list[str]]] = []
        self.batch = Batch()  # what nft would send the kernel, in its order, for the kernel's checks

    # errors at a token or subtree
    def error(self, node: Tree | Token, msg: str) -> ConfigError:
        return ast_error(self.path, self.lines, node, msg)

    def _name(self, tok: Token) -> str:
        """A table or `add` command object name; parser_bison.y › table_spec / chain_spec refuse names
        longer than NFT_NAME_MAXLEN, the kernel the ones of NFT_NAME_MAXLEN too (validate.py)."""
        if len(tok) > NFT_NAME_MAXLEN:
            raise self.error(tok, f"name too long, {NFT_NAME_MAXLEN} characters maximum allowed")
        return str(tok)

    def _comment(self, tok: Token) -> str:
        """Linux: parser_bison.y › comment_spec."""
        text = tok[1:-1]
        if len(text) > ev.NFTNL_UDATA_COMMENT_MAXLEN:
            raise self.error(
                tok, f"comment too long, {ev.NFTNL_UDATA_COMMENT_MAXLEN} characters maximum allowed"
            )
        return text

    def command(self, cmd: Tree) -> None:
        getattr(self, "cmd_" + cmd.data)(cmd)

    def read(self, text: str) -> None:
        """Parse and apply one file's text (self.path, self.lines), included files in their place."""
        for cmd in _parse_tree(text, self.path, self.lines).children:
            self.command(cmd)

    def loc(self, node: Tree | Token) -> Loc:
        """Where `node` was written, in the file being read."""
        return loc_of(node, self.path)

    def cmd_define(self, t: Tree) -> None:
        name = str(t.children[0])
        if name in self.defines:
            raise self.error(t.children[0], f"redefinition of symbol '{name}'")
        self.defines[name] = rhs_ast(t.children[1], self.defines, self.error)

    def cmd_include(self, t: Tree) -> None:
        """Linux: nftables src/scanner.l › include_file: each file the name matches, read in its place."""
        name, stmt = t.children[0][1:-1], whole_command(t)
        if len(self.includes) + 2 > MAX_INCLUDE_DEPTH:  # nft counts the open files, the top one with them
            raise self.error(stmt, f"Include nested too deeply, max {MAX_INCLUDE_DEPTH} levels")
        try:
            top = os.path.dirname(self.rs.path) or "."
            files = include_files(name, self.path, (top, *self.include_path))
        except OSError as e:
            raise self.error(stmt, f"{e.strerror}: {name}") from None
        for f in files:
            try:
                text = Path(f).read_text()
            except (OSError, UnicodeDecodeError) as e:
                raise self.error(stmt, f"Could not open file: {getattr(e, 'strerror', None) or e}") from None
            saved = self.path, self.lines
            self.includes.append(f"{self.path}:{stmt.line}:{stmt.column}-{stmt.end_column - 1}")
            self.path, self.lines = f, text.split("\n")
            self.rs.sources[f] = self.lines
            self.included_from.setdefault(f, self.includes[::-1])
            try:
                self.read(text)
            except ConfigError as e:
                if e.path == f and not e.included_from:
                    e.included_from = self.includes[::-1]
                raise
            finally:
                self.includes.pop()
                self.path, self.lines = saved

    def cmd_flush_ruleset(self, t: Tree) -> None:
        self.rs.tables.clear()
        self.pending.clear()
        self.verdicts.clear()
        self.batch = Batch(self.batch.tables_made())

    def _table(self, t: Tree, words: list[Token]) -> Table:
        family, name = ("ip", words[0]) if len(words) == 1 else (str(words[0]), words[1])
        if family not in FAMILIES:
            # nft's families are keywords: an unknown one is the table's name, and the next word junk
            raise self.error(
                words[1], "syntax error, unexpected string, expecting end of file or newline or semicolon"
            )
        table = self.rs.table(family, self._name(name))
        if table is not None and is_create(t):
            raise self.error(name, EEXIST)
        if table is None:
            table = Table(family, str(name), loc=self.loc(name))
            self.rs.tables.append(table)
        self.batch.table(table)
        return table

    def cmd_table(self, t: Tree) -> None:
        words = [c for c in t.children if isinstance(c, Token)]
        words = [w for w in words if w.type == "WORD"]
        table = self._table(t, words)
        for c in t.children:
            if isinstance(c, Tree) and c.data == "table_block":
                # nft_cmd_expand sends a block's chains, then its sets and flowtables, then its rules
                with self.batch.block():
                    for item in c.children:
                        getattr(self, "item_" + item.data)(table, item)

    cmd_add_table = cmd_table

    def _words(self, t: Tree) -> list[Token]:
        return [c for c in t.children if isinstance(c, Token) and c.type == "WORD"]

    def _lookup_table(self, words: list[Token]) -> tuple[Table, Token]:
        """`[family] table name` of the add commands; returns the table and the object's name token."""
        if len(words) == 3:
            family, tname, name = str(words[0]), words[1], words[2]
            if family not in FAMILIES:
                raise self.error(words[2], "syntax error, unexpected string")
        else:
            family, tname, name = "ip", words[0], words[1]
        table = self.rs.table(family, self._name(tname))
        self._name(name)
        if table is None:
            raise self.error(tname, ENOENT)
        return table, name

    # --- table items ---------------------------------------------------------------------------------
    def item_table_comment(self, table: Table, t: Tree) -> None:
        table.comment = self._comment(t.children[0])

    def item_table_flags(self, table: Table, t: Tree) -> None:
        flag = t.children[0]
        if str(flag) not in TABLE_FLAGS:
            raise self.error(flag, f"unknown table option {flag}")
        table.flags = [f for f in TABLE_FLAGS if f in table.flags or f == str(flag)]

    def item_chain(self, table: Table, t: Tree) -> None:
        self._chain(table, t.children[0], t.children[1], t)

    def _chain(self, table: Table, name: Token, block: Tree | None, t: Tree) -> None:
        chain = table.chains.get(str(name))
        new = chain is None
        if chain is None:
            chain = Chain(str(name), line=t.meta.line, loc=self.loc(name))
            table.chains[chain.name] = chain
        self.batch.chain(table, chain)
        if block is None:
            return
        comment = None
        for item in block.children:
            item.meta.chain_name = name
            if item.data == "hook_spec":
                self._hook(table, chain, item)
            elif item.data == "policy_spec":
                policy = self._word_or_var(item.children[0])
                if policy not in ("accept", "drop"):
                    raise self.error(item.children[0], f"unknown policy type '{policy}'")
                chain.policy, chain.policy_loc = policy, self.loc(item)
            elif item.data == "chain_comment":
                if comment is not None:  # parser_bison.y › already_set
                    raise self.error(item, "You can only specify this once. This statement is duplicated.")
                comment = self._comment(item.children[0])
                if new:  # the kernel takes a chain's comment when it creates the chain only
                    chain.comment = comment
            else:
                self._rule(table, chain, item)
        if chain.hook is not None and chain.policy is None:
            chain.policy = "accept"

    def _word_or_var(self, tok: Token) -> str:
        if tok.type == "VARIABLE":
            v = self.defines.get(tok[1:])
            if v is None:
                raise self.error(tok, f"unknown identifier '{tok[1:]}'")
            if not isinstance(v, Sym):
                raise self.error(tok, "invalid variable value")
            return v.text
        return tok.strip('"') if tok.type == "STRING" else str(tok)

    def _hook(self, table: Table, chain: Chain, t: Tree) -> None:
        ctype, hook = t.children[0], t.children[1]
        if str(ctype) not in CHAIN_TYPES:
            raise self.error(ctype, "unknown chain type")
        if str(hook) not in HOOK_NAMES:
            raise self.error(hook, "unknown chain hook")
        if str(hook) not in HOOKS[table.family]:  # evaluate.c › chain_evaluate
            raise self.error(hook, f"The {table.family} family does not support this hook")
        rest = t.children[2:]
        dev = None
        if rest[0].data == "device":
            dev = self._devices(rest[0])
            if not needs_device(table.family, str(hook)):
                raise self.error(rest[0], "This chain type cannot be bound to device")
            rest = rest[1:]
        if dev is None and needs_device(table.family, str(hook)):
            raise self.error(t, "Missing `device' in this chain definition")
        prio = self._prio(table.family, str(hook), rest[0])
        spec = (str(ctype), str(hook), dev, prio)
        if chain.hook is not None and (chain.type, chain.hook, chain.dev, chain.prio) != spec:
            raise self.error(t.meta.chain_name, "Could not process rule: Operation not supported")
        chain.type, chain.hook, chain.dev, chain.prio = spec
        chain.type_loc = self.loc(ctype)

    def _devices(self, t: Tree) -> str | list[str]:
        """`device NAME` or `devices = { a, b }`: one name, or the names sorted as the kernel lists them."""
        src = t.children[0]
        toks = src.children if isinstance(src, Tree) else [src]
        devs = sorted({self._word_or_var(d) for d in toks})
        return devs[0] if len(devs) == 1 else devs

    def _prio(self, family: str, hook: str, t: Tree) -> int:
        """The priority as the kernel stores it: nft reads a 64-bit number and sends its low 32 bits."""
        return s32(self._prio_value(family, hook, t))

    def _prio_value(self, family: str, hook: str, t: Tree) -> int:
        kids = t.children
        if isinstance(kids[0], Tree):  # prio_num: [-] NUMBER
            nums = kids[0].children
            n = self._u64(nums[-1], t if len(nums) == 1 else None)
            return -n if len(nums) == 2 else n
        name = kids[0]
        if name.type == "VARIABLE":
            v = self._word_or_var(name)
            try:
                return int(v, 0)
            except ValueError:
                name = Token("WORD", v, line=name.line, column=name.column, end_column=name.end_column)
        if not prio_name_ok(family, hook, str(name)):
            # nft marks `priority NAME`, from the keyword on
            col = max(1, name.column - len("priority "))
            at = Token("WORD", "priority " + name, line=name.line, column=col, end_column=name.end_column)
            raise self.error(at, "invalid priority expression value in this context.")
        base = std_prios(family)[str(name)]
        if len(kids) == 3:
            off = self._u64(kids[2], None)
            return base + off if kids[1].type == "PLUS" else base - off
        return base

    def _u64(self, tok: Token, prio: Tree | None) -> int:
        """Linux: scanner.l reads a number with strtoull; one that does not fit is a string token, and
        a lone `priority STRING` is not a priority nft knows."""
        n = number(tok)
        if n < 1 << 64:
            return n
        if prio is None:
            raise self.error(tok, "syntax error, unexpected string, expecting number")
        col = max(1, prio.meta.column - len("priority "))
        at = Token("WORD", "priority " + tok, line=tok.line, column=col, end_column=tok.end_column)
        raise self.error(at, "invalid priority expression value in this context.")

    # --- rules: evaluated once the whole file is read, so chains and sets may be declared later ------
    def _rule(self, table: Table, chain: Chain, t: Tree, pos: RulePos | None = None) -> None:
        """A rule goes into its chain where its command says when the batch is committed (finish)."""
        rule = Rule([], line=t.meta.line, loc=self.loc(t))
        self.batch.rule(table, chain, rule, pos)
        ctx = Ctx(self.path, self.lines, table, chain, dict(self.defines))
        self.pending.append((table, chain, rule, ctx))
        rule.tree = t  # type: ignore[attr-defined]

    def evaluate_pending(self) -> None:
        """Evaluate the rules and map verdicts read so far (at the end, or before a delete command)."""
        for table, v, path, lines in self.verdicts:
            if len(v.children) == 2 and str(v.children[1]) not in table.chains:
                raise ast_error(path, lines, v.children[1], "Could not process rule: No such file or directory")
        for _table, _chain, rule, ctx in self.pending:
            t = rule.__dict__.pop("tree")
            rule.expr, rule.comment = ev.rule_evaluate(ctx, t)
        self.verdicts.clear()
        self.pending.clear()

    def finish(self) -> None:
        self.evaluate_pending()
        # nft evaluates the whole file before it sends anything: the kernel's errors come last, the
        # first one in the batch's order
        failed = batch_commit(self.rs, self.batch)
        kernel_check(self.rs, self.batch, None if failed is None else failed[0])
        if failed is not None:
            raise failed[1]


def s32(n: int) -> int:
    """The low 32 bits of `n` as a signed integer (a chain or flowtable priority, NFTA_HOOK_PRIORITY)."""
    return (n + (1 << 31)) % (1 << 32) - (1 << 31)


def loc_of(node: Tree | Token, path: str | None = None) -> Loc:
    """Where a token or subtree was written (in file `path`), as nft marks it (the whole token or
    expression)."""
    if isinstance(node, Token):
        same = node.end_line in (None, node.line)
        width = max(1, (node.end_column or node.column + 1) - node.column) if same else 1
        return Loc(node.line, node.column, width, path)
    m = node.meta
    return Loc(m.line, m.column, max(1, m.end_column - m.column) if m.end_line == m.line else 1, path)


__all__ = ["parse_ruleset", "ConfigError", "Prefix", "Range", "SetRef", "SetX", "Sym"]
