"""Compiling a loaded ruleset's chains to nft_vm programs, and running them for the Python classic path.

Linux: nftables src/netlink_linearize.c (rules to expression lists) and net/netfilter/nf_tables_api.c ›
nf_tables_commit_chain_prepare (a chain's rules laid out as one blob that nft_do_chain walks).

Every chain of the runtime becomes a run of instructions in one code array (OP_RULE at each rule's start,
OP_END at the chain's end); statements the VM has are compiled (verdicts, vmap, counter, mark set, NAT,
flow add, limit, set statements and meters), anything else (log, reject, notrack, TCP option writes,
...) becomes OP_PUNT where it sits.
A packet that reaches an OP_PUNT is evaluated again from the base chain's start by the closures
(nf_tables.py › nft_do_chain_closures), which is safe because a VM run leaves no trace until committed;
`NftVm.fallback` counts those per chain.
"""

from __future__ import annotations

import threading

import numpy as np

from flowpath.flowtable.hook import jit_entry
from flowpath.net.fib_table import FibViews
from flowpath.netfilter import constants as C
from flowpath.netfilter import nat_range as N
from flowpath.netfilter import nft_vm as V
from flowpath.netfilter.nft_cmp import resolve_set
from flowpath.netfilter.nft_compile_expr import (
    Emitter,
    Punt,
    SetTables,
    compile_load,
    compile_match,
    to_big_endian,
)
from flowpath.netfilter.nft_dynset import data_map_set, dynset_key, dynset_parts, elem_split
from flowpath.netfilter.nft_expr import NftCtx
from flowpath.netfilter.nft_limit import LIM_COLS, NftLimit
from flowpath.netfilter.nft_objref import NftQuota
from flowpath.netfilter.nft_pctx import rule_ctxs
from flowpath.netfilter.nft_set import Interval, NftSet
from flowpath.netfilter.nft_set_hash_store import SetHashStore
from flowpath.netfilter.nft_stmt import (
    _NAT_FLAGS,
    RuleInfo,
    _nat_bounds,
    _nat_family,
    nat_map_set,
    parse_verdict,
    verdict_map_data,
)
from flowpath.netfilter.nft_types import NftBuildError, parse_value
from flowpath.packet.reason import Reason

_NAT_KIND = {
    "snat": V.NAT_SNAT,
    "dnat": V.NAT_DNAT,
    "masquerade": V.NAT_MASQUERADE,
    "redirect": V.NAT_REDIRECT,
}
_VERDICTS = ("accept", "drop", "continue", "return", "jump", "goto")


def _words(a: int) -> list[int]:
    """A 128-bit address as four 32-bit words, most significant first (IPv4: word 3)."""
    return [(a >> s) & 0xFFFFFFFF for s in (96, 64, 32, 0)]


def _nat_row(flags: int, amin: int, amax: int, pmin: int, pmax: int, parts: int = 0) -> list[int]:
    row = [0] * V.DATA_COLS
    row[V.D_FLAGS if not parts else V.D_PARTS] = flags if not parts else parts
    row[V.D_AMIN : V.D_AMIN + 4], row[V.D_AMAX : V.D_AMAX + 4] = _words(amin), _words(amax)
    row[V.D_PMIN], row[V.D_PMAX] = pmin, pmax
    return row


def _bounds(x: object) -> tuple[int, int]:
    return (x.lo, x.hi) if isinstance(x, Interval) else (x, x)  # type: ignore[return-value]


