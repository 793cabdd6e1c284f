"""Ruleset objects: tables, chains, sets, flowtables and rules in the libnftables JSON model.

Linux: nftables include/rule.h (struct table, chain, set, flowtable, rule). A rule keeps its statements
as the JSON dicts `nft -j list ruleset` prints (`man libnftables-json`), so the evaluator reads exactly
what nft would hand it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# JSON statement / expression: dict, list, str, int or None, as libnftables-json defines them.
Json = Any


@dataclass
class Rule:
    """One rule: `expr` is the list of JSON statements, in order."""

    expr: list[Json]
    comment: str | None = None
    handle: int = 0
    line: int = 0  # source line (0 when loaded from JSON)


@dataclass
class Chain:
    """A chain; base chains carry type/hook/prio/policy (and dev for netdev ingress)."""

    name: str
    type: str | None = None  # filter | nat | route
    hook: str | None = None
    prio: int | None = None
    policy: str | None = None  # accept | drop (base chains only)
    dev: str | None = None
    rules: list[Rule] = field(default_factory=list)
    handle: int = 0
    line: int = 0

    @property
    def is_base(self) -> bool:
        return self.hook is not None


@dataclass
class Set:
    """A named set or map: `type` is the key's nft datatype name, `elem` JSON elements in listing order."""

    name: str
    type: str
    flags: list[str] = field(default_factory=list)
    elem: list[Json] = field(default_factory=list)  # a map's elements are [key, verdict] pairs
    handle: int = 0
    line: int = 0
    map: str | None = None  # "verdict" for a verdict map (`map NAME { type K : verdict; ... }`)


@dataclass
class Flowtable:
    """A flowtable: ingress hook, priority and devices; flags offload / counter."""

    name: str
    hook: str = "ingress"
    prio: int = 0
    devices: list[str] = field(default_factory=list)
    counter: bool = False
    offload: bool = False
    handle: int = 0
    line: int = 0


@dataclass
class Table:
    """A table of one family (ip, ip6, inet, netdev) holding chains, sets and flowtables by name."""

    family: str
    name: str
    chains: dict[str, Chain] = field(default_factory=dict)
    sets: dict[str, Set] = field(default_factory=dict)
    flowtables: dict[str, Flowtable] = field(default_factory=dict)
    handle: int = 0


@dataclass
class Ruleset:
    """Everything `nft list ruleset` shows, tables in creation order."""

    tables: list[Table] = field(default_factory=list)
    path: str = "<stdin>"

    def table(self, family: str, name: str) -> Table | None:
        for t in self.tables:
            if t.family == family and t.name == name:
                return t
        return None

    def list(self) -> str:
        """`nft list ruleset` text (nft 1.0.6 layout)."""
        from flowpath.config.nft.printer import ruleset_print

        return ruleset_print(self)

    def to_json(self) -> dict:
        """`nft -j list ruleset` object: {"nftables": [metainfo, table, set..., chain..., rule...]}."""
        from flowpath.config.nft.json import ruleset_to_json

        return ruleset_to_json(self)

    def renumber(self) -> None:
        """Give handles the way nft does on a fresh load: per table, chains, sets, then rules."""
        for i, t in enumerate(self.tables, 1):
            t.handle = i
            h = 0
            for c in t.chains.values():
                h += 1
                c.handle = h
            for s in t.sets.values():
                h += 1
                s.handle = h
            for f in t.flowtables.values():
                h += 1
                f.handle = h
            for c in t.chains.values():
                for r in c.rules:
                    # an anonymous set takes a handle just before its rule
                    h += 1 + _anon_sets(r.expr)
                    r.handle = h


def _anon_sets(obj: Json) -> int:
    if isinstance(obj, dict):
        return sum((k == "set") + _anon_sets(v) for k, v in obj.items())
    if isinstance(obj, list):
        return sum(_anon_sets(v) for v in obj)
    return 0
