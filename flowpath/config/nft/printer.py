"""`nft list ruleset` text from a Ruleset, laid out as nft 1.0.6 prints it.

Linux: nftables src/rule.c (table_print, chain_print, set_print_declaration, flowtable_print, prio2str),
src/statement.c (statement printers) and src/expression.c (relational, set and range printers).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from flowpath.config.nft import datatype as dt
from flowpath.config.nft.evaluate_set import flags_print, time_str
from flowpath.config.nft.ir import Chain, Flowtable, Ruleset, Set, Table

_STD_PRIO = (
    ("raw", -300),
    ("mangle", -150),
    ("dstnat", -100),
    ("filter", 0),
    ("security", 50),
    ("srcnat", 100),
)
_REJECT_DEFAULT = {"ip": "icmp", "ip6": "icmpv6", "inet": "icmpx", "netdev": "icmpx"}
_SET_NEWLINE = ",\n\t\t\t     "
# `nft -s` (NFT_CTX_OUTPUT_STATELESS): counters and quotas without what they counted
_STATELESS: ContextVar[bool] = ContextVar("stateless", default=False)


@contextmanager
def output_options(stateless: bool = False, numeric_proto: bool = False) -> Iterator[None]:
    """Listings made inside are `nft -s` (`stateless`) and `nft -p` (`numeric_proto`) ones."""
    tokens = (_STATELESS.set(stateless), dt.NUMERIC_PROTO.set(numeric_proto))
    try:
        yield
    finally:
        _STATELESS.reset(tokens[0])
        dt.NUMERIC_PROTO.reset(tokens[1])


def prio2str(family: str, hook: str, prio: int) -> str:
    """Linux: src/rule.c › prio2str: a standard name, +/- up to 10 from it, else the number."""
    from flowpath.config.nft.parser import prio_name_ok

    for name, base in _STD_PRIO:
        if not prio_name_ok(family, hook, name):
            continue
        off = prio - base
        if off == 0:
            return name
        if -10 <= off <= 10:
            return f"{name} {'+' if off > 0 else '-'} {abs(off)}"
    return str(prio)


def ruleset_print(rs: Ruleset, handles: bool = False) -> str:
    """`nft list ruleset`; with `handles`, `nft -a list ruleset` (a `# handle N` after each object)."""
    return "".join(table_print(t, handles) for t in rs.tables)


def _handle(h: int, handles: bool) -> str:
    return f" # handle {h}" if handles else ""


def table_print(t: Table, handles: bool = False) -> str:
    """Linux: src/rule.c › table_print and table_print_declaration (flags, then the comment)."""
    parts = [set_print(s, handles) for s in t.sets.values()]
    parts += [flowtable_print(f, handles) for f in t.flowtables.values()]
    parts += [chain_print(t.family, c, handles) for c in t.chains.values()]
    head = "".join(f"\tflags {f}\n" for f in t.flags)
    if t.comment is not None:
        head += f'\tcomment "{t.comment}"\n'
    if t.flags and parts:  # nft's delimiter follows the flags only
        head += "\n"
    return f"table {t.family} {t.name} {{{_handle(t.handle, handles)}\n" + head + "\n".join(parts) + "}\n"


def set_print(s: Set, handles: bool = False) -> str:
    """Linux: src/rule.c › set_print_declaration."""
    key = f"typeof {selector_str(s.typeof[0])}" if s.typeof else f"type {s.type}"
    if s.map is not None:
        data = selector_str(s.typeof[1]) if s.typeof and len(s.typeof) > 1 else s.map
        out = f"\tmap {s.name} {{{_handle(s.handle, handles)}\n\t\t{key} : {data}\n"
    else:
        out = f"\tset {s.name} {{{_handle(s.handle, handles)}\n\t\t{key}\n"
    if s.size is not None:
        out += f"\t\tsize {s.size}\n"
    flags = flags_print(s.flags, s.timeout)
    if flags:
        out += f"\t\tflags {','.join(flags)}\n"
    if s.timeout:
        out += f"\t\ttimeout {time_str(s.timeout)}\n"
    if s.gc_interval:
        out += f"\t\tgc-interval {time_str(s.gc_interval)}\n"
    if "auto-merge" in s.flags:
        out += "\t\tauto-merge\n"
    if s.comment is not None:
        out += f'\t\tcomment "{s.comment}"\n'
    if s.elem:
        out += "\t\telements = " + set_elems_str(s.type, s.elem, named=True, data=s.map) + "\n"
    return out + "\t}\n"


def set_elems_str(dtype: str, elems: list, named: bool, data: str | None = "verdict") -> str:
    """Linux: src/expression.c › set_expr_print with calculate_delim (named sets wrap lines); `data`
    is a map's data type."""
    per_line = dt.set_delim_count(dtype) if named else 0
    out = "{ "
    for i, e in enumerate(elems):
        if i:
            out += _SET_NEWLINE if per_line and i % per_line == 0 else ", "
        if isinstance(e, list):  # map element: key : verdict or data
            value = stmt_print("", e[1]) if data in (None, "verdict") else rhs_str(data, e[1])
            out += f"{rhs_str(dtype, e[0])} : {value}"
        else:
            out += rhs_str(dtype, e)
    return out + " }"


