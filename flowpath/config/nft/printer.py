"""`nft list ruleset` text from a Ruleset, laid out as nft 1.0.6 prints it.

Linux: nftables src/rule.c (table_print, chain_print, set_print_declaration, obj_print_declaration,
flowtable_print, prio2str); a rule's statements and expressions are printer_stmt.py's.
"""

from __future__ import annotations

from flowpath.config.nft.evaluate_set import flags_print, time_str, time_str_ms
from flowpath.config.nft.family import prio_name_ok, std_prios
from flowpath.config.nft.ir import Chain, Flowtable, Obj, Ruleset, Set, Table
from flowpath.config.nft.output import STATELESS
from flowpath.config.nft.printer_stmt import (
    _flag_names,
    _ints,
    _quota_str,
    _scalars,
    selector_str,
    set_elems_str,
    stmt_print,
)


def prio2str(family: str, hook: str, prio: int) -> str:
    """Linux: src/rule.c › prio2str: a standard name, +/- up to 10 from it, else the number."""
    for name, base in std_prios(family).items():
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
    parts = [obj_print(o, handles) for o in t.objs.values()]
    parts += [set_print(s, handles) for s in t.sets.values()]
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


def obj_print(o: Obj, handles: bool = False) -> str:
    """Linux: src/rule.c › obj_print_declaration and obj_print_data (stateless: no counts, no used)."""
    a = o.spec
    lines: list[str] = []
    _ints(a, "packets", "bytes", "used", "dport", "timeout", "size", "mss", "wscale")
    if o.kind == "counter":
        lines = [] if STATELESS.get() else [f"packets {a['packets']} bytes {a['bytes']}"]
    elif o.kind == "quota":
        lines = [_quota_str(a["bytes"], bool(a.get("inv")), a.get("used", 0))]
    elif o.kind == "limit":
        lines = [stmt_print("", {"limit": a})[len("limit ") :]]
    elif o.kind == "ct helper":
        _scalars(a, "type", "protocol", "l3proto")
        lines = [f'type "{a["type"]}" protocol {a["protocol"]}', f"l3proto {a['l3proto']}"]
    elif o.kind == "ct timeout":
        _scalars(a, "protocol", "l3proto")
        _ints(a["policy"], *a["policy"])
        policy = ", ".join(f"{k} : {v}" for k, v in a["policy"].items())
        lines = [f"protocol {a['protocol']}", f"l3proto {a['l3proto']}", f"policy = {{ {policy} }}"]
    elif o.kind == "ct expectation":
        _scalars(a, "protocol", "l3proto")
        lines = [f"protocol {a['protocol']}", f"dport {a['dport']}", f"timeout {time_str_ms(a['timeout'])}",
                 f"size {a['size']}", f"l3proto {a['l3proto']}"]  # fmt: skip
    elif o.kind == "synproxy":
        if a.get("mss") or a.get("wscale"):
            lines = [f"mss {a['mss']}", f"wscale {a['wscale']}"]
        if a.get("flags"):
            lines.append(" ".join(_flag_names(a["flags"], ("timestamp", "sack-perm"))))
    else:
        raise ValueError(f"unsupported object {o.kind!r}")
    body = "".join(f"\t\t{x}\n" for x in lines)
    return f"\t{o.kind} {o.name} {{{_handle(o.handle, handles)}\n{body}\t}}\n"


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
        dev = f'device "{c.dev}" ' if isinstance(c.dev, str) else ""
        if isinstance(c.dev, list):
            dev = "devices = { " + ", ".join(c.dev) + " } "
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
