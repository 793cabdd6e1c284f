"""Stateful objects and the statements flowpath cannot carry out: quota, named limits, object maps,
queue; and the clear load-time refusal of ct helper/timeout/expectation, synproxy, tproxy and ip's dup.

Linux: net/netfilter/nft_quota.c (nft_quota_do_eval, nft_overquota), nft_objref.c (nft_objref_eval,
nft_objref_map_eval: a named object, or one a map picks by key), nft_queue.c with
net/netfilter/nf_queue.c › nf_queue (no listener: -ESRCH, which nf_hook_slow turns into NF_DROP, or, with
the bypass flag, into going on as NF_ACCEPT).

A quota's consumed bytes live in an NftCounter row (bytes column): the compiled VM's OP_QUOTA reads it
and records a hit the commit adds skb->len to, as OP_COUNTER does, so the listing, the closures and the
VM see one count. What each statement does in the datapath:
  quota, counter/quota/limit by name or by map   evaluated (VM: quota and named counters; the rest by
                                                 the closures)
  queue                                          NF_DROP with Reason.NETFILTER_QUEUE (no queue listener),
                                                 NF_ACCEPT with `bypass`, as the kernel does with none
  fwd, dup in netdev chains                      transmits carried out by the hook (nft_fwd_netdev.py)
  ct helper/timeout/expectation set, synproxy,   refused when the ruleset loads (NftBuildError, reported
  tproxy, dup in ip/ip6; socket and osf matches  as a ConfigError naming the rule)
"""

from __future__ import annotations

from flowpath.config.nft.evaluate import _BYTE_UNITS, _byte_rate
from flowpath.netfilter import constants as C
from flowpath.netfilter import nft_stmt
from flowpath.netfilter.nft_dynset import build_map_load
from flowpath.netfilter.nft_expr import NftCtx, Op, build_load
from flowpath.netfilter.nft_fwd_netdev import build_fwd_dup
from flowpath.netfilter.nft_limit import limit_from_stmt, nft_limit_op
from flowpath.netfilter.nft_set import NftSet
from flowpath.netfilter.nft_stmt import NftCounter, RuleInfo, nft_counter_eval
from flowpath.netfilter.nft_types import NftBuildError
from flowpath.packet.reason import Reason

NFT_CONTINUE, NFT_BREAK = C.NFT_CONTINUE, C.NFT_BREAK
NFT_QUEUE_FLAG_BYPASS = 0x01  # include/uapi/linux/netfilter/nf_tables.h
# what flowpath refuses to load, and why (no Linux counterpart: the kernel has these modules)
REFUSED = {
    "ct helper": "flowpath has no conntrack helpers (ftp, sip, ...) to attach",
    "ct timeout": "flowpath's conntrack has no per-connection timeout policies",
    "ct expectation": "flowpath's conntrack makes no expectations",
    "synproxy": "flowpath has no SYN proxy (SYN cookies)",
    "tproxy": "flowpath has no local sockets to divert to",
    "dup": "flowpath does not duplicate packets outside netdev chains",  # nf_dup_ipv4.c, nf_dup_ipv6.c
    # expressions (nft_socket.c, nft_osf.c)
    "socket": "flowpath has no local sockets to look up",
    "osf": "flowpath has no OS fingerprints (nfnetlink_osf) to match",
}


class NftQuota:
    """struct nft_quota: the quota in bytes, NFT_QUOTA_F_INV (`over`), and the bytes consumed so far
    (an NftCounter's bytes, shared with the compiled VM once nft_compile binds it)."""

    __slots__ = ("quota", "inv", "consumed")

    def __init__(self, quota: int, inv: bool, used: int = 0):
        self.quota, self.inv = quota, inv
        self.consumed = NftCounter(0, used)

    @property
    def used(self) -> int:
        """NFTA_QUOTA_CONSUMED as nft_quota_do_dump reports it: at most the quota."""
        return min(self.consumed.bytes, self.quota)


def nft_quota_do_eval(q: NftQuota) -> Op:
    """nft_quota.c › nft_quota_do_eval: every evaluation consumes skb->len; past the quota (over it,
    not at it: nft_overquota's `consumed > quota`) a plain quota stops matching, an `over` one starts."""
    cells = q.consumed

    def op(pkt):
        skb = pkt.skb
        cells.packets += 1
        cells.bytes += skb.skb_len
        return NFT_BREAK if (cells.bytes > q.quota) != q.inv else NFT_CONTINUE

    return op


def quota_from_stmt(arg: dict) -> NftQuota:
    """An anonymous quota statement's {"val", "val_unit", "inv", "used", "used_unit"}."""
    total = int(arg["val"]) * _BYTE_UNITS[arg.get("val_unit", "bytes")]
    used = int(arg.get("used", 0)) * _BYTE_UNITS[arg.get("used_unit", "bytes")]
    return NftQuota(total, bool(arg.get("inv", False)), used)


