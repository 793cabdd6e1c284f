"""nf_tables rule evaluation: base chains per hook and the chain walk with its verdicts.

Linux: net/netfilter/nf_tables_core.c › nft_do_chain (rules in order, jump stack, policy), with
nf_tables_api.c › nf_tables_check_loops / nft_chain_validate for the checks made when a ruleset loads.

The ruleset comes as the libnftables JSON object `nft -j list ruleset` prints ({"nftables": [...]}; a
command list of {"add": ...} objects is accepted too), so it does not depend on the nft parser's classes.
`NftRuntime.from_json` compiles every chain to a register program run by nft_vm.py (nft_compile.py), and
every rule once into a tuple of closures, the Python evaluator that runs what the VM punts (nft_expr.py:
loads; nft_cmp.py: matches; nft_set.py: sets and maps; nft_stmt.py: statements; nft_exthdr.py: IPv6 extension headers, TCP options and `rt mtu`), resolving
names (services, protocols, ct states, ICMP types, interfaces, sets, chains) then; nothing reads JSON per
packet.

Netfilter semantics the datapath relies on: `base_chains(nfproto, hooknum)` lists a hook's base chains by
priority (stable for equal priorities, as nf_hook_entries_grow); the datapath runs them in that order, an
NF_ACCEPT from one moves the packet on to the next base chain of the same hook, and the first NF_DROP ends
the hook (nf_hook_slow). A chain of type "nat" is only run by the NAT core for a connection's first packet.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Mapping, NamedTuple

from flowpath.config.nft.evaluate_obj import OBJ_KINDS
from flowpath.config.nft.ir import json_names
from flowpath.errors import ConfigError
from flowpath.netfilter import constants as C
from flowpath.netfilter.nat_range import NatRequest
from flowpath.netfilter.nft_compile import NftVm, compile_chains
from flowpath.netfilter.nft_expr import NftCtx
from flowpath.netfilter.nft_objref import NftQuota, build_stmt, nft_obj_init, quota_stmt_json
from flowpath.netfilter.nft_payload_ll import ll_expand
from flowpath.netfilter.nft_pctx import rule_ctxs
from flowpath.netfilter.nft_set import ElemClock, NftSet, parse_key, set_from_json
from flowpath.netfilter.nft_stmt import NftCounter, RuleInfo, parse_verdict
from flowpath.netfilter.nft_types import NftBuildError
from flowpath.netfilter.nft_vm import NFT_PUNT
from flowpath.packet.reason import Reason
from flowpath.packet.skb import SkBuff

NFT_JUMP_STACK_SIZE = 16  # include/net/netfilter/nf_tables.h
_FAMILY_NFPROTO = {"ip": (C.NFPROTO_IPV4,), "ip6": (C.NFPROTO_IPV6,), "inet": (C.NFPROTO_IPV4, C.NFPROTO_IPV6),
                   "netdev": (C.NFPROTO_NETDEV,)}  # fmt: skip
_NETDEV_HOOKS = (C.NF_NETDEV_INGRESS, C.NF_NETDEV_EGRESS)
_POLICY = {"accept": C.NF_ACCEPT, "drop": C.NF_DROP}
# what a JSON object of the wrong shape raises while it is compiled (reported as a ConfigError)
_MALFORMED = (NftBuildError, KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError)


@dataclass(slots=True, eq=False)
class NftPktinfo:
    """struct nft_pktinfo: the packet, where it is, and what the statements asked for.

    Inputs: skb, hooknum, nfproto, iifname/oifname ("" when there is no such device yet), iif/oif,
    mtu for `rt mtu` (min of the output and reverse routes' MTU as nft_rt.c › get_tcpmss; 0: no route),
    net for `fib`, and xfrm (the output route's SA) for `ipsec out` and `rt ipsec`.
    Outputs: nat (a NAT statement's request), flow_add (flowtable named by `flow add @ft`), reject
    ((kind, code): "icmp"/"icmpv6"/"icmpx"/"tcp reset"), logs (lines from `log`), reason (of a drop),
    xmit (the transmits netdev's fwd and dup asked for: nft_fwd_netdev.NfDupRequest).
    data and chain_target are the walk's scratch (the frame's bytes; regs->verdict.chain).
    """

    skb: SkBuff
    hooknum: int
    nfproto: int
    iifname: str = ""
    oifname: str = ""
    iif: int = 0
    oif: int = 0
    mtu: int = 0
    net: object = None  # the namespace (struct nf_hook_state's net): fib's lookups
    xfrm: object = None  # the SA the packet's route encrypts with (skb_dst(skb)->xfrm), if any
    nat: NatRequest | None = None
    flow_add: str | None = None
    reject: tuple[str, int] | None = None
    logs: list[str] = field(default_factory=list)
    xmit: list | None = None  # made by the first fwd or dup: no list per packet otherwise
    reason: Reason | None = None
    data: bytes = b""
    chain_target: object = None


@dataclass(eq=False)
class Rule:
    """struct nft_rule: its handle, compiled expressions and counters (for listing)."""

    handle: int
    ops: tuple
    counters: list
    chain: Chain | None = None
    info: RuleInfo | None = None
    expr: list = field(default_factory=list)  # its JSON statements, which nft_compile compiles again


@dataclass(eq=False)
class Chain:
    """struct nft_chain; base chains carry type, hook, prio, policy and (netdev) devices."""

    family: str
    table: str
    name: str
    handle: int = 0
    type: str = "filter"
    hook: int | None = None
    hookname: str = ""
    prio: int = 0
    policy: int = C.NF_ACCEPT
    devices: tuple[str, ...] = ()  # () when the JSON names none: then every device
    rules: list[Rule] = field(default_factory=list)
    ops: tuple = ()  # each rule's compiled expressions, set once the ruleset is built
    vm: NftVm | None = None  # the ruleset's compiled programs, this chain among them

    def __repr__(self) -> str:
        return f"Chain({self.family} {self.table} {self.name})"

    @property
    def is_base(self) -> bool:
        return self.hook is not None


@dataclass(slots=True)
class NftFlowtable:
    """A flowtable object (nf_flow_table): hook, priority, devices."""

    family: str
    table: str
    name: str
    hook: str = "ingress"
    prio: int = 0
    devices: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()


class RuleCounter(NamedTuple):
    family: str
    table: str
    chain: str
    handle: int
    packets: int
    bytes: int


def nft_do_chain(chain: Chain, pkt: NftPktinfo) -> int:
    """Walk a base chain for one packet; return NF_ACCEPT or NF_DROP (pkt.reason set on a drop).

    The compiled program runs it (nft_vm.py); a packet it punts (an expression it does not have) is
    evaluated again by the closures, counted in the chain's `nft_fallback`.
    """
    if chain.vm is not None:
        v = chain.vm.run(chain, pkt)
        if v != NFT_PUNT:
            return v
    return nft_do_chain_closures(chain, pkt)


def nft_do_chain_closures(chain: Chain, pkt: NftPktinfo) -> int:
    """The Python evaluator: the chain walk over each rule's closures (the VM's fallback and oracle).

    Rules run in order; in a rule, expressions run until one breaks (no match) or gives a verdict.
    `jump` pushes the return point (at most NFT_JUMP_STACK_SIZE deep), `goto` does not, `return` and the
    end of a regular chain pop it, and the end of the base chain applies its policy.
    """
    pkt.data = pkt.skb.buf.tobytes()
    CONTINUE, BREAK, JUMP, GOTO = C.NFT_CONTINUE, C.NFT_BREAK, C.NFT_JUMP, C.NFT_GOTO  # locals: hot loop
    stack: list[tuple[tuple, int]] = []
    rules, i = chain.ops, 0
    while True:
        code = CONTINUE
        n = len(rules)
        while i < n:
            ops = rules[i]
            i += 1
            for op in ops:
                code = op(pkt)
                if code != CONTINUE:
                    break
            else:
                continue  # every expression ran and none gave a verdict
            if code == BREAK:
                continue
            if code == JUMP:
                if len(stack) >= NFT_JUMP_STACK_SIZE:  # nft_jumpstack_push: WARN_ON_ONCE, NF_DROP
                    pkt.reason = pkt.reason or Reason.NETFILTER_DROP
                    return C.NF_DROP
                stack.append((rules, i))
                rules, i, n = pkt.chain_target.ops, 0, len(pkt.chain_target.ops)
                code = CONTINUE
                continue
            if code == GOTO:
                rules, i, n = pkt.chain_target.ops, 0, len(pkt.chain_target.ops)
                code = CONTINUE
                continue
            break  # NF_ACCEPT, NF_DROP or NFT_RETURN
        if code >= 0:
            if code == C.NF_DROP and pkt.reason is None:
                pkt.reason = Reason.NETFILTER_DROP
            return code
        if stack:  # NFT_RETURN, or the end of a regular chain
            rules, i = stack.pop()
            continue
        if chain.policy == C.NF_DROP:
            pkt.reason = pkt.reason or Reason.NETFILTER_DROP
        return chain.policy


def _items(obj: object) -> list:
    if isinstance(obj, (str, bytes)):
        obj = json.loads(obj)
    if isinstance(obj, dict):
        obj = obj.get("nftables", [])
    out = []
    for item in obj:
        if isinstance(item, dict) and len(item) == 1 and next(iter(item)) in ("add", "create"):
            item = next(iter(item.values()))  # a command list: {"add": {"table": ...}}
        out.append(item)
    return out


def _prio(v: object) -> int:
    if isinstance(v, str) and v in C.NFT_PRIO_NAMES:
        return C.NFT_PRIO_NAMES[v]
    return int(v)  # type: ignore[arg-type]


class NftRuntime:
    """A compiled ruleset: tables, chains, sets, flowtables, hooks, counters."""

    def __init__(self, path: str = "<ruleset>"):
        self.path = path
        self.tables: dict[tuple[str, str], NftCtx] = {}
        self.chains: list[Chain] = []
        self.flowtables: list[NftFlowtable] = []
        self._hooks: dict[tuple[int, int], list[Chain]] = {}
        self.dormant: set[tuple[str, str]] = set()  # (family, name) of tables with `flags dormant`
        self._json: list = []
        # statements and objects whose JSON lists their state: counters, quotas
        self._counter_stmts: list[tuple[dict, NftCounter | NftQuota]] = []
        self._counter_objs: list[tuple[dict, NftCounter | NftQuota]] = []
        self.vm: NftVm | None = None
        self.elem_clock = ElemClock()  # declared element timeouts: start_clock, or the first lookup

    # --- building -------------------------------------------------------------------------------------------
    @classmethod
    def from_json(
        cls, obj: object, path: str = "<ruleset>", ifindex: Mapping[str, int] | None = None
    ) -> NftRuntime:
        """Build from `nft -j list ruleset` output (a dict, list or JSON text).

        ifindex maps interface names to indexes for `meta iif`/`oif` (None: compare names instead).
        Raises ConfigError naming the table, chain and rule handle of anything it cannot compile.
        """
        rt = cls(path)
        try:
            rt._json = copy.deepcopy(_items(obj))
            rt._load(ifindex)
        except ConfigError:
            raise
        except _MALFORMED as e:
            raise ConfigError(path, 0, 0, f"malformed ruleset JSON: {type(e).__name__}: {e}") from None
        rt._validate()
        for c in rt.chains:
            c.ops = tuple(r.ops for r in c.rules)
        rt.vm = compile_chains(rt)
        if ifindex is not None:
            rt.vm.set_ifnames(dict(ifindex))
        for c in rt.chains:
            c.vm = rt.vm
        for c in rt.chains:
            if c.is_base and (c.family, c.table) not in rt.dormant:  # a dormant table registers no hook
                for nfproto in (
                    _FAMILY_NFPROTO[c.family] if c.hook not in _NETDEV_HOOKS else (C.NFPROTO_NETDEV,)
                ):
                    rt._hooks.setdefault((nfproto, c.hook), []).append(c)
        for chains in rt._hooks.values():
            chains.sort(key=lambda c: c.prio)  # stable: equal priorities keep ruleset order
        return rt

    def _load(self, ifindex: Mapping[str, int] | None) -> None:
        rules, elements = [], []
        for item in self._json:
            if not isinstance(item, dict) or len(item) != 1:
                raise self._err(f"not an nftables object: {item!r}")
            (kind, o), = item.items()  # fmt: skip
            if kind == "metainfo":
                continue
            if kind == "table":
                self._add_table(o, ifindex)
            elif kind == "chain":
                self._add_chain(o)
            elif kind in ("set", "map", "rule", "element", "flowtable", *OBJ_KINDS):
                (rules if kind == "rule" else elements).append((kind, o))
            else:
                raise self._err(f"unsupported object {kind!r}")
        for kind, o in elements:  # after every chain exists: verdict maps name chains
            self._add_object(kind, o)
        for _, o in rules:
            self._add_rule(o)

    def _err(self, msg: str) -> ConfigError:
        return ConfigError(self.path, 0, 0, msg)

    def _ctx(self, o: dict, what: str) -> NftCtx:
        ctx = self.tables.get((o.get("family"), o.get("table")))
        if ctx is None:
            raise self._err(f"{what} {o.get('name', '')!r}: no table {o.get('family')} {o.get('table')}")
        return ctx

    def _add_table(self, o: dict, ifindex: Mapping[str, int] | None) -> None:
        if o.get("family") not in _FAMILY_NFPROTO:
            raise self._err(f"table {o.get('family')} {o.get('name')}: unsupported family")
        self.tables[o["family"], o["name"]] = NftCtx(o["family"], o["name"], ifindex=ifindex)
        flags = o.get("flags", [])
        if "dormant" in ([flags] if isinstance(flags, str) else flags):
            self.dormant.add((o["family"], o["name"]))

    def _add_chain(self, o: dict) -> None:
        ctx = self._ctx(o, "chain")
        chain = Chain(o["family"], o["table"], o["name"], int(o.get("handle", 0)))
        if "hook" in o:
            hook = C.HOOK_NAMES.get(o["hook"])
            netdev_only = hook in _NETDEV_HOOKS
            if hook is None or (o["family"] == "netdev") != netdev_only:
                raise self._err(
                    f"chain {o['family']} {o['table']} {o['name']}: unsupported hook {o['hook']!r}"
                )
            if (
                o.get("type", "filter") not in ("filter", "nat", "route")
                or o.get("policy", "accept") not in _POLICY
            ):
                raise self._err(f"chain {o['family']} {o['table']} {o['name']}: bad type or policy")
            chain.type, chain.hook, chain.hookname = o.get("type", "filter"), hook, o["hook"]
            chain.prio, chain.policy = _prio(o.get("prio", 0)), _POLICY[o.get("policy", "accept")]
            chain.devices = json_names(o.get("dev"))
        ctx.chains[chain.name] = chain
        self.chains.append(chain)

    def _add_object(self, kind: str, o: dict) -> None:
        ctx = self._ctx(o, kind)
        where = f"{kind} {o.get('family')} {o.get('table')} {o.get('name')}"
        try:
            if kind in ("set", "map"):
                s = set_from_json(o)
                ctx.sets[s.name] = s
                self._add_elements(ctx, s, o.get("elem", []))
            elif kind == "element":
                s = ctx.sets.get(o.get("name"))
                if s is None:
                    raise NftBuildError("no such set")
                self._add_elements(ctx, s, o.get("elem", []))
            elif kind == "flowtable":
                ft = NftFlowtable(o["family"], o["table"], o["name"], o.get("hook", "ingress"),
                                  _prio(o.get("prio", 0)), json_names(o.get("dev")), json_names(o.get("flags")))  # fmt: skip
                ctx.flowtables[ft.name] = ft
                self.flowtables.append(ft)
            else:  # a named stateful object (nft_objref.py)
                obj = nft_obj_init(kind, o)
                if kind == "counter":
                    ctx.counters[o["name"]] = obj
                else:
                    ctx.objs[kind, o["name"]] = obj
                if isinstance(obj, (NftCounter, NftQuota)):
                    self._counter_objs.append((o, obj))
        except _MALFORMED as e:
            raise self._err(f"{where}: {e}") from None

    def _add_elements(self, ctx: NftCtx, s: NftSet, elems: list) -> None:
        if s.data_type is None:
            s.add_elements(elems)
        elif s.data_type == "verdict":
            s.add_elements(elems, lambda v: parse_verdict(v, ctx, RuleInfo()))
        else:
            dtype = s.data_type
            s.add_elements(elems, lambda v: parse_key(dtype, 0, v))
        self.elem_clock.add(s)

    def _add_rule(self, o: dict) -> None:
        ctx = self._ctx(o, "rule")
        where = f"rule {o.get('family')} {o.get('table')} {o.get('chain')} handle {o.get('handle', '?')}"
        chain = ctx.chains.get(o.get("chain"))
        if chain is None:
            raise self._err(f"{where}: no such chain")
        info = RuleInfo()
        try:
            expr = ll_expand(o.get("expr", []))  # vlan matches as their bytecode loads them
            ops = tuple(build_stmt(stmt, c, info) for stmt, c in zip(expr, rule_ctxs(ctx, expr), strict=True))
        except _MALFORMED as e:
            err = self._err(f"{where}: {e}")
            err.rule = (o.get("family"), o.get("table"), o.get("chain"), o.get("handle"))  # for Net: its line
            raise err from None
        rule = Rule(int(o.get("handle", 0)), ops, info.counters, chain, info, list(expr))
        chain.rules.append(rule)
        stmts = [
            s
            for s in o.get("expr", [])
            if isinstance(s, dict) and "counter" in s and not isinstance(s["counter"], str)
            and "map" not in (s["counter"] or {})  # a named counter, or a map of them
        ]
        self._counter_stmts.extend(zip(stmts, info.counters, strict=True))
        quotas = [s for s in o.get("expr", []) if isinstance(s, dict) and isinstance(s.get("quota"), dict)
                  and "map" not in s["quota"]]  # fmt: skip
        self._counter_stmts.extend(zip(quotas, info.quotas, strict=True))

    def _validate(self) -> None:
        """nf_tables_check_loops and nft_chain_validate: loops, depth, statements allowed per hook.

        Loops are refused in every chain, attached or not; depth and per-hook statements are checked on
        the paths from each base chain. `done` remembers the deepest level a chain passed at from a base.
        """
        done: dict[tuple[int, int], int] = {}
        for c in self.chains:
            self._validate_chain(c if c.is_base else None, c, 0, (), done)

    def _validate_chain(self, base: Chain | None, chain: Chain, level: int, path: tuple, done: dict) -> None:
        where = f"chain {chain.family} {chain.table} {chain.name}"
        if chain in path:
            raise self._err(f"{where}: loop detected")
        if base is not None and level >= NFT_JUMP_STACK_SIZE:
            raise self._err(f"{where}: too many nested jumps (limit {NFT_JUMP_STACK_SIZE})")
        key = (id(base), id(chain))
        if done.get(key, -1) >= (level if base is not None else 0):
            return  # passed before from this base at this depth or deeper (a deeper pass is stricter)
        for rule in chain.rules:
            for stmt, hooks, ctype in rule.info.hooks if base is not None else ():
                if base.hookname not in hooks or (ctype is not None and base.type != ctype):
                    need = f" in a {ctype} chain" if ctype else ""
                    raise self._err(
                        f"rule {chain.family} {chain.table} {chain.name} handle {rule.handle}: {stmt} is only "
                        f"valid{need} at hooks {', '.join(hooks)} (reached from {base.hookname} chain {base.name})"
                    )
            for target in dict.fromkeys(rule.info.targets):
                self._validate_chain(base, target, level + 1, path + (chain,), done)
        done[key] = max(done.get(key, -1), level)

    # --- running --------------------------------------------------------------------------------------------
    def base_chains(self, nfproto: int, hooknum: int, dev: str | None = None) -> list[Chain]:
        """The base chains of a hook in priority order (netdev ones filtered by device when `dev` is given)."""
        chains = self._hooks.get((nfproto, hooknum), [])
        if dev is None or nfproto != C.NFPROTO_NETDEV:
            return list(chains)
        return [c for c in chains if not c.devices or dev in c.devices]

    def has_hook(self, nfproto: int, hooknum: int) -> bool:
        """Has any base chain registered at this hook (a cheap test before building a packet's view)?"""
        return (nfproto, hooknum) in self._hooks

    def nft_do_chain(self, chain: Chain, pkt: NftPktinfo) -> int:
        if self.elem_clock.sets:  # the first packet: declared element timeouts start now
            self.elem_clock.start(pkt.skb.ts_ns)
        return nft_do_chain(chain, pkt)

    def start_clock(self, now_ns: int) -> None:
        """Start declared element timeouts at now_ns (the Worker's clock when it loads a ruleset)."""
        self.elem_clock.start(now_ns)

    def nft_fallback(self) -> dict[str, int]:
        """Per chain ("family table name"): runs the compiled program punted to the Python evaluator."""
        return {name: fb for name, _, _, fb in self.vm.stats(self.chains)} if self.vm else {}

    def vm_stats(self) -> list[tuple[str, int, int, int]]:
        """Per chain: (name, rules, rules the VM runs whole, fallback runs); see NftVm.stats."""
        return self.vm.stats(self.chains) if self.vm else []

    def chain(self, family: str, table: str, name: str) -> Chain:
        return self.tables[family, table].chains[name]

    def set(self, family: str, table: str, name: str) -> NftSet:
        return self.tables[family, table].sets[name]

    # --- listing ----------------------------------------------------------------------------------------------
    def rule_counters(self) -> list[RuleCounter]:
        """Packets and bytes of every rule with a counter statement (the first one if it has several)."""
        return [
            RuleCounter(c.family, c.table, c.name, r.handle, r.counters[0].packets, r.counters[0].bytes)
            for c in self.chains
            for r in c.rules
            if r.counters
        ]

    def list_ruleset_json(self) -> dict:
        """The ruleset as it was loaded, with the counters' current values (`nft -j list ruleset`)."""
        for stmt, counter in self._counter_stmts:
            if isinstance(counter, NftQuota):
                stmt["quota"] = quota_stmt_json(counter, stmt["quota"])
            else:
                stmt["counter"] = {"packets": counter.packets, "bytes": counter.bytes}
        for obj, counter in self._counter_objs:
            if isinstance(counter, NftQuota):
                obj["used"] = counter.used
            else:
                obj["packets"], obj["bytes"] = counter.packets, counter.bytes
        return {"nftables": copy.deepcopy(self._json)}
