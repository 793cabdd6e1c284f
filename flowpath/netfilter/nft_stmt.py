"""nft statements: verdicts, verdict maps, counter, log, limit, reject, NAT, flow offload, mark set, notrack.

Linux: net/netfilter/nft_immediate.c (verdicts), nft_lookup.c (vmap), nft_counter.c, nft_log.c,
nft_limit.c, nft_reject.c / nft_reject_inet.c, nft_nat.c / nft_masq.c / nft_redir.c, nft_flow_offload.c,
nft_meta.c › nft_meta_set_eval, nft_ct.c › nft_ct_set_eval and nft_notrack_eval.
Each statement compiles to op(pkt) -> int like an expression (nft_expr.py): NFT_CONTINUE to go on with the
rule, NFT_BREAK to end it, or a verdict (NF_ACCEPT, NF_DROP, NFT_JUMP, NFT_GOTO, NFT_RETURN).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from flowpath.config.nft.validate import expr_hooks
from flowpath.netfilter import constants as C
from flowpath.netfilter import nat_range as N
from flowpath.netfilter.nft_cells import NftCells
from flowpath.netfilter.nft_cmp import build_match, resolve_set
from flowpath.netfilter.nft_dynset import build_dynset, named_data_map
from flowpath.netfilter.nft_expr import NftCtx, Op, build_load
from flowpath.netfilter.nft_exthdr import build_tcpopt_set, build_tcpopt_strip
from flowpath.netfilter.nft_limit import build_limit
from flowpath.netfilter.nft_meta_set import build_meta_ct_set
from flowpath.netfilter.nft_payload_set import build_payload_set
from flowpath.netfilter.nft_set import Interval, NftSet, parse_key
from flowpath.netfilter.nft_types import ICMP_CODE, ICMPV6_CODE, ICMPX_CODE, NftBuildError, parse_value
from flowpath.packet import layout as L
from flowpath.packet.reason import Reason

NFT_CONTINUE, NFT_BREAK = C.NFT_CONTINUE, C.NFT_BREAK


class NftCounter(NftCells):
    """struct nft_counter: packets and bytes (skb->len, i.e. from the network header).

    The two numbers live in a row of an int64[n, 2] array: nft_compile.compile_chains binds every counter
    of a ruleset to the one array the compiled programs increment (nft_vm.nft_vm_commit), so the
    listing, the closures and the VM see one count.
    """

    __slots__ = ()

    def __init__(self, packets: int = 0, bytes: int = 0):
        super().__init__([packets, bytes])

    @property
    def packets(self) -> int:
        return int(self._cells[self._row, 0])

    @packets.setter
    def packets(self, v: int) -> None:
        self._cells[self._row, 0] = v

    @property
    def bytes(self) -> int:
        return int(self._cells[self._row, 1])

    @bytes.setter
    def bytes(self, v: int) -> None:
        self._cells[self._row, 1] = v

    def __repr__(self) -> str:
        return f"NftCounter(packets={self.packets}, bytes={self.bytes})"


@dataclass
class RuleInfo:
    """What a rule needs from where it sits, checked once the whole ruleset is built (nft_*_validate)."""

    counters: list = field(default_factory=list)  # NftCounter objects of this rule, in order
    quotas: list = field(default_factory=list)  # NftQuota objects of its anonymous quotas, in order
    limits: list = field(default_factory=list)  # NftLimit objects of its anonymous limits, in order
    targets: list = field(default_factory=list)  # chains this rule can jump or goto
    hooks: list = field(default_factory=list)  # (statement, allowed hooks, required chain type or None)


# --- verdicts (nft_immediate.c) and verdict maps ---------------------------------------------------------------
def _const(code: int) -> Op:
    def op(pkt):
        return code

    return op


def _jump(code: int, chain) -> Op:
    def op(pkt):
        pkt.chain_target = chain
        return code

    return op


def parse_verdict(v: object, ctx: NftCtx, info: RuleInfo) -> tuple[int, object]:
    """{"accept": null}, {"jump": {"target": "x"}}, ... -> (code, target chain or None)."""
    if not (isinstance(v, dict) and len(v) == 1):
        raise NftBuildError(f"not a verdict: {v!r}")
    (kind, arg), = v.items()  # fmt: skip
    simple = {"accept": C.NF_ACCEPT, "drop": C.NF_DROP, "continue": NFT_CONTINUE, "return": C.NFT_RETURN}
    if kind in simple:
        return simple[kind], None
    if kind in ("jump", "goto"):
        name = arg["target"] if isinstance(arg, dict) else arg
        chain = ctx.chains.get(name)
        if chain is None:
            raise NftBuildError(f"chain {name!r} does not exist in table {ctx.family} {ctx.table}")
        info.targets.append(chain)
        return (C.NFT_JUMP if kind == "jump" else C.NFT_GOTO), chain
    raise NftBuildError(f"unsupported verdict {kind!r}")


def build_verdict(kind: str, arg: object, ctx: NftCtx, info: RuleInfo) -> Op:
    code, chain = parse_verdict({kind: arg}, ctx, info)
    return _const(code) if chain is None else _jump(code, chain)


def verdict_map_data(ctx: NftCtx, info: RuleInfo):
    return lambda v: parse_verdict(v, ctx, info)


def build_vmap(arg: dict, ctx: NftCtx, info: RuleInfo) -> Op:
    load = build_load(arg["key"], ctx)
    data = arg["data"]
    if isinstance(data, str) and data.startswith("@"):
        s = resolve_set(data, ctx, load.dtype, load.bits)
        if s.data_type != "verdict":
            raise NftBuildError(f"map {s.name!r} is not a verdict map")
        catchall = [s.catchall] if s.catchall is not None else []
        for _, chain in [*s.exact.values(), *s.datas, *(d for _, d in s.scan), *catchall]:
            if chain is not None:
                info.targets.append(chain)
    else:
        s = NftSet("", load.dtype, load.bits, "verdict")
        s.add_elements(data["set"], verdict_map_data(ctx, info))
    fn, get = load.fn, s.get

    def op(pkt):
        v = fn(pkt)
        d = None if v is None else get(v)
        if d is None:
            return NFT_BREAK
        pkt.chain_target = d[1]
        return d[0]

    return op


# --- counter, log, limit -------------------------------------------------------------------------------------
def build_counter(arg: object, ctx: NftCtx, info: RuleInfo) -> Op:
    if isinstance(arg, str):  # a named counter object: `counter name "x"`
        counter = ctx.counters.get(arg)
        if counter is None:
            raise NftBuildError(f"counter {arg!r} does not exist in table {ctx.family} {ctx.table}")
    else:
        arg = arg or {}
        counter = NftCounter(int(arg.get("packets", 0)), int(arg.get("bytes", 0)))
        info.counters.append(counter)
    return nft_counter_eval(counter)


def nft_counter_eval(counter: NftCounter) -> Op:
    """nft_counter.c › nft_counter_do_eval: packets + 1, bytes + skb->len."""

    def op(pkt):
        skb = pkt.skb
        counter.packets += 1
        counter.bytes += skb.skb_len
        return NFT_CONTINUE

    return op


def nf_log_line(pkt) -> str:
    """The body of an nf_log_syslog line (dump_ipv4_packet / dump_ipv6_packet), main fields only."""
    skb = pkt.skb
    head = f"IN={pkt.iifname} OUT={pkt.oifname} "
    if skb.l3proto == L.ETH_P_IP:
        src, dst = ipaddress.IPv4Address(int(skb.saddr)), ipaddress.IPv4Address(int(skb.daddr))  # JIT off: ld32 gives numpy ints
    elif skb.l3proto == L.ETH_P_IPV6:
        src, dst = ipaddress.IPv6Address(skb.saddr), ipaddress.IPv6Address(skb.daddr)
    else:
        return head + f"PROTO=0x{skb.l3proto:04x}"
    line = head + f"SRC={src} DST={dst} LEN={skb.buf.shape[0] - skb.nhoff} "
    names = {L.IPPROTO_TCP: "TCP", L.IPPROTO_UDP: "UDP", L.IPPROTO_ICMP: "ICMP", L.IPPROTO_ICMPV6: "ICMPv6"}
    proto = names.get(skb.l4proto)
    if proto is None:
        return line + f"PROTO={skb.l4proto}"
    if skb.thoff < 0:
        return line + f"PROTO={proto} INCOMPLETE"
    if skb.l4proto in (L.IPPROTO_TCP, L.IPPROTO_UDP):
        return line + f"PROTO={proto} SPT={skb.sport} DPT={skb.dport}"
    b, t = skb.buf, skb.thoff
    return line + f"PROTO={proto} TYPE={int(b[t + L.ICMPH.type])} CODE={int(b[t + L.ICMPH.code])}"


def build_log(arg: object) -> Op:
    # Deviation: group, snaplen, queue-threshold (nfnetlink_log) and flags (the TCP sequence, options,
    # uid, MAC parts of the line) do not change the line: flowpath keeps one syslog-style line per packet
    prefix = (arg or {}).get("prefix", "") if isinstance(arg, dict) else ""

    def op(pkt):
        pkt.logs.append(prefix + nf_log_line(pkt))
        return NFT_CONTINUE

    return op


# --- reject (nft_reject.c, nft_reject_inet.c) ---------------------------------------------------------------
_REJECT_DEFAULT = {"ip": ("icmp", 3), "ip6": ("icmpv6", 4), "inet": ("icmpx", 1), "netdev": ("icmpx", 1)}
_REJECT_CODES = {"icmp": ICMP_CODE, "icmpv6": ICMPV6_CODE, "icmpx": ICMPX_CODE}


def nft_reject_resolve(reject: tuple[str, int], nfproto: int) -> tuple[str, int]:
    """Turn ("icmpx", code) into the ICMP/ICMPv6 code for the packet's family (nft_reject_icmp_code)."""
    kind, code = reject
    if kind != "icmpx":
        return reject
    if nfproto == C.NFPROTO_IPV6:
        return "icmpv6", (
            L.ICMPV6_NOROUTE,
            L.ICMPV6_PORT_UNREACH,
            L.ICMPV6_ADDR_UNREACH,
            L.ICMPV6_ADM_PROHIBITED,
        )[code]
    return "icmp", (L.ICMP_NET_UNREACH, L.ICMP_PORT_UNREACH, L.ICMP_HOST_UNREACH, L.ICMP_PKT_FILTERED)[code]


