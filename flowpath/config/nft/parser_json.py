"""libnftables JSON in: a Ruleset from what `nft -j list ruleset` prints, or from JSON commands.

Linux: nftables src/parser_json.c (json_parse_cmd_add_table/chain/set/flowtable/rule, and
json_parse_flags_array, which takes a flag as a string or flags as a list; json_parse_cmd: objects may
be wrapped in add, create, insert, replace, delete or flush, applied in order as in nft text, commit.py). Every error names the
object (its index in the "nftables" array, and its line and column when the file's text is known) and
says what is wrong with it, in JSON terms.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, fields
from typing import Any

from flowpath.config.nft import datatype as dt
from flowpath.config.nft.commit import ENOENT, Batch, RulePos, batch_commit
from flowpath.config.nft.evaluate_obj import OBJ_KINDS
from flowpath.config.nft.evaluate_set import set_stmt_dynamic
from flowpath.config.nft.family import needs_device
from flowpath.config.nft.ir import Chain, Flowtable, Loc, Obj, Rule, Ruleset, Set, Table
from flowpath.config.nft.json import json_dumps
from flowpath.config.nft.parser import HOOKS, TABLE_FLAGS, s32
from flowpath.config.nft.parser_block import SET_FLAGS, SET_TYPES
from flowpath.config.nft.printer import (
    chain_print,
    flowtable_print,
    obj_print,
    rule_print,
    set_print,
)
from flowpath.config.nft.printer_stmt import set_elems_str, stmt_print
from flowpath.errors import ConfigError

FAMILIES = ("ip", "ip6", "inet", "arp", "bridge", "netdev")
FLOWTABLE_FLAGS = ("offload", "counter")
# what a value of the wrong shape raises inside the printers that check a statement
_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError)


class JsonObjectError(Exception):
    """What is wrong with one object of the "nftables" array (the caller adds which object)."""


@dataclass
class _Cmd:
    """One object of the array: its command (None for an object as listed), the batch, where it is."""

    verb: str | None
    batch: Batch
    loc: Loc


def ruleset_from_json(obj: Any, path: str = "<stdin>", where: list[Loc] | None = None) -> Ruleset:
    """Ruleset from a libnftables JSON object (as `nft -j list ruleset` prints it).

    where  the position of each element of the "nftables" array in the file (json_element_locs), so
           that an error names its line and column; without it errors are at 1:1.
    """
    rs = Ruleset(path=path)
    if not isinstance(obj, dict) or not isinstance(obj.get("nftables"), list):
        raise ConfigError(path, 1, 1, 'Invalid JSON: expected an object with an "nftables" array')
    origin: dict[int, ConfigError] = {}  # id(IR object) -> an error at the JSON object that made it
    handles: list[tuple[Any, Any]] = []  # (IR object, the "handle" its JSON object gave)
    batch, commands = Batch(), False
    for i, item in enumerate(obj["nftables"]):
        loc = where[i] if where is not None and i < len(where) else Loc(1, 1)

        def error(msg: str, i: int = i, item: Any = item, loc: Loc = loc) -> ConfigError:
            return ConfigError(path, loc.line, loc.col, f"JSON object {i}{_describe(item)}: {msg}")

        try:
            verb, kind, body = _command(item)
            if kind == "metainfo":
                continue
            if kind == "ruleset" and verb == "flush":
                rs.tables.clear()
                batch = Batch(batch.tables_made())
                continue
            if verb in ("delete", "flush"):
                _delete(rs, kind, body, _Cmd(verb, batch, loc))
                commands = True
                continue
            made = _LOADERS.get(kind, _unsupported)(rs, kind, body, _Cmd(verb, batch, loc))
        except JsonObjectError as e:
            raise error(str(e)) from None
        origin.setdefault(id(made), error)
        commands |= verb in ("insert", "replace")
        handles.append((made, body.get("handle")))
    failed = batch_commit(rs, batch)
    if failed is not None:
        raise failed[1]
    if not commands and all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for _, h in handles):
        for made, h in handles:  # `nft -j list ruleset` output: keep the kernel's handles
            made.handle = h
    _evaluate(rs, path, origin)
    return rs


def json_element_locs(text: str) -> list[Loc] | None:
    """Line and column of each element of the top-level "nftables" array of valid JSON `text`."""
    dec = json.JSONDecoder()

    def ws(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    last = [0, 1, 0]  # offset counted up to, its line, where that line starts: one pass over the text

    def loc(i: int) -> Loc:
        at, line, start = last
        nl = text.count("\n", at, i)
        if nl:
            line, start = line + nl, text.rindex("\n", at, i) + 1
        last[:] = [i, line, start]
        return Loc(line, i - start + 1)

    try:
        i, out = ws(0) + 1, None
        while text[ws(i)] != "}":
            key, i = dec.raw_decode(text, ws(i))
            i = ws(ws(i) + 1)  # the ':'
            if key == "nftables" and text[i] == "[":
                out, i = [], i + 1
                while text[ws(i)] != "]":
                    i = ws(i)
                    out.append(loc(i))
                    _, i = dec.raw_decode(text, i)
                    i = ws(i) + (text[ws(i)] == ",")
                i = ws(i) + 1
            else:
                _, i = dec.raw_decode(text, i)
            i = ws(i) + (text[ws(i)] == ",")
        return out
    except (ValueError, IndexError):
        return None


_VERBS = ("add", "create", "insert", "replace", "delete", "flush")


def _command(item: Any) -> tuple[str | None, str, Any]:
    """(command or None, object kind, object body) of one element of the "nftables" array."""
    if not isinstance(item, dict) or len(item) != 1:
        raise JsonObjectError("expected an object with a single key")
    ((kind, body),) = item.items()
    verb = None
    if kind in _VERBS and isinstance(body, dict) and len(body) == 1:
        verb, ((kind, body),) = kind, body.items()
    if kind not in ("metainfo", "ruleset") and not isinstance(body, dict):
        raise JsonObjectError(f'"{kind}" must hold an object')
    return verb, kind, body


def _describe(item: Any) -> str:
    """` (rule ip filter input)`: the object's kind and the names it gives, when they are strings."""
    try:
        _, kind, body = _command(item)
    except JsonObjectError:
        return ""
    if not isinstance(body, dict):
        return f" ({kind})"
    keys = {"table": ("family", "name"), "rule": ("family", "table", "chain")}.get(
        kind, ("family", "table", "name")
    )
    names = [body[k] for k in keys if isinstance(body.get(k), str)]
    return f" ({' '.join([kind, *names])})"


