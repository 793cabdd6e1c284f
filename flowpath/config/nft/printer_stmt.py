"""A rule's statements and expressions as nft 1.0.6 lists them (printer.py lays out the ruleset).

Linux: nftables src/statement.c (statement printers) and src/expression.c (relational, set, range,
binop and map printers). One module for both: statements hold expressions, and a verdict map's
elements are statements.
"""

from __future__ import annotations

from typing import Any

from flowpath.config.nft import datatype as dt
from flowpath.config.nft.datatype_meta import range_text
from flowpath.config.nft.evaluate import _BYTE_UNITS, _byte_rate
from flowpath.config.nft.evaluate_set import time_str
from flowpath.config.nft.evaluate_stmt import LOG_FLAGS, REJECT_DEFAULT
from flowpath.config.nft.exthdr import selector_text
from flowpath.config.nft.ir import json_names
from flowpath.config.nft.output import STATELESS

_SET_NEWLINE = ",\n\t\t\t     "


def _quota_str(total: int, inv: bool, used: int) -> str:
    """Linux: src/statement.c › quota_stmt_print, src/rule.c › obj_print_data: a quota's bytes and
    used bytes in the largest unit that divides them; used only when it is not 0, and not `nft -s`."""
    out = f"{'over ' if inv else ''}{' '.join(map(str, _byte_rate(total)))}"
    if used and not STATELESS.get():
        out += f" used {' '.join(map(str, _byte_rate(used)))}"
    return out


def _flag_names(v: Any, known: tuple) -> list[str]:
    """Flags as json_names gives them, each one of `known` (in the order given)."""
    flags = list(json_names(v))
    if any(f not in known for f in flags):
        raise ValueError(f"flags must be among {known}")
    return flags


def _ints(a: Any, *keys: str) -> None:
    """Where nft writes a number, anything else is not a statement flowpath reads (see _scalars)."""
    if not isinstance(a, dict):
        raise ValueError("an object is expected")
    for k in keys:
        if k in a and (not isinstance(a[k], int) or isinstance(a[k], bool)):
            raise ValueError(f"{k} must be a number")


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


# --- expressions -------------------------------------------------------------------------------------
def selector_str(left: dict, present: bool = False) -> str:
    """A selector's text; `present`: compared with exists/missing (`tcp option 6 exists`)."""
    for sel in left.values():
        if isinstance(sel, dict):
            _scalars(sel, "protocol", "field", "key", "name")
    if "payload" in left:
        p = left["payload"]
        if "base" in p:  # raw payload: src/payload.c › payload_expr_print
            _scalars(p, "base", "offset", "len")
            return f"@{p['base']},{p['offset']},{p['len']}"
        return f"{p['protocol']} {p['field']}"
    if "sctp chunk" in left:  # Linux: nftables src/exthdr.c › exthdr_expr_print (sctp)
        c = left["sctp chunk"]
        return f"sctp chunk {c['name']}" + (f" {c['field']}" if "field" in c else "")
    if "meta" in left:
        key = left["meta"]["key"]
        return key if key in dt.META_UNQUALIFIED else f"meta {key}"
    if "ct" in left:  # Linux: nftables src/ct.c › ct_print: direction, then an address's family
        c = left["ct"]
        _scalars(c, "dir")
        _scalars(c, "key")
        return "ct " + " ".join(w for w in (c.get("dir"), c["key"]) if w)
    if "numgen" in left:  # Linux: nftables src/numgen.c › numgen_expr_print
        g = left["numgen"]
        _scalars(g, "mode", "mod", "offset")
        return f"numgen {g['mode']} mod {g['mod']}" + (f" offset {g['offset']}" if g.get("offset") else "")
    if "jhash" in left or "symhash" in left:  # Linux: nftables src/hash.c › hash_expr_print
        kind, h = next(iter(left.items()))
        _scalars(h, "mod", "seed", "offset")
        out = kind + (f" {expr_str('integer32', h['expr'])}" if kind == "jhash" else "") + f" mod {h['mod']}"
        out += f" seed 0x{h['seed']:x}" if "seed" in h else ""
        return out + (f" offset {h['offset']}" if h.get("offset") else "")
    if "concat" in left:
        return " . ".join(selector_str(x) for x in left["concat"])
    if "tcp option" in left or "exthdr" in left:
        ((kind, body),) = left.items()
        _scalars(body, "base", "offset", "len")
        return selector_text(kind, body, present)
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
    if "rt" in left:  # Linux: nftables src/rt.c › rt_expr_print (rt ip nexthop)
        _scalars(left["rt"], "key", "family")
        return " ".join(w for w in ("rt", left["rt"].get("family"), left["rt"]["key"]) if w)
    if "socket" in left:
        return f"socket {left['socket']['key']}"
    if "osf" in left:  # Linux: nftables src/osf.c › osf_expr_print
        o = left["osf"]
        _scalars(o, "ttl")
        return "osf " + (f"ttl {o['ttl']} " if "ttl" in o else "") + o["key"]
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
            kdtype = dt.selector_type(_binop_base(m["key"]))  # `ip6 saddr & ::ffff map`: the selector's type
            data = m["data"]
            text = data if isinstance(data, str) else set_elems_str(kdtype, data["set"], False, dtype)
            return f"{expr_str(kdtype, m['key'])} map {text}"
        if "set" in v:
            return set_elems_str(dtype, v["set"], named=False)
        if "range" in v:  # src/expression.c › range_expr_print: both ends numeric (NFT_CTX_OUTPUT_NUMERIC_ALL)
            lo, hi = (dt.value_num(dtype, x) if dtype in dt.SYMBOLIC else x for x in v["range"])
            lo, hi = (range_text(dtype, x) or dt.value_str(dtype, x) for x in (lo, hi))
            return f"{lo}-{hi}"
        if "prefix" in v:
            _scalars(v["prefix"], "len")
            return f"{dt.value_str(dtype, v['prefix']['addr'])}/{v['prefix']['len']}"
        if "|" in v:
            return dt.value_str(dtype, v)
        raise ValueError(f"unsupported expression {sorted(v)}")
    return dt.value_str(dtype, v)