def build_reject(arg: object, ctx: NftCtx, info: RuleInfo) -> Op:
    kind, code = _REJECT_DEFAULT.get(ctx.family, ("icmpx", 1))
    if isinstance(arg, dict) and arg.get("type"):
        kind = arg["type"]
        if kind not in ("icmp", "icmpv6", "icmpx", "tcp reset"):
            raise NftBuildError(f"unsupported reject type {kind!r}")
        code = 0 if kind == "tcp reset" else _REJECT_CODES[kind]["port-unreachable"]
        if "expr" in arg and kind != "tcp reset":
            code = int(parse_value(f"{kind}_code", arg["expr"]))
    info.hooks.append(("reject", ("prerouting", "input", "forward", "output", "ingress"), None))
    result = (kind, code)
    # nft adds `meta nfproto ipv4` in front of `reject with icmp` in inet tables (and ipv6 for icmpv6)
    need_l3 = {"icmp": L.ETH_P_IP, "icmpv6": L.ETH_P_IPV6}.get(kind, 0)
    is_rst = kind == "tcp reset"

    def op(pkt):
        skb = pkt.skb
        if need_l3 and skb.l3proto != need_l3:
            return NFT_BREAK
        # nf_send_reset answers TCP only; anything else is dropped without a reply
        pkt.reject = result if not is_rst or skb.l4proto == L.IPPROTO_TCP else None
        pkt.reason = Reason.NETFILTER_REJECT
        return C.NF_DROP

    return op


