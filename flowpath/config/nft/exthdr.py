"""IPv6 extension header and TCP option expressions: their fields, and the JSON and text nft lists them as.

Linux: nftables src/exthdr.c (exthdr_hbh, exthdr_rt, exthdr_rt0, exthdr_rt4 (srh), exthdr_frag, exthdr_dst,
exthdr_mh; exthdr_init_raw, exthdr_expr_print), src/tcpopt.c (tcpopt_protocols, tcpopt_expr_alloc,
tcpopt_init_raw) and src/json.c › exthdr_expr_json. A field is a template (offset and length in bits,
datatype); the kernel only sees the header type, an offset and a length, so what nft lists is the first
template with that offset and length (`rt0 addr[1]` reads back as `srh sid[1]`, `tcp option sack0 left`
as `tcp option sack left`, `tcp option @2,16,16` as `tcp option maxseg size`). The datapath
(netfilter/nft_exthdr.py) reads the same tables.
"""

from __future__ import annotations

from typing import Any

IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT, IPPROTO_DSTOPTS, IPPROTO_MH = 0, 43, 44, 60, 135

# Linux: src/exthdr.c › mh_type_tbl (IP6_MH_TYPE_*, RFC 6275 §6.1.2 and later)
MH_TYPE = {
    "binding-refresh-request": 0, "home-test-init": 1, "careof-test-init": 2, "home-test": 3,
    "careof-test": 4, "binding-update": 5, "binding-acknowledgement": 6, "binding-error": 7,
    "fast-binding-update": 8, "fast-binding-acknowledgement": 9, "fast-binding-advertisement": 10,
    "experimental-mobility-header": 11, "home-agent-switch-message": 12,
}  # fmt: skip

# name -> (nexthdr value, {field: (offset in bits, length in bits, datatype)}), in template order
_IP6_NEXT = (0, 8, "inet_proto")
EXTHDR: dict[str, tuple[int, dict[str, tuple[int, int, str]]]] = {
    "hbh": (IPPROTO_HOPOPTS, {"nexthdr": _IP6_NEXT, "hdrlength": (8, 8, "integer8")}),
    "rt": (IPPROTO_ROUTING, {"nexthdr": _IP6_NEXT, "hdrlength": (8, 8, "integer8"), "type": (16, 8, "integer8"),
                             "seg-left": (24, 8, "integer8")}),
    "srh": (IPPROTO_ROUTING, {"last-entry": (32, 8, "integer8"), "flags": (40, 8, "integer8"),
                              "tag": (48, 16, "integer16"), "sid[1]": (64, 128, "ipv6_addr"),
                              "sid[2]": (192, 128, "ipv6_addr")}),
    "rt0": (IPPROTO_ROUTING, {"reserved": (32, 32, "integer32"), "addr[1]": (64, 128, "ipv6_addr"),
                              "addr[2]": (192, 128, "ipv6_addr")}),
    "rt2": (IPPROTO_ROUTING, {}),  # its templates are empty: nft refuses every field
    "frag": (IPPROTO_FRAGMENT, {"nexthdr": _IP6_NEXT, "reserved": (8, 8, "integer8"),
                                "frag-off": (16, 13, "integer13"), "reserved2": (29, 2, "integer2"),
                                "more-fragments": (31, 1, "integer1"), "id": (32, 32, "integer32")}),
    "dst": (IPPROTO_DSTOPTS, {"nexthdr": _IP6_NEXT, "hdrlength": (8, 8, "integer8")}),
    "mh": (IPPROTO_MH, {"nexthdr": _IP6_NEXT, "hdrlength": (8, 8, "integer8"), "type": (16, 8, "mh_type"),
                        "reserved": (24, 8, "integer8"), "checksum": (32, 16, "integer16")}),
}  # fmt: skip
EXTHDR_KEYS = ("hbh", "rt", "frag", "dst", "mh")  # parser_bison.y › exthdr_key: `exthdr <key> exists`
# parser_bison.y › rt0_hdr_field, rt4_hdr_field...: the fields the grammar takes (rt0 only addr[N])
EXTHDR_GRAMMAR = {"rt0": ("addr[1]", "addr[2]"), "rt2": ("addr",)}
# exthdr_init_raw: a routing header field found among rt's templates, then srh's, rt0's and rt2's
_RT_ORDER = ("rt", "srh", "rt0", "rt2")


def exthdr_field(name: str, field: str) -> tuple[int, int, int, str]:
    """(nexthdr value, offset bits, length bits, datatype) of `name field`; KeyError if there is none."""
    nexthdr, fields = EXTHDR[name]
    return (nexthdr, *fields[field])


def exthdr_json(name: str, field: str | None) -> dict:
    """The {"exthdr": ...} nft lists for `name field` (None: `exthdr name exists`), after its round trip."""
    if field is None:
        return {"exthdr": {"name": name}}
    nexthdr, off, n, _ = exthdr_field(name, field)
    for other in _RT_ORDER if nexthdr == IPPROTO_ROUTING else (name,):
        for f, (o, m, _) in EXTHDR[other][1].items():
            if (o, m) == (off, n):
                return {"exthdr": {"name": other, "field": f}}
    return {"exthdr": {"name": name, "field": field}}