# --- fields ------------------------------------------------------------------------------------------
_MISSING = object()
_KINDS = {str: "a string", int: "an integer", list: "a list", dict: "an object", bool: "true or false"}


def _get(body: dict, key: str, kind: type, default: Any = _MISSING) -> Any:
    if key not in body:
        if default is _MISSING:
            raise JsonObjectError(f'missing "{key}"')
        return default
    v = body[key]
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        raise JsonObjectError(f'"{key}" must be {_KINDS[kind]}, not {json_dumps(v)}')
    return v


def _one_of(body: dict, key: str, allowed: tuple, default: Any = _MISSING) -> Any:
    v = _get(body, key, str, default)
    if v is not default and v not in allowed:
        raise JsonObjectError(f'"{key}" must be one of {", ".join(allowed)}, not {json_dumps(v)}')
    return v


def _flags(body: dict, allowed: tuple) -> list[str]:
    """Linux: parser_json.c › json_parse_flags_array: one flag as a string, or a list of them."""
    v = body.get("flags", [])
    flags = [v] if isinstance(v, str) else v
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        raise JsonObjectError(f'"flags" must be a string or a list of strings, not {json_dumps(v)}')
    for f in flags:
        if f not in allowed:
            raise JsonObjectError(f'unknown flag "{f}" (known: {", ".join(allowed)})')
    return [f for f in allowed if f in flags]