class _Compiler:
    """Shared state while one runtime's chains are compiled."""

    def __init__(self, runtime):
        self.em, self.sets = Emitter(), SetTables()
        self.data: list[list[int]] = []
        self.chain_id = {id(c): i for i, c in enumerate(runtime.chains)}
        self.counter_row: dict[int, int] = {}
        self.counters: list = []
        self.limit_row: dict[int, int] = {}
        self.limits: list = []
        self.ft_names: list[str] = []
        self.sets.store = SetHashStore()

    def data_row(self, row: list[int]) -> int:
        self.data.append(row)
        return len(self.data) - 1

    def counter(self, counter) -> int:
        if id(counter) not in self.counter_row:
            self.counter_row[id(counter)] = len(self.counters)
            self.counters.append(counter)
        return self.counter_row[id(counter)]

    def limit(self, limit) -> int:
        """The row of an NftLimit in the programs' limits (bound once all are known)."""
        if id(limit) not in self.limit_row:
            self.limit_row[id(limit)] = len(self.limits)
            self.limits.append(limit)
        return self.limit_row[id(limit)]

    def objref_map(self, kind: str, m: dict, ctx: NftCtx) -> None:
        """nft_objref_map_eval for `counter name udp dport map { 53 : "dns" }` (or a limit): the map's
        value is the object's row (no element: NFT_BREAK), which OP_COUNTER / OP_LIMIT take from the register."""
        val = compile_load(self.em, m["key"], ctx)
        s = NftSet("", val.dtype, val.bits, "objref")
        if kind == "counter":
            s.add_elements(m["data"]["set"], lambda name: self.counter(ctx.counters[name]))
        else:
            s.add_elements(m["data"]["set"], lambda name: self.limit(ctx.objs["limit", name]))
        to_big_endian(self.em, val)
        row = self.sets.add(s, val, lambda d: self.data_row([d] + [0] * (V.DATA_COLS - 1)))
        self.em.emit(V.OP_MAP, 0, row, 2)
        self.em.emit(V.OP_COUNTER if kind == "counter" else V.OP_LIMIT, 0, 1)

    def dynset(self, kind: str, arg: dict, ctx: NftCtx, rule_limits: list) -> None:
        """nft_dynset_eval (`add @s { ip saddr limit rate 10/second }`, a meter) on the set's table."""
        val = compile_load(self.em, dynset_key(kind, arg), ctx)
        s, op, timeout_ns, stmts = dynset_parts(kind, arg, ctx, val.dtype, val.bits)
        limit, counter, rest = elem_split(stmts)
        if rest:
            raise Punt("an element statement only the closures run")
        tmpl = self.limit(rule_limits.pop(0)) if limit is not None else -1
        to_big_endian(self.em, val)
        self.em.emit(V.OP_DYNSET, 0, self.sets.store.bind(s, val), op, timeout_ns, tmpl, counter)

    def verdict_row(self, d: tuple) -> int:
        code, chain = d
        return self.data_row(
            [code, self.chain_id[id(chain)] if chain is not None else -1] + [0] * (V.DATA_COLS - 2)
        )

    # --- statements (nft_stmt.build_stmt's cases) -----------------------------------------------------------
    def stmt(
        self,
        stmt: dict,
        ctx: NftCtx,
        rule_counters: list,
        rule_quotas: list | None = None,
        rule_limits: list | None = None,
    ) -> None:
        em = self.em
        (kind, arg), = stmt.items()  # fmt: skip
        if kind == "match":
            compile_match(em, self.sets, arg, ctx)
        elif kind in _VERDICTS:
            code, chain = parse_verdict({kind: arg}, ctx, RuleInfo())
            if code != C.NFT_CONTINUE:  # `continue` only lets the rule go on
                em.emit(V.OP_IMM, code, self.chain_id[id(chain)] if chain is not None else -1)
        elif kind == "vmap":
            self.vmap(arg, ctx)
        elif kind in ("counter", "limit") and isinstance(arg, dict) and set(arg) == {"map"}:
            self.objref_map(kind, arg["map"], ctx)
        elif kind == "counter":
            counter = ctx.counters[arg] if isinstance(arg, str) else rule_counters.pop(0)
            em.emit(V.OP_COUNTER, self.counter(counter))
        elif kind == "quota":  # nft_quota_do_eval, its consumed bytes in a counter row
            if isinstance(arg, dict) and "map" in arg:
                raise Punt("quota name ... map")
            q = ctx.objs[kind, arg] if isinstance(arg, str) else (rule_quotas or []).pop(0)
            em.emit(V.OP_QUOTA, self.counter(q.consumed), q.quota, int(q.inv))
        elif kind in _NAT_KIND:
            self.nat(kind, arg or {}, ctx)
        elif kind == "flow":
            name = arg.get("flowtable", "")
            name = name[1:] if name.startswith("@") else name
            if name not in self.ft_names:
                self.ft_names.append(name)
            from flowpath.netfilter.conntrack_proto_tcp import TcpConntrack  # as nft_stmt.build_flow

            em.emit(V.OP_FLOW_ADD, self.ft_names.index(name), int(TcpConntrack.ESTABLISHED))
        elif kind == "mangle":
            self.mark_set(arg, ctx)
        elif kind == "limit":  # nft_limit_eval; a named limit's bucket is the object's
            limit = ctx.objs[kind, arg] if isinstance(arg, str) else (rule_limits or []).pop(0)
            em.emit(V.OP_LIMIT, self.limit(limit))
        elif kind in ("set", "meter"):
            self.dynset(kind, arg, ctx, rule_limits or [])
        else:
            raise Punt(f"statement {kind}")  # log, reject, notrack, ...

    def vmap(self, arg: dict, ctx: NftCtx) -> None:
        val = compile_load(self.em, arg["key"], ctx)
        data = arg["data"]
        if isinstance(data, str) and data.startswith("@"):
            s = resolve_set(data, ctx, val.dtype, val.bits)
        else:
            s = NftSet("", val.dtype, val.bits, "verdict")
            s.add_elements(data["set"], verdict_map_data(ctx, RuleInfo()))
        to_big_endian(self.em, val)
        self.em.emit(V.OP_VMAP, 0, self.sets.add(s, val, self.verdict_row))

    def mark_set(self, arg: dict, ctx: NftCtx) -> None:
        """nft_meta_set_eval / nft_ct_set_eval for `meta mark set` and `ct mark set`."""
        key, value = arg.get("key"), arg.get("value")
        target = None
        if isinstance(key, dict) and len(key) == 1 and key.get("meta", {}).get("key") == "mark":
            target = 0
        elif isinstance(key, dict) and len(key) == 1 and key.get("ct", {}) == {"key": "mark"}:
            target = 1
        if target is None:
            raise Punt("set of something other than a mark")
        if isinstance(value, dict) and "map" in value:  # OP_MAP's value into register 0, then set
            m = value["map"]
            val = compile_load(self.em, m["key"], ctx)
            s = data_map_set(m, ctx, val.dtype, val.bits, "mark")
            to_big_endian(self.em, val)
            row = self.sets.add(s, val, lambda d: self.data_row([int(d)] + [0] * (V.DATA_COLS - 1)))
            self.em.emit(V.OP_MAP, 0, row, 2)
            self.em.emit(V.OP_MARK_SET, target, 1, 0, 4, 1)
        elif isinstance(value, dict):
            val = compile_load(self.em, value, ctx)
            (comp,) = val.comps if len(val.comps) == 1 else (None,)
            if comp is None or comp.width > 8 or val.dtype == "ifname":
                raise Punt("mark set from a value wider than 64 bits")
            self.em.emit(V.OP_MARK_SET, target, 1, 0, comp.width, int(comp.host))
        else:
            self.em.emit(V.OP_MARK_SET, target, 0, int(parse_value("integer", value)) & 0xFFFFFFFF)

    def nat_map(self, m: dict, ctx: NftCtx, dtype: str, slot: int) -> None:
        """The map of `dnat to tcp dport map { ... }` (nft_stmt._nat_map), looked up into slot."""
        val = compile_load(self.em, m["key"], ctx)
        s = nat_map_set(m, ctx, dtype, val.dtype, val.bits)

        def row(d: object) -> int:
            if isinstance(d, tuple) and not isinstance(d, Interval):
                if slot == 1:
                    raise Punt("port map with concatenated data")
                (alo, ahi), (plo, phi) = _bounds(d[0]), _bounds(d[1])
                return self.data_row(_nat_row(0, alo, ahi, plo, phi, parts=3))
            lo, hi = _bounds(d)
            return self.data_row(
                _nat_row(0, lo, hi, 0, 0, parts=1) if slot == 0 else _nat_row(0, 0, 0, lo, hi, 2)
            )

        to_big_endian(self.em, val)
        self.em.emit(V.OP_MAP, 0, self.sets.add(s, val, row), slot)

    def nat(self, kind: str, arg: dict, ctx: NftCtx) -> None:
        """nft_nat_eval / nft_masq_eval / nft_redir_eval with nft_stmt.build_nat's range."""
        em = self.em
        fam = C.NFPROTO_INET if kind in ("masquerade", "redirect") else _nat_family(arg, ctx)
        addr_type = "ipv6_addr" if fam == C.NFPROTO_IPV6 else "ipv4_addr"
        guard = em.emit(V.OP_NFPROTO_GUARD, fam, 0) if fam != C.NFPROTO_INET else None
        flags, amin, amax, pmin, pmax = 0, 0, 0, 0, 0
        addr_map = port_map = 0
        if "addr" in arg:
            if isinstance(arg["addr"], dict) and "map" in arg["addr"]:
                self.nat_map(arg["addr"]["map"], ctx, addr_type, 0)
                addr_map = 1
            else:
                amin, amax = _nat_bounds(arg["addr"], addr_type)
            flags |= N.NF_NAT_RANGE_MAP_IPS
        if "port" in arg:
            if isinstance(arg["port"], dict) and "map" in arg["port"]:
                self.nat_map(arg["port"]["map"], ctx, "inet_service", 1)
                port_map = 1
            else:
                pmin, pmax = _nat_bounds(arg["port"], "inet_service")
            flags |= N.NF_NAT_RANGE_PROTO_SPECIFIED
        for f in [arg["flags"]] if isinstance(arg.get("flags"), str) else arg.get("flags", []):
            flags |= _NAT_FLAGS[f]
        manip = C.NF_NAT_MANIP_SRC if kind in ("snat", "masquerade") else C.NF_NAT_MANIP_DST
        row = self.data_row(_nat_row(flags, amin, amax, pmin, pmax))
        nat = em.emit(V.OP_NAT, _NAT_KIND[kind], row, manip, addr_map, port_map)
        if guard is not None:
            em.code[guard][2] = nat + 1

    # --- rules and chains -----------------------------------------------------------------------------------
    def rule(self, rule, ctx: NftCtx) -> bool:
        """One rule: OP_RULE, its statements, and OP_PUNT from the first one the VM does not have."""
        em = self.em
        start = em.emit(V.OP_RULE, 0)
        rule_counters, rule_quotas, rule_limits = (
            list(rule.info.counters),
            list(rule.info.quotas),
            list(rule.info.limits),
        )
        ok = True
        for stmt, sctx in zip(rule.expr, rule_ctxs(ctx, rule.expr), strict=True):
            mark = len(em.code)
            try:
                self.stmt(stmt, sctx, rule_counters, rule_quotas, rule_limits)
            except (
                Punt,
                NftBuildError,
                KeyError,
                TypeError,
                ValueError,
            ):  # the closures have it: they run it
                del em.code[mark:]
                em.emit(V.OP_PUNT)
                ok = False
                break
        em.code[start][1] = len(em.code)
        return ok