_RELOPS = ("==", "!=", "<", ">", "<=", ">=", "in", "!")
# Linux: nftables src/expression.c › binop_arg_print: an operand binding looser than its operator
# gets parentheses (shifts bind tightest, then &, ^, |)
_BINOP_PREC = {"<<": 1, ">>": 1, "&": 2, "^": 3, "|": 4}


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
    if "&" in left and dt.is_bitmask(dt.selector_type(left["&"][0])):
        sel, mask = left["&"]
        dtype = dt.selector_type(sel)
        if dt.is_bitmask(dtype) and isinstance(mask, dict):  # `& (fin | syn) == { ... }`
            return f"{selector_str(sel)} & ({rhs_str(dtype, mask)}) {op} {rhs_str(dtype, right)}"
        if dt.is_bitmask(dtype) and not (isinstance(mask, str) and right == mask):
            # netlink_delinearize.c: `flags / mask`, but one flag tested for itself stays a binop
            ops = "" if op == "==" else f"{op} "
            return f"{selector_str(sel)} {ops}{rhs_str(dtype, right)} / {rhs_str(dtype, mask)}"
        return f"{selector_str(sel)} & {rhs_str(dtype, mask)} {op} {rhs_str(dtype, right)}"
    if _binop_kind(left):
        dtype = dt.selector_type(_binop_base(left))
        return f"{expr_str(dtype, left)} {op} {rhs_str(dtype, right)}"
    if isinstance(right, bool):  # a boolean: tcp option, exthdr, fib's oif (NFTA_FIB_F_PRESENT), meta/rt ipsec
        if op not in ("==", "!="):
            raise ValueError(f"{op} with exists/missing")
        ops = "!= " if op == "!=" else ""
        return f"{selector_str(left, present=True)} {ops}{'exists' if right else 'missing'}"
    dtype = dt.selector_type(left)
    scalar = not isinstance(right, dict) and not (isinstance(right, str) and right.startswith("@"))
    if op == "in" or (op == "==" and not (dt.has_bitmask_base(dtype) and scalar)):
        ops = ""
    else:
        ops = f"{op} "
    return f"{selector_str(left)} {ops}{rhs_str(dtype, right)}"


def _binop_kind(e: Any) -> str | None:
    """The operator of a bitwise or shift expression's JSON, else None."""
    if isinstance(e, dict) and len(e) == 1:
        kind = next(iter(e))
        if kind in _BINOP_PREC:
            if not isinstance(e[kind], list) or len(e[kind]) != 2:
                raise ValueError(f"{kind} takes two operands")
            return kind
    return None


def _binop_base(e: Any) -> Any:
    while _binop_kind(e):
        e = e[_binop_kind(e)][0]
    return e