# --- NAT (nft_nat.c, nft_masq.c, nft_redir.c) ----------------------------------------------------------------
_NAT_FLAGS = {"random": N.NF_NAT_RANGE_PROTO_RANDOM, "fully-random": N.NF_NAT_RANGE_PROTO_RANDOM_FULLY,
              "persistent": N.NF_NAT_RANGE_PERSISTENT, "netmap": N.NF_NAT_RANGE_NETMAP}  # fmt: skip
# nft_nat_validate / nft_masq_validate / nft_redir_validate: where each kind may sit
_NAT_HOOKS = {"snat": ("postrouting", "input"), "dnat": ("prerouting", "output"),
              "masquerade": ("postrouting",), "redirect": ("prerouting", "output")}  # fmt: skip


def _nat_family(arg: dict, ctx: NftCtx) -> int:
    fam = arg.get("family") or {"ip": "ip", "ip6": "ip6"}.get(ctx.family)
    if fam is None and "addr" in arg:
        a = arg["addr"]
        a = a.get("range", [None])[0] if isinstance(a, dict) and "range" in a else a
        a = a["prefix"]["addr"] if isinstance(a, dict) and "prefix" in a else a
        fam = "ip6" if isinstance(a, str) and ":" in a else "ip"
    return {"ip": C.NFPROTO_IPV4, "ip6": C.NFPROTO_IPV6, None: C.NFPROTO_INET}[fam]