# --- TCP options (src/tcpopt.c) -------------------------------------------------------------------------------
# kind -> (name, templates as (field, offset bits, length bits)); sack's left/right repeat for blocks 1-3
_KIND, _LENGTH = ("kind", 0, 8), ("length", 8, 8)
TCPOPT: dict[int, tuple[str, tuple[tuple[str, int, int], ...]]] = {
    0: ("eol", (_KIND,)),
    1: ("nop", (_KIND,)),
    2: ("maxseg", (_KIND, _LENGTH, ("size", 16, 16))),
    3: ("window", (_KIND, _LENGTH, ("count", 16, 8))),
    4: ("sack-perm", (_KIND, _LENGTH)),
    5: ("sack", (_KIND, _LENGTH, *((("left", "right")[i % 2], 16 + 32 * i, 32) for i in range(8)))),
    8: ("timestamp", (_KIND, _LENGTH, ("tsval", 16, 32), ("tsecr", 48, 32))),
    19: ("md5sig", (_KIND, _LENGTH)),
    30: ("mptcp", (_KIND, _LENGTH, ("subtype", 16, 4))),
    34: ("fastopen", (_KIND, _LENGTH)),
}
TCPOPT_KIND = {name: kind for kind, (name, _) in TCPOPT.items()} | {"echo": 8}  # TCPOPT_KIND_ECHO
TCPOPT_SACK = {"sack0": 0, "sack1": 1, "sack2": 2, "sack3": 3}  # TCPOPT_KIND_SACK1..3: block N
# parser_bison.y › tcp_hdr_option_kind_and_field: the fields the grammar takes by option (all: length)
TCPOPT_GRAMMAR = {"maxseg": ("size",), "sack": ("left", "right"), "window": ("count",),
                  "timestamp": ("tsval", "tsecr"), "mptcp": ("subtype",)}  # fmt: skip
TCPOPT_FIELDS = ("size", "left", "right", "count", "tsval", "tsecr", "subtype", "length")
MAX_TCPOPTLEN = (15 * 4 - 20) * 8  # evaluate.c › __expr_evaluate_exthdr, in bits


def tcpopt_template(kind: int, field: str, block: int = 0) -> tuple[int, int] | None:
    """(offset, length) in bits of `field` of option `kind` (sack: of block `block`), None if it has none."""
    for f, off, n in TCPOPT[kind][1] if kind in TCPOPT else ():
        if f == field and (field not in ("left", "right") or off // 64 == block):
            return off, n
    return None


def tcpopt_json(kind: int, off: int, n: int, present: bool = False) -> dict:
    """The {"tcp option": ...} nft lists (json.c › exthdr_expr_json after tcpopt_init_raw): a name and the
    field whose template has this offset and length (sack blocks 1-3 as sack1-3), else base/offset/len."""
    name, templates = TCPOPT.get(kind, (None, ()))
    if name is not None and present:
        return {"tcp option": {"name": name}}
    for f, o, m in templates:
        if (o, m) == (off, n):
            block = o // 64
            return {"tcp option": {"name": name + (str(block) if 0 < block < 4 else ""), "field": f}}
    return {"tcp option": {"base": kind, "offset": off, "len": n}}


def tcpopt_kind_of(opt: dict) -> int:
    """The option kind of a {"tcp option": ...} body (name, sackN or base)."""
    if "base" in opt:
        return int(opt["base"])
    name = str(opt["name"])
    return TCPOPT_KIND[name.rstrip("0123") if name[:4] == "sack" and name != "sack-perm" else name]


def tcpopt_bits(opt: dict) -> tuple[int, int, int]:
    """(kind, offset bits, length bits) of a {"tcp option": ...} body with a field or a base."""
    kind = tcpopt_kind_of(opt)
    if "base" in opt:
        return kind, int(opt["offset"]), int(opt["len"])
    name, field = str(opt["name"]), opt["field"]
    t = tcpopt_template(kind, field, int(name[-1]) if name[-1] in "123" else 0)
    if t is None:
        raise KeyError(f"tcp option {name} has no field {field}")
    return (kind, *t)


def tcpopt_type(opt: dict) -> str:
    """The datatype of a tcp option expression: a boolean without a field, else an integer of its width."""
    if "field" not in opt and "base" not in opt:
        return "boolean"
    return f"integer{tcpopt_bits(opt)[2]}"


def exthdr_type(x: dict) -> str:
    """The datatype of an {"exthdr": ...} body: a boolean without a field."""
    if "field" not in x:
        if x["name"] not in EXTHDR_KEYS:
            raise KeyError(x["name"])
        return "boolean"
    return exthdr_field(x["name"], x["field"])[3]


def selector_text(kind: str, body: dict, present: bool) -> str:
    """Linux: src/exthdr.c › exthdr_expr_print for IPv6 headers and TCP options (`present`: exists/missing)."""
    if kind == "exthdr":
        return f"{body['name']} {body['field']}" if "field" in body else f"exthdr {body['name']}"
    if "base" in body:
        if present and int(body["offset"]) == 0:
            return f"tcp option {int(body['base'])}"
        return f"tcp option @{int(body['base'])},{int(body['offset'])},{int(body['len'])}"
    return f"tcp option {body['name']}" + (f" {body['field']}" if "field" in body else "")


def reset_json(kind: int) -> dict:
    """Linux: json.c › optstrip_stmt_json: the option by name, or base/offset 0/len 0 for an unnamed kind."""
    opt: Any = {"name": TCPOPT[kind][0]} if kind in TCPOPT else {"base": kind, "offset": 0, "len": 0}
    return {"reset": {"tcp option": opt}}