def expr_str(dtype: str, e: Any) -> str:
    """A statement's value or a match's left: a constant of `dtype`, a selector, a bitwise or shift
    expression (src/expression.c › binop_expr_print), or a data map (src/expression.c › map_expr_print)."""
    if not isinstance(e, dict) or len(e) != 1 or "set" in e or "range" in e or "prefix" in e:
        return rhs_str(dtype, e)
    kind, arg = next(iter(e.items()))
    if _binop_kind(e):
        a, b = arg
        base = dt.selector_type(_binop_base(a)) if isinstance(a, dict) else dtype
        text = expr_str(base, a)
        if _binop_kind(a) and _BINOP_PREC[_binop_kind(a)] > _BINOP_PREC[kind]:
            text = f"({text})"
        right = str(b) if kind in ("<<", ">>") else rhs_str(base, b)
        return f"{text} {kind} {right}"
    if kind == "map":
        return rhs_str(dtype, e)
    return selector_str(e)


def _nat_print(family: str, kind: str, a: dict | None) -> str:
    """Linux: src/statement.c › nat_stmt_print: with a port, an IPv6 address is bracketed, and each end of
    an IPv6 range on its own (`[2001:db8::1]-[2001:db8::2]:80-100`); a prefix is not."""
    a = a or {}
    _scalars(a, "family")
    out = kind
    if a.get("family"):
        out += f" {a['family']}"
    if "prefix" in json_names(a.get("type_flags")):  # statement.c › nat_stmt_print
        out += " prefix"
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
    if isinstance(port, dict) and "map" in port:  # `redirect to :tcp dport map { 22 : 8000 }`
        m = port["map"]
        kdtype = dt.selector_type(m["key"])
        elems = ", ".join(f"{rhs_str(kdtype, k)} : {rhs_str('inet_service', v)}" for k, v in m["data"]["set"])
        out += f":{selector_str(m['key'])} map {{ {elems} }}"
    elif port is not None:
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
    """statement.c › print_nf_nat_flags: netmap is the `prefix` before `to`, not a flag it prints."""
    flags = [f for f in json_names(a.get("flags")) if f != "netmap"]
    return " " + ",".join(flags) if flags else ""


def stmt_print(family: str, s: dict) -> str:
    ((kind, a),) = s.items()
    if kind in _OBJREF and (isinstance(a, str) or (isinstance(a, dict) and set(a) == {"map"})):
        return _objref_str(kind, a)
    if kind in _STMT_PRINT:
        return _STMT_PRINT[kind](family, a)
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
        return "counter" if STATELESS.get() else f"counter packets {a['packets']} bytes {a['bytes']}"
    if kind == "log":  # Linux: src/statement.c › log_stmt_print
        a = a or {}
        _scalars(a, "prefix", "level", "group", "snaplen", "queue-threshold")
        out = "log"
        if "prefix" in a:
            out += f' prefix "{a["prefix"]}"'
        for key in ("group", "snaplen", "queue-threshold"):
            if key in a:
                out += f" {key} {a[key]}"
        if "level" in a:
            out += f" level {a['level']}"
        return out + _log_flags_str(a.get("flags"))
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
        if a["type"] == REJECT_DEFAULT[family] and a.get("expr") == "port-unreachable":
            return "reject"
        return f"reject with {a['type']} {a['expr']}"
    if kind in ("snat", "dnat", "masquerade", "redirect"):
        return _nat_print(family, kind, a)
    if kind == "mangle":
        return f"{selector_str(a['key'])} set {expr_str(dt.selector_type(a['key']), a['value'])}"
    if kind == "notrack":
        return "notrack"
    if kind == "reset":  # Linux: src/statement.c › optstrip_stmt_print
        return f"reset {selector_str(a, present=True)}"
    if kind == "ct count":  # Linux: nftables src/statement.c › connlimit_stmt_print
        _scalars(a, "val")
        return f"ct count {'over ' if a.get('inv') else ''}{a['val']}"
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


def _log_flags_str(flags: Any) -> str:
    if not flags:
        return ""
    got = set(LOG_FLAGS) if flags == "all" else set(json_names(flags))
    if got == set(LOG_FLAGS):
        return " flags all"
    tcp = [x[4:] for x in LOG_FLAGS[:2] if x in got]
    out = f" flags tcp {','.join(tcp)}" if tcp else ""
    return out + "".join(f" flags {x}" for x in LOG_FLAGS[2:] if x in got)


