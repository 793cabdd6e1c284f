"""What the kernel makes of the batch `nft -f` sends: handles, rule positions, deletions, in batch order.

Linux: net/netfilter/nf_tables_api.c (nf_tables_newtable takes the next handle of the netns' counter;
nf_tables_alloc_handle, one counter per table for its chains, sets, flowtables and rules, anonymous sets
included; nf_tables_newrule with NFTA_RULE_POSITION: `add` after, `insert` before the rule of that handle,
NLM_F_REPLACE keeping the handle it replaces; nf_tables_delrule, nf_tables_delchain and nf_tables_delset,
which refuse what a rule still uses with EBUSY) and nftables src/cmd.c › nft_cmd_expand (the order of a
table block: its chains, then objects, sets, flowtables, rules) and src/evaluate.c › rule_cache_update
(`index N` names the Nth rule of the chain as the batch has built it so far).

Deviation: nft 1.0.6 checks `position N`, `handle N` and `index N` against its cache, which does not
know the handles of rules the same file made: depending on the file's other commands (an `add chain`
turns the check off) it refuses a position naming such a rule (ENOENT at the position), or passes it to
the kernel, which finds the rule; and an index next to such positions may land elsewhere. flowpath
does what the kernel does with the batch, and counts an index in the chain as the commands built it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from flowpath.config.nft.ir import Chain, Flowtable, Json, Loc, Obj, Rule, Ruleset, Set, Table, anon_sets
from flowpath.errors import ConfigError

ENOENT = "Could not process rule: No such file or directory"
EBUSY = "Could not process rule: Device or resource busy"


@dataclass(frozen=True)
class RulePos:
    """Where a rule command puts its rule: `op` add | insert | replace | delete; `by` position | handle |
    index (None: the chain's end for add, its start for insert); `n` the handle or index; `loc` what nft
    marks when there is no such rule, `cmd` the whole command, which it marks when the kernel finds
    no rule of a handle the batch gave (replace or delete of a rule it deleted)."""

    op: str
    by: str | None = None
    n: int = 0
    loc: Loc | None = None
    cmd: Loc | None = None


class Batch:
    """What nft sends the kernel for one file, in order: 4-tuples (kind, table, object, detail).

    kind: table | chain | obj | set | flowtable | rule (detail: the Rule; object: its chain) | delrule (object:
    the chain, detail: the RulePos) | flush (object: the chain) | delchain | delset | delflowtable (object:
    the deleted one, detail: the Loc of its name). No Linux counterpart as a type.
    """

    def __init__(self, first_table_handle: int = 0) -> None:
        self.items: list[tuple[str, Table, Any, Any]] = []
        self.pos: dict[int, RulePos] = {}  # id(rule) -> where its command puts it
        self.first_table_handle = first_table_handle  # tables a `flush ruleset` dropped took handles
        self._block: tuple[list, list, list, list, list] | None = None

    @contextmanager
    def block(self) -> Iterator[None]:
        """A `table NAME { ... }` block: its chains, then objects, sets, flowtables, rules."""
        self._block = ([], [], [], [], [])
        try:
            yield
        finally:
            chains, sets, flowtables, rules, objs = self._block
            self._block = None
            self.items += chains + objs + sets + flowtables + rules

    def _add(self, slot: int, item: tuple[str, Table, Any, Any]) -> None:
        (self.items if self._block is None else self._block[slot]).append(item)

    def table(self, table: Table) -> None:
        self.items.append(("table", table, None, None))

    def chain(self, table: Table, chain: Chain) -> None:
        self._add(0, ("chain", table, chain, None))

    def set(self, table: Table, s: Set) -> None:
        self._add(1, ("set", table, s, None))

    def flowtable(self, table: Table, ft: Flowtable) -> None:
        self._add(2, ("flowtable", table, ft, None))

    def obj(self, table: Table, o: Obj) -> None:
        self._add(4, ("obj", table, o, None))

    def rule(self, table: Table, chain: Chain, rule: Rule, pos: RulePos | None = None) -> None:
        self.pos[id(rule)] = pos or RulePos("add")
        self._add(3, ("rule", table, chain, rule))

    def delete_rule(self, table: Table, chain: Chain, pos: RulePos) -> None:
        self.items.append(("delrule", table, chain, pos))

    def flush(self, table: Table, chain: Chain) -> None:
        self.items.append(("flush", table, chain, None))

    def delete(self, kind: str, table: Table, obj: Any, loc: Loc | None) -> None:
        """`delete chain|set|map|flowtable`: kind is chain, set or flowtable."""
        self.items.append(("del" + kind, table, obj, loc))

    def tables_made(self) -> int:
        """The table handles this batch takes (the next batch, after `flush ruleset`, goes on from them)."""
        return self.first_table_handle + len({id(t) for kind, t, _, _ in self.items if kind == "table"})


def batch_commit(rs: Ruleset, batch: Batch) -> tuple[int, ConfigError] | None:
    """Replay `batch` on the objects it names: handles as the kernel gives them, and each chain's rules
    in the order the commands leave them. Returns the first failing item's index and its error, or None;
    what the batch made up to that item is in place (for the kernel's checks, validate.py)."""
    table_handle = batch.first_table_handle
    hgen: dict[int, int] = {}  # id(table) -> the last handle it gave
    chains: dict[int, list[Chain]] = {}  # id(table) -> every chain it had in the batch
    objs: set[tuple[int, str, str]] = set()  # (id(table), kind, name) of the objects made so far

    def alloc(table: Table) -> int:
        hgen[id(table)] = hgen.get(id(table), 0) + 1
        return hgen[id(table)]

    for _kind, _table, obj, _ in batch.items:
        if isinstance(obj, Chain):
            obj.rules = []
    for i, (kind, table, obj, detail) in enumerate(batch.items):
        if kind == "table":
            if table.handle == 0:
                table_handle += 1
                table.handle = table_handle
        elif kind in ("chain", "set", "flowtable", "obj"):
            if obj.handle == 0:
                obj.handle = alloc(table)
            if kind == "chain":
                chains.setdefault(id(table), []).append(obj)
            if kind == "obj":
                objs.add((id(table), obj.kind, obj.name))
        elif kind == "rule":
            pos = batch.pos[id(detail)]
            if any((id(table), *ref) not in objs for ref in _objrefs(detail.expr)):
                # nft_objref_init: the object must exist when the rule is added (nft marks its name;
                # Deviation: flowpath marks the rule)
                return i, rs.error(detail.loc, ENOENT)
            msg = _rule_place(obj, detail, pos, lambda t=table: alloc(t))
            if msg is not None:
                return i, rs.error(_enoent_loc(pos, hgen.get(id(table), 0)), msg)
        elif kind == "delrule":
            at = _rule_find(obj, detail)
            if at is None:
                return i, rs.error(_enoent_loc(detail, hgen.get(id(table), 0)), ENOENT)
            del obj.rules[at]
        elif kind == "flush":
            obj.rules.clear()
        elif _in_use(table, obj, kind[3:], chains.get(id(table), [])):
            return i, rs.error(detail, EBUSY)
        elif kind == "delchain":
            obj.rules.clear()
    return None


# statements that name a stateful object, and the object's kind (src/statement.c › objref_type)
_OBJREF = ("counter", "quota", "limit", "synproxy", "ct helper", "ct timeout", "ct expectation")


def _objrefs(expr: list) -> list[tuple[str, str]]:
    """(kind, name) of every object a rule's statements name, a map's names included."""
    out = []
    for s in expr:
        ((kind, a),) = s.items()
        if kind not in _OBJREF:
            continue
        if isinstance(a, str):
            out.append((kind, a))
        elif isinstance(a, dict) and set(a) == {"map"}:
            out += [(kind, name) for _, name in a["map"]["data"]["set"]]
    return out


def _enoent_loc(pos: RulePos, last_handle: int) -> Loc | None:
    """nft's own check marks the handle it cannot find; the kernel's answer, for a handle the batch gave
    to a rule since deleted, marks the replace or delete command."""
    if pos.op in ("replace", "delete") and pos.by == "handle" and pos.n <= last_handle:
        return pos.cmd
    return pos.loc


def _rule_find(chain: Chain, pos: RulePos) -> int | None:
    """The index in chain.rules of the rule `pos` names, or None."""
    if pos.by == "index":
        return pos.n if pos.n < len(chain.rules) else None
    for i, r in enumerate(chain.rules):
        if r.handle == pos.n:
            return i
    return None


def _rule_place(chain: Chain, rule: Rule, pos: RulePos, alloc: Any) -> str | None:
    at = None
    if pos.by is not None:
        at = _rule_find(chain, pos)
        if at is None:
            return ENOENT
    for _ in range(anon_sets(rule.expr)):  # an anonymous set is made just before its rule
        alloc()
    if pos.op == "replace":
        rule.handle = chain.rules[at].handle
        chain.rules[at] = rule
        return None
    rule.handle = alloc()
    if pos.op == "insert":
        chain.rules.insert(0 if at is None else at, rule)
    else:
        chain.rules.insert(len(chain.rules) if at is None else at + 1, rule)
    return None


def _in_use(table: Table, obj: Chain | Set | Flowtable, kind: str, chains: list[Chain]) -> bool:
    """Whether a rule of the table's other chains, or a verdict map's element, still refers to `obj`
    (chain->use, set->use, flowtable->use in the kernel)."""
    if kind == "chain" and any(_refers(s.elem, kind, obj.name) for s in table.sets.values()):
        return True
    for c in chains:
        if c is obj:
            continue
        for r in c.rules:
            if _refers(r.expr, kind, obj.name):
                return True
    return False


def _refers(x: Json, kind: str, name: str) -> bool:
    if isinstance(x, dict):
        if kind == "chain" and ("jump" in x or "goto" in x):
            return (x.get("jump") or x.get("goto"))["target"] == name
        return any(_refers(v, kind, name) for v in x.values())
    if isinstance(x, list):
        return any(_refers(v, kind, name) for v in x)
    return kind != "chain" and x == "@" + name