def flowtable_print(f: Flowtable, handles: bool = False) -> str:
    out = f"\tflowtable {f.name} {{{_handle(f.handle, handles)}\n\t\thook {f.hook} priority {prio2str('netdev', f.hook, f.prio)}\n"
    if f.devices:
        out += "\t\tdevices = { " + ", ".join(f.devices) + " }\n"
    if f.counter:
        out += "\t\tcounter\n"
    if f.offload:
        out += "\t\tflags offload\n"
    return out + "\t}\n"


def chain_print(family: str, c: Chain, handles: bool = False) -> str:
    out = f"\tchain {c.name} {{{_handle(c.handle, handles)}\n"
    if c.comment is not None:
        out += f'\t\tcomment "{c.comment}"\n'
    if c.hook is not None:
        dev = f'device "{c.dev}" ' if c.dev else ""
        prio = prio2str(family, c.hook, c.prio or 0)
        out += f"\t\ttype {c.type} hook {c.hook} {dev}priority {prio}; policy {c.policy};\n"
    for r in c.rules:
        out += "\t\t" + rule_print(family, r.expr, r.comment) + _handle(r.handle, handles) + "\n"
    return out + "\t}\n"


def rule_print(family: str, stmts: list, comment: str | None = None) -> str:
    text = " ".join(stmt_print(family, s) for s in stmts)
    if comment is not None:
        text += f' comment "{comment}"'
    return text


# --- expressions -------------------------------------------------------------------------------------
def selector_str(left: dict) -> str:
    if "concat" in left:
        return " . ".join(selector_str(x) for x in left["concat"])
    for sel in left.values():
        if isinstance(sel, dict):
            _scalars(sel, "protocol", "field", "key", "name")
    if "payload" in left:
        return f"{left['payload']['protocol']} {left['payload']['field']}"
    if "meta" in left:
        key = left["meta"]["key"]
        return key if key in dt.META_UNQUALIFIED else f"meta {key}"
    if "ct" in left:
        return f"ct {left['ct']['key']}"
    if "tcp option" in left:
        opt = left["tcp option"]
        return f"tcp option {opt['name']}" + (f" {opt['field']}" if "field" in opt else "")
    if "fib" in left:  # Linux: nftables src/fib.c › fib_expr_print
        f = left["fib"]
        flags = f["flags"] if isinstance(f["flags"], list) else [f["flags"]]
        return f"fib {' . '.join(x for x in dt.FIB_FLAGS if x in flags)} {f['result']}"
    if "ipsec" in left:  # Linux: nftables src/xfrm.c › xfrm_expr_print
        x = left["ipsec"]
        _scalars(x, "family", "spnum")
        spnum = f"spnum {x['spnum']} " if x.get("spnum") else ""
        key = f"{x['family']} {x['key']}" if x["key"] in ("saddr", "daddr") else x["key"]
        return f"ipsec {x['dir']} {spnum}{key}"
    if "rt" in left:
        return f"rt {left['rt']['key']}"
    raise ValueError(f"unsupported selector {left!r}")