def _table(rs: Ruleset, body: dict) -> Table:
    family, name = _one_of(body, "family", FAMILIES), _get(body, "table", str)
    t = rs.table(family, name)
    if t is None:
        raise JsonObjectError(f"table {family} {name} does not exist")
    return t


def _prio(body: dict) -> int:
    """The kernel keeps a 32-bit priority; nft sends the low 32 bits of what it reads."""
    return s32(_get(body, "prio", int, 0))


# --- objects -----------------------------------------------------------------------------------------
def _load_table(rs: Ruleset, kind: str, body: dict, cmd: _Cmd) -> Table:
    family, name = _one_of(body, "family", FAMILIES), _get(body, "name", str)
    flags = _flags(body, TABLE_FLAGS)
    t = rs.table(family, name)
    if t is not None and cmd.verb == "create":
        raise JsonObjectError("Could not process rule: File exists")
    if t is None:
        t = Table(family, name)
        rs.tables.append(t)
    t.flags = [f for f in TABLE_FLAGS if f in t.flags or f in flags]
    t.comment = _get(body, "comment", str, t.comment)
    cmd.batch.table(t)
    return t


def _load_chain(rs: Ruleset, kind: str, body: dict, cmd: _Cmd) -> Chain:
    t = _table(rs, body)
    name = _get(body, "name", str)
    comment = _get(body, "comment", str, None)
    c = t.chains.get(name)
    if c is not None and cmd.verb == "create":
        raise JsonObjectError("Could not process rule: File exists")
    if c is None:
        c = t.chains[name] = Chain(name, comment=comment)
    if "hook" in body:
        c.type = _one_of(body, "type", ("filter", "nat", "route"))
        c.hook, c.prio = _one_of(body, "hook", HOOKS[t.family]), _prio(body)
        c.policy = _one_of(body, "policy", ("accept", "drop"), "accept")
        dev = body.get("dev")
        if not (dev is None or isinstance(dev, str) or (isinstance(dev, list) and all(isinstance(d, str) for d in dev))):
            raise JsonObjectError(f'"dev" must be a string or a list of strings, not {json_dumps(dev)}')
        c.dev = sorted(set(dev)) if isinstance(dev, list) and len(set(dev)) > 1 else (dev[0] if isinstance(dev, list) and dev else dev) or None
        if needs_device(t.family, c.hook) and c.dev is None:
            raise JsonObjectError('a netdev chain needs a "dev" (nft 1.0.6 does not write it)')
    elif "policy" in body:
        raise JsonObjectError('"policy" is only valid for a base chain (one with a "hook")')
    cmd.batch.chain(t, c)
    return c


def _load_set(rs: Ruleset, kind: str, body: dict, cmd: _Cmd) -> Set:
    t = _table(rs, body)
    name, stype = _get(body, "name", str), _set_type(body.get("type"), "type")
    if (kind == "map") != ("map" in body):
        raise JsonObjectError('a "map" holds the data type ("map": "verdict"), a "set" none')
    data = _set_type(body["map"], "map", ("verdict",)) if "map" in body else None
    flags = _flags(body, SET_FLAGS)
    if _get(body, "auto-merge", bool, False):
        flags.append("auto-merge")
    size = _get(body, "size", int, None)
    if size is not None and not 0 < size < 1 << 32:
        raise JsonObjectError(f'"size" must be from 1 to {(1 << 32) - 1}, not {size}')
    elem = copy.deepcopy(_get(body, "elem", list, []))
    timeout, gc = _get(body, "timeout", int, None), _get(body, "gc-interval", int, None)
    if timeout and "timeout" not in flags:
        flags.append("timeout")
    s = Set(
        name, stype, flags, elem, map=data, size=size, comment=_get(body, "comment", str, None),
        timeout=timeout, gc_interval=gc,
    )  # fmt: skip
    try:
        set_elems_str(stype, elem, named=True, data=data)
    except _MALFORMED:
        what = "[key, verdict] pairs" if s.map else f"values of type {stype}"
        raise JsonObjectError(f'"elem" must hold {what}: {json_dumps(elem)}') from None
    if name in t.sets and cmd.verb == "create":
        raise JsonObjectError("Could not process rule: File exists")
    t.sets[name] = s
    cmd.batch.set(t, s)
    return s