def _nat_bounds(v: object, dtype: str) -> tuple[int, int]:
    if isinstance(v, dict) and "range" in v:
        lo, hi = (int(parse_value(dtype, x)) for x in v["range"])
        return lo, hi
    if isinstance(v, dict) and "prefix" in v:
        width = 32 if dtype == "ipv4_addr" else 128
        base, plen = int(parse_value(dtype, v["prefix"]["addr"])), int(v["prefix"]["len"])
        host = (1 << (width - plen)) - 1
        return base & ~host, (base & ~host) | host
    if isinstance(v, (str, int)):
        x = int(parse_value(dtype, v))
        return x, x
    raise NftBuildError(f"unsupported NAT operand {v!r}")


def _bounds(x: object) -> tuple[int, int]:
    return (x.lo, x.hi) if isinstance(x, Interval) else (x, x)  # type: ignore[return-value]


def nat_map_set(m: dict, ctx: NftCtx, dtype: str, key_dtype, key_bits: int) -> NftSet:
    """The map of a NAT statement's `map`: a named data map, or the anonymous one written in place
    (its data an address of `dtype`, or an address . port concatenation). The closures and the VM's
    compiler both look up in it."""
    data = m["data"]
    if isinstance(data, str):
        return named_data_map(data, ctx, key_dtype, key_bits)
    elems = data["set"]
    concat = bool(elems) and isinstance(elems[0][1], dict) and "concat" in elems[0][1]
    dt: str | tuple = (dtype, "inet_service") if concat else dtype
    s = NftSet("", key_dtype, key_bits, "nat")
    s.add_elements(elems, lambda v: parse_key(dt, 0, v))
    return s


def _nat_map(m: dict, ctx: NftCtx, dtype: str):
    """`dnat to tcp dport map { 80 : 192.168.1.2 }`: fn(pkt) -> (lo, hi) or ((lo, hi), (plo, phi)) or None."""
    load = build_load(m["key"], ctx)
    s = nat_map_set(m, ctx, dtype, load.dtype, load.bits)
    fn, get = load.fn, s.get

    def lookup(pkt):
        k = fn(pkt)
        d = None if k is None else get(k)
        if d is None:
            return None  # nft_lookup: a map miss breaks the rule
        return (_bounds(d[0]), _bounds(d[1])) if isinstance(d, tuple) else _bounds(d)

    return lookup


