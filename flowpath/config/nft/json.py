"""libnftables JSON: `nft -j list ruleset` output from a Ruleset, and a Ruleset back from that JSON.

Linux: nftables src/json.c (table/set/chain/rule/flowtable printers, the metainfo object) and
src/parser_json.c (reading the same objects, optionally wrapped in add/create commands).
"""

from __future__ import annotations

import copy
from typing import Any

from flowpath.config.nft import datatype as dt
from flowpath.config.nft.ir import Chain, Flowtable, Rule, Ruleset, Set, Table
from flowpath.config.nft.printer import rule_print
from flowpath.errors import ConfigError

METAINFO = {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}


def ruleset_to_json(rs: Ruleset) -> dict:
    out: list[dict] = [{"metainfo": dict(METAINFO)}]
    for t in rs.tables:
        fam = t.family
        out.append({"table": {"family": fam, "name": t.name, "handle": t.handle}})
        for s in t.sets.values():
            obj: dict[str, Any] = {"family": fam, "name": s.name, "table": t.name, "type": s.type,
                                   "handle": s.handle}  # fmt: skip
            if s.map is not None:
                obj["map"] = s.map
            flags = [f for f in s.flags if f != "auto-merge"]
            if flags:
                obj["flags"] = flags
            if s.elem:
                obj["elem"] = copy.deepcopy(s.elem)
            out.append({"map" if s.map is not None else "set": obj})
        for f in t.flowtables.values():
            obj = {"family": fam, "name": f.name, "table": t.name, "handle": f.handle, "hook": f.hook,
                   "prio": f.prio}  # fmt: skip
            if f.devices:
                obj["dev"] = f.devices[0] if len(f.devices) == 1 else list(f.devices)
            # Deviation: nft 1.0.6 omits flowtable flags from JSON; we keep them so JSON round-trips.
            flags = (["offload"] if f.offload else []) + (["counter"] if f.counter else [])
            if flags:
                obj["flags"] = flags
            out.append({"flowtable": obj})
        for c in t.chains.values():
            obj = {"family": fam, "table": t.name, "name": c.name, "handle": c.handle}
            if c.hook is not None:
                obj.update(type=c.type, hook=c.hook, prio=c.prio, policy=c.policy)
                if c.dev is not None:
                    # Deviation: nft 1.0.6 leaves a netdev chain's device out of JSON (later nft
                    # versions print it); without it the JSON could not be loaded back.
                    obj["dev"] = c.dev
            out.append({"chain": obj})
        for c in t.chains.values():
            for r in c.rules:
                obj = {"family": fam, "table": t.name, "chain": c.name, "handle": r.handle}
                if r.comment is not None:
                    obj["comment"] = r.comment
                obj["expr"] = copy.deepcopy(r.expr)
                out.append({"rule": obj})
    return {"nftables": out}


def ruleset_from_json(obj: Any, path: str = "<stdin>") -> Ruleset:
    """Ruleset from a libnftables JSON object (as `nft -j list ruleset` prints it)."""
    rs = Ruleset(path=path)

    def fail(i: int, msg: str) -> ConfigError:
        return ConfigError(path, 1, 1, f"JSON object {i}: {msg}")

    if not isinstance(obj, dict) or not isinstance(obj.get("nftables"), list):
        raise ConfigError(path, 1, 1, 'Invalid JSON: expected an object with an "nftables" array')
    for i, item in enumerate(obj["nftables"]):
        if not isinstance(item, dict) or len(item) != 1:
            raise fail(i, "expected an object with a single key")
        ((kind, body),) = item.items()
        if kind in ("add", "create", "insert") and isinstance(body, dict) and len(body) == 1:
            ((kind, body),) = body.items()
        if kind == "metainfo":
            continue
        if kind == "flush" and body == {"ruleset": None}:
            rs.tables.clear()
            continue
        try:
            _load_object(rs, kind, body)
        except ConfigError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise fail(i, f"malformed {kind}: {e!s}") from None
    rs.renumber()
    _check_canonical(rs, path)
    return rs


