"""Compiling nft expressions to register code: loads, bitwise, cmp, range, set lookups and set tables.

Linux: what nftables' src/netlink_linearize.c emits for a match (netlink_gen_payload, netlink_gen_meta,
netlink_gen_ct, netlink_gen_bitwise, netlink_gen_cmp, netlink_gen_range, netlink_gen_lookup, and the
byteorder step before ordered compares of host-order data), run by nft_vm.py.

Every constant goes through the same parsers the closures use (nft_types.parse_value, nft_set.parse_key,
nft_cmp.resolve_set), so the two evaluators cannot disagree on what a rule says. A left-hand side or
operator the VM does not have raises Punt: the rule gets a PUNT instruction where it would be.
"""

from __future__ import annotations

from typing import NamedTuple

from flowpath.netfilter import nft_vm as V
from flowpath.netfilter.nft_cmp import _fib_operand, _ifindex_numbers, _ifindex_operand, resolve_set
from flowpath.netfilter.nft_expr import (
    _PAYLOAD,
    ICMP_DEP_TYPES,
    NftCtx,
    build_ct,
    build_meta,
    payload_dep,
    raw_payload,
)
from flowpath.netfilter.nft_exthdr import ExthdrSpec, build_rt_load, exthdr_spec, tcpopt_spec
from flowpath.netfilter.nft_fib import build_fib, fib_flags
from flowpath.netfilter.nft_pctx import NO_PCTX, ProtoCtx
from flowpath.netfilter.nft_set import Interval, NftSet, is_wild, parse_key
from flowpath.netfilter.nft_types import BITMASK_TYPES, NftBuildError, parse_value

IFNAMSIZ = 16
_BASE = {0: V.BASE_LL, 1: V.BASE_NH, 2: V.BASE_TH}  # nft_expr's _LL, _NH, _TH
# meta key -> (VM key, register bytes, host order); nft_meta.c › nft_meta_get_eval_*
_META = {"l4proto": (V.META_L4PROTO, 1, False), "nfproto": (V.META_NFPROTO, 1, False),
         "protocol": (V.META_PROTOCOL, 2, False), "iifname": (V.META_IIFNAME, IFNAMSIZ, False),
         "oifname": (V.META_OIFNAME, IFNAMSIZ, False), "iif": (V.META_IIF, 4, True), "oif": (V.META_OIF, 4, True),
         "mark": (V.META_MARK, 4, True), "length": (V.META_LEN, 4, True),
         "pkttype": (V.META_PKTTYPE, 1, False), "ipsec": (V.META_SECPATH, 1, False)}  # fmt: skip
_CT = {"state": (V.CTK_STATE, 4, True), "direction": (V.CTK_DIRECTION, 1, False),
       "status": (V.CTK_STATUS, 4, True), "mark": (V.CTK_MARK, 4, True)}  # fmt: skip
_ORDER = {"<": V.CMP_LT, ">": V.CMP_GT, "<=": V.CMP_LTE, ">=": V.CMP_GTE}


class Punt(Exception):
    """What the VM cannot run; the rule gets OP_PUNT where the expression would be."""


class Comp(NamedTuple):
    off: int  # in the key (registers from the load's dreg)
    width: int  # bytes
    host: bool  # host byte order in the register (meta/ct words)


class Val(NamedTuple):
    """What a compiled load leaves in the registers: its components, and the closure's dtype and bits."""

    comps: tuple[Comp, ...]
    dtype: str | tuple
    bits: int

    @property
    def klen(self) -> int:
        last = self.comps[-1]
        return last.off + ((last.width + 3) & ~3)


def _round4(n: int) -> int:
    return (n + 3) & ~3


def encode(v: object, width: int, host: bool = False) -> bytes | None:
    """One component's bytes as the register holds them; None when no load can ever hold that value."""
    if isinstance(v, str):
        b = v.encode()
        return b + bytes(width - len(b)) if len(b) <= width else None
    if not isinstance(v, int) or v < 0 or v >= 1 << (8 * width):
        return None
    return v.to_bytes(width, "little" if host else "big")


