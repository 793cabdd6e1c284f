"""The commands of an `nft -f` file besides table blocks: add, create, insert, replace, delete, flush.

Linux: nftables src/parser_bison.y (add_cmd, create_cmd, insert_cmd, replace_cmd, delete_cmd, flush_cmd)
and src/evaluate.c (cmd_evaluate_add, cmd_evaluate_delete, cmd_evaluate_flush: the objects a command
names must exist, ENOENT at the name; `create` refuses one that exists, EEXIST). Where a rule command
puts its rule is decided when the batch is committed (commit.py), as the kernel does.
"""

from __future__ import annotations

from typing import Any

from lark import Token, Tree

from flowpath.config.nft import evaluate as ev
from flowpath.config.nft.ast import SetX, number, rhs_ast
from flowpath.config.nft.commit import ENOENT, RulePos
from flowpath.config.nft.ir import Set, Table

EEXIST = "Could not process rule: File exists"


def whole_command(t: Tree) -> Token:
    """A command with the newline or ';' that ends it, which nft marks for an error on the command."""
    m = t.meta
    end = m.end_column + 1 if m.end_line == m.line else m.column + 1
    return Token("COMMAND", "", line=m.line, column=m.column, end_line=m.line, end_column=end)


class Commands:
    """The command handlers of parser.py's _Builder (a mixin: they use its tables, batch and errors)."""

    def _lookup(self, t: Tree, what: str, msg: str = ENOENT) -> tuple[Table, Any, Token]:
        """The table and its `what` (chains, sets or flowtables) a command names; ENOENT at the name."""
        table, name = self._lookup_table(self._words(t))
        obj = getattr(table, what).get(str(name))
        if obj is None:
            raise self.error(name, msg)
        return table, obj, name

    def cmd_add_chain(self, t: Tree) -> None:
        table, name = self._lookup_table(self._words(t))
        if is_create(t) and str(name) in table.chains:
            raise self.error(name, EEXIST)
        block = [c for c in t.children if isinstance(c, Tree)]
        self._chain(table, name, block[0] if block else None, t)

    def cmd_add_rule(self, t: Tree) -> None:
        """`add|insert rule [family] table chain [position N | handle N | index N] rule`."""
        table, chain, _ = self._lookup(t, "chains")
        op = "insert" if t.children[0].type == "INSERT" else "add"
        pos = RulePos(op)
        where = [c for c in t.children if isinstance(c, Tree) and c.data == "rule_position"]
        if where:
            by, n = where[0].children
            # nft marks `position N` and `index N` whole, and the number of `handle N`
            pos = RulePos(op, "index" if by.type == "INDEX" else "handle", number(n),
                          self.loc(n if by.type == "HANDLE" else where[0]))  # fmt: skip
        self._rule(table, chain, t.children[-1], pos)

    def cmd_replace_rule(self, t: Tree) -> None:
        table, chain, _ = self._lookup(t, "chains")
        n = t.children[-2]
        pos = RulePos("replace", "handle", number(n), self.loc(n), self.loc(whole_command(t)))
        self._rule(table, chain, t.children[-1], pos)

    def cmd_delete_rule(self, t: Tree) -> None:
        table, chain, _ = self._lookup(t, "chains")
        n = t.children[-1]
        pos = RulePos("delete", "handle", number(n), self.loc(n), self.loc(whole_command(t)))
        self.batch.delete_rule(table, chain, pos)

    def _named_table(self, t: Tree) -> Table:
        """The table `[family] name` of a delete or flush command; ENOENT at the name."""
        words = self._words(t)
        family, name = ("ip", words[0]) if len(words) == 1 else (str(words[0]), words[1])
        table = self.rs.table(family, self._name(name))
        if table is None:
            raise self.error(name, ENOENT)
        return table

    def cmd_delete_table(self, t: Tree) -> None:
        self.rs.tables.remove(self._named_table(t))

    def _delete(self, t: Tree, what: str, kind: str) -> None:
        """The kernel refuses to delete what a rule uses (commit.py): the rules so far are evaluated
        first, while what they name is still there, as nft evaluates commands in order."""
        self.evaluate_pending()
        table, obj, name = self._lookup(t, what)
        del getattr(table, what)[obj.name]
        self.batch.delete(kind, table, obj, self.loc(name))

    def cmd_delete_chain(self, t: Tree) -> None:
        self._delete(t, "chains", "chain")

    def cmd_delete_set(self, t: Tree) -> None:
        self._delete(t, "sets", "set")

    def cmd_delete_flowtable(self, t: Tree) -> None:
        self._delete(t, "flowtables", "flowtable")

    def cmd_flush_table(self, t: Tree) -> None:
        """`flush table`: the rules of all its chains (sets keep their elements)."""
        table = self._named_table(t)
        for chain in table.chains.values():
            self.batch.flush(table, chain)

    def cmd_flush_chain(self, t: Tree) -> None:
        table, chain, _ = self._lookup(t, "chains")
        self.batch.flush(table, chain)

    def cmd_flush_set(self, t: Tree) -> None:
        _, s, _ = self._lookup(t, "sets", "No such file or directory")
        s.elem = []

    def cmd_add_set(self, t: Tree) -> None:
        table, name = self._lookup_table(self._words(t))
        if is_create(t) and str(name) in table.sets:
            raise self.error(name, EEXIST)
        self._set(table, name, t.children[-1], t)

    def cmd_add_map(self, t: Tree) -> None:
        table, name = self._lookup_table(self._words(t))
        if is_create(t) and str(name) in table.sets:
            raise self.error(name, EEXIST)
        self._map(table, name, t.children[-1], t)

    def cmd_add_flowtable(self, t: Tree) -> None:
        table, name = self._lookup_table(self._words(t))
        self._flowtable(table, name, t.children[-1], t)

    def cmd_add_element(self, t: Tree) -> None:
        """`add|create element`; create refuses an element the set has (EEXIST at the element)."""
        table, s, _ = self._lookup(t, "sets", "No such file or directory")
        if (s.map is None) != (t.children[-1].data == "set_expr"):
            raise self.error(t.children[-1], "elements do not match the set's kind (set or map)")
        if is_create(t):
            for e, key in self._element_keys(s, t.children[-1]):
                if key in [x[0] if s.map is not None else x for x in s.elem]:
                    raise self.error(e, EEXIST)
        if s.map is not None:
            self._map_elements(table, s, t.children[-1])
            return
        elems = rhs_ast(t.children[-1], self.defines, self.error)
        s.elem = ev.set_elements(s, list(s.elem), elems, self.error)

    def cmd_delete_element(self, t: Tree) -> None:
        """`delete element`: each element (a map's by its key) must be in the set (ENOENT at it)."""
        _, s, _ = self._lookup(t, "sets", "No such file or directory")
        for e, key in self._element_keys(s, t.children[-1]):
            keys = [x[0] if s.map is not None else x for x in s.elem]
            if key not in keys:
                raise self.error(e, ENOENT)
            del s.elem[keys.index(key)]

    def _element_keys(self, s: Set, t: Tree) -> list[tuple[Any, Any]]:
        """(element as written, its key as the set stores it) for a set_expr or map_expr's elements."""
        keyset = Set(s.name, s.type, [f for f in s.flags if f != "auto-merge"])
        nodes = [e.children[0] if t.data == "map_expr" else e for e in t.children]
        out = []
        for node in nodes:
            ast = rhs_ast(node, self.defines, self.error)
            for x in ast.elems if isinstance(ast, SetX) else [ast]:
                out += [(node, key) for key in ev.set_elements(keyset, [], SetX([x], node), self.error)]
        return out


def is_create(t: Tree) -> bool:
    """`create` (NLM_F_EXCL: EEXIST if it exists) rather than `add` or a block."""
    return t.data.startswith("add_") and not any(isinstance(c, Token) and c.type == "ADD" for c in t.children)