def _set_type(v: Any, key: str, extra: tuple = ()) -> str:
    """A set's "type" (a list for a concatenation) or a map's "map" (`a . b` for one), as the IR's
    text (" . " between the parts)."""
    parts = v if isinstance(v, list) and v else str(v).split(" . ") if isinstance(v, str) else None
    if parts is None or not all(isinstance(p, str) and p in (*SET_TYPES, *extra) for p in parts):
        raise JsonObjectError(f'"{key}" must be one of {", ".join((*SET_TYPES, *extra))} or a list of '
                              f"them, not {json_dumps(v)}")  # fmt: skip
    return " . ".join(parts)


def _load_flowtable(rs: Ruleset, kind: str, body: dict, cmd: _Cmd) -> Flowtable:
    t = _table(rs, body)
    dev = body.get("dev", [])
    devs = [dev] if isinstance(dev, str) else dev
    if not isinstance(devs, list) or not all(isinstance(d, str) for d in devs):
        raise JsonObjectError(f'"dev" must be a string or a list of strings, not {json_dumps(dev)}')
    flags = _flags(body, FLOWTABLE_FLAGS)
    name = _get(body, "name", str)
    ft = Flowtable(name, _get(body, "hook", str, "ingress"), _prio(body), list(devs), "counter" in flags,
                   "offload" in flags)  # fmt: skip
    t.flowtables[name] = ft
    cmd.batch.flowtable(t, ft)
    return ft


def _load_obj(rs: Ruleset, kind: str, body: dict, cmd: _Cmd) -> Obj:
    """A counter, quota, limit, ct helper/timeout/expectation or synproxy object: its fields are
    checked when the ruleset is listed and read back (_check_canonical)."""
    t = _table(rs, body)
    name = _get(body, "name", str)
    spec = {k: copy.deepcopy(v) for k, v in body.items() if k not in ("family", "table", "name", "handle")}
    o = Obj(kind, name, spec)
    try:
        obj_print(o)
    except _MALFORMED:
        raise JsonObjectError(f"not a {kind} flowpath reads: {json_dumps(spec)}") from None
    t.objs[kind, name] = o
    cmd.batch.obj(t, o)
    return o


def _load_rule(rs: Ruleset, kind: str, body: dict, cmd: _Cmd) -> Rule:
    t = _table(rs, body)
    c = t.chains.get(_get(body, "chain", str))
    if c is None:
        raise JsonObjectError(f"chain {body['chain']} does not exist")
    expr = copy.deepcopy(_get(body, "expr", list))
    for n, stmt in enumerate(expr, 1):
        if not isinstance(stmt, dict) or len(stmt) != 1:
            raise JsonObjectError(f"statement {n} must be an object with a single key: {json_dumps(stmt)}")
        stmt = expr[n - 1] = _json_defaults(stmt)
        try:
            stmt_print(t.family, stmt)  # every statement must be one flowpath knows
            _check_refs(t, stmt)
            if "set" in stmt and isinstance(stmt["set"], dict):
                set_stmt_dynamic(t.sets[stmt["set"]["set"][1:]])
        except JsonObjectError as e:
            raise JsonObjectError(f"statement {n}: {e}") from None
        except _MALFORMED:
            raise JsonObjectError(f"statement {n} is not one flowpath reads: {json_dumps(stmt)}") from None
    rule = Rule(expr, _get(body, "comment", str, None))
    cmd.batch.rule(t, c, rule, _rule_pos(body, cmd))
    return rule