# statements that name a stateful object (src/statement.c › objref_stmt_print)
_OBJREF = ("counter", "quota", "limit", "synproxy", "ct helper", "ct timeout", "ct expectation")


def _objref_str(kind: str, a: Any) -> str:
    if isinstance(a, str):
        name = f'"{a}"'
    else:
        m = a["map"]
        kdtype = dt.selector_type(m["key"])
        if any(not isinstance(v, str) for _, v in m["data"]["set"]):
            raise ValueError("an object map's data are names")
        elems = ", ".join(f'{rhs_str(kdtype, k)} : "{v}"' for k, v in m["data"]["set"])
        name = f"{selector_str(m['key'])} map {{ {elems} }}"
    return f"{kind} set {name}" if kind.startswith("ct ") else f"{kind} name {name}"


def _quota_print(family: str, a: dict) -> str:
    _scalars(a, "val_unit", "used_unit")
    _ints(a, "val", "used")
    total = a["val"] * _BYTE_UNITS[a.get("val_unit", "bytes")]
    used = a.get("used", 0) * _BYTE_UNITS[a.get("used_unit", "bytes")]
    return "quota " + _quota_str(total, bool(a.get("inv")), used)


def _synproxy_print(family: str, a: dict | None) -> str:
    """Linux: src/statement.c › synproxy_stmt_print: mss and wscale together when either is set."""
    a = a or {}
    _ints(a, "mss", "wscale")
    out = "synproxy"
    if "mss" in a or "wscale" in a:
        out += f" mss {a.get('mss', 0)} wscale {a.get('wscale', 0)}"
    flags = _flag_names(a.get("flags", []), ("timestamp", "sack-perm"))
    return out + "".join(f" {f}" for f in ("timestamp", "sack-perm") if f in flags)


def _queue_print(family: str, a: dict | None) -> str:
    """Linux: src/statement.c › queue_stmt_print."""
    a = a or {}
    flags = _flag_names(a.get("flags", []), ("bypass", "fanout"))
    num = a.get("num", 0)
    expr = isinstance(num, dict) and len(num) == 1 and next(iter(num)) in ("numgen", "jhash", "symhash", "map")
    if not isinstance(num, int) and not expr and not (
        isinstance(num, dict) and set(num) == {"range"} and all(isinstance(x, int) for x in num["range"])
    ):
        raise ValueError("queue num must be a number, a range or a numgen, hash or map expression")
    out = "queue"
    if flags:
        out += " flags " + ",".join(f for f in ("bypass", "fanout") if f in flags)
    if "num" in a:
        out += " to " + (expr_str("integer", num) if expr else rhs_str("integer", num))
    return out


def _tproxy_print(family: str, a: dict) -> str:
    """Linux: src/statement.c › tproxy_stmt_print: an IPv6 address in brackets."""
    _scalars(a, "family", "addr", "port")
    out = "tproxy"
    if a.get("family"):
        out += f" {a['family']}"
    out += " to "
    if "addr" in a:
        ip6 = (a.get("family") or family) == "ip6"
        out += f"[{a['addr']}]" if ip6 else str(a["addr"])
    if "port" in a:
        out += f":{a['port']}"
    return out


def _dup_print(family: str, a: dict, kind: str = "dup") -> str:
    """Linux: src/statement.c › dup_stmt_print, fwd_stmt_print (`fwd ip to ADDR device DEV`)."""
    _scalars(a, "family")
    if family == "netdev" and not a.get("family"):  # to a device (dup names it "addr", fwd "dev")
        dev = a["addr" if kind == "dup" else "dev"]
        return f"{kind} to " + (expr_str("ifname", dev) if isinstance(dev, dict) else f'"{dev}"')
    _scalars(a, "dev")
    fam = a.get("family") or family
    dtype = "ipv6_addr" if fam == "ip6" else "ipv4_addr"
    head = f"{kind} {a['family']} to " if a.get("family") else f"{kind} to "
    return head + expr_str(dtype, a["addr"]) + (f' device "{a["dev"]}"' if "dev" in a else "")


_STMT_PRINT = {"quota": _quota_print, "synproxy": _synproxy_print, "queue": _queue_print,
               "tproxy": _tproxy_print, "dup": _dup_print,
               "fwd": lambda family, a: _dup_print(family, a, "fwd")}  # fmt: skip