def quota_stmt_json(q: NftQuota, arg: dict) -> dict:
    """The statement as `nft -j list ruleset` shows it now: used in its largest unit, when not 0."""
    out = {k: v for k, v in arg.items() if k not in ("used", "used_unit")}
    if q.used:
        out["used"], out["used_unit"] = _byte_rate(q.used)
    return out


def nft_obj_init(kind: str, o: dict) -> object | None:
    """The runtime state of a named object: NftCounter, NftQuota, NftLimit; None for the
    ct and synproxy objects, which load but no rule may use."""
    if kind == "counter":
        return NftCounter(int(o.get("packets", 0)), int(o.get("bytes", 0)))
    if kind == "quota":
        return NftQuota(int(o["bytes"]), bool(o.get("inv", False)), int(o.get("used", 0)))
    if kind == "limit":
        return limit_from_stmt(o)
    if kind in REFUSED:
        return None
    raise NftBuildError(f"unsupported object {kind!r}")


def _obj(ctx: NftCtx, kind: str, name: object) -> object:
    obj = ctx.counters.get(name) if kind == "counter" else ctx.objs.get((kind, name))
    if obj is None:
        raise NftBuildError(f"{kind} {name!r} does not exist in table {ctx.family} {ctx.table}")
    return obj


def _obj_op(kind: str, obj: object) -> Op:
    if kind == "counter":
        return nft_counter_eval(obj)
    if kind == "quota":
        return nft_quota_do_eval(obj)
    return nft_limit_op(obj)  # its token bucket shared by every rule naming it


def build_objref(kind: str, arg: object, ctx: NftCtx, info: RuleInfo) -> Op:
    """nft_objref_eval / nft_objref_map_eval: `counter name "c"`, `quota name tcp dport map {...}`."""
    if kind in REFUSED:
        raise NftBuildError(f"{kind}: {REFUSED[kind]}")
    if isinstance(arg, str):
        return _obj_op(kind, _obj(ctx, kind, arg))
    m = arg["map"]
    load = build_load(m["key"], ctx)
    ops = {}

    def data(name: object) -> tuple:
        if name not in ops:
            ops[name] = _obj_op(kind, _obj(ctx, kind, name))
        return (ops[name],)

    s = NftSet("", load.dtype, load.bits, "objref")
    s.add_elements(m["data"]["set"], data)
    fn, get = load.fn, s.get

    def op(pkt):
        v = fn(pkt)
        d = None if v is None else get(v)
        if d is None:  # nft_objref_map_eval: no element, no object: the rule ends
            return NFT_BREAK
        return d[0](pkt)

    return op


def build_quota(arg: object, ctx: NftCtx, info: RuleInfo) -> Op:
    if isinstance(arg, str) or _is_map(arg):
        return build_objref("quota", arg, ctx, info)
    q = quota_from_stmt(arg)
    info.quotas.append(q)
    return nft_quota_do_eval(q)


def build_queue(arg: object, ctx: NftCtx) -> Op:
    """nft_queue.c: the packet goes to a userspace queue; flowpath never has a listener, so it is what
    nf_queue does then: dropped (counted as NETFILTER_QUEUE), or let go on with `bypass`. Any queue
    number is one without a listener, so a numgen or hash one is not computed; a map's is looked up,
    as the rule does not match when the map has no element for the packet (nft_lookup_eval's break)."""
    flags = (arg or {}).get("flags", []) if isinstance(arg, dict) else []
    bypass = "bypass" in ([flags] if isinstance(flags, str) else flags)
    num = arg.get("num") if isinstance(arg, dict) else None
    qnum = build_map_load(num["map"], ctx, "integer").fn if isinstance(num, dict) and "map" in num else None

    def op(pkt):
        if qnum is not None and qnum(pkt) is None:
            return NFT_BREAK
        if bypass:
            return C.NF_ACCEPT
        pkt.reason = Reason.NETFILTER_QUEUE
        return C.NF_DROP

    return op


def build_stmt(stmt: object, ctx: NftCtx, info: RuleInfo) -> Op:
    """Compile one entry of a rule's "expr" list: the statements of this module, the others by
    nft_stmt.build_stmt."""
    if isinstance(stmt, dict) and len(stmt) == 1:
        ((kind, arg),) = stmt.items()
        if kind in ("counter", "limit") and (isinstance(arg, str) and kind == "limit" or _is_map(arg)):
            return build_objref(kind, arg, ctx, info)
        if kind == "quota":
            return build_quota(arg, ctx, info)
        if kind == "queue":
            return build_queue(arg, ctx)
        if kind in ("fwd", "dup") and ctx.family == "netdev":
            return build_fwd_dup(kind, arg, ctx, info)
        if kind in REFUSED:
            raise NftBuildError(f"{kind}: {REFUSED[kind]}")
        left = arg.get("left") if kind == "match" and isinstance(arg, dict) else None
        if isinstance(left, dict) and len(left) == 1 and next(iter(left)) in REFUSED:
            raise NftBuildError(f"{next(iter(left))}: {REFUSED[next(iter(left))]}")
    return nft_stmt.build_stmt(stmt, ctx, info)


def _is_map(arg: object) -> bool:
    return isinstance(arg, dict) and set(arg) == {"map"}