def _json_defaults(stmt: dict) -> dict:
    """A statement with the fields nft's JSON parser fills in when they are left out.

    Linux: nftables src/parser_json.c › json_parse_counter_stmt (null: a new counter) and
    json_parse_limit_stmt (packets unless rate_unit says otherwise, no burst: the default one)."""
    ((kind, a),) = stmt.items()
    if kind == "counter" and a is None:
        return {"counter": {"packets": 0, "bytes": 0}}
    if kind == "limit" and isinstance(a, dict):
        a = dict(a)
        if a.get("rate_unit") == "packets":
            del a["rate_unit"]
        if "rate_unit" in a:
            a.setdefault("burst", 0)
            a.setdefault("burst_unit", "bytes")
        else:
            a.setdefault("burst", 5)  # what the text parser gives a packet limit without a burst
        return {"limit": a}
    return stmt


def _rule_pos(body: dict, cmd: _Cmd) -> RulePos:
    """Linux: parser_json.c › json_parse_cmd_add_rule and json_parse_cmd_replace: `replace` and `delete`
    name a rule by "handle"; `add` appends, `insert` prepends. A rule as listed carries its own handle.

    Deviation: nft 1.0.6 ignores or refuses "handle" and "index" on add and insert (the kernel's ENOENT,
    or the rule at the end); flowpath refuses them, rather than put a rule where the file did not mean.
    """
    if cmd.verb == "replace":
        return RulePos("replace", "handle", _get(body, "handle", int), cmd.loc, cmd.loc)
    if cmd.verb is not None and ("handle" in body or "index" in body):
        raise JsonObjectError(f'{cmd.verb} places a rule at the end or the start only: no "handle" or "index"')
    return RulePos("insert" if cmd.verb == "insert" else "add")


def _unsupported(rs: Ruleset, kind: str, body: dict, cmd: _Cmd) -> Any:
    raise JsonObjectError(f"unsupported object {json_dumps(kind)}")


def _delete(rs: Ruleset, kind: str, body: dict, cmd: _Cmd) -> None:
    """`delete` and `flush` of a table, chain, set or map, flowtable, or a rule by its handle."""
    if kind == "table":
        t = rs.table(_one_of(body, "family", FAMILIES), _get(body, "name", str))
        if t is None:
            raise JsonObjectError(ENOENT)
        if cmd.verb == "delete":
            rs.tables.remove(t)
        for c in t.chains.values() if cmd.verb == "flush" else ():
            cmd.batch.flush(t, c)
        return
    t = _table(rs, body)
    what = {"chain": "chains", "rule": "chains", "set": "sets", "map": "sets", "flowtable": "flowtables"}
    if kind not in what or (cmd.verb == "flush" and kind in ("rule", "flowtable")):
        raise JsonObjectError(f"cannot {cmd.verb} {json_dumps(kind)}")
    objs = getattr(t, what[kind])
    obj = objs.get(_get(body, "chain" if kind == "rule" else "name", str))
    if obj is None:
        raise JsonObjectError(ENOENT)
    if kind == "rule":
        h = _get(body, "handle", int)
        cmd.batch.delete_rule(t, obj, RulePos("delete", "handle", h, cmd.loc, cmd.loc))
    elif cmd.verb == "flush":
        if kind == "chain":
            cmd.batch.flush(t, obj)
        else:
            obj.elem = []
    else:
        del objs[obj.name]
        cmd.batch.delete("set" if kind == "map" else kind, t, obj, cmd.loc)



_LOADERS = {"table": _load_table, "chain": _load_chain, "set": _load_set, "map": _load_set,
            "flowtable": _load_flowtable, "rule": _load_rule}  # fmt: skip