def rhs_str(dtype: str, v: Any) -> str:
    if isinstance(v, str) and (v.startswith("@") or v == "*"):  # a set reference, the catch-all
        return v
    if isinstance(v, dict):
        if "concat" in v:
            types = dtype.split(" . ")
            if len(types) != len(v["concat"]):
                raise ValueError(f"a concatenation of {len(v['concat'])} for type {dtype}")
            return " . ".join(rhs_str(t, x) for t, x in zip(types, v["concat"], strict=True))
        if "elem" in v:  # an element with options (src/expression.c › set_elem_expr_print)
            e = v["elem"]
            _scalars(e, "timeout", "comment")
            out = rhs_str(dtype, e["val"])
            if e.get("timeout"):
                out += f" timeout {time_str(e['timeout'])}"
            if e.get("comment") is not None:
                out += f' comment "{e["comment"]}"'
            return out
        if "map" in v:  # `ip saddr map { ... }` as a value
            m = v["map"]
            kdtype = dt.selector_type(m["key"])
            data = m["data"]
            text = data if isinstance(data, str) else set_elems_str(kdtype, data["set"], False, dtype)
            return f"{selector_str(m['key'])} map {text}"
        if "set" in v:
            return set_elems_str(dtype, v["set"], named=False)
        if "range" in v:
            return f"{dt.value_str(dtype, v['range'][0])}-{dt.value_str(dtype, v['range'][1])}"
        if "prefix" in v:
            _scalars(v["prefix"], "len")
            return f"{dt.value_str(dtype, v['prefix']['addr'])}/{v['prefix']['len']}"
        raise ValueError(f"unsupported expression {sorted(v)}")
    return dt.value_str(dtype, v)


_RELOPS = ("==", "!=", "<", ">", "<=", ">=", "in")


def _scalars(a: dict, *keys: str) -> None:
    """Where nft writes a string or a number, a JSON object or array is not a statement flowpath reads
    (raised here, so that no Python repr reaches a listing)."""
    for k in keys:
        if isinstance(a.get(k), (dict, list)):
            raise ValueError(f"{k} must be a string or a number")


def match_print(m: dict) -> str:
    left, op, right = m["left"], m["op"], m["right"]
    if op not in _RELOPS:
        raise ValueError(f"unknown operator {op!r}")
    if "&" in left:
        sel, mask = left["&"]
        dtype = dt.selector_type(sel)
        if dt.is_bitmask(dtype):
            ops = "" if op == "==" else f"{op} "
            return f"{selector_str(sel)} {ops}{rhs_str(dtype, right)} / {rhs_str(dtype, mask)}"
        return f"{selector_str(sel)} & {rhs_str(dtype, mask)} {op} {rhs_str(dtype, right)}"
    if isinstance(right, bool):  # a boolean: tcp option, fib's oif (NFTA_FIB_F_PRESENT), meta/rt ipsec
        if op != "==":
            raise ValueError(f"{op} with exists/missing")
        return f"{selector_str(left)} {'exists' if right else 'missing'}"
    dtype = dt.selector_type(left)
    scalar = not isinstance(right, dict) and not (isinstance(right, str) and right.startswith("@"))
    if op == "in" or (op == "==" and not (dt.is_bitmask(dtype) and scalar)):
        ops = ""
    else:
        ops = f"{op} "
    return f"{selector_str(left)} {ops}{rhs_str(dtype, right)}"


def _nat_print(family: str, kind: str, a: dict | None) -> str:
    """Linux: src/statement.c › nat_stmt_print: with a port, an IPv6 address is bracketed, and each end of
    an IPv6 range on its own (`[2001:db8::1]-[2001:db8::2]:80-100`); a prefix is not."""
    a = a or {}
    _scalars(a, "family")
    out = kind
    if a.get("family"):
        out += f" {a['family']}"
    addr, port = a.get("addr"), a.get("port")
    dtype = "ipv6_addr" if (a.get("family") or family) == "ip6" or _is_ip6(addr) else "ipv4_addr"
    if addr is not None or port is not None:
        out += " to "
    if isinstance(addr, dict) and "map" in addr:
        m = addr["map"]
        kdtype = dt.selector_type(m["key"])
        if isinstance(m["data"], str):
            return f"{out}{selector_str(m['key'])} map {m['data']}" + _nat_flags_str(a)
        elems = ", ".join(f"{rhs_str(kdtype, k)} : {rhs_str(_nat_data_type(dtype, v), v)}" for k, v in m["data"]["set"])
        return f"{out}{selector_str(m['key'])} map {{ {elems} }}" + _nat_flags_str(a)
    if addr is not None:
        text = rhs_str(dtype, addr)
        if port is not None and dtype == "ipv6_addr":
            if isinstance(addr, dict) and "range" in addr:
                text = "-".join(f"[{dt.value_str(dtype, v)}]" for v in addr["range"])
            elif not isinstance(addr, dict):
                text = f"[{text}]"
        out += text
    if port is not None:
        out += ":" + rhs_str("inet_service", port)
    return out + _nat_flags_str(a)