def build_nat(kind: str, arg: object, ctx: NftCtx, info: RuleInfo) -> Op:
    arg = arg or {}
    fam = C.NFPROTO_INET if kind in ("masquerade", "redirect") else _nat_family(arg, ctx)
    addr_type = "ipv6_addr" if fam == C.NFPROTO_IPV6 else "ipv4_addr"
    flags, amin, amax, pmin, pmax = 0, 0, 0, 0, 0
    addr_map = port_map = None
    if "addr" in arg:
        if kind in ("masquerade", "redirect"):
            raise NftBuildError(f"{kind} takes no address")
        if isinstance(arg["addr"], dict) and "map" in arg["addr"]:
            addr_map = _nat_map(arg["addr"]["map"], ctx, addr_type)
        else:
            amin, amax = _nat_bounds(arg["addr"], addr_type)
        flags |= N.NF_NAT_RANGE_MAP_IPS
    if "port" in arg:
        if isinstance(arg["port"], dict) and "map" in arg["port"]:
            port_map = _nat_map(arg["port"]["map"], ctx, "inet_service")
        else:
            pmin, pmax = _nat_bounds(arg["port"], "inet_service")
        flags |= N.NF_NAT_RANGE_PROTO_SPECIFIED
    for f in [arg["flags"]] if isinstance(arg.get("flags"), str) else arg.get("flags", []):
        if f not in _NAT_FLAGS:
            raise NftBuildError(f"unsupported NAT flag {f!r}")
        flags |= _NAT_FLAGS[f]
    manip = C.NF_NAT_MANIP_SRC if kind in ("snat", "masquerade") else C.NF_NAT_MANIP_DST
    masq, redir = kind == "masquerade", kind == "redirect"
    info.hooks.append((kind, _NAT_HOOKS[kind], "nat"))

    def op(pkt):
        if fam != C.NFPROTO_INET and pkt.nfproto != fam:
            return NFT_CONTINUE  # nft_nat_inet_eval: a statement for the other family does nothing
        r = N.NfNatRange(flags, amin, amax, pmin, pmax)
        if addr_map is not None:
            d = addr_map(pkt)
            if d is None:
                return NFT_BREAK
            if isinstance(d[0], tuple):  # address . port data
                (r.min_addr, r.max_addr), (r.min_proto, r.max_proto) = d
                r.flags |= N.NF_NAT_RANGE_PROTO_SPECIFIED
            else:
                r.min_addr, r.max_addr = d
        if port_map is not None:
            d = port_map(pkt)
            if d is None:
                return NFT_BREAK
            r.min_proto, r.max_proto = d
        pkt.nat = N.NatRequest(manip, r, masq, redir)
        return C.NF_ACCEPT  # nft_nat_eval: the verdict is nf_nat_setup_info's, NF_ACCEPT

    return op


# --- flow offload (nft_flow_offload.c › nft_flow_offload_eval) ---------------------------------------------
_NO_OFFLOAD = C.IPS_SEQ_ADJUST | (1 << C.IPS_NAT_CLASH_BIT) | C.IPS_OFFLOAD
_TCP_FIN_RST = L.TCPHDR_FIN | L.TCPHDR_RST


def build_flow(arg: dict, ctx: NftCtx, info: RuleInfo) -> Op:
    if arg.get("op", "add") not in ("add", "offload"):  # `flow offload @ft` is the older spelling
        raise NftBuildError(f"unsupported flow op {arg.get('op')!r}")
    name = arg.get("flowtable", "")
    name = name[1:] if name.startswith("@") else name
    if name not in ctx.flowtables:
        raise NftBuildError(f"flowtable {name!r} does not exist in table {ctx.family} {ctx.table}")
    info.hooks.append(("flow add", ("forward",), None))  # nft_flow_offload_validate
    from flowpath.netfilter.conntrack_proto_tcp import TcpConntrack  # only rulesets with `flow add` need it

    established = TcpConntrack.ESTABLISHED

    def op(pkt):
        """Every check that needs only this packet and its ct; the routes are the datapath's (nft_flow_route)."""
        skb = pkt.skb
        ct = skb.ct
        if ct is None or skb.ctinfo == C.IP_CT_UNTRACKED or skb.thoff < 0:
            return NFT_BREAK
        status = ct.status
        if skb.l4proto == L.IPPROTO_TCP:
            if pkt.data[skb.thoff + L.TCPH.flags] & _TCP_FIN_RST or not status & C.IPS_ASSURED:
                return NFT_BREAK
            proto = getattr(ct, "proto", None)  # nf_conntrack_tcp_established; test doubles have no .proto
            if proto is not None and proto.state != established:
                return NFT_BREAK
        elif skb.l4proto != L.IPPROTO_UDP:
            return NFT_BREAK  # Deviation: GRE flows are not offloaded
        if status & _NO_OFFLOAD or not status & C.IPS_CONFIRMED:
            return NFT_BREAK
        if skb.l3proto == L.ETH_P_IP and skb.thoff - skb.nhoff != L.IPH.size:
            return NFT_BREAK  # nft_flow_offload_skip: IPv4 options
        pkt.flow_add = name
        return NFT_CONTINUE

    return op


