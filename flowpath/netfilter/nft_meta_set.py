"""`meta KEY set VALUE` and `ct KEY set VALUE`: what the value comes from, and where it is written.

Linux: net/netfilter/nft_meta.c › nft_meta_set_eval (mark, priority), nft_ct.c › nft_ct_set_eval
(mark, labels), nft_immediate.c (a constant), nft_bitwise.c (`ct mark and 0xffff or 0x10`, shifts) and
nft_lookup.c with a map (`meta mark map { 1 : 10 }`). Keys flowpath has nothing to write to are refused
when the ruleset loads: ct zone (no zones in flowpath's conntrack), ct event (no ctnetlink events),
meta nftrace (no tracing), meta pkttype (derived from the frame here, never stored).
"""

from __future__ import annotations

from flowpath.netfilter import constants as C
from flowpath.netfilter.nft_dynset import build_map_load
from flowpath.netfilter.nft_expr import NftCtx, Op, build_load
from flowpath.netfilter.nft_keys import ct_label_set
from flowpath.netfilter.nft_types import NftBuildError, parse_value

NFT_CONTINUE, NFT_BREAK = C.NFT_CONTINUE, C.NFT_BREAK
# (selector kind, key) -> (the value's datatype, register bits)
_TARGETS = {("meta", "mark"): ("mark", 32), ("ct", "mark"): ("mark", 32), ("meta", "priority"): ("tc_handle", 32),
            ("ct", "label"): ("ct_label", 128)}  # fmt: skip
_REFUSED = {("ct", "zone"): "flowpath's conntrack has no zones", ("ct", "event"): "flowpath sends no conntrack events",
            ("meta", "nftrace"): "flowpath does not trace rules",
            ("meta", "pkttype"): "flowpath derives the packet type from the frame"}  # fmt: skip


def set_target(key: object) -> tuple[str, str]:
    """(kind, key) of a settable meta or ct selector, or NftBuildError."""
    if isinstance(key, dict) and len(key) == 1:
        ((kind, sel),) = key.items()
        if isinstance(sel, dict) and kind in ("meta", "ct"):
            t = (kind, sel.get("key"))
            if t in _REFUSED:
                raise NftBuildError(f"{kind} {t[1]} set: {_REFUSED[t]}")
            if t in _TARGETS and "dir" not in sel:
                return t
    raise NftBuildError(f"unsupported statement: set {key!r}")


def build_value(value: object, dtype: str, bits: int, ctx: NftCtx):
    """fn(pkt) -> the value to write (None: break): a constant, an expression, or a data map's data."""
    if isinstance(value, dict) and "map" in value:  # nft_lookup_eval with a dreg: the element's data
        return build_map_load(value["map"], ctx, dtype).fn
    if isinstance(value, dict):
        return build_load(value, ctx).fn
    c = parse_value(dtype, value)
    if not isinstance(c, int):
        raise NftBuildError(f"{dtype} value {value!r}")
    return lambda pkt: c


def build_meta_ct_set(key: object, value: object, ctx: NftCtx) -> Op:
    """nft_meta_set_eval / nft_ct_set_eval for mark, priority and labels."""
    target = set_target(key)
    dtype, bits = _TARGETS[target]
    src = build_value(value, dtype, bits, ctx)
    full = (1 << bits) - 1

    if target[0] == "meta":
        mark = target[1] == "mark"

        def op(pkt):
            v = src(pkt)
            if v is None:
                return NFT_BREAK
            if mark:
                pkt.skb.mark = v & full
            else:
                pkt.skb.meta["priority"] = v & full
            return NFT_CONTINUE

        return op

    label = target[1] == "label"

    def op_ct(pkt):
        v = src(pkt)
        if v is None:
            return NFT_BREAK
        ct = pkt.skb.ct
        if ct is not None:  # nft_ct_set_eval: no conntrack, nothing to write
            if label:
                ct_label_set(ct, v & full)
            else:
                ct.mark = v & full
        return NFT_CONTINUE

    return op_ct