class NftVm:
    """A runtime's compiled chains: the program tuple, per-chain coverage and fallback counts, and the
    Python classic path's entry (`run`).

    progs      the tuple nft_vm.nft_vm_run takes (its last array, the names table, from set_ifnames)
    compiled   per chain id: (rules, rules without OP_PUNT)
    fallback   int64[nchains]: runs of that chain the VM punted to the Python evaluator
    ft_names   flowtable names, by the id OP_FLOW_ADD writes into out[OUT_FLOW]
    """

    def __init__(
        self, progs: tuple, chain_id: dict, compiled: list, ft_names: list[str], store: SetHashStore
    ):
        self.progs, self.chain_id, self.compiled, self.ft_names = progs, chain_id, compiled, ft_names
        self.fallback = np.zeros(len(compiled), np.int64)
        self._tls = threading.local()
        self.store = store
        store.on_grow.append(self._dyn_grown)

    def _dyn_grown(self, dyn: tuple) -> None:
        """A set's table grew (nft_set_hash_store.py): the programs take its new arrays (the lane sees
        a new progs tuple and builds its arguments again)."""
        self.progs = self.progs[: V.PROG_DYN] + (dyn,) + self.progs[V.PROG_DYN + 1 :]

    def set_ifnames(self, ifindex: dict[str, int]) -> None:
        """The names table the compiled classic lane reads (row = ifindex); rebuilt when links change."""
        names = np.zeros((max(ifindex.values(), default=0) + 1, 16), np.uint8)
        for name, idx in ifindex.items():
            b = name.encode()[:16]
            names[idx, : len(b)] = np.frombuffer(b, np.uint8)
        self.progs = self.progs[:-1] + (names,)

    def _scratch(self):
        s = getattr(self._tls, "s", None)
        if s is None:
            names = np.zeros((2, 16), np.uint8)  # row 0: iifname, row 1: oifname of the packet in hand
            s = self._tls.s = [np.zeros(V.PM_SIZE, np.int64), np.zeros(V.OUT_SIZE, np.int64), names,
                               self.progs[:-1] + (names,), ("", "")]  # fmt: skip
        return s

    def run(self, chain, pkt) -> int:
        """nft_do_chain through the VM for one NftPktinfo: NF_ACCEPT, NF_DROP or NFT_PUNT (nothing done)."""
        cid = self.chain_id[id(chain)]
        s = self._scratch()
        if s[3][V.PROG_DYN] is not self.progs[V.PROG_DYN]:  # a table grew since
            s[3] = s[3][: V.PROG_DYN] + (self.progs[V.PROG_DYN],) + s[3][V.PROG_DYN + 1 :]
        pm, out, names, progs = s[0], s[1], s[2], s[3]
        if s[4] != (pkt.iifname, pkt.oifname):
            for row, name in enumerate((pkt.iifname, pkt.oifname)):
                b = name.encode()[:16]
                names[row] = 0
                names[row, : len(b)] = np.frombuffer(b, np.uint8)
            s[4] = (pkt.iifname, pkt.oifname)
        skb = pkt.skb
        ct = skb.ct
        proto = getattr(ct, "proto", None) if skb.l4proto == 6 else None
        pm[:] = (pkt.hooknum, pkt.nfproto, skb.l3proto, skb.l4proto, skb.nhoff, skb.thoff,
                 skb.skb_len, skb.buf.shape[0], pkt.iif, pkt.oif, 0, 1, ct is not None, 0,
                 int(skb.ctinfo >= C.IP_CT_IS_REPLY), ct.status if ct is not None else 0,
                 ct.mark if ct is not None else 0, int(proto.state) if proto is not None else -1, skb.mark,
                 pkt.mtu, 0, skb.ctinfo, int(bool(skb.meta.get("sp"))), 0, skb.ts_ns)  # fmt: skip
        net = pkt.net
        if net is not None:  # PM_FIB: `fib` may look routes up (nft_fib.py's loopback test)
            lk = net.links.get(pkt.iif)
            pm[V.PM_FIB] = V.PM_FIB_OK | (V.PM_FIB_LOOPBACK if lk is not None and lk.is_loopback else 0)
        fv = net.fib_views() if net is not None else no_fib_views()
        buf = skb.buf
        if len(s) == 5:  # the compiled entry for these argument types (jit_entry: no per-call typing)
            s.append(jit_entry(V.nft_vm_do_chain, (progs, cid, buf, pm, out, fv)))
        if buf.flags.c_contiguous and buf.flags.writeable and buf.dtype == np.uint8:
            v = s[5](progs, cid, buf, pm, out, fv)
        else:  # a frame of another layout: the dispatcher types it
            v = V.nft_vm_do_chain(progs, cid, buf, pm, out, fv)
        if v == V.NFT_PUNT:
            self.fallback[cid] += 1
            return v
        if pm[V.PM_WRITES] & V.PM_WROTE_MARK:
            skb.mark = int(pm[V.PM_MARK])
        if pm[V.PM_WRITES] & V.PM_WROTE_CTMARK:
            ct.mark = int(pm[V.PM_CTMARK])
        if out[V.OUT_FLOW] >= 0:
            pkt.flow_add = self.ft_names[out[V.OUT_FLOW]]
        if out[V.OUT_NAT]:
            pkt.nat = nat_request(out)
        if v == C.NF_DROP and pkt.reason is None:
            pkt.reason = Reason.NETFILTER_DROP
        return v

    def stats(self, chains: list) -> list[tuple[str, int, int, int]]:
        """(chain "family table name", rules, rules compiled whole, fallback runs) per chain."""
        return [
            (f"{c.family} {c.table} {c.name}", *self.compiled[i], int(self.fallback[i]))
            for i, c in enumerate(chains)
        ]