# --- meta mark set, ct mark set, notrack ------------------------------------------------------------------------
def build_mangle(arg: dict, ctx: NftCtx, info: RuleInfo) -> Op:
    key, value = arg.get("key"), arg.get("value")
    if isinstance(key, dict) and len(key) == 1 and "payload" in key and not isinstance(value, dict):
        return build_payload_set(key["payload"], value, ctx.family, ctx.pctx)
    if isinstance(key, dict) and len(key) == 1 and "tcp option" in key:
        if isinstance(value, dict):
            src = build_load(value, ctx).fn
        else:
            c = int(parse_value("integer", value))

            def src(pkt):
                return c

        if isinstance(value, dict) and "rt" in value:  # nft_rt_validate: NFT_RT_TCPMSS needs a route
            info.hooks.append(("rt mtu", ("forward", "output", "postrouting"), None))
        return build_tcpopt_set(key["tcp option"], src)
    return build_meta_ct_set(key, value, ctx)


def build_notrack(ctx: NftCtx, info: RuleInfo) -> Op:
    info.hooks.append(("notrack", ("prerouting", "output"), None))

    def op(pkt):
        skb = pkt.skb
        if skb.ct is None and skb.ctinfo != C.IP_CT_UNTRACKED:  # nft_notrack_eval
            skb.ctinfo = C.IP_CT_UNTRACKED
        return NFT_CONTINUE

    return op


def build_stmt(stmt: object, ctx: NftCtx, info: RuleInfo) -> Op:
    """Compile one entry of a rule's "expr" list."""
    if not (isinstance(stmt, dict) and len(stmt) == 1):
        raise NftBuildError(f"unsupported statement {stmt!r}")
    (kind, arg), = stmt.items()  # fmt: skip
    if kind in ("match", "vmap"):  # nft_fib_validate, nft_xfrm_validate: the hooks of fib and ipsec
        left = arg.get("left") if kind == "match" else arg.get("key")
        hooks = expr_hooks(left)
        if hooks is not None:
            if ctx.family == "netdev" and "prerouting" in hooks:
                hooks += ("ingress",)  # NF_NETDEV_INGRESS is hook 0, prerouting's bit (validate.hook_allowed)
            info.hooks.append((next(iter(left)), hooks, None))
    if kind == "match":
        return build_match(arg, ctx)
    if kind in ("accept", "drop", "continue", "return", "jump", "goto"):
        return build_verdict(kind, arg, ctx, info)
    if kind == "vmap":
        return build_vmap(arg, ctx, info)
    if kind == "counter":
        return build_counter(arg, ctx, info)
    if kind == "log":
        return build_log(arg)
    if kind == "limit":
        return build_limit(arg, info)
    if kind == "reject":
        return build_reject(arg, ctx, info)
    if kind in ("snat", "dnat", "masquerade", "redirect"):
        return build_nat(kind, arg, ctx, info)
    if kind == "flow":
        return build_flow(arg, ctx, info)
    if kind == "mangle":
        return build_mangle(arg, ctx, info)
    if kind == "notrack":
        return build_notrack(ctx, info)
    if kind == "reset" and isinstance(arg, dict) and "tcp option" in arg:
        return build_tcpopt_strip(arg["tcp option"])
    if kind == "set" and isinstance(arg, dict):
        return build_dynset(kind, arg, ctx, info, lambda s: build_stmt(s, ctx, RuleInfo()))
    if kind == "meter":
        return build_dynset(kind, arg, ctx, info, lambda s: build_stmt(s, ctx, RuleInfo()))
    raise NftBuildError(f"unsupported statement {kind!r}")