class Emitter:
    """The instruction list and constant pool of one ruleset being compiled."""

    def __init__(self):
        self.code: list[list[int]] = []
        self.consts = bytearray()

    def emit(self, op: int, *args: int) -> int:
        self.code.append([op, *args] + [0] * (V.STRIDE - 1 - len(args)))
        return len(self.code) - 1

    def const(self, b: bytes) -> int:
        off = len(self.consts)
        self.consts += b
        return off


# --- loads --------------------------------------------------------------------------------------------------
def _emit_shift_mask(em: Emitter, dreg: int, n: int, shift: int, mask: int) -> None:
    if not shift and mask == (1 << (8 * n)) - 1:
        return
    if n > 7:
        raise Punt("shift or mask on a payload wider than 7 bytes")
    if shift:
        em.emit(V.OP_RSHIFT, dreg, n, shift)
    em.emit(V.OP_BITWISE, dreg, dreg, n, em.const(mask.to_bytes(n, "big")), em.const(bytes(n)))


def compile_payload(em: Emitter, p: dict, dreg: int, family: str, pctx: ProtoCtx = NO_PCTX) -> Val:
    """nft_payload_eval with nft_expr's field table and implicit dependencies."""
    if "base" in p:
        base, first, n, shift, bits = raw_payload(p)
        mask, l3, l4, dtype = (1 << bits) - 1, 0, -1, "integer"
        if n > IFNAMSIZ:
            raise Punt("raw payload wider than a register")
    else:
        off, n, shift, mask, dtype = _PAYLOAD[p.get("protocol"), p.get("field")]
        base, l3, l4 = payload_dep(p["protocol"], family, pctx)
        first, bits = off, mask.bit_length() if mask else n * 8
        mask = mask or (1 << (8 * n)) - 1
        types = ICMP_DEP_TYPES.get((p["protocol"], p["field"]))
        if types is not None:
            _icmp_type_check(em, dreg, l3, l4, types)
    em.emit(V.OP_PAYLOAD, dreg, _BASE[base], l3, l4, first, n)
    _emit_shift_mask(em, dreg, n, shift, mask)
    return Val((Comp(0, n, False),), dtype, bits)


def compile_exthdr(em: Emitter, sp: ExthdrSpec, dreg: int) -> Val:
    """nft_exthdr_tcp_eval / nft_exthdr_ipv6_eval as nft_exthdr.py's spec says: the bytes, narrowed."""
    if sp.n > IFNAMSIZ:
        raise Punt("extension header field wider than a register")
    em.emit(V.OP_EXTHDR, dreg, int(sp.tcp), sp.type, sp.first, sp.n, int(sp.present))
    if not sp.present:
        _emit_shift_mask(em, dreg, sp.n, sp.shift, sp.mask or (1 << (8 * sp.n)) - 1)
    return Val((Comp(0, sp.n, False),), sp.dtype, sp.bits)


def _icmp_type_check(em: Emitter, dreg: int, l3: int, l4: int, types: tuple[int, ...]) -> None:
    """nft's `icmp type` dependency in front of the field's load: one type, or two that differ in one bit
    (echo-reply/echo-request: 0/8, 128/129), tested as the bits they share."""
    diff = 0
    for t in types[1:]:
        diff |= t ^ types[0]
    if diff & (diff - 1):
        raise Punt("an icmp type dependency of types that differ in more than one bit")
    keep = 0xFF & ~diff
    em.emit(V.OP_PAYLOAD, dreg, V.BASE_TH, l3, l4, 0, 1)
    if diff:
        em.emit(V.OP_BITWISE, dreg, dreg, 1, em.const(bytes([keep])), em.const(bytes(1)))
    em.emit(V.OP_CMP, V.CMP_EQ, dreg, 1, em.const(bytes([types[0] & keep])))