_LOADERS.update(dict.fromkeys(OBJ_KINDS, _load_obj))


def _check_refs(t: Table, stmt: dict) -> None:
    ((kind, a),) = stmt.items()
    if kind in ("jump", "goto") and a["target"] not in t.chains:
        raise JsonObjectError(f"{kind} to chain {a['target']}, which does not exist")
    if kind == "flow" and a["flowtable"].lstrip("@") not in t.flowtables:
        raise JsonObjectError(f"flowtable {a['flowtable']} does not exist")
    if kind == "match":
        dt.selector_type(a["left"])
        r = a["right"]
        if isinstance(r, str) and r.startswith("@") and r[1:] not in t.sets:
            raise JsonObjectError(f"set {r} does not exist")


# --- the whole ruleset -------------------------------------------------------------------------------
def _evaluate(rs: Ruleset, path: str, origin: dict[int, Any]) -> None:
    """Evaluate the JSON as nft does: list it, parse the listing, and take what that parse made.

    nft's JSON parser hands the expressions to the same evaluator as its text parser, so an
    equivalent form (`"op": "in"` with one value, `"right": 6` for a protocol) is read and listed in
    its normal form; a value the text parser refuses is an error at the JSON object it came from.
    `origin` gives, for each object loaded, a function making an error at that JSON object.
    """
    from flowpath.config.nft.parser import parse_ruleset

    def at(obj: Any, msg: str) -> ConfigError:
        make = origin.get(id(obj))
        return make(msg) if make is not None else ConfigError(path, 1, 1, f"JSON ruleset: {msg}")

    try:
        text = rs.list()
    except _MALFORMED:  # each object was printed once when it was loaded: not expected
        raise ConfigError(path, 1, 1, "JSON ruleset holds an expression flowpath cannot list") from None
    try:
        again = parse_ruleset(text, path)
    except ConfigError as e:
        line = (e.source or "").strip()
        raise at(_listed_on(rs, line), f"not valid: {e.msg} in `{line}`") from None
    mine, theirs = _ir_objects(rs), _ir_objects(again)
    if [type(x) for x in mine] != [type(x) for x in theirs]:
        raise ConfigError(path, 1, 1, "JSON ruleset does not list back to the same objects")
    for obj, normal in zip(mine[1:], theirs[1:], strict=True):
        _adopt(obj, normal)


# what an object's normal form replaces: its value, not its identity, place or contents
_KEEP = {"handle", "loc", "line", "dev_locs", "chains", "sets", "flowtables", "objs", "rules", "name", "family"}


def _adopt(obj: Any, normal: Any) -> None:
    """Give `obj` the fields of `normal`, the same object as nft's evaluation leaves it."""
    for f in fields(obj):
        if f.name not in _KEEP:
            setattr(obj, f.name, getattr(normal, f.name))


def _listed_on(rs: Ruleset, line: str) -> Any:
    """The rule, set, flowtable or chain whose listing holds `line` (stripped), or None."""
    for t in rs.tables:
        for c in t.chains.values():
            for r in c.rules:
                if rule_print(t.family, r.expr, r.comment) == line:
                    return r
    for t in rs.tables:
        texts = [(o, obj_print(o)) for o in t.objs.values()]
        texts += [(s, set_print(s)) for s in t.sets.values()] + [
            (f, flowtable_print(f)) for f in t.flowtables.values()
        ]
        texts += [(c, chain_print(t.family, c)) for c in t.chains.values()]
        for obj, text in texts:
            if line in (x.strip() for x in text.splitlines()):
                return obj
    return None


def _ir_objects(rs: Ruleset) -> list:
    """The IR objects behind ruleset_to_json's list, in its order (metainfo: None)."""
    out: list = [None]
    for t in rs.tables:
        out += [t, *t.objs.values(), *t.sets.values(), *t.flowtables.values(), *t.chains.values()]
        out += [r for c in t.chains.values() for r in c.rules]
    return out