def _nat_data_type(dtype: str, v: Any) -> str:
    """A NAT map's data: an address, or an address . port concatenation."""
    return f"{dtype} . inet_service" if isinstance(v, dict) and "concat" in v else dtype


def _is_ip6(addr: Any) -> bool:
    if isinstance(addr, dict):
        if "range" in addr:
            return _is_ip6(addr["range"][0])
        if "prefix" in addr:
            return _is_ip6(addr["prefix"]["addr"])
    return isinstance(addr, str) and ":" in addr


def _dyn_key_str(key: dict) -> str:
    """The key of a set statement or meter, with its timeout."""
    if "elem" in key:
        e = key["elem"]
        _scalars(e, "timeout")
        return selector_str(e["val"]) + (f" timeout {time_str(e['timeout'])}" if e.get("timeout") else "")
    return selector_str(key)


def _nat_flags_str(a: dict) -> str:
    flags = a.get("flags")
    if not flags:
        return ""
    return " " + (flags if isinstance(flags, str) else ",".join(flags))


def stmt_print(family: str, s: dict) -> str:
    ((kind, a),) = s.items()
    if kind == "match":
        return match_print(a)
    if kind == "vmap":
        return f"{selector_str(a['key'])} vmap {rhs_str(dt.selector_type(a['key']), a['data'])}"
    if kind == "limit":
        _scalars(a, "rate", "per", "burst", "rate_unit", "burst_unit")
        over = "over " if a.get("inv") else ""
        if "rate_unit" in a:
            out = f"limit rate {over}{a['rate']} {a['rate_unit']}/{a['per']}"
            return out + (f" burst {a['burst']} {a['burst_unit']}" if a["burst"] else "")
        out = f"limit rate {over}{a['rate']}/{a['per']}"
        return out + (f" burst {a['burst']} packets" if a["burst"] != 5 else "")
    if kind == "counter":
        if a is None:  # in a set statement: each element counts (listed without values)
            return "counter"
        _scalars(a, "packets", "bytes")
        return "counter" if _STATELESS.get() else f"counter packets {a['packets']} bytes {a['bytes']}"
    if kind == "log":
        _scalars(a or {}, "prefix", "level")
        out = "log"
        if a and "prefix" in a:
            out += f' prefix "{a["prefix"]}"'
        if a and "level" in a:
            out += f" level {a['level']}"
        return out
    if kind in ("accept", "drop", "return", "continue"):
        return kind
    if kind in ("jump", "goto"):
        _scalars(a, "target")
        return f"{kind} {a['target']}"
    if kind == "reject":
        if not a:
            return "reject"
        _scalars(a, "type", "expr")
        if a["type"] == "tcp reset":
            return "reject with tcp reset"
        if a["type"] == _REJECT_DEFAULT[family] and a.get("expr") == "port-unreachable":
            return "reject"
        return f"reject with {a['type']} {a['expr']}"
    if kind in ("snat", "dnat", "masquerade", "redirect"):
        return _nat_print(family, kind, a)
    if kind == "mangle":
        dtype = dt.selector_type(a["key"])
        value = a["value"]
        text = (
            f"rt {value['rt']['key']}" if isinstance(value, dict) and "rt" in value else rhs_str(dtype, value)
        )
        return f"{selector_str(a['key'])} set {text}"
    if kind == "notrack":
        return "notrack"
    if kind == "set":  # Linux: src/statement.c › set_stmt_print
        _scalars(a, "op", "set")
        stmts = "".join(" " + stmt_print(family, x) for x in a.get("stmt", []))
        return f"{a['op']} {a['set']} {{ {_dyn_key_str(a['elem'])}{stmts} }}"
    if kind == "meter":  # Linux: src/statement.c › meter_stmt_print
        _scalars(a, "name", "size")
        size = f" size {a['size']}" if a.get("size") else ""
        return f"meter {a['name']}{size} {{ {_dyn_key_str(a['key'])} {stmt_print(family, a['stmt'])} }}"
    if kind == "flow":
        _scalars(a, "op", "flowtable")
        return f"flow add {a['flowtable']}"
    raise ValueError(f"unsupported statement {kind!r}")