def compile_load(em: Emitter, e: object, ctx: NftCtx, dreg: int = 0) -> Val:
    """The registers a left-hand side fills (nft_expr.build_load's cases, same dtypes and bits)."""
    if not (isinstance(e, dict) and len(e) == 1):
        raise NftBuildError(f"unsupported expression {e!r}")
    (kind, arg), = e.items()  # fmt: skip
    if kind == "payload":
        return compile_payload(em, arg, dreg, ctx.family, ctx.pctx)
    if kind == "meta":
        _, dtype, bits = build_meta(arg)
        if arg["key"] not in _META:
            raise Punt(f"meta {arg['key']}")
        key, width, host = _META[arg["key"]]
        em.emit(V.OP_META, dreg, key)
        return Val((Comp(0, width, host),), dtype, bits)
    if kind == "ct":
        _, dtype, bits = build_ct(arg)
        if arg["key"] not in _CT or "dir" in arg:
            raise Punt(f"ct {arg['key']}")
        key, width, host = _CT[arg["key"]]
        em.emit(V.OP_CT, dreg, key)
        return Val((Comp(0, width, host),), dtype, bits)
    if kind == "rt":
        if arg.get("key") == "ipsec":
            raise Punt("rt ipsec: the VM has no route xfrm")
        _, dtype, bits = build_rt_load(arg)
        em.emit(V.OP_META, dreg, V.META_RT_TCPMSS)
        return Val((Comp(0, 4, True),), dtype, bits)
    if kind in ("tcp option", "exthdr"):
        return compile_exthdr(em, tcpopt_spec(arg) if kind == "tcp option" else exthdr_spec(arg), dreg)
    if kind == "fib":  # a map key or a set lookup (nft_expr.build_load); compile_match reads the operand
        _, dtype, bits = build_fib(arg, by_name=ctx.ifindex is None)
        return compile_fib(em, arg, dtype, bits, dreg)
    if kind in ("&", "|", "^"):
        left, right = arg
        inner = compile_load(em, left, ctx, dreg)
        if isinstance(inner.dtype, tuple):
            raise NftBuildError("bitwise on a concatenation")
        c = parse_value(inner.dtype, right)
        if not isinstance(c, int):
            raise NftBuildError(f"bitwise {kind} needs an integer, got {right!r}")
        (comp,) = inner.comps
        full = (1 << (8 * comp.width)) - 1
        if kind == "&":  # nft_bitwise: (reg & mask) ^ xor; v & c keeps only the register's bits
            mask, xor = c & full, 0
        elif not 0 <= c <= full:
            raise Punt("| or ^ with a constant wider than the value")
        else:
            mask, xor = (full & ~c, c) if kind == "|" else (full, c)
        em.emit(V.OP_BITWISE, dreg, dreg, comp.width, em.const(encode(mask, comp.width, comp.host)),
                em.const(encode(xor, comp.width, comp.host)))  # fmt: skip
        return inner
    if kind in ("<<", ">>"):  # nft_bitwise.c › NFT_BITWISE_LSHIFT/RSHIFT on a meta or ct word
        left, right = arg
        inner = compile_load(em, left, ctx, dreg)
        if len(inner.comps) != 1 or not inner.comps[0].host or not isinstance(right, int) or not 0 <= right < 32:
            raise Punt("shift of a value that is not a host-order word")
        em.emit(V.OP_RSHIFT, dreg, inner.comps[0].width, right, 1, int(kind == "<<"))
        return inner
    if kind == "concat":
        comps, dtypes, off = [], [], 0
        for x in arg:
            v = compile_load(em, x, ctx, dreg + off)
            if len(v.comps) != 1:
                raise Punt("nested concatenation")
            comps.append(Comp(off, v.comps[0].width, v.comps[0].host))
            dtypes.append(v.dtype)
            off += _round4(v.comps[0].width)
        if off > V.NFT_REG_FILE:
            raise Punt("concatenation wider than the registers")
        return Val(tuple(comps), tuple(dtypes), 0)
    raise Punt(f"expression {kind}")  # tcp option, ipsec (no SA here), numgen, jhash, data maps, ...


_FIB_DEV = {"iif": V.FIB_DEV_IIF, "oif": V.FIB_DEV_OIF}


