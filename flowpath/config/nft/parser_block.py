"""The set, map, flowtable and stateful-object blocks of an `nft -f` file, and `add quota|counter|...`.

Linux: nftables src/parser_bison.y (set_block, map_block, flowtable_block, the object blocks and
obj_spec) and src/evaluate.c › set_evaluate (a set timeout implies the timeout flag).
"""

from __future__ import annotations

from lark import Token, Tree

from flowpath.config.nft import evaluate as ev
from flowpath.config.nft import evaluate_set as _es
from flowpath.config.nft.ast import Ctx, number, rhs_ast
from flowpath.config.nft.cmd import EEXIST, is_create
from flowpath.config.nft.evaluate_obj import obj_kind, obj_spec, obj_tokens
from flowpath.config.nft.family import FAMILIES
from flowpath.config.nft.ir import Flowtable, Obj, Set, Table

SET_TYPES = ("ipv4_addr", "ipv6_addr", "inet_service", "inet_proto", "ifname", "mark")
SET_FLAGS = ("constant", "interval", "timeout", "dynamic")


class Blocks:
    """The set, map, flowtable and object handlers of parser.py's _Builder (a mixin: they use its
    tables, batch, names and errors)."""

    def item_set(self, table: Table, t: Tree) -> None:
        self._set(table, t.children[0], t.children[1], t)

    def _typeof(self, table: Table, t: Tree) -> tuple[dict, str]:
        """`typeof EXPR`: the expression's JSON and type (evaluate.c › set_key_data_fetch)."""
        return ev.selector(Ctx(self.path, self.lines, table, None, dict(self.defines)), t)

    def _set_common(self, table: Table, item: Tree, opts: dict) -> bool:
        """The items sets and maps share: typeof, timeout, gc-interval (evaluate_set.py)."""
        if item.data in ("set_typeof", "map_typeof"):
            parts = [self._typeof(table, c) for c in item.children]
            opts["typeof"] = [j for j, _ in parts]
            opts["type"] = parts[0][1]
            if len(parts) == 2:
                opts["data"] = parts[1][1]
        elif item.data == "set_timeout":
            opts["timeout"] = _es.time_seconds(item.children[0])
        elif item.data == "set_gc_interval":
            opts["gc_interval"] = _es.time_seconds(item.children[0])
        else:
            return False
        return True

    def _set(self, table: Table, name: Token, block: Tree, t: Tree) -> None:
        stype, flags, elems, merge = None, [], None, False
        size, comment, opts = None, None, {}
        for item in block.children:
            if self._set_common(table, item, opts):
                stype = opts.get("type", stype)
            elif item.data == "set_type":
                stype = _es.type_name(self.error, item.children[0], SET_TYPES)
            elif item.data == "set_flags":
                for f in item.children:
                    if str(f) not in SET_FLAGS:
                        raise self.error(f, f"unknown set flag {f}")
                    flags.append(str(f))
            elif item.data == "set_elements":
                elems = item
            elif item.data == "set_automerge":
                merge = True
            elif item.data == "set_size":
                size = number(item.children[0])
            elif item.data == "set_comment":
                comment = self._comment(item.children[0])
            else:
                raise self.error(item, "set option not supported by flowpath")
        if stype is None:
            raise self.error(t, "set definition does not specify key")
        if opts.get("timeout"):  # evaluate.c › set_evaluate: a set timeout implies the flag
            flags.append("timeout")
        if "dynamic" in flags and size is None:
            size = _es.NFT_SET_DEFAULT_SIZE
        s = Set(str(name), stype, [f for f in SET_FLAGS if f in flags], line=t.meta.line, size=size,
                comment=comment, loc=self.loc(name), timeout=opts.get("timeout"),
                gc_interval=opts.get("gc_interval"), typeof=opts.get("typeof"))  # fmt: skip
        if merge:
            s.flags.append("auto-merge")
        old = table.sets.get(s.name)
        if old is not None:  # an identical declaration adds to the set, a different one clashes
            if (old.type, old.flags) != (s.type, s.flags):
                raise self.error(name, "Could not process rule: File exists")
            s = old
        self.batch.set(table, s)
        if elems is not None:
            src = elems.children[0]
            if isinstance(src, Token):  # elements = $var
                src = Tree("value", [src], meta=elems.meta)
            ast = rhs_ast(src, self.defines, self.error)
            s.elem = ev.set_elements(s, list(s.elem), ast, self.error)
        table.sets[s.name] = s

    def item_map(self, table: Table, t: Tree) -> None:
        self._map(table, t.children[0], t.children[1], t)

    def _map(self, table: Table, name: Token, block: Tree, t: Tree) -> None:
        stype, flags, elems, size, comment, opts = None, [], None, None, None, {}
        dtype = None
        for item in block.children:
            if self._set_common(table, item, opts):
                stype, dtype = opts.get("type", stype), opts.get("data", dtype)
            elif item.data == "map_type":
                stype = _es.type_name(self.error, item.children[0], SET_TYPES)
                dtype = _es.type_name(self.error, item.children[1], (*SET_TYPES, "verdict"))
            elif item.data == "set_flags":
                for f in item.children:
                    if str(f) not in SET_FLAGS:
                        raise self.error(f, f"unknown set flag {f}")
                    flags.append(str(f))
            elif item.data == "set_size":
                size = number(item.children[0])
            elif item.data == "set_comment":
                comment = self._comment(item.children[0])
            else:
                elems = item.children[0]
        if stype is None:
            raise self.error(t, "map definition does not specify key data type")
        if opts.get("timeout"):
            flags.append("timeout")
        m = Set(str(name), stype, [f for f in SET_FLAGS if f in flags], line=t.meta.line, map=dtype,
                size=size, comment=comment, loc=self.loc(name), timeout=opts.get("timeout"),
                gc_interval=opts.get("gc_interval"), typeof=opts.get("typeof"))  # fmt: skip
        old = table.sets.get(m.name)
        if old is not None:
            if (old.type, old.flags, old.map) != (m.type, m.flags, m.map):
                raise self.error(name, "Could not process rule: File exists")
            m = old
        self.batch.set(table, m)
        if elems is not None:
            self._map_elements(table, m, elems)
        table.sets[m.name] = m

    def _map_elements(self, table: Table, m: Set, elems: Tree) -> None:
        pairs = [(rhs_ast(e.children[0], self.defines, self.error), e.children[1]) for e in elems.children]
        for _, v in pairs:
            if v.data == "verdict_stmt":
                if m.map != "verdict":
                    raise self.error(v, f"datatype mismatch, expected {m.map}, expression has type verdict")
                self.verdicts.append((table, v, self.path, self.lines))
            elif m.map == "verdict":
                raise self.error(v, "datatype mismatch, expected verdict")
        m.elem = ev.map_elements(m, list(m.elem), pairs, self.error, self.defines)

    def item_flowtable(self, table: Table, t: Tree) -> None:
        self._flowtable(table, t.children[0], t.children[1], t)

    def _flowtable(self, table: Table, name: Token, block: Tree, t: Tree) -> None:
        if str(name) in table.flowtables:
            raise self.error(name, f"Could not process rule: File exists (flowtable '{name}')")
        ft = Flowtable(str(name), line=t.meta.line, loc=self.loc(name))
        hooked = False
        for item in block.children:
            if item.data == "ft_hook":
                if str(item.children[0]) != "ingress":
                    raise self.error(item.children[0], f"unknown chain hook {item.children[0]}")
                ft.prio, hooked = self._prio("netdev", "ingress", item.children[1]), True
            elif item.data == "ft_devices":
                devs = item.children[0]
                toks = devs.children if isinstance(devs, Tree) else [devs]
                ft.devices = [self._word_or_var(d) for d in toks]
                ft.dev_locs = {dev: self.loc(d) for dev, d in zip(ft.devices, toks, strict=True)}
            elif item.data == "ft_counter":
                ft.counter = True
            elif item.data == "ft_flags":
                for f in item.children:
                    if str(f) != "offload":
                        raise self.error(f, f"unknown flowtable flag {f}")
                    ft.offload = True
        if not hooked:
            raise self.error(t, "missing hook and priority in flowtable declaration")
        table.flowtables[ft.name] = ft
        self.batch.flowtable(table, ft)

    def item_obj(self, table: Table, t: Tree) -> None:
        self._obj(table, t.children[0], t.children[1], obj_tokens(t.children[2].children[1:-1]),
                  t.children[2].children[-1], t, body=t.children[2])  # fmt: skip

    def cmd_add_obj(self, t: Tree) -> None:
        """`add quota [family] table name 25 mbytes`, `add ct helper t h { ... }`: the first words are
        the table and the name (src/parser_bison.y › obj_spec), the rest the object's body."""
        kind = next(c for c in t.children if isinstance(c, Tree))
        toks = obj_tokens(t.children[t.children.index(kind) + 1 :])
        n = 3 if toks and str(toks[0]) in FAMILIES else 2
        words = toks[:n]
        if len(words) < n or any(w.type != "WORD" for w in words):
            bad = next((w for w in words if w.type != "WORD"), None)
            raise self.error(bad or t, "syntax error, unexpected " + ("newline" if bad is None else "string"))
        table, name = self._lookup_table(words)
        body = toks[n:]
        if len(body) == 1 and isinstance(body[0], Token) and body[0] == "{":
            body = []
        if body and str(body[0]) == "{":  # `{ ... }` as in a table block
            body = body[1:-1]
        end = Token("_NL", "\n", line=t.meta.end_line, column=t.meta.end_column, end_column=t.meta.end_column + 1)
        self._obj(table, kind, name, body, end, t, create=is_create(t))

    def _obj(self, table: Table, kind_t: Tree, name: Token, toks: list, end: object, t: Tree,
             create: bool = False, body: Tree | None = None) -> None:  # fmt: skip
        ctx = Ctx(self.path, self.lines, table, None, dict(self.defines))
        kind, _ = obj_kind(ctx, kind_t)
        spec = obj_spec(ctx, kind, toks, name, end, body)
        old = table.objs.get((kind, str(name)))
        if old is not None:
            if create:
                raise self.error(name, EEXIST)
            return  # nf_tables_newobj: an existing object without NLM_F_EXCL stays as it is
        o = Obj(kind, self._name(name), spec, line=t.meta.line, loc=self.loc(name))
        table.objs[kind, o.name] = o
        self.batch.obj(table, o)
