"""Ruleset objects: tables, chains, sets, flowtables and rules in the libnftables JSON model.

Linux: nftables include/rule.h (struct table, chain, set, flowtable, rule). A rule keeps its statements
as the JSON dicts `nft -j list ruleset` prints (`man libnftables-json`), so the evaluator reads exactly
what nft would hand it.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any

from flowpath.errors import ConfigError

# JSON statement / expression: dict, list, str, int or None, as libnftables-json defines them.
Json = Any


@dataclass(frozen=True)
class Loc:
    """Where something was written: 1-based line and column, and how many columns nft's caret marks.

    Linux: nftables include/nftables.h › struct location (first_line, first_column, last_column).
    """

    line: int
    col: int
    length: int = 1
    path: str | None = None  # the file, when not the ruleset's own (an included one)


def _loc() -> Any:
    """A location field: not part of an object's value (equal rulesets may come from different files)."""
    return field(default=None, compare=False, repr=False)


@dataclass
class Rule:
    """One rule: `expr` is the list of JSON statements, in order."""

    expr: list[Json]
    comment: str | None = None
    handle: int = 0
    line: int = 0  # source line (0 when loaded from JSON)
    loc: Loc | None = _loc()  # the whole rule, which nft marks for an error the kernel returns


@dataclass
class Chain:
    """A chain; base chains carry type/hook/prio/policy (and dev for netdev ingress)."""

    name: str
    type: str | None = None  # filter | nat | route
    hook: str | None = None
    prio: int | None = None
    policy: str | None = None  # accept | drop (base chains only)
    dev: str | list[str] | None = None  # one device, or `devices = { ... }` sorted
    rules: list[Rule] = field(default_factory=list)
    handle: int = 0
    line: int = 0
    comment: str | None = None
    loc: Loc | None = _loc()  # the chain's name
    policy_loc: Loc | None = _loc()  # `policy accept;`
    type_loc: Loc | None = _loc()  # the chain type's name (`filter`)

    @property
    def is_base(self) -> bool:
        return self.hook is not None


@dataclass
class Set:
    """A named set or map: `type` is the key's nft datatype name (a concatenation's joined by " . "),
    `elem` JSON elements in listing order."""

    name: str
    type: str
    flags: list[str] = field(default_factory=list)
    elem: list[Json] = field(default_factory=list)  # a map's elements are [key, verdict] pairs
    handle: int = 0
    line: int = 0
    map: str | None = None  # the data type of a map: "verdict", "mark", "ipv4_addr . inet_service"...
    size: int | None = None  # the most elements the set may hold (NFTA_SET_DESC_SIZE)
    comment: str | None = None
    timeout: int | None = None  # seconds an element lives (NFTA_SET_TIMEOUT), `timeout 1m`
    gc_interval: int | None = None  # seconds (NFTA_SET_GC_INTERVAL)
    typeof: list | None = None  # `typeof` key (and data) expressions as written, JSON; None: `type`
    loc: Loc | None = _loc()  # the set's name


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
    loc: Loc | None = _loc()  # the flowtable's name
    dev_locs: dict[str, Loc] = field(default_factory=dict, compare=False, repr=False)  # each device's name


@dataclass
class Obj:
    """A stateful object: counter, quota, limit, ct helper, ct timeout, ct expectation, synproxy.

    Linux: nftables include/rule.h › struct obj. `spec` holds its JSON fields as `nft -j` prints them
    (without family, table, name and handle): {"packets", "bytes"} for a counter, {"bytes", "used", "inv"}
    for a quota, the limit statement's fields for a limit, and so on (obj.py).
    """

    kind: str
    name: str
    spec: dict = field(default_factory=dict)
    handle: int = 0
    line: int = 0
    loc: Loc | None = _loc()  # the object's name


@dataclass
class Table:
    """A table of one family (ip, ip6, inet, netdev) holding chains, sets and flowtables by name."""

    family: str
    name: str
    chains: dict[str, Chain] = field(default_factory=dict)
    sets: dict[str, Set] = field(default_factory=dict)
    flowtables: dict[str, Flowtable] = field(default_factory=dict)
    # stateful objects by (kind, name): a counter and a quota may share a name
    objs: dict[tuple[str, str], Obj] = field(default_factory=dict)
    handle: int = 0
    flags: list[str] = field(default_factory=list)  # dormant | owner, in the order nft lists them
    comment: str | None = None
    loc: Loc | None = _loc()  # the table's name


@dataclass
class Ruleset:
    """Everything `nft list ruleset` shows, tables in creation order."""

    tables: list[Table] = field(default_factory=list)
    path: str = "<stdin>"
    lines: list[str] = field(default_factory=list, compare=False, repr=False)  # the nft text, for carets
    # the text of each file it includes, by the path Loc.path names
    sources: dict[str, list[str]] = field(default_factory=dict, compare=False, repr=False)

    def error(self, loc: Loc | None, msg: str) -> ConfigError:
        """ConfigError at `loc` in this ruleset's file or the one it names (1:1 when there is no location)."""
        if loc is None:
            return ConfigError(self.path, 1, 1, msg)
        path, lines = self.path, self.lines
        if loc.path is not None and loc.path != self.path:
            path, lines = loc.path, self.sources.get(loc.path, [])
        src = lines[loc.line - 1] if 0 < loc.line <= len(lines) else None
        return ConfigError(path, loc.line, loc.col, msg, source=src, length=loc.length)

    def check_flowtable_devices(self, known: Container[str]) -> None:
        """Raise ConfigError at the first flowtable device not in `known` (the network's link names).

        Linux: nf_tables_api.c › nft_netdev_hook_alloc returns -ENOENT for a device that does not exist;
        nft marks the flowtable. Deviation: flowpath marks the device itself, which says more.
        """
        for t in self.tables:
            for ft in t.flowtables.values():
                for dev in ft.devices:
                    if dev not in known:
                        raise self.error(
                            ft.dev_locs.get(dev, ft.loc),
                            f"Could not process rule: No such file or directory (flowtable {ft.name}: "
                            f"device {dev} is not in the network file)",
                        )

    def table(self, family: str, name: str) -> Table | None:
        for t in self.tables:
            if t.family == family and t.name == name:
                return t
        return None

    def list(self, handles: bool = False) -> str:
        """`nft list ruleset` text (nft 1.0.6 layout); `nft -a list ruleset` with `handles`."""
        from flowpath.config.nft.printer import ruleset_print

        return ruleset_print(self, handles)

    def to_json(self) -> dict:
        """`nft -j list ruleset` object: {"nftables": [metainfo, table, set..., chain..., rule...]}."""
        from flowpath.config.nft.json import ruleset_to_json

        return ruleset_to_json(self)


def json_names(v: Json) -> tuple[str, ...]:
    """A JSON field nft writes as a string for one value and a list for several (absent: none)."""
    if v is None:
        return ()
    return (v,) if isinstance(v, str) else tuple(v)


def anon_sets(obj: Json) -> int:
    """How many anonymous sets a rule's statements make (each takes a handle of the table's)."""
    if isinstance(obj, dict):  # {"set": [...]} is one; a set statement's {"set": {"op"...}} is not; a
        # meter makes its own set
        return sum(
            (k == "set" and isinstance(v, list)) + (k == "meter") + anon_sets(v) for k, v in obj.items()
        )
    if isinstance(obj, list):
        return sum(anon_sets(v) for v in obj)
    return 0