_NO_FIB: list = []


def no_fib_views() -> tuple:
    """Empty FIB views (net.fib_views()'s shape) for a run without a network: PM_FIB is 0 then, so
    OP_FIB punts and never reads them."""
    if not _NO_FIB:
        _NO_FIB.append((FibViews(4, []).get(), FibViews(6, []).get(), 0))
    return _NO_FIB[0]


def nat_request(out: np.ndarray) -> N.NatRequest:
    """The NatRequest a run's out vector holds (masquerade/redirect addresses are the datapath's)."""

    def addr(o: int) -> int:
        return int(out[o]) << 96 | int(out[o + 1]) << 64 | int(out[o + 2]) << 32 | int(out[o + 3])

    r = N.NfNatRange(int(out[V.OUT_NAT_FLAGS]), addr(V.OUT_NAT_MINADDR), addr(V.OUT_NAT_MAXADDR),
                     int(out[V.OUT_NAT_MINPROTO]), int(out[V.OUT_NAT_MAXPROTO]))  # fmt: skip
    kind = int(out[V.OUT_NAT])
    return N.NatRequest(int(out[V.OUT_NAT_MANIP]), r, kind == V.NAT_MASQUERADE, kind == V.NAT_REDIRECT)


def compile_chains(runtime) -> NftVm:
    """Every chain of an NftRuntime (built, validated) as one program; binds the rule counters to it."""
    cc = _Compiler(runtime)
    starts, compiled = [], []
    for chain in runtime.chains:
        ctx = runtime.tables[chain.family, chain.table]
        starts.append(len(cc.em.code))
        ok = sum(cc.rule(rule, ctx) for rule in chain.rules)
        compiled.append((len(chain.rules), ok))
        cc.em.emit(V.OP_END)
    for ctx in runtime.tables.values():  # named counters no rule uses still list from the same array
        for counter in ctx.counters.values():
            cc.counter(counter)
        for obj in ctx.objs.values():
            if isinstance(obj, NftQuota):
                cc.counter(obj.consumed)
    for c in runtime.chains:
        for r in c.rules:
            for counter in r.info.counters:
                cc.counter(counter)
            for q in r.info.quotas:
                cc.counter(q.consumed)
    counters = np.zeros((max(len(cc.counters), 1), 2), np.int64)
    for row, counter in enumerate(cc.counters):
        counter.bind(counters, row)
    for ctx in runtime.tables.values():  # every limit, and every set the path updates, in the arrays
        for obj in ctx.objs.values():
            if isinstance(obj, NftLimit):
                cc.limit(obj)
        for s in ctx.sets.values():
            if s.updated and s.table is None:
                cc.sets.store.bind(s)
    for c in runtime.chains:
        for r in c.rules:
            for limit in r.info.limits:
                cc.limit(limit)
    limits = np.zeros((max(len(cc.limits), 1), LIM_COLS), np.int64)
    for row, limit in enumerate(cc.limits):
        limit.bind(limits, row)
    store = cc.sets.store
    store.set_limits(limits)
    chains = np.array(
        [[s, c.policy] for s, c in zip(starts, runtime.chains, strict=True)] or [[0, 1]], np.int64
    )
    st = cc.sets
    progs = (
        np.array(cc.em.code or [[V.OP_END] + [0] * (V.STRIDE - 1)], np.int64).reshape(-1, V.STRIDE),
        chains.reshape(-1, 2),
        np.frombuffer(bytes(cc.em.consts) + b"\0", np.uint8).copy(),
        np.array(st.rows, np.int64).reshape(-1, V.SET_COLS),
        np.frombuffer(bytes(st.keys) + b"\0", np.uint8).copy(),
        np.array(st.elem + [-1], np.int64),
        np.array(st.comp, np.int64).reshape(-1, 2),
        np.array(cc.data, np.int64).reshape(-1, V.DATA_COLS),
        counters,
        store.dyn,
        np.zeros((1, 16), np.uint8),
    )
    return NftVm(progs, cc.chain_id, compiled, cc.ft_names, store)