def _singleton(v: Any) -> Any:
    """{"set": [x]} and x mean the same (nft lists a merged one-element anonymous set either way)."""
    if isinstance(v, dict):
        if set(v) == {"set"} and isinstance(v["set"], list) and len(v["set"]) == 1:
            return _singleton(v["set"][0])
        return {k: _singleton(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_singleton(x) for x in v]
    return v


def _check_canonical(rs: Ruleset, path: str) -> None:
    """Refuse JSON that is not what nft itself would print: list it, parse the listing, compare.

    The evaluator reads rule JSON as nft prints it, so a value of the wrong type or a statement in a
    form nft never produces is an error here rather than a surprise later.
    """
    from flowpath.config.nft.parser import parse_ruleset

    try:
        text = rs.list()
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise ConfigError(
            path, 1, 1, f"JSON ruleset holds an expression flowpath does not know: {e!s}"
        ) from None
    try:
        again = parse_ruleset(text, path)
    except ConfigError as e:
        raise ConfigError(
            path, 1, 1, f"JSON ruleset is not valid: {e.msg} in `{(e.source or '').strip()}`"
        ) from None

    def objects(r: Ruleset) -> list:
        return [{k: {f: v for f, v in o.items() if f != "handle"}} for x in ruleset_to_json(r)["nftables"]
                for k, o in _singleton(x).items()]  # fmt: skip

    mine, theirs = objects(rs), objects(again)
    for a, b in zip(mine, theirs, strict=False):
        if a != b:
            raise ConfigError(path, 1, 1, f"JSON object is not in the form nft prints: {json_dumps(a)}")
    if len(mine) != len(theirs):
        raise ConfigError(path, 1, 1, "JSON ruleset does not list back to the same objects")


def json_dumps(obj: Any) -> str:
    import json

    text = json.dumps(obj)
    return text if len(text) < 200 else text[:197] + "..."


def _table(rs: Ruleset, body: dict) -> Table:
    key = "table" if "table" in body and "chain" in body or "type" in body or "hook" in body else "table"
    t = rs.table(body["family"], body[key])
    if t is None:
        raise KeyError(f"table {body['family']} {body[key]} does not exist")
    return t


def _load_object(rs: Ruleset, kind: str, body: dict) -> None:
    if kind == "table":
        if body["family"] not in ("ip", "ip6", "inet", "netdev"):
            raise ValueError(f"unknown family {body['family']}")
        if rs.table(body["family"], body["name"]) is None:
            rs.tables.append(Table(body["family"], str(body["name"])))
    elif kind == "chain":
        t = _table(rs, body)
        c = t.chains.setdefault(body["name"], Chain(str(body["name"])))
        if "hook" in body:
            c.type, c.hook, c.prio = body["type"], body["hook"], int(body["prio"])
            c.policy, c.dev = body.get("policy", "accept"), body.get("dev")
            if t.family == "netdev" and not isinstance(c.dev, str):
                raise ValueError(f'netdev chain {c.name} needs a "dev" (nft 1.0.6 does not write it)')
    elif kind in ("set", "map"):
        t = _table(rs, body)
        if (kind == "map") != ("map" in body) or body.get("map", "verdict") != "verdict":
            raise ValueError("only verdict maps are supported")
        if body["type"] not in ("ipv4_addr", "ipv6_addr", "inet_service", "inet_proto", "ifname", "mark"):
            raise ValueError(f"unsupported set type {body['type']}")
        flags = list(body.get("flags", []))
        if body.get("auto-merge"):
            flags.append("auto-merge")
        elem = copy.deepcopy(body.get("elem", []))
        if not isinstance(elem, list):
            raise TypeError("elem must be a list")
        t.sets[body["name"]] = Set(str(body["name"]), body["type"], flags, elem, map=body.get("map"))
    elif kind == "flowtable":
        t = _table(rs, body)
        dev = body.get("dev", [])
        flags = body.get("flags", [])
        t.flowtables[body["name"]] = Flowtable(
            str(body["name"]), body.get("hook", "ingress"), int(body.get("prio", 0)),
            [dev] if isinstance(dev, str) else list(dev), "counter" in flags, "offload" in flags,
        )  # fmt: skip
    elif kind == "rule":
        t = _table(rs, body)
        c = t.chains.get(body["chain"])
        if c is None:
            raise KeyError(f"chain {body['chain']} does not exist")
        expr = copy.deepcopy(body["expr"])
        if not isinstance(expr, list):
            raise TypeError("rule expr must be a list")
        rule_print(t.family, expr)  # every statement must be one flowpath knows
        _check_refs(t, expr)
        c.rules.append(Rule(expr, body.get("comment")))
    else:
        raise ValueError(f"unsupported object {kind!r}")


def _check_refs(t: Table, expr: list) -> None:
    for s in expr:
        ((kind, a),) = s.items()
        if kind in ("jump", "goto") and a["target"] not in t.chains:
            raise KeyError(f"chain {a['target']} does not exist")
        if kind == "flow" and a["flowtable"].lstrip("@") not in t.flowtables:
            raise KeyError(f"flowtable {a['flowtable']} does not exist")
        if kind == "match":
            dt.selector_type(a["left"])
            r = a["right"]
            if isinstance(r, str) and r.startswith("@") and r[1:] not in t.sets:
                raise KeyError(f"set {r} does not exist")
