"""libnftables JSON: `nft -j list ruleset` output from a Ruleset (parser_json.py reads it back).

Linux: nftables src/json.c (table/set/chain/rule/flowtable printers, the metainfo object).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from flowpath.config.nft import datatype as dt
from flowpath.config.nft.ir import Json, Ruleset
from flowpath.config.nft.output import NUMERIC_PROTO, STATELESS

METAINFO = {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}


def ruleset_to_json(rs: Ruleset) -> dict:
    out: list[dict] = [{"metainfo": dict(METAINFO)}]
    for t in rs.tables:
        fam = t.family
        obj: dict[str, Any] = {"family": fam, "name": t.name, "handle": t.handle}
        if t.flags:
            # Deviation: nft 1.0.6 writes the family here ("flags": "ip"); later nft writes the flags,
            # one as a string, several as a list, and so do we.
            obj["flags"] = t.flags[0] if len(t.flags) == 1 else list(t.flags)
        if t.comment is not None:
            obj["comment"] = t.comment  # Deviation: nft 1.0.6 leaves it out; later nft writes it
        out.append({"table": obj})
        for o in t.objs.values():  # json.c › obj_print_json: the object's own fields after these
            out.append({o.kind: {"family": fam, "name": o.name, "table": t.name, "handle": o.handle,
                                 **copy.deepcopy(o.spec)}})  # fmt: skip
        for s in t.sets.values():
            types = s.type.split(" . ")
            obj = {"family": fam, "name": s.name, "table": t.name, "type": types if len(types) > 1 else s.type,
                   "handle": s.handle}  # fmt: skip
            if s.map is not None:
                obj["map"] = s.map
            if s.comment is not None:
                obj["comment"] = s.comment
            if s.size is not None:
                obj["size"] = s.size
            # as nft 1.0.6, without "dynamic": reading the JSON back, a set a rule updates is dynamic again
            flags = [f for f in ("constant", "interval", "timeout") if f in s.flags]
            if flags:
                obj["flags"] = flags
            if s.timeout:
                obj["timeout"] = s.timeout
            if s.gc_interval:
                obj["gc-interval"] = s.gc_interval
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
            if c.comment is not None:
                obj["comment"] = c.comment  # Deviation: nft 1.0.6 leaves it out; later nft writes it
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
                obj["expr"] = [_stmt_out(x) for x in copy.deepcopy(r.expr)]
                out.append({"rule": obj})
    return {"nftables": out}


def _stmt_out(stmt: Json) -> Json:
    """A statement as `nft -j` lists it under the output options (output.py): `-s` leaves counters
    empty, `-p` gives a protocol match's values as numbers."""
    if STATELESS.get() and "counter" in stmt:
        return {"counter": None}
    m = stmt.get("match")
    if NUMERIC_PROTO.get() and m is not None:
        try:
            proto = dt.selector_type(m["left"]) == "inet_proto"
        except (dt.DatatypeError, KeyError):
            proto = False
        if proto:
            m["right"] = _proto_numbers(m["right"])
    return stmt


def _proto_numbers(v: Json) -> Json:
    if isinstance(v, list):
        return [_proto_numbers(x) for x in v]
    if isinstance(v, dict):
        return {k: _proto_numbers(x) for k, x in v.items()}
    if isinstance(v, str) and not v.startswith("@"):
        return dt.value_num("inet_proto", v)
    return v


def json_dumps(obj: Any) -> str:
    """One JSON value for an error message, cut at 200 characters."""
    text = json.dumps(obj)
    return text if len(text) < 200 else text[:197] + "..."