def compile_fib(em: Emitter, arg: dict, dtype: str, bits: int, dreg: int = 0) -> Val:
    """nft_fib_eval for `fib ... oif` (an ifindex), `fib ... oif exists|missing` and `fib ... type`;
    `oifname` and an oif read by name (no ifindex map) stay with nft_fib.py's closures."""
    flags = fib_flags(arg)
    result = arg.get("result")
    if not ((result == "oif" and dtype in ("boolean", "integer")) or result == "type"):
        raise Punt("fib oifname or an oif by name: no names by ifindex here")
    dev = next((_FIB_DEV[f] for f in ("iif", "oif") if f in flags), V.FIB_DEV_NONE)
    present = dtype == "boolean"
    kind = V.FIB_TYPE if result == "type" else V.FIB_PRESENT if present else V.FIB_OIF
    em.emit(V.OP_FIB, dreg, kind, int("daddr" in flags), dev)
    return Val((Comp(0, 1, False) if present else Comp(0, 4, True),), dtype, bits)


def to_big_endian(em: Emitter, val: Val, dreg: int = 0) -> None:
    """nft_byteorder (hton) before an ordered compare, a range or a set lookup on host-order words.

    Deviation: nft keeps host order for lookups in sets without intervals; here every set key is
    big-endian, so one table layout serves exact, interval and scanned elements.
    """
    for c in val.comps:
        if c.host and c.width > 1:
            em.emit(V.OP_BYTEORDER, dreg + c.off, c.width)


# --- matches --------------------------------------------------------------------------------------------------
def _cmp_const(em: Emitter, op: int, val: Val, c: object) -> None:
    """cmp against a constant; a constant no load can hold compares as nft_expr's Python ints do."""
    if isinstance(c, tuple):
        parts = []
        for comp, x in zip(val.comps, c, strict=True):
            b = encode(x, comp.width, comp.host) if not (isinstance(x, Interval) or is_wild(x)) else None
            if b is None:
                raise Punt("concatenation compared with a range or an out-of-width value")
            parts.append(b + bytes(_round4(comp.width) - comp.width))
        em.emit(V.OP_CMP, op, 0, val.klen, em.const(b"".join(parts)))
        return
    (comp,) = val.comps
    b = encode(c, comp.width, comp.host)
    if b is None:
        if not isinstance(c, int):
            raise Punt(f"compare with {c!r}")
        big = c >= 0  # c is above every value of the width (else below 0)
        truth = {V.CMP_EQ: False, V.CMP_NEQ: True, V.CMP_LT: big, V.CMP_LTE: big, V.CMP_GT: not big,
                 V.CMP_GTE: not big}[op]  # fmt: skip
        em.emit(V.OP_CMP, V.CMP_TRUE if truth else V.CMP_FALSE, 0, 0, 0)
        return
    if comp.host and op not in (V.CMP_EQ, V.CMP_NEQ):
        to_big_endian(em, val)
        b = encode(c, comp.width)
    em.emit(V.OP_CMP, op, 0, comp.width, em.const(b))


def _range(em: Emitter, val: Val, lo: int, hi: int, inv: bool) -> None:
    (comp,) = val.comps
    lo, hi = max(lo, 0), min(hi, (1 << (8 * comp.width)) - 1)
    if lo > hi:
        em.emit(V.OP_CMP, V.CMP_TRUE if inv else V.CMP_FALSE, 0, 0, 0)
        return
    to_big_endian(em, val)
    em.emit(
        V.OP_RANGE,
        int(inv),
        0,
        comp.width,
        em.const(encode(lo, comp.width)),
        em.const(encode(hi, comp.width)),
    )


def _flags(em: Emitter, val: Val, mask: int, want_any: bool) -> None:
    """`ct state established,related`: bitwise mask, then cmp != 0 (`!`: == 0)."""
    (comp,) = val.comps
    w = comp.width
    em.emit(
        V.OP_BITWISE, 0, 0, w, em.const(encode(mask & ((1 << (8 * w)) - 1), w, comp.host)), em.const(bytes(w))
    )
    em.emit(V.OP_CMP, V.CMP_NEQ if want_any else V.CMP_EQ, 0, w, em.const(bytes(w)))


