"""nftables ruleset front end: `nft -f` text or libnftables JSON in, `nft list ruleset` text or JSON out.

Linux: nftables src/libnftables.c (nft_run_cmd_from_filename and the JSON entry point).

The IR (ir.py): Ruleset.tables -> Table(family, name, chains, sets, flowtables, objs, flags, comment), dicts
in declaration order (objs: counter, quota, limit, ct helper/timeout/expectation and synproxy objects). A file's commands (add, insert, replace, delete, flush; cmd.py) are applied in order
and every object gets the handle the kernel would give it (commit.py); `include` reads other files in
place (include.py). Chain(name, type, hook, prio, policy, dev, rules, comment); Set(name, type, flags, elem,
map, size, comment, timeout, gc_interval, typeof; a concatenated type is "ipv4_addr . inet_service"); Flowtable(name, hook, prio, devices, counter, offload); Rule(expr, comment). Objects
read from nft text also keep where they were written (`loc`, Flowtable.dev_locs; Ruleset.error makes a
ConfigError there), which the kernel's checks (validate.py) and later ones use. `Rule.expr` is the list of
statements exactly as `nft -j list ruleset` prints them, after nft's normalisation, e.g.
  {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 22}}
  {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}
  {"match": {"op": "==", "left": {"&": [{"payload": {"protocol": "tcp", "field": "flags"}}, ["syn", "ack"]]},
             "right": "syn"}}
  right: 22 | "10.0.0.1" | {"prefix": {"addr", "len"}} | {"range": [lo, hi]} | {"set": [...]} | "@name"
  {"vmap": {"key": <selector>, "data": {"set": [[key, {"jump": {"target": "c"}}], ...]} | "@map"}}
  {"counter": {"packets", "bytes"}}, {"log": null | {"prefix", "level"}}, {"accept": null}, {"drop": null},
  {"return": null}, {"continue": null}, {"jump"|"goto": {"target"}}, {"reject": {"type", "expr"}},
  {"snat"|"dnat": {["family"], "addr", ["port"], ["flags"]}}, {"masquerade"|"redirect": null | {...}},
  {"mangle": {"key": {"meta"|"ct": {"key": "mark"}}, "value": 16}}, {"notrack": null},
  {"flow": {"op": "add", "flowtable": "@ft"}}, {"quota": {"val", "val_unit", ["inv"], ["used", "used_unit"]}},
  {"counter"|"quota"|"limit"|"synproxy"|"ct helper"|...: "name" | {"map": {"key", "data"}}} (named objects),
  {"queue": {"num", ["flags"]}}, {"tproxy": {...}}, {"dup": {"addr", ["dev"]}}, {"synproxy": null | {...}}.
  {"set": {"op": "add"|"update"|"delete", "elem": <key> | {"elem": {"val", "timeout"}}, "set": "@s", "stmt"}},
  {"meter": {"key", "stmt", "size", "name"}}; a key or element may be {"concat": [...]}, a map lookup
  value {"map": {"key", "data"}}, the catch-all element "*" (evaluate_set.py).
"""

from __future__ import annotations

import json as _json
from pathlib import Path

from flowpath.config.nft.include import INCLUDE_PATH
from flowpath.config.nft.ir import Chain, Flowtable, Rule, Ruleset, Set, Table
from flowpath.config.nft.parser import parse_ruleset
from flowpath.config.nft.parser_json import json_element_locs, ruleset_from_json
from flowpath.errors import ConfigError


def load_ruleset(path: str | Path, include_path: tuple[str, ...] = INCLUDE_PATH) -> Ruleset:
    """Read `path` as nft text, or as libnftables JSON when its content starts with '{'.

    include_path  where a plain `include` name is looked up after the file's folder (`nft -I`).
    """
    p = str(path)
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(p, 1, 1, f"Could not open file: {e.strerror or e}") from None
    return ruleset_from_text(text, p, include_path)


def ruleset_from_text(text: str, path: str, include_path: tuple[str, ...] = INCLUDE_PATH) -> Ruleset:
    """A ruleset file's text (named `path` in errors): nft text, or libnftables JSON when it starts
    with '{'. What `-r FILE` and `flowpath ctl nft -f FILE` (whose client sends the text) both load."""
    p = str(path)
    if text.lstrip().startswith("{"):
        try:
            obj = _json.loads(text)
        except _json.JSONDecodeError as e:
            lines = text.split("\n")
            raise ConfigError(
                p, e.lineno, e.colno, f"Invalid JSON: {e.msg}", source=lines[e.lineno - 1]
            ) from None
        return ruleset_from_json(obj, p, json_element_locs(text))
    return parse_ruleset(text, p, include_path)


__all__ = [
    "Chain", "ConfigError", "Flowtable", "Rule", "Ruleset", "Set", "Table",
    "load_ruleset", "parse_ruleset", "ruleset_from_json", "ruleset_from_text",
]  # fmt: skip