def compile_match(em: Emitter, sets: SetTables, m: dict, ctx: NftCtx) -> None:
    """{"match": ...} as nft_cmp.build_match reads it, emitted as load + cmp/range/bitwise/lookup."""
    opname, left, right = m.get("op", "=="), m.get("left"), m.get("right")
    if isinstance(left, dict) and "fib" in left:  # as nft_cmp.build_match reads the right-hand side
        _, dtype, bits = _fib_operand(left["fib"], right, ctx)
        if dtype == "iface_index":
            right, dtype = _ifindex_operand(right, ctx), "integer"
        elif dtype == "integer":
            right = _ifindex_numbers(right)
        val = compile_fib(em, left["fib"], dtype, bits)
    elif isinstance(left, dict) and "tcp option" in left and isinstance(right, bool):  # as nft_cmp.build_match
        val = compile_exthdr(em, tcpopt_spec(left["tcp option"], present=True), 0)
    elif isinstance(left, dict) and left.get("meta", {}).get("key") in ("iif", "oif"):
        if ctx.ifindex is None:  # nft_expr's deviation: no ifindex map, compare names
            left = {"meta": {"key": "iifname" if left["meta"]["key"] == "iif" else "oifname"}}
            if isinstance(right, str) and not right.startswith("@"):
                right = {"set": [right]}
            val = compile_load(em, left, ctx)
        else:
            right = _ifindex_operand(right, ctx)
            val = compile_load(em, left, ctx)._replace(dtype="integer")
    else:
        val = compile_load(em, left, ctx)
    dtype, bits = val.dtype, val.bits
    if (isinstance(right, str) and right.startswith("@")) or (isinstance(right, dict) and "set" in right):
        s = resolve_set(right, ctx, dtype, bits)
        to_big_endian(em, val)
        if s.updated:  # its elements live in the table the packet path updates (nft_set_hash.py)
            em.emit(V.OP_DYNLOOKUP, 0, sets.store.bind(s, val), int(opname == "!="))
            return
        em.emit(V.OP_LOOKUP, 0, sets.add(s, val), int(opname == "!="))
        return
    c = parse_key(dtype, bits, right)
    if isinstance(c, Interval):
        return _range(em, val, c.lo, c.hi, opname == "!=")
    if is_wild(c):  # `iifname "eth*"`: cmp over the prefix's bytes
        p = c[:-1].encode()
        if len(p) > IFNAMSIZ:
            raise Punt("interface wildcard longer than IFNAMSIZ")
        em.emit(V.OP_CMP, V.CMP_NEQ if opname == "!=" else V.CMP_EQ, 0, len(p), em.const(p))
        return
    if isinstance(c, str):
        c = c.replace("\\*", "*")
    if opname == "in" and dtype in BITMASK_TYPES:
        return _flags(em, val, c, True)
    if opname == "!":
        return _flags(em, val, c, False)
    if opname in ("==", "in"):
        return _cmp_const(em, V.CMP_EQ, val, c)
    if opname == "!=":
        return _cmp_const(em, V.CMP_NEQ, val, c)
    if opname in _ORDER and isinstance(c, int):
        return _cmp_const(em, _ORDER[opname], val, c)
    raise NftBuildError(f"unsupported operator {opname!r}")


# --- set tables (nft_set_hash / nft_set_rbtree / nft_set_pipapo as sorted arrays) ---------------------------
class SetTables:
    """Every set a program looks up, as the flat arrays nft_vm.nft_set_find searches.

    data_row(d) turns an element's data (NftSet's: True, a verdict, NAT bounds) into a row of `data`
    (-1: none), supplied by the caller that knows chains and NAT.
    """

    def __init__(self):
        self.rows: list[list[int]] = []
        self.keys = bytearray()
        self.elem: list[int] = []
        self.comp: list[tuple[int, int]] = []
        self._cache: dict[tuple[int, tuple], tuple[NftSet, int]] = {}  # the set is kept: ids stay unique
        self.store = None  # nft_set_hash_store.SetHashStore: the sets the packet path updates

    def add(self, s: NftSet, val: Val, data_row=lambda d: -1) -> int:
        key = (id(s), val.comps)
        if key in self._cache:  # a named set used by several rules with the same key layout
            return self._cache[key][1]
        if s.dynamic:  # its elements change on the packet path (nft_dynset.py): the closures look it up
            raise Punt("a set the packet path updates")
        if isinstance(s.keytype, tuple) != (len(val.comps) > 1) or (
            isinstance(s.keytype, tuple) and len(s.keytype) != len(val.comps)
        ):
            raise Punt("set key and expression differ in shape")
        klen = val.klen
        row = [0] * V.SET_COLS
        row[V.S_KLEN] = klen
        exact = []
        for k, d in s.exact.items():
            b = self._key(k, val, 0)
            if b is not None:
                exact.append((b, d))
        exact.sort(key=lambda x: x[0])
        row[V.S_EXACT_N], row[V.S_EXACT_OFF], row[V.S_EXACT_ELEM] = len(exact), len(self.keys), len(self.elem)
        for b, d in exact:
            self.keys += b
            self.elem.append(data_row(d))
        ivals = []
        for lo, hi, d in zip(s.starts, s.ends, s.datas, strict=True):
            (comp,) = val.comps
            lo, hi = max(lo, 0), min(hi, (1 << (8 * comp.width)) - 1)
            if lo <= hi:  # an interval entirely above the width can never hold a key
                ivals.append(
                    (self._pad(encode(lo, comp.width), klen), self._pad(encode(hi, comp.width), klen), d)
                )
        row[V.S_IVAL_N], row[V.S_IVAL_OFF], row[V.S_IVAL_ELEM] = len(ivals), len(self.keys), len(self.elem)
        self.keys += b"".join(lo for lo, _, _ in ivals) + b"".join(hi for _, hi, _ in ivals)
        self.elem += [data_row(d) for _, _, d in ivals]
        scan = []
        for k, d in s.scan:
            lo, hi = self._key(k, val, 0), self._key(k, val, 1)
            if lo is not None and hi is not None:
                scan.append((lo, hi, d))
        row[V.S_SCAN_N], row[V.S_SCAN_OFF], row[V.S_SCAN_ELEM] = len(scan), len(self.keys), len(self.elem)
        for lo, hi, d in scan:
            self.keys += lo + hi
            self.elem.append(data_row(d))
        row[V.S_COMP_N], row[V.S_COMP_OFF] = len(val.comps), len(self.comp)
        row[V.S_CATCHALL] = -1
        if s.catchall is not None:
            row[V.S_CATCHALL] = len(self.elem)
            self.elem.append(data_row(s.catchall))
        self.comp += [(c.off, c.width) for c in val.comps]
        self.rows.append(row)
        self._cache[key] = (s, len(self.rows) - 1)
        return len(self.rows) - 1

    @staticmethod
    def _pad(b: bytes, n: int) -> bytes:
        return b + bytes(n - len(b))

    @staticmethod
    def _key(k: object, val: Val, bound: int) -> bytes | None:
        """A key's big-endian bytes; bound 0/1: the low/high end of its ranges and wildcards."""
        parts = k if isinstance(k, tuple) and not isinstance(k, Interval) else (k,)
        out = bytearray(val.klen)
        for comp, x in zip(val.comps, parts, strict=True):
            if isinstance(x, Interval):
                lo, hi = max(x.lo, 0), min(x.hi, (1 << (8 * comp.width)) - 1)
                if lo > hi:
                    return None
                b = encode(hi if bound else lo, comp.width)
            elif is_wild(x):  # "eth*": every name from "eth\0..." to "eth\xff..."
                p = x[:-1].encode()
                if len(p) > comp.width:
                    return None
                b = p + (b"\xff" if bound else b"\0") * (comp.width - len(p))
            else:
                b = encode(x, comp.width)
            if b is None:
                return None
            out[comp.off : comp.off + comp.width] = b
        return bytes(out)
